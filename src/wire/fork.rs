//! What a parent and its fork server say to each other (see
//! [`StartMethod::ForkServer`](crate::StartMethod::ForkServer)).
//!
//! Three channels, all unix sockets:
//!
//! - **requests** (`SOCK_SEQPACKET`, the server's stdin): the parent sends one
//!   [`ForkRequest`] per worker, postcard, with two descriptors beside it: the worker's
//!   end of its control socket and the server's end of the worker's *status* socket.
//!   Any thread of the parent may send one (a packet arrives whole); nothing comes back
//!   on this socket.
//! - **status** (`SOCK_STREAM`, one per worker): the server answers the request there,
//!   [`REPLY_LEN`] bytes ([`ForkReply`]), with the worker's pidfd beside a
//!   [`ForkReply::Forked`]. Once the worker has exited, the server reaps it and writes
//!   its raw wait status ([`STATUS_LEN`] bytes, little endian), then closes its end.
//!   End of stream before either: the server died first.
//! - the worker's **control socket**, exactly as for a worker started by `exec`.

use serde::{Deserialize, Serialize};

/// Largest request the server reads (the environment is the only part that grows).
pub(crate) const MAX_REQUEST: usize = 64 * 1024;

/// Length of a status message: an `i32`, the raw status `waitpid` gave.
pub(crate) const STATUS_LEN: usize = 4;

/// Start one worker.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ForkRequest {
    /// The pool's process (the worker's parent as `parent_process()` tells it).
    pub(crate) parent: u32,
    /// The worker leads a process group of its own.
    pub(crate) own_group: bool,
    /// Variables set on top of the server's environment, as bytes.
    pub(crate) env: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Length of a reply: a `u32` saying which, then the pid or the `errno` (little
/// endian).
pub(crate) const REPLY_LEN: usize = 8;

/// The answer to one [`ForkRequest`], the first bytes on its status socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForkReply {
    /// Started; its pidfd comes beside this message.
    Forked { pid: u32 },
    /// Not started: the request was malformed (`EINVAL`) or the kernel refused
    /// (`errno`).
    Failed { errno: i32 },
}

impl ForkReply {
    const FORKED: u32 = 1;
    const FAILED: u32 = 2;

    /// The reply as sent.
    pub(crate) fn to_bytes(self) -> [u8; REPLY_LEN] {
        let (which, value) = match self {
            ForkReply::Forked { pid } => (Self::FORKED, pid),
            ForkReply::Failed { errno } => (Self::FAILED, errno as u32),
        };
        let mut out = [0; REPLY_LEN];
        out[..4].copy_from_slice(&which.to_le_bytes());
        out[4..].copy_from_slice(&value.to_le_bytes());
        out
    }

    /// A reply as received; `None` if it is not one.
    pub(crate) fn from_bytes(bytes: [u8; REPLY_LEN]) -> Option<ForkReply> {
        let [a, b, c, d, e, f, g, h] = bytes;
        let value = u32::from_le_bytes([e, f, g, h]);
        match u32::from_le_bytes([a, b, c, d]) {
            Self::FORKED => Some(ForkReply::Forked { pid: value }),
            Self::FAILED => Some(ForkReply::Failed {
                errno: value as i32,
            }),
            _ => None,
        }
    }
}

/// `status` as a status message.
pub(crate) fn status_message(status: i32) -> [u8; STATUS_LEN] {
    status.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_a_large_environment_still_fits() {
        let request = ForkRequest {
            parent: u32::MAX,
            own_group: true,
            env: vec![(vec![b'K'; 1000], vec![b'V'; 30_000])],
        };
        let bytes = postcard::to_allocvec(&request).unwrap();
        assert!(bytes.len() < MAX_REQUEST);
        assert_eq!(
            postcard::from_bytes::<ForkRequest>(&bytes).unwrap(),
            request
        );
    }

    #[test]
    fn replies_go_and_come_back_and_nothing_else_parses() {
        for reply in [
            ForkReply::Forked { pid: u32::MAX },
            ForkReply::Forked { pid: 1 },
            ForkReply::Failed {
                errno: libc::EAGAIN,
            },
            ForkReply::Failed { errno: -1 },
        ] {
            assert_eq!(ForkReply::from_bytes(reply.to_bytes()), Some(reply));
        }
        assert_eq!(ForkReply::from_bytes([0; REPLY_LEN]), None);
        assert_eq!(ForkReply::from_bytes([3, 0, 0, 0, 1, 0, 0, 0]), None);
    }

    #[test]
    fn a_status_message_is_the_raw_status() {
        use std::os::unix::process::ExitStatusExt;
        // What `waitpid` says of `exit(7)` and of death by SIGKILL.
        for (raw, code, signal) in [(7 << 8, Some(7), None), (9, None, Some(9))] {
            let back = i32::from_le_bytes(status_message(raw));
            let status = std::process::ExitStatus::from_raw(back);
            assert_eq!((status.code(), status.signal()), (code, signal));
        }
    }
}
