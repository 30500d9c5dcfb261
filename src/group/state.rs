//! What a group server knows and decides: groups, members, live subscriptions, sequencing.
//!
//! No sockets here: [`State::handle`] turns one request into [`Outbound`] frames and store
//! writes; the poll loop in `group/mod.rs` sends them once the batch's transaction commits.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::limits::{Limits, RateLimiter};
use super::store::{Appended, Store};
use crate::protocol::codec;
use crate::protocol::{
    self, Acked, ErrorCode, Event, GroupEntry, Member, Message, Outgoing, Reply, Request,
};
use crate::Result;

/// A peer's ZeroMQ routing id.
pub type Route = Vec<u8>;

/// Who sent a request, beyond its routing id.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sender<'a> {
    /// The peer's CURVE public key (Z85), as ZAP authenticated it; `None` without security.
    pub key: Option<&'a str>,
    /// The peer's IP address, without security (names per address, the send rate).
    pub address: Option<&'a str>,
}

/// A frame to send once the current batch is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// An answer that is true whatever happens to the batch.
    Reply { route: Route, frame: Vec<u8> },
    /// An answer that is true only if the batch commits; otherwise it becomes an
    /// UNAVAILABLE error for `req_id`.
    Durable {
        route: Route,
        req_id: u32,
        frame: Vec<u8>,
    },
    /// An event for every live subscriber of `group`; dropped if the batch fails.
    Push { group: String, frame: Vec<u8> },
    /// New messages (one for a SEND, a SENDS's new ones) for every live subscriber of
    /// `group`, sent as MSG or, with the batch's other new messages of the group, as MSGS
    /// ([`super::fanout`]); dropped if the batch fails.
    Messages {
        group: String,
        messages: Vec<Message>,
    },
}

impl Outbound {
    /// Whether this goes to a group's subscribers rather than answering one request.
    pub fn is_push(&self) -> bool {
        self.group().is_some()
    }

    /// The group whose subscribers a push goes to; `None` for an answer.
    pub fn group(&self) -> Option<&str> {
        match self {
            Outbound::Push { group, .. } | Outbound::Messages { group, .. } => Some(group),
            Outbound::Reply { .. } | Outbound::Durable { .. } => None,
        }
    }
}

/// One hosted group.
#[derive(Debug)]
struct Group {
    id: i64,
    last_seq: u64,
    last_ts: i64,
    members: HashSet<String>,
    /// Connections that receive MSG events live.
    subscribers: HashSet<Route>,
    /// Only keys in `allowed` may join (members stay members).
    private: bool,
    /// Keys allowed into a private group: the server's allow list and the invited.
    allowed: HashSet<String>,
}

/// One connection that subscribes to at least one group.
#[derive(Debug)]
struct Conn {
    user: String,
    groups: HashSet<String>,
    last_seen: Instant,
}

/// All of a group server's state.
pub struct State {
    groups: HashMap<String, Group>,
    conns: HashMap<Route, Conn>,
    /// Identifies this run of the server; a client that sees it change knows its
    /// subscriptions were lost and makes them again.
    epoch: u64,
    /// The `HOST:PORT` users reach this server at, for LIST.
    address: String,
    /// This server's CURVE public key (Z85), or empty without security; for LIST and KEY.
    key: String,
    /// Set when a store write failed inside the open batch: the batch must not commit.
    batch_failed: Option<String>,
    /// Requests must come over CURVE, and each user name belongs to one key.
    secure: bool,
    /// User name → the key it is bound to (with security).
    users: HashMap<String, String>,
    /// Keys the operator allowed into every private group.
    allow: Vec<String>,
    /// Without security: user name → the IP address that made it a member, for names made
    /// members since the server started.
    name_address: HashMap<String, String>,
    /// Without security: how many names of `name_address` each address made members.
    names_per_address: HashMap<String, usize>,
    limits: Limits,
    rates: RateLimiter,
}

impl State {
    /// Loads (creating if new) the named groups from the store.
    ///
    /// # Errors
    /// The store's error.
    pub fn load(store: &mut Store, names: &[String], address: String, epoch: u64) -> Result<State> {
        let mut groups = HashMap::new();
        for name in names {
            let g = store.ensure_group(name, crate::time::now_ms())?;
            info!(group = %name, last_seq = g.last_seq, members = g.members.len(), "group loaded");
            groups.insert(
                name.clone(),
                Group {
                    id: g.id,
                    last_seq: g.last_seq,
                    last_ts: g.last_ts,
                    members: g.members.into_iter().collect(),
                    subscribers: HashSet::new(),
                    private: false,
                    allowed: HashSet::new(),
                },
            );
        }
        Ok(State {
            groups,
            conns: HashMap::new(),
            epoch,
            address,
            key: String::new(),
            batch_failed: None,
            secure: false,
            users: HashMap::new(),
            allow: Vec::new(),
            name_address: HashMap::new(),
            names_per_address: HashMap::new(),
            limits: Limits::default(),
            rates: RateLimiter::default(),
        })
    }

    /// Sets the limits this server enforces.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Turns security on: requests must carry an authenticated key, names bind to keys, and
    /// the `private` groups admit only `allow`ed or invited keys.
    ///
    /// # Errors
    /// The store's error.
    pub fn secure(
        &mut self,
        store: &mut Store,
        key: String,
        private: &[String],
        allow: &[String],
    ) -> Result<()> {
        self.key = key;
        self.secure = true;
        self.allow = allow.to_vec();
        for name in private {
            if let Some(group) = self.groups.get_mut(name) {
                group.private = true;
            }
        }
        self.load_keys(store)
    }

    /// Reads names and invitations from the store (at start, and after a failed batch).
    fn load_keys(&mut self, store: &mut Store) -> Result<()> {
        self.users = store.users()?.into_iter().collect();
        for group in self.groups.values_mut().filter(|g| g.private) {
            group.allowed = self
                .allow
                .iter()
                .cloned()
                .chain(store.invites(group.id)?)
                .collect();
        }
        Ok(())
    }

    /// This server's public key (empty without security).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Names of the hosted groups, sorted.
    pub fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.groups.keys().cloned().collect();
        names.sort();
        names
    }

    /// The connections subscribed to `group`.
    pub fn subscribers(&self, group: &str) -> impl Iterator<Item = &Route> {
        self.groups
            .get(group)
            .into_iter()
            .flat_map(|g| g.subscribers.iter())
    }

    /// Answers one request, appending what to send to `out`.
    pub fn handle(
        &mut self,
        store: &mut Store,
        route: &Route,
        req_id: u32,
        mut request: Request,
        sender: Sender<'_>,
        out: &mut Vec<Outbound>,
    ) {
        let peer = sender.key;
        let now = Instant::now();
        if let Some(conn) = self.conns.get_mut(route) {
            conn.last_seen = now;
        }
        let reply = |reply: Reply| Outbound::Reply {
            route: route.clone(),
            frame: codec::encode_reply(req_id, &reply),
        };
        let durable = |reply: Reply| Outbound::Durable {
            route: route.clone(),
            req_id,
            frame: codec::encode_reply(req_id, &reply),
        };
        let refuse = |code: ErrorCode, reason: String| reply(Reply::Error { code, reason });

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
            Request::Status => unreachable!("bug: the server answers STATUS itself"),
            Request::Register { .. } | Request::Unregister { .. } | Request::Hello { .. } => {
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
            // Moved out, not copied: the rest of the request is read below, these two are not.
            | Request::History { group, user, .. } => (std::mem::take(group), std::mem::take(user)),
        };
        if let Err(reason) =
            protocol::check_group_name(&group_name).and(protocol::check_user_name(&user))
        {
            return out.push(refuse(ErrorCode::BadRequest, reason));
        }
        if self.secure {
            if let Err((code, reason)) = self.authenticate(store, &user, peer) {
                return out.push(refuse(code, reason));
            }
        }
        let Some(group) = self.groups.get_mut(&group_name) else {
            let hosted = self.group_names().join(", ");
            let reason = format!("no group '{group_name}' on this server (it hosts: {hosted})");
            return out.push(refuse(ErrorCode::UnknownGroup, reason));
        };
        let is_member = group.members.contains(&user);
        if !is_member && !matches!(request, Request::Join { .. }) {
            let reason = format!("'{user}' is not a member of '{group_name}'");
            return out.push(refuse(ErrorCode::NotMember, reason));
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
                    && sender.address.is_some_and(|a| {
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
                    if let Err(err) = store.add_member(group.id, &user, crate::time::now_ms()) {
                        return out.push(self.write_failed(route, req_id, &err.to_string()));
                    }
                    group.members.insert(user.clone());
                    info!(group = %group_name, %user, "joined");
                }
                let last_seq = group.last_seq;
                if let (false, false, Some(address)) = (is_member, self.secure, sender.address) {
                    self.count_name(&user, address);
                }
                self.subscribe(route, &group_name, &user, now);
                out.push(durable(Reply::Joined {
                    group: group_name.clone(),
                    last_seq,
                }));
                if !is_member && self.announce_presence(&group_name, now) {
                    out.push(presence(&group_name, &user, true));
                }
            }
            Request::Subscribe { .. } => {
                let last_seq = group.last_seq;
                self.subscribe(route, &group_name, &user, now);
                out.push(reply(Reply::Joined {
                    group: group_name,
                    last_seq,
                }));
            }
            Request::Leave { .. } => {
                if let Err(err) = store.remove_member(group.id, &user) {
                    return out.push(self.write_failed(route, req_id, &err.to_string()));
                }
                group.members.remove(&user);
                info!(group = %group_name, %user, "left");
                // Every connection of that user stops receiving the group.
                let routes: Vec<Route> = group
                    .subscribers
                    .iter()
                    .filter(|r| self.conns.get(*r).is_some_and(|c| c.user == user))
                    .cloned()
                    .collect();
                for r in routes {
                    self.unsubscribe(&r, &group_name);
                }
                if !self.groups.values().any(|g| g.members.contains(&user)) {
                    self.uncount_name(&user);
                }
                out.push(durable(Reply::Ok));
                if self.announce_presence(&group_name, now) {
                    out.push(presence(&group_name, &user, false));
                }
            }
            Request::Send {
                client_id, text, ..
            } => {
                let now_ms = crate::time::now_ms();
                let texts = std::slice::from_ref(&text);
                let who = rate_keys(route, sender);
                if let Some((code, reason)) =
                    refusal(&self.limits, &mut self.rates, &who, texts, now)
                {
                    return out.push(refuse(code, reason));
                }
                match append(store, group, user, &client_id, text, now_ms) {
                    Ok((acked, message)) => {
                        out.push(durable(Reply::Ack {
                            seq: acked.seq,
                            ts: acked.ts,
                            duplicate: acked.duplicate,
                        }));
                        if let Some(message) = message {
                            out.push(Outbound::Messages {
                                group: group_name,
                                messages: vec![message],
                            });
                        }
                    }
                    Err(err) => out.push(self.write_failed(route, req_id, &err.to_string())),
                }
            }
            Request::SendBatch { messages, .. } => {
                let now_ms = crate::time::now_ms();
                let texts: Vec<&String> = messages.iter().map(|m| &m.text).collect();
                let who = rate_keys(route, sender);
                if let Some((code, reason)) =
                    refusal(&self.limits, &mut self.rates, &who, &texts, now)
                {
                    return out.push(refuse(code, reason));
                }
                let mut acks = Vec::with_capacity(messages.len());
                let mut new = Vec::with_capacity(messages.len());
                for Outgoing { client_id, text } in messages {
                    match append(store, group, user.clone(), &client_id, text, now_ms) {
                        Ok((acked, message)) => {
                            acks.push(acked);
                            new.extend(message);
                        }
                        // The batch's transaction will not commit: nothing of it is stored.
                        Err(err) => {
                            return out.push(self.write_failed(route, req_id, &err.to_string()))
                        }
                    }
                }
                out.push(durable(Reply::Acks(acks)));
                if !new.is_empty() {
                    out.push(Outbound::Messages {
                        group: group_name,
                        messages: new,
                    });
                }
            }
            Request::History {
                after_seq,
                since_ms,
                limit,
                ..
            } => {
                let limit = limit.min(protocol::HISTORY_PAGE_MAX);
                let last_seq = group.last_seq;
                let result = if limit == 0 {
                    Ok(Vec::new())
                } else {
                    store.fetch(group.id, after_seq, since_ms, limit)
                };
                out.push(match result {
                    Ok(mut messages) => {
                        keep_within(&mut messages, protocol::MAX_REPLY);
                        reply(Reply::Messages {
                            group: group_name,
                            last_seq,
                            messages,
                        })
                    }
                    Err(err) => {
                        warn!(%err, "history read failed");
                        refuse(ErrorCode::Internal, format!("storage cannot read: {err}"))
                    }
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
                if let Err(err) = store.add_invite(group.id, &key, crate::time::now_ms()) {
                    return out.push(self.write_failed(route, req_id, &err.to_string()));
                }
                info!(group = %group_name, %user, invited = %key, "invited");
                group.allowed.insert(key);
                out.push(durable(Reply::Ok));
            }
            Request::List
            | Request::Ping
            | Request::Key
            | Request::Status
            | Request::Register { .. }
            | Request::Unregister { .. }
            | Request::Hello { .. } => {
                unreachable!("bug: answered above")
            }
        }
    }

    /// Checks that `user` is the name of the key `peer` on this server, binding the name to the
    /// key the first time it is used, up to the key's cap of names.
    fn authenticate(
        &mut self,
        store: &mut Store,
        user: &str,
        peer: Option<&str>,
    ) -> Result<(), (ErrorCode, String)> {
        let unauthorized = |reason: String| (ErrorCode::Unauthorized, reason);
        let peer = peer.ok_or_else(|| unauthorized("this group server requires CURVE".into()))?;
        match self.users.get(user) {
            Some(key) if key == peer => Ok(()),
            Some(_) => Err(unauthorized(format!(
                "the name '{user}' belongs to another key on this server"
            ))),
            None => {
                let max = self.limits.max_names_per_key;
                if self.users.values().filter(|k| *k == peer).count() >= max {
                    let reason = format!("one key may hold at most {max} names on this server");
                    return Err((ErrorCode::Limited, reason));
                }
                store
                    .bind_user(user, peer, crate::time::now_ms())
                    .map_err(|e| unauthorized(format!("cannot record the name '{user}': {e}")))?;
                info!(%user, key = %peer, "name bound to key");
                self.users.insert(user.to_string(), peer.to_string());
                Ok(())
            }
        }
    }

    /// Counts `user`, just made a member, against `address` (once, whatever its groups).
    fn count_name(&mut self, user: &str, address: &str) {
        if !self.name_address.contains_key(user) {
            self.name_address
                .insert(user.to_string(), address.to_string());
            *self
                .names_per_address
                .entry(address.to_string())
                .or_default() += 1;
        }
    }

    /// Stops counting `user`, a member of no group any more, against its address.
    fn uncount_name(&mut self, user: &str) {
        let Some(address) = self.name_address.remove(user) else {
            return;
        };
        if let Some(n) = self.names_per_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.names_per_address.remove(&address);
            }
        }
    }

    /// Whether a change of `group`'s members may be pushed now: each PRESENCE costs a push to
    /// every subscriber, so a storm of joins would cost the square of its size.
    fn announce_presence(&mut self, group: &str, now: Instant) -> bool {
        match self.limits.presence_rate {
            Some(rate) => self.rates.allow(&format!("presence {group}"), rate, now),
            None => true,
        }
    }

    /// Marks the open batch as failed and answers with an UNAVAILABLE error.
    fn write_failed(&mut self, route: &Route, req_id: u32, err: &str) -> Outbound {
        warn!(%err, "storage write failed");
        self.batch_failed = Some(err.to_string());
        Outbound::Reply {
            route: route.clone(),
            frame: codec::encode_reply(req_id, &unwritable(err)),
        }
    }

    /// Ends the open batch: commits it, or on any failure rolls it back, turns its
    /// [`Outbound::Durable`] answers into errors, drops its pushes, and reloads sequencing and
    /// membership from the store so memory agrees with disk again.
    pub fn settle(&mut self, store: &mut Store, batch: &mut Vec<Outbound>) {
        let failure = match self.batch_failed.take() {
            Some(reason) => {
                store.rollback();
                Some(reason)
            }
            None => store.commit().err().map(|e| e.to_string()),
        };
        let Some(reason) = failure else { return };
        warn!(%reason, "batch not stored; its senders get an error");
        let error = unwritable(&reason);
        batch.retain(|o| !o.is_push());
        for o in batch.iter_mut() {
            if let Outbound::Durable { route, req_id, .. } = o {
                *o = Outbound::Reply {
                    route: std::mem::take(route),
                    frame: codec::encode_reply(*req_id, &error),
                };
            }
        }
        for group in self.groups.values_mut() {
            match store.load_group(group.id) {
                Ok(stored) => {
                    group.last_seq = stored.last_seq;
                    group.last_ts = stored.last_ts;
                    group.members = stored.members.into_iter().collect();
                }
                Err(err) => warn!(%err, "cannot reload group after a failed batch"),
            }
        }
        if self.secure {
            if let Err(err) = self.load_keys(store) {
                warn!(%err, "cannot reload names and invitations after a failed batch");
            }
        }
        // A JOIN that did not commit must not leave its connection subscribed.
        let stale: Vec<(Route, String)> = self
            .conns
            .iter()
            .flat_map(|(route, conn)| conn.groups.iter().map(move |g| (route, g, &conn.user)))
            .filter(|(_, g, user)| {
                !self
                    .groups
                    .get(*g)
                    .is_some_and(|grp| grp.members.contains(*user))
            })
            .map(|(route, g, _)| (route.clone(), g.clone()))
            .collect();
        for (route, group) in stale {
            self.unsubscribe(&route, &group);
        }
    }

    fn subscribe(&mut self, route: &Route, group: &str, user: &str, now: Instant) {
        let conn = self.conns.entry(route.clone()).or_insert_with(|| Conn {
            user: user.to_string(),
            groups: HashSet::new(),
            last_seen: now,
        });
        conn.user = user.to_string();
        conn.groups.insert(group.to_string());
        if let Some(g) = self.groups.get_mut(group) {
            g.subscribers.insert(route.clone());
        }
    }

    fn unsubscribe(&mut self, route: &Route, group: &str) {
        if let Some(g) = self.groups.get_mut(group) {
            g.subscribers.remove(route);
        }
        if let Some(conn) = self.conns.get_mut(route) {
            conn.groups.remove(group);
            if conn.groups.is_empty() {
                self.conns.remove(route);
            }
        }
    }

    /// Forgets a connection (gone, or silent too long); its memberships stay.
    pub fn drop_conn(&mut self, route: &Route) {
        if let Some(conn) = self.conns.remove(route) {
            for g in conn.groups {
                if let Some(group) = self.groups.get_mut(&g) {
                    group.subscribers.remove(route);
                }
            }
        }
    }

    /// Forgets connections silent for longer than `ttl`; returns how many.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        self.rates.forget_idle(now, Duration::from_secs(60));
        let silent: Vec<Route> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_seen) > ttl)
            .map(|(r, _)| r.clone())
            .collect();
        for route in &silent {
            info!(user = %self.conns[route].user, "connection silent; its subscriptions are dropped");
            self.drop_conn(route);
        }
        silent.len()
    }

    /// Number of connections with live subscriptions.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

/// The answer to a change the store could not write: UNAVAILABLE, nothing of it stored.
pub fn unwritable(err: &str) -> Reply {
    Reply::Error {
        code: ErrorCode::Unavailable,
        reason: format!("storage cannot write: {err}"),
    }
}

/// Why `user` may not send messages of these texts now, if so: a text over the limit
/// (TOO_LARGE), an empty text or one with control characters (BAD_REQUEST), or more than
/// the user's rate allows (LIMITED). A batch is refused whole.
fn refusal<T: AsRef<str>>(
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
fn rate_keys(route: &Route, sender: Sender<'_>) -> Vec<String> {
    if let Some(key) = sender.key {
        return vec![format!("key {key}")];
    }
    let mut keys = vec![format!("conn {}", crate::transport::hex(route))];
    keys.extend(sender.address.map(|a| format!("addr {a}")));
    keys
}

/// Stores one message of `sender` in `group` under `client_id`, with the group's next seq, or
/// finds the message stored before under that id. Returns its ACK fields, and the message to
/// push when it is new.
///
/// # Errors
/// The store's; the open batch must then not commit.
fn append(
    store: &mut Store,
    group: &mut Group,
    sender: String,
    client_id: &str,
    text: String,
    now_ms: i64,
) -> Result<(Acked, Option<Message>)> {
    let message = Message {
        seq: group.last_seq + 1,
        ts: now_ms.max(group.last_ts),
        sender,
        text,
    };
    match store.append(group.id, &message, client_id)? {
        // Stored before under this client id: answer with the original seq.
        Appended::Duplicate { seq, ts } => Ok((
            Acked {
                seq,
                ts,
                duplicate: true,
            },
            None,
        )),
        Appended::New => {
            group.last_seq = message.seq;
            group.last_ts = message.ts;
            let acked = Acked {
                seq: message.seq,
                ts: message.ts,
                duplicate: false,
            };
            Ok((acked, Some(message)))
        }
    }
}

/// Shortens a page so its encoding stays within `max` bytes (keeping at least one message, so a
/// client paging through history always advances).
fn keep_within(messages: &mut Vec<Message>, max: usize) {
    let mut total = 0;
    let keep = messages
        .iter()
        .take_while(|m| {
            total += 21 + m.sender.len() + m.text.len();
            total <= max
        })
        .count();
    messages.truncate(keep.max(1));
}

/// A PRESENCE push for the group's subscribers.
fn presence(group: &str, user: &str, joined: bool) -> Outbound {
    let event = Event::Presence {
        group: group.to_string(),
        user: user.to_string(),
        joined,
    };
    Outbound::Push {
        group: group.to_string(),
        frame: codec::encode_event(&event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::{decode_incoming, Incoming};

    fn setup() -> (State, Store) {
        let mut store = Store::open_in_memory().unwrap();
        let state = State::load(&mut store, &["general".into()], "h:1".into(), 7).unwrap();
        (state, store)
    }

    fn run(state: &mut State, store: &mut Store, route: &[u8], request: Request) -> Vec<Outbound> {
        let mut out = Vec::new();
        store.begin().unwrap();
        state.handle(
            store,
            &route.to_vec(),
            1,
            request,
            Sender::default(),
            &mut out,
        );
        state.settle(store, &mut out);
        out
    }

    fn reply_of(out: &[Outbound]) -> Reply {
        let frame = match &out[0] {
            Outbound::Reply { frame, .. } | Outbound::Durable { frame, .. } => frame,
            Outbound::Push { .. } | Outbound::Messages { .. } => panic!("push first"),
        };
        match decode_incoming(frame).unwrap() {
            Incoming::Reply(_, r) => r,
            other => panic!("not a reply: {other:?}"),
        }
    }

    fn join(g: &str, u: &str) -> Request {
        Request::Join {
            group: g.into(),
            user: u.into(),
        }
    }
    fn send(u: &str, id: &str, text: &str) -> Request {
        Request::Send {
            group: "general".into(),
            user: u.into(),
            client_id: id.into(),
            text: text.into(),
        }
    }

    #[test]
    fn only_members_send_and_sends_are_sequenced_and_pushed() {
        let (mut state, mut store) = setup();
        let refused = reply_of(&run(&mut state, &mut store, b"a", send("alice", "1", "hi")));
        assert!(
            matches!(
                refused,
                Reply::Error {
                    code: ErrorCode::NotMember,
                    ..
                }
            ),
            "{refused:?}"
        );

        assert_eq!(
            reply_of(&run(&mut state, &mut store, b"a", join("general", "alice"))),
            Reply::Joined {
                group: "general".into(),
                last_seq: 0
            }
        );
        let out = run(&mut state, &mut store, b"a", send("alice", "1", "hi"));
        assert!(matches!(
            reply_of(&out),
            Reply::Ack {
                seq: 1,
                duplicate: false,
                ..
            }
        ));
        assert!(
            matches!(&out[1], Outbound::Messages { group, messages } if group == "general" && messages[0].seq == 1)
        );
        assert_eq!(state.subscribers("general").count(), 1);

        let retried = run(&mut state, &mut store, b"a", send("alice", "1", "hi"));
        assert!(matches!(
            reply_of(&retried),
            Reply::Ack {
                seq: 1,
                duplicate: true,
                ..
            }
        ));
        assert_eq!(retried.len(), 1, "a duplicate is not pushed again");
        assert!(matches!(
            reply_of(&run(
                &mut state,
                &mut store,
                b"a",
                send("alice", "2", "again")
            )),
            Reply::Ack { seq: 2, .. }
        ));
    }

    #[test]
    fn unknown_groups_bad_names_and_oversized_texts_are_refused() {
        let (mut state, mut store) = setup();
        let code = |r: Reply| match r {
            Reply::Error { code, .. } => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(reply_of(&run(
                &mut state,
                &mut store,
                b"a",
                join("nope", "alice")
            ))),
            ErrorCode::UnknownGroup
        );
        assert_eq!(
            code(reply_of(&run(
                &mut state,
                &mut store,
                b"a",
                join("general", "a b")
            ))),
            ErrorCode::BadRequest
        );
        run(&mut state, &mut store, b"a", join("general", "alice"));
        let big = "x".repeat(protocol::MAX_TEXT + 1);
        assert_eq!(
            code(reply_of(&run(
                &mut state,
                &mut store,
                b"a",
                send("alice", "", &big)
            ))),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn empty_texts_control_characters_and_disguised_names_are_refused() {
        let (mut state, mut store) = setup();
        let mut refusal = |from: &[u8], request: Request| match reply_of(&run(
            &mut state, &mut store, from, request,
        )) {
            Reply::Error { code, reason } => Some((code, reason)),
            _ => None,
        };
        for name in [
            "ａｌｉｃｅ",
            "bob\u{202E}",
            "bo\u{200B}b",
            "e\u{301}ve",
            "x\u{1b}[2J",
        ] {
            let (code, reason) = refusal(b"m", join("general", name)).expect(name);
            assert_eq!(code, ErrorCode::BadRequest, "{name}");
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
        }
        assert!(refusal(b"a", join("general", "alice")).is_none());
        assert!(
            refusal(b"a", join("general", "ève")).is_none(),
            "NFC letters are fine"
        );
        for text in [
            "",
            "   ",
            "\n\t ",
            "\u{200B}",
            "hi\r\u{1b}[K07:42 bob: hi",
            "\u{1b}]0;t\u{7}",
            "\u{9b}2J",
        ] {
            let (code, _) = refusal(b"a", send("alice", "", text)).expect(text);
            assert_eq!(code, ErrorCode::BadRequest, "{text:?}");
        }
        assert!(refusal(b"a", send("alice", "", "two\n\tlines")).is_none());
        let batch = Request::SendBatch {
            group: "general".into(),
            user: "alice".into(),
            messages: ["fine", " "]
                .map(|text| Outgoing {
                    client_id: String::new(),
                    text: text.into(),
                })
                .to_vec(),
        };
        let (code, reason) = refusal(b"a", batch).expect("a batch with an empty message");
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(reason.starts_with("message 2 of the batch"), "{reason}");
    }

    #[test]
    fn leave_unsubscribes_and_silent_connections_expire_keeping_membership() {
        let (mut state, mut store) = setup();
        run(&mut state, &mut store, b"a", join("general", "alice"));
        run(&mut state, &mut store, b"b", join("general", "bob"));
        assert_eq!(state.connections(), 2);
        assert_eq!(
            reply_of(&run(
                &mut state,
                &mut store,
                b"a",
                Request::Leave {
                    group: "general".into(),
                    user: "alice".into()
                }
            )),
            Reply::Ok
        );
        assert_eq!(
            state.subscribers("general").collect::<Vec<_>>(),
            [&b"b".to_vec()]
        );

        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(state.expire(later, Duration::from_secs(5)), 1);
        assert_eq!(state.subscribers("general").count(), 0);
        let members = reply_of(&run(
            &mut state,
            &mut store,
            b"b",
            Request::Members {
                group: "general".into(),
                user: "bob".into(),
            },
        ));
        assert_eq!(
            members,
            Reply::Members {
                group: "general".into(),
                members: vec![Member {
                    name: "bob".into(),
                    online: false
                }]
            }
        );
    }

    #[test]
    fn a_join_that_fails_to_commit_leaves_no_subscription() {
        let (mut state, mut store) = setup();
        let mut out = Vec::new();
        store.begin().unwrap();
        state.handle(
            &mut store,
            &b"a".to_vec(),
            1,
            join("general", "alice"),
            Sender::default(),
            &mut out,
        );
        state.batch_failed = Some("disk full".into());
        state.settle(&mut store, &mut out);
        assert!(matches!(
            reply_of(&out),
            Reply::Error {
                code: ErrorCode::Unavailable,
                ..
            }
        ));
        assert_eq!(state.subscribers("general").count(), 0);
        assert_eq!(state.connections(), 0);
    }

    #[test]
    fn history_pages_stay_within_the_reply_limit() {
        let m = |seq| Message {
            seq,
            ts: 0,
            sender: "s".into(),
            text: "x".repeat(1000),
        };
        let mut page: Vec<Message> = (1..=10).map(m).collect();
        keep_within(&mut page, 3 * 1022);
        assert_eq!(page.len(), 3);
        keep_within(&mut page, 10);
        assert_eq!(page.len(), 1, "always at least one, so paging advances");
    }

    #[test]
    fn a_failed_batch_turns_acks_into_errors_and_keeps_sequencing() {
        let (mut state, mut store) = setup();
        run(&mut state, &mut store, b"a", join("general", "alice"));
        let mut out = Vec::new();
        store.begin().unwrap();
        state.handle(
            &mut store,
            &b"a".to_vec(),
            5,
            send("alice", "x", "lost"),
            Sender::default(),
            &mut out,
        );
        state.batch_failed = Some("disk full".into());
        state.settle(&mut store, &mut out);
        assert_eq!(out.len(), 1, "the push is dropped");
        assert!(matches!(
            reply_of(&out),
            Reply::Error {
                code: ErrorCode::Unavailable,
                ..
            }
        ));
        let next = run(&mut state, &mut store, b"a", send("alice", "y", "kept"));
        assert!(
            matches!(reply_of(&next), Reply::Ack { seq: 1, .. }),
            "seq 1 was never stored, so it is reused"
        );
    }

    fn batch(u: &str, messages: &[(&str, &str)]) -> Request {
        Request::SendBatch {
            group: "general".into(),
            user: u.into(),
            messages: messages
                .iter()
                .map(|(id, text)| Outgoing {
                    client_id: id.to_string(),
                    text: text.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_batch_is_sequenced_in_order_deduplicated_and_pushed_as_its_new_messages() {
        let (mut state, mut store) = setup();
        run(&mut state, &mut store, b"a", join("general", "alice"));
        run(&mut state, &mut store, b"a", send("alice", "c1", "before"));
        let out = run(
            &mut state,
            &mut store,
            b"a",
            batch(
                "alice",
                &[
                    ("c2", "two"),
                    ("c1", "again"),
                    ("c3", "three"),
                    ("c2", "twice"),
                ],
            ),
        );
        let Reply::Acks(acks) = reply_of(&out) else {
            panic!("{out:?}")
        };
        let seqs: Vec<(u64, bool)> = acks.iter().map(|a| (a.seq, a.duplicate)).collect();
        assert_eq!(
            seqs,
            [(2, false), (1, true), (3, false), (2, true)],
            "new messages take the next seqs in order; retried ids answer with their original"
        );
        let pushed: Vec<(u64, &str)> = out[1..]
            .iter()
            .flat_map(|o| match o {
                Outbound::Messages { messages, .. } => messages.iter(),
                other => panic!("{other:?}"),
            })
            .map(|m| (m.seq, m.text.as_str()))
            .collect();
        assert_eq!(pushed, [(2, "two"), (3, "three")]);
        let next = run(&mut state, &mut store, b"a", send("alice", "c4", "after"));
        assert!(matches!(reply_of(&next), Reply::Ack { seq: 4, .. }));
    }

    #[test]
    fn a_batch_is_refused_whole_for_one_long_text_a_rate_or_a_failed_write() {
        let (mut state, mut store) = setup();
        run(&mut state, &mut store, b"a", join("general", "alice"));
        let big = "x".repeat(protocol::MAX_TEXT + 1);
        let out = run(
            &mut state,
            &mut store,
            b"a",
            batch("alice", &[("c1", "fine"), ("c2", &big)]),
        );
        assert!(
            matches!(reply_of(&out), Reply::Error { code: ErrorCode::TooLarge, ref reason }
                if reason.contains("message 2 of the batch")),
            "{out:?}"
        );
        assert_eq!(out.len(), 1, "nothing stored, nothing pushed");

        state.set_limits(Limits {
            rate: Some(2),
            ..Limits::default()
        });
        let five = [
            ("r1", "a"),
            ("r2", "b"),
            ("r3", "c"),
            ("r4", "d"),
            ("r5", "e"),
        ];
        let out = run(&mut state, &mut store, b"a", batch("alice", &five));
        assert!(
            matches!(reply_of(&out), Reply::Error { code: ErrorCode::Limited, ref reason }
                if reason.contains("send fewer at a time")),
            "{out:?}"
        );
        let out = run(&mut state, &mut store, b"a", batch("alice", &five[..4]));
        assert!(matches!(reply_of(&out), Reply::Acks(ref a) if a.len() == 4));
        let out = run(&mut state, &mut store, b"a", batch("alice", &five[4..]));
        assert!(
            matches!(reply_of(&out), Reply::Error { code: ErrorCode::Limited, ref reason }
                if reason.contains("slow down")),
            "the burst of 4 is spent: {out:?}"
        );

        state.set_limits(Limits::default());
        let mut out = Vec::new();
        store.begin().unwrap();
        let lost = batch("alice", &[("l1", "lost"), ("l2", "lost too")]);
        let none = Sender::default();
        state.handle(&mut store, &b"a".to_vec(), 9, lost, none, &mut out);
        state.batch_failed = Some("disk full".into());
        state.settle(&mut store, &mut out);
        assert_eq!(out.len(), 1, "the pushes are dropped");
        assert!(matches!(
            reply_of(&out),
            Reply::Error {
                code: ErrorCode::Unavailable,
                ..
            }
        ));
        let next = run(&mut state, &mut store, b"a", send("alice", "n1", "kept"));
        assert!(
            matches!(reply_of(&next), Reply::Ack { seq: 5, .. }),
            "the failed batch's seqs are reused: {next:?}"
        );
    }
}
