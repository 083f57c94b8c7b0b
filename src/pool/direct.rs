//! The caller's own round trip: a task that is awaited at once goes straight into an
//! idle worker's ring, and its caller reads the reply there itself.
//!
//! On the ordinary path a task makes three hops in the parent: the caller queues it
//! and wakes the driver, the driver writes it to the worker's ring, and the driver
//! reads the reply and wakes the caller. With one task at a time, each wake-up can
//! cost more than the whole trip through the worker, and on a two-CPU machine three
//! threads that poll (caller, driver, worker) are one too many.
//!
//! So a driver whose worker is idle *lends* its ring: it puts a [`Port`] (the ring,
//! the progress page, the task numbering and its [`Pace`]) on the pool's [`Desk`] and
//! sleeps. [`run`](super::ProcessPoolExecutor::run), which awaits its task at once,
//! takes the port if one is there, writes its task into the ring, and polls for the
//! reply for as long as the pace says replies come (at most [`Direct::MAX_POLL`], or
//! what [`PoolBuilder::caller_poll`](super::PoolBuilder::caller_poll) says).
//! With the reply it resolves the task and puts the port back on the desk: the driver
//! never woke. Two parties poll, the caller and the worker, and the kernel is not
//! crossed at all while both are awake.
//!
//! Whatever the caller does not handle goes to the driver with the port (its
//! [`Home`]): a reply that is late (past the polling budget), one that is not a plain
//! answer (spilled, skipped, a broken failure, anything unexpected), a worker due to
//! be recycled, and a caller that drops its future. The task then becomes one of the
//! driver's flights, written at the time the caller wrote it, and everything the
//! driver guarantees holds for it: cancel, timeout, the worker's death, the progress
//! page. The driver takes its port back before it does anything with its worker (a
//! job from the queue, the worker's death, shutdown): from the desk at once, or from
//! the caller within its polling budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use std::{future::Future, pin::Pin};

use tokio::sync::Notify;

use super::handle::{Job, RawTask};
use super::pace::Pace;
use super::reply;
use super::submit::Prepared;
use super::{Inner, ProcessPoolExecutor};
use crate::error::TaskError;
use crate::wire::ring::{Next, Ring};
use crate::wire::{Kind, Payload, FLAG_RECYCLE, FLAG_SKIPPED};
use crate::worker::progress::Progress;

/// Where an idle driver offers its port: one at a time, for the next caller.
#[derive(Debug, Default)]
pub(crate) struct Desk {
    offered: Mutex<Option<Box<Port>>>,
}

impl Desk {
    fn lock(&self) -> MutexGuard<'_, Option<Box<Port>>> {
        self.offered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers `port` if no other is offered; hands it back if one is.
    ///
    /// # Errors
    /// The port, when the desk is taken.
    pub(crate) fn offer(&self, port: Box<Port>) -> Result<(), Box<Port>> {
        let mut offered = self.lock();
        if offered.is_some() {
            return Err(port);
        }
        *offered = Some(port);
        Ok(())
    }

    /// Offers `port`, the one used last: another driver's that is offered goes home.
    fn put(&self, port: Box<Port>) -> Option<Box<Port>> {
        self.lock().replace(port)
    }

    /// The port of `home` if it is on the desk.
    pub(crate) fn withdraw(&self, home: &Arc<Home>) -> Option<Box<Port>> {
        let mut offered = self.lock();
        if offered.as_ref().is_some_and(|p| Arc::ptr_eq(&p.home, home)) {
            return offered.take();
        }
        None
    }

    /// Sends another driver's port home, if it is on the desk: the driver `mine` has
    /// just answered a task, and the next should go to its worker, the one used last
    /// (as the queue's idle drivers are stacked).
    pub(crate) fn displace(&self, inner: &Inner, mine: &Arc<Home>) {
        let other = {
            let mut offered = self.lock();
            match offered.as_ref() {
                Some(p) if !Arc::ptr_eq(&p.home, mine) => offered.take(),
                _ => None,
            }
        };
        if let Some(port) = other {
            go_home(inner, port, false);
        }
    }

    /// The port offered, if there is one. (Waiting for the lock, never for long:
    /// nobody holds it across anything but a swap. Giving up on a busy lock would send
    /// the task through the queue to whichever driver is idle, not to the worker used
    /// last.)
    fn take(&self) -> Option<Box<Port>> {
        self.lock().take()
    }
}

/// A driver's end of its port: where the port comes back when the driver must see it.
#[derive(Debug, Default)]
pub(crate) struct Home {
    state: Mutex<HomeState>,
    /// The driver asked for its port: a caller polling stops and brings it.
    asked: AtomicBool,
    /// Rung when the port comes home, or comes back to the desk while wanted.
    back: Notify,
}

#[derive(Debug, Default)]
struct HomeState {
    port: Option<Box<Port>>,
    /// The driver waits for its port: it comes home, not to the desk.
    wanted: bool,
    /// The driver is gone: a task handed to it cannot run.
    closed: bool,
}

impl Home {
    fn lock(&self) -> MutexGuard<'_, HomeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The port, if it is home; else asks for it to come home ([`returned`]
    /// (Self::returned) then says it may have).
    pub(crate) fn want(&self) -> Option<Box<Port>> {
        let mut state = self.lock();
        let port = state.port.take();
        state.wanted = port.is_none();
        self.asked.store(state.wanted, Ordering::Relaxed);
        port
    }

    /// The port is the driver's again, however it got it back.
    pub(crate) fn settled(&self) {
        self.lock().wanted = false;
        self.asked.store(false, Ordering::Relaxed);
    }

    /// Resolves when the port may have come home (or back to the desk, wanted).
    ///
    /// # Cancel safety
    /// Cancel safe: a ring that comes while the future is gone is kept for the next.
    pub(crate) async fn returned(&self) {
        self.back.notified().await;
    }

    /// The driver is going: no port goes home any more; one that is home is returned.
    pub(crate) fn close(&self) -> Option<Box<Port>> {
        let mut state = self.lock();
        state.closed = true;
        state.port.take()
    }
}

/// An idle worker's ring, lent by its driver (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Port {
    pub(crate) home: Arc<Home>,
    pub(crate) ring: Arc<Ring>,
    pub(crate) progress: Arc<Progress>,
    /// The driver's wake-up for cancellations of its tasks.
    pub(crate) signal: Arc<Notify>,
    pub(crate) pid: u32,
    /// The frame limit replies are checked against.
    pub(crate) limit: u64,
    /// The number of the last task sent (see [`Progress`]).
    pub(crate) seq: u64,
    /// How many more tasks the worker may run before it is recycled.
    pub(crate) room: Option<u64>,
    /// The driver's, while lent.
    pub(crate) pace: Pace,
    /// When the worker published the last reply taken.
    pub(crate) stamp: u64,
    /// Tasks answered through the port since it was lent.
    pub(crate) done: u64,
    /// The worker said it is over its memory limit.
    pub(crate) recycle: bool,
    /// A task the caller wrote (or could not) and left to the driver.
    pub(crate) handed: Option<Handed>,
}

impl Port {
    /// Whether the driver must see the port before it is lent again.
    fn needs_driver(&self) -> bool {
        self.handed.is_some() || self.recycle || self.room == Some(0)
    }
}

/// A task a caller sent through a port and left to the driver.
#[derive(Debug)]
pub(crate) struct Handed {
    pub(crate) job: Job,
    /// Its number on the progress page.
    pub(crate) seq: u64,
    /// When it was written, on both clocks.
    pub(crate) at: Instant,
    pub(crate) at_ns: u64,
    /// False when the ring had no room for it: the driver writes it.
    pub(crate) written: bool,
}

/// Returns a port: to the desk for the next caller (if `desk`), or home when the
/// driver must see it (or wants it). A task handed to a driver that is gone fails as
/// stopped.
fn go_home(inner: &Inner, port: Box<Port>, desk: bool) {
    let home = port.home.clone();
    let mut state = home.lock();
    if state.closed {
        drop(state);
        if let Some(handed) = port.handed {
            inner.resolve_sent(handed.job, Err(inner.stopped()), Instant::now());
        }
        return;
    }
    let wake = state.wanted || port.needs_driver();
    if desk && !wake {
        // Under the home's lock, so that a driver that wants it finds it in one of
        // the two. On top of another driver's, which has not served since: the next
        // caller's task goes to the worker used last.
        let displaced = inner.desk.put(port);
        drop(state);
        if let Some(other) = displaced {
            go_home(inner, other, false);
        }
        return;
    }
    state.port = Some(port);
    drop(state);
    // A port with nothing to see to waits at home, its driver asleep: it takes it
    // back when it next needs its worker. Waking it for nothing would have it look at
    // the queue, and take a job meant for the driver used last.
    if wake {
        home.back.notify_one();
    }
}

/// The future of a task sent through a port: the caller polls the ring, then, if the
/// reply has not come, waits for the driver like any other task.
#[derive(Debug)]
pub(crate) struct Answer {
    direct: Option<Box<Direct>>,
    raw: RawTask,
}

/// A task in a port, its caller polling for the reply.
#[derive(Debug)]
struct Direct {
    inner: Arc<Inner>,
    port: Box<Port>,
    job: Option<Job>,
    seq: u64,
    at: Instant,
    at_ns: u64,
    /// How long to poll, and until when once polling began.
    budget: Duration,
    until: Option<Instant>,
}

/// What the caller found in the ring.
enum Look {
    Nothing,
    Answered,
    /// Something for the driver.
    Driver,
}

impl Direct {
    /// The longest a caller polls for its reply.
    const MAX_POLL: Duration = Duration::from_micros(100);

    fn look(&mut self) -> Look {
        let ring = &self.port.ring;
        match ring.next() {
            Ok(Next::Empty) => return Look::Nothing,
            Ok(Next::Inline) => {}
            Ok(Next::Spilled) | Err(_) => return Look::Driver,
        }
        let Some(id) = self.job.as_ref().map(|j| j.id) else {
            return Look::Driver;
        };
        let stamp = ring.head_stamp();
        let frame = match ring.peek(self.port.limit) {
            Ok(Some(frame)) => frame,
            // A large reply that its worker is still copying in.
            Ok(None) => return Look::Nothing,
            Err(_) => return Look::Driver,
        };
        let header = frame.header;
        if header.kind != Kind::Done || header.id != id || header.flags & FLAG_SKIPPED != 0 {
            return Look::Driver;
        }
        let Ok(outcome) = reply::outcome(&header, frame.body, frame.fds) else {
            return Look::Driver; // the driver gives the worker up for it
        };
        ring.skip();
        self.answered(stamp, header.flags, outcome);
        Look::Answered
    }

    /// Counts the reply in the port's and the pool's books, and resolves the task.
    fn answered(&mut self, stamp: u64, flags: u32, outcome: Result<Payload, TaskError>) {
        let Some(job) = self.job.take() else {
            return;
        };
        let port = &mut self.port;
        let took = match stamp.checked_sub(self.at_ns) {
            Some(ns) if stamp != 0 => Duration::from_nanos(ns),
            _ => self.at.elapsed(),
        };
        port.pace.replied(took);
        port.stamp = stamp;
        port.done += 1;
        port.room = port.room.map(|n| n.saturating_sub(1));
        port.recycle |= flags & FLAG_RECYCLE != 0;
        let inner = &self.inner;
        inner.spin_hint.set(port.pace.spin());
        inner.counters.direct.fetch_add(1, Ordering::Relaxed);
        let result = if job.shared.cancel_requested() {
            // Cancelled while it ran; it finished before anyone acted on it.
            Err(TaskError::Cancelled)
        } else {
            outcome
        };
        inner.resolve_sent(job, result, Instant::now());
    }

    /// Whether to look again rather than leave the task to the driver; yields the
    /// CPU once when it says yes, to a worker that shares it.
    fn again(&mut self) -> bool {
        // The driver needs its worker (a queued job, the worker's exit, shutdown).
        if self.port.home.asked.load(Ordering::Relaxed) || self.inner.abort.is_cancelled() {
            return false;
        }
        let now = Instant::now();
        if now >= *self.until.get_or_insert(now + self.budget) {
            return false;
        }
        std::thread::yield_now();
        true
    }

    /// The port goes back; with the task, if it is not answered.
    fn end(mut self: Box<Self>, written: bool) {
        if let Some(job) = self.job.take() {
            self.port.handed = Some(Handed {
                job,
                seq: self.seq,
                at: self.at,
                at_ns: self.at_ns,
                written,
            });
        }
        go_home(&self.inner, self.port, true);
    }
}

impl Future for Answer {
    type Output = Result<Payload, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(direct) = self.direct.as_mut() {
            match direct.look() {
                Look::Nothing if direct.again() => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Look::Nothing | Look::Answered | Look::Driver => {
                    if let Some(direct) = self.direct.take() {
                        direct.end(true);
                    }
                }
            }
        }
        Pin::new(&mut self.raw).poll(cx)
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // Dropped while polling: the driver sees the task through (its result is
        // discarded, as for any running task whose handle is dropped).
        if let Some(direct) = self.direct.take() {
            direct.end(true);
        }
    }
}

impl ProcessPoolExecutor {
    /// Sends `task` through the port on the desk, if there is one and the task may go
    /// that way: one frame that fits a ring slot, nobody queued before it. Gives the
    /// task back otherwise, to be queued.
    ///
    /// # Errors
    /// The task, when it must be queued.
    pub(super) fn send_direct(&self, task: Prepared) -> Result<Answer, Box<Prepared>> {
        let inner = &self.shared.inner;
        let job = &task.job;
        let fits =
            job.fds.is_empty() && !job.chunk && Ring::fits(job.frame.len() + job.tail.len(), 0);
        if !fits
            || !inner.jobs.is_empty()
            || inner.abort.is_cancelled()
            || inner.pending_cancelled.load(Ordering::Acquire)
            || self.refusal().is_err()
        {
            return Err(Box::new(task));
        }
        let Some(mut port) = inner.desk.take() else {
            return Err(Box::new(task));
        };
        let Prepared { mut job, raw } = task;
        let seq = port.seq + 1;
        port.progress.queue(seq);
        let items = u64::from(job.items);
        inner.counters.submitted.fetch_add(items, Ordering::Relaxed);
        if !job
            .shared
            .start(port.pid, &port.signal, &port.progress, seq)
        {
            // Not reached: nobody holds its handle to cancel it. The number is unused.
            go_home(inner, port, true);
            inner.resolve(job, Err(TaskError::Cancelled));
            return Ok(Answer { direct: None, raw });
        }
        port.seq = seq;
        job.span.taken_by(job.id, job.items, port.pid);
        inner.counters.running.fetch_add(items, Ordering::Relaxed);
        // Never past the task's (soft) timeout: the driver keeps the time.
        let timeout = job
            .soft_timeout
            .or(job.timeout.or(inner.config.task_timeout));
        let budget = inner
            .config
            .caller_poll
            .unwrap_or_else(|| (2 * port.pace.spin()).min(Direct::MAX_POLL))
            .min(timeout.unwrap_or(Duration::MAX));
        let (at, at_ns) = (Instant::now(), crate::sys::proc::monotonic_ns());
        let written = port.ring.try_push(&[&job.frame, &job.tail]);
        let direct = Box::new(Direct {
            inner: inner.clone(),
            port,
            job: Some(job),
            seq,
            at,
            at_ns,
            budget,
            until: None,
        });
        if !written {
            // Not reached: an idle worker's ring has room. The driver writes it.
            direct.end(false);
            return Ok(Answer { direct: None, raw });
        }
        Ok(Answer {
            direct: Some(direct),
            raw,
        })
    }
}
