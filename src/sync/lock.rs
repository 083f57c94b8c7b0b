//! [`Lock`] and [`RLock`]: a mutex held by a process, or re-entrantly by a thread.

use super::*;

const MAGIC_LOCK: u64 = 0x7073_796e_634c_0001;
const MAGIC_RLOCK: u64 = 0x7073_796e_6352_0001;

// Lock fields: the holder (pid, start); for an RLock also its thread and the depth.
const L_OWNER: usize = 0;
const L_TID: usize = 16;
const L_DEPTH: usize = 24;

/// How an attempt on a lock went.
enum Got {
    Clean,
    OwnerDied,
}

/// Tries to take a lock (or re-enter an RLock when `tid` is given).
/// `check_holder`: find out whether a holder still lives (reads `/proc`); otherwise a
/// held lock is simply reported held.
fn try_take(shared: &Shared, tid: Option<u64>, check_holder: bool) -> io::Result<Step<Got>> {
    let mut g = shared.lock()?;
    let page = g.page();
    let me = owner::me();
    let got = match owner_at(page, L_OWNER) {
        None => Got::Clean,
        Some(o) if o == me && tid.is_some() && Some(u64_at(page, L_TID)) == tid => {
            set_u64(page, L_DEPTH, u64_at(page, L_DEPTH) + 1);
            g.changed();
            return Ok(Step::Ready(Got::Clean));
        }
        Some(o) if !check_holder || owner::is_alive(o) => return Ok(Step::HeldBy(o.pid)),
        Some(_) => Got::OwnerDied,
    };
    set_owner(page, L_OWNER, Some(me));
    set_u64(page, L_TID, tid.unwrap_or(0));
    set_u64(page, L_DEPTH, 1);
    g.changed();
    Ok(Step::Ready(got))
}

/// Releases one level of a lock held by this process (and thread, for an RLock).
fn give_back(shared: &Shared, tid: Option<u64>) -> Result<(), ReleaseError> {
    let mut g = shared.lock()?;
    let page = g.page();
    if owner_at(page, L_OWNER) != Some(owner::me()) || tid.is_some_and(|t| u64_at(page, L_TID) != t)
    {
        return Err(ReleaseError::NotOwner);
    }
    let depth = u64_at(page, L_DEPTH).saturating_sub(1);
    set_u64(page, L_DEPTH, depth);
    if depth == 0 {
        set_owner(page, L_OWNER, None);
        set_u64(page, L_TID, 0);
        g.changed();
    }
    Ok(())
}

/// Whether this process (and, with `tid`, this thread) holds the lock.
fn held_by(shared: &Shared, tid: Option<u64>) -> io::Result<bool> {
    let g = shared.lock()?;
    let page = g.page();
    Ok(
        owner_at(page, L_OWNER) == Some(owner::me())
            && tid.is_none_or(|t| u64_at(page, L_TID) == t),
    )
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
        held_by(&self.shared, None)
    }

    /// Whether some process holds the lock right now.
    pub fn is_locked(&self) -> bool {
        self.shared
            .lock()
            .map(|g| owner_at(g.page(), L_OWNER).is_some())
            .unwrap_or(false)
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
        held_by(&self.shared, RLock::me())
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
    let mut g = lock.shared.lock()?;
    let page = g.page();
    let depth = u64_at(page, L_DEPTH);
    set_u64(page, L_DEPTH, 0);
    set_owner(page, L_OWNER, None);
    set_u64(page, L_TID, 0);
    g.changed();
    Ok(depth)
}

/// Puts back the levels released by [`release_all_for_wait`] (the lock is held again,
/// at depth 1, by the guard just taken).
pub(super) fn restore_all_after_wait(lock: &RLock, depth: u64) {
    if let Ok(g) = lock.shared.lock() {
        set_u64(g.page(), L_DEPTH, depth.max(1));
    }
}
