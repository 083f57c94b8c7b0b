//! A driver with nothing in flight: polling the queue a while, then waiting for a
//! job, its worker's exit, the pool's abort or resize, the slot's idle timeout, or its
//! lent ring coming home; giving back the memory its large tasks went through once
//! idle a while.

use std::time::{Duration, Instant};

use super::{until, Driver};
use crate::pool::handle::Job;
use crate::pool::worker_process::WorkerProcess;

/// What ended an idle driver's wait.
pub(super) enum Idle {
    Abort,
    /// The idle worker's process exited.
    Exited,
    Job(Option<Job>),
    /// The slot was idle for the pool's idle timeout.
    TimedOut,
    /// Look again (the pool was resized, the ring came home).
    Again,
}

impl Driver {
    /// Waits, with nothing in flight, for a job, the worker's exit, the pool's abort or
    /// resize, the slot's idle timeout, or the lent ring coming home.
    pub(super) async fn wait_idle(&mut self) -> Idle {
        let inner = self.inner.clone();
        let scale = &inner.scale;
        let resized = scale.resized.notified();
        tokio::pin!(resized);
        resized.as_mut().enable();
        if scale.slots() > scale.max() {
            // Resized since the loop looked: it retires the slot.
            return Idle::Again;
        }
        let (worker, home, lent) = (self.worker.as_ref(), &*self.home, self.lent);
        // Callers write only frames that fit a slot: the bulk area is the driver's.
        let release_due = worker.and_then(|w| w.ring().bulk_release_due());
        tokio::select! {
            biased;
            _ = inner.abort.cancelled() => Idle::Abort,
            // Before taking a job: a worker known dead must not get one.
            _ = idle_exit(worker) => Idle::Exited,
            _ = home.returned(), if lent => Idle::Again,
            job = inner.jobs.next_idle(&self.waiter) => Idle::Job(job),
            _ = &mut resized => Idle::Again,
            _ = until(scale.idle_timeout.map(|t| Instant::now() + t)) => Idle::TimedOut,
            _ = until(release_due) => {
                if let Some(w) = worker {
                    w.release_bulk();
                }
                Idle::Again
            }
        }
    }

    /// A job that arrives within the idle poll of `spin` (see [`Pace`]); `None` when
    /// there is no poll to do or nothing came. A driver whose lent ring callers of
    /// `run` have lately used does not poll: its worker's next task most likely comes
    /// that way, and a third party polling beside that caller and the worker would
    /// take a CPU from one of them. One whose tasks came from the queue polls it as
    /// before, ring lent or not: those callers (`submit`, then the handle) do not use
    /// the ring.
    pub(super) async fn next_job_soon(&mut self, spin: Duration) -> Option<Job> {
        if spin.is_zero() || self.worker.is_none() || (self.lent && self.callers_lately) {
            return None;
        }
        let until = Instant::now() + spin;
        loop {
            if let Some(job) = self.inner.jobs.try_next() {
                return Some(job);
            }
            if self.inner.abort.is_cancelled() || Instant::now() >= until {
                return None;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Resolves when an idle worker's process exits; never, if there is no worker.
async fn idle_exit(worker: Option<&WorkerProcess>) {
    match worker {
        Some(w) => w.exited().await,
        None => std::future::pending().await,
    }
}
