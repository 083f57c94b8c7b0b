//! Where a thread may block, and the panic that says so when it may not.
//!
//! tokio's own `blocking_*` methods panic when they are called from a thread that is
//! driving async tasks, because blocking there stalls every task on that thread. Ours do
//! the same. tokio keeps that test private, so it is made here from what tokio does
//! expose: the cooperative budget. A thread that polls a task, or the future of a
//! `block_on`, runs with a budget of 128 units; `spawn_blocking` and `block_in_place`
//! lift the budget, and a thread outside any runtime never has one. So the caller is in
//! an async context exactly when the budget runs out after at most 128 units.
//!
//! The probe takes the units under guards that give them back when dropped, so the
//! task's budget is unchanged afterwards. It runs only where a runtime handle is set
//! and the thread is not one of tokio's blocking threads: on a runtime's own threads,
//! in `block_in_place` or inside `Runtime::enter`, where a call that may block costs
//! about 1.5 µs more. Elsewhere (a plain thread, a worker running a plain function, a
//! `spawn_blocking` closure) the check is a few thread-local reads.
//!
//! The probe misses a future polled through `tokio::task::unconstrained`, which opts
//! out of the budget; blocking there still stalls the runtime, unreported.

use std::task::{Context, Poll};

use tokio::task::coop;

/// The budget tokio gives a task for one poll, with one to spare.
const MORE_THAN_A_BUDGET: u32 = 129;

/// Panics, at the caller's caller, if the current thread is driving async tasks.
///
/// `method` names the blocking method, `instead` the async method to `.await`.
#[track_caller]
pub(crate) fn assert_may_block(method: &str, instead: &str) {
    if in_async_context() {
        panic!(
            "procpool's `{method}` was called from an async context (a tokio task or a \
             `block_on`), where blocking stalls the runtime: use `{instead}(..).await` \
             instead, or call it from `tokio::task::spawn_blocking`"
        );
    }
}

/// Whether the current thread is polling a tokio task or a `block_on` future.
fn in_async_context() -> bool {
    // A thread of tokio's blocking pool runs a task (so it has a task id) but is not a
    // worker: that is `spawn_blocking`, where blocking is the point. Answered without
    // the probe, which would take the whole loop there, and before asking for the
    // runtime's handle, whose clone and drop are two atomic operations on a shared
    // count (a third of an uncontended lock's cost).
    if tokio::runtime::worker_index().is_none() && tokio::task::try_id().is_some() {
        return false;
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    budget_runs_out(&mut cx, MORE_THAN_A_BUDGET)
}

/// Takes one unit of budget and recurses, so that the guards give the units back in
/// the reverse order of taking them (each restores the budget as it was before its
/// unit): the budget ends as it began.
fn budget_runs_out(cx: &mut Context<'_>, left: u32) -> bool {
    match coop::poll_proceed(cx) {
        Poll::Pending => true,
        Poll::Ready(unit) => {
            let out = left > 1 && budget_runs_out(cx, left - 1);
            drop(unit);
            out
        }
    }
}

/// How long a blocking wait may still take before `deadline` (`None`: no limit), or
/// `None` when the deadline has passed.
pub(crate) fn remaining(
    deadline: Option<std::time::Instant>,
) -> Option<Option<std::time::Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => d
            .checked_duration_since(std::time::Instant::now())
            .map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_thread_may_block() {
        assert!(!in_async_context());
    }

    #[test]
    fn inside_block_on_and_a_task_is_async_and_spawn_blocking_is_not() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(in_async_context(), "block_on");
            // The probe leaves the budget as it found it: a second probe agrees.
            assert!(in_async_context(), "block_on, probed again");
            assert!(tokio::spawn(async { in_async_context() }).await.unwrap());
            let blocking = tokio::task::spawn_blocking(in_async_context);
            assert!(!blocking.await.unwrap(), "spawn_blocking");
            let in_place = tokio::spawn(async { tokio::task::block_in_place(in_async_context) });
            assert!(!in_place.await.unwrap(), "block_in_place");
        });
        let _entered = rt.enter();
        assert!(!in_async_context(), "entered, not polling");
    }

    #[test]
    fn the_probe_gives_back_every_unit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            // Spend some of the budget, then probe: the units left stay as they were,
            // so exactly as many more can be spent before the budget runs out.
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            for _ in 0..100 {
                match coop::poll_proceed(&mut cx) {
                    Poll::Ready(unit) => unit.made_progress(),
                    Poll::Pending => panic!("budget ran out early"),
                }
            }
            assert!(in_async_context());
            let mut more = 0;
            while let Poll::Ready(unit) = coop::poll_proceed(&mut cx) {
                unit.made_progress();
                more += 1;
                assert!(more <= 128, "budget never ran out");
            }
            assert_eq!(more, 28, "the probe changed the budget");
        });
    }
}
