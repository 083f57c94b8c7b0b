//! Authenticated connections: right and wrong keys, TCP and unix sockets, bad peers
//! that must not disturb good ones, and a child using the inherited default key.

use std::net::SocketAddr;
use std::time::Duration;

use procpool::connection::{self, Address, AuthenticationError, Client, ConnectError, Listener};
use procpool::{Connection, Process};
use tokio::io::AsyncWriteExt;

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn right_key_both_ways_over_tcp() {
    let mut listener = Listener::bind(local(), b"k").await.unwrap();
    let addr = listener.address().clone();
    let client = tokio::spawn(async move {
        let c: Connection<u32> = Client::connect(&addr, b"k").await.unwrap();
        c.send(&20).await.unwrap();
        c.recv().await.unwrap()
    });
    let server: Connection<u32> = listener.accept().await.unwrap();
    let n = server.recv().await.unwrap();
    server.send(&(n + 1)).await.unwrap();
    assert_eq!(client.await.unwrap(), 21);
}

#[tokio::test]
async fn wrong_key_fails_on_both_sides_and_the_client_gets_nothing() {
    let mut listener = Listener::bind(local(), b"right").await.unwrap();
    let addr = listener.address().clone();
    let client = tokio::spawn(async move { Client::connect::<u32, u32>(&addr, b"wrong").await });
    let server = listener.accept::<u32, u32>().await;
    assert!(matches!(
        server,
        Err(ConnectError::Authentication(
            AuthenticationError::DigestReceivedWasWrong
        ))
    ));
    assert!(matches!(
        client.await.unwrap(),
        Err(ConnectError::Authentication(
            AuthenticationError::DigestSentWasRejected
        ))
    ));
}

#[tokio::test]
async fn a_listener_with_the_wrong_key_is_refused_by_the_client() {
    // The client checks the listener too: one that answers the client's challenge
    // wrongly is refused even if it let the client in.
    let mut listener = Listener::bind(local(), b"a").await.unwrap();
    let addr = listener.address().clone();
    let client = tokio::spawn(async move { Client::connect::<u8, u8>(&addr, b"b").await });
    assert!(listener.accept::<u8, u8>().await.is_err());
    assert!(matches!(
        client.await.unwrap(),
        Err(ConnectError::Authentication(_))
    ));
}

#[tokio::test]
async fn silent_garbage_and_oversized_peers_do_not_disturb_a_good_client() {
    let mut listener = Listener::bind(local(), b"k").await.unwrap();
    // Long enough for a good client on a loaded machine, short enough for a test.
    listener.set_handshake_timeout(Duration::from_secs(1));
    let Address::Tcp(sa) = listener.address().clone() else {
        unreachable!()
    };
    // Silent: connects and sends nothing.
    let _silent = tokio::net::TcpStream::connect(sa).await.unwrap();
    // Garbage: a small message (big-endian length, as Python frames) that is not a
    // handshake answer.
    let mut garbage = tokio::net::TcpStream::connect(sa).await.unwrap();
    garbage.write_all(&[0, 0, 0, 3, 1, 2, 3]).await.unwrap();
    // Oversized: -1, the announcement of a message over 2 GiB.
    let mut huge = tokio::net::TcpStream::connect(sa).await.unwrap();
    huge.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let addr = listener.address().clone();
    let good = tokio::spawn(async move {
        let c: Connection<String> = Client::connect(&addr, b"k").await.unwrap();
        c.recv().await.unwrap()
    });
    let mut ok = None;
    let mut errors = Vec::new();
    while ok.is_none() || errors.len() < 3 {
        match listener.accept::<String, String>().await {
            Ok(c) => {
                c.send(&"welcome".to_owned()).await.unwrap();
                ok = Some(c);
            }
            Err(e) => errors.push(e),
        }
    }
    assert_eq!(good.await.unwrap(), "welcome");
    let count = |f: fn(&ConnectError) -> bool| errors.iter().filter(|e| f(e)).count();
    // Silent: dropped at the handshake timeout.
    assert_eq!(
        count(|e| matches!(e, ConnectError::HandshakeTimeout)),
        1,
        "{errors:?}"
    );
    // Garbage: a wrong answer to the challenge.
    assert_eq!(
        count(|e| matches!(
            e,
            ConnectError::Authentication(AuthenticationError::DigestReceivedWasWrong)
        )),
        1,
        "{errors:?}"
    );
    // Oversized: refused from its length alone, nothing allocated.
    assert_eq!(
        count(|e| matches!(e, ConnectError::Handshake(_))),
        1,
        "{errors:?}"
    );
}

#[tokio::test]
async fn unix_socket_path() {
    let dir = std::env::temp_dir().join(format!("procpool-conn-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let mut listener = Listener::bind(dir.clone(), b"k").await.unwrap();
    let addr = listener.address().clone();
    let client = tokio::spawn(async move {
        let c: Connection<Vec<u8>> = Client::connect(&addr, b"k").await.unwrap();
        c.send(&vec![1, 2, 3]).await.unwrap();
    });
    let s: Connection<Vec<u8>> = listener.accept().await.unwrap();
    assert_eq!(s.recv().await.unwrap(), [1, 2, 3]);
    client.await.unwrap();
    std::fs::remove_file(&dir).unwrap();
}

#[tokio::test]
async fn an_abstract_unix_name_makes_no_file() {
    let name = format!("procpool-test-{}", std::process::id());
    let mut listener = Listener::bind(Address::unix_abstract(&name), b"k")
        .await
        .unwrap();
    let addr = listener.address().clone();
    assert_eq!(addr.to_string(), format!("@{name}"));
    let client = tokio::spawn(async move {
        let c: Connection<u8> = Client::connect(&addr, b"k").await.unwrap();
        c.send(&7).await.unwrap();
    });
    let s: Connection<u8> = listener.accept().await.unwrap();
    assert_eq!(s.recv().await.unwrap(), 7);
    client.await.unwrap();
    assert!(!std::path::Path::new(&name).exists());
    assert!(!std::env::temp_dir().join(&name).exists());
}

fn connect_back(addr: Address) -> u32 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The default key, inherited from the parent.
        let c: Connection<u32> = Client::connect(&addr, &connection::authkey())
            .await
            .unwrap();
        c.recv().await.unwrap() * 2
    })
}

#[tokio::test]
async fn a_child_uses_the_inherited_default_key() {
    let key = connection::authkey();
    assert_eq!(key.len(), 32);
    let mut listener = Listener::bind(local(), &key).await.unwrap();
    let mut child = Process::spawn(connect_back, listener.address().clone()).unwrap();
    let c: Connection<u32> = listener.accept().await.unwrap();
    c.send(&21).await.unwrap();
    assert_eq!(child.join().await.unwrap(), 42);
}

#[tokio::test]
async fn a_handle_cannot_cross_tcp_but_the_connection_goes_on() {
    let mut listener = Listener::bind(local(), b"k").await.unwrap();
    let addr = listener.address().clone();
    let client = tokio::spawn(async move {
        let c: Connection<Option<Connection<u8>>> = Client::connect(&addr, b"k").await.unwrap();
        let (end, _other) = procpool::pipe::<u8>().unwrap();
        let refused = c.send(&Some(end)).await.is_err();
        c.send(&None).await.unwrap();
        refused
    });
    let s: Connection<Option<Connection<u8>>> = listener.accept().await.unwrap();
    assert!(s.recv().await.unwrap().is_none());
    assert!(client.await.unwrap(), "descriptors over TCP are an error");
}

fn exit_when_set(go: procpool::Event) -> u32 {
    go.blocking_wait().unwrap();
    7
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reports_which_connections_listeners_and_processes_are_ready() {
    use procpool::connection::{blocking_wait, wait};

    let (a, a_peer) = procpool::duplex::<u8, u8>().unwrap();
    let (b, b_peer) = procpool::duplex::<u8, u8>().unwrap();
    let (rx, tx) = procpool::pipe::simplex::<u8>().unwrap();
    let mut listener = Listener::bind(local(), b"k").await.unwrap();
    let go = procpool::Event::new().unwrap();
    let mut child = procpool::Process::spawn(exit_when_set, go.clone()).unwrap();
    let sentinel = child.sentinel().unwrap();

    // No objects: nothing could become ready, so nothing is waited for.
    assert!(wait(&[], None).await.unwrap().is_empty());
    // Nothing is ready: a timeout returns nothing, async and blocking.
    let short = Some(Duration::from_millis(20));
    assert!(wait(&[&a, &b, &rx, &listener, &sentinel], short)
        .await
        .unwrap()
        .is_empty());

    // A message on one connection.
    b_peer.send(&1).await.unwrap();
    assert_eq!(
        wait(&[&a, &b, &rx, &listener, &sentinel], None)
            .await
            .unwrap(),
        [1]
    );
    assert_eq!(b.recv().await.unwrap(), 1);

    // Two messages at once: after the first is received, the second is read ahead in
    // the connection, not in the socket, and still counts as ready.
    a_peer.send(&2).await.unwrap();
    a_peer.send(&3).await.unwrap();
    assert_eq!(wait(&[&a], None).await.unwrap(), [0]);
    assert_eq!(a.recv().await.unwrap(), 2);
    assert_eq!(wait(&[&a, &b], Some(Duration::ZERO)).await.unwrap(), [0]);
    assert_eq!(a.recv().await.unwrap(), 3);

    // A simplex receiver, and a peer knocking at the listener.
    tx.send(&4).await.unwrap();
    let address = listener.address().clone();
    let client = tokio::spawn(async move {
        let c: Connection<u8> = Client::connect(&address, b"k").await.unwrap();
        c
    });
    // Each on its own first (the connect and the send race each other), then both.
    assert_eq!(wait(&[&rx], None).await.unwrap(), [0]);
    assert_eq!(wait(&[&listener], None).await.unwrap(), [0]);
    let ready = wait(&[&a, &b, &rx, &listener, &sentinel], None)
        .await
        .unwrap();
    assert_eq!(ready, [2, 3]);
    assert_eq!(rx.recv().await.unwrap(), 4);
    let _server_side: Connection<u8> = listener.accept().await.unwrap();
    let _client_side = client.await.unwrap();

    // The child's end, seen by the blocking form on a blocking thread.
    go.set();
    let ready = tokio::task::spawn_blocking(move || {
        let ready = blocking_wait(&[&sentinel], None).unwrap();
        (ready, sentinel)
    })
    .await
    .unwrap();
    assert_eq!(ready.0, [0]);
    assert_eq!(child.join().await.unwrap(), 7);
    // End of stream is ready too.
    drop(b_peer);
    assert_eq!(wait(&[&a, &b], None).await.unwrap(), [1]);
    drop(a_peer);
}
