//! Whether the caller's runtime can run a pool, asked without printing a panic.
//!
//! tokio has no way to ask whether a runtime's I/O and timer drivers are on: using a
//! disabled one panics. So the probe uses them under `catch_unwind`. A panic hook
//! still prints every caught panic, so the probe runs under a hook that stays quiet
//! for a panic on a probing thread and hands every other panic to the hook that was
//! there before. That hook is installed on the first probe and stays (a hook cannot be
//! removed without racing other threads); a hook the program sets later replaces it,
//! and then a failed probe prints its panic again, but still returns its answer.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

thread_local! {
    /// Set while this thread runs a probe whose panic is an answer, not a bug.
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current runtime can register fds and run timers.
pub(super) fn has_io_and_time() -> bool {
    quietly(|| {
        let io = tokio::net::UnixStream::pair().is_ok();
        let _timer = tokio::time::sleep(Duration::ZERO);
        io
    })
    .unwrap_or(false)
}

/// Runs `probe`, catching a panic without printing it.
fn quietly<R>(probe: impl FnOnce() -> R) -> std::thread::Result<R> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !PROBING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    PROBING.with(|p| p.set(true));
    let out = panic::catch_unwind(AssertUnwindSafe(probe));
    PROBING.with(|p| p.set(false));
    out
}
