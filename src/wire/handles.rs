//! Passing handles: file descriptors that travel beside a frame.
//!
//! A procpool object that lives in the kernel or in shared memory (a pipe end, a
//! queue) is a handful of file descriptors. When such an object is serialised as part
//! of a message — a task's argument or result, a `Process` argument, an item sent
//! through a pipe or put in a queue — its [`Serialize`] impl hands a *duplicate* of
//! each descriptor to the message being built and writes only the descriptor's index
//! in that message. The frame goes out with the descriptors attached (`SCM_RIGHTS`);
//! on the other side the [`Deserialize`] impl takes descriptor `i` of the frame that
//! is being decoded. Every process thus holds its own descriptors for the same kernel
//! object: dropping a handle in one process closes only that process's copies.
//!
//! The "message being built/decoded" is thread-local state installed by
//! [`collecting`] and [`supplying`] around a serde call. Serialising a handle outside
//! of them (say, with `serde_json`) is a serde error naming the problem, not a panic.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::de::{DeserializeOwned, Error as _, SeqAccess, Visitor};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys;

/// Most handles' descriptors one message may carry.
pub(crate) const MAX_FDS: usize = sys::sock::MAX_FDS_PER_MESSAGE;

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What a handle says it holds, carried with it and checked on arrival: its kind and
/// the name and layout of its type parameter. A queue, pipe end or shared value that
/// arrives where another type is expected is refused, not read as the wrong type
/// (sizes alone would let a `Value<u64>` pass as a `Value<f64>`).
pub(crate) fn type_tag<T>(kind: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same in every process of a build.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut h);
    std::any::type_name::<T>().hash(&mut h);
    std::mem::size_of::<T>().hash(&mut h);
    std::mem::align_of::<T>().hash(&mut h);
    h.finish()
}

/// A procpool object that travels inside a message: a kind (`"Value"`, `"Queue"`)
/// and type parameters, then its parts (descriptors through [`SendFd`]/[`RecvFd`],
/// handles it is made of, plain numbers).
///
/// Every handle type travels through [`serialize`] and [`deserialize`] here: first
/// the tag of its kind and parameters ([`type_tag`]), then its parts. On arrival the
/// tag is checked before anything else is read, so a handle of another kind or type
/// is refused with one message, whatever its shape.
pub(crate) trait Handle: Sized {
    /// The kind as users name it; part of the tag and of refusals.
    const KIND: &'static str;
    /// The type parameters the tag covers (`()` for none).
    type Params;
    /// What is sent after the tag, borrowed from the handle.
    type Parts<'a>: Serialize
    where
        Self: 'a;
    /// What arrives after the tag.
    type Received: DeserializeOwned;

    /// The parts to send.
    fn parts(&self) -> Self::Parts<'_>;

    /// Builds the handle from what arrived; an `Err` says why it is refused.
    fn assemble(received: Self::Received) -> Result<Self, String>;
}

/// Serialises a handle: its tag, then its parts.
pub(crate) fn serialize<H: Handle, S: Serializer>(handle: &H, s: S) -> Result<S::Ok, S::Error> {
    (type_tag::<H::Params>(H::KIND), handle.parts()).serialize(s)
}

/// Deserialises a handle, refusing it (see [`refuse`]) if its tag is not `H`'s or if
/// [`Handle::assemble`] turns its parts down.
pub(crate) fn deserialize<'de, H: Handle, D: Deserializer<'de>>(d: D) -> Result<H, D::Error> {
    struct Tagged<H>(PhantomData<H>);

    impl<'de, H: Handle> Visitor<'de> for Tagged<H> {
        type Value = H;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a procpool {}", H::KIND)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<H, A::Error> {
            let tag: u64 = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(0, &self))?;
            if tag != type_tag::<H::Params>(H::KIND) {
                return Err(refuse(format!(
                    "a handle of another kind or type arrived where a {} was expected",
                    short_type_name::<H>()
                )));
            }
            let received = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(1, &self))?;
            H::assemble(received).map_err(refuse)
        }
    }

    d.deserialize_tuple(2, Tagged(PhantomData))
}

/// `Serialize` and `Deserialize` for a type that implements [`Handle`], through
/// [`serialize`] and [`deserialize`].
macro_rules! handle_serde {
    ($ty:ident $(< $($p:ident),* >)?) => {
        impl$(<$($p),*>)? serde::Serialize for $ty$(<$($p),*>)?
        where
            Self: $crate::wire::handles::Handle,
        {
            fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
                $crate::wire::handles::serialize(self, s)
            }
        }

        impl<'de, $($($p),*)?> serde::Deserialize<'de> for $ty$(<$($p),*>)?
        where
            Self: $crate::wire::handles::Handle,
        {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::wire::handles::deserialize(d)
            }
        }
    };
}
pub(crate) use handle_serde;

/// `T`'s name without module paths: `Value<f64>`, `Connection<String, u32>`.
pub(crate) fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(""));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(""));
    out
}

/// The error a handle's `Deserialize` returns when it refuses what arrived (another
/// type, a short file). Serde formats such as postcard keep no custom message, so the
/// message is also kept aside for [`reason`] to report.
pub(crate) fn refuse<E: serde::de::Error>(why: impl std::fmt::Display) -> E {
    let why = why.to_string();
    REFUSAL.with(|r| *r.borrow_mut() = Some(why.clone()));
    E::custom(why)
}

/// Why decoding a message failed: what a handle in it said when it refused, if one
/// did, else the decoder's own error.
pub(crate) fn reason(e: &impl std::fmt::Display) -> String {
    REFUSAL
        .with(|r| r.borrow_mut().take())
        .unwrap_or_else(|| e.to_string())
}

const OUTSIDE: &str = "a procpool handle (pipe end, queue, ...) can only be sent through \
    procpool: as a task or Process argument or result, through a pipe, or in a queue";

/// Runs `encode` (which serialises one message) and returns the descriptors the
/// handles in it contributed, in index order.
pub(crate) fn collecting<R>(encode: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let mut fds = Vec::new();
    let r = collect_into(&mut fds, encode);
    (r, fds)
}

/// Runs `encode` with handles appending their descriptors to `fds`: several values
/// encoded into one frame (a `map` chunk) share one index space. Nests: an outer
/// collection is set aside while an inner one runs.
pub(crate) fn collect_into<R>(fds: &mut Vec<OwnedFd>, encode: impl FnOnce() -> R) -> R {
    let outer = OUTGOING.with(|c| c.replace(Some(std::mem::take(fds))));
    let r = encode();
    *fds = OUTGOING
        .with(|c| c.replace(outer))
        .expect("installed above");
    r
}

/// Runs `decode` (which deserialises one message) with that message's descriptors
/// available to the handles in it. Descriptors no handle claimed are closed.
pub(crate) fn supplying<R>(fds: Vec<OwnedFd>, decode: impl FnOnce() -> R) -> R {
    let mut slots = fds.into_iter().map(Some).collect();
    supply_from(&mut slots, decode)
}

/// Runs `decode` with the descriptors in `fds` available by index; the ones claimed
/// are taken out. Several values decoded from one frame share the slots.
pub(crate) fn supply_from<R>(fds: &mut Vec<Option<OwnedFd>>, decode: impl FnOnce() -> R) -> R {
    // A refusal left from an earlier message must not explain this one's failure.
    REFUSAL.with(|r| r.borrow_mut().take());
    let outer = INCOMING.with(|c| c.replace(Some(std::mem::take(fds))));
    let r = decode();
    *fds = INCOMING
        .with(|c| c.replace(outer))
        .expect("installed above");
    r
}

/// Serialises as the index of a duplicate of the descriptor in the message being
/// built.
#[derive(Debug)]
pub(crate) struct SendFd<'a>(pub(crate) BorrowedFd<'a>);

impl Serialize for SendFd<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let index = OUTGOING.with(|c| -> Result<u32, String> {
            let mut c = c.borrow_mut();
            let fds = c.as_mut().ok_or_else(|| OUTSIDE.to_owned())?;
            if fds.len() >= MAX_FDS {
                return Err(format!(
                    "one message can carry at most {MAX_FDS} descriptors of handles"
                ));
            }
            let dup = sys::sock::dup(self.0).map_err(|e| format!("duplicating a handle: {e}"))?;
            fds.push(dup);
            Ok((fds.len() - 1) as u32)
        });
        match index {
            Ok(i) => s.serialize_u32(i),
            Err(e) => Err(S::Error::custom(e)),
        }
    }
}

/// Deserialises a descriptor index into the descriptor that arrived with the message.
#[derive(Debug)]
pub(crate) struct RecvFd(pub(crate) OwnedFd);

impl<'de> Deserialize<'de> for RecvFd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(d)? as usize;
        INCOMING
            .with(|c| {
                let mut c = c.borrow_mut();
                let fds = c.as_mut().ok_or(OUTSIDE)?;
                fds.get_mut(index)
                    .and_then(Option::take)
                    .ok_or("a handle refers to a descriptor that did not arrive")
            })
            .map(RecvFd)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    #[test]
    fn descriptors_are_collected_and_supplied_by_index() {
        let (a, _b) = sys::sock::pair(sys::sock::Kind::Stream).unwrap();
        let (bytes, fds) =
            collecting(|| postcard::to_allocvec(&(7u8, SendFd(a.as_fd()), SendFd(a.as_fd()))));
        let bytes = bytes.unwrap();
        assert_eq!(fds.len(), 2);
        assert_ne!(
            fds[0].as_raw_fd(),
            a.as_raw_fd(),
            "a duplicate, not the original"
        );
        let (n, RecvFd(x), RecvFd(y)) =
            supplying(fds, || postcard::from_bytes::<(u8, RecvFd, RecvFd)>(&bytes)).unwrap();
        assert_eq!(n, 7);
        assert_ne!(x.as_raw_fd(), y.as_raw_fd());
    }

    /// Sends `value` as a message would carry it and receives it as a `U`; the
    /// refusal's reason if it is refused.
    pub(crate) fn resend<V: Serialize, U: serde::de::DeserializeOwned>(
        value: &V,
    ) -> Result<U, String> {
        let (bytes, fds) = collecting(|| postcard::to_allocvec(value));
        let bytes = bytes.map_err(|e| e.to_string())?;
        supplying(fds, || postcard::from_bytes::<U>(&bytes)).map_err(|e| reason(&e))
    }

    #[test]
    fn short_type_names_drop_module_paths() {
        assert_eq!(short_type_name::<Vec<String>>(), "Vec<String>");
        assert_eq!(
            short_type_name::<(std::sync::Arc<u8>, Option<()>)>(),
            "(Arc<u8>, Option<()>)"
        );
    }

    #[test]
    fn outside_a_message_a_handle_is_an_error() {
        let (a, _b) = sys::sock::pair(sys::sock::Kind::Stream).unwrap();
        assert!(postcard::to_allocvec(&SendFd(a.as_fd())).is_err());
        let bytes = postcard::to_allocvec(&0u32).unwrap();
        assert!(postcard::from_bytes::<RecvFd>(&bytes).is_err());
        // A descriptor claimed twice, or one that never came, is an error too.
        assert!(supplying(Vec::new(), || postcard::from_bytes::<RecvFd>(&bytes)).is_err());
    }
}
