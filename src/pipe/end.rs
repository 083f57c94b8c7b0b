//! One end of a pipe in this process: its socket, its ring (if the pipe has one), and
//! how a message goes out and comes in through them.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Mutex;

use super::error::{RecvError, SendError};
use super::ring::{PipeRing, Sent, WhenFull};
use super::MAX_MESSAGE;
use crate::blocking::remaining;
use crate::error::ProtocolError;
use crate::pacing::Average;
use crate::sys;
use crate::wire::stream::{Frame, FrameReader, FrameWriter, Framing};
use crate::wire::{self, Kind, ReadError};

/// The state of one end, shared by the clones of its handle in this process.
pub(super) struct End {
    pub(super) fd: OwnedFd,
    /// Descriptors can travel: a unix socket with procpool's framing.
    pub(super) local: bool,
    framing: Framing,
    /// The pipe's shared-memory ring, for pipes made by this crate's constructors.
    pub(super) ring: Option<PipeRing>,
    /// A duplicate registered with tokio on first async use (a connection made in
    /// blocking code never needs a runtime).
    async_fd: OnceLock<AsyncFd<OwnedFd>>,
    reader: Mutex<ReadState>,
    writer: Mutex<WriteState>,
}

struct WriteState {
    frames: FrameWriter,
    /// The receivers' progress through the ring when this end last knew them alive.
    peer_progress: u64,
}

pub(super) struct ReadState {
    frames: FrameReader,
    /// Set after an error that leaves the stream position unknown.
    broken: bool,
    /// How long receives have lately waited (see [`RecvPace`]).
    pace: RecvPace,
    /// The socket reached its end (every copy of the other end is closed).
    eof: bool,
}

/// How long a receive polls before it sleeps.
///
/// A wake-up through the kernel costs tens of microseconds on a busy or virtualised
/// machine (the far end writes, the kernel wakes tokio's driver, which wakes this task,
/// maybe on another thread). While messages have lately come within
/// [`RecvPace::SPIN_MAX`] of asking (a request and its answer), a receive polls for up
/// to twice that, yielding between polls, and only then sleeps. A receive that waited
/// longer turns the polling off until answers come quickly again: an idle connection
/// never spins. With one CPU, polling would only keep the sender off it: none.
#[derive(Debug, Default)]
struct RecvPace {
    /// How long a receive waited.
    waited: Average,
}

impl RecvPace {
    const SPIN_MAX: Duration = Duration::from_micros(100);

    fn spin(&self) -> Duration {
        if crate::cpu_count() < 2 {
            return Duration::ZERO;
        }
        self.waited.spin(Self::SPIN_MAX)
    }

    fn waited(&mut self, took: Duration) {
        self.waited.record(took);
    }
}

/// How long a sender whose ring is full yields, waiting for a receiver to free a
/// slot, before it sends on the socket.
const ROOM_SPIN: Duration = Duration::from_micros(100);

/// One look for a message, without waiting.
enum Step {
    /// A message, end of stream or an error.
    Done(Result<Frame, ReadError>),
    /// Nothing yet.
    Nothing,
    /// Part of a socket frame is in: only the socket can finish it.
    MidFrame,
}

/// The frame that wakes a receiver that fell asleep as a message went into the ring.
fn nudge() -> Vec<u8> {
    let mut frame = Vec::with_capacity(wire::HEADER_LEN);
    wire::begin(&mut frame);
    wire::finish(&mut frame, Kind::Nudge, 0, 0, 0);
    frame
}

impl End {
    pub(super) fn new(fd: OwnedFd, framing: Framing, ring: Option<PipeRing>) -> End {
        let ring = ring.filter(|_| framing == Framing::Procpool);
        let peer_progress = ring.as_ref().map_or(0, PipeRing::peer_progress);
        // With a ring, nothing is read ahead of the message being received: the end
        // may be handed to another process, which must find the rest.
        let frames = if ring.is_some() {
            FrameReader::exact(MAX_MESSAGE)
        } else {
            FrameReader::with_framing(MAX_MESSAGE, framing)
        };
        End {
            local: framing == Framing::Procpool && sys::sock::is_unix(fd.as_fd()),
            framing,
            ring,
            fd,
            async_fd: OnceLock::new(),
            reader: Mutex::new(ReadState {
                frames,
                broken: false,
                pace: RecvPace::default(),
                eof: false,
            }),
            writer: Mutex::new(WriteState {
                frames: FrameWriter::new(),
                peer_progress,
            }),
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

    // ---- sending ----

    fn check_fds(&self, fds: &[OwnedFd]) -> Result<(), SendError> {
        if !fds.is_empty() && !self.local {
            return Err(SendError::HandlesNeedUnixSocket);
        }
        Ok(())
    }

    /// Whether the ring's receivers may be gone: none took a message since this end
    /// last knew, and the socket says that every copy of the other end is closed.
    /// A slot, unlike the socket, cannot tell.
    fn receivers_gone(&self, w: &mut WriteState, ring: &PipeRing) -> io::Result<bool> {
        let progress = ring.peer_progress();
        if progress != w.peer_progress {
            w.peer_progress = progress;
            return Ok(false);
        }
        sys::sock::hung_up(self.fd.as_fd())
    }

    /// Puts `frame` in the ring if it goes there. Called with the writer's lock,
    /// nothing left to flush.
    fn try_ring(
        &self,
        w: &mut WriteState,
        ring: &PipeRing,
        frame: &mut [u8],
        nfds: usize,
        full: WhenFull,
    ) -> Result<Sent, SendError> {
        let sent = ring.send(frame, nfds, full)?;
        if sent == (Sent::Ring { nudge: true }) {
            // Without waiting: a socket too full to take it has bytes for the
            // receiver to read, which wake it as well; what is left of the nudge
            // goes out before the next message.
            w.frames.start(nudge(), Vec::new());
            match w.frames.flush(self.fd.as_fd(), true) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e.into()),
                _ => {}
            }
        }
        Ok(sent)
    }

    /// One try at the ring for a send that began at `began`; [`Sent::Full`]: yield
    /// and try again. A full ring gets room soon from a receiver that is awake, so a
    /// sender yields for [`ROOM_SPIN`], then takes the socket, whose buffer holds far
    /// more than the ring (a sender that waited for the ring alone would wedge two
    /// processes that each send a few hundred messages before receiving).
    fn ring_attempt(
        &self,
        w: &mut WriteState,
        ring: &PipeRing,
        frame: &mut [u8],
        nfds: usize,
        began: Instant,
    ) -> Result<Sent, SendError> {
        let full = if began.elapsed() < ROOM_SPIN {
            WhenFull::Report
        } else {
            WhenFull::Socket
        };
        self.try_ring(w, ring, frame, nfds, full)
    }

    pub(super) async fn send(
        &self,
        mut frame: Vec<u8>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        self.check_fds(&fds)?;
        let mut w = self.writer.lock().await;
        let sock = self.async_fd()?;
        // Finish a message an earlier, cancelled send started.
        w.frames.flush_async(sock).await?;
        if let Some(ring) = &self.ring {
            if self.receivers_gone(&mut w, ring)? {
                return Err(SendError::Closed);
            }
            let began = Instant::now();
            loop {
                match self.ring_attempt(&mut w, ring, &mut frame, fds.len(), began)? {
                    Sent::Ring { .. } => return Ok(()),
                    Sent::Socket => break,
                    Sent::Full => tokio::task::yield_now().await,
                }
            }
        }
        w.frames.start_framed(frame, fds, self.framing);
        w.frames.flush_async(sock).await?;
        Ok(())
    }

    pub(super) fn blocking_send(
        &self,
        mut frame: Vec<u8>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        self.check_fds(&fds)?;
        let mut w = self.writer.blocking_lock();
        w.frames.flush_blocking(self.fd.as_fd())?;
        if let Some(ring) = &self.ring {
            if self.receivers_gone(&mut w, ring)? {
                return Err(SendError::Closed);
            }
            let began = Instant::now();
            loop {
                match self.ring_attempt(&mut w, ring, &mut frame, fds.len(), began)? {
                    Sent::Ring { .. } => return Ok(()),
                    Sent::Socket => break,
                    Sent::Full => std::thread::yield_now(),
                }
            }
        }
        w.frames.start_framed(frame, fds, self.framing);
        w.frames.flush_blocking(self.fd.as_fd())?;
        Ok(())
    }

    // ---- receiving ----

    /// Finishes reading the socket frame begun, without waiting: a message, or `None`
    /// after a nudge (dropped) or when more bytes are still to come.
    fn finish_socket_frame(
        &self,
        r: &mut ReadState,
        ring: &PipeRing,
    ) -> Result<Option<Frame>, ReadError> {
        match r.frames.read(self.fd.as_fd(), true) {
            Ok(f) if f.header.kind == Kind::Nudge => Ok(None),
            Ok(f) if f.header.kind == Kind::Message => {
                ring.took_from_socket();
                Ok(Some(f))
            }
            Ok(f) => Err(ReadError::Protocol(ProtocolError::Unexpected {
                what: format!("a {:?} frame on a pipe", f.header.kind),
            })),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(ReadError::Eof) => {
                r.eof = true;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The header of the next frame on the socket, looked at without taking it;
    /// `None` if no whole header is there (or at the end, which sets `r.eof`).
    fn peek_socket(&self, r: &mut ReadState) -> Result<Option<wire::Header>, ReadError> {
        let mut raw = [0u8; wire::HEADER_LEN];
        match sys::sock::peek(self.fd.as_fd(), &mut raw) {
            Ok(0) => {
                r.eof = true;
                Ok(None)
            }
            Ok(n) if n < wire::HEADER_LEN => Ok(None),
            // Unchecked against the limit here: reading it checks.
            Ok(_) => wire::Header::parse(&raw, u64::MAX)
                .map(Some)
                .map_err(ReadError::Protocol),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// The next message of a pipe with a ring, in its senders' order, if one is
    /// there (see [`super::ring`]). `look`: look at the socket even if nothing is due
    /// there (to see a nudge or the end).
    ///
    /// Nothing is taken from the socket before it is this end's to deliver: the next
    /// socket frame's header is peeked at, and the frame read only if its number comes
    /// before the ring's head. So an end handed to another process leaves nothing
    /// behind here, except a frame whose reading a cancelled receive began.
    fn step_ring(&self, r: &mut ReadState, ring: &PipeRing, limit: u64, look: bool) -> Step {
        loop {
            if r.frames.mid_frame() {
                // Chosen already: finish it.
                match self.finish_socket_frame(r, ring) {
                    Ok(Some(f)) => return Step::Done(Ok(f)),
                    Ok(None) if r.frames.mid_frame() => return Step::MidFrame,
                    Ok(None) => continue,
                    Err(e) => return Step::Done(Err(e)),
                }
            }
            // The ring first: the tail it reads makes the socket count current.
            let head = match ring.peek() {
                Ok(h) => h,
                Err(e) => return Step::Done(Err(ReadError::Protocol(e))),
            };
            let socket = if !r.eof && (look || ring.socket_pending()) {
                match self.peek_socket(r) {
                    Ok(h) => h,
                    Err(e) => return Step::Done(Err(e)),
                }
            } else {
                None
            };
            let socket_first = match (&socket, head) {
                (Some(h), _) if h.kind != Kind::Message => true,
                (Some(h), Some((_, seq))) => h.id < seq,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if socket_first {
                r.frames.set_limit(limit);
                match self.finish_socket_frame(r, ring) {
                    Ok(Some(f)) => return Step::Done(Ok(f)),
                    Ok(None) if r.frames.mid_frame() => return Step::MidFrame,
                    Ok(None) => continue,
                    Err(e) => return Step::Done(Err(e)),
                }
            }
            match head {
                Some((at, _)) => match ring.take(at, limit) {
                    Ok(Some(f)) => return Step::Done(Ok(f)),
                    // Another process took it: look again.
                    Ok(None) => {}
                    Err(e) => return Step::Done(Err(ReadError::Protocol(e))),
                },
                None if r.eof => return Step::Done(Err(ReadError::Eof)),
                None => return Step::Nothing,
            }
        }
    }

    /// One look without waiting, with or without a ring.
    fn step(&self, r: &mut ReadState, limit: u64, look: bool) -> Step {
        if let Some(ring) = &self.ring {
            return self.step_ring(r, ring, limit, look);
        }
        match r.frames.read(self.fd.as_fd(), true) {
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Step::Nothing,
            result => Step::Done(result),
        }
    }

    fn lock_reader_for(r: &mut ReadState, max: Option<u64>) -> Result<u64, RecvError> {
        if r.broken {
            return Err(RecvError::Closed);
        }
        let limit = max.map_or(MAX_MESSAGE, |m| m.min(MAX_MESSAGE));
        r.frames.set_limit(limit);
        Ok(limit)
    }

    pub(super) async fn recv(&self, max: Option<u64>) -> Result<Frame, RecvError> {
        let mut r = self.reader.lock().await;
        let limit = Self::lock_reader_for(&mut r, max)?;
        let sock = self.async_fd().map_err(RecvError::Io)?;
        let asked = Instant::now();
        let spin = r.pace.spin();
        // Poll while answers have lately come quickly: through the ring only, without
        // a system call, unless socket frames are due.
        loop {
            match self.step(&mut r, limit, false) {
                Step::Done(result) => {
                    r.pace.waited(asked.elapsed());
                    return Self::after_read(&mut r, result, max);
                }
                Step::MidFrame => break,
                Step::Nothing => {}
            }
            if asked.elapsed() >= spin {
                break;
            }
            tokio::task::yield_now().await;
        }
        let _sleeping = self.sleeping();
        loop {
            match self.step(&mut r, limit, true) {
                Step::Done(result) => {
                    r.pace.waited(asked.elapsed());
                    return Self::after_read(&mut r, result, max);
                }
                Step::Nothing | Step::MidFrame => {}
            }
            let mut guard = sock.readable().await.map_err(RecvError::Io)?;
            // Cleared before the next look: bytes that land after it set it again.
            guard.clear_ready();
        }
    }

    pub(super) fn blocking_recv(
        &self,
        max: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<Frame, RecvError> {
        let mut r = self.reader.blocking_lock();
        let limit = Self::lock_reader_for(&mut r, max)?;
        let sock = self.fd.as_fd();
        let Some(ring) = &self.ring else {
            // Without a ring or a deadline, a plain blocking receive is the cheapest
            // wait (procpool never sets O_NONBLOCK on a shared socket; if someone else
            // did, the poll below takes over).
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
        };
        let asked = Instant::now();
        let spin = r.pace.spin();
        loop {
            match self.step_ring(&mut r, ring, limit, false) {
                Step::Done(result) => {
                    r.pace.waited(asked.elapsed());
                    return Self::after_read(&mut r, result, max);
                }
                Step::MidFrame => break,
                Step::Nothing => {}
            }
            if asked.elapsed() >= spin {
                break;
            }
            std::thread::yield_now();
        }
        let _sleeping = ring.sleeping();
        loop {
            match self.step_ring(&mut r, ring, limit, true) {
                Step::Done(result) => {
                    r.pace.waited(asked.elapsed());
                    return Self::after_read(&mut r, result, max);
                }
                Step::Nothing | Step::MidFrame => {}
            }
            let Some(wait) = remaining(deadline) else {
                return Err(RecvError::Timeout);
            };
            sys::sock::poll(sock, sys::sock::Wait::Readable, wait).map_err(RecvError::Io)?;
        }
    }

    pub(super) fn try_recv(&self) -> Result<Frame, RecvError> {
        let Ok(mut r) = self.reader.try_lock() else {
            // Another task is receiving right now.
            return Err(RecvError::Empty);
        };
        let limit = Self::lock_reader_for(&mut r, None)?;
        match self.step(&mut r, limit, true) {
            Step::Done(result) => Self::after_read(&mut r, result, None),
            Step::Nothing | Step::MidFrame => Err(RecvError::Empty),
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

    // ---- readiness ----

    /// Whether a receive would not wait now (a message, or the end of stream, is
    /// there); false while another task of this process holds the reader. Reads what
    /// the socket has into this end (and drops nudges), so a stale nudge never makes
    /// it look ready.
    pub(super) fn ready(&self) -> io::Result<bool> {
        let Ok(mut r) = self.reader.try_lock() else {
            return Ok(false);
        };
        if r.broken || r.eof || r.frames.has_frame() {
            return Ok(true);
        }
        let Some(ring) = &self.ring else {
            return sys::sock::poll(
                self.fd.as_fd(),
                sys::sock::Wait::Readable,
                Some(Duration::ZERO),
            );
        };
        if !matches!(ring.peek(), Ok(None)) {
            // A message, or a broken ring that a receive reports.
            return Ok(true);
        }
        if r.frames.mid_frame() {
            // The rest of a frame a cancelled receive began.
            return sys::sock::poll(
                self.fd.as_fd(),
                sys::sock::Wait::Readable,
                Some(Duration::ZERO),
            );
        }
        // Nudges are taken (and dropped) here, so that a stale one never looks ready.
        loop {
            match self.peek_socket(&mut r) {
                Ok(Some(h)) if h.kind == Kind::Nudge => {
                    if let Err(ReadError::Io(e)) = self.finish_socket_frame(&mut r, ring) {
                        return Err(e);
                    }
                }
                Ok(Some(_)) => return Ok(true),
                Ok(None) => return Ok(r.eof),
                Err(ReadError::Io(e)) => return Err(e),
                Err(_) => return Ok(true),
            }
        }
    }

    /// Counts this end among its ring's sleepers while the guard lives, so that
    /// senders wake it through the socket (for waits that watch the socket).
    pub(super) fn sleeping(&self) -> Option<super::ring::Sleeping<'_>> {
        self.ring.as_ref().map(PipeRing::sleeping)
    }

    /// Waits up to `timeout` until a receive would not wait.
    pub(super) async fn poll(&self, timeout: Duration) -> io::Result<bool> {
        let sock = self.async_fd()?;
        if self.ready()? {
            return Ok(true);
        }
        let wait = async {
            let _sleeping = self.sleeping();
            loop {
                if self.ready()? {
                    return Ok::<bool, io::Error>(true);
                }
                let mut guard = sock.readable().await?;
                guard.clear_ready();
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Ok(false),
        }
    }

    /// Blocking form of [`poll`](Self::poll); `None` waits without a limit.
    pub(super) fn blocking_poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let _sleeping = self.sleeping();
        loop {
            if self.ready()? {
                return Ok(true);
            }
            let Some(wait) = remaining(deadline) else {
                return Ok(false);
            };
            if !sys::sock::poll(self.fd.as_fd(), sys::sock::Wait::Readable, wait)? {
                return Ok(false);
            }
        }
    }
}
