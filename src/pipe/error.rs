//! Why a message could not be sent or received.

use super::*;

/// Why a message could not be sent.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// Nobody holds the other end any more (or this end was shut for sending).
    Closed,
    /// The value did not serialise.
    Encode {
        /// The value's type.
        type_name: &'static str,
        /// What serde reported.
        reason: String,
    },
    /// The message holds handles (pipe ends, queues, locks...), whose descriptors only
    /// unix sockets carry, and this connection is TCP. Nothing was sent.
    HandlesNeedUnixSocket,
    /// The encoded message is longer than [`MAX_MESSAGE`].
    TooLarge {
        /// Encoded length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// Another I/O error.
    Io(io::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("the other end of the pipe is closed"),
            SendError::Encode { type_name, reason } => fmt_codec(f, "encode", type_name, reason),
            SendError::HandlesNeedUnixSocket => {
                f.write_str("handles (pipe ends, queues, locks...) cannot travel over TCP")
            }
            SendError::TooLarge { len, limit } => write!(
                f,
                "a message of {len} bytes is over the pipe's limit of {limit} bytes"
            ),
            SendError::Io(_) => f.write_str("pipe I/O error"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Io(e) => Some(e),
            _ => None,
        }
    }
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
#[derive(Debug)]
#[non_exhaustive]
pub enum RecvError {
    /// Every copy of the other end is closed and everything sent has been received
    /// (Python's `EOFError`).
    Eof,
    /// [`try_recv`](Connection::try_recv): no complete message is waiting.
    Empty,
    /// A `*_timeout` call: no message came in time. Nothing was consumed.
    Timeout,
    /// The message arrived but did not decode as the expected type. It is consumed;
    /// the connection goes on.
    Decode {
        /// The expected type.
        type_name: &'static str,
        /// What serde reported.
        reason: String,
    },
    /// [`recv_bytes_into`](Connection::recv_bytes_into): the buffer is shorter than
    /// the message, which is returned here (Python's `BufferTooShort`).
    BufferTooShort {
        /// The message's length.
        needed: usize,
        /// The whole message.
        message: Vec<u8>,
    },
    /// [`recv_bytes_max`](Connection::recv_bytes_max): the next message is longer than
    /// allowed. As in Python, the connection is closed: this end is unusable after it.
    TooLong {
        /// The message's length.
        len: u64,
        /// The maximum asked for.
        max: u64,
    },
    /// The bytes are not messages (a peer that is not procpool, or a message over
    /// [`MAX_MESSAGE`]); this end is unusable after it.
    Protocol(ProtocolError),
    /// This end was closed after an earlier [`TooLong`](RecvError::TooLong) or
    /// [`Protocol`](RecvError::Protocol) error.
    Closed,
    /// Another I/O error.
    Io(io::Error),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Eof => f.write_str("end of stream: the other end is closed everywhere"),
            RecvError::Empty => f.write_str("no message waiting"),
            RecvError::Timeout => f.write_str("no message came before the timeout"),
            RecvError::Decode { type_name, reason } => fmt_codec(f, "decode", type_name, reason),
            RecvError::BufferTooShort { needed, .. } => {
                write!(f, "buffer too short: the message has {needed} bytes")
            }
            RecvError::TooLong { len, max } => write!(
                f,
                "a message of {len} bytes is longer than the maximum of {max}; the connection is closed"
            ),
            RecvError::Protocol(_) => f.write_str("not a procpool message stream"),
            RecvError::Closed => f.write_str("this end of the pipe was closed by an earlier error"),
            RecvError::Io(_) => f.write_str("pipe I/O error"),
        }
    }
}

impl std::error::Error for RecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecvError::Io(e) => Some(e),
            RecvError::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

impl std::error::Error for ProtocolError {}

impl Clone for SendError {
    fn clone(&self) -> Self {
        match self {
            SendError::Closed => SendError::Closed,
            SendError::Encode { type_name, reason } => SendError::Encode {
                type_name,
                reason: reason.clone(),
            },
            SendError::HandlesNeedUnixSocket => SendError::HandlesNeedUnixSocket,
            SendError::TooLarge { len, limit } => SendError::TooLarge {
                len: *len,
                limit: *limit,
            },
            SendError::Io(e) => SendError::Io(clone_io(e)),
        }
    }
}
