//! [`PoolStats`]: what a pool counts, and the state behind `ready()` and `stats()`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Exit, TaskError};

/// Counters a service can export; see
/// [`ProcessPoolExecutor::stats`](crate::ProcessPoolExecutor::stats).
///
/// Every task the queue accepted is counted once in `submitted` and, at any moment, in
/// exactly one of `queued`, `running`, `completed`, `failed` and `cancelled`. Once the
/// pool is idle, `submitted == completed + failed + cancelled`. (A snapshot taken
/// while tasks move may be off by the few in motion.) A task that `submit` refused at
/// once (a full queue, a shut-down pool, an argument that does not serialise) was
/// never accepted: its handle says why, and no counter counts it. A `map` counts its
/// chunks, not its items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Tasks (or `map` chunks) the queue accepted.
    pub submitted: u64,
    /// Tasks waiting in the queue, including cancelled ones not yet taken off it.
    pub queued: u64,
    /// Tasks sent to a worker and not answered yet (running, or sent ahead).
    pub running: u64,
    /// Tasks that returned a value.
    pub completed: u64,
    /// Tasks that ended with an error other than cancellation; `panicked`,
    /// `worker_died` and `timed_out` say how many of them ended so.
    pub failed: u64,
    /// Failed tasks that panicked.
    pub panicked: u64,
    /// Failed tasks whose worker died under them.
    pub worker_died: u64,
    /// Failed tasks that ran past the pool's `task_timeout`.
    pub timed_out: u64,
    /// Tasks cancelled: by their handle, by dropping it while queued, or by
    /// `shutdown_now`. Never a task that nobody cancelled.
    pub cancelled: u64,
    /// Workers lost (died, killed for a timeout, a cancel or a protocol error) and
    /// replaced. Counted when the worker is lost, before its task's handle resolves.
    pub worker_restarts: u64,
    /// Workers retired after `max_tasks_per_worker` tasks.
    pub workers_recycled: u64,
    /// Workers up right now (handshake done). Less than
    /// [`workers`](crate::ProcessPoolExecutor::workers) while one is being replaced.
    pub workers_live: u64,
    /// Worker starts that failed, in all (each is retried; see
    /// [`ProcessPoolExecutor::ready`](crate::ProcessPoolExecutor::ready)).
    pub worker_start_failures: u64,
    /// `Some` while the pool is degraded: the last start of some worker failed and
    /// it is retrying (with back-off). Says why the last attempt failed.
    pub degraded: Option<StartFailure>,
}

/// Why a worker could not be started; see [`PoolStats::degraded`]. The pool retries,
/// backing off up to about a second between attempts, for as long as it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartFailure {
    /// The operating system refused to start the process (`EAGAIN`: out of
    /// processes; `ENOMEM`; `EMFILE`: out of descriptors).
    Spawn {
        /// The `errno`, 0 if the error had none.
        errno: i32,
    },
    /// The worker ended before it was ready (killed from outside, or out of memory).
    Died {
        /// How it ended.
        exit: Exit,
    },
    /// The worker sent something unexpected in its handshake.
    Handshake,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) worker_died: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) recycled: AtomicU64,
}

impl Counters {
    /// Counts a task's end by its result.
    pub(crate) fn ended<T>(&self, result: &Result<T, TaskError>) {
        let counter = match result {
            Ok(_) => &self.completed,
            Err(TaskError::Cancelled) => &self.cancelled,
            Err(e) => {
                let kind = match e {
                    TaskError::Panicked(_) => Some(&self.panicked),
                    TaskError::WorkerDied { .. } => Some(&self.worker_died),
                    TaskError::TimedOut { .. } => Some(&self.timed_out),
                    _ => None,
                };
                if let Some(kind) = kind {
                    kind.fetch_add(1, Ordering::Relaxed);
                }
                &self.failed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The pool's workers as `ready` and `stats` see them.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Slots with a worker up now.
    pub(crate) live: usize,
    /// Slots whose last start attempt failed (they are backing off to retry).
    pub(crate) failing: usize,
    /// Start attempts that failed, in all.
    pub(crate) failures: u64,
    /// Why the latest failed attempt failed.
    pub(crate) last_failure: Option<(Error, StartFailure)>,
    /// A failure that no retry can heal: the pool runs nothing more.
    pub(crate) fatal: Option<Error>,
    /// Slots whose driver has ended (shutdown).
    pub(crate) ended: usize,
}
