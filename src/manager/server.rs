//! The manager's server process: objects kept encoded, one task per client
//! connection, each request applied under one mutex (so it is atomic).

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::connection::{Address, Listener};
use crate::pipe::Connection;
use crate::wire::TaskRef;

/// What kind of object `New` makes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum Kind {
    Value,
    List,
    Dict,
    Namespace,
    Queue,
    Lock,
    Event,
    JoinableQueue,
    RLock,
    /// Its initial value is the init's `u64`; bounded or not.
    Semaphore {
        bounded: bool,
    },
    Condition,
    /// Its parties are the init's `u64`.
    Barrier,
    /// Its items are the init's `Vec<Vec<u8>>`, each encoded.
    Array,
}

/// A request from a proxy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    New(Kind, Vec<u8>),
    Get(u64),
    Set(u64, Vec<u8>),
    /// Retired: asked the manager to run a function the client named (an offset into
    /// the manager's code). Kept in its place only so that such a request decodes and
    /// is refused ([`Refusal::CodeFromClient`]): the manager runs no code a client
    /// names. `ValueProxy::update` is a compare-and-set loop in the client instead.
    NamedCode(u64, u64, TaskRef),
    ListPush(u64, Vec<u8>),
    ListGet(u64, u64),
    ListSet(u64, u64, Vec<u8>),
    DictSet(u64, Vec<u8>, Vec<u8>),
    DictGet(u64, Vec<u8>),
    DictRemove(u64, Vec<u8>),
    Len(u64),
    Items(u64),
    QueuePut(u64, Vec<u8>),
    /// Waits for an item.
    QueueGet(u64),
    /// Waits for the lock; it is held by this connection until `LockRelease` or until
    /// the connection closes.
    LockAcquire(u64),
    LockRelease(u64),
    EventSet(u64),
    EventClear(u64),
    EventIsSet(u64),
    /// Waits until the event is set.
    EventWait(u64),
    /// Does nothing: checks the connection (and the key).
    Ping,
    Shutdown,
    /// The value and its version (which every change raises).
    GetVersioned(u64),
    /// Stores the bytes if the value is still at the version given: (id, version,
    /// bytes). Answered `Version` (the new one), or `Versioned` with what is there now.
    CompareAndSet(u64, u64, Vec<u8>),
    /// A `JoinableQueue` item is done.
    TaskDone(u64),
    /// Waits until every item put in the `JoinableQueue` is done.
    Join(u64),
    /// Waits for the `RLock`; this connection then holds it (once more) until it
    /// closes. The second `u64` names the owner (a thread or a tokio task of one
    /// process): the same owner may take it again on another connection.
    RLockAcquire(u64, u64),
    /// Waits until the semaphore's value is above zero, then lowers it.
    SemAcquire(u64),
    /// Lowers the semaphore's value if above zero: `Bool`.
    SemTryAcquire(u64),
    SemRelease(u64),
    /// The semaphore's value: `Len`.
    SemValue(u64),
    /// Waits for the condition's lock; this connection holds it until it releases
    /// or closes.
    CondAcquire(u64),
    CondRelease(u64),
    /// Releases the condition's lock (held by this connection), waits until
    /// notified or until the milliseconds given pass, then takes the lock again:
    /// `Bool(notified)`.
    CondWait(u64, Option<u64>),
    /// Wakes up to this many waiters (the lock held by this connection).
    CondNotify(u64, u64),
    /// Waits for the barrier's other parties, or the milliseconds given (which
    /// break it): `Len(index of arrival)`.
    BarrierWait(u64, Option<u64>),
    BarrierAbort(u64),
    BarrierReset(u64),
    /// (parties, waiting, broken): `Items` of one entry, three encoded numbers.
    BarrierState(u64),
    /// An object of a type registered with the manager, by its name.
    NewRegistered(String, Vec<u8>),
    /// Calls a registered object's method: the encoded call, answered `Bytes`.
    Call(u64, Vec<u8>),
}

/// Why the manager refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// The proxy names an object the manager does not have (or of another kind).
    NoSuchObject,
    /// `ListProxy::set` past the end.
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The list's length.
        len: u64,
    },
    /// The request named code for the manager to run (an older client's server-side
    /// `update`). A manager runs no code a client names: update values with
    /// `ValueProxy::update`, which runs the function in the caller.
    CodeFromClient,
    /// `lock` by the connection that already holds the lock.
    AlreadyHeld,
    /// A release by a connection that does not hold the lock.
    NotHolder,
    /// A bounded semaphore released above its initial value.
    OverReleased,
    /// `task_done` called more times than items were put.
    TaskDoneTooOften,
    /// The barrier is broken (aborted, reset, timed out, or a party died waiting).
    BrokenBarrier,
    /// The manager does not serve a type of this name (see `ManagerBuilder::register`).
    NotRegistered {
        /// The name asked for.
        name: String,
    },
    /// A registered object's argument did not decode on the manager's side.
    Undecodable {
        /// What the manager could not decode.
        what: String,
    },
    /// A registered object's method panicked in the manager; the object stays as the
    /// panic left it.
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// An index past the end of a fixed-length array, or a request that would change
    /// its length.
    FixedLength,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoSuchObject => f.write_str("no such object"),
            Refusal::IndexOutOfRange { index, len } => {
                write!(f, "index {index} out of range for length {len}")
            }
            Refusal::CodeFromClient => f.write_str(
                "the request names code for the manager to run, which it never does; \
                 update values with ValueProxy::update (it runs in the caller)",
            ),
            Refusal::AlreadyHeld => f.write_str("the lock is already held by this caller"),
            Refusal::NotHolder => f.write_str("released by a caller that does not hold the lock"),
            Refusal::OverReleased => {
                f.write_str("a bounded semaphore was released more times than acquired")
            }
            Refusal::TaskDoneTooOften => {
                f.write_str("task_done was called more times than items were put")
            }
            Refusal::BrokenBarrier => f.write_str(
                "the barrier is broken (aborted, reset, timed out or a party died); reset it",
            ),
            Refusal::NotRegistered { name } => write!(
                f,
                "the manager serves no type named {name:?}: register it on the manager's builder"
            ),
            Refusal::Undecodable { what } => write!(f, "the manager could not decode {what}"),
            Refusal::Panicked { message } => {
                write!(f, "the object's method panicked in the manager: {message}")
            }
            Refusal::FixedLength => {
                f.write_str("an array's length is fixed: that index or change is out of range")
            }
        }
    }
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Id(u64),
    Bytes(Option<Vec<u8>>),
    Len(u64),
    Items(Vec<(Vec<u8>, Vec<u8>)>),
    Bool(bool),
    Unit,
    Refused(Refusal),
    /// A value's new version after a `CompareAndSet`.
    Version(u64),
    /// A value and its version.
    Versioned(u64, Vec<u8>),
    /// Numbers (a barrier's state).
    Numbers(Vec<u64>),
}

pub(crate) use super::objects::Registered;
use super::objects::{State, Step};

/// The state, and a notification for every change that waiters re-check.
struct Shared {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

impl Shared {
    fn new(types: Registered) -> Shared {
        Shared {
            state: Mutex::new(State::new(types)),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers `req` for connection `conn`, waiting (without holding the state) for
    /// requests that wait, until their deadline if they have one.
    async fn answer(&self, conn: u64, req: Request) -> Response {
        let mut req = Some(req);
        let mut waiting = None;
        let mut timed_out = false;
        loop {
            // Registered before the state is looked at: no change is missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let step = {
                let mut state = self.lock();
                match (waiting.take(), req.take()) {
                    (Some(pending), _) => state.resume(conn, pending, timed_out),
                    (None, Some(req)) => state.start(conn, req),
                    (None, None) => return Response::Unit, // not reached
                }
            };
            let (pending, did_change) = match step {
                Step::Done(resp, did_change) => {
                    if did_change {
                        self.changed.notify_waiters();
                    }
                    return resp;
                }
                Step::Wait(pending, did_change) => (pending, did_change),
            };
            if did_change {
                self.changed.notify_waiters();
            }
            let deadline = pending.deadline();
            waiting = Some(pending);
            timed_out = match deadline {
                Some(at) => tokio::time::timeout_at(at, changed).await.is_err(),
                None => {
                    changed.await;
                    false
                }
            };
        }
    }

    /// Releases what `conn` held and forgets what it waited for (its connection
    /// closed).
    fn release_all(&self, conn: u64) {
        if self.lock().release_all(conn) {
            self.changed.notify_waiters();
        }
    }
}

/// The server process's body: listen at `address`, say so on `ready`, serve until a
/// `Shutdown` request (or until killed).
pub(crate) fn serve<L: super::Registry>((address, ready): (Address, Connection<()>)) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let Ok(listener) = Listener::bind(address, &crate::authkey::authkey()).await else {
            return;
        };
        if ready.send(&()).await.is_err() {
            return;
        }
        drop(ready);
        run(listener, Registered::of::<L>()).await;
    });
}

/// Serves clients of `listener` until one asks to shut down.
pub(crate) async fn run(mut listener: Listener, types: Registered) {
    let shared = Arc::new(Shared::new(types));
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut next_conn = 0u64;
    loop {
        let conn: Connection<Response, Request> = tokio::select! {
            _ = stop_rx.recv() => return,
            c = listener.accept() => match c {
                Ok(c) => c,
                // A peer that failed the handshake got nothing; go on.
                Err(_) => continue,
            },
        };
        next_conn += 1;
        let id = next_conn;
        let shared = shared.clone();
        let stop = stop_tx.clone();
        tokio::spawn(async move {
            while let Ok(req) = conn.recv().await {
                let shutdown = matches!(req, Request::Shutdown);
                // A waiting request ends early if the client goes away meanwhile.
                let resp = tokio::select! {
                    r = shared.answer(id, req) => r,
                    _ = conn.poll(std::time::Duration::from_secs(u64::MAX / 4)) => break,
                };
                if conn.send(&resp).await.is_err() {
                    break;
                }
                if shutdown {
                    let _ = stop.send(()).await;
                    break;
                }
            }
            // Whatever this client held is free again (also when it died).
            shared.release_all(id);
        });
    }
}
