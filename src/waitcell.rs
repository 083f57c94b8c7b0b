//! The shared page under every cross-process object: a robust mutex, a change
//! counter, and the two ways to wait for a change.
//!
//! ```text
//! offset  0  pthread_mutex_t (robust, process-shared)
//!        64  magic (which kind of object, layout version)
//!        72  seq: u32, bumped under the mutex by every change (a futex word)
//!        76  blocking waiters registered
//!        80  async waiters registered
//!       128  the object's own fields (`USER`)
//! ```
//! The page is the start of an anonymous memory file (`memfd`); an object that needs
//! more memory (a queue's ring) maps more of the same file itself.
//!
//! # Waiting without lost wake-ups
//! A waiter reads `seq`, then tries under the mutex. If it cannot proceed it spins a
//! little watching `seq` (a busy peer usually changes the state within microseconds),
//! then registers and sleeps: blocking waiters on the futex `seq` (the kernel checks
//! the value atomically), async waiters on an eventfd that tokio watches. A changer
//! bumps `seq` before unlocking and afterwards wakes each kind of waiter that is
//! registered. Both sides order their two accesses with `SeqCst`, so either the waker
//! sees the registration or the waiter sees the new `seq`.
//!
//! # Waiting on a holder that may die
//! An attempt can report that it is blocked by a particular process (a lock's
//! holder). Async waiters then also watch that process's pidfd; blocking waiters
//! sleep at most [`OWNER_POLL`] at a time. Checking that a holder lives reads
//! `/proc`, far dearer than an attempt, so attempts are told when to do it
//! (`check_holder`): when a new holder is about to be slept on, after its pidfd
//! fired, and after a blocking sleep in which nothing changed.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::sys::shm::{self, EventFd, Locked, Region};
use crate::sys::{self, sock};

/// Size of the shared page.
pub(crate) const PAGE: u64 = 4096;
/// Where an object's own fields start in the page.
pub(crate) const USER: usize = 128;

const MUTEX: usize = 0;
const F_MAGIC: usize = 64;
const F_SEQ: usize = 72;
const F_BLOCKING_WAITERS: usize = 76;
const F_ASYNC_WAITERS: usize = 80;
const _: () = assert!(
    shm::MUTEX_SIZE <= F_MAGIC,
    "pthread_mutex_t fits before the fields"
);

/// The longest a blocking waiter watches `seq` before it sleeps: long enough to catch
/// a busy peer on another CPU without a system call on either side, short enough that
/// an idle object costs no CPU. Each object's budget adapts below it.
const SPIN: Duration = Duration::from_micros(20);
/// The shortest budget an adaptive spin gets.
const SPIN_MIN: Duration = Duration::from_micros(2);
/// Rounds of pausing (1, 2, 4 … 64 pauses) before a spin starts to yield.
const PAUSE_ROUNDS: u32 = 6;
/// How many times an async waiter yields to the runtime, trying again, before it
/// registers for a wake-up.
const ASYNC_SPINS: u32 = 16;
/// Attempts to take a held mutex before sleeping on it.
const LOCK_SPINS: u32 = 200;
/// Longest a blocking waiter sleeps while blocked by a holder that may die.
pub(crate) const OWNER_POLL: Duration = Duration::from_millis(20);

/// How often a spin looks at what it waits for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Look {
    /// After every pause: for a change that only the other side writes (reading
    /// it often costs the writer little and sees the change soonest).
    EveryPause,
    /// Once per round of pauses, the rounds doubling in length: for a word that
    /// both sides write, such as a lock's (each look takes the line from the
    /// holder, whose next write then misses; backing off lets a holder that
    /// releases and takes again keep it).
    EveryRound,
}

/// What one attempt found.
#[derive(Debug)]
pub(crate) enum Step<R> {
    /// Done.
    Ready(R),
    /// Not yet; wait for a change.
    Pending,
    /// Not yet, because process `pid` holds what we want; wait for a change or for
    /// that process to end.
    HeldBy(u32),
}

/// The shared page as one process sees it.
#[derive(Debug)]
pub(crate) struct WaitCell {
    memfd: OwnedFd,
    ctl: Region,
    event: EventFd,
    /// A duplicate of the eventfd registered with tokio on first async use.
    async_event: OnceLock<AsyncFd<OwnedFd>>,
    /// How long this process's spins on the object have lately taken to see a change
    /// (ns, a moving average; a spin that saw none counts as twice its budget).
    spun: AtomicU64,
}

/// The mutex of a [`WaitCell`], held. Dropping it publishes a change (if marked),
/// unlocks, and wakes waiters.
#[derive(Debug)]
pub(crate) struct CellGuard<'a> {
    cell: &'a WaitCell,
    changed: bool,
}

impl WaitCell {
    /// A new page (and memory file of `file_len` bytes, of fixed or growing `size`)
    /// for an object of kind `magic`.
    pub(crate) fn create(
        name: &str,
        file_len: u64,
        size: shm::Size,
        magic: u64,
    ) -> io::Result<WaitCell> {
        let memfd = shm::memfd(name, file_len.max(PAGE), size)?;
        let ctl = Region::map(memfd.as_fd(), PAGE as usize)?;
        ctl.mutex(MUTEX).init()?;
        let cell = WaitCell {
            memfd,
            ctl,
            event: EventFd::new()?,
            async_event: OnceLock::new(),
            spun: AtomicU64::new(SPIN.as_nanos() as u64 / 2),
        };
        cell.ctl.u64_at(F_MAGIC).store(magic, Release);
        Ok(cell)
    }

    /// Opens a page received from another process, checking its kind.
    pub(crate) fn open(memfd: OwnedFd, event: OwnedFd, magic: u64) -> io::Result<WaitCell> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        if shm::file_len(memfd.as_fd())? < PAGE {
            return Err(invalid("the shared memory file is too short"));
        }
        let ctl = Region::map(memfd.as_fd(), PAGE as usize)?;
        if ctl.u64_at(F_MAGIC).load(Acquire) != magic {
            return Err(invalid("not the procpool object expected"));
        }
        Ok(WaitCell {
            memfd,
            ctl,
            event: EventFd::from_fd(event),
            async_event: OnceLock::new(),
            spun: AtomicU64::new(SPIN.as_nanos() as u64 / 2),
        })
    }

    /// The memory file (for sending, and for objects that map more of it).
    pub(crate) fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// The eventfd (for sending).
    pub(crate) fn event_fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }

    /// The page; an object's fields are at [`USER`] and after.
    pub(crate) fn page(&self) -> &Region {
        &self.ctl
    }

    /// Takes the mutex, spinning briefly before sleeping on it.
    pub(crate) fn lock(&self) -> io::Result<CellGuard<'_>> {
        let mutex = self.ctl.mutex(MUTEX);
        // Critical sections are short: a little spinning on a held mutex is much
        // cheaper than the futex sleep and wake-up of a contended pthread mutex.
        let mut locked = None;
        for _ in 0..LOCK_SPINS {
            locked = mutex.try_lock()?;
            if locked.is_some() {
                break;
            }
            std::hint::spin_loop();
        }
        // A holder that died inside a critical section (a few field stores) is
        // survivable: every object keeps its state valid after each store.
        let _: Locked = match locked {
            Some(l) => l,
            None => mutex.lock()?,
        };
        Ok(CellGuard {
            cell: self,
            changed: false,
        })
    }

    fn seq(&self) -> &AtomicU32 {
        self.ctl.u32_at(F_SEQ)
    }

    /// Registers the eventfd with tokio (once per process and object).
    fn async_event(&self) -> io::Result<&AsyncFd<OwnedFd>> {
        if let Some(a) = self.async_event.get() {
            return Ok(a);
        }
        let dup = sock::dup(self.event.as_fd())?;
        let registered = sys::proc::async_fd(dup, Interest::READABLE)?;
        let _ = self.async_event.set(registered);
        Ok(self.async_event.get().expect("set above"))
    }

    /// Runs `attempt` until it is ready, sleeping between tries while nothing
    /// changes; `Ok(None)` at the deadline. `attempt` takes the mutex itself.
    pub(crate) fn blocking_wait<R, E: From<io::Error>>(
        &self,
        deadline: Option<Instant>,
        attempt: impl FnMut(bool) -> Result<Step<R>, E>,
    ) -> Result<Option<R>, E> {
        self.blocking_wait_from(true, deadline, attempt)
    }

    /// [`blocking_wait`](Self::blocking_wait) for a caller that has just spun on its
    /// own and found nothing: if its first attempt fails too, it sleeps without
    /// spinning again (it spins as usual after each wake-up).
    pub(crate) fn blocking_wait_after_spin<R, E: From<io::Error>>(
        &self,
        deadline: Option<Instant>,
        attempt: impl FnMut(bool) -> Result<Step<R>, E>,
    ) -> Result<Option<R>, E> {
        self.blocking_wait_from(false, deadline, attempt)
    }

    fn blocking_wait_from<R, E: From<io::Error>>(
        &self,
        mut spin: bool,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(bool) -> Result<Step<R>, E>,
    ) -> Result<Option<R>, E> {
        let waiters = self.ctl.u32_at(F_BLOCKING_WAITERS);
        let mut check_holder = false;
        loop {
            let seen = self.seq().load(SeqCst);
            let step = attempt(check_holder)?;
            check_holder = false;
            let cap = match step {
                Step::Ready(r) => return Ok(Some(r)),
                Step::Pending => None,
                Step::HeldBy(_) => Some(OWNER_POLL),
            };
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
            };
            // Spin before every sleep, not only the first: each pass here follows a
            // change, and a contended lock changes hands within microseconds.
            if std::mem::replace(&mut spin, true) && self.spin_while_unchanged(seen) {
                continue;
            }
            let timeout = match (left, cap) {
                (Some(l), Some(c)) => Some(l.min(c)),
                (l, c) => l.or(c),
            };
            waiters.fetch_add(1, SeqCst);
            shm::futex_wait(self.seq(), seen, timeout);
            waiters.fetch_sub(1, SeqCst);
            // Nothing changed while we slept: the holder may be gone.
            check_holder = cap.is_some() && self.seq().load(SeqCst) == seen;
        }
    }

    /// Async form of [`blocking_wait`](Self::blocking_wait), without a deadline
    /// (callers wrap it in `tokio::time::timeout`).
    ///
    /// # Cancel safety
    /// Cancel safe as long as `attempt` changes nothing unless it returns ready.
    pub(crate) async fn wait<R, E: From<io::Error>>(
        &self,
        mut attempt: impl FnMut(bool) -> Result<Step<R>, E>,
    ) -> Result<R, E> {
        // Registered before the first try, so a change right after it is seen.
        let event = self.async_event()?;
        let waiters = self.ctl.u32_at(F_ASYNC_WAITERS);
        struct Registered<'a>(&'a AtomicU32);
        impl Drop for Registered<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let mut spins = 0;
        // The pidfd of the holder we last waited on, if any.
        let mut holder: Option<(u32, Option<AsyncFd<OwnedFd>>)> = None;
        let mut check_holder = false;
        loop {
            let seen = self.seq().load(SeqCst);
            let held_by = match attempt(std::mem::take(&mut check_holder))? {
                Step::Ready(r) => return Ok(r),
                Step::Pending => None,
                Step::HeldBy(pid) => Some(pid),
            };
            if spins < ASYNC_SPINS {
                spins += 1;
                tokio::task::yield_now().await;
                continue;
            }
            let registered = Registered(waiters);
            waiters.fetch_add(1, SeqCst);
            if self.seq().load(SeqCst) != seen {
                continue;
            }
            if let Some(pid) = held_by {
                if holder.as_ref().map(|h| h.0) != Some(pid) {
                    // A new holder: look at it once (its pid may be recycled, which
                    // its pidfd would not tell), then watch its pidfd. A process
                    // already gone has no pidfd: try again at once.
                    let fd = sys::proc::pidfd_open(pid)
                        .ok()
                        .and_then(|fd| sys::proc::async_readable(fd).ok());
                    holder = Some((pid, fd));
                    check_holder = true;
                    continue;
                }
            }
            let holder_fd = match (held_by, &holder) {
                (Some(_), Some((_, Some(fd)))) => Some(fd),
                // The holder is already gone (no pidfd): try again at once.
                (Some(_), _) => {
                    check_holder = true;
                    continue;
                }
                (None, _) => None,
            };
            let holder_exit = async {
                match holder_fd {
                    // A pidfd becomes readable when its process exits.
                    Some(fd) => drop(fd.readable().await),
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                ready = event.readable() => {
                    let mut ready = ready?;
                    ready.clear_ready();
                    self.event.drain();
                }
                () = holder_exit => check_holder = true,
            }
            drop(registered);
        }
    }

    /// Watches `seq` for a change; `true` if one came before the spin's budget ran out.
    fn spin_while_unchanged(&self, seen: u32) -> bool {
        self.spin_until(Look::EveryPause, || self.seq().load(Acquire) != seen)
    }

    /// Spins until `done` says so; `true` if it did before the spin's budget ran out.
    /// `done` should read shared memory with plain loads until it has reason to hope.
    ///
    /// The budget adapts as glibc's adaptive mutex does: twice the time recent spins
    /// took to succeed, at least [`SPIN_MIN`] and at most [`SPIN`], and a spin that
    /// failed counts as twice its budget, so waits that spinning cannot catch grow it
    /// back to the cap only as far as the cap. The spin itself backs off as
    /// parking_lot's does: pause loops of doubling length first, then a yield between
    /// rounds, so that a holder preempted on this very core gets to run and release
    /// (on a 2-core machine the two sides of a contended lock often share one).
    pub(crate) fn spin_until(&self, look: Look, mut done: impl FnMut() -> bool) -> bool {
        let avg = self.spun.load(Relaxed);
        let budget = Duration::from_nanos(avg.saturating_mul(2)).clamp(SPIN_MIN, SPIN);
        let start = Instant::now();
        let mut round = 0u32;
        let succeeded = loop {
            let pauses = 1u32 << round.min(PAUSE_ROUNDS);
            let seen = match look {
                Look::EveryPause => {
                    done()
                        || (0..pauses).any(|_| {
                            std::hint::spin_loop();
                            done()
                        })
                }
                Look::EveryRound => {
                    done() || {
                        (0..pauses).for_each(|_| std::hint::spin_loop());
                        false
                    }
                }
            };
            if seen {
                break true;
            }
            if round >= PAUSE_ROUNDS {
                std::thread::yield_now();
            }
            round += 1;
            if start.elapsed() >= budget {
                break done();
            }
        };
        let took = if succeeded {
            start.elapsed()
        } else {
            budget * 2
        };
        let took = took.as_nanos().min(u128::from(u32::MAX)) as u64;
        // Racy between threads of this process, and only a hint: relaxed is enough.
        self.spun.store(avg - avg / 8 + took / 8, Relaxed);
        succeeded
    }

    /// Wakes waiters after a change (called with the mutex released).
    fn wake(&self) {
        if self.ctl.u32_at(F_BLOCKING_WAITERS).load(SeqCst) > 0 {
            shm::futex_wake_all(self.seq());
        }
        if self.ctl.u32_at(F_ASYNC_WAITERS).load(SeqCst) > 0 {
            self.event.notify();
        }
    }
}

impl WaitCell {
    /// Publishes a change made without the mutex (an atomic word of the object's
    /// own): bumps `seq` and wakes the waiters registered. The change must be stored
    /// before this is called.
    pub(crate) fn publish(&self) {
        self.seq().fetch_add(1, SeqCst);
        self.wake();
    }

    /// How many changes were published (for tests).
    #[cfg(test)]
    pub(crate) fn changes(&self) -> u32 {
        self.seq().load(SeqCst)
    }
}

impl CellGuard<'_> {
    /// Marks the state changed: waiters are woken when the guard drops.
    pub(crate) fn changed(&mut self) {
        self.changed = true;
    }

    /// The page (the object's fields are at [`USER`] and after).
    pub(crate) fn page(&self) -> &Region {
        &self.cell.ctl
    }
}

impl Drop for CellGuard<'_> {
    fn drop(&mut self) {
        let cell = self.cell;
        if self.changed {
            cell.seq().fetch_add(1, SeqCst);
        }
        cell.ctl.mutex(MUTEX).unlock();
        if self.changed {
            cell.wake();
        }
    }
}
