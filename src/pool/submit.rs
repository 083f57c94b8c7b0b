//! How a task gets from the caller into the queue: encoded, checked against the frame
//! limit, numbered, then queued at once ([`try_queue`](ProcessPoolExecutor::try_queue))
//! or once there is room ([`Submit`]).
//!
//! Encoding happens in the caller's call, before any waiting, so an argument that does
//! not encode fails at once and a waiting submit holds bytes, not the argument.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;

use super::handle::{Job, RawTask};
use super::span::{TaskName, TaskSpan};
use super::{ProcessPoolExecutor, TaskHandle};
use crate::error::{CodecError, TaskError};
use crate::task::{self, Trampoline};
use crate::wire::{self, handles, value, Kind, TaskRef, HEADER_LEN};

/// A task encoded and numbered, not yet queued: its job, and the parent's end.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) job: Job,
    pub(crate) raw: RawTask,
}

impl Prepared {
    /// Gives the task a timeout of its own, in place of the pool's.
    pub(crate) fn set_timeout(&mut self, timeout: Option<Duration>) {
        if timeout.is_some() {
            self.job.timeout = timeout;
        }
    }
}

/// Why a task was not queued, and the task itself if it may be queued later.
pub(crate) enum NotQueued {
    /// The queue is full: wait for room and try again. Boxed: the rare case should
    /// not make every `Result` of a queuing as large as a task.
    Full(Box<Prepared>),
    /// It never will be (the pool is shut down or cannot start workers).
    Refused(TaskError),
}

impl ProcessPoolExecutor {
    /// Encodes `arg` for `trampoline` into a task ready to queue.
    pub(super) fn prepare_value<A: Serialize + 'static>(
        &self,
        trampoline: Trampoline,
        arg: A,
        name: TaskName,
    ) -> Result<Prepared, TaskError> {
        self.refusal()?;
        let func = task::local_ref(trampoline);
        let arg = match value::into_raw(arg) {
            Ok(bytes) => {
                // A byte vector goes as the frame's tail, never copied (`wire::value`).
                let mut frame = Vec::with_capacity(HEADER_LEN);
                wire::begin(&mut frame);
                return self.prepare(func, frame, bytes, Vec::new(), None, name);
            }
            Err(arg) => arg,
        };
        // Room for the header and a small argument: one allocation for most tasks.
        let mut frame = Vec::with_capacity(HEADER_LEN + 32);
        let mut fds = Vec::new();
        wire::begin(&mut frame);
        handles::collect_into(&mut fds, || wire::encode_into(&arg, &mut frame))
            .map_err(|e| TaskError::Encode(CodecError::of::<A>(e)))?;
        self.prepare(func, frame, Vec::new(), fds, None, name)
    }

    /// The error to return instead of queuing a task, if the pool takes none.
    pub(super) fn refusal(&self) -> Result<(), TaskError> {
        if let Some(e) = self.shared.inner.fatal.get() {
            return Err(TaskError::WorkerStart(e.clone()));
        }
        if self.is_shutdown() {
            return Err(TaskError::Shutdown);
        }
        Ok(())
    }

    /// A `Run` frame for `func`, whose body is in place after the header and goes on
    /// in `tail`, checked against the frame limit and numbered: a `map` chunk of
    /// `chunk` items if `Some`. `name` names its span.
    pub(super) fn prepare(
        &self,
        func: TaskRef,
        mut frame: Vec<u8>,
        tail: Vec<u8>,
        fds: Vec<OwnedFd>,
        chunk: Option<u32>,
        name: TaskName,
    ) -> Result<Prepared, TaskError> {
        let max = self.shared.inner.config.max_frame;
        let body = (frame.len() - HEADER_LEN + tail.len()) as u64;
        if body > max {
            return Err(TaskError::Encode(CodecError::new(
                "task argument",
                wire::over_limit(body, max),
            )));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (flags, func) = func.to_header();
        wire::finish(&mut frame, Kind::Run, flags, id, func);
        // The driver writes jobs as they are (see `driver::Driver::write`).
        wire::set_extent(&mut frame, tail.len(), fds.len());
        let (mut job, mut raw) = Job::new(id, frame, tail, fds, chunk);
        raw.poll_as(&self.shared.inner.spin_hint);
        job.span = TaskSpan::new(name);
        Ok(Prepared { job, raw })
    }

    /// Queues a prepared task if there is room now.
    pub(super) fn try_queue(&self, task: Prepared) -> Result<RawTask, NotQueued> {
        let inner = &self.shared.inner;
        if !inner.jobs.reserve(inner.config.queue_capacity) {
            // Shut down while it waited: say so rather than "full".
            self.refusal().map_err(NotQueued::Refused)?;
            return Err(NotQueued::Full(Box::new(task)));
        }
        self.send_reserved(task).map_err(NotQueued::Refused)
    }

    /// Queues a prepared task for which a place is reserved (by
    /// [`JobQueue::reserve`](super::jobs::JobQueue::reserve) or [`room`](Self::room)).
    pub(super) fn send_reserved(&self, task: Prepared) -> Result<RawTask, TaskError> {
        let inner = &self.shared.inner;
        let (items, resubmitted) = (task.job.items, task.job.resubmitted);
        // Counted in before it can be taken out.
        inner.jobs.count_in(items);
        match self.shared.jobs.try_send(task.job) {
            Ok(()) => {
                inner.jobs.wake_idle();
                if !resubmitted {
                    inner
                        .counters
                        .submitted
                        .fetch_add(u64::from(items), Ordering::Relaxed);
                }
                if inner.scale.is_elastic() {
                    self.grow();
                }
                Ok(task.raw)
            }
            Err(e) => {
                inner.jobs.count_out(items);
                inner.jobs.unreserve();
                // Unbounded, so never full: the pool closed in the meantime.
                drop(e.into_inner());
                Err(self.refusal().err().unwrap_or(TaskError::Shutdown))
            }
        }
    }

    /// Queues a prepared task that found the queue full, once there is room.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it resolves, the task was not queued.
    async fn queue_when_room(&self, task: Prepared) -> Result<RawTask, TaskError> {
        let inner = &self.shared.inner;
        if inner.jobs.room(inner.config.queue_capacity).await {
            self.send_reserved(task)
        } else {
            self.refusal()?;
            Err(TaskError::Shutdown)
        }
    }

    /// Queues a task whose body arrived encoded (a remote host's message), for the
    /// function `func` of this build: a `map` chunk of `chunk` items if `Some`. Resolves to the
    /// worker's reply body. A full queue fails it with [`TaskError::QueueFull`]: a host
    /// takes no more tasks than it has free workers.
    #[cfg(feature = "nats")]
    pub(crate) fn submit_raw(&self, func: TaskRef, body: &[u8], chunk: Option<u32>) -> RawTask {
        // The one copy: from the message into the frame behind its header.
        let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
        wire::begin(&mut frame);
        frame.extend_from_slice(body);
        self.prepare(
            func,
            frame,
            Vec::new(),
            Vec::new(),
            chunk,
            TaskName::Function("remote"),
        )
        .and_then(|task| self.queue_now(task))
        .unwrap_or_else(RawTask::failed)
    }

    /// Queues a prepared task whatever the queue's length: for a task that takes the
    /// place of one that was in flight (part of a `map` chunk whose worker died).
    pub(super) fn queue_over_capacity(&self, task: Prepared) -> Result<RawTask, TaskError> {
        self.shared.inner.jobs.reserve(usize::MAX);
        self.send_reserved(task)
    }

    /// Queues a prepared task, or fails at once with [`TaskError::QueueFull`].
    pub(super) fn queue_now(&self, task: Prepared) -> Result<RawTask, TaskError> {
        self.try_queue(task).map_err(|e| match e {
            NotQueued::Refused(e) => e,
            NotQueued::Full(_) => TaskError::QueueFull {
                capacity: self.shared.inner.config.queue_capacity,
            },
        })
    }

    /// Resolves once the queue has room for a job, with the place reserved (`true`), or
    /// once it is closed (`false`). Owns a clone of the pool, so a stream can keep it.
    pub(super) fn room(&self) -> impl Future<Output = bool> + Send + 'static {
        let pool = self.clone();
        async move {
            let inner = &pool.shared.inner;
            inner.jobs.room(inner.config.queue_capacity).await
        }
    }
}

/// The future of [`ProcessPoolExecutor::submit`]: resolves to the task's
/// [`TaskHandle`] once the task is in the queue.
///
/// The task was already queued when `submit` returned if there was room; otherwise
/// this waits, first come first served, until a place frees up.
///
/// # Cancel safety
/// Cancel safe. Dropped before it resolves, it either had not queued the task, or
/// drops the handle of a queued task, and a queued task whose handle is dropped never
/// runs. Either way nothing runs.
///
/// # Panics
/// Polling it again after it returned `Ready` panics, as for any future.
#[must_use = "a Submit does nothing unless awaited; dropping it drops the task"]
pub struct Submit<R> {
    state: State,
    name: Option<std::sync::Arc<str>>,
    _result: PhantomData<fn() -> R>,
}

enum State {
    Done(Option<Result<RawTask, TaskError>>),
    Waiting(Pin<Box<dyn Future<Output = Result<RawTask, TaskError>> + Send>>),
}

impl<R> Submit<R> {
    /// Queues `task` now if there is room, else waits for room when polled.
    pub(super) fn new(
        pool: &ProcessPoolExecutor,
        task: Result<Prepared, TaskError>,
        name: Option<std::sync::Arc<str>>,
    ) -> Self {
        let state = match task.map(|t| pool.try_queue(t)) {
            Err(e) | Ok(Err(NotQueued::Refused(e))) => State::Done(Some(Err(e))),
            Ok(Ok(raw)) => State::Done(Some(Ok(raw))),
            Ok(Err(NotQueued::Full(task))) => {
                // The slow path owns a clone of the pool: one allocation, only when
                // the queue is full.
                let pool = pool.clone();
                State::Waiting(Box::pin(async move { pool.queue_when_room(*task).await }))
            }
        };
        Submit {
            state,
            name,
            _result: PhantomData,
        }
    }
}

impl<R> Future for Submit<R> {
    type Output = Result<TaskHandle<R>, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match &mut self.state {
            State::Done(result) => result.take(),
            State::Waiting(wait) => {
                let result = std::task::ready!(wait.as_mut().poll(cx));
                self.state = State::Done(None);
                Some(result)
            }
        };
        let name = self.name.clone();
        match result {
            Some(Ok(raw)) => Poll::Ready(Ok(TaskHandle::new(raw, name))),
            Some(Err(e)) => Poll::Ready(Err(TaskError::named(e, name))),
            None => panic!("Submit polled after it returned Ready"),
        }
    }
}

impl<R> fmt::Debug for Submit<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Done(Some(_)) => "ready",
            State::Done(None) => "returned",
            State::Waiting(_) => "waiting for room",
        };
        f.debug_struct("Submit")
            .field("state", &state)
            .field("name", &self.name)
            .finish()
    }
}
