//! The driver: one tokio task per worker slot.
//!
//! A driver owns one worker process at a time. It starts it (eagerly, when the pool is
//! built), takes jobs from the shared queue when its worker has room, writes them to
//! the worker's ring (or, too large for a slot, its socket; see
//! [`crate::wire::ring`]) and matches the replies to them in order, while watching for
//! cancellations, the running task's timeout, a `shutdown_now` and the worker's death
//! (its pidfd, not only its socket: a grandchild that inherited the socket does not
//! hide it). Whatever ends a worker, the driver kills what the worker left in its
//! process group, reaps it and starts the next one; the pool never becomes "broken".
//!
//! # Starting workers
//! A start that fails is retried with back-off ([`start::backoff`]), for as long as the pool
//! lives; meanwhile the slot takes no job, so tasks wait in the queue for a slot that
//! has a worker. Only a failure no retry can heal (another build, a failing
//! initializer) ends the pool.
//!
//! # Pipelining
//! A worker that waits for its parent between tasks is idle for a reply's trip back,
//! the parent's turn-around and the next task's trip out. When the worker's replies
//! come quickly ([`Pace`]), the driver sends it up to
//! [`DEPTH_MAX`](crate::worker::progress::DEPTH_MAX) tasks ahead, so that it goes from one to
//! the next without waiting. The progress page ([`crate::worker::progress`]) says which of
//! the tasks sent have started: cancelling one that has not is a skip, and when a
//! worker is lost, only the task it was running fails; the ones behind it go back to
//! the queue, never run twice and never lost.
//!
//! No task waits behind another while a worker is idle: a driver sends nothing ahead
//! while another driver is idle, and when one becomes idle while this worker's current
//! task has run for longer than [`GIVE_BACK_AFTER`], the tasks sent behind it that it
//! has not begun are marked skipped on the page and handed back to the queue
//! ([`JobQueue`](super::jobs::JobQueue)), for the idle driver to take. Two tasks that
//! wait for each other (a barrier, a queue hand-off) therefore never deadlock in one
//! worker while another is free.

#[cfg(feature = "tracing")]
mod callsites;
mod end;
mod idle;
mod lend;
#[cfg(feature = "tracing")]
mod replay;
mod send;
mod start;

use end::Loss;
use idle::Idle;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::error::{ProtocolError, TaskError};
use crate::pool::direct::Home;
use crate::pool::handle::Job;
use crate::pool::jobs::IdleWaiter;
use crate::pool::pace::Pace;
use crate::pool::worker_process::{Io, WorkerProcess};
use crate::pool::{reply, Inner};
use crate::wire::stream::Frame;
use crate::wire::{self, Payload, ReadError, FLAG_SKIPPED};
use crate::worker::progress::Hold;

/// How long a worker's current task may run, with tasks sent behind it and another
/// driver idle, before those tasks are handed back. Pipelining aims at about this much
/// work ahead ([`Pace`]), so a task over it is not one of the short ones pipelining is
/// for.
pub(crate) const GIVE_BACK_AFTER: Duration = Pace::AHEAD;

/// Replies a driver takes from the ring in a row before it waits once, looking at
/// cancels, timeouts and the abort.
const QUICK_MAX: u32 = 16;

/// Starts a slot if the pool has room for one: counts it, then spawns its driver.
pub(crate) fn spawn_slot(inner: &Arc<Inner>) {
    if inner.scale.add_slot() {
        spawn_counted_slot(inner);
    }
}

/// Spawns the driver of a slot already counted ([`Scale::add_slot`]).
///
/// [`Scale::add_slot`]: crate::pool::scale::Scale::add_slot
pub(crate) fn spawn_counted_slot(inner: &Arc<Inner>) {
    inner.alive.send_modify(|n| *n += 1);
    // Detached: a driver ends by itself once the queue is closed and drained, on
    // abort, or when its slot retires, after reaping its worker.
    drop(inner.runtime.spawn(drive(inner.clone())));
}

async fn drive(inner: Arc<Inner>) {
    let _alive = AliveGuard(inner.clone());
    let mut driver = Driver {
        inner,
        worker: None,
        flights: VecDeque::new(),
        unsent: 0,
        written: 0,
        spilling: false,
        signal: Arc::new(Notify::new()),
        waiter: Arc::default(),
        pace: Pace::default(),
        head_since: Instant::now(),
        head_since_ns: 0,
        queue_ended: false,
        idle_since: None,
        failing: false,
        ahead: false,
        give_back_armed: true,
        starting: true,
        home: Arc::default(),
        lent: false,
        offerable: true,
        quick: 0,
        callers_lately: false,
        spare: None,
        #[cfg(feature = "tracing")]
        replay: replay::Replay::default(),
    };
    let retired = driver.run().await;
    driver.inner.jobs.leave_idle(&driver.waiter);
    if retired {
        // A job queued just as this slot chose to retire saw it idle and started no
        // slot for itself: start one now if it is still waiting.
        driver.inner.grow();
    }
    driver.leave(retired).await;
    if !retired {
        driver.inner.scale.slot_ended();
    }
    if driver.starting {
        // It never had a worker up.
        driver.inner.scale.started();
    }
}

/// A job written (or being written) to the worker and not answered yet.
struct Flight {
    /// `None` once handed back to the queue (the worker's reply is "skipped").
    job: Option<Job>,
    id: u64,
    /// Its number on the worker's progress page.
    seq: u64,
    /// Set when it was cancelled, timed out or handed back after it was sent: the
    /// answer, whatever the worker replies.
    verdict: Option<Verdict>,
    /// How long it may run: its own timeout, else the pool's.
    timeout: Option<Duration>,
    /// When it is told to stop (`soft_timeout_expired`), and whether it was.
    soft: Option<Duration>,
    told: bool,
}

impl Flight {
    /// Task `seq` on the worker's progress page, with no verdict yet; `task_timeout`
    /// is the pool's, for a job without a timeout of its own.
    fn new(job: Job, seq: u64, task_timeout: Option<Duration>) -> Flight {
        Flight {
            id: job.id,
            timeout: job.timeout.or(task_timeout),
            soft: job.soft_timeout,
            told: false,
            job: Some(job),
            seq,
            verdict: None,
        }
    }
}

#[derive(Clone, Copy)]
enum Verdict {
    Cancelled,
    TimedOut(Duration),
    /// Handed back to the queue before the worker began it.
    Moved,
}

impl Verdict {
    fn error(self) -> TaskError {
        match self {
            Verdict::Cancelled | Verdict::Moved => TaskError::Cancelled,
            Verdict::TimedOut(after) => TaskError::TimedOut { after },
        }
    }
}

enum Event {
    Abort,
    Cancel,
    Io(Io),
    TimedOut,
    GiveBack,
    Job(Option<Job>),
}

struct Driver {
    inner: Arc<Inner>,
    worker: Option<WorkerProcess>,
    /// In the order written; the worker answers in this order.
    flights: VecDeque<Flight>,
    /// `flights[..unsent]` are completely written; `flights[unsent]` has `written`
    /// bytes out on the socket, once `spilling` (announced in the ring).
    unsent: usize,
    written: usize,
    spilling: bool,
    /// Woken by a cancellation of any task this driver dispatched.
    signal: Arc<Notify>,
    /// Its place among the idle drivers (see `JobQueue::next_idle`).
    waiter: Arc<IdleWaiter>,
    pace: Pace,
    /// Since when the first flight is the one the worker runs (or runs next), and the
    /// same on the clock the worker stamps its replies with.
    head_since: Instant,
    head_since_ns: u64,
    /// The job queue is closed and drained.
    queue_ended: bool,
    /// Since when nothing is in flight (for [`Pace::idled`]).
    idle_since: Option<Instant>,
    /// This slot's last start attempt failed (counted in `Health::failing`).
    failing: bool,
    /// More than one flight (counted by the queue, see `JobQueue::set_ahead`).
    ahead: bool,
    /// Whether to watch for an idle driver to hand flights to; off after an attempt
    /// until the flights change, so that nothing to hand back is not a busy loop.
    give_back_armed: bool,
    /// No worker of this slot has been up yet (counted in `Scale::starting`).
    starting: bool,
    /// Where the worker's ring comes back when it is lent ([`crate::pool::direct`]).
    home: Arc<Home>,
    /// The ring is lent: the driver touches neither it nor the worker until it
    /// takes it back ([`reclaim`](Self::reclaim)).
    lent: bool,
    /// Whether to lend the ring when idle: not after it was sent away from the desk
    /// for another driver's, until this one answers a task again.
    offerable: bool,
    /// Replies taken in a row without waiting (at most [`QUICK_MAX`]).
    quick: u32,
    /// The last task came through the lent ring, not the queue.
    callers_lately: bool,
    /// The port last lent, kept for the next loan of the same worker's ring (one
    /// allocation and four reference counts less per idle spell).
    spare: Option<Box<crate::pool::direct::Port>>,
    /// What the worker forwarded of its tasks' spans (feature `tracing`).
    #[cfg(feature = "tracing")]
    replay: replay::Replay,
}

impl Driver {
    /// Runs the slot until the pool stops (false) or the slot retires (true).
    async fn run(&mut self) -> bool {
        loop {
            if self.worker.is_none() {
                // No job for this slot until it has a worker again.
                self.inner.jobs.leave_idle(&self.waiter);
                if self.flights.is_empty() && self.inner.jobs.is_drained() {
                    return false; // shut down: nothing left that a worker would run
                }
                if !self.start_worker().await {
                    return false;
                }
            }
            if self.flights.is_empty() {
                // Above a lowered maximum: this idle slot goes.
                if self.inner.scale.try_retire(false) {
                    return true;
                }
                // Read before the pace goes with the lent ring.
                let idle_spin = self.pace.idle_spin();
                self.offer();
                let idle = match self.next_job_soon(idle_spin).await {
                    Some(job) => Idle::Job(Some(job)),
                    None => self.wait_idle().await,
                };
                // Whatever happened, the ring is the driver's again first; it may
                // bring a task a caller left to it.
                self.reclaim().await;
                // Callers may have used up its tasks, or it said it is over its memory.
                self.maybe_recycle().await;
                match idle {
                    Idle::Abort => return false,
                    // Recycled just now: the next one starts at the loop's top.
                    Idle::Exited if self.worker.is_none() => continue,
                    Idle::Exited if self.flights.is_empty() => {
                        self.lose_idle_worker().await;
                        continue;
                    }
                    Idle::Exited => {
                        self.lose(Loss::Died).await;
                        continue;
                    }
                    Idle::Job(Some(job)) => {
                        self.callers_lately = false;
                        if let Some(since) = self.idle_since.take() {
                            self.pace.idled(since.elapsed());
                        }
                        self.dispatch(job);
                        if !self.inner.jobs.is_empty() {
                            // Others still wait and this slot is busy now.
                            self.inner.grow();
                        }
                    }
                    // Closed and drained: shutdown, once a task left by a caller is
                    // answered.
                    Idle::Job(None) if self.flights.is_empty() => return false,
                    Idle::Job(None) => self.queue_ended = true,
                    Idle::TimedOut if self.flights.is_empty() => {
                        if self.inner.scale.try_retire(true) {
                            return true;
                        }
                        continue;
                    }
                    Idle::TimedOut | Idle::Again => continue,
                }
            }
            self.fill();
            if self.flights.is_empty() {
                continue;
            }
            if self.write().is_err() {
                self.lose(Loss::Died).await;
                continue;
            }
            // A reply already in the ring is taken without building the wait below,
            // whose registrations (abort, cancels, timers, the queue) cost more than
            // the reply itself on a busy pool. A few at a time: between them the wait
            // looks at cancels, timeouts and the abort, which it puts first.
            // All of them before the next write: the worker is then sent the tasks
            // they made room for together.
            if self.quick < QUICK_MAX && !self.inner.abort.is_cancelled() {
                let mut took = false;
                while self.quick < QUICK_MAX {
                    let Some(reply) = self.worker.as_mut().and_then(WorkerProcess::try_reply)
                    else {
                        break;
                    };
                    self.quick += 1;
                    took = true;
                    self.on_reply_io(reply).await;
                }
                if took {
                    continue;
                }
            }
            self.quick = 0;

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
            let give_back = self.ahead && self.give_back_armed;
            let give_back_at = self.head_since + GIVE_BACK_AFTER;
            let Some(worker) = self.worker.as_mut() else {
                continue;
            };
            let jobs = &self.inner.jobs;
            let event = tokio::select! {
                biased;
                _ = self.inner.abort.cancelled() => Event::Abort,
                _ = self.signal.notified() => Event::Cancel,
                io = worker.next_io(spin, writing) => Event::Io(io),
                _ = until(deadline) => Event::TimedOut,
                _ = async {
                    jobs.idle_driver().await;
                    tokio::time::sleep_until(give_back_at.into()).await;
                }, if give_back => Event::GiveBack,
                job = jobs.next_ahead(), if want_job => Event::Job(job),
            };
            match event {
                Event::Abort => return false,
                Event::Cancel => self.on_cancel().await,
                Event::Io(Io::Reply(reply)) => self.on_reply_io(reply).await,
                Event::Io(Io::Exited) => self.lose(Loss::Died).await,
                Event::Io(Io::Writable(Ok(()))) => {}
                Event::Io(Io::Writable(Err(_))) => self.lose(Loss::Died).await,
                Event::TimedOut => self.on_timeout().await,
                Event::GiveBack => self.give_back(),
                Event::Job(Some(job)) => self.dispatch(job),
                Event::Job(None) => self.queue_ended = true,
            }
        }
    }

    /// Acts on a reply read, or on why none could be.
    async fn on_reply_io(&mut self, reply: Result<Frame, ReadError>) {
        match reply {
            Ok(frame) => match self.on_reply(frame) {
                Err(e) => self.lose(Loss::Protocol(e)).await,
                Ok(()) => self.maybe_recycle().await,
            },
            Err(ReadError::Protocol(e)) => self.lose(Loss::Protocol(e)).await,
            Err(ReadError::Eof | ReadError::Io(_)) => self.lose(Loss::Died).await,
        }
    }

    /// Whether the worker may be sent another task now: always if it has none; one
    /// more ahead only while no other driver is idle (it should take that task).
    fn has_room(&self) -> bool {
        let Some(w) = &self.worker else {
            return false;
        };
        let n = self.flights.len();
        if n > 0 && (self.inner.jobs.has_idle() || self.inner.can_grow()) {
            return false;
        }
        let depth = self
            .inner
            .config
            .pipeline
            .unwrap_or_else(|| self.pace.depth());
        n < depth
            && !w.over_memory
            && self
                .inner
                .config
                .max_tasks_per_worker
                .is_none_or(|max| w.tasks_done + (n as u64) < max)
    }

    /// Takes jobs that are already waiting while the worker has room.
    fn fill(&mut self) {
        while self.has_room() {
            match self.inner.jobs.try_next() {
                Some(job) => self.dispatch(job),
                None => break,
            }
        }
    }

    /// Re-emits what the worker forwarded of its tasks' spans and events, each inside
    /// its task's span. Without the feature, a worker never sends any: it is asked for
    /// none.
    fn replay(&mut self, body: &[u8]) -> Result<(), ProtocolError> {
        #[cfg(feature = "tracing")]
        {
            let pid = self.worker.as_ref().map_or(0, WorkerProcess::pid);
            let flights = &self.flights;
            self.replay.apply(body, pid, |task| {
                flights
                    .iter()
                    .find(|f| f.id == task)
                    .and_then(|f| f.job.as_ref())
                    .and_then(|job| job.span.id())
            })
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = body;
            Err(ProtocolError::Unexpected {
                what: "tracing records, which were not asked for".to_owned(),
            })
        }
    }

    /// Hands `job` to the worker (it is written by [`write`](Self::write)), or
    /// resolves it at once if it need not run.
    fn dispatch(&mut self, mut job: Job) {
        self.inner.jobs.leave_idle(&self.waiter);
        let Some(w) = self.worker.as_mut() else {
            // Not reached: jobs are taken only with a worker. Never lose one.
            self.inner.jobs.hand_back(std::iter::once(job));
            return;
        };
        let seq = w.queue_next();
        let cancelled = self.inner.pending_cancelled.load(Ordering::Acquire);
        if cancelled
            || job.abandoned()
            || !job.shared.start(w.pid(), &self.signal, w.progress(), seq)
        {
            w.unqueue();
            self.inner.resolve(job, Err(TaskError::Cancelled));
            return;
        }
        job.span.taken_by(job.id, job.items, w.pid());
        self.inner
            .counters
            .running
            .fetch_add(u64::from(job.items), Ordering::Relaxed);
        if self.flights.is_empty() {
            self.head_from(Instant::now());
        }
        let flight = Flight::new(job, seq, self.inner.config.task_timeout);
        self.flights.push_back(flight);
        self.flights_changed();
    }

    /// Keeps the queue's count of drivers with flights ahead, and re-arms the
    /// hand-back watch.
    fn flights_changed(&mut self) {
        self.give_back_armed = true;
        let ahead = self.flights.len() > 1;
        if ahead != self.ahead {
            self.ahead = ahead;
            self.inner.jobs.set_ahead(ahead);
        }
    }

    /// The first flight is the one the worker runs (or runs next) from `now`.
    fn head_from(&mut self, now: Instant) {
        self.head_since = now;
        self.head_since_ns = crate::sys::proc::monotonic_ns();
    }

    /// When the first flight must be answered by (its timeout).
    fn head_deadline(&self) -> Option<Instant> {
        match self.flights.front() {
            Some(f) if f.verdict.is_none() => {
                let hard = f.timeout.map(|t| self.head_since + t);
                let soft = f.soft.filter(|_| !f.told).map(|t| self.head_since + t);
                match (soft, hard) {
                    (Some(s), Some(h)) => Some(s.min(h)),
                    (s, h) => s.or(h),
                }
            }
            _ => None,
        }
    }

    /// Matches a reply to the first flight and resolves it.
    fn on_reply(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let Frame { header, body, fds } = frame;
        if header.kind == wire::Kind::Trace {
            return self.replay(&body);
        }
        let expected = match self.flights.front() {
            Some(f) if self.unsent > 0 => f.id,
            _ => u64::MAX,
        };
        let skipped = header.flags & FLAG_SKIPPED != 0;
        let moved = matches!(self.flights.front(), Some(f) if f.job.is_none());
        if header.kind != wire::Kind::Done || header.id != expected || (moved && !skipped) {
            return Err(ProtocolError::Unexpected {
                what: format!(
                    "{:?} for task {} while waiting for task {expected}{}",
                    header.kind,
                    header.id,
                    if moved { " (to be skipped)" } else { "" }
                ),
            });
        }
        let Some(f) = self.flights.pop_front() else {
            return Ok(()); // not reached: `expected` names a flight
        };
        self.unsent -= 1;
        self.flights_changed();
        let now = Instant::now();
        let stamp = self.worker.as_ref().map_or(0, WorkerProcess::reply_stamp);
        if !skipped {
            // By the worker's stamp where there is one: how soon its reply came, not
            // how late this driver woke to it (see `worker::serve::Pace`).
            let took = match stamp.checked_sub(self.head_since_ns) {
                Some(ns) if self.head_since_ns != 0 => Duration::from_nanos(ns),
                _ => now - self.head_since,
            };
            self.pace.replied(took);
        }
        // One task at a time is the pattern that polling serves (see `next_io`).
        let alone = self.flights.is_empty() && self.inner.jobs.is_empty();
        self.inner.spin_hint.set(if alone {
            self.pace.spin()
        } else {
            Duration::ZERO
        });
        self.head_from(now);
        if self.flights.is_empty() {
            self.idle_since = Some(now);
        }
        let Some(mut job) = f.job else {
            return Ok(()); // handed back: another driver runs it
        };
        let mut broken = None;
        let result = if skipped {
            Err(f.verdict.unwrap_or(Verdict::Cancelled).error())
        } else if let Some(v) = f.verdict {
            Err(v.error())
        } else if job.shared.cancel_requested() {
            // Cancelled while it ran; it finished before the driver acted on it.
            Err(TaskError::Cancelled)
        } else {
            reply::outcome(&header, body, fds).unwrap_or_else(|e| {
                broken = Some(e.clone());
                Err(TaskError::Protocol(e))
            })
        };
        let result = result.map(|mut payload| {
            reply::trade_buffers(&mut payload.body, &mut job.frame);
            payload
        });
        if !skipped {
            if let Some(w) = self.worker.as_mut() {
                w.tasks_done += 1;
                w.over_memory |= header.flags & wire::FLAG_RECYCLE != 0;
            }
        }
        if self.flights.is_empty() {
            // On top of the idle drivers before the caller hears back, so that its
            // next task comes to this worker (see `JobQueue`'s "most recently used
            // first"), and its ring on the desk for a caller of `run`.
            self.inner.jobs.push_idle(&self.waiter, true);
            self.inner.desk.displace(&self.inner, &self.home);
            self.offerable = true;
        }
        self.inner.resolve_sent(job, result, now);
        broken.map_or(Ok(()), Err)
    }

    /// Counts and resolves a job that was in flight.
    fn resolve(&self, job: Job, result: Result<Payload, TaskError>) {
        self.inner.resolve_sent(job, result, Instant::now());
    }

    /// The first flight's time is up. The clock runs from when the worker could
    /// begin it; if it has not begun it yet (a descheduled worker), it starts again.
    async fn on_timeout(&mut self) {
        let (Some(w), Some(head)) = (self.worker.as_ref(), self.flights.front_mut()) else {
            return;
        };
        if !w.progress().started(head.seq) {
            self.head_from(Instant::now());
            return;
        }
        let ran = self.head_since.elapsed();
        if head.soft.is_some_and(|s| !head.told && ran >= s) {
            // The soft deadline: tell the task; the hard one, if any, comes later.
            head.told = true;
            w.progress().tell_to_stop(head.seq);
            return;
        }
        let Some(after) = head.timeout.filter(|&t| ran >= t) else {
            return;
        };
        if self.decide(0, Verdict::TimedOut(after)) {
            self.lose(Loss::Killed).await;
        }
    }

    /// Acts on cancellations of flights.
    async fn on_cancel(&mut self) {
        for i in 0..self.flights.len() {
            let f = &self.flights[i];
            let cancelled =
                f.verdict.is_none() && f.job.as_ref().is_some_and(|j| j.shared.cancel_requested());
            if cancelled && self.decide(i, Verdict::Cancelled) {
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
    /// behind it has started: the first flight behind it that is not to be skipped is
    /// held; if that one is already running, this one is finished and its reply is
    /// on its way (answered with the verdict).
    fn decide(&mut self, i: usize, verdict: Verdict) -> bool {
        let Some(w) = self.worker.as_ref() else {
            return false;
        };
        self.flights[i].verdict = Some(verdict);
        if w.progress().skip(self.flights[i].seq) {
            return false;
        }
        for next in self.flights.range(i + 1..) {
            match w.progress().hold(next.seq) {
                Hold::Held => return true,
                Hold::Skipped => continue,
                Hold::Started => return false,
            }
        }
        true
    }

    /// Another driver is idle while this worker's current task runs long: hands it
    /// the flights behind that task that the worker has not begun. Written ones are
    /// marked skipped on the page (the worker's "skipped" reply is still matched);
    /// ones not written yet leave the flights altogether.
    fn give_back(&mut self) {
        self.give_back_armed = false;
        if !self.inner.jobs.has_idle() {
            return;
        }
        let Some(w) = self.worker.as_mut() else {
            return;
        };
        let mut back = Vec::new();
        let mut cancelled = Vec::new();
        for f in self.flights.range_mut(1..self.unsent.max(1)) {
            if f.verdict.is_none() && w.progress().skip(f.seq) {
                f.verdict = Some(Verdict::Moved);
                back.extend(f.job.take());
            }
        }
        // Untouched: neither written nor being written.
        let untouched = if self.spilling {
            self.unsent + 1
        } else {
            self.unsent
        }
        .max(1);
        if untouched < self.flights.len() {
            for f in self.flights.drain(untouched..) {
                match (f.verdict, f.job) {
                    (None, Some(job)) => back.push(job),
                    (Some(v), Some(job)) => cancelled.push((job, v.error())),
                    (_, None) => {}
                }
            }
            if let Some(last) = self.flights.back() {
                w.unqueue_after(last.seq);
            }
        }
        let items: u64 = back.iter().map(|j| u64::from(j.items)).sum();
        self.inner
            .counters
            .running
            .fetch_sub(items, Ordering::Relaxed);
        self.inner.jobs.hand_back(back.into_iter());
        for (job, e) in cancelled {
            self.resolve(job, Err(e));
        }
        self.flights_changed();
        self.give_back_armed = false;
    }
}

/// Resolves at `deadline`; never, without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // However it ends (its runtime may drop it mid-wait): a caller holding its
        // ring finds nobody home, and the desk holds no ring of a worker that is gone.
        drop(self.home.close());
        drop(self.inner.desk.withdraw(&self.home));
    }
}

/// Counts a driver out when it ends, however it ends (also when its runtime drops it).
struct AliveGuard(Arc<Inner>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.send_modify(|n| *n -= 1);
    }
}
