//! The one long-lived thread that starts and reaps worker processes.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that spawned a child exits, not the
//! process. tokio's blocking threads come and go, and a user may drop a runtime while
//! the process lives on, so every worker is spawned from this thread, which lives as
//! long as the process. It also reaps workers that were killed while no runtime was
//! left to await them (a pool dropped after its runtime), so no zombie is left behind.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

enum Request {
    Spawn(Command, tokio::sync::oneshot::Sender<io::Result<Child>>),
    Reap(Child),
}

fn requests() -> io::Result<&'static Mutex<mpsc::Sender<Request>>> {
    static TX: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    if let Some(tx) = TX.get() {
        return Ok(tx);
    }
    let (tx, rx) = mpsc::channel::<Request>();
    let mut started = None;
    let tx = TX.get_or_init(|| {
        started = Some(
            std::thread::Builder::new()
                .name("procpool-supervisor".into())
                .spawn(move || serve(rx)),
        );
        Mutex::new(tx)
    });
    match started {
        Some(Err(e)) => Err(e),
        _ => Ok(tx),
    }
}

fn serve(rx: mpsc::Receiver<Request>) {
    while let Ok(req) = rx.recv() {
        match req {
            Request::Spawn(mut cmd, reply) => {
                let spawned = cmd.spawn();
                // Close the parent's copies of the child's stdio right away.
                drop(cmd);
                if let Err(Ok(mut orphan)) = reply.send(spawned) {
                    // Nobody waits for this child any more: stop and reap it here.
                    let _ = orphan.kill();
                    let _ = orphan.wait();
                }
            }
            Request::Reap(mut child) => {
                // The child was sent SIGKILL before it was handed over; this returns
                // as soon as the kernel has torn it down.
                let _ = child.wait();
            }
        }
    }
}

fn send(req: Request) -> io::Result<()> {
    let tx = requests()?;
    let tx = tx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tx.send(req)
        .map_err(|_| io::Error::other("procpool supervisor thread is gone"))
}

/// Starts `cmd` from the supervisor thread.
///
/// # Cancel safety
/// If the future is dropped after the request was sent, the child may still be
/// started; the supervisor then kills and reaps it itself.
pub(crate) async fn spawn(cmd: Command) -> io::Result<Child> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    send(Request::Spawn(cmd, reply))?;
    rx.await
        .map_err(|_| io::Error::other("procpool supervisor thread dropped a spawn request"))?
}

/// Hands a child that was already sent `SIGKILL` to the supervisor, which waits for it.
pub(crate) fn reap_later(child: Child) {
    if let Err(e) = send(Request::Reap(child)) {
        // Without the supervisor there is no thread to wait on; the zombie is
        // reaped when this process exits. Nothing else can be done here.
        let _ = e;
    }
}
