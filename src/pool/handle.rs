//! [`TaskHandle`]: the future of one submitted task.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, Notify};

use super::await_poll::{AwaitPoll, SpinHint};
use crate::error::{CodecError, TaskError};
use crate::pool::stats::Counters;
use crate::wire::{handles, value, Payload};
use crate::worker::progress::Progress;

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const CANCELLED: u8 = 3;

/// What a handle and the driver running its task share.
#[derive(Debug)]
pub(crate) struct TaskShared {
    state: AtomicU8,
    pid: AtomicU32,
    /// Set by [`TaskHandle::cancel`] once the task was dispatched.
    cancel_requested: AtomicBool,
    /// Where it was sent last (a task handed back by one driver may be sent again by
    /// another).
    sent: Mutex<Option<Sent>>,
    /// Woken when the task leaves the queue (dispatched, finished or cancelled).
    moved: Notify,
    /// A `map` chunk whose worker died under it: its frame and how many of its items
    /// the worker had begun, for the map to run the others again.
    salvage: Mutex<Option<Salvage>>,
    /// A task published to remote hosts: its id and where to ask for its cancellation.
    #[cfg(feature = "nats")]
    remote: Mutex<Option<(u64, tokio::sync::mpsc::UnboundedSender<u64>)>>,
}

/// What is left of a `map` chunk whose worker died under it.
#[derive(Debug)]
pub(crate) struct Salvage {
    /// The chunk's `Run` frame, header and items.
    pub(crate) frame: Vec<u8>,
    /// The descriptors of handles in its items, numbered within the chunk: sent again
    /// whole with any part of it (unclaimed ones are closed on arrival).
    pub(crate) fds: Vec<OwnedFd>,
    /// Items the worker had begun: the last of them was running.
    pub(crate) begun: u64,
    /// Counts the items left to run as cancelled if nobody sends them again.
    pub(crate) unclaimed: Unclaimed,
}

/// Items of a salvaged chunk that the statistics have not counted as ended: if the
/// map is dropped before it sends them again, they were cancelled.
#[derive(Debug)]
pub(crate) struct Unclaimed {
    counters: Option<Arc<Counters>>,
    items: u64,
}

impl Unclaimed {
    /// The map sends them again: the new chunk counts them when it ends.
    pub(crate) fn claim(&mut self) {
        self.counters = None;
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(counters) = &self.counters {
            counters.cancelled.fetch_add(self.items, Ordering::Relaxed);
        }
    }
}

impl TaskShared {
    fn new(state: u8) -> Arc<Self> {
        Arc::new(TaskShared {
            state: AtomicU8::new(state),
            pid: AtomicU32::new(0),
            cancel_requested: AtomicBool::new(false),
            sent: Mutex::new(None),
            moved: Notify::new(),
            salvage: Mutex::new(None),
            #[cfg(feature = "nats")]
            remote: Mutex::new(None),
        })
    }

    /// Claims a task for the worker `pid` of the driver woken by `signal`, as task
    /// `seq` on that worker's `page`; false if it was cancelled first. A task sent
    /// again (its first worker died before starting it, or its driver handed it back)
    /// is claimed again, by whichever driver takes it.
    pub(crate) fn start(
        &self,
        pid: u32,
        signal: &Arc<Notify>,
        page: &Arc<Progress>,
        seq: u64,
    ) -> bool {
        if self.cancel_requested() {
            return false;
        }
        // Before the state says RUNNING: whoever sees RUNNING finds it.
        *self.sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(Sent {
            page: page.clone(),
            seq,
            driver: signal.clone(),
        });
        self.pid.store(pid, Ordering::Release);
        let started =
            match self
                .state
                .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => true,
                Err(state) => state == RUNNING,
            };
        if !started {
            self.pid.store(0, Ordering::Release);
        }
        self.moved.notify_waiters();
        started && !self.cancel_requested()
    }

    /// Claims a task for a remote host; false if it was cancelled first. A later
    /// cancel sends the task's `id` to `cancels`, the remote dispatcher's.
    #[cfg(feature = "nats")]
    pub(crate) fn start_remote(
        &self,
        id: u64,
        cancels: &tokio::sync::mpsc::UnboundedSender<u64>,
    ) -> bool {
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, cancels.clone()));
        let started = self
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.moved.notify_waiters();
        started
    }

    pub(crate) fn finish(&self) {
        self.state.store(DONE, Ordering::Release);
        self.moved.notify_waiters();
    }

    /// Whether [`TaskHandle::cancel`] was called after the task was dispatched.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::Acquire)
    }
}

/// The worker a task was sent to, as its driver knows it.
#[derive(Debug)]
struct Sent {
    /// That worker's progress page: a cancel marks the task skipped at once, so a task
    /// not begun never begins.
    page: Arc<Progress>,
    /// The task's number on the page.
    seq: u64,
    /// The driver's wake-up for cancellations (one per driver, so that a driver with
    /// several tasks in flight waits on one thing).
    driver: Arc<Notify>,
}

/// The parent's end of a queued task: its encoded frame and where the reply goes.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) frame: Vec<u8>,
    /// The rest of the body, sent from where it is (a raw byte argument).
    pub(crate) tail: Vec<u8>,
    /// Descriptors of handles in the argument, sent with the frame.
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) id: u64,
    /// A `map` chunk (see [`Salvage`]).
    pub(crate) chunk: bool,
    /// Items it carries: 1 for a task, the items of a `map` chunk.
    pub(crate) items: u32,
    /// Items whose end the statistics count elsewhere: those of a salvaged chunk that
    /// the map sends again.
    pub(crate) handed_on: u32,
    /// Part of a `map` chunk sent again: its items were counted when first submitted.
    pub(crate) resubmitted: bool,
    /// When it was queued, for the latency summary.
    pub(crate) queued_at: Instant,
    /// Its own timeout, in place of the pool's.
    pub(crate) timeout: Option<std::time::Duration>,
    /// When the task is told it should stop (see `TaskBuilder::soft_timeout`).
    pub(crate) soft_timeout: Option<std::time::Duration>,
    /// Its idempotency key on a remote pool (see `TaskBuilder::idempotency_key`).
    #[cfg(feature = "nats")]
    pub(crate) key: Option<Arc<str>>,
    /// Its span, in which the driver re-emits what it logs in the worker.
    pub(crate) span: super::span::TaskSpan,
    pub(crate) shared: Arc<TaskShared>,
    pub(crate) reply: oneshot::Sender<Result<Payload, TaskError>>,
}

impl Job {
    pub(crate) fn new(
        id: u64,
        frame: Vec<u8>,
        tail: Vec<u8>,
        fds: Vec<OwnedFd>,
        chunk: Option<u32>,
    ) -> (Job, RawTask) {
        let shared = TaskShared::new(QUEUED);
        let (reply, rx) = oneshot::channel();
        (
            Job {
                frame,
                tail,
                fds,
                id,
                chunk: chunk.is_some(),
                items: chunk.unwrap_or(1),
                handed_on: 0,
                resubmitted: false,
                queued_at: Instant::now(),
                timeout: None,
                soft_timeout: None,
                #[cfg(feature = "nats")]
                key: None,
                span: super::span::TaskSpan::default(),
                shared: shared.clone(),
                reply,
            },
            RawTask {
                rx,
                shared,
                poll: AwaitPoll::never(),
            },
        )
    }

    /// Keeps the frame and descriptors of a `map` chunk whose worker died after
    /// beginning `begun` of its items, for the map to run the others again. Only the
    /// item that was running ends here (`WorkerDied`); the statistics count the others
    /// when they end again, or as cancelled if the map never sends them.
    pub(crate) fn salvage(&mut self, begun: u64, counters: &Arc<Counters>) {
        if self.chunk {
            let frame = std::mem::take(&mut self.frame);
            let fds = std::mem::take(&mut self.fds);
            self.handed_on = self.items - u32::from(begun > 0);
            let unclaimed = Unclaimed {
                counters: Some(counters.clone()),
                items: u64::from(self.handed_on),
            };
            *self
                .shared
                .salvage
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Salvage {
                frame,
                fds,
                begun,
                unclaimed,
            });
        }
    }

    /// Resolves the task with `result`.
    pub(crate) fn resolve(self, result: Result<Payload, TaskError>) {
        self.shared.finish();
        let _ = self.reply.send(result);
    }

    /// Whether nobody waits for the result any more (the handle was dropped).
    pub(crate) fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// A task's result as bytes, before decoding into `R`.
#[derive(Debug)]
pub(crate) struct RawTask {
    rx: oneshot::Receiver<Result<Payload, TaskError>>,
    shared: Arc<TaskShared>,
    /// Whether to poll again at once rather than sleep (see [`AwaitPoll`]).
    poll: AwaitPoll,
}

impl RawTask {
    /// A task that failed before it was queued.
    pub(crate) fn failed(error: TaskError) -> RawTask {
        let (reply, rx) = oneshot::channel();
        let _ = reply.send(Err(error));
        RawTask {
            rx,
            shared: TaskShared::new(DONE),
            poll: AwaitPoll::never(),
        }
    }

    /// Lets the caller poll for the result before sleeping, as `hint` allows.
    pub(crate) fn poll_as(&mut self, hint: &SpinHint) {
        self.poll = AwaitPoll::new(hint);
    }

    /// What is left of a `map` chunk whose worker died under it (see [`Salvage`]).
    pub(crate) fn take_salvage(&self) -> Option<Salvage> {
        self.shared
            .salvage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(crate) fn cancel(&self) {
        match self.shared.state.compare_exchange(
            QUEUED,
            CANCELLED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => self.shared.moved.notify_waiters(),
            Err(RUNNING) => {
                self.shared.cancel_requested.store(true, Ordering::Release);
                let sent = self.shared.sent.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(sent) = &*sent {
                    // Not begun: now it never will be. Begun: the driver kills it.
                    sent.page.skip(sent.seq);
                    sent.driver.notify_one();
                }
                #[cfg(feature = "nats")]
                if let Some((id, cancels)) =
                    &*self.shared.remote.lock().unwrap_or_else(|p| p.into_inner())
                {
                    // Published: the remote dispatcher resolves it and tells the hosts.
                    let _ = cancels.send(*id);
                }
            }
            Err(_) => {}
        }
    }
}

impl Future for RawTask {
    type Output = Result<Payload, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.shared.state.load(Ordering::Acquire) == CANCELLED {
            return Poll::Ready(Err(TaskError::Cancelled));
        }
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The job was dropped unanswered: the pool went away with it queued.
            Poll::Ready(Err(_)) => Poll::Ready(Err(TaskError::Cancelled)),
            Poll::Pending => {
                if self.poll.again() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

/// The future of a task submitted with
/// [`ProcessPoolExecutor::submit`](crate::ProcessPoolExecutor::submit) (or one of its
/// forms): resolves to the function's return value, or a [`TaskError`] saying why there
/// is none. A task given a name ([`TaskBuilder::name`](crate::TaskBuilder::name)) fails
/// with [`TaskError::Named`].
///
/// Python's `concurrent.futures.Future`, awaited.
///
/// # Dropping
/// Dropping the handle of a task that is still queued means the task is never run.
/// Dropping the handle of a running task does *not* stop it: the worker finishes it and
/// the result is discarded. Use [`cancel`](Self::cancel) to stop a running task.
///
/// # Polling before sleeping
/// Awaited on a thread that runs no tokio tasks (the thread of a multi-thread
/// runtime's `block_on`, say), a handle whose pool has lately answered single tasks
/// within microseconds asks to be polled again at once, yielding the CPU between
/// looks, for at most 100 µs, before it sleeps: waking that thread would cost more
/// than the round trip. It stops at once when a yield lets another thread run. On a
/// runtime's own threads it never does: the driver that answers it runs there.
/// ([`ProcessPoolExecutor::run`](crate::ProcessPoolExecutor::run) goes further: its
/// caller reads the reply from the worker's shared memory itself.)
///
/// # Cancel safety
/// Awaiting is cancel safe: a `select!` that drops the `&mut handle` future loses
/// nothing, and the handle can be awaited again.
///
/// # Panics
/// Polling the handle again after it returned `Ready` panics.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = procpool::ProcessPoolExecutor::builder().workers(1).build()?;
/// let handle = pool.submit(|s: String| s.len(), "hello".to_string()).await?;
/// assert_eq!(handle.await?, 5);
/// # pool.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[must_use = "a TaskHandle does nothing unless awaited; dropping it while queued drops the task"]
pub struct TaskHandle<R> {
    raw: RawTask,
    returned: bool,
    name: Option<Arc<str>>,
    _result: PhantomData<fn() -> R>,
}

impl<R> TaskHandle<R> {
    pub(crate) fn new(raw: RawTask, name: Option<Arc<str>>) -> Self {
        TaskHandle {
            raw,
            returned: false,
            name,
            _result: PhantomData,
        }
    }

    /// The task's name, if it was given one
    /// ([`TaskBuilder::name`](crate::TaskBuilder::name)).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Cancels the task. A queued task is dropped and never runs. A task already sent
    /// to a worker is skipped if the worker has not begun it (a worker may be sent a
    /// few short tasks ahead); if it has, the worker is killed (`SIGKILL`) and
    /// replaced, and tasks sent to it behind this one go to the next worker. Either
    /// way the handle then resolves to [`TaskError::Cancelled`]. A task that already
    /// finished keeps its result.
    pub fn cancel(&self) {
        self.raw.cancel();
    }

    /// The pid of the worker running (or that ran) the task; `None` while it is queued.
    pub fn worker_pid(&self) -> Option<u32> {
        match self.raw.shared.pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Whether the task was sent to a worker and has not finished (Python's
    /// `Future.running()`, which is also true for tasks handed to a worker's queue).
    pub fn is_running(&self) -> bool {
        !self.returned && self.raw.shared.state.load(Ordering::Acquire) == RUNNING
    }

    /// Waits until the task has left the queue: returns the pid of the worker it was
    /// sent to, or `None` if it finished or was cancelled without running.
    ///
    /// # Cancel safety
    /// Cancel safe; it only observes.
    pub async fn started(&self) -> Option<u32> {
        let shared = &self.raw.shared;
        loop {
            let moved = shared.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            match shared.state.load(Ordering::Acquire) {
                QUEUED => moved.await,
                RUNNING => return self.worker_pid(),
                _ => return self.worker_pid(),
            }
        }
    }

    /// Whether the task has finished (with a value or an error) or was cancelled.
    pub fn is_finished(&self) -> bool {
        self.returned
            || matches!(
                self.raw.shared.state.load(Ordering::Acquire),
                DONE | CANCELLED
            )
    }
}

impl<R: DeserializeOwned + 'static> Future for TaskHandle<R> {
    type Output = Result<R, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.returned, "TaskHandle polled after it returned Ready");
        let result = match Pin::new(&mut self.raw).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        self.returned = true;
        let result = result.and_then(decode::<R>);
        Poll::Ready(result.map_err(|e| TaskError::named(e, self.name.clone())))
    }
}

/// Decodes a result in the parent, handles in it taking the descriptors that came
/// with it.
pub(crate) fn decode<R: DeserializeOwned + 'static>(payload: Payload) -> Result<R, TaskError> {
    let Payload { body, fds, .. } = payload;
    // A byte vector is the body itself (see `wire::value`).
    let body = match value::from_raw::<R>(body) {
        Ok(r) => return Ok(r),
        Err(body) => body,
    };
    handles::supplying(fds, || postcard::from_bytes(&body))
        .map_err(|e| TaskError::Decode(CodecError::of::<R>(handles::reason(&e))))
}

impl<R> fmt::Debug for TaskHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("name", &self.name)
            .field("worker_pid", &self.worker_pid())
            .field("is_finished", &self.is_finished())
            .finish()
    }
}
