//! The parent's side of the fork server ([`crate::worker`]'s `fork_server` is the
//! server's): one per process, started from the supervisor thread the first time a
//! pool built with [`StartMethod::ForkServer`](crate::StartMethod::ForkServer) starts
//! a worker, and started again if it has died.
//!
//! Every request goes through the supervisor thread, one at a time, so the request
//! socket needs no lock of its own and the server's parent-death signal is tied to
//! the thread that lives as long as the process.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::child::{Child, Forked};
use crate::sys;
use crate::wire::fork::{ForkReply, ForkRequest};

/// Builds the command that starts the fork server, and returns it with our end of the
/// server's request socket (the server's end is the command's stdin).
pub(crate) type ServerCommand = fn() -> io::Result<(Command, OwnedFd)>;

/// How long the server may take to answer one request before it is taken for broken
/// (stopped, say) and replaced. It answers in a fraction of a millisecond.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The running server, if any; used only from the supervisor thread.
static SERVER: Mutex<Option<Server>> = Mutex::new(None);

#[derive(Debug)]
struct Server {
    requests: OwnedFd,
    process: std::process::Child,
}

/// Has the fork server fork a worker whose control socket is `control`, starting the
/// server first if there is none (or it has died). Returns the worker and its pidfd.
///
/// # Errors
/// The server could not be started, the kernel refused the fork (the server's
/// `errno`), the request was too large, or the server failed twice in a row.
///
/// # Cancel safety
/// If dropped after the request reached the supervisor, the worker may start; the
/// supervisor then kills it, and the server reaps it.
pub(crate) async fn fork_child(
    request: ForkRequest,
    control: OwnedFd,
    server: ServerCommand,
) -> io::Result<(Child, OwnedFd)> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    super::spawn_task(async move {
        let forked = fork_now(&request, control.as_fd(), server);
        drop(control);
        if let Err(Ok((orphan, _))) = reply.send(forked) {
            super::reap_later(orphan);
        }
    })?;
    rx.await
        .map_err(|_| io::Error::other("procpool supervisor thread dropped a fork request"))?
}

fn fork_now(
    request: &ForkRequest,
    control: BorrowedFd<'_>,
    server: ServerCommand,
) -> io::Result<(Child, OwnedFd)> {
    let bytes = postcard::to_allocvec(request).map_err(io::Error::other)?;
    if bytes.len() > crate::wire::fork::MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the workers' environment is too large for the fork server (64 KiB)",
        ));
    }
    let mut slot = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let mut broken = None;
    // A server that died since the last request is noticed here, and replaced once.
    for _ in 0..2 {
        let srv = match slot.as_mut() {
            Some(srv) => srv,
            None => slot.insert(Server::start(server)?),
        };
        let (ours, theirs) = sys::sock::pair(sys::sock::Kind::Stream)?;
        match srv.ask(&bytes, control, theirs.as_fd()) {
            Ok(ForkAnswer::Forked(pid, pidfd)) => {
                let ours_pidfd = match sys::sock::dup(pidfd.as_fd()) {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = sys::proc::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
                        return Err(e);
                    }
                };
                return Ok((Child::Forked(Forked::new(pid, pidfd, ours)), ours_pidfd));
            }
            Ok(ForkAnswer::Refused(e)) => return Err(e),
            Err(e) => {
                if let Some(old) = slot.take() {
                    super::reap_later(Child::Exec(old.process));
                }
                broken = Some(e);
            }
        }
    }
    Err(broken.unwrap_or_else(|| io::Error::other("the fork server failed")))
}

enum ForkAnswer {
    Forked(u32, OwnedFd),
    Refused(io::Error),
}

impl Server {
    fn start(server: ServerCommand) -> io::Result<Server> {
        let (mut cmd, requests) = server()?;
        let process = cmd.spawn()?;
        // Close our copy of the server's end now.
        drop(cmd);
        Ok(Server { requests, process })
    }

    /// One request, one answer. `Err` means the server is broken (gone, silent, or
    /// talking nonsense) and must be replaced.
    fn ask(
        &mut self,
        request: &[u8],
        control: BorrowedFd<'_>,
        status: BorrowedFd<'_>,
    ) -> io::Result<ForkAnswer> {
        let sock = self.requests.as_fd();
        sys::sock::send(sock, request, &[control, status], false)?;
        if !sys::sock::poll(sock, sys::sock::Wait::Readable, Some(ANSWER_TIMEOUT))? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the fork server did not answer",
            ));
        }
        let mut buf = [0u8; 64];
        let mut fds = VecDeque::new();
        let n = sys::sock::recv(sock, &mut buf, &mut fds, true)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the fork server is gone",
            ));
        }
        match postcard::from_bytes::<ForkReply>(&buf[..n]) {
            Ok(ForkReply::Forked { pid }) => match fds.pop_front() {
                Some(pidfd) if fds.is_empty() => Ok(ForkAnswer::Forked(pid, pidfd)),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the fork server sent a worker without its pidfd",
                )),
            },
            Ok(ForkReply::Failed { errno }) => {
                Ok(ForkAnswer::Refused(io::Error::from_raw_os_error(errno)))
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the fork server's answer did not parse",
            )),
        }
    }
}
