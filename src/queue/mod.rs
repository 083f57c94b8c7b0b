//! Queues between processes: Python's `Queue`, `SimpleQueue` and `JoinableQueue`.
//!
//! A [`Queue`] lives in shared memory (an anonymous memory file, nothing in
//! `/dev/shm`), so any number of processes put and get through it: pass it as a task
//! or [`Process`](crate::Process) argument, or inside a message, and each process gets
//! its own handle to the same queue. Clone it to share it between tasks of one
//! process.
//!
//! # Differences from Python that remove its traps
//! - `put` returns once the item *is in the queue*. There is no feeder thread: a
//!   producer that exits right after `put` loses nothing, and joining a producer before
//!   its items are consumed cannot deadlock.
//! - [`len`](Queue::len) is exact, not approximate.
//! - [`close`](Queue::close) closes the queue for everyone: puts fail with `Closed`,
//!   and getters drain what is left, then get `Closed` instead of waiting forever.
//! - A process killed in the middle of an operation leaves the queue usable and
//!   consistent: an item whose `put` had not returned is either wholly in the queue or
//!   not at all (it is not, unless `put` got as far as publishing it); an item whose
//!   `get` had not returned stays in the queue unless the `get` completed. (One
//!   exception: if the item carried handles and the getter died after taking them,
//!   the next getter receives [`GetError::Decode`] for it instead of the item.)
//!
//! # Items
//! Any serde type, up to [`MAX_ITEM`] bytes encoded; items may carry handles (pipe
//! ends, other queues). A few hundred items carrying handles can wait in one queue at
//! a time (their descriptors wait in a kernel socket buffer); beyond that `put` waits
//! as if the queue were full.
//!
//! # Async and blocking
//! Each operation has an async form, a `blocking_*` form for code that is not async
//! (pool tasks, `Process` bodies), a `try_*` form that never waits, and `*_timeout`
//! forms. Critical sections are short copies under a process-shared mutex; the async
//! forms take that mutex on the calling thread.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use procpool::{Process, Queue};
//!
//! fn producer(q: Queue<u32>) {
//!     for i in 0..5 {
//!         q.blocking_put(i).unwrap();
//!     }
//! }
//!
//! let q = Queue::bounded(3)?;
//! let mut p = Process::spawn(producer, q.clone())?;
//! let mut got = Vec::new();
//! for _ in 0..5 {
//!     got.push(q.get().await?);
//! }
//! p.join().await?;
//! assert_eq!(got, [0, 1, 2, 3, 4]);
//! # Ok(())
//! # }
//! ```

mod shared;

use std::any::type_name;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CodecError;
use crate::wire::handles::{self, handle_serde, Handle, RecvFd, SendFd};
use crate::wire::value;
use shared::{deadline_after, Core, CoreError, Guard, Item};

/// Largest encoded item a queue accepts: 1 GiB.
pub const MAX_ITEM: usize = 1 << 30;

fn core_io(e: CoreError) -> io::Error {
    match e {
        CoreError::Io(e) => e,
        CoreError::Corrupt(what) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the queue's shared state is damaged: {what}"),
        ),
    }
}

/// An encoded item ready to go in.
struct Encoded {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

fn encode<T: Serialize + 'static>(item: &T) -> Result<Encoded, PutError<T>> {
    // A byte vector is the item as it is (see `wire::value`).
    let (r, fds) = match value::as_raw(item) {
        Some(bytes) => (Ok(bytes.to_vec()), Vec::new()),
        None => handles::collecting(|| postcard::to_allocvec(item)),
    };
    let bytes = r.map_err(|e| PutError::Encode(CodecError::of::<T>(e)))?;
    if bytes.len() > MAX_ITEM {
        return Err(PutError::TooLarge {
            len: bytes.len(),
            limit: MAX_ITEM,
        });
    }
    Ok(Encoded { bytes, fds })
}

fn decode<T: DeserializeOwned + 'static>(item: Item) -> Result<T, GetError> {
    let Item { bytes, fds } = item;
    let bytes = match value::from_raw::<T>(bytes) {
        Ok(item) => return Ok(item),
        Err(bytes) => bytes,
    };
    handles::supplying(fds, || postcard::from_bytes(&bytes))
        .map_err(|e| GetError::Decode(CodecError::of::<T>(handles::reason(&e))))
}

/// What a put attempt found.
enum PutOutcome {
    Done,
    Closed,
}

fn try_push(g: &mut Guard<'_>, e: &Encoded) -> Result<Poll<PutOutcome>, CoreError> {
    if g.closed() {
        return Ok(Poll::Ready(PutOutcome::Closed));
    }
    if g.full() {
        return Ok(Poll::Pending);
    }
    let fds: Vec<BorrowedFd<'_>> = e.fds.iter().map(AsFd::as_fd).collect();
    Ok(if g.push(&e.bytes, &fds)? {
        Poll::Ready(PutOutcome::Done)
    } else {
        Poll::Pending
    })
}

/// What a get attempt found.
enum GetOutcome {
    Item(Item),
    Closed,
}

fn try_pop(g: &mut Guard<'_>) -> Result<Poll<GetOutcome>, CoreError> {
    match g.pop()? {
        Some(item) => Ok(Poll::Ready(GetOutcome::Item(item))),
        None if g.closed() => Ok(Poll::Ready(GetOutcome::Closed)),
        None => Ok(Poll::Pending),
    }
}

/// A multi-producer, multi-consumer FIFO queue shared between processes (Python's
/// `multiprocessing.Queue`). See the [module documentation](self).
pub struct Queue<T> {
    core: Arc<Core>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            core: self.core.clone(),
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("item", &type_name::<T>())
            .field("maxsize", &self.maxsize())
            .finish()
    }
}

impl<T> Queue<T> {
    fn with_maxsize(maxsize: u64) -> io::Result<Self> {
        Ok(Queue {
            core: Arc::new(Core::create(maxsize)?),
            _items: PhantomData,
        })
    }

    /// A queue holding at most `maxsize` items: puts wait while it is full.
    ///
    /// # Errors
    /// `InvalidInput` if `maxsize` is 0 (use [`unbounded`](Self::unbounded)); a system
    /// error if the shared memory cannot be made.
    pub fn bounded(maxsize: usize) -> io::Result<Self> {
        if maxsize == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a bounded queue needs maxsize >= 1; use Queue::unbounded() for no bound",
            ));
        }
        Self::with_maxsize(maxsize as u64)
    }

    /// A queue without a bound: puts never wait for room (memory permitting).
    ///
    /// # Errors
    /// A system error if the shared memory cannot be made.
    pub fn unbounded() -> io::Result<Self> {
        Self::with_maxsize(0)
    }

    /// The bound, or `None` for an unbounded queue.
    pub fn maxsize(&self) -> Option<usize> {
        match self.core.maxsize() {
            0 => None,
            n => Some(n as usize),
        }
    }

    fn locked<R>(&self, f: impl FnOnce(&mut Guard<'_>) -> R) -> io::Result<R> {
        let mut g = self.core.lock().map_err(core_io)?;
        Ok(f(&mut g))
    }

    /// The number of items in the queue, exactly, at the moment of the call.
    ///
    /// # Panics
    /// If the shared state cannot be locked (a damaged queue); use
    /// [`try_len`](Self::try_len) to get the error instead.
    pub fn len(&self) -> usize {
        self.try_len()
            .expect("the queue's shared state cannot be locked")
    }

    /// [`len`](Self::len), reporting a failure to lock the shared state.
    ///
    /// # Errors
    /// The shared state could not be locked or is damaged.
    pub fn try_len(&self) -> io::Result<usize> {
        self.locked(|g| g.state().len as usize)
    }

    /// Whether the queue holds no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a bounded queue is at its bound (never true for an unbounded one).
    pub fn is_full(&self) -> bool {
        self.locked(|g| g.full()).unwrap_or(false)
    }

    /// Whether [`close`](Self::close) has been called, in any process.
    pub fn is_closed(&self) -> bool {
        self.locked(|g| g.closed()).unwrap_or(true)
    }

    /// Test hook: takes the queue's lock, calls `then`, and holds the lock until the
    /// process is killed.
    #[doc(hidden)]
    pub fn __lock_and_signal_for_testing(&self, then: impl FnOnce()) {
        let _held = self.core.lock();
        then();
        loop {
            std::thread::park();
        }
    }

    /// Closes the queue for every process: further puts fail with
    /// [`PutError::Closed`], and getters receive what is left, then
    /// [`GetError::Closed`]. Waiting getters and putters wake up.
    pub fn close(&self) {
        let _ = self.locked(|g| g.close());
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Queue<T> {
    fn put_result(outcome: PutOutcome, item: T) -> Result<(), PutError<T>> {
        match outcome {
            PutOutcome::Done => Ok(()),
            PutOutcome::Closed => Err(PutError::Closed(item)),
        }
    }

    /// Puts an item, waiting while the queue is full. Returns once the item is in the
    /// queue, visible to every process.
    ///
    /// # Errors
    /// [`PutError::Closed`] (with the item) if the queue is or gets closed;
    /// [`PutError::Encode`]/[`PutError::TooLarge`] for an item that cannot go in.
    ///
    /// # Cancel safety
    /// Cancel safe: the item is put completely or not at all; if the future is
    /// dropped before it completes, the item is not in the queue.
    pub async fn put(&self, item: T) -> Result<(), PutError<T>> {
        let e = encode(&item)?;
        match self.core.wait(|g| try_push(g, &e)).await {
            Ok(outcome) => Self::put_result(outcome, item),
            Err(err) => Err(PutError::Io(core_io(err))),
        }
    }

    /// [`put`](Self::put), giving up after `timeout`.
    ///
    /// # Errors
    /// [`PutError::Timeout`] (with the item) if no room came in time; else as
    /// [`put`](Self::put).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`put`](Self::put).
    pub async fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        let e = encode(&item)?;
        match tokio::time::timeout(timeout, self.core.wait(|g| try_push(g, &e))).await {
            Ok(Ok(outcome)) => Self::put_result(outcome, item),
            Ok(Err(err)) => Err(PutError::Io(core_io(err))),
            Err(_) => Err(PutError::Timeout(item)),
        }
    }

    /// Puts an item if there is room now.
    ///
    /// # Errors
    /// [`PutError::Full`] with the item if the queue is at its bound; else as
    /// [`put`](Self::put).
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        let e = encode(&item)?;
        let outcome = self
            .locked(|g| try_push(g, &e))
            .and_then(|r| r.map_err(core_io))
            .map_err(PutError::Io)?;
        match outcome {
            Poll::Ready(o) => Self::put_result(o, item),
            Poll::Pending => Err(PutError::Full(item)),
        }
    }

    /// Blocking form of [`put`](Self::put), for code that is not async.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`put`](Self::put) there.
    #[track_caller]
    pub fn blocking_put(&self, item: T) -> Result<(), PutError<T>> {
        crate::blocking::assert_may_block("blocking_put", "put");
        self.blocking_put_inner(item, None)
    }

    /// Blocking form of [`put_timeout`](Self::put_timeout).
    ///
    /// # Errors
    /// As [`put_timeout`](Self::put_timeout).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`put_timeout`](Self::put_timeout) there.
    #[track_caller]
    pub fn blocking_put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        crate::blocking::assert_may_block("blocking_put_timeout", "put_timeout");
        self.blocking_put_inner(item, Some(timeout))
    }

    fn blocking_put_inner(&self, item: T, timeout: Option<Duration>) -> Result<(), PutError<T>> {
        let e = encode(&item)?;
        match self
            .core
            .blocking_wait(deadline_after(timeout), |g| try_push(g, &e))
        {
            Ok(Some(outcome)) => Self::put_result(outcome, item),
            Ok(None) => Err(PutError::Timeout(item)),
            Err(err) => Err(PutError::Io(core_io(err))),
        }
    }

    fn get_result(outcome: GetOutcome) -> Result<T, GetError> {
        match outcome {
            GetOutcome::Item(item) => decode(item),
            GetOutcome::Closed => Err(GetError::Closed),
        }
    }

    /// Takes the first item, waiting while the queue is empty.
    ///
    /// # Errors
    /// [`GetError::Closed`] once the queue is closed and empty;
    /// [`GetError::Decode`] for an item that is not a `T`.
    ///
    /// # Cancel safety
    /// Cancel safe: an item is taken only in the poll that returns it.
    pub async fn get(&self) -> Result<T, GetError> {
        match self.core.wait(try_pop).await {
            Ok(outcome) => Self::get_result(outcome),
            Err(err) => Err(GetError::Io(core_io(err))),
        }
    }

    /// [`get`](Self::get), giving up after `timeout`.
    ///
    /// # Errors
    /// [`GetError::Timeout`] if nothing came in time; else as [`get`](Self::get).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`get`](Self::get).
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        match tokio::time::timeout(timeout, self.core.wait(try_pop)).await {
            Ok(Ok(outcome)) => Self::get_result(outcome),
            Ok(Err(err)) => Err(GetError::Io(core_io(err))),
            Err(_) => Err(GetError::Timeout),
        }
    }

    /// Takes the first item if there is one now.
    ///
    /// # Errors
    /// [`GetError::Empty`] if there is none (or [`GetError::Closed`] if there will
    /// never be one); else as [`get`](Self::get).
    pub fn try_get(&self) -> Result<T, GetError> {
        let outcome = self
            .locked(try_pop)
            .and_then(|r| r.map_err(core_io))
            .map_err(GetError::Io)?;
        match outcome {
            Poll::Ready(o) => Self::get_result(o),
            Poll::Pending => Err(GetError::Empty),
        }
    }

    /// Blocking form of [`get`](Self::get), for code that is not async.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`get`](Self::get) there.
    #[track_caller]
    pub fn blocking_get(&self) -> Result<T, GetError> {
        crate::blocking::assert_may_block("blocking_get", "get");
        self.blocking_get_inner(None)
    }

    /// Blocking form of [`get_timeout`](Self::get_timeout).
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`get_timeout`](Self::get_timeout) there.
    #[track_caller]
    pub fn blocking_get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        crate::blocking::assert_may_block("blocking_get_timeout", "get_timeout");
        self.blocking_get_inner(Some(timeout))
    }

    fn blocking_get_inner(&self, timeout: Option<Duration>) -> Result<T, GetError> {
        match self.core.blocking_wait(deadline_after(timeout), try_pop) {
            Ok(Some(outcome)) => Self::get_result(outcome),
            Ok(None) => Err(GetError::Timeout),
            Err(err) => Err(GetError::Io(core_io(err))),
        }
    }

    /// Test hook: puts `item` into the ring and aborts the process before publishing
    /// it, as a producer killed mid-`put` would.
    #[doc(hidden)]
    pub fn __put_and_die_before_publishing_for_testing(&self, item: T) {
        let e = encode(&item).unwrap_or_else(|_| std::process::abort());
        if let Ok(mut g) = self.core.lock() {
            let _ = g.push(&e.bytes, &[]);
            std::process::abort();
        }
        std::process::abort();
    }

    /// The items as a [`Stream`], which ends when the queue is closed and drained.
    /// Several consumers (in this process or others) may stream from one queue; each
    /// item goes to one of them.
    pub fn stream(&self) -> impl Stream<Item = Result<T, GetError>> + Send + 'static
    where
        T: Send + 'static,
    {
        futures::stream::unfold(self.clone(), |q| async move {
            match q.get().await {
                Err(GetError::Closed) => None,
                r => Some((r, q)),
            }
        })
    }
}

/// A queue's four descriptors, as they travel.
type CoreParts<'a> = (SendFd<'a>, SendFd<'a>, SendFd<'a>, SendFd<'a>);

fn core_parts(core: &Core) -> CoreParts<'_> {
    let [a, b, c, d] = core.fds();
    (SendFd(a), SendFd(b), SendFd(c), SendFd(d))
}

fn open_core(
    (RecvFd(a), RecvFd(b), RecvFd(c), RecvFd(d)): (RecvFd, RecvFd, RecvFd, RecvFd),
) -> Result<Queue<()>, String> {
    let core = Core::open([a, b, c, d]).map_err(|e| format!("opening a queue: {e}"))?;
    Ok(Queue {
        core: Arc::new(core),
        _items: PhantomData,
    })
}

/// [`Handle`] and serde for a queue type: its four descriptors, tagged with its kind
/// and item type. `|$this| $queue` names the handle's `Queue`; `|$q| $wrap` makes the
/// handle from one.
macro_rules! queue_handle {
    ($ty:ident, |$this:ident| $queue:expr, |$q:ident| $wrap:expr) => {
        impl<T> Handle for $ty<T> {
            const KIND: &'static str = stringify!($ty);
            type Params = T;
            type Parts<'a>
                = CoreParts<'a>
            where
                Self: 'a;
            type Received = (RecvFd, RecvFd, RecvFd, RecvFd);

            fn parts(&self) -> CoreParts<'_> {
                let $this = self;
                let queue: &Queue<T> = $queue;
                core_parts(&queue.core)
            }

            fn assemble(fds: Self::Received) -> Result<Self, String> {
                let untyped = open_core(fds)?;
                let $q: Queue<T> = Queue {
                    core: untyped.core,
                    _items: PhantomData,
                };
                Ok($wrap)
            }
        }

        handle_serde!($ty<T>);
    };
}

queue_handle!(Queue, |this| this, |q| q);

mod error;
mod joinable;
mod simple;

pub use error::{GetError, PutError, TaskDoneError};
pub use joinable::JoinableQueue;
pub use simple::SimpleQueue;
