//! The shared queue: a byte ring in a memory file, a robust mutex, and wake-ups.
//!
//! # Layout of the memory file
//! ```text
//! page 0 (control)                          pages 1.. (data)
//! +-------+-------------------+---------+  +--------------------------------------+
//! | mutex | fixed fields      | 2 state |  | ring of records:                     |
//! |       | (maxsize, closed, | slots   |  |   [len u64][fd_seq u64][bytes, pad 8] |
//! |       |  fd_seq, ...)     |         |  | wrapping at `cap`                    |
//! +-------+-------------------+---------+  +--------------------------------------+
//! ```
//! Every change happens under the mutex. The variable state (`head`, `used`, `len`,
//! `unfinished`, `cap`) lives in two slots, and a change writes the slot not in use,
//! then flips `current` with one store. A process killed in the middle of a change —
//! the mutex then tells the next locker `OwnerDied` — has therefore either changed
//! the queue completely or not at all: an item whose `put` was cut short is not in
//! the queue, and an item whose `get` was cut short is still there.
//!
//! # Growing
//! The ring starts at 64 KiB and doubles (at least) when a record does not fit: the
//! file grows first, then the part of the ring that wrapped is moved past the old
//! end, then the new state is published. Each process maps the data pages again when
//! it finds `cap` changed. When the queue empties, a large ring shrinks back and its
//! pages are returned to the system.
//!
//! # Handles inside items
//! Descriptors cannot be stored in memory. An item with handles sends them, under
//! the mutex, as one message on a `SOCK_SEQPACKET` pair ("parking") tagged with a
//! sequence number that the record also carries; the getter of that record receives
//! messages until it finds its number, dropping stale ones (left by a putter killed
//! between parking and publishing).
//!
//! # Waiting
//! A 32-bit `seq` word changes with every change of state. Blocking waiters sleep on
//! it with a futex; async waiters watch an eventfd through tokio. A changer wakes
//! each kind only when some waiter of that kind is registered.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::sys::shm::{self, Region};
use crate::sys::sock;
use crate::waitcell::{CellGuard, Step, WaitCell, PAGE, USER};

/// The data ring starts after the shared page in the file.
const DATA_OFF: u64 = PAGE;
/// The ring's initial (and shrunk-back) size.
const INITIAL_CAP: u64 = 64 * 1024;
/// An empty ring bigger than this gives its pages back.
const SHRINK_ABOVE: u64 = 4 << 20;
/// Bytes before each item in the ring.
const RECORD_HEADER: u64 = 16;
/// Identifies a procpool queue's page, layout version 2.
const MAGIC: u64 = 0x7071_7565_7565_0002;

// The queue's fields in the shared page.
const F_MAXSIZE: usize = USER;
const F_CLOSED: usize = USER + 8;
const F_FD_SEQ: usize = USER + 16;
const F_CURRENT: usize = USER + 24;
const SLOTS: [usize; 2] = [USER + 64, USER + 128];

/// The variable part of the state, as one slot holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// Ring offset of the first record.
    head: u64,
    /// Bytes of records in the ring.
    used: u64,
    /// Items in the queue.
    pub(crate) len: u64,
    /// Items put and not yet marked done (`JoinableQueue`).
    pub(crate) unfinished: u64,
    /// Ring size in bytes.
    cap: u64,
}

/// A queue as one process sees it.
#[derive(Debug)]
pub(crate) struct Core {
    cell: WaitCell,
    /// The data pages as mapped here; remapped when `cap` changes. Only touched with
    /// the shared mutex held, which also orders threads of this process.
    data: Mutex<Option<Region>>,
    park_tx: OwnedFd,
    park_rx: OwnedFd,
}

/// The descriptors that make a queue, in the order they travel.
pub(crate) type Fds = [OwnedFd; 4];

/// Why an operation on the shared state failed.
#[derive(Debug)]
pub(crate) enum CoreError {
    Io(io::Error),
    /// The shared state holds values no procpool process writes.
    Corrupt(&'static str),
}

impl From<io::Error> for CoreError {
    fn from(e: io::Error) -> Self {
        CoreError::Io(e)
    }
}

/// The outcome of one attempt under the lock.
pub(crate) type Attempt<R> = Poll<R>;

/// Access to the queue with the mutex held.
pub(crate) struct Guard<'a> {
    core: &'a Core,
    data: MutexGuard<'a, Option<Region>>,
    state: State,
    changed: bool,
    /// Dropped last: publishing happens before the mutex is released.
    cell: CellGuard<'a>,
}

/// A popped item: its bytes and the descriptors of its handles.
#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

impl Core {
    /// Creates a queue holding at most `maxsize` items (0: unbounded).
    pub(crate) fn create(maxsize: u64) -> io::Result<Core> {
        let cell = WaitCell::create(
            "procpool-queue",
            DATA_OFF + INITIAL_CAP,
            shm::Size::Growing,
            MAGIC,
        )?;
        cell.page().u64_at(F_MAXSIZE).store(maxsize, Relaxed);
        let (park_tx, park_rx) = sock::pair(sock::Kind::SeqPacket)?;
        let core = Core {
            cell,
            data: Mutex::new(None),
            park_tx,
            park_rx,
        };
        core.write_slot(
            0,
            State {
                head: 0,
                used: 0,
                len: 0,
                unfinished: 0,
                cap: INITIAL_CAP,
            },
        );
        core.page().u64_at(F_CURRENT).store(0, Release);
        Ok(core)
    }

    fn page(&self) -> &Region {
        self.cell.page()
    }

    /// The descriptors to send to another process (borrowed; the sender duplicates).
    pub(crate) fn fds(&self) -> [std::os::fd::BorrowedFd<'_>; 4] {
        [
            self.cell.memfd(),
            self.cell.event_fd(),
            self.park_tx.as_fd(),
            self.park_rx.as_fd(),
        ]
    }

    /// Opens a queue from descriptors received from another process.
    pub(crate) fn open(fds: Fds) -> io::Result<Core> {
        let [memfd, event, park_tx, park_rx] = fds;
        if shm::file_len(memfd.as_fd())? < DATA_OFF + INITIAL_CAP {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the queue's memory file is too short",
            ));
        }
        Ok(Core {
            cell: WaitCell::open(memfd, event, MAGIC)?,
            data: Mutex::new(None),
            park_tx,
            park_rx,
        })
    }

    pub(crate) fn maxsize(&self) -> u64 {
        self.page().u64_at(F_MAXSIZE).load(Relaxed)
    }

    fn read_slot(&self, i: usize) -> State {
        let at = |k: usize| self.page().u64_at(SLOTS[i] + 8 * k).load(Relaxed);
        State {
            head: at(0),
            used: at(1),
            len: at(2),
            unfinished: at(3),
            cap: at(4),
        }
    }

    fn write_slot(&self, i: usize, s: State) {
        let put = |k: usize, v: u64| self.page().u64_at(SLOTS[i] + 8 * k).store(v, Relaxed);
        put(0, s.head);
        put(1, s.used);
        put(2, s.len);
        put(3, s.unfinished);
        put(4, s.cap);
    }

    /// Takes the shared mutex and maps the data pages as they are now.
    pub(crate) fn lock(&self) -> Result<Guard<'_>, CoreError> {
        // Threads of this process queue on the local mutex first; the shared one is
        // then taken by one thread per process at a time.
        let data = self.data.lock().unwrap_or_else(|p| p.into_inner());
        // A locker that died has either published its change or not (see the module
        // documentation): nothing to repair.
        let cell = self.cell.lock()?;
        let mut guard = Guard {
            core: self,
            data,
            state: State {
                head: 0,
                used: 0,
                len: 0,
                unfinished: 0,
                cap: 0,
            },
            changed: false,
            cell,
        };
        let current = self.page().u64_at(F_CURRENT).load(Relaxed);
        if current > 1 {
            return Err(CoreError::Corrupt("state slot index"));
        }
        let s = self.read_slot(current as usize);
        if s.cap < INITIAL_CAP || s.head >= s.cap || s.used > s.cap || s.len > s.used {
            return Err(CoreError::Corrupt("ring state"));
        }
        guard.state = s;
        guard.map_data()?;
        Ok(guard)
    }

    fn step<R>(
        &self,
        attempt: &mut impl FnMut(&mut Guard<'_>) -> Result<Attempt<R>, CoreError>,
    ) -> Result<Step<R>, CoreError> {
        let mut g = self.lock()?;
        Ok(match attempt(&mut g)? {
            Poll::Ready(r) => Step::Ready(r),
            Poll::Pending => Step::Pending,
        })
    }

    /// Runs `attempt` under the lock until it is ready, sleeping between tries while
    /// nothing changes; `Ok(None)` at the deadline.
    pub(crate) fn blocking_wait<R>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Guard<'_>) -> Result<Attempt<R>, CoreError>,
    ) -> Result<Option<R>, CoreError> {
        self.cell
            .blocking_wait(deadline, |_| self.step(&mut attempt))
    }

    /// Async form of [`blocking_wait`](Self::blocking_wait), without a deadline
    /// (callers wrap it in `tokio::time::timeout`).
    ///
    /// # Cancel safety
    /// Cancel safe: nothing changes unless `attempt` returns ready, which happens
    /// inside one poll.
    pub(crate) async fn wait<R>(
        &self,
        mut attempt: impl FnMut(&mut Guard<'_>) -> Result<Attempt<R>, CoreError>,
    ) -> Result<R, CoreError> {
        self.cell.wait(|_| self.step(&mut attempt)).await
    }
}

impl Guard<'_> {
    /// The state as of this lock (with this guard's changes).
    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn closed(&self) -> bool {
        self.core.page().u64_at(F_CLOSED).load(Relaxed) != 0
    }

    /// Whether a bounded queue is at its bound.
    pub(crate) fn full(&self) -> bool {
        let max = self.core.maxsize();
        max != 0 && self.state.len >= max
    }

    fn map_data(&mut self) -> io::Result<()> {
        let cap = self.state.cap as usize;
        if self.data.as_ref().is_some_and(|r| r.len() == cap) {
            return Ok(());
        }
        *self.data = None;
        *self.data = Some(Region::map_at(self.core.cell.memfd(), DATA_OFF, cap)?);
        Ok(())
    }

    fn data(&self) -> &Region {
        self.data.as_ref().expect("mapped in lock()")
    }

    fn ring_write(&self, pos: u64, bytes: &[u8]) {
        let cap = self.state.cap;
        let first = ((cap - pos) as usize).min(bytes.len());
        self.data().write(pos as usize, &bytes[..first]);
        if first < bytes.len() {
            self.data().write(0, &bytes[first..]);
        }
    }

    fn ring_read(&self, pos: u64, len: u64, out: &mut Vec<u8>) {
        let cap = self.state.cap;
        let first = (cap - pos).min(len);
        self.data().read_into(pos as usize, first as usize, out);
        if first < len {
            self.data().read_into(0, (len - first) as usize, out);
        }
    }

    /// Makes the ring big enough for `need` more bytes. `Ok(false)` if it cannot
    /// grow that far (the item must wait for room).
    fn reserve(&mut self, need: u64) -> io::Result<bool> {
        let s = self.state;
        if s.cap - s.used >= need {
            return Ok(true);
        }
        let Some(want) = s.used.checked_add(need) else {
            return Ok(false);
        };
        let new_cap = want.max(s.cap * 2).next_multiple_of(4096);
        // The file grows first: a process killed after this leaves a longer file
        // and the old state, which is fine.
        if shm::grow_to(self.core.cell.memfd(), DATA_OFF + new_cap).is_err() {
            return Ok(false);
        }
        let old_cap = s.cap;
        self.state.cap = new_cap;
        if let Err(e) = self.map_data() {
            self.state.cap = old_cap;
            self.map_data()?;
            return Err(e);
        }
        // Unwrap: the part that wrapped to the start moves past the old end, beyond
        // anything the old state refers to.
        let end = s.head + s.used;
        if end > old_cap {
            self.data()
                .copy_within(0, old_cap as usize, (end - old_cap) as usize);
        }
        self.changed = true;
        Ok(true)
    }

    /// Appends an item. `Ok(false)` if there is no room for it (storage could not
    /// grow, or the handle parking is full); the caller waits as for a full queue.
    pub(crate) fn push(
        &mut self,
        bytes: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<bool, CoreError> {
        let padded = (bytes.len() as u64).next_multiple_of(8);
        let rec = RECORD_HEADER + padded;
        if !self.reserve(rec)? {
            return Ok(false);
        }
        let mut fd_seq = 0;
        if !fds.is_empty() {
            let seq_field = self.core.page().u64_at(F_FD_SEQ);
            let seq = seq_field.load(Relaxed) + 1;
            // Published before parking: a putter killed after parking leaves a
            // message whose number no record will ever carry.
            seq_field.store(seq, Relaxed);
            match sock::send(self.core.park_tx.as_fd(), &seq.to_le_bytes(), fds, true) {
                Ok(_) => fd_seq = seq,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        let s = self.state;
        let tail = (s.head + s.used) % s.cap;
        let mut header = [0u8; RECORD_HEADER as usize];
        header[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        header[8..].copy_from_slice(&fd_seq.to_le_bytes());
        self.ring_write(tail, &header);
        self.ring_write((tail + RECORD_HEADER) % s.cap, bytes);
        self.state.used += rec;
        self.state.len += 1;
        self.state.unfinished += 1;
        self.changed = true;
        Ok(true)
    }

    /// Removes the first item, if any.
    pub(crate) fn pop(&mut self) -> Result<Option<Item>, CoreError> {
        let s = self.state;
        if s.len == 0 {
            return Ok(None);
        }
        let mut header = [0u8; RECORD_HEADER as usize];
        let first = ((s.cap - s.head) as usize).min(header.len());
        self.data().read(s.head as usize, &mut header[..first]);
        self.data().read(0, &mut header[first..]);
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let fd_seq = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
        if len > s.used {
            return Err(CoreError::Corrupt("record longer than the ring's contents"));
        }
        let rec = RECORD_HEADER + len.next_multiple_of(8);
        if rec > s.used {
            return Err(CoreError::Corrupt("record longer than the ring's contents"));
        }
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(len as usize)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "queue item"))?;
        self.ring_read((s.head + RECORD_HEADER) % s.cap, len, &mut bytes);
        // If the item's handles cannot be found (a getter killed after taking them
        // but before publishing), the item still leaves the queue, without them: its
        // decoding then fails for the getter instead of wedging the queue.
        let fds = if fd_seq != 0 {
            self.unpark(fd_seq).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.state.head = (s.head + rec) % s.cap;
        self.state.used -= rec;
        self.state.len -= 1;
        if self.state.len == 0 {
            self.state.head = 0;
            self.state.used = 0;
            if self.state.cap > SHRINK_ABOVE {
                self.state.cap = INITIAL_CAP;
            }
        }
        self.changed = true;
        Ok(Some(Item { bytes, fds }))
    }

    fn unpark(&self, want: u64) -> Result<Vec<OwnedFd>, CoreError> {
        loop {
            let mut fds = VecDeque::new();
            let mut buf = [0u8; 8];
            match sock::recv(self.core.park_rx.as_fd(), &mut buf, &mut fds, true) {
                Ok(8) => {}
                Ok(_) => return Err(CoreError::Corrupt("short parking message")),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(CoreError::Corrupt("an item's handles are missing"))
                }
                Err(e) => return Err(e.into()),
            }
            let got = u64::from_le_bytes(buf);
            if got == want {
                return Ok(fds.into());
            }
            if got > want {
                return Err(CoreError::Corrupt("an item's handles are missing"));
            }
            // Stale: left by a putter killed before publishing. Its fds close here.
        }
    }

    /// Marks the queue closed.
    pub(crate) fn close(&mut self) {
        self.core.page().u64_at(F_CLOSED).store(1, Relaxed);
        self.changed = true;
    }

    /// One `task_done`. `false` if more calls than items put.
    pub(crate) fn task_done(&mut self) -> bool {
        if self.state.unfinished == 0 {
            return false;
        }
        self.state.unfinished -= 1;
        self.changed = true;
        true
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.changed {
            return;
        }
        // Publish: write the spare slot, then flip with one store. The mutex is
        // released (and waiters woken) when `cell` drops, after this.
        let core = self.core;
        let current = core.page().u64_at(F_CURRENT).load(Relaxed) as usize;
        let old = core.read_slot(current);
        core.write_slot(1 - current, self.state);
        core.page()
            .u64_at(F_CURRENT)
            .store(1 - current as u64, Release);
        self.cell.changed();
        if self.state.cap < old.cap {
            // Shrunk while empty: give the pages back (the file keeps its size: it
            // is sealed against shrinking). Other processes map the smaller ring
            // before they touch data again.
            let _ = shm::release(
                core.cell.memfd(),
                DATA_OFF + self.state.cap,
                old.cap - self.state.cap,
            );
            *self.data = None;
        }
    }
}

/// How long until `deadline`; `None` if no deadline.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_across_wraps_and_growth() {
        let core = Core::create(0).unwrap();
        let mut model = VecDeque::new();
        let mut n = 0u32;
        // Mix of sizes that wrap the 64 KiB ring and force it to grow.
        for round in 0..50 {
            for _ in 0..(round % 7 + 1) {
                let item = vec![(n % 251) as u8; (n as usize * 997) % 30_000];
                let mut g = core.lock().unwrap();
                assert!(g.push(&item, &[]).unwrap());
                model.push_back(item);
                n += 1;
            }
            for _ in 0..(round % 5) {
                let mut g = core.lock().unwrap();
                let got = g.pop().unwrap().map(|i| i.bytes);
                assert_eq!(got, model.pop_front());
            }
            assert_eq!(core.lock().unwrap().state().len, model.len() as u64);
        }
        while let Some(want) = model.pop_front() {
            assert_eq!(core.lock().unwrap().pop().unwrap().unwrap().bytes, want);
        }
        assert!(core.lock().unwrap().pop().unwrap().is_none());
    }

    #[test]
    fn a_second_view_sees_the_same_queue_and_growth() {
        let a = Core::create(3).unwrap();
        let fds = a.fds().map(|fd| sock::dup(fd).unwrap());
        let b = Core::open(fds).unwrap();
        assert_eq!(b.maxsize(), 3);
        let big = vec![9u8; 1 << 20];
        assert!(a.lock().unwrap().push(&big, &[]).unwrap());
        assert!(a.lock().unwrap().push(b"x", &[]).unwrap());
        assert_eq!(b.lock().unwrap().state().len, 2);
        assert_eq!(b.lock().unwrap().pop().unwrap().unwrap().bytes, big);
        assert_eq!(b.lock().unwrap().pop().unwrap().unwrap().bytes, b"x");
    }

    #[test]
    fn blocking_wait_times_out_and_wakes_on_change() {
        let core = Core::create(0).unwrap();
        let r = core
            .blocking_wait(deadline_after(Some(Duration::from_millis(5))), |g| {
                Ok(match g.pop()? {
                    Some(i) => Poll::Ready(i.bytes),
                    None => Poll::Pending,
                })
            })
            .unwrap();
        assert!(r.is_none());
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                core.blocking_wait(None, |g| {
                    Ok(match g.pop()? {
                        Some(i) => Poll::Ready(i.bytes),
                        None => Poll::Pending,
                    })
                })
            });
            core.blocking_wait(None, |g| g.push(b"hi", &[]).map(|_| Poll::Ready(())))
                .unwrap();
            assert_eq!(t.join().unwrap().unwrap().unwrap(), b"hi");
        });
    }
}
