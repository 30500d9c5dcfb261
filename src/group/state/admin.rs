//! Administration requests (KICK, BAN, UNBAN, CREATE, DROP, SET, IMPORT): allowed to operator
//! keys with security, and to loopback peers without it, since an open server has no other way
//! to tell its operator apart. Each is logged as one line with its group, user, peer and code.

use std::net::IpAddr;

use tracing::{info, warn};

use super::effects::{
    unwritable, Append, Change, ClientIds, Effects, GroupChange, Now, Outbound, Peer, Write,
};
use super::requests::presence;
use super::State;
use crate::group::storage::StoredGroup;
use crate::protocol::{self, ErrorCode, Imported, Message, Reply, Request};

impl State {
    /// KICK and BAN: removes `user` from `group` as LEAVE would, for an operator; a BAN also
    /// refuses the user's JOINs from now on, and may name a user who is not a member. The
    /// removed user's clients find out at their next heartbeat (the server no longer follows
    /// them).
    #[allow(clippy::too_many_arguments)] // one request's parts, as State::handle has them
    pub(super) fn remove(
        &mut self,
        now: Now,
        from: Peer<'_>,
        req_id: u32,
        group_name: String,
        user: String,
        ban: bool,
        effects: &mut Effects,
    ) {
        let what = if ban { "BAN" } else { "KICK" };
        let answer = |reply: Reply| Outbound::Reply {
            route: from.route.clone(),
            req_id,
            reply,
        };
        let refuse = |code: ErrorCode, reason: String| answer(Reply::Error { code, reason });
        let operator = match self.operator(from) {
            Ok(operator) => operator,
            Err(reason) => {
                let peer = peer_label(from);
                warn!(group = %group_name, %user, %peer, code = "UNAUTHORIZED", %reason, "{what} refused");
                return effects.out.push(refuse(ErrorCode::Unauthorized, reason));
            }
        };
        if let Err(reason) =
            protocol::check_group_name(&group_name).and(protocol::check_user_name(&user))
        {
            return effects.out.push(refuse(ErrorCode::BadRequest, reason));
        }
        let Some(group) = self.groups.get_mut(&group_name) else {
            let hosted = self.group_names().join(", ");
            let reason = format!("no group '{group_name}' on this server (it hosts: {hosted})");
            return effects.out.push(refuse(ErrorCode::UnknownGroup, reason));
        };
        let is_member = group.members.contains(&user);
        if !is_member && !ban {
            let reason = format!("'{user}' is not a member of '{group_name}'");
            return effects.out.push(refuse(ErrorCode::NotMember, reason));
        }
        if ban {
            effects.writes.push(Write::AddBan {
                group_id: group.id,
                user: user.clone(),
                now_ms: now.ms,
            });
            group.banned.insert(user.clone());
            info!(group = %group_name, %user, peer = %operator, code = "OK", "banned");
        }
        if !is_member {
            return effects.out.push(Outbound::Durable {
                route: from.route.clone(),
                req_id,
                reply: Reply::Ok,
            });
        }
        effects.writes.push(Write::RemoveMember {
            group_id: group.id,
            user: user.clone(),
        });
        self.remove_member(&group_name, &user);
        info!(group = %group_name, %user, peer = %operator, code = "OK", "kicked");
        effects.out.push(Outbound::Durable {
            route: from.route.clone(),
            req_id,
            reply: Reply::Ok,
        });
        if self.announce_presence(&group_name, now.at) {
            effects.out.push(presence(&group_name, &user, false));
        }
    }

    /// UNBAN, IMPORT, and the group changes CREATE, DROP and SET (carried out by the store,
    /// then answered by [`State::changed`]).
    pub(super) fn administer(
        &mut self,
        from: Peer<'_>,
        req_id: u32,
        request: Request,
        effects: &mut Effects,
    ) {
        let what = request.name();
        let (group_name, user) = match &request {
            Request::Unban { group, user } => (group.clone(), user.clone()),
            Request::Create { group, .. }
            | Request::Drop { group }
            | Request::Set { group, .. }
            | Request::Import { group, .. } => (group.clone(), String::new()),
            _ => unreachable!("bug: not an administration request"),
        };
        let peer = peer_label(from);
        let refusal = |code: ErrorCode, reason: String| {
            warn!(group = %group_name, %user, %peer, code = code.name(), %reason, "{what} refused");
            Outbound::Reply {
                route: from.route.clone(),
                req_id,
                reply: Reply::Error { code, reason },
            }
        };
        let Effects {
            out,
            writes,
            append,
            change: change_out,
            ..
        } = effects;
        let operator = match self.operator(from) {
            Ok(operator) => operator,
            Err(reason) => return out.push(refusal(ErrorCode::Unauthorized, reason)),
        };
        let names = protocol::check_group_name(&group_name).and_then(|()| match user.is_empty() {
            true => Ok(()),
            false => protocol::check_user_name(&user),
        });
        if let Err(reason) = names {
            return out.push(refusal(ErrorCode::BadRequest, reason));
        }
        let hosted = self.groups.get(&group_name).map(|g| g.id);
        let change = |what: GroupChange| Change {
            route: from.route.clone(),
            req_id,
            operator: operator.clone(),
            what,
        };
        let unknown = || {
            let hosted = self.group_names().join(", ");
            format!("no group '{group_name}' on this server (it hosts: {hosted})")
        };
        match (request, hosted) {
            (Request::Create { group, private }, None) => {
                if self.groups.len() >= protocol::MAX_GROUPS_PER_SERVER {
                    let most = protocol::MAX_GROUPS_PER_SERVER;
                    let reason = format!("a group server hosts at most {most} groups");
                    return out.push(refusal(ErrorCode::Limited, reason));
                }
                let name = group;
                *change_out = Some(change(GroupChange::Create { name, private }));
            }
            (Request::Create { .. }, Some(_)) => {
                let reason = format!("group '{group_name}' exists already on this server");
                out.push(refusal(ErrorCode::BadRequest, reason))
            }
            (Request::Drop { group }, Some(group_id)) => {
                let name = group;
                *change_out = Some(change(GroupChange::Drop { name, group_id }));
            }
            (Request::Set { group, private }, Some(group_id)) => {
                let name = group;
                *change_out = Some(change(GroupChange::Set {
                    name,
                    group_id,
                    private,
                }));
            }
            (Request::Unban { .. }, Some(group_id)) => {
                let Some(group) = self.groups.get_mut(&group_name) else {
                    return;
                };
                if !group.banned.remove(&user) {
                    let reason = format!("'{user}' is not banned from '{group_name}'");
                    return out.push(refusal(ErrorCode::BadRequest, reason));
                }
                writes.push(Write::RemoveBan {
                    group_id,
                    user: user.clone(),
                });
                info!(group = %group_name, %user, %peer, code = "OK", "unbanned");
                out.push(Outbound::Durable {
                    route: from.route.clone(),
                    req_id,
                    reply: Reply::Ok,
                });
            }
            (Request::Import { messages, .. }, Some(group_id)) => {
                let group = &self.groups[&group_name];
                let (last_seq, last_ts) = (group.last_seq, group.last_ts);
                if let Err(reason) = check_import(&messages, last_seq, last_ts) {
                    return out.push(refusal(ErrorCode::BadRequest, reason));
                }
                let first_seq = last_seq + 1;
                let count = messages.len();
                let (messages, client_ids): (Vec<Message>, Vec<String>) = messages
                    .into_iter()
                    .map(|m| (m.message, m.client_id))
                    .unzip();
                info!(group = %group_name, user = "", %peer, code = "OK", first_seq, count, "imported");
                *append = Some(Append {
                    route: from.route.clone(),
                    req_id,
                    group: group_name,
                    group_id,
                    first_seq,
                    messages,
                    client_ids: ClientIds::Each(client_ids),
                    import: true,
                });
            }
            (_, None) => out.push(refusal(ErrorCode::UnknownGroup, unknown())),
            _ => unreachable!("bug: not an administration request"),
        }
    }

    /// Answers a [`Change`] the store has carried out (`stored`: the group it created and this
    /// server hosts now, if any) or failed to, and follows it in memory.
    pub fn changed(
        &mut self,
        change: Change,
        stored: crate::Result<Option<StoredGroup>>,
        out: &mut Vec<Outbound>,
    ) {
        let Change {
            route,
            req_id,
            operator,
            what,
        } = change;
        let command = match what {
            GroupChange::Create { .. } => "CREATE",
            GroupChange::Drop { .. } => "DROP",
            GroupChange::Set { .. } => "SET",
        };
        let group = what.name().to_string();
        let stored = match stored {
            Ok(stored) => stored,
            Err(err) => {
                let reply = match err {
                    crate::Error::Input(reason) => Reply::Error {
                        code: ErrorCode::BadRequest,
                        reason,
                    },
                    err => unwritable(&err.to_string()),
                };
                if let Reply::Error { code, reason } = &reply {
                    warn!(%group, user = "", peer = %operator, code = code.name(), %reason, "{command} refused");
                }
                return out.push(Outbound::Reply {
                    route,
                    req_id,
                    reply,
                });
            }
        };
        match what {
            GroupChange::Create { private, .. } => {
                if let Some(stored) = stored {
                    self.host(stored, private);
                }
                self.dropped.remove(&group);
                info!(%group, user = "", peer = %operator, code = "OK", private, "group created");
            }
            GroupChange::Drop { group_id, .. } => {
                let members: Vec<String> = self
                    .groups
                    .get(&group)
                    .map(|g| g.members.iter().cloned().collect())
                    .unwrap_or_default();
                self.unhost(group_id);
                self.dropped.insert(group.clone());
                for user in members {
                    if !self.groups.values().any(|g| g.members.contains(&user)) {
                        self.uncount_name(&user);
                    }
                }
                info!(%group, user = "", peer = %operator, code = "OK", "group dropped");
            }
            GroupChange::Set { private, .. } => {
                let secure = self.secure;
                let allow = self.allow.clone();
                if let Some(g) = self.groups.get_mut(&group) {
                    g.private = private && secure;
                    // Invitations come back with the next restore of names and invitations.
                    g.allowed = allow.into_iter().collect();
                }
                info!(%group, user = "", peer = %operator, code = "OK", private, "group set");
            }
        }
        self.groups_changed = true;
        out.push(Outbound::Reply {
            route,
            req_id,
            reply: Reply::Ok,
        });
    }

    /// Whether groups were created, dropped or changed since the last call: the poll loop then
    /// registers the new list at once and reads invitations back.
    pub fn take_groups_changed(&mut self) -> bool {
        std::mem::take(&mut self.groups_changed)
    }

    /// Who the operator making a request is (their key, or their loopback address), or why
    /// the peer is not one.
    pub(super) fn operator(&self, from: Peer<'_>) -> Result<String, String> {
        if self.secure {
            return match from.key {
                Some(key) if self.operators.iter().any(|k| k == key) => Ok(key.to_string()),
                key => Err(format!(
                    "only an operator key may do this; start the group server with --operator {}",
                    key.unwrap_or("KEY")
                )),
            };
        }
        match from.address.map(str::parse::<IpAddr>) {
            Some(Ok(ip)) if ip.to_canonical().is_loopback() => Ok(ip.to_string()),
            _ => Err("without --secure, only a client on this host may do this".to_string()),
        }
    }
}

/// How an administration request's peer is named in the log: its key, else its address.
fn peer_label(from: Peer<'_>) -> String {
    from.key
        .or(from.address)
        .map_or_else(|| crate::transport::hex(from.route), str::to_string)
}

/// Why an IMPORT's messages cannot follow a group whose last message is `last_seq` at
/// `last_ts`: they must continue its seqs without a gap, in order, with times that never go
/// back (history is searched by time), from valid senders, with texts within the limit.
fn check_import(messages: &[Imported], last_seq: u64, last_ts: i64) -> Result<(), String> {
    let (mut seq, mut ts) = (last_seq, last_ts);
    for m in messages {
        let m = &m.message;
        if m.seq != seq + 1 {
            return Err(match seq == last_seq {
                true => format!(
                    "the group holds messages up to seq {last_seq}, so an import continues at \
                     seq {}; this one starts at seq {}",
                    last_seq + 1,
                    m.seq
                ),
                false => format!("not contiguous: seq {} follows seq {seq}", m.seq),
            });
        }
        if m.ts < ts {
            return Err(format!("seq {} goes back in time ({} < {ts})", m.seq, m.ts));
        }
        protocol::check_user_name(&m.sender).map_err(|e| format!("seq {}: {e}", m.seq))?;
        if m.text.len() > protocol::MAX_TEXT {
            return Err(format!(
                "seq {}: text over {} bytes",
                m.seq,
                protocol::MAX_TEXT
            ));
        }
        (seq, ts) = (m.seq, m.ts);
    }
    Ok(())
}
