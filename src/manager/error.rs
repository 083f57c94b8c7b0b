//! [`ManagerError`]: why a manager call failed.

use super::*;

/// Why a manager call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ManagerError {
    /// The manager is gone (shut down or dead): nothing will answer.
    Disconnected,
    /// The manager's key is not ours.
    Authentication(connection::AuthenticationError),
    /// A value did not encode or decode as the proxy's type.
    Codec {
        /// The type.
        type_name: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The server refused the request; the [`Refusal`] says why.
    Refused(Refusal),
    /// The server answered something the protocol does not allow there.
    Protocol(ProtocolError),
    /// Starting (or binding) the server failed.
    Start(io::Error),
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::Disconnected => f.write_str("the manager is gone"),
            ManagerError::Authentication(_) => f.write_str("manager authentication failed"),
            ManagerError::Codec { type_name, reason } => fmt_codec(f, "code", type_name, reason),
            ManagerError::Refused(why) => write!(f, "the manager refused: {why}"),
            ManagerError::Protocol(_) => f.write_str("manager protocol error"),
            ManagerError::Start(_) => f.write_str("the manager did not start"),
        }
    }
}

impl std::error::Error for ManagerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ManagerError::Authentication(e) => Some(e),
            ManagerError::Protocol(e) => Some(e),
            ManagerError::Start(e) => Some(e),
            _ => None,
        }
    }
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
