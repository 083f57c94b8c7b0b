//! Large frames through shared memory: the bulk area beside each pool ring.
//!
//! A frame too large for a ring slot, and carrying no descriptors, goes into the
//! writer's half of a second memory file, and a slot announces where it lies (its
//! offset and length). The reader copies it out from there and frees the slot as for
//! any other frame, which is also how the writer learns that the bytes are free
//! again: the frames of a half are freed in the lane's order, and a new one takes the
//! lowest gap between those still in flight.
//! When a half has no room for a frame (several large frames in flight, or one
//! larger than the half), the frame spills to the socket as before; frames keep one
//! order either way, since every one of them is announced in the lane.
//!
//! # Streaming
//! The slot is published *before* the frame is copied in, and a word in front of
//! the frame says how many of its bytes the writer has copied so far; the writer
//! advances it every [`CHUNK`] bytes. The reader copies out as that word advances,
//! so the two copies of a large frame run at the same time on two CPUs, as a
//! socket's would, instead of one after the other. A reader that sees no progress
//! for [`STALL`] stops, drops what it copied, and sleeps as for an empty lane; the
//! writer rings the reader's doorbell again once the frame is whole, and the reader
//! then copies it in one go.
//!
//! A writer that dies while it copies leaves a frame that is never whole. Nobody
//! takes it: its reader sleeps, and learns of the death as it would in an empty
//! lane (the socket's end, the worker's pidfd).
//!
//! The pages a half has been written through stay in memory, so that the next large
//! frame finds them mapped. The parent decides when they go: once no large frame has
//! gone either way for [`KEEP`], it gives its own half's pages back and tells the
//! worker (`Kind::Release`) to give back its half's, which each side does only when
//! the other has read every frame in it.
//!
//! The reader checks what a slot says as it checks a slot's own frame: the extent
//! against the half, the header against the frame limit before anything is
//! allocated, and the header's length against the extent. The progress word is
//! only believed up to the frame's length.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::stream::Frame;
use super::{Header, HEADER_LEN};
use crate::error::ProtocolError;
use crate::sys::shm::{self, Region};

/// Bytes in each half; a frame that goes this way is at most [`LEAD`] shorter. The
/// file is sparse: only pages written through take memory.
pub(crate) const HALF_LEN: usize = 64 << 20;
/// Frames start on cache-line boundaries.
const ALIGN: usize = 64;
/// Bytes in front of each frame: the cache line holding the writer's progress (how
/// many of the frame's bytes it has copied in).
pub(crate) const LEAD: usize = ALIGN;
/// The writer publishes its progress after every this many bytes: small enough that
/// the reader starts soon and finds them still in the shared cache, large enough
/// that the progress word's cache line moves rarely.
pub(crate) const CHUNK: usize = 256 << 10;
/// How long a reader waits for a writer that makes no progress before it stops and
/// sleeps (the writer rings once the frame is whole). A few chunks' time; a writer
/// that the scheduler took off its CPU costs the reader one wasted partial copy.
pub(crate) const STALL: Duration = Duration::from_micros(500);
/// The slowest rate a reader keeps copying at, as time per byte: a writer slower
/// than 1 GB/s (one the scheduler keeps taking off its CPU, or one that dribbles on
/// purpose) is left to finish alone, and the reader then copies its frame in one go.
/// So no writer holds its reader's thread much longer than the copy itself takes.
const SLOWEST: Duration = Duration::from_nanos(1);
/// How long a side keeps its half's pages after its last large frame.
pub(crate) const KEEP: Duration = Duration::from_secs(1);

/// Where a frame announced by [`Bulk::reserve`] goes in the writer's half.
#[derive(Debug)]
#[must_use = "an announced frame must be filled, or its reader waits for it"]
pub(crate) struct Extent {
    /// Offset of its progress word in the half; the frame follows [`LEAD`] later.
    at: usize,
    len: usize,
}

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

    /// Makes room for a frame of `len` bytes in this side's half, if it has room, and
    /// has `announce` publish a slot saying where (offset and length in the half);
    /// `announce` returns the slot's lane index, or `None` when the lane is full.
    /// `freed` is the lane's count of slots the reader has freed. The frame is then
    /// copied in with [`fill`](Self::fill). `None`, and nothing announced, when
    /// there is no room in the half or in the lane.
    pub(crate) fn reserve(
        &self,
        len: usize,
        freed: u64,
        announce: impl FnOnce(u64, u64) -> Option<u64>,
    ) -> Option<Extent> {
        let mut w = self.writer();
        w.reclaim(freed);
        let at = w.place(LEAD + len)?;
        // Whatever an earlier frame left there, this one has no bytes yet; the
        // announcement publishes that (a release store of the lane's tail).
        self.region.u64_at(self.tx + at).store(0, Ordering::Relaxed);
        let index = announce(at as u64, len as u64)?;
        w.record(index, at, LEAD + len);
        Some(Extent { at, len })
    }

    /// Copies `parts` (one frame, back to back, as long as reserved) into `extent`,
    /// publishing the progress every [`CHUNK`] bytes and at the end. Fewer bytes
    /// than reserved leave the frame unfinished for good, as a writer that died
    /// would (the tests play that writer so).
    pub(crate) fn fill(&self, extent: Extent, parts: &[&[u8]]) {
        let progress = self.region.u64_at(self.tx + extent.at);
        let start = self.tx + extent.at + LEAD;
        let mut done = 0;
        for part in parts {
            for piece in part.chunks(CHUNK) {
                self.region.write(start + done, piece);
                done += piece.len();
                progress.store(done as u64, Ordering::Release);
            }
        }
        debug_assert!(done <= extent.len, "a frame filled past its extent");
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

    /// The progress word and the frame's start (in the region) of the extent a slot
    /// says lies at `offset` and is `len` bytes long in the peer's half, if that
    /// extent lies inside it and can hold a frame.
    fn incoming(&self, offset: u64, len: u64) -> Option<(&AtomicU64, usize)> {
        let inside = offset.is_multiple_of(8)
            && len >= HEADER_LEN as u64
            && offset
                .checked_add(LEAD as u64)
                .and_then(|start| start.checked_add(len))
                .is_some_and(|end| end <= HALF_LEN as u64);
        inside.then(|| {
            let at = self.rx + offset as usize;
            (self.region.u64_at(at), at + LEAD)
        })
    }

    /// Whether the writer has copied in the whole frame a slot says lies at `offset`
    /// and is `len` bytes long; true for an extent that makes no sense, which
    /// [`copy_out`](Self::copy_out) reports.
    pub(crate) fn is_whole(&self, offset: u64, len: u64) -> bool {
        self.incoming(offset, len)
            .is_none_or(|(progress, _)| progress.load(Ordering::Acquire) >= len)
    }

    /// Copies out the frame a slot says lies at `offset` and is `len` bytes long in
    /// the peer's half, as fast as its writer copies it in. Its header is checked
    /// against `limit` before its body is allocated. `None` if the writer made no
    /// progress for [`STALL`]: wait for the doorbell, which it rings once the frame
    /// is whole, and ask again.
    ///
    /// # Errors
    /// A protocol error for an extent outside the half, a header that does not parse,
    /// a body over `limit`, a length that disagrees with the extent, or descriptors.
    pub(crate) fn copy_out(
        &self,
        offset: u64,
        len: u64,
        limit: u64,
    ) -> Result<Option<Frame>, ProtocolError> {
        let Some((progress, at)) = self.incoming(offset, len) else {
            return Err(ProtocolError::Malformed {
                reason: format!("a bulk frame of {len} bytes at {offset}"),
            });
        };
        let len = len as usize;
        let until = Instant::now() + STALL + SLOWEST.saturating_mul(len as u32);
        let Some(mut ready) = wait_for(progress, HEADER_LEN, len, until) else {
            return Ok(None);
        };
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
        let mut body = Vec::with_capacity(len - HEADER_LEN);
        let mut copied = HEADER_LEN;
        while copied < len {
            if ready == copied {
                let Some(more) = wait_for(progress, copied + 1, len, until) else {
                    return Ok(None);
                };
                ready = more;
            }
            self.region
                .read_into(at + copied, ready - copied, &mut body);
            copied = ready;
        }
        *self.last_read() = Some(Instant::now());
        Ok(Some(Frame {
            header,
            body,
            fds: Vec::new(),
        }))
    }

    /// Bytes of the whole file (both halves) that take memory now.
    #[cfg(test)]
    pub(crate) fn file_bytes_held(&self) -> u64 {
        shm::file_blocks(self.memfd.as_fd()).unwrap_or(0) * 512
    }
}

/// How far the writer has got (at most `len`) once it has `need` bytes in, waiting
/// while it makes progress; `None` after [`STALL`] without any, or once `until` has
/// passed.
fn wait_for(progress: &AtomicU64, need: usize, len: usize, until: Instant) -> Option<usize> {
    let mut since = None;
    let mut spins = 0u32;
    loop {
        // A writer's word past the frame's end is believed only up to the end.
        let ready = progress.load(Ordering::Acquire).min(len as u64) as usize;
        if ready >= need {
            return Some(ready);
        }
        if spins == 0 && Instant::now() >= until {
            return None;
        }
        // The writer is copying on another CPU: a chunk takes some tens of
        // microseconds. Spin a little, then yield, in case it shares this CPU.
        if spins < 64 {
            std::hint::spin_loop();
            spins += 1;
            continue;
        }
        std::thread::yield_now();
        let now = Instant::now();
        if now - *since.get_or_insert(now) >= STALL {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a frame as the ring does: reserve, announce, fill.
    fn write(
        bulk: &Bulk,
        parts: &[&[u8]],
        freed: u64,
        announce: impl FnOnce(u64, u64) -> Option<u64>,
    ) -> bool {
        let len = parts.iter().map(|p| p.len()).sum();
        match bulk.reserve(len, freed, announce) {
            Some(extent) => {
                bulk.fill(extent, parts);
                true
            }
            None => false,
        }
    }

    /// Announces `frame` at the start of `parent`'s half and copies in only its
    /// first `written` bytes; its progress word, for the test to move.
    fn unfinished<'a>(parent: &'a Bulk, frame: &[u8], written: usize) -> &'a AtomicU64 {
        let extent = parent
            .reserve(frame.len(), 0, |_, _| Some(0))
            .expect("room");
        let at = parent.tx + extent.at;
        parent.fill(extent, &[&frame[..written]]);
        parent.region.u64_at(at)
    }

    fn frame(body_len: usize, id: u64) -> Vec<u8> {
        let mut frame = Vec::new();
        super::super::begin(&mut frame);
        frame.extend((0..body_len).map(|i| (i % 251) as u8));
        super::super::finish(&mut frame, super::super::Kind::Run, 0, id, 0);
        frame
    }

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
        let frame = frame(100_000, 9);
        let mut announced = None;
        assert!(write(
            &parent,
            &[&frame[..10], &frame[10..]],
            0,
            |at, len| {
                announced = Some((at, len));
                Some(0)
            }
        ));
        let (at, len) = announced.unwrap();
        assert!(worker.is_whole(at, len));
        let f = worker.copy_out(at, len, u64::MAX).unwrap().unwrap();
        assert_eq!((f.header.id, &f.body[..]), (9, &frame[HEADER_LEN..]));
        // Not yet read (slot 0 not freed): a frame of the whole half has no room.
        let whole = vec![0u8; HALF_LEN];
        assert!(!write(&parent, &[&whole], 0, |_, _| Some(1)));
        assert!(
            !parent.release(0),
            "a frame still in flight keeps its pages"
        );
        assert!(write(&parent, &[&whole[..HALF_LEN / 2]], 1, |_, _| Some(1)));
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
        let lies = [
            (end - 8, 64),
            (u64::MAX - 4, 64),
            (0, 8),
            (0, end + 1),
            (0, end - LEAD as u64 + 1),
            (4, 64),
        ];
        for (at, len) in lies {
            assert!(worker.copy_out(at, len, u64::MAX).is_err(), "{at}+{len}");
            assert!(worker.is_whole(at, len), "left to copy_out to report");
        }
        // A header claiming more than the limit, checked before the body is read.
        let frame = frame(64, 1);
        assert!(write(&parent, &[&frame], 0, |_, _| Some(0)));
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

    #[test]
    fn a_frame_is_read_as_it_is_written() {
        let (parent, fd) = Bulk::create().unwrap();
        let worker = Bulk::open(fd, 1).unwrap();
        let frame = frame(20 * CHUNK + 5, 3);
        let extent = parent
            .reserve(frame.len(), 0, |_, _| Some(0))
            .expect("room");
        let len = frame.len() as u64;
        assert!(!worker.is_whole(0, len), "announced before a byte is in");
        let read = std::thread::scope(|s| {
            let reader = s.spawn(|| loop {
                // A writer descheduled for longer than STALL only costs a retry.
                if let Some(f) = worker.copy_out(0, len, u64::MAX).unwrap() {
                    return f;
                }
            });
            parent.fill(extent, &[&frame[..7], &frame[7..]]);
            reader.join().unwrap()
        });
        assert_eq!((read.header.id, &read.body[..]), (3, &frame[HEADER_LEN..]));
        assert!(worker.is_whole(0, len));
    }

    #[test]
    fn a_writer_that_dribbles_does_not_hold_its_reader() {
        use std::sync::atomic::AtomicBool;
        let (parent, fd) = Bulk::create().unwrap();
        let worker = Bulk::open(fd, 1).unwrap();
        let frame = frame(3 * CHUNK, 5);
        let progress = unfinished(&parent, &frame, HEADER_LEN);
        let done = AtomicBool::new(false);
        let got = std::thread::scope(|s| {
            // A byte every 50 µs: progress always comes within STALL, and the frame
            // would be whole in about 40 s.
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    progress.fetch_add(1, Ordering::Release);
                    std::thread::sleep(Duration::from_micros(50));
                }
            });
            let got = worker.copy_out(0, frame.len() as u64, u64::MAX);
            done.store(true, Ordering::Release);
            got
        });
        assert!(got.unwrap().is_none(), "the reader gave up and left it");
    }

    #[test]
    fn a_frame_whose_writer_stopped_is_never_taken() {
        let (parent, fd) = Bulk::create().unwrap();
        let worker = Bulk::open(fd, 1).unwrap();
        let frame = frame(3 * CHUNK, 4);
        // The writer got two chunks in, then died (or stopped).
        let progress = unfinished(&parent, &frame, 2 * CHUNK);
        let len = frame.len() as u64;
        assert!(!worker.is_whole(0, len));
        assert!(worker.copy_out(0, len, u64::MAX).unwrap().is_none());
        // A word past the end is believed only up to the end.
        progress.store(u64::MAX, Ordering::Release);
        assert!(worker.is_whole(0, len));
        let f = worker.copy_out(0, len, u64::MAX).unwrap().unwrap();
        assert_eq!(f.body.len(), frame.len() - HEADER_LEN);
    }
}
