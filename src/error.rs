//! The one error type of the library. Foreign errors are mapped here and nowhere else.

use crate::protocol::ErrorCode;

/// Everything that can go wrong in zms, named by meaning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A libzmq call failed (bind, connect, send, poll).
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
    /// The SQLite store failed.
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A peer sent bytes that are not a valid ZMS message.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A server answered with a typed refusal.
    #[error("{reason} ({code})")]
    Rejected { code: ErrorCode, reason: String },
    /// A peer did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// Bad configuration or bad user input (an address, a time, a name).
    #[error("{0}")]
    Input(String),
    /// A local I/O failure (terminal, data directory).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error::Input`] from a format string.
#[macro_export]
macro_rules! errinput {
    ($($arg:tt)*) => { $crate::Error::Input(format!($($arg)*)) };
}
