//! Every system call procpool makes, and nothing else.
//!
//! The crate root denies `unsafe_code`; this module is where it is allowed again.
//! Each wrapper is small, takes and returns owned or borrowed fds (never bare
//! integers that outlive their owner), and carries a `// SAFETY:` comment naming the
//! invariant it relies on. A port to another OS touches only this module.
//!
//! What lives here:
//! - [`image`]: where the executable is mapped (`dl_iterate_phdr`), for naming
//!   functions by offset and for the build fingerprint.
//! - [`proc`]: pidfds, signals, `PR_SET_PDEATHSIG`, `getppid`, moving the control
//!   socket off stdin.
#![allow(unsafe_code)]

pub(crate) mod image;
pub(crate) mod proc;
pub(crate) mod shm;
pub(crate) mod sock;

use std::io;

/// Turns a libc return value of `-1` into the thread's `errno` as an [`io::Error`].
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
