//! Synchronization between processes: Python's `Lock`, `RLock`, `Semaphore`,
//! `BoundedSemaphore`, `Event`, `Condition` and `Barrier`, async-aware.
//!
//! Each primitive is a page of shared memory (an anonymous memory file: nothing is left
//! in `/dev/shm` after a crash) holding its state under a robust process-shared mutex,
//! plus an eventfd. Blocking waits sleep on a futex; async waits are woken through the
//! eventfd, which tokio watches. Pass a primitive to other processes as a task or
//! [`Process`](crate::Process) argument, or inside a message; clone it to share it
//! between tasks of one process.
//!
//! # A holder that dies
//! A lock is held by a *process* (an `RLock` by a thread of a process). If that process
//! dies holding it, the next acquirer gets [`LockError::OwnerDied`] carrying the guard:
//! it holds the lock and decides whether the protected state needs repair — like a
//! robust mutex, and unlike Python, whose lock stays held forever. A semaphore permit
//! held (through a guard) by a process that died is given back to the next acquirer,
//! whose guard then says so ([`SemaphoreGuard::reclaimed`]). Waiters notice a death
//! at once when async (they watch the holder's pidfd) and within
//! 20 ms when blocking.
//!
//! # Async and blocking
//! Each wait has an async form, a `blocking_*` form for code that is not async (pool
//! tasks, `Process` bodies), a `try_*` form and `*_timeout` forms.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use procpool::{sync::LockError, Lock, Process};
//!
//! fn work(lock: Lock) -> u32 {
//!     let _held = match lock.blocking_lock() {
//!         Ok(g) => g,
//!         // The last holder died holding it: we hold it now; repair, then go on.
//!         Err(LockError::OwnerDied(g)) => g,
//!         Err(e) => panic!("{e}"),
//!     };
//!     std::process::id()
//! }
//!
//! let lock = Lock::new()?;
//! // The error borrows the lock (it may carry the guard), like std's PoisonError:
//! // handle it in place rather than with `?` into a `'static` error.
//! let guard = lock.lock().await.map_err(|e| e.to_string())?;
//! let mut child = Process::spawn(work, lock.clone())?;
//! drop(guard); // the child can take it now
//! child.join().await?;
//! # Ok(())
//! # }
//! ```

mod owner;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys;
use crate::sys::shm::Region;
use crate::waitcell::{CellGuard, Step, WaitCell, USER};
use crate::wire::handles::{RecvFd, SendFd};
pub(crate) use owner::Owner;

// ---------------------------------------------------------------- errors

/// Why a lock (or an `RLock`) was not simply acquired.
#[non_exhaustive]
pub enum LockError<G> {
    /// The previous holder died holding it. The lock *is* acquired: the guard is
    /// here; check or repair what it protects, then go on.
    OwnerDied(G),
    /// `try_*`: it is held by someone else.
    WouldBlock,
    /// `*_timeout`: it was not released in time.
    Timeout,
    /// A system call failed.
    Io(io::Error),
}

impl<G> LockError<G> {
    /// The guard, when the lock was acquired after all ([`OwnerDied`](Self::OwnerDied)).
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::WouldBlock => f.write_str("WouldBlock"),
            LockError::Timeout => f.write_str("Timeout"),
            LockError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str(
                "the previous holder died holding the lock (it is now held by this caller)",
            ),
            LockError::WouldBlock => f.write_str("the lock is held"),
            LockError::Timeout => f.write_str("the lock was not released before the timeout"),
            LockError::Io(e) => write!(f, "lock I/O error: {e}"),
        }
    }
}

impl<G> std::error::Error for LockError<G> {}

impl<G> From<io::Error> for LockError<G> {
    fn from(e: io::Error) -> Self {
        LockError::Io(e)
    }
}

/// Why a release was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReleaseError {
    /// `RLock::release` by a thread that does not hold it.
    NotOwner,
    /// A [`BoundedSemaphore`] released above its initial value (Python's "semaphore or
    /// lock released too many times").
    TooManyReleases,
    /// A system call failed.
    Io(io::Error),
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::NotOwner => {
                f.write_str("cannot release an RLock this thread does not hold")
            }
            ReleaseError::TooManyReleases => f.write_str("semaphore released too many times"),
            ReleaseError::Io(e) => write!(f, "release I/O error: {e}"),
        }
    }
}

impl std::error::Error for ReleaseError {}

impl From<io::Error> for ReleaseError {
    fn from(e: io::Error) -> Self {
        ReleaseError::Io(e)
    }
}

/// Why a wait on an [`Event`], [`Semaphore`], [`Condition`] or [`Barrier`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum WaitError {
    /// `try_*`: it would have to wait.
    WouldBlock,
    /// `*_timeout`: the time ran out.
    Timeout,
    /// The [`Barrier`] is broken (a wait timed out, `abort` or `reset` was called).
    BrokenBarrier,
    /// A system call failed.
    Io(io::Error),
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::WouldBlock => f.write_str("would have to wait"),
            WaitError::Timeout => f.write_str("timed out"),
            WaitError::BrokenBarrier => f.write_str("the barrier is broken"),
            WaitError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for WaitError {}

impl From<io::Error> for WaitError {
    fn from(e: io::Error) -> Self {
        WaitError::Io(e)
    }
}

// ---------------------------------------------------------------- common

/// One primitive's shared page, as this process sees it.
#[derive(Debug)]
struct Shared {
    cell: WaitCell,
}

impl Shared {
    fn create(kind: &'static str, magic: u64) -> io::Result<Arc<Shared>> {
        Ok(Arc::new(Shared {
            cell: WaitCell::create(
                kind,
                crate::waitcell::PAGE,
                crate::sys::shm::Size::Fixed,
                magic,
            )?,
        }))
    }

    fn lock(&self) -> io::Result<CellGuard<'_>> {
        self.cell.lock()
    }

    fn serialize<S: Serializer>(&self, magic: u64, s: S) -> Result<S::Ok, S::Error> {
        (
            SendFd(self.cell.memfd()),
            SendFd(self.cell.event_fd()),
            magic,
        )
            .serialize(s)
    }

    fn deserialize<'de, D: Deserializer<'de>>(d: D, magic: u64) -> Result<Arc<Shared>, D::Error> {
        let (RecvFd(memfd), RecvFd(event), got) = <(RecvFd, RecvFd, u64)>::deserialize(d)?;
        if got != magic {
            return Err(D::Error::custom(
                "a synchronization primitive of another kind arrived",
            ));
        }
        let cell = WaitCell::open(memfd, event, magic)
            .map_err(|e| D::Error::custom(format!("opening a shared primitive: {e}")))?;
        Ok(Arc::new(Shared { cell }))
    }
}

fn u64_at(r: &Region, field: usize) -> u64 {
    r.u64_at(USER + field).load(Relaxed)
}

fn set_u64(r: &Region, field: usize, v: u64) {
    r.u64_at(USER + field).store(v, Relaxed)
}

fn owner_at(r: &Region, field: usize) -> Option<Owner> {
    match u64_at(r, field) {
        0 => None,
        pid => Some(Owner {
            pid: pid as u32,
            start: u64_at(r, field + 8),
        }),
    }
}

fn set_owner(r: &Region, field: usize, o: Option<Owner>) {
    let (pid, start) = o.map_or((0, 0), |o| (o.pid as u64, o.start));
    set_u64(r, field + 8, start);
    set_u64(r, field, pid);
}

fn deadline(timeout: Duration) -> Option<Instant> {
    Some(Instant::now() + timeout)
}

/// Implements Clone, Debug and serde for a primitive `$ty { shared: Arc<Shared>, .. }`.
macro_rules! primitive {
    ($ty:ident, $magic:expr, { $($field:ident: $init:expr),* }) => {
        impl Clone for $ty {
            fn clone(&self) -> Self {
                $ty { shared: self.shared.clone() $(, $field: self.$field.clone())* }
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.shared.serialize($magic, s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($ty { shared: Shared::deserialize(d, $magic)? $(, $field: $init)* })
            }
        }
    };
}

/// The guard-returning ways to take a lock, for [`Lock`] (`$tid` = `None`) and
/// [`RLock`] (`$tid` = the calling thread).
macro_rules! lock_methods {
    ($guard:ident, $tid:expr) => {
        /// Acquires the lock, waiting as long as it takes.
        ///
        /// # Errors
        /// [`LockError::OwnerDied`] (with the guard) if the previous holder died
        /// holding it.
        ///
        /// # Cancel safety
        /// Cancel safe: the lock is taken only in the poll that returns the guard.
        pub async fn lock(&self) -> Result<$guard<'_>, LockError<$guard<'_>>> {
            let tid = $tid;
            let got = self
                .shared
                .cell
                .wait(|c| try_take(&self.shared, tid, c))
                .await?;
            self.guard(got)
        }

        /// [`lock`](Self::lock) with a time limit.
        ///
        /// # Errors
        /// [`LockError::Timeout`] if it was not released in time; else as
        /// [`lock`](Self::lock).
        ///
        /// # Cancel safety
        /// Cancel safe.
        pub async fn lock_timeout(
            &self,
            timeout: Duration,
        ) -> Result<$guard<'_>, LockError<$guard<'_>>> {
            match tokio::time::timeout(timeout, self.lock()).await {
                Ok(r) => r,
                Err(_) => Err(LockError::Timeout),
            }
        }

        /// Blocking form of [`lock`](Self::lock).
        ///
        /// # Errors
        /// As [`lock`](Self::lock).
        pub fn blocking_lock(&self) -> Result<$guard<'_>, LockError<$guard<'_>>> {
            let tid = $tid;
            let got = self
                .shared
                .cell
                .blocking_wait(None, |c| try_take(&self.shared, tid, c))?
                .expect("no deadline");
            self.guard(got)
        }

        /// Blocking form of [`lock_timeout`](Self::lock_timeout).
        ///
        /// # Errors
        /// As [`lock_timeout`](Self::lock_timeout).
        pub fn blocking_lock_timeout(
            &self,
            timeout: Duration,
        ) -> Result<$guard<'_>, LockError<$guard<'_>>> {
            let tid = $tid;
            match self
                .shared
                .cell
                .blocking_wait(deadline(timeout), |c| try_take(&self.shared, tid, c))?
            {
                Some(got) => self.guard(got),
                None => Err(LockError::Timeout),
            }
        }

        /// Acquires the lock if it is free now (or, for an `RLock`, held by this
        /// thread).
        ///
        /// # Errors
        /// [`LockError::WouldBlock`] if another holds it; else as [`lock`](Self::lock).
        pub fn try_lock(&self) -> Result<$guard<'_>, LockError<$guard<'_>>> {
            match try_take(&self.shared, $tid, true)? {
                Step::Ready(got) => self.guard(got),
                _ => Err(LockError::WouldBlock),
            }
        }
    };
}

const MAGIC_LOCK: u64 = 0x7073_796e_634c_0001;
const MAGIC_RLOCK: u64 = 0x7073_796e_6352_0001;
const MAGIC_SEM: u64 = 0x7073_796e_6353_0001;
const MAGIC_EVENT: u64 = 0x7073_796e_6345_0001;
const MAGIC_COND: u64 = 0x7073_796e_6343_0001;
const MAGIC_BARRIER: u64 = 0x7073_796e_6342_0001;

// ---------------------------------------------------------------- Lock

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
    pub fn acquire(&self) -> Result<(), LockError<()>> {
        match self.blocking_lock() {
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

// ---------------------------------------------------------------- Semaphore

// Semaphore fields: value, initial value, bounded flag, then holder slots of
// (pid, start, permits).
const S_VALUE: usize = 0;
const S_INITIAL: usize = 8;
const S_BOUNDED: usize = 16;
const S_SLOTS: usize = 32;
const SLOT_SIZE: usize = 24;
/// Processes whose permits are tracked for recovery; permits of a process that finds
/// every slot taken are not recovered if it dies.
const HOLDER_SLOTS: usize = 128;

/// A counting semaphore shared between processes (Python's `multiprocessing.Semaphore`).
/// [`acquire`](Self::acquire) returns a [`SemaphoreGuard`] that gives the permit back
/// when dropped; [`release`](Self::release) adds a permit Python-style.
///
/// Permits held through guards are counted per process (for up to 128 processes at a
/// time), so that those of a process that dies come back to the next acquirer; permits
/// of processes beyond that are not recovered.
pub struct Semaphore {
    shared: Arc<Shared>,
}

primitive!(Semaphore, MAGIC_SEM, {});

/// A [`Semaphore`] that refuses to be released above its initial value (Python's
/// `BoundedSemaphore`).
pub struct BoundedSemaphore {
    shared: Arc<Shared>,
}

primitive!(BoundedSemaphore, MAGIC_SEM, {});

/// One permit of a semaphore; given back when dropped.
#[must_use = "the permit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    shared: &'a Shared,
    reclaimed: bool,
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard")
            .field("reclaimed", &self.reclaimed)
            .finish()
    }
}

impl SemaphoreGuard<'_> {
    /// `true` when getting this permit took back permits from a process that died
    /// holding them: the warning Python never gives. What they protected may need
    /// checking.
    pub fn reclaimed(&self) -> bool {
        self.reclaimed
    }

    /// Keeps the permit (Python's `acquire` without `release`): it stays counted as
    /// held by this process, and comes back if the process dies.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = sem_release(self.shared, true, false);
    }
}

fn slot(page: &Region, i: usize) -> (Option<Owner>, u64) {
    let at = S_SLOTS + i * SLOT_SIZE;
    (owner_at(page, at), u64_at(page, at + 16))
}

fn set_slot(page: &Region, i: usize, o: Option<Owner>, n: u64) {
    let at = S_SLOTS + i * SLOT_SIZE;
    set_u64(page, at + 16, n);
    set_owner(page, at, o);
}

/// Adds `delta` to this process's tracked permits.
fn track(page: &Region, delta: i64) {
    let me = owner::me();
    let mut free = None;
    for i in 0..HOLDER_SLOTS {
        match slot(page, i) {
            (Some(o), n) if o == me => {
                let n = (n as i64 + delta).max(0) as u64;
                set_slot(page, i, if n == 0 { None } else { Some(me) }, n);
                return;
            }
            (None, _) if free.is_none() => free = Some(i),
            _ => {}
        }
    }
    if let (Some(i), true) = (free, delta > 0) {
        set_slot(page, i, Some(me), delta as u64);
    }
}

fn sem_try_acquire(shared: &Shared, check_holders: bool) -> io::Result<Step<bool>> {
    let mut g = shared.lock()?;
    let page = g.page();
    let mut value = u64_at(page, S_VALUE);
    let mut reclaimed = false;
    let mut holder = None;
    if value == 0 {
        // Permits of holders that died come back.
        for i in 0..HOLDER_SLOTS {
            if let (Some(o), n) = slot(page, i) {
                if !check_holders || owner::is_alive(o) {
                    holder.get_or_insert(o.pid);
                } else {
                    value += n;
                    reclaimed = true;
                    set_slot(page, i, None, 0);
                }
            }
        }
    }
    if value == 0 {
        return Ok(match holder {
            Some(pid) => Step::HeldBy(pid),
            None => Step::Pending,
        });
    }
    set_u64(page, S_VALUE, value - 1);
    track(page, 1);
    g.changed();
    Ok(Step::Ready(reclaimed))
}

fn sem_release(shared: &Shared, tracked: bool, strict: bool) -> Result<(), ReleaseError> {
    let mut g = shared.lock()?;
    let page = g.page();
    let value = u64_at(page, S_VALUE);
    if strict && u64_at(page, S_BOUNDED) != 0 && value + 1 > u64_at(page, S_INITIAL) {
        return Err(ReleaseError::TooManyReleases);
    }
    set_u64(page, S_VALUE, value + 1);
    if tracked {
        track(page, -1);
    }
    g.changed();
    Ok(())
}

macro_rules! semaphore_methods {
    ($ty:ident, $bounded:expr) => {
        impl $ty {
            /// A semaphore with `value` permits.
            ///
            /// # Errors
            /// A system error if the shared memory cannot be made.
            pub fn new(value: usize) -> io::Result<$ty> {
                let shared = Shared::create("procpool-semaphore", MAGIC_SEM)?;
                {
                    let g = shared.lock()?;
                    set_u64(g.page(), S_VALUE, value as u64);
                    set_u64(g.page(), S_INITIAL, value as u64);
                    set_u64(g.page(), S_BOUNDED, $bounded as u64);
                }
                Ok($ty { shared })
            }

            fn guard(&self, reclaimed: bool) -> SemaphoreGuard<'_> {
                SemaphoreGuard {
                    shared: &self.shared,
                    reclaimed,
                }
            }

            /// Takes a permit, waiting while there is none.
            ///
            /// # Errors
            /// A system error from the shared state.
            ///
            /// # Cancel safety
            /// Cancel safe: a permit is taken only in the poll that returns it.
            pub async fn acquire(&self) -> Result<SemaphoreGuard<'_>, WaitError> {
                let r = self
                    .shared
                    .cell
                    .wait(|c| sem_try_acquire(&self.shared, c))
                    .await?;
                Ok(self.guard(r))
            }

            /// [`acquire`](Self::acquire) with a time limit.
            ///
            /// # Errors
            /// [`WaitError::Timeout`] if no permit came in time.
            ///
            /// # Cancel safety
            /// Cancel safe.
            pub async fn acquire_timeout(
                &self,
                timeout: Duration,
            ) -> Result<SemaphoreGuard<'_>, WaitError> {
                match tokio::time::timeout(timeout, self.acquire()).await {
                    Ok(r) => r,
                    Err(_) => Err(WaitError::Timeout),
                }
            }

            /// Blocking form of [`acquire`](Self::acquire).
            ///
            /// # Errors
            /// As [`acquire`](Self::acquire).
            pub fn blocking_acquire(&self) -> Result<SemaphoreGuard<'_>, WaitError> {
                let r = self
                    .shared
                    .cell
                    .blocking_wait(None, |c| sem_try_acquire(&self.shared, c))?
                    .expect("no deadline");
                Ok(self.guard(r))
            }

            /// Blocking form of [`acquire_timeout`](Self::acquire_timeout).
            ///
            /// # Errors
            /// As [`acquire_timeout`](Self::acquire_timeout).
            pub fn blocking_acquire_timeout(
                &self,
                timeout: Duration,
            ) -> Result<SemaphoreGuard<'_>, WaitError> {
                match self
                    .shared
                    .cell
                    .blocking_wait(deadline(timeout), |c| sem_try_acquire(&self.shared, c))?
                {
                    Some(r) => Ok(self.guard(r)),
                    None => Err(WaitError::Timeout),
                }
            }

            /// Takes a permit if one is free now.
            ///
            /// # Errors
            /// [`WaitError::WouldBlock`] if none is.
            pub fn try_acquire(&self) -> Result<SemaphoreGuard<'_>, WaitError> {
                match sem_try_acquire(&self.shared, true)? {
                    Step::Ready(r) => Ok(self.guard(r)),
                    _ => Err(WaitError::WouldBlock),
                }
            }

            /// The number of free permits, exactly (Python's `get_value`).
            pub fn value(&self) -> usize {
                self.shared
                    .lock()
                    .map(|g| u64_at(g.page(), S_VALUE) as usize)
                    .unwrap_or(0)
            }
        }
    };
}

semaphore_methods!(Semaphore, false);
semaphore_methods!(BoundedSemaphore, true);

impl Semaphore {
    /// Adds a permit (Python's `release`), whoever took one.
    ///
    /// # Errors
    /// A system error from the shared state.
    pub fn release(&self) -> Result<(), ReleaseError> {
        sem_release(&self.shared, false, false)
    }
}

impl BoundedSemaphore {
    /// Adds a permit (Python's `release`).
    ///
    /// # Errors
    /// [`ReleaseError::TooManyReleases`] if that would raise the value above the
    /// initial one.
    pub fn release(&self) -> Result<(), ReleaseError> {
        sem_release(&self.shared, false, true)
    }
}

// ---------------------------------------------------------------- Event

const E_FLAG: usize = 0;

/// A flag processes wait on (Python's `multiprocessing.Event`): every waiter, in every
/// process, wakes when it is set.
pub struct Event {
    shared: Arc<Shared>,
}

primitive!(Event, MAGIC_EVENT, {});

impl Event {
    /// A new event, not set.
    ///
    /// # Errors
    /// A system error if the shared memory cannot be made.
    pub fn new() -> io::Result<Event> {
        Ok(Event {
            shared: Shared::create("procpool-event", MAGIC_EVENT)?,
        })
    }

    fn put(&self, v: u64) {
        if let Ok(mut g) = self.shared.lock() {
            if u64_at(g.page(), E_FLAG) != v {
                set_u64(g.page(), E_FLAG, v);
                g.changed();
            }
        }
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.put(1)
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.put(0)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.shared
            .lock()
            .map(|g| u64_at(g.page(), E_FLAG) != 0)
            .unwrap_or(false)
    }

    fn check(&self) -> io::Result<Step<()>> {
        Ok(if self.is_set() {
            Step::Ready(())
        } else {
            Step::Pending
        })
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    /// A system error from the shared state.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait(&self) -> io::Result<()> {
        self.shared.cell.wait(|_| self.check()).await
    }

    /// Waits up to `timeout`; returns whether the flag is set (Python's
    /// `wait(timeout)`).
    ///
    /// # Errors
    /// A system error from the shared state.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_timeout(&self, timeout: Duration) -> io::Result<bool> {
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(r) => r.map(|()| true),
            Err(_) => Ok(self.is_set()),
        }
    }

    /// Blocking form of [`wait`](Self::wait).
    ///
    /// # Errors
    /// A system error from the shared state.
    pub fn blocking_wait(&self) -> io::Result<()> {
        self.shared
            .cell
            .blocking_wait(None, |_| self.check())
            .map(drop)
    }

    /// Blocking form of [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Errors
    /// A system error from the shared state.
    pub fn blocking_wait_timeout(&self, timeout: Duration) -> io::Result<bool> {
        self.shared
            .cell
            .blocking_wait(deadline(timeout), |_| self.check())
            .map(|r| r.is_some())
    }
}

// ---------------------------------------------------------------- Condition

// Condition fields: waiters registered, and notifications not yet taken.
const C_WAITING: usize = 0;
const C_SIGNALS: usize = 8;

/// A condition variable (Python's `multiprocessing.Condition`) over a [`Lock`] (the
/// default) or an [`RLock`]: wait releases the lock, sleeps until notified, and takes
/// the lock again. Over an `RLock`, wait releases every level this thread holds and
/// restores them after.
///
/// `notify(n)` lets at most `n` of the current waiters go; as with any condition
/// variable, re-check the condition after waking ([`wait_while`](Self::wait_while)
/// does). A notification taken by a waiter that then dies is used up.
pub struct Condition<L = Lock> {
    shared: Arc<Shared>,
    lock: L,
}

impl<L: Clone> Clone for Condition<L> {
    fn clone(&self) -> Self {
        Condition {
            shared: self.shared.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<L> fmt::Debug for Condition<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").finish_non_exhaustive()
    }
}

impl<L: Serialize> Serialize for Condition<L> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let [m, e] = [self.shared.cell.memfd(), self.shared.cell.event_fd()];
        (SendFd(m), SendFd(e), MAGIC_COND, &self.lock).serialize(s)
    }
}

impl<'de, L: Deserialize<'de>> Deserialize<'de> for Condition<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (RecvFd(memfd), RecvFd(event), magic, lock) =
            <(RecvFd, RecvFd, u64, L)>::deserialize(d)?;
        if magic != MAGIC_COND {
            return Err(D::Error::custom("not a Condition"));
        }
        let cell = WaitCell::open(memfd, event, MAGIC_COND)
            .map_err(|e| D::Error::custom(format!("opening a Condition: {e}")))?;
        Ok(Condition {
            shared: Arc::new(Shared { cell }),
            lock,
        })
    }
}

impl<L> Condition<L> {
    /// A condition over `lock` (a [`Lock`] or an [`RLock`]).
    ///
    /// # Errors
    /// A system error if the shared memory cannot be made.
    pub fn new(lock: L) -> io::Result<Condition<L>> {
        Ok(Condition {
            shared: Shared::create("procpool-condition", MAGIC_COND)?,
            lock,
        })
    }

    /// The lock the condition uses: take it before waiting or notifying.
    pub fn lock(&self) -> &L {
        &self.lock
    }

    fn register(&self) -> io::Result<()> {
        let mut g = self.shared.lock()?;
        set_u64(g.page(), C_WAITING, u64_at(g.page(), C_WAITING) + 1);
        g.changed();
        Ok(())
    }

    /// Takes a notification if there is one.
    fn take_signal(&self) -> io::Result<Step<()>> {
        let mut g = self.shared.lock()?;
        let page = g.page();
        let signals = u64_at(page, C_SIGNALS);
        if signals == 0 {
            return Ok(Step::Pending);
        }
        set_u64(page, C_SIGNALS, signals - 1);
        set_u64(page, C_WAITING, u64_at(page, C_WAITING).saturating_sub(1));
        g.changed();
        Ok(Step::Ready(()))
    }

    /// A waiter that timed out leaves; notifications beyond the waiters left lapse.
    /// Returns whether it was notified after all (it then took the notification).
    fn leave(&self) -> bool {
        if let Ok(Step::Ready(())) = self.take_signal() {
            return true;
        }
        if let Ok(mut g) = self.shared.lock() {
            let page = g.page();
            let waiting = u64_at(page, C_WAITING).saturating_sub(1);
            set_u64(page, C_WAITING, waiting);
            set_u64(page, C_SIGNALS, u64_at(page, C_SIGNALS).min(waiting));
            g.changed();
        }
        false
    }

    /// Wakes up to `n` of the waiters.
    pub fn notify(&self, n: usize) {
        if let Ok(mut g) = self.shared.lock() {
            let page = g.page();
            let waiting = u64_at(page, C_WAITING);
            let signals = u64_at(page, C_SIGNALS);
            let to = signals.saturating_add(n as u64).min(waiting);
            if to != signals {
                set_u64(page, C_SIGNALS, to);
                g.changed();
            }
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.notify(usize::MAX)
    }
}

/// Releases what `guard` stands for before a condition wait; returns what to restore.
fn release_for_wait(guard: LockGuard<'_>) -> io::Result<u64> {
    drop(guard);
    Ok(1)
}

fn restore_after_wait(_: &Lock, _: u64) {}

/// Releases every level of an RLock this thread holds; returns how many.
fn release_all_for_wait(guard: RLockGuard<'_>) -> io::Result<u64> {
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
fn restore_all_after_wait(lock: &RLock, depth: u64) {
    if let Ok(g) = lock.shared.lock() {
        set_u64(g.page(), L_DEPTH, depth.max(1));
    }
}

macro_rules! condition_waits {
    ($lock:ty, $guard:ident, $release:ident, $restore:ident) => {
        impl Condition<$lock> {
            async fn relock<'a>(&'a self, saved: u64) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                let r = self.lock.lock().await;
                $restore(&self.lock, saved);
                r
            }

            fn blocking_relock<'a>(
                &'a self,
                saved: u64,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                let r = self.lock.blocking_lock();
                $restore(&self.lock, saved);
                r
            }

            /// Releases the lock held by `guard`, waits for a notification, and takes the lock
            /// again.
            ///
            /// # Errors
            /// As [`Lock::lock`] when taking the lock back (`OwnerDied` carries the guard).
            ///
            /// # Cancel safety
            /// Not cancel safe: if cancelled, the lock is not held any more.
            pub async fn wait<'a>(
                &'a self,
                guard: $guard<'a>,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                self.register()?;
                let saved = $release(guard)?;
                self.shared.cell.wait(|_| self.take_signal()).await?;
                self.relock(saved).await
            }

            /// [`wait`](Self::wait) for at most `timeout`; the flag says whether it was
            /// notified (`false`: timed out). The lock is held again either way.
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            ///
            /// # Cancel safety
            /// Not cancel safe, as [`wait`](Self::wait).
            pub async fn wait_timeout<'a>(
                &'a self,
                guard: $guard<'a>,
                timeout: Duration,
            ) -> Result<($guard<'a>, bool), LockError<$guard<'a>>> {
                self.register()?;
                let saved = $release(guard)?;
                let notified =
                    tokio::time::timeout(timeout, self.shared.cell.wait(|_| self.take_signal()))
                        .await;
                let notified = match notified {
                    Ok(r) => {
                        r?;
                        true
                    }
                    Err(_) => self.leave(),
                };
                Ok((self.relock(saved).await?, notified))
            }

            /// Waits while `condition` returns true (Python's `wait_for` with the test
            /// inverted, as Rust's `Condvar::wait_while`).
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            ///
            /// # Cancel safety
            /// Not cancel safe, as [`wait`](Self::wait).
            pub async fn wait_while<'a>(
                &'a self,
                mut guard: $guard<'a>,
                mut condition: impl FnMut() -> bool,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                while condition() {
                    guard = self.wait(guard).await?;
                }
                Ok(guard)
            }

            /// Blocking form of [`wait`](Self::wait).
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            pub fn blocking_wait<'a>(
                &'a self,
                guard: $guard<'a>,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                self.register()?;
                let saved = $release(guard)?;
                self.shared
                    .cell
                    .blocking_wait(None, |_| self.take_signal())?;
                self.blocking_relock(saved)
            }

            /// Blocking form of [`wait_timeout`](Self::wait_timeout).
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            pub fn blocking_wait_timeout<'a>(
                &'a self,
                guard: $guard<'a>,
                timeout: Duration,
            ) -> Result<($guard<'a>, bool), LockError<$guard<'a>>> {
                self.register()?;
                let saved = $release(guard)?;
                let notified = self
                    .shared
                    .cell
                    .blocking_wait(deadline(timeout), |_| self.take_signal())?
                    .is_some()
                    || self.leave();
                Ok((self.blocking_relock(saved)?, notified))
            }

            /// Blocking form of [`wait_while`](Self::wait_while).
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            pub fn blocking_wait_while<'a>(
                &'a self,
                mut guard: $guard<'a>,
                mut condition: impl FnMut() -> bool,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                while condition() {
                    guard = self.blocking_wait(guard)?;
                }
                Ok(guard)
            }
        }
    };
}

condition_waits!(Lock, LockGuard, release_for_wait, restore_after_wait);
condition_waits!(
    RLock,
    RLockGuard,
    release_all_for_wait,
    restore_all_after_wait
);

// ---------------------------------------------------------------- Barrier

// Barrier fields.
const B_PARTIES: usize = 0;
const B_COUNT: usize = 8;
const B_GENERATION: usize = 16;
const B_BROKEN: usize = 24;
/// The generation that `reset` ended (its waiters get `BrokenBarrier`), plus one.
const B_RESET_GEN: usize = 32;

/// A barrier for a fixed number of parties (Python's `multiprocessing.Barrier`): each
/// `wait` blocks until `parties` waits have arrived, then all return.
pub struct Barrier {
    shared: Arc<Shared>,
}

primitive!(Barrier, MAGIC_BARRIER, {});

/// What [`Barrier::wait`] attempts return: arrival, or the generation waited on.
enum Arrival {
    Done(usize),
    Waiting { index: usize, generation: u64 },
}

impl Barrier {
    /// A barrier for `parties` waiters.
    ///
    /// # Errors
    /// `InvalidInput` for 0 parties; a system error if the shared memory cannot be
    /// made.
    pub fn new(parties: usize) -> io::Result<Barrier> {
        if parties == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a barrier needs at least one party",
            ));
        }
        let shared = Shared::create("procpool-barrier", MAGIC_BARRIER)?;
        {
            let g = shared.lock()?;
            set_u64(g.page(), B_PARTIES, parties as u64);
        }
        Ok(Barrier { shared })
    }

    fn arrive(&self) -> Result<Arrival, WaitError> {
        let mut g = self.shared.lock()?;
        let page = g.page();
        if u64_at(page, B_BROKEN) != 0 {
            return Err(WaitError::BrokenBarrier);
        }
        let index = u64_at(page, B_COUNT);
        let generation = u64_at(page, B_GENERATION);
        if index + 1 == u64_at(page, B_PARTIES) {
            set_u64(page, B_COUNT, 0);
            set_u64(page, B_GENERATION, generation + 1);
            g.changed();
            return Ok(Arrival::Done(index as usize));
        }
        set_u64(page, B_COUNT, index + 1);
        g.changed();
        Ok(Arrival::Waiting {
            index: index as usize,
            generation,
        })
    }

    fn passed(&self, generation: u64) -> Result<Step<()>, WaitError> {
        let g = self.shared.lock()?;
        let page = g.page();
        if u64_at(page, B_GENERATION) != generation {
            if u64_at(page, B_RESET_GEN) == generation + 1 {
                return Err(WaitError::BrokenBarrier);
            }
            return Ok(Step::Ready(()));
        }
        if u64_at(page, B_BROKEN) != 0 {
            return Err(WaitError::BrokenBarrier);
        }
        Ok(Step::Pending)
    }

    /// Waits for all parties; returns this caller's arrival index (`0..parties`,
    /// different for each; the last to arrive gets `parties - 1` and releases the
    /// others).
    ///
    /// # Errors
    /// [`WaitError::BrokenBarrier`] if the barrier is or becomes broken.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled wait has already been counted as arrived; break
    /// the barrier ([`abort`](Self::abort)) if that matters.
    pub async fn wait(&self) -> Result<usize, WaitError> {
        match self.arrive()? {
            Arrival::Done(i) => Ok(i),
            Arrival::Waiting { index, generation } => {
                self.shared.cell.wait(|_| self.passed(generation)).await?;
                Ok(index)
            }
        }
    }

    /// [`wait`](Self::wait) for at most `timeout`. A timeout breaks the barrier for
    /// everyone, as in Python.
    ///
    /// # Errors
    /// [`WaitError::BrokenBarrier`] on a timeout or a broken barrier.
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`wait`](Self::wait).
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<usize, WaitError> {
        match self.arrive()? {
            Arrival::Done(i) => Ok(i),
            Arrival::Waiting { index, generation } => {
                match tokio::time::timeout(
                    timeout,
                    self.shared.cell.wait(|_| self.passed(generation)),
                )
                .await
                {
                    Ok(r) => r.map(|()| index),
                    Err(_) => self.timed_out(generation, index),
                }
            }
        }
    }

    /// Breaks the barrier after a timeout, unless it passed at the last moment.
    fn timed_out(&self, generation: u64, index: usize) -> Result<usize, WaitError> {
        match self.passed(generation) {
            Ok(Step::Ready(())) => Ok(index),
            Err(e) => Err(e),
            _ => {
                self.abort();
                Err(WaitError::BrokenBarrier)
            }
        }
    }

    /// Blocking form of [`wait`](Self::wait).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn blocking_wait(&self) -> Result<usize, WaitError> {
        match self.arrive()? {
            Arrival::Done(i) => Ok(i),
            Arrival::Waiting { index, generation } => {
                self.shared
                    .cell
                    .blocking_wait(None, |_| self.passed(generation))?;
                Ok(index)
            }
        }
    }

    /// Blocking form of [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Errors
    /// As [`wait_timeout`](Self::wait_timeout).
    pub fn blocking_wait_timeout(&self, timeout: Duration) -> Result<usize, WaitError> {
        match self.arrive()? {
            Arrival::Done(i) => Ok(i),
            Arrival::Waiting { index, generation } => match self
                .shared
                .cell
                .blocking_wait(deadline(timeout), |_| self.passed(generation))?
            {
                Some(()) => Ok(index),
                None => self.timed_out(generation, index),
            },
        }
    }

    /// Breaks the barrier: current and future waits fail with
    /// [`WaitError::BrokenBarrier`] until [`reset`](Self::reset).
    pub fn abort(&self) {
        if let Ok(mut g) = self.shared.lock() {
            set_u64(g.page(), B_BROKEN, 1);
            g.changed();
        }
    }

    /// Returns the barrier to its initial state; parties waiting now get
    /// [`WaitError::BrokenBarrier`].
    pub fn reset(&self) {
        if let Ok(mut g) = self.shared.lock() {
            let page = g.page();
            let generation = u64_at(page, B_GENERATION);
            if u64_at(page, B_COUNT) > 0 {
                set_u64(page, B_RESET_GEN, generation + 1);
            }
            set_u64(page, B_GENERATION, generation + 1);
            set_u64(page, B_COUNT, 0);
            set_u64(page, B_BROKEN, 0);
            g.changed();
        }
    }

    /// How many parties are waiting now.
    pub fn n_waiting(&self) -> usize {
        self.shared
            .lock()
            .map(|g| u64_at(g.page(), B_COUNT) as usize)
            .unwrap_or(0)
    }

    /// How many parties the barrier waits for.
    pub fn parties(&self) -> usize {
        self.shared
            .lock()
            .map(|g| u64_at(g.page(), B_PARTIES) as usize)
            .unwrap_or(0)
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.shared
            .lock()
            .map(|g| u64_at(g.page(), B_BROKEN) != 0)
            .unwrap_or(true)
    }
}
