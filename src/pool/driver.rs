//! The driver: one tokio task per worker slot.
//!
//! A driver owns one worker process at a time. It starts it (eagerly, when the pool is
//! built), takes jobs from the shared queue when its worker has room, writes them to
//! the worker's socket and matches the replies to them in order, while watching for
//! cancellations, the running task's timeout, a `shutdown_now` and the worker's death.
//! Whatever ends a worker, the driver reaps it and starts the next one; the pool never
//! becomes "broken".
//!
//! # Pipelining
//! A worker that waits for its parent between tasks is idle for a reply's trip back,
//! the parent's turn-around and the next task's trip out. When the worker's replies
//! come quickly ([`Pace`]), the driver sends it up to
//! [`DEPTH_MAX`](super::progress::DEPTH_MAX) tasks ahead, so that it goes from one to
//! the next without waiting. Tasks that take long go one at a time, so an idle worker
//! never waits behind a busy one's queue. The progress page ([`super::progress`]) says
//! which of the tasks sent have started: cancelling one that has not is a skip, and
//! when a worker is lost, only the task it was running fails; the ones behind it go to
//! the next worker, never run twice and never lost.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::error::{Error, ProtocolError, TaskError};
use crate::pool::handle::Job;
use crate::pool::progress::DEPTH_MAX;
use crate::pool::worker::{Io, StartError, Worker};
use crate::pool::Inner;
use crate::sys::sock::MAX_PARTS;
use crate::wire::stream::Frame;
use crate::wire::{self, Failure, Kind, Payload, ReadError, FLAG_FAILED, FLAG_SKIPPED};

/// Workers that fail their handshake this many times in a row make the pool give up.
const MAX_START_FAILURES: u32 = 3;

pub(crate) async fn drive(inner: Arc<Inner>) {
    let _alive = AliveGuard(inner.clone());
    let mut driver = Driver {
        inner,
        worker: None,
        flights: VecDeque::new(),
        unsent: 0,
        written: 0,
        retry: VecDeque::new(),
        signal: Arc::new(Notify::new()),
        pace: Pace::default(),
        head_since: Instant::now(),
        queue_ended: false,
        idle_since: None,
        start_failures: 0,
        spawn_error: None,
        announced: false,
    };
    driver.run().await;
    driver.leave().await;
}

/// A job written (or being written) to the worker and not answered yet.
struct Flight {
    job: Job,
    /// Its number on the worker's progress page.
    seq: u64,
    /// Set when it was cancelled or timed out after it was sent: the answer, whatever
    /// the worker replies.
    verdict: Option<Verdict>,
}

#[derive(Clone, Copy)]
enum Verdict {
    Cancelled,
    TimedOut(Duration),
}

impl Verdict {
    fn error(self) -> TaskError {
        match self {
            Verdict::Cancelled => TaskError::Cancelled,
            Verdict::TimedOut(after) => TaskError::TimedOut { after },
        }
    }
}

/// Why a worker with tasks in flight is being given up.
enum Loss {
    /// Killed by us, to stop the task a verdict was passed on.
    Killed,
    /// It died (or closed its socket) by itself.
    Died,
    /// It sent something we do not accept.
    Protocol(ProtocolError),
}

enum Event {
    Abort,
    Cancel,
    Io(Io),
    TimedOut,
    Job(Option<Job>),
}

struct Driver {
    inner: Arc<Inner>,
    worker: Option<Worker>,
    /// In the order written; the worker answers in this order.
    flights: VecDeque<Flight>,
    /// `flights[..unsent]` are completely written; `flights[unsent]` has `written`
    /// bytes out.
    unsent: usize,
    written: usize,
    /// Jobs sent to a worker that was lost before it started them: sent first.
    retry: VecDeque<Job>,
    /// Woken by a cancellation of any task this driver dispatched.
    signal: Arc<Notify>,
    pace: Pace,
    /// Since when the first flight is the one the worker runs (or runs next).
    head_since: Instant,
    /// The job queue is closed and drained.
    queue_ended: bool,
    /// Since when nothing is in flight (for [`Pace::idled`]).
    idle_since: Option<Instant>,
    start_failures: u32,
    spawn_error: Option<io::Error>,
    /// Whether this slot has reported its first worker ready to
    /// `ProcessPoolExecutor::ready`.
    announced: bool,
}

impl Driver {
    async fn run(&mut self) {
        loop {
            if self.worker.is_none() && self.spawn_error.is_none() && !self.start_worker().await {
                return;
            }
            if self.flights.is_empty() {
                let job = match self.retry.pop_front() {
                    Some(job) => job,
                    None => match self.next_job_soon().await {
                        Some(job) => job,
                        None => {
                            let worker = self.worker.as_ref();
                            tokio::select! {
                                biased;
                                _ = self.inner.abort.cancelled() => return,
                                // Before taking a job: a worker known dead must not get one.
                                _ = idle_exit(worker) => {
                                    self.lose_idle_worker().await;
                                    continue;
                                }
                                job = self.inner.next_job() => match job {
                                    Some(job) => job,
                                    None => return, // closed and drained: shutdown
                                },
                            }
                        }
                    },
                };
                if let Some(since) = self.idle_since.take() {
                    self.pace.idled(since.elapsed());
                }
                self.dispatch(job);
            }
            self.fill();
            if self.flights.is_empty() {
                continue;
            }
            if self.write().is_err() {
                self.lose(Loss::Died).await;
                continue;
            }

            let writing = self.unsent < self.flights.len();
            let want_job = !writing && !self.queue_ended && self.has_room();
            // Polling for a reply pays only when one task at a time is the pattern
            // (latency); with others in flight or waiting the worker is busy anyway.
            let spin = if self.flights.len() == 1 && self.inner.jobs.is_empty() {
                self.pace.spin()
            } else {
                Duration::ZERO
            };
            let deadline = self.head_deadline();
            let Some(worker) = self.worker.as_mut() else {
                continue;
            };
            let event = tokio::select! {
                biased;
                _ = self.inner.abort.cancelled() => Event::Abort,
                _ = self.signal.notified() => Event::Cancel,
                io = worker.next_io(spin, writing) => Event::Io(io),
                _ = until(deadline) => Event::TimedOut,
                job = self.inner.next_job(), if want_job => Event::Job(job),
            };
            match event {
                Event::Abort => return,
                Event::Cancel => self.on_cancel().await,
                Event::Io(Io::Reply(Ok(frame))) => {
                    if let Err(e) = self.on_reply(frame) {
                        self.lose(Loss::Protocol(e)).await;
                    } else {
                        self.maybe_recycle().await;
                    }
                }
                Event::Io(Io::Reply(Err(ReadError::Protocol(e)))) => {
                    self.lose(Loss::Protocol(e)).await
                }
                Event::Io(Io::Reply(Err(ReadError::Eof | ReadError::Io(_)))) => {
                    self.lose(Loss::Died).await
                }
                Event::Io(Io::Writable(Ok(()))) => {}
                Event::Io(Io::Writable(Err(_))) => self.lose(Loss::Died).await,
                Event::TimedOut => self.on_timeout().await,
                Event::Job(Some(job)) => self.dispatch(job),
                Event::Job(None) => self.queue_ended = true,
            }
        }
    }

    /// Starts a worker; false if the pool must stop (abort, or workers can never
    /// start).
    async fn start_worker(&mut self) -> bool {
        let started = tokio::select! {
            biased;
            _ = self.inner.abort.cancelled() => return false,
            r = Worker::start(&self.inner.config) => r,
        };
        match started {
            Ok(w) => {
                self.worker = Some(w);
                self.start_failures = 0;
                if !std::mem::replace(&mut self.announced, true) {
                    self.inner.startup.send_modify(|s| s.ready += 1);
                }
            }
            Err(StartError::Fatal(e)) => {
                self.inner.fail(e);
                return false;
            }
            Err(StartError::Transient(reason)) => {
                self.start_failures += 1;
                if self.start_failures >= MAX_START_FAILURES {
                    self.inner.fail(Error::Handshake { reason });
                    return false;
                }
            }
            Err(StartError::Spawn(e)) => {
                if !self.announced {
                    let err = Error::Spawn(crate::error::clone_io(&e));
                    self.inner.startup.send_modify(|s| {
                        s.error.get_or_insert(err);
                    });
                }
                // Fail the next task with this error rather than retrying in a hot
                // loop; try again after that.
                self.spawn_error = Some(e);
            }
        }
        true
    }

    /// Whether the worker may be sent another task now.
    fn has_room(&self) -> bool {
        let Some(w) = &self.worker else {
            return false;
        };
        let n = self.flights.len();
        let depth = self
            .inner
            .config
            .pipeline
            .unwrap_or_else(|| self.pace.depth());
        n < depth
            && self
                .inner
                .config
                .max_tasks_per_worker
                .is_none_or(|max| w.tasks_done + (n as u64) < max)
    }

    /// A job that arrives within the idle poll (see [`Pace`]); `None` when there is
    /// no poll to do or nothing came.
    async fn next_job_soon(&mut self) -> Option<Job> {
        let spin = self.pace.idle_spin();
        if spin.is_zero() || self.worker.is_none() {
            return None;
        }
        let until = Instant::now() + spin;
        loop {
            if let Some(job) = self.inner.try_next_job() {
                return Some(job);
            }
            if self.inner.abort.is_cancelled() || Instant::now() >= until {
                return None;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Takes jobs that are already waiting while the worker has room.
    fn fill(&mut self) {
        while self.has_room() {
            let job = match self.retry.pop_front() {
                Some(job) => job,
                None => match self.inner.try_next_job() {
                    Some(job) => job,
                    None => break,
                },
            };
            self.dispatch(job);
        }
    }

    /// Hands `job` to the worker (it is written by [`write`](Self::write)), or
    /// resolves it at once if it cannot or need not run.
    fn dispatch(&mut self, job: Job) {
        let counters = &self.inner.counters;
        if let Some(e) = self.spawn_error.take() {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            job.resolve(Err(TaskError::Spawn(e)));
            return;
        }
        let Some(w) = self.worker.as_mut() else {
            // Unreachable: a worker exists unless spawning failed (handled above).
            job.resolve(Err(TaskError::Cancelled));
            return;
        };
        let seq = w.queue_next();
        if job.abandoned() || !job.shared.start(w.pid(), &self.signal, w.progress(), seq) {
            w.unqueue();
            counters.cancelled.fetch_add(1, Ordering::Relaxed);
            job.resolve(Err(TaskError::Cancelled));
            return;
        }
        counters.running.fetch_add(1, Ordering::Relaxed);
        if self.flights.is_empty() {
            self.head_since = Instant::now();
        }
        self.flights.push_back(Flight {
            job,
            seq,
            verdict: None,
        });
    }

    /// Writes what the socket takes of the flights not yet written: as many frames
    /// per `sendmsg` as it takes (the first from where it stopped, with its
    /// descriptors if none went yet, then whole frames that carry none). Jobs keep
    /// their buffers and descriptors, so that one sent to a worker that dies before
    /// beginning it can be sent again.
    fn write(&mut self) -> io::Result<()> {
        let Some(w) = self.worker.as_ref() else {
            return Ok(());
        };
        while self.unsent < self.flights.len() {
            let sent = {
                let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
                let mut n = 0;
                let first = &self.flights[self.unsent].job;
                let fds: Vec<_> = match self.written {
                    0 => first.fds.iter().map(AsFd::as_fd).collect(),
                    _ => Vec::new(),
                };
                let (frame, tail) = (&first.frame[..], &first.tail[..]);
                if self.written < frame.len() {
                    parts[n] = &frame[self.written..];
                    n += 1;
                }
                let tail_from = self.written.saturating_sub(frame.len());
                if tail_from < tail.len() {
                    parts[n] = &tail[tail_from..];
                    n += 1;
                }
                for f in self.flights.range(self.unsent + 1..) {
                    if !f.job.fds.is_empty() || n + 2 > MAX_PARTS {
                        break;
                    }
                    parts[n] = &f.job.frame;
                    n += 1;
                    if !f.job.tail.is_empty() {
                        parts[n] = &f.job.tail;
                        n += 1;
                    }
                }
                match w.send_now(&parts[..n], &fds) {
                    Ok(sent) => sent,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            };
            let mut left = sent;
            while left > 0 {
                let job = &self.flights[self.unsent].job;
                let rest = job.frame.len() + job.tail.len() - self.written;
                if left < rest {
                    self.written += left;
                    break;
                }
                left -= rest;
                self.unsent += 1;
                self.written = 0;
            }
        }
        Ok(())
    }

    /// When the first flight must be answered by (`task_timeout`).
    fn head_deadline(&self) -> Option<Instant> {
        let timeout = self.inner.config.task_timeout?;
        match self.flights.front() {
            Some(f) if f.verdict.is_none() => Some(self.head_since + timeout),
            _ => None,
        }
    }

    /// Matches a reply to the first flight and resolves it.
    fn on_reply(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let Frame { header, body, fds } = frame;
        let expected = match self.flights.front() {
            Some(f) if self.unsent > 0 => f.job.id,
            _ => u64::MAX,
        };
        if header.kind != Kind::Done || header.id != expected {
            return Err(ProtocolError::Unexpected {
                what: format!(
                    "{:?} for task {} while waiting for task {expected}",
                    header.kind, header.id
                ),
            });
        }
        let f = self.flights.pop_front().expect("checked above");
        self.unsent -= 1;
        let now = Instant::now();
        self.pace.replied(now - self.head_since);
        self.head_since = now;
        let skipped = header.flags & FLAG_SKIPPED != 0;
        let mut broken = None;
        let result = if skipped {
            Err(f.verdict.unwrap_or(Verdict::Cancelled).error())
        } else if let Some(v) = f.verdict {
            Err(v.error())
        } else if f.job.shared.cancel_requested() {
            // Cancelled while it ran; it finished before the driver acted on it.
            Err(TaskError::Cancelled)
        } else if header.flags & FLAG_FAILED != 0 {
            match wire::decode_control::<Failure>(&body) {
                Ok(failure) => Err(failure.into()),
                Err(e) => {
                    broken = Some(e.clone());
                    Err(TaskError::Protocol(e))
                }
            }
        } else {
            Ok(Payload { body, fds })
        };
        if !skipped {
            if let Some(w) = self.worker.as_mut() {
                w.tasks_done += 1;
            }
        }
        self.resolve(f.job, result);
        if self.flights.is_empty() {
            self.idle_since = Some(now);
        }
        broken.map_or(Ok(()), Err)
    }

    /// Counts and resolves a job that was in flight.
    fn resolve(&self, job: Job, result: Result<Payload, TaskError>) {
        let c = &self.inner.counters;
        c.running.fetch_sub(1, Ordering::Relaxed);
        let counter = match &result {
            Ok(_) => &c.completed,
            Err(TaskError::Cancelled) => &c.cancelled,
            Err(_) => &c.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        job.resolve(result);
    }

    /// The first flight's time is up. The clock runs from when the worker could
    /// begin it; if it has not begun it yet (a descheduled worker), it starts again.
    async fn on_timeout(&mut self) {
        let (Some(after), Some(w), Some(head)) = (
            self.inner.config.task_timeout,
            self.worker.as_ref(),
            self.flights.front(),
        ) else {
            return;
        };
        if !w.progress().started(head.seq) {
            self.head_since = Instant::now();
            return;
        }
        if self.decide(0, Verdict::TimedOut(after)) {
            self.lose(Loss::Killed).await;
        }
    }

    /// Acts on cancellations of flights.
    async fn on_cancel(&mut self) {
        for i in 0..self.flights.len() {
            let f = &self.flights[i];
            if f.verdict.is_none()
                && f.job.shared.cancel_requested()
                && self.decide(i, Verdict::Cancelled)
            {
                // The others' cancellations are seen again when they are sent anew.
                self.lose(Loss::Killed).await;
                return;
            }
        }
    }

    /// Passes `verdict` on flight `i`; true if the worker must be killed for it.
    ///
    /// A flight the worker has not started is marked to be skipped. One it has
    /// started is stopped by killing the worker, but only after making sure nothing
    /// behind it has started: if the next flight is already running, this one is
    /// finished and its reply is on its way (answered with the verdict).
    fn decide(&mut self, i: usize, verdict: Verdict) -> bool {
        let Some(w) = self.worker.as_ref() else {
            return false;
        };
        let f = &mut self.flights[i];
        f.verdict = Some(verdict);
        if w.progress().skip(f.seq) {
            return false;
        }
        match self.flights.get(i + 1) {
            None => true,
            Some(next) => w.progress().hold(next.seq),
        }
    }

    /// Gives up the worker with tasks in flight: reaps it, takes the replies it wrote
    /// before it ended, fails the one task it had started and not answered, and keeps
    /// the ones it never started for the next worker.
    async fn lose(&mut self, loss: Loss) {
        let Some(mut w) = self.worker.take() else {
            return;
        };
        let exit = match loss {
            Loss::Died => w.wait().await,
            Loss::Killed | Loss::Protocol(_) => w.kill().await,
        };
        // Counted now, before the task resolves: a worker lost is a restart owed.
        self.inner.counters.restarts.fetch_add(1, Ordering::Relaxed);
        let mut protocol = match loss {
            Loss::Protocol(e) => Some(e),
            Loss::Killed | Loss::Died => None,
        };
        if protocol.is_none() {
            while self.unsent > 0 {
                let Some(frame) = w.buffered_reply() else {
                    break;
                };
                if let Err(e) = self.on_reply(frame) {
                    protocol = Some(e);
                    break;
                }
            }
        }
        // The process is reaped: its progress page no longer changes.
        let mut again = VecDeque::new();
        for f in std::mem::take(&mut self.flights) {
            let error = match (f.verdict, w.progress().started(f.seq)) {
                (Some(v), _) => Some(v.error()),
                (None, true) => Some(match protocol.take() {
                    Some(e) => TaskError::Protocol(e),
                    None => TaskError::WorkerDied { exit },
                }),
                (None, false) if f.job.shared.cancel_requested() => Some(TaskError::Cancelled),
                (None, false) => None,
            };
            match error {
                Some(e) => self.resolve(f.job, Err(e)),
                None => {
                    self.inner.counters.running.fetch_sub(1, Ordering::Relaxed);
                    again.push_back(f.job);
                }
            }
        }
        // Never started: first in line for the next worker, in their order.
        while let Some(job) = again.pop_back() {
            self.retry.push_front(job);
        }
        self.unsent = 0;
        self.written = 0;
    }

    /// The idle worker died (killed from outside); no task is lost.
    async fn lose_idle_worker(&mut self) {
        if let Some(mut dead) = self.worker.take() {
            dead.wait().await;
        }
        self.inner.counters.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Retires the worker once it has run `max_tasks_per_worker` tasks.
    async fn maybe_recycle(&mut self) {
        let Some(max) = self.inner.config.max_tasks_per_worker else {
            return;
        };
        if !self.flights.is_empty() || self.worker.as_ref().is_none_or(|w| w.tasks_done < max) {
            return;
        }
        if let Some(w) = self.worker.take() {
            w.retire().await;
            self.inner.counters.recycled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Leaving: graceful (queue closed and drained) or abort (`shutdown_now`, drop).
    async fn leave(&mut self) {
        if !self.announced {
            self.inner.startup.send_modify(|s| s.gave_up += 1);
        }
        if let Some(mut w) = self.worker.take() {
            if self.inner.abort.is_cancelled() || !self.flights.is_empty() {
                w.kill().await;
            } else {
                w.retire().await;
            }
        }
        for f in std::mem::take(&mut self.flights) {
            self.resolve(f.job, Err(TaskError::Cancelled));
        }
        for job in std::mem::take(&mut self.retry) {
            self.inner
                .counters
                .cancelled
                .fetch_add(1, Ordering::Relaxed);
            job.resolve(Err(TaskError::Cancelled));
        }
    }
}

/// How quickly this worker answers, and what the driver makes of it.
///
/// `service` is a moving average of the time from one reply to the next while tasks
/// are in flight (for one task at a time: from sending it to its reply). From it:
/// - the pipeline depth: enough tasks to keep the worker busy for about
///   [`Pace::AHEAD`], at most `DEPTH_MAX`, one until anything is known. (Measured
///   with `cargo bench --bench compare -- --only W2` on the 2-vCPU VM of
///   BENCHMARKS.md: 16 deep and 200 µs ahead gave 260-281k submits/s, 64 and
///   400 µs 311-356k. The price: up to 400 µs of short tasks may wait behind a
///   busy worker while another is idle.)
/// - the spin: while a reply is awaited, poll for up to twice the typical reply time
///   before sleeping on the reactor, if that is under [`Pace::SPIN_MAX`]. Only with
///   a task in flight: an idle pool never spins.
///
/// Likewise between tasks: `gap` is a moving average of the time from the last reply
/// to the next job; while it is under [`Pace::SPIN_MAX`] (a caller awaiting one task
/// after another), the idle driver polls the queue for up to twice that before
/// parking, so the next submit does not have to wake it.
#[derive(Default)]
struct Pace {
    service: Option<Duration>,
    gap: Option<Duration>,
}

impl Pace {
    const AHEAD: Duration = Duration::from_micros(400);
    const SPIN_MAX: Duration = Duration::from_micros(50);

    fn replied(&mut self, took: Duration) {
        self.service = Some(match self.service {
            None => took,
            Some(avg) => (avg * 3 + took) / 4,
        });
    }

    fn idled(&mut self, gap: Duration) {
        self.gap = Some(match self.gap {
            None => gap,
            Some(avg) => (avg * 3 + gap) / 4,
        });
    }

    fn idle_spin(&self) -> Duration {
        match self.gap {
            Some(g) if g < Self::SPIN_MAX => (g * 2).min(Self::SPIN_MAX),
            _ => Duration::ZERO,
        }
    }

    fn depth(&self) -> usize {
        match self.service {
            None => 1,
            Some(s) => {
                let per = s.as_nanos().max(1);
                ((Self::AHEAD.as_nanos() / per) as usize).clamp(1, DEPTH_MAX)
            }
        }
    }

    fn spin(&self) -> Duration {
        match self.service {
            Some(s) if s < Self::SPIN_MAX => (s * 2).min(Self::SPIN_MAX),
            _ => Duration::ZERO,
        }
    }
}

/// Resolves at `deadline`; never, without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves when an idle worker's process exits; never, if there is no worker.
async fn idle_exit(worker: Option<&Worker>) {
    match worker {
        Some(w) => w.exited().await,
        None => std::future::pending().await,
    }
}

impl From<Failure> for TaskError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Panicked { message, location } => TaskError::Panicked { message, location },
            Failure::Encode { type_name, reason } => TaskError::Encode { type_name, reason },
            Failure::Decode { type_name, reason } => TaskError::Decode { type_name, reason },
            Failure::UnknownFunction { reason } => {
                TaskError::Protocol(ProtocolError::Unexpected { what: reason })
            }
            Failure::Runtime { reason } => TaskError::WorkerRuntime { reason },
            Failure::InitializerFailed { message } => TaskError::WorkerStart(Error::Initializer {
                message,
                location: None,
            }),
        }
    }
}

/// Counts a driver out when it ends, however it ends (also when its runtime drops it).
struct AliveGuard(Arc<Inner>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.send_modify(|n| *n -= 1);
    }
}
