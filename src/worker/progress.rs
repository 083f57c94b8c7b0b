//! The progress page: which of the tasks queued in a worker's socket it has started.
//!
//! A driver may send a worker several tasks before the first is answered (pipelining,
//! see the pool's driver, `pool::driver`). Then "sent" no longer means "started", and
//! the parent must know which is which: a cancelled task that has not started must not
//! run, one that has must have its worker killed, and when a worker dies, the one task
//! it was running fails while the tasks behind it, never started, go to the next
//! worker.
//!
//! Each worker shares one page of memory with its driver (a memfd sent with `Hello`).
//! Task number `seq` (counted by both sides in the order `Run` frames are written and
//! read) owns slot `seq % DEPTH_MAX`, a word `seq << 2 | state`. The driver writes
//! `PENDING` before sending the frame; the worker, before running it, moves it to
//! `STARTED` with a compare-and-swap. The driver's own moves are compare-and-swaps
//! from `PENDING` too, so exactly one side wins each race:
//! - `CANCELLED`: the worker answers "skipped" without running it;
//! - `HELD`: the worker stops before it (its driver is about to kill it and must be
//!   sure nothing after the task being cancelled has started).
//!
//! For a `map` chunk the worker also counts, in a second word per slot, the items it
//! has begun (item `k` begun: `k + 1`), so that when it dies in the middle of a chunk
//! the parent knows which item was running and which never started.
//!
//! A slot is reused only after its task was answered, because a driver never has more
//! than `DEPTH_MAX` tasks in flight. After a worker is reaped the page no longer
//! changes, so the driver can read there what the worker had started.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys;
use crate::sys::shm::{self, Region};

/// Most tasks a worker may have sent to it and not answered.
pub(crate) const DEPTH_MAX: usize = 64;

const PAGE: usize = 4096;
/// A word the worker sets (in a `SIGABRT` handler) when it aborts because an
/// allocation failed: see [`watch_allocation_failures`].
const OUT_OF_MEMORY: usize = PAGE - 8;
/// The task number whose soft timeout passed: the driver writes it, the task reads it
/// through [`soft_timeout_expired`].
const TOLD_TO_STOP: usize = PAGE - 16;
/// Where the items-begun words start (after the `DEPTH_MAX` state words).
const ITEMS: usize = DEPTH_MAX * 8;
const PENDING: u64 = 0;
const STARTED: u64 = 1;
const CANCELLED: u64 = 2;
const HELD: u64 = 3;

/// What the worker may do with the next task.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    Run,
    Skip,
    Stop,
    /// The slot holds neither this task nor a decision about it: the page and the
    /// stream disagree, which only a broken parent can cause.
    Lost,
}

/// What [`Progress::hold`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The worker will stop before the task.
    Held,
    /// The task is marked to be skipped: the worker will go on to the next one.
    Skipped,
    /// The worker has begun the task.
    Started,
}

/// One worker's progress page, as either side maps it.
#[derive(Debug)]
pub(crate) struct Progress {
    region: Region,
}

impl Progress {
    /// A new zeroed page and the descriptor to send to the worker.
    pub(crate) fn create() -> io::Result<(Progress, OwnedFd)> {
        let fd = shm::memfd("procpool-progress", PAGE as u64, shm::Size::Fixed)?;
        let region = Region::map(fd.as_fd(), PAGE)?;
        Ok((Progress { region }, fd))
    }

    /// The worker's view of the page its parent sent.
    pub(crate) fn open(fd: &OwnedFd) -> io::Result<Progress> {
        if shm::file_len(fd.as_fd())? < PAGE as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "progress page too small",
            ));
        }
        Ok(Progress {
            region: Region::map(fd.as_fd(), PAGE)?,
        })
    }

    fn slot(&self, seq: u64) -> &AtomicU64 {
        self.region.u64_at((seq % DEPTH_MAX as u64) as usize * 8)
    }

    fn items_slot(&self, seq: u64) -> &AtomicU64 {
        self.region
            .u64_at(ITEMS + (seq % DEPTH_MAX as u64) as usize * 8)
    }

    /// Parent: task `seq` is about to be sent.
    pub(crate) fn queue(&self, seq: u64) {
        self.items_slot(seq).store(0, Ordering::SeqCst);
        self.slot(seq).store(seq << 2 | PENDING, Ordering::SeqCst);
    }

    /// Worker: item `index` of the chunk that is task `seq` begins.
    pub(crate) fn item_begun(&self, seq: u64, index: usize) {
        self.items_slot(seq)
            .store(index as u64 + 1, Ordering::Release);
    }

    /// Parent, once the worker is reaped: how many items of the chunk that is task
    /// `seq` it had begun (0 for a task that is not a chunk).
    pub(crate) fn items_begun(&self, seq: u64) -> u64 {
        self.items_slot(seq).load(Ordering::Acquire)
    }

    fn claim(&self, seq: u64, state: u64) -> Result<(), u64> {
        self.slot(seq)
            .compare_exchange(
                seq << 2 | PENDING,
                seq << 2 | state,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .map(drop)
    }

    /// Parent: makes the worker skip task `seq` (or finds it already marked so);
    /// false if the worker has started it.
    pub(crate) fn skip(&self, seq: u64) -> bool {
        match self.claim(seq, CANCELLED) {
            Ok(()) => true,
            Err(v) => v == seq << 2 | CANCELLED,
        }
    }

    /// Parent: makes the worker stop before task `seq`, unless it has started it or
    /// it is marked to be skipped (then the worker passes over it to the next one).
    pub(crate) fn hold(&self, seq: u64) -> Hold {
        match self.claim(seq, HELD) {
            Ok(()) => Hold::Held,
            Err(v) if v == seq << 2 | CANCELLED => Hold::Skipped,
            Err(v) if v == seq << 2 | HELD => Hold::Held,
            Err(_) => Hold::Started,
        }
    }

    /// Parent, once the worker is reaped: whether it started task `seq`.
    /// Parent, once the worker is reaped: whether it aborted because an allocation
    /// failed (see [`watch_allocation_failures`]).
    pub(crate) fn aborted_out_of_memory(&self) -> bool {
        self.region.u64_at(OUT_OF_MEMORY).load(Ordering::Acquire) != 0
    }

    /// Driver: task `seq` passed its soft timeout.
    pub(crate) fn tell_to_stop(&self, seq: u64) {
        self.region
            .u64_at(TOLD_TO_STOP)
            .store(seq, Ordering::Release);
    }

    pub(crate) fn started(&self, seq: u64) -> bool {
        self.slot(seq).load(Ordering::SeqCst) == seq << 2 | STARTED
    }

    /// Worker: claims task `seq` before running it.
    pub(crate) fn begin(&self, seq: u64) -> Begin {
        match self.claim(seq, STARTED) {
            Ok(()) => Begin::Run,
            Err(v) if v == seq << 2 | CANCELLED => Begin::Skip,
            Err(v) if v == seq << 2 | HELD => Begin::Stop,
            Err(_) => Begin::Lost,
        }
    }
}

/// This worker's own page, kept for the life of the worker: for its tasks to read
/// their soft timeout on ([`soft_timeout_expired`]), and for the abort hook to mark
/// (it must never meet an unmapped page).
static OWN_PAGE: std::sync::OnceLock<std::sync::Arc<Progress>> = std::sync::OnceLock::new();
/// The task the worker runs (0: none).
static RUNNING: AtomicU64 = AtomicU64::new(0);

/// Worker: keeps its page (see [`OWN_PAGE`]).
pub(crate) fn keep_own_page(page: std::sync::Arc<Progress>) {
    let _ = OWN_PAGE.set(page);
}

/// Worker: task `seq` runs now (0: none).
pub(crate) fn running(seq: u64) {
    RUNNING.store(seq, Ordering::Relaxed);
}

/// Whether the task calling it has passed its soft timeout
/// ([`TaskBuilder::soft_timeout`](crate::TaskBuilder::soft_timeout)): time to stop,
/// clean up and return. Always false outside a pool task, and for a task without
/// one. One atomic load: cheap enough for a loop's every turn.
pub fn soft_timeout_expired() -> bool {
    let seq = RUNNING.load(Ordering::Relaxed);
    seq != 0
        && OWN_PAGE
            .get()
            .is_some_and(|p| p.region.u64_at(TOLD_TO_STOP).load(Ordering::Acquire) == seq)
}

/// Worker with an address-space limit (and its page kept, [`keep_own_page`]): when it
/// aborts and `errno` says the last thing that failed was an allocation (`ENOMEM`, as
/// Rust's allocation-failure handler leaves it before it calls `abort()`), mark the
/// page, so that the parent can tell the limit from any other abort. The serve loop
/// clears `errno` before each task, so an old `ENOMEM` does not count.
pub(crate) fn watch_allocation_failures() -> io::Result<()> {
    sys::proc::on_abort(mark_if_out_of_memory)
}

/// The abort hook: async-signal-safe (reads `errno`, one atomic load, one store).
fn mark_if_out_of_memory() {
    if sys::proc::errno() == libc::ENOMEM {
        if let Some(page) = OWN_PAGE.get() {
            page.region
                .u64_at(OUT_OF_MEMORY)
                .store(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_race_has_one_winner_and_slots_are_reused_by_number() {
        let (parent, fd) = Progress::create().unwrap();
        let worker = Progress::open(&fd).unwrap();
        parent.queue(1);
        parent.queue(2);
        parent.queue(3);
        assert_eq!(worker.begin(1), Begin::Run);
        assert!(!parent.skip(1), "started: too late to skip");
        assert!(parent.started(1));
        assert!(parent.skip(2));
        assert!(
            parent.skip(2),
            "marked twice (by the handle, then the driver)"
        );
        assert_eq!(worker.begin(2), Begin::Skip);
        assert_eq!(parent.hold(3), Hold::Held);
        assert_eq!(parent.hold(2), Hold::Skipped);
        assert_eq!(parent.hold(1), Hold::Started);
        assert!(!parent.skip(3));
        assert_eq!(worker.begin(3), Begin::Stop);
        assert!(!parent.started(3));
        // Task 1 + DEPTH_MAX reuses task 1's slot; a stale number is never taken for
        // it.
        let again = 1 + DEPTH_MAX as u64;
        assert_eq!(worker.begin(again), Begin::Lost);
        parent.queue(again);
        assert!(!parent.started(1));
        assert_eq!(worker.begin(again), Begin::Run);
        worker.item_begun(again, 0);
        worker.item_begun(again, 6);
        assert_eq!(parent.items_begun(again), 7);
        parent.queue(again + DEPTH_MAX as u64);
        assert_eq!(
            parent.items_begun(again),
            0,
            "a new task in the slot counts anew"
        );
    }
}
