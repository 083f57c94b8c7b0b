//! Large frames through shared memory: the bulk area beside each pool ring.
//!
//! A frame too large for a ring slot, and carrying no descriptors, is copied into
//! the writer's half of a second memory file, and a slot announces where it lies
//! (its offset and length). The reader copies it out from there and frees the slot
//! as for any other frame, which is also how the writer learns that the bytes are
//! free again: the frames of a half are freed in the lane's order, and a new one
//! takes the lowest gap between those still in flight.
//! When a half has no room for a frame (several large frames in flight, or one
//! larger than the half), the frame spills to the socket as before; frames keep one
//! order either way, since every one of them is announced in the lane.
//!
//! The pages a half has been written through stay in memory, so that the next large
//! frame finds them mapped. The parent decides when they go: once no large frame has
//! gone either way for [`KEEP`], it gives its own half's pages back and tells the
//! worker (`Kind::Release`) to give back its half's, which each side does only when
//! the other has read every frame in it.
//!
//! The reader checks what a slot says as it checks a slot's own frame: the extent
//! against the half, the header against the frame limit before anything is
//! allocated, and the header's length against the extent. A writer that dies while
//! it copies has not announced the frame, so nobody reads it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::stream::Frame;
use super::{Header, HEADER_LEN};
use crate::error::ProtocolError;
use crate::sys::shm::{self, Region};

/// Bytes in each half: the largest frame that can go this way. The file is sparse:
/// only pages written through take memory.
pub(crate) const HALF_LEN: usize = 64 << 20;
/// Frames start on cache-line boundaries.
const ALIGN: usize = 64;
/// How long a side keeps its half's pages after its last large frame.
pub(crate) const KEEP: Duration = Duration::from_secs(1);

/// One side's view of a bulk file: the half it writes and the half it reads.
#[derive(Debug)]
pub(crate) struct Bulk {
    region: Region,
    memfd: OwnedFd,
    /// Offsets of the halves this side writes and reads.
    tx: usize,
    rx: usize,
    writer: Mutex<Writer>,
    /// When this side last copied a frame out of the peer's half, until
    /// [`take_read`](Self::take_read).
    read: Mutex<Option<Instant>>,
}

/// Where the frames in flight lie in this side's half.
#[derive(Debug, Default)]
struct Writer {
    /// Frames announced and not yet known read, oldest first: the lane index of the
    /// slot that announced each, and its extent in the half.
    out: VecDeque<(u64, usize, usize)>,
    /// Since when this side has held pages of its half, if it does.
    held: Option<Instant>,
}

impl Writer {
    /// Forgets the frames whose slots the reader has freed (lane indices below
    /// `freed`).
    fn reclaim(&mut self, freed: u64) {
        while self.out.front().is_some_and(|&(index, _, _)| index < freed) {
            self.out.pop_front();
        }
    }

    /// Where a frame of `len` bytes can go now, if anywhere: the lowest gap between
    /// the frames in flight that holds it, so that the pages in use stay as few as
    /// the bytes in flight need (a long `map` does not walk through the whole half).
    fn place(&self, len: usize) -> Option<usize> {
        // The lowest such gap starts at 0 or where a frame in flight ends.
        let free = |at: usize| {
            at <= HALF_LEN
                && HALF_LEN - at >= len
                && self
                    .out
                    .iter()
                    .all(|&(_, start, end)| end <= at || at + len <= start)
        };
        std::iter::once(0)
            .chain(
                self.out
                    .iter()
                    .map(|&(_, _, end)| end.next_multiple_of(ALIGN)),
            )
            .filter(|&at| free(at))
            .min()
    }

    fn record(&mut self, index: u64, at: usize, len: usize) {
        self.out.push_back((index, at, at + len));
        self.held = Some(Instant::now());
    }
}

impl Bulk {
    /// A new, empty bulk file and side 0's view of it (writes the first half).
    pub(crate) fn create() -> io::Result<(Bulk, OwnedFd)> {
        let memfd = shm::memfd("procpool-bulk", 2 * HALF_LEN as u64, shm::Size::Fixed)?;
        let theirs = crate::sys::sock::dup(memfd.as_fd())?;
        Ok((Bulk::view(memfd, 0)?, theirs))
    }

    /// Side `side`'s view (0 or 1) of a bulk file another process made.
    ///
    /// # Errors
    /// `InvalidData` if the file is not of a bulk file's size.
    pub(crate) fn open(memfd: OwnedFd, side: u8) -> io::Result<Bulk> {
        if side > 1 || shm::file_len(memfd.as_fd())? != 2 * HALF_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a procpool bulk file",
            ));
        }
        Bulk::view(memfd, side)
    }

    fn view(memfd: OwnedFd, side: u8) -> io::Result<Bulk> {
        let region = Region::map(memfd.as_fd(), 2 * HALF_LEN)?;
        let tx = usize::from(side) * HALF_LEN;
        Ok(Bulk {
            region,
            memfd,
            tx,
            rx: HALF_LEN - tx,
            writer: Mutex::new(Writer::default()),
            read: Mutex::new(None),
        })
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // The state stays consistent at every step; a panic elsewhere leaves it usable.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies `parts` (one frame, back to back) into this side's half, if it has room
    /// for them, and has `announce` publish a slot saying where (offset and length in
    /// the half); `announce` returns the slot's lane index, or `None` when the lane is
    /// full. `freed` is the lane's count of slots the reader has freed. False, and
    /// nothing announced, when there is no room in the half or in the lane.
    pub(crate) fn write(
        &self,
        parts: &[&[u8]],
        freed: u64,
        announce: impl FnOnce(u64, u64) -> Option<u64>,
    ) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut w = self.writer();
        w.reclaim(freed);
        let Some(at) = w.place(len) else {
            return false;
        };
        let mut to = self.tx + at;
        for part in parts {
            self.region.write(to, part);
            to += part.len();
        }
        let Some(index) = announce(at as u64, len as u64) else {
            return false;
        };
        w.record(index, at, len);
        true
    }

    /// When the bulk area has been idle for [`KEEP`]: after this side's last large
    /// frame and the last it read from the peer's half; `None` if neither happened
    /// since the last release.
    pub(crate) fn release_due(&self) -> Option<Instant> {
        let held = self.writer().held;
        held.max(*self.last_read()).map(|since| since + KEEP)
    }

    fn last_read(&self) -> MutexGuard<'_, Option<Instant>> {
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this side has read a frame from the peer's half since it last asked:
    /// the peer then holds pages that it may give back.
    pub(crate) fn take_read(&self) -> bool {
        self.last_read().take().is_some()
    }

    /// Gives the pages of this side's half back to the system if the reader has read
    /// every frame in it (`freed` as for [`write`](Self::write)); otherwise looks
    /// again [`KEEP`] later. Whether they were given back.
    pub(crate) fn release(&self, freed: u64) -> bool {
        let mut w = self.writer();
        w.reclaim(freed);
        if w.held.is_none() {
            return false;
        }
        if !w.out.is_empty() {
            w.held = Some(Instant::now());
            return false;
        }
        // Nothing in flight, and this side's writers are held off by the lock.
        let released = shm::release(self.memfd.as_fd(), self.tx as u64, HALF_LEN as u64);
        w.held = if released.is_ok() {
            None
        } else {
            Some(Instant::now())
        };
        released.is_ok()
    }

    /// Copies out the frame a slot says lies at `offset` and is `len` bytes long in
    /// the peer's half. Its header is checked against `limit` before its body is
    /// copied.
    ///
    /// # Errors
    /// A protocol error for an extent outside the half, a header that does not parse,
    /// a body over `limit`, a length that disagrees with the extent, or descriptors.
    pub(crate) fn copy_out(
        &self,
        offset: u64,
        len: u64,
        limit: u64,
    ) -> Result<Frame, ProtocolError> {
        let inside = offset
            .checked_add(len)
            .is_some_and(|end| end <= HALF_LEN as u64);
        if !inside || len < HEADER_LEN as u64 {
            return Err(ProtocolError::Malformed {
                reason: format!("a bulk frame of {len} bytes at {offset}"),
            });
        }
        let (at, len) = (self.rx + offset as usize, len as usize);
        let mut raw = [0u8; HEADER_LEN];
        self.region.read(at, &mut raw);
        let header = Header::parse(&raw, limit)?;
        if header.len != (len - HEADER_LEN) as u64 || header.nfds != 0 {
            return Err(ProtocolError::Malformed {
                reason: format!(
                    "a bulk extent of {len} bytes holding a frame of {} with {} descriptors",
                    header.len, header.nfds
                ),
            });
        }
        let mut body = Vec::new();
        self.region
            .read_into(at + HEADER_LEN, len - HEADER_LEN, &mut body);
        *self.last_read() = Some(Instant::now());
        Ok(Frame {
            header,
            body,
            fds: Vec::new(),
        })
    }

    /// Bytes of the whole file (both halves) that take memory now.
    #[cfg(test)]
    pub(crate) fn file_bytes_held(&self) -> u64 {
        shm::file_blocks(self.memfd.as_fd()).unwrap_or(0) * 512
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer_with(frames: &[(u64, usize)]) -> Writer {
        let mut w = Writer::default();
        for &(index, len) in frames {
            let at = w.place(len).expect("room");
            w.record(index, at, len);
        }
        w
    }

    #[test]
    fn a_frame_takes_the_lowest_gap_that_holds_it() {
        let third = HALF_LEN / 3;
        let step = third.next_multiple_of(ALIGN);
        let mut w = writer_with(&[(0, third), (1, third)]);
        assert_eq!(w.out[1].1, step);
        // Past the end: waits for the start to be read.
        assert_eq!(w.place(HALF_LEN - 2 * step + 1), None);
        assert_eq!(w.place(HALF_LEN - 2 * step), Some(2 * step));
        w.reclaim(1);
        assert_eq!(w.place(third), Some(0), "back to the start once it is read");
        w.record(2, 0, third / 2);
        // The gap between the newest frame (at 0) and the oldest (index 1) comes first.
        let gap = (third / 2).next_multiple_of(ALIGN);
        assert_eq!(w.place(ALIGN), Some(gap));
        assert_eq!(w.place(step - gap), Some(gap));
        assert_eq!(w.place(step - gap + 1), Some(2 * step), "then the end");
        assert_eq!(w.place(HALF_LEN - 2 * step + 1), None);
        w.reclaim(3);
        assert!(w.out.is_empty());
        assert_eq!(w.place(HALF_LEN), Some(0));
        assert_eq!(w.place(HALF_LEN + 1), None);
    }

    #[test]
    fn a_frame_goes_through_and_its_bytes_are_reused_once_read() {
        let (parent, fd) = Bulk::create().unwrap();
        let worker = Bulk::open(fd, 1).unwrap();
        let mut frame = Vec::new();
        super::super::begin(&mut frame);
        frame.extend((0..100_000u32).map(|i| i as u8));
        super::super::finish(&mut frame, super::super::Kind::Run, 0, 9, 0);
        let mut announced = None;
        assert!(parent.write(&[&frame[..10], &frame[10..]], 0, |at, len| {
            announced = Some((at, len));
            Some(0)
        }));
        let (at, len) = announced.unwrap();
        let f = worker.copy_out(at, len, u64::MAX).unwrap();
        assert_eq!((f.header.id, &f.body[..]), (9, &frame[HEADER_LEN..]));
        // Not yet read (slot 0 not freed): a frame of the whole half has no room.
        let whole = vec![0u8; HALF_LEN];
        assert!(!parent.write(&[&whole], 0, |_, _| Some(1)));
        assert!(
            !parent.release(0),
            "a frame still in flight keeps its pages"
        );
        assert!(parent.write(&[&whole[..HALF_LEN / 2]], 1, |_, _| Some(1)));
        assert!(parent.file_bytes_held() >= HALF_LEN as u64 / 2);
        assert!(parent.release(2));
        assert_eq!(parent.file_bytes_held(), 0);
        assert_eq!(parent.release_due(), None);
    }

    #[test]
    fn a_lying_slot_is_a_protocol_error_not_an_allocation() {
        let (parent, fd) = Bulk::create().unwrap();
        let worker = Bulk::open(fd, 1).unwrap();
        let end = HALF_LEN as u64;
        for (at, len) in [(end - 8, 64), (u64::MAX - 4, 64), (0, 8), (0, end + 1)] {
            assert!(worker.copy_out(at, len, u64::MAX).is_err(), "{at}+{len}");
        }
        // A header claiming more than the limit, checked before the body is read.
        let mut frame = Vec::new();
        super::super::begin(&mut frame);
        frame.extend([1u8; 64]);
        super::super::finish(&mut frame, super::super::Kind::Run, 0, 1, 0);
        assert!(parent.write(&[&frame], 0, |_, _| Some(0)));
        assert!(matches!(
            worker.copy_out(0, frame.len() as u64, 16),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        // An extent that disagrees with the header.
        assert!(worker
            .copy_out(0, frame.len() as u64 - 1, u64::MAX)
            .is_err());
        assert!(Bulk::open(
            crate::sys::shm::memfd("x", 4096, crate::sys::shm::Size::Fixed).unwrap(),
            1
        )
        .is_err());
    }
}
