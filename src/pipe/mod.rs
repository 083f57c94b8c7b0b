//! Pipes between processes: Python's `multiprocessing.Pipe`, typed and async.
//!
//! [`pipe`] makes a connected pair of [`Connection`]s (a unix socketpair beside a
//! shared-memory ring, see below). Either end
//! can be passed to another process as a task or [`Process`](crate::Process) argument
//! or result, or sent through another pipe or queue: its descriptor travels beside the
//! message, and each process then holds its own. [`simplex()`] makes a one-way pair
//! ([`Receiver`], [`Sender`]; Python's `Pipe(duplex=False)`), and [`duplex`] a pair
//! whose two directions carry different types (requests one way, responses the other).
//!
//! # Messages
//! A message is one value encoded with postcard (or raw bytes with
//! [`send_bytes`](Connection::send_bytes)), up to [`MAX_MESSAGE`] bytes. It is
//! delivered whole or not at all: a sender that dies half-way through a message leaves
//! nothing for the receiver but end of stream. Handles inside a message (another pipe
//! end, a queue) arrive with it.
//!
//! # The ring
//! A pipe made here also shares a memory file between its ends (`src/pipe/ring.rs`):
//! a message of up to 976 bytes of body, without handles, goes into a slot there
//! while the receiver is awake, with no system call on either side; a receiver that
//! finds nothing polls for a while if answers have lately come quickly, then sleeps on
//! the socket, and senders then write there. Larger messages, messages with handles,
//! and messages to a sleeping receiver go on the socket as before. Both ways keep one
//! order. A connection from [`crate::connection`] (a listener, a client) has no ring.
//!
//! # End of stream
//! [`recv`](Connection::recv) returns [`RecvError::Eof`] once every copy of the other
//! end, in every process, has been dropped and the messages already sent have been
//! received — the seeds' `EOFError`. So drop (or [`close`](Connection::close)) the
//! ends a process does not use, as in Python. Sending to an end nobody holds any more
//! is [`SendError::Closed`]; it never raises `SIGPIPE`. (A slot is not a socket: a
//! send that finds the ring's receivers took a message since this end's last send
//! takes their word that they are there. So the one message sent just after the last
//! receiver closed may be accepted and lost, as one sent just before would be; the
//! next send is `Closed`.)
//!
//! # Sharing
//! Within a process, a connection is used through `&self`: one task may send while
//! another receives (wrap it in an `Arc`). Messages from concurrent senders never
//! interleave in this process. An end may be handed from process to process in the
//! middle of a stream: a receiving end reads nothing ahead of the message it
//! delivers, so the next holder finds the rest. Several processes may send on the
//! same end at once: each sender's messages keep their order, and none is lost or
//! repeated, though two large messages (over a ring slot) sent at the same moment may
//! interleave their bytes on the socket, as with Python's pipes. Several processes
//! must not *receive* from the same end at once (they may cut each other's messages
//! on the socket; Python's pipes have the same rule). For many producers and
//! consumers, use a [`Queue`](crate::Queue).
//!
//! # Async and blocking
//! Every operation has an async form and a `blocking_*` form for code that is not
//! async (a pool task, a [`Process`](crate::Process) body). The blocking forms panic
//! if called from within an async runtime context, as tokio's do.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use procpool::{pipe, Process};
//!
//! fn child(conn: procpool::Connection<String>) {
//!     let question = conn.blocking_recv().unwrap();
//!     conn.blocking_send(&format!("{question} -> 42")).unwrap();
//! }
//!
//! let (parent_end, child_end) = pipe::<String>()?;
//! let mut p = Process::spawn(child, child_end)?; // the child gets its own copy
//! parent_end.send(&"the answer?".to_owned()).await?;
//! assert_eq!(parent_end.recv().await?, "the answer? -> 42");
//! p.join().await?;
//! // The child's end is gone everywhere now: end of stream.
//! assert!(matches!(parent_end.recv().await, Err(pipe::RecvError::Eof)));
//! # Ok(())
//! # }
//! ```

use std::any::type_name;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CodecError;
use crate::sys;
use crate::wire::handles::{self, handle_serde, Handle, RecvFd, SendFd};
use crate::wire::stream::{Frame, Framing};
use crate::wire::{self, Kind, HEADER_LEN};
use end::End;
use ring::PipeRing;

mod end;
mod error;
pub(crate) mod ring;
mod simplex;

pub use error::{RecvError, SendError};
pub use simplex::{simplex, Receiver, Sender};

/// Largest message a pipe carries: 1 GiB.
pub const MAX_MESSAGE: u64 = 1 << 30;

/// Makes a connected pair of duplex [`Connection`]s carrying `T` both ways (Python's
/// `Pipe()`).
///
/// # Errors
/// The system refused a socketpair (out of descriptors).
pub fn pipe<T>() -> io::Result<(Connection<T>, Connection<T>)> {
    duplex::<T, T>()
}

/// Makes a connected pair whose first end sends `A` and receives `B`, and whose second
/// end sends `B` and receives `A`: a typed request/response channel.
///
/// # Errors
/// The system refused a socketpair.
pub fn duplex<A, B>() -> io::Result<(Connection<A, B>, Connection<B, A>)> {
    let (a, b) = sys::sock::pair(sys::sock::Kind::Stream)?;
    let (ring_a, ring_b) = PipeRing::pair()?;
    Ok((
        Connection::with_ring(a, Some(ring_a)),
        Connection::with_ring(b, Some(ring_b)),
    ))
}

/// One end of a pipe: sends `S`, receives `R` (by default the same type).
///
/// See the [module documentation](self) for end-of-stream rules, sharing, and the
/// async/blocking forms.
pub struct Connection<S, R = S> {
    end: Arc<End>,
    _types: PhantomData<fn(S) -> R>,
}

/// Encodes a message frame: header, then the value (or bytes), with handles'
/// descriptors collected.
fn encode<S: Serialize + 'static>(value: &S) -> Result<(Vec<u8>, Vec<OwnedFd>), SendError> {
    // A byte vector is the body as it is (see `wire::value`).
    if let Some(bytes) = wire::value::as_raw(value) {
        return encode_bytes(bytes);
    }
    let mut frame = Vec::with_capacity(64);
    wire::begin(&mut frame);
    let (r, fds) = handles::collecting(|| wire::encode_into(value, &mut frame));
    r.map_err(|e| SendError::Encode(CodecError::of::<S>(e)))?;
    finish(frame).map(|f| (f, fds))
}

fn encode_bytes(bytes: &[u8]) -> Result<(Vec<u8>, Vec<OwnedFd>), SendError> {
    let mut frame = Vec::with_capacity(HEADER_LEN + bytes.len());
    wire::begin(&mut frame);
    frame.extend_from_slice(bytes);
    finish(frame).map(|f| (f, Vec::new()))
}

fn finish(mut frame: Vec<u8>) -> Result<Vec<u8>, SendError> {
    let len = (frame.len() - HEADER_LEN) as u64;
    if len > MAX_MESSAGE {
        return Err(SendError::TooLarge {
            len,
            limit: MAX_MESSAGE,
        });
    }
    wire::finish(&mut frame, Kind::Message, 0, 0, 0);
    Ok(frame)
}

fn decode<R: DeserializeOwned + 'static>(frame: Frame) -> Result<R, RecvError> {
    let Frame { body, fds, .. } = frame;
    let body = match wire::value::from_raw::<R>(body) {
        Ok(r) => return Ok(r),
        Err(body) => body,
    };
    handles::supplying(fds, || postcard::from_bytes(&body))
        .map_err(|e| RecvError::Decode(CodecError::of::<R>(handles::reason(&e))))
}

impl<S, R> Connection<S, R> {
    /// A connection over `fd` with procpool's framing, and the pipe's ring if it has
    /// one.
    fn with_ring(fd: OwnedFd, ring: Option<PipeRing>) -> Self {
        Connection {
            end: Arc::new(End::new(fd, Framing::Procpool, ring)),
            _types: PhantomData,
        }
    }

    /// A connection over `fd` that frames its messages as Python's
    /// `multiprocessing.connection.Connection` does (see [`crate::connection`]).
    /// Handles cannot travel over it.
    pub(crate) fn from_fd_python(fd: OwnedFd) -> Self {
        Connection {
            end: Arc::new(End::new(fd, Framing::Python, None)),
            _types: PhantomData,
        }
    }

    /// The socket, for [`connection::wait`](crate::connection::wait) to poll.
    pub(crate) fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        self.end.fd.as_fd()
    }

    /// Whether a receive would not wait now (for
    /// [`connection::wait`](crate::connection::wait)).
    pub(crate) fn ready(&self) -> io::Result<bool> {
        self.end.ready()
    }

    /// While the guard lives, senders wake this end through its socket (for
    /// [`connection::wait`](crate::connection::wait), which watches sockets).
    pub(crate) fn watching(&self) -> Option<ring::Sleeping<'_>> {
        self.end.sleeping()
    }

    /// Closes this handle (the same as dropping it). The other end sees end of stream
    /// once every copy of this end, in every process, is closed.
    ///
    /// A message whose sending was cancelled half-way is abandoned: the receiver never
    /// sees any of it (it sees end of stream instead).
    pub fn close(self) {}

    // ---- sending ----

    async fn send_frame(&self, frame: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.end.send(frame, fds).await
    }

    fn blocking_send_frame(&self, frame: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.end.blocking_send(frame, fds)
    }

    /// Sends raw bytes as one message (Python's `send_bytes`).
    ///
    /// # Errors
    /// [`SendError::Closed`] if the other end is closed everywhere,
    /// [`SendError::TooLarge`] over [`MAX_MESSAGE`].
    ///
    /// # Cancel safety
    /// If cancelled after the message started to go out, the rest is written by the
    /// next send on this connection: messages never interleave or arrive cut.
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        let (frame, fds) = encode_bytes(bytes)?;
        self.send_frame(frame, fds).await
    }

    /// Blocking form of [`send_bytes`](Self::send_bytes).
    ///
    /// # Errors
    /// As [`send_bytes`](Self::send_bytes).
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`send_bytes`](Self::send_bytes) there.
    #[track_caller]
    pub fn blocking_send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        crate::blocking::assert_may_block("blocking_send_bytes", "send_bytes");
        let (frame, fds) = encode_bytes(bytes)?;
        self.blocking_send_frame(frame, fds)
    }

    // ---- receiving ----

    async fn recv_frame(&self, max: Option<u64>) -> Result<Frame, RecvError> {
        self.end.recv(max).await
    }

    fn blocking_recv_frame(
        &self,
        max: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<Frame, RecvError> {
        self.end.blocking_recv(max, deadline)
    }

    fn try_recv_frame(&self) -> Result<Frame, RecvError> {
        self.end.try_recv()
    }

    /// Receives the next message as raw bytes (Python's `recv_bytes`).
    ///
    /// # Errors
    /// [`RecvError::Eof`] when the other end is closed everywhere and nothing is left.
    ///
    /// # Cancel safety
    /// Cancel safe: a message partly read stays in this connection for the next call.
    pub async fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        self.recv_frame(None).await.map(|f| f.body)
    }

    /// Blocking form of [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`recv_bytes`](Self::recv_bytes) there.
    #[track_caller]
    pub fn blocking_recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        crate::blocking::assert_may_block("blocking_recv_bytes", "recv_bytes");
        self.blocking_recv_frame(None, None).map(|f| f.body)
    }

    /// Receives the next message as bytes if it is at most `max` bytes long (Python's
    /// `recv_bytes(maxlength)`).
    ///
    /// # Errors
    /// [`RecvError::TooLong`] if it is longer; as in Python the connection is then
    /// closed (every later receive returns [`RecvError::Closed`]).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`recv_bytes`](Self::recv_bytes).
    pub async fn recv_bytes_max(&self, max: usize) -> Result<Vec<u8>, RecvError> {
        self.recv_frame(Some(max as u64)).await.map(|f| f.body)
    }

    /// Blocking form of [`recv_bytes_max`](Self::recv_bytes_max).
    ///
    /// # Errors
    /// As [`recv_bytes_max`](Self::recv_bytes_max).
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`recv_bytes_max`](Self::recv_bytes_max) there.
    #[track_caller]
    pub fn blocking_recv_bytes_max(&self, max: usize) -> Result<Vec<u8>, RecvError> {
        crate::blocking::assert_may_block("blocking_recv_bytes_max", "recv_bytes_max");
        self.blocking_recv_frame(Some(max as u64), None)
            .map(|f| f.body)
    }

    /// Receives the next message into `buf`, returning its length (Python's
    /// `recv_bytes_into`).
    ///
    /// # Errors
    /// [`RecvError::BufferTooShort`] carrying the message when `buf` is too small.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`recv_bytes`](Self::recv_bytes).
    pub async fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        let body = self.recv_frame(None).await?.body;
        copy_into(body, buf)
    }

    /// Blocking form of [`recv_bytes_into`](Self::recv_bytes_into).
    ///
    /// # Errors
    /// As [`recv_bytes_into`](Self::recv_bytes_into).
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`recv_bytes_into`](Self::recv_bytes_into) there.
    #[track_caller]
    pub fn blocking_recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        crate::blocking::assert_may_block("blocking_recv_bytes_into", "recv_bytes_into");
        let body = self.blocking_recv_frame(None, None)?.body;
        copy_into(body, buf)
    }

    /// Waits up to `timeout` for something to receive (a message, or end of stream);
    /// `Ok(false)` if nothing came. `Duration::ZERO` only looks (Python's `poll()`).
    ///
    /// # Errors
    /// An I/O error from the system, or no tokio runtime with I/O enabled.
    ///
    /// # Cancel safety
    /// Cancel safe: it consumes nothing.
    pub async fn poll(&self, timeout: Duration) -> io::Result<bool> {
        self.end.poll(timeout).await
    }

    /// Blocking form of [`poll`](Self::poll); `None` waits without a time limit.
    ///
    /// # Errors
    /// An I/O error from the system.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`poll`](Self::poll) there.
    #[track_caller]
    pub fn blocking_poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
        crate::blocking::assert_may_block("blocking_poll", "poll");
        self.end.blocking_poll(timeout)
    }
}

fn copy_into(body: Vec<u8>, buf: &mut [u8]) -> Result<usize, RecvError> {
    if body.len() > buf.len() {
        return Err(RecvError::BufferTooShort {
            needed: body.len(),
            message: body,
        });
    }
    buf[..body.len()].copy_from_slice(&body);
    Ok(body.len())
}

impl<S: Serialize + 'static, R> Connection<S, R> {
    /// Sends a value (Python's `send`). Handles inside it (pipe ends, queues) go with
    /// it.
    ///
    /// # Errors
    /// [`SendError::Closed`] if the other end is closed everywhere,
    /// [`SendError::Encode`] if the value does not serialise,
    /// [`SendError::TooLarge`] over [`MAX_MESSAGE`].
    ///
    /// # Cancel safety
    /// If cancelled after the message started to go out, the rest is written by the
    /// next send on this connection: messages never interleave or arrive cut.
    pub async fn send(&self, value: &S) -> Result<(), SendError> {
        let (frame, fds) = encode(value)?;
        self.send_frame(frame, fds).await
    }

    /// Blocking form of [`send`](Self::send).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`send`](Self::send) there.
    #[track_caller]
    pub fn blocking_send(&self, value: &S) -> Result<(), SendError> {
        crate::blocking::assert_may_block("blocking_send", "send");
        let (frame, fds) = encode(value)?;
        self.blocking_send_frame(frame, fds)
    }
}

impl<S, R: DeserializeOwned + 'static> Connection<S, R> {
    /// Receives the next value (Python's `recv`).
    ///
    /// # Errors
    /// [`RecvError::Eof`] when the other end is closed everywhere and every message
    /// sent has been received; [`RecvError::Decode`] if the message is not an `R`.
    ///
    /// # Cancel safety
    /// Cancel safe: a message partly read stays in this connection for the next call.
    pub async fn recv(&self) -> Result<R, RecvError> {
        decode(self.recv_frame(None).await?)
    }

    /// Blocking form of [`recv`](Self::recv).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`recv`](Self::recv) there.
    #[track_caller]
    pub fn blocking_recv(&self) -> Result<R, RecvError> {
        crate::blocking::assert_may_block("blocking_recv", "recv");
        decode(self.blocking_recv_frame(None, None)?)
    }

    /// Receives a value if a whole message is already waiting.
    ///
    /// # Errors
    /// [`RecvError::Empty`] if none is (or another task of this process is receiving
    /// on this connection right now), else as [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<R, RecvError> {
        decode(self.try_recv_frame()?)
    }

    /// [`recv`](Self::recv) with a time limit.
    ///
    /// # Errors
    /// [`RecvError::Timeout`] if no whole message came in time (nothing is lost: a
    /// message partly read stays for the next call); else as [`recv`](Self::recv).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`recv`](Self::recv).
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<R, RecvError> {
        match tokio::time::timeout(timeout, self.recv_frame(None)).await {
            Ok(frame) => decode(frame?),
            Err(_) => Err(RecvError::Timeout),
        }
    }

    /// Blocking form of [`recv_timeout`](Self::recv_timeout).
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`recv_timeout`](Self::recv_timeout) there.
    #[track_caller]
    pub fn blocking_recv_timeout(&self, timeout: Duration) -> Result<R, RecvError> {
        crate::blocking::assert_may_block("blocking_recv_timeout", "recv_timeout");
        decode(self.blocking_recv_frame(None, Some(Instant::now() + timeout))?)
    }
}

impl<S, R> AsRawFd for Connection<S, R> {
    /// The socket's descriptor in this process. Do not read or write it directly, or
    /// messages get cut. Readability alone does not announce messages: those in the
    /// ring never touch the socket. Wait with [`poll`](Connection::poll) or
    /// [`connection::wait`](crate::connection::wait), which make senders wake the
    /// socket while they wait.
    fn as_raw_fd(&self) -> RawFd {
        self.end.fd.as_raw_fd()
    }
}

impl<S, R> fmt::Debug for Connection<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.end.fd.as_raw_fd())
            .field("sends", &type_name::<S>())
            .field("receives", &type_name::<R>())
            .finish()
    }
}

impl<S, R> Handle for Connection<S, R> {
    const KIND: &'static str = "Connection";
    type Params = (S, R);
    type Parts<'a>
        = (SendFd<'a>, Option<(SendFd<'a>, u8)>)
    where
        Self: 'a;
    type Received = (RecvFd, Option<(RecvFd, u8)>);

    fn parts(&self) -> Self::Parts<'_> {
        let ring = self
            .end
            .ring
            .as_ref()
            .map(|r| (SendFd(r.memfd()), r.side()));
        (SendFd(self.end.fd.as_fd()), ring)
    }

    fn assemble((RecvFd(fd), ring): Self::Received) -> Result<Self, String> {
        let ring = ring
            .map(|(RecvFd(memfd), side)| PipeRing::open(memfd, side))
            .transpose()
            .map_err(|e| format!("the pipe's ring: {e}"))?;
        Ok(Connection::with_ring(fd, ring))
    }
}

handle_serde!(Connection<S, R>);
