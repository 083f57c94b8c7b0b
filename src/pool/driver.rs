//! The driver: one tokio task per worker slot.
//!
//! A driver owns one worker process at a time. It starts it (eagerly, when the pool is
//! built), pulls the next job from the shared queue only when its worker is free (so
//! an idle worker never waits behind a busy one), sends it, and races the reply
//! against the task's cancellation, the pool's timeout, a `shutdown_now` and the
//! worker's death. Whatever ends a worker, the driver reaps it and starts the next one;
//! the pool never becomes "broken".

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ProtocolError, TaskError};
use crate::pool::handle::Job;
use crate::pool::worker::{StartError, Worker};
use crate::pool::Inner;
use crate::wire::stream::Frame;
use crate::wire::{self, Failure, Kind, Payload, ReadError, FLAG_FAILED};

/// Workers that fail their handshake this many times in a row make the pool give up.
const MAX_START_FAILURES: u32 = 3;

enum Outcome {
    Reply(Result<Frame, ReadError>),
    Cancelled,
    TimedOut(Duration),
}

pub(crate) async fn drive(inner: Arc<Inner>) {
    let _alive = AliveGuard(inner.clone());
    let mut worker: Option<Worker> = None;
    let mut start_failures = 0u32;
    let mut spawn_error: Option<std::io::Error> = None;
    // Whether this slot has reported its first worker ready to `ProcessPoolExecutor::ready`.
    let mut announced = false;

    loop {
        if worker.is_none() && spawn_error.is_none() {
            let started = tokio::select! {
                biased;
                _ = inner.abort.cancelled() => break,
                r = Worker::start(&inner.config) => r,
            };
            match started {
                Ok(w) => {
                    worker = Some(w);
                    start_failures = 0;
                    if !std::mem::replace(&mut announced, true) {
                        inner.startup.send_modify(|s| s.ready += 1);
                    }
                }
                Err(StartError::Fatal(e)) => {
                    inner.fail(e);
                    break;
                }
                Err(StartError::Transient(reason)) => {
                    start_failures += 1;
                    if start_failures >= MAX_START_FAILURES {
                        inner.fail(Error::Handshake { reason });
                        break;
                    }
                    continue;
                }
                Err(StartError::Spawn(e)) => {
                    if !announced {
                        let err = Error::Spawn(crate::error::clone_io(&e));
                        inner.startup.send_modify(|s| {
                            s.error.get_or_insert(err);
                        });
                    }
                    // Fail the next task with this error rather than retrying in a
                    // hot loop; try again after that.
                    spawn_error = Some(e);
                }
            }
        }

        let mut job = tokio::select! {
            biased;
            _ = inner.abort.cancelled() => break,
            // Before taking a job: a worker already known dead must not be handed one.
            _ = idle_exit(worker.as_ref()) => {
                // The worker died while idle (killed from outside); no task is lost.
                if let Some(mut dead) = worker.take() {
                    dead.wait().await;
                }
                inner.counters.restarts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            job = inner.jobs.recv() => match job {
                Ok(job) => job,
                Err(_) => break, // closed and drained: shutdown
            },
        };

        if let Some(e) = spawn_error.take() {
            inner.counters.failed.fetch_add(1, Ordering::Relaxed);
            job.resolve(Err(TaskError::Spawn(e)));
            continue;
        }
        let Some(w) = worker.as_mut() else {
            // Unreachable: a worker exists unless spawning failed (handled above).
            job.resolve(Err(TaskError::Cancelled));
            continue;
        };
        if job.abandoned() || !job.shared.start(w.pid()) {
            inner.counters.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }

        inner.counters.running.fetch_add(1, Ordering::Relaxed);
        let outcome = run(&inner, w, &mut job).await;
        inner.counters.running.fetch_sub(1, Ordering::Relaxed);

        let (result, keep_worker) = match outcome {
            Outcome::Reply(Ok(Frame { header, body, fds })) => {
                if header.kind != Kind::Done || header.id != job.id {
                    let what = format!(
                        "{:?} for task {} while running task {}",
                        header.kind, header.id, job.id
                    );
                    (
                        Err(TaskError::Protocol(ProtocolError::Unexpected { what })),
                        false,
                    )
                } else if header.flags & FLAG_FAILED != 0 {
                    match wire::decode_control::<Failure>(&body) {
                        Ok(failure) => (Err(failure.into()), true),
                        Err(e) => (Err(TaskError::Protocol(e)), false),
                    }
                } else {
                    (Ok(Payload { body, fds }), true)
                }
            }
            Outcome::Reply(Err(ReadError::Protocol(e))) => (Err(TaskError::Protocol(e)), false),
            Outcome::Reply(Err(ReadError::Eof | ReadError::Io(_))) => {
                let mut dead = worker.take().expect("worker in use");
                let exit = dead.wait().await;
                (Err(TaskError::WorkerDied { exit }), false)
            }
            Outcome::Cancelled => (Err(TaskError::Cancelled), false),
            Outcome::TimedOut(after) => (Err(TaskError::TimedOut { after }), false),
        };

        if !keep_worker {
            // Kill and reap before resolving: when the handle says Cancelled or
            // TimedOut, the worker that ran the task is gone.
            if let Some(mut w) = worker.take() {
                w.kill().await;
            }
            // Counted now, before the task resolves: a worker lost is a restart owed.
            inner.counters.restarts.fetch_add(1, Ordering::Relaxed);
        }
        let counter = match &result {
            Ok(_) => &inner.counters.completed,
            Err(TaskError::Cancelled) => &inner.counters.cancelled,
            Err(_) => &inner.counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        job.resolve(result);
        if !keep_worker {
            continue;
        }
        if let Some(w) = worker.as_mut() {
            w.tasks_done += 1;
            if inner
                .config
                .max_tasks_per_worker
                .is_some_and(|max| w.tasks_done >= max)
            {
                let w = worker.take().expect("checked above");
                w.retire().await;
                inner.counters.recycled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    // Leaving: graceful (queue closed and drained) or abort (shutdown_now, drop).
    if !announced {
        inner.startup.send_modify(|s| s.gave_up += 1);
    }
    if let Some(w) = worker.take() {
        if inner.abort.is_cancelled() {
            let mut w = w;
            w.kill().await;
        } else {
            w.retire().await;
        }
    }
}

async fn run(inner: &Inner, w: &mut Worker, job: &mut Job) -> Outcome {
    let frame = std::mem::take(&mut job.frame);
    let tail = std::mem::take(&mut job.tail);
    let fds = std::mem::take(&mut job.fds);
    let timeout = async {
        match inner.config.task_timeout {
            Some(d) => {
                tokio::time::sleep(d).await;
                d
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = job.shared.cancelled() => Outcome::Cancelled,
        _ = inner.abort.cancelled() => Outcome::Cancelled,
        r = w.exchange(frame, tail, fds) => Outcome::Reply(r),
        after = timeout => Outcome::TimedOut(after),
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
