//! How a pool stops: gracefully (`shutdown`), cancelling what is queued
//! (`shutdown_cancel_pending`), at once (`shutdown_now`), or gracefully up to a
//! deadline (`shutdown_timeout`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::ProcessPoolExecutor;
use crate::error::{Error, TaskError};

impl ProcessPoolExecutor {
    /// Stops accepting tasks, lets queued and running tasks finish, then stops the
    /// workers and reaps them.
    ///
    /// # Cancel safety
    /// Cancel safe: the pool is closed as soon as this is first polled, and the drain
    /// goes on in the background; calling it again waits again.
    pub async fn shutdown(&self) {
        self.close();
        // An elastic pool's last slot may have retired as jobs were queued.
        self.grow();
        self.join_drivers().await;
    }

    /// Stops accepting tasks, cancels the queued ones ([`TaskError::Cancelled`]), lets
    /// the running ones finish, then stops the workers and reaps them: Python's
    /// `shutdown(cancel_futures=True)`.
    ///
    /// "Running" is what a worker has taken: as Python counts the few calls in its
    /// call queue as running, a task already sent to a worker ahead of the one it is
    /// running (pipelining, see [`PoolBuilder::pipeline_depth`](super::PoolBuilder::pipeline_depth)) runs too. A task a
    /// worker gives back unstarted (its worker died, or it was handed to another) is
    /// cancelled.
    ///
    /// ```
    /// # fn wait_for(go: procpool::Event) -> u32 { go.blocking_wait().unwrap(); 7 }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = procpool::ProcessPoolExecutor::builder().workers(1).pipeline_depth(1).build()?;
    /// let go = procpool::Event::new()?;
    /// let running = pool.submit(wait_for, go.clone()).await?;
    /// running.started().await; // the worker took it
    /// let queued = pool.submit(wait_for, go.clone()).await?;
    /// let stop = tokio::spawn({
    ///     let pool = pool.clone();
    ///     async move { pool.shutdown_cancel_pending().await }
    /// });
    /// assert!(matches!(queued.await, Err(procpool::TaskError::Cancelled)));
    /// go.set();
    /// assert_eq!(running.await?, 7);
    /// stop.await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe, as [`shutdown`](Self::shutdown).
    pub async fn shutdown_cancel_pending(&self) {
        let inner = &self.shared.inner;
        inner.pending_cancelled.store(true, Ordering::Release);
        self.close();
        inner.cancel_queued();
        self.join_drivers().await;
    }

    /// Stops accepting tasks, cancels queued ones ([`TaskError::Cancelled`]), kills
    /// the running ones' workers, and reaps every worker.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`shutdown`](Self::shutdown).
    pub async fn shutdown_now(&self) {
        self.close();
        self.shared.inner.abort.cancel();
        self.shared.inner.cancel_queued();
        self.join_drivers().await;
        self.shared.inner.cancel_queued();
    }

    /// Drains as [`shutdown`](Self::shutdown) does, for at most `timeout`; then kills
    /// the workers as [`shutdown_now`](Self::shutdown_now) does, and the tasks still
    /// queued or running fail with [`TaskError::ShutdownTimedOut`] (not `Cancelled`:
    /// nobody cancelled them). Every worker is reaped before it returns, either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn spin(_: ()) { loop { std::hint::spin_loop() } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = procpool::ProcessPoolExecutor::builder().workers(1).build()?;
    /// let stuck = pool.submit(spin, ()).await?;
    /// let result = pool.shutdown_timeout(Duration::from_millis(100)).await;
    /// assert!(matches!(result, Err(procpool::Error::ShutdownTimedOut { unfinished: 1, .. })));
    /// assert!(matches!(stuck.await, Err(procpool::TaskError::ShutdownTimedOut { .. })));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::ShutdownTimedOut`] if the pool did not drain in time, with the number
    /// of tasks (and `map` items) it failed.
    ///
    /// # Cancel safety
    /// Dropped before the deadline, the pool keeps draining in the background, as
    /// after [`shutdown`](Self::shutdown); dropped after it, the workers are being
    /// killed and the pool ends as after [`shutdown_now`](Self::shutdown_now).
    pub async fn shutdown_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.close();
        // An elastic pool's last slot may have retired as jobs were queued.
        self.grow();
        if tokio::time::timeout(timeout, self.join_drivers())
            .await
            .is_ok()
        {
            return Ok(());
        }
        let inner = &self.shared.inner;
        let unfinished = inner.jobs.items() + inner.counters.running.load(Ordering::Relaxed);
        let _ = inner
            .stop_reason
            .set(TaskError::ShutdownTimedOut { after: timeout });
        inner.abort.cancel();
        inner.cancel_queued();
        self.join_drivers().await;
        inner.cancel_queued();
        Err(Error::ShutdownTimedOut {
            after: timeout,
            unfinished,
        })
    }

    /// Whether [`shutdown`](Self::shutdown), [`shutdown_now`](Self::shutdown_now) or
    /// [`shutdown_timeout`](Self::shutdown_timeout) was called.
    pub fn is_shutdown(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.shared.close();
    }

    async fn join_drivers(&self) {
        let mut alive = self.shared.inner.alive.subscribe();
        // The sender lives in `inner`, which we hold: this cannot fail.
        let _ = alive.wait_for(|n| *n == 0).await;
    }
}
