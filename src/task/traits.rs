//! What a function must be to run in another process, said once: [`Task`] and
//! [`AsyncTask`] for the function, [`Message`] for what travels.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value that can travel between processes: serialisable both ways, `Send` and
/// owning its data. Implemented for every such type; never implement it yourself.
///
/// Handles (queues, pipe ends, locks, shared memory) are messages too: they travel
/// with their file descriptors.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// A function from `A` to `R` that another process of this program can run: a fn item
/// (`fib`) or a closure that captures nothing (`|x: u64| x * 2`).
///
/// A worker runs the same executable, so it finds the same function from its address;
/// captured variables would be in the parent's memory only. A capturing closure or a
/// function pointer (which has a size) therefore fails to compile where it is
/// submitted, with a message that says to pass the data in the argument instead:
///
/// ```compile_fail
/// # #[tokio::main] async fn main() {
/// let pool = procpool::ProcessPoolExecutor::new().unwrap();
/// let offset = 10u32;
/// let _ = pool.submit(move |x: u32| x + offset, 1);
/// # }
/// ```
///
/// Sealed: implemented for every such function, and by nothing else.
pub trait Task<A, R>: Fn(A) -> R + Copy + Send + 'static + sealed::Sealed<A, R> {
    /// Evaluated (at compile time) where a task is submitted: only a function that
    /// captures nothing can be found again in another process.
    #[doc(hidden)]
    const CAPTURES_NOTHING: () = assert_captures_nothing::<Self>();
}

impl<F, A, R> Task<A, R> for F
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: Message,
    R: Message,
{
}

/// An async function from `A` to a future of `R` that another process of this program
/// can run to completion on a current-thread runtime of its own; as [`Task`], it must
/// capture nothing. The future need not be `Send`.
///
/// Sealed: implemented for every such function, and by nothing else.
pub trait AsyncTask<A, R>: Copy + Send + 'static + sealed::Sealed<A, R> {
    /// The future the function returns.
    type Future: Future<Output = R> + 'static;

    /// Calls the function.
    fn call(self, arg: A) -> Self::Future;

    /// As [`Task`]'s.
    #[doc(hidden)]
    const CAPTURES_NOTHING: () = assert_captures_nothing::<Self>();
}

impl<F, A, Fut, R> AsyncTask<A, R> for F
where
    F: Fn(A) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = R> + 'static,
    A: Message,
    R: Message,
{
    type Future = Fut;

    fn call(self, arg: A) -> Fut {
        self(arg)
    }
}

/// Fails (at compile time, where called in a constant) for a function with a size: a
/// capturing closure or a function pointer.
pub(crate) const fn assert_captures_nothing<F>() {
    assert!(std::mem::size_of::<F>() == 0, "{}", CAPTURES_SOMETHING);
}

/// Why a function with a size is refused.
const CAPTURES_SOMETHING: &str = "procpool can only send functions that capture nothing \
    (fn items and non-capturing closures): a worker process cannot see the captured \
    variables. Pass the captured data in the argument instead.";

mod sealed {
    /// Keeps [`Task`](super::Task) and [`AsyncTask`](super::AsyncTask) to the
    /// functions the blanket impls cover.
    pub trait Sealed<A, R> {}

    impl<F: Copy + Send + 'static, A, R> Sealed<A, R> for F {}
}
