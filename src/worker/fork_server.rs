//! The fork server: this executable started once, before `main`, that forks pool
//! workers on request ([`StartMethod::ForkServer`](crate::StartMethod::ForkServer)).
//!
//! Starting a worker by `exec` costs what starting the program costs (about a
//! millisecond on a small VM, more for a large binary); a `fork` of a small process
//! that has done nothing yet costs a tenth of that, and unlike a `fork` of the parent
//! it does not grow with the parent's heap or depend on what its threads hold. The
//! server is single-threaded, so its children may run anything.
//!
//! The server loops on `poll` over its request socket (its stdin) and the pidfds of
//! the workers it started. A request ([`crate::wire::fork`]) is answered on the
//! worker's status socket with the new worker's pid and pidfd; a worker that exits is reaped here (it is our child, not
//! the parent's), the rest of its process group killed first if it had its own, and
//! its raw wait status written to its status socket for the parent.
//!
//! A forked worker then goes where an exec'd one goes: [`super::worker_main`], with
//! its control socket on stdin and every other inherited descriptor closed. Its
//! parent-death signal is tied to the server, and the server's to the parent's
//! supervisor thread, so a parent that dies takes both down.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use super::{code, Origin};
use crate::sys;
use crate::wire::fork::{self, ForkReply, ForkRequest};

/// A worker this server started and has not reaped.
struct Worker {
    pid: u32,
    pidfd: OwnedFd,
    status: OwnedFd,
    own_group: bool,
}

/// Serves fork requests until the parent closes the request socket; returns the exit
/// code.
pub(super) fn serve(parent: u32) -> i32 {
    // Tied to the supervisor thread that started us; and if the parent is already
    // gone, that signal will never come.
    if sys::proc::kill_me_when_parent_dies().is_err() {
        return code::SETUP;
    }
    if sys::proc::parent_pid() != parent {
        return code::ORPHANED;
    }
    let requests = match sys::proc::take_socket_from_stdin() {
        Ok(fd) => fd,
        Err(_) => return code::SETUP,
    };
    // Every worker checks the parent's fingerprint first thing; computed here once,
    // it is inherited instead of computed again in each (a read of the executable's
    // headers and code).
    let _ = crate::task::fingerprint();
    let mut workers: Vec<Worker> = Vec::new();
    let mut buf = vec![0u8; fork::MAX_REQUEST];
    loop {
        let ready = {
            let fds: Vec<BorrowedFd<'_>> = std::iter::once(requests.as_fd())
                .chain(workers.iter().map(|w| w.pidfd.as_fd()))
                .collect();
            match sys::sock::poll_readable(&fds, None) {
                Ok(ready) => ready,
                Err(_) => return code::FAILED,
            }
        };
        // Workers first, from the back, so that the indices stay right.
        for &i in ready.iter().rev().filter(|&&i| i > 0) {
            report(workers.swap_remove(i - 1));
        }
        if ready.first() == Some(&0) {
            match take_request(&requests, &mut buf) {
                Taken::Request(Ok(request), control, status) => {
                    if let Some(worker) = start(parent, request, control, status) {
                        workers.push(worker);
                    }
                }
                Taken::Request(Err(()), _, status) => answer(
                    status.as_fd(),
                    ForkReply::Failed {
                        errno: libc::EINVAL,
                    },
                    None,
                ),
                // Without its status socket there is nowhere to answer; the parent
                // never sends such a request.
                Taken::Malformed | Taken::Nothing => {}
                // The parent closed its end: it is exiting. Our workers follow us
                // through their parent-death signal.
                Taken::End => return code::OK,
                Taken::Broken => return code::FAILED,
            }
        }
    }
}

enum Taken {
    /// A request with its two descriptors; `Err` if the bytes are not a request (it
    /// is answered with `EINVAL`).
    Request(Result<ForkRequest, ()>, OwnedFd, OwnedFd),
    /// A message without its two descriptors.
    Malformed,
    /// Nothing to take yet.
    Nothing,
    /// The parent closed its end.
    End,
    /// The socket failed.
    Broken,
}

fn take_request(requests: &OwnedFd, buf: &mut [u8]) -> Taken {
    let mut fds = VecDeque::new();
    match sys::sock::recv(requests.as_fd(), buf, &mut fds, true) {
        Ok(0) => Taken::End,
        Ok(n) => match (fds.pop_front(), fds.pop_front(), fds.is_empty()) {
            (Some(control), Some(status), true) => {
                let request = postcard::from_bytes::<ForkRequest>(&buf[..n]).map_err(drop);
                Taken::Request(request, control, status)
            }
            _ => Taken::Malformed,
        },
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Taken::Nothing,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Taken::Nothing,
        // More descriptors came than one message may carry (the kernel closed them).
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Taken::Malformed,
        Err(_) => Taken::Broken,
    }
}

/// Forks one worker and answers the request. In the child this never returns.
fn start(parent: u32, request: ForkRequest, control: OwnedFd, status: OwnedFd) -> Option<Worker> {
    let own_group = request.own_group;
    match sys::proc::fork() {
        Ok(None) => std::process::exit(become_worker(parent, request, control, status)),
        Ok(Some(pid)) => {
            drop(control);
            match sys::proc::pidfd_open(pid) {
                Ok(pidfd) => {
                    let reply = ForkReply::Forked { pid };
                    answer(status.as_fd(), reply, Some(pidfd.as_fd()));
                    Some(Worker {
                        pid,
                        pidfd,
                        status,
                        own_group,
                    })
                }
                Err(e) => {
                    // Unreaped, so the pid is still this child's.
                    let _ = sys::proc::kill_group(pid);
                    let _ = sys::proc::kill_child(pid);
                    let _ = sys::proc::reap_child(pid);
                    answer(status.as_fd(), failed(&e), None);
                    None
                }
            }
        }
        Err(e) => {
            answer(status.as_fd(), failed(&e), None);
            None
        }
    }
}

fn failed(e: &std::io::Error) -> ForkReply {
    ForkReply::Failed {
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// Answers a request on its status socket, which is new and empty: the reply fits.
fn answer(status: BorrowedFd<'_>, reply: ForkReply, pidfd: Option<BorrowedFd<'_>>) {
    let fds: Vec<BorrowedFd<'_>> = pidfd.into_iter().collect();
    // If the parent is gone, so are we shortly.
    let _ = sys::sock::send(status, &reply.to_bytes(), &fds, true);
}

/// A worker exited: kill what it left in its group, reap it, tell the parent.
fn report(worker: Worker) {
    if worker.own_group {
        // Not reaped yet: the group id cannot name anyone else.
        let _ = sys::proc::kill_group(worker.pid);
    }
    if let Ok(status) = sys::proc::reap_child(worker.pid) {
        let _ = sys::sock::send(
            worker.status.as_fd(),
            &fork::status_message(status),
            &[],
            true,
        );
    }
}

/// The child's side of a fork: from the server's state to a worker's.
fn become_worker(parent: u32, request: ForkRequest, control: OwnedFd, status: OwnedFd) -> i32 {
    let server = sys::proc::parent_pid();
    if sys::proc::set_stdin(control.as_fd()).is_err() {
        return code::SETUP;
    }
    // Everything inherited beyond stdio is the server's: its request socket, other
    // workers' pidfds and status sockets. None of those values is dropped after this
    // (this function ends the process), so closing the numbers cannot close a
    // descriptor opened later.
    std::mem::forget(control);
    std::mem::forget(status);
    if sys::proc::close_from(3).is_err() {
        return code::SETUP;
    }
    if request.own_group && sys::proc::own_process_group().is_err() {
        return code::SETUP;
    }
    // Single-threaded: nothing reads the environment concurrently.
    for (key, value) in request.env {
        std::env::set_var(OsString::from_vec(key), OsString::from_vec(value));
    }
    super::worker_main(Some(Origin {
        parent,
        daemon: true,
        spawner: server,
    }))
}
