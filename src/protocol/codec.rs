//! Pure frames ⇄ messages. Every ZMS message is one ZeroMQ frame:
//!
//! ```text
//! "ZMS" '1'  command:u8  [request-id:u32]  fields…
//! ```
//!
//! Requests and replies carry a request id; events do not. Fields are big-endian integers,
//! `string` (u8 length + UTF-8) and `text` (u32 length + UTF-8); a list is a u32 count followed
//! by its elements. A decoder rejects trailing bytes. PROTOCOL.md gives every layout.

use super::reader::{Fault, Reader, MESSAGE_MIN_LEN};
use super::{
    Acked, ErrorCode, Event, GroupEntry, Imported, Member, Message, Outgoing, Reply, Request,
    MAX_BATCH, MAX_BATCH_FRAME, SIGNATURE, VERSION,
};

/// Command bytes, as in PROTOCOL.md.
pub mod cmd {
    pub const REGISTER: u8 = 0x01;
    pub const UNREGISTER: u8 = 0x02;
    pub const HELLO: u8 = 0x03;
    pub const LIST: u8 = 0x04;
    pub const KEY: u8 = 0x05;
    pub const STATUS: u8 = 0x06;
    pub const JOIN: u8 = 0x10;
    pub const LEAVE: u8 = 0x11;
    pub const SUBSCRIBE: u8 = 0x12;
    pub const SEND: u8 = 0x13;
    pub const HISTORY: u8 = 0x14;
    pub const MEMBERS: u8 = 0x15;
    pub const PING: u8 = 0x16;
    pub const INVITE: u8 = 0x17;
    pub const SENDS: u8 = 0x18;
    pub const KICK: u8 = 0x19;
    pub const BAN: u8 = 0x1A;
    pub const CREATE: u8 = 0x1B;
    pub const DROP: u8 = 0x1C;
    pub const SET: u8 = 0x1D;
    pub const UNBAN: u8 = 0x1E;
    pub const IMPORT: u8 = 0x1F;
    pub const SEARCH: u8 = 0x20;
    pub const READ: u8 = 0x21;
    pub const UNREAD: u8 = 0x22;
    pub const EDIT: u8 = 0x23;
    pub const DELETE: u8 = 0x24;
    pub const DM: u8 = 0x25;
    pub const OK: u8 = 0x80;
    pub const ERROR: u8 = 0x81;
    pub const GROUPS: u8 = 0x82;
    pub const JOINED: u8 = 0x83;
    pub const ACK: u8 = 0x84;
    pub const MESSAGES: u8 = 0x85;
    pub const MEMBER_LIST: u8 = 0x86;
    pub const PONG: u8 = 0x87;
    pub const KEY_REPLY: u8 = 0x88;
    pub const ACKS: u8 = 0x89;
    pub const STATUS_REPLY: u8 = 0x8A;
    pub const FOUND: u8 = 0x8B;
    pub const UNREAD_REPLY: u8 = 0x8C;
    pub const MSG: u8 = 0xC0;
    pub const PRESENCE: u8 = 0xC1;
    pub const MSGS: u8 = 0xC2;
}

/// A frame that could not be decoded, with what the server should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The request id, when the frame got that far; 0 otherwise.
    pub req_id: u32,
    pub code: ErrorCode,
    pub reason: String,
}

/// What a client receives: a reply to one of its requests, or a pushed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Reply(u32, Reply),
    Event(Event),
    /// An event command this build does not know (0xC0–0xFF): a newer server's, to be ignored.
    UnknownEvent(u8),
}

/// Encodes a request with its id.
pub fn encode_request(req_id: u32, request: &Request) -> Vec<u8> {
    // A SEND is most of the traffic: room for all of it at once, not by doubling.
    let room = match request {
        Request::Send {
            group,
            user,
            client_id,
            text,
        } => 24 + group.len() + user.len() + client_id.len() + text.len(),
        Request::SendBatch {
            group,
            user,
            messages,
        } => batch_len(group, user, messages),
        Request::Import { group, messages } => import_len(group, messages),
        _ => 64,
    };
    let mut w = Writer::with_room(request_cmd(request), room);
    w.u32(req_id);
    match request {
        Request::Register {
            address,
            ttl_ms,
            groups,
            key,
            replace,
        } => {
            w.string(address);
            w.u32(*ttl_ms);
            w.u32(groups.len() as u32);
            groups.iter().for_each(|g| w.string(g));
            w.string(key);
            // Optional: absent is no flags, so plain registrations stay as they were.
            if *replace {
                w.u8(REGISTER_REPLACE);
            }
        }
        Request::Invite { group, user, key } => {
            w.string(group);
            w.string(user);
            w.string(key);
        }
        Request::Unregister { address } => w.string(address),
        Request::Hello { name } => w.string(name),
        Request::Dm { user, peer } => {
            w.string(user);
            w.string(peer);
        }
        Request::List | Request::Ping | Request::Key | Request::Status => {}
        Request::Join { group, user }
        | Request::Leave { group, user }
        | Request::Subscribe { group, user }
        | Request::Kick { group, user }
        | Request::Ban { group, user }
        | Request::Unban { group, user }
        | Request::Members { group, user } => {
            w.string(group);
            w.string(user);
        }
        Request::Create { group, private } | Request::Set { group, private } => {
            w.string(group);
            w.u8(if *private { GROUP_PRIVATE } else { 0 });
        }
        Request::Drop { group } => w.string(group),
        Request::Import { group, messages } => {
            w.string(group);
            w.u32(messages.len() as u32);
            for m in messages {
                w.message(&m.message);
                w.string(&m.client_id);
            }
        }
        Request::Send {
            group,
            user,
            client_id,
            text,
        } => {
            w.string(group);
            w.string(user);
            w.string(client_id);
            w.text(text);
        }
        Request::SendBatch {
            group,
            user,
            messages,
        } => {
            w.string(group);
            w.string(user);
            w.u32(messages.len() as u32);
            for m in messages {
                w.string(&m.client_id);
                w.text(&m.text);
            }
        }
        Request::History {
            group,
            user,
            after_seq,
            since_ms,
            limit,
        } => {
            w.string(group);
            w.string(user);
            w.u64(*after_seq);
            w.i64(*since_ms);
            w.u32(*limit);
        }
        Request::Search { .. }
        | Request::Read { .. }
        | Request::Unread { .. }
        | Request::Edit { .. }
        | Request::Delete { .. } => chat::encode_request(&mut w, request),
    }
    w.finish()
}

/// Octets a SENDS of `messages` takes, header and all: a client keeps it within
/// [`MAX_BATCH_FRAME`].
pub fn batch_len(group: &str, user: &str, messages: &[Outgoing]) -> usize {
    let each: usize = messages
        .iter()
        .map(|m| outgoing_len(&m.client_id, &m.text))
        .sum();
    BATCH_HEADER_LEN + group.len() + user.len() + each
}

/// Octets one message of a SENDS takes: what it adds to [`batch_len`].
pub fn outgoing_len(client_id: &str, text: &str) -> usize {
    OUTGOING_MIN_LEN + client_id.len() + text.len()
}

/// Octets an IMPORT of `messages` takes, header and all: a client keeps it within
/// [`MAX_BATCH_FRAME`].
pub fn import_len(group: &str, messages: &[Imported]) -> usize {
    let each: usize = messages.iter().map(imported_len).sum();
    IMPORT_HEADER_LEN + group.len() + each
}

/// Octets one message of an IMPORT takes: what it adds to [`import_len`].
pub fn imported_len(m: &Imported) -> usize {
    message_len(&m.message) + 1 + m.client_id.len()
}

/// Octets of an IMPORT before its messages, but for the group's name: the header, the request
/// id, the name's length and the count.
const IMPORT_HEADER_LEN: usize = 5 + 4 + 1 + 4;

/// Octets of a SENDS before its messages, but for the group and user names: the header, the
/// request id, the two names' lengths and the count.
const BATCH_HEADER_LEN: usize = 5 + 4 + 1 + 1 + 4;
/// Octets the smallest SENDS message takes: the lengths of an empty client id and text.
const OUTGOING_MIN_LEN: usize = 1 + 4;

fn request_cmd(request: &Request) -> u8 {
    match request {
        Request::Register { .. } => cmd::REGISTER,
        Request::Unregister { .. } => cmd::UNREGISTER,
        Request::Hello { .. } => cmd::HELLO,
        Request::List => cmd::LIST,
        Request::Join { .. } => cmd::JOIN,
        Request::Leave { .. } => cmd::LEAVE,
        Request::Subscribe { .. } => cmd::SUBSCRIBE,
        Request::Send { .. } => cmd::SEND,
        Request::SendBatch { .. } => cmd::SENDS,
        Request::History { .. } => cmd::HISTORY,
        Request::Members { .. } => cmd::MEMBERS,
        Request::Ping => cmd::PING,
        Request::Invite { .. } => cmd::INVITE,
        Request::Key => cmd::KEY,
        Request::Status => cmd::STATUS,
        Request::Kick { .. } => cmd::KICK,
        Request::Ban { .. } => cmd::BAN,
        Request::Create { .. } => cmd::CREATE,
        Request::Drop { .. } => cmd::DROP,
        Request::Set { .. } => cmd::SET,
        Request::Unban { .. } => cmd::UNBAN,
        Request::Import { .. } => cmd::IMPORT,
        Request::Dm { .. } => cmd::DM,
        other => chat::request_cmd(other).expect("bug: a request without a command byte"),
    }
}

/// The REGISTER flag asking to take names over from the group servers that hold them.
const REGISTER_REPLACE: u8 = 0x01;

/// The CREATE and SET flag: the group is private.
const GROUP_PRIVATE: u8 = 0x01;

/// Reads the flags octet of CREATE and SET: whether the group is private.
fn group_flags(r: &mut Reader<'_>, command: &str) -> Result<bool, Fault> {
    match r.u8()? {
        0 => Ok(false),
        GROUP_PRIVATE => Ok(true),
        flags => Err(Fault(format!("unknown {command} flags 0x{flags:02X}"))),
    }
}

/// Decodes a request.
///
/// # Errors
/// A [`DecodeError`] naming the fault and the error code to answer with.
pub fn decode_request(frame: &[u8]) -> Result<(u32, Request), DecodeError> {
    let (command, mut r) = Reader::open(frame)?;
    let req_id = r.u32().map_err(|e| e.into_decode(0))?;
    let request = (|| {
        Ok(match command {
            cmd::REGISTER => {
                let address = r.string()?;
                let ttl_ms = r.u32()?;
                let count = r.count(1)?;
                let groups = (0..count).map(|_| r.string()).collect::<Result<_, _>>()?;
                let key = r.string()?;
                let replace = match r.is_empty() {
                    true => false,
                    false => match r.u8()? {
                        0 => false,
                        REGISTER_REPLACE => true,
                        flags => {
                            return Err(Fault(format!("unknown REGISTER flags 0x{flags:02X}")))
                        }
                    },
                };
                Request::Register {
                    address,
                    ttl_ms,
                    groups,
                    key,
                    replace,
                }
            }
            cmd::INVITE => Request::Invite {
                group: r.string()?,
                user: r.string()?,
                key: r.string()?,
            },
            cmd::KEY => Request::Key,
            cmd::STATUS => Request::Status,
            cmd::KICK => Request::Kick {
                group: r.string()?,
                user: r.string()?,
            },
            cmd::BAN => Request::Ban {
                group: r.string()?,
                user: r.string()?,
            },
            cmd::UNBAN => Request::Unban {
                group: r.string()?,
                user: r.string()?,
            },
            cmd::CREATE => Request::Create {
                group: r.string()?,
                private: group_flags(&mut r, "CREATE")?,
            },
            cmd::SET => Request::Set {
                group: r.string()?,
                private: group_flags(&mut r, "SET")?,
            },
            cmd::DROP => Request::Drop { group: r.string()? },
            cmd::IMPORT => {
                if frame.len() > MAX_BATCH_FRAME {
                    return Err(Fault(format!(
                        "an IMPORT frame is at most {MAX_BATCH_FRAME} octets"
                    )));
                }
                let group = r.string()?;
                let count = r.count(MESSAGE_MIN_LEN + 1)?;
                if count == 0 || count > MAX_BATCH {
                    return Err(Fault(format!(
                        "an IMPORT carries 1 to {MAX_BATCH} messages, not {count}"
                    )));
                }
                let messages = (0..count)
                    .map(|_| {
                        Ok(Imported {
                            message: r.message()?,
                            client_id: r.string()?,
                        })
                    })
                    .collect::<Result<_, Fault>>()?;
                Request::Import { group, messages }
            }
            cmd::DM => Request::Dm {
                user: r.string()?,
                peer: r.string()?,
            },
            cmd::UNREGISTER => Request::Unregister {
                address: r.string()?,
            },
            cmd::HELLO => Request::Hello { name: r.string()? },
            cmd::LIST => Request::List,
            cmd::PING => Request::Ping,
            cmd::JOIN => Request::Join {
                group: r.string()?,
                user: r.string()?,
            },
            cmd::LEAVE => Request::Leave {
                group: r.string()?,
                user: r.string()?,
            },
            cmd::SUBSCRIBE => Request::Subscribe {
                group: r.string()?,
                user: r.string()?,
            },
            cmd::MEMBERS => Request::Members {
                group: r.string()?,
                user: r.string()?,
            },
            cmd::SEND => Request::Send {
                group: r.string()?,
                user: r.string()?,
                client_id: r.string()?,
                text: r.text()?,
            },
            cmd::SENDS => {
                if frame.len() > MAX_BATCH_FRAME {
                    return Err(Fault(format!(
                        "a SENDS frame is at most {MAX_BATCH_FRAME} octets"
                    )));
                }
                let group = r.string()?;
                let user = r.string()?;
                let count = r.count(OUTGOING_MIN_LEN)?;
                if count == 0 || count > MAX_BATCH {
                    return Err(Fault(format!(
                        "a SENDS carries 1 to {MAX_BATCH} messages, not {count}"
                    )));
                }
                let messages = (0..count)
                    .map(|_| {
                        Ok(Outgoing {
                            client_id: r.string()?,
                            text: r.text()?,
                        })
                    })
                    .collect::<Result<_, Fault>>()?;
                Request::SendBatch {
                    group,
                    user,
                    messages,
                }
            }
            cmd::HISTORY => Request::History {
                group: r.string()?,
                user: r.string()?,
                after_seq: r.u64()?,
                since_ms: r.i64()?,
                limit: r.u32()?,
            },
            other => match chat::decode_request(other, &mut r) {
                Some(request) => request?,
                None => return Err(Fault(format!("unknown command 0x{other:02X}"))),
            },
        })
    })()
    .and_then(|req| r.end().map(|_| req))
    .map_err(|e| e.into_decode(req_id))?;
    Ok((req_id, request))
}

/// Decodes the frames of one ZeroMQ message as a request: exactly one frame is a ZMS message.
///
/// # Errors
/// As [`decode_request`], or BAD_REQUEST (request id 0) for any other number of frames.
pub fn decode_message<F: std::ops::Deref<Target = [u8]>>(
    frames: &[F],
) -> Result<(u32, Request), DecodeError> {
    match frames {
        [frame] => decode_request(frame),
        _ => Err(DecodeError {
            req_id: 0,
            code: ErrorCode::BadRequest,
            reason: "a ZMS message is exactly one frame".into(),
        }),
    }
}

/// Encodes a reply to the request with id `req_id`.
pub fn encode_reply(req_id: u32, reply: &Reply) -> Vec<u8> {
    let command = match reply {
        Reply::Ok => cmd::OK,
        Reply::Error { .. } => cmd::ERROR,
        Reply::Groups(_) => cmd::GROUPS,
        Reply::Joined { .. } => cmd::JOINED,
        Reply::Ack { .. } => cmd::ACK,
        Reply::Acks(_) => cmd::ACKS,
        Reply::Messages { .. } => cmd::MESSAGES,
        Reply::Members { .. } => cmd::MEMBER_LIST,
        Reply::Pong { .. } => cmd::PONG,
        Reply::Key(_) => cmd::KEY_REPLY,
        Reply::Status(_) => cmd::STATUS_REPLY,
        Reply::Found { .. } => cmd::FOUND,
        Reply::Unread { .. } => cmd::UNREAD_REPLY,
    };
    let room = match reply {
        Reply::Acks(acks) => 13 + ACKED_LEN * acks.len(),
        _ => 64,
    };
    let mut w = Writer::with_room(command, room);
    w.u32(req_id);
    match reply {
        Reply::Ok => {}
        Reply::Key(key) => w.string(key),
        Reply::Status(json) => w.text(json),
        Reply::Error { code, reason } => {
            w.u16(code.value());
            w.text(reason);
        }
        Reply::Groups(groups) => {
            w.u32(groups.len() as u32);
            for g in groups {
                w.string(&g.name);
                w.string(&g.address);
                w.string(&g.key);
            }
        }
        Reply::Joined { group, last_seq } => {
            w.string(group);
            w.u64(*last_seq);
        }
        Reply::Ack { seq, ts, duplicate } => {
            w.u64(*seq);
            w.i64(*ts);
            w.u8(u8::from(*duplicate));
        }
        Reply::Acks(acks) => {
            w.u32(acks.len() as u32);
            for a in acks {
                w.u64(a.seq);
                w.i64(a.ts);
                w.u8(u8::from(a.duplicate));
            }
        }
        Reply::Messages {
            group,
            last_seq,
            messages,
            first_seq,
        } => {
            w.string(group);
            w.u64(*last_seq);
            w.u32(messages.len() as u32);
            messages.iter().for_each(|m| w.message(m));
            // Only after a trim: an untrimmed group's reply is the same as before the field.
            if *first_seq > 1 {
                w.u64(*first_seq);
            }
        }
        Reply::Members { group, members } => {
            w.string(group);
            w.u32(members.len() as u32);
            for m in members {
                w.string(&m.name);
                w.u8(u8::from(m.online));
            }
        }
        Reply::Pong { epoch, groups } => {
            w.u64(*epoch);
            w.u32(groups.len() as u32);
            for (g, seq) in groups {
                w.string(g);
                w.u64(*seq);
            }
        }
        Reply::Found { .. } | Reply::Unread { .. } => chat::encode_reply(&mut w, reply),
    }
    w.finish()
}

/// Encodes a pushed event.
pub fn encode_event(event: &Event) -> Vec<u8> {
    match event {
        Event::Message { group, message } => encode_message_event(group, message),
        Event::Presence {
            group,
            user,
            joined,
        } => {
            let mut w = Writer::new(cmd::PRESENCE);
            w.string(group);
            w.string(user);
            w.u8(u8::from(*joined));
            w.finish()
        }
        Event::Messages { group, messages } => encode_messages_event(group, messages),
    }
}

/// Encodes a MSG event straight from its parts (the group server's hot path).
pub fn encode_message_event(group: &str, message: &Message) -> Vec<u8> {
    let mut w = Writer::with_room(cmd::MSG, 16 + group.len() + message_len(message));
    w.string(group);
    w.message(message);
    w.finish()
}

/// Encodes a MSGS event: consecutive messages of one group in one frame.
pub fn encode_messages_event(group: &str, messages: &[Message]) -> Vec<u8> {
    // Sized at once: a busy batch's frame is tens of KiB, and growing it by doubling would
    // copy it over and over.
    let room = 16 + group.len() + messages.iter().map(message_len).sum::<usize>();
    let mut w = Writer::with_room(cmd::MSGS, room);
    w.string(group);
    w.u32(messages.len() as u32);
    messages.iter().for_each(|m| w.message(m));
    w.finish()
}

/// Appends `message` to `buf` as a `message` field, the octets a MSGS frame carries after its
/// count.
pub fn append_message(buf: &mut Vec<u8>, message: &Message) {
    let mut w = Writer(std::mem::take(buf));
    w.message(message);
    *buf = w.0;
}

/// Appends `s` to `buf` as a `string` field (a `u8` length, then the octets): what a frame
/// carries for a name, and the store for a chunk's sender.
pub fn append_string(buf: &mut Vec<u8>, s: &str) {
    let mut w = Writer(std::mem::take(buf));
    w.string(s);
    *buf = w.0;
}

/// Decodes messages written back to back by [`append_message`].
///
/// # Errors
/// What is wrong with the first message that does not decode (truncated, invalid UTF-8).
pub fn decode_messages(bytes: &[u8]) -> Result<Vec<Message>, String> {
    let mut r = Reader::new(bytes);
    let mut messages = Vec::new();
    while !r.is_empty() {
        messages.push(r.message().map_err(|Fault(reason)| reason)?);
    }
    Ok(messages)
}

/// Octets a message takes in a frame (seq, ts, sender, text and their lengths).
pub fn message_len(message: &Message) -> usize {
    MESSAGE_MIN_LEN + message.sender.len().min(255) + message.text.len()
}

/// Octets one ACKS entry takes: seq, ts, duplicate.
const ACKED_LEN: usize = 8 + 8 + 1;

/// Decodes what a client receives: a reply or an event.
///
/// # Errors
/// [`DecodeError`] when the frame is not a valid reply or event.
pub fn decode_incoming(frame: &[u8]) -> Result<Incoming, DecodeError> {
    let (command, mut r) = Reader::open(frame)?;
    if command == cmd::MSG {
        let event = (|| {
            let group = r.string()?;
            let message = r.message()?;
            r.end()?;
            Ok(Event::Message { group, message })
        })()
        .map_err(|e: Fault| e.into_decode(0))?;
        return Ok(Incoming::Event(event));
    }
    if command == cmd::PRESENCE {
        let event = (|| {
            let event = Event::Presence {
                group: r.string()?,
                user: r.string()?,
                joined: r.u8()? != 0,
            };
            r.end()?;
            Ok(event)
        })()
        .map_err(|e: Fault| e.into_decode(0))?;
        return Ok(Incoming::Event(event));
    }
    if command == cmd::MSGS {
        let event = (|| {
            let group = r.string()?;
            let count = r.count(MESSAGE_MIN_LEN)?;
            let messages = (0..count).map(|_| r.message()).collect::<Result<_, _>>()?;
            r.end()?;
            Ok(Event::Messages { group, messages })
        })()
        .map_err(|e: Fault| e.into_decode(0))?;
        return Ok(Incoming::Event(event));
    }
    if command >= 0xC0 {
        return Ok(Incoming::UnknownEvent(command));
    }
    let req_id = r.u32().map_err(|e| e.into_decode(0))?;
    let reply = (|| {
        Ok(match command {
            cmd::OK => Reply::Ok,
            cmd::ERROR => Reply::Error {
                code: ErrorCode::from_value(r.u16()?),
                reason: r.text()?,
            },
            cmd::GROUPS => {
                let count = r.count(3)?;
                let groups = (0..count)
                    .map(|_| {
                        Ok(GroupEntry {
                            name: r.string()?,
                            address: r.string()?,
                            key: r.string()?,
                        })
                    })
                    .collect::<Result<_, Fault>>()?;
                Reply::Groups(groups)
            }
            cmd::KEY_REPLY => Reply::Key(r.string()?),
            cmd::STATUS_REPLY => Reply::Status(r.text()?),
            cmd::JOINED => Reply::Joined {
                group: r.string()?,
                last_seq: r.u64()?,
            },
            cmd::ACK => Reply::Ack {
                seq: r.u64()?,
                ts: r.i64()?,
                duplicate: r.u8()? != 0,
            },
            cmd::ACKS => {
                let count = r.count(ACKED_LEN)?;
                let acks = (0..count)
                    .map(|_| {
                        Ok(Acked {
                            seq: r.u64()?,
                            ts: r.i64()?,
                            duplicate: r.u8()? != 0,
                        })
                    })
                    .collect::<Result<_, Fault>>()?;
                Reply::Acks(acks)
            }
            cmd::MESSAGES => {
                let group = r.string()?;
                let last_seq = r.u64()?;
                let count = r.count(MESSAGE_MIN_LEN)?;
                let messages = (0..count).map(|_| r.message()).collect::<Result<_, _>>()?;
                // No message has seq 0: a first_seq of 0 reads as 1, as an absent one does,
                // so every reply has one encoding.
                let first_seq = if r.is_empty() { 1 } else { r.u64()?.max(1) };
                Reply::Messages {
                    group,
                    last_seq,
                    messages,
                    first_seq,
                }
            }
            cmd::MEMBER_LIST => {
                let group = r.string()?;
                let count = r.count(2)?;
                let members = (0..count)
                    .map(|_| {
                        Ok(Member {
                            name: r.string()?,
                            online: r.u8()? != 0,
                        })
                    })
                    .collect::<Result<_, Fault>>()?;
                Reply::Members { group, members }
            }
            cmd::PONG => {
                let epoch = r.u64()?;
                let count = r.count(9)?;
                let groups = (0..count)
                    .map(|_| Ok((r.string()?, r.u64()?)))
                    .collect::<Result<_, Fault>>()?;
                Reply::Pong { epoch, groups }
            }
            other => match chat::decode_reply(other, &mut r) {
                Some(reply) => reply?,
                None => return Err(Fault(format!("unknown reply command 0x{other:02X}"))),
            },
        })
    })()
    .and_then(|reply| r.end().map(|_| reply))
    .map_err(|e| e.into_decode(req_id))?;
    Ok(Incoming::Reply(req_id, reply))
}

/// Appends fields to a frame.
struct Writer(Vec<u8>);

impl Writer {
    fn new(command: u8) -> Writer {
        Writer::with_room(command, 64)
    }
    fn with_room(command: u8, room: usize) -> Writer {
        let mut buf = Vec::with_capacity(room);
        buf.extend_from_slice(SIGNATURE);
        buf.push(VERSION);
        buf.push(command);
        Writer(buf)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// A short string; callers keep it under 256 bytes (names and addresses are checked
    /// before they reach here), and a longer one is cut at a character boundary rather than
    /// corrupting the frame.
    fn string(&mut self, s: &str) {
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push(end as u8);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn text(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn message(&mut self, m: &Message) {
        self.u64(m.seq);
        self.i64(m.ts);
        self.string(&m.sender);
        self.text(&m.text);
    }
    fn finish(self) -> Vec<u8> {
        self.0
    }
}

mod chat;
#[cfg(test)]
mod tests;
