//! The bytes of the chat requests and replies: SEARCH, READ, UNREAD, EDIT, DELETE and the
//! FOUND and UNREAD replies (PROTOCOL.md gives each layout).

use super::super::reader::{Fault, Reader};
use super::super::{Hit, Reply, Request};
use super::{cmd, Writer};

/// The command byte of a chat request, if `request` is one.
pub(super) fn request_cmd(request: &Request) -> Option<u8> {
    Some(match request {
        Request::Search { .. } => cmd::SEARCH,
        Request::Read { .. } => cmd::READ,
        Request::Unread { .. } => cmd::UNREAD,
        Request::Edit { .. } => cmd::EDIT,
        Request::Delete { .. } => cmd::DELETE,
        _ => return None,
    })
}

/// Writes a chat request's fields; nothing for any other request.
pub(super) fn encode_request(w: &mut Writer, request: &Request) {
    match request {
        Request::Search {
            group,
            user,
            since_ms,
            limit,
            query,
        } => {
            w.string(group);
            w.string(user);
            w.i64(*since_ms);
            w.u32(*limit);
            w.text(query);
        }
        Request::Read { group, user, seq } => {
            w.string(group);
            w.string(user);
            w.u64(*seq);
        }
        Request::Unread { group, user } => {
            w.string(group);
            w.string(user);
        }
        Request::Edit {
            group,
            user,
            client_id,
            seq,
            text,
        } => {
            w.string(group);
            w.string(user);
            w.string(client_id);
            w.u64(*seq);
            w.text(text);
        }
        Request::Delete {
            group,
            user,
            client_id,
            seq,
        } => {
            w.string(group);
            w.string(user);
            w.string(client_id);
            w.u64(*seq);
        }
        _ => {}
    }
}

/// Reads a chat request's fields, if `command` is one.
pub(super) fn decode_request(command: u8, r: &mut Reader<'_>) -> Option<Result<Request, Fault>> {
    let decode = |r: &mut Reader<'_>| -> Result<Request, Fault> {
        Ok(match command {
            cmd::SEARCH => Request::Search {
                group: r.string()?,
                user: r.string()?,
                since_ms: r.i64()?,
                limit: r.u32()?,
                query: r.text()?,
            },
            cmd::READ => Request::Read {
                group: r.string()?,
                user: r.string()?,
                seq: r.u64()?,
            },
            cmd::UNREAD => Request::Unread {
                group: r.string()?,
                user: r.string()?,
            },
            cmd::EDIT => Request::Edit {
                group: r.string()?,
                user: r.string()?,
                client_id: r.string()?,
                seq: r.u64()?,
                text: r.text()?,
            },
            _ => Request::Delete {
                group: r.string()?,
                user: r.string()?,
                client_id: r.string()?,
                seq: r.u64()?,
            },
        })
    };
    matches!(
        command,
        cmd::SEARCH | cmd::READ | cmd::UNREAD | cmd::EDIT | cmd::DELETE
    )
    .then(|| decode(r))
}

/// Writes a chat reply's fields; nothing for any other reply.
pub(super) fn encode_reply(w: &mut Writer, reply: &Reply) {
    match reply {
        Reply::Found { group, hits } => {
            w.string(group);
            w.u32(hits.len() as u32);
            for hit in hits {
                w.u64(hit.seq);
                w.i64(hit.ts);
                w.string(&hit.sender);
                w.text(&hit.text);
                w.u32(hit.matches.len() as u32);
                for &(start, end) in &hit.matches {
                    w.u32(start);
                    w.u32(end);
                }
            }
        }
        Reply::Unread {
            group,
            last_seq,
            read_seq,
        } => {
            w.string(group);
            w.u64(*last_seq);
            w.u64(*read_seq);
        }
        _ => {}
    }
}

/// Octets the smallest hit takes: seq, ts, an empty sender and text, no matches.
const HIT_MIN_LEN: usize = 8 + 8 + 1 + 4 + 4;

/// Reads a chat reply's fields, if `command` is one.
pub(super) fn decode_reply(command: u8, r: &mut Reader<'_>) -> Option<Result<Reply, Fault>> {
    match command {
        cmd::FOUND => Some((|| {
            let group = r.string()?;
            let count = r.count(HIT_MIN_LEN)?;
            let hits = (0..count)
                .map(|_| {
                    let (seq, ts, sender, text) = (r.u64()?, r.i64()?, r.string()?, r.text()?);
                    let count = r.count(8)?;
                    let matches = (0..count)
                        .map(|_| Ok((r.u32()?, r.u32()?)))
                        .collect::<Result<_, Fault>>()?;
                    Ok(Hit {
                        seq,
                        ts,
                        sender,
                        text,
                        matches,
                    })
                })
                .collect::<Result<_, Fault>>()?;
            Ok(Reply::Found { group, hits })
        })()),
        cmd::UNREAD_REPLY => Some((|| {
            Ok(Reply::Unread {
                group: r.string()?,
                last_seq: r.u64()?,
                read_seq: r.u64()?,
            })
        })()),
        _ => None,
    }
}
