//! A manager: shared objects kept by a server process, used through proxies (Python's
//! `multiprocessing.Manager()`).
//!
//! [`Manager::start`] spawns the server (a daemonic procpool [`Process`]) listening on an
//! abstract unix socket (no file: nothing is left behind, even after `SIGKILL`),
//! reachable only with this process's
//! [`authkey`](crate::connection::authkey) (which children inherit). Each shared
//! object is a proxy — [`ValueProxy`], [`ListProxy`], [`DictProxy`], [`Namespace`] — that
//! can be cloned and passed to other processes as a task or `Process` argument; every
//! method is a request to the server, applied there atomically. Every method is async,
//! with a `blocking_*` form for code that is not async.
//!
//! The rest of Python's family is here too: [`JoinableQueueProxy`], [`RLockProxy`],
//! [`SemaphoreProxy`] (bounded or not), [`ConditionProxy`], [`BarrierProxy`] and
//! [`ArrayProxy`]; and types of your own ([`SharedObject`], served by a manager built
//! with [`ManagerBuilder::register`], used through a [`SharedProxy`]).
//!
//! # Copies, not references
//! What a proxy returns is a copy: `list.get(0)` gives the element as it was, and
//! changing that copy changes nothing on the server. Write it back with `set`
//! (Python users are bitten by `d['a'].append(x)` being lost; here the types make the
//! copy visible). For read-modify-write use [`ValueProxy::update`]: it applies the
//! function in the caller and stores the result with a compare-and-set, retrying on a
//! conflict, so `update(|v| v + 1)` from many processes loses nothing.
//!
//! # Cancel safety
//! Every async method of the manager and of its proxies may be dropped at any await
//! point without harming the proxy or its link: a request whose future was dropped
//! may or may not have been applied by the manager, and the next call gets its own
//! answer.
//!
//! # No code from the network
//! Only values cross a manager's connections. The server never runs a function a
//! client names: a request that does (an older client's server-side `update`) is
//! refused with [`Refusal::CodeFromClient`]. So a manager served over TCP gives an
//! authkey holder its objects, not its code.
//!
//! # Remote managers
//! [`Manager::serve`] makes this process a manager reachable over TCP (or a unix
//! path) with a key of your choice; [`Manager::connect`] reaches it from another
//! process or program, also another program: every method works between programs
//! that agree on the objects' types.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use procpool::manager::{Manager, ValueProxy};
//! use procpool::Process;
//!
//! fn child(v: ValueProxy<i64>) {
//!     v.blocking_set(&260).unwrap();
//! }
//!
//! let manager = Manager::start().await?;
//! let v = manager.value(&250i64).await?;
//! let mut p = Process::spawn(child, v.clone())?;
//! p.join().await?;
//! assert_eq!(v.get().await?, 260);
//! manager.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod server;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::connection::{self, Address, Client, ConnectError};
use crate::error::{CodecError, ProtocolError};
use crate::pipe::{Connection, RecvError, SendError};
use crate::process::Process;
use crate::wire::handles::{handle_serde, Handle};
pub use server::Refusal;
use server::{Kind, Request, Response};

mod error;
mod link;

pub use error::ManagerError;
use link::{ask, blocking_ask, unexpected, Link};

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ManagerError> {
    postcard::to_allocvec(v).map_err(|e| ManagerError::Codec(CodecError::of::<T>(e)))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ManagerError> {
    postcard::from_bytes(bytes).map_err(|e| ManagerError::Codec(CodecError::of::<T>(e)))
}

/// A handle to a manager server process.
pub struct Manager {
    link: Arc<Link>,
    server: Option<Process<()>>,
}

/// A manager served by this process, for clients elsewhere ([`Manager::serve`]).
pub struct ManagerServer {
    listener: connection::Listener,
    types: server::Registered,
}

impl fmt::Debug for ManagerServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerServer")
            .field("address", self.listener.address())
            .finish()
    }
}

impl ManagerServer {
    /// Where clients reach it (with the port chosen, for port 0).
    pub fn address(&self) -> &Address {
        self.listener.address()
    }

    /// Serves clients until one of them calls [`Manager::shutdown`].
    ///
    /// # Cancel safety
    /// Dropping the future stops serving: the listener and every client connection
    /// close.
    pub async fn run(self) {
        server::run(self.listener, self.types).await
    }
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.link.address)
            .finish()
    }
}

impl Manager {
    /// Starts a manager server process and waits until it listens.
    ///
    /// # Errors
    /// [`ManagerError::Start`] if the process or its socket could not be made.
    ///
    /// # Cancel safety
    /// Cancel safe: a server started for a dropped future is killed with it (it is a
    /// daemonic child of this process).
    pub async fn start() -> Result<Manager, ManagerError> {
        Manager::builder().start().await
    }

    /// A builder for a manager that serves types of your own too
    /// ([`ManagerBuilder::register`]).
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::new()
    }

    /// Starts a server process running `serve`.
    async fn start_serving<F>(serve: F) -> Result<Manager, ManagerError>
    where
        F: crate::task::Task<(Address, crate::pipe::Connection<()>), ()>,
    {
        // An abstract socket name (Linux): no file, so nothing is left behind however
        // the server or this process ends. Any local process may connect to it, so
        // the key is what keeps strangers out (the handshake authenticates both ways,
        // so a squatter on the name learns nothing either). The random part makes the
        // name unguessable and unique.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let start = ManagerError::Start;
        let mut nonce = [0u8; 8];
        crate::sys::proc::random_bytes(&mut nonce).map_err(start)?;
        let address = Address::unix_abstract(&format!(
            "procpool-manager-{}-{}-{:016x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            u64::from_ne_bytes(nonce)
        ));
        let (ready, ready_child) = crate::pipe::<()>().map_err(start)?;
        let server = Process::builder()
            .name("Manager")
            .daemon(true)
            .spawn(serve, (address.clone(), ready_child))
            .map_err(|e| start(io::Error::other(e)))?;
        ready.recv().await.map_err(|e| start(io::Error::other(e)))?;
        Ok(Manager {
            link: Link::new(address, crate::authkey::authkey()),
            server: Some(server),
        })
    }

    /// A manager reachable at `address` (TCP, or a unix path) by peers that know
    /// `authkey`, served by this process: call [`run`](ManagerServer::run) on the result.
    /// Peers with another key get [`connection::AuthenticationError`] and nothing else.
    ///
    /// # Errors
    /// [`ManagerError::Start`] if the address cannot be bound.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is bound until it returns.
    pub async fn serve(
        address: impl Into<Address>,
        authkey: &[u8],
    ) -> Result<ManagerServer, ManagerError> {
        Manager::serve_types(address, authkey, server::Registered::of::<()>()).await
    }

    async fn serve_types(
        address: impl Into<Address>,
        authkey: &[u8],
        types: server::Registered,
    ) -> Result<ManagerServer, ManagerError> {
        let listener = connection::Listener::bind(address, authkey)
            .await
            .map_err(ManagerError::Start)?;
        Ok(ManagerServer { listener, types })
    }

    /// Connects to a manager served elsewhere ([`Manager::serve`], or another
    /// process's [`Manager::start`]), from this or another program.
    ///
    /// # Errors
    /// [`ManagerError::Authentication`] with the wrong key;
    /// [`ManagerError::Disconnected`] if nothing serves there.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future closes the half-made connection.
    pub async fn connect(address: &Address, authkey: &[u8]) -> Result<Manager, ManagerError> {
        let link = Link::new(address.clone(), authkey.to_vec());
        unit_of(link.call(Request::Ping).await?)?;
        Ok(Manager { link, server: None })
    }

    /// Where the manager listens.
    pub fn address(&self) -> &Address {
        &self.link.address
    }

    /// Stops the server. Proxies used afterwards return [`ManagerError::Disconnected`].
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if it was already gone.
    ///
    /// # Cancel safety
    /// If the future is dropped, the request may or may not have reached the server; a
    /// local server is killed with the dropped `Manager` either way.
    pub async fn shutdown(mut self) -> Result<(), ManagerError> {
        let r = self.link.call(Request::Shutdown).await;
        if let Some(mut p) = self.server.take() {
            let _ = p.join().await;
        }
        r.map(drop)
    }

    async fn new_object(&self, kind: Kind, init: Vec<u8>) -> Result<u64, ManagerError> {
        match self.link.call(Request::New(kind, init)).await? {
            Response::Id(id) => Ok(id),
            r => Err(unexpected(r)),
        }
    }

    /// A shared value, initially `init` (Python's `manager.Value`).
    ///
    /// # Errors
    /// [`ManagerError`] if the manager is gone or `init` does not encode.
    ///
    /// # Cancel safety
    /// If cancelled after the request reached the manager, the object is created
    /// and stays unused in the manager until it shuts down.
    pub async fn value<T: Serialize>(&self, init: &T) -> Result<ValueProxy<T>, ManagerError> {
        let id = self.new_object(Kind::Value, encode(init)?).await?;
        Ok(ValueProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared, empty list (Python's `manager.list()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// If cancelled after the request reached the manager, the object is created
    /// and stays unused in the manager until it shuts down.
    pub async fn list<T>(&self) -> Result<ListProxy<T>, ManagerError> {
        let id = self.new_object(Kind::List, Vec::new()).await?;
        Ok(ListProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared, empty dict (Python's `manager.dict()`). Keys are compared by their
    /// encoding.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// If cancelled after the request reached the manager, the object is created
    /// and stays unused in the manager until it shuts down.
    pub async fn dict<K, V>(&self) -> Result<DictProxy<K, V>, ManagerError> {
        let id = self.new_object(Kind::Dict, Vec::new()).await?;
        Ok(DictProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared FIFO queue without a bound (Python's `manager.Queue()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// If cancelled after the request reached the manager, the object is created
    /// and stays unused in the manager until it shuts down.
    pub async fn queue<T>(&self) -> Result<QueueProxy<T>, ManagerError> {
        let id = self.new_object(Kind::Queue, Vec::new()).await?;
        Ok(QueueProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared lock (Python's `manager.Lock()`). A client that dies holding it
    /// releases it: the manager sees its connection close.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// If cancelled after the request reached the manager, the object is created
    /// and stays unused in the manager until it shuts down.
    pub async fn lock(&self) -> Result<LockProxy, ManagerError> {
        let id = self.new_object(Kind::Lock, Vec::new()).await?;
        Ok(LockProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared event (Python's `manager.Event()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// If cancelled after the request reached the manager, the object is created
    /// and stays unused in the manager until it shuts down.
    pub async fn event(&self) -> Result<EventProxy, ManagerError> {
        let id = self.new_object(Kind::Event, Vec::new()).await?;
        Ok(EventProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared namespace: string names to values of any serde type (Python's
    /// `manager.Namespace()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// If cancelled after the request reached the manager, the object is created
    /// and stays unused in the manager until it shuts down.
    pub async fn namespace(&self) -> Result<Namespace, ManagerError> {
        let id = self.new_object(Kind::Namespace, Vec::new()).await?;
        Ok(Namespace(Proxy::new(self.link.clone(), id)))
    }

    /// A proxy of kind `P` for a new object of `kind` made from `init`.
    async fn make<T, P>(
        &self,
        kind: Kind,
        init: Vec<u8>,
        wrap: fn(Proxy<T>) -> P,
    ) -> Result<P, ManagerError> {
        let id = self.new_object(kind, init).await?;
        Ok(wrap(Proxy::new(self.link.clone(), id)))
    }

    /// A shared queue whose items are marked done (Python's
    /// `manager.JoinableQueue()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// As [`value`](Self::value).
    pub async fn joinable_queue<T>(&self) -> Result<JoinableQueueProxy<T>, ManagerError> {
        let id = self.new_object(Kind::JoinableQueue, Vec::new()).await?;
        Ok(JoinableQueueProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared reentrant lock (Python's `manager.RLock()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// As [`value`](Self::value).
    pub async fn rlock(&self) -> Result<RLockProxy, ManagerError> {
        self.make(Kind::RLock, Vec::new(), RLockProxy).await
    }

    /// A shared semaphore of `value` permits (Python's `manager.Semaphore(value)`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// As [`value`](Self::value).
    pub async fn semaphore(&self, value: u64) -> Result<SemaphoreProxy, ManagerError> {
        let kind = Kind::Semaphore { bounded: false };
        self.make(kind, encode(&value)?, SemaphoreProxy).await
    }

    /// A shared semaphore of `value` permits that may not be released above `value`
    /// (Python's `manager.BoundedSemaphore(value)`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// As [`value`](Self::value).
    pub async fn bounded_semaphore(&self, value: u64) -> Result<SemaphoreProxy, ManagerError> {
        let kind = Kind::Semaphore { bounded: true };
        self.make(kind, encode(&value)?, SemaphoreProxy).await
    }

    /// A shared condition variable (Python's `manager.Condition()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// As [`value`](Self::value).
    pub async fn condition(&self) -> Result<ConditionProxy, ManagerError> {
        self.make(Kind::Condition, Vec::new(), ConditionProxy).await
    }

    /// A shared barrier for `parties` parties (Python's `manager.Barrier(parties)`).
    ///
    /// # Errors
    /// [`ManagerError::Refused`] with [`Refusal::Undecodable`] for zero parties;
    /// [`ManagerError::Disconnected`] if the manager is gone.
    ///
    /// # Cancel safety
    /// As [`value`](Self::value).
    pub async fn barrier(&self, parties: usize) -> Result<BarrierProxy, ManagerError> {
        self.make(Kind::Barrier, encode(&(parties as u64))?, BarrierProxy)
            .await
    }

    /// A shared array of fixed length holding `items` (Python's
    /// `manager.Array(typecode, sequence)`).
    ///
    /// # Errors
    /// [`ManagerError`] if the manager is gone or an item does not encode.
    ///
    /// # Cancel safety
    /// As [`value`](Self::value).
    pub async fn array<T: Serialize>(&self, items: &[T]) -> Result<ArrayProxy<T>, ManagerError> {
        let encoded = items.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let id = self.new_object(Kind::Array, encode(&encoded)?).await?;
        Ok(ArrayProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A new object of the registered type `T`, made in the manager from `init`.
    ///
    /// # Errors
    /// [`ManagerError::Refused`] with [`Refusal::NotRegistered`] if the manager does
    /// not serve `T` (see [`ManagerBuilder::register`]); [`Refusal::Panicked`] if
    /// `T::new` panicked there.
    ///
    /// # Cancel safety
    /// As [`value`](Self::value).
    pub async fn object<T: SharedObject>(
        &self,
        init: &T::Init,
    ) -> Result<SharedProxy<T>, ManagerError> {
        let req = Request::NewRegistered(T::NAME.to_owned(), encode(init)?);
        match self.link.call(req).await? {
            Response::Id(id) => Ok(SharedProxy(Proxy::new(self.link.clone(), id))),
            r => Err(unexpected(r)),
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // A daemonic server is killed when its `Process` drops unjoined.
        self.server.take();
    }
}

/// What every proxy holds.
struct Proxy<T> {
    link: Arc<Link>,
    id: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> Proxy<T> {
    fn new(link: Arc<Link>, id: u64) -> Self {
        Proxy {
            link,
            id,
            _t: PhantomData,
        }
    }
}

impl<T> Clone for Proxy<T> {
    fn clone(&self) -> Self {
        Proxy::new(self.link.clone(), self.id)
    }
}

impl<T> Proxy<T> {
    /// What travels of a proxy: where its manager is, the key, and which object.
    fn parts(&self) -> (&Address, &[u8], u64) {
        (&self.link.address, &self.link.key, self.id)
    }

    fn assemble((address, key, id): (Address, Vec<u8>, u64)) -> Self {
        Proxy::new(Link::new(address, key), id)
    }
}

/// Clone, Debug, [`Handle`] and serde for a proxy newtype: tagged with its kind and
/// type parameters, so a `ValueProxy<u64>` does not arrive as a `ValueProxy<f64>`.
macro_rules! proxy_impls {
    ($name:ident) => {
        proxy_impls!($name<>);
    };
    ($name:ident < $($p:ident),* >) => {
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                $name(self.0.clone())
            }
        }

        impl<$($p),*> fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("id", &self.0.id).finish()
            }
        }

        impl<$($p),*> Handle for $name<$($p),*> {
            const KIND: &'static str = stringify!($name);
            type Params = ($($p,)*);
            type Parts<'a>
                = (&'a Address, &'a [u8], u64)
            where
                Self: 'a;
            type Received = (Address, Vec<u8>, u64);

            fn parts(&self) -> Self::Parts<'_> {
                self.0.parts()
            }

            fn assemble(received: Self::Received) -> Result<Self, String> {
                Ok($name(Proxy::assemble(received)))
            }
        }

        handle_serde!($name<$($p),*>);
    };
}

/// Defines an async method and its `blocking_` twin that send `$req` and turn the
/// answer into the result with `$out`.
macro_rules! call_pair {
    ($(#[$doc:meta])* $name:ident, $blocking:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty,
     |$this:ident| $req:expr, |$resp:ident| $out:expr) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// [`ManagerError::Disconnected`] once the manager is gone; a codec or refusal
        /// error as the method says.
        ///
        /// # Cancel safety
        /// Dropping the future leaves the proxy usable; the request may or may not
        /// have reached the manager.
        pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret, ManagerError> {
            let $this = self;
            let req = $req;
            let $resp = $this.0.link.call(req).await?;
            $out
        }

        /// Blocking form of the method of the same name without `blocking_`.
        ///
        /// # Errors
        /// As the async form.
        ///
        /// # Panics
        /// If called from an async context, where it would stall the runtime; `.await`
        /// the async form there.
        #[track_caller]
        pub fn $blocking(&self, $($arg: $ty),*) -> Result<$ret, ManagerError> {
            crate::blocking::assert_may_block(stringify!($blocking), stringify!($name));
            let $this = self;
            let req = $req;
            let $resp = $this.0.link.blocking_call(req)?;
            $out
        }
    };
}

/// Defines an async method and its `blocking_` twin for a request that may wait, or
/// that holds something: each call sends `$req` over a connection of its own (`$conn`,
/// which `$out` may keep, as a guard does) and turns the answer into the result with
/// `$out`. `$cancel` says what a dropped call leaves behind.
macro_rules! wait_pair {
    ($(#[$doc:meta])* $name:ident, $blocking:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty,
     |$this:ident| $req:expr, |$resp:ident, $conn:ident| $out:expr, cancel: $cancel:literal) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// [`ManagerError::Disconnected`] once the manager is gone; a refusal as the
        /// method says.
        ///
        /// # Cancel safety
        #[doc = $cancel]
        pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret, ManagerError> {
            let $this = self;
            let $conn = $this.0.link.dedicated().await?;
            let $resp = ask(&$conn, $req).await?;
            $out
        }

        /// Blocking form of the method of the same name without `blocking_`.
        ///
        /// # Errors
        /// As the async form.
        ///
        /// # Panics
        /// If called from an async context, where it would stall the runtime; `.await`
        /// the async form there.
        #[track_caller]
        pub fn $blocking(&self, $($arg: $ty),*) -> Result<$ret, ManagerError> {
            crate::blocking::assert_may_block(stringify!($blocking), stringify!($name));
            let $this = self;
            let $conn = $this.0.link.blocking_dedicated()?;
            let $resp = blocking_ask(&$conn, $req)?;
            $out
        }
    };
}

/// A queue proxy's `put`, `len`, `is_empty` and `get` (and their blocking forms).
macro_rules! queue_methods {
    () => {
        call_pair!(
            /// Appends an item (never waits: the queue has no bound).
            put, blocking_put, (item: &T) -> (),
            |p| Request::QueuePut(p.0.id, encode(item)?),
            |r| unit_of(r)
        );

        call_pair!(
            /// The number of items waiting to be taken.
            len, blocking_len, () -> usize,
            |p| Request::Len(p.0.id),
            |r| len_of(r)
        );

        call_pair!(
            /// Whether no item waits to be taken.
            is_empty, blocking_is_empty, () -> bool,
            |p| Request::Len(p.0.id),
            |r| len_of(r).map(|n| n == 0)
        );

        wait_pair!(
            /// Takes the first item, waiting while there is none.
            get, blocking_get, () -> T,
            |p| Request::QueueGet(p.0.id),
            |r, _c| required(bytes_of(r)?),
            cancel: "If cancelled, the request's connection closes; an item the manager \
                     had already taken for it is lost."
        );
    };
}

fn bytes_of(r: Response) -> Result<Option<Vec<u8>>, ManagerError> {
    match r {
        Response::Bytes(b) => Ok(b),
        r => Err(unexpected(r)),
    }
}

fn len_of(r: Response) -> Result<usize, ManagerError> {
    match r {
        Response::Len(n) => Ok(n as usize),
        r => Err(unexpected(r)),
    }
}

fn unit_of(r: Response) -> Result<(), ManagerError> {
    match r {
        Response::Unit => Ok(()),
        r => Err(unexpected(r)),
    }
}

fn required<T: DeserializeOwned>(b: Option<Vec<u8>>) -> Result<T, ManagerError> {
    decode(&b.ok_or(ManagerError::Refused(Refusal::NoSuchObject))?)
}

mod family;
mod objects;
mod registered;
mod values;
mod waiting;

pub use family::{
    ArrayProxy, BarrierProxy, ConditionGuard, ConditionProxy, JoinableQueueProxy, RLockGuard,
    RLockProxy, SemaphoreProxy,
};
pub use registered::{ManagerBuilder, Registers, Registry, SharedObject, SharedProxy};

pub use values::{DictProxy, ListProxy, Namespace, ValueProxy};
pub use waiting::{EventProxy, LockProxy, ManagerLockGuard, QueueProxy};
