//! [`PoolBuilder`]: a pool's settings, checked and turned into a running pool.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::scale::Scale;
use super::stats::Health;
use super::{driver, runtime_probe, Config, Inner, JobQueue, ProcessPoolExecutor};
use super::{DEFAULT_MAX_FRAME, DEFAULT_QUEUE_CAPACITY, MAX_PIPELINE};
use crate::error::{CodecError, Error};
use crate::task::{self, Message};
use crate::wire::{handles, TaskRef};

/// Sets up a [`ProcessPoolExecutor`]. Every setting has a default; see each method.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let pool = procpool::ProcessPoolExecutor::builder()
///     .workers(2)
///     .max_tasks_per_worker(1000)
///     .task_timeout(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(pool.run(|x: u64| x + 1, 41).await?, 42);
/// # pool.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a PoolBuilder does nothing until `build` is called"]
pub struct PoolBuilder {
    workers: Option<usize>,
    min_workers: Option<usize>,
    max_workers: Option<usize>,
    idle_timeout: Option<Duration>,
    max_tasks_per_worker: Option<u64>,
    task_timeout: Option<Duration>,
    queue_capacity: usize,
    max_frame: u64,
    pipeline: Option<usize>,
    caller_poll: Option<Duration>,
    /// The initializer and its encoded argument, or why the argument did not encode
    /// (reported by `build`).
    #[allow(clippy::type_complexity)]
    initializer: Option<(TaskRef, Result<(Vec<u8>, Arc<Vec<OwnedFd>>), Error>)>,
    fingerprint: Option<u64>,
    env: Vec<(OsString, OsString)>,
    /// The remote back end, if the pool runs its tasks on NATS hosts.
    #[cfg(feature = "nats")]
    nats: Option<crate::nats::NatsOptions>,
    limits: Limits,
    start_method: StartMethod,
}

/// How a pool starts its worker processes; see [`PoolBuilder::start_method`].
///
/// The names are Python's (`multiprocessing.set_start_method`); there is no plain
/// `fork` of the parent, which is unsafe in a process with threads (every tokio
/// program).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartMethod {
    /// Start this executable again for each worker (`posix_spawn`, then the worker
    /// is recognised before `main`). The default: every worker is a fresh process
    /// with this process's current environment, working directory and stdio, and
    /// nothing else of it.
    #[default]
    Spawn,
    /// Fork each worker from a *fork server*: one small process, this executable
    /// started once per process (the first time a pool with this method needs a
    /// worker) and stopped before it reached `main`. A worker then starts in a tenth
    /// of the time (no `exec`, no dynamic loading), whatever the size of the parent.
    ///
    /// What differs from [`Spawn`](Self::Spawn):
    /// - a worker inherits the server's environment, working directory, stdout and
    ///   stderr, which are this process's *when the server started* (plus the
    ///   pool's [`env`](PoolBuilder::env) variables, set as the worker starts);
    /// - the worker is the server's child: the server reaps it and reports its exit,
    ///   so [`WorkerDied`](crate::TaskError::WorkerDied) says what it says with
    ///   `Spawn`; `getppid()` in a task names the server, while
    ///   [`parent_process`](crate::parent_process) names this process;
    /// - if the server dies (killed from outside), its workers die with it; the pool
    ///   replaces them through a new server, as it replaces any dead worker.
    ForkServer,
}

/// Which CPUs the workers may run on; see [`PoolBuilder::affinity`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Affinity {
    /// Each worker on one CPU of its own, taken in turn from the CPUs this process may
    /// run on (so workers share a CPU only when there are more workers than CPUs).
    OneCpuPerWorker,
    /// Every worker on these CPUs (numbered as the kernel numbers them).
    Cpus(Vec<usize>),
}

/// The limits each worker sets on itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    pub(crate) cpu_time: Option<Duration>,
    pub(crate) max_memory: Option<u64>,
    pub(crate) address_space: Option<u64>,
    pub(crate) nice: Option<i32>,
    pub(crate) affinity: Option<Affinity>,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: None,
            min_workers: None,
            max_workers: None,
            idle_timeout: None,
            max_tasks_per_worker: None,
            task_timeout: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_frame: DEFAULT_MAX_FRAME,
            pipeline: None,
            caller_poll: None,
            initializer: None,
            fingerprint: None,
            env: Vec::new(),
            #[cfg(feature = "nats")]
            nats: None,
            limits: Limits::default(),
            start_method: StartMethod::Spawn,
        }
    }
}

impl PoolBuilder {
    /// Runs the pool's tasks on remote hosts through NATS JetStream instead of in
    /// local worker processes (the `nats` feature). Hosts serve with
    /// [`remote::serve`](crate::remote::serve); tasks must be registered with
    /// [`remote_task!`](crate::remote_task). `submit`, `run`, `map` and the rest work as
    /// on a local pool; [`ready`](ProcessPoolExecutor::ready) waits until the server is
    /// reached and the stream exists. Worker settings (`workers`, `initializer`,
    /// limits) belong to the hosts and are ignored here.
    #[cfg(feature = "nats")]
    pub fn nats(mut self, options: crate::nats::NatsOptions) -> Self {
        self.nats = Some(options);
        self
    }

    /// Number of worker processes, started when the pool is built and kept: a fixed
    /// pool. Default: [`crate::cpu_count`] (available parallelism). For a pool that
    /// grows and shrinks with its load, see [`max_workers`](Self::max_workers).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Makes the pool elastic, with at most `n` workers: a worker is started when a
    /// task is queued while none is idle (up to `n`), and a worker idle for
    /// [`idle_timeout`](Self::idle_timeout) retires, down to
    /// [`min_workers`](Self::min_workers). [`PoolStats::workers_live`] says how many
    /// run; [`ProcessPoolExecutor::resize`] changes `n` at run time.
    ///
    /// [`PoolStats::workers_live`]: crate::PoolStats::workers_live
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// The fewest workers an elastic pool keeps (started when it is built, never
    /// retired for idleness). Default: 0, so an idle pool costs no process; the first
    /// task then waits for a worker to start (about a millisecond).
    pub fn min_workers(mut self, n: usize) -> Self {
        self.min_workers = Some(n);
        self
    }

    /// How long a worker of an elastic pool may sit idle before it retires (when more
    /// than [`min_workers`](Self::min_workers) run). Default: 30 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Retire a worker after it finished `n` tasks and start a fresh one (Python's
    /// `max_tasks_per_child`): contains leaks in native code. Default: never.
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.max_tasks_per_worker = Some(n);
        self
    }

    /// Recycles a worker whose resident memory (RSS) is over `bytes` after a task, as
    /// billiard's `max_memory_per_child`: the task's result is still delivered, then
    /// the worker retires once its tasks in flight are answered and a fresh one takes
    /// its place (counted in [`PoolStats::workers_recycled`]). The worker reads its RSS
    /// after each task (a read of `/proc/self/statm`, a few microseconds).
    ///
    /// [`PoolStats::workers_recycled`]: crate::PoolStats::workers_recycled
    pub fn max_memory_per_worker(mut self, bytes: u64) -> Self {
        self.limits.max_memory = Some(bytes);
        self
    }

    /// The CPU time a task may use (`RLIMIT_CPU`, in whole seconds, rounded up): past
    /// it the kernel ends the worker with `SIGXCPU`, the task fails with
    /// [`TaskError::LimitExceeded`](crate::TaskError::LimitExceeded) naming
    /// [`Limit::CpuTime`](crate::Limit::CpuTime), and the worker is replaced. Unlike
    /// a task timeout, time spent waiting (sleeping, blocked on I/O) does not count.
    /// Each task gets the whole allowance, whatever the ones before it used.
    pub fn cpu_time_limit(mut self, limit: Duration) -> Self {
        self.limits.cpu_time = Some(limit);
        self
    }

    /// The address space a worker may map (`RLIMIT_AS`, in bytes), set before it runs
    /// anything. A task whose allocation would pass it makes the worker abort (as Rust
    /// does when an allocation fails); the task fails with
    /// [`TaskError::LimitExceeded`](crate::TaskError::LimitExceeded) naming
    /// [`Limit::AddressSpace`](crate::Limit::AddressSpace), and the worker is
    /// replaced. The worker tells this abort from any other by `errno` (`ENOMEM`) in
    /// a `SIGABRT` handler; to keep it, such a worker moves `RUST_BACKTRACE` to
    /// `RUST_LIB_BACKTRACE` (so std prints no backtrace on an allocation failure,
    /// while `std::backtrace` and error crates capture as before). An allocation
    /// failure whose message cannot be written (stderr closed) reads as
    /// [`TaskError::WorkerDied`](crate::TaskError::WorkerDied). A limit at or below
    /// what a fresh worker already maps (a few MiB, more with threads) is
    /// [`Error::LimitRefused`].
    ///
    /// Address space is not memory used: thread stacks and allocator arenas reserve
    /// far more than they touch. For "no more than N bytes in use", prefer
    /// [`max_memory_per_worker`](Self::max_memory_per_worker).
    ///
    /// Such a worker's arguments and results larger than a ring slot (about 4 KiB)
    /// go on its socket rather than through shared memory: the bulk area they would
    /// take maps 128 MiB, which would count against the limit.
    pub fn address_space_limit(mut self, bytes: u64) -> Self {
        self.limits.address_space = Some(bytes);
        self
    }

    /// The workers' niceness, -20 (first) to 19 (last); lowering it below this
    /// process's needs `CAP_SYS_NICE`, and a refusal is
    /// [`Error::LimitRefused`] from [`ProcessPoolExecutor::ready`] (and every task
    /// fails with it).
    pub fn nice(mut self, nice: i32) -> Self {
        self.limits.nice = Some(nice);
        self
    }

    /// The CPUs the workers may run on: one each, or a set for all.
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.limits.affinity = Some(affinity);
        self
    }

    /// Kill a task's worker when the task has run this long in it; the task fails with
    /// [`TaskError::TimedOut`] and the worker is replaced. The clock starts when the
    /// task is sent to a worker, not when it is queued. Default: no timeout.
    ///
    /// [`TaskError::TimedOut`]: crate::TaskError::TimedOut
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// How many tasks may wait in the queue; `try_submit` beyond that fails at once
    /// with [`TaskError::QueueFull`] (`submit` waits for room). Default:
    /// [`DEFAULT_QUEUE_CAPACITY`] (65,536).
    ///
    /// [`TaskError::QueueFull`]: crate::TaskError::QueueFull
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Largest frame (an encoded argument, result or `map` chunk) either side accepts.
    /// Default: [`DEFAULT_MAX_FRAME`] (1 GiB).
    pub fn max_frame_size(mut self, bytes: u64) -> Self {
        self.max_frame = bytes;
        self
    }

    /// How many tasks a worker may be sent before it has answered the first, at most
    /// [`MAX_PIPELINE`]. `1` sends one task at a time.
    ///
    /// Default: adaptive. A worker whose recent tasks came back quickly is sent
    /// enough to keep it busy for about 400 µs (so that it never waits for the parent
    /// between short tasks), one whose tasks take longer gets one at a time (so that
    /// an idle worker never waits behind a busy one's queue). A task sent ahead counts
    /// as running ([`TaskHandle::is_running`]); cancelling it before the worker begins
    /// it skips it without harming the worker.
    ///
    /// [`TaskHandle::is_running`]: crate::TaskHandle::is_running
    pub fn pipeline_depth(mut self, depth: usize) -> Self {
        self.pipeline = Some(depth);
        self
    }

    /// How long a caller of [`run`](crate::ProcessPoolExecutor::run) polls a worker's
    /// shared memory for its reply before it leaves the task to the pool's driver and
    /// sleeps. `Duration::ZERO` never polls.
    ///
    /// A task awaited with `run` goes straight into an idle worker's shared-memory ring,
    /// and its caller, polling, reads the reply there itself: a trivial task comes back
    /// in a few microseconds, with no thread woken in the parent. Polling costs the
    /// caller's CPU while it lasts; a task not answered in time continues as any other
    /// (its result comes through the driver, its timeout and cancellation hold).
    ///
    /// Default: adaptive, four times the worker's recent answer time while that is
    /// under 50 µs, at most 100 µs; no polling for a worker whose tasks take longer.
    /// Never past the task's timeout (or soft timeout).
    pub fn caller_poll(mut self, poll: Duration) -> Self {
        self.caller_poll = Some(poll);
        self
    }

    /// Runs `f(arg)` once in every worker, before its first task (Python's
    /// `initializer`/`initargs`), for example to load a model into a global. If it
    /// returns `Err` or panics, the pool starts no more workers:
    /// [`ProcessPoolExecutor::ready`] returns [`Error::Initializer`] and every task
    /// fails with [`TaskError::WorkerStart`].
    ///
    /// `f` must capture nothing, as for [`ProcessPoolExecutor::submit`].
    ///
    /// [`TaskError::WorkerStart`]: crate::TaskError::WorkerStart
    pub fn initializer<F, A, E>(mut self, f: F, arg: A) -> Self
    where
        F: Fn(A) -> Result<(), E> + Copy + Send + 'static,
        A: Message,
        E: std::fmt::Display,
    {
        const { task::assert_captures_nothing::<F>() };
        let _ = f;
        let func = task::local_ref(task::call_init::<F, A, E>);
        let (arg, fds) = handles::collecting(|| postcard::to_allocvec(&arg));
        let arg = arg
            .map(|bytes| (bytes, Arc::new(fds)))
            .map_err(|e| Error::Encode(CodecError::of::<A>(e)));
        self.initializer = Some((func, arg));
        self
    }

    /// How workers are started. Default: [`StartMethod::Spawn`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use procpool::{ProcessPoolExecutor, StartMethod};
    /// let pool = ProcessPoolExecutor::builder()
    ///     .workers(2)
    ///     .start_method(StartMethod::ForkServer)
    ///     .build()?;
    /// assert_eq!(pool.run(|x: u64| x * 2, 21).await?, 42);
    /// # pool.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = method;
        self
    }

    /// Sets an environment variable for every worker process (on top of this process's
    /// environment, which workers inherit).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Makes the pool expect workers with this build fingerprint instead of its own.
    /// Only for testing the refusal of a mismatched worker.
    #[doc(hidden)]
    pub fn expect_fingerprint_for_testing(mut self, fingerprint: u64) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// Builds the pool and starts its workers in the background (eagerly: the first
    /// task does not pay for a process start). Returns at once; await
    /// [`ProcessPoolExecutor::ready`] to wait until every worker has finished its
    /// handshake and initializer.
    ///
    /// Must be called inside a tokio runtime (either flavour) with I/O and timers
    /// enabled (`enable_all`, as `#[tokio::main]` and `#[tokio::test]` do): the pool's
    /// drivers are tasks on it, watching sockets and pidfds.
    ///
    /// # Errors
    /// [`Error::NoRuntime`] outside a runtime, or in one without I/O or timers;
    /// [`Error::Encode`] if the initializer's argument does not serialise;
    /// [`Error::InvalidConfig`] for zero workers, a zero queue capacity, a frame limit
    /// under 1 KiB, a pipeline depth outside 1..=[`MAX_PIPELINE`], or
    /// [`StartMethod::ForkServer`] with [`env`](PoolBuilder::env) variables over 64 KiB
    /// in all;
    /// [`Error::Spawn`] if the supervisor thread cannot be started.
    pub fn build(self) -> Result<ProcessPoolExecutor, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        if !runtime_probe::has_io_and_time() {
            return Err(Error::NoRuntime);
        }
        #[cfg(feature = "nats")]
        if let Some(nats) = &self.nats {
            nats.check()?;
        }
        // A remote pool has one slot: its dispatcher.
        #[cfg(feature = "nats")]
        let workers = if self.nats.is_some() {
            1
        } else {
            self.workers.unwrap_or_else(crate::cpu_count)
        };
        #[cfg(not(feature = "nats"))]
        let workers = self.workers.unwrap_or_else(crate::cpu_count);
        if workers == 0 {
            return Err(Error::InvalidConfig {
                what: "workers must be at least 1",
            });
        }
        let scale = self.scale(workers)?;
        let workers = scale.max();
        self.limits.check()?;
        if self.queue_capacity == 0 {
            return Err(Error::InvalidConfig {
                what: "queue_capacity must be at least 1",
            });
        }
        if self.max_frame < 1024 {
            return Err(Error::InvalidConfig {
                what: "max_frame_size must be at least 1024 bytes",
            });
        }
        if self.pipeline.is_some_and(|d| d == 0 || d > MAX_PIPELINE) {
            return Err(Error::InvalidConfig {
                what: "pipeline_depth must be between 1 and MAX_PIPELINE (64)",
            });
        }
        if self.start_method == StartMethod::ForkServer
            && !crate::spawn::fits_fork_server(&self.env)
        {
            return Err(Error::InvalidConfig {
                what: "the workers' env variables take more than 64 KiB, the most a fork server request carries; use StartMethod::Spawn or pass large data another way",
            });
        }
        if self.max_tasks_per_worker == Some(0) {
            return Err(Error::InvalidConfig {
                what: "max_tasks_per_worker must be at least 1",
            });
        }
        let (initializer, initializer_fds) = match self.initializer {
            None => (None, Arc::default()),
            Some((_, Ok((arg, _)))) if arg.len() as u64 > self.max_frame => {
                return Err(Error::InvalidConfig {
                    what: "the initializer's argument is larger than max_frame_size",
                })
            }
            Some((func, Ok((arg, fds)))) => (Some((func, arg)), fds),
            Some((_, Err(e))) => return Err(e),
        };
        crate::worker::keep_linked();
        let config = Config {
            workers,
            max_tasks_per_worker: self.max_tasks_per_worker,
            task_timeout: self.task_timeout,
            queue_capacity: self.queue_capacity,
            max_frame: self.max_frame,
            pipeline: self.pipeline,
            caller_poll: self.caller_poll,
            initializer,
            initializer_fds,
            fingerprint: self.fingerprint.unwrap_or_else(task::fingerprint),
            env: self.env,
            start_method: self.start_method,
            #[cfg(feature = "nats")]
            remote: self.nats.is_some(),
            #[cfg(not(feature = "nats"))]
            remote: false,
            limits: self.limits,
        };
        let (jobs_tx, jobs) = async_channel::unbounded();
        let inner = Arc::new(Inner {
            config,
            jobs: JobQueue::new(jobs),
            abort: CancellationToken::new(),
            fatal: OnceLock::new(),
            counters: Arc::default(),
            health: watch::channel(Health::default()).0,
            alive: watch::channel(0).0,
            stop_reason: OnceLock::new(),
            pending_cancelled: Default::default(),
            scale,
            runtime: runtime.clone(),
            spin_hint: Default::default(),
            desk: Default::default(),
        });
        // The seam: below the job queue, either local drivers (one per worker
        // process) or the remote dispatcher takes the jobs.
        #[cfg(feature = "nats")]
        if let Some(nats) = self.nats {
            inner.alive.send_replace(1);
            drop(runtime.spawn(super::remote::dispatch(inner.clone(), nats)));
            return Ok(ProcessPoolExecutor::from_parts(inner, jobs_tx));
        }
        for _ in 0..inner.scale.min() {
            driver::spawn_slot(&inner);
        }
        Ok(ProcessPoolExecutor::from_parts(inner, jobs_tx))
    }

    /// The pool's slot bounds: fixed at `workers`, or elastic if a bound or the idle
    /// timeout was set.
    fn scale(&self, workers: usize) -> Result<Scale, Error> {
        let elastic =
            self.min_workers.is_some() || self.max_workers.is_some() || self.idle_timeout.is_some();
        if !elastic {
            return Ok(Scale::new(workers, workers, None));
        }
        #[cfg(feature = "nats")]
        if self.nats.is_some() {
            return Err(Error::InvalidConfig {
                what:
                    "min_workers, max_workers and idle_timeout belong to the hosts of a remote pool",
            });
        }
        if self.workers.is_some() {
            return Err(Error::InvalidConfig {
                what: "workers (a fixed pool) cannot be combined with min_workers, max_workers or idle_timeout",
            });
        }
        let max = self.max_workers.unwrap_or(workers);
        let min = self.min_workers.unwrap_or(0);
        if max == 0 {
            return Err(Error::InvalidConfig {
                what: "max_workers must be at least 1",
            });
        }
        if min > max {
            return Err(Error::InvalidConfig {
                what: "min_workers must be at most max_workers",
            });
        }
        let idle = self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
        if idle.is_zero() {
            return Err(Error::InvalidConfig {
                what: "idle_timeout must be more than zero",
            });
        }
        Ok(Scale::new(min, max, Some(idle)))
    }
}

impl Limits {
    /// Refuses a limit out of range, naming it.
    fn check(&self) -> Result<(), Error> {
        let invalid = |what| Err(Error::InvalidConfig { what });
        if self.max_memory == Some(0) {
            return invalid("max_memory_per_worker must be more than zero");
        }
        if self.address_space == Some(0) {
            return invalid("address_space_limit must be more than zero");
        }
        if self.cpu_time.is_some_and(|d| d.is_zero()) {
            return invalid("cpu_time_limit must be more than zero");
        }
        if self.nice.is_some_and(|n| !(-20..=19).contains(&n)) {
            return invalid("nice must be between -20 and 19");
        }
        if let Some(Affinity::Cpus(cpus)) = &self.affinity {
            if cpus.is_empty() {
                return invalid("affinity needs at least one CPU");
            }
            let allowed = crate::sys::limits::affinity().map_err(Error::spawn)?;
            if cpus.iter().any(|c| !allowed.contains(c)) {
                return invalid(
                    "affinity names a CPU that does not exist or that this process may not run on",
                );
            }
        }
        Ok(())
    }

    /// The limits for the next worker to start: `OneCpuPerWorker` takes the CPU
    /// after the last one given.
    pub(crate) fn for_worker(&self) -> crate::wire::WorkerLimits {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);
        let cpus = match &self.affinity {
            None => None,
            Some(Affinity::Cpus(cpus)) => Some(cpus.clone()),
            Some(Affinity::OneCpuPerWorker) => crate::sys::limits::affinity()
                .ok()
                .filter(|all| !all.is_empty())
                .map(|all| vec![all[NEXT_CPU.fetch_add(1, Ordering::Relaxed) % all.len()]]),
        };
        crate::wire::WorkerLimits {
            cpu_secs: self
                .cpu_time
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            max_rss: self.max_memory,
            nice: self.nice,
            cpus,
            address_space: self.address_space,
        }
    }
}

/// How long an elastic pool's worker may idle before it retires, by default.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
