//! The same executor on a fleet of hosts, through NATS JetStream (the `nats`
//! feature).
//!
//! Three things to write:
//! 1. Once per function that may run remotely, register it under a stable name:
//!    `procpool::remote_task!("thumbs.make" => make_thumbnail);`. A message from the
//!    network names a task, never a code address; a host runs only what its own build
//!    registered.
//! 2. On each worker host, the same binary serves the pool:
//!    `procpool::remote::serve(NatsOptions::new(url).pool("thumbs"), 4).await`. Each
//!    host runs an ordinary local pool of 4 processes, so a crashing task still costs
//!    one child process.
//! 3. The submitter builds the executor with the remote back end:
//!    `ProcessPoolExecutor::builder().nats(NatsOptions::new(url).pool("thumbs")).build()`.
//!    `submit`, `run`, `map` and the rest then work as on a local pool.
//!
//! # Semantics
//! A task is published to a work-queue stream and taken by one host of the same build
//! (the build's fingerprint is in the subject). The host publishes the result to the
//! submitter, then acks. A host that dies before it acks has its task delivered again
//! after the ack wait: a remote task runs *at least once*, where a local one runs at
//! most once. Handles (pipe ends, queues, locks, shared memory) cannot leave a machine:
//! a task whose argument holds one fails with
//! [`RemoteTaskError::HandlesCannotTravel`](crate::RemoteTaskError::HandlesCannotTravel),
//! with nothing sent.
//!
//! Whoever can publish on the pool's subjects can run the registered tasks of your
//! build, and only those.
//!
//! A task whose worker dies on a host is handed back for another delivery, up to the
//! consumer's MaxDeliver; after the last it fails with
//! [`RemoteTaskError::RetriesExhausted`](crate::RemoteTaskError::RetriesExhausted).
//!
//! `TaskHandle::cancel` and the pool's task timeout reach the host that runs the
//! task, which kills its worker. A cancel made while the task is still in the stream
//! resolves the handle, but a host may still run the task later (its result is
//! dropped).
//!
//! # Connecting
//! [`NatsOptions`] passes credentials (user and password, a token, a `.creds` file)
//! and TLS (required, trusted roots, a client certificate) to
//! `async_nats::ConnectOptions`, and [`NatsOptions::configure`] reaches anything else
//! there; the crate is re-exported as [`async_nats`] so its types can be named.
//!
//! # Large arguments
//! A task whose message would pass the server's `max_payload` (1 MiB by default) fails
//! with [`RemoteTaskError::PayloadTooLarge`](crate::RemoteTaskError::PayloadTooLarge)
//! before anything is published. The Object Store is not used: put large inputs where
//! the hosts can read them, and send their names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::AckKind;
use async_nats::HeaderMap;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::error::{Error, TaskError};
use crate::nats::registry::{self, Shape};
use crate::nats::{header, Failed, Reply};
use crate::pool::ProcessPoolExecutor;

pub use crate::nats::registry::RegisteredTask;
pub use crate::nats::NatsOptions;

#[doc(hidden)]
pub use inventory as __inventory;

/// The NATS client this back end is built on, for naming its types in
/// [`NatsOptions::configure`].
pub use async_nats;

/// Registers a function to run on remote hosts under a stable name: write it once per
/// function, at module level, in the binary that both submits and serves.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// procpool::remote_task!("examples.square" => square);
/// ```
#[macro_export]
macro_rules! remote_task {
    ($name:literal => $f:path) => {
        $crate::remote::__inventory::submit! {
            $crate::remote::RegisteredTask::new($name, &$f)
        }
    };
}

/// This build's fingerprint: the last part of the subject its tasks are published
/// on (`procpool.<pool>.tasks.<fingerprint as 16 hex digits>`), so that hosts of one
/// build never take another's tasks.
pub fn build_fingerprint() -> u64 {
    crate::task::fingerprint()
}

/// Serves the pool named in `options` from this process, with a local pool of
/// `workers` processes, until an error ends it. Dropping the future stops serving:
/// the local workers are killed, and the tasks this host held are delivered again
/// elsewhere after the ack wait.
///
/// The host takes no more tasks than it has free workers, sends progress acks every
/// third of the ack wait while a task runs, publishes each result before it acks, and
/// terminates a task whose name its build does not know (the submitter is told).
///
/// # Errors
/// [`Error::InvalidConfig`] for bad options; [`Error::Remote`] if the server cannot be
/// reached or the stream or consumer cannot be made; what building the local pool
/// returns.
///
/// # Cancel safety
/// Cancel safe, as described above: nothing is lost, some tasks run again elsewhere.
pub async fn serve(options: NatsOptions, workers: usize) -> Result<(), Error> {
    options.check()?;
    let pool = Arc::new(ProcessPoolExecutor::builder().workers(workers).build()?);
    pool.ready().await?;
    let fingerprint = crate::task::fingerprint();
    let remote = |what: &'static str| {
        move |e: &dyn std::fmt::Display| Error::Remote {
            what,
            reason: e.to_string(),
        }
    };
    let client = options.connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    let stream = crate::nats::ensure_stream(&js, &options).await?;
    let durable = options.consumer(fingerprint);
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: options.task_subject(fingerprint),
                ack_policy: AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                max_deliver: options.max_deliver,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| remote("create the hosts' consumer")(&e))?;
    // The consumer's own settings rule (the first host to create it set them).
    let max_deliver = match consumer.cached_info().config.max_deliver {
        n if n > 0 => n,
        _ => i64::MAX,
    };
    let ack_wait = consumer.cached_info().config.ack_wait;
    let host = host_name();
    let running = Running::default();
    let mut control = client
        .subscribe(options.control_subject(fingerprint))
        .await
        .map_err(|e| remote("subscribe to cancels")(&e))?;
    client
        .flush()
        .await
        .map_err(|e| remote("subscribe to cancels")(&e))?;
    let cancels = running.clone();
    let _listener = AbortOnDrop(tokio::spawn(async move {
        while let Some(m) = control.next().await {
            let Some(h) = m.headers.as_ref() else {
                continue;
            };
            let (Some(reply), Some(id)) = (h.get(header::REPLY), h.get(header::ID)) else {
                continue;
            };
            let key = (reply.as_str().to_owned(), id.as_str().to_owned());
            if let Some(cancel) = cancels.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
                cancel.notify_one();
            }
        }
    }));
    let free = Arc::new(Semaphore::new(workers.max(1)));
    loop {
        // At least one worker free, then as many more as are free now.
        let mut permits = vec![free
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| remote("count free workers")(&e))?];
        while let Ok(p) = free.clone().try_acquire_owned() {
            permits.push(p);
        }
        let mut batch = consumer
            .fetch()
            .max_messages(permits.len())
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(|e| remote("fetch tasks")(&e))?;
        while let Some(msg) = batch.next().await {
            let Ok(msg) = msg else { continue };
            let Some(permit) = permits.pop() else { break };
            let (pool, client, host) = (pool.clone(), client.clone(), host.clone());
            let running = running.clone();
            let limits = Limits {
                progress_every: ack_wait / 3,
                max_deliver,
            };
            tokio::spawn(async move {
                run_one(&pool, &client, &host, &running, msg, limits, permit).await;
            });
        }
    }
}

/// How a host treats one task's delivery.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// How often a running task's delivery is kept alive.
    progress_every: Duration,
    /// The stream's last delivery: a crash then fails the task instead of retrying.
    max_deliver: i64,
}

/// Runs one task message on the local pool and answers it: the reply first, then the
/// ack. A task that killed its worker is handed back for another delivery until the
/// last one; a name this build does not know is terminated.
async fn run_one(
    pool: &ProcessPoolExecutor,
    client: &async_nats::Client,
    host: &str,
    running: &Running,
    msg: async_nats::jetstream::Message,
    limits: Limits,
    worker: tokio::sync::OwnedSemaphorePermit,
) {
    let headers = msg.headers.clone().unwrap_or_default();
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let (Some(name), Some(id), Some(reply_to)) =
        (get(header::TASK), get(header::ID), get(header::REPLY))
    else {
        // Not a task of ours: nobody to answer.
        let _ = msg.ack_with(AckKind::Term).await;
        return;
    };
    let shape = get(header::SHAPE)
        .as_deref()
        .and_then(Shape::parse)
        .unwrap_or(Shape::Call);
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    let (reply, done) = match registry::lookup(&name, shape) {
        None => {
            let failed = Failed::UnknownTask {
                name,
                host: host.to_owned(),
            };
            (Reply::Failed(failed), AckKind::Term)
        }
        Some(func) => {
            let cancel = Arc::new(tokio::sync::Notify::new());
            let _listed = Listed::new(running, (reply_to.clone(), id.clone()), cancel.clone());
            let timeout = get(header::TIMEOUT_MS)
                .and_then(|t| t.parse().ok())
                .map(Duration::from_millis);
            let deadline = async {
                match timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(deadline);
            let chunk = (shape == Shape::Batch)
                .then(|| get(header::ITEMS).and_then(|n| n.parse().ok()).unwrap_or(1));
            let mut task = pool.submit_raw(func, &msg.payload, chunk);
            // The first progress ack is one period away. (`interval`'s immediate first
            // tick would be awaited here: tokio completes a timer due now only at its
            // next 1 ms tick, which cost every task a millisecond.)
            let mut progress = tokio::time::interval_at(
                tokio::time::Instant::now() + limits.progress_every,
                limits.progress_every,
            );
            // Why this host stopped the task itself, if it did.
            let mut stopped: Option<Failed> = None;
            let result = loop {
                tokio::select! {
                    r = &mut task => break r,
                    _ = progress.tick() => {
                        let _ = msg.ack_with(AckKind::Progress).await;
                    }
                    _ = cancel.notified(), if stopped.is_none() => {
                        task.cancel();
                        stopped = Some(Failed::Cancelled);
                    }
                    _ = &mut deadline, if stopped.is_none() => {
                        task.cancel();
                        let after_ms = timeout.map_or(0, |t| t.as_millis() as u64);
                        stopped = Some(Failed::TimedOut { after_ms });
                    }
                }
            };
            match (stopped, result) {
                (Some(why), Err(_)) => (Reply::Failed(why), AckKind::Ack),
                (_, result) => match answer(result, delivered, limits) {
                    Some(answered) => answered,
                    None => {
                        // Handed back for another delivery: no reply yet.
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                        return;
                    }
                },
            }
        }
    };
    // The local worker is free again: the next fetch overlaps this reply.
    drop(worker);
    publish_reply(client, &reply_to, &id, &reply).await;
    let _ = msg.ack_with(done).await;
}

/// The reply to a task the local pool ran to its end, and how to finish its delivery;
/// `None` to hand it back for another delivery (its worker died, and deliveries are
/// left).
fn answer(
    result: Result<crate::wire::Payload, TaskError>,
    delivered: i64,
    limits: Limits,
) -> Option<(Reply, AckKind)> {
    Some(match result {
        Ok(payload) if payload.fds.is_empty() => (
            Reply::Done {
                body: payload.body,
                ok: payload.outcomes.ok,
                panicked: payload.outcomes.panicked,
            },
            AckKind::Ack,
        ),
        Ok(_) => {
            let why = "the result holds handles, which cannot leave the host";
            (Reply::Failed(Failed::Other(why.to_owned())), AckKind::Ack)
        }
        // The worker died under it: another delivery (a fresh worker, maybe another
        // host) may finish it, until the last delivery.
        Err(TaskError::WorkerDied { .. }) if delivered < limits.max_deliver => return None,
        Err(TaskError::WorkerDied { exit }) => {
            let failed = Failed::RetriesExhausted {
                attempts: delivered.max(1) as u64,
                last: format!("its worker died ({exit})"),
            };
            (Reply::Failed(failed), AckKind::Term)
        }
        // A payload this build cannot decode will not decode on another delivery.
        Err(e @ TaskError::Decode(_)) => (Reply::Failed(Failed::from_task_error(e)), AckKind::Term),
        Err(e) => (Reply::Failed(Failed::from_task_error(e)), AckKind::Ack),
    })
}

/// Sends `reply` for task `id` to the submitter at `reply_to`.
async fn publish_reply(client: &async_nats::Client, reply_to: &str, id: &str, reply: &Reply) {
    let mut out = HeaderMap::new();
    out.insert(header::ID, id);
    if let Ok(body) = postcard::to_allocvec(reply) {
        // Queued on the client's connection, which writes it at once; no flush (a
        // round trip to the server) on the task's path.
        let _ = client
            .publish_with_headers(reply_to.to_owned(), out, body.into())
            .await;
    }
}

/// The tasks this host runs now, by (reply subject, id): how a cancel finds one.
type Running = Arc<std::sync::Mutex<HashMap<(String, String), Arc<tokio::sync::Notify>>>>;

/// A task listed in [`Running`] while it runs.
struct Listed<'a> {
    running: &'a Running,
    key: (String, String),
}

impl<'a> Listed<'a> {
    fn new(running: &'a Running, key: (String, String), cancel: Arc<tokio::sync::Notify>) -> Self {
        running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), cancel);
        Listed { running, key }
    }
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Aborts a spawned task when dropped (the cancel listener ends with `serve`).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This host's name in errors: the kernel's host name and this process's pid.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", name.trim(), std::process::id())
}
