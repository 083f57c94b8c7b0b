//! Frames over a unix stream socket, with descriptors beside them.
//!
//! [`FrameReader`] and [`FrameWriter`] keep their progress in themselves, not in a
//! future: a read or write that stops half-way (`WouldBlock`, or an async caller that
//! was cancelled) resumes exactly where it was on the next call. That makes the async
//! paths built on them cancel safe, and lets one implementation serve blocking
//! sockets (a worker), non-blocking ones polled by tokio (the parent) and shared ones
//! used both ways (a pipe end held by several processes).
//!
//! Descriptors ride on the frame's first byte (`sendmsg` with `SCM_RIGHTS`). The
//! receiver queues every descriptor as it arrives; since they arrive no later than the
//! first byte of their frame, a complete frame takes the first `nfds` of the queue.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use super::{Header, ReadError, HEADER_LEN};
use crate::error::ProtocolError;
use crate::sys::sock;

/// Bytes read ahead in one `recvmsg` for small frames.
const READ_AHEAD: usize = 64 * 1024;

/// How frames are delimited on a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// procpool's own 32-byte header (see [`super`]), with descriptors beside it.
    Procpool,
    /// Python's `multiprocessing.connection`: a big-endian signed 32-bit length, or
    /// `-1` and a big-endian 64-bit length for a message over 2 GiB; then the bytes.
    /// Every frame is a [`Kind::Message`](super::Kind::Message) without descriptors.
    Python,
}

impl Framing {
    /// The header at the start of `avail` and its length, once enough of it is there.
    fn parse(self, avail: &[u8], limit: u64) -> Result<Option<(Header, usize)>, ProtocolError> {
        match self {
            Framing::Procpool => {
                let Some(raw) = avail.get(..HEADER_LEN) else {
                    return Ok(None);
                };
                let raw: &[u8; HEADER_LEN] = raw.try_into().expect("32 bytes");
                Header::parse(raw, limit).map(|h| Some((h, HEADER_LEN)))
            }
            Framing::Python => {
                let Some(short) = avail.get(..4) else {
                    return Ok(None);
                };
                let short = i32::from_be_bytes(short.try_into().expect("4 bytes"));
                let (len, header_len) = match short {
                    0.. => (short as u64, 4),
                    -1 => match avail.get(4..12) {
                        Some(long) => (u64::from_be_bytes(long.try_into().expect("8 bytes")), 12),
                        None => return Ok(None),
                    },
                    _ => {
                        return Err(ProtocolError::Malformed {
                            reason: format!("a message length of {short}"),
                        })
                    }
                };
                if len > limit {
                    return Err(ProtocolError::FrameTooLarge { len, limit });
                }
                Ok(Some((super::Header::message(len), header_len)))
            }
        }
    }
}

/// A received frame: header, body and the descriptors it carried.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) header: Header,
    pub(crate) body: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Reads frames from a socket, one `recvmsg` at a time.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Read-ahead bytes; `buf[pos..]` are not consumed yet.
    buf: Vec<u8>,
    pos: usize,
    /// A frame whose header is parsed and whose body is being read straight into
    /// its own buffer.
    partial: Option<(Header, Vec<u8>)>,
    /// Descriptors received and not yet given to a frame.
    fds: VecDeque<OwnedFd>,
    limit: u64,
    framing: Framing,
    /// Reads no byte past the frame it is reading (see [`exact`](Self::exact)).
    exact: bool,
}

impl FrameReader {
    /// A reader of procpool frames with bodies up to `limit` bytes.
    pub(crate) fn new(limit: u64) -> FrameReader {
        FrameReader::with_framing(limit, Framing::Procpool)
    }

    /// A reader of frames delimited as `framing` says, bodies up to `limit` bytes.
    pub(crate) fn with_framing(limit: u64, framing: Framing) -> FrameReader {
        FrameReader {
            buf: Vec::with_capacity(READ_AHEAD),
            pos: 0,
            partial: None,
            fds: VecDeque::new(),
            limit,
            framing,
            exact: false,
        }
    }

    /// A reader of procpool frames that never reads past the frame it is reading: a
    /// header, then exactly its body. What it has not read stays in the socket for
    /// whichever process reads the end next (a pipe end handed on), at the cost of
    /// two system calls a frame instead of one for several.
    pub(crate) fn exact(limit: u64) -> FrameReader {
        FrameReader {
            buf: Vec::with_capacity(HEADER_LEN),
            pos: 0,
            partial: None,
            fds: VecDeque::new(),
            limit,
            framing: Framing::Procpool,
            exact: true,
        }
    }

    /// Bytes this reader holds allocated (its read-ahead buffer and a body being
    /// read), for tests that check a peer cannot make it allocate past its limit.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity() + self.partial.as_ref().map_or(0, |(_, b)| b.capacity())
    }

    /// Changes the body size limit for frames not yet started.
    pub(crate) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Whether a complete frame is already buffered (no system call needed).
    pub(crate) fn has_frame(&self) -> bool {
        match &self.partial {
            Some((h, body)) => body.len() as u64 == h.len,
            None => {
                let avail = &self.buf[self.pos..];
                match self.framing.parse(avail, u64::MAX) {
                    Ok(Some((h, header_len))) => (avail.len() - header_len) as u64 >= h.len,
                    Ok(None) => false,
                    // Reading it reports the error.
                    Err(_) => true,
                }
            }
        }
    }

    /// Whether part of a frame has been read (EOF now would cut a frame).
    pub(crate) fn mid_frame(&self) -> bool {
        self.partial.is_some() || self.pos < self.buf.len()
    }

    /// Reads the next frame. With `nonblocking`, returns `ReadError::Io(WouldBlock)`
    /// when the socket has nothing more yet; the progress made is kept.
    ///
    /// # Errors
    /// `Eof` at end of stream (a frame cut short by it is dropped whole: a message is
    /// delivered complete or not at all), `Protocol` for a frame we do not accept.
    pub(crate) fn read(
        &mut self,
        sock: BorrowedFd<'_>,
        nonblocking: bool,
    ) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            let n = match &mut self.partial {
                Some((h, body)) => {
                    let want = (h.len as usize) - body.len();
                    sock::recv_spare(sock, body, want, &mut self.fds, nonblocking)
                }
                None => {
                    if self.pos == self.buf.len() {
                        self.buf.clear();
                        self.pos = 0;
                    } else if self.buf.capacity() - self.buf.len() < HEADER_LEN {
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                    }
                    let room = if self.exact {
                        // Only what completes the header: the body gets its own buffer.
                        HEADER_LEN - (self.buf.len() - self.pos)
                    } else {
                        self.buf.capacity() - self.buf.len()
                    };
                    sock::recv_spare(sock, &mut self.buf, room, &mut self.fds, nonblocking)
                }
            };
            match n {
                Ok(0) => {
                    if self.mid_frame() {
                        self.partial = None;
                        self.buf.clear();
                        self.pos = 0;
                    }
                    return Err(ReadError::Eof);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(ReadError::Protocol(ProtocolError::Malformed {
                        reason: e.to_string(),
                    }))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Completes a frame from buffered bytes, if there is one.
    fn take_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        if let Some((h, body)) = &self.partial {
            if body.len() as u64 != h.len {
                return Ok(None);
            }
            let (header, body) = self.partial.take().expect("checked");
            return self.with_fds(header, body).map(Some);
        }
        let avail = &self.buf[self.pos..];
        let Some((header, header_len)) = self
            .framing
            .parse(avail, self.limit)
            .map_err(ReadError::Protocol)?
        else {
            return Ok(None);
        };
        let len = header.len as usize;
        let have = avail.len() - header_len;
        if have >= len {
            let body = avail[header_len..header_len + len].to_vec();
            self.pos += header_len + len;
            return self.with_fds(header, body).map(Some);
        }
        // A body longer than what is buffered: give it its own buffer and read the
        // rest straight into it.
        let mut body = Vec::new();
        body.try_reserve_exact(len).map_err(|_| {
            ReadError::Io(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes for a message"),
            ))
        })?;
        body.extend_from_slice(&avail[header_len..]);
        self.pos = self.buf.len();
        self.partial = Some((header, body));
        Ok(None)
    }

    fn with_fds(&mut self, header: Header, body: Vec<u8>) -> Result<Frame, ReadError> {
        let n = header.nfds as usize;
        if self.fds.len() < n {
            return Err(ReadError::Protocol(ProtocolError::Malformed {
                reason: format!(
                    "a frame announced {n} descriptors but {} arrived",
                    self.fds.len()
                ),
            }));
        }
        let fds = self.fds.drain(..n).collect();
        Ok(Frame { header, body, fds })
    }

    /// Reads the next frame, waiting for readiness through tokio.
    ///
    /// # Cancel safety
    /// Cancel safe: progress lives in the reader, and a later call resumes it.
    pub(crate) async fn read_async(&mut self, sock: &AsyncFd<OwnedFd>) -> Result<Frame, ReadError> {
        loop {
            if self.has_frame() {
                return self.read(sock.get_ref().as_fd(), true);
            }
            let mut guard = sock.readable().await.map_err(ReadError::Io)?;
            match self.read(sock.get_ref().as_fd(), true) {
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                }
                other => return other,
            }
        }
    }
}

/// Writes frames to a socket; a frame started is always finished before the next.
#[derive(Debug, Default)]
pub(crate) struct FrameWriter {
    /// The frame being written, how much of it is out, and its descriptors (sent with
    /// the first byte, then dropped).
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    frame: Vec<u8>,
    /// More body after `frame`, sent from where it is (see [`super::value`]).
    tail: Vec<u8>,
    written: usize,
    fds: Vec<OwnedFd>,
}

impl FrameWriter {
    /// A writer with nothing pending.
    pub(crate) fn new() -> FrameWriter {
        FrameWriter { pending: None }
    }

    /// Queues a whole frame (header from [`super::finish`]) with `fds`. The header's
    /// descriptor count is set here, from `fds`. Call [`flush`](Self::flush) (or the
    /// async/blocking forms) to write it.
    ///
    /// # Panics
    /// If a frame is still pending, or `fds` is longer than one message may carry
    /// (callers check [`super::handles::MAX_FDS`] when encoding).
    pub(crate) fn start(&mut self, frame: Vec<u8>, fds: Vec<OwnedFd>) {
        self.start_with_tail(frame, Vec::new(), fds);
    }

    /// [`start`](Self::start) for a frame whose body goes on in `tail`: the header's
    /// length is set to cover both, and both go out together without being copied
    /// into one buffer.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub(crate) fn start_with_tail(&mut self, mut frame: Vec<u8>, tail: Vec<u8>, fds: Vec<OwnedFd>) {
        assert!(self.pending.is_none(), "a frame is still being written");
        assert!(
            fds.len() <= sock::MAX_FDS_PER_MESSAGE,
            "too many descriptors"
        );
        super::set_extent(&mut frame, tail.len(), fds.len());
        self.pending = Some(Pending {
            frame,
            tail,
            written: 0,
            fds,
        });
    }

    /// [`start`](Self::start) for a frame built with procpool's header (its body after
    /// [`HEADER_LEN`] bytes) that goes out delimited as `framing` says. For Python's
    /// framing, its header is written at the end of the room procpool's took, and the
    /// bytes before it are never sent: no copy.
    ///
    /// # Panics
    /// As [`start`](Self::start), and for descriptors with Python's framing (which
    /// cannot carry them; callers refuse them first).
    pub(crate) fn start_framed(&mut self, mut frame: Vec<u8>, fds: Vec<OwnedFd>, framing: Framing) {
        if framing == Framing::Procpool {
            return self.start(frame, fds);
        }
        assert!(fds.is_empty(), "Python's framing carries no descriptors");
        assert!(self.pending.is_none(), "a frame is still being written");
        let len = (frame.len() - HEADER_LEN) as u64;
        let header_len = match i32::try_from(len) {
            Ok(n) => {
                frame[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&n.to_be_bytes());
                4
            }
            Err(_) => {
                frame[HEADER_LEN - 12..HEADER_LEN - 8].copy_from_slice(&(-1i32).to_be_bytes());
                frame[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
                12
            }
        };
        self.pending = Some(Pending {
            frame,
            tail: Vec::new(),
            written: HEADER_LEN - header_len,
            fds,
        });
    }

    /// Writes what is pending. `Ok(Some(frame))` once done (the buffer back, for
    /// reuse); `WouldBlock` with `nonblocking` when the socket is full.
    pub(crate) fn flush(&mut self, sock: BorrowedFd<'_>, nonblocking: bool) -> io::Result<Vec<u8>> {
        let Some(p) = self.pending.as_mut() else {
            return Ok(Vec::new());
        };
        while p.written < p.frame.len() + p.tail.len() {
            let fds: Vec<BorrowedFd<'_>> = p.fds.iter().map(AsFd::as_fd).collect();
            let parts = match p.frame.get(p.written..) {
                Some(head) if !head.is_empty() => [head, &p.tail[..]],
                _ => [&p.tail[p.written - p.frame.len()..], &[][..]],
            };
            let parts = if parts[1].is_empty() {
                &parts[..1]
            } else {
                &parts[..]
            };
            match sock::send_vectored(sock, parts, &fds, nonblocking) {
                Ok(n) => {
                    p.written += n;
                    if n > 0 {
                        // They went with the first byte; our copies can close.
                        p.fds.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => {
                    if p.written == 0 {
                        // Nothing went out (say, descriptors over TCP): the stream is
                        // intact, so drop this frame and let the next one go.
                        self.pending = None;
                    }
                    return Err(e);
                }
            }
        }
        Ok(self.pending.take().expect("checked").frame)
    }

    /// Writes what is pending, waiting for writability through tokio.
    ///
    /// # Cancel safety
    /// Cancel safe: what was written stays written, and the rest is written by the
    /// next call; frames never interleave.
    pub(crate) async fn flush_async(&mut self, sock: &AsyncFd<OwnedFd>) -> io::Result<Vec<u8>> {
        loop {
            let mut guard = sock.writable().await?;
            match self.flush(sock.get_ref().as_fd(), true) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                other => return other,
            }
        }
    }

    /// Writes what is pending on a socket shared with other processes, blocking this
    /// thread while it is full.
    pub(crate) fn flush_blocking(&mut self, sock: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        loop {
            // A blocking send is the cheapest wait; `poll` covers a socket someone
            // else made non-blocking.
            match self.flush(sock, false) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sock::poll(sock, sock::Wait::Writable, None)?;
                }
                other => return other,
            }
        }
    }
}
