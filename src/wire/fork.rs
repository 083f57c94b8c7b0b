//! What a parent and its fork server say to each other (see
//! [`StartMethod::ForkServer`](crate::StartMethod::ForkServer)).
//!
//! Three channels, all unix sockets:
//!
//! - **requests** (`SOCK_SEQPACKET`, the server's stdin): the parent sends one
//!   [`ForkRequest`] per worker, postcard, with two descriptors beside it: the worker's
//!   end of its control socket and the server's end of the worker's *status* socket.
//!   The server answers each with one [`ForkReply`]; a [`ForkReply::Forked`] carries
//!   the worker's pidfd. One request, one reply, in order.
//! - **status** (`SOCK_STREAM`, one per worker): once the worker has exited, the server
//!   reaps it and writes its raw wait status there ([`STATUS_LEN`] bytes, little
//!   endian), then closes its end. End of stream without a status: the server died
//!   first.
//! - the worker's **control socket**, exactly as for a worker started by `exec`.

use serde::{Deserialize, Serialize};

/// Largest request the server reads (the environment is the only part that grows).
pub(crate) const MAX_REQUEST: usize = 64 * 1024;

/// Length of a status message: an `i32`, the raw status `waitpid` gave.
pub(crate) const STATUS_LEN: usize = 4;

/// Descriptors a request carries: the worker's control socket, then the status socket.
pub(crate) const REQUEST_FDS: usize = 2;

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

/// The answer to one [`ForkRequest`].
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum ForkReply {
    /// Started; its pidfd comes beside this message.
    Forked { pid: u32 },
    /// Not started: the request was malformed (`EINVAL`) or the kernel refused
    /// (`errno`).
    Failed { errno: i32 },
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
