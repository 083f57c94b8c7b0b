//! The manager's server process: objects kept encoded, one task per client
//! connection, each request applied under one mutex (so it is atomic).

use std::collections::{BTreeMap, HashMap, VecDeque};
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
        }
    }
}

impl Request {
    /// Whether the request may have to wait for a change (it then carries no payload).
    fn waits(&self) -> bool {
        matches!(
            self,
            Request::QueueGet(_) | Request::LockAcquire(_) | Request::EventWait(_)
        )
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
}

enum Object {
    /// The encoded value and its version, raised by every change.
    Value(Vec<u8>, u64),
    List(Vec<Vec<u8>>),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
    Queue(VecDeque<Vec<u8>>),
    /// Held by the connection with this number.
    Lock(Option<u64>),
    Event(bool),
}

#[derive(Default)]
struct State {
    next: u64,
    objects: HashMap<u64, Object>,
}

/// The state, and a notification for every change that waiters re-check.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers `req` for connection `conn`, waiting (without holding the state) for
    /// requests that wait.
    async fn answer(&self, conn: u64, req: Request) -> Response {
        let mut next = req;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Only requests without a payload wait, so keeping one for another try
            // copies no payload.
            let again = next.waits().then(|| next.clone());
            let (resp, did_change) = self.lock().apply(conn, next);
            if did_change {
                self.changed.notify_waiters();
            }
            match (resp, again) {
                (Some(r), _) => return r,
                (None, Some(req)) => {
                    next = req;
                    changed.await;
                }
                (None, None) => unreachable!("only waiting requests are not answered at once"),
            }
        }
    }

    /// Releases every lock `conn` holds (its connection closed).
    fn release_all(&self, conn: u64) {
        let mut released = false;
        for obj in self.lock().objects.values_mut() {
            if let Object::Lock(holder) = obj {
                if *holder == Some(conn) {
                    *holder = None;
                    released = true;
                }
            }
        }
        if released {
            self.changed.notify_waiters();
        }
    }
}

fn refuse(why: Refusal) -> Response {
    Response::Refused(why)
}

impl State {
    /// Applies `req` for connection `conn`: `None` if it must wait; the flag says
    /// whether anything changed (waiters then look again).
    fn apply(&mut self, conn: u64, req: Request) -> (Option<Response>, bool) {
        let mutating = !matches!(
            &req,
            Request::Get(_)
                | Request::GetVersioned(_)
                | Request::NamedCode(..)
                | Request::ListGet(..)
                | Request::DictGet(..)
                | Request::Len(_)
                | Request::Items(_)
                | Request::EventIsSet(_)
                | Request::EventWait(_)
                | Request::Ping
        );
        match self.apply_inner(conn, req) {
            Some(Response::Refused(e)) => (Some(Response::Refused(e)), false),
            Some(r) => (Some(r), mutating),
            None => (None, false),
        }
    }

    fn apply_inner(&mut self, conn: u64, req: Request) -> Option<Response> {
        use Object::*;
        let missing = || Some(refuse(Refusal::NoSuchObject));
        Some(match req {
            Request::New(kind, init) => {
                self.next += 1;
                let obj = match kind {
                    Kind::Value => Value(init, 0),
                    Kind::List => List(Vec::new()),
                    Kind::Dict | Kind::Namespace => Map(BTreeMap::new()),
                    Kind::Queue => Queue(VecDeque::new()),
                    Kind::Lock => Lock(None),
                    Kind::Event => Event(false),
                };
                self.objects.insert(self.next, obj);
                Response::Id(self.next)
            }
            Request::Get(id) => match self.objects.get(&id) {
                Some(Value(v, _)) => Response::Bytes(Some(v.clone())),
                _ => return missing(),
            },
            Request::GetVersioned(id) => match self.objects.get(&id) {
                Some(Value(v, version)) => Response::Versioned(*version, v.clone()),
                _ => return missing(),
            },
            Request::Set(id, bytes) => match self.objects.get_mut(&id) {
                Some(Value(v, version)) => {
                    *v = bytes;
                    *version += 1;
                    Response::Unit
                }
                _ => return missing(),
            },
            Request::CompareAndSet(id, expected, bytes) => match self.objects.get_mut(&id) {
                Some(Value(v, version)) if *version == expected => {
                    *v = bytes;
                    *version += 1;
                    Response::Version(*version)
                }
                Some(Value(v, version)) => Response::Versioned(*version, v.clone()),
                _ => return missing(),
            },
            Request::NamedCode(..) => refuse(Refusal::CodeFromClient),
            Request::ListPush(id, bytes) => match self.objects.get_mut(&id) {
                Some(List(l)) => {
                    l.push(bytes);
                    Response::Unit
                }
                _ => return missing(),
            },
            Request::ListGet(id, i) => match self.objects.get(&id) {
                Some(List(l)) => Response::Bytes(l.get(i as usize).cloned()),
                _ => return missing(),
            },
            Request::ListSet(id, i, bytes) => match self.objects.get_mut(&id) {
                Some(List(l)) => match l.get_mut(i as usize) {
                    Some(slot) => {
                        *slot = bytes;
                        Response::Unit
                    }
                    None => refuse(Refusal::IndexOutOfRange {
                        index: i,
                        len: l.len() as u64,
                    }),
                },
                _ => return missing(),
            },
            Request::DictSet(id, k, v) => match self.objects.get_mut(&id) {
                Some(Map(m)) => {
                    m.insert(k, v);
                    Response::Unit
                }
                _ => return missing(),
            },
            Request::DictGet(id, k) => match self.objects.get(&id) {
                Some(Map(m)) => Response::Bytes(m.get(&k).cloned()),
                _ => return missing(),
            },
            Request::DictRemove(id, k) => match self.objects.get_mut(&id) {
                Some(Map(m)) => Response::Bytes(m.remove(&k)),
                _ => return missing(),
            },
            Request::Len(id) => match self.objects.get(&id) {
                Some(List(l)) => Response::Len(l.len() as u64),
                Some(Map(m)) => Response::Len(m.len() as u64),
                Some(Queue(q)) => Response::Len(q.len() as u64),
                _ => return missing(),
            },
            Request::Items(id) => match self.objects.get(&id) {
                Some(List(l)) => {
                    Response::Items(l.iter().map(|v| (Vec::new(), v.clone())).collect())
                }
                Some(Map(m)) => {
                    Response::Items(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                }
                _ => return missing(),
            },
            Request::QueuePut(id, bytes) => match self.objects.get_mut(&id) {
                Some(Queue(q)) => {
                    q.push_back(bytes);
                    Response::Unit
                }
                _ => return missing(),
            },
            Request::QueueGet(id) => match self.objects.get_mut(&id) {
                Some(Queue(q)) => Response::Bytes(Some(q.pop_front()?)),
                _ => return missing(),
            },
            Request::LockAcquire(id) => match self.objects.get_mut(&id) {
                Some(Lock(holder)) => match holder {
                    None => {
                        *holder = Some(conn);
                        Response::Unit
                    }
                    Some(h) if *h == conn => refuse(Refusal::AlreadyHeld),
                    Some(_) => return None,
                },
                _ => return missing(),
            },
            Request::LockRelease(id) => match self.objects.get_mut(&id) {
                Some(Lock(holder)) if *holder == Some(conn) => {
                    *holder = None;
                    Response::Unit
                }
                Some(Lock(_)) => refuse(Refusal::NotHolder),
                _ => return missing(),
            },
            Request::EventSet(id) | Request::EventClear(id) => {
                let set = matches!(req, Request::EventSet(_));
                match self.objects.get_mut(&id) {
                    Some(Event(flag)) => {
                        *flag = set;
                        Response::Unit
                    }
                    _ => return missing(),
                }
            }
            Request::EventIsSet(id) => match self.objects.get(&id) {
                Some(Event(flag)) => Response::Bool(*flag),
                _ => return missing(),
            },
            Request::EventWait(id) => match self.objects.get(&id) {
                Some(Event(true)) => Response::Unit,
                Some(Event(false)) => return None,
                _ => return missing(),
            },
            Request::Ping | Request::Shutdown => Response::Unit,
        })
    }
}

/// The server process's body: listen at `address`, say so on `ready`, serve until a
/// `Shutdown` request (or until killed).
pub(crate) fn serve((address, ready): (Address, Connection<()>)) {
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
        run(listener).await;
    });
}

/// Serves clients of `listener` until one asks to shut down.
pub(crate) async fn run(mut listener: Listener) {
    let shared = Arc::new(Shared::default());
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
