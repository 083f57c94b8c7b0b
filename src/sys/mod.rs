//! Every system call procpool makes, and nothing else.
//!
//! The crate root denies `unsafe_code`; this module is where it is allowed again.
//! Each wrapper is small and takes and returns owned or borrowed fds (never bare
//! integers that outlive their owner). Calls go through `rustix`'s safe wrappers
//! wherever one exists; `libc` and `unsafe` remain only where none can: mapping
//! shared memory and the views of it, the process-shared robust pthread mutex,
//! receiving into uninitialised memory, walking the program headers, the `SIGPIPE`
//! disposition, real-time signals, the fork server's `fork` and `close_range`, and
//! tokio's fd registration. Each of those blocks
//! carries a `// SAFETY:` comment naming the invariant it relies on. A port to
//! another OS touches only this module.
//!
//! What lives here:
//! - [`image`]: where the executable is mapped (`dl_iterate_phdr`), for naming
//!   functions by offset and for the build fingerprint.
//! - [`proc`]: pidfds, signals, `PR_SET_PDEATHSIG`, `getppid`, moving the control
//!   socket off stdin, and what the fork server does (fork a single-threaded
//!   process, close what a child inherited, reap).
//! - [`limits`]: this process's CPU-time limit, niceness, CPU affinity and resident
//!   size, for a pool worker's limits.
#![allow(unsafe_code)]

pub(crate) mod image;
pub(crate) mod limits;
pub(crate) mod proc;
pub(crate) mod shm;
pub(crate) mod sock;
