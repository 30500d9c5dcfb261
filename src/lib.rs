//! zms: a durable group messaging system on ZeroMQ.
//!
//! Three roles, one library, one binary (`zms`); the benchmark is a second binary, `zms-bench`,
//! in the `bench/` package of the workspace, built on this library.
//!
//! ```text
//!   user (DEALER) ──LIST/HELLO/STATUS──▶ message server (ROUTER) ◀──REGISTER every 1 s── group server (DEALER)
//!   user (DEALER) ◀──JOIN/SEND/HISTORY/PING, live MSG/MSGS push──▶ group server (ROUTER) ──▶ SQLite
//! ```
//!
//! # Map of the code
//!
//! | role | folder | the types that matter |
//! |---|---|---|
//! | message server | [`directory`] | [`directory::DirectoryServer`] (poll loop), [`directory::registry`] (soft-state table), [`directory::owners`] (names bound to keys) |
//! | group server | [`group`] | [`group::GroupServer`] (poll loop: the one place with I/O), [`group::state::State`] (pure decisions → [`group::state::Effects`]), [`group::batch::Batch`] (one wake-up's transaction), [`group::storage::Storage`] (the store trait), [`group::store::Store`] (SQLite), [`group::fanout`] (MSGS frames) |
//! | client library | [`client`] | [`client::Session`] (groups on many servers, one ordered stream), [`client::Sequencer`] (pure ordering and gaps), [`client::Pipeline`] (many sends in flight), [`client::Conn`] (one DEALER, retries) |
//! | wire | [`protocol`] | [`protocol::Request`], [`protocol::Reply`], [`protocol::Event`], [`protocol::codec`] (one frame each, PROTOCOL.md), [`protocol::EventMessages`] (MSG/MSGS read in place) |
//! | user | [`user`] | the terminal client ([`user::shell`]) and one-shot commands; the only code that prints, through [`user::safe`] |
//! | web gateway | [`web`] | [`web::Gateway`] (accept loop, caps), [`web::bridge`] (one browser ↔ one [`client::Session`]), [`web::wire`] (the browser's JSON protocol, pure), [`web::http`] (the embedded page) |
//! | operators | [`ops`] | `/metrics`, `/healthz`, the STATUS answer |
//! | shared | [`transport`], [`peers`], [`backlog`], [`keys`], [`zap`], [`shutdown`], [`time`], [`dirs`], [`program`], [`error`] | endpoints, connection caps, per-peer unread bytes, CURVE keys and ZAP, files' places |
//!
//! The command line (`src/cli.rs`, `src/config.rs`) lives in the binary, not here, so the
//! library stays usable without clap.
//!
//! # One message, from `zms send` to a member's screen
//!
//! 1. `zms send general hello`: [`user::run`] asks [`client::Session`] to resolve `general`
//!    (LIST at the message server) and send it; the request is encoded by
//!    [`protocol::codec::encode_request`] and leaves on the session's DEALER to the group
//!    server, with a client id so that a retry is stored once.
//! 2. The group server's poll loop ([`group::GroupServer::run`]) reads up to a batch of frames,
//!    decodes each, and hands it to [`group::batch::Batch`], which asks the pure
//!    [`group::state::State::handle`]: the message gets the group's next seq and becomes an
//!    append, an ACK that holds only if stored, and a push to the group's live members.
//! 3. The batch appends through [`group::storage::Storage`] (SQLite, one transaction per wake-up;
//!    a client id seen before is answered with its first seq) and commits. Only then does the loop
//!    encode the ACK and the push ([`group::fanout`]: one MSG/MSGS frame per group, shared by
//!    every member's copy) and send them, skipping members whose unread backlog is full.
//! 4. The member's [`client::Session`] decodes the MSG and gives it to its
//!    [`client::Sequencer`]: the next seq is delivered, an old one dropped, and a hole is
//!    filled from HISTORY before going on. [`user::shell`] shows it above the prompt, its text
//!    made harmless by [`user::safe`].

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
pub mod web;
pub mod zap;

pub use error::{Error, Result};

/// Where the message server listens unless told otherwise.
pub const DEFAULT_DIRECTORY: &str = "127.0.0.1:5555";
/// Where `zms up` puts its group server.
pub const DEFAULT_GROUP_BIND: &str = "127.0.0.1:5556";
/// Where a group server keeps its data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "zms-data";
