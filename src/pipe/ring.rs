//! A pipe's shared-memory ring: messages between the two ends without a system call
//! while the receiver is awake.
//!
//! A pipe made by [`pipe`](super::pipe), [`duplex`](super::duplex) or
//! [`simplex`](super::simplex()) has, beside its socketpair, one memory file of two
//! lanes ([`crate::wire::lanes`]), one per direction, of [`SHAPE`]'s slots. Every copy
//! of an end, in every process, maps the same file.
//!
//! # One order, two ways
//! Every message of a lane gets the next sequence number (the lane's published
//! frames plus its socket frames), under the lane's process-shared writers' mutex. It
//! then goes into a slot if it fits, carries no descriptors, no receiver sleeps and a
//! slot is free; otherwise on the socket, with the number in its header. A receiver
//! delivers whichever of the ring's head and the socket's next frame has the lower
//! number. A socket frame's number is taken before its bytes are written, so when a
//! receiver holds socket frame `s`, every slot numbered below `s` is already
//! published; and a sender finishes writing a socket frame before it sends its next
//! message, so a slot that follows it in one sender's order never overtakes it. The
//! socket frames not yet read (`Sent` beyond `Taken`) tell a receiver whether to look
//! at the socket at all: while none are, it takes from the ring without a system call.
//!
//! # Sleeping
//! A receiver that finds nothing may poll for a while, then counts itself in the lane's
//! sleepers, looks once more, and waits on the socket. A sender seeing a sleeper sends
//! on the socket, which wakes it. A sender that published in a slot and only then sees
//! a sleeper (it counted itself in between) sends a *nudge*: an empty frame on the
//! socket that receivers discard. The count and the tail are each written before the
//! other side's is read, with a sequentially consistent fence between (Dekker's
//! pattern), so no wake-up is lost. Several processes can sleep on one end: the
//! socket wakes them all, and those that find nothing sleep again.
//!
//! # Several processes on one end
//! Writers take the lane's robust mutex for the few hundred nanoseconds a slot takes;
//! one that dies holding it leaves nothing half-published (a slot is published by its
//! tail store, last). Readers claim a slot with a compare-and-swap of `head`, after
//! copying it out; the loser of a race drops its copy. A writer that dies after taking
//! a socket frame's number and before writing it leaves `Sent` ahead of `Taken`: the
//! receivers then look at the socket on every receive, which costs a system call,
//! never a message. A sleeper that dies counted stays counted: senders then use the
//! socket, which costs speed, never a wake-up.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::error::ProtocolError;
use crate::sys::shm::RobustMutex;
use crate::wire::lanes::{Lanes, Next, Shape, Word};
use crate::wire::stream::Frame;

/// A pipe's lanes: 64 slots of 1 KiB each way (a message of up to 976 bytes of body
/// goes through a slot).
pub(crate) const SHAPE: Shape = Shape {
    slots: 64,
    slot_len: 1024,
};

/// One end's view of a pipe's ring.
#[derive(Debug)]
pub(super) struct PipeRing {
    lanes: Lanes,
    /// Kept to pass the end to another process.
    memfd: OwnedFd,
}

/// Where [`PipeRing::send`] put a message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// In a slot; `nudge` when a receiver started sleeping meanwhile.
    Ring { nudge: bool },
    /// Nowhere yet: its number is in its header, and it goes on the socket.
    Socket,
    /// Nowhere, and unnumbered: it would go in a slot, but none is free (only when
    /// the caller asked to hear it).
    Full,
}

/// What [`PipeRing::send`] does when a message would go in a slot but none is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WhenFull {
    /// Number it for the socket.
    Socket,
    /// Say so ([`Sent::Full`]): the caller waits for room and sends again.
    Report,
}

impl PipeRing {
    /// A new ring's two ends: side 0 (writes lane 0) and side 1.
    pub(super) fn pair() -> io::Result<(PipeRing, PipeRing)> {
        let (lanes, memfd) = Lanes::create("procpool-pipe", SHAPE)?;
        let other = PipeRing::open(crate::sys::sock::dup(memfd.as_fd())?, 1)?;
        Ok((PipeRing { lanes, memfd }, other))
    }

    /// The end `side` of a ring whose file came from another process.
    ///
    /// # Errors
    /// `InvalidData` for a file that is not a pipe's ring.
    pub(super) fn open(memfd: OwnedFd, side: u8) -> io::Result<PipeRing> {
        Ok(PipeRing {
            lanes: Lanes::open(&memfd, SHAPE, side)?,
            memfd,
        })
    }

    /// The memory file, to send this end to another process.
    pub(super) fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// Which side this end is.
    pub(super) fn side(&self) -> u8 {
        self.lanes.side()
    }

    // ---- sending ----

    /// Gives `frame` (a finished message frame) the next sequence number of this end's
    /// outgoing lane, and publishes it in a slot if it can go there.
    ///
    /// # Errors
    /// The writers' mutex failed (not expected: it is robust against dead holders).
    pub(super) fn send(&self, frame: &mut [u8], nfds: usize, full: WhenFull) -> io::Result<Sent> {
        let inline = self.lanes.fits(frame.len(), nfds);
        let lock = Held::lock(self.lanes.tx_lock())?;
        let tail = self.lanes.tx_word(Word::Tail).load(Ordering::Relaxed);
        let sent = self.lanes.tx_word(Word::Sent);
        let seq = tail.wrapping_add(sent.load(Ordering::Relaxed));
        crate::wire::set_id(frame, seq);
        let sleepers = self.lanes.tx_word(Word::Sleep);
        if inline && sleepers.load(Ordering::SeqCst) == 0 {
            if self.lanes.try_push(&[frame], seq) {
                drop(lock);
                fence(Ordering::SeqCst);
                let nudge = sleepers.load(Ordering::SeqCst) != 0;
                return Ok(Sent::Ring { nudge });
            }
            if full == WhenFull::Report {
                return Ok(Sent::Full);
            }
        }
        sent.store(
            sent.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
        Ok(Sent::Socket)
    }

    /// How many frames receivers have taken from this end's outgoing lane: a
    /// receiver that took one since the sender last looked is alive.
    pub(super) fn peer_progress(&self) -> u64 {
        self.lanes.tx_word(Word::Head).load(Ordering::Acquire)
    }

    // ---- receiving ----

    /// The head of this end's incoming lane: its index and sequence number, if a frame
    /// is there.
    ///
    /// # Errors
    /// A protocol error for counters or a slot that make no sense, or a slot saying
    /// "spilled" (pipes never spill).
    pub(super) fn peek(&self) -> Result<Option<(u64, u64)>, ProtocolError> {
        let head = self.lanes.rx_word(Word::Head).load(Ordering::Acquire);
        match self.lanes.next()? {
            (Next::Empty, _) => Ok(None),
            (Next::Inline, seq) => Ok(Some((head, seq))),
            (Next::Spilled, _) => Err(ProtocolError::Unexpected {
                what: "a spilled slot in a pipe's ring".to_owned(),
            }),
        }
    }

    /// Takes the frame at `head` (from [`peek`](Self::peek)); `None` if a receiver
    /// in another process took it first.
    ///
    /// # Errors
    /// As [`Lanes::copy_out`].
    pub(super) fn take(&self, head: u64, limit: u64) -> Result<Option<Frame>, ProtocolError> {
        let frame = self.lanes.copy_out(head, limit)?;
        // The slot stays the writer's to reuse only once `head` moves past it, so the
        // copy is whole if the claim succeeds.
        let claimed = self
            .lanes
            .rx_word(Word::Head)
            .compare_exchange(
                head,
                head.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        Ok(claimed.then_some(frame))
    }

    /// Whether frames numbered for the socket have not all been read yet (then the
    /// socket must be looked at before a slot is delivered). Call after
    /// [`peek`](Self::peek): the tail it read makes the count current.
    pub(super) fn socket_pending(&self) -> bool {
        let sent = self.lanes.rx_word(Word::Sent).load(Ordering::Acquire);
        let taken = self.lanes.rx_word(Word::Taken).load(Ordering::Acquire);
        sent != taken
    }

    /// A frame numbered for the socket was read from it.
    pub(super) fn took_from_socket(&self) {
        self.lanes
            .rx_word(Word::Taken)
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Counts this receiver among the incoming lane's sleepers until the guard drops.
    /// Look at the ring once more after this and before sleeping.
    pub(super) fn sleeping(&self) -> Sleeping<'_> {
        let count = self.lanes.rx_word(Word::Sleep);
        count.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Sleeping(count)
    }
}

/// A receiver counted among its lane's sleepers (see [`PipeRing::sleeping`]).
#[derive(Debug)]
pub(crate) struct Sleeping<'a>(&'a AtomicU64);

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The writers' mutex, held.
struct Held<'a>(RobustMutex<'a>);

impl<'a> Held<'a> {
    fn lock(mutex: RobustMutex<'a>) -> io::Result<Held<'a>> {
        // A holder that died held it between two whole steps (the tail store publishes
        // a slot, last): there is nothing to repair.
        mutex.lock()?;
        Ok(Held(mutex))
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Kind};

    fn message(body_len: usize) -> Vec<u8> {
        let mut f = Vec::new();
        wire::begin(&mut f);
        f.extend((0..body_len).map(|i| i as u8));
        wire::finish(&mut f, Kind::Message, 0, 0, 0);
        f
    }

    #[test]
    fn messages_are_numbered_in_one_order_across_ring_and_socket() {
        let (a, b) = PipeRing::pair().unwrap();
        let mut small = message(10);
        let mut big = message(SHAPE.frame_max());
        assert_eq!(
            a.send(&mut small, 0, WhenFull::Socket).unwrap(),
            Sent::Ring { nudge: false }
        );
        assert_eq!(a.send(&mut big, 0, WhenFull::Socket).unwrap(), Sent::Socket);
        assert_eq!(
            a.send(&mut small, 1, WhenFull::Socket).unwrap(),
            Sent::Socket
        );
        assert_eq!(
            a.send(&mut small, 0, WhenFull::Socket).unwrap(),
            Sent::Ring { nudge: false }
        );
        // Slot 0 is number 0; the socket took 1 and 2; slot 1 is number 3.
        assert_eq!(b.peek().unwrap(), Some((0, 0)));
        assert!(b.socket_pending());
        let f = b.take(0, u64::MAX).unwrap().unwrap();
        assert_eq!((f.header.id, f.body.len()), (0, 10));
        assert_eq!(b.peek().unwrap(), Some((1, 3)));
        b.took_from_socket();
        b.took_from_socket();
        assert!(!b.socket_pending());
        // A second claim of the same slot loses.
        assert!(b.take(1, u64::MAX).unwrap().is_some());
        assert!(b.take(1, u64::MAX).unwrap().is_none());
        assert_eq!(b.peek().unwrap(), None);
        // The other direction is independent.
        assert_eq!(a.peek().unwrap(), None);
        assert_eq!(a.peer_progress(), 2);
    }

    #[test]
    fn a_sleeping_receiver_makes_senders_use_the_socket() {
        let (a, b) = PipeRing::pair().unwrap();
        let sleeping = b.sleeping();
        assert_eq!(
            a.send(&mut message(1), 0, WhenFull::Socket).unwrap(),
            Sent::Socket
        );
        drop(sleeping);
        assert_eq!(
            a.send(&mut message(1), 0, WhenFull::Socket).unwrap(),
            Sent::Ring { nudge: false }
        );
        assert_eq!(b.peek().unwrap(), Some((0, 1)));
    }

    #[test]
    fn a_full_lane_reports_or_sends_on_the_socket() {
        let (a, b) = PipeRing::pair().unwrap();
        for _ in 0..SHAPE.slots {
            let sent = a.send(&mut message(0), 0, WhenFull::Socket).unwrap();
            assert!(matches!(sent, Sent::Ring { .. }));
        }
        assert_eq!(
            a.send(&mut message(0), 0, WhenFull::Report).unwrap(),
            Sent::Full
        );
        assert_eq!(
            a.send(&mut message(0), 0, WhenFull::Socket).unwrap(),
            Sent::Socket
        );
        assert_eq!(b.peek().unwrap(), Some((0, 0)));
        // Room again once a receiver frees a slot.
        assert!(b.take(0, u64::MAX).unwrap().is_some());
        let sent = a.send(&mut message(0), 0, WhenFull::Report).unwrap();
        assert_eq!(sent, Sent::Ring { nudge: false });
        // Numbers: 64 slots, one for the socket, then the 66th message, in slot 65.
        assert_eq!(b.peek().unwrap(), Some((1, 1)));
        assert!(b.socket_pending());
    }

    #[test]
    fn an_end_opens_only_a_pipe_ring() {
        let (a, _b) = PipeRing::pair().unwrap();
        let dup = || crate::sys::sock::dup(a.memfd()).unwrap();
        assert!(PipeRing::open(dup(), 1).is_ok());
        assert!(PipeRing::open(dup(), 2).is_err());
        let (_pool, fds) = crate::wire::ring::Ring::create(false).unwrap();
        let memfd = fds.into_iter().next().unwrap();
        assert!(PipeRing::open(memfd, 1).is_err(), "another shape");
    }
}
