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
    /// The PostgreSQL store failed.
    #[error("store: {}", postgres_reason(.0))]
    Postgres(#[from] postgres::Error),
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
    /// What was asked for does not exist (a pinned key, a group).
    #[error("{0}")]
    NotFound(String),
    /// A local I/O failure (terminal, data directory).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The exit status of a command, by what went wrong: a script tells a typo from a server
/// that is down or one that said no. README ("Exit status") lists them.
pub mod exit {
    /// Done.
    pub const OK: i32 = 0;
    /// Anything not below: storage, local I/O, a peer breaking the protocol, a bug.
    pub const INTERNAL: i32 = 1;
    /// The command line, the config file or an input value is wrong (clap's code too).
    pub const USAGE: i32 = 2;
    /// No server answered in time, or none could be reached.
    pub const UNREACHABLE: i32 = 3;
    /// A server answered with a refusal (not allowed, over a limit, not a member).
    pub const REFUSED: i32 = 4;
    /// What was named does not exist (a group, a pinned key).
    pub const NOT_FOUND: i32 = 5;
}

impl Error {
    /// The exit status a command that failed with this error ends with (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => exit::USAGE,
            Error::Timeout(_) => exit::UNREACHABLE,
            Error::Zmq(zmq::Error::EHOSTUNREACH | zmq::Error::ECONNREFUSED) => exit::UNREACHABLE,
            Error::Rejected {
                code: ErrorCode::UnknownGroup,
                ..
            }
            | Error::NotFound(_) => exit::NOT_FOUND,
            Error::Rejected { .. } => exit::REFUSED,
            // No answer from the database (refused, closed): not one of its errors.
            Error::Postgres(e) if e.as_db_error().is_none() => exit::UNREACHABLE,
            Error::Zmq(_)
            | Error::Store(_)
            | Error::Postgres(_)
            | Error::Protocol(_)
            | Error::Io(_) => exit::INTERNAL,
        }
    }
}

/// PostgreSQL's error in words; a lost connection says that it is made again by itself.
fn postgres_reason(err: &postgres::Error) -> String {
    match err.is_closed() {
        true => "the connection to PostgreSQL is lost; it is made again once the database answers"
            .into(),
        false => err.to_string(),
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error::Input`] from a format string.
#[macro_export]
macro_rules! errinput {
    ($($arg:tt)*) => { $crate::Error::Input(format!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_own_exit_status() {
        let rejected = |code| Error::Rejected {
            code,
            reason: String::new(),
        };
        assert_eq!(errinput!("bad").exit_code(), exit::USAGE);
        assert_eq!(Error::Timeout(String::new()).exit_code(), exit::UNREACHABLE);
        assert_eq!(rejected(ErrorCode::Unauthorized).exit_code(), exit::REFUSED);
        assert_eq!(rejected(ErrorCode::Limited).exit_code(), exit::REFUSED);
        assert_eq!(
            rejected(ErrorCode::UnknownGroup).exit_code(),
            exit::NOT_FOUND
        );
        assert_eq!(Error::NotFound(String::new()).exit_code(), exit::NOT_FOUND);
        assert_eq!(Error::Protocol(String::new()).exit_code(), exit::INTERNAL);
        let codes = [exit::OK, exit::INTERNAL, exit::USAGE, exit::UNREACHABLE];
        let more = [exit::REFUSED, exit::NOT_FOUND];
        let all: std::collections::BTreeSet<_> = codes.iter().chain(&more).collect();
        assert_eq!(all.len(), 6, "distinct");
    }
}
