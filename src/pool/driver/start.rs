//! Starting a slot's worker, and taking it out: the back-off between failed starts
//! and the bookkeeping `ready()` and `stats()` read.

use std::time::Duration;

use super::Driver;
use crate::pool::span;
use crate::pool::worker_process::{AfterFailure, WorkerProcess};

/// The pause before start attempt `failures + 1`: 10 ms, doubling, at most 1 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    let ms = 10u64 << failures.saturating_sub(1).min(7);
    Duration::from_millis(ms.min(1000))
}

impl Driver {
    /// Starts a worker, retrying with back-off; false if the pool must stop (abort,
    /// or a failure no retry can heal).
    pub(super) async fn start_worker(&mut self) -> bool {
        let mut failures = 0;
        loop {
            if self.inner.abort.is_cancelled() {
                return false;
            }
            // Not raced against the abort: `start` watches it itself, so that a
            // half-started worker is reaped before this driver leaves.
            let started = WorkerProcess::start(&self.inner.config, &self.inner.abort).await;
            let error = match started {
                Ok(w) => {
                    span::worker_started(w.pid());
                    #[cfg(feature = "tracing")]
                    {
                        self.replay = Default::default();
                    }
                    self.worker = Some(w);
                    self.offerable = true;
                    if std::mem::take(&mut self.starting) {
                        self.inner.scale.started();
                    }
                    let was_failing = std::mem::replace(&mut self.failing, false);
                    self.inner.health.send_modify(|h| {
                        h.live += 1;
                        h.failing -= usize::from(was_failing);
                    });
                    return true;
                }
                Err(e) => e,
            };
            match error.after() {
                AfterFailure::Leave => return false,
                AfterFailure::Fatal(fatal) => {
                    self.inner.fail(fatal);
                    return false;
                }
                AfterFailure::Retry(error, why) => {
                    failures += 1;
                    let newly = !std::mem::replace(&mut self.failing, true);
                    self.inner.health.send_modify(|h| {
                        h.failures += 1;
                        h.failing += usize::from(newly);
                        h.last_failure = Some((error, why));
                    });
                }
            }
            tokio::select! {
                biased;
                _ = self.inner.abort.cancelled() => return false,
                _ = tokio::time::sleep(backoff(failures)) => {}
            }
        }
    }

    /// Takes the worker out of the slot, for `ready` and `stats`.
    pub(super) fn take_worker(&mut self) -> Option<WorkerProcess> {
        let w = self.worker.take()?;
        // Its ring goes with it.
        self.spare = None;
        self.inner.health.send_modify(|h| h.live -= 1);
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_from_10_ms_and_stays_at_1_s() {
        let ms: Vec<u128> = (1..=10).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(1));
    }
}
