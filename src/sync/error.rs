//! The errors of the synchronization primitives.

use super::*;

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
