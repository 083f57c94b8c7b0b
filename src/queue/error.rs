//! Why an item was not put or got, and a `task_done` too many.

use super::*;

/// Why an item was not put. The variants that can give the item back do.
#[non_exhaustive]
pub enum PutError<T> {
    /// [`try_put`](Queue::try_put): the queue is at its bound.
    Full(T),
    /// The queue was closed.
    Closed(T),
    /// A `*_timeout` put: no room came in time.
    Timeout(T),
    /// The item did not serialise.
    Encode {
        /// The item's type.
        type_name: &'static str,
        /// What serde reported.
        reason: String,
    },
    /// The encoded item is longer than [`MAX_ITEM`].
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A system call failed (or the shared state is damaged).
    Io(io::Error),
}

impl<T> PutError<T> {
    /// The item, if this error gives it back.
    pub fn into_inner(self) -> Option<T> {
        match self {
            PutError::Full(t) | PutError::Closed(t) | PutError::Timeout(t) => Some(t),
            _ => None,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Timeout(_) => f.write_str("Timeout(..)"),
            PutError::Encode { type_name, reason } => f
                .debug_struct("Encode")
                .field("type_name", type_name)
                .field("reason", reason)
                .finish(),
            PutError::TooLarge { len, limit } => f
                .debug_struct("TooLarge")
                .field("len", len)
                .field("limit", limit)
                .finish(),
            PutError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full"),
            PutError::Closed(_) => f.write_str("the queue is closed"),
            PutError::Timeout(_) => f.write_str("no room in the queue before the timeout"),
            PutError::Encode { type_name, reason } => fmt_codec(f, "encode", type_name, reason),
            PutError::TooLarge { len, limit } => write!(
                f,
                "an item of {len} bytes is over the queue's limit of {limit} bytes"
            ),
            PutError::Io(e) => write!(f, "queue I/O error: {e}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

/// Why no item was got.
#[derive(Debug)]
#[non_exhaustive]
pub enum GetError {
    /// [`try_get`](Queue::try_get): the queue is empty.
    Empty,
    /// The queue is closed and empty: nothing more will come.
    Closed,
    /// A `*_timeout` get: nothing came in time.
    Timeout,
    /// The item did not decode as the queue's type. It is consumed.
    Decode {
        /// The expected type.
        type_name: &'static str,
        /// What serde reported.
        reason: String,
    },
    /// A system call failed (or the shared state is damaged).
    Io(io::Error),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => f.write_str("the queue is empty"),
            GetError::Closed => f.write_str("the queue is closed and empty"),
            GetError::Timeout => f.write_str("no item came before the timeout"),
            GetError::Decode { type_name, reason } => fmt_codec(f, "decode", type_name, reason),
            GetError::Io(e) => write!(f, "queue I/O error: {e}"),
        }
    }
}

impl std::error::Error for GetError {}

/// [`JoinableQueue::task_done`] was called more times than items were put (Python's
/// `ValueError: task_done() called too many times`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called more times than items were put")
    }
}

impl std::error::Error for TaskDoneError {}
