//! This process's default authentication key (Python's `current_process().authkey`):
//! made once by the first process, handed to every child and pool worker in its
//! handshake. Public as [`crate::connection::authkey`].

use std::sync::OnceLock;

use crate::sys;

static AUTHKEY: OnceLock<Vec<u8>> = OnceLock::new();

/// This process's default authentication key (Python's `current_process().authkey`):
/// 32 random bytes made by the first process, inherited by every child and pool worker
/// procpool starts.
///
/// # Panics
/// If the kernel's random source can be read neither through `getrandom(2)` nor
/// through `/dev/urandom`: without it there is no safe key, and a fixed one would be a
/// hole.
pub fn authkey() -> Vec<u8> {
    AUTHKEY
        .get_or_init(|| {
            let mut key = vec![0u8; 32];
            // See `# Panics`.
            sys::proc::random_bytes(&mut key).expect("the kernel's random source works");
            key
        })
        .clone()
}

/// Called in a child with its parent's key, before user code runs.
pub(crate) fn inherit_authkey(key: Vec<u8>) {
    let _ = AUTHKEY.set(key);
}
