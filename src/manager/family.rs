//! The rest of Python's manager family: [`JoinableQueueProxy`], [`RLockProxy`],
//! [`SemaphoreProxy`] (bounded or not), [`ConditionProxy`], [`BarrierProxy`] and
//! [`ArrayProxy`].
//!
//! As with [`LockProxy`], whatever holds a lock holds it through a connection of its
//! own, which its guard owns: dropping the guard, or the process dying, releases it.
//! A request that waits goes over a connection of its own too, so it holds up no other
//! proxy of this process.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::*;

/// A shared queue whose consumers say when each item is done, so that a producer can
/// wait for all of them ([`join`](Self::join)), as Python's `JoinableQueue`.
pub struct JoinableQueueProxy<T>(pub(super) Proxy<T>);

proxy_impls!(JoinableQueueProxy<T>);

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    queue_methods!();

    call_pair!(
        /// Marks one item taken with `get` as done.
        /// [`Refusal::TaskDoneTooOften`] if every item put is done already.
        task_done, blocking_task_done, () -> (),
        |p| Request::TaskDone(p.0.id),
        |r| unit_of(r)
    );

    wait_pair!(
        /// Waits until every item put has been marked done.
        join, blocking_join, () -> (),
        |p| Request::Join(p.0.id),
        |r, _c| unit_of(r),
        cancel: "Cancel safe: the wait's connection closes and nothing changes."
    );
}

/// A shared reentrant lock: its owner may take it again while it holds it. The owner is
/// the tokio task that calls [`lock`](Self::lock) (the thread, for
/// [`blocking_lock`](Self::blocking_lock) or outside a task), as Python's `RLock` is
/// owned by a thread. It is free again when the owner has dropped every guard, or
/// died.
pub struct RLockProxy(pub(super) Proxy<()>);

proxy_impls!(RLockProxy);

/// Holds an [`RLockProxy`] once; dropping it releases that hold.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RLockGuard {
    _conn: Connection<Request, Response>,
}

/// Who owns a reentrant lock taken now: this process's current tokio task, else its
/// thread (`task` none, as for blocking code).
fn owner(task: Option<tokio::task::Id>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::process::id().hash(&mut h);
    match task {
        Some(task) => ("task", task).hash(&mut h),
        None => ("thread", std::thread::current().id()).hash(&mut h),
    }
    h.finish()
}

impl RLockProxy {
    /// Takes the lock (again, if this task holds it), waiting while another owner
    /// holds it.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] once the manager is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: the request's connection closes, and the manager gives up the hold
    /// if it had granted it.
    pub async fn lock(&self) -> Result<RLockGuard, ManagerError> {
        let who = owner(tokio::task::try_id());
        let c = self.0.link.dedicated().await?;
        unit_of(ask(&c, Request::RLockAcquire(self.0.id, who)).await?)?;
        Ok(RLockGuard { _conn: c })
    }

    /// Blocking form of [`lock`](Self::lock), owned by this thread.
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    ///
    /// # Panics
    /// If called from an async context; `.await` [`lock`](Self::lock) there.
    #[track_caller]
    pub fn blocking_lock(&self) -> Result<RLockGuard, ManagerError> {
        crate::blocking::assert_may_block("blocking_lock", "lock");
        let c = self.0.link.blocking_dedicated()?;
        unit_of(blocking_ask(
            &c,
            Request::RLockAcquire(self.0.id, owner(None)),
        )?)?;
        Ok(RLockGuard { _conn: c })
    }
}

/// A shared counting semaphore ([`Manager::semaphore`]), or a bounded one
/// ([`Manager::bounded_semaphore`]) whose releases may not raise it above its initial
/// value. As in Python, a permit is not tied to whoever took it: any process may
/// release, and a process that dies holding one does not give it back.
pub struct SemaphoreProxy(pub(super) Proxy<()>);

proxy_impls!(SemaphoreProxy);

impl SemaphoreProxy {
    call_pair!(
        /// Takes a permit if one is free now: whether it did.
        try_acquire, blocking_try_acquire, () -> bool,
        |p| Request::SemTryAcquire(p.0.id),
        |r| match r {
            Response::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    );

    call_pair!(
        /// Gives a permit back. [`Refusal::OverReleased`] for a bounded semaphore
        /// already at its initial value.
        release, blocking_release, () -> (),
        |p| Request::SemRelease(p.0.id),
        |r| unit_of(r)
    );

    call_pair!(
        /// The permits free now.
        value, blocking_value, () -> u64,
        |p| Request::SemValue(p.0.id),
        |r| len_of(r).map(|n| n as u64)
    );

    wait_pair!(
        /// Takes a permit, waiting while none is free.
        acquire, blocking_acquire, () -> (),
        |p| Request::SemAcquire(p.0.id),
        |r, _c| unit_of(r),
        cancel: "If cancelled, the request's connection closes; a permit the manager had \
                 already granted it is lost (release one to make up for it)."
    );
}

/// A shared condition variable with its own lock. [`lock`](Self::lock) returns a
/// [`ConditionGuard`], which waits and notifies.
pub struct ConditionProxy(pub(super) Proxy<()>);

proxy_impls!(ConditionProxy);

/// Holds a [`ConditionProxy`]'s lock; dropping it releases the lock.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard {
    conn: Connection<Request, Response>,
    id: u64,
    /// A wait on this guard was cancelled mid-request: its answer is unread.
    torn: bool,
}

impl ConditionProxy {
    wait_pair!(
        /// Takes the condition's lock, waiting while another holds it.
        lock, blocking_lock, () -> ConditionGuard,
        |p| Request::CondAcquire(p.0.id),
        |r, c| unit_of(r).map(|()| ConditionGuard { conn: c, id: p.0.id, torn: false }),
        cancel: "Cancel safe: the request's connection closes, and the manager releases \
                 the lock if it had granted it."
    );
}

fn bool_of(r: Response) -> Result<bool, ManagerError> {
    match r {
        Response::Bool(b) => Ok(b),
        r => Err(unexpected(r)),
    }
}

fn millis(t: Duration) -> u64 {
    u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
}

impl ConditionGuard {
    async fn ask(&mut self, req: Request) -> Result<Response, ManagerError> {
        if self.torn {
            return Err(ManagerError::GuardInterrupted);
        }
        self.torn = true;
        let r = ask(&self.conn, req).await;
        self.torn = false;
        r
    }

    fn blocking_ask(&mut self, req: Request) -> Result<Response, ManagerError> {
        if self.torn {
            return Err(ManagerError::GuardInterrupted);
        }
        blocking_ask(&self.conn, req)
    }

    /// Releases the lock, waits until notified, and takes the lock again.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] once the manager is gone.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled wait leaves the guard unusable (its calls fail
    /// with [`ManagerError::GuardInterrupted`]), and the lock is released when it is
    /// dropped.
    pub async fn wait(&mut self) -> Result<(), ManagerError> {
        let id = self.id;
        bool_of(self.ask(Request::CondWait(id, None)).await?).map(drop)
    }

    /// [`wait`](Self::wait) for at most `timeout`: whether it was notified (false:
    /// timed out). Either way it holds the lock again when it returns.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Cancel safety
    /// As [`wait`](Self::wait).
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Result<bool, ManagerError> {
        let id = self.id;
        bool_of(
            self.ask(Request::CondWait(id, Some(millis(timeout))))
                .await?,
        )
    }

    /// Wakes up to `n` waiters (they take the lock in turn once it is released).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] once the manager is gone.
    ///
    /// # Cancel safety
    /// As [`wait`](Self::wait).
    pub async fn notify(&mut self, n: usize) -> Result<(), ManagerError> {
        let id = self.id;
        unit_of(self.ask(Request::CondNotify(id, n as u64)).await?)
    }

    /// Wakes every waiter.
    ///
    /// # Errors
    /// As [`notify`](Self::notify).
    ///
    /// # Cancel safety
    /// As [`wait`](Self::wait).
    pub async fn notify_all(&mut self) -> Result<(), ManagerError> {
        self.notify(usize::MAX).await
    }

    /// Blocking form of [`wait`](Self::wait).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Panics
    /// If called from an async context; `.await` [`wait`](Self::wait) there.
    #[track_caller]
    pub fn blocking_wait(&mut self) -> Result<(), ManagerError> {
        crate::blocking::assert_may_block("blocking_wait", "wait");
        let id = self.id;
        bool_of(self.blocking_ask(Request::CondWait(id, None))?).map(drop)
    }

    /// Blocking form of [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Panics
    /// If called from an async context.
    #[track_caller]
    pub fn blocking_wait_timeout(&mut self, timeout: Duration) -> Result<bool, ManagerError> {
        crate::blocking::assert_may_block("blocking_wait_timeout", "wait_timeout");
        let id = self.id;
        bool_of(self.blocking_ask(Request::CondWait(id, Some(millis(timeout))))?)
    }

    /// Blocking form of [`notify`](Self::notify).
    ///
    /// # Errors
    /// As [`notify`](Self::notify).
    ///
    /// # Panics
    /// If called from an async context.
    #[track_caller]
    pub fn blocking_notify(&mut self, n: usize) -> Result<(), ManagerError> {
        crate::blocking::assert_may_block("blocking_notify", "notify");
        let id = self.id;
        unit_of(self.blocking_ask(Request::CondNotify(id, n as u64))?)
    }

    /// Blocking form of [`notify_all`](Self::notify_all).
    ///
    /// # Errors
    /// As [`notify`](Self::notify).
    ///
    /// # Panics
    /// If called from an async context.
    #[track_caller]
    pub fn blocking_notify_all(&mut self) -> Result<(), ManagerError> {
        self.blocking_notify(usize::MAX)
    }
}

/// A shared barrier for a fixed number of parties, as Python's `Barrier`: each
/// [`wait`](Self::wait) returns the party's arrival index once all have arrived. A wait
/// that times out, an [`abort`](Self::abort), or a party that dies while waiting breaks
/// it: every waiter gets [`Refusal::BrokenBarrier`] until [`reset`](Self::reset).
pub struct BarrierProxy(pub(super) Proxy<()>);

proxy_impls!(BarrierProxy);

impl BarrierProxy {
    wait_pair!(
        /// Waits until every party has arrived: this one's arrival index (0 first).
        /// [`Refusal::BrokenBarrier`] if the barrier is or becomes broken.
        wait, blocking_wait, () -> usize,
        |p| Request::BarrierWait(p.0.id, None),
        |r, _c| len_of(r),
        cancel: "A cancelled wait closes its connection, which breaks the barrier (the \
                 others would wait for a party that left)."
    );

    wait_pair!(
        /// [`wait`](Self::wait) for at most `timeout`; past it, the barrier breaks.
        wait_timeout, blocking_wait_timeout, (timeout: Duration) -> usize,
        |p| Request::BarrierWait(p.0.id, Some(millis(timeout))),
        |r, _c| len_of(r),
        cancel: "As [`wait`](Self::wait)."
    );

    call_pair!(
        /// Breaks the barrier: waiters and later arrivals get
        /// [`Refusal::BrokenBarrier`] until a reset.
        abort, blocking_abort, () -> (),
        |p| Request::BarrierAbort(p.0.id),
        |r| unit_of(r)
    );

    call_pair!(
        /// Makes the barrier whole and empty again; parties waiting now get
        /// [`Refusal::BrokenBarrier`].
        reset, blocking_reset, () -> (),
        |p| Request::BarrierReset(p.0.id),
        |r| unit_of(r)
    );

    call_pair!(
        /// (parties, waiting now, broken).
        state, blocking_state, () -> (usize, usize, bool),
        |p| Request::BarrierState(p.0.id),
        |r| match r {
            Response::Numbers(n) if n.len() == 3 => Ok((n[0] as usize, n[1] as usize, n[2] != 0)),
            r => Err(unexpected(r)),
        }
    );
}

/// A shared array of fixed length ([`Manager::array`]), as Python's `manager.Array`:
/// items are read and written one at a time, each an atomic copy.
pub struct ArrayProxy<T>(pub(super) Proxy<T>);

proxy_impls!(ArrayProxy<T>);

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    call_pair!(
        /// The item at `index`; [`Refusal::IndexOutOfRange`] past the end.
        get, blocking_get, (index: usize) -> T,
        |p| Request::ListGet(p.0.id, index as u64),
        |r| required(bytes_of(r)?)
    );

    call_pair!(
        /// Replaces the item at `index`; [`Refusal::IndexOutOfRange`] past the end.
        set, blocking_set, (index: usize, item: &T) -> (),
        |p| Request::ListSet(p.0.id, index as u64, encode(item)?),
        |r| unit_of(r)
    );

    call_pair!(
        /// Its length, fixed when it was made.
        len, blocking_len, () -> usize,
        |p| Request::Len(p.0.id),
        |r| len_of(r)
    );

    call_pair!(
        /// Whether it has no items.
        is_empty, blocking_is_empty, () -> bool,
        |p| Request::Len(p.0.id),
        |r| len_of(r).map(|n| n == 0)
    );

    call_pair!(
        /// A copy of every item, in order.
        to_vec, blocking_to_vec, () -> Vec<T>,
        |p| Request::Items(p.0.id),
        |r| match r {
            Response::Items(items) => items.iter().map(|(_, v)| decode(v)).collect(),
            r => Err(unexpected(r)),
        }
    );
}
