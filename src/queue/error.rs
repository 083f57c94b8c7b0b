//! Why an item was not put or got, and a `task_done` too many.

use super::*;

/// Why an item was not put. The variants that can give the item back do.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PutError<T> {
    /// [`try_put`](Queue::try_put): the queue is at its bound.
    #[error("the queue is full")]
    Full(T),
    /// The queue was closed.
    #[error("the queue is closed")]
    Closed(T),
    /// A `*_timeout` put: no room came in time.
    #[error("no room in the queue before the timeout")]
    Timeout(T),
    /// The item did not serialise.
    #[error("could not serialise {0}")]
    Encode(CodecError),
    /// The encoded item is longer than [`MAX_ITEM`].
    #[error("an item of {len} bytes is over the queue's limit of {limit} bytes")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A system call failed (or the shared state is damaged).
    #[error("queue I/O error")]
    Io(#[source] io::Error),
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

/// Without the item, which need not be `Debug`.
impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Timeout(_) => f.write_str("Timeout(..)"),
            PutError::Encode(e) => f.debug_tuple("Encode").field(e).finish(),
            PutError::TooLarge { len, limit } => f
                .debug_struct("TooLarge")
                .field("len", len)
                .field("limit", limit)
                .finish(),
            PutError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

/// Why no item was got.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// [`try_get`](Queue::try_get): the queue is empty.
    #[error("the queue is empty")]
    Empty,
    /// The queue is closed and empty: nothing more will come.
    #[error("the queue is closed and empty")]
    Closed,
    /// A `*_timeout` get: nothing came in time.
    #[error("no item came before the timeout")]
    Timeout,
    /// The item did not decode as the queue's type. It is consumed.
    #[error("could not deserialise {0}")]
    Decode(CodecError),
    /// A system call failed (or the shared state is damaged).
    #[error("queue I/O error")]
    Io(#[source] io::Error),
}

/// [`JoinableQueue::task_done`] was called more times than items were put (Python's
/// `ValueError: task_done() called too many times`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("task_done() called more times than items were put")]
pub struct TaskDoneError;
