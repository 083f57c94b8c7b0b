//! The two places outside `sys` where procpool must use `unsafe`: turning a checked
//! code address back into a trampoline, and producing a value of a zero-sized function
//! type out of nothing.
//!
//! Both rest on how a task is named (DESIGN.md, "Naming a function"): the parent sends
//! the address of a trampoline monomorphised for `(F, A, R)`, as an offset from the
//! executable's load base, over a socketpair private to the two processes; the worker
//! is the same executable (checked with the build fingerprint before any task is
//! accepted) and checks that the offset lands inside its own code.
#![allow(unsafe_code)]

use super::Trampoline;
use crate::sys::image::Image;
use crate::wire::{Failure, TaskRef};

/// Turns a task reference from the parent back into the trampoline it names.
///
/// # Errors
/// [`Failure::UnknownFunction`] if the reference is a registered id (not served yet) or
/// the address does not lie in this executable's code.
pub(crate) fn resolve(image: &Image, func: TaskRef) -> Result<Trampoline, Failure> {
    let offset = match func {
        TaskRef::Local(offset) => offset,
        TaskRef::Registered(id) => {
            return Err(Failure::UnknownFunction {
                reason: format!("registered task id {id}: this worker has no task registry"),
            })
        }
    };
    let addr = image.base.wrapping_add(offset as usize);
    if !image.is_code(addr) {
        return Err(Failure::UnknownFunction {
            reason: format!("offset {offset:#x} is outside this executable's code"),
        });
    }
    // SAFETY: `addr` lies in this executable's code, and the only peer that can name it
    // is our parent over a private socketpair, which computed the same offset from a
    // `Trampoline` value in a process running this very build (fingerprints matched
    // before any task was read). The same offset in the same image is the same
    // function, so this is the function pointer the parent started from.
    Ok(unsafe { std::mem::transmute::<usize, Trampoline>(addr) })
}

/// Produces the value of a zero-sized function type `F` (a fn item, or a closure that
/// captures nothing, or only other zero-sized functions).
///
/// Fails to compile for any `F` with a size; the public entry points check the same
/// thing first so the user sees the error at their call site.
pub(crate) fn conjure<F: Copy>() -> F {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "procpool: only zero-sized functions can be named across processes"
        )
    };
    // SAFETY: `F` is zero-sized (asserted at compile time), so it has no bytes and the
    // "all-zero" value is its only value. It is a fn item or closure type whose value carries no
    // state (the parent held one, and `Copy` means duplicating it is allowed); types
    // users can call through `Fn` on stable Rust are exactly fn items, closures and
    // pointers, and pointers are not zero-sized.
    unsafe { std::mem::zeroed::<F>() }
}
