//! [`TaskBuilder`]: options for one call, `pool.task(f).timeout(d).name("thumb")`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::handle::decode;
use super::span::TaskName;
use super::submit::{Prepared, Submit};
use super::{ProcessPoolExecutor, TaskHandle};
use crate::error::TaskError;
use crate::task::{self, AsyncTask, Message, Task, Trampoline};

/// Options for one task of `F`, made by [`ProcessPoolExecutor::task`]: a timeout
/// that overrides the pool's, and a name that its errors carry.
///
/// It ends with the same forms as the pool: [`submit`](Self::submit) (waits for room),
/// [`try_submit`](Self::try_submit) (fails at once when the queue is full),
/// [`run`](Self::run) (submits and awaits), and their `_async` forms for async
/// functions.
///
/// ```
/// use std::time::Duration;
/// use procpool::{ProcessPoolExecutor, TaskError};
///
/// fn spin(_: ()) {
///     loop { std::hint::spin_loop() }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = ProcessPoolExecutor::builder().workers(1).build()?;
/// let err = pool
///     .task(spin)
///     .name("spinner")
///     .timeout(Duration::from_millis(50))
///     .run(())
///     .await
///     .unwrap_err();
/// assert_eq!(err.name(), Some("spinner"));
/// assert!(matches!(err.unnamed(), TaskError::TimedOut { .. }));
/// # pool.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[must_use = "a TaskBuilder does nothing until a submit form is called"]
pub struct TaskBuilder<'a, F> {
    pool: &'a ProcessPoolExecutor,
    timeout: Option<Duration>,
    soft_timeout: Option<Duration>,
    name: Option<Arc<str>>,
    #[cfg(feature = "nats")]
    key: Option<Arc<str>>,
    /// An option out of range: every submit form fails with it.
    invalid: Option<&'static str>,
    _f: PhantomData<fn() -> F>,
}

impl<'a, F> TaskBuilder<'a, F> {
    pub(super) fn new(pool: &'a ProcessPoolExecutor, f: F) -> Self {
        let _ = f;
        TaskBuilder {
            pool,
            timeout: None,
            soft_timeout: None,
            name: None,
            #[cfg(feature = "nats")]
            key: None,
            invalid: None,
            _f: PhantomData,
        }
    }

    /// How long the task may run once its worker begins it, in place of the pool's
    /// [`task_timeout`](crate::PoolBuilder::task_timeout); then its worker is killed
    /// and replaced, and the task fails with [`TaskError::TimedOut`]. The clock starts
    /// when the worker begins the task, not while it waits in the queue.
    ///
    /// A zero timeout makes the submit fail with [`TaskError::InvalidArgument`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        if timeout.is_zero() {
            self.invalid = Some("a task's timeout must be more than zero");
        }
        self.timeout = Some(timeout);
        self
    }

    /// A soft timeout, as billiard's soft time limit: once the task has run this long,
    /// [`soft_timeout_expired`](crate::soft_timeout_expired) returns true inside it,
    /// so it can stop, clean up and return what it has. Nothing is killed at the soft
    /// timeout; a hard [`timeout`](Self::timeout) (its own or the pool's), if any,
    /// still kills the worker later and must be longer.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// /// Counts until asked to stop, then says how far it got.
    /// fn count_until_told(_: ()) -> u64 {
    ///     let mut n = 0u64;
    ///     while !procpool::soft_timeout_expired() {
    ///         n += 1;
    ///         std::hint::spin_loop();
    ///     }
    ///     n
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = procpool::ProcessPoolExecutor::builder().workers(1).build()?;
    /// let n = pool
    ///     .task(count_until_told)
    ///     .soft_timeout(Duration::from_millis(20))
    ///     .timeout(Duration::from_secs(30))
    ///     .run(())
    ///     .await?;
    /// assert!(n > 0);
    /// # pool.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A zero soft timeout, or one not shorter than the hard timeout set here, makes
    /// the submit fail with [`TaskError::InvalidArgument`].
    pub fn soft_timeout(mut self, soft: Duration) -> Self {
        if soft.is_zero() {
            self.invalid = Some("a task's soft timeout must be more than zero");
        }
        self.soft_timeout = Some(soft);
        self
    }

    /// A name for the task: its errors come as [`TaskError::Named`], which says it,
    /// and [`TaskHandle::name`] returns it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Arc::from(name.into()));
        self
    }

    /// An idempotency key, for a remote pool (feature `nats`): the task is published
    /// with it as its `Nats-Msg-Id`, so the stream keeps one copy of every task
    /// published under the key within its dedup window (two minutes by default), and
    /// a submitter that sends a task again after a crash or a lost answer does not
    /// run it twice.
    ///
    /// What a second submit of the key gets:
    /// - from this executor, taken from its queue before the first one's result came
    ///   back: that result (both futures resolve with it; the task runs once);
    /// - otherwise, within the dedup window: [`RemoteTaskError::Duplicate`], at once,
    ///   since the result of the one run went to the first submitter.
    ///
    /// A local pool runs every task at most once, in a worker it watches, and has no
    /// use for the key: it ignores it.
    ///
    /// An empty key, one over 256 bytes, or one with a control character makes the
    /// submit fail with [`TaskError::InvalidArgument`].
    ///
    /// [`RemoteTaskError::Duplicate`]: crate::RemoteTaskError::Duplicate
    #[cfg(feature = "nats")]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
            self.invalid =
                Some("an idempotency key must be 1 to 256 bytes with no control characters");
        }
        self.key = Some(Arc::from(key));
        self
    }

    /// Encodes `arg` for `trampoline`, the function `F` runs through, with these
    /// options.
    fn prepare<A: Message>(&self, trampoline: Trampoline, arg: A) -> Result<Prepared, TaskError> {
        if let Some(what) = self.invalid {
            return Err(TaskError::InvalidArgument { what });
        }
        let hard = self.timeout.or(self.pool.shared.inner.config.task_timeout);
        if let (Some(soft), Some(hard)) = (self.soft_timeout, hard) {
            if soft >= hard {
                return Err(TaskError::InvalidArgument {
                    what: "a task's soft timeout must be shorter than its timeout",
                });
            }
        }
        if let Some(e) = self.pool.unregistered::<F>(trampoline) {
            return Err(e);
        }
        let name = match &self.name {
            Some(given) => TaskName::Given(given.clone()),
            None => TaskName::Function(std::any::type_name::<F>()),
        };
        let mut task = self.pool.prepare_value(trampoline, arg, name)?;
        task.set_timeout(self.timeout);
        task.job.soft_timeout = self.soft_timeout;
        #[cfg(feature = "nats")]
        {
            task.job.key = self.key.clone();
        }
        Ok(task)
    }

    /// The `Submit` of a task of `F` through `trampoline`, with these options.
    fn submit_through<A: Message, R>(self, trampoline: Trampoline, arg: A) -> Submit<R> {
        let task = self.prepare(trampoline, arg);
        Submit::new(self.pool, task, self.name)
    }

    /// The handle of a task queued now, or the reason it was not.
    fn queue_now<R>(&self, task: Result<Prepared, TaskError>) -> Result<TaskHandle<R>, TaskError> {
        task.and_then(|t| self.pool.queue_now(t))
            .map(|raw| TaskHandle::new(raw, self.name.clone()))
            .map_err(|e| TaskError::named(e, self.name.clone()))
    }

    /// Queues the task, waiting for room; as [`ProcessPoolExecutor::submit`].
    ///
    /// # Errors
    /// As [`ProcessPoolExecutor::submit`], and [`TaskError::InvalidArgument`] for an
    /// option out of range.
    ///
    /// # Cancel safety
    /// As [`ProcessPoolExecutor::submit`].
    pub fn submit<A, R>(self, arg: A) -> Submit<R>
    where
        F: Task<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        self.submit_through(task::call::<F, A, R>, arg)
    }

    /// Queues the task if there is room; as [`ProcessPoolExecutor::try_submit`].
    ///
    /// # Errors
    /// As [`ProcessPoolExecutor::try_submit`], and [`TaskError::InvalidArgument`] for
    /// an option out of range.
    pub fn try_submit<A, R>(self, arg: A) -> Result<TaskHandle<R>, TaskError>
    where
        F: Task<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        self.queue_now(self.prepare(task::call::<F, A, R>, arg))
    }

    /// Submits the task, waiting for room, and waits for its result.
    ///
    /// # Errors
    /// Every [`TaskError`] but [`QueueFull`](TaskError::QueueFull), named if the task
    /// is.
    ///
    /// # Cancel safety
    /// As [`ProcessPoolExecutor::run`].
    pub async fn run<A, R>(self, arg: A) -> Result<R, TaskError>
    where
        F: Task<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        let name = self.name.clone();
        let task = self
            .prepare(task::call::<F, A, R>, arg)
            .map_err(|e| TaskError::named(e, name.clone()))?;
        // Awaited at once: it may go straight to an idle worker (`super::direct`).
        match self.pool.send_direct(task) {
            Ok(answer) => answer
                .await
                .and_then(decode::<R>)
                .map_err(|e| TaskError::named(e, name)),
            Err(task) => Submit::new(self.pool, Ok(*task), self.name).await?.await,
        }
    }

    /// Queues the async function, waiting for room; as
    /// [`ProcessPoolExecutor::submit_async`].
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    ///
    /// # Cancel safety
    /// As [`ProcessPoolExecutor::submit`].
    pub fn submit_async<A, R>(self, arg: A) -> Submit<R>
    where
        F: AsyncTask<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        self.submit_through(task::call_async::<F, A, R>, arg)
    }

    /// Queues the async function if there is room; as
    /// [`ProcessPoolExecutor::try_submit_async`].
    ///
    /// # Errors
    /// As [`try_submit`](Self::try_submit).
    pub fn try_submit_async<A, R>(self, arg: A) -> Result<TaskHandle<R>, TaskError>
    where
        F: AsyncTask<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        self.queue_now(self.prepare(task::call_async::<F, A, R>, arg))
    }
}

impl<F> fmt::Debug for TaskBuilder<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("function", &std::any::type_name::<F>())
            .field("timeout", &self.timeout)
            .field("name", &self.name)
            .finish()
    }
}
