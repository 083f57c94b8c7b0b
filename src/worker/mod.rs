//! The child's side: recognising a worker before `main`, and what it runs.
//!
//! A worker is this executable started again (`/proc/self/exe`, see [`crate::spawn`])
//! with [`ENV_WORKER`] in its environment (the parent's pid) and its end of the control
//! socketpair as stdin. The library constructor ([`ctor`]) calls [`run_if_worker`]
//! before `main`; in a worker it never returns, so user `main` never runs there.
//!
//! - [`serve`]: the loop, handshake then one task at a time;
//! - [`progress`]: the page shared with the parent's driver, on which the worker
//!   claims each task before running it;
//! - [`identity`]: who the process is, for `current_process()`;
//! - [`fork_server`]: the process that forks pool workers instead of starting this
//!   executable again, for pools built with `StartMethod::ForkServer`;
//! - `forward` (feature `tracing`): the spans and events its tasks emit, sent to the
//!   parent.
//!
//! This layer sits below the pool, `Process` and the manager, which start children
//! through [`crate::spawn`] and talk to them with the wire format. [`crate::init`]
//! calls [`run_if_worker`] for users who prefer an explicit call (and as a fallback on
//! a platform where the constructor would not run).
//!
//! The constructor runs before std's own start-up, so the worker sets up what it needs
//! itself: `SIGPIPE` ignored (a write to a closed socket must fail, not kill), its
//! panic hook, and the parent-death signal.

mod ctor;
mod fork_server;
#[cfg(feature = "tracing")]
mod forward;
pub(crate) mod identity;
mod link;
pub(crate) mod progress;
mod serve;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) use ctor::keep_linked;

use crate::sys;
use crate::task;

/// Environment variable that marks a worker; its value is `<parent pid>:<d|n|z>`, `d`
/// for a daemonic child (killed with its parent), `n` for one that may outlive it, `z`
/// for the fork server (which is killed with its parent).
pub(crate) const ENV_WORKER: &str = "__PROCPOOL_WORKER_OF";

/// Exit codes of a worker that stops for a reason of its own (the parent reads the
/// reason from the socket when it can; these make `ps`/logs readable otherwise).
pub(crate) mod code {
    pub(crate) const OK: i32 = 0;
    pub(crate) const FAILED: i32 = 1;
    pub(crate) const SETUP: i32 = 101;
    pub(crate) const ORPHANED: i32 = 102;
    pub(crate) const REFUSED: i32 = 103;
    pub(crate) const INIT_FAILED: i32 = 104;
    pub(crate) const PROTOCOL: i32 = 105;
    pub(crate) const PANICKED: i32 = 106;
}

static STARTED: AtomicBool = AtomicBool::new(false);

/// If this process is a procpool worker, runs the worker and exits; otherwise returns
/// at once (one environment look-up).
pub(crate) fn run_if_worker() {
    let Some(parent) = std::env::var_os(ENV_WORKER) else {
        return;
    };
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    // Children this worker starts (a pool inside a task) must not take themselves for
    // workers of our parent. We are single-threaded here: nothing reads the environment
    // concurrently.
    std::env::remove_var(ENV_WORKER);
    let parsed = parent.to_str().and_then(|s| {
        let (pid, kind) = s.split_once(':')?;
        Some((pid.parse::<u32>().ok()?, kind))
    });
    let run = || match parsed {
        Some((parent, "z")) => {
            sys::proc::ignore_sigpipe();
            fork_server::serve(parent)
        }
        Some((parent, kind)) => worker_main(Some(Origin {
            parent,
            daemon: kind == "d",
            spawner: parent,
        })),
        None => worker_main(None),
    };
    let code = match panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(code) => code,
        Err(_) => code::PANICKED,
    };
    std::process::exit(code);
}

/// Where a worker comes from.
#[derive(Debug, Clone, Copy)]
struct Origin {
    /// The process it works for.
    parent: u32,
    /// Killed with its parent.
    daemon: bool,
    /// The process that started it: the parent itself, or the parent's fork server.
    spawner: u32,
}

fn worker_main(origin: Option<Origin>) -> i32 {
    sys::proc::ignore_sigpipe();
    let Some(Origin {
        parent,
        daemon,
        spawner,
    }) = origin
    else {
        return code::SETUP;
    };
    // The parent-death signal is tied to the spawning thread, which procpool keeps
    // alive for the life of the parent (or to the fork server, which dies with the
    // parent). If the spawner already died before this point, the signal will never
    // come: check it is still ours.
    if daemon && sys::proc::kill_me_when_parent_dies().is_err() {
        return code::SETUP;
    }
    // A daemon whose parent is already gone must not run: the signal would never come.
    // A non-daemon goes on: its task is already in its socket.
    if daemon && spawner != sys::proc::parent_pid() {
        return code::ORPHANED;
    }
    identity::set_parent(parent, daemon);
    let socket = match sys::proc::take_socket_from_stdin() {
        Ok(fd) => fd,
        Err(_) => return code::SETUP,
    };
    task::install_panic_hook();
    match serve::serve(socket) {
        Ok(code) => code,
        Err(_) => code::PROTOCOL,
    }
}
