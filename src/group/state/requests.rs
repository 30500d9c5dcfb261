//! [`State::handle`]: one request's checks and decisions.

use std::time::Instant;

use tracing::info;

use super::effects::{Append, ClientIds, Effects, Now, Outbound, Peer, Read, Route, Write};
use super::State;
use crate::group::limits::{Limits, RateLimiter};
use crate::protocol::{
    self, ErrorCode, Event, GroupEntry, Member, Message, Outgoing, Reply, Request,
};

impl State {
    /// Decides one request of `from`, received at `now`, adding what follows to `effects`:
    /// answers and pushes to [`Effects::out`], and the store work the poll loop carries out
    /// before the next request ([`Effects::writes`], [`Effects::append`], [`Effects::read`]).
    /// Memory changes at once; if the batch does not commit, [`State::restore`] undoes it.
    pub fn handle(
        &mut self,
        now: Now,
        from: Peer<'_>,
        req_id: u32,
        mut request: Request,
        effects: &mut Effects,
    ) {
        let route = from.route;
        let peer = from.key;
        if let Some(conn) = self.conns.get_mut(route) {
            conn.last_seen = now.at;
        }
        let out = &mut effects.out;
        let reply = |reply: Reply| Outbound::Reply {
            route: route.clone(),
            req_id,
            reply,
        };
        let durable = |reply: Reply| Outbound::Durable {
            route: route.clone(),
            req_id,
            reply,
        };
        let refuse = |code: ErrorCode, reason: String| reply(Reply::Error { code, reason });

        let ban = matches!(request, Request::Ban { .. });
        let (group_name, user) = match &mut request {
            Request::List => {
                let entries = self
                    .group_names()
                    .into_iter()
                    .map(|name| GroupEntry {
                        name,
                        address: self.address.clone(),
                        key: self.key.clone(),
                    })
                    .collect();
                return out.push(reply(Reply::Groups(entries)));
            }
            Request::Ping => {
                let groups = self
                    .conns
                    .get(route)
                    .map(|c| {
                        let mut g: Vec<(String, u64)> = c
                            .groups
                            .iter()
                            .map(|name| (name.clone(), self.groups[name].last_seq))
                            .collect();
                        g.sort();
                        g
                    })
                    .unwrap_or_default();
                return out.push(reply(Reply::Pong {
                    epoch: self.epoch,
                    groups,
                }));
            }
            Request::Key => return out.push(reply(Reply::Key(self.key.clone()))),
            // The poll loop answers STATUS from what only it knows (storage, health, rates).
            Request::Status => {
                let reason = "STATUS is answered by the server loop".to_string();
                return out.push(refuse(ErrorCode::BadRequest, reason));
            }
            Request::Kick { group, user } | Request::Ban { group, user } => {
                let (group, user) = (std::mem::take(group), std::mem::take(user));
                return self.remove(now, from, req_id, group, user, ban, effects);
            }
            Request::Create { .. }
            | Request::Drop { .. }
            | Request::Set { .. }
            | Request::Unban { .. }
            | Request::Import { .. } => {
                return self.administer(from, req_id, request, effects);
            }
            Request::Register { .. }
            | Request::Unregister { .. }
            | Request::Hello { .. }
            | Request::Dm { .. } => {
                let reason = format!(
                    "{} is a message server request; this is a group server",
                    request.name()
                );
                return out.push(refuse(ErrorCode::BadRequest, reason));
            }
            Request::Join { group, user }
            | Request::Leave { group, user }
            | Request::Subscribe { group, user }
            | Request::Members { group, user }
            | Request::Send { group, user, .. }
            | Request::SendBatch { group, user, .. }
            | Request::Invite { group, user, .. }
            | Request::Search { group, user, .. }
            | Request::Read { group, user, .. }
            | Request::Unread { group, user }
            | Request::Edit { group, user, .. }
            | Request::Delete { group, user, .. }
            // Moved out, not copied: the rest of the request is read below, these two are not.
            | Request::History { group, user, .. } => (std::mem::take(group), std::mem::take(user)),
        };
        if let Err(reason) =
            protocol::check_group_or_conversation(&group_name).and(protocol::check_user_name(&user))
        {
            return out.push(refuse(ErrorCode::BadRequest, reason));
        }
        if self.secure {
            match self.authenticate(&user, peer) {
                Ok(None) => {}
                Ok(Some(key)) => effects.writes.push(Write::BindUser {
                    user: user.clone(),
                    key,
                    now_ms: now.ms,
                }),
                Err((code, reason)) => return out.push(refuse(code, reason)),
            }
        }
        // A conversation is its two users' only: no one else joins, reads or writes it, member
        // or not (in secure mode, `user` was just proven to be the name's key).
        if let Some((low, high)) = protocol::conversation_users(&group_name) {
            if user != low && user != high {
                let reason = format!("'{group_name}' is the conversation of {low} and {high}");
                return out.push(refuse(ErrorCode::Unauthorized, reason));
            }
        }
        // An operator's key reads any group's history without joining it (`zms export`). Not
        // without security, where every peer on the server's host counts as an operator, so
        // that a non-member's HISTORY stays refused there.
        let operator_reads = self.secure
            && matches!(request, Request::History { .. })
            && self.operator(from).is_ok();
        let Some(group) = self.groups.get_mut(&group_name) else {
            if self.dropped.contains(&group_name) {
                // Every membership ended with the group: its members' clients stop following it.
                let reason = format!("group '{group_name}' was deleted by an operator");
                return out.push(refuse(ErrorCode::NotMember, reason));
            }
            // Conversations are not offered as an alternative to someone who mistyped.
            let mut hosted = self.group_names();
            hosted.retain(|name| !name.starts_with('@'));
            let hosted = hosted.join(", ");
            let reason = format!("no group '{group_name}' on this server (it hosts: {hosted})");
            return out.push(refuse(ErrorCode::UnknownGroup, reason));
        };
        let is_member = group.members.contains(&user) || operator_reads;
        if !is_member && !matches!(request, Request::Join { .. }) {
            let reason = format!("'{user}' is not a member of '{group_name}'");
            return out.push(refuse(ErrorCode::NotMember, reason));
        }
        if !is_member && group.banned.contains(&user) {
            let reason = format!("'{user}' is banned from '{group_name}'");
            return out.push(refuse(ErrorCode::Unauthorized, reason));
        }
        if !is_member && group.private && !peer.is_some_and(|k| group.allowed.contains(k)) {
            let reason = format!(
                "'{group_name}' is private; ask a member to invite your key ({})",
                peer.unwrap_or("none")
            );
            return out.push(refuse(ErrorCode::Unauthorized, reason));
        }

        match request {
            Request::Join { .. } | Request::Subscribe { .. }
                if !self.conns.contains_key(route)
                    && self.conns.len() >= self.limits.max_connections =>
            {
                let reason = format!(
                    "this server has its maximum of {} live connections",
                    self.limits.max_connections
                );
                out.push(refuse(ErrorCode::Limited, reason));
            }
            Request::Join { .. }
                if !is_member && group.members.len() >= self.limits.max_members =>
            {
                let reason = format!(
                    "'{group_name}' has its maximum of {} members",
                    self.limits.max_members
                );
                out.push(refuse(ErrorCode::Limited, reason));
            }
            Request::Join { .. }
                if !is_member
                    && !self.secure
                    && from.address.is_some_and(|a| {
                        !self.name_address.contains_key(&user)
                            && self.names_per_address.get(a).copied().unwrap_or(0)
                                >= self.limits.max_names_per_address
                    }) =>
            {
                let reason = format!(
                    "one address may make at most {} names members on this server",
                    self.limits.max_names_per_address
                );
                out.push(refuse(ErrorCode::Limited, reason));
            }
            Request::Join { .. } => {
                if !is_member {
                    effects.writes.push(Write::AddMember {
                        group_id: group.id,
                        user: user.clone(),
                        now_ms: now.ms,
                    });
                    group.members.insert(user.clone());
                    info!(group = %group_name, %user, "joined");
                }
                let last_seq = group.last_seq;
                if let (false, false, Some(address)) = (is_member, self.secure, from.address) {
                    self.count_name(&user, address);
                }
                self.subscribe(route, &group_name, &user, now.at);
                out.push(durable(Reply::Joined {
                    group: group_name.clone(),
                    last_seq,
                }));
                if !is_member && self.announce_presence(&group_name, now.at) {
                    out.push(presence(&group_name, &user, true));
                }
            }
            Request::Subscribe { .. } => {
                let last_seq = group.last_seq;
                self.subscribe(route, &group_name, &user, now.at);
                out.push(reply(Reply::Joined {
                    group: group_name,
                    last_seq,
                }));
            }
            Request::Leave { .. } => {
                effects.writes.push(Write::RemoveMember {
                    group_id: group.id,
                    user: user.clone(),
                });
                self.remove_member(&group_name, &user);
                info!(group = %group_name, %user, "left");
                out.push(durable(Reply::Ok));
                if self.announce_presence(&group_name, now.at) {
                    out.push(presence(&group_name, &user, false));
                }
            }
            Request::Send {
                client_id, text, ..
            } => {
                let who = rate_keys(route, from);
                let texts = std::slice::from_ref(&text);
                if let Some((code, reason)) =
                    refusal(&self.limits, &mut self.rates, &who, texts, now.at)
                {
                    return out.push(refuse(code, reason));
                }
                let ts = now.ms.max(group.last_ts);
                effects.append = Some(Append {
                    route: route.clone(),
                    req_id,
                    group: group_name,
                    group_id: group.id,
                    first_seq: group.last_seq + 1,
                    messages: vec![Message {
                        seq: 0,
                        ts,
                        sender: user,
                        text,
                    }],
                    client_ids: ClientIds::One(client_id),
                    import: false,
                });
            }
            Request::SendBatch { messages, .. } => {
                let who = rate_keys(route, from);
                let texts: Vec<&String> = messages.iter().map(|m| &m.text).collect();
                if let Some((code, reason)) =
                    refusal(&self.limits, &mut self.rates, &who, &texts, now.at)
                {
                    return out.push(refuse(code, reason));
                }
                let ts = now.ms.max(group.last_ts);
                let mut client_ids = Vec::with_capacity(messages.len());
                let messages = messages
                    .into_iter()
                    .map(|Outgoing { client_id, text }| {
                        client_ids.push(client_id);
                        Message {
                            seq: 0,
                            ts,
                            sender: user.clone(),
                            text,
                        }
                    })
                    .collect();
                effects.append = Some(Append {
                    route: route.clone(),
                    req_id,
                    group: group_name,
                    group_id: group.id,
                    first_seq: group.last_seq + 1,
                    messages,
                    client_ids: ClientIds::Each(client_ids),
                    import: false,
                });
            }
            Request::History {
                after_seq,
                since_ms,
                limit,
                ..
            } => {
                let limit = limit.min(protocol::HISTORY_PAGE_MAX);
                let last_seq = group.last_seq;
                if limit == 0 {
                    return out.push(reply(Reply::Messages {
                        group: group_name,
                        last_seq,
                        messages: Vec::new(),
                        first_seq: group.first_seq,
                    }));
                }
                effects.read = Some(Read {
                    route: route.clone(),
                    req_id,
                    group: group_name,
                    group_id: group.id,
                    last_seq,
                    first_seq: group.first_seq,
                    after_seq,
                    since_ms,
                    limit,
                });
            }
            Request::Members { .. } => {
                let mut members: Vec<Member> = group
                    .members
                    .iter()
                    .map(|name| Member {
                        name: name.clone(),
                        online: group
                            .subscribers
                            .iter()
                            .any(|r| self.conns.get(r).is_some_and(|c| &c.user == name)),
                    })
                    .collect();
                members.sort_by(|a, b| a.name.cmp(&b.name));
                out.push(reply(Reply::Members {
                    group: group_name,
                    members,
                }));
            }
            Request::Invite { key, .. } => {
                if !group.private {
                    let reason =
                        format!("'{group_name}' is not a private group; anyone may join it");
                    return out.push(refuse(ErrorCode::BadRequest, reason));
                }
                if key.is_empty() || protocol::check_key(&key).is_err() {
                    let reason = "an invitation names a key: 40 characters of Z85".to_string();
                    return out.push(refuse(ErrorCode::BadRequest, reason));
                }
                effects.writes.push(Write::AddInvite {
                    group_id: group.id,
                    key: key.clone(),
                    now_ms: now.ms,
                });
                info!(group = %group_name, %user, invited = %key, "invited");
                group.allowed.insert(key);
                out.push(durable(Reply::Ok));
            }
            Request::Search { .. }
            | Request::Read { .. }
            | Request::Unread { .. }
            | Request::Edit { .. }
            | Request::Delete { .. } => {
                self.chat(now, from, req_id, group_name, user, request, effects)
            }
            Request::List
            | Request::Ping
            | Request::Key
            | Request::Status
            | Request::Kick { .. }
            | Request::Ban { .. }
            | Request::Create { .. }
            | Request::Drop { .. }
            | Request::Set { .. }
            | Request::Unban { .. }
            | Request::Import { .. }
            | Request::Register { .. }
            | Request::Unregister { .. }
            | Request::Hello { .. }
            | Request::Dm { .. } => {
                unreachable!("bug: answered above")
            }
        }
    }

    /// Checks that `user` is the name of the key `peer` on this server, binding the name to the
    /// key the first time it is used, up to the key's cap of names: returns the key to store
    /// the binding under when it is new.
    fn authenticate(
        &mut self,
        user: &str,
        peer: Option<&str>,
    ) -> Result<Option<String>, (ErrorCode, String)> {
        let unauthorized = |reason: String| (ErrorCode::Unauthorized, reason);
        let peer = peer.ok_or_else(|| unauthorized("this group server requires CURVE".into()))?;
        match self.users.get(user) {
            Some(key) if key == peer => Ok(None),
            Some(_) => Err(unauthorized(format!(
                "the name '{user}' belongs to another key on this server"
            ))),
            None => {
                let max = self.limits.max_names_per_key;
                if self.users.values().filter(|k| *k == peer).count() >= max {
                    let reason = format!("one key may hold at most {max} names on this server");
                    return Err((ErrorCode::Limited, reason));
                }
                info!(%user, key = %peer, "name bound to key");
                self.users.insert(user.to_string(), peer.to_string());
                Ok(Some(peer.to_string()))
            }
        }
    }
}

/// Why `user` may not send messages of these texts now, if so: a text over the limit
/// (TOO_LARGE), an empty text or one with control characters (BAD_REQUEST), or more than
/// the user's rate allows (LIMITED). A batch is refused whole.
pub(super) fn refusal<T: AsRef<str>>(
    limits: &Limits,
    rates: &mut RateLimiter,
    who: &[String],
    texts: &[T],
    now: Instant,
) -> Option<(ErrorCode, String)> {
    let max = limits.max_text;
    if let Some((i, text)) = texts
        .iter()
        .map(AsRef::as_ref)
        .enumerate()
        .find(|(_, t)| t.len() > max)
    {
        let which = if texts.len() > 1 {
            format!("message {} of the batch", i + 1)
        } else {
            "message".to_string()
        };
        let reason = format!("{which} is {} bytes; the limit is {max}", text.len());
        return Some((ErrorCode::TooLarge, reason));
    }
    for (i, text) in texts.iter().map(AsRef::as_ref).enumerate() {
        if let Err(reason) = protocol::check_text(text) {
            let reason = match texts.len() {
                1 => reason,
                _ => format!("message {} of the batch: {reason}", i + 1),
            };
            return Some((ErrorCode::BadRequest, reason));
        }
    }
    let rate = limits.rate?;
    if rates.allow_all(who, rate, texts.len(), now) {
        return None;
    }
    let reason = if texts.len() as f64 > f64::from(rate) * 2.0 {
        format!(
            "a batch of {} is more than this server allows at once ({}); send fewer at a time",
            texts.len(),
            u64::from(rate) * 2
        )
    } else {
        let per = if who.len() > 1 {
            "connection and per address"
        } else {
            "key"
        };
        format!("slow down: at most {rate} messages a second per {per}")
    };
    Some((ErrorCode::Limited, reason))
}

/// The buckets a sender's messages are counted in: its key with security (a key may use any
/// number of names); otherwise its connection and, apart, its IP address (names are free, and
/// a new connection is cheap).
pub(super) fn rate_keys(route: &Route, from: Peer<'_>) -> Vec<String> {
    if let Some(key) = from.key {
        return vec![format!("key {key}")];
    }
    let mut keys = vec![format!("conn {}", crate::transport::hex(route))];
    keys.extend(from.address.map(|a| format!("addr {a}")));
    keys
}

/// A PRESENCE push for the group's subscribers.
pub(super) fn presence(group: &str, user: &str, joined: bool) -> Outbound {
    Outbound::Event {
        group: group.to_string(),
        event: Event::Presence {
            group: group.to_string(),
            user: user.to_string(),
            joined,
        },
    }
}
