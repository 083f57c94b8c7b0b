//! The parent's side of starting a child, shared by pool workers and `Process`: the
//! command that re-executes this program as a procpool child, the start itself (from
//! the supervisor thread), the pidfd, and the greeting it is sent first.
//! ([`crate::worker`] is the child's side.)
//!
//! What differs between the two callers stays with them: a pool worker answers the
//! greeting before it takes work (`pool::worker_process`); a `Process` child is sent
//! its one task right behind it and answers once, when it is done (`process`).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

use crate::supervisor::{self, Child};
use crate::sys;
use crate::wire::fork::ForkRequest;
use crate::wire::Hello;
use crate::worker::ENV_WORKER;

/// How to start one child.
#[derive(Debug, Default)]
pub(crate) struct ChildSpec<'a> {
    /// Marked daemonic: it may not start children of its own, and it is killed with
    /// its parent.
    pub(crate) daemon: bool,
    /// Variables set on top of this process's environment.
    pub(crate) env: &'a [(OsString, OsString)],
    /// A process group of its own (pool workers): a terminal's Ctrl-C (SIGINT to the
    /// foreground group) reaches only the parent, which decides what to do, and the
    /// group can be killed whole when the worker ends.
    pub(crate) own_group: bool,
    /// Where its stdout goes; inherited when `None`.
    pub(crate) stdout: Option<Stdio>,
    /// Where its stderr goes; inherited when `None`.
    pub(crate) stderr: Option<Stdio>,
    /// Forked by the fork server instead of started by `exec` (pool workers only: a
    /// daemon, with its stdout and stderr inherited from the server).
    pub(crate) fork_server: bool,
}

/// A child that runs, not yet greeted.
#[derive(Debug)]
pub(crate) struct Started {
    /// To reap it; the caller owns that duty from here on.
    pub(crate) child: Child,
    pub(crate) pid: u32,
    /// Names this child and no other, even after its pid is reused.
    pub(crate) pidfd: OwnedFd,
    /// The parent's end of the control socket (the child's is its stdin).
    pub(crate) socket: OwnedFd,
}

/// Starts a child, waiting for the supervisor thread (or the fork server)
/// asynchronously, and runs `greet` on our end of the control socket while the child
/// starts (the request is on its way by then). What `greet` writes there waits in the
/// socket, and the child reads it as soon as it runs, instead of a round trip after
/// the start has been reported back. `greet` must not block: nobody reads yet, so it
/// writes without waiting and leaves any rest for later.
///
/// # Errors
/// The socketpair, the start or the pidfd failed; nothing is left running, and
/// `greet`'s value is dropped.
///
/// # Cancel safety
/// If dropped after the request went out, the child may start: one started by `exec`
/// is killed and reaped by the supervisor; a forked one finds its control socket
/// closed and exits, and the fork server reaps it.
pub(crate) async fn start<T>(
    spec: ChildSpec<'_>,
    greet: impl FnOnce(BorrowedFd<'_>) -> T,
) -> io::Result<(Started, T)> {
    let (ours, theirs) = sys::sock::pair(sys::sock::Kind::Stream)?;
    let mut starting = std::pin::pin!(launch(spec, theirs));
    // The first poll hands the request to the supervisor thread.
    let first = futures::poll!(starting.as_mut());
    let greeting = greet(ours.as_fd());
    let (child, pidfd) = match first {
        std::task::Poll::Ready(started) => started?,
        std::task::Poll::Pending => starting.await?,
    };
    let started = Started {
        pid: child.id(),
        child,
        pidfd,
        socket: ours,
    };
    Ok((started, greeting))
}

/// Starts the child whose end of the control socket is `theirs`, by `exec` or by the
/// fork server.
async fn launch(spec: ChildSpec<'_>, theirs: OwnedFd) -> io::Result<(Child, OwnedFd)> {
    if spec.fork_server {
        debug_assert!(spec.daemon && spec.stdout.is_none() && spec.stderr.is_none());
        let request = fork_request(spec.own_group, spec.env);
        return supervisor::fork_child(request, theirs, server_command).await;
    }
    let child = supervisor::start_child(command(spec, theirs)).await?;
    pidfd_of(child)
}

fn fork_request(own_group: bool, env: &[(OsString, OsString)]) -> ForkRequest {
    ForkRequest {
        parent: std::process::id(),
        own_group,
        env: env
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
    }
}

/// Whether a fork server can start children with these extra variables: its
/// requests are read into a buffer of [`MAX_REQUEST`](crate::wire::fork::MAX_REQUEST)
/// bytes, and the environment is the part of a request that grows.
pub(crate) fn fits_fork_server(env: &[(OsString, OsString)]) -> bool {
    postcard::to_allocvec(&fork_request(true, env))
        .is_ok_and(|bytes| bytes.len() <= crate::wire::fork::MAX_REQUEST)
}

/// The command that starts the fork server: this executable again, marked as the
/// server, in a process group of its own (a terminal's Ctrl-C must not reach it, as
/// it does not reach the workers), with its request socket as stdin.
fn server_command() -> io::Result<(Command, OwnedFd)> {
    use std::os::unix::process::CommandExt;

    let (ours, theirs) = sys::sock::pair(sys::sock::Kind::SeqPacket)?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.env(ENV_WORKER, format!("{}:z", std::process::id()))
        .stdin(Stdio::from(theirs))
        .process_group(0);
    Ok((cmd, ours))
}

/// Starts a child, blocking the thread for as long as the start takes (about a
/// millisecond, as `std::process::Command::spawn`).
///
/// # Errors
/// As [`start`].
pub(crate) fn start_now(spec: ChildSpec<'_>) -> io::Result<Started> {
    let (ours, theirs) = sys::sock::pair(sys::sock::Kind::Stream)?;
    let child = supervisor::start_child_now(command(spec, theirs))?;
    let (child, pidfd) = pidfd_of(child)?;
    Ok(Started {
        pid: child.id(),
        child,
        pidfd,
        socket: ours,
    })
}

/// The greeting every child is sent first. Callers set what is theirs (limits, the
/// initializer, the progress page, `one_shot`) with struct update syntax.
pub(crate) fn hello(name: String) -> Hello {
    Hello {
        fingerprint: crate::task::fingerprint(),
        max_frame: crate::DEFAULT_MAX_FRAME,
        initializer: None,
        name,
        one_shot: false,
        authkey: crate::authkey::authkey(),
        progress: false,
        ring: false,
        bulk: false,
        spin: false,
        glance: false,
        limits: crate::wire::WorkerLimits::default(),
        trace_level: 0,
    }
}

/// The command that starts a child of this process: this executable again, marked,
/// with `theirs` (its end of the control socket) as stdin and `env` on top of ours.
///
/// No `pre_exec`: std then starts the child with posix_spawn (vfork semantics), whose
/// cost does not grow with the parent's memory.
fn command(spec: ChildSpec<'_>, theirs: OwnedFd) -> Command {
    use std::os::unix::process::CommandExt;

    let mut cmd = Command::new("/proc/self/exe");
    let kind = if spec.daemon { 'd' } else { 'n' };
    let marker = format!("{}:{kind}", std::process::id());
    cmd.env(ENV_WORKER, marker).stdin(Stdio::from(theirs));
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    if spec.own_group {
        cmd.process_group(0);
    }
    if let Some(s) = spec.stdout {
        cmd.stdout(s);
    }
    if let Some(s) = spec.stderr {
        cmd.stderr(s);
    }
    cmd
}

/// Opens the pidfd of a child just started; if that fails, the supervisor kills and
/// reaps the child.
fn pidfd_of(child: Child) -> io::Result<(Child, OwnedFd)> {
    match sys::proc::pidfd_open(child.id()) {
        Ok(pidfd) => Ok((child, pidfd)),
        Err(e) => {
            supervisor::reap_later(child);
            Err(e)
        }
    }
}
