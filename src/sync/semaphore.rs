//! [`Semaphore`] and [`BoundedSemaphore`], with permits recovered from processes that die.

use super::*;

const MAGIC_SEM: u64 = 0x7073_796e_6353_0001;

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
            ///
            /// # Panics
            /// If called from an async context, where it would stall the runtime; `.await`
            /// [`acquire`](Self::acquire) there.
            #[track_caller]
            pub fn blocking_acquire(&self) -> Result<SemaphoreGuard<'_>, WaitError> {
                crate::blocking::assert_may_block("blocking_acquire", "acquire");
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
            ///
            /// # Panics
            /// If called from an async context, where it would stall the runtime; `.await`
            /// [`acquire_timeout`](Self::acquire_timeout) there.
            #[track_caller]
            pub fn blocking_acquire_timeout(
                &self,
                timeout: Duration,
            ) -> Result<SemaphoreGuard<'_>, WaitError> {
                crate::blocking::assert_may_block("blocking_acquire_timeout", "acquire_timeout");
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
