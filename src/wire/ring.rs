//! Frames through shared memory: the hot path between a pool's parent and one worker.
//!
//! A [`Ring`] is one memory file shared by a parent and its worker, holding two lanes
//! of fixed-size slots: *down* (tasks, parent → worker) and *up* (replies, worker →
//! parent). Each lane has one writer and one reader. The writer copies a frame into
//! the next free slot and then publishes it by advancing the lane's `tail`; the reader
//! copies it out and frees the slot by advancing `head`. Neither side takes a lock or
//! makes a system call while the other is awake.
//!
//! # Large frames, and what the socket still carries
//! A frame that does not fit a slot goes, if it carries no descriptors, into the
//! writer's half of the ring's *bulk area* ([`super::bulk`], a second memory file),
//! and its slot says where it lies; the reader copies it out from there. A frame
//! that carries descriptors (`SCM_RIGHTS`), or finds no room in the bulk area,
//! *spills*: the writer publishes a slot that says only "spilled", then writes the
//! frame on the socket as before. The reader, on meeting that slot, reads the next
//! frame from the socket. So frames keep one order, whichever way each one went. The
//! socket also remains the lifeline: a worker sleeping in the kernel watches it, and
//! its end (EOF) means the parent is gone.
//!
//! # Sleeping and waking
//! A reader that finds its lane empty polls it for a while (its caller's pace
//! decides how long), then sleeps: it raises its lane's `asleep` flag, looks at the
//! lane once more, and waits on its own doorbell, an `eventfd` (the parent's through
//! tokio, the worker's in `poll(2)`), and on the socket, where a spilled frame's
//! bytes wake it. A writer, after publishing a frame in a slot, looks at the flag;
//! if it is up, it lowers it and rings the doorbell. The flag and
//! the tail are each written before the other side's is read, with a sequentially
//! consistent fence between, so either the reader sees the new frame or the writer
//! sees the flag: no wake-up is lost (Dekker's pattern). A worker whose reply lane is
//! full (its tracing thread may be the one writing) sleeps the same way on the lane's
//! `full` flag, but as a futex, so that its doorbell keeps one sleeper; the parent
//! wakes it when it frees a slot. The parent never waits for room: it has at most
//! [`DEPTH_MAX`](crate::worker::progress::DEPTH_MAX) tasks out, fewer than a lane's
//! slots.
//!
//! # A peer that dies or lies
//! A worker killed while it writes a slot has not published it: the parent never sees
//! the half-written frame, and learns of the death from the worker's pidfd. A large
//! frame is published before it is written ([`super::bulk`] streams it), but it is
//! never taken until it is whole: its reader sleeps as for an empty lane. Its ring
//! dies with it; the next worker gets a new one. What the parent reads from the ring
//! is checked as it would be from the socket: the slot's length against the slot, the
//! header against the frame limit (before anything is allocated), and the lane's
//! counters against each other. Anything else is a [`ProtocolError`], which costs
//! the worker its life, never the parent's memory.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use super::bulk::{Bulk, Extent};
pub(crate) use super::lanes::Next;
use super::lanes::{Lanes, Shape, Word};
use super::stream::Frame;
use crate::error::ProtocolError;
use crate::sys::shm::{self, EventFd};

/// The pool's lanes: 128 slots of 4 KiB each way.
const SHAPE: Shape = Shape {
    slots: 128,
    slot_len: 4096,
};
/// Slots in each lane.
#[cfg(test)]
const SLOTS: usize = SHAPE.slots as usize;
/// Bytes of frame (header and body) that fit in one slot.
pub(crate) const SLOT_FRAME_MAX: usize = SHAPE.frame_max();

/// One end of a ring: the lane it writes, the lane it reads, and the two doorbells.
/// The parent writes lane 0 (tasks, "down") and the worker lane 1 (replies, "up").
#[derive(Debug)]
pub(crate) struct Ring {
    lanes: Lanes,
    /// Where frames too large for a slot go; none for a worker whose address space
    /// is limited (the area maps 128 MiB), whose large frames all spill.
    bulk: Option<Bulk>,
    /// Rung by the peer when this side sleeps.
    bell: EventFd,
    /// Rung to wake the peer.
    peer_bell: EventFd,
}

/// How [`Ring::push`] sent a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Whole, in shared memory: a slot or the bulk area.
    Shared,
    /// Announced in a slot: the caller writes the frame on the socket next.
    Spilled,
    /// Not at all: the lane has no free slot.
    Full,
}

/// The descriptors a worker needs to open its end: the memory file, the worker's
/// doorbell, the parent's and, if the ring has a bulk area, its file, in this order.
pub(crate) type WorkerFds = Vec<OwnedFd>;

impl Ring {
    /// The parent's end of a new ring, with a bulk area if `bulk`, and the
    /// descriptors to send to the worker.
    pub(crate) fn create(bulk: bool) -> io::Result<(Ring, WorkerFds)> {
        let (lanes, memfd) = Lanes::create("procpool-ring", SHAPE)?;
        let (mine, theirs) = (EventFd::new()?, EventFd::new()?);
        let mut fds = vec![
            memfd,
            crate::sys::sock::dup(theirs.as_fd())?,
            crate::sys::sock::dup(mine.as_fd())?,
        ];
        let bulk = match bulk {
            true => {
                let (bulk, bulk_fd) = Bulk::create()?;
                fds.push(bulk_fd);
                Some(bulk)
            }
            false => None,
        };
        Ok((
            Ring {
                lanes,
                bulk,
                bell: mine,
                peer_bell: theirs,
            },
            fds,
        ))
    }

    /// The worker's end of the ring its parent sent (see [`WorkerFds`]): the memory
    /// file, the worker's doorbell, the parent's, and the bulk area's file if any.
    pub(crate) fn open(
        memfd: OwnedFd,
        mine: OwnedFd,
        theirs: OwnedFd,
        bulk: Option<OwnedFd>,
    ) -> io::Result<Ring> {
        Ok(Ring {
            lanes: Lanes::open(&memfd, SHAPE, 1)?,
            bulk: bulk.map(|fd| Bulk::open(fd, 1)).transpose()?,
            bell: EventFd::from_fd(mine),
            peer_bell: EventFd::from_fd(theirs),
        })
    }

    /// This side's doorbell, to wait on when it sleeps.
    pub(crate) fn bell(&self) -> &EventFd {
        &self.bell
    }

    /// Whether a frame of `len` bytes with `nfds` descriptors goes in a slot.
    pub(crate) fn fits(len: usize, nfds: usize) -> bool {
        nfds == 0 && len <= SLOT_FRAME_MAX
    }

    /// Publishes `parts` (one frame, back to back; together at most
    /// [`SLOT_FRAME_MAX`] bytes) in the next slot, and wakes the reader if it sleeps.
    /// False, and nothing written, when the lane is full.
    pub(crate) fn try_push(&self, parts: &[&[u8]]) -> bool {
        if !self.lanes.try_push(parts, crate::sys::proc::monotonic_ns()) {
            return false;
        }
        self.ring_if_asleep();
        true
    }

    /// Publishes `parts` (one frame, back to back, carrying `nfds` descriptors) the
    /// way it can go: in a slot if it fits one, else through the bulk area if it
    /// carries no descriptors and the area has room, else as a spilled slot, after
    /// which the caller writes the frame on the socket. [`Pushed::Full`], and nothing
    /// published, when the lane has no free slot.
    pub(crate) fn push(&self, parts: &[&[u8]], nfds: usize) -> Pushed {
        let pushed = self.push_unrung(parts, nfds);
        if pushed == Pushed::Shared {
            self.ring_if_asleep();
        }
        pushed
    }

    /// As [`push`](Self::push), but a frame published in a slot does not ring the
    /// reader: the caller publishes more and then calls
    /// [`ring_if_asleep`](Self::ring_if_asleep) once for all of them.
    pub(crate) fn push_unrung(&self, parts: &[&[u8]], nfds: usize) -> Pushed {
        let len = parts.iter().map(|p| p.len()).sum();
        if Ring::fits(len, nfds) {
            return match self.lanes.try_push(parts, crate::sys::proc::monotonic_ns()) {
                true => Pushed::Shared,
                false => Pushed::Full,
            };
        }
        if nfds == 0 && self.try_push_bulk(parts) {
            Pushed::Shared
        } else if self.try_push_spilled() {
            Pushed::Spilled
        } else {
            Pushed::Full
        }
    }

    /// Publishes `parts` (one frame, back to back, too large for a slot) through the
    /// bulk area, the reader copying it out while this side copies it in. False, and
    /// nothing published, when the bulk area or the lane has no room for it now:
    /// spill it instead.
    fn try_push_bulk(&self, parts: &[&[u8]]) -> bool {
        let len = parts.iter().map(|p| p.len()).sum();
        let Some((bulk, extent)) = self.announce_bulk(len) else {
            return false;
        };
        bulk.fill(extent, parts);
        self.ring_if_asleep();
        true
    }

    /// Announces a frame of `len` bytes in the bulk area and wakes the reader if it
    /// sleeps, so that it starts copying out; the frame is still to be copied in.
    /// `None`, and nothing published, when the bulk area or the lane has no room.
    fn announce_bulk(&self, len: usize) -> Option<(&Bulk, Extent)> {
        let bulk = self.bulk.as_ref()?;
        if self.lanes.is_full() {
            return None;
        }
        let lanes = &self.lanes;
        let extent = bulk.reserve(len, lanes.tx_freed(), |offset, len| {
            lanes.try_push_bulk(offset, len, crate::sys::proc::monotonic_ns())
        })?;
        self.ring_if_asleep();
        Some((bulk, extent))
    }

    /// Announces `frame` in the bulk area and copies in only its first `written`
    /// bytes, as a writer that dies in the middle of it leaves it.
    #[cfg(test)]
    pub(crate) fn push_unfinished(&self, frame: &[u8], written: usize) {
        let (bulk, extent) = self.announce_bulk(frame.len()).expect("room");
        bulk.fill(extent, &[&frame[..written]]);
    }

    /// After publishing a frame, the end of a large one, or frames published with
    /// [`push_unrung`](Self::push_unrung): rings the reader's doorbell if it sleeps.
    pub(crate) fn ring_if_asleep(&self) {
        fence(Ordering::SeqCst);
        if self.lower(self.lanes.tx_flag(Word::Sleep)) {
            self.peer_bell.notify();
        }
    }

    /// When this side may give back the memory its large frames went through (see
    /// [`release_bulk`](Self::release_bulk)); `None` if it holds none.
    pub(crate) fn bulk_release_due(&self) -> Option<std::time::Instant> {
        self.bulk.as_ref().and_then(Bulk::release_due)
    }

    /// Whether this side has read a large frame from the peer since it last asked (see
    /// [`Bulk::take_read`]).
    pub(crate) fn take_bulk_read(&self) -> bool {
        self.bulk.as_ref().is_some_and(Bulk::take_read)
    }

    /// Gives back the memory this side's large frames went through, if the reader has
    /// read them all (else looks again a while later). Whether it did.
    pub(crate) fn release_bulk(&self) -> bool {
        self.bulk
            .as_ref()
            .is_some_and(|bulk| bulk.release(self.lanes.tx_freed()))
    }

    /// When the writer published the frame at the head of the incoming lane (after
    /// [`next`](Self::next) said it is not empty): its peer's clock, which is this
    /// side's clock too. A reader that slept learns from it how soon the frame came,
    /// apart from how late it woke.
    pub(crate) fn head_stamp(&self) -> u64 {
        self.lanes.head_tag()
    }

    /// Publishes a slot saying that the next frame goes on the socket. False when the
    /// lane is full.
    ///
    /// The doorbell is not rung: a sleeping reader watches the socket too, and the
    /// frame's first bytes, which the caller writes next, wake it there. Ringing as
    /// well would wake it twice for one frame.
    pub(crate) fn try_push_spilled(&self) -> bool {
        self.lanes
            .try_push_spilled(crate::sys::proc::monotonic_ns())
    }

    /// Lowers `flag`; whether it was up (a load first, so that the common case,
    /// nobody asleep, writes nothing to the shared line).
    fn lower(&self, flag: &std::sync::atomic::AtomicU32) -> bool {
        flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::AcqRel) != 0
    }

    /// What the head of this side's incoming lane holds.
    ///
    /// # Errors
    /// A protocol error when the lane's counters or the slot's length make no sense
    /// (the peer is broken or hostile).
    pub(crate) fn next(&self) -> Result<Next, ProtocolError> {
        self.lanes.next().map(|(next, _)| next)
    }

    /// Copies out the frame at the head (after [`next`](Self::next) said
    /// [`Next::Inline`]) and frees its slot. Its header is checked against `limit`
    /// before its body is copied. `None` for a large frame whose writer has not
    /// finished it and made no progress for a while ([`STALL`](super::bulk::STALL)):
    /// wait as for an empty lane ([`sleep_for_frame`](Self::sleep_for_frame) says to
    /// sleep; the writer rings once the frame is whole).
    ///
    /// # Errors
    /// A protocol error for a header that does not parse, a body over `limit`, a
    /// length that disagrees with the slot's, or descriptors announced in a slot.
    pub(crate) fn take(&self, limit: u64) -> Result<Option<Frame>, ProtocolError> {
        let frame = self.peek(limit)?;
        if frame.is_some() {
            self.skip();
        }
        Ok(frame)
    }

    /// Copies out the frame at the head (after [`next`](Self::next) said
    /// [`Next::Inline`]) and leaves it there: [`skip`](Self::skip) frees it once the
    /// reader keeps it. Checked, and `None`, as for [`take`](Self::take).
    ///
    /// # Errors
    /// As [`take`](Self::take).
    pub(crate) fn peek(&self, limit: u64) -> Result<Option<Frame>, ProtocolError> {
        match (self.lanes.bulk_at_head(), &self.bulk) {
            (Some((offset, len)), Some(bulk)) => bulk.copy_out(offset, len, limit),
            (Some(_), None) => Err(ProtocolError::Malformed {
                reason: "a frame in a bulk area the ring does not have".to_owned(),
            }),
            (None, _) => self.lanes.peek(limit).map(Some),
        }
    }

    /// Whether the head of the incoming lane (after [`next`](Self::next) said
    /// [`Next::Inline`]) is a large frame that its writer has not yet copied in
    /// whole. Its writer sends nothing on the socket until it has; so if the socket
    /// has something meanwhile, the writer is gone (or lies).
    pub(crate) fn head_is_partial(&self) -> bool {
        match (self.lanes.bulk_at_head(), &self.bulk) {
            (Some((offset, len)), Some(bulk)) => !bulk.is_whole(offset, len),
            _ => false,
        }
    }

    /// Frees the head slot: its frame was read (from the slot or the socket).
    pub(crate) fn skip(&self) {
        self.lanes.skip();
        self.freed();
    }

    fn freed(&self) {
        fence(Ordering::SeqCst);
        // A writer waiting for room sleeps on the flag itself.
        let room = self.lanes.rx_flag(Word::Room);
        if self.lower(room) {
            shm::futex_wake_all(room);
        }
    }

    /// A frame read from the socket while the ring looked empty: the spilled frame
    /// whose slot has come by now (the slot is freed), or one the peer never
    /// announced.
    ///
    /// # Errors
    /// `ProtocolError::Unexpected` for a frame the ring did not announce.
    pub(crate) fn claim_spilled(&self, frame: Frame) -> Result<Frame, ProtocolError> {
        if self.next()? != Next::Spilled {
            return Err(ProtocolError::Unexpected {
                what: "a frame on the socket that the ring did not announce".to_owned(),
            });
        }
        self.skip();
        Ok(frame)
    }

    /// Whether something readable on the socket lies outside the order the lane
    /// announced, so that the reader should read it now rather than wait for the
    /// lane: the lane is empty (it is the start of a spilled frame whose slot comes
    /// next, or the socket's end), or its head is a large frame still being written
    /// (then only the end, or a lie: the writer sends nothing on the socket before
    /// that frame is whole). False for a lane that makes no sense, which
    /// [`next`](Self::next) reports.
    pub(crate) fn socket_is_next(&self) -> bool {
        self.next().is_ok_and(|n| n == Next::Empty) || self.head_is_partial()
    }

    /// Before sleeping for a frame: raises this side's `asleep` flag and says whether
    /// the lane is still empty, or its head a large frame still being written
    /// ([`head_is_partial`](Self::head_is_partial)). If not, the flag is lowered
    /// again and the caller reads instead of sleeping. After a sleep, call
    /// [`woke`](Self::woke).
    pub(crate) fn sleep_for_frame(&self) -> bool {
        let asleep = self.lanes.rx_flag(Word::Sleep);
        asleep.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let empty = self.lanes.rx_word(Word::Tail).load(Ordering::Acquire)
            == self.lanes.rx_word(Word::Head).load(Ordering::Relaxed)
            || self.head_is_partial();
        if !empty {
            asleep.store(0, Ordering::Relaxed);
        }
        empty
    }

    /// Waits up to `timeout` for the reader to free a slot of this side's full
    /// outgoing lane: raises the `full` flag, looks once more, and sleeps on the flag
    /// (a futex) unless a slot is free by then. Returns at once if one is.
    pub(crate) fn wait_for_room(&self, timeout: Duration) {
        let full = self.lanes.tx_flag(Word::Room);
        full.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.lanes.is_full() {
            shm::futex_wait(full, 1, Some(timeout));
        }
        full.store(0, Ordering::Relaxed);
    }

    /// After a sleep for a frame, however it ended: lowers the flag and empties the
    /// doorbell (a ring that came late only costs a spurious wake-up).
    pub(crate) fn woke(&self) {
        self.lanes.rx_flag(Word::Sleep).store(0, Ordering::Relaxed);
        self.bell.drain();
    }
}

/// Rings for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Ring, WorkerFds};

    /// A parent's ring, with a bulk area, and its worker's view of it.
    pub(crate) fn pair() -> (Ring, Ring) {
        let (parent, fds) = Ring::create(true).unwrap();
        (parent, open(fds))
    }

    /// The worker's view of a ring from the descriptors the parent sends.
    pub(crate) fn open(fds: WorkerFds) -> Ring {
        let mut fds = fds.into_iter();
        let mut next = || fds.next().unwrap();
        let (memfd, mine, theirs) = (next(), next(), next());
        Ring::open(memfd, mine, theirs, fds.next()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Kind, HEADER_LEN};

    use super::testing::open;

    fn pair() -> (Ring, Ring) {
        super::testing::pair()
    }

    /// Whether `r`'s doorbell has been rung (and not emptied since).
    fn rung(r: &Ring) -> bool {
        crate::sys::sock::poll(
            r.bell().as_fd(),
            crate::sys::sock::Wait::Readable,
            Some(std::time::Duration::ZERO),
        )
        .unwrap()
    }

    fn frame(body_len: usize, id: u64) -> Vec<u8> {
        let mut f = Vec::new();
        wire::begin(&mut f);
        f.extend((0..body_len).map(|i| i as u8));
        wire::finish(&mut f, Kind::Run, 0, id, 7);
        f
    }

    #[test]
    fn frames_go_through_in_order_and_free_their_slots() {
        let (parent, worker) = pair();
        for round in 0..3 * SLOTS as u64 {
            assert!(parent.try_push(&[&frame(5, round)]));
            assert_eq!(worker.next().unwrap(), Next::Inline);
            let f = worker.take(u64::MAX).unwrap().unwrap();
            assert_eq!((f.header.id, f.body), (round, vec![0, 1, 2, 3, 4]));
            assert_eq!(worker.next().unwrap(), Next::Empty);
        }
    }

    #[test]
    fn a_frame_carries_when_it_was_published() {
        let (parent, worker) = pair();
        let before = crate::sys::proc::monotonic_ns();
        assert!(parent.try_push(&[&frame(1, 1)]));
        let after = crate::sys::proc::monotonic_ns();
        assert_eq!(worker.next().unwrap(), Next::Inline);
        let stamp = worker.head_stamp();
        assert!(
            (before..=after).contains(&stamp),
            "{before} <= {stamp} <= {after}"
        );
    }

    #[test]
    fn a_slot_sized_frame_fits_and_one_byte_more_does_not() {
        let (parent, worker) = pair();
        let exact = frame(SLOT_FRAME_MAX - HEADER_LEN, 1);
        assert!(Ring::fits(exact.len(), 0));
        assert!(!Ring::fits(exact.len() + 1, 0));
        assert!(!Ring::fits(10, 1), "descriptors always spill");
        // Split in two parts, as a frame and its tail are.
        assert!(parent.try_push(&[&exact[..100], &exact[100..]]));
        let f = worker.take(u64::MAX).unwrap().unwrap();
        assert_eq!(f.body, exact[HEADER_LEN..]);
    }

    #[test]
    fn large_frames_go_through_the_bulk_area_in_order_with_the_rest() {
        let (parent, worker) = pair();
        let big = frame(100_000, 1);
        assert!(parent.try_push_bulk(&[&big[..7], &big[7..]]));
        assert!(parent.try_push(&[&frame(3, 2)]));
        // No room for a whole half while the first large frame is unread: spill it.
        let whole = vec![0u8; super::super::bulk::HALF_LEN];
        assert!(!parent.try_push_bulk(&[&whole]));
        assert!(parent.try_push_spilled());
        assert_eq!(worker.next().unwrap(), Next::Inline);
        let f = worker.peek(u64::MAX).unwrap().unwrap();
        assert_eq!((f.header.id, &f.body[..]), (1, &big[HEADER_LEN..]));
        worker.skip();
        assert_eq!(worker.take(u64::MAX).unwrap().unwrap().header.id, 2);
        assert_eq!(worker.next().unwrap(), Next::Spilled);
        worker.skip();
        // All read: the half is free again, from its start.
        assert!(parent.try_push_bulk(&[&frame(5_000, 3)]));
        assert_eq!(worker.take(u64::MAX).unwrap().unwrap().header.id, 3);
        assert!(parent.release_bulk());
    }

    #[test]
    fn a_reader_asleep_on_an_unfinished_large_frame_is_rung_when_it_is_whole() {
        let (parent, worker) = pair();
        let big = frame(3 * super::super::bulk::CHUNK, 1);
        let (bulk, extent) = parent.announce_bulk(big.len()).expect("room");
        assert_eq!(worker.next().unwrap(), Next::Inline);
        assert!(worker.head_is_partial());
        // Nothing copied in yet: the reader gives up after a while and sleeps.
        assert!(worker.take(u64::MAX).unwrap().is_none());
        assert!(worker.sleep_for_frame(), "an unfinished frame is slept on");
        bulk.fill(extent, &[&big]);
        assert!(!rung(&worker), "not rung before the frame is whole");
        parent.ring_if_asleep();
        assert!(rung(&worker));
        worker.woke();
        assert!(!worker.head_is_partial());
        assert!(!worker.sleep_for_frame(), "a whole frame is not slept on");
        let f = worker.take(u64::MAX).unwrap().unwrap();
        assert_eq!(f.body, big[HEADER_LEN..]);
    }

    #[test]
    fn without_a_bulk_area_large_frames_spill_and_a_bulk_slot_is_refused() {
        let (parent, fds) = Ring::create(false).unwrap();
        assert_eq!(fds.len(), 3);
        let worker = open(fds);
        assert!(!parent.try_push_bulk(&[&frame(100_000, 1)]));
        assert!(!parent.release_bulk());
        // A slot saying "bulk" anyway, as a broken writer might.
        assert!(parent.try_push(&[&frame(0, 1)]));
        parent.lanes.forge_entry(0, u64::MAX - 1);
        assert_eq!(worker.next().unwrap(), Next::Inline);
        assert!(worker.take(u64::MAX).is_err());
    }

    #[test]
    fn a_full_lane_refuses_until_the_reader_frees_a_slot() {
        let (parent, worker) = pair();
        for i in 0..SLOTS as u64 {
            assert!(parent.try_push(&[&frame(0, i)]));
        }
        assert!(!parent.try_push(&[&frame(0, 99)]));
        assert!(!parent.try_push_spilled());
        worker.take(u64::MAX).unwrap().unwrap();
        assert!(parent.try_push_spilled());
        for i in 1..SLOTS as u64 {
            assert_eq!(worker.take(u64::MAX).unwrap().unwrap().header.id, i);
        }
        assert_eq!(worker.next().unwrap(), Next::Spilled);
        worker.skip();
        assert_eq!(worker.next().unwrap(), Next::Empty);
    }

    #[test]
    fn a_lying_writer_is_a_protocol_error_not_an_allocation() {
        let (parent, worker) = pair();
        // A header claiming a huge body, in a slot of 40 bytes.
        let mut f = frame(8, 1);
        f[0..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(parent.try_push(&[&f]));
        assert!(matches!(
            worker.take(1 << 20),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        // A slot length past the slot.
        let (parent, worker) = pair();
        assert!(parent.try_push(&[&frame(8, 1)]));
        parent.lanes.forge_entry(0, SHAPE.slot_len as u64 * 4);
        assert!(worker.next().is_err());
        assert!(worker.take(u64::MAX).is_err());
        // A tail that runs past every slot.
        parent
            .lanes
            .tx_word(Word::Tail)
            .store(SLOTS as u64 * 9, Ordering::Release);
        assert!(worker.next().is_err());
    }

    #[test]
    fn a_sleeper_is_rung_exactly_when_it_raised_its_flag() {
        let (parent, worker) = pair();
        // Nobody asleep: publishing rings nothing.
        assert!(parent.try_push(&[&frame(0, 1)]));
        assert!(!rung(&worker));
        // Something waiting: the worker must not sleep.
        assert!(!worker.sleep_for_frame());
        worker.take(u64::MAX).unwrap().unwrap();
        assert!(worker.sleep_for_frame());
        assert!(parent.try_push(&[&frame(0, 2)]));
        assert!(rung(&worker));
        worker.woke();
        assert!(!rung(&worker));
    }

    #[test]
    fn frames_pushed_unrung_ring_a_sleeper_once_when_asked() {
        let (parent, worker) = pair();
        assert!(worker.sleep_for_frame());
        for id in 0..3 {
            assert_eq!(parent.push_unrung(&[&frame(0, id)], 0), Pushed::Shared);
        }
        assert!(!rung(&worker), "not yet");
        parent.ring_if_asleep();
        assert!(rung(&worker));
        worker.woke();
        for id in 0..3 {
            assert_eq!(worker.take(u64::MAX).unwrap().unwrap().header.id, id);
        }
        // Nobody asleep: asking rings nothing.
        parent.ring_if_asleep();
        assert!(!rung(&worker));
    }

    #[test]
    fn a_writer_waiting_for_room_wakes_when_a_slot_frees() {
        let (parent, worker) = pair();
        for i in 0..SLOTS as u64 {
            assert!(worker.try_push(&[&frame(0, i)]));
        }
        let writer = std::thread::spawn(move || {
            // Far longer than the test may take: only the wake-up ends it in time.
            while !worker.try_push(&[&frame(0, 1000)]) {
                worker.wait_for_room(std::time::Duration::from_secs(60));
            }
            worker
        });
        assert_eq!(parent.take(u64::MAX).unwrap().unwrap().header.id, 0);
        let _worker = writer.join().unwrap();
        for i in 1..SLOTS as u64 {
            assert_eq!(parent.take(u64::MAX).unwrap().unwrap().header.id, i);
        }
        assert_eq!(parent.take(u64::MAX).unwrap().unwrap().header.id, 1000);
    }

    #[test]
    fn two_threads_pass_a_hundred_thousand_frames_without_losing_a_wakeup() {
        let (parent, worker) = pair();
        const N: u64 = 100_000;
        let reader = std::thread::spawn(move || {
            let mut next = 0;
            while next < N {
                match worker.next().unwrap() {
                    Next::Inline => {
                        assert_eq!(worker.take(u64::MAX).unwrap().unwrap().header.id, next);
                        next += 1;
                    }
                    Next::Spilled => unreachable!(),
                    Next::Empty => {
                        if worker.sleep_for_frame() {
                            crate::sys::sock::poll(
                                worker.bell().as_fd(),
                                crate::sys::sock::Wait::Readable,
                                None,
                            )
                            .unwrap();
                            worker.woke();
                        }
                    }
                }
            }
        });
        for i in 0..N {
            while !parent.try_push(&[&frame(3, i)]) {
                std::thread::yield_now();
            }
        }
        reader.join().unwrap();
    }
}
