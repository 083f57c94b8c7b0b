//! [`JoinableQueue`]: a queue that counts unfinished work.

use super::*;

/// A [`Queue`] that also counts unfinished work (Python's
/// `multiprocessing.JoinableQueue`): every item put is unfinished until a consumer
/// calls [`task_done`](Self::task_done) for it, and [`join`](Self::join) waits until
/// nothing is unfinished. All [`Queue`] methods are available through `Deref`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = procpool::JoinableQueue::unbounded()?;
/// q.put(1u8).await?;
/// let n = q.get().await?;
/// assert_eq!(n, 1);
/// q.task_done()?;
/// q.join().await?; // returns at once: the one item is done
/// assert!(q.task_done().is_err()); // one call too many
/// # Ok(())
/// # }
/// ```
pub struct JoinableQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("item", &type_name::<T>())
            .field("maxsize", &self.inner.maxsize())
            .finish()
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.inner
    }
}

impl<T> JoinableQueue<T> {
    /// A joinable queue holding at most `maxsize` items.
    ///
    /// # Errors
    /// As [`Queue::bounded`].
    pub fn bounded(maxsize: usize) -> io::Result<Self> {
        Ok(JoinableQueue {
            inner: Queue::bounded(maxsize)?,
        })
    }

    /// A joinable queue without a bound.
    ///
    /// # Errors
    /// As [`Queue::unbounded`].
    pub fn unbounded() -> io::Result<Self> {
        Ok(JoinableQueue {
            inner: Queue::unbounded()?,
        })
    }

    /// Marks one item got from the queue as processed.
    ///
    /// # Errors
    /// [`TaskDoneError`] if called more times than items were put.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.inner
            .locked(|g| g.task_done())
            .ok()
            .filter(|done| *done)
            .map(drop)
            .ok_or(TaskDoneError)
    }

    /// Items put and not yet marked done.
    pub fn unfinished(&self) -> usize {
        self.inner
            .locked(|g| g.state().unfinished as usize)
            .unwrap_or(0)
    }

    fn all_done(g: &mut Guard<'_>) -> Result<Poll<()>, CoreError> {
        Ok(if g.state().unfinished == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        })
    }

    /// Waits until every item put has been marked done with
    /// [`task_done`](Self::task_done).
    ///
    /// # Errors
    /// A system error from the shared state.
    ///
    /// # Cancel safety
    /// Cancel safe: it changes nothing.
    pub async fn join(&self) -> io::Result<()> {
        self.inner.core.wait(Self::all_done).await.map_err(core_io)
    }

    /// Blocking form of [`join`](Self::join).
    ///
    /// # Errors
    /// As [`join`](Self::join).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`join`](Self::join) there.
    #[track_caller]
    pub fn blocking_join(&self) -> io::Result<()> {
        crate::blocking::assert_may_block("blocking_join", "join");
        self.inner
            .core
            .blocking_wait(None, Self::all_done)
            .map(drop)
            .map_err(core_io)
    }
}

queue_handle!(JoinableQueue, |this| &this.inner, |q| JoinableQueue {
    inner: q
});
