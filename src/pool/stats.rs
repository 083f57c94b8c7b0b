//! [`PoolStats`]: what a pool counts, and the state behind `ready()` and `stats()`.

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use crate::error::{Error, Exit, TaskError};
use crate::wire::Payload;

/// Counters a service can export; see
/// [`ProcessPoolExecutor::stats`](crate::ProcessPoolExecutor::stats).
///
/// The counters count items: a task is one, and a `map` counts each of its items, not
/// its chunks. Every item the queue accepted is counted once in `submitted` and, at
/// any moment, in exactly one of `queued`, `running`, `completed`, `failed` and
/// `cancelled`. Once the pool is idle, `submitted == completed + failed + cancelled`.
/// (A snapshot taken while tasks move may be off by the few in motion.) A task that
/// `submit` refused (a full queue for `try_submit`, a shut-down pool, an argument that
/// does not serialise) was never accepted: the error says why, and no counter counts
/// it. When a worker dies in a `map` chunk, only the item it was running fails; the
/// chunk's other items run again and are counted once, when they end (or as cancelled
/// if the map is dropped first).
///
/// # Exporting
/// The counters only grow (but `queued`, `running` and `workers_live`, which are
/// gauges), so an exporter reads a snapshot on its own schedule and sets its own
/// counters and gauges from it: no callback, no registry inside the pool.
/// `examples/metrics.rs` prints one every second:
///
/// ```no_run
/// # async fn export(pool: procpool::ProcessPoolExecutor) {
/// let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
/// loop {
///     every.tick().await;
///     let s = pool.stats();
///     println!(
///         "queued={} running={} completed={} failed={} p99={:?}",
///         s.queued, s.running, s.completed, s.failed, s.latency.p99
///     );
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Items (tasks and `map` items) the queue accepted.
    pub submitted: u64,
    /// Items waiting in the queue, including cancelled ones not yet taken off it.
    pub queued: u64,
    /// Items sent to a worker and not answered yet (running, or sent ahead).
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
    /// Failed tasks that ran past their timeout.
    pub timed_out: u64,
    /// Tasks cancelled: by their handle, by dropping it while queued, or by
    /// `shutdown_now`. Never a task that nobody cancelled.
    pub cancelled: u64,
    /// Workers lost (died, killed for a timeout, a cancel or a protocol error) and
    /// replaced. Counted when the worker is lost, before its task's handle resolves.
    pub worker_restarts: u64,
    /// Workers retired after `max_tasks_per_worker` tasks.
    pub workers_recycled: u64,
    /// Tasks whose caller wrote them into an idle worker's shared memory and read the
    /// reply itself, with no hand-off through the pool's driver: tasks of
    /// [`run`](crate::ProcessPoolExecutor::run) that found a worker idle and were
    /// answered within microseconds. Also counted in `submitted` and `completed` (or
    /// `failed`).
    pub direct: u64,
    /// Workers up right now (handshake done). Less than
    /// [`workers`](crate::ProcessPoolExecutor::workers) while one is being replaced.
    pub workers_live: u64,
    /// Worker starts that failed, in all (each is retried; see
    /// [`ProcessPoolExecutor::ready`](crate::ProcessPoolExecutor::ready)).
    pub worker_start_failures: u64,
    /// `Some` while the pool is degraded: the last start of some worker failed and
    /// it is retrying (with back-off). Says why the last attempt failed.
    pub degraded: Option<StartFailure>,
    /// How long tasks took, from queued to answered, over the pool's life.
    pub latency: LatencySummary,
}

/// How long tasks took from being queued to being answered (waiting and running), over
/// the pool's life; see [`PoolStats::latency`]. A `map` chunk is one observation.
/// Cancelled tasks are not observed.
///
/// The quantiles come from a histogram of logarithmic buckets, four per doubling: each
/// is the upper bound of its bucket, within 19% above the true value. All zero until a
/// task ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySummary {
    /// Tasks observed.
    pub count: u64,
    /// Their mean.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The longest.
    pub max: Duration,
}

/// Buckets per doubling of the latency histogram.
const SUB_BUCKETS: u32 = 4;
/// Buckets in all: from 1 µs up to about 2^40 µs (12 days).
const BUCKETS: usize = 40 * SUB_BUCKETS as usize;

/// The latency histogram: two atomic adds per observation, no lock.
#[derive(Debug)]
pub(crate) struct Latency {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }
}

impl Latency {
    /// The bucket of `micros`: 4 per power of two, the lowest holding up to 1 µs.
    fn bucket(micros: u64) -> usize {
        if micros <= 1 {
            return 0;
        }
        let log = 63 - micros.leading_zeros(); // floor(log2)
                                               // The two bits below the leading one choose the quarter.
        let quarter = if log >= 2 {
            (micros >> (log - 2)) & 3
        } else {
            (micros << (2 - log)) & 3
        };
        ((log * SUB_BUCKETS) as usize + quarter as usize + 1).min(BUCKETS - 1)
    }

    /// The upper bound of bucket `i`, in microseconds.
    fn upper(i: usize) -> u64 {
        if i == 0 {
            return 1;
        }
        let i = i - 1;
        let log = (i / SUB_BUCKETS as usize) as u32;
        let quarter = (i % SUB_BUCKETS as usize) as u64;
        // [2^log × (4 + quarter) / 4, 2^log × (5 + quarter) / 4)
        ((1u64 << log) * (5 + quarter)).div_ceil(4)
    }

    pub(crate) fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Two shared adds per task; the maximum is written only when it grows (the
        // count is the buckets' sum).
        self.buckets[Self::bucket(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        if micros > self.max_micros.load(Ordering::Relaxed) {
            self.max_micros.fetch_max(micros, Ordering::Relaxed);
        }
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return LatencySummary::default();
        }
        let max = self.max_micros.load(Ordering::Relaxed);
        let quantile = |q: f64| {
            let rank = ((count as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Duration::from_micros(Self::upper(i).min(max));
                }
            }
            Duration::from_micros(max)
        };
        LatencySummary {
            count,
            mean: Duration::from_micros(self.sum_micros.load(Ordering::Relaxed) / count),
            p50: quantile(0.50),
            p90: quantile(0.90),
            p99: quantile(0.99),
            max: Duration::from_micros(max),
        }
    }
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
    pub(crate) direct: AtomicU64,
    pub(crate) latency: Latency,
}

impl Counters {
    /// Counts the end of a job of `items` items (of which `handed_on` end elsewhere)
    /// by its result: for a `map` chunk that answered, `outcomes` says how its items
    /// ended.
    pub(crate) fn ended(&self, items: u32, handed_on: u32, result: &Result<Payload, TaskError>) {
        let n = u64::from(items.saturating_sub(handed_on));
        let add = |c: &AtomicU64, k: u64| {
            if k > 0 {
                c.fetch_add(k, Ordering::Relaxed);
            }
        };
        match result {
            Ok(_) if items == 1 => add(&self.completed, n),
            Ok(p) => {
                let ok = u64::from(p.outcomes.ok).min(n);
                let panicked = u64::from(p.outcomes.panicked).min(n - ok);
                add(&self.completed, ok);
                add(&self.failed, n - ok);
                add(&self.panicked, panicked);
            }
            Err(TaskError::Cancelled) => add(&self.cancelled, n),
            Err(e) => {
                match e.unnamed() {
                    TaskError::Panicked(_) => add(&self.panicked, n),
                    TaskError::WorkerDied { .. } => add(&self.worker_died, n),
                    TaskError::TimedOut { .. } => add(&self.timed_out, n),
                    _ => {}
                }
                add(&self.failed, n);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_falls_in_a_bucket_whose_bound_is_within_a_quarter_above_it() {
        let mut last = 0;
        for micros in (0..5000)
            .chain((1..40).map(|k| 1u64 << k))
            .chain([u64::MAX / 2])
        {
            let b = Latency::bucket(micros);
            assert!(b >= last || micros < 5000, "buckets go down at {micros}");
            if micros < 5000 {
                last = b;
            }
            let upper = Latency::upper(b);
            if b < BUCKETS - 1 {
                assert!(
                    upper >= micros,
                    "{micros} µs above its bucket's bound {upper}"
                );
                assert!(
                    upper as f64 <= (micros.max(1) as f64) * 1.25 + 1.0,
                    "{micros} µs: bound {upper} too far above"
                );
            }
        }
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let l = Latency::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));
        let near = |d: Duration, ms: f64| {
            let got = d.as_secs_f64() * 1e3;
            got >= ms && got <= ms * 1.25
        };
        assert!(near(s.p50, 50.0), "{s:?}");
        assert!(near(s.p90, 90.0), "{s:?}");
        assert!(near(s.p99, 99.0), "{s:?}");
    }
}
