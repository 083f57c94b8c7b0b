//! What a worker's `Done` frame says of its task, read the same way by the driver and
//! by a caller that reads its own reply ([`super::direct`]); and, for the driver,
//! which buffer the caller gets it back in ([`trade_buffers`]).

use std::os::fd::OwnedFd;

use crate::error::{Error, PanicInfo, ProtocolError, TaskError};
use crate::wire::{self, Failure, Header, Payload, FLAG_FAILED};

/// The task's value, or the error it failed with, from a `Done` frame that no verdict
/// (cancel, timeout) overrides.
///
/// # Errors
/// The failure a failed task's frame carries does not decode: the worker broke the
/// protocol, and the task fails with the same error.
pub(crate) fn outcome(
    header: &Header,
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
) -> Result<Result<Payload, TaskError>, ProtocolError> {
    if header.flags & FLAG_FAILED != 0 {
        return wire::decode_control::<Failure>(&body).map(|failure| Err(failure.into()));
    }
    Ok(Ok(Payload {
        body,
        fds,
        outcomes: wire::Outcomes::from_u64(header.func),
    }))
}

/// Moves a reply's `body` into its task's `frame` buffer where it fits, so that the
/// caller gets back (and frees) the buffer its own thread allocated, and this driver
/// frees the one it did. With a thread-caching allocator (glibc's), each thread's
/// cache then refills with the sizes it allocates; freed across threads, a thread
/// that only frees a size and one that only allocates it both take the slow path.
/// (Measured on W2 `submit`, 1 M trivial tasks: see CHANGELOG.)
pub(crate) fn trade_buffers(body: &mut Vec<u8>, frame: &mut Vec<u8>) {
    // Small ones only: the allocator's thread caches hold small sizes, and a copy of
    // a large body would cost more than its allocation.
    const SMALL: usize = 1024;
    if body.len() <= frame.capacity().min(SMALL) {
        frame.clear();
        frame.extend_from_slice(body);
        std::mem::swap(body, frame);
    }
}

impl From<Failure> for TaskError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Panicked(p) => TaskError::Panicked(p),
            Failure::Encode(e) => TaskError::Encode(e),
            Failure::Decode(e) => TaskError::Decode(e),
            Failure::UnknownFunction { reason } => {
                TaskError::Protocol(ProtocolError::Unexpected { what: reason })
            }
            Failure::Runtime { reason } => TaskError::WorkerRuntime { reason },
            Failure::InitializerFailed { message } => {
                TaskError::WorkerStart(Error::Initializer(PanicInfo::new(message, None)))
            }
            Failure::LimitRefused { limit, errno } => {
                TaskError::WorkerStart(Error::LimitRefused { limit, errno })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::trade_buffers;

    #[test]
    fn a_small_reply_moves_into_its_task_s_buffer_and_a_large_one_stays() {
        let mut frame = Vec::with_capacity(64);
        frame.extend_from_slice(&[9; 40]);
        let frame_at = frame.as_ptr();
        let mut body = vec![1, 2, 3];
        let body_at = body.as_ptr();
        trade_buffers(&mut body, &mut frame);
        assert_eq!(body, [1, 2, 3]);
        assert_eq!(body.as_ptr(), frame_at, "the reply is in the task's buffer");
        assert_eq!(frame.as_ptr(), body_at, "and the driver keeps its own");

        let mut frame = Vec::with_capacity(64);
        let mut body = vec![7; 65];
        let body_at = body.as_ptr();
        trade_buffers(&mut body, &mut frame);
        assert_eq!(
            (body.as_ptr(), body.len()),
            (body_at, 65),
            "too large: kept"
        );
    }
}
