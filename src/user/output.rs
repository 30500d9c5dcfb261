//! How messages, groups and members look: plain lines for people, JSON Lines for scripts.

use serde_json::json;

use crate::client::GroupRef;
use crate::protocol::{GroupEntry, Member, Message};
use crate::time;

/// Plain or JSON Lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
}

/// A stored message, as `history` and `tail` print it.
pub fn message(format: Format, group: &GroupRef, m: &Message) -> String {
    match format {
        Format::Plain => format!(
            "{} #{} {}: {}",
            time::rfc3339(m.ts),
            m.seq,
            m.sender,
            m.text
        ),
        Format::Json => json!({
            "group": group.name,
            "address": group.address,
            "seq": m.seq,
            "ts": time::rfc3339(m.ts),
            "ts_ms": m.ts,
            "sender": m.sender,
            "text": m.text,
        })
        .to_string(),
    }
}

/// One entry of `list`.
pub fn group(format: Format, g: &GroupEntry) -> String {
    match format {
        Format::Plain => format!("{:<24} {}", g.name, g.address),
        Format::Json => json!({ "name": g.name, "address": g.address }).to_string(),
    }
}

/// One entry of `members`.
pub fn member(format: Format, m: &Member) -> String {
    match format {
        Format::Plain => format!("{}{}", m.name, if m.online { " (online)" } else { "" }),
        Format::Json => json!({ "name": m.name, "online": m.online }).to_string(),
    }
}
