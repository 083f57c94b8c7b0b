//! How many worker slots (drivers) a pool runs: fixed, or elastic between
//! `min_workers` and `max_workers`, and changed at run time by `resize`.
//!
//! A fixed pool starts its slots when it is built and keeps them. An elastic one starts
//! `min` slots, and another one whenever a task is queued while no slot is idle and
//! fewer than `max` run ([`Scale::should_grow`]); a slot idle for `idle_timeout`
//! above `min` retires: it stops its worker and ends ([`Scale::try_retire`]). A
//! `resize` below the number running retires slots as they become free.
//!
//! The count of slots is a compare-and-swap, so that concurrent submits never start
//! more than `max` and concurrent retirements never go below the floor.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The pool's slot count and its bounds.
#[derive(Debug)]
pub(crate) struct Scale {
    min: AtomicUsize,
    max: AtomicUsize,
    /// Slots running (counted from when they are spawned until they end).
    slots: AtomicUsize,
    /// Slots spawned whose worker is not up yet: a task queued meanwhile does not
    /// start another slot if one of these will take it.
    starting: AtomicUsize,
    /// `None` for a fixed pool: its slots never retire for idleness.
    pub(crate) idle_timeout: Option<Duration>,
    /// Woken by `resize`, for idle slots above the new maximum to retire.
    pub(crate) resized: Notify,
}

impl Scale {
    pub(crate) fn new(min: usize, max: usize, idle_timeout: Option<Duration>) -> Scale {
        Scale {
            min: AtomicUsize::new(min),
            max: AtomicUsize::new(max),
            slots: AtomicUsize::new(0),
            starting: AtomicUsize::new(0),
            idle_timeout,
            resized: Notify::new(),
        }
    }

    pub(crate) fn min(&self) -> usize {
        self.min.load(Ordering::Acquire)
    }

    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Whether slots come and go (with load, or with a resize).
    pub(crate) fn is_elastic(&self) -> bool {
        self.idle_timeout.is_some()
    }

    /// Counts a new slot if fewer than the maximum run: true if one may be spawned.
    /// `queued` jobs wait and `idle` slots wait for jobs: a slot is wanted only when
    /// the queue holds more than the idle and starting slots will take.
    pub(crate) fn should_grow(&self, queued: usize, idle: bool) -> bool {
        if idle || queued <= self.starting.load(Ordering::Acquire) {
            return false;
        }
        self.add_slot()
    }

    /// Counts a new slot if fewer than the maximum run.
    pub(crate) fn add_slot(&self) -> bool {
        let max = self.max();
        let added = self
            .slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if added {
            self.starting.fetch_add(1, Ordering::AcqRel);
        }
        added
    }

    /// A spawned slot's worker is up (or the slot gave up starting one).
    pub(crate) fn started(&self) {
        self.starting.fetch_sub(1, Ordering::AcqRel);
    }

    /// Uncounts a slot that may retire: idle past its timeout (down to `min`), or
    /// above a lowered maximum. True if it must end now.
    pub(crate) fn try_retire(&self, idle_expired: bool) -> bool {
        let floor = if idle_expired { self.min() } else { self.max() };
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > floor).then(|| n - 1)
            })
            .is_ok()
    }

    /// Uncounts a slot that ends for another reason (shutdown, abort, a fatal failure).
    pub(crate) fn slot_ended(&self) {
        self.slots.fetch_sub(1, Ordering::AcqRel);
    }

    /// Sets the maximum, and the minimum too for a `fixed` pool (whose minimum
    /// follows its maximum) or when it was above; wakes idle slots to check whether
    /// they must retire.
    pub(crate) fn resize(&self, n: usize, fixed: bool) {
        self.max.store(n, Ordering::Release);
        if fixed || self.min() > n {
            self.min.store(n, Ordering::Release);
        }
        self.resized.notify_waiters();
    }

    /// Whether a spawned slot's worker is not up yet.
    pub(crate) fn is_starting(&self) -> bool {
        self.starting.load(Ordering::Acquire) > 0
    }

    /// Slots running now.
    pub(crate) fn slots(&self) -> usize {
        self.slots.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::Scale;
    use std::time::Duration;

    #[test]
    fn slots_stay_between_the_bounds() {
        let s = Scale::new(1, 3, Some(Duration::from_secs(1)));
        assert!(s.add_slot());
        s.started();
        // A queued job with an idle slot, or no more jobs than starting slots: no.
        assert!(!s.should_grow(1, true));
        assert!(s.should_grow(1, false));
        assert!(!s.should_grow(1, false), "one is starting for that job");
        s.started();
        assert!(s.should_grow(5, false));
        assert!(!s.should_grow(5, false), "at the maximum");
        assert_eq!(s.slots(), 3);
        // Idle retirement goes down to the minimum, not below.
        assert!(s.try_retire(true));
        assert!(s.try_retire(true));
        assert!(!s.try_retire(true));
        assert_eq!(s.slots(), 1);
        // A lowered maximum retires slots above it, idle or not.
        s.resize(0, false);
        assert!(s.try_retire(false));
        assert_eq!(s.slots(), 0);
    }
}
