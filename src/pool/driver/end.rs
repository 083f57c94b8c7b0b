//! How a slot's worker ends: lost under its tasks (died, killed for a verdict, broke
//! the protocol), lost while idle, recycled (worn out or over its memory limit), or
//! stopped as the slot leaves; and what each ending makes of the tasks in flight.

use std::sync::atomic::Ordering;

use super::Driver;
use crate::error::{Exit, Limit, ProtocolError, TaskError};
use crate::pool::span;

/// Why a worker with tasks in flight is being given up.
pub(super) enum Loss {
    /// Killed by us, to stop the task a verdict was passed on.
    Killed,
    /// It died (or closed its socket) by itself.
    Died,
    /// It sent something we do not accept.
    Protocol(ProtocolError),
}

impl Driver {
    /// Gives up the worker with tasks in flight: reaps it, takes the replies it wrote
    /// before it ended, fails the one task it had started and not answered, and
    /// hands the ones it never started back to the queue, first in line.
    pub(super) async fn lose(&mut self, loss: Loss) {
        let Some(mut w) = self.take_worker() else {
            return;
        };
        let exit = match loss {
            Loss::Died => w.wait().await,
            Loss::Killed | Loss::Protocol(_) => w.kill().await,
        };
        match &loss {
            Loss::Died => span::worker_crashed(w.pid(), &exit),
            Loss::Protocol(e) => span::worker_crashed(w.pid(), e),
            Loss::Killed => span::worker_recycled(w.pid(), "killed to stop its task"),
        }
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
        let mut again = Vec::new();
        for f in std::mem::take(&mut self.flights) {
            let Some(mut job) = f.job else {
                continue; // handed back already
            };
            let error = match (f.verdict, w.progress().started(f.seq)) {
                (Some(v), _) => Some(v.error()),
                (None, true) => Some(match protocol.take() {
                    Some(e) => TaskError::Protocol(e),
                    None => {
                        job.salvage(w.progress().items_begun(f.seq), &self.inner.counters);
                        self.death_error(exit, w.progress().aborted_out_of_memory())
                    }
                }),
                (None, false) if job.shared.cancel_requested() => Some(TaskError::Cancelled),
                (None, false) => None,
            };
            match error {
                Some(e) => self.resolve(job, Err(e)),
                None => {
                    self.inner
                        .counters
                        .running
                        .fetch_sub(u64::from(job.items), Ordering::Relaxed);
                    again.push(job);
                }
            }
        }
        self.inner.jobs.hand_back(again.into_iter());
        self.unsent = 0;
        self.written = 0;
        self.spilling = false;
        self.flights_changed();
    }

    /// The idle worker died (killed from outside); no task is lost.
    pub(super) async fn lose_idle_worker(&mut self) {
        if let Some(mut dead) = self.take_worker() {
            let exit = dead.wait().await;
            span::worker_crashed(dead.pid(), &exit);
        }
        self.inner.counters.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Retires the worker once it has run `max_tasks_per_worker` tasks.
    /// How the death of a worker under a task reads: the limit it broke, if the
    /// kernel's signal says so.
    /// `out_of_memory`: the worker marked its page as it aborted after an allocation
    /// failed.
    pub(super) fn death_error(&self, exit: Exit, out_of_memory: bool) -> TaskError {
        let limits = &self.inner.config.limits;
        match (exit, limits.cpu_time, limits.address_space) {
            (Exit::Signal(libc::SIGXCPU), Some(limit), _) => TaskError::LimitExceeded {
                limit: Limit::CpuTime(limit),
            },
            (Exit::Signal(libc::SIGABRT), _, Some(bytes)) if out_of_memory => {
                TaskError::LimitExceeded {
                    limit: Limit::AddressSpace(bytes),
                }
            }
            _ => TaskError::WorkerDied { exit },
        }
    }

    pub(super) async fn maybe_recycle(&mut self) {
        let Some(w) = self.worker.as_ref() else {
            return;
        };
        let worn_out = self
            .inner
            .config
            .max_tasks_per_worker
            .is_some_and(|max| w.tasks_done >= max);
        if !self.flights.is_empty() || !(worn_out || w.over_memory) {
            return;
        }
        if let Some(w) = self.take_worker() {
            let why = if w.over_memory {
                "max_memory_per_worker"
            } else {
                "max_tasks_per_worker"
            };
            span::worker_recycled(w.pid(), why);
            w.retire().await;
            self.inner.counters.recycled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Leaving: graceful (queue closed and drained, or the slot `retired`) or abort
    /// (`shutdown_now`, drop).
    pub(super) async fn leave(&mut self, retired: bool) {
        let abort = self.inner.abort.is_cancelled();
        // Counted live until it is reaped: whoever sees the count drop finds it gone.
        if let Some(mut w) = self.worker.take() {
            let pid = w.pid();
            if abort || !self.flights.is_empty() {
                w.kill().await;
            } else {
                w.retire().await;
            }
            span::worker_exited(pid);
            self.inner.health.send_modify(|h| h.live -= 1);
        }
        for f in std::mem::take(&mut self.flights) {
            if let Some(job) = f.job {
                self.resolve(job, Err(self.inner.stopped()));
            }
        }
        self.flights_changed();
        if abort {
            // Jobs a driver handed back while the pool was being stopped.
            self.inner.cancel_queued();
        }
        let failing = std::mem::replace(&mut self.failing, false);
        self.inner.health.send_modify(|h| {
            // A retired slot is not a pool winding down (see `ready`).
            h.ended += usize::from(!retired);
            h.failing -= usize::from(failing);
        });
    }
}
