//! Python's `multiprocessing` and `concurrent.futures.ProcessPoolExecutor`, rebuilt for
//! tokio.
//!
//! A [`ProcessPoolExecutor`] runs functions of *this* binary in helper processes, and
//! every task is a future you `.await`. CPU-bound work leaves the runtime's threads
//! free; a crash (a segfault in a native library, an `abort`, an `exit`) fails only the
//! task that caused it, and the pool replaces the worker.
//!
//! ```
//! use procpool::{ProcessPoolExecutor, TaskError};
//!
//! fn count_primes(limit: u64) -> usize {
//!     (2..limit).filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0)).count()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = ProcessPoolExecutor::builder().workers(2).build()?;
//! assert_eq!(pool.run(count_primes, 100).await?, 25);
//! assert_eq!(pool.map(count_primes, [10, 20, 30]).await?, [4, 8, 10]);
//!
//! // A panic is an error value; the worker goes on.
//! let err = pool.run(|x: u32| -> u32 { panic!("bad input {x}") }, 7).await.unwrap_err();
//! assert!(matches!(err, TaskError::Panicked(ref p) if p.message == "bad input 7"));
//! pool.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Process`] runs one function in one child (Python's `multiprocessing.Process`),
//! with [`current_process`], [`parent_process`] and [`active_children`] beside it.
//!
//! # Pipes, queues and handles
//! [`pipe()`] (with [`pipe::simplex`] and [`duplex`]) and [`Queue`], [`SimpleQueue`] and
//! [`JoinableQueue`] carry values between any processes. They are *handles*: pass one
//! as a task or `Process` argument, return one from a task, or send one through
//! another pipe or queue, and its file descriptors travel beside the message
//! (`SCM_RIGHTS`). Each process then holds its own; dropping a handle in one process
//! does not disturb the others.
//!
//! # Locks and shared memory
//! [`sync`] has Python's `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`,
//! `Condition` and `Barrier`, and [`shm`] its `shared_memory`, `Value` and `Array`:
//! all in anonymous shared memory, async-aware, and handles like the queues. A lock
//! whose holder died is handed to the next acquirer with
//! [`sync::LockError::OwnerDied`] instead of deadlocking.
//!
//! # Managers and authenticated connections
//! [`connection`] has Python's `Listener` and `Client` with authkey authentication;
//! [`Manager`] keeps shared objects in a server process behind proxies, locally or
//! over TCP.
//!
//! # How workers start
//! A worker is this executable started again (`/proc/self/exe`). procpool recognises
//! it *before `main`*, in a library constructor, so binaries, examples, integration
//! tests and doc tests need no set-up code, and user `main` never runs in a worker.
//! [`init`] does the same check explicitly for those who prefer it.
//!
//! Because the constructor runs before std's own start-up, a worker sets up for itself
//! what std would: `SIGPIPE` is ignored, as in a normal Rust `main`. Two differences
//! remain: the worker's main thread has no name, and a stack overflow in a task kills
//! the worker with a plain `SIGSEGV` (reported as [`TaskError::WorkerDied`]) instead of
//! printing std's message.
//!
//! # What a task can be
//! Any function that captures nothing — a fn item or a non-capturing closure — of one
//! argument (use a tuple for several) whose argument and result are serde types. The
//! pool sends the *address* of a small trampoline as an offset into the executable
//! (both processes run the same build, which a fingerprint checks in the handshake), so
//! nothing is registered by hand. A capturing closure does not compile.
//!
//! # Lifetimes of processes
//! Workers never outlive the pool's process: they exit when their control socket
//! closes, and the kernel kills them if the parent dies (`PR_SET_PDEATHSIG`). Every
//! worker that ends is reaped.
//!
//! # Platform
//! Linux 5.3 or later (pidfds), x86_64 and aarch64. All system calls are in one
//! private module, so other Unixes can follow.

#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "procpool supports Linux only (5.3 or later, x86_64 or aarch64): it is built on \
     pidfds, memfd seals, futexes and SCM_RIGHTS. Other platforms are not supported yet."
);

mod authkey;
mod blocking;
pub mod connection;
mod error;
#[cfg(test)]
mod handle_tags;
pub mod manager;
#[cfg(feature = "nats")]
mod nats;
mod pacing;
pub mod pipe;
mod pool;
mod process;
pub mod queue;
#[cfg(feature = "nats")]
pub mod remote;
pub mod shm;
mod spawn;
mod supervisor;
pub mod sync;
mod sys;
mod task;
mod waitcell;
mod wire;
mod worker;

pub use error::{
    CodecError, Error, Exit, Limit, PanicInfo, ProtocolError, RemoteTaskError, TaskError,
};
pub use manager::Manager;
pub use pipe::{duplex, pipe, Connection};
pub use pool::{
    Affinity, KeepPartial, LatencySummary, Map, MapFuture, MapProgress, MapStream, PartialMap,
    PoolBuilder, PoolStats, ProcessPoolExecutor, StartFailure, StartMethod, Submit, TaskBuilder,
    TaskHandle, DEFAULT_MAX_FRAME, DEFAULT_QUEUE_CAPACITY, MAX_PIPELINE,
};
pub use process::{
    active_children, current_process, parent_process, Builder as ProcessBuilder, ChildOutput,
    Process, ProcessError, ProcessInfo, ProcessKind, Sentinel, Stdio,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use shm::{Array, RawArray, RawValue, ShareableList, SharedMemory, Value};
pub use sync::{
    Barrier, BarrierAction, BoundedSemaphore, Condition, Event, Lock, LockGuard, NoAction, RLock,
    RLockGuard, Semaphore, SemaphoreGuard,
};
pub use task::{AsyncTask, Message, Task};
pub use worker::progress::soft_timeout_expired;

/// Runs the worker if this process was started as a procpool worker; does nothing
/// otherwise.
///
/// Not needed: procpool already does this before `main`. Call it first thing in `main`
/// if you prefer the hand-off to be visible in your code; in a worker it never returns.
///
/// ```
/// fn main() {
///     procpool::init();
///     // ... only the parent gets here
/// }
/// ```
// The example is about what goes first in `main`, so it shows `main`.
#[allow(clippy::needless_doctest_main)]
pub fn init() {
    worker::run_if_worker();
}

/// Number of CPUs this process may use (`std::thread::available_parallelism`), at
/// least 1. Python's `os.cpu_count()`, respecting CPU affinity and cgroup quotas.
pub fn cpu_count() -> usize {
    // Read once: on Linux it reads cgroup files, and pools ask on every worker start.
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
