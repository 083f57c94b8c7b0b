//! The error vocabulary: [`Error`] for setting a pool up, [`TaskError`] for one task,
//! [`ProtocolError`] for a peer that broke the wire protocol, [`Exit`] for how a
//! process ended, and the two parts every error type shares: [`PanicInfo`] for a
//! panic in another process and [`CodecError`] for a value that did not encode or
//! decode.
//!
//! One style for every message: lower case, no crate prefix, and never the text of
//! its own `source()`, so a report that walks the chain prints each cause once.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a process ended: Python's `exitcode`, with the sign turned into a variant.
///
/// ```
/// use procpool::Exit;
/// assert_eq!(Exit::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
/// assert_eq!(Exit::Code(3).code(), Some(3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exit {
    /// The process called `exit` with this code (Python: `exitcode >= 0`).
    Code(i32),
    /// The process was killed by this signal (Python: `exitcode == -signal`).
    Signal(i32),
}

impl Exit {
    /// The exit code, if the process exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            Exit::Signal(_) => None,
        }
    }

    /// The signal number, if the process was killed by a signal.
    pub fn signal(self) -> Option<i32> {
        match self {
            Exit::Signal(s) => Some(s),
            Exit::Code(_) => None,
        }
    }

    pub(crate) fn from_status(status: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            // Stopped/continued statuses are not reported by `wait` without WUNTRACED.
            (None, None) => Exit::Code(status.into_raw()),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match crate::sys::proc::signal_name(s) {
                Some(name) => write!(f, "killed by signal {s} ({name})"),
                None => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// A panic in another process, as it arrives: the message and where it happened.
///
/// ```
/// let p = procpool::PanicInfo::new("index out of bounds", Some("src/main.rs:3:5".into()));
/// assert_eq!(p.to_string(), "index out of bounds (at src/main.rs:3:5)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PanicInfo {
    /// The panic message (the `&str` or `String` payload), or the initializer's error.
    pub message: String,
    /// `file:line:column` of the panic, when known.
    pub location: Option<String>,
}

impl PanicInfo {
    /// A panic with this message, at this location if known.
    pub fn new(message: impl Into<String>, location: Option<String>) -> PanicInfo {
        PanicInfo {
            message: message.into(),
            location,
        }
    }
}

impl fmt::Display for PanicInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.location {
            Some(loc) => write!(f, " (at {loc})"),
            None => Ok(()),
        }
    }
}

/// A value that could not be serialised or deserialised: its type and the codec's
/// message. The error that carries it says which way.
///
/// ```
/// let e = procpool::CodecError::new("my::Order", "unexpected end of input");
/// assert_eq!(e.to_string(), "a value of type my::Order: unexpected end of input");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CodecError {
    /// `std::any::type_name` of the value.
    pub type_name: String,
    /// The serializer's or deserializer's message.
    pub reason: String,
}

impl CodecError {
    /// A codec failure for a value of this type, with the codec's message.
    pub fn new(type_name: impl Into<String>, reason: impl fmt::Display) -> CodecError {
        CodecError {
            type_name: type_name.into(),
            reason: reason.to_string(),
        }
    }

    /// A codec failure for a value of type `T`.
    pub(crate) fn of<T: ?Sized>(reason: impl fmt::Display) -> CodecError {
        CodecError::new(std::any::type_name::<T>(), reason)
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value of type {}: {}", self.type_name, self.reason)
    }
}

/// Why a pool could not be set up, or why its workers could not be started.
///
/// Returned by [`PoolBuilder::build`](crate::PoolBuilder::build) and
/// [`ProcessPoolExecutor::ready`](crate::ProcessPoolExecutor::ready); carried by
/// [`TaskError::WorkerStart`] to tasks that a pool which cannot start workers will
/// never run.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pool was built outside a tokio runtime, or in one without I/O and timers.
    /// Call `build` from inside one built with `enable_all` (as `#[tokio::main]` is),
    /// or enter one with `Runtime::enter`.
    #[error(
        "no tokio runtime with I/O and timers here; build the pool inside one \
         (e.g. #[tokio::main], or a Builder with enable_all)"
    )]
    NoRuntime,
    /// The pool was shut down before all its workers were ready.
    #[error("the pool was shut down before its workers were ready")]
    Shutdown,
    /// This process is daemonic (a pool worker, or a `Process` built with
    /// `daemon(true)`) and may not start children: they would be killed with it
    /// without a chance to finish (Python: "daemonic processes are not allowed to have
    /// children"). Start them from the parent instead.
    #[error("daemonic processes are not allowed to have children; start them from the parent")]
    DaemonicParent,
    /// The argument of a `Process` or of a pool initializer could not be serialised.
    #[error("could not serialise {0}")]
    Encode(CodecError),
    /// A builder setting is out of range; the field names which.
    #[error("invalid pool setting: {what}")]
    InvalidConfig {
        /// The setting at fault and the range it accepts.
        what: &'static str,
    },
    /// The operating system refused to start a worker process (out of pids, memory,
    /// or the executable is gone).
    #[error("could not start a worker process")]
    Spawn(#[source] Arc<io::Error>),
    /// A started worker is not the same build as this process: the executable on disk
    /// changed since this process started. Restart the service.
    #[error(
        "worker is a different build ({found:016x}, expected {expected:016x}); \
         the executable changed on disk since this process started: restart it"
    )]
    FingerprintMismatch {
        /// This process's build fingerprint.
        expected: u64,
        /// The worker's.
        found: u64,
    },
    /// The pool's initializer failed in a worker (it returned `Err` or panicked). The
    /// pool runs no task, since every worker would start the same way.
    #[error("the pool initializer failed in a worker: {0}")]
    Initializer(PanicInfo),
    /// A remote back end (the `nats` feature) could not be set up: the server refused
    /// the connection or the credentials, or the stream or consumer could not be made.
    #[error("the remote back end could not {what}: {reason}")]
    Remote {
        /// What it was doing: "connect", "create the task stream", ...
        what: &'static str,
        /// The client's or server's message.
        reason: String,
    },
    /// A worker died or broke protocol before it was ready. The pool retries with
    /// back-off; [`ProcessPoolExecutor::ready`](crate::ProcessPoolExecutor::ready)
    /// reports it when an attempt fails while it waits.
    #[error("a worker failed before it was ready ({reason}); the pool keeps retrying")]
    Handshake {
        /// What went wrong the last time.
        reason: String,
    },
    /// The kernel refused a limit a worker sets on itself before its first task
    /// (for example a negative `nice` without `CAP_SYS_NICE`). No retry can change
    /// that: the pool runs nothing. Change the limit or the process's privileges.
    #[error(
        "a worker could not set its {limit}: {}",
        io::Error::from_raw_os_error(*errno)
    )]
    LimitRefused {
        /// The limit, as the builder names it (`nice`, `affinity`, `cpu_time_limit`).
        limit: String,
        /// The kernel's `errno`.
        errno: i32,
    },
    /// [`shutdown_timeout`](crate::ProcessPoolExecutor::shutdown_timeout) could not
    /// drain the pool in time: it killed the workers, and the tasks still queued or
    /// running failed with [`TaskError::ShutdownTimedOut`].
    #[error(
        "the pool did not drain within {after:?}; its workers were killed and \
         {unfinished} unfinished tasks failed"
    )]
    ShutdownTimedOut {
        /// The time it was given.
        after: Duration,
        /// Tasks (and `map` items) queued or running at the deadline.
        unfinished: u64,
    },
}

impl Error {
    /// [`Error::Spawn`] from the system's error.
    pub(crate) fn spawn(e: io::Error) -> Error {
        Error::Spawn(Arc::new(e))
    }
}

/// A frame from a peer that could not be accepted. A pool's worker is killed and
/// replaced, since the byte stream can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame announced more bytes than the frame size limit.
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    FrameTooLarge {
        /// Bytes announced.
        len: u64,
        /// The limit ([`PoolBuilder::max_frame_size`](crate::PoolBuilder::max_frame_size)).
        limit: u64,
    },
    /// The frame header or a control message did not decode.
    #[error("malformed frame: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// A well-formed message arrived where the protocol does not allow it.
    #[error("unexpected message: {what}")]
    Unexpected {
        /// What arrived.
        what: String,
    },
}

/// Why a task produced no value.
///
/// Every variant says what happened to the task and, by implication, to its worker:
/// only [`WorkerDied`](TaskError::WorkerDied), [`TimedOut`](TaskError::TimedOut),
/// a [`cancel`](crate::TaskHandle::cancel) of a running task and
/// [`Protocol`](TaskError::Protocol) cost a worker, and the pool replaces it; the pool
/// itself goes on in every case.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The function panicked. The worker caught the panic and serves the next task.
    #[error("task panicked: {0}")]
    Panicked(PanicInfo),
    /// The worker process running the task died (a signal such as `SIGSEGV` or
    /// `SIGABRT`, or `exit` called by the task). Only this task fails; the worker is
    /// replaced.
    #[error("the worker running the task died ({exit}); it was replaced, the pool goes on")]
    WorkerDied {
        /// How the worker ended.
        exit: Exit,
    },
    /// The task ran longer than its timeout (its own, set with
    /// [`TaskBuilder::timeout`](crate::TaskBuilder::timeout), or the pool's
    /// `task_timeout`); its worker was killed and replaced.
    #[error("task ran longer than its timeout ({after:?}); its worker was killed and replaced")]
    TimedOut {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The task was cancelled: by [`TaskHandle::cancel`](crate::TaskHandle::cancel), by
    /// [`shutdown_now`](crate::ProcessPoolExecutor::shutdown_now), or by dropping the
    /// pool while it was queued or running.
    #[error("task was cancelled")]
    Cancelled,
    /// A value could not be serialised: the argument (in the parent) or the result (in
    /// the worker). Check the type's `Serialize` impl; postcard cannot encode
    /// `#[serde(flatten)]` or untagged enums with unknown lengths, for example.
    #[error("could not serialise {0}")]
    Encode(CodecError),
    /// A value could not be deserialised: the argument (in the worker) or the result
    /// (in the parent). The `Serialize` and `Deserialize` impls of the type disagree.
    #[error("could not deserialise {0}")]
    Decode(CodecError),
    /// An argument of the call is out of range (for example `chunk_size(0)`); nothing
    /// was submitted.
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// Which argument, and the range it accepts.
        what: &'static str,
    },
    /// The pool was shut down before the task was submitted.
    #[error("the pool is shut down; the task was not accepted")]
    Shutdown,
    /// The pool's [`shutdown_timeout`](crate::ProcessPoolExecutor::shutdown_timeout)
    /// passed before the task finished: it was dropped from the queue, or its worker
    /// was killed.
    #[error("the pool's shutdown deadline ({after:?}) passed before the task finished")]
    ShutdownTimedOut {
        /// The time the shutdown gave the pool to drain.
        after: Duration,
    },
    /// A `map`'s overall deadline ([`MapStream::timeout`](crate::MapStream::timeout))
    /// passed with results still to come: its queued chunks were dropped, running
    /// ones finish unobserved.
    #[error("the map's deadline ({after:?}) passed with results still to come")]
    MapTimedOut {
        /// The deadline, counted from when it was set.
        after: Duration,
    },
    /// The bounded queue of pending tasks is full; retry later or raise
    /// [`PoolBuilder::queue_capacity`](crate::PoolBuilder::queue_capacity).
    #[error(
        "the pool's task queue is full ({capacity} pending); retry later or raise \
         queue_capacity"
    )]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// A worker process could not be started to run this task.
    #[error("could not start a worker for the task")]
    Spawn(#[source] Arc<io::Error>),
    /// The pool cannot start workers at all (different build, failing initializer); the
    /// task will never run.
    #[error("the pool cannot start workers")]
    WorkerStart(#[source] Error),
    /// The worker sent a frame the parent could not accept; the worker was replaced.
    #[error("the worker broke the protocol and was replaced")]
    Protocol(#[source] ProtocolError),
    /// The worker could not build the tokio runtime for an async task.
    #[error("the worker could not build its tokio runtime: {reason}")]
    WorkerRuntime {
        /// The I/O error's text.
        reason: String,
    },
    /// A remote executor (the `nats` feature) could not run the task; the
    /// [`RemoteTaskError`] says why.
    #[error("remote task failed: {0}")]
    Remote(RemoteTaskError),
    /// The task went over a limit of its worker
    /// ([`PoolBuilder::cpu_time_limit`](crate::PoolBuilder::cpu_time_limit)); the kernel
    /// ended the worker, and it was replaced.
    #[error("the task went over its worker's {limit}; the worker was replaced")]
    LimitExceeded {
        /// The limit it broke.
        limit: Limit,
    },
    /// A task given a name ([`TaskBuilder::name`](crate::TaskBuilder::name)) failed;
    /// `error` says how. Match on [`unnamed`](TaskError::unnamed) to see the same
    /// variants whether a task was named or not.
    #[error("task {name:?} failed")]
    Named {
        /// The task's name.
        name: Arc<str>,
        /// How it failed: never `Named` itself.
        #[source]
        error: Box<TaskError>,
    },
}

impl TaskError {
    /// The error under the task's name: `error` of [`Named`](TaskError::Named),
    /// `self` for every other variant. Match on this to handle named and unnamed tasks
    /// alike.
    ///
    /// ```
    /// # use procpool::TaskError;
    /// fn retry_later(e: &TaskError) -> bool {
    ///     matches!(e.unnamed(), TaskError::QueueFull { .. } | TaskError::WorkerDied { .. })
    /// }
    /// # assert!(!retry_later(&TaskError::Cancelled));
    /// ```
    pub fn unnamed(&self) -> &TaskError {
        match self {
            TaskError::Named { error, .. } => error,
            other => other,
        }
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        match self {
            TaskError::Named { name, .. } => Some(name),
            _ => None,
        }
    }

    /// `error` under `name`, if there is one (never named twice).
    pub(crate) fn named(error: TaskError, name: Option<Arc<str>>) -> TaskError {
        match (name, error) {
            (_, error @ TaskError::Named { .. }) => error,
            (Some(name), error) => TaskError::Named {
                name,
                error: Box::new(error),
            },
            (None, error) => error,
        }
    }
}

/// A per-worker limit a task can break; see [`TaskError::LimitExceeded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// CPU time per task (`RLIMIT_CPU`, in whole seconds): the kernel sent the worker
    /// `SIGXCPU`.
    CpuTime(Duration),
    /// Address space per worker (`RLIMIT_AS`, in bytes): an allocation failed and the
    /// worker aborted.
    AddressSpace(u64),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::CpuTime(d) => write!(f, "CPU time limit of {d:?} per task"),
            Limit::AddressSpace(bytes) => {
                write!(f, "address-space limit of {bytes} bytes per worker")
            }
        }
    }
}

/// Why a remote executor could not run a task, beyond what a local one can say.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteTaskError {
    /// The function is not registered under a name (`procpool::remote_task!`), so no
    /// host could find it. Nothing was sent.
    #[error(
        "the function {type_name} is not registered with procpool::remote_task!; nothing was sent"
    )]
    NotRegistered {
        /// The function's type.
        type_name: String,
    },
    /// The argument holds handles (pipe ends, queues, locks, shared memory), which
    /// cannot leave this machine. Nothing was sent.
    #[error("handles (pipe ends, queues, locks, shared memory) cannot travel to another host; nothing was sent")]
    HandlesCannotTravel,
    /// A host does not know the task's name (another build's registry); it terminated
    /// the message.
    #[error("host {host} does not know the task {name:?}")]
    UnknownTask {
        /// The registered name that was sent.
        name: String,
        /// The host that refused it.
        host: String,
    },
    /// Every delivery of the task ended with its worker dying under it (or its host
    /// lost); the last one said why.
    #[error("the task was delivered {attempts} times and never finished (last: {last})")]
    RetriesExhausted {
        /// Deliveries made.
        attempts: u64,
        /// How the last attempt ended.
        last: String,
    },
    /// The encoded task is larger than the server takes in one message. Nothing was
    /// sent.
    #[error("the task's message of {len} bytes is over the server's limit of {limit} bytes; nothing was sent")]
    PayloadTooLarge {
        /// Encoded length.
        len: usize,
        /// The server's `max_payload`.
        limit: usize,
    },
    /// The host took the task but could not run it for another reason.
    #[error("the host could not run the task: {reason}")]
    Host {
        /// The host's message.
        reason: String,
    },
    /// A task of the same idempotency key
    /// ([`TaskBuilder::idempotency_key`](crate::TaskBuilder::idempotency_key)) was
    /// published within the stream's dedup window by another executor, or by this one
    /// and already answered: the server dropped this copy, so the task runs once, and
    /// its result went to the submitter of the first. Nothing more was run.
    #[error("a task with idempotency key {key:?} was already submitted within the dedup window; this copy was dropped, and the first one's submitter gets the result")]
    Duplicate {
        /// The key.
        key: String,
    },
    /// The server refused or lost the message.
    #[error("the server did not take the task: {reason}")]
    Publish {
        /// The client's message.
        reason: String,
    },
}
