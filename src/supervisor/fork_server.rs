//! The parent's side of the fork server ([`crate::worker`]'s `fork_server` is the
//! server's): one per process, started from the supervisor thread the first time a
//! pool built with [`StartMethod::ForkServer`](crate::StartMethod::ForkServer) starts
//! a worker, and started again if it has died.
//!
//! Only the start goes through the supervisor thread: the server's parent-death
//! signal is tied to the thread that started it, which lives as long as the process.
//! Requests are sent by whichever task wants a worker, and each is answered on the
//! new worker's own status socket, which that task awaits on its own runtime: no
//! thread hop, no lock held while waiting, and no order to keep between requests.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::child::{Child, Forked};
use crate::sys;
use crate::wire::fork::{ForkReply, ForkRequest, MAX_REQUEST, REPLY_LEN};

/// Builds the command that starts the fork server, and returns it with our end of the
/// server's request socket (the server's end is the command's stdin).
pub(crate) type ServerCommand = fn() -> io::Result<(Command, OwnedFd)>;

/// How long the server may take to answer one request before it is taken for broken
/// (stopped, say) and replaced. It answers in a fraction of a millisecond.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The running server, if any. Started only on the supervisor thread; its request
/// socket is written from any thread, under the lock (a send that does not wait).
static SERVER: Mutex<Option<Server>> = Mutex::new(None);

#[derive(Debug)]
struct Server {
    requests: OwnedFd,
    process: std::process::Child,
    /// Which server this is, so that a request that found one broken replaces that
    /// one, not the one another request has started since.
    generation: u64,
}

/// Has the fork server fork a worker whose control socket is `control`, starting the
/// server first if there is none (or it has died). Returns the worker and its pidfd.
///
/// Must be called in a tokio runtime with I/O and timers (a pool's).
///
/// # Errors
/// The server could not be started, the kernel refused the fork (the server's
/// `errno`), the request was too large, or the server failed twice in a row.
///
/// # Cancel safety
/// If dropped after the request was sent, the worker may start; it finds its control
/// socket closed and exits, and the server reaps it.
pub(crate) async fn fork_child(
    request: ForkRequest,
    control: OwnedFd,
    server: ServerCommand,
) -> io::Result<(Child, OwnedFd)> {
    let bytes = postcard::to_allocvec(&request).map_err(io::Error::other)?;
    if bytes.len() > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the workers' environment is too large for the fork server (64 KiB)",
        ));
    }
    let mut broken = None;
    // A server that died since the last request is noticed here, and replaced once.
    for _ in 0..2 {
        let generation = running(server).await?;
        match ask(generation, &bytes, control.as_fd()).await {
            Ok(Answer::Forked(pid, pidfd, status)) => {
                let ours = match sys::sock::dup(pidfd.as_fd()) {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = sys::proc::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
                        return Err(e);
                    }
                };
                return Ok((Child::Forked(Forked::new(pid, pidfd, status)), ours));
            }
            Ok(Answer::Refused(e)) => return Err(e),
            Err(e) => {
                retire(generation);
                broken = Some(e);
            }
        }
    }
    Err(broken.unwrap_or_else(|| io::Error::other("the fork server failed")))
}

enum Answer {
    /// The worker's pid, its pidfd and our end of its status socket.
    Forked(u32, OwnedFd, OwnedFd),
    Refused(io::Error),
}

fn lock() -> std::sync::MutexGuard<'static, Option<Server>> {
    SERVER.lock().unwrap_or_else(|p| p.into_inner())
}

/// The generation of the running server, starting one (on the supervisor thread) if
/// there is none.
async fn running(server: ServerCommand) -> io::Result<u64> {
    if let Some(srv) = lock().as_ref() {
        return Ok(srv.generation);
    }
    let (reply, rx) = tokio::sync::oneshot::channel();
    super::spawn_task(async move {
        let _ = reply.send(start_once(server));
    })?;
    rx.await
        .map_err(|_| io::Error::other("procpool supervisor thread dropped a fork request"))?
}

/// On the supervisor thread: starts the server unless another request already has.
fn start_once(server: ServerCommand) -> io::Result<u64> {
    static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut slot = lock();
    if let Some(srv) = slot.as_ref() {
        return Ok(srv.generation);
    }
    let (mut cmd, requests) = server()?;
    let process = cmd.spawn()?;
    // Close our copy of the server's end now.
    drop(cmd);
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    *slot = Some(Server {
        requests,
        process,
        generation,
    });
    Ok(generation)
}

/// Kills and reaps the server of `generation` if it is still the running one.
fn retire(generation: u64) {
    if let Some(old) = lock().take_if(|srv| srv.generation == generation) {
        super::reap_later(Child::Exec(old.process));
    }
}

/// One request, one answer on the new status socket. `Err` means the server is broken
/// (gone, silent, or talking nonsense) and must be replaced.
async fn ask(generation: u64, request: &[u8], control: BorrowedFd<'_>) -> io::Result<Answer> {
    let (ours, theirs) = sys::sock::pair(sys::sock::Kind::Stream)?;
    {
        let slot = lock();
        let Some(srv) = slot.as_ref().filter(|srv| srv.generation == generation) else {
            return Err(io::Error::other("the fork server was replaced"));
        };
        // A packet arrives whole or not at all. A full socket means a server that has
        // stopped reading: broken.
        sys::sock::send(
            srv.requests.as_fd(),
            request,
            &[control, theirs.as_fd()],
            true,
        )?;
    }
    // The server has its own copy now; ours would hide its death from the read below.
    drop(theirs);
    answer(ours).await
}

/// The server's answer on `status`, our end of the new worker's status socket, which
/// comes back with a [`Answer::Forked`] (its exit status follows there later).
async fn answer(status: OwnedFd) -> io::Result<Answer> {
    let status = sys::proc::async_readable(status)?;
    let (reply, mut fds) = tokio::time::timeout(ANSWER_TIMEOUT, read_reply(&status))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the fork server did not answer"))??;
    let status = status.into_inner();
    match ForkReply::from_bytes(reply) {
        Some(ForkReply::Forked { pid }) => match fds.pop_front() {
            Some(pidfd) if fds.is_empty() => Ok(Answer::Forked(pid, pidfd, status)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the fork server sent a worker without its pidfd",
            )),
        },
        Some(ForkReply::Failed { errno }) => {
            Ok(Answer::Refused(io::Error::from_raw_os_error(errno)))
        }
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the fork server's answer did not parse",
        )),
    }
}

/// Reads the [`REPLY_LEN`] bytes of a reply, and the descriptors beside them, and not
/// a byte more (the exit status follows on the same socket).
async fn read_reply(status: &AsyncFd<OwnedFd>) -> io::Result<([u8; REPLY_LEN], VecDeque<OwnedFd>)> {
    let mut reply = [0u8; REPLY_LEN];
    let mut fds = VecDeque::new();
    let mut have = 0;
    while have < REPLY_LEN {
        let mut guard = status.readable().await?;
        match sys::sock::recv(status.get_ref().as_fd(), &mut reply[have..], &mut fds, true) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the fork server is gone",
                ))
            }
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((reply, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fork::STATUS_LEN;

    /// The server's end of a status socket, and the answer read from ours.
    async fn answered(server: impl FnOnce(BorrowedFd<'_>)) -> io::Result<Answer> {
        let (ours, theirs) = sys::sock::pair(sys::sock::Kind::Stream).unwrap();
        server(theirs.as_fd());
        drop(theirs);
        answer(ours).await
    }

    fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        assert_eq!(
            sys::sock::send(sock, bytes, fds, true).unwrap(),
            bytes.len()
        );
    }

    #[tokio::test]
    async fn a_forked_answer_keeps_the_status_that_follows_it() {
        let (stand_in, _keep) = sys::sock::pair(sys::sock::Kind::Stream).unwrap();
        let got = answered(|srv| {
            send(
                srv,
                &ForkReply::Forked { pid: 4242 }.to_bytes(),
                &[stand_in.as_fd()],
            );
            send(srv, &crate::wire::fork::status_message(7 << 8), &[]);
        })
        .await;
        let Ok(Answer::Forked(pid, _pidfd, status)) = got else {
            panic!("expected a worker");
        };
        assert_eq!(pid, 4242);
        // The reply was read to its last byte and no further.
        let mut rest = [0u8; STATUS_LEN + 1];
        let n = sys::sock::recv(status.as_fd(), &mut rest, &mut VecDeque::new(), true).unwrap();
        assert_eq!(&rest[..n], &crate::wire::fork::status_message(7 << 8));
    }

    #[tokio::test]
    async fn a_reply_in_pieces_is_read_whole() {
        let (stand_in, _keep) = sys::sock::pair(sys::sock::Kind::Stream).unwrap();
        let bytes = ForkReply::Forked { pid: 9 }.to_bytes();
        let got = answered(|srv| {
            send(srv, &bytes[..3], &[stand_in.as_fd()]);
            send(srv, &bytes[3..], &[]);
        })
        .await;
        assert!(matches!(got, Ok(Answer::Forked(9, _, _))));
    }

    #[tokio::test]
    async fn a_refusal_carries_the_kernels_errno() {
        let got = answered(|srv| {
            send(
                srv,
                &ForkReply::Failed {
                    errno: libc::EAGAIN,
                }
                .to_bytes(),
                &[],
            );
        })
        .await;
        match got {
            Ok(Answer::Refused(e)) => assert_eq!(e.raw_os_error(), Some(libc::EAGAIN)),
            _ => panic!("expected a refusal"),
        }
    }

    #[tokio::test]
    async fn a_broken_server_is_an_error_never_a_worker() {
        // Garbage, a worker without its pidfd, and an answer cut off by the server's
        // death: each says the server must be replaced.
        let garbage = answered(|srv| send(srv, &[0xff; REPLY_LEN], &[])).await;
        assert_eq!(
            garbage.err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidData)
        );
        let no_pidfd =
            answered(|srv| send(srv, &ForkReply::Forked { pid: 1 }.to_bytes(), &[])).await;
        assert_eq!(
            no_pidfd.err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidData)
        );
        let cut = answered(|srv| send(srv, &[1, 0, 0], &[])).await;
        assert_eq!(
            cut.err().map(|e| e.kind()),
            Some(io::ErrorKind::UnexpectedEof)
        );
        let silent_death = answered(|_| {}).await;
        assert_eq!(
            silent_death.err().map(|e| e.kind()),
            Some(io::ErrorKind::UnexpectedEof)
        );
    }
}
