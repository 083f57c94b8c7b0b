//! The remote back end: one dispatcher takes jobs from the pool's queue, as a local
//! driver does, and publishes each to a NATS JetStream pool instead of writing it to a
//! worker; replies from the hosts resolve them. Everything above the queue (submit,
//! `map` and its chunks, handles, counters, capacity, shutdown) is the executor's own
//! and does not know which back end runs its jobs.
//!
//! A cancel resolves the handle at once and asks the hosts, on the control subject,
//! to kill the worker running the task; the pool's task timeout travels with each
//! task and the host applies it.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::handle::Job;
use super::Inner;
use crate::error::{Error, RemoteTaskError, TaskError};
use crate::nats::registry;
use crate::nats::{header, NatsOptions, Reply};
use crate::wire::{Header, Payload, TaskRef, HEADER_LEN};

/// Runs the remote back end of `inner` until the pool is closed and every published
/// task has its reply, or the pool is aborted.
pub(super) async fn dispatch(inner: Arc<Inner>, options: NatsOptions) {
    let _alive = Alive(inner.clone());
    let connected = tokio::select! {
        r = connect(&options, inner.config.fingerprint) => r,
        _ = inner.abort.cancelled() => return,
    };
    let Connected {
        client,
        js,
        mut replies,
        mut advisories,
        reply_subject,
    } = match connected {
        Ok(c) => c,
        Err(e) => return inner.fail(e),
    };
    inner.health.send_modify(|h| h.live = 1);
    let subject = options.task_subject(inner.config.fingerprint);
    let executor = reply_subject
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let control = options.control_subject(inner.config.fingerprint);
    let mut in_flight = InFlight::default();
    let mut unacked: HashMap<u64, Published> = HashMap::new();
    // Stream sequence ↔ task id, for the advisories.
    let mut by_seq: HashMap<u64, u64> = HashMap::new();
    let mut seq_of: HashMap<u64, u64> = HashMap::new();
    let mut acks = FuturesUnordered::new();
    let (cancels_tx, mut cancels) = tokio::sync::mpsc::unbounded_channel();
    let mut closed = false;
    let waiter = Arc::new(super::jobs::IdleWaiter::default());
    loop {
        if closed && in_flight.is_empty() && acks.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            _ = inner.abort.cancelled() => break,
            Some(msg) = replies.next() => {
                if let Some((id, result)) = read_reply(&msg) {
                    in_flight.finish(&inner, id, result);
                    if let Some(seq) = seq_of.remove(&id) {
                        by_seq.remove(&seq);
                    }
                }
            }
            Some(id) = cancels.recv() => {
                // The handle says Cancelled now; a host running it kills its worker,
                // unless another submit of the same key waits for the same run.
                if let Some(wire) = in_flight.cancel(&inner, id) {
                    let id = wire;
                    let mut headers = HeaderMap::new();
                    headers.insert(header::ID, id.to_string().as_str());
                    headers.insert(header::REPLY, reply_subject.as_str());
                    let _ = client.publish_with_headers(control.clone(), headers, Vec::new().into()).await;
                }
            }
            Some(msg) = advisories.next() => {
                let seq = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                    .ok()
                    .and_then(|v| v.get("stream_seq")?.as_u64());
                if let Some(id) = seq.and_then(|s| by_seq.remove(&s)) {
                    seq_of.remove(&id);
                    let attempts = options.max_deliver.max(1) as u64;
                    let last = "its host was lost before it finished".to_owned();
                    let e = RemoteTaskError::RetriesExhausted { attempts, last };
                    in_flight.finish(&inner, id, Err(TaskError::Remote(e)));
                }
            }
            Some((id, acked)) = acks.next(), if !acks.is_empty() => match acked {
                Ok(Stored { seq, duplicate }) => {
                    let first_try = unacked.remove(&id).is_some_and(|p| p.attempts == 1);
                    match in_flight.key_of(id) {
                        // Not a retry of ours: another submit of the key got there
                        // first, and its submitter gets the one result.
                        Some(key) if duplicate && first_try => {
                            let key = key.to_string();
                            let e = RemoteTaskError::Duplicate { key };
                            in_flight.finish(&inner, id, Err(TaskError::Remote(e)));
                        }
                        _ if in_flight.contains(id) => {
                            by_seq.insert(seq, id);
                            seq_of.insert(id, seq);
                        }
                        _ => {}
                    }
                }
                Err(reason) => {
                    // Stored or not, the server did not say: publish again under the
                    // same message id, which the stream's dedup window makes
                    // idempotent (a task stored twice would run twice).
                    let retry = unacked.get_mut(&id).filter(|p| p.attempts < MAX_PUBLISH_ATTEMPTS);
                    match retry {
                        Some(p) if in_flight.contains(id) => {
                            p.attempts += 1;
                            acks.push(send(&js, &subject, id, p.headers.clone(), p.body.clone()));
                        }
                        _ => {
                            unacked.remove(&id);
                            in_flight.finish(&inner, id, Err(publish_failed(reason)));
                        }
                    }
                }
            },
            job = inner.jobs.next_idle(&waiter), if !closed => match job {
                Some(job) => {
                    let limit = client.server_info().max_payload;
                    let to = Destination {
                        executor: &executor,
                        reply: &reply_subject,
                        limit,
                        timeout: job.timeout.or(inner.config.task_timeout),
                        cancels: &cancels_tx,
                    };
                    if let Some((job, headers, body)) = prepare(&inner, &to, job) {
                        let id = job.id;
                        let Some(job) = in_flight.follow(job) else {
                            // The same key is in flight: this one waits for its run.
                            continue;
                        };
                        in_flight.insert(job);
                        acks.push(send(&js, &subject, id, headers.clone(), body.clone()));
                        unacked.insert(id, Published { headers, body, attempts: 1 });
                    }
                }
                None => closed = true,
            },
        }
    }
    // Aborted (`shutdown_now`, the pool dropped): nobody will read these replies.
    inner.jobs.leave_idle(&waiter);
    in_flight.abandon(&inner);
    inner.health.send_modify(|h| {
        h.live = h.live.saturating_sub(1);
        h.ended += 1;
    });
}

/// A connected dispatcher's client and subscriptions.
struct Connected {
    client: async_nats::Client,
    js: jetstream::Context,
    replies: async_nats::Subscriber,
    advisories: async_nats::Subscriber,
    reply_subject: String,
}

/// Connects, makes sure the task stream exists, and subscribes to this executor's
/// replies and to the stream's max-deliveries advisories.
async fn connect(options: &NatsOptions, fingerprint: u64) -> Result<Connected, Error> {
    let client = options.connect().await?;
    let js = jetstream::new(client.clone());
    crate::nats::ensure_stream(&js, options).await?;
    let mut id = [0u8; 8];
    crate::sys::proc::random_bytes(&mut id).map_err(|e| Error::Remote {
        what: "name the executor",
        reason: e.to_string(),
    })?;
    let executor = format!("{:016x}{fingerprint:016x}", u64::from_le_bytes(id));
    let reply_subject = options.reply_subject(&executor);
    let replies = client
        .subscribe(reply_subject.clone())
        .await
        .map_err(|e| Error::Remote {
            what: "subscribe to replies",
            reason: e.to_string(),
        })?;
    // A task whose last delivery was never acked (its host was lost): the server
    // says so in an advisory naming the task's stream sequence.
    let advisories = client
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
            options.stream()
        ))
        .await
        .map_err(|e| Error::Remote {
            what: "subscribe to delivery advisories",
            reason: e.to_string(),
        })?;
    // The subscriptions are live on the server before the first task can be answered.
    client.flush().await.map_err(|e| Error::Remote {
        what: "subscribe to replies",
        reason: e.to_string(),
    })?;
    Ok(Connected {
        client,
        js,
        replies,
        advisories,
        reply_subject,
    })
}

/// What every task message of this executor carries, and the largest message the
/// server takes.
struct Destination<'a> {
    executor: &'a str,
    reply: &'a str,
    limit: usize,
    /// The task's timeout (its own, else the pool's), which the host applies.
    timeout: Option<std::time::Duration>,
    /// Where a handle's cancel comes to the dispatcher.
    cancels: &'a tokio::sync::mpsc::UnboundedSender<u64>,
}

/// How many times a task is published before the executor gives up on the server.
const MAX_PUBLISH_ATTEMPTS: u32 = 5;

/// A task published and not yet acknowledged by the server: what to publish again.
struct Published {
    headers: HeaderMap,
    /// Shared with the message in flight: publishing again copies nothing.
    body: Bytes,
    attempts: u32,
}

/// A task the server stored: its stream sequence, and whether the server had a
/// message of the same id already (and dropped this one).
struct Stored {
    seq: u64,
    duplicate: bool,
}

/// A publish's outcome: the task id, and where it was stored.
type Ack =
    std::pin::Pin<Box<dyn std::future::Future<Output = (u64, Result<Stored, String>)> + Send>>;

/// Publishes task `id`; resolves when the server has stored it (or failed to).
fn send(js: &jetstream::Context, subject: &str, id: u64, headers: HeaderMap, body: Bytes) -> Ack {
    let (js, subject) = (js.clone(), subject.to_owned());
    Box::pin(async move {
        let acked = match js.publish_with_headers(subject, headers, body).await {
            Ok(ack) => ack
                .await
                .map(|a| Stored {
                    seq: a.sequence,
                    duplicate: a.duplicate,
                })
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        (id, acked)
    })
}

/// The message for `job` under its registered name: its headers and body. A job that
/// cannot be sent is resolved here, with nothing published.
fn prepare(inner: &Inner, to: &Destination<'_>, mut job: Job) -> Option<(Job, HeaderMap, Bytes)> {
    if !job.shared.start_remote(job.id, to.cancels) {
        inner.resolve(job, Err(TaskError::Cancelled));
        return None;
    }
    let raw: &[u8; HEADER_LEN] = job.frame[..HEADER_LEN].try_into().expect("a header");
    let Ok(h) = Header::parse(raw, u64::MAX) else {
        inner.resolve(job, Err(publish_failed("a malformed job".to_owned())));
        return None;
    };
    let Some((name, shape)) = registry::name_of(TaskRef::from_header(h.flags, h.func)) else {
        // `submit` names the function's type before it queues; this is the backstop.
        let type_name = "the task's function".to_owned();
        inner.resolve(
            job,
            Err(TaskError::Remote(RemoteTaskError::NotRegistered {
                type_name,
            })),
        );
        return None;
    };
    if !job.fds.is_empty() {
        inner.resolve(
            job,
            Err(TaskError::Remote(RemoteTaskError::HandlesCannotTravel)),
        );
        return None;
    }
    let mut headers = HeaderMap::new();
    let msg_id = match &job.key {
        // The stream's dedup window keeps one task of a key, whoever sends it.
        Some(key) => format!("key:{key}"),
        None => format!("{}-{}", to.executor, job.id),
    };
    headers.insert(header::MSG_ID, msg_id.as_str());
    headers.insert(header::TASK, name);
    headers.insert(header::SHAPE, shape.as_str());
    headers.insert(header::ID, job.id.to_string().as_str());
    headers.insert(header::REPLY, to.reply);
    if let Some(t) = to.timeout {
        headers.insert(header::TIMEOUT_MS, t.as_millis().to_string().as_str());
    }
    if job.chunk {
        headers.insert(header::ITEMS, job.items.to_string().as_str());
    }
    // The frame's body as the message body: without a copy when the argument has no
    // raw tail. (A remote job keeps no frame: nothing is salvaged from a host.)
    let frame = Bytes::from(std::mem::take(&mut job.frame));
    let body = if job.tail.is_empty() {
        frame.slice(HEADER_LEN..)
    } else {
        let mut b = Vec::with_capacity(frame.len() - HEADER_LEN + job.tail.len());
        b.extend_from_slice(&frame[HEADER_LEN..]);
        b.extend_from_slice(&std::mem::take(&mut job.tail));
        Bytes::from(b)
    };
    // The headers are small; the body alone must leave them room.
    if body.len() + 1024 > to.limit {
        let (len, limit) = (body.len(), to.limit);
        inner.resolve(
            job,
            Err(TaskError::Remote(RemoteTaskError::PayloadTooLarge {
                len,
                limit,
            })),
        );
        return None;
    }
    Some((job, headers, body))
}

/// A reply's task id and what it says; `None` for a message that is not a reply.
fn read_reply(msg: &async_nats::Message) -> Option<(u64, Result<Payload, TaskError>)> {
    let id: u64 = msg
        .headers
        .as_ref()?
        .get(header::ID)?
        .as_str()
        .parse()
        .ok()?;
    let result = match postcard::from_bytes::<Reply>(&msg.payload) {
        Ok(Reply::Done { body, ok, panicked }) => Ok(Payload {
            body,
            fds: Vec::new(),
            outcomes: crate::wire::Outcomes { ok, panicked },
        }),
        Ok(Reply::Failed(failed)) => Err(failed.into_task_error()),
        Err(e) => Err(TaskError::Protocol(
            crate::error::ProtocolError::Malformed {
                reason: format!("a reply from a host: {e}"),
            },
        )),
    };
    Some((id, result))
}

fn publish_failed(reason: String) -> TaskError {
    TaskError::Remote(RemoteTaskError::Publish { reason })
}

/// The tasks published and not yet answered, by task id, with the idempotency keys
/// among them.
#[derive(Default)]
struct InFlight {
    flights: HashMap<u64, Flight>,
    /// Key → the task id it was published under.
    keyed: HashMap<Arc<str>, u64>,
}

/// A task published once: the job it was published for, and later submits of the same
/// key from this executor, which get its result too.
struct Flight {
    job: Job,
    followers: Vec<Job>,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }

    fn contains(&self, id: u64) -> bool {
        self.flights.contains_key(&id)
    }

    fn key_of(&self, id: u64) -> Option<&Arc<str>> {
        self.flights.get(&id)?.job.key.as_ref()
    }

    /// Adds a published job.
    fn insert(&mut self, job: Job) {
        if let Some(key) = &job.key {
            self.keyed.insert(key.clone(), job.id);
        }
        let followers = Vec::new();
        self.flights.insert(job.id, Flight { job, followers });
    }

    /// `Some(job)` to publish it; `None` if a task of its key is in flight, which it
    /// now follows.
    fn follow(&mut self, job: Job) -> Option<Job> {
        let Some(id) = job.key.as_ref().and_then(|k| self.keyed.get(k)) else {
            return Some(job);
        };
        match self.flights.get_mut(id) {
            Some(flight) => {
                flight.followers.push(job);
                None
            }
            None => Some(job),
        }
    }

    /// Resolves task `id`, and those that follow it, with `result`.
    fn finish(&mut self, inner: &Inner, id: u64, result: Result<Payload, TaskError>) {
        let Some(flight) = self.flights.remove(&id) else {
            return;
        };
        if let Some(key) = &flight.job.key {
            if self.keyed.get(key) == Some(&id) {
                self.keyed.remove(key);
            }
        }
        for job in flight.followers {
            inner.resolve(job, copy(&result));
        }
        inner.resolve(flight.job, result);
    }

    /// Resolves job `id` `Cancelled`. Returns the task id to stop on the hosts, unless
    /// other jobs of the same key still wait for its run.
    fn cancel(&mut self, inner: &Inner, id: u64) -> Option<u64> {
        // A job is found under its own id, unless it follows another of its key.
        let wire = match self.flights.get(&id) {
            Some(f) if f.job.id == id => id,
            _ => *self.flights.iter().find_map(|(wire, f)| {
                (f.job.id == id || f.followers.iter().any(|j| j.id == id)).then_some(wire)
            })?,
        };
        let flight = self.flights.get_mut(&wire)?;
        if let Some(i) = flight.followers.iter().position(|j| j.id == id) {
            inner.resolve(flight.followers.swap_remove(i), Err(TaskError::Cancelled));
            return None;
        }
        match flight.followers.pop() {
            Some(next) => {
                let cancelled = std::mem::replace(&mut flight.job, next);
                inner.resolve(cancelled, Err(TaskError::Cancelled));
                None
            }
            None => {
                self.finish(inner, wire, Err(TaskError::Cancelled));
                Some(wire)
            }
        }
    }

    /// Resolves every job: nobody will read their replies.
    fn abandon(&mut self, inner: &Inner) {
        for (_, flight) in self.flights.drain() {
            for job in flight.followers {
                inner.resolve(job, Err(inner.stopped()));
            }
            inner.resolve(flight.job, Err(inner.stopped()));
        }
        self.keyed.clear();
    }
}

/// A copy of a remote result, for a job that follows another (a remote payload has no
/// descriptors).
fn copy(result: &Result<Payload, TaskError>) -> Result<Payload, TaskError> {
    match result {
        Ok(p) => Ok(Payload {
            body: p.body.clone(),
            fds: Vec::new(),
            outcomes: p.outcomes,
        }),
        Err(e) => Err(e.clone()),
    }
}

/// Counts the dispatcher out when it ends, as a local driver does.
struct Alive(Arc<Inner>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.send_modify(|n| *n = n.saturating_sub(1));
    }
}
