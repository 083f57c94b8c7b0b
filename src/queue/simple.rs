//! [`SimpleQueue`]: the smallest queue interface.

use super::*;

/// An unbounded queue with the smallest interface (Python's
/// `multiprocessing.SimpleQueue`): `put`, `get`, `is_empty`, `close`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = procpool::SimpleQueue::new()?;
/// q.put("hi".to_owned()).await?;
/// assert_eq!(q.get().await?, "hi");
/// assert!(q.is_empty());
/// # Ok(())
/// # }
/// ```
pub struct SimpleQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("item", &type_name::<T>())
            .finish()
    }
}

impl<T> SimpleQueue<T> {
    /// A new, empty queue.
    ///
    /// # Errors
    /// A system error if the shared memory cannot be made.
    pub fn new() -> io::Result<Self> {
        Ok(SimpleQueue {
            inner: Queue::unbounded()?,
        })
    }

    /// Whether the queue holds no item.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Closes the queue for every process (see [`Queue::close`]).
    pub fn close(&self) {
        self.inner.close()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> SimpleQueue<T> {
    /// Puts an item (never waits for room).
    ///
    /// # Errors
    /// As [`Queue::put`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.inner.put(item).await
    }

    /// Blocking form of [`put`](Self::put).
    ///
    /// # Errors
    /// As [`Queue::put`].
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`put`](Self::put) there.
    #[track_caller]
    pub fn blocking_put(&self, item: T) -> Result<(), PutError<T>> {
        crate::blocking::assert_may_block("blocking_put", "put");
        self.inner.blocking_put(item)
    }

    /// Takes the first item, waiting while the queue is empty.
    ///
    /// # Errors
    /// As [`Queue::get`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn get(&self) -> Result<T, GetError> {
        self.inner.get().await
    }

    /// Blocking form of [`get`](Self::get).
    ///
    /// # Errors
    /// As [`Queue::get`].
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`get`](Self::get) there.
    #[track_caller]
    pub fn blocking_get(&self) -> Result<T, GetError> {
        crate::blocking::assert_may_block("blocking_get", "get");
        self.inner.blocking_get()
    }

    /// Takes the first item if there is one now.
    ///
    /// # Errors
    /// As [`Queue::try_get`].
    pub fn try_get(&self) -> Result<T, GetError> {
        self.inner.try_get()
    }
}

queue_handle!(SimpleQueue, |this| &this.inner, |q| SimpleQueue {
    inner: q
});
