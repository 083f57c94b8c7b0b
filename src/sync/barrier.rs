//! [`Barrier`]: a fixed number of parties that wait for each other.

use super::*;

const MAGIC_BARRIER: u64 = 0x7073_796e_6342_0001;

// Barrier fields.
const B_PARTIES: usize = 0;
const B_COUNT: usize = 8;
const B_GENERATION: usize = 16;
const B_BROKEN: usize = 24;
/// The generation that `reset` ended (its waiters get `BrokenBarrier`), plus one.
const B_RESET_GEN: usize = 32;

/// A barrier for a fixed number of parties (Python's `multiprocessing.Barrier`): each
/// `wait` blocks until `parties` waits have arrived, then all return.
pub struct Barrier {
    shared: Arc<Shared>,
}

primitive!(Barrier, MAGIC_BARRIER, {});

/// What [`Barrier::wait`] attempts return: arrival, or the generation waited on.
enum Arrival {
    Done(usize),
    Waiting { index: usize, generation: u64 },
}

impl Barrier {
    /// A barrier for `parties` waiters.
    ///
    /// # Errors
    /// `InvalidInput` for 0 parties; a system error if the shared memory cannot be
    /// made.
    pub fn new(parties: usize) -> io::Result<Barrier> {
        if parties == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a barrier needs at least one party",
            ));
        }
        let shared = Shared::create("procpool-barrier", MAGIC_BARRIER)?;
        {
            let g = shared.lock()?;
            set_u64(g.page(), B_PARTIES, parties as u64);
        }
        Ok(Barrier { shared })
    }

    fn arrive(&self) -> Result<Arrival, WaitError> {
        let mut g = self.shared.lock()?;
        let page = g.page();
        if u64_at(page, B_BROKEN) != 0 {
            return Err(WaitError::BrokenBarrier);
        }
        let index = u64_at(page, B_COUNT);
        let generation = u64_at(page, B_GENERATION);
        if index + 1 == u64_at(page, B_PARTIES) {
            set_u64(page, B_COUNT, 0);
            set_u64(page, B_GENERATION, generation + 1);
            g.changed();
            return Ok(Arrival::Done(index as usize));
        }
        set_u64(page, B_COUNT, index + 1);
        g.changed();
        Ok(Arrival::Waiting {
            index: index as usize,
            generation,
        })
    }

    fn passed(&self, generation: u64) -> Result<Step<()>, WaitError> {
        let g = self.shared.lock()?;
        let page = g.page();
        if u64_at(page, B_GENERATION) != generation {
            if u64_at(page, B_RESET_GEN) == generation + 1 {
                return Err(WaitError::BrokenBarrier);
            }
            return Ok(Step::Ready(()));
        }
        if u64_at(page, B_BROKEN) != 0 {
            return Err(WaitError::BrokenBarrier);
        }
        Ok(Step::Pending)
    }

    /// Waits for all parties; returns this caller's arrival index (`0..parties`,
    /// different for each; the last to arrive gets `parties - 1` and releases the
    /// others).
    ///
    /// # Errors
    /// [`WaitError::BrokenBarrier`] if the barrier is or becomes broken.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled wait has already been counted as arrived; break
    /// the barrier ([`abort`](Self::abort)) if that matters.
    pub async fn wait(&self) -> Result<usize, WaitError> {
        match self.arrive()? {
            Arrival::Done(i) => Ok(i),
            Arrival::Waiting { index, generation } => {
                self.shared.cell.wait(|_| self.passed(generation)).await?;
                Ok(index)
            }
        }
    }

    /// [`wait`](Self::wait) for at most `timeout`. A timeout breaks the barrier for
    /// everyone, as in Python.
    ///
    /// # Errors
    /// [`WaitError::BrokenBarrier`] on a timeout or a broken barrier.
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`wait`](Self::wait).
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<usize, WaitError> {
        match self.arrive()? {
            Arrival::Done(i) => Ok(i),
            Arrival::Waiting { index, generation } => {
                match tokio::time::timeout(
                    timeout,
                    self.shared.cell.wait(|_| self.passed(generation)),
                )
                .await
                {
                    Ok(r) => r.map(|()| index),
                    Err(_) => self.timed_out(generation, index),
                }
            }
        }
    }

    /// Breaks the barrier after a timeout, unless it passed at the last moment.
    fn timed_out(&self, generation: u64, index: usize) -> Result<usize, WaitError> {
        match self.passed(generation) {
            Ok(Step::Ready(())) => Ok(index),
            Err(e) => Err(e),
            _ => {
                self.abort();
                Err(WaitError::BrokenBarrier)
            }
        }
    }

    /// Blocking form of [`wait`](Self::wait).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`wait`](Self::wait) there.
    #[track_caller]
    pub fn blocking_wait(&self) -> Result<usize, WaitError> {
        crate::blocking::assert_may_block("blocking_wait", "wait");
        match self.arrive()? {
            Arrival::Done(i) => Ok(i),
            Arrival::Waiting { index, generation } => {
                self.shared
                    .cell
                    .blocking_wait(None, |_| self.passed(generation))?;
                Ok(index)
            }
        }
    }

    /// Blocking form of [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Errors
    /// As [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`wait_timeout`](Self::wait_timeout) there.
    #[track_caller]
    pub fn blocking_wait_timeout(&self, timeout: Duration) -> Result<usize, WaitError> {
        crate::blocking::assert_may_block("blocking_wait_timeout", "wait_timeout");
        match self.arrive()? {
            Arrival::Done(i) => Ok(i),
            Arrival::Waiting { index, generation } => match self
                .shared
                .cell
                .blocking_wait(deadline(timeout), |_| self.passed(generation))?
            {
                Some(()) => Ok(index),
                None => self.timed_out(generation, index),
            },
        }
    }

    /// Breaks the barrier: current and future waits fail with
    /// [`WaitError::BrokenBarrier`] until [`reset`](Self::reset).
    pub fn abort(&self) {
        if let Ok(mut g) = self.shared.lock() {
            set_u64(g.page(), B_BROKEN, 1);
            g.changed();
        }
    }

    /// Returns the barrier to its initial state; parties waiting now get
    /// [`WaitError::BrokenBarrier`].
    pub fn reset(&self) {
        if let Ok(mut g) = self.shared.lock() {
            let page = g.page();
            let generation = u64_at(page, B_GENERATION);
            if u64_at(page, B_COUNT) > 0 {
                set_u64(page, B_RESET_GEN, generation + 1);
            }
            set_u64(page, B_GENERATION, generation + 1);
            set_u64(page, B_COUNT, 0);
            set_u64(page, B_BROKEN, 0);
            g.changed();
        }
    }

    /// How many parties are waiting now.
    pub fn n_waiting(&self) -> usize {
        self.shared
            .lock()
            .map(|g| u64_at(g.page(), B_COUNT) as usize)
            .unwrap_or(0)
    }

    /// How many parties the barrier waits for.
    pub fn parties(&self) -> usize {
        self.shared
            .lock()
            .map(|g| u64_at(g.page(), B_PARTIES) as usize)
            .unwrap_or(0)
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.shared
            .lock()
            .map(|g| u64_at(g.page(), B_BROKEN) != 0)
            .unwrap_or(true)
    }
}
