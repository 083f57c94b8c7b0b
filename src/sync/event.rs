//! [`Event`]: a flag every waiter, in every process, wakes on.

use super::*;

const MAGIC_EVENT: u64 = 0x7073_796e_6345_0001;

const E_FLAG: usize = 0;

/// A flag processes wait on (Python's `multiprocessing.Event`): every waiter, in every
/// process, wakes when it is set.
pub struct Event {
    shared: Arc<Shared>,
}

primitive!(Event, MAGIC_EVENT, {});

impl Event {
    /// A new event, not set.
    ///
    /// # Errors
    /// A system error if the shared memory cannot be made.
    pub fn new() -> io::Result<Event> {
        Ok(Event {
            shared: Shared::create("procpool-event", MAGIC_EVENT)?,
        })
    }

    fn put(&self, v: u64) {
        if let Ok(mut g) = self.shared.lock() {
            if u64_at(g.page(), E_FLAG) != v {
                set_u64(g.page(), E_FLAG, v);
                g.changed();
            }
        }
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.put(1)
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.put(0)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.shared
            .lock()
            .map(|g| u64_at(g.page(), E_FLAG) != 0)
            .unwrap_or(false)
    }

    fn check(&self) -> io::Result<Step<()>> {
        Ok(if self.is_set() {
            Step::Ready(())
        } else {
            Step::Pending
        })
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    /// A system error from the shared state.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait(&self) -> io::Result<()> {
        self.shared.cell.wait(|_| self.check()).await
    }

    /// Waits up to `timeout`; returns whether the flag is set (Python's
    /// `wait(timeout)`).
    ///
    /// # Errors
    /// A system error from the shared state.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_timeout(&self, timeout: Duration) -> io::Result<bool> {
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(r) => r.map(|()| true),
            Err(_) => Ok(self.is_set()),
        }
    }

    /// Blocking form of [`wait`](Self::wait).
    ///
    /// # Errors
    /// A system error from the shared state.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`wait`](Self::wait) there.
    #[track_caller]
    pub fn blocking_wait(&self) -> io::Result<()> {
        crate::blocking::assert_may_block("blocking_wait", "wait");
        self.shared
            .cell
            .blocking_wait(None, |_| self.check())
            .map(drop)
    }

    /// Blocking form of [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Errors
    /// A system error from the shared state.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`wait_timeout`](Self::wait_timeout) there.
    #[track_caller]
    pub fn blocking_wait_timeout(&self, timeout: Duration) -> io::Result<bool> {
        crate::blocking::assert_may_block("blocking_wait_timeout", "wait_timeout");
        self.shared
            .cell
            .blocking_wait(deadline(timeout), |_| self.check())
            .map(|r| r.is_some())
    }
}
