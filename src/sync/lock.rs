//! [`Lock`] and [`RLock`]: a mutex held by a process, or re-entrantly by a thread.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use super::*;

const MAGIC_LOCK: u64 = 0x7073_796e_634c_0001;
const MAGIC_RLOCK: u64 = 0x7073_796e_6352_0001;

// Lock fields: the lock word; for an RLock also the holding thread and the depth.
//
// The word is the whole lock: 0 when free, else the holding process (its pid and
// start time, see `word_of`) with bit 0 set once a waiter may sleep on it. Taking a
// free lock is one compare-and-swap, releasing it one swap; only a release that finds
// bit 0 set publishes a change on the page (a `seq` bump and the wake-ups), and every
// waiter that may sleep sets the bit again on each attempt that fails, so none sleeps
// unseen. A blocking taker first spins without setting it (`blocking_take`), so that
// two processes trading a lock back and forth pay no wake-ups while both run.
const L_WORD: usize = 0;
const L_TID: usize = 16;
const L_DEPTH: usize = 24;

/// Bit 0 of the lock word: someone may be waiting.
const WAITERS: u64 = 1;
/// Bits of the word that hold a pid (pids stay below 2^22, Linux's `pid_max` limit).
const PID_BITS: u32 = 22;

/// The lock word of a holder: start time (clock ticks since boot: 41 bits last 700
/// years at 100 Hz), pid, and a clear waiters bit.
fn word_of(o: Owner) -> u64 {
    (o.start << (PID_BITS + 1)) | (u64::from(o.pid) << 1)
}

/// The holder a lock word names, if any.
fn holder_of(word: u64) -> Option<Owner> {
    match word & !WAITERS {
        0 => None,
        w => Some(Owner {
            pid: ((w >> 1) & ((1 << PID_BITS) - 1)) as u32,
            start: w >> (PID_BITS + 1),
        }),
    }
}

/// This process's lock word.
fn my_word() -> u64 {
    word_of(owner::me())
}

fn lock_word(shared: &Shared) -> &std::sync::atomic::AtomicU64 {
    shared.cell.page().u64_at(USER + L_WORD)
}

/// How an attempt on a lock went.
enum Got {
    Clean,
    OwnerDied,
}

/// Whether a failed attempt says that it will wait.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Announce {
    /// Sets the waiters bit, so that the release wakes this waiter: before sleeping.
    Waiting,
    /// Leaves the word alone, so that the release stays one swap: for a spin or a
    /// `try_lock`, which watch the word themselves or do not wait at all.
    Quiet,
}

/// Tries to take a lock (or re-enter an RLock when `tid` is given).
/// `check_holder`: find out whether a holder still lives (reads `/proc`); otherwise a
/// held lock is simply reported held.
fn try_take(
    shared: &Shared,
    tid: Option<u64>,
    check_holder: bool,
    announce: Announce,
) -> io::Result<Step<Got>> {
    let page = shared.cell.page();
    let word = lock_word(shared);
    let me = my_word();
    let mut cur = word.load(Acquire);
    loop {
        let got = match holder_of(cur) {
            None => Got::Clean,
            // Only the holding thread changes the depth, so it needs no atomics.
            Some(_) if cur & !WAITERS == me && tid.is_some_and(|t| u64_at(page, L_TID) == t) => {
                set_u64(page, L_DEPTH, u64_at(page, L_DEPTH) + 1);
                return Ok(Step::Ready(Got::Clean));
            }
            Some(o) if !check_holder || owner::is_alive(o) => {
                // Say that someone waits, so that the release wakes it.
                if announce == Announce::Waiting && cur & WAITERS == 0 {
                    if let Err(now) = word.compare_exchange(cur, cur | WAITERS, AcqRel, Acquire) {
                        cur = now;
                        continue;
                    }
                }
                return Ok(Step::HeldBy(o.pid));
            }
            Some(_) => Got::OwnerDied,
        };
        // The waiters bit stays: others may still sleep.
        match word.compare_exchange(cur, me | (cur & WAITERS), Acquire, Acquire) {
            Ok(_) => {
                if let Some(t) = tid {
                    set_u64(page, L_TID, t);
                    set_u64(page, L_DEPTH, 1);
                }
                return Ok(Step::Ready(got));
            }
            Err(now) => cur = now,
        }
    }
}

/// Takes a lock for a blocking caller: one quiet attempt; while it is held, a spin
/// within the page's adaptive budget that reads the word and tries again only when
/// it looks free, without announcing itself (a holder that releases and takes the
/// lock again, as a loop of short critical sections does, then pays one swap and one
/// compare-and-swap, and no wake-up); then the page's sleeping wait, announced, which
/// does not spin again before its first sleep. `Ok(None)` at the deadline.
fn blocking_take(
    shared: &Shared,
    tid: Option<u64>,
    deadline: Option<Instant>,
) -> io::Result<Option<Got>> {
    let quiet = || try_take(shared, tid, false, Announce::Quiet);
    if let Step::Ready(got) = quiet()? {
        return Ok(Some(got));
    }
    let word = lock_word(shared);
    let mut spun = None;
    if crate::blocking::remaining(deadline).is_some() {
        shared.cell.spin_until(Look::EveryRound, || {
            if holder_of(word.load(Relaxed)).is_some() {
                return false;
            }
            match quiet() {
                Ok(Step::Ready(got)) => spun = Some(Ok(got)),
                Ok(_) => return false,
                Err(e) => spun = Some(Err(e)),
            }
            true
        });
    }
    if let Some(got) = spun.transpose()? {
        return Ok(Some(got));
    }
    // The spin above found the lock held throughout: no second spin before sleeping.
    shared
        .cell
        .blocking_wait_after_spin(deadline, |c| try_take(shared, tid, c, Announce::Waiting))
}

/// An async caller's attempt, announced each time: between attempts it yields to the
/// runtime rather than watching the word, so only the release's wake-up would tell it.
fn async_attempt(shared: &Shared, tid: Option<u64>, check_holder: bool) -> io::Result<Step<Got>> {
    try_take(shared, tid, check_holder, Announce::Waiting)
}

/// A `try_lock`: one attempt that never waits, so never announces.
fn try_once(shared: &Shared, tid: Option<u64>) -> io::Result<Step<Got>> {
    try_take(shared, tid, true, Announce::Quiet)
}

/// Frees a lock held by this process: one swap, and the wake-ups if anyone waits.
fn free(shared: &Shared) {
    if lock_word(shared).swap(0, Release) & WAITERS != 0 {
        shared.cell.publish();
    }
}

/// Releases one level of a lock held by this process (and thread, for an RLock).
fn give_back(shared: &Shared, tid: Option<u64>) -> Result<(), ReleaseError> {
    let page = shared.cell.page();
    if !held_by(shared, tid) {
        return Err(ReleaseError::NotOwner);
    }
    if tid.is_some() {
        let depth = u64_at(page, L_DEPTH).saturating_sub(1);
        set_u64(page, L_DEPTH, depth);
        if depth > 0 {
            return Ok(());
        }
        // Cleared before the word, so that another thread of this process that sees
        // the next holder's word never finds its own id here.
        set_u64(page, L_TID, 0);
    }
    free(shared);
    Ok(())
}

/// Whether this process (and, with `tid`, this thread) holds the lock.
fn held_by(shared: &Shared, tid: Option<u64>) -> bool {
    lock_word(shared).load(Acquire) & !WAITERS == my_word()
        && tid.is_none_or(|t| u64_at(shared.cell.page(), L_TID) == t)
}

fn lock_outcome<G>(got: Got, guard: G) -> Result<G, LockError<G>> {
    match got {
        Got::Clean => Ok(guard),
        Got::OwnerDied => Err(LockError::OwnerDied(guard)),
    }
}

/// A mutual-exclusion lock shared between processes (Python's `multiprocessing.Lock`),
/// released when its [`LockGuard`] drops. Not re-entrant: see [`RLock`].
pub struct Lock {
    shared: Arc<Shared>,
}

primitive!(Lock, MAGIC_LOCK, {});

/// Holds a [`Lock`]; releases it when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = give_back(&self.lock.shared, None);
    }
}

impl LockGuard<'_> {
    /// The lock this guard holds.
    pub fn lock(&self) -> &Lock {
        self.lock
    }
}

impl Lock {
    /// A new, unlocked lock.
    ///
    /// # Errors
    /// A system error if the shared memory cannot be made.
    pub fn new() -> io::Result<Lock> {
        Ok(Lock {
            shared: Shared::create("procpool-lock", MAGIC_LOCK)?,
        })
    }

    fn guard(&self, got: Got) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        lock_outcome(got, LockGuard { lock: self })
    }

    lock_methods!(LockGuard, None);

    /// Whether this process holds the lock (what [`Condition::notify`] requires).
    pub(super) fn held_here(&self) -> io::Result<bool> {
        Ok(held_by(&self.shared, None))
    }

    /// Whether some process holds the lock right now.
    pub fn is_locked(&self) -> bool {
        holder_of(lock_word(&self.shared).load(Acquire)).is_some()
    }
}

// ---------------------------------------------------------------- RLock

/// A re-entrant lock (Python's `multiprocessing.RLock`): the thread holding it may
/// take it again; it is free once released as many times as it was taken, and only
/// the holding thread may release it.
///
/// Take it with the guard methods ([`lock`](Self::lock) and friends), or Python-style
/// with [`acquire`](Self::acquire)…[`release`](Self::release). Its guard cannot move to
/// another thread (the holder is a thread), so in async code hold it only on a
/// current-thread runtime or between awaits.
pub struct RLock {
    shared: Arc<Shared>,
}

primitive!(RLock, MAGIC_RLOCK, {});

/// Holds one level of an [`RLock`]; releases it when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    /// The holder is this thread: the guard stays on it.
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLockGuard")
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    ///
    /// # Errors
    /// A system error if the shared memory cannot be made.
    pub fn new() -> io::Result<RLock> {
        Ok(RLock {
            shared: Shared::create("procpool-rlock", MAGIC_RLOCK)?,
        })
    }

    /// Whether this thread holds the lock (what [`Condition::notify`] requires).
    pub(super) fn held_here(&self) -> io::Result<bool> {
        Ok(held_by(&self.shared, RLock::me()))
    }

    fn me() -> Option<u64> {
        Some(sys::proc::thread_id())
    }

    fn guard(&self, got: Got) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
        lock_outcome(
            got,
            RLockGuard {
                lock: self,
                _not_send: PhantomData,
            },
        )
    }

    lock_methods!(RLockGuard, Self::me());

    /// Python-style acquire without a guard; pair it with [`release`](Self::release).
    ///
    /// # Errors
    /// As [`blocking_lock`](Self::blocking_lock) (`OwnerDied` carries `()`: the lock
    /// is held).
    ///
    /// # Panics
    /// If called from an async context, as [`blocking_lock`](Self::blocking_lock).
    #[track_caller]
    pub fn acquire(&self) -> Result<(), LockError<()>> {
        crate::blocking::assert_may_block("acquire", "lock");
        match self.lock_blocking_unchecked() {
            Ok(g) => {
                std::mem::forget(g);
                Ok(())
            }
            Err(LockError::OwnerDied(g)) => {
                std::mem::forget(g);
                Err(LockError::OwnerDied(()))
            }
            Err(LockError::WouldBlock) => Err(LockError::WouldBlock),
            Err(LockError::Timeout) => Err(LockError::Timeout),
            Err(LockError::Io(e)) => Err(LockError::Io(e)),
        }
    }

    /// Releases one level taken by this thread.
    ///
    /// # Errors
    /// [`ReleaseError::NotOwner`] if this thread does not hold it.
    pub fn release(&self) -> Result<(), ReleaseError> {
        give_back(&self.shared, Self::me())
    }
}

// What `Condition` does to the lock it waits with.

/// Releases what `guard` stands for before a condition wait; returns what to restore.
pub(super) fn release_for_wait(guard: LockGuard<'_>) -> io::Result<u64> {
    drop(guard);
    Ok(1)
}

pub(super) fn restore_after_wait(_: &Lock, _: u64) {}

/// Releases every level of an RLock this thread holds; returns how many.
pub(super) fn release_all_for_wait(guard: RLockGuard<'_>) -> io::Result<u64> {
    let lock = guard.lock;
    std::mem::forget(guard);
    let page = lock.shared.cell.page();
    let depth = u64_at(page, L_DEPTH);
    set_u64(page, L_DEPTH, 0);
    set_u64(page, L_TID, 0);
    free(&lock.shared);
    Ok(depth)
}

/// Puts back the levels released by [`release_all_for_wait`] (the lock is held again,
/// at depth 1, by the guard just taken).
pub(super) fn restore_all_after_wait(lock: &RLock, depth: u64) {
    set_u64(lock.shared.cell.page(), L_DEPTH, depth.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_word_names_its_holder_with_or_without_waiters() {
        let me = owner::me();
        let w = word_of(me);
        assert_eq!(w & WAITERS, 0);
        assert_eq!(holder_of(w), Some(me));
        assert_eq!(holder_of(w | WAITERS), Some(me));
        assert_eq!(holder_of(0), None);
        assert_eq!(holder_of(WAITERS), None);
        // The largest pid Linux hands out, and a start time far in the future.
        let far = Owner {
            pid: (1 << PID_BITS) - 1,
            start: (1 << 40) + 12_345,
        };
        assert_eq!(holder_of(word_of(far) | WAITERS), Some(far));
    }

    #[test]
    fn an_uncontended_lock_and_unlock_leaves_no_waiters_bit_and_publishes_nothing() {
        let lock = Lock::new().unwrap();
        let seq = lock.shared.cell.changes();
        for _ in 0..3 {
            let g = lock.try_lock().unwrap();
            assert_eq!(lock_word(&lock.shared).load(Acquire), my_word());
            drop(g);
            assert_eq!(lock_word(&lock.shared).load(Acquire), 0);
        }
        // Nobody waited: no change was published on the page.
        assert_eq!(lock.shared.cell.changes(), seq);
        // A failed attempt marks the word, and the release then publishes.
        let g = lock.try_lock().unwrap();
        assert!(matches!(
            try_take(&lock.shared, None, false, Announce::Waiting).unwrap(),
            Step::HeldBy(_)
        ));
        assert_eq!(lock_word(&lock.shared).load(Acquire), my_word() | WAITERS);
        drop(g);
        assert_eq!(lock.shared.cell.changes(), seq + 1);
    }

    #[test]
    fn a_try_lock_that_fails_does_not_announce_itself() {
        let lock = Lock::new().unwrap();
        let seq = lock.shared.cell.changes();
        let g = lock.try_lock().unwrap();
        // Another thread of this process holds nothing, so this fails as WouldBlock
        // (the lock is held by a process, not a thread) and leaves the word alone.
        std::thread::scope(|s| {
            s.spawn(|| assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock))));
        });
        assert_eq!(lock_word(&lock.shared).load(Acquire), my_word());
        drop(g);
        // No waiter was announced, so the release published nothing.
        assert_eq!(lock.shared.cell.changes(), seq);
    }

    #[test]
    fn an_expired_deadline_times_out_without_spinning_and_a_free_lock_is_taken() {
        let lock = Lock::new().unwrap();
        let g = lock.try_lock().unwrap();
        let past = Some(Instant::now());
        assert!(blocking_take(&lock.shared, None, past).unwrap().is_none());
        drop(g);
        // Free: even an expired deadline takes it, in the first attempt.
        assert!(matches!(
            blocking_take(&lock.shared, None, past).unwrap(),
            Some(Got::Clean)
        ));
        assert!(lock.is_locked());
    }
}
