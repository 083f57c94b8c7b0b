//! [`Child`]: a child process as procpool kills and reaps it, whichever way it was
//! started.
//!
//! A child started by `exec` is this process's own: std's `Child` kills it and
//! `waitpid` reaps it. A worker forked by the fork server is the server's child, not
//! ours: we signal it through its pidfd (which names it even after its pid is
//! reused), and the server reaps it and sends us its wait status on a socket of its
//! own ([`crate::wire::fork`]).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::sys;
use crate::wire::fork::STATUS_LEN;

/// A child process to kill and reap.
#[derive(Debug)]
pub(crate) enum Child {
    /// Started by `exec`; ours to reap.
    Exec(std::process::Child),
    /// Forked by the fork server, which reaps it.
    Forked(Forked),
}

/// A worker the fork server started, as its parent holds it.
#[derive(Debug)]
pub(crate) struct Forked {
    pid: u32,
    pidfd: OwnedFd,
    /// Where the server writes the status once it has reaped the worker.
    status: OwnedFd,
    /// The bytes of the status read so far.
    got: [u8; STATUS_LEN],
    have: usize,
    /// Its status, once read.
    exited: Option<ExitStatus>,
}

impl Forked {
    /// A worker the server forked: its pid, pidfd and our end of its status socket.
    pub(crate) fn new(pid: u32, pidfd: OwnedFd, status: OwnedFd) -> Forked {
        Forked {
            pid,
            pidfd,
            status,
            got: [0; STATUS_LEN],
            have: 0,
            exited: None,
        }
    }

    /// Reads what the server has sent of the status; `blocking` waits for it.
    fn read_status(&mut self, blocking: bool) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.exited {
            return Ok(Some(status));
        }
        while self.have < STATUS_LEN {
            let mut fds = std::collections::VecDeque::new();
            match sys::sock::recv(
                self.status.as_fd(),
                &mut self.got[self.have..],
                &mut fds,
                !blocking,
            ) {
                Ok(0) => return Err(server_gone()),
                Ok(n) => self.have += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let status = ExitStatus::from_raw(i32::from_le_bytes(self.got));
        self.exited = Some(status);
        Ok(Some(status))
    }
}

fn server_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the fork server ended before it reported the worker's exit",
    )
}

impl Child {
    /// Its pid.
    pub(crate) fn id(&self) -> u32 {
        match self {
            Child::Exec(c) => c.id(),
            Child::Forked(f) => f.pid,
        }
    }

    /// Sends it `SIGKILL`. Not an error if it has already exited.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        match self {
            Child::Exec(c) => c.kill(),
            Child::Forked(f) => {
                match sys::proc::pidfd_send_signal(f.pidfd.as_fd(), libc::SIGKILL) {
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                    other => other,
                }
            }
        }
    }

    /// Its status if it has exited and been reaped (by us, or by the fork server),
    /// without waiting.
    ///
    /// # Errors
    /// For a forked worker, `UnexpectedEof` when the fork server died before it
    /// reported the status (the worker died with it).
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self {
            Child::Exec(c) => c.try_wait(),
            Child::Forked(f) => f.read_status(false),
        }
    }

    /// Waits for its status, blocking the thread.
    pub(crate) fn wait_blocking(&mut self) -> io::Result<ExitStatus> {
        match self {
            Child::Exec(c) => c.wait(),
            Child::Forked(f) => f.read_status(true)?.ok_or_else(server_gone),
        }
    }

    /// Whether the parent kills its process group itself: a forked worker's group is
    /// killed by the fork server, which alone knows when the worker is not yet reaped
    /// (and so when the group id cannot name anyone else).
    pub(crate) fn parent_kills_group(&self) -> bool {
        matches!(self, Child::Exec(_))
    }

    /// The descriptor that becomes readable when [`try_wait`](Self::try_wait) may have
    /// news: the pidfd (`pidfd`, the caller's) for a child of ours, the status socket
    /// for a forked worker.
    pub(crate) fn status_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            Child::Exec(_) => None,
            Child::Forked(f) => Some(f.status.as_fd()),
        }
    }

    /// Its stdout and stderr pipes, if it was started with them.
    pub(crate) fn take_output(
        &mut self,
    ) -> (
        Option<std::process::ChildStdout>,
        Option<std::process::ChildStderr>,
    ) {
        match self {
            Child::Exec(c) => (c.stdout.take(), c.stderr.take()),
            Child::Forked(_) => (None, None),
        }
    }
}
