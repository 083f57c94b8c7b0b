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
///
/// With an action ([`Barrier::with_action`]), the last party to arrive runs it, in its
/// own process, before the others are released; once per generation. An action is a
/// type that implements [`BarrierAction`]: a process that receives the barrier runs
/// its own copy of `A::run`, so no code address ever crosses between processes (the
/// handle's tag names `A`, and a barrier received as another action type is refused).
/// A panicking action breaks the barrier: the party that ran it gets
/// [`WaitError::ActionPanicked`], the others [`WaitError::BrokenBarrier`].
///
/// ```
/// use procpool::{Barrier, BarrierAction};
///
/// struct Announce;
///
/// impl BarrierAction for Announce {
///     fn run() {
///         println!("all arrived");
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let barrier: Barrier<Announce> = Barrier::with_action(1, Announce)?;
/// assert_eq!(barrier.wait().await?, 0); // the only party: it ran `Announce::run`
/// # Ok(())
/// # }
/// ```
pub struct Barrier<A = NoAction> {
    shared: Arc<Shared>,
    _action: PhantomData<fn() -> A>,
}

/// The action of a [`Barrier`] without one.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAction;

/// What a [`Barrier`] runs in the last party to arrive, before it releases the others
/// (Python's `Barrier(parties, action)`). Implement it on a type of your own (a unit
/// struct, usually): the type names the action in every process, so it can be named
/// in a task's argument type, as `Barrier<MyAction>`.
pub trait BarrierAction: 'static {
    /// Whether there is nothing to run ([`NoAction`]).
    #[doc(hidden)]
    const NONE: bool = false;

    /// The action. A panic breaks the barrier.
    fn run();
}

impl BarrierAction for NoAction {
    const NONE: bool = true;

    fn run() {}
}

impl<A> Clone for Barrier<A> {
    fn clone(&self) -> Self {
        Barrier {
            shared: self.shared.clone(),
            _action: PhantomData,
        }
    }
}

impl<A> fmt::Debug for Barrier<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier").finish_non_exhaustive()
    }
}

impl<A: BarrierAction> Handle for Barrier<A> {
    const KIND: &'static str = "Barrier";
    type Params = A;
    type Parts<'a> = SharedParts<'a>;
    type Received = (RecvFd, RecvFd);

    fn parts(&self) -> SharedParts<'_> {
        self.shared.parts()
    }

    fn assemble(fds: (RecvFd, RecvFd)) -> Result<Self, String> {
        Ok(Barrier {
            shared: Shared::open(fds, MAGIC_BARRIER)?,
            _action: PhantomData,
        })
    }
}

handle_serde!(Barrier<A>);

/// What [`Barrier::wait`] attempts return: arrival, or the generation waited on.
enum Arrival {
    Done(usize),
    /// The last party, with an action to run before it releases the others.
    Last {
        index: usize,
        generation: u64,
    },
    Waiting {
        index: usize,
        generation: u64,
    },
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
        Barrier::make(parties)
    }

    /// A barrier for `parties` waiters whose last arrival runs `A::run` before it
    /// releases the others (Python's `Barrier(parties, action)`). The value only names
    /// the type.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_action<A: BarrierAction>(parties: usize, action: A) -> io::Result<Barrier<A>> {
        let _ = action;
        Barrier::make(parties)
    }
}

impl<A: BarrierAction> Barrier<A> {
    fn make(parties: usize) -> io::Result<Barrier<A>> {
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
        Ok(Barrier {
            shared,
            _action: PhantomData,
        })
    }

    /// The last party's part: runs the action, then releases the others, or breaks
    /// the barrier if the action panicked (or the barrier was broken or reset
    /// meanwhile).
    fn run_action(&self, index: usize, generation: u64) -> Result<usize, WaitError> {
        let outcome = crate::task::catch(A::run);
        let mut g = self.shared.lock()?;
        let page = g.page();
        let intact = u64_at(page, B_GENERATION) == generation && u64_at(page, B_BROKEN) == 0;
        let result = match outcome {
            Ok(()) if intact => {
                set_u64(page, B_COUNT, 0);
                set_u64(page, B_GENERATION, generation + 1);
                Ok(index)
            }
            Ok(()) => Err(WaitError::BrokenBarrier),
            Err(failure) => {
                set_u64(page, B_BROKEN, 1);
                Err(match failure {
                    crate::wire::Failure::Panicked(info) => WaitError::ActionPanicked(info),
                    _ => WaitError::BrokenBarrier,
                })
            }
        };
        g.changed();
        result
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
            if !A::NONE {
                // Released by `run_action`, once the action ran.
                return Ok(Arrival::Last {
                    index: index as usize,
                    generation,
                });
            }
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
            Arrival::Last { index, generation } => self.run_action(index, generation),
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
            Arrival::Last { index, generation } => self.run_action(index, generation),
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
            Arrival::Last { index, generation } => self.run_action(index, generation),
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
            Arrival::Last { index, generation } => self.run_action(index, generation),
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
