//! The proxies of shared data: [`ValueProxy`], [`ListProxy`], [`DictProxy`],
//! [`Namespace`].

use super::*;

/// A shared value kept by the manager.
pub struct ValueProxy<T>(pub(super) Proxy<T>);

proxy_impls!(ValueProxy<T>);

#[cfg(test)]
impl<T> ValueProxy<T> {
    /// A proxy for object `id` of the manager at `address`, without a manager.
    pub(crate) fn for_testing(address: crate::connection::Address, key: Vec<u8>, id: u64) -> Self {
        ValueProxy(Proxy::new(super::link::Link::new(address, key), id))
    }
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    call_pair!(
        /// The value (a copy).
        get, blocking_get, () -> T,
        |p| Request::Get(p.0.id),
        |r| required(bytes_of(r)?)
    );

    call_pair!(
        /// Replaces the value.
        set, blocking_set, (v: &T) -> (),
        |p| Request::Set(p.0.id, encode(v)?),
        |r| unit_of(r)
    );

    /// Replaces the value with `f(value)`, atomically: `update(|v| v + 1)` from many
    /// processes loses no increment. Returns the new value.
    ///
    /// `f` runs here, in the caller, never in the manager: the proxy reads the value
    /// and its version, applies `f`, and stores the result only if the value is still
    /// at that version (compare-and-set). If another client changed it in between,
    /// `f` is applied again to the newer value, so it may run more than once and
    /// should have no other effect. Nothing but values crosses the connection, so a
    /// manager shared over TCP runs no code a client chooses.
    ///
    /// # Errors
    /// [`ManagerError::Codec`] if the stored value does not decode as `T` or the new
    /// one does not encode; [`ManagerError::Disconnected`] once the manager is gone.
    ///
    /// # Panics
    /// If `f` panics (the value is then unchanged).
    ///
    /// # Cancel safety
    /// Not cancel safe in this sense: if the future is dropped after `f` ran, the new
    /// value may or may not have been stored.
    pub async fn update<F>(&self, mut f: F) -> Result<T, ManagerError>
    where
        F: FnMut(T) -> T,
    {
        let mut current = self.0.link.call(Request::GetVersioned(self.0.id)).await?;
        loop {
            let (new, req) = self.next_update(current, &mut f)?;
            current = match self.0.link.call(req).await? {
                Response::Version(_) => return Ok(new),
                other => other,
            };
        }
    }

    /// Blocking form of [`update`](Self::update).
    ///
    /// # Errors
    /// As [`update`](Self::update).
    ///
    /// # Panics
    /// If `f` panics (the value is then unchanged).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`update`](Self::update) there.
    #[track_caller]
    pub fn blocking_update<F>(&self, mut f: F) -> Result<T, ManagerError>
    where
        F: FnMut(T) -> T,
    {
        crate::blocking::assert_may_block("blocking_update", "update");
        let mut current = self
            .0
            .link
            .blocking_call(Request::GetVersioned(self.0.id))?;
        loop {
            let (new, req) = self.next_update(current, &mut f)?;
            current = match self.0.link.blocking_call(req)? {
                Response::Version(_) => return Ok(new),
                other => other,
            };
        }
    }

    /// One round of `update`: `f` applied to the value in `current` (a `Versioned`
    /// answer), and the compare-and-set that stores the result.
    fn next_update(
        &self,
        current: Response,
        f: &mut impl FnMut(T) -> T,
    ) -> Result<(T, Request), ManagerError> {
        let Response::Versioned(version, bytes) = current else {
            return Err(unexpected(current));
        };
        let new = f(decode::<T>(&bytes)?);
        let req = Request::CompareAndSet(self.0.id, version, encode(&new)?);
        Ok((new, req))
    }
}

/// A shared list kept by the manager.
pub struct ListProxy<T>(pub(super) Proxy<T>);

proxy_impls!(ListProxy<T>);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    call_pair!(
        /// Appends an element.
        push, blocking_push, (v: &T) -> (),
        |p| Request::ListPush(p.0.id, encode(v)?),
        |r| unit_of(r)
    );

    call_pair!(
        /// Element `i` — a copy: changing it changes nothing in the manager; write it
        /// back with [`set`](Self::set). `None` past the end.
        get, blocking_get, (i: usize) -> Option<T>,
        |p| Request::ListGet(p.0.id, i as u64),
        |r| bytes_of(r)?.map(|b| decode(&b)).transpose()
    );

    call_pair!(
        /// Replaces element `i`.
        set, blocking_set, (i: usize, v: &T) -> (),
        |p| Request::ListSet(p.0.id, i as u64, encode(v)?),
        |r| unit_of(r)
    );

    call_pair!(
        /// The number of elements.
        len, blocking_len, () -> usize,
        |p| Request::Len(p.0.id),
        |r| len_of(r)
    );

    call_pair!(
        /// Whether the list has no element.
        is_empty, blocking_is_empty, () -> bool,
        |p| Request::Len(p.0.id),
        |r| len_of(r).map(|n| n == 0)
    );

    call_pair!(
        /// A copy of all elements.
        to_vec, blocking_to_vec, () -> Vec<T>,
        |p| Request::Items(p.0.id),
        |r| match r {
            Response::Items(items) => items.iter().map(|(_, v)| decode(v)).collect(),
            r => Err(unexpected(r)),
        }
    );
}

/// A shared dict kept by the manager.
pub struct DictProxy<K, V>(pub(super) Proxy<(K, V)>);

proxy_impls!(DictProxy<K, V>);

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    call_pair!(
        /// Sets `key` to `value`.
        insert, blocking_insert, (key: &K, value: &V) -> (),
        |p| Request::DictSet(p.0.id, encode(key)?, encode(value)?),
        |r| unit_of(r)
    );

    call_pair!(
        /// The value for `key` (a copy), if any.
        get, blocking_get, (key: &K) -> Option<V>,
        |p| Request::DictGet(p.0.id, encode(key)?),
        |r| bytes_of(r)?.map(|b| decode(&b)).transpose()
    );

    call_pair!(
        /// Removes `key`, returning its value.
        remove, blocking_remove, (key: &K) -> Option<V>,
        |p| Request::DictRemove(p.0.id, encode(key)?),
        |r| bytes_of(r)?.map(|b| decode(&b)).transpose()
    );

    call_pair!(
        /// The number of entries.
        len, blocking_len, () -> usize,
        |p| Request::Len(p.0.id),
        |r| len_of(r)
    );

    call_pair!(
        /// Whether the dict has no entry.
        is_empty, blocking_is_empty, () -> bool,
        |p| Request::Len(p.0.id),
        |r| len_of(r).map(|n| n == 0)
    );

    call_pair!(
        /// A copy of all entries (in key-encoding order).
        items, blocking_items, () -> Vec<(K, V)>,
        |p| Request::Items(p.0.id),
        |r| match r {
            Response::Items(items) => items
                .iter()
                .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
                .collect(),
            r => Err(unexpected(r)),
        }
    );
}

/// A shared namespace kept by the manager: names to values of any serde type.
pub struct Namespace(pub(super) Proxy<()>);

proxy_impls!(Namespace);

impl Namespace {
    /// Sets `name` to `value`.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] once the manager is gone.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the proxy usable; the request may or may not
    /// have reached the manager.
    pub async fn set<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ManagerError> {
        unit_of(
            self.0
                .link
                .call(Request::DictSet(self.0.id, encode(&name)?, encode(value)?))
                .await?,
        )
    }

    /// The value of `name` (a copy), if set.
    ///
    /// # Errors
    /// [`ManagerError::Codec`] if it is not a `T`; [`ManagerError::Disconnected`] once
    /// the manager is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: a read changes nothing, and the proxy stays usable.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        let r = self
            .0
            .link
            .call(Request::DictGet(self.0.id, encode(&name)?))
            .await?;
        bytes_of(r)?.map(|b| decode(&b)).transpose()
    }

    /// Blocking form of [`set`](Self::set).
    ///
    /// # Errors
    /// As [`set`](Self::set).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`set`](Self::set) there.
    #[track_caller]
    pub fn blocking_set<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ManagerError> {
        crate::blocking::assert_may_block("blocking_set", "set");
        unit_of(self.0.link.blocking_call(Request::DictSet(
            self.0.id,
            encode(&name)?,
            encode(value)?,
        ))?)
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
    pub fn blocking_get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        crate::blocking::assert_may_block("blocking_get", "get");
        let r = self
            .0
            .link
            .blocking_call(Request::DictGet(self.0.id, encode(&name)?))?;
        bytes_of(r)?.map(|b| decode(&b)).transpose()
    }
}
