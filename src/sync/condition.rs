//! [`Condition`]: a condition variable over a [`Lock`] or an [`RLock`].

use super::*;

const MAGIC_COND: u64 = 0x7073_796e_6343_0001;

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

impl<L: Serialize + serde::de::DeserializeOwned> Handle for Condition<L> {
    const KIND: &'static str = "Condition";
    type Params = L;
    type Parts<'a>
        = (SendFd<'a>, SendFd<'a>, &'a L)
    where
        Self: 'a;
    type Received = (RecvFd, RecvFd, L);

    fn parts(&self) -> Self::Parts<'_> {
        let (memfd, event) = self.shared.parts();
        (memfd, event, &self.lock)
    }

    fn assemble((memfd, event, lock): Self::Received) -> Result<Self, String> {
        Ok(Condition {
            shared: Shared::open((memfd, event), MAGIC_COND)?,
            lock,
        })
    }
}

handle_serde!(Condition<L>);

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

    /// Lets up to `n` of the waiters go.
    fn signal(&self, n: usize) -> io::Result<()> {
        let mut g = self.shared.lock()?;
        let page = g.page();
        let waiting = u64_at(page, C_WAITING);
        let signals = u64_at(page, C_SIGNALS);
        let to = signals.saturating_add(n as u64).min(waiting);
        if to != signals {
            set_u64(page, C_SIGNALS, to);
            g.changed();
        }
        Ok(())
    }
}

macro_rules! condition_waits {
    ($lock:ty, $guard:ident, $release:ident, $restore:ident) => {
        impl Condition<$lock> {
            /// Wakes up to `n` of the waiters. The caller must hold the lock, as in
            /// Python.
            ///
            /// # Errors
            /// [`NotifyError::LockNotHeld`] if it does not (nobody is woken).
            pub fn notify(&self, n: usize) -> Result<(), NotifyError> {
                if !self.lock.held_here()? {
                    return Err(NotifyError::LockNotHeld);
                }
                Ok(self.signal(n)?)
            }

            /// Wakes every waiter. The caller must hold the lock, as in Python.
            ///
            /// # Errors
            /// As [`notify`](Self::notify).
            pub fn notify_all(&self) -> Result<(), NotifyError> {
                self.notify(usize::MAX)
            }

            /// Waits until `predicate` returns true (Python's `wait_for`): checks it
            /// first, then after each notification, with the lock held.
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            ///
            /// # Cancel safety
            /// Not cancel safe, as [`wait`](Self::wait).
            pub async fn wait_for<'a>(
                &'a self,
                mut guard: $guard<'a>,
                mut predicate: impl FnMut() -> bool,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                while !predicate() {
                    guard = self.wait(guard).await?;
                }
                Ok(guard)
            }

            /// [`wait_for`](Self::wait_for) for at most `timeout` in all; returns the
            /// predicate's last value (`false`: it timed out first), with the lock held
            /// either way, as Python's `wait_for(predicate, timeout)`.
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            ///
            /// # Cancel safety
            /// Not cancel safe, as [`wait`](Self::wait).
            pub async fn wait_for_timeout<'a>(
                &'a self,
                mut guard: $guard<'a>,
                mut predicate: impl FnMut() -> bool,
                timeout: Duration,
            ) -> Result<($guard<'a>, bool), LockError<$guard<'a>>> {
                let until = Instant::now() + timeout;
                loop {
                    if predicate() {
                        return Ok((guard, true));
                    }
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok((guard, false));
                    }
                    guard = self.wait_timeout(guard, left).await?.0;
                }
            }

            /// Blocking form of [`wait_for`](Self::wait_for).
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            ///
            /// # Panics
            /// If called from an async context, where it would stall the runtime; `.await`
            /// [`wait_for`](Self::wait_for) there.
            #[track_caller]
            pub fn blocking_wait_for<'a>(
                &'a self,
                mut guard: $guard<'a>,
                mut predicate: impl FnMut() -> bool,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                crate::blocking::assert_may_block("blocking_wait_for", "wait_for");
                while !predicate() {
                    guard = self.blocking_wait(guard)?;
                }
                Ok(guard)
            }

            /// Blocking form of [`wait_for_timeout`](Self::wait_for_timeout).
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            ///
            /// # Panics
            /// If called from an async context, where it would stall the runtime; `.await`
            /// [`wait_for_timeout`](Self::wait_for_timeout) there.
            #[track_caller]
            pub fn blocking_wait_for_timeout<'a>(
                &'a self,
                mut guard: $guard<'a>,
                mut predicate: impl FnMut() -> bool,
                timeout: Duration,
            ) -> Result<($guard<'a>, bool), LockError<$guard<'a>>> {
                crate::blocking::assert_may_block("blocking_wait_for_timeout", "wait_for_timeout");
                let until = Instant::now() + timeout;
                loop {
                    if predicate() {
                        return Ok((guard, true));
                    }
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok((guard, false));
                    }
                    guard = self.blocking_wait_timeout(guard, left)?.0;
                }
            }

            async fn relock<'a>(&'a self, saved: u64) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                let r = self.lock.lock().await;
                $restore(&self.lock, saved);
                r
            }

            fn blocking_relock<'a>(
                &'a self,
                saved: u64,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                let r = self.lock.lock_blocking_unchecked();
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
            ///
            /// # Panics
            /// If called from an async context, where it would stall the runtime; `.await`
            /// [`wait`](Self::wait) there.
            #[track_caller]
            pub fn blocking_wait<'a>(
                &'a self,
                guard: $guard<'a>,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                crate::blocking::assert_may_block("blocking_wait", "wait");
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
            ///
            /// # Panics
            /// If called from an async context, where it would stall the runtime; `.await`
            /// [`wait_timeout`](Self::wait_timeout) there.
            #[track_caller]
            pub fn blocking_wait_timeout<'a>(
                &'a self,
                guard: $guard<'a>,
                timeout: Duration,
            ) -> Result<($guard<'a>, bool), LockError<$guard<'a>>> {
                crate::blocking::assert_may_block("blocking_wait_timeout", "wait_timeout");
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
            ///
            /// # Panics
            /// If called from an async context, where it would stall the runtime; `.await`
            /// [`wait_while`](Self::wait_while) there.
            #[track_caller]
            pub fn blocking_wait_while<'a>(
                &'a self,
                mut guard: $guard<'a>,
                mut condition: impl FnMut() -> bool,
            ) -> Result<$guard<'a>, LockError<$guard<'a>>> {
                crate::blocking::assert_may_block("blocking_wait_while", "wait_while");
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
