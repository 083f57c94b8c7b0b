//! A caller on a thread of its own polls for its result a little before it sleeps.
//!
//! A task's result reaches its handle from the driver, a tokio task. A caller that is
//! another task of the runtime is usually woken on the driver's own thread, right
//! after it (tokio runs a task woken by the running one next, on the same thread).
//! A caller in `Runtime::block_on` of a multi-thread runtime is not: it sleeps on its
//! own thread, and waking a sleeping thread on another CPU is tens of microseconds on
//! a virtualised machine, more than the whole round trip of a trivial task.
//!
//! So such a caller, when its result is not there yet, yields its CPU once and asks to
//! be polled again at once, for as long as its pool's replies have lately come back
//! quickly ([`SpinHint`], from the drivers' [`Pace`](super::pace::Pace)). Politely,
//! as the workers do: a yield that let another thread run (the CPU is wanted) ends the
//! polling, and a thread that runs tasks (a runtime worker, a current-thread runtime)
//! never polls, since it would keep the driver itself from running.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long callers of one pool may poll: twice its drivers' typical single-task
/// round trip, while that is short; zero otherwise. Written by the drivers after
/// each reply, read when a task is queued.
#[derive(Debug, Default)]
pub(crate) struct SpinHint {
    nanos: AtomicU32,
}

impl SpinHint {
    /// The longest a caller polls.
    const MAX: Duration = Duration::from_micros(100);

    /// A driver's latest view: `spin` is what the driver itself polls for a reply
    /// (zero when replies are slow or several tasks are in flight).
    pub(crate) fn set(&self, spin: Duration) {
        let nanos = (2 * spin).min(Self::MAX).as_nanos() as u32;
        if self.nanos.load(Ordering::Relaxed) != nanos {
            self.nanos.store(nanos, Ordering::Relaxed);
        }
    }

    fn get(&self) -> Duration {
        Duration::from_nanos(u64::from(self.nanos.load(Ordering::Relaxed)))
    }
}

/// One handle's polling: how long it may poll, and until when, once it began.
#[derive(Debug)]
pub(crate) struct AwaitPoll {
    budget: Duration,
    until: Option<Instant>,
}

impl AwaitPoll {
    /// A yield that took longer ran another thread on this CPU.
    const PREEMPTED: Duration = Duration::from_micros(20);

    /// Polling as `hint` allows now.
    pub(crate) fn new(hint: &SpinHint) -> AwaitPoll {
        AwaitPoll {
            budget: hint.get(),
            until: None,
        }
    }

    /// No polling at all.
    pub(crate) fn never() -> AwaitPoll {
        AwaitPoll {
            budget: Duration::ZERO,
            until: None,
        }
    }

    /// Called when the result is not there: whether to be polled again at once (the
    /// caller then wakes itself) rather than sleep. Yields the CPU once when it says
    /// yes.
    pub(crate) fn again(&mut self) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        if !on_a_thread_of_its_own() {
            self.budget = Duration::ZERO;
            return false;
        }
        let now = Instant::now();
        let until = *self.until.get_or_insert(now + self.budget);
        if now >= until {
            self.budget = Duration::ZERO;
            return false;
        }
        std::thread::yield_now();
        if now.elapsed() > Self::PREEMPTED {
            // The CPU is wanted: sleep, and leave it to whoever ran.
            self.budget = Duration::ZERO;
            return false;
        }
        true
    }
}

/// Whether this thread polls nothing but the caller's future: not a runtime worker
/// (which runs the driver too), not a current-thread runtime's thread (the same), not
/// a blocking-pool thread running a task.
fn on_a_thread_of_its_own() -> bool {
    tokio::runtime::worker_index().is_none() && tokio::task::try_id().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_of_zero_never_polls() {
        let hint = SpinHint::default();
        assert!(!AwaitPoll::new(&hint).again());
        assert!(!AwaitPoll::never().again());
    }

    #[test]
    fn the_budget_is_twice_the_drivers_spin_at_most_the_maximum() {
        let hint = SpinHint::default();
        hint.set(Duration::from_micros(10));
        assert_eq!(hint.get(), Duration::from_micros(20));
        hint.set(Duration::from_millis(1));
        assert_eq!(hint.get(), SpinHint::MAX);
        hint.set(Duration::ZERO);
        assert_eq!(hint.get(), Duration::ZERO);
    }

    #[test]
    fn only_a_thread_that_polls_nothing_else_may_poll() {
        let ct = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!ct.block_on(async { on_a_thread_of_its_own() }));
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert!(!mt
            .block_on(mt.spawn(async { on_a_thread_of_its_own() }))
            .unwrap());
        assert!(!mt
            .block_on(mt.spawn_blocking(on_a_thread_of_its_own))
            .unwrap());
        assert!(mt.block_on(async { on_a_thread_of_its_own() }));
        // And there, a caller on a current-thread runtime stops asking at once.
        let hint = SpinHint::default();
        hint.set(Duration::from_secs(1));
        let mut poll = AwaitPoll::new(&hint);
        assert!(!ct.block_on(async { poll.again() }));
        assert!(poll.budget.is_zero());
    }
}
