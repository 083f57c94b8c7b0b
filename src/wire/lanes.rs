//! Two lanes of fixed-size slots in one memory file: the storage under both rings,
//! the pool's ([`super::ring`]) and the pipes' (`crate::pipe::ring`).
//!
//! A file holds a control page, then lane 0's slots, then lane 1's. Each side of the
//! file writes one lane and reads the other. A writer copies a frame into the next free
//! slot and then publishes it by advancing the lane's `tail`; a reader copies it out
//! and frees the slot by advancing `head`. Who may write or read a lane at once, and
//! how a side that found nothing sleeps, is the business of the protocol on top, which
//! keeps its own words in the lane's control lines ([`Word`]).
//!
//! Everything read here is checked as if the other side were hostile: a slot's length
//! against the slot, a frame's header against the reader's limit before its body is
//! allocated, and the counters against each other. A lie is a [`ProtocolError`],
//! never an out-of-bounds access (every access goes through [`Region`]'s checks).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::stream::Frame;
use super::{Header, HEADER_LEN};
use crate::error::ProtocolError;
use crate::sys::shm::{self, Region};

/// Before each slot's frame: its length (or [`SPILLED`]), then a word the protocol
/// chooses (the pool: when the frame was published; pipes: its sequence number).
pub(crate) const ENTRY_LEN: usize = 16;
/// The entry word of a slot whose frame went on the socket.
const SPILLED: u64 = u64::MAX;
/// The entry word of a slot whose frame lies in the ring's bulk area
/// ([`super::bulk`]); the slot holds its offset and length there.
const BULK: u64 = u64::MAX - 1;
/// Identifies a lanes file and its layout version; the shape follows it.
const MAGIC: u64 = 0x7072_6f63_7269_6e02; // "procrin" 2
const SHAPE_SLOTS: usize = 8;
const SHAPE_SLOT_LEN: usize = 16;
/// The control page: the magic and the shape, then each lane's words, each on its
/// own cache line.
const CONTROL: usize = 4096;
const LINE: usize = 128;
/// Control lines per lane.
const LANE_LINES: usize = 8;

/// How many slots a lane has and how long each is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) slots: u64,
    pub(crate) slot_len: usize,
}

impl Shape {
    /// Bytes of frame (header and body) that fit in one slot.
    pub(crate) const fn frame_max(self) -> usize {
        self.slot_len - ENTRY_LEN
    }

    const fn lane_len(self) -> usize {
        self.slots as usize * self.slot_len
    }

    const fn file_len(self) -> usize {
        CONTROL + 2 * self.lane_len()
    }
}

/// A lane's control words, each on its own cache line. The protocol on top gives
/// [`Word::Sleep`], [`Word::Room`], [`Word::Sent`], [`Word::Taken`] and
/// [`Word::Lock`] their meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Word {
    /// Frames published so far (the writer's).
    Tail = 0,
    /// Frames read so far (the reader's).
    Head = 1,
    /// About readers sleeping for lack of frames.
    Sleep = 2,
    /// About writers sleeping for lack of room.
    Room = 3,
    /// Frames that went on the socket instead.
    Sent = 4,
    /// Of those, frames read.
    Taken = 5,
    /// A process-shared mutex for the lane's writers.
    Lock = 6,
}

/// What the reader found at the head of its lane.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing yet.
    Empty,
    /// A frame in shared memory: in the slot ([`Lanes::peek`] copies it out), or in the
    /// writer's bulk area, where the slot says ([`Lanes::bulk_at_head`]).
    Inline,
    /// The next frame is on the socket: read it, then [`Lanes::skip`].
    Spilled,
}

/// One side's view of a lanes file: the lane it writes and the lane it reads.
#[derive(Debug)]
pub(crate) struct Lanes {
    region: Region,
    shape: Shape,
    tx: usize,
    rx: usize,
}

impl Lanes {
    /// A new file of `shape`, zeroed, with the writer mutexes initialised; and side 0's
    /// view of it (writes lane 0, reads lane 1).
    pub(crate) fn create(name: &str, shape: Shape) -> io::Result<(Lanes, OwnedFd)> {
        let len = shape.file_len();
        let memfd = shm::memfd(name, len as u64, shm::Size::Fixed)?;
        let region = Region::map(memfd.as_fd(), len)?;
        for lane in 0..2 {
            region.mutex(word_offset(lane, Word::Lock)).init()?;
        }
        region
            .u64_at(SHAPE_SLOTS)
            .store(shape.slots, Ordering::Relaxed);
        region
            .u64_at(SHAPE_SLOT_LEN)
            .store(shape.slot_len as u64, Ordering::Relaxed);
        region.u64_at(0).store(MAGIC, Ordering::Release);
        Ok((
            Lanes {
                region,
                shape,
                tx: 0,
                rx: 1,
            },
            memfd,
        ))
    }

    /// Side `side`'s view (0 or 1) of a file another process made with `shape`.
    ///
    /// # Errors
    /// `InvalidData` if the file is not a lanes file of that shape.
    pub(crate) fn open(memfd: &OwnedFd, shape: Shape, side: u8) -> io::Result<Lanes> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        if side > 1 {
            return Err(invalid("a ring side other than 0 or 1"));
        }
        if shm::file_len(memfd.as_fd())? < shape.file_len() as u64 {
            return Err(invalid("ring too small"));
        }
        let region = Region::map(memfd.as_fd(), shape.file_len())?;
        let found = (
            region.u64_at(0).load(Ordering::Acquire),
            region.u64_at(SHAPE_SLOTS).load(Ordering::Relaxed),
            region.u64_at(SHAPE_SLOT_LEN).load(Ordering::Relaxed),
        );
        if found != (MAGIC, shape.slots, shape.slot_len as u64) {
            return Err(invalid("not a procpool ring of the expected shape"));
        }
        let tx = usize::from(side);
        Ok(Lanes {
            region,
            shape,
            tx,
            rx: 1 - tx,
        })
    }

    /// The side this view is: 0 writes lane 0, 1 writes lane 1.
    pub(crate) fn side(&self) -> u8 {
        self.tx as u8
    }

    /// A word of the lane this side writes.
    pub(crate) fn tx_word(&self, word: Word) -> &AtomicU64 {
        self.region.u64_at(word_offset(self.tx, word))
    }

    /// A word of the lane this side reads.
    pub(crate) fn rx_word(&self, word: Word) -> &AtomicU64 {
        self.region.u64_at(word_offset(self.rx, word))
    }

    /// The 32-bit flag at the start of a word's line, of the lane this side writes.
    pub(crate) fn tx_flag(&self, word: Word) -> &AtomicU32 {
        self.region.u32_at(word_offset(self.tx, word))
    }

    /// As [`tx_flag`](Self::tx_flag), of the lane this side reads.
    pub(crate) fn rx_flag(&self, word: Word) -> &AtomicU32 {
        self.region.u32_at(word_offset(self.rx, word))
    }

    /// The writers' mutex of the lane this side writes.
    pub(crate) fn tx_lock(&self) -> shm::RobustMutex<'_> {
        self.region.mutex(word_offset(self.tx, Word::Lock))
    }

    /// Whether a frame of `len` bytes with `nfds` descriptors goes in a slot.
    pub(crate) fn fits(&self, len: usize, nfds: usize) -> bool {
        nfds == 0 && len <= self.shape.frame_max()
    }

    /// Writes `parts` (one frame, back to back; together at most a slot's frame) and
    /// `tag` into the next free slot and publishes it (a release store of `tail`).
    /// False, and nothing written, when the lane is full. The caller is the lane's
    /// only writer for the duration (by the protocol, or by [`Word::Lock`]).
    pub(crate) fn try_push(&self, parts: &[&[u8]], tag: u64) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert!(len <= self.shape.frame_max(), "a frame over a slot: {len}");
        let Some(slot) = self.free_slot() else {
            return false;
        };
        let mut at = slot + ENTRY_LEN;
        for part in parts {
            self.region.write(at, part);
            at += part.len();
        }
        self.region.write(slot, &(len as u64).to_le_bytes());
        self.region.write(slot + 8, &tag.to_le_bytes());
        self.advance(self.tx_word(Word::Tail));
        true
    }

    /// Publishes a slot saying that the next frame goes on the socket. False when the
    /// lane is full.
    pub(crate) fn try_push_spilled(&self, tag: u64) -> bool {
        let Some(slot) = self.free_slot() else {
            return false;
        };
        self.region.write(slot, &SPILLED.to_le_bytes());
        self.region.write(slot + 8, &tag.to_le_bytes());
        self.advance(self.tx_word(Word::Tail));
        true
    }

    /// Publishes a slot saying that the next frame lies at `offset` in the writer's
    /// bulk area and is `len` bytes long; the lane index of that slot, or `None` when
    /// the lane is full.
    pub(crate) fn try_push_bulk(&self, offset: u64, len: u64, tag: u64) -> Option<u64> {
        let slot = self.free_slot()?;
        let index = self.tx_word(Word::Tail).load(Ordering::Relaxed);
        self.region.write(slot + ENTRY_LEN, &offset.to_le_bytes());
        self.region.write(slot + ENTRY_LEN + 8, &len.to_le_bytes());
        self.region.write(slot, &BULK.to_le_bytes());
        self.region.write(slot + 8, &tag.to_le_bytes());
        self.advance(self.tx_word(Word::Tail));
        Some(index)
    }

    /// Slots of the lane this side writes that the reader has freed so far.
    pub(crate) fn tx_freed(&self) -> u64 {
        self.tx_word(Word::Head).load(Ordering::Acquire)
    }

    /// Whether the lane this side writes has no free slot.
    pub(crate) fn is_full(&self) -> bool {
        self.free_slot().is_none()
    }

    /// The offset of the slot the next frame goes in, if the reader has freed it.
    fn free_slot(&self) -> Option<usize> {
        let tail = self.tx_word(Word::Tail).load(Ordering::Relaxed);
        let head = self.tx_word(Word::Head).load(Ordering::Acquire);
        // A reader that ran ahead of the writer (only a broken peer) frees nothing.
        (tail.wrapping_sub(head) < self.shape.slots).then(|| self.slot(self.tx, tail))
    }

    fn advance(&self, word: &AtomicU64) {
        word.store(
            word.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
    }

    fn slot(&self, lane: usize, index: u64) -> usize {
        CONTROL
            + lane * self.shape.lane_len()
            + (index % self.shape.slots) as usize * self.shape.slot_len
    }

    /// The entry words of slot `index` of the incoming lane: length and tag.
    fn entry(&self, index: u64) -> (u64, u64) {
        self.two_words(self.slot(self.rx, index))
    }

    /// Two little-endian words at `offset`, copied (the peer may be writing them).
    fn two_words(&self, offset: usize) -> (u64, u64) {
        let mut words = [0u8; 16];
        self.region.read(offset, &mut words);
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&words[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        (word(0), word(1))
    }

    /// What the head of this side's incoming lane holds, and the tag of its slot.
    ///
    /// # Errors
    /// A protocol error when the lane's counters or the slot's length make no sense
    /// (the peer is broken or hostile).
    pub(crate) fn next(&self) -> Result<(Next, u64), ProtocolError> {
        let head = self.rx_word(Word::Head).load(Ordering::Relaxed);
        let tail = self.rx_word(Word::Tail).load(Ordering::Acquire);
        if tail == head {
            return Ok((Next::Empty, 0));
        }
        if tail.wrapping_sub(head) > self.shape.slots {
            return Err(malformed(format!(
                "the ring's writer is {} frames ahead of its reader, in {} slots",
                tail.wrapping_sub(head),
                self.shape.slots
            )));
        }
        match self.entry(head) {
            (SPILLED, tag) => Ok((Next::Spilled, tag)),
            // In shared memory too: the bulk area's owner copies it out (a lanes file
            // without one, a pipe's, refuses it in `copy_out`).
            (BULK, tag) => Ok((Next::Inline, tag)),
            (len, tag) if (HEADER_LEN as u64..=self.shape.frame_max() as u64).contains(&len) => {
                Ok((Next::Inline, tag))
            }
            (len, _) => Err(malformed(format!("a ring slot holding {len} bytes"))),
        }
    }

    /// The tag of the slot at the head of the incoming lane (after
    /// [`next`](Self::next) said it is not empty): one word read, nothing checked.
    pub(crate) fn head_tag(&self) -> u64 {
        let head = self.rx_word(Word::Head).load(Ordering::Relaxed);
        let mut word = [0u8; 8];
        self.region.read(self.slot(self.rx, head) + 8, &mut word);
        u64::from_le_bytes(word)
    }

    /// Copies out the frame at `head`'s slot (after [`next`](Self::next) said
    /// [`Next::Inline`]) without freeing it. Its header is checked against `limit`
    /// before its body is copied.
    ///
    /// # Errors
    /// A protocol error for a header that does not parse, a body over `limit`, a
    /// length that disagrees with the slot's, or descriptors announced in a slot.
    pub(crate) fn copy_out(&self, head: u64, limit: u64) -> Result<Frame, ProtocolError> {
        let slot = self.slot(self.rx, head);
        let len = self.entry(head).0 as usize;
        if !(HEADER_LEN..=self.shape.frame_max()).contains(&len) {
            return Err(malformed(format!("a ring slot holding {len} bytes")));
        }
        let mut raw = [0u8; HEADER_LEN];
        self.region.read(slot + ENTRY_LEN, &mut raw);
        let header = Header::parse(&raw, limit)?;
        if header.len != (len - HEADER_LEN) as u64 || header.nfds != 0 {
            return Err(malformed(format!(
                "a ring slot of {len} bytes holding a frame of {} with {} descriptors",
                header.len, header.nfds
            )));
        }
        let mut body = Vec::with_capacity(len - HEADER_LEN);
        self.region
            .read_into(slot + ENTRY_LEN + HEADER_LEN, len - HEADER_LEN, &mut body);
        Ok(Frame {
            header,
            body,
            fds: Vec::new(),
        })
    }

    /// Where the frame at the head of the incoming lane lies in the peer's bulk area
    /// (offset and length), if its slot says it lies there.
    pub(crate) fn bulk_at_head(&self) -> Option<(u64, u64)> {
        let head = self.rx_word(Word::Head).load(Ordering::Relaxed);
        if self.entry(head).0 != BULK {
            return None;
        }
        Some(self.two_words(self.slot(self.rx, head) + ENTRY_LEN))
    }

    /// Copies out the frame at the head without freeing its slot (after
    /// [`next`](Self::next) said [`Next::Inline`]).
    ///
    /// # Errors
    /// As [`copy_out`](Self::copy_out).
    pub(crate) fn peek(&self, limit: u64) -> Result<Frame, ProtocolError> {
        self.copy_out(self.rx_word(Word::Head).load(Ordering::Relaxed), limit)
    }

    /// Frees the head slot: its frame was read (from the slot or the socket).
    pub(crate) fn skip(&self) {
        self.advance(self.rx_word(Word::Head));
    }

    /// Overwrites the length word of slot `index` of the lane this side writes, as a
    /// broken or hostile writer might.
    #[cfg(test)]
    pub(crate) fn forge_entry(&self, index: u64, len: u64) {
        self.region
            .write(self.slot(self.tx, index), &len.to_le_bytes());
    }
}

fn word_offset(lane: usize, word: Word) -> usize {
    LINE + (lane * LANE_LINES + word as usize) * LINE
}

fn malformed(reason: String) -> ProtocolError {
    ProtocolError::Malformed { reason }
}

// The control lines of both lanes fit the control page.
const _: () = assert!(LINE + 2 * LANE_LINES * LINE <= CONTROL);
const _: () = assert!(shm::MUTEX_SIZE <= LINE);
