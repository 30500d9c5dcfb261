//! The browser-facing protocol (PROTOCOL.md, "Part 2: the web gateway"): JSON text frames
//! over a WebSocket, parsed into [`Command`]s and written from [`Reply`] values. Pure: no
//! sockets, no session; [`super::bridge`] does the talking.
//!
//! Every check a command needs before it may reach a group server is made here, so a
//! malformed request is answered with an error frame and never passed on.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::client::GroupRef;
use crate::protocol::edit::{self, Change};
use crate::protocol::{self, Hit, Member, Message};
use crate::user::render::sender_colour;

/// Messages at most in one `history` answer.
pub const HISTORY_MAX: u32 = 200;
/// Longest client id a browser may choose.
pub const MAX_CLIENT_ID: usize = 64;
/// Groups at most in a `hello`'s `last`.
pub const MAX_RESUME_GROUPS: usize = 1000;
/// Hits in a `found` when the browser asks for no number: a screenful.
pub const SEARCH_DEFAULT: u32 = 50;

/// What a browser asks, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Sign in as `user`; `last` is the browser's last seq per group (`name@HOST:PORT`).
    Hello {
        user: String,
        key: Option<String>,
        last: BTreeMap<String, u64>,
    },
    /// The directory's groups, with this user's membership.
    Groups,
    Join {
        group: String,
    },
    Leave {
        group: String,
    },
    /// Send `text` under the browser's `cid`, so a retry is stored once.
    Send {
        group: String,
        cid: String,
        text: String,
    },
    /// Up to `limit` messages before seq `before` (0: the latest).
    History {
        group: String,
        before: u64,
        limit: u32,
    },
    Members {
        group: String,
    },
    /// Open (create if new) the conversation with `peer`.
    Dm {
        peer: String,
    },
    /// Replace the text of this user's message `seq` with `text`.
    Edit {
        group: String,
        seq: u64,
        text: String,
    },
    /// Delete this user's message `seq`.
    Delete {
        group: String,
        seq: u64,
    },
    /// Messages holding every word of `query`, in one group or (`None`) in all of this
    /// user's, newest first, at most `limit`.
    Search {
        group: Option<String>,
        query: String,
        limit: u32,
    },
    Ping,
}

/// Why a browser's frame was refused; `code` is one of PROTOCOL.md's web error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    /// A frame the gateway cannot read.
    pub fn bad(message: impl Into<String>) -> Refusal {
        Refusal {
            code: "BAD_REQUEST",
            message: message.into(),
        }
    }
}

/// A parsed frame: its `ref` (echoed in the answer, if any) and the command or why not.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub reference: Option<Value>,
    pub command: Result<Command, Refusal>,
}

/// Reads one text frame.
pub fn parse(text: &str) -> Parsed {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Parsed {
                reference: None,
                command: Err(Refusal::bad(format!("not JSON: {e}"))),
            }
        }
    };
    let Value::Object(object) = value else {
        return Parsed {
            reference: None,
            command: Err(Refusal::bad("a frame must be a JSON object")),
        };
    };
    // A ref is echoed back as it came, so only small plain values are taken.
    let reference = object
        .get("ref")
        .filter(|r| match r {
            Value::String(s) => s.len() <= MAX_CLIENT_ID,
            Value::Number(_) => true,
            _ => false,
        })
        .cloned();
    Parsed {
        reference,
        command: command(&object),
    }
}

fn command(o: &Map<String, Value>) -> Result<Command, Refusal> {
    let kind = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::bad("missing \"type\""))?;
    Ok(match kind {
        "hello" => {
            let user = string(o, "user")?;
            protocol::check_user_name(&user).map_err(Refusal::bad)?;
            let key = match o.get("key") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.len() <= 1024 => Some(p.clone()),
                Some(_) => return Err(Refusal::bad("\"key\" must be a string")),
            };
            Command::Hello {
                user,
                key,
                last: last_seqs(o.get("last"))?,
            }
        }
        "groups" => Command::Groups,
        "join" => Command::Join { group: group(o)? },
        "leave" => Command::Leave { group: group(o)? },
        "send" => {
            let cid = string(o, "cid")?;
            check_client_id(&cid)?;
            Command::Send {
                group: group(o)?,
                cid,
                text: text(o)?,
            }
        }
        "edit" => Command::Edit {
            group: group(o)?,
            seq: seq(o)?,
            text: text(o)?,
        },
        "delete" => Command::Delete {
            group: group(o)?,
            seq: seq(o)?,
        },
        "search" => {
            let query = string(o, "query")?;
            protocol::check_query(&query).map_err(Refusal::bad)?;
            let group = match o.get("group") {
                None | Some(Value::Null) => None,
                Some(_) => Some(group(o)?),
            };
            Command::Search {
                group,
                query,
                limit: optional_number(o, "limit")?
                    .unwrap_or(u64::from(SEARCH_DEFAULT))
                    .clamp(1, u64::from(protocol::SEARCH_MAX)) as u32,
            }
        }
        "history" => Command::History {
            group: group(o)?,
            before: optional_number(o, "before")?.unwrap_or(0),
            limit: optional_number(o, "limit")?
                .unwrap_or(50)
                .clamp(1, u64::from(HISTORY_MAX)) as u32,
        },
        "members" => Command::Members { group: group(o)? },
        "dm" => {
            let peer = string(o, "user")?;
            protocol::check_user_name(&peer).map_err(Refusal::bad)?;
            Command::Dm { peer }
        }
        "ping" => Command::Ping,
        other => {
            return Err(Refusal::bad(format!(
                "unknown type {:?}",
                other.chars().take(32).collect::<String>()
            )))
        }
    })
}

fn string(o: &Map<String, Value>, field: &str) -> Result<String, Refusal> {
    o.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Refusal::bad(format!("missing string \"{field}\"")))
}

/// A message's text, as Part 1 allows one in a SEND.
fn text(o: &Map<String, Value>) -> Result<String, Refusal> {
    let text = string(o, "text")?;
    if text.len() > protocol::MAX_TEXT {
        return Err(Refusal {
            code: "TOO_LARGE",
            message: format!("a message holds at most {} bytes", protocol::MAX_TEXT),
        });
    }
    protocol::check_text(&text).map_err(Refusal::bad)?;
    Ok(text)
}

/// The seq of the message an edit or deletion is of: a whole number from 1.
fn seq(o: &Map<String, Value>) -> Result<u64, Refusal> {
    match o.get("seq").and_then(Value::as_u64) {
        Some(seq) if seq > 0 => Ok(seq),
        _ => Err(Refusal::bad("\"seq\" must be a message's seq, 1 or more")),
    }
}

fn optional_number(o: &Map<String, Value>, field: &str) -> Result<Option<u64>, Refusal> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| Refusal::bad(format!("\"{field}\" must be a whole number"))),
    }
}

/// A group as the browser names it: `name` or `name@HOST:PORT`, each part checked; a
/// conversation's name (`@alice@bob`) is a name too.
fn group(o: &Map<String, Value>) -> Result<String, Refusal> {
    let spec = string(o, "group")?;
    let name = match protocol::conversation_users(&spec) {
        Some(_) => spec.as_str(),
        None => {
            let at = spec.char_indices().skip(1).find(|&(_, c)| c == '@');
            let name = at.map_or(spec.as_str(), |(i, _)| &spec[..i]);
            match name.starts_with('@') {
                // `@alice@bob@HOST:PORT`: the conversation's name is before the last '@'.
                true => spec.rsplit_once('@').map_or(name, |(n, _)| n),
                false => name,
            }
        }
    };
    protocol::check_group_or_conversation(name).map_err(Refusal::bad)?;
    if spec.len() > protocol::MAX_NAME + 64 || spec.chars().any(char::is_control) {
        return Err(Refusal::bad("\"group\" is not a group"));
    }
    Ok(spec)
}

/// Client ids are the browser's: 1 to [`MAX_CLIENT_ID`] of `A-Z a-z 0-9 - _`.
fn check_client_id(cid: &str) -> Result<(), Refusal> {
    let fine = !cid.is_empty()
        && cid.len() <= MAX_CLIENT_ID
        && cid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match fine {
        true => Ok(()),
        false => Err(Refusal::bad(format!(
            "\"cid\" must be 1 to {MAX_CLIENT_ID} of A-Z a-z 0-9 - _"
        ))),
    }
}

fn last_seqs(value: Option<&Value>) -> Result<BTreeMap<String, u64>, Refusal> {
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(Refusal::bad("\"last\" must map groups to seqs")),
    };
    if object.len() > MAX_RESUME_GROUPS {
        return Err(Refusal::bad(format!(
            "\"last\" names at most {MAX_RESUME_GROUPS} groups"
        )));
    }
    let mut last = BTreeMap::new();
    for (spec, seq) in object {
        let mut fake = Map::new();
        fake.insert("group".into(), Value::String(spec.clone()));
        let spec = group(&fake)?;
        let seq = seq
            .as_u64()
            .ok_or_else(|| Refusal::bad("\"last\" must map groups to seqs"))?;
        last.insert(spec, seq);
    }
    Ok(last)
}

/// The wire name of a group: `name@HOST:PORT`, unambiguous across group servers.
pub fn group_id(group: &GroupRef) -> String {
    group.to_string()
}

/// The colour of a sender, 0 to 5, as the terminal client picks it.
pub fn colour(name: &str) -> u8 {
    sender_colour(name) - 31
}

/// A frame to the browser.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<'a> {
    /// The first frame on every connection: whether `hello` needs a key.
    Ready {
        secure: bool,
    },
    Welcome {
        user: &'a str,
        secure: bool,
    },
    /// One entry per group: id, name, membership and its last seq (members only).
    Groups(Vec<GroupState>),
    Joined {
        group: &'a GroupRef,
        last_seq: u64,
        /// For a conversation, the other user.
        peer: Option<&'a str>,
    },
    Left {
        group: &'a GroupRef,
    },
    Ack {
        group: &'a GroupRef,
        cid: &'a str,
        seq: u64,
        ts: i64,
    },
    /// A message, live or caught up on resume.
    Message {
        group: &'a GroupRef,
        message: &'a Message,
    },
    History {
        group: &'a GroupRef,
        before: u64,
        messages: &'a [Message],
        /// No older messages are kept.
        start: bool,
    },
    Members {
        group: &'a GroupRef,
        members: &'a [Member],
    },
    Presence {
        group: &'a GroupRef,
        user: &'a str,
        joined: bool,
    },
    /// This user stopped being a member (left elsewhere, or removed).
    Removed {
        group: &'a GroupRef,
    },
    /// A group now lives on another group server: its id changes from `from` to `to`.
    Moved {
        from: &'a GroupRef,
        to: &'a GroupRef,
    },
    /// A group server stopped answering (`up` false) or answers again.
    Server {
        address: &'a str,
        up: bool,
    },
    /// An `edit` or `delete` is stored: message `seq` is changed by the new message `change`
    /// (which also comes as a `message`, as to every member).
    Changed {
        group: &'a GroupRef,
        seq: u64,
        change: u64,
    },
    /// What a `search` found, newest first; `missed` are the groups that could not be asked.
    Found {
        query: &'a str,
        hits: &'a [(GroupRef, Hit)],
        missed: &'a [GroupRef],
    },
    /// A send that may not be stored: the browser keeps it and sends it again, same `cid`.
    Unsent {
        group: &'a str,
        cid: &'a str,
        message: &'a str,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
    Pong,
}

/// A group in a `groups` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub group: GroupRef,
    pub member: bool,
    pub last_seq: u64,
    /// For a conversation, the other user.
    pub peer: Option<String>,
}

/// The other user of a conversation `me` is in, if `name` is one.
pub fn peer_of(name: &str, me: &str) -> Option<String> {
    match protocol::conversation_users(name)? {
        (a, b) if a == me => Some(b.to_string()),
        (a, b) if b == me => Some(a.to_string()),
        _ => None,
    }
}

/// A message for the browser. An edit or a deletion (Part 1's change messages, whose text
/// starts with U+0001) goes as `edit: {seq, text}` or `delete: seq` in place of `text`, so a
/// browser never has to read the marker; a change of a kind this gateway does not know goes
/// with neither, nor `text`.
fn message_json(m: &Message) -> Value {
    let mut v = json!({"seq": m.seq, "ts": m.ts, "sender": m.sender, "colour": colour(&m.sender)});
    match edit::parse(&m.text) {
        Some(Change::Edit { seq, text }) => v["edit"] = json!({"seq": seq, "text": text}),
        Some(Change::Delete { seq }) => v["delete"] = json!(seq),
        None if m.text.starts_with(edit::MARK) => {}
        None => v["text"] = json!(m.text),
    }
    v
}

/// A hit for the browser, its match ranges in UTF-16 code units (what JavaScript's string
/// indices count) rather than Part 1's octets.
fn hit_json(group: &GroupRef, hit: &Hit) -> Value {
    let matches: Vec<[usize; 2]> = hit
        .matches
        .iter()
        .filter_map(|&(start, end)| {
            let (start, end) = (start as usize, end as usize);
            let before = hit.text.get(..start)?;
            let inside = hit.text.get(start..end)?;
            let from = before.encode_utf16().count();
            Some([from, from + inside.encode_utf16().count()])
        })
        .collect();
    json!({"group": group_id(group), "name": group.name, "seq": hit.seq, "ts": hit.ts,
           "sender": hit.sender, "colour": colour(&hit.sender), "text": hit.text,
           "matches": matches})
}

impl Reply<'_> {
    /// The JSON text, with `reference` echoed as `ref` when the browser gave one.
    pub fn to_json(&self, reference: Option<&Value>) -> String {
        let mut value = match self {
            Reply::Ready { secure } => json!({"type": "ready", "protocol": 1, "secure": secure}),
            Reply::Welcome { user, secure } => {
                json!({"type": "welcome", "user": user, "secure": secure,
                       "limits": {"text": protocol::MAX_TEXT, "history": HISTORY_MAX}})
            }
            Reply::Groups(groups) => {
                let list: Vec<Value> = groups
                    .iter()
                    .map(|g| {
                        json!({"group": group_id(&g.group), "name": g.group.name,
                               "member": g.member, "last_seq": g.last_seq,
                               "peer": g.peer})
                    })
                    .collect();
                json!({"type": "groups", "groups": list})
            }
            Reply::Joined {
                group,
                last_seq,
                peer,
            } => json!({"type": "joined",
                "group": group_id(group), "name": group.name, "last_seq": last_seq, "peer": peer}),
            Reply::Left { group } => json!({"type": "left", "group": group_id(group)}),
            Reply::Ack {
                group,
                cid,
                seq,
                ts,
            } => json!({"type": "ack", "group": group_id(group), "cid": cid, "seq": seq, "ts": ts}),
            Reply::Message { group, message } => {
                let mut m = message_json(message);
                m["type"] = json!("message");
                m["group"] = json!(group_id(group));
                m
            }
            Reply::History {
                group,
                before,
                messages,
                start,
            } => json!({"type": "history", "group": group_id(group), "before": before,
                "start": start, "messages": messages.iter().map(message_json).collect::<Vec<_>>()}),
            Reply::Members { group, members } => {
                let list: Vec<Value> = members
                    .iter()
                    .map(|m| json!({"name": m.name, "online": m.online, "colour": colour(&m.name)}))
                    .collect();
                json!({"type": "members", "group": group_id(group), "members": list})
            }
            Reply::Presence {
                group,
                user,
                joined,
            } => json!({"type": "presence", "group": group_id(group), "user": user,
                "joined": joined, "colour": colour(user)}),
            Reply::Removed { group } => json!({"type": "removed", "group": group_id(group)}),
            Reply::Moved { from, to } => {
                json!({"type": "moved", "from": group_id(from), "to": group_id(to)})
            }
            Reply::Server { address, up } => {
                json!({"type": "server", "address": address, "up": up})
            }
            Reply::Changed { group, seq, change } => {
                json!({"type": "changed", "group": group_id(group), "seq": seq, "change": change})
            }
            Reply::Found {
                query,
                hits,
                missed,
            } => json!({"type": "found", "query": query,
                "hits": hits.iter().map(|(g, h)| hit_json(g, h)).collect::<Vec<_>>(),
                "missed": missed.iter().map(group_id).collect::<Vec<_>>()}),
            Reply::Unsent {
                group,
                cid,
                message,
            } => json!({"type": "unsent", "group": group, "cid": cid, "message": message}),
            Reply::Error { code, message } => {
                json!({"type": "error", "code": code, "message": message})
            }
            Reply::Pong => json!({"type": "pong"}),
        };
        if let Some(r) = reference {
            value["ref"] = r.clone();
        }
        value.to_string()
    }
}

#[cfg(test)]
mod tests;
