//! The worker's link to its parent after the handshake: frames in and frames out,
//! through the shared-memory ring ([`crate::wire::ring`]) where the frame fits a slot,
//! and on the control socket otherwise. A `Process` child has no ring: everything goes
//! on the socket.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sys;
use crate::wire::ring::{Next, Pushed, Ring};
use crate::wire::stream::{Frame, FrameReader};
use crate::wire::{self, ReadError};

/// How long a writer waiting for room in a full ring sleeps before it looks whether
/// its parent is still there (the parent wakes it as soon as it frees a slot).
const ROOM_RECHECK: Duration = Duration::from_millis(20);

/// Frames from the parent.
pub(super) struct Incoming {
    reader: FrameReader,
    ring: Option<Arc<Ring>>,
    limit: u64,
    /// When the parent published the last frame taken (0: it came without a ring).
    stamp: u64,
}

impl Incoming {
    /// Frames read with `reader` (which holds what the handshake read ahead) and, if
    /// the parent sent one, `ring`.
    pub(super) fn new(reader: FrameReader, ring: Option<Arc<Ring>>, limit: u64) -> Incoming {
        Incoming {
            reader,
            ring,
            limit,
            stamp: 0,
        }
    }

    /// Whether frames come through a ring (looking for one costs no system call).
    pub(super) fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// When the parent published the frame last returned (`CLOCK_MONOTONIC`, ns), if
    /// it came through the ring; 0 otherwise.
    pub(super) fn stamp(&self) -> u64 {
        self.stamp
    }

    /// The next frame if one is there, without sleeping; `None` if none is.
    ///
    /// # Errors
    /// As [`FrameReader::read`]; a protocol error for a ring slot that makes no sense.
    pub(super) fn try_next(&mut self, sock: BorrowedFd<'_>) -> Result<Option<Frame>, ReadError> {
        let Some(ring) = &self.ring else {
            return match self.reader.read(sock, true) {
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                other => other.map(Some),
            };
        };
        let next = ring.next().map_err(ReadError::Protocol)?;
        if next != Next::Empty {
            self.stamp = ring.head_stamp();
        }
        match next {
            Next::Empty => Ok(None),
            Next::Inline => ring.take(self.limit).map_err(ReadError::Protocol),
            Next::Spilled => {
                // Announced: the parent is writing it on the socket now.
                let frame = self.reader.read(sock, false)?;
                ring.skip();
                Ok(Some(frame))
            }
        }
    }

    /// The next frame, sleeping until it comes: in `recvmsg` without a ring, else in
    /// `poll` on the ring's doorbell and the socket (whose end means the parent is
    /// gone).
    ///
    /// # Errors
    /// As [`try_next`](Self::try_next); `Eof` once the parent closed the socket and
    /// nothing it sent before is left.
    pub(super) fn next(&mut self, sock: BorrowedFd<'_>) -> Result<Frame, ReadError> {
        let Some(ring) = self.ring.clone() else {
            return self.reader.read(sock, false);
        };
        loop {
            if let Some(frame) = self.try_next(sock)? {
                return Ok(frame);
            }
            if !ring.sleep_for_frame() {
                continue;
            }
            // The pages of large frames are given back when the parent says so
            // (`Kind::Release`), not on a timer of the worker's.
            let ready = sys::sock::poll_readable(&[sock, ring.bell().as_fd()], None);
            ring.woke();
            let ready = ready?;
            if !ready.contains(&0) {
                continue;
            }
            // Else the ring has the next frame (or a broken lane, which `try_next`
            // reports).
            if !ring.socket_is_next() {
                continue;
            }
            match self.reader.read(sock, true) {
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
                Ok(frame) => return ring.claim_spilled(frame).map_err(ReadError::Protocol),
            }
        }
    }
}

/// Frames to the parent, from the serve loop and (feature `tracing`) from any thread
/// that flushes records: one frame at a time, whole.
pub(crate) struct Outgoing {
    sock: OwnedFd,
    ring: Option<Arc<Ring>>,
    /// Held for each frame, so that frames from two threads never interleave and take
    /// ring slots in the order their socket bytes go.
    lock: Mutex<()>,
}

impl Outgoing {
    /// Frames out on (a duplicate of) `sock`, and in `ring`'s up lane where they fit.
    pub(super) fn new(sock: BorrowedFd<'_>, ring: Option<Arc<Ring>>) -> io::Result<Outgoing> {
        Ok(Outgoing {
            sock: sys::sock::dup(sock)?,
            ring,
            lock: Mutex::new(()),
        })
    }

    /// Sends one frame: `frame` (header from [`wire::finish`]) and its body's rest in
    /// `tail`, with `fds`; the header's extent is set here. Blocks until it is out, in
    /// a ring slot or in the ring's bulk area.
    ///
    /// # Errors
    /// The socket's error once the parent is gone.
    pub(crate) fn send(&self, frame: &mut [u8], tail: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
        wire::set_extent(frame, tail.len(), fds.len());
        let _whole = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let sock = self.sock.as_fd();
        if let Some(ring) = &self.ring {
            loop {
                match ring.push(&[frame, tail], fds.len()) {
                    Pushed::Shared => return Ok(()),
                    Pushed::Spilled => break,
                    Pushed::Full => {}
                }
                if sys::sock::peer_closed(sock)? {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                ring.wait_for_room(ROOM_RECHECK);
            }
        }
        let fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let mut parts = [&frame[..], tail];
        let mut with = &fds[..];
        while !parts[0].is_empty() || !parts[1].is_empty() {
            let live = if parts[0].is_empty() {
                &parts[1..]
            } else {
                &parts[..]
            };
            match sys::sock::send_vectored(sock, live, with, false) {
                Ok(mut n) => {
                    if n > 0 {
                        with = &[];
                    }
                    for p in &mut parts {
                        let k = n.min(p.len());
                        *p = &p[k..];
                        n -= k;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ring::testing;
    use crate::wire::{Kind, HEADER_LEN};

    fn frame(body_len: usize, id: u64) -> Vec<u8> {
        let mut f = Vec::new();
        wire::begin(&mut f);
        f.extend((0..body_len).map(|i| (i % 253) as u8));
        wire::finish(&mut f, Kind::Run, 0, id, 0);
        f
    }

    #[test]
    fn a_parent_gone_in_the_middle_of_a_large_frame_is_the_end_not_a_frame() {
        let (parent, worker) = testing::pair();
        let (ours, theirs) = sys::sock::pair(sys::sock::Kind::Stream).unwrap();
        let big = frame(1 << 20, 1);
        parent.push_unfinished(&big, big.len() / 2);
        drop(theirs);
        let mut incoming =
            Incoming::new(FrameReader::new(u64::MAX), Some(Arc::new(worker)), 1 << 30);
        assert!(matches!(incoming.next(ours.as_fd()), Err(ReadError::Eof)));
    }

    #[test]
    fn a_frame_on_the_socket_while_a_large_one_is_unfinished_is_a_protocol_error() {
        let (parent, worker) = testing::pair();
        let (ours, theirs) = sys::sock::pair(sys::sock::Kind::Stream).unwrap();
        let big = frame(1 << 20, 1);
        parent.push_unfinished(&big, HEADER_LEN);
        let small = frame(8, 2);
        sys::sock::send_vectored(theirs.as_fd(), &[&small], &[], false).unwrap();
        let mut incoming =
            Incoming::new(FrameReader::new(u64::MAX), Some(Arc::new(worker)), 1 << 30);
        assert!(matches!(
            incoming.next(ours.as_fd()),
            Err(ReadError::Protocol(_))
        ));
    }

    #[test]
    fn a_large_frame_is_taken_once_whole() {
        let (parent, worker) = testing::pair();
        let (ours, _theirs) = sys::sock::pair(sys::sock::Kind::Stream).unwrap();
        let big = frame(3 << 20, 7);
        let mut incoming =
            Incoming::new(FrameReader::new(u64::MAX), Some(Arc::new(worker)), 1 << 30);
        let got = std::thread::scope(|s| {
            let reader = s.spawn(|| incoming.next(ours.as_fd()).unwrap());
            assert_eq!(parent.push(&[&big], 0), Pushed::Shared);
            reader.join().unwrap()
        });
        assert_eq!((got.header.id, &got.body[..]), (7, &big[HEADER_LEN..]));
    }
}
