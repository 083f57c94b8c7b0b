//! Lending the idle worker's ring to callers, and taking it back (see
//! [`crate::pool::direct`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Driver, Flight};
use crate::pool::direct::Port;

impl Driver {
    /// Offers the idle worker's ring on the pool's desk, unless it is lent already, a
    /// task waits in the queue, the pool is stopping, or the worker must be seen to
    /// first (recycled, or forwarding trace records, which only the driver replays).
    pub(super) fn offer(&mut self) {
        let inner = &self.inner;
        let Some(w) = self.worker.as_ref() else {
            return;
        };
        let room = inner
            .config
            .max_tasks_per_worker
            .map(|max| max.saturating_sub(w.tasks_done));
        if self.lent
            || !self.offerable
            || !self.flights.is_empty()
            || w.traced
            || w.over_memory
            || room == Some(0)
            || !inner.jobs.is_empty()
            || inner.abort.is_cancelled()
            || inner.pending_cancelled.load(Ordering::Acquire)
        {
            return;
        }
        let pace = std::mem::take(&mut self.pace);
        let port = match self.spare.take() {
            // The same worker's ring: only what changes while it is home.
            Some(mut port) if Arc::ptr_eq(&port.ring, w.ring()) => {
                port.seq = w.seq();
                port.room = room;
                port.pace = pace;
                port.stamp = w.reply_stamp();
                port.done = 0;
                port.recycle = false;
                port.handed = None;
                port
            }
            _ => Box::new(Port {
                home: self.home.clone(),
                ring: w.ring().clone(),
                progress: w.progress().clone(),
                signal: self.signal.clone(),
                pid: w.pid(),
                limit: w.limit(),
                seq: w.seq(),
                room,
                pace,
                stamp: w.reply_stamp(),
                done: 0,
                recycle: false,
                handed: None,
            }),
        };
        match self.inner.desk.offer(port) {
            Ok(()) => self.lent = true,
            Err(port) => {
                // Another idle driver's is offered: not again until this one has
                // answered a task (then it takes the desk, see `Desk::displace`).
                self.settle(port);
                self.offerable = false;
            }
        }
    }

    /// Takes the ring back, wherever it is: on the desk, home, or with a caller, who
    /// brings it within its polling budget. A no-op when it is not lent.
    ///
    /// # Cancel safety
    /// Not cancel safe: called only where the driver waits for nothing else.
    pub(super) async fn reclaim(&mut self) {
        while self.lent {
            if let Some(port) = self.inner.desk.withdraw(&self.home) {
                self.settle(port);
            } else if let Some(port) = self.home.want() {
                // Home by itself, with nothing to see to: it was sent away from the
                // desk, or found another there; either way another driver offers.
                self.offerable = port.handed.is_some() || port.done > 0;
                self.settle(port);
            } else if let Some(port) = self.inner.desk.withdraw(&self.home) {
                // Came back to the desk before it was wanted.
                self.settle(port);
            } else {
                self.home.returned().await;
            }
        }
    }

    /// Takes what the port brings back: the pace, the numbering, the tasks answered
    /// through it, and a task a caller left to the driver (the next flight).
    fn settle(&mut self, mut port: Box<Port>) {
        self.lent = false;
        if port.done > 0 || port.handed.is_some() {
            self.callers_lately = true;
        }
        self.home.settled();
        self.pace = std::mem::take(&mut port.pace);
        let (seq, stamp, done, recycle) = (port.seq, port.stamp, port.done, port.recycle);
        let handed = port.handed.take();
        self.spare = Some(port);
        let Some(w) = self.worker.as_mut() else {
            return; // not reached: a worker's ring is lent only while it is up
        };
        w.lent_out(seq, stamp);
        w.tasks_done += done;
        w.over_memory |= recycle;
        let Some(handed) = handed else {
            return;
        };
        let flight = Flight::new(handed.job, handed.seq, self.inner.config.task_timeout);
        self.flights.push_back(flight);
        if handed.written {
            self.unsent += 1;
        }
        self.head_since = handed.at;
        self.head_since_ns = handed.at_ns;
        self.idle_since = None;
        self.inner.jobs.leave_idle(&self.waiter);
        self.flights_changed();
    }
}
