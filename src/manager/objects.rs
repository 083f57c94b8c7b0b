//! The objects a manager keeps, and how each request changes them.
//!
//! Everything here runs under the server's one mutex, so every request is atomic. A
//! request that has to wait (a queue's `get`, a lock, a condition's `wait`, a
//! barrier) comes back as a [`Pending`] step, which the connection's task looks at
//! again after each change, and after its deadline if it has one. What a closed
//! connection held or waited for is given up in [`State::release_all`].

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::registered::Entry;
use super::server::{Kind, Refusal, Request, Response};

/// The registered types a manager serves, by name: the table is built in the serving
/// process from its own code, never from what a client sends.
pub(crate) struct Registered(pub(super) Vec<Entry>);

impl Registered {
    /// The types `L` lists.
    pub(crate) fn of<L: super::Registry>() -> Registered {
        let mut entries = Vec::new();
        <L as super::registered::sealed::Sealed>::entries(&mut entries);
        Registered(entries)
    }
}

enum Object {
    /// The encoded value and its version, raised by every change.
    Value(Vec<u8>, u64),
    List(Vec<Vec<u8>>),
    /// A list of fixed length.
    Array(Vec<Vec<u8>>),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
    Queue(VecDeque<Vec<u8>>),
    JoinableQueue {
        items: VecDeque<Vec<u8>>,
        /// Items put and not yet marked done.
        unfinished: u64,
    },
    /// Held by the connection with this number.
    Lock(Option<u64>),
    /// Held by `owner` through each of `conns` (one per acquire); free when none is
    /// left.
    RLock {
        owner: Option<u64>,
        conns: Vec<u64>,
    },
    Semaphore {
        value: u64,
        /// A bounded semaphore's initial value, which a release may not pass.
        bound: Option<u64>,
    },
    Event(bool),
    Condition {
        holder: Option<u64>,
        /// (ticket, connection) of each waiter, first come first.
        waiters: VecDeque<(u64, u64)>,
        /// Tickets notified and not yet back: ticket → connection.
        notified: HashMap<u64, u64>,
    },
    Barrier {
        parties: u64,
        /// The connections waiting in the current generation.
        arrived: Vec<u64>,
        generation: u64,
        /// Generations that ended broken; their waiters are told so.
        broken: HashSet<u64>,
        /// Broken now: arrivals are refused until a reset.
        aborted: bool,
    },
    Registered {
        entry: usize,
        object: Box<dyn Any + Send>,
    },
}

/// A request that waits, in the form it is looked at again.
pub(crate) enum Pending {
    /// Applied again as it is.
    Again(Request),
    /// A condition's waiter, until notified or its deadline.
    Notified {
        id: u64,
        ticket: u64,
        deadline: Option<Instant>,
    },
    /// A condition's waiter taking the lock back.
    Relock { id: u64, notified: bool },
    /// A barrier's party, until its generation ends.
    Pass {
        id: u64,
        generation: u64,
        index: u64,
        deadline: Option<Instant>,
    },
}

impl Pending {
    /// When the wait ends by itself.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Pending::Notified { deadline, .. } | Pending::Pass { deadline, .. } => *deadline,
            Pending::Again(_) | Pending::Relock { .. } => None,
        }
    }
}

/// What applying a request came to; the flag says whether anything changed (waiters
/// then look again).
pub(crate) enum Step {
    Done(Response, bool),
    Wait(Pending, bool),
}

/// Every object of one manager.
pub(crate) struct State {
    next: u64,
    next_ticket: u64,
    objects: HashMap<u64, Object>,
    types: Registered,
}

fn refused(why: Refusal) -> Step {
    Step::Done(Response::Refused(why), false)
}

fn done(r: Response) -> Step {
    Step::Done(r, true)
}

fn missing() -> Step {
    refused(Refusal::NoSuchObject)
}

fn deadline(ms: Option<u64>) -> Option<Instant> {
    ms.map(|ms| Instant::now() + Duration::from_millis(ms))
}

fn undecodable(what: &str) -> Step {
    refused(Refusal::Undecodable {
        what: what.to_owned(),
    })
}

impl State {
    pub(crate) fn new(types: Registered) -> State {
        State {
            next: 0,
            next_ticket: 0,
            objects: HashMap::new(),
            types,
        }
    }

    /// Applies `req` for connection `conn`.
    pub(crate) fn start(&mut self, conn: u64, req: Request) -> Step {
        let reads_only = matches!(
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
                | Request::SemValue(_)
                | Request::BarrierState(_)
                | Request::Join(_)
                | Request::Ping
        );
        match self.apply(conn, req) {
            Step::Done(r, _) if reads_only => Step::Done(r, false),
            step => step,
        }
    }

    /// Looks again at a request that waits; `timed_out` once its deadline passed.
    pub(crate) fn resume(&mut self, conn: u64, pending: Pending, timed_out: bool) -> Step {
        match pending {
            Pending::Again(req) => self.start(conn, req),
            Pending::Notified {
                id,
                ticket,
                deadline,
            } => {
                let Some(Object::Condition {
                    waiters, notified, ..
                }) = self.objects.get_mut(&id)
                else {
                    return missing();
                };
                let was_notified = notified.remove(&ticket).is_some();
                if !was_notified && !timed_out {
                    let pending = Pending::Notified {
                        id,
                        ticket,
                        deadline,
                    };
                    return Step::Wait(pending, false);
                }
                waiters.retain(|&(t, _)| t != ticket);
                self.relock(conn, id, was_notified)
            }
            Pending::Relock { id, notified } => self.relock(conn, id, notified),
            Pending::Pass {
                id,
                generation,
                index,
                deadline,
            } => {
                let Some(Object::Barrier {
                    arrived,
                    generation: now,
                    broken,
                    aborted,
                    ..
                }) = self.objects.get_mut(&id)
                else {
                    return missing();
                };
                if broken.contains(&generation) {
                    return refused(Refusal::BrokenBarrier);
                }
                if *now > generation {
                    return Step::Done(Response::Len(index), false);
                }
                if timed_out {
                    // As Python's: a wait that times out breaks the barrier.
                    broken.insert(generation);
                    *aborted = true;
                    arrived.clear();
                    return Step::Done(Response::Refused(Refusal::BrokenBarrier), true);
                }
                let pending = Pending::Pass {
                    id,
                    generation,
                    index,
                    deadline,
                };
                Step::Wait(pending, false)
            }
        }
    }

    /// A condition's waiter takes the lock back, or waits for it.
    fn relock(&mut self, conn: u64, id: u64, notified: bool) -> Step {
        match self.objects.get_mut(&id) {
            Some(Object::Condition { holder, .. }) => match holder {
                None => {
                    *holder = Some(conn);
                    Step::Done(Response::Bool(notified), false)
                }
                Some(_) => Step::Wait(Pending::Relock { id, notified }, false),
            },
            _ => missing(),
        }
    }

    /// Gives up what connection `conn` held or waited for: locks it held are free, a
    /// barrier it waited at is broken. True if anything changed.
    pub(crate) fn release_all(&mut self, conn: u64) -> bool {
        let mut changed = false;
        for obj in self.objects.values_mut() {
            match obj {
                Object::Lock(holder) if *holder == Some(conn) => {
                    *holder = None;
                    changed = true;
                }
                Object::RLock { owner, conns } if conns.contains(&conn) => {
                    conns.retain(|&c| c != conn);
                    if conns.is_empty() {
                        *owner = None;
                    }
                    changed = true;
                }
                Object::Condition {
                    holder,
                    waiters,
                    notified,
                } => {
                    if *holder == Some(conn) {
                        *holder = None;
                        changed = true;
                    }
                    waiters.retain(|&(_, c)| c != conn);
                    notified.retain(|_, c| *c != conn);
                }
                Object::Barrier {
                    arrived,
                    generation,
                    broken,
                    aborted,
                    ..
                } if arrived.contains(&conn) => {
                    // A party died waiting: the others would wait for ever.
                    broken.insert(*generation);
                    *aborted = true;
                    arrived.clear();
                    changed = true;
                }
                _ => {}
            }
        }
        changed
    }

    fn create(&mut self, kind: Kind, init: Vec<u8>) -> Step {
        let obj = match kind {
            Kind::Value => Object::Value(init, 0),
            Kind::List => Object::List(Vec::new()),
            Kind::Dict | Kind::Namespace => Object::Map(BTreeMap::new()),
            Kind::Queue => Object::Queue(VecDeque::new()),
            Kind::Lock => Object::Lock(None),
            Kind::Event => Object::Event(false),
            Kind::JoinableQueue => Object::JoinableQueue {
                items: VecDeque::new(),
                unfinished: 0,
            },
            Kind::RLock => Object::RLock {
                owner: None,
                conns: Vec::new(),
            },
            Kind::Semaphore { bounded } => match postcard::from_bytes::<u64>(&init) {
                Ok(value) => Object::Semaphore {
                    value,
                    bound: bounded.then_some(value),
                },
                Err(_) => return undecodable("a semaphore's value"),
            },
            Kind::Condition => Object::Condition {
                holder: None,
                waiters: VecDeque::new(),
                notified: HashMap::new(),
            },
            Kind::Barrier => match postcard::from_bytes::<u64>(&init) {
                Ok(parties) if parties > 0 => Object::Barrier {
                    parties,
                    arrived: Vec::new(),
                    generation: 0,
                    broken: HashSet::new(),
                    aborted: false,
                },
                _ => return undecodable("a barrier's parties (at least 1)"),
            },
            Kind::Array => match postcard::from_bytes::<Vec<Vec<u8>>>(&init) {
                Ok(items) => Object::Array(items),
                Err(_) => return undecodable("an array's items"),
            },
        };
        Step::Done(Response::Id(self.insert(obj)), true)
    }

    fn insert(&mut self, obj: Object) -> u64 {
        self.next += 1;
        self.objects.insert(self.next, obj);
        self.next
    }

    fn apply(&mut self, conn: u64, req: Request) -> Step {
        use Object::*;
        match req {
            Request::New(kind, init) => self.create(kind, init),
            Request::NewRegistered(name, init) => {
                let Some(i) = self.types.0.iter().position(|e| e.name == name) else {
                    return refused(Refusal::NotRegistered { name });
                };
                match (self.types.0[i].make)(&init) {
                    Ok(object) => {
                        let id = self.insert(Registered { entry: i, object });
                        done(Response::Id(id))
                    }
                    Err(why) => refused(why),
                }
            }
            Request::Call(id, call) => match self.objects.get_mut(&id) {
                Some(Registered { entry, object }) => {
                    match (self.types.0[*entry].call)(object.as_mut(), &call) {
                        Ok(reply) => done(Response::Bytes(Some(reply))),
                        Err(why) => refused(why),
                    }
                }
                _ => missing(),
            },
            Request::Get(id) => match self.objects.get(&id) {
                Some(Value(v, _)) => done(Response::Bytes(Some(v.clone()))),
                _ => missing(),
            },
            Request::GetVersioned(id) => match self.objects.get(&id) {
                Some(Value(v, version)) => done(Response::Versioned(*version, v.clone())),
                _ => missing(),
            },
            Request::Set(id, bytes) => match self.objects.get_mut(&id) {
                Some(Value(v, version)) => {
                    *v = bytes;
                    *version += 1;
                    done(Response::Unit)
                }
                _ => missing(),
            },
            Request::CompareAndSet(id, expected, bytes) => match self.objects.get_mut(&id) {
                Some(Value(v, version)) if *version == expected => {
                    *v = bytes;
                    *version += 1;
                    done(Response::Version(*version))
                }
                Some(Value(v, version)) => {
                    Step::Done(Response::Versioned(*version, v.clone()), false)
                }
                _ => missing(),
            },
            Request::NamedCode(..) => refused(Refusal::CodeFromClient),
            Request::ListPush(id, bytes) => match self.objects.get_mut(&id) {
                Some(List(l)) => {
                    l.push(bytes);
                    done(Response::Unit)
                }
                Some(Array(_)) => refused(Refusal::FixedLength),
                _ => missing(),
            },
            Request::ListGet(id, i) => match self.objects.get(&id) {
                Some(List(l)) => done(Response::Bytes(l.get(i as usize).cloned())),
                Some(Array(a)) => match a.get(i as usize) {
                    Some(v) => done(Response::Bytes(Some(v.clone()))),
                    None => refused(Refusal::IndexOutOfRange {
                        index: i,
                        len: a.len() as u64,
                    }),
                },
                _ => missing(),
            },
            Request::ListSet(id, i, bytes) => match self.objects.get_mut(&id) {
                Some(List(l) | Array(l)) => match l.get_mut(i as usize) {
                    Some(slot) => {
                        *slot = bytes;
                        done(Response::Unit)
                    }
                    None => refused(Refusal::IndexOutOfRange {
                        index: i,
                        len: l.len() as u64,
                    }),
                },
                _ => missing(),
            },
            Request::DictSet(id, k, v) => match self.objects.get_mut(&id) {
                Some(Map(m)) => {
                    m.insert(k, v);
                    done(Response::Unit)
                }
                _ => missing(),
            },
            Request::DictGet(id, k) => match self.objects.get(&id) {
                Some(Map(m)) => done(Response::Bytes(m.get(&k).cloned())),
                _ => missing(),
            },
            Request::DictRemove(id, k) => match self.objects.get_mut(&id) {
                Some(Map(m)) => done(Response::Bytes(m.remove(&k))),
                _ => missing(),
            },
            Request::Len(id) => match self.objects.get(&id) {
                Some(List(l) | Array(l)) => done(Response::Len(l.len() as u64)),
                Some(Map(m)) => done(Response::Len(m.len() as u64)),
                Some(Queue(q) | JoinableQueue { items: q, .. }) => {
                    done(Response::Len(q.len() as u64))
                }
                _ => missing(),
            },
            Request::Items(id) => match self.objects.get(&id) {
                Some(List(l) | Array(l)) => done(Response::Items(
                    l.iter().map(|v| (Vec::new(), v.clone())).collect(),
                )),
                Some(Map(m)) => done(Response::Items(
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                )),
                _ => missing(),
            },
            Request::QueuePut(id, bytes) => match self.objects.get_mut(&id) {
                Some(Queue(q)) => {
                    q.push_back(bytes);
                    done(Response::Unit)
                }
                Some(JoinableQueue { items, unfinished }) => {
                    items.push_back(bytes);
                    *unfinished += 1;
                    done(Response::Unit)
                }
                _ => missing(),
            },
            Request::QueueGet(id) => match self.objects.get_mut(&id) {
                Some(Queue(q) | JoinableQueue { items: q, .. }) => match q.pop_front() {
                    Some(item) => done(Response::Bytes(Some(item))),
                    None => Step::Wait(Pending::Again(Request::QueueGet(id)), false),
                },
                _ => missing(),
            },
            Request::TaskDone(id) => match self.objects.get_mut(&id) {
                Some(JoinableQueue { unfinished, .. }) => match unfinished.checked_sub(1) {
                    Some(n) => {
                        *unfinished = n;
                        done(Response::Unit)
                    }
                    None => refused(Refusal::TaskDoneTooOften),
                },
                _ => missing(),
            },
            Request::Join(id) => match self.objects.get(&id) {
                Some(JoinableQueue { unfinished: 0, .. }) => done(Response::Unit),
                Some(JoinableQueue { .. }) => Step::Wait(Pending::Again(Request::Join(id)), false),
                _ => missing(),
            },
            Request::LockAcquire(id) => match self.objects.get_mut(&id) {
                Some(Lock(holder)) => match holder {
                    None => {
                        *holder = Some(conn);
                        done(Response::Unit)
                    }
                    Some(h) if *h == conn => refused(Refusal::AlreadyHeld),
                    Some(_) => Step::Wait(Pending::Again(Request::LockAcquire(id)), false),
                },
                _ => missing(),
            },
            Request::LockRelease(id) => match self.objects.get_mut(&id) {
                Some(Lock(holder)) if *holder == Some(conn) => {
                    *holder = None;
                    done(Response::Unit)
                }
                Some(Lock(_)) => refused(Refusal::NotHolder),
                _ => missing(),
            },
            Request::RLockAcquire(id, who) => match self.objects.get_mut(&id) {
                Some(RLock { owner, conns }) => match owner {
                    Some(o) if *o != who => {
                        Step::Wait(Pending::Again(Request::RLockAcquire(id, who)), false)
                    }
                    _ => {
                        *owner = Some(who);
                        conns.push(conn);
                        done(Response::Unit)
                    }
                },
                _ => missing(),
            },
            Request::SemAcquire(id) | Request::SemTryAcquire(id) => {
                let waits = matches!(req, Request::SemAcquire(_));
                match self.objects.get_mut(&id) {
                    Some(Semaphore { value, .. }) => match value.checked_sub(1) {
                        Some(v) => {
                            *value = v;
                            done(if waits {
                                Response::Unit
                            } else {
                                Response::Bool(true)
                            })
                        }
                        None if waits => Step::Wait(Pending::Again(req), false),
                        None => Step::Done(Response::Bool(false), false),
                    },
                    _ => missing(),
                }
            }
            Request::SemRelease(id) => match self.objects.get_mut(&id) {
                Some(Semaphore { value, bound }) => {
                    if bound.is_some_and(|b| *value >= b) {
                        return refused(Refusal::OverReleased);
                    }
                    *value += 1;
                    done(Response::Unit)
                }
                _ => missing(),
            },
            Request::SemValue(id) => match self.objects.get(&id) {
                Some(Semaphore { value, .. }) => done(Response::Len(*value)),
                _ => missing(),
            },
            Request::EventSet(id) | Request::EventClear(id) => {
                let set = matches!(req, Request::EventSet(_));
                match self.objects.get_mut(&id) {
                    Some(Event(flag)) => {
                        *flag = set;
                        done(Response::Unit)
                    }
                    _ => missing(),
                }
            }
            Request::EventIsSet(id) => match self.objects.get(&id) {
                Some(Event(flag)) => done(Response::Bool(*flag)),
                _ => missing(),
            },
            Request::EventWait(id) => match self.objects.get(&id) {
                Some(Event(true)) => done(Response::Unit),
                Some(Event(false)) => Step::Wait(Pending::Again(Request::EventWait(id)), false),
                _ => missing(),
            },
            Request::CondAcquire(id) => match self.objects.get_mut(&id) {
                Some(Condition { holder, .. }) => match holder {
                    None => {
                        *holder = Some(conn);
                        done(Response::Unit)
                    }
                    Some(h) if *h == conn => refused(Refusal::AlreadyHeld),
                    Some(_) => Step::Wait(Pending::Again(Request::CondAcquire(id)), false),
                },
                _ => missing(),
            },
            Request::CondRelease(id) => match self.objects.get_mut(&id) {
                Some(Condition { holder, .. }) if *holder == Some(conn) => {
                    *holder = None;
                    done(Response::Unit)
                }
                Some(Condition { .. }) => refused(Refusal::NotHolder),
                _ => missing(),
            },
            Request::CondWait(id, ms) => {
                self.next_ticket += 1;
                let ticket = self.next_ticket;
                match self.objects.get_mut(&id) {
                    Some(Condition {
                        holder, waiters, ..
                    }) if *holder == Some(conn) => {
                        *holder = None;
                        waiters.push_back((ticket, conn));
                        let deadline = deadline(ms);
                        let pending = Pending::Notified {
                            id,
                            ticket,
                            deadline,
                        };
                        Step::Wait(pending, true)
                    }
                    Some(Condition { .. }) => refused(Refusal::NotHolder),
                    _ => missing(),
                }
            }
            Request::CondNotify(id, n) => match self.objects.get_mut(&id) {
                Some(Condition {
                    holder,
                    waiters,
                    notified,
                }) if *holder == Some(conn) => {
                    for _ in 0..n {
                        let Some((ticket, c)) = waiters.pop_front() else {
                            break;
                        };
                        notified.insert(ticket, c);
                    }
                    done(Response::Unit)
                }
                Some(Condition { .. }) => refused(Refusal::NotHolder),
                _ => missing(),
            },
            Request::BarrierWait(id, ms) => match self.objects.get_mut(&id) {
                Some(Barrier {
                    parties,
                    arrived,
                    generation,
                    aborted,
                    ..
                }) => {
                    if *aborted {
                        return refused(Refusal::BrokenBarrier);
                    }
                    let index = arrived.len() as u64;
                    if index + 1 == *parties {
                        arrived.clear();
                        *generation += 1;
                        return done(Response::Len(index));
                    }
                    arrived.push(conn);
                    let pending = Pending::Pass {
                        id,
                        generation: *generation,
                        index,
                        deadline: deadline(ms),
                    };
                    Step::Wait(pending, false)
                }
                _ => missing(),
            },
            Request::BarrierAbort(id) | Request::BarrierReset(id) => {
                let reset = matches!(req, Request::BarrierReset(_));
                match self.objects.get_mut(&id) {
                    Some(Barrier {
                        arrived,
                        generation,
                        broken,
                        aborted,
                        ..
                    }) => {
                        // Those waiting now are told the barrier broke.
                        if !arrived.is_empty() || !reset {
                            broken.insert(*generation);
                        }
                        arrived.clear();
                        if reset {
                            *generation += 1;
                        }
                        *aborted = !reset;
                        done(Response::Unit)
                    }
                    _ => missing(),
                }
            }
            Request::BarrierState(id) => match self.objects.get(&id) {
                Some(Barrier {
                    parties,
                    arrived,
                    aborted,
                    ..
                }) => done(Response::Numbers(vec![
                    *parties,
                    arrived.len() as u64,
                    u64::from(*aborted),
                ])),
                _ => missing(),
            },
            Request::Ping | Request::Shutdown => done(Response::Unit),
        }
    }
}
