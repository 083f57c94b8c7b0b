//! Synchronization between processes: Python's `Lock`, `RLock`, `Semaphore`,
//! `BoundedSemaphore`, `Event`, `Condition` and `Barrier`, async-aware.
//!
//! Each primitive is a page of shared memory (an anonymous memory file: nothing is left
//! in `/dev/shm` after a crash) holding its state under a robust process-shared mutex,
//! plus an eventfd. Blocking waits sleep on a futex; async waits are woken through the
//! eventfd, which tokio watches. [`Lock`] and [`RLock`] skip the mutex: their state is
//! one atomic word naming the holder, so an uncontended lock and unlock is one
//! compare-and-swap and one swap, and only a release that someone sleeps for touches
//! the page's change counter and wakes them. A blocking `lock` that finds the lock
//! held spins first, adaptively (glibc's adaptive mutex and parking_lot are the
//! models), reading the word and backing off between looks, before it sleeps. Pass a
//! primitive to other processes as a task or [`Process`](crate::Process) argument, or
//! inside a message; clone it to share it between tasks of one process.
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

use serde::Serialize;

use crate::sys;
use crate::sys::shm::Region;
use crate::waitcell::{CellGuard, Look, Step, WaitCell, USER};
use crate::wire::handles::{handle_serde, Handle, RecvFd, SendFd};
pub(crate) use owner::Owner;

// ---------------------------------------------------------------- errors

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

    /// The page's descriptors, as they travel.
    fn parts(&self) -> SharedParts<'_> {
        (SendFd(self.cell.memfd()), SendFd(self.cell.event_fd()))
    }

    /// Opens a page that arrived; `WaitCell::open` checks that it holds a `magic`.
    fn open(
        (RecvFd(memfd), RecvFd(event)): (RecvFd, RecvFd),
        magic: u64,
    ) -> Result<Arc<Shared>, String> {
        let cell = WaitCell::open(memfd, event, magic)
            .map_err(|e| format!("opening a shared primitive: {e}"))?;
        Ok(Arc::new(Shared { cell }))
    }
}

/// A primitive's two descriptors, as they travel.
type SharedParts<'a> = (SendFd<'a>, SendFd<'a>);

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

/// Implements Clone, Debug, [`Handle`] and serde for a primitive `$ty { shared: Arc<Shared>, .. }`.
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

        impl Handle for $ty {
            const KIND: &'static str = stringify!($ty);
            type Params = ();
            type Parts<'a> = SharedParts<'a>;
            type Received = (RecvFd, RecvFd);

            fn parts(&self) -> SharedParts<'_> {
                self.shared.parts()
            }

            fn assemble(fds: (RecvFd, RecvFd)) -> Result<Self, String> {
                Ok($ty { shared: Shared::open(fds, $magic)? $(, $field: $init)* })
            }
        }

        handle_serde!($ty);
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
                .wait(|c| async_attempt(&self.shared, tid, c))
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
        ///
        /// # Panics
        /// If called from an async context, where it would stall the runtime; `.await`
        /// [`lock`](Self::lock) there.
        #[track_caller]
        pub fn blocking_lock(&self) -> Result<$guard<'_>, LockError<$guard<'_>>> {
            crate::blocking::assert_may_block("blocking_lock", "lock");
            self.lock_blocking_unchecked()
        }

        /// [`blocking_lock`](Self::blocking_lock) without the async-context check, for
        /// the crate's own short critical sections (a shared `Value`'s get and set),
        /// which hold the lock for a copy and are fine from async code.
        pub(crate) fn lock_blocking_unchecked(&self) -> Result<$guard<'_>, LockError<$guard<'_>>> {
            let tid = $tid;
            let got = blocking_take(&self.shared, tid, None)?.expect("no deadline");
            self.guard(got)
        }

        /// Blocking form of [`lock_timeout`](Self::lock_timeout).
        ///
        /// # Errors
        /// As [`lock_timeout`](Self::lock_timeout).
        ///
        /// # Panics
        /// If called from an async context, where it would stall the runtime; `.await`
        /// [`lock_timeout`](Self::lock_timeout) there.
        #[track_caller]
        pub fn blocking_lock_timeout(
            &self,
            timeout: Duration,
        ) -> Result<$guard<'_>, LockError<$guard<'_>>> {
            crate::blocking::assert_may_block("blocking_lock_timeout", "lock_timeout");
            let tid = $tid;
            match blocking_take(&self.shared, tid, deadline(timeout))? {
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
            match try_once(&self.shared, $tid)? {
                Step::Ready(got) => self.guard(got),
                _ => Err(LockError::WouldBlock),
            }
        }
    };
}

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
mod semaphore;

pub use barrier::{Barrier, BarrierAction, NoAction};
pub use condition::Condition;
pub use error::{LockError, NotifyError, ReleaseError, WaitError};
pub use event::Event;
use lock::{release_all_for_wait, release_for_wait, restore_after_wait, restore_all_after_wait};
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
