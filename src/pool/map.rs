//! `map`, `map_unordered` and `map_ordered_stream`: a function over an iterator, in
//! chunks.
//!
//! Items are serialised back to back into one `Run` frame per chunk (no per-item
//! frame), the worker answers with one `Result<R, Failure>` per item back to back, and
//! at most `2 × workers` chunks are in flight, so a worker finishing a chunk finds the
//! next one already queued while the input is consumed lazily and memory stays bounded.
//!
//! # A worker that dies in a chunk
//! The worker counts on its progress page the items of a chunk it begins. When it
//! dies, only the item it was running fails ([`TaskError::WorkerDied`]); the chunk's
//! other items are sent again as a new chunk (with the same descriptors, since
//! handles are numbered within their chunk) and their results take their places. The
//! items it had not begun then run for the first time; those it had finished run a
//! second time, because their results died with it. So a `map` item runs at least
//! once, and more than once only when a worker dies after finishing it and before
//! answering for its chunk (at most about a chunk's worth of items per death; a chunk
//! size of 1 makes every item run at most once).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::iter::Fuse;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::stream::{FuturesUnordered, Stream, StreamExt};

use super::chunking::Chunking;
use super::handle::{RawTask, Salvage};
use super::span::TaskName;
use super::submit::{NotQueued, Prepared};
use super::ProcessPoolExecutor;
use crate::error::{CodecError, TaskError};
use crate::task::{self, Message, Task};
use crate::wire::{self, handles, Failure, Payload, HEADER_LEN};

/// A chunk closes once its encoded items pass this many bytes, whatever the chunk size.
const CHUNK_BYTES: usize = 1 << 20;

/// One item's result as the stream keeps it until it is yielded: the error boxed,
/// so that a queue of small values stays small (a `TaskError` is several words; a
/// chunk of `u64` results moved around as `Result<u64, TaskError>` moved seven
/// times the bytes).
type Outcome<R> = Result<R, Box<TaskError>>;

/// One chunk in flight: its task, and what it needs to be turned into one result per
/// item (or run again in part).
struct Chunk {
    meta: Option<ChunkMeta>,
    task: RawTask,
}

/// Where a chunk's results go.
struct ChunkMeta {
    /// Its position among the chunks (for ordered output).
    seq: u64,
    /// Items in the chunk as first sent.
    count: usize,
    /// For a chunk sent again in part, after its worker died: the first chunk's index
    /// of each item it carries. Empty: all of them, in order.
    slots: Vec<usize>,
    /// Items of the first chunk already answered: each one running when a worker died.
    settled: Vec<(usize, TaskError)>,
    /// Where each item's encoding ends in the frame body, to send some of them again.
    ends: Vec<usize>,
}

impl ChunkMeta {
    /// Items this chunk's task carries.
    fn carried(&self) -> usize {
        if self.slots.is_empty() {
            self.count - self.settled.len()
        } else {
            self.slots.len()
        }
    }
}

impl Future for Chunk {
    type Output = (ChunkMeta, Result<Payload, TaskError>, Option<Salvage>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(Pin::new(&mut self.task).poll(cx));
        let salvage = match &result {
            Err(TaskError::WorkerDied { .. } | TaskError::LimitExceeded { .. }) => {
                self.task.take_salvage()
            }
            _ => None,
        };
        match self.meta.take() {
            Some(meta) => Poll::Ready((meta, result, salvage)),
            // Not reached: FuturesUnordered polls a finished future no more.
            None => Poll::Pending,
        }
    }
}

/// A chunk that found the pool's queue full, waiting for a place.
struct Blocked {
    task: Prepared,
    count: usize,
    ends: Vec<usize>,
    /// Resolves with a place reserved (`true`), or `false` once the pool is closed.
    room: Pin<Box<dyn Future<Output = bool> + Send>>,
}

/// What to do with a chunk whose worker died under it.
enum Rerun {
    /// Send these items again.
    Again(Chunk),
    /// Nothing left to send: every item is settled.
    Settled(ChunkMeta),
}

/// The results of [`ProcessPoolExecutor::map_unordered`] or
/// [`ProcessPoolExecutor::map_ordered_stream`]: a `Stream` of `Result<R, TaskError>`,
/// one per input item.
///
/// Dropping the stream drops its queued chunks (they never run); chunks already
/// running finish in their workers and their results are discarded.
#[must_use = "streams do nothing unless polled"]
pub struct MapStream<F, I: Iterator, R> {
    pool: ProcessPoolExecutor,
    items: Fuse<I>,
    /// Items per chunk: the caller's, or adapting (made on the first fill).
    chunking: Option<Chunking>,
    ordered: bool,
    in_flight: FuturesUnordered<Chunk>,
    next_seq: u64,
    /// Ordered mode: the next chunk to emit, and finished chunks waiting for it.
    emit_seq: u64,
    parked: BTreeMap<u64, VecDeque<Outcome<R>>>,
    ready: VecDeque<Outcome<R>>,
    /// An argument was refused (`chunk_size(0)`): the stream yields that error and
    /// ends, with nothing submitted.
    refused: bool,
    /// A chunk waiting for room in the pool's queue: no other is made meanwhile.
    blocked: Option<Blocked>,
    /// Items taken from the input so far, and results yielded so far.
    taken: u64,
    yielded: u64,
    /// Most items taken and not yet yielded (`buffer_size`).
    buffer: Option<usize>,
    /// The overall deadline (`timeout`), and its timer once polled.
    deadline: Option<Deadline>,
    /// The deadline passed: the stream yielded its error and ends.
    timed_out: bool,
    _f: PhantomData<fn() -> F>,
}

/// A map's overall deadline.
struct Deadline {
    limit: std::time::Duration,
    at: tokio::time::Instant,
    /// Made on the first poll that needs it (a stream may be made outside a runtime).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    /// Whether it has passed; if not, `cx` is woken when it does.
    fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let at = self.at;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        timer.as_mut().poll(cx).is_ready()
    }
}

/// How far a map has come; see [`MapStream::progress`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MapProgress {
    /// Results yielded so far (values and errors).
    pub done: u64,
    /// Items known so far: those taken from the input, plus those the input still
    /// promises (its `size_hint` lower bound). Grows as the input reveals more.
    pub known: u64,
    /// The total number of items, once it is certain: the input's `size_hint` is
    /// exact (a range, a `Vec`) or the input is exhausted.
    pub total: Option<u64>,
}

// The stream never pins its fields: `items` is only used through `&mut`, chunk futures
// live in an `Unpin` `FuturesUnordered`.
impl<F, I: Iterator, R> Unpin for MapStream<F, I, R> {}

impl<F, I, A, R> MapStream<F, I, R>
where
    F: Task<A, R>,
    I: Iterator<Item = A>,
    A: Message,
    R: Message,
{
    pub(crate) fn new(pool: ProcessPoolExecutor, _f: F, items: I, ordered: bool) -> Self {
        MapStream {
            pool,
            items: items.fuse(),
            chunking: None,
            refused: false,
            ordered,
            in_flight: FuturesUnordered::new(),
            next_seq: 0,
            emit_seq: 0,
            parked: BTreeMap::new(),
            ready: VecDeque::new(),
            blocked: None,
            taken: 0,
            yielded: 0,
            buffer: None,
            deadline: None,
            timed_out: false,
            _f: PhantomData,
        }
    }

    /// Items per message (Python's `chunksize`). Larger chunks cost fewer round trips;
    /// smaller ones balance uneven items better. A chunk also closes early once its
    /// items pass 1 MiB encoded.
    ///
    /// Default: adapting. The first chunks hold the iterator's length hint divided by
    /// four chunks per worker, at most 4,096 items (16 when the length is unknown);
    /// the size then doubles while a chunk takes a worker at most about 10 ms, up to
    /// 65,536 items and never past a quarter of a worker's share of the input.
    ///
    /// A size of zero is refused: the stream then yields one
    /// [`TaskError::InvalidArgument`] and ends, with nothing submitted.
    pub fn chunk_size(mut self, n: usize) -> Self {
        if n == 0 {
            self.refuse("chunk_size must be at least 1");
        } else {
            self.chunking = Some(Chunking::fixed(n));
        }
        self
    }

    /// An overall deadline, counted from this call (Python's `map(timeout=)`): once it
    /// passes with results still to come, the stream yields one
    /// [`TaskError::MapTimedOut`] and ends; its queued chunks are dropped (they never
    /// run) and running ones finish unobserved. Results ready before it are yielded
    /// first. A zero limit is refused: one [`TaskError::InvalidArgument`], nothing
    /// submitted.
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        if limit.is_zero() {
            self.refuse("a map's timeout must be more than zero");
        } else {
            self.deadline = Some(Deadline {
                limit,
                at: tokio::time::Instant::now() + limit,
                timer: None,
            });
        }
        self
    }

    /// At most `n` items taken from the input and not yet yielded (Python 3.14's
    /// `buffersize`): a long or endless input is read only as fast as results are
    /// consumed. Chunks are cut to fit. Default: no bound beyond the chunks in flight
    /// (two per worker). Zero is refused as [`chunk_size(0)`](Self::chunk_size) is.
    pub fn buffer_size(mut self, n: usize) -> Self {
        if n == 0 {
            self.refuse("buffer_size must be at least 1");
        } else {
            self.buffer = Some(n);
        }
        self
    }

    /// The input's length hint, for a collector's capacity.
    pub(super) fn input_hint(&self) -> usize {
        self.items.size_hint().0
    }

    /// Drops what is queued now (a collector that saw an error stops here).
    pub(super) fn stop(&mut self) {
        self.in_flight.clear();
        self.blocked = None;
    }

    /// Nothing ready: pending, unless the deadline passed, which ends the map with
    /// one error.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<R, TaskError>>> {
        let Some(deadline) = self.deadline.as_mut() else {
            return Poll::Pending;
        };
        if !deadline.poll_passed(cx) {
            return Poll::Pending;
        }
        let after = deadline.limit;
        self.timed_out = true;
        self.stop();
        self.parked.clear();
        self.yielded += 1;
        Poll::Ready(Some(Err(TaskError::MapTimedOut { after })))
    }

    /// Refuses the whole map: one error, then the end, nothing submitted.
    fn refuse(&mut self, what: &'static str) {
        if !self.refused {
            self.refused = true;
            self.ready
                .push_back(Err(Box::new(TaskError::InvalidArgument { what })));
        }
    }

    /// How far the map has come: results yielded, items known, and the total once it
    /// is certain. Cheap; call it as often as a progress bar redraws.
    ///
    /// ```
    /// use futures::StreamExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = procpool::ProcessPoolExecutor::builder().workers(1).build()?;
    /// let mut results = pool.map_unordered(|x: u64| x * 2, 0..100u64);
    /// assert_eq!(results.progress().total, Some(100));
    /// while let Some(r) = results.next().await {
    ///     r?;
    /// }
    /// let p = results.progress();
    /// assert_eq!((p.done, p.known, p.total), (100, 100, Some(100)));
    /// # pool.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn progress(&self) -> MapProgress {
        let (low, high) = self.items.size_hint();
        let known = self.taken + low as u64;
        MapProgress {
            done: self.yielded,
            known,
            total: (high == Some(low)).then_some(known),
        }
    }

    fn max_in_flight(&self) -> usize {
        2 * self.pool.workers()
    }

    fn effective_chunk_size(&mut self) -> usize {
        let (hint, workers) = (self.items.size_hint().0, self.pool.workers());
        self.chunking
            .get_or_insert_with(|| Chunking::adaptive(hint, workers))
            .size()
    }

    fn push(&mut self, count: usize, task: RawTask, ends: Vec<usize>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let meta = ChunkMeta {
            seq,
            count,
            slots: Vec::new(),
            settled: Vec::new(),
            ends,
        };
        self.in_flight.push(Chunk {
            meta: Some(meta),
            task,
        });
    }

    /// The worker running `meta`'s chunk died after beginning `salvage.begun` of its
    /// items: the last of them fails with `error`, and the others go again in a new
    /// chunk. Those it had finished ran once already, but their results died with
    /// the worker, so they run again; those it never began run for the first time.
    /// `Err` if the worker's count does not fit the chunk (only a broken worker could
    /// cause that): the chunk then fails whole.
    fn rerun(
        &self,
        mut meta: ChunkMeta,
        mut salvage: Salvage,
        error: TaskError,
    ) -> Result<Rerun, ChunkMeta> {
        let carried = meta.carried();
        let begun = salvage.begun as usize;
        if meta.ends.len() != carried || begun > carried || salvage.frame.len() < HEADER_LEN {
            return Err(meta);
        }
        let body = &salvage.frame[HEADER_LEN..];
        if meta.ends.last().is_some_and(|&end| end > body.len()) {
            return Err(meta);
        }
        let original = |i: usize| {
            if meta.slots.is_empty() {
                i
            } else {
                meta.slots[i]
            }
        };
        // `begun == 0`: it died before its first item (nothing ran); all go again.
        let failed = begun.checked_sub(1);
        let mut frame = Vec::with_capacity(salvage.frame.len());
        wire::begin(&mut frame);
        let mut slots = Vec::with_capacity(carried);
        let mut ends = Vec::with_capacity(carried);
        let mut start = 0;
        for (i, &end) in meta.ends.iter().enumerate() {
            if Some(i) != failed {
                frame.extend_from_slice(&body[start..end]);
                slots.push(original(i));
                ends.push(frame.len() - HEADER_LEN);
            }
            start = end;
        }
        if let Some(i) = failed {
            meta.settled.push((original(i), error));
        }
        meta.slots = slots;
        meta.ends = ends;
        if meta.slots.is_empty() {
            return Ok(Rerun::Settled(meta));
        }
        let func = task::local_ref(task::call_batch::<F, A, R>);
        let items = meta.slots.len() as u32;
        // Counted when they end, as part of this chunk.
        salvage.unclaimed.claim();
        // The descriptors go again whole: handles are numbered within the chunk. It
        // takes the place of the chunk that died, so it is queued even over the
        // queue's capacity: a map in flight never waits to finish what it began.
        let task = self
            .pool
            .prepare(
                func,
                frame,
                Vec::new(),
                salvage.fds,
                Some(items),
                TaskName::Function(std::any::type_name::<F>()),
            )
            .and_then(|mut t| {
                t.job.resubmitted = true;
                self.pool.queue_over_capacity(t)
            })
            .unwrap_or_else(RawTask::failed);
        Ok(Rerun::Again(Chunk {
            meta: Some(meta),
            task,
        }))
    }

    /// Submits chunks until the in-flight limit, the end of the input, or a full
    /// queue (the chunk then waits in `blocked`).
    fn fill(&mut self) {
        if self.refused || self.blocked.is_some() {
            return;
        }
        let func = task::local_ref(task::call_batch::<F, A, R>);
        // Finished chunks parked for ordering count too: memory stays bounded even
        // when the oldest chunk is the slowest.
        while self.in_flight.len() + self.parked.len() < self.max_in_flight() {
            let room = match self.buffer {
                Some(max) => max.saturating_sub((self.taken - self.yielded) as usize),
                None => usize::MAX,
            };
            if room == 0 || self.timed_out {
                break;
            }
            let chunk_size = self.effective_chunk_size().min(room);
            let mut frame = Vec::new();
            let mut fds = Vec::new();
            wire::begin(&mut frame);
            let mut count = 0;
            let mut ends = Vec::with_capacity(chunk_size.min(4096));
            let mut failed_item = None;
            // One descriptor collection for the whole chunk (see `task::call_batch`).
            handles::collect_into(&mut fds, || {
                while count < chunk_size && frame.len() - HEADER_LEN < CHUNK_BYTES {
                    let Some(item) = self.items.next() else { break };
                    let before = frame.len();
                    self.taken += 1;
                    match wire::encode_into(&item, &mut frame) {
                        Ok(_) => {
                            count += 1;
                            ends.push(frame.len() - HEADER_LEN);
                        }
                        Err(e) => {
                            // Descriptors of the failed item's handles, if any were
                            // collected, go along unclaimed and are closed on arrival.
                            frame.truncate(before);
                            failed_item = Some(TaskError::Encode(CodecError::of::<A>(e)));
                            break;
                        }
                    }
                }
            });
            if count > 0 {
                let prepared = match self.pool.unregistered::<F>(task::call_batch::<F, A, R>) {
                    // A remote pool and a function without a name: nothing is sent.
                    Some(e) => Err(e),
                    None => self.pool.prepare(
                        func,
                        frame,
                        Vec::new(),
                        fds,
                        Some(count as u32),
                        TaskName::Function(std::any::type_name::<F>()),
                    ),
                };
                if let Some(chunking) = &mut self.chunking {
                    chunking.sent(Instant::now());
                }
                match prepared.map(|t| self.pool.try_queue(t)) {
                    Ok(Ok(raw)) => self.push(count, raw, ends),
                    Err(e) | Ok(Err(NotQueued::Refused(e))) => {
                        self.push(count, RawTask::failed(e), ends)
                    }
                    Ok(Err(NotQueued::Full(task))) => {
                        self.blocked = Some(Blocked {
                            task: *task,
                            count,
                            ends,
                            room: Box::pin(self.pool.room()),
                        });
                    }
                }
            }
            match failed_item {
                Some(e) => self.push(1, RawTask::failed(e), Vec::new()),
                None if count == 0 => break, // input exhausted
                None => {}
            }
            if self.blocked.is_some() {
                break;
            }
        }
    }

    /// Queues the chunk that waited for room, once there is room: true if it moved.
    fn poll_blocked(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(blocked) = &mut self.blocked else {
            return false;
        };
        let Poll::Ready(room) = blocked.room.as_mut().poll(cx) else {
            return false;
        };
        let Some(Blocked {
            task, count, ends, ..
        }) = self.blocked.take()
        else {
            return false;
        };
        let raw = if room {
            self.pool.send_reserved(task)
        } else {
            // Closed while it waited: shut down, or unable to start workers.
            self.pool.refusal().and(Err(super::TaskError::Shutdown))
        };
        self.push(count, raw.unwrap_or_else(RawTask::failed), ends);
        true
    }

    /// Queues a chunk's results to be yielded; a chunk that arrives with nothing
    /// queued becomes the queue (its results are not moved one by one).
    fn make_ready(&mut self, items: VecDeque<Outcome<R>>) {
        if self.ready.is_empty() {
            self.ready = items;
        } else {
            self.ready.extend(items);
        }
    }

    /// Moves the results queued now into `out`, up to the first error, which it
    /// returns (what is behind it stays queued). For [`MapFuture`], which would
    /// otherwise take them one `poll_next` at a time.
    ///
    /// [`MapFuture`]: super::map_future::MapFuture
    pub(super) fn drain_ready(&mut self, out: &mut Vec<R>) -> Option<TaskError> {
        let oks = self.ready.iter().take_while(|r| r.is_ok()).count();
        out.extend(self.ready.drain(..oks).flatten());
        self.yielded += oks as u64;
        let err = match self.ready.pop_front() {
            Some(Err(e)) => *e,
            _ => return None,
        };
        self.yielded += 1;
        Some(err)
    }

    /// Turns a finished chunk into one result per item of the chunk as first sent.
    fn unpack(meta: ChunkMeta, result: Result<Payload, TaskError>) -> VecDeque<Outcome<R>> {
        let here = Self::unpack_carried(meta.carried(), result);
        if meta.slots.is_empty() && meta.settled.is_empty() {
            return here;
        }
        let mut all: Vec<Option<Outcome<R>>> = (0..meta.count).map(|_| None).collect();
        let identity = meta.slots.is_empty();
        for (k, r) in here.into_iter().enumerate() {
            let i = if identity { k } else { meta.slots[k] };
            if let Some(slot) = all.get_mut(i) {
                *slot = Some(r);
            }
        }
        for (i, e) in meta.settled {
            if let Some(slot) = all.get_mut(i) {
                *slot = Some(Err(Box::new(e)));
            }
        }
        all.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Box::new(TaskError::Decode(CodecError::of::<R>(
                        "no result for this item",
                    ))))
                })
            })
            .collect()
    }

    /// One result per item the chunk's task carried.
    fn unpack_carried(count: usize, result: Result<Payload, TaskError>) -> VecDeque<Outcome<R>> {
        let mut out = VecDeque::with_capacity(count);
        match result {
            Err(e) => out.extend(std::iter::repeat_n(e, count).map(|e| Err(Box::new(e)))),
            Ok(Payload { body, fds, .. }) => {
                let mut fds = fds.into_iter().map(Some).collect();
                let mut rest = body.as_slice();
                let mut last_error = None;
                handles::supply_from(&mut fds, || {
                    while out.len() < count && !rest.is_empty() {
                        match postcard::take_from_bytes::<Result<R, Failure>>(rest) {
                            Ok((item, tail)) => {
                                rest = tail;
                                let item = item.map_err(|f| Box::new(TaskError::from(f)));
                                if let Err(e) = &item {
                                    last_error = Some(TaskError::clone(e));
                                }
                                out.push_back(item);
                            }
                            Err(e) => {
                                last_error = Some(TaskError::Decode(CodecError::of::<R>(
                                    handles::reason(&e),
                                )));
                                break;
                            }
                        }
                    }
                });
                // Items the worker could not answer (a chunk cut short by an argument
                // that did not decode) share the error that ended the chunk.
                let missing = last_error.unwrap_or_else(|| {
                    TaskError::Decode(CodecError::of::<R>(
                        "the worker returned fewer results than items",
                    ))
                });
                while out.len() < count {
                    out.push_back(Err(Box::new(missing.clone())));
                }
            }
        }
        out
    }
}

impl<F, I, A, R> Stream for MapStream<F, I, R>
where
    F: Task<A, R>,
    I: Iterator<Item = A>,
    A: Message,
    R: Message,
{
    type Item = Result<R, TaskError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.ready.pop_front() {
                this.yielded += 1;
                return Poll::Ready(Some(item.map_err(|e| *e)));
            }
            if this.timed_out {
                return Poll::Ready(None);
            }
            this.fill();
            if this.poll_blocked(cx) {
                continue;
            }
            match this.in_flight.poll_next_unpin(cx) {
                Poll::Ready(Some((meta, result, salvage))) => {
                    let meta = match (result, salvage) {
                        (
                            Err(
                                e
                                @ (TaskError::WorkerDied { .. } | TaskError::LimitExceeded { .. }),
                            ),
                            Some(salvage),
                        ) => match this.rerun(meta, salvage, e.clone()) {
                            Ok(Rerun::Again(chunk)) => {
                                this.in_flight.push(chunk);
                                continue;
                            }
                            Ok(Rerun::Settled(meta)) => (meta, Err(e)),
                            Err(meta) => (meta, Err(e)),
                        },
                        (result, _) => (meta, result),
                    };
                    let (meta, result) = meta;
                    if let Some(chunking) = &mut this.chunking {
                        chunking.answered(meta.count, this.pool.workers(), Instant::now());
                    }
                    let seq = meta.seq;
                    let items = Self::unpack(meta, result);
                    if this.ordered {
                        this.parked.insert(seq, items);
                        while let Some(items) = this.parked.remove(&this.emit_seq) {
                            this.make_ready(items);
                            this.emit_seq += 1;
                        }
                    } else {
                        this.make_ready(items);
                    }
                }
                // Nothing in flight, but a chunk waits for room: its waker is set.
                Poll::Ready(None) if this.blocked.is_some() => return this.pending(cx),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return this.pending(cx),
            }
        }
    }

    /// Results still to come: items taken and not yet yielded, plus what the input
    /// says it still holds. A refused map (`chunk_size(0)`) yields its one error.
    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.refused {
            let n = self.ready.len();
            return (n, Some(n));
        }
        let pending = (self.taken - self.yielded) as usize;
        let (low, high) = self.items.size_hint();
        (
            pending.saturating_add(low),
            high.and_then(|h| h.checked_add(pending)),
        )
    }
}

impl<F, I: Iterator, R> fmt::Debug for MapStream<F, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapStream")
            .field("ordered", &self.ordered)
            .field("chunk_size", &self.chunking.as_ref().map(Chunking::size))
            .field("chunks_in_flight", &self.in_flight.len())
            .field("waiting_for_room", &self.blocked.is_some())
            .finish()
    }
}
