//! `pool.map(f, xs).await`: a [`MapStream`] collected into a `Vec` in input order, and
//! [`KeepPartial`], which keeps what was collected when an item fails.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::StreamExt;

use super::map::MapStream;
use crate::error::TaskError;
use crate::task::{Message, Task};

/// The pending result of [`ProcessPoolExecutor::map`]: await it for
/// `Result<Vec<R>, TaskError>`, in input order.
///
/// [`ProcessPoolExecutor::map`]: crate::ProcessPoolExecutor::map
#[must_use = "a Map does nothing unless awaited"]
pub struct Map<F, I: Iterator, R> {
    stream: MapStream<F, I, R>,
}

impl<F, I, A, R> Map<F, I, R>
where
    F: Task<A, R>,
    I: Iterator<Item = A>,
    A: Message,
    R: Message,
{
    pub(crate) fn new(stream: MapStream<F, I, R>) -> Self {
        Map { stream }
    }

    /// The same map over the stream `change` makes of this one's.
    fn with(self, change: impl FnOnce(MapStream<F, I, R>) -> MapStream<F, I, R>) -> Self {
        Map {
            stream: change(self.stream),
        }
    }

    /// Items per message; see [`MapStream::chunk_size`]. A size of zero makes the map
    /// fail with [`TaskError::InvalidArgument`], nothing submitted.
    pub fn chunk_size(self, n: usize) -> Self {
        self.with(|s| s.chunk_size(n))
    }

    /// An overall deadline; see [`MapStream::timeout`]. Past it the map fails with
    /// [`TaskError::TimedOut`].
    pub fn timeout(self, limit: Duration) -> Self {
        self.with(|s| s.timeout(limit))
    }

    /// At most `n` items taken from the input and not yet collected; see
    /// [`MapStream::buffer_size`].
    pub fn buffer_size(self, n: usize) -> Self {
        self.with(|s| s.buffer_size(n))
    }

    /// Awaited, fails with a [`PartialMap`] that keeps the results collected before
    /// the failing item, instead of a bare [`TaskError`].
    ///
    /// ```
    /// fn check(x: u32) -> u32 {
    ///     assert!(x != 3, "three is not allowed");
    ///     x * 10
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = procpool::ProcessPoolExecutor::builder().workers(1).build()?;
    /// let failed = pool.map(check, 0..6u32).chunk_size(1).keep_partial().await.unwrap_err();
    /// assert_eq!(failed.completed, [0, 10, 20]); // items 0, 1 and 2, in order
    /// assert_eq!(failed.failed_at, 3);
    /// assert!(matches!(failed.error, procpool::TaskError::Panicked(_)));
    /// # pool.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_partial(self) -> KeepPartial<F, I, R> {
        KeepPartial {
            inner: self.into_future(),
        }
    }
}

/// A [`Map`] that failed at item `failed_at` (Python's `map` raising in the middle):
/// the results of the items before it, in order, and the error. Items after it may
/// have run; their results are not kept.
#[derive(Debug, thiserror::Error)]
#[error("the map failed at item {failed_at}, after {} results", completed.len())]
#[non_exhaustive]
pub struct PartialMap<R> {
    /// The results of items `0..failed_at`.
    pub completed: Vec<R>,
    /// The index of the item that failed (for a deadline, the first item without a
    /// result).
    pub failed_at: usize,
    /// Why it failed.
    #[source]
    pub error: TaskError,
}

/// The future of [`Map::keep_partial`].
///
/// # Cancel safety
/// As [`MapFuture`].
#[must_use = "futures do nothing unless awaited"]
pub struct KeepPartial<F, I: Iterator, R> {
    inner: MapFuture<F, I, R>,
}

impl<F, I, A, R> Future for KeepPartial<F, I, R>
where
    F: Task<A, R>,
    I: Iterator<Item = A>,
    A: Message,
    R: Message,
{
    type Output = Result<Vec<R>, PartialMap<R>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.inner;
        match Pin::new(&mut *inner).poll(cx) {
            Poll::Ready(Ok(all)) => Poll::Ready(Ok(all)),
            Poll::Ready(Err(error)) => {
                let completed = std::mem::take(&mut inner.out);
                Poll::Ready(Err(PartialMap {
                    failed_at: completed.len(),
                    completed,
                    error,
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F, I: Iterator, R> fmt::Debug for KeepPartial<F, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepPartial")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<F, I, A, R> IntoFuture for Map<F, I, R>
where
    F: Task<A, R>,
    I: Iterator<Item = A>,
    A: Message,
    R: Message,
{
    type Output = Result<Vec<R>, TaskError>;
    type IntoFuture = MapFuture<F, I, R>;

    fn into_future(self) -> Self::IntoFuture {
        let cap = self.stream.input_hint();
        MapFuture {
            stream: self.stream,
            out: Vec::with_capacity(cap.min(1 << 20)),
        }
    }
}

impl<F, I: Iterator, R> fmt::Debug for Map<F, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map").field("stream", &self.stream).finish()
    }
}

/// The future of an awaited [`Map`].
///
/// # Cancel safety
/// Dropping it drops the queued chunks; running chunks finish unobserved.
#[must_use = "futures do nothing unless awaited"]
pub struct MapFuture<F, I: Iterator, R> {
    stream: MapStream<F, I, R>,
    out: Vec<R>,
}

impl<F, I: Iterator, R> Unpin for MapFuture<F, I, R> {}

impl<F, I, A, R> Future for MapFuture<F, I, R>
where
    F: Task<A, R>,
    I: Iterator<Item = A>,
    A: Message,
    R: Message,
{
    type Output = Result<Vec<R>, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            // Whole chunks at a time while results are queued, then the stream's
            // own step (which queues the next chunk, or says what it waits for).
            if let Some(e) = this.stream.drain_ready(&mut this.out) {
                this.stream.stop();
                return Poll::Ready(Err(e));
            }
            match this.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(r))) => this.out.push(r),
                Poll::Ready(Some(Err(e))) => {
                    // Drop what is queued now rather than when the future is dropped.
                    this.stream.stop();
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(std::mem::take(&mut this.out))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<F, I: Iterator, R> fmt::Debug for MapFuture<F, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapFuture")
            .field("stream", &self.stream)
            .field("results", &self.out.len())
            .finish()
    }
}
