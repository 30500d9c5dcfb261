//! The JSON object a server answers STATUS with (PROTOCOL.md, "STATUS"): what `zms status`
//! shows. Built here from plain values, so the poll loops only gather them.

use serde_json::{json, Value};

/// The version every STATUS reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One hosted group as a group server sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStatus {
    pub name: String,
    /// Members stored.
    pub members: usize,
    /// Connections subscribed to its live messages.
    pub online: usize,
    pub last_seq: u64,
    /// Messages stored a second, averaged over the last minute.
    pub messages_per_second: f64,
}

/// A group server's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupServerStatus {
    /// The `HOST:PORT` it announces.
    pub address: String,
    /// Its CURVE public key, empty without security.
    pub key: String,
    /// When it started, unix milliseconds.
    pub up_since_ms: i64,
    /// Why it cannot serve; `None` when healthy.
    pub problem: Option<String>,
    /// Bytes of its database files (all its groups share one database).
    pub storage_bytes: u64,
    /// Open connections.
    pub connections: usize,
    pub groups: Vec<GroupStatus>,
}

impl GroupServerStatus {
    /// The STATUS reply's JSON text.
    pub fn to_json(&self) -> String {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|g| {
                json!({
                    "name": g.name,
                    "members": g.members,
                    "online": g.online,
                    "last_seq": g.last_seq,
                    "messages_per_second": g.messages_per_second,
                })
            })
            .collect();
        json!({
            "role": "group server",
            "version": VERSION,
            "address": self.address,
            "key": self.key,
            "up_since_ms": self.up_since_ms,
            "healthy": self.problem.is_none(),
            "problem": self.problem,
            "storage_bytes": self.storage_bytes,
            "connections": self.connections,
            "groups": groups,
        })
        .to_string()
    }
}

/// A group server as a message server knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredServer {
    pub address: String,
    pub key: String,
    pub groups: Vec<String>,
    /// When it first registered (since this message server started), unix milliseconds.
    pub registered_since_ms: i64,
    /// When its last REGISTER arrived, unix milliseconds.
    pub last_heartbeat_ms: i64,
}

/// A message server's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectoryStatus {
    pub address: String,
    pub key: String,
    pub up_since_ms: i64,
    /// Users heard from lately.
    pub users: usize,
    pub connections: usize,
    pub servers: Vec<RegisteredServer>,
}

impl DirectoryStatus {
    /// The STATUS reply's JSON text.
    pub fn to_json(&self) -> String {
        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|s| {
                json!({
                    "address": s.address,
                    "key": s.key,
                    "groups": s.groups,
                    "registered_since_ms": s.registered_since_ms,
                    "last_heartbeat_ms": s.last_heartbeat_ms,
                })
            })
            .collect();
        json!({
            "role": "message server",
            "version": VERSION,
            "address": self.address,
            "key": self.key,
            "up_since_ms": self.up_since_ms,
            "healthy": true,
            "problem": null,
            "users": self.users,
            "connections": self.connections,
            "servers": servers,
        })
        .to_string()
    }
}
