//! The manager's server process: objects kept encoded, one task per client
//! connection, each request applied under one mutex (so it is atomic).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::connection::Listener;
use crate::pipe::Connection;
use crate::task::{self, WorkerCtx};
use crate::wire::TaskRef;

/// What kind of object `New` makes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum Kind {
    Value,
    List,
    Dict,
    Namespace,
}

/// A request from a proxy.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    New(Kind, Vec<u8>),
    Get(u64),
    Set(u64, Vec<u8>),
    /// Run the trampoline on the value: (id, the caller's build fingerprint, function).
    Update(u64, u64, TaskRef),
    ListPush(u64, Vec<u8>),
    ListGet(u64, u64),
    ListSet(u64, u64, Vec<u8>),
    DictSet(u64, Vec<u8>, Vec<u8>),
    DictGet(u64, Vec<u8>),
    DictRemove(u64, Vec<u8>),
    Len(u64),
    Items(u64),
    Shutdown,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Id(u64),
    Bytes(Option<Vec<u8>>),
    Len(u64),
    Items(Vec<(Vec<u8>, Vec<u8>)>),
    Unit,
    Error(String),
}

enum Object {
    Value(Vec<u8>),
    List(Vec<Vec<u8>>),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

#[derive(Default)]
struct State {
    next: u64,
    objects: HashMap<u64, Object>,
}

fn refuse(why: impl Into<String>) -> Response {
    Response::Error(why.into())
}

impl State {
    fn apply(&mut self, req: Request) -> Response {
        use Object::*;
        let missing = || refuse("no such object");
        match req {
            Request::New(kind, init) => {
                self.next += 1;
                let obj = match kind {
                    Kind::Value => Value(init),
                    Kind::List => List(Vec::new()),
                    Kind::Dict | Kind::Namespace => Map(BTreeMap::new()),
                };
                self.objects.insert(self.next, obj);
                Response::Id(self.next)
            }
            Request::Get(id) => match self.objects.get(&id) {
                Some(Value(v)) => Response::Bytes(Some(v.clone())),
                _ => missing(),
            },
            Request::Set(id, bytes) => match self.objects.get_mut(&id) {
                Some(Value(v)) => {
                    *v = bytes;
                    Response::Unit
                }
                _ => missing(),
            },
            Request::Update(id, fingerprint, func) => {
                if fingerprint != task::fingerprint() {
                    return refuse("update: the caller runs another build than the manager");
                }
                let Some(Value(v)) = self.objects.get_mut(&id) else {
                    return missing();
                };
                let mut out = Vec::new();
                let mut ctx = WorkerCtx::new(crate::DEFAULT_MAX_FRAME);
                match task::resolve(task::image(), func).and_then(|t| t(&mut ctx, v, &mut out)) {
                    Ok(()) => {
                        *v = out;
                        Response::Bytes(Some(v.clone()))
                    }
                    Err(failure) => refuse(format!("update: {failure:?}")),
                }
            }
            Request::ListPush(id, bytes) => match self.objects.get_mut(&id) {
                Some(List(l)) => {
                    l.push(bytes);
                    Response::Unit
                }
                _ => missing(),
            },
            Request::ListGet(id, i) => match self.objects.get(&id) {
                Some(List(l)) => Response::Bytes(l.get(i as usize).cloned()),
                _ => missing(),
            },
            Request::ListSet(id, i, bytes) => match self.objects.get_mut(&id) {
                Some(List(l)) => match l.get_mut(i as usize) {
                    Some(slot) => {
                        *slot = bytes;
                        Response::Unit
                    }
                    None => refuse(format!("index {i} out of range for length {}", l.len())),
                },
                _ => missing(),
            },
            Request::DictSet(id, k, v) => match self.objects.get_mut(&id) {
                Some(Map(m)) => {
                    m.insert(k, v);
                    Response::Unit
                }
                _ => missing(),
            },
            Request::DictGet(id, k) => match self.objects.get(&id) {
                Some(Map(m)) => Response::Bytes(m.get(&k).cloned()),
                _ => missing(),
            },
            Request::DictRemove(id, k) => match self.objects.get_mut(&id) {
                Some(Map(m)) => Response::Bytes(m.remove(&k)),
                _ => missing(),
            },
            Request::Len(id) => match self.objects.get(&id) {
                Some(List(l)) => Response::Len(l.len() as u64),
                Some(Map(m)) => Response::Len(m.len() as u64),
                _ => missing(),
            },
            Request::Items(id) => match self.objects.get(&id) {
                Some(List(l)) => {
                    Response::Items(l.iter().map(|v| (Vec::new(), v.clone())).collect())
                }
                Some(Map(m)) => {
                    Response::Items(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                }
                _ => missing(),
            },
            Request::Shutdown => Response::Unit,
        }
    }
}

/// The server process's body: listen at `path`, say so on `ready`, serve until a
/// `Shutdown` request (or until killed).
pub(crate) fn serve((path, ready): (PathBuf, Connection<()>)) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let Ok(mut listener) = Listener::bind(path, &crate::connection::authkey()).await else {
            return;
        };
        if ready.send(&()).await.is_err() {
            return;
        }
        drop(ready);
        let state = Arc::new(Mutex::new(State::default()));
        let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
        loop {
            let conn: Connection<Response, Request> = tokio::select! {
                _ = stop_rx.recv() => return,
                c = listener.accept() => match c {
                    Ok(c) => c,
                    // A peer that failed the handshake: it got nothing; go on.
                    Err(_) => continue,
                },
            };
            let state = state.clone();
            let stop = stop_tx.clone();
            tokio::spawn(async move {
                while let Ok(req) = conn.recv().await {
                    let shutdown = matches!(req, Request::Shutdown);
                    let resp = state.lock().unwrap_or_else(|p| p.into_inner()).apply(req);
                    if conn.send(&resp).await.is_err() {
                        return;
                    }
                    if shutdown {
                        let _ = stop.send(()).await;
                        return;
                    }
                }
            });
        }
    });
}
