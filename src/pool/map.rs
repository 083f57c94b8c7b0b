//! `map`, `map_unordered` and `map_ordered_stream`: a function over an iterator, in
//! chunks.
//!
//! Items are serialised back to back into one `Run` frame per chunk (no per-item
//! frame), the worker answers with one `Result<R, Failure>` per item back to back, and
//! at most `2 × workers` chunks are in flight, so a worker finishing a chunk finds the
//! next one already queued while the input is consumed lazily and memory stays bounded.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::iter::Fuse;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::handle::RawTask;
use super::ProcessPoolExecutor;
use crate::error::TaskError;
use crate::task;
use crate::wire::{self, handles, Failure, Payload, HEADER_LEN};

/// A chunk closes once its encoded items pass this many bytes, whatever the chunk size.
const CHUNK_BYTES: usize = 1 << 20;
/// Largest automatic chunk size.
const MAX_AUTO_CHUNK: usize = 512;
/// Automatic chunk size when the iterator does not know its length.
const UNKNOWN_LEN_CHUNK: usize = 16;

/// One chunk in flight: its position, its item count and its task.
struct Chunk {
    seq: u64,
    count: usize,
    task: RawTask,
}

impl Future for Chunk {
    type Output = (u64, usize, Result<Payload, TaskError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (seq, count) = (self.seq, self.count);
        Pin::new(&mut self.task).poll(cx).map(|r| (seq, count, r))
    }
}

/// The results of [`ProcessPoolExecutor::map_unordered`] or
/// [`ProcessPoolExecutor::map_ordered_stream`]: a `Stream` of `Result<R, TaskError>`,
/// one per input item.
///
/// Dropping the stream drops its queued chunks (they never run); chunks already
/// running finish in their workers and their results are discarded.
#[must_use = "streams do nothing unless polled"]
pub struct MapStream<'a, F, I: Iterator, R> {
    pool: &'a ProcessPoolExecutor,
    items: Fuse<I>,
    chunk_size: Option<usize>,
    ordered: bool,
    in_flight: FuturesUnordered<Chunk>,
    next_seq: u64,
    /// Ordered mode: the next chunk to emit, and finished chunks waiting for it.
    emit_seq: u64,
    parked: BTreeMap<u64, VecDeque<Result<R, TaskError>>>,
    ready: VecDeque<Result<R, TaskError>>,
    _f: PhantomData<fn() -> F>,
}

// The stream never pins its fields: `items` is only used through `&mut`, chunk futures
// live in an `Unpin` `FuturesUnordered`.
impl<F, I: Iterator, R> Unpin for MapStream<'_, F, I, R> {}

impl<'a, F, I, A, R> MapStream<'a, F, I, R>
where
    F: Fn(A) -> R + Copy + Send + 'static,
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    pub(crate) fn new(pool: &'a ProcessPoolExecutor, _f: F, items: I, ordered: bool) -> Self {
        MapStream {
            pool,
            items: items.fuse(),
            chunk_size: None,
            ordered,
            in_flight: FuturesUnordered::new(),
            next_seq: 0,
            emit_seq: 0,
            parked: BTreeMap::new(),
            ready: VecDeque::new(),
            _f: PhantomData,
        }
    }

    /// Items per message (Python's `chunksize`). Default: the iterator's length hint
    /// divided by four chunks per worker, between 1 and 512 (16 when the length is
    /// unknown). A chunk also closes early once its items pass 1 MiB encoded. Larger
    /// chunks cost fewer round trips; smaller ones balance uneven items better.
    ///
    /// # Panics
    /// If `n` is zero.
    pub fn chunk_size(mut self, n: usize) -> Self {
        assert!(n > 0, "chunk_size must be at least 1");
        self.chunk_size = Some(n);
        self
    }

    fn max_in_flight(&self) -> usize {
        2 * self.pool.workers()
    }

    fn effective_chunk_size(&mut self) -> usize {
        if let Some(n) = self.chunk_size {
            return n;
        }
        let hint = self.items.size_hint().0;
        let n = if hint == 0 {
            UNKNOWN_LEN_CHUNK
        } else {
            hint.div_ceil(4 * self.pool.workers())
                .clamp(1, MAX_AUTO_CHUNK)
        };
        self.chunk_size = Some(n);
        n
    }

    fn push(&mut self, count: usize, task: RawTask) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push(Chunk { seq, count, task });
    }

    /// Submits chunks until the in-flight limit or the end of the input.
    fn fill(&mut self) {
        let chunk_size = self.effective_chunk_size();
        let func = task::local_ref(task::call_batch::<F, A, R>);
        // Finished chunks parked for ordering count too: memory stays bounded even
        // when the oldest chunk is the slowest.
        while self.in_flight.len() + self.parked.len() < self.max_in_flight() {
            let mut frame = Vec::new();
            let mut fds = Vec::new();
            wire::begin(&mut frame);
            let mut count = 0;
            let mut failed_item = None;
            // One descriptor collection for the whole chunk (see `task::call_batch`).
            handles::collect_into(&mut fds, || {
                while count < chunk_size && frame.len() - HEADER_LEN < CHUNK_BYTES {
                    let Some(item) = self.items.next() else { break };
                    let before = frame.len();
                    match postcard::to_io(&item, &mut frame) {
                        Ok(_) => count += 1,
                        Err(e) => {
                            // Descriptors of the failed item's handles, if any were
                            // collected, go along unclaimed and are closed on arrival.
                            frame.truncate(before);
                            failed_item = Some(TaskError::Encode {
                                type_name: std::any::type_name::<A>().to_owned(),
                                reason: e.to_string(),
                            });
                            break;
                        }
                    }
                }
            });
            if count > 0 {
                let task = self.pool.queue_frame(func, frame, Vec::new(), fds);
                self.push(count, task);
            }
            match failed_item {
                Some(e) => self.push(1, RawTask::failed(e)),
                None if count == 0 => break, // input exhausted
                None => {}
            }
        }
    }

    /// Turns a finished chunk into one result per item.
    fn unpack(count: usize, result: Result<Payload, TaskError>) -> VecDeque<Result<R, TaskError>> {
        let mut out = VecDeque::with_capacity(count);
        match result {
            Err(e) => out.extend(std::iter::repeat_n(e, count).map(Err)),
            Ok(Payload { body, fds }) => {
                let mut fds = fds.into_iter().map(Some).collect();
                let mut rest = body.as_slice();
                let mut last_error = None;
                handles::supply_from(&mut fds, || {
                    while out.len() < count && !rest.is_empty() {
                        match postcard::take_from_bytes::<Result<R, Failure>>(rest) {
                            Ok((item, tail)) => {
                                rest = tail;
                                let item = item.map_err(TaskError::from);
                                if let Err(e) = &item {
                                    last_error = Some(e.clone());
                                }
                                out.push_back(item);
                            }
                            Err(e) => {
                                last_error = Some(TaskError::Decode {
                                    type_name: std::any::type_name::<R>().to_owned(),
                                    reason: e.to_string(),
                                });
                                break;
                            }
                        }
                    }
                });
                // Items the worker could not answer (a chunk cut short by an argument
                // that did not decode) share the error that ended the chunk.
                let missing = last_error.unwrap_or_else(|| TaskError::Decode {
                    type_name: std::any::type_name::<R>().to_owned(),
                    reason: "the worker returned fewer results than items".to_owned(),
                });
                while out.len() < count {
                    out.push_back(Err(missing.clone()));
                }
            }
        }
        out
    }
}

impl<F, I, A, R> Stream for MapStream<'_, F, I, R>
where
    F: Fn(A) -> R + Copy + Send + 'static,
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = Result<R, TaskError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            this.fill();
            match this.in_flight.poll_next_unpin(cx) {
                Poll::Ready(Some((seq, count, result))) => {
                    let items = Self::unpack(count, result);
                    if this.ordered {
                        this.parked.insert(seq, items);
                        while let Some(items) = this.parked.remove(&this.emit_seq) {
                            this.ready.extend(items);
                            this.emit_seq += 1;
                        }
                    } else {
                        this.ready.extend(items);
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<F, I: Iterator, R> fmt::Debug for MapStream<'_, F, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapStream")
            .field("ordered", &self.ordered)
            .field("chunk_size", &self.chunk_size)
            .field("chunks_in_flight", &self.in_flight.len())
            .finish()
    }
}

/// The pending result of [`ProcessPoolExecutor::map`]: await it for
/// `Result<Vec<R>, TaskError>`, in input order.
#[must_use = "a Map does nothing unless awaited"]
pub struct Map<'a, F, I: Iterator, R> {
    stream: MapStream<'a, F, I, R>,
}

impl<'a, F, I, A, R> Map<'a, F, I, R>
where
    F: Fn(A) -> R + Copy + Send + 'static,
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    pub(crate) fn new(stream: MapStream<'a, F, I, R>) -> Self {
        Map { stream }
    }

    /// Items per message; see [`MapStream::chunk_size`].
    ///
    /// # Panics
    /// If `n` is zero.
    pub fn chunk_size(self, n: usize) -> Self {
        Map {
            stream: self.stream.chunk_size(n),
        }
    }
}

impl<'a, F, I, A, R> IntoFuture for Map<'a, F, I, R>
where
    F: Fn(A) -> R + Copy + Send + 'static,
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Output = Result<Vec<R>, TaskError>;
    type IntoFuture = MapFuture<'a, F, I, R>;

    fn into_future(self) -> Self::IntoFuture {
        let cap = self.stream.items.size_hint().0;
        MapFuture {
            stream: self.stream,
            out: Vec::with_capacity(cap.min(1 << 20)),
        }
    }
}

impl<F, I: Iterator, R> fmt::Debug for Map<'_, F, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map").field("stream", &self.stream).finish()
    }
}

/// The future of an awaited [`Map`].
///
/// # Cancel safety
/// Dropping it drops the queued chunks; running chunks finish unobserved.
#[must_use = "futures do nothing unless awaited"]
pub struct MapFuture<'a, F, I: Iterator, R> {
    stream: MapStream<'a, F, I, R>,
    out: Vec<R>,
}

impl<F, I: Iterator, R> Unpin for MapFuture<'_, F, I, R> {}

impl<F, I, A, R> Future for MapFuture<'_, F, I, R>
where
    F: Fn(A) -> R + Copy + Send + 'static,
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Output = Result<Vec<R>, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match this.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(r))) => this.out.push(r),
                Poll::Ready(Some(Err(e))) => {
                    // Drop what is queued now rather than when the future is dropped.
                    this.stream.in_flight.clear();
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(std::mem::take(&mut this.out))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<F, I: Iterator, R> fmt::Debug for MapFuture<'_, F, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapFuture")
            .field("stream", &self.stream)
            .field("results", &self.out.len())
            .finish()
    }
}
