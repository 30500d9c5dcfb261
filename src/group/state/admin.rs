//! Administration requests (KICK, BAN): allowed to operator keys with security, and to loopback
//! peers without it, since an open server has no other way to tell its operator apart.

use std::net::IpAddr;

use tracing::{info, warn};

use super::effects::{Effects, Now, Outbound, Peer, Write};
use super::requests::presence;
use super::State;
use crate::protocol::{self, ErrorCode, Reply};

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
                warn!(group = %group_name, %user, %reason, "{what} refused");
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
            info!(group = %group_name, %user, by = %operator, "banned");
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
        info!(group = %group_name, %user, by = %operator, "kicked");
        effects.out.push(Outbound::Durable {
            route: from.route.clone(),
            req_id,
            reply: Reply::Ok,
        });
        if self.announce_presence(&group_name, now.at) {
            effects.out.push(presence(&group_name, &user, false));
        }
    }

    /// Who the operator making a request is (their key, or their loopback address), or why
    /// the peer is not one.
    fn operator(&self, from: Peer<'_>) -> Result<String, String> {
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
