//! [`ProcessPoolExecutor`]: Python's `concurrent.futures.ProcessPoolExecutor`, awaited.
//!
//! - [`builder`](ProcessPoolExecutor::builder) sets the pool up; workers start eagerly
//!   in the background when it is built, and [`ready`](ProcessPoolExecutor::ready)
//!   waits for them.
//! - [`submit`](ProcessPoolExecutor::submit) queues one task and returns its
//!   [`TaskHandle`] at once; [`run`](ProcessPoolExecutor::run) submits and awaits.
//! - [`map`](ProcessPoolExecutor::map), [`map_unordered`](ProcessPoolExecutor::map_unordered)
//!   and [`map_ordered_stream`](ProcessPoolExecutor::map_ordered_stream) (Python's
//!   `imap`) run a function over an iterator in chunks, lazily.
//! - [`shutdown`](ProcessPoolExecutor::shutdown) drains;
//!   [`shutdown_now`](ProcessPoolExecutor::shutdown_now) cancels.

mod await_poll;
mod builder;
mod chunking;
mod direct;
mod driver;
mod handle;
mod jobs;
mod map;
mod map_future;
mod pace;
#[cfg(feature = "nats")]
mod remote;
mod reply;
mod runtime_probe;
mod scale;
mod shutdown;
mod span;
mod stats;
mod submit;
mod task_builder;
mod worker_process;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use builder::{Affinity, PoolBuilder, StartMethod};
pub use handle::TaskHandle;
pub use map::{MapProgress, MapStream};
pub use map_future::{KeepPartial, Map, MapFuture, PartialMap};
pub use stats::{LatencySummary, PoolStats, StartFailure};
pub use submit::Submit;
pub use task_builder::TaskBuilder;

use crate::error::{Error, TaskError};
use crate::task::{AsyncTask, Message, Task, Trampoline};
use crate::wire::{self, TaskRef};
use handle::Job;
use jobs::JobQueue;
use stats::{Counters, Health};

/// Default frame size limit: 1 GiB, for an argument, a result or a chunk.
pub const DEFAULT_MAX_FRAME: u64 = 1 << 30;
/// Most tasks a worker may be sent ahead; see [`PoolBuilder::pipeline_depth`].
pub const MAX_PIPELINE: usize = crate::worker::progress::DEPTH_MAX;
/// Default capacity of the queue of pending tasks.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1 << 16;

/// Settings shared by the pool and its drivers.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) max_tasks_per_worker: Option<u64>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) queue_capacity: usize,
    pub(crate) max_frame: u64,
    /// Fixed pipeline depth; `None` for adaptive.
    pub(crate) pipeline: Option<usize>,
    /// How long a caller of `run` polls for its reply; `None` for adaptive.
    pub(crate) caller_poll: Option<Duration>,
    pub(crate) initializer: Option<(TaskRef, Vec<u8>)>,
    /// Descriptors of handles in the initializer's argument; each worker gets its own
    /// duplicates with its `Hello`.
    pub(crate) initializer_fds: Arc<Vec<OwnedFd>>,
    pub(crate) fingerprint: u64,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) start_method: builder::StartMethod,
    /// Tasks run on remote hosts (the `nats` feature): they must be registered.
    pub(crate) remote: bool,
    /// What each worker sets on itself before its first task.
    pub(crate) limits: builder::Limits,
}

/// State the pool handle and its drivers share.
#[derive(Debug)]
pub(crate) struct Inner {
    config: Config,
    /// The channel is unbounded and its capacity our own count: a bounded one
    /// initialises every slot up front (6.8 MB for the default capacity, most of a
    /// pool's start-up time).
    jobs: JobQueue,
    abort: CancellationToken,
    fatal: OnceLock<Error>,
    counters: Arc<Counters>,
    health: watch::Sender<Health>,
    /// Drivers still running; `shutdown` waits for zero.
    alive: watch::Sender<usize>,
    /// What an abort fails the tasks it ends with, if not [`TaskError::Cancelled`]:
    /// set by a `shutdown_timeout` whose deadline passed.
    stop_reason: OnceLock<TaskError>,
    /// Set by `shutdown_cancel_pending`: a job a driver takes from now on (one handed
    /// back, say) is cancelled instead of run.
    pending_cancelled: std::sync::atomic::AtomicBool,
    /// How many worker slots run, and between which bounds.
    scale: scale::Scale,
    /// Where slots started after `build` (an elastic pool's, a resize's) run.
    runtime: tokio::runtime::Handle,
    /// How long a caller on a thread of its own may poll for its result.
    spin_hint: await_poll::SpinHint,
    /// Where an idle driver lends its worker's ring to a caller of `run`.
    desk: direct::Desk,
}

impl Inner {
    /// The pool cannot start workers: remember why, stop taking tasks, and fail every
    /// queued one with the reason.
    fn fail(&self, error: Error) {
        let _ = self.fatal.set(error.clone());
        self.health.send_modify(|h| {
            h.fatal.get_or_insert(error.clone());
        });
        self.jobs.close();
        for job in self.jobs.drain() {
            self.resolve(job, Err(TaskError::WorkerStart(error.clone())));
        }
    }

    /// Counts a task's end and resolves it.
    pub(crate) fn resolve(&self, job: Job, result: Result<wire::Payload, TaskError>) {
        self.resolve_at(job, result, std::time::Instant::now());
    }

    /// [`resolve`](Self::resolve), the time being `now`.
    pub(crate) fn resolve_at(
        &self,
        job: Job,
        result: Result<wire::Payload, TaskError>,
        now: std::time::Instant,
    ) {
        self.counters.ended(job.items, job.handed_on, &result);
        if !matches!(result, Err(TaskError::Cancelled)) {
            self.counters
                .latency
                .record(now.saturating_duration_since(job.queued_at));
        }
        job.resolve(result);
    }

    /// Resolves a job that was sent to a worker (counted in `running`), the time being
    /// `now`.
    pub(crate) fn resolve_sent(
        &self,
        job: Job,
        result: Result<wire::Payload, TaskError>,
        now: std::time::Instant,
    ) {
        self.counters
            .running
            .fetch_sub(u64::from(job.items), Ordering::Relaxed);
        self.resolve_at(job, result, now);
    }

    /// Starts slots for queued jobs that no idle or starting slot will take, up to the
    /// elastic pool's maximum: called when a job is queued, and when a slot takes one
    /// and others still wait.
    pub(crate) fn grow(self: &Arc<Self>) {
        if !self.scale.is_elastic() {
            return;
        }
        while !self.abort.is_cancelled()
            && self
                .scale
                .should_grow(self.jobs.len(), self.jobs.has_idle())
        {
            driver::spawn_counted_slot(self);
        }
    }

    /// Whether an elastic pool could start another slot, or has one starting: then a
    /// busy slot sends its worker nothing ahead, so that waiting jobs go to a new
    /// worker instead.
    pub(crate) fn can_grow(&self) -> bool {
        self.scale.is_elastic()
            && (self.scale.slots() < self.scale.max() || self.scale.is_starting())
    }

    /// Cancels every queued task.
    fn cancel_queued(&self) {
        for job in self.jobs.drain() {
            self.resolve(job, Err(self.stopped()));
        }
    }

    /// The error of a task an abort ends: cancelled (`shutdown_now`, the pool dropped),
    /// or past a `shutdown_timeout`.
    pub(crate) fn stopped(&self) -> TaskError {
        self.stop_reason
            .get()
            .cloned()
            .unwrap_or(TaskError::Cancelled)
    }
}

/// A pool of worker processes running functions of this binary, each task a future.
///
/// Workers are this executable started again and recognised before `main` (see the
/// crate docs), so nothing else is needed to use it in a binary, an example, a test or
/// a doc test. A task is a function that captures nothing (a fn item or a
/// non-capturing closure) and a serialisable argument; its result comes back
/// serialised.
///
/// A worker that crashes fails only the task it was running
/// ([`TaskError::WorkerDied`]) and is replaced; a panic fails only its task and the
/// worker goes on.
///
/// # Failures
/// - A worker that dies under a task (a signal, `exit`, the OOM killer) fails that
///   task with [`TaskError::WorkerDied`]; tasks that had been sent ahead to it and
///   that it never began go back to the queue and run elsewhere. Its death is seen
///   through its pidfd, so a grandchild holding its socket does not hide it.
/// - A worker that cannot be started is retried with back-off (10 ms, doubling, at
///   most 1 s) for as long as the pool lives; tasks wait in the queue meanwhile
///   ([`PoolStats::degraded`] says why). Two start failures are fatal, because no
///   retry can heal them: a worker of a different build and a failing initializer.
///   Then every queued and later task fails with [`TaskError::WorkerStart`]. A caller
///   that must not wait for a degraded pool bounds the wait with
///   `tokio::time::timeout`: dropping the handle of a task that is still queued drops
///   the task.
/// - No task ever resolves [`TaskError::Cancelled`] unless it was cancelled: by its
///   handle, by dropping the handle while it was queued, by
///   [`shutdown_now`](Self::shutdown_now) or by dropping the pool.
///
/// # Processes a task leaves behind
/// Each worker leads a process group of its own, and whatever a task starts stays in
/// it unless it moves out. When a worker ends, for whatever reason (death, a timeout
/// or cancel, recycling, shutdown), its group is sent `SIGKILL` before the worker is
/// reaped: nothing a task started outlives its worker. A task that must leave a
/// process running starts it in a group or session of its own
/// (`CommandExt::process_group(0)`, `setsid`). One case is out of reach: if this
/// process itself is killed with `SIGKILL`, its workers die (parent-death signal,
/// socket EOF), but nobody is left to kill their groups, so what their tasks left
/// running goes on, as an orphan.
///
/// # Clones
/// The executor is a handle, as a `reqwest::Client` is: its clones share one pool (one
/// queue, one set of workers, one [`stats`](Self::stats)), and it is `Send + Sync +
/// 'static`, so a clone goes into an axum `State` or a spawned task. The streams of
/// [`map`](Self::map) and [`map_unordered`](Self::map_unordered) hold a clone too, so
/// they can be spawned. [`shutdown`](Self::shutdown) through any clone shuts the pool
/// down for all of them.
///
/// # Dropping
/// Dropping the last clone (streams included) without [`shutdown`](Self::shutdown)
/// cancels queued tasks, kills
/// the workers (`SIGKILL`) and reaps them, without blocking the runtime. Workers also
/// exit on their own if this process dies, even by `SIGKILL`: they watch their control
/// socket, and the kernel sends them `SIGKILL` when the parent goes
/// (`PR_SET_PDEATHSIG`).
///
/// ```
/// use procpool::ProcessPoolExecutor;
///
/// fn fib(n: u64) -> u64 {
///     if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = ProcessPoolExecutor::builder().workers(2).build()?;
/// let task = pool.submit(fib, 20).await?; // queued
/// assert_eq!(task.await?, 6765);
/// assert_eq!(pool.run(|(a, b): (u64, u64)| a * b, (6, 7)).await?, 42);
/// assert_eq!(pool.map(fib, 0..10).await?, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);
/// pool.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ProcessPoolExecutor {
    shared: Arc<Submitter>,
}

/// What the clones of one [`ProcessPoolExecutor`] share: the submitting end of the
/// pool. Dropping the last clone drops the pool.
#[derive(Debug)]
struct Submitter {
    inner: Arc<Inner>,
    jobs: async_channel::Sender<Job>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl Submitter {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.inner.jobs.close();
    }
}

impl ProcessPoolExecutor {
    /// A pool with every [`PoolBuilder`] default.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new() -> Result<Self, Error> {
        PoolBuilder::default().build()
    }

    /// Starts setting up a pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Number of worker processes: of a fixed pool, the number it keeps; of an
    /// elastic one, the most it starts ([`PoolBuilder::max_workers`]). How many run now
    /// is [`PoolStats::workers_live`].
    pub fn workers(&self) -> usize {
        self.shared.inner.scale.max()
    }

    /// Changes the number of workers at run time: a fixed pool keeps `n` from now on,
    /// an elastic one starts at most `n` (and keeps at most `n` as its minimum).
    /// Growing starts workers at once (a fixed pool) or as tasks come (an elastic one);
    /// shrinking retires workers as they become idle, never stopping a running task.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = procpool::ProcessPoolExecutor::builder().workers(1).build()?;
    /// pool.resize(2)?;
    /// assert_eq!(pool.workers(), 2);
    /// pool.ready().await?; // both up
    /// # pool.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `n == 0`, or on a remote pool (whose workers
    /// belong to its hosts); [`Error::Shutdown`] once the pool is shut down.
    pub fn resize(&self, n: usize) -> Result<(), Error> {
        let inner = &self.shared.inner;
        if n == 0 {
            return Err(Error::InvalidConfig {
                what: "a pool needs at least 1 worker",
            });
        }
        if inner.config.remote {
            return Err(Error::InvalidConfig {
                what: "the workers of a remote pool belong to its hosts",
            });
        }
        if self.is_shutdown() {
            return Err(Error::Shutdown);
        }
        let fixed = !inner.scale.is_elastic();
        inner.scale.resize(n, fixed);
        if fixed {
            while inner.scale.slots() < n && inner.scale.add_slot() {
                driver::spawn_counted_slot(inner);
            }
        } else {
            self.grow();
        }
        Ok(())
    }

    /// Waits until exactly `n` workers are up. For tests of elastic pools; not part of
    /// the API.
    #[doc(hidden)]
    pub async fn __wait_for_live_workers(&self, n: usize) {
        let mut rx = self.shared.inner.health.subscribe();
        let _ = rx.wait_for(|h| h.live == n).await;
    }

    fn grow(&self) {
        self.shared.inner.grow();
    }

    /// Waits until every worker is up: started, handshake done, initializer run.
    ///
    /// A worker that fails to start is retried, backing off from 10 ms up to about a
    /// second between attempts, for as long as the pool lives; tasks wait in the
    /// queue meanwhile. Only two failures are fatal, because no retry can heal them: a
    /// worker of a different build ([`Error::FingerprintMismatch`]) and a failing
    /// initializer ([`Error::Initializer`]). After one, the pool runs nothing more.
    ///
    /// # Errors
    /// - A fatal failure, at once, whenever it happened.
    /// - [`Error::Spawn`] or [`Error::Handshake`] if a start attempt fails while this
    ///   waits: the pool is degraded (see [`PoolStats::degraded`]) and keeps
    ///   retrying. Failures from before the call do not count, so calling `ready`
    ///   again waits for the next attempts.
    /// - [`Error::Shutdown`] if the pool was shut down before every worker was up.
    ///
    /// # Cancel safety
    /// Cancel safe; it only observes.
    pub async fn ready(&self) -> Result<(), Error> {
        let mut rx = self.shared.inner.health.subscribe();
        let workers = self.shared.inner.scale.min();
        let failures = rx.borrow().failures;
        // The sender lives in `inner`, which `self` holds: this cannot fail.
        let health = rx
            .wait_for(|h| h.fatal.is_some() || h.failures > failures || h.live + h.ended >= workers)
            .await
            .map_err(|_| Error::Shutdown)?;
        if let Some(e) = &health.fatal {
            return Err(e.clone());
        }
        if health.failures > failures {
            if let Some((e, _)) = &health.last_failure {
                return Err(e.clone());
            }
        }
        if health.ended > 0 {
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    /// Queues `f(arg)` to run in a worker, waiting for room in the queue if it is full
    /// (as tokio's `mpsc::Sender::send` does), and resolves to the task's
    /// [`TaskHandle`]; await that for the result. [`run`](Self::run) does both.
    ///
    /// `f` must be zero-sized: a fn item (`fib`) or a closure that captures nothing
    /// (`|x: u64| x * 2`). A capturing closure does not compile. The argument is
    /// serialised in this call, and the task is queued at once when there is room;
    /// otherwise the returned [`Submit`] waits for a place, first come first served.
    /// Several arguments travel as a tuple. For a timeout or a name of its own, see
    /// [`task`](Self::task).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = procpool::ProcessPoolExecutor::builder().workers(1).build()?;
    /// let handle = pool.submit(|s: String| s.len(), "hello".to_string()).await?;
    /// assert_eq!(handle.await?, 5);
    /// # pool.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The `Submit` fails, without queuing anything, with [`TaskError::Encode`] (the
    /// argument does not serialise, or is over the frame limit),
    /// [`TaskError::Shutdown`] (the pool was shut down, also while this waited),
    /// [`TaskError::WorkerStart`] (the pool cannot start workers), or
    /// [`TaskError::Remote`] (a remote pool and a function not registered).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the `Submit` before it resolves means the task never
    /// runs (see [`Submit`]).
    pub fn submit<F, A, R>(&self, f: F, arg: A) -> Submit<R>
    where
        F: Task<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        self.task(f).submit(arg)
    }

    /// Queues `f(arg)` if the queue has room, and fails at once with
    /// [`TaskError::QueueFull`] if not (as tokio's `mpsc::Sender::try_send` does): the
    /// form for a service that answers "busy" rather than waits.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = procpool::ProcessPoolExecutor::builder().workers(1).build()?;
    /// match pool.try_submit(|x: u64| x + 1, 41) {
    ///     Ok(handle) => assert_eq!(handle.await?, 42),
    ///     Err(procpool::TaskError::QueueFull { .. }) => { /* answer 503 */ }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # pool.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`TaskError::QueueFull`], and those of [`submit`](Self::submit).
    pub fn try_submit<F, A, R>(&self, f: F, arg: A) -> Result<TaskHandle<R>, TaskError>
    where
        F: Task<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        self.task(f).try_submit(arg)
    }

    /// Per-call options for one task of `f`: its own [timeout](TaskBuilder::timeout)
    /// and a [name](TaskBuilder::name) that errors carry. Then
    /// [`submit`](TaskBuilder::submit), [`try_submit`](TaskBuilder::try_submit) or
    /// [`run`](TaskBuilder::run) it as on the pool.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = procpool::ProcessPoolExecutor::builder().workers(1).build()?;
    /// let n = pool
    ///     .task(|s: String| s.len())
    ///     .timeout(Duration::from_secs(5))
    ///     .name("measure")
    ///     .run("hello".to_string())
    ///     .await?;
    /// assert_eq!(n, 5);
    /// # pool.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn task<F>(&self, f: F) -> TaskBuilder<'_, F> {
        TaskBuilder::new(self, f)
    }

    /// On a remote pool, the error for a function `F` (trampoline `call`) that is not
    /// registered under a name: nothing is sent for it.
    #[cfg_attr(not(feature = "nats"), allow(clippy::extra_unused_type_parameters))]
    fn unregistered<F>(&self, call: Trampoline) -> Option<TaskError> {
        if !self.shared.inner.config.remote {
            return None;
        }
        #[cfg(feature = "nats")]
        if crate::nats::registry::name_of(crate::task::local_ref(call)).is_none() {
            return Some(TaskError::Remote(
                crate::error::RemoteTaskError::NotRegistered {
                    type_name: std::any::type_name::<F>().to_owned(),
                },
            ));
        }
        let _ = call;
        None
    }

    /// Queues the async function `f(arg)`, waiting for room as [`submit`](Self::submit)
    /// does; the worker runs the future to completion on its own current-thread tokio
    /// runtime (timers and I/O work there; the future need not be `Send`).
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    ///
    /// # Cancel safety
    /// As [`submit`](Self::submit).
    pub fn submit_async<F, A, R>(&self, f: F, arg: A) -> Submit<R>
    where
        F: AsyncTask<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        self.task(f).submit_async(arg)
    }

    /// Queues the async function `f(arg)` if there is room, as
    /// [`try_submit`](Self::try_submit) does.
    ///
    /// # Errors
    /// As [`try_submit`](Self::try_submit).
    pub fn try_submit_async<F, A, R>(&self, f: F, arg: A) -> Result<TaskHandle<R>, TaskError>
    where
        F: AsyncTask<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        self.task(f).try_submit_async(arg)
    }

    /// Submits `f(arg)`, waiting for room, and waits for its result: what
    /// `submit(f, arg).await?.await` returns, sooner for short tasks.
    ///
    /// # The caller reads its own reply
    /// Since the result is awaited at once, a task whose argument fits a slot of a
    /// worker's shared-memory ring (about 4 KiB, no file descriptors) goes straight into
    /// the ring of an idle worker, when one is lent out by its driver, and the caller
    /// polls the ring for the reply itself, yielding its CPU between looks, for as long
    /// as the worker's recent answers suggest (at most 100 µs by default; see
    /// [`PoolBuilder::caller_poll`]). Nothing in the parent is woken: a trivial task
    /// comes back in a few microseconds. A task not answered by then, or whose reply
    /// is large or unusual, continues as any other: the driver takes it over, with its
    /// timeout, and the worker's death fails only it. [`PoolStats::direct`] counts the
    /// tasks answered this way. Otherwise (no worker idle, a queue in front of it) the
    /// task is queued as `submit` queues it.
    ///
    /// # Errors
    /// Every [`TaskError`] but [`QueueFull`](TaskError::QueueFull).
    ///
    /// # Cancel safety
    /// Dropping the future before the task runs means it never runs; once it runs, the
    /// worker finishes it and the result is discarded.
    pub async fn run<F, A, R>(&self, f: F, arg: A) -> Result<R, TaskError>
    where
        F: Task<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        self.task(f).run(arg).await
    }

    /// Runs `f` over every item and returns the results in input order (Python's
    /// `map`). Await it; `.chunk_size(n)` first to choose how many items travel per
    /// message. The first error wins: it is returned, queued chunks are dropped, and
    /// running chunks finish with their results discarded. For Python's `starmap`, use a
    /// function of a tuple.
    ///
    /// The input is consumed lazily with a bounded number of chunks in flight, so a
    /// very long iterator runs in bounded memory.
    pub fn map<F, I, A, R>(&self, f: F, items: I) -> Map<F, I::IntoIter, R>
    where
        F: Task<A, R>,
        I: IntoIterator<Item = A>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        Map::new(MapStream::new(self.clone(), f, items.into_iter(), true))
    }

    /// Runs `f` over every item and yields each result as soon as it is ready, in any
    /// order: a `Stream` of `Result<R, TaskError>`, one per item. A failing item does
    /// not stop the others.
    pub fn map_unordered<F, I, A, R>(&self, f: F, items: I) -> MapStream<F, I::IntoIter, R>
    where
        F: Task<A, R>,
        I: IntoIterator<Item = A>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        MapStream::new(self.clone(), f, items.into_iter(), false)
    }

    /// Like [`map_unordered`](Self::map_unordered), but yields results in input order
    /// (Python's `imap`).
    pub fn map_ordered_stream<F, I, A, R>(&self, f: F, items: I) -> MapStream<F, I::IntoIter, R>
    where
        F: Task<A, R>,
        I: IntoIterator<Item = A>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        MapStream::new(self.clone(), f, items.into_iter(), true)
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> PoolStats {
        let c = &self.shared.inner.counters;
        let health = self.shared.inner.health.borrow();
        PoolStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            queued: self.shared.inner.jobs.items(),
            running: c.running.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            panicked: c.panicked.load(Ordering::Relaxed),
            worker_died: c.worker_died.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            worker_restarts: c.restarts.load(Ordering::Relaxed),
            workers_recycled: c.recycled.load(Ordering::Relaxed),
            direct: c.direct.load(Ordering::Relaxed),
            workers_live: health.live as u64,
            worker_start_failures: health.failures,
            degraded: match (health.failing, &health.last_failure) {
                (1.., Some((_, why))) => Some(*why),
                _ => None,
            },
            latency: c.latency.summary(),
        }
    }

    /// The pool's handle, from its parts (see [`PoolBuilder::build`]).
    fn from_parts(inner: Arc<Inner>, jobs: async_channel::Sender<Job>) -> Self {
        ProcessPoolExecutor {
            shared: Arc::new(Submitter {
                inner,
                jobs,
                next_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
            }),
        }
    }
}

impl Drop for Submitter {
    fn drop(&mut self) {
        // The last clone of the pool is gone. Drivers see the abort, kill their workers
        // and reap them through their pidfds on the runtime; a worker whose driver can
        // no longer run is killed and reaped by the supervisor thread when its handle
        // drops.
        self.close();
        self.inner.abort.cancel();
        self.inner.cancel_queued();
    }
}
