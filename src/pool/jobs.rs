//! The queue of jobs the drivers take from: what `submit` queues, and what a driver
//! hands back.
//!
//! Jobs come from two places. `submit` and `map` put them in an unbounded channel
//! (its capacity is our own count, see [`JobQueue::reserve`]). A driver puts back jobs
//! that it had sent to its worker but that the worker never began: when the worker was
//! lost, or when another driver sits idle while they wait behind a busy task (see
//! `driver`'s module docs). Handed-back jobs go first, in their order.
//!
//! Its capacity is a count beside the channel: [`JobQueue::reserve`] takes a place,
//! taking a job gives it back, and a submitter that found the queue full waits in
//! [`JobQueue::room`] until a place is given back.
//!
//! # Most recently used first
//! An idle driver does not wait on the channel, where the one that waited longest
//! would be woken first, but on a notification of its own, in a stack: a submit wakes
//! the driver on top, the one whose worker was busy last, so sequential tasks keep to
//! one worker (its caches warm) and an elastic pool can retire the others. A driver
//! goes on top as its last task in flight is answered, before it resolves that task's
//! future, so the caller's next submit finds it there. Every other driver that waits
//! goes in at the bottom: one whose worker has only just started, and one woken for a
//! job that another driver took, have been idle longer than those above them. A driver woken that leaves
//! without a job (shutdown, its worker lost) passes the wake-up on.
//!
//! The queue also knows how many drivers are idle (waiting here with a live worker)
//! and how many hold jobs ahead of their worker's current task, so that:
//! - a driver does not send its worker tasks ahead while another driver is idle;
//! - a driver whose worker is stuck on a task hands the tasks behind it to an idle one;
//! - at shutdown, an idle driver does not leave while tasks it could take over may
//!   still be handed back.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::pool::handle::Job;

#[derive(Debug)]
pub(crate) struct JobQueue {
    submitted: async_channel::Receiver<Job>,
    returned: Mutex<VecDeque<Job>>,
    /// Jobs in `returned`, read without the lock: taking a job locks nothing unless
    /// one was handed back.
    returned_len: AtomicUsize,
    /// Jobs in `submitted` and in `returned`.
    len: AtomicUsize,
    /// Items in those jobs (a `map` chunk carries several), for the statistics.
    items: AtomicU64,
    /// Drivers waiting in [`next`](Self::next) with a live worker.
    idle: AtomicUsize,
    /// Drivers with jobs sent ahead of their worker's current one.
    ahead: AtomicUsize,
    /// Woken when a job is handed back, or a driver stops holding jobs ahead.
    changed: Notify,
    /// Woken when a driver becomes idle.
    wanted: Notify,
    /// Idle drivers, the most recently busy on top (see the module docs).
    stack: Mutex<Vec<Arc<IdleWaiter>>>,
    /// Drivers in `stack`, read without the lock.
    stacked: AtomicUsize,
    /// Submitters waiting in [`room`](Self::room): only when there are any does
    /// taking a job wake one.
    waiting_for_room: AtomicUsize,
    /// Woken (one at a time, first come first served) when a place is given back, and
    /// all at once when the queue closes.
    room: Notify,
    /// Tests: runs inside [`hand_back`](Self::hand_back) as soon as the jobs it puts
    /// back can be taken.
    #[cfg(test)]
    on_hand_back: std::sync::OnceLock<fn(&JobQueue)>,
}

impl JobQueue {
    pub(crate) fn new(submitted: async_channel::Receiver<Job>) -> JobQueue {
        JobQueue {
            submitted,
            returned: Mutex::new(VecDeque::new()),
            returned_len: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            items: AtomicU64::new(0),
            idle: AtomicUsize::new(0),
            ahead: AtomicUsize::new(0),
            changed: Notify::new(),
            wanted: Notify::new(),
            stack: Mutex::new(Vec::new()),
            stacked: AtomicUsize::new(0),
            waiting_for_room: AtomicUsize::new(0),
            room: Notify::new(),
            #[cfg(test)]
            on_hand_back: std::sync::OnceLock::new(),
        }
    }

    /// Jobs waiting, submitted or handed back.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Items in the waiting jobs.
    pub(crate) fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    /// A job of `items` items is about to be sent into the channel.
    pub(crate) fn count_in(&self, items: u32) {
        self.items.fetch_add(u64::from(items), Ordering::Relaxed);
    }

    /// A job of `items` items left the queue (or was not sent after all).
    pub(crate) fn count_out(&self, items: u32) {
        self.items.fetch_sub(u64::from(items), Ordering::Relaxed);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves a place for a job about to be sent into the channel; false if
    /// `capacity` jobs already wait. Reserving first means concurrent submits never
    /// overfill the queue. A compare-and-swap, not an add undone on failure: a passing
    /// excess would refuse another submitter a place that was free.
    ///
    /// `SeqCst` here and in [`given_back`](Self::given_back): a submitter about to wait
    /// counts itself, then reserves again; a taker gives its place back, then looks
    /// for waiters. One of the two sees the other.
    pub(crate) fn reserve(&self, capacity: usize) -> bool {
        self.len
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |len| {
                (len < capacity).then_some(len + 1)
            })
            .is_ok()
    }

    /// Gives back a place [`reserve`](Self::reserve) took for a job that was not sent.
    pub(crate) fn unreserve(&self) {
        self.given_back(1);
    }

    /// `n` places are free again: a job was taken (or not sent). Wakes a submitter
    /// waiting for room, if any.
    fn given_back(&self, n: usize) {
        self.len.fetch_sub(n, Ordering::SeqCst);
        if self.waiting_for_room.load(Ordering::SeqCst) > 0 {
            self.room.notify_one();
        }
    }

    /// Waits until a place is reserved for one job: true, or false once the queue is
    /// closed (nothing can be sent any more).
    ///
    /// # Cancel safety
    /// Cancel safe: a place is reserved only when this resolves `true`. A wake-up it
    /// took and did not use passes to the next waiter (`Notify::notify_one`'s rule).
    pub(crate) async fn room(&self, capacity: usize) -> bool {
        let _waiting = WaitingForRoom::enter(self);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.submitted.is_closed() {
                return false;
            }
            if self.reserve(capacity) {
                return true;
            }
            room.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.returned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job, if one is waiting: handed-back ones first.
    pub(crate) fn try_next(&self) -> Option<Job> {
        let returned = match self.returned_len.load(Ordering::Acquire) {
            0 => None,
            _ => self.lock().pop_front(),
        };
        let job = match returned {
            Some(job) => {
                self.returned_len.fetch_sub(1, Ordering::AcqRel);
                job
            }
            None => self.submitted.try_recv().ok()?,
        };
        self.given_back(1);
        self.count_out(job.items);
        Some(job)
    }

    /// The next job for an idle driver (no task in flight), waiting for one on top of
    /// the stack of idle drivers (see the module docs); counted as idle meanwhile.
    /// Returns `None` only once the channel is closed and drained and no driver holds
    /// jobs ahead that it might hand back.
    ///
    /// # Cancel safety
    /// Cancel safe: a job is taken only when this resolves; a wake-up it took and did
    /// not use passes to another idle driver.
    pub(crate) async fn next_idle(&self, me: &Arc<IdleWaiter>) -> Option<Job> {
        let _idle = Idle::enter(self);
        let _stacked = Stacked(self, me);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let woken = me.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // At the bottom: a driver that just finished its work went on top itself
            // (before resolving it); one only now idle, or woken for a job another
            // took, has been idle longer than those above it.
            self.push_idle(me, false);
            if let Some(job) = self.try_next() {
                return Some(job);
            }
            if self.submitted.is_closed() {
                if self.ahead.load(Ordering::Acquire) == 0 {
                    return None;
                }
                changed.await;
                continue;
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = &mut woken => {}
            }
            // Popped and woken: off the stack until it goes on again above.
            let _ = me
                .state
                .compare_exchange(WOKEN, OFF, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Puts `me` in the stack of idle drivers, on top or at the bottom, unless it is
    /// in it. Then, whoever queues a job after this either wakes `me` or finds `me`
    /// gone: the fence pairs with the one in [`wake_idle`](Self::wake_idle).
    pub(crate) fn push_idle(&self, me: &Arc<IdleWaiter>, on_top: bool) {
        if me.state.load(Ordering::Acquire) != STACKED {
            let mut stack = self.lock_stack();
            me.state.store(STACKED, Ordering::Release);
            if on_top {
                stack.push(me.clone());
            } else {
                stack.insert(0, me.clone());
            }
            self.stacked.fetch_add(1, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
    }

    /// Takes `me` off the stack of idle drivers: it has a job, or no worker. A wake-up
    /// it had and did not use (it took another job, or none) goes to the next idle
    /// driver if jobs wait.
    pub(crate) fn leave_idle(&self, me: &IdleWaiter) {
        match me.state.load(Ordering::Acquire) {
            OFF => {}
            STACKED => {
                let mut stack = self.lock_stack();
                if let Some(i) = stack.iter().rposition(|w| std::ptr::eq(&**w, me)) {
                    stack.remove(i);
                    self.stacked.fetch_sub(1, Ordering::SeqCst);
                    me.state.store(OFF, Ordering::Release);
                    return;
                }
                // Popped by a waker meanwhile: it is woken.
                drop(stack);
                self.pass_on(me);
            }
            _ => self.pass_on(me),
        }
    }

    fn pass_on(&self, me: &IdleWaiter) {
        me.state.store(OFF, Ordering::Release);
        if !self.is_empty() {
            self.wake_idle();
        }
    }

    /// Wakes the idle driver on top of the stack, if any: a job was just queued.
    ///
    /// Not if the job is already gone: a driver polling the queue between tasks took
    /// it. A wake-up then would be stale, and the driver it woke, scheduled late,
    /// would take the caller's *next* job from under the driver that just ran the
    /// last one (seen as a sequential caller's tasks going to two workers). An idle
    /// driver stacks itself before it looks at the queue, so a job it missed is
    /// still counted here.
    pub(crate) fn wake_idle(&self) {
        fence(Ordering::SeqCst);
        if self.stacked.load(Ordering::SeqCst) == 0 || self.is_empty() {
            return;
        }
        let top = {
            let mut stack = self.lock_stack();
            let top = stack.pop();
            if let Some(w) = &top {
                self.stacked.fetch_sub(1, Ordering::SeqCst);
                w.state.store(WOKEN, Ordering::Release);
            }
            top
        };
        if let Some(w) = top {
            w.notify.notify_one();
        }
    }

    fn lock_stack(&self) -> std::sync::MutexGuard<'_, Vec<Arc<IdleWaiter>>> {
        self.stack.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job for a driver with tasks in flight (to send ahead), waiting for
    /// one; `None` as soon as the channel is closed and drained.
    ///
    /// # Cancel safety
    /// Cancel safe: a job is taken only when this resolves.
    pub(crate) async fn next_ahead(&self) -> Option<Job> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(job) = self.try_next() {
                return Some(job);
            }
            if self.submitted.is_closed() {
                return None;
            }
            tokio::select! {
                biased;
                _ = &mut changed => {}
                job = self.submitted.recv() => {
                    if let Ok(job) = job {
                        self.given_back(1);
                        self.count_out(job.items);
                        return Some(job);
                    }
                }
            }
        }
    }

    /// Whether no job can come any more: the channel is closed and nothing waits.
    pub(crate) fn is_drained(&self) -> bool {
        self.submitted.is_closed() && self.is_empty()
    }

    /// Puts back jobs that were sent to a worker that never began them, first in
    /// line, in their order.
    pub(crate) fn hand_back(&self, jobs: impl DoubleEndedIterator<Item = Job>) {
        let mut returned = self.lock();
        let mut n = 0;
        for job in jobs.rev() {
            self.count_in(job.items);
            returned.push_front(job);
            n += 1;
        }
        // Both counts before the lock is released. `returned_len`: a taker that sees
        // it finds the jobs. `len`: a taker gives a place back (subtracts one) for
        // each job it takes, so the jobs must be counted in before any can be taken;
        // counted after, a taker in between took `len` below zero, and a submitter
        // at that moment saw it wrapped round, a queue "full" at any capacity (seen
        // as `QueueFull` with 4,096 tasks in flight under a kill storm).
        if n > 0 {
            self.len.fetch_add(n, Ordering::SeqCst);
        }
        self.returned_len.fetch_add(n, Ordering::AcqRel);
        drop(returned);
        #[cfg(test)]
        if let Some(f) = self.on_hand_back.get() {
            f(self);
        }
        if n > 0 {
            self.changed.notify_waiters();
        }
    }

    /// Whether a driver is idle, waiting for a job.
    pub(crate) fn has_idle(&self) -> bool {
        self.idle.load(Ordering::Acquire) > 0
    }

    /// Resolves once a driver is idle.
    ///
    /// # Cancel safety
    /// Cancel safe; it only observes.
    pub(crate) async fn idle_driver(&self) {
        loop {
            let wanted = self.wanted.notified();
            tokio::pin!(wanted);
            wanted.as_mut().enable();
            if self.has_idle() {
                return;
            }
            wanted.await;
        }
    }

    /// A driver starts or stops holding jobs ahead of its worker's current one.
    pub(crate) fn set_ahead(&self, ahead: bool) {
        if ahead {
            self.ahead.fetch_add(1, Ordering::AcqRel);
        } else {
            self.ahead.fetch_sub(1, Ordering::AcqRel);
            self.changed.notify_waiters();
        }
    }

    /// Takes every waiting job (to cancel or fail them).
    pub(crate) fn drain(&self) -> impl Iterator<Item = Job> + '_ {
        std::iter::from_fn(|| self.try_next())
    }

    /// Stops taking submissions; queued jobs can still be taken. Submitters waiting
    /// for room give up.
    pub(crate) fn close(&self) {
        self.submitted.close();
        self.room.notify_waiters();
        // Idle drivers wait on their own wake-ups, not on the channel.
        self.changed.notify_waiters();
    }
}

/// Counts a submitter waiting in [`JobQueue::room`].
struct WaitingForRoom<'a>(&'a JobQueue);

impl<'a> WaitingForRoom<'a> {
    fn enter(queue: &'a JobQueue) -> WaitingForRoom<'a> {
        queue.waiting_for_room.fetch_add(1, Ordering::SeqCst);
        WaitingForRoom(queue)
    }
}

impl Drop for WaitingForRoom<'_> {
    fn drop(&mut self) {
        self.0.waiting_for_room.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An idle driver's place in the [`JobQueue`]'s stack: one per driver, for its life.
#[derive(Debug, Default)]
pub(crate) struct IdleWaiter {
    notify: Notify,
    /// `OFF`, `STACKED` or `WOKEN` (popped by a waker).
    state: AtomicU8,
}

const OFF: u8 = 0;
const STACKED: u8 = 1;
const WOKEN: u8 = 2;

/// Takes a driver off the stack when it stops waiting in [`JobQueue::next_idle`].
struct Stacked<'a>(&'a JobQueue, &'a IdleWaiter);

impl Drop for Stacked<'_> {
    fn drop(&mut self) {
        self.0.leave_idle(self.1);
    }
}

/// Counts a driver idle while it waits in [`JobQueue::next_idle`].
struct Idle<'a>(&'a JobQueue);

impl<'a> Idle<'a> {
    fn enter(queue: &'a JobQueue) -> Idle<'a> {
        queue.idle.fetch_add(1, Ordering::AcqRel);
        queue.wanted.notify_waiters();
        Idle(queue)
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.idle.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// What the hook saw: whether it took the job, and whether a place could be
        /// reserved after.
        static SEEN: Cell<Option<(bool, bool)>> = const { Cell::new(None) };
    }

    fn take_and_reserve(q: &JobQueue) {
        let took = q.try_next().is_some();
        let reserved = q.reserve(1000);
        if reserved {
            q.unreserve();
        }
        SEEN.set(Some((took, reserved)));
    }

    #[test]
    fn a_job_handed_back_is_counted_before_it_can_be_taken() {
        // A driver takes the job the moment it can (inside `hand_back`), and a
        // submitter then reserves a place in a queue of 1,000. Counted in after it
        // could be taken, the job was counted out first: the length went below zero
        // for a moment, which reads as full at any capacity.
        let (_tx, rx) = async_channel::unbounded();
        let queue = JobQueue::new(rx);
        assert!(queue.on_hand_back.set(take_and_reserve).is_ok());
        let job = Job::new(1, Vec::new(), Vec::new(), Vec::new(), None).0;
        queue.hand_back(std::iter::once(job));
        assert_eq!(SEEN.get(), Some((true, true)));
        assert_eq!(queue.len(), 0);
        assert!(queue.try_next().is_none());
    }
}
