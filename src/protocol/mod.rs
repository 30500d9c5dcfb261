//! The ZMS/1 wire protocol: the messages that cross sockets, their limits and error codes.
//!
//! This module owns *what* is said; [`codec`] owns the bytes, and [`EventMessages`] reads the
//! messages of an event in place. Nothing here touches a socket:
//! the servers and the client library turn frames into these types and back. PROTOCOL.md is
//! the specification; the two must agree (the `wire` test sends its examples).

pub mod codec;
pub mod edit;
mod reader;

pub use reader::{EventMessages, MessageRef};

use std::fmt;

/// Protocol signature: the first three bytes of every ZMS message.
pub const SIGNATURE: &[u8; 3] = b"ZMS";
/// The protocol version this build speaks (the fourth byte, ASCII).
pub const VERSION: u8 = b'1';
/// The versions a server answers, for the error reply to any other.
pub const VERSIONS_SPOKEN: &str = "1";

/// Longest message text, in bytes of UTF-8.
pub const MAX_TEXT: usize = 64 * 1024;
/// Longest group or user name, in bytes.
pub const MAX_NAME: usize = 64;
/// Largest frame a server accepts; libzmq drops the connection of a peer that sends more
/// (ZMQ_MAXMSGSIZE), so anything between this and [`MAX_TEXT`] still gets a typed error.
pub const MAX_FRAME: i64 = 1024 * 1024;
/// Largest HISTORY page in bytes: a page stops short of the message that would pass it.
pub const MAX_REPLY: usize = 1024 * 1024;
/// Most messages in one HISTORY page; a client pages for more.
pub const HISTORY_PAGE_MAX: u32 = 1000;
/// Most hits in one SEARCH answer; a larger limit is cut to it.
pub const SEARCH_MAX: u32 = 100;
/// Longest SEARCH query, in octets.
pub const MAX_QUERY: usize = 256;
/// Most messages in one SENDS request.
pub const MAX_BATCH: usize = 256;
/// Longest SENDS frame, in octets: as long as the longest SEND's, so a batch never needs a
/// larger frame limit than one message does.
pub const MAX_BATCH_FRAME: usize = MAX_TEXT + 4096;
/// Most groups one group server registers (bounds a REGISTER frame).
pub const MAX_GROUPS_PER_SERVER: usize = 10_000;

/// How often a client pings each group server, and a group server re-registers with each
/// directory. Any reply also proves the peer alive.
pub const HEARTBEAT_MS: u64 = 1000;
/// A registration lives this long unless refreshed: three missed heartbeats.
pub const REGISTRATION_TTL_MS: u32 = 3 * HEARTBEAT_MS as u32;
/// A group server forgets a connection's live subscriptions after this much silence.
pub const SUBSCRIPTION_TTL_MS: u64 = 5 * HEARTBEAT_MS;

/// A request from a user or a group server, answered by exactly one [`Reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Group server → directory: "these groups live at this address", refreshed every heartbeat.
    Register {
        address: String,
        ttl_ms: u32,
        groups: Vec<String>,
        /// The group server's CURVE public key (Z85), or empty when it runs without security.
        key: String,
        /// Take the names over from the group servers holding them (an operator's decision;
        /// on the wire an optional trailing flags octet, bit 0).
        replace: bool,
    },
    /// Group server → directory: forget this address now (clean shutdown).
    Unregister { address: String },
    /// User → directory: announce a display name.
    Hello { name: String },
    /// User → directory (all groups) or group server (its own groups).
    List,
    /// Become a member of a group and receive its messages live on this connection.
    Join { group: String, user: String },
    /// Stop being a member.
    Leave { group: String, user: String },
    /// Receive a group's messages live on this connection (members only).
    Subscribe { group: String, user: String },
    /// Append a message; `client_id` makes a retried send idempotent.
    Send {
        group: String,
        user: String,
        client_id: String,
        text: String,
    },
    /// Append several messages to one group, in order, as one request: what a sender with
    /// many messages at hand sends instead of as many SENDs (a server reads, stores and
    /// answers them as one). Answered by [`Reply::Acks`], one per message.
    SendBatch {
        group: String,
        user: String,
        messages: Vec<Outgoing>,
    },
    /// Read stored messages with `seq > after_seq` and `ts >= since_ms`, in order.
    History {
        group: String,
        user: String,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    },
    /// List a group's members and whether each is online.
    Members { group: String, user: String },
    /// Heartbeat; answered with the server's epoch and the last seq of subscribed groups.
    Ping,
    /// Allow the holder of `key` (Z85 public key) to join a private group; members only.
    Invite {
        group: String,
        user: String,
        key: String,
    },
    /// Ask a server for its CURVE public key (answered on its plaintext key service).
    Key,
    /// Ask a server how it is: answered with [`Reply::Status`] (`zms status`).
    Status,
    /// Operator → group server: remove `user` from `group` (they may join again).
    Kick { group: String, user: String },
    /// Operator → group server: remove `user` from `group` and refuse their JOINs from now on.
    Ban { group: String, user: String },
    /// Operator → group server: host a new group (only allowed or invited keys may join a
    /// `private` one, with security).
    Create { group: String, private: bool },
    /// Operator → group server: delete a group with its messages, members, invitations and bans.
    Drop { group: String },
    /// Operator → group server: make a group private or public.
    Set { group: String, private: bool },
    /// Operator → group server: lift a ban, so `user` may join `group` again.
    Unban { group: String, user: String },
    /// Operator → group server: store messages exported elsewhere, keeping their seqs and
    /// times; they must follow the group's last seq without a gap. Answered as SENDS is.
    Import {
        group: String,
        messages: Vec<Imported>,
    },
    /// User → directory: where the conversation of `user` and `peer` lives, or will live once
    /// either JOINs it ([`conversation_name`]); answered by GROUPS with one entry.
    Dm { user: String, peer: String },
    /// Full-text search of a group's stored messages (their latest texts), newest first;
    /// answered with [`Reply::Found`].
    Search {
        group: String,
        user: String,
        /// Only messages with `ts >= since_ms`; 0 or less for no bound.
        since_ms: i64,
        /// At most this many hits; the server caps it at [`SEARCH_MAX`].
        limit: u32,
        query: String,
    },
    /// The user has seen the group's messages up to `seq`: their read position moves there,
    /// never back.
    Read {
        group: String,
        user: String,
        seq: u64,
    },
    /// How far the user has read a group: answered with [`Reply::Unread`].
    Unread { group: String, user: String },
    /// Replace the text of message `seq` (the sender's own, or any for an operator): stored
    /// as a new message of the group that refers to it ([`edit`]), answered with an ACK.
    Edit {
        group: String,
        user: String,
        client_id: String,
        seq: u64,
        text: String,
    },
    /// Delete message `seq`, as [`Request::Edit`] replaces it.
    Delete {
        group: String,
        user: String,
        client_id: String,
        seq: u64,
    },
}

/// One message of an IMPORT: as stored elsewhere, with the client id it was sent under (empty
/// for none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub message: Message,
    pub client_id: String,
}

impl Request {
    /// The command's name as PROTOCOL.md spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Register { .. } => "REGISTER",
            Request::Unregister { .. } => "UNREGISTER",
            Request::Hello { .. } => "HELLO",
            Request::List => "LIST",
            Request::Join { .. } => "JOIN",
            Request::Leave { .. } => "LEAVE",
            Request::Subscribe { .. } => "SUBSCRIBE",
            Request::Send { .. } => "SEND",
            Request::SendBatch { .. } => "SENDS",
            Request::History { .. } => "HISTORY",
            Request::Members { .. } => "MEMBERS",
            Request::Ping => "PING",
            Request::Invite { .. } => "INVITE",
            Request::Key => "KEY",
            Request::Status => "STATUS",
            Request::Kick { .. } => "KICK",
            Request::Ban { .. } => "BAN",
            Request::Create { .. } => "CREATE",
            Request::Drop { .. } => "DROP",
            Request::Set { .. } => "SET",
            Request::Unban { .. } => "UNBAN",
            Request::Import { .. } => "IMPORT",
            Request::Dm { .. } => "DM",
            Request::Search { .. } => "SEARCH",
            Request::Read { .. } => "READ",
            Request::Unread { .. } => "UNREAD",
            Request::Edit { .. } => "EDIT",
            Request::Delete { .. } => "DELETE",
        }
    }

    /// Whether the request changes stored state (and so must wait for a commit).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Join { .. }
                | Request::Leave { .. }
                | Request::Send { .. }
                | Request::SendBatch { .. }
                | Request::Invite { .. }
                | Request::Kick { .. }
                | Request::Ban { .. }
                | Request::Unban { .. }
                | Request::Import { .. }
                | Request::Read { .. }
                | Request::Edit { .. }
                | Request::Delete { .. }
        )
    }

    /// Whether the request changes which groups exist or how they admit (CREATE, DROP,
    /// SET): carried out by the store in a transaction of its own, outside any batch's.
    pub fn changes_groups(&self) -> bool {
        matches!(
            self,
            Request::Create { .. } | Request::Drop { .. } | Request::Set { .. }
        )
    }
}

/// The answer to one [`Request`], matched to it by request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Error {
        code: ErrorCode,
        reason: String,
    },
    Groups(Vec<GroupEntry>),
    Joined {
        group: String,
        last_seq: u64,
    },
    Ack {
        seq: u64,
        ts: i64,
        duplicate: bool,
    },
    /// The answer to SENDS: one per message, in the request's order.
    Acks(Vec<Acked>),
    Messages {
        group: String,
        last_seq: u64,
        messages: Vec<Message>,
        /// The group's first kept seq: 1 unless older messages were trimmed (retention);
        /// those before it will never come.
        first_seq: u64,
    },
    Members {
        group: String,
        members: Vec<Member>,
    },
    Pong {
        epoch: u64,
        groups: Vec<(String, u64)>,
    },
    /// A server's CURVE public key (Z85), or empty when it runs without security.
    Key(String),
    /// A server's state as one JSON object (fields in PROTOCOL.md, "STATUS").
    Status(String),
    /// The answer to SEARCH: a group's matching messages, newest first.
    Found {
        group: String,
        hits: Vec<Hit>,
    },
    /// The answer to UNREAD: the group's last seq and how far the user has read it.
    Unread {
        group: String,
        last_seq: u64,
        read_seq: u64,
    },
}

/// One message a SEARCH found, with its latest text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub seq: u64,
    pub ts: i64,
    pub sender: String,
    pub text: String,
    /// The matched parts of `text`, as byte ranges `start..end` on character boundaries, in
    /// order: the client shows them highlighted.
    pub matches: Vec<(u32, u32)>,
}

/// Something a group server pushes without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new message in a group this connection subscribes to.
    Message { group: String, message: Message },
    /// A user joined or left a group this connection subscribes to. Not sequenced: presence
    /// is a courtesy, the member list (MEMBERS) is the truth.
    Presence {
        group: String,
        user: String,
        joined: bool,
    },
    /// Consecutive new messages of one group, in seq order: what a busy group server sends in
    /// place of as many MSG events (a client handles each message as a MSG).
    Messages {
        group: String,
        messages: Vec<Message>,
    },
}

/// One message of a SENDS, as its sender gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The sender's id for the message, for de-duplication as in a SEND; empty for none.
    pub client_id: String,
    pub text: String,
}

/// What became of one message of a SENDS: the fields of an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub seq: u64,
    pub ts: i64,
    /// Stored before under the same client id; `seq` and `ts` are the original's.
    pub duplicate: bool,
}

/// One stored message of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Position in the group, from 1, without gaps.
    pub seq: u64,
    /// Server time of storage, unix milliseconds; never decreases along `seq`.
    pub ts: i64,
    pub sender: String,
    pub text: String,
}

/// One entry of the directory's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    /// `HOST:PORT` of the group server hosting it.
    pub address: String,
    /// The group server's CURVE public key (Z85), or empty when it runs without security:
    /// a client that trusts the directory trusts the group servers it lists.
    pub key: String,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Has a live, subscribed connection to the group server.
    pub online: bool,
}

/// Why a server refused a request. Values follow HTTP where one fits, so they read at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The message could not be decoded or a field is invalid.
    BadRequest,
    /// The name is bound to another key, the key is not allowed here (a private group, a
    /// message server that admits only some group servers), or the request needs a key.
    Unauthorized,
    /// The user is not a member of the group.
    NotMember,
    /// No such group here.
    UnknownGroup,
    /// The text or frame is over the limit.
    TooLarge,
    /// A limit was reached: the sender's rate, a group's members, the server's connections or
    /// groups. A rate limit clears with time; the others need a change on the server.
    Limited,
    /// The server failed; the request may be retried.
    Internal,
    /// Storage cannot write; nothing was stored.
    Unavailable,
    /// The protocol version is not spoken here.
    Version,
    /// A code this build does not know (from a newer peer).
    Other(u16),
}

impl ErrorCode {
    /// The code's number on the wire.
    pub fn value(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotMember => 403,
            ErrorCode::UnknownGroup => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::Limited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::Version => 505,
            ErrorCode::Other(v) => v,
        }
    }

    /// The code for a wire number.
    pub fn from_value(v: u16) -> ErrorCode {
        match v {
            400 => ErrorCode::BadRequest,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::NotMember,
            404 => ErrorCode::UnknownGroup,
            413 => ErrorCode::TooLarge,
            429 => ErrorCode::Limited,
            500 => ErrorCode::Internal,
            503 => ErrorCode::Unavailable,
            505 => ErrorCode::Version,
            other => ErrorCode::Other(other),
        }
    }
}

impl ErrorCode {
    /// The code's name as PROTOCOL.md spells it; `OTHER` for one this build does not know.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::NotMember => "NOT_MEMBER",
            ErrorCode::UnknownGroup => "UNKNOWN_GROUP",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Limited => "LIMITED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Version => "VERSION",
            ErrorCode::Other(_) => "OTHER",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Other(v) => write!(f, "ERROR_{v}"),
            known => f.write_str(known.name()),
        }
    }
}

/// Checks a group name: 1 to [`MAX_NAME`] bytes of `A-Z a-z 0-9 _ . -`.
///
/// # Errors
/// A reason fit to send back to the peer.
pub fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("group name must be 1 to {MAX_NAME} bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(format!(
            "group name '{}' may hold only letters, digits, '_', '.' and '-'",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// The name of the conversation (direct messages) of two users: `@` and the two names in
/// octet order, each after an `@` (`@alice@bob`). No group name holds an `@` and no user name
/// does either, so the form cannot be taken by a group and reads back unambiguously.
///
/// # Errors
/// A reason fit to send back to the peer: a name that is not a user name, or both the same.
pub fn conversation_name(user: &str, peer: &str) -> Result<String, String> {
    check_user_name(user)?;
    check_user_name(peer)?;
    if user == peer {
        return Err(format!(
            "a conversation needs two users; '{}' named themself",
            user.escape_debug()
        ));
    }
    let (low, high) = if user < peer {
        (user, peer)
    } else {
        (peer, user)
    };
    Ok(format!("@{low}@{high}"))
}

/// The two users of a conversation name ([`conversation_name`]), in octet order; `None` for
/// anything else (a group name, or a form with names out of order or invalid).
pub fn conversation_users(name: &str) -> Option<(&str, &str)> {
    let (low, high) = name.strip_prefix('@')?.split_once('@')?;
    let valid = check_user_name(low).is_ok() && check_user_name(high).is_ok() && low < high;
    valid.then_some((low, high))
}

/// Checks what a group server hosts: a group name ([`check_group_name`]) or, when it starts
/// with `@`, a conversation name ([`conversation_name`]).
///
/// # Errors
/// A reason fit to send back to the peer.
pub fn check_group_or_conversation(name: &str) -> Result<(), String> {
    if !name.starts_with('@') {
        return check_group_name(name);
    }
    match conversation_users(name) {
        Some(_) => Ok(()),
        None => Err(format!(
            "'{}' is not a conversation name (@USER@USER, the two names in octet order)",
            name.escape_debug()
        )),
    }
}

/// The characters of Z85, the text form of CURVE keys.
const Z85: &[u8] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Checks a public key field: empty (no security) or 40 characters of Z85.
///
/// # Errors
/// A reason fit to send back to the peer.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || (key.len() == 40 && key.bytes().all(|b| Z85.contains(&b))) {
        Ok(())
    } else {
        Err("a key is 40 characters of Z85 (see `zms keygen`)".to_string())
    }
}

/// Checks a user name: 1 to [`MAX_NAME`] bytes, no spaces, no '@', nothing a terminal would
/// act on or not show (control characters, bidi controls, zero-width and other invisible
/// characters), and in Unicode normal form NFKC.
///
/// NFKC rather than NFC: it also maps compatibility forms to their plain letters, so
/// fullwidth 'ａｌｉｃｅ' or mathematical '𝐚𝐥𝐢𝐜𝐞' are refused (with the plain form suggested)
/// instead of posing as 'alice'. Look-alikes from other scripts (Cyrillic 'а') are letters
/// in their own right and are not refused; with `--secure`, a name is bound to one key.
///
/// # Errors
/// A reason fit to send back to the peer (the name quoted with its special characters
/// escaped).
pub fn check_user_name(name: &str) -> Result<(), String> {
    use unicode_normalization::UnicodeNormalization;
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("user name must be 1 to {MAX_NAME} bytes"));
    }
    let quoted = name.escape_debug();
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err(format!(
            "user name '{quoted}' may not hold spaces, control characters or '@'"
        ));
    }
    if name.chars().any(is_invisible) {
        return Err(format!(
            "user name '{quoted}' may not hold invisible characters (bidi controls, zero-width)"
        ));
    }
    if !unicode_normalization::is_nfkc(name) {
        let plain: String = name.nfkc().collect();
        return Err(format!(
            "user name '{quoted}' is not in its plain form (Unicode NFKC); write it as '{}'",
            plain.escape_debug()
        ));
    }
    Ok(())
}

/// Checks a message text (its size is a server's own limit): not empty or only whitespace,
/// and no control characters but newline and tab (no C0 but those, no DEL, no C1), so that
/// no client's terminal is driven by what a member wrote.
///
/// # Errors
/// A reason fit to send back to the peer.
pub fn check_text(text: &str) -> Result<(), String> {
    if text.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err("message is empty (or only spaces); nothing to send".to_string());
    }
    match text.char_indices().find(|&(_, c)| c.is_control() && c != '\n' && c != '\t') {
        Some((at, c)) => Err(format!(
            "message holds control character U+{:04X} at byte {at}; only newline and tab are allowed",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// Checks a SEARCH query: 1 to [`MAX_QUERY`] octets, some word, no control characters.
///
/// # Errors
/// A reason fit to send back to the peer.
pub fn check_query(query: &str) -> Result<(), String> {
    if query.len() > MAX_QUERY {
        return Err(format!("a search query is at most {MAX_QUERY} bytes"));
    }
    if !query.chars().any(char::is_alphanumeric) {
        return Err("a search query needs at least one word".to_string());
    }
    if query.chars().any(char::is_control) {
        return Err("a search query may not hold control characters".to_string());
    }
    Ok(())
}

/// Whether `c` is a character that shows as nothing or changes how others show: bidi
/// controls, zero-width characters, fillers, variation selectors and tags (Unicode's
/// Default_Ignorable_Code_Point). Never allowed in a name.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_is_named_by_its_two_users_in_order() {
        assert_eq!(conversation_name("bob", "alice").unwrap(), "@alice@bob");
        assert_eq!(conversation_name("alice", "bob").unwrap(), "@alice@bob");
        assert_eq!(conversation_users("@alice@bob"), Some(("alice", "bob")));
        assert!(conversation_name("alice", "alice").is_err());
        assert!(conversation_name("alice", "b ob").is_err());
    }

    #[test]
    fn only_the_exact_form_is_a_conversation() {
        for name in [
            "@bob@alice",
            "@alice",
            "alice@bob",
            "@alice@bob@carol",
            "@@bob",
            "@alice@",
        ] {
            assert_eq!(conversation_users(name), None, "{name}");
            assert!(check_group_or_conversation(name).is_err(), "{name}");
        }
        assert!(check_group_or_conversation("@alice@bob").is_ok());
        assert!(check_group_or_conversation("general").is_ok());
        // No group name can take a conversation's form.
        assert!(check_group_name("@alice@bob").is_err());
    }
}
