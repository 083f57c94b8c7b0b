//! The fork server: this executable started once, before `main`, that forks pool
//! workers on request ([`StartMethod::ForkServer`](crate::StartMethod::ForkServer)).
//!
//! Starting a worker by `exec` costs what starting the program costs (about a
//! millisecond on a small VM, more for a large binary); a `fork` of a small process
//! that has done nothing yet costs a tenth of that, and unlike a `fork` of the parent
//! it does not grow with the parent's heap or depend on what its threads hold. The
//! server is single-threaded, so its children may run anything.
//!
//! The server loops on `poll` over its request socket (its stdin), the pidfds of the
//! workers it started and those of its spares. A request ([`crate::wire::fork`]) is
//! answered on the worker's status socket with the new worker's pid and pidfd. A
//! worker that exits is reaped here (it is our child, not the parent's), the rest of
//! its process group killed first if it had its own, and its raw wait status written
//! to its status socket for the parent.
//!
//! **Spares.** Once requests pause, the server forks [`SPARES`] children ahead of
//! time, which wait (named `procpool-spare`, holding nothing of the server's) for
//! one request each. A request that finds a spare is answered with it at once and
//! then handed to it, so the start of a small pool has no fork on its path; one
//! that finds none is forked for. Spares die with the server.
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

/// A child forked ahead of the next request, waiting to become its worker: at the
/// request the server only hands it the request and its control socket, so no fork
/// is on the path of a worker's start (a fork of even this small process takes 50 to
/// 200 µs on a 2-vCPU VM, where the start of a pool keeps both CPUs busy).
struct Spare {
    pid: u32,
    pidfd: OwnedFd,
    /// The server's end of the spare's socket (`SOCK_SEQPACKET`; the spare's stdin).
    channel: OwnedFd,
}

/// How many spares the server keeps: a pool of two (on a 2-CPU machine, the default)
/// then starts without a fork in the way.
const SPARES: usize = 2;

/// How long requests must pause before the server forks new spares.
const REFILL_AFTER: std::time::Duration = std::time::Duration::from_millis(1);

/// What `ps` shows for a spare (its `comm`), until it becomes a worker and takes the
/// server's name back.
const SPARE_NAME: &std::ffi::CStr = c"procpool-spare";

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
    let mut spares: Vec<Spare> = Vec::with_capacity(SPARES);
    // Whether to fork spares at the next pause: after a request, not after a spare
    // died (one killed from outside must not make the server fork in a loop).
    let mut refill = true;
    loop {
        // Spares are forked once requests have paused for `REFILL_AFTER`: a pool asks
        // for all its workers at once, and the forks for those beyond the spares are
        // not held up by forks for the next pool.
        let timeout = (refill && spares.len() < SPARES).then_some(REFILL_AFTER);
        // The request socket, the workers, then the spares.
        let ready = {
            let fds: Vec<BorrowedFd<'_>> = std::iter::once(requests.as_fd())
                .chain(workers.iter().map(|w| w.pidfd.as_fd()))
                .chain(spares.iter().map(|s| s.pidfd.as_fd()))
                .collect();
            match sys::sock::poll_readable(&fds, timeout) {
                Ok(ready) => ready,
                Err(_) => return code::FAILED,
            }
        };
        if ready.is_empty() {
            while spares.len() < SPARES {
                match fork_spare(parent) {
                    Some(spare) => spares.push(spare),
                    None => break,
                }
            }
            refill = false;
            continue;
        }
        // From the back, so that the indices stay right: spares that died (killed
        // from outside) are reaped, then workers that exited are reported.
        let live = workers.len();
        for &i in ready.iter().rev().filter(|&&i| i > live) {
            let dead = spares.swap_remove(i - live - 1);
            let _ = sys::proc::reap_child(dead.pid);
        }
        for &i in ready.iter().rev().filter(|&&i| i > 0 && i <= live) {
            report(workers.swap_remove(i - 1));
        }
        if ready.first() == Some(&0) {
            match take_request(&requests, &mut buf) {
                Taken::Request(request, len, control, status) => {
                    let started = match spares.pop() {
                        Some(s) => hand_over(s, &buf[..len], request.own_group, control, status),
                        None => start(parent, request, control, status),
                    };
                    workers.extend(started);
                    refill = true;
                }
                Taken::Garbled(status) => answer(
                    status.as_fd(),
                    ForkReply::Failed {
                        errno: libc::EINVAL,
                    },
                    None,
                ),
                // Without its status socket there is nowhere to answer; the parent
                // never sends such a request.
                Taken::Malformed | Taken::Nothing => {}
                // The parent closed its end: it is exiting. Our workers and spares
                // follow us through their parent-death signal.
                Taken::End => return code::OK,
                Taken::Broken => return code::FAILED,
            }
        }
    }
}

enum Taken {
    /// A request, its length in the buffer it was read into, and its two
    /// descriptors: the worker's control and status sockets.
    Request(ForkRequest, usize, OwnedFd, OwnedFd),
    /// Bytes that are not a request, with the status socket to answer `EINVAL` on.
    Garbled(OwnedFd),
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
                match postcard::from_bytes::<ForkRequest>(&buf[..n]) {
                    Ok(request) => Taken::Request(request, n, control, status),
                    Err(_) => Taken::Garbled(status),
                }
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
        Ok(None) => {
            // Closed with the rest of what the server held (see `become_worker`).
            std::mem::forget(status);
            std::process::exit(become_worker(parent, request, control))
        }
        Ok(Some(pid)) => {
            drop(control);
            match pidfd_or_discard(pid) {
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

/// Answers a request with the spare's pid and pidfd, and passes it the request as it
/// came (`raw`, which it decodes itself). A spare that cannot take it (it died) is
/// then a worker that died at once.
fn hand_over(
    spare: Spare,
    raw: &[u8],
    own_group: bool,
    control: OwnedFd,
    status: OwnedFd,
) -> Option<Worker> {
    // The answer first: once the spare has its request it may take this CPU, and the
    // parent would wait for the answer until the spare sleeps.
    answer(
        status.as_fd(),
        ForkReply::Forked { pid: spare.pid },
        Some(spare.pidfd.as_fd()),
    );
    // Its socket is new and empty: the one packet fits.
    let handed = sys::sock::send(spare.channel.as_fd(), raw, &[control.as_fd()], true);
    if handed.is_err() {
        // It died as a spare, or is killed now: either way the parent learns it as
        // the death of this worker, from the status reported below.
        let _ = sys::proc::kill_child(spare.pid);
    }
    Some(Worker {
        pid: spare.pid,
        pidfd: spare.pidfd,
        status,
        own_group,
    })
}

/// Forks the next spare; `None` if the kernel refused (the next request then forks).
fn fork_spare(parent: u32) -> Option<Spare> {
    let server = std::process::id();
    let (channel, theirs) = sys::sock::pair(sys::sock::Kind::SeqPacket).ok()?;
    // Named before the fork, so that the spare is born with its name (a look at the
    // server's children never takes a spare for a worker).
    let name = sys::proc::name().ok();
    let _ = sys::proc::set_name(SPARE_NAME);
    let forked = sys::proc::fork();
    if let (Ok(Some(_)) | Err(_), Some(name)) = (&forked, &name) {
        let _ = sys::proc::set_name(name);
    }
    match forked {
        Ok(None) => std::process::exit(spare_main(parent, server, theirs, name)),
        Ok(Some(pid)) => {
            drop(theirs);
            let pidfd = pidfd_or_discard(pid).ok()?;
            Some(Spare {
                pid,
                pidfd,
                channel,
            })
        }
        Err(_) => None,
    }
}

/// A spare's life: wait, holding nothing of the server's, for one request; then
/// become its worker. Returns an exit code if that never happens.
fn spare_main(parent: u32, server: u32, channel: OwnedFd, name: Option<std::ffi::CString>) -> i32 {
    // Killed with the server; and if the server is already gone, that signal will
    // never come.
    if sys::proc::kill_me_when_parent_dies().is_err() {
        return code::SETUP;
    }
    if sys::proc::parent_pid() != server {
        return code::ORPHANED;
    }
    // The channel becomes stdin, replacing the server's request socket: a spare that
    // held that socket would keep a dead server's requests (and their status
    // sockets) queued, and the parent would wait for answers that never come. All
    // else the server held (workers' pidfds and status sockets) is closed too.
    if sys::proc::set_stdin(channel.as_fd()).is_err() {
        return code::SETUP;
    }
    // Closed by number just below; never dropped (this function ends the process).
    std::mem::forget(channel);
    if sys::proc::close_from(3).is_err() {
        return code::SETUP;
    }
    let mut buf = vec![0u8; fork::MAX_REQUEST];
    let mut fds = VecDeque::new();
    let n = loop {
        match sys::sock::recv(sys::proc::stdin(), &mut buf, &mut fds, false) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return code::SETUP,
        }
    };
    // The server closed the channel without a request: it is exiting.
    if n == 0 {
        return code::OK;
    }
    let (Some(control), true) = (fds.pop_front(), fds.is_empty()) else {
        return code::PROTOCOL;
    };
    let Ok(request) = postcard::from_bytes::<ForkRequest>(&buf[..n]) else {
        return code::PROTOCOL;
    };
    if let Some(name) = name {
        let _ = sys::proc::set_name(&name);
    }
    become_worker(parent, request, control)
}

/// The pidfd of `pid`, a child just forked; if it cannot be opened, the child (and
/// the process group it may have made) is killed and reaped.
fn pidfd_or_discard(pid: u32) -> std::io::Result<OwnedFd> {
    sys::proc::pidfd_open(pid).inspect_err(|_| {
        // Unreaped, so the pid, and a group of that id, are still this child's.
        let _ = sys::proc::kill_group(pid);
        let _ = sys::proc::kill_child(pid);
        let _ = sys::proc::reap_child(pid);
    })
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
fn become_worker(parent: u32, request: ForkRequest, control: OwnedFd) -> i32 {
    let server = sys::proc::parent_pid();
    if sys::proc::set_stdin(control.as_fd()).is_err() {
        return code::SETUP;
    }
    // Everything inherited beyond stdio is the server's: its request socket, other
    // workers' pidfds and status sockets, the spare's. None of those values is
    // dropped after this (this function ends the process), so closing the numbers
    // cannot close a descriptor opened later.
    std::mem::forget(control);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(kind: sys::sock::Kind) -> (OwnedFd, OwnedFd) {
        sys::sock::pair(kind).unwrap()
    }

    #[test]
    fn what_the_server_takes_from_its_request_socket() {
        let (parent, server) = pair(sys::sock::Kind::SeqPacket);
        let mut buf = vec![0u8; fork::MAX_REQUEST];
        assert!(matches!(take_request(&server, &mut buf), Taken::Nothing));

        // A request with its two descriptors.
        let request = ForkRequest {
            parent: 1,
            own_group: true,
            env: vec![(b"K".to_vec(), b"V".to_vec())],
        };
        let bytes = postcard::to_allocvec(&request).unwrap();
        let (control, _) = pair(sys::sock::Kind::Stream);
        let (status, status_ours) = pair(sys::sock::Kind::Stream);
        sys::sock::send(
            parent.as_fd(),
            &bytes,
            &[control.as_fd(), status.as_fd()],
            true,
        )
        .unwrap();
        match take_request(&server, &mut buf) {
            Taken::Request(got, _, _, _) => assert_eq!(got, request),
            _ => panic!("expected the request"),
        }

        // Bytes that are not a request, with both descriptors: answered with EINVAL
        // on the status socket that came with them.
        sys::sock::send(
            parent.as_fd(),
            &[0xff; 9],
            &[control.as_fd(), status.as_fd()],
            true,
        )
        .unwrap();
        let Taken::Garbled(their_status) = take_request(&server, &mut buf) else {
            panic!("expected a malformed request");
        };
        answer(
            their_status.as_fd(),
            ForkReply::Failed {
                errno: libc::EINVAL,
            },
            None,
        );
        let mut reply = [0u8; fork::REPLY_LEN];
        let n =
            sys::sock::recv(status_ours.as_fd(), &mut reply, &mut VecDeque::new(), true).unwrap();
        assert_eq!(n, fork::REPLY_LEN);
        assert_eq!(
            ForkReply::from_bytes(reply),
            Some(ForkReply::Failed {
                errno: libc::EINVAL
            })
        );

        // One descriptor short: nothing to answer on, so it is dropped.
        sys::sock::send(parent.as_fd(), &bytes, &[control.as_fd()], true).unwrap();
        assert!(matches!(take_request(&server, &mut buf), Taken::Malformed));

        // The parent closed its end.
        drop(parent);
        assert!(matches!(take_request(&server, &mut buf), Taken::End));
    }
}
