//! What a worker's `Done` frame says of its task, read the same way by the driver and
//! by a caller that reads its own reply ([`super::direct`]).

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
