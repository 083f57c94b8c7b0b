//! The proxies whose requests may wait: [`QueueProxy`], [`LockProxy`],
//! [`EventProxy`]. A waiting request goes over a connection of its own, so that it
//! holds up no other proxy of this process.

use super::*;

/// A shared queue kept by the manager.
pub struct QueueProxy<T>(pub(super) Proxy<T>);

proxy_impls!(QueueProxy<T>);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    queue_methods!();
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
    wait_pair!(
        /// Takes the lock, waiting while another holds it.
        lock, blocking_lock, () -> ManagerLockGuard,
        |p| Request::LockAcquire(p.0.id),
        |r, c| unit_of(r).map(|()| ManagerLockGuard { _conn: c }),
        cancel: "Cancel safe: if cancelled, the request's connection closes, and the \
                 manager releases the lock if it had already granted it."
    );
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

    wait_pair!(
        /// Waits until the flag is set.
        wait, blocking_wait, () -> (),
        |p| Request::EventWait(p.0.id),
        |r, _c| unit_of(r),
        cancel: "Cancel safe: the wait's connection closes and nothing else changes."
    );
}

proxy_impls!(LockProxy);
proxy_impls!(EventProxy);
