//! The errors of the synchronization primitives.

use super::*;

/// Why a lock (or an `RLock`) was not simply acquired.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum LockError<G> {
    /// The previous holder died holding it. The lock *is* acquired: the guard is
    /// here; check or repair what it protects, then go on.
    #[error("the previous holder died holding the lock (it is now held by this caller)")]
    OwnerDied(G),
    /// `try_*`: it is held by someone else.
    #[error("the lock is held")]
    WouldBlock,
    /// `*_timeout`: it was not released in time.
    #[error("the lock was not released before the timeout")]
    Timeout,
    /// A system call failed.
    #[error("lock I/O error")]
    Io(#[from] io::Error),
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

/// Without the guard, which is not `Debug`.
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

/// Why a release was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// `RLock::release` by a thread that does not hold it.
    #[error("cannot release an RLock this thread does not hold")]
    NotOwner,
    /// A [`BoundedSemaphore`] released above its initial value (Python's "semaphore or
    /// lock released too many times").
    #[error("semaphore released too many times")]
    TooManyReleases,
    /// A system call failed.
    #[error("release I/O error")]
    Io(#[from] io::Error),
}

/// Why a [`Condition::notify`] was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The caller does not hold the condition's lock (this process for a [`Lock`],
    /// this thread for an [`RLock`]), as Python refuses "notify on un-acquired lock".
    /// Take the lock first: a notification outside it can slip between a waiter's
    /// check and its wait, and be lost.
    #[error("cannot notify on a condition whose lock is not held by the caller")]
    LockNotHeld,
    /// A system call failed.
    #[error("notify I/O error")]
    Io(#[from] io::Error),
}

/// Why a wait on an [`Event`], [`Semaphore`], [`Condition`] or [`Barrier`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// `try_*`: it would have to wait.
    #[error("would have to wait")]
    WouldBlock,
    /// `*_timeout`: the time ran out.
    #[error("timed out")]
    Timeout,
    /// The [`Barrier`] is broken (a wait timed out, `abort` or `reset` was called, or
    /// its action panicked in another party).
    #[error("the barrier is broken")]
    BrokenBarrier,
    /// This party was the last to arrive at a [`Barrier`] and its action panicked; the
    /// barrier is broken for the others.
    #[error("the barrier's action panicked: {0}")]
    ActionPanicked(crate::error::PanicInfo),
    /// A system call failed.
    #[error("wait I/O error")]
    Io(#[from] io::Error),
}
