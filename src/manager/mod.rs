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

use std::any::type_name;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::Mutex;

use crate::connection::{self, Address, Client, ConnectError};
use crate::error::{fmt_codec, ProtocolError};
use crate::pipe::{Connection, RecvError, SendError};
use crate::process::Process;
pub use server::Refusal;
use server::{Kind, Request, Response};

/// Why a manager call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ManagerError {
    /// The manager is gone (shut down or dead): nothing will answer.
    Disconnected,
    /// The manager's key is not ours.
    Authentication(connection::AuthenticationError),
    /// A value did not encode or decode as the proxy's type.
    Codec {
        /// The type.
        type_name: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The server refused the request; the [`Refusal`] says why.
    Refused(Refusal),
    /// The server answered something the protocol does not allow there.
    Protocol(ProtocolError),
    /// Starting (or binding) the server failed.
    Start(io::Error),
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::Disconnected => f.write_str("the manager is gone"),
            ManagerError::Authentication(e) => write!(f, "manager authentication failed: {e}"),
            ManagerError::Codec { type_name, reason } => fmt_codec(f, "code", type_name, reason),
            ManagerError::Refused(why) => write!(f, "the manager refused: {why}"),
            ManagerError::Protocol(e) => write!(f, "manager protocol error: {e}"),
            ManagerError::Start(e) => write!(f, "the manager did not start: {e}"),
        }
    }
}

impl std::error::Error for ManagerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ManagerError::Authentication(e) => Some(e),
            ManagerError::Protocol(e) => Some(e),
            ManagerError::Start(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConnectError> for ManagerError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Authentication(a) => ManagerError::Authentication(a),
            _ => ManagerError::Disconnected,
        }
    }
}

impl From<SendError> for ManagerError {
    fn from(_: SendError) -> Self {
        ManagerError::Disconnected
    }
}

impl From<RecvError> for ManagerError {
    fn from(_: RecvError) -> Self {
        ManagerError::Disconnected
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ManagerError> {
    postcard::to_allocvec(v).map_err(|e| ManagerError::Codec {
        type_name: type_name::<T>(),
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ManagerError> {
    postcard::from_bytes(bytes).map_err(|e| ManagerError::Codec {
        type_name: type_name::<T>(),
        reason: e.to_string(),
    })
}

/// One process's link to a manager: the address, the key, and a connection made on
/// first use.
struct Link {
    address: Address,
    key: Vec<u8>,
    conn: Mutex<Option<Connection<Request, Response>>>,
}

impl Link {
    /// The link of this process to the manager at `address` with `key`: proxies that
    /// arrive separately (each in its own message) share one link, so one connection,
    /// instead of each making its own.
    fn new(address: Address, key: Vec<u8>) -> Arc<Link> {
        type Links = std::sync::Mutex<Vec<std::sync::Weak<Link>>>;
        static LINKS: OnceLock<Links> = OnceLock::new();
        let mut links = LINKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        links.retain(|l| l.strong_count() > 0);
        if let Some(l) = links
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .find(|l| l.address == address && l.key == key)
        {
            return l;
        }
        let link = Arc::new(Link {
            address,
            key,
            conn: Mutex::new(None),
        });
        links.push(Arc::downgrade(&link));
        link
    }

    /// Sends `req` and waits for its answer.
    ///
    /// # Cancel safety
    /// The connection is taken out of the link for the call and put back only when
    /// the answer has been read: a call dropped between its request and its answer
    /// drops the connection with it, so the next call cannot read the answer meant
    /// for this one. (The manager may or may not have applied the dropped request.)
    async fn call(&self, req: Request) -> Result<Response, ManagerError> {
        let mut slot = self.conn.lock().await;
        let c = match slot.take() {
            Some(c) => c,
            None => Client::connect(&self.address, &self.key).await?,
        };
        c.send(&req).await?;
        let r = c.recv().await?;
        *slot = Some(c);
        check(r)
    }

    fn blocking_call(&self, req: Request) -> Result<Response, ManagerError> {
        let mut conn = self.conn.blocking_lock();
        let c = match &mut *conn {
            Some(c) => c,
            slot @ None => slot.insert(self.blocking_dedicated()?),
        };
        let r = c
            .blocking_send(&req)
            .map_err(ManagerError::from)
            .and_then(|()| c.blocking_recv().map_err(ManagerError::from));
        if r.is_err() {
            *conn = None;
        }
        check(r?)
    }
}

impl Link {
    /// A fresh connection of its own, for a request that waits (so that it holds up no
    /// other proxy of this process) or that owns something (a lock).
    async fn dedicated(&self) -> Result<Connection<Request, Response>, ManagerError> {
        Ok(Client::connect(&self.address, &self.key).await?)
    }

    /// [`dedicated`](Self::dedicated) for blocking code. Connecting is async; one
    /// small runtime per process, made on first use, does it for every blocking caller
    /// (a current-thread runtime lets several threads `block_on` it in turn).
    fn blocking_dedicated(&self) -> Result<Connection<Request, Response>, ManagerError> {
        static CONNECTOR: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
        let rt = CONNECTOR
            .get_or_init(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()
            })
            .as_ref()
            .ok_or(ManagerError::Disconnected)?;
        Ok(rt.block_on(Client::connect(&self.address, &self.key))?)
    }
}

async fn ask(c: &Connection<Request, Response>, req: Request) -> Result<Response, ManagerError> {
    c.send(&req).await?;
    check(c.recv().await?)
}

fn blocking_ask(c: &Connection<Request, Response>, req: Request) -> Result<Response, ManagerError> {
    c.blocking_send(&req)?;
    check(c.blocking_recv()?)
}

fn check(r: Response) -> Result<Response, ManagerError> {
    match r {
        Response::Refused(why) => Err(ManagerError::Refused(why)),
        r => Ok(r),
    }
}

fn unexpected(r: Response) -> ManagerError {
    ManagerError::Protocol(ProtocolError::Unexpected {
        what: format!("{r:?} from the manager"),
    })
}

/// A handle to a manager server process.
pub struct Manager {
    link: Arc<Link>,
    server: Option<Process<()>>,
}

/// A manager served by this process, for clients elsewhere ([`Manager::serve`]).
pub struct ManagerServer {
    listener: connection::Listener,
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
        server::run(self.listener).await
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
        // An abstract socket name (Linux): no file, so nothing is left behind however
        // the server or this process ends. Any local process may connect to it, so
        // the key is what keeps strangers out (the handshake authenticates both ways,
        // so a squatter on the name learns nothing either). The random part makes the
        // name unguessable and unique.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let start = ManagerError::Start;
        let mut nonce = [0u8; 8];
        crate::sys::proc::random_bytes(&mut nonce).map_err(start)?;
        // A leading NUL: an abstract name (see `Address::unix_abstract`).
        let path = PathBuf::from(format!(
            "\0procpool-manager-{}-{}-{:016x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            u64::from_ne_bytes(nonce)
        ));
        let (ready, ready_child) = crate::pipe::<()>().map_err(start)?;
        let server = Process::builder()
            .name("Manager")
            .daemon(true)
            .spawn(server::serve, (path.clone(), ready_child))
            .map_err(|e| start(io::Error::other(e)))?;
        ready.recv().await.map_err(|e| start(io::Error::other(e)))?;
        Ok(Manager {
            link: Link::new(Address::Unix(path), crate::authkey::authkey()),
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
        let listener = connection::Listener::bind(address, authkey)
            .await
            .map_err(ManagerError::Start)?;
        Ok(ManagerServer { listener })
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
    pub async fn value<T: Serialize>(&self, init: &T) -> Result<ValueProxy<T>, ManagerError> {
        let id = self.new_object(Kind::Value, encode(init)?).await?;
        Ok(ValueProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared, empty list (Python's `manager.list()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    pub async fn list<T>(&self) -> Result<ListProxy<T>, ManagerError> {
        let id = self.new_object(Kind::List, Vec::new()).await?;
        Ok(ListProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared, empty dict (Python's `manager.dict()`). Keys are compared by their
    /// encoding.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    pub async fn dict<K, V>(&self) -> Result<DictProxy<K, V>, ManagerError> {
        let id = self.new_object(Kind::Dict, Vec::new()).await?;
        Ok(DictProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared FIFO queue without a bound (Python's `manager.Queue()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    pub async fn queue<T>(&self) -> Result<QueueProxy<T>, ManagerError> {
        let id = self.new_object(Kind::Queue, Vec::new()).await?;
        Ok(QueueProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared lock (Python's `manager.Lock()`). A client that dies holding it
    /// releases it: the manager sees its connection close.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    pub async fn lock(&self) -> Result<LockProxy, ManagerError> {
        let id = self.new_object(Kind::Lock, Vec::new()).await?;
        Ok(LockProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared event (Python's `manager.Event()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    pub async fn event(&self) -> Result<EventProxy, ManagerError> {
        let id = self.new_object(Kind::Event, Vec::new()).await?;
        Ok(EventProxy(Proxy::new(self.link.clone(), id)))
    }

    /// A shared namespace: string names to values of any serde type (Python's
    /// `manager.Namespace()`).
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] if the manager is gone.
    pub async fn namespace(&self) -> Result<Namespace, ManagerError> {
        let id = self.new_object(Kind::Namespace, Vec::new()).await?;
        Ok(Namespace(Proxy::new(self.link.clone(), id)))
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

impl<T> Serialize for Proxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.link.address, &self.link.key, self.id).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Proxy<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (address, key, id) = <(Address, Vec<u8>, u64)>::deserialize(d)?;
        Ok(Proxy::new(Link::new(address, key), id))
    }
}

/// Clone, Debug and serde for a proxy newtype.
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

        impl<$($p),*> Serialize for $name<$($p),*> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de, $($p),*> Deserialize<'de> for $name<$($p),*> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($name(Proxy::deserialize(d)?))
            }
        }
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
        pub fn $blocking(&self, $($arg: $ty),*) -> Result<$ret, ManagerError> {
            let $this = self;
            let req = $req;
            let $resp = $this.0.link.blocking_call(req)?;
            $out
        }
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

/// A shared value kept by the manager.
pub struct ValueProxy<T>(Proxy<T>);

proxy_impls!(ValueProxy<T>);

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
    pub fn blocking_update<F>(&self, mut f: F) -> Result<T, ManagerError>
    where
        F: FnMut(T) -> T,
    {
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
pub struct ListProxy<T>(Proxy<T>);

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
pub struct DictProxy<K, V>(Proxy<(K, V)>);

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
pub struct Namespace(Proxy<()>);

proxy_impls!(Namespace);

impl Namespace {
    /// Sets `name` to `value`.
    ///
    /// # Errors
    /// [`ManagerError::Disconnected`] once the manager is gone.
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
    pub fn blocking_set<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ManagerError> {
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
    pub fn blocking_get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        let r = self
            .0
            .link
            .blocking_call(Request::DictGet(self.0.id, encode(&name)?))?;
        bytes_of(r)?.map(|b| decode(&b)).transpose()
    }
}

/// A shared queue kept by the manager.
pub struct QueueProxy<T>(Proxy<T>);

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
    pub fn blocking_get(&self) -> Result<T, ManagerError> {
        let c = self.0.link.blocking_dedicated()?;
        required(bytes_of(blocking_ask(&c, Request::QueueGet(self.0.id))?)?)
    }
}

/// A shared lock kept by the manager.
pub struct LockProxy(Proxy<()>);

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
    pub async fn lock(&self) -> Result<ManagerLockGuard, ManagerError> {
        let c = self.0.link.dedicated().await?;
        unit_of(ask(&c, Request::LockAcquire(self.0.id)).await?)?;
        Ok(ManagerLockGuard { _conn: c })
    }

    /// Blocking form of [`lock`](Self::lock).
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    pub fn blocking_lock(&self) -> Result<ManagerLockGuard, ManagerError> {
        let c = self.0.link.blocking_dedicated()?;
        unit_of(blocking_ask(&c, Request::LockAcquire(self.0.id))?)?;
        Ok(ManagerLockGuard { _conn: c })
    }
}

/// A shared event kept by the manager.
pub struct EventProxy(Proxy<()>);

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
    pub async fn wait(&self) -> Result<(), ManagerError> {
        let c = self.0.link.dedicated().await?;
        unit_of(ask(&c, Request::EventWait(self.0.id)).await?)
    }

    /// Blocking form of [`wait`](Self::wait).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn blocking_wait(&self) -> Result<(), ManagerError> {
        let c = self.0.link.blocking_dedicated()?;
        unit_of(blocking_ask(&c, Request::EventWait(self.0.id))?)
    }
}

proxy_impls!(LockProxy);
proxy_impls!(EventProxy);
