//! procpool's `Listener`/`Client` against the machine's real `python3`
//! (`multiprocessing.connection`), both directions: the handshake (legacy HMAC-MD5
//! below Python 3.12, `{sha256}` from 3.12), `send_bytes`/`recv_bytes` of 1 MiB each
//! way, end of stream when the peer closes, and a wrong key refused on both sides.

use std::process::Stdio;

use procpool::connection::{Address, AuthenticationError, Client, ConnectError, Listener};
use procpool::pipe::RecvError;
use procpool::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const KEY: &str = "interop-key";

/// Python's client: receives one message, sends it back reversed, then a short one,
/// then closes. Prints the exception's name if the handshake fails.
const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
try:
    c = Client((host, port), authkey=key)
except Exception as e:
    print(type(e).__name__, flush=True)
    sys.exit(0)
data = c.recv_bytes()
c.send_bytes(data[::-1])
c.send_bytes(b"bye")
c.close()
print("done", flush=True)
"#;

/// Python's listener: prints its port, accepts one client, echoes one message back
/// reversed, then closes. Prints the exception's name if the handshake fails.
const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
key = sys.argv[1].encode()
with Listener(("127.0.0.1", 0), authkey=key) as l:
    print(l.address[1], flush=True)
    try:
        c = l.accept()
    except Exception as e:
        print(type(e).__name__, flush=True)
        sys.exit(0)
    data = c.recv_bytes()
    c.send_bytes(data[::-1])
    c.close()
    print("done", flush=True)
"#;

/// `python3 -c script args`, its stdout piped; fails the test in one line if there is
/// no python3.
fn python(script: &str, args: &[&str]) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("python3 not found ({e}): install Python 3 (e.g. `apt install python3`)")
        })
}

/// Whether the machine's Python speaks the `{sha256}` handshake (3.12 and later);
/// older ones speak only the legacy HMAC-MD5 one.
async fn python_is_modern() -> bool {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(int(sys.version_info >= (3, 12)))"])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("python3 not found ({e}): install Python 3 (e.g. `apt install python3`)")
        });
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

/// The next line the child prints.
async fn line(
    child: &mut Child,
    lines: &mut Option<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>,
) -> String {
    let lines =
        lines.get_or_insert_with(|| BufReader::new(child.stdout.take().expect("piped")).lines());
    lines
        .next_line()
        .await
        .unwrap()
        .expect("python printed a line before it exited")
}

/// 1 MiB that is not the same reversed.
fn mebibyte() -> Vec<u8> {
    (0..1u32 << 20).map(|i| (i % 251) as u8).collect()
}

async fn listener() -> Listener {
    Listener::bind(
        "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
        KEY.as_bytes(),
    )
    .await
    .unwrap()
}

fn port_of(l: &Listener) -> String {
    match l.address() {
        Address::Tcp(a) => a.port().to_string(),
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_talks_to_a_procpool_listener() {
    let mut l = listener().await;
    l.allow_legacy_digest(true);
    let mut py = python(PY_CLIENT, &["127.0.0.1", &port_of(&l), KEY]);
    let conn: Connection<Vec<u8>> = l.accept().await.unwrap();
    let data = mebibyte();
    conn.send_bytes(&data).await.unwrap();
    let back = conn.recv_bytes().await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(
        back.iter().eq(data.iter().rev()),
        "Python sent it back reversed"
    );
    assert_eq!(conn.recv_bytes().await.unwrap(), b"bye");
    // Python closed its end.
    assert!(matches!(conn.recv_bytes().await, Err(RecvError::Eof)));
    let mut lines = None;
    assert_eq!(line(&mut py, &mut lines).await, "done");
    assert!(py.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procpool_client_talks_to_a_python_listener() {
    let mut py = python(PY_LISTENER, &[KEY]);
    let mut lines = None;
    let port: u16 = line(&mut py, &mut lines).await.parse().unwrap();
    let address = Address::from(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let conn: Connection<Vec<u8>> = Client::new()
        .allow_legacy_digest(true)
        .connect_to(&address, KEY.as_bytes())
        .await
        .unwrap();
    let data = mebibyte();
    conn.send_bytes(&data).await.unwrap();
    let back = conn.recv_bytes().await.unwrap();
    assert!(back.iter().eq(data.iter().rev()));
    assert!(matches!(conn.recv_bytes().await, Err(RecvError::Eof)));
    assert_eq!(line(&mut py, &mut lines).await, "done");
    assert!(py.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_on_both_sides_both_ways() {
    // Python's client, our listener.
    let mut l = listener().await;
    l.allow_legacy_digest(true);
    let mut py = python(PY_CLIENT, &["127.0.0.1", &port_of(&l), "not-the-key"]);
    match l.accept::<Vec<u8>, Vec<u8>>().await {
        Err(ConnectError::Authentication(AuthenticationError::DigestReceivedWasWrong)) => {}
        other => panic!("{other:?}"),
    }
    let mut lines = None;
    assert_eq!(line(&mut py, &mut lines).await, "AuthenticationError");
    assert!(py.wait().await.unwrap().success());

    // Our client, Python's listener.
    let mut py = python(PY_LISTENER, &["not-the-key"]);
    let mut lines = None;
    let port: u16 = line(&mut py, &mut lines).await.parse().unwrap();
    let address = Address::from(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let refused = Client::new()
        .allow_legacy_digest(true)
        .connect_to::<Vec<u8>, Vec<u8>>(&address, KEY.as_bytes())
        .await;
    assert!(
        matches!(
            refused,
            Err(ConnectError::Authentication(
                AuthenticationError::DigestSentWasRejected
            ))
        ),
        "{refused:?}"
    );
    assert_eq!(line(&mut py, &mut lines).await, "AuthenticationError");
    assert!(py.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_handshake_needs_an_explicit_yes() {
    let modern = python_is_modern().await;
    let mut l = listener().await;
    let mut py = python(PY_CLIENT, &["127.0.0.1", &port_of(&l), KEY]);
    let accepted = l.accept::<Vec<u8>, Vec<u8>>().await;
    let mut lines = None;
    if modern {
        // Python 3.12+ answers `{sha256}`: no legacy needed.
        let conn = accepted.unwrap();
        conn.send_bytes(b"abc").await.unwrap();
        assert_eq!(conn.recv_bytes().await.unwrap(), b"cba");
        assert_eq!(conn.recv_bytes().await.unwrap(), b"bye");
        assert_eq!(line(&mut py, &mut lines).await, "done");
    } else {
        // Python 3.11 answers with a bare HMAC-MD5, refused by default.
        match accepted {
            Err(ConnectError::Authentication(AuthenticationError::LegacyDigestRefused)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(line(&mut py, &mut lines).await, "AuthenticationError");
    }
    assert!(py.wait().await.unwrap().success());
}
