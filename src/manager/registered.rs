//! Types of your own served by a manager (Python's `BaseManager.register`): the
//! [`SharedObject`] trait, [`ManagerBuilder::register`], and [`SharedProxy`].
//!
//! A registered type's methods run in the manager, one request at a time, so each call
//! is atomic. What crosses the connection is values only: the call (your enum) and the
//! reply. The manager finds the code for a name in a table that its own process builds
//! from the types registered on its builder; a client names a type and sends values,
//! never code.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;
use crate::task::panic_message;

/// A type a manager can keep and serve, with its methods as values: `Call` says which
/// method and with what, `Reply` is what it returns.
///
/// ```
/// use procpool::manager::{Manager, SharedObject};
/// use serde::{Deserialize, Serialize};
///
/// /// A tally of votes, kept by the manager.
/// #[derive(Default)]
/// struct Tally(std::collections::BTreeMap<String, u64>);
///
/// #[derive(Serialize, Deserialize)]
/// enum TallyCall {
///     Vote(String),
///     Count(String),
/// }
///
/// impl SharedObject for Tally {
///     const NAME: &'static str = "Tally";
///     type Init = ();
///     type Call = TallyCall;
///     type Reply = u64;
///
///     fn new((): ()) -> Self {
///         Tally::default()
///     }
///
///     fn call(&mut self, call: TallyCall) -> u64 {
///         match call {
///             TallyCall::Vote(who) => {
///                 let n = self.0.entry(who).or_default();
///                 *n += 1;
///                 *n
///             }
///             TallyCall::Count(who) => self.0.get(&who).copied().unwrap_or(0),
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder().register::<Tally>().start().await?;
/// let tally = manager.object::<Tally>(&()).await?;
/// tally.call(&TallyCall::Vote("ada".into())).await?;
/// assert_eq!(tally.call(&TallyCall::Vote("ada".into())).await?, 2);
/// assert_eq!(tally.call(&TallyCall::Count("bob".into())).await?, 0);
/// manager.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub trait SharedObject: Send + 'static {
    /// The name clients ask for: unique among the types one manager serves, and the
    /// same in every program that uses the manager.
    const NAME: &'static str;
    /// What [`Manager::object`] sends to make one.
    type Init: Serialize + DeserializeOwned;
    /// A method and its arguments (usually an enum).
    type Call: Serialize + DeserializeOwned;
    /// What a method returns.
    type Reply: Serialize + DeserializeOwned;

    /// Makes the object, in the manager.
    fn new(init: Self::Init) -> Self;

    /// Runs a method, in the manager, while no other request is applied. A panic is
    /// returned to the caller as [`Refusal::Panicked`] and leaves the object as the
    /// panic left it.
    fn call(&mut self, call: Self::Call) -> Self::Reply;
}

/// A registered object, as the manager keeps it.
pub(super) type Object = Box<dyn Any + Send>;

/// One registered type's entry in a manager's table.
#[derive(Debug)]
pub struct Entry {
    pub(super) name: &'static str,
    /// Makes an object from its encoded init.
    pub(super) make: fn(&[u8]) -> Result<Object, Refusal>,
    /// Applies an encoded call to an object: the encoded reply.
    pub(super) call: Method,
}

/// How an entry applies an encoded call to an object: the encoded reply.
type Method = fn(&mut (dyn Any + Send), &[u8]) -> Result<Vec<u8>, Refusal>;

fn undecodable<T>(what: &str) -> Refusal {
    Refusal::Undecodable {
        what: format!("{what} ({})", std::any::type_name::<T>()),
    }
}

fn make<T: SharedObject>(init: &[u8]) -> Result<Object, Refusal> {
    let init: T::Init = postcard::from_bytes(init).map_err(|_| undecodable::<T::Init>("init"))?;
    let made = catch_unwind(AssertUnwindSafe(|| T::new(init)));
    match made {
        Ok(object) => Ok(Box::new(object)),
        Err(p) => Err(Refusal::Panicked {
            message: panic_message(p.as_ref()),
        }),
    }
}

fn call<T: SharedObject>(object: &mut (dyn Any + Send), call: &[u8]) -> Result<Vec<u8>, Refusal> {
    // The table pairs each object with its own type's entry.
    let object = object.downcast_mut::<T>().ok_or(Refusal::NoSuchObject)?;
    let call: T::Call = postcard::from_bytes(call).map_err(|_| undecodable::<T::Call>("a call"))?;
    let reply =
        catch_unwind(AssertUnwindSafe(|| object.call(call))).map_err(|p| Refusal::Panicked {
            message: panic_message(p.as_ref()),
        })?;
    postcard::to_allocvec(&reply).map_err(|_| undecodable::<T::Reply>("a reply"))
}

impl Entry {
    fn of<T: SharedObject>() -> Entry {
        Entry {
            name: T::NAME,
            make: make::<T>,
            call: call::<T>,
        }
    }
}

/// The types registered on a [`ManagerBuilder`], as a list in its type: `()`, then
/// `(Registers<T>, rest)`. It is what makes the manager's process serve them.
/// Implemented for those lists only.
pub trait Registry: Send + 'static + sealed::Sealed {}

impl<L: Send + 'static + sealed::Sealed> Registry for L {}

pub(crate) mod sealed {
    use super::{Entry, Registers, SharedObject};

    /// The table entries of a list of registered types (not nameable outside the
    /// crate, so nobody else implements [`Registry`](super::Registry)).
    pub trait Sealed {
        fn entries(out: &mut Vec<Entry>);
    }

    impl Sealed for () {
        fn entries(_: &mut Vec<Entry>) {}
    }

    impl<T: SharedObject, L: Sealed> Sealed for (Registers<T>, L) {
        fn entries(out: &mut Vec<Entry>) {
            L::entries(out);
            out.push(Entry::of::<T>());
        }
    }
}

/// One registered type in a [`Registry`].
pub struct Registers<T>(PhantomData<fn() -> T>);

impl<T> fmt::Debug for Registers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Registers<{}>", std::any::type_name::<T>())
    }
}

/// Builds a manager that serves types of your own as well as the built-in ones.
///
/// [`Manager::builder`]`().register::<A>().register::<B>().start()`; see
/// [`SharedObject`] for an example.
#[must_use = "a ManagerBuilder does nothing until start is called"]
pub struct ManagerBuilder<L = ()> {
    _types: PhantomData<fn() -> L>,
}

impl<L> fmt::Debug for ManagerBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("types", &std::any::type_name::<L>())
            .finish()
    }
}

impl ManagerBuilder<()> {
    pub(super) fn new() -> Self {
        ManagerBuilder {
            _types: PhantomData,
        }
    }
}

impl<L: Registry> ManagerBuilder<L> {
    /// Serves objects of type `T` as well ([`Manager::object`]). A second type of the
    /// same [`NAME`](SharedObject::NAME) is never reached: the first is served.
    pub fn register<T: SharedObject>(self) -> ManagerBuilder<(Registers<T>, L)> {
        ManagerBuilder {
            _types: PhantomData,
        }
    }

    /// Starts the manager's server process, as [`Manager::start`], serving the
    /// registered types.
    ///
    /// # Errors
    /// [`ManagerError::Start`] if the process or its socket could not be made.
    ///
    /// # Cancel safety
    /// As [`Manager::start`].
    pub async fn start(self) -> Result<Manager, ManagerError> {
        Manager::start_serving(server::serve::<L>).await
    }

    /// Makes this process the manager, at `address`, as [`Manager::serve`], serving
    /// the registered types.
    ///
    /// # Errors
    /// [`ManagerError::Start`] if the address cannot be bound.
    ///
    /// # Cancel safety
    /// As [`Manager::serve`].
    pub async fn serve(
        self,
        address: impl Into<Address>,
        authkey: &[u8],
    ) -> Result<ManagerServer, ManagerError> {
        Manager::serve_types(address, authkey, server::Registered::of::<L>()).await
    }
}

/// An object of a registered type kept by the manager ([`Manager::object`]).
pub struct SharedProxy<T>(pub(super) Proxy<T>);

proxy_impls!(SharedProxy<T>);

impl<T: SharedObject> SharedProxy<T> {
    call_pair!(
        /// Runs `call` on the object in the manager and returns its reply.
        /// [`Refusal::Panicked`] if the method panicked there, [`Refusal::Undecodable`]
        /// if the manager's build decodes the call differently.
        call, blocking_call, (call: &T::Call) -> T::Reply,
        |p| Request::Call(p.0.id, encode(call)?),
        |r| required(bytes_of(r)?)
    );
}
