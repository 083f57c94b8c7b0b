//! The one long-lived thread that starts, watches and reaps child processes.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that spawned a child exits, not the
//! process. tokio's blocking threads come and go, and a user may drop a runtime while
//! the process lives on, so every child is spawned from this thread, which lives as
//! long as the process. It runs a current-thread tokio runtime of its own, so it can
//! also await children through their pidfds: it reaps pool workers that were killed
//! after their own runtime was gone, and it runs the watcher of every
//! [`Process`](crate::Process), which therefore works whether or not the caller has a
//! runtime, and keeps reaping after the caller's runtime is dropped.

mod child;
mod fork_server;

use std::future::Future;
use std::io;
use std::process::Command;
use std::sync::OnceLock;

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;

pub(crate) use child::Child;
pub(crate) use fork_server::fork_child;

/// The supervisor's runtime handle, starting the thread on first use.
///
/// # Errors
/// If the thread or its runtime cannot be created (out of threads or fds).
pub(crate) fn handle() -> io::Result<&'static Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // The runtime is built and dropped on its own thread only: never inside a
            // caller's runtime, where dropping one would panic.
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("procpool-supervisor".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match rt {
                        Ok(rt) => {
                            let _ = tx.send(Some(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(_) => {
                            let _ = tx.send(None);
                        }
                    }
                });
            spawned.ok().and_then(|_| rx.recv().ok().flatten())
        })
        .as_ref()
        .ok_or_else(|| io::Error::other("procpool could not start its supervisor thread"))
}

/// Runs `fut` on the supervisor thread.
pub(crate) fn spawn_task<F>(fut: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    drop(handle()?.spawn(fut));
    Ok(())
}

/// Starts `cmd` from the supervisor thread.
///
/// # Cancel safety
/// If the future is dropped after the request was sent, the child may still be
/// started; the supervisor then kills and reaps it itself.
pub(crate) async fn start_child(cmd: Command) -> io::Result<Child> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    spawn_task(start(cmd, reply))?;
    rx.await.map_err(|_| gone())?
}

/// Starts `cmd` from the supervisor thread, waiting without a runtime. Takes about as
/// long as `posix_spawn` itself (a millisecond), like `std::process::Command::spawn`.
pub(crate) fn start_child_now(cmd: Command) -> io::Result<Child> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    spawn_task(start(cmd, reply))?;
    wait_blocking(rx).map_err(|_| gone())?
}

/// Blocks the thread until `fut` (an answer from the supervisor thread) is ready.
///
/// Polled unconstrained: from a task of a tokio runtime, a tokio future polled past
/// the task's coop budget answers Pending for ever (its wake-up is deferred to a
/// scheduler this loop never returns to); 128 spawns in one poll livelocked.
pub(crate) fn wait_blocking<F: Future>(fut: F) -> F::Output {
    futures::executor::block_on(tokio::task::unconstrained(fut))
}

fn gone() -> io::Error {
    io::Error::other("procpool supervisor thread dropped a spawn request")
}

async fn start(mut cmd: Command, reply: tokio::sync::oneshot::Sender<io::Result<Child>>) {
    let spawned = cmd.spawn().map(Child::Exec);
    // Close the parent's copies of the child's stdio right away.
    drop(cmd);
    if let Err(Ok(orphan)) = reply.send(spawned) {
        // Nobody waits for this child any more: stop and reap it here.
        kill_and_reap(orphan).await;
    }
}

/// Kills `child` (`SIGKILL`) and reaps it on the supervisor thread, without blocking.
pub(crate) fn reap_later(child: Child) {
    // Without the supervisor there is no thread to wait on; the zombie is then reaped
    // when this process exits. Nothing else can be done here.
    let _ = spawn_task(kill_and_reap(child));
}

async fn kill_and_reap(mut child: Child) {
    let _ = child.kill();
    wait(child).await;
}

/// Waits for `child` to exit, through its pidfd (or its status socket), and reaps it.
pub(crate) async fn wait(mut child: Child) -> Option<std::process::ExitStatus> {
    let watched = match child.status_fd() {
        Some(fd) => crate::sys::sock::dup(fd),
        None => crate::sys::proc::pidfd_open(child.id()),
    };
    match watched.and_then(crate::sys::proc::async_readable) {
        Ok(fd) => poll_status(&mut child, &fd).await,
        // Out of fds: wait on a blocking thread instead.
        Err(_) => tokio::task::spawn_blocking(move || child.wait_blocking().ok())
            .await
            .ok()
            .flatten(),
    }
}

/// Waits until `pidfd` (the pidfd of `child`, registered with the current runtime)
/// says the child exited, then reaps it (for a forked worker: waits for the status the
/// fork server sends once it has reaped it). `None` if that cannot be done: the
/// reactor is gone, the status was taken by someone else, or the fork server died
/// before it sent it.
///
/// # Cancel safety
/// Cancel safe: the child stays unreaped and can be waited for again.
pub(crate) async fn reap(
    child: &mut Child,
    pidfd: &AsyncFd<OwnedFd>,
) -> Option<std::process::ExitStatus> {
    match child.status_fd() {
        None => poll_status(child, pidfd).await,
        Some(fd) => {
            let status = crate::sys::sock::dup(fd)
                .and_then(crate::sys::proc::async_readable)
                .ok()?;
            poll_status(child, &status).await
        }
    }
}

/// Asks `child` for its status each time `fd` becomes readable.
async fn poll_status(child: &mut Child, fd: &AsyncFd<OwnedFd>) -> Option<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().ok()? {
            return Some(status);
        }
        fd.readable().await.ok()?.clear_ready();
    }
}
