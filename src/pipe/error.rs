//! Why a message could not be sent or received.

use super::*;
use crate::error::ProtocolError;

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Nobody holds the other end any more (or this end was shut for sending).
    #[error("the other end of the pipe is closed")]
    Closed,
    /// The value did not serialise.
    #[error("could not serialise {0}")]
    Encode(CodecError),
    /// The message holds handles (pipe ends, queues, locks...), whose descriptors only
    /// a unix socket with procpool's framing carries, and this connection is TCP or a
    /// [`connection`](crate::connection) (framed as Python frames). Nothing was sent.
    #[error(
        "handles (pipe ends, queues, locks...) cannot travel over TCP or a Listener/Client connection"
    )]
    HandlesNeedUnixSocket,
    /// The encoded message is longer than [`MAX_MESSAGE`].
    #[error("a message of {len} bytes is over the pipe's limit of {limit} bytes")]
    TooLarge {
        /// Encoded length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// Another I/O error.
    #[error("pipe I/O error")]
    Io(#[source] io::Error),
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EPIPE | libc::ECONNRESET) => SendError::Closed,
            _ => SendError::Io(e),
        }
    }
}

/// Why no message was received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Every copy of the other end is closed and everything sent has been received
    /// (Python's `EOFError`).
    #[error("end of stream: the other end is closed everywhere")]
    Eof,
    /// [`try_recv`](Connection::try_recv): no complete message is waiting.
    #[error("no message waiting")]
    Empty,
    /// A `*_timeout` call: no message came in time. Nothing was consumed.
    #[error("no message came before the timeout")]
    Timeout,
    /// The message arrived but did not decode as the expected type. It is consumed;
    /// the connection goes on.
    #[error("could not deserialise {0}")]
    Decode(CodecError),
    /// [`recv_bytes_into`](Connection::recv_bytes_into): the buffer is shorter than
    /// the message, which is returned here (Python's `BufferTooShort`).
    #[error("buffer too short: the message has {needed} bytes")]
    BufferTooShort {
        /// The message's length.
        needed: usize,
        /// The whole message.
        message: Vec<u8>,
    },
    /// [`recv_bytes_max`](Connection::recv_bytes_max): the next message is longer than
    /// allowed. As in Python, the connection is closed: this end is unusable after it.
    #[error(
        "a message of {len} bytes is longer than the maximum of {max}; the connection is closed"
    )]
    TooLong {
        /// The message's length.
        len: u64,
        /// The maximum asked for.
        max: u64,
    },
    /// The bytes are not messages (a peer that is not procpool, or a message over
    /// [`MAX_MESSAGE`]); this end is unusable after it.
    #[error("not a procpool message stream")]
    Protocol(#[source] ProtocolError),
    /// This end was closed after an earlier [`TooLong`](RecvError::TooLong) or
    /// [`Protocol`](RecvError::Protocol) error.
    #[error("this end of the pipe was closed by an earlier error")]
    Closed,
    /// Another I/O error.
    #[error("pipe I/O error")]
    Io(#[source] io::Error),
}
