//! The proxies whose requests may wait: [`QueueProxy`], [`LockProxy`],
//! [`EventProxy`]. A waiting request goes over a connection of its own, so that it
//! holds up no other proxy of this process.

use super::*;

/// A shared queue kept by the manager.
pub struct QueueProxy<T>(pub(super) Proxy<T>);

proxy_impls!(QueueProxy<T>);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    call_pair!(
        /// Appends an item (never waits: the queue has no bound).
        put, blocking_put, (item: &T) -> (),
        |p| Request::QueuePut(p.0.id, encode(item)?),
        |r| unit_of(r)
    );

    call_pair!(
        /// The number of items.
        len, blocking_len, () -> usize,
        |p| Request::Len(p.0.id),
        |r| len_of(r)
    );

    call_pair!(
        /// Whether the queue is empty.
        is_empty, blocking_is_empty, () -> bool,
        |p| Request::Len(p.0.id),
        |r| len_of(r).map(|n| n == 0)
    );

    /// Takes the first item, waiting while there is none.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] once the manager is gone.
    ///
    /// # Cancel safety
    /// If cancelled, the request's connection closes; an item the manager had already
    /// taken for it is lost.
    pub async fn get(&self) -> Result<T, ManagerError> {
        let c = self.0.link.dedicated().await?;
        required(bytes_of(ask(&c, Request::QueueGet(self.0.id)).await?)?)
    }

    /// Blocking form of [`get`](Self::get).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`get`](Self::get) there.
    #[track_caller]
    pub fn blocking_get(&self) -> Result<T, ManagerError> {
        crate::blocking::assert_may_block("blocking_get", "get");
        let c = self.0.link.blocking_dedicated()?;
        required(bytes_of(blocking_ask(&c, Request::QueueGet(self.0.id))?)?)
    }
}

/// A shared lock kept by the manager.
pub struct LockProxy(pub(super) Proxy<()>);

/// Holds a [`LockProxy`]'s lock; dropping it releases the lock (the manager sees the
/// holder's connection close).
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ManagerLockGuard {
    _conn: Connection<Request, Response>,
}

impl LockProxy {
    /// Takes the lock, waiting while another holds it.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] once the manager is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled, the request's connection closes, and the manager
    /// releases the lock if it had already granted it.
    pub async fn lock(&self) -> Result<ManagerLockGuard, ManagerError> {
        let c = self.0.link.dedicated().await?;
        unit_of(ask(&c, Request::LockAcquire(self.0.id)).await?)?;
        Ok(ManagerLockGuard { _conn: c })
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
    pub fn blocking_lock(&self) -> Result<ManagerLockGuard, ManagerError> {
        crate::blocking::assert_may_block("blocking_lock", "lock");
        let c = self.0.link.blocking_dedicated()?;
        unit_of(blocking_ask(&c, Request::LockAcquire(self.0.id))?)?;
        Ok(ManagerLockGuard { _conn: c })
    }
}

/// A shared event kept by the manager.
pub struct EventProxy(pub(super) Proxy<()>);

impl EventProxy {
    call_pair!(
        /// Sets the flag, waking every waiter.
        set, blocking_set, () -> (),
        |p| Request::EventSet(p.0.id),
        |r| unit_of(r)
    );

    call_pair!(
        /// Clears the flag.
        clear, blocking_clear, () -> (),
        |p| Request::EventClear(p.0.id),
        |r| unit_of(r)
    );

    call_pair!(
        /// Whether the flag is set.
        is_set, blocking_is_set, () -> bool,
        |p| Request::EventIsSet(p.0.id),
        |r| match r {
            Response::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    );

    /// Waits until the flag is set.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] once the manager is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: the wait's connection closes and nothing else changes.
    pub async fn wait(&self) -> Result<(), ManagerError> {
        let c = self.0.link.dedicated().await?;
        unit_of(ask(&c, Request::EventWait(self.0.id)).await?)
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
    pub fn blocking_wait(&self) -> Result<(), ManagerError> {
        crate::blocking::assert_may_block("blocking_wait", "wait");
        let c = self.0.link.blocking_dedicated()?;
        unit_of(blocking_ask(&c, Request::EventWait(self.0.id))?)
    }
}

proxy_impls!(LockProxy);
proxy_impls!(EventProxy);
