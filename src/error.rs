//! Errors: [`Error`] for setting a pool up, [`TaskError`] for one task, [`Exit`] for
//! how a process ended.

use std::fmt;
use std::io;
use std::time::Duration;

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

/// Why a pool could not be set up, or why its workers could not be started.
///
/// Returned by [`PoolBuilder::build`](crate::PoolBuilder::build) and
/// [`ProcessPoolExecutor::ready`](crate::ProcessPoolExecutor::ready); carried by
/// [`TaskError::WorkerStart`] to tasks that a pool which cannot start workers will
/// never run.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The pool was built outside a tokio runtime, or in one without I/O and timers.
    /// Call `build` from inside one built with `enable_all` (as `#[tokio::main]` is),
    /// or enter one with `Runtime::enter`.
    NoRuntime,
    /// The pool was shut down before all its workers were ready.
    Shutdown,
    /// This process is daemonic (a pool worker, or a `Process` built with
    /// `daemon(true)`) and may not start children: they would be killed with it
    /// without a chance to finish (Python: "daemonic processes are not allowed to have
    /// children"). Start them from the parent instead.
    DaemonicParent,
    /// The argument of a `Process` or of a pool initializer could not be serialised.
    Encode {
        /// `std::any::type_name` of the value.
        type_name: String,
        /// The serializer's message.
        reason: String,
    },
    /// A builder setting is out of range; the field names which.
    InvalidConfig {
        /// The setting at fault and the range it accepts.
        what: &'static str,
    },
    /// The operating system refused to start a worker process (out of pids, memory,
    /// or the executable is gone).
    Spawn(io::Error),
    /// A started worker is not the same build as this process: the executable on disk
    /// changed since this process started. Restart the service.
    FingerprintMismatch {
        /// This process's build fingerprint.
        expected: u64,
        /// The worker's.
        found: u64,
    },
    /// The pool's initializer failed in a worker (it returned `Err` or panicked). The
    /// pool runs no task, since every worker would start the same way.
    Initializer {
        /// The error's `Display` text, or the panic message.
        message: String,
        /// Where it panicked (`file:line:column`), if it panicked.
        location: Option<String>,
    },
    /// A worker died or broke protocol before it was ready. The pool retries with
    /// back-off; [`ProcessPoolExecutor::ready`](crate::ProcessPoolExecutor::ready)
    /// reports it when an attempt fails while it waits.
    Handshake {
        /// What went wrong the last time.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoRuntime => write!(
                f,
                "no tokio runtime with I/O and timers here; build the pool inside one \
                 (e.g. #[tokio::main], or a Builder with enable_all)"
            ),
            Error::Shutdown => write!(f, "the pool was shut down before its workers were ready"),
            Error::DaemonicParent => write!(
                f,
                "daemonic processes are not allowed to have children; start them from the parent"
            ),
            Error::Encode { type_name, reason } => fmt_codec(f, "serialise", type_name, reason),
            Error::InvalidConfig { what } => write!(f, "invalid pool setting: {what}"),
            Error::Spawn(_) => f.write_str("could not start a worker process"),
            Error::FingerprintMismatch { expected, found } => write!(
                f,
                "worker is a different build ({found:016x}, expected {expected:016x}); \
                 the executable changed on disk since this process started: restart it"
            ),
            Error::Initializer { message, location } => fmt_panic(
                f,
                "the pool initializer failed in a worker",
                message,
                location.as_deref(),
            ),
            Error::Handshake { reason } => write!(
                f,
                "a worker failed before it was ready ({reason}); the pool keeps retrying"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::NoRuntime => Error::NoRuntime,
            Error::Shutdown => Error::Shutdown,
            Error::DaemonicParent => Error::DaemonicParent,
            Error::Encode { type_name, reason } => Error::Encode {
                type_name: type_name.clone(),
                reason: reason.clone(),
            },
            Error::InvalidConfig { what } => Error::InvalidConfig { what },
            Error::Spawn(e) => Error::Spawn(clone_io(e)),
            Error::FingerprintMismatch { expected, found } => Error::FingerprintMismatch {
                expected: *expected,
                found: *found,
            },
            Error::Initializer { message, location } => Error::Initializer {
                message: message.clone(),
                location: location.clone(),
            },
            Error::Handshake { reason } => Error::Handshake {
                reason: reason.clone(),
            },
        }
    }
}

/// A frame from a worker that the parent could not accept. The worker is killed and
/// replaced, since the byte stream can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame announced more bytes than the pool's frame size limit.
    FrameTooLarge {
        /// Bytes announced.
        len: u64,
        /// The limit ([`PoolBuilder::max_frame_size`](crate::PoolBuilder::max_frame_size)).
        limit: u64,
    },
    /// The frame header or a control message did not decode.
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// A well-formed message arrived where the protocol does not allow it.
    Unexpected {
        /// What arrived.
        what: String,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::FrameTooLarge { len, limit } => {
                write!(f, "frame of {len} bytes is over the limit of {limit} bytes")
            }
            ProtocolError::Malformed { reason } => write!(f, "malformed frame: {reason}"),
            ProtocolError::Unexpected { what } => write!(f, "unexpected message: {what}"),
        }
    }
}

/// Why a task produced no value.
///
/// Every variant says what happened to the task and, by implication, to its worker:
/// only [`WorkerDied`](TaskError::WorkerDied), [`TimedOut`](TaskError::TimedOut),
/// a [`cancel`](crate::TaskHandle::cancel) of a running task and
/// [`Protocol`](TaskError::Protocol) cost a worker, and the pool replaces it; the pool
/// itself goes on in every case.
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskError {
    /// The function panicked. The worker caught the panic and serves the next task.
    Panicked {
        /// The panic message (the `&str` or `String` payload).
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
    },
    /// The worker process running the task died (a signal such as `SIGSEGV` or
    /// `SIGABRT`, or `exit` called by the task). Only this task fails; the worker is
    /// replaced.
    WorkerDied {
        /// How the worker ended.
        exit: Exit,
    },
    /// The task ran longer than the pool's `task_timeout`; its worker was killed and
    /// replaced.
    TimedOut {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The task was cancelled: by [`TaskHandle::cancel`](crate::TaskHandle::cancel), by
    /// [`shutdown_now`](crate::ProcessPoolExecutor::shutdown_now), or by dropping the
    /// pool while it was queued or running.
    Cancelled,
    /// A value could not be serialised: the argument (in the parent) or the result (in
    /// the worker). Check the type's `Serialize` impl; postcard cannot encode
    /// `#[serde(flatten)]` or untagged enums with unknown lengths, for example.
    Encode {
        /// `std::any::type_name` of the value.
        type_name: String,
        /// The serializer's message.
        reason: String,
    },
    /// A value could not be deserialised: the argument (in the worker) or the result
    /// (in the parent). The `Serialize` and `Deserialize` impls of the type disagree.
    Decode {
        /// `std::any::type_name` of the value.
        type_name: String,
        /// The deserializer's message.
        reason: String,
    },
    /// The pool was shut down before the task was submitted.
    Shutdown,
    /// The bounded queue of pending tasks is full; retry later or raise
    /// [`Builder::queue_capacity`](crate::PoolBuilder::queue_capacity).
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// A worker process could not be started to run this task.
    Spawn(io::Error),
    /// The pool cannot start workers at all (different build, failing initializer); the
    /// task will never run.
    WorkerStart(Error),
    /// The worker sent a frame the parent could not accept; the worker was replaced.
    Protocol(ProtocolError),
    /// The worker could not build the tokio runtime for an async task.
    WorkerRuntime {
        /// The I/O error's text.
        reason: String,
    },
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked { message, location } => {
                fmt_panic(f, "task panicked", message, location.as_deref())
            }
            TaskError::WorkerDied { exit } => write!(
                f,
                "the worker running the task died ({exit}); it was replaced, the pool goes on"
            ),
            TaskError::TimedOut { after } => write!(
                f,
                "task ran longer than the pool's task timeout ({after:?}); its worker was killed and replaced"
            ),
            TaskError::Cancelled => write!(f, "task was cancelled"),
            TaskError::Encode { type_name, reason } => fmt_codec(f, "serialise", type_name, reason),
            TaskError::Decode { type_name, reason } => fmt_codec(f, "deserialise", type_name, reason),
            TaskError::Shutdown => write!(f, "the pool is shut down; the task was not accepted"),
            TaskError::QueueFull { capacity } => write!(
                f,
                "the pool's task queue is full ({capacity} pending); retry later or raise queue_capacity"
            ),
            TaskError::Spawn(_) => f.write_str("could not start a worker for the task"),
            TaskError::WorkerStart(_) => f.write_str("the pool cannot start workers"),
            TaskError::Protocol(e) => write!(f, "protocol error from the worker: {e}; it was replaced"),
            TaskError::WorkerRuntime { reason } => {
                write!(f, "the worker could not build its tokio runtime: {reason}")
            }
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskError::Spawn(e) => Some(e),
            TaskError::WorkerStart(e) => Some(e),
            _ => None,
        }
    }
}

impl Clone for TaskError {
    fn clone(&self) -> Self {
        match self {
            TaskError::Panicked { message, location } => TaskError::Panicked {
                message: message.clone(),
                location: location.clone(),
            },
            TaskError::WorkerDied { exit } => TaskError::WorkerDied { exit: *exit },
            TaskError::TimedOut { after } => TaskError::TimedOut { after: *after },
            TaskError::Cancelled => TaskError::Cancelled,
            TaskError::Encode { type_name, reason } => TaskError::Encode {
                type_name: type_name.clone(),
                reason: reason.clone(),
            },
            TaskError::Decode { type_name, reason } => TaskError::Decode {
                type_name: type_name.clone(),
                reason: reason.clone(),
            },
            TaskError::Shutdown => TaskError::Shutdown,
            TaskError::QueueFull { capacity } => TaskError::QueueFull {
                capacity: *capacity,
            },
            TaskError::Spawn(e) => TaskError::Spawn(clone_io(e)),
            TaskError::WorkerStart(e) => TaskError::WorkerStart(e.clone()),
            TaskError::Protocol(e) => TaskError::Protocol(e.clone()),
            TaskError::WorkerRuntime { reason } => TaskError::WorkerRuntime {
                reason: reason.clone(),
            },
        }
    }
}

/// Writes `{what}: {message}`, then ` (at {location})` when the location is known.
pub(crate) fn fmt_panic(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    message: &str,
    location: Option<&str>,
) -> fmt::Result {
    write!(f, "{what}: {message}")?;
    match location {
        Some(loc) => write!(f, " (at {loc})"),
        None => Ok(()),
    }
}

/// Writes `could not {verb} a value of type {type_name}: {reason}`.
pub(crate) fn fmt_codec(
    f: &mut fmt::Formatter<'_>,
    verb: &str,
    type_name: &str,
    reason: &str,
) -> fmt::Result {
    write!(f, "could not {verb} a value of type {type_name}: {reason}")
}

pub(crate) fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}
