//! Pipes between processes: Python's `multiprocessing.Pipe`, typed and async.
//!
//! [`pipe`] makes a connected pair of [`Connection`]s (a unix socketpair). Either end
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
//! # End of stream
//! [`recv`](Connection::recv) returns [`RecvError::Eof`] once every copy of the other
//! end, in every process, has been dropped and the messages already sent have been
//! received — the seeds' `EOFError`. So drop (or [`close`](Connection::close)) the
//! ends a process does not use, as in Python. Sending to an end nobody holds any more
//! is [`SendError::Closed`]; it never raises `SIGPIPE`.
//!
//! # Sharing
//! Within a process, a connection is used through `&self`: one task may send while
//! another receives (wrap it in an `Arc`). Messages from concurrent senders never
//! interleave in this process. Across processes, as with Python's pipes, two processes
//! sending on (or receiving from) the *same* end at the same time may interleave
//! large messages; give each process its own pipe, or use a [`Queue`](crate::Queue),
//! which is built for many producers and consumers.
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
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Mutex;

use crate::error::{CodecError, ProtocolError};
use crate::pacing::Average;
use crate::sys;
use crate::wire::handles::{self, handle_serde, Handle, RecvFd, SendFd};
use crate::wire::stream::{Frame, FrameReader, FrameWriter, Framing};
use crate::wire::{self, Kind, ReadError, HEADER_LEN};

mod error;
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
    Ok((Connection::from_fd(a), Connection::from_fd(b)))
}

/// The state of one end, shared by the clones of its handle in this process.
struct End {
    fd: OwnedFd,
    /// Descriptors can travel: a unix socket with procpool's framing.
    local: bool,
    framing: Framing,
    /// A duplicate registered with tokio on first async use (a connection made in
    /// blocking code never needs a runtime).
    async_fd: OnceLock<AsyncFd<OwnedFd>>,
    reader: Mutex<ReadState>,
    writer: Mutex<FrameWriter>,
}

struct ReadState {
    frames: FrameReader,
    /// Set after an error that leaves the stream position unknown.
    broken: bool,
    /// How long async receives have lately waited (see [`RecvPace`]).
    pace: RecvPace,
}

/// How long an async receive polls before it sleeps on the reactor.
///
/// A reactor wake-up costs tens of microseconds on a busy or virtualised machine (the
/// pipe's far end writes, the kernel wakes tokio's driver, which wakes this task, maybe
/// on another thread). While messages have lately come within [`RecvPace::SPIN_MAX`]
/// of asking (a request and its answer), a receive polls the socket for up to twice
/// that, yielding to the runtime between polls, and only then registers. A receive
/// that waited longer turns the polling off until answers come quickly again: an idle
/// connection never spins.
#[derive(Debug, Default)]
struct RecvPace {
    /// How long a receive waited.
    waited: Average,
}

impl RecvPace {
    const SPIN_MAX: Duration = Duration::from_micros(100);

    fn spin(&self) -> Duration {
        self.waited.spin(Self::SPIN_MAX)
    }

    fn waited(&mut self, took: Duration) {
        self.waited.record(took);
    }
}

impl End {
    fn new(fd: OwnedFd, framing: Framing) -> End {
        End {
            local: framing == Framing::Procpool && sys::sock::is_unix(fd.as_fd()),
            framing,
            fd,
            async_fd: OnceLock::new(),
            reader: Mutex::new(ReadState {
                frames: FrameReader::with_framing(MAX_MESSAGE, framing),
                broken: false,
                pace: RecvPace::default(),
            }),
            writer: Mutex::new(FrameWriter::new()),
        }
    }

    fn async_fd(&self) -> io::Result<&AsyncFd<OwnedFd>> {
        if let Some(a) = self.async_fd.get() {
            return Ok(a);
        }
        let dup = sys::sock::dup(self.fd.as_fd())?;
        let registered = sys::proc::async_fd(dup, Interest::READABLE | Interest::WRITABLE)?;
        // Another task may have won the race; its registration is as good as ours.
        let _ = self.async_fd.set(registered);
        Ok(self.async_fd.get().expect("set above"))
    }
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
    let (r, fds) = handles::collecting(|| postcard::to_io(value, &mut frame));
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

/// How long until `deadline`, or `None` when it has passed.
fn remaining(deadline: Option<Instant>) -> Option<Option<Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => d.checked_duration_since(Instant::now()).map(Some),
    }
}

impl<S, R> Connection<S, R> {
    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        Connection {
            end: Arc::new(End::new(fd, Framing::Procpool)),
            _types: PhantomData,
        }
    }

    /// A connection over `fd` that frames its messages as Python's
    /// `multiprocessing.connection.Connection` does (see [`crate::connection`]).
    /// Handles cannot travel over it.
    pub(crate) fn from_fd_python(fd: OwnedFd) -> Self {
        Connection {
            end: Arc::new(End::new(fd, Framing::Python)),
            _types: PhantomData,
        }
    }

    /// The socket, for [`connection::wait`](crate::connection::wait) to poll.
    pub(crate) fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        self.end.fd.as_fd()
    }

    /// Whether a whole message is already read ahead, so a receive would not wait
    /// (false while another receive holds the reader).
    pub(crate) fn has_buffered_message(&self) -> bool {
        self.end
            .reader
            .try_lock()
            .is_ok_and(|r| !r.broken && r.frames.has_frame())
    }

    /// Closes this handle (the same as dropping it). The other end sees end of stream
    /// once every copy of this end, in every process, is closed.
    ///
    /// A message whose sending was cancelled half-way is abandoned: the receiver never
    /// sees any of it (it sees end of stream instead).
    pub fn close(self) {}

    // ---- sending ----

    fn check_fds(&self, fds: &[OwnedFd]) -> Result<(), SendError> {
        if !fds.is_empty() && !self.end.local {
            return Err(SendError::HandlesNeedUnixSocket);
        }
        Ok(())
    }

    async fn send_frame(&self, frame: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.check_fds(&fds)?;
        let mut w = self.end.writer.lock().await;
        let sock = self.end.async_fd()?;
        // Finish a message an earlier, cancelled send started.
        w.flush_async(sock).await?;
        w.start_framed(frame, fds, self.end.framing);
        w.flush_async(sock).await?;
        Ok(())
    }

    fn blocking_send_frame(&self, frame: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.check_fds(&fds)?;
        let mut w = self.end.writer.blocking_lock();
        w.flush_blocking(self.end.fd.as_fd())?;
        w.start_framed(frame, fds, self.end.framing);
        w.flush_blocking(self.end.fd.as_fd())?;
        Ok(())
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
        let mut r = self.end.reader.lock().await;
        if r.broken {
            return Err(RecvError::Closed);
        }
        let sock = self.end.async_fd().map_err(RecvError::Io)?;
        if let Some(max) = max {
            r.frames.set_limit(max.min(MAX_MESSAGE));
        }
        let asked = Instant::now();
        let spin = r.pace.spin();
        if !spin.is_zero() && !r.frames.has_frame() {
            loop {
                match r.frames.read(self.end.fd.as_fd(), true) {
                    Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    result => {
                        r.pace.waited(asked.elapsed());
                        return Self::after_read(&mut r, result, max);
                    }
                }
                if asked.elapsed() >= spin {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        let result = r.frames.read_async(sock).await;
        r.pace.waited(asked.elapsed());
        Self::after_read(&mut r, result, max)
    }

    fn blocking_recv_frame(
        &self,
        max: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<Frame, RecvError> {
        let mut r = self.end.reader.blocking_lock();
        if r.broken {
            return Err(RecvError::Closed);
        }
        if let Some(max) = max {
            r.frames.set_limit(max.min(MAX_MESSAGE));
        }
        let sock = self.end.fd.as_fd();
        // Without a deadline, a plain blocking receive is the cheapest wait (procpool
        // never sets O_NONBLOCK on a shared socket; if someone else did, the poll
        // below takes over).
        let nonblocking = deadline.is_some();
        loop {
            match r.frames.read(sock, nonblocking) {
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    let Some(wait) = remaining(deadline) else {
                        return Err(RecvError::Timeout);
                    };
                    sys::sock::poll(sock, sys::sock::Wait::Readable, wait)
                        .map_err(RecvError::Io)?;
                }
                result => return Self::after_read(&mut r, result, max),
            }
        }
    }

    fn after_read(
        r: &mut ReadState,
        result: Result<Frame, ReadError>,
        max: Option<u64>,
    ) -> Result<Frame, RecvError> {
        if max.is_some() {
            r.frames.set_limit(MAX_MESSAGE);
        }
        match result {
            Ok(f) => Ok(f),
            Err(ReadError::Eof) => Err(RecvError::Eof),
            Err(ReadError::Io(e)) => Err(RecvError::Io(e)),
            Err(ReadError::Protocol(e)) => {
                r.broken = true;
                match (e, max) {
                    (ProtocolError::FrameTooLarge { len, .. }, Some(max)) if len <= MAX_MESSAGE => {
                        Err(RecvError::TooLong { len, max })
                    }
                    (e, _) => Err(RecvError::Protocol(e)),
                }
            }
        }
    }

    fn try_recv_frame(&self) -> Result<Frame, RecvError> {
        let Ok(mut r) = self.end.reader.try_lock() else {
            // Another task is receiving right now.
            return Err(RecvError::Empty);
        };
        if r.broken {
            return Err(RecvError::Closed);
        }
        match r.frames.read(self.end.fd.as_fd(), true) {
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Err(RecvError::Empty),
            result => Self::after_read(&mut r, result, None),
        }
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
        let sock = self.end.async_fd()?;
        let check = || -> io::Result<bool> {
            if let Ok(r) = self.end.reader.try_lock() {
                if r.frames.has_frame() {
                    return Ok(true);
                }
            }
            sys::sock::poll(
                self.end.fd.as_fd(),
                sys::sock::Wait::Readable,
                Some(Duration::ZERO),
            )
        };
        let wait = async {
            loop {
                let mut guard = sock.readable().await?;
                // Clear first, check second: a message that lands in between sets
                // readiness again, so no wake-up is lost.
                guard.clear_ready();
                if check()? {
                    return Ok::<bool, io::Error>(true);
                }
            }
        };
        if check()? {
            return Ok(true);
        }
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Ok(false),
        }
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
        if let Ok(r) = self.end.reader.try_lock() {
            if r.frames.has_frame() {
                return Ok(true);
            }
        }
        sys::sock::poll(self.end.fd.as_fd(), sys::sock::Wait::Readable, timeout)
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
    /// The socket's descriptor in this process (for `select`-style integration; do not
    /// read or write it directly, or messages get cut).
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
        = SendFd<'a>
    where
        Self: 'a;
    type Received = RecvFd;

    fn parts(&self) -> SendFd<'_> {
        SendFd(self.end.fd.as_fd())
    }

    fn assemble(RecvFd(fd): RecvFd) -> Result<Self, String> {
        Ok(Connection::from_fd(fd))
    }
}

handle_serde!(Connection<S, R>);
