//! The parent's side of starting a child: the command that re-executes this program
//! as a procpool child ([`crate::worker`] is the child's side).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use crate::worker::ENV_WORKER;

/// The command that starts a child of this process: this executable again, marked,
/// with its end of the control socketpair as stdin and `env` on top of ours.
///
/// No `pre_exec`: std then starts the child with posix_spawn (vfork semantics), whose
/// cost does not grow with the parent's memory.
pub(crate) fn child_command(
    daemon: bool,
    socket: OwnedFd,
    env: &[(OsString, OsString)],
) -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    let marker = format!("{}:{}", std::process::id(), if daemon { 'd' } else { 'n' });
    cmd.env(ENV_WORKER, marker).stdin(Stdio::from(socket));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}
