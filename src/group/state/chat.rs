//! The chat requests after the common checks (valid names, hosted group, a member): SEARCH,
//! READ, UNREAD, EDIT and DELETE, and the answers to what they look up in the store.

use tracing::{info, warn};

use super::effects::{Append, ClientIds, Effects, Found, Now, Outbound, Peer, Query, QueryKind};
use super::requests::{rate_keys, refusal};
use super::State;
use crate::protocol::{self, edit, ErrorCode, Message, Reply, Request};

impl State {
    /// Decides a chat request of `user`, a member of `group_name` (checked by the caller).
    #[allow(clippy::too_many_arguments)] // one request's parts, as State::handle has them
    pub(super) fn chat(
        &mut self,
        now: Now,
        from: Peer<'_>,
        req_id: u32,
        group_name: String,
        user: String,
        request: Request,
        effects: &mut Effects,
    ) {
        let route = from.route;
        let answer = |reply: Reply| Outbound::Reply {
            route: route.clone(),
            req_id,
            reply,
        };
        let refuse = |code: ErrorCode, reason: String| answer(Reply::Error { code, reason });
        // Without security every local user would pass KICK's loopback rule: only operator keys.
        let operator = self.secure && self.operator(from).is_ok();
        let Some(group) = self.groups.get(&group_name) else {
            return;
        };
        let (group_id, last_seq) = (group.id, group.last_seq);
        let query = |kind: QueryKind| Query {
            route: route.clone(),
            req_id,
            group: group_name.clone(),
            group_id,
            kind,
        };
        match request {
            Request::Search {
                since_ms,
                limit,
                query: text,
                ..
            } => {
                if let Err(reason) = protocol::check_query(&text) {
                    return effects.out.push(refuse(ErrorCode::BadRequest, reason));
                }
                let limit = limit.min(protocol::SEARCH_MAX);
                if limit == 0 {
                    return effects.out.push(answer(Reply::Found {
                        group: group_name,
                        hits: Vec::new(),
                    }));
                }
                effects.query = Some(query(QueryKind::Search {
                    query: text,
                    since_ms,
                    limit,
                }));
            }
            Request::Read { seq, .. } => {
                effects.writes.push(super::Write::SetRead {
                    group_id,
                    user,
                    // A position past the end would hide messages not yet sent.
                    seq: seq.min(last_seq),
                });
                effects.out.push(Outbound::Durable {
                    route: route.clone(),
                    req_id,
                    reply: Reply::Ok,
                });
            }
            Request::Unread { .. } => {
                effects.query = Some(query(QueryKind::Unread { user, last_seq }));
            }
            Request::Edit {
                client_id,
                seq,
                text,
                ..
            } => {
                let change = Change {
                    client_id,
                    seq,
                    text: Some(text),
                };
                self.change(
                    now, from, req_id, group_name, user, operator, change, effects,
                )
            }
            Request::Delete { client_id, seq, .. } => {
                let change = Change {
                    client_id,
                    seq,
                    text: None,
                };
                self.change(
                    now, from, req_id, group_name, user, operator, change, effects,
                )
            }
            _ => {}
        }
    }

    /// EDIT (with a text) or DELETE of message `seq`: checks what memory can, then asks the
    /// store for the original ([`QueryKind::Original`]); [`State::looked_up`] decides.
    #[allow(clippy::too_many_arguments)] // one request's parts, as State::handle has them
    fn change(
        &mut self,
        now: Now,
        from: Peer<'_>,
        req_id: u32,
        group_name: String,
        user: String,
        operator: bool,
        change: Change,
        effects: &mut Effects,
    ) {
        let route = from.route;
        let refuse = |code: ErrorCode, reason: String| Outbound::Reply {
            route: route.clone(),
            req_id,
            reply: Reply::Error { code, reason },
        };
        let Some(group) = self.groups.get(&group_name) else {
            return;
        };
        let Change {
            client_id,
            seq,
            text,
        } = change;
        if seq == 0 || seq > group.last_seq || seq < group.first_seq {
            let reason = format!(
                "'{group_name}' has no message {seq} (it keeps {} to {})",
                group.first_seq, group.last_seq
            );
            return effects.out.push(refuse(ErrorCode::BadRequest, reason));
        }
        // A deletion counts against the sender's rate as a message does.
        let checked = text.clone().unwrap_or_else(|| format!("delete {seq}"));
        let who = rate_keys(route, from);
        if let Some((code, reason)) = refusal(
            &self.limits,
            &mut self.rates,
            &who,
            std::slice::from_ref(&checked),
            now.at,
        ) {
            return effects.out.push(refuse(code, reason));
        }
        let stored = match &text {
            Some(text) => edit::edit_text(seq, text),
            None => edit::delete_text(seq),
        };
        let append = Append {
            route: route.clone(),
            req_id,
            group: group_name.clone(),
            group_id: group.id,
            first_seq: group.last_seq + 1,
            messages: vec![Message {
                seq: 0,
                ts: now.ms.max(group.last_ts),
                sender: user.clone(),
                text: stored,
            }],
            client_ids: ClientIds::One(client_id),
            import: false,
        };
        effects.query = Some(Query {
            route: route.clone(),
            req_id,
            group: group_name,
            group_id: group.id,
            kind: QueryKind::Original {
                seq,
                change: append,
                user,
                operator,
            },
        });
    }

    /// Answers a [`Query`] from what the store `found`: SEARCH's hits, UNREAD's position, or,
    /// for an EDIT or DELETE, the change to append ([`Effects::append`]) if its original may
    /// be changed by this user.
    pub fn looked_up(&mut self, query: Query, found: crate::Result<Found>, effects: &mut Effects) {
        let Query {
            route,
            req_id,
            group,
            kind,
            ..
        } = query;
        let refusal = |code: ErrorCode, reason: String| Reply::Error { code, reason };
        let reply = match (kind, found) {
            (_, Err(err)) => {
                warn!(%err, "store look-up failed");
                refusal(ErrorCode::Internal, format!("storage cannot read: {err}"))
            }
            (QueryKind::Search { .. }, Ok(Found::Hits(hits))) => Reply::Found { group, hits },
            (QueryKind::Unread { last_seq, .. }, Ok(Found::ReadSeq(read))) => Reply::Unread {
                group,
                last_seq,
                read_seq: read.min(last_seq),
            },
            (
                QueryKind::Original {
                    seq,
                    change,
                    user,
                    operator,
                },
                Ok(Found::Original(original)),
            ) => match original.filter(|m| m.seq == seq) {
                None => refusal(
                    ErrorCode::BadRequest,
                    format!("'{group}' no longer keeps message {seq}"),
                ),
                Some(m) if edit::parse(&m.text).is_some() => refusal(
                    ErrorCode::BadRequest,
                    format!("message {seq} is an edit or a deletion; change the original"),
                ),
                Some(m) if m.sender != user && !operator => refusal(
                    ErrorCode::NotMember,
                    format!(
                        "only its sender ({}) or an operator may change message {seq}",
                        m.sender
                    ),
                ),
                Some(_) => {
                    info!(%group, %user, seq, "message changed");
                    effects.append = Some(change);
                    return;
                }
            },
            (kind, Ok(found)) => {
                warn!(?kind, ?found, "bug: a look-up answered with another kind");
                refusal(ErrorCode::Internal, "look-up mismatch".to_string())
            }
        };
        effects.out.push(Outbound::Reply {
            route,
            req_id,
            reply,
        });
    }
}

/// An EDIT's or a DELETE's own fields.
struct Change {
    client_id: String,
    seq: u64,
    /// The new text; `None` deletes.
    text: Option<String>,
}
