//! The library constructor.
//!
//! It lives here, in the worker layer, rather than in `sys`: it names the worker entry,
//! and `sys` names nothing above it. The `.init_array` entry and the volatile read
//! below are its only unsafe parts.
//!
//! A function pointer in `.init_array` is called by the dynamic loader (or by the
//! static start-up code) before `main`, in every binary that links this object:
//! user binaries, examples, `tests/*.rs` and doc tests alike. `#[used]` keeps the
//! static alive through dead-code elimination and LTO.
//!
//! Safety of the constructor rests on what it does: it calls
//! [`super::run_if_worker`], which returns at once unless the process was
//! started as a procpool worker, and which catches every panic (a panic escaping a
//! constructor would abort).

#![allow(unsafe_code)]

extern "C" fn procpool_ctor() {
    super::run_if_worker();
}

#[used]
#[link_section = ".init_array"]
static PROCPOOL_CTOR: extern "C" fn() = procpool_ctor;

/// Makes sure the constructor's object is referenced from code that every pool user
/// links, so that a linker pulling archive members on demand keeps it.
pub(crate) fn keep_linked() {
    // Reading the static through a volatile load is enough to make it a live reference.
    // SAFETY: `PROCPOOL_CTOR` is a valid, initialised, immutable static of a `Copy` type.
    let _ = unsafe { std::ptr::read_volatile(&PROCPOOL_CTOR) };
}
