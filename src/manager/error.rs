//! [`ManagerError`]: why a manager call failed.

use super::*;

/// Why a manager call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The manager is gone (shut down or dead): nothing will answer.
    #[error("the manager is gone")]
    Disconnected,
    /// The manager's key is not ours.
    #[error("manager authentication failed")]
    Authentication(#[source] connection::AuthenticationError),
    /// A value did not encode or decode as the proxy's type.
    #[error("could not serialise or deserialise {0}")]
    Codec(CodecError),
    /// The server refused the request; the [`Refusal`] says why.
    #[error("the manager refused: {0}")]
    Refused(Refusal),
    /// The server answered something the protocol does not allow there.
    #[error("manager protocol error")]
    Protocol(#[source] ProtocolError),
    /// Starting (or binding) the server failed.
    #[error("the manager did not start")]
    Start(#[source] io::Error),
    /// An earlier call on this [`ConditionGuard`] was cancelled before its answer
    /// came, so the guard's connection is out of step: drop the guard (that releases
    /// the lock) and take the lock again.
    #[error(
        "a call on this condition guard was cancelled mid-request; drop the guard and lock again"
    )]
    GuardInterrupted,
}

impl From<ConnectError> for ManagerError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Authentication(a) => ManagerError::Authentication(a),
            _ => ManagerError::Disconnected,
        }
    }
}

impl From<SendError> for ManagerError {
    fn from(_: SendError) -> Self {
        ManagerError::Disconnected
    }
}

impl From<RecvError> for ManagerError {
    fn from(_: RecvError) -> Self {
        ManagerError::Disconnected
    }
}
