//! zms: a durable group messaging system on ZeroMQ.
//!
//! Three roles, one library, one binary:
//!
//! ```text
//!   user (DEALER) ──LIST/HELLO──▶ directory (ROUTER)  ◀──REGISTER every 1 s── group server (DEALER)
//!   user (DEALER) ◀─JOIN/SEND/HISTORY, live MSG push─▶ group server (ROUTER) ──▶ SQLite
//! ```
//!
//! - [`directory`]: the message server, a soft-state table of groups and their addresses.
//! - [`group`]: the group server: membership, sequencing, storage ([`group::store`]) and push.
//! - [`client`]: the blocking client library ([`client::Session`]) with retries and gap repair.
//! - [`protocol`]: the ZMS/1 messages and their one-frame encoding; PROTOCOL.md specifies it.
//! - [`ops`]: metrics, health and status for operators (`--metrics`, STATUS).
//! - [`user`]: the terminal client and the one-shot commands; the only module that prints.
//! - [`transport`], [`peers`], [`backlog`], [`shutdown`], [`time`], [`error`]: the small shared
//!   pieces.

pub mod backlog;
pub mod client;
pub mod directory;
pub mod dirs;
pub mod error;
pub mod group;
pub mod keys;
pub mod ops;
pub mod peers;
pub mod program;
pub mod protocol;
pub mod shutdown;
pub mod time;
pub mod transport;
pub mod user;
pub mod zap;

pub use error::{Error, Result};

/// Where the message server listens unless told otherwise.
pub const DEFAULT_DIRECTORY: &str = "127.0.0.1:5555";
/// Where `zms up` puts its group server.
pub const DEFAULT_GROUP_BIND: &str = "127.0.0.1:5556";
/// Where a group server keeps its data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "zms-data";
