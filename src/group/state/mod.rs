//! What a group server knows and decides: groups, members, live subscriptions, sequencing.
//!
//! Pure: no sockets, no store, no clock. [`State::handle`] turns one request into
//! [`Effects`]: store writes, messages to append, a history page to read, answers and pushes.
//! The poll loop in `group/mod.rs` carries them out through the
//! [`Storage`](super::storage::Storage), commits, and only then encodes and sends; after a
//! batch that did not commit it reads the store back into [`State::restore`].

mod admin;
mod chat;
mod effects;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::info;

use super::limits::{Limits, RateLimiter};
use super::storage::StoredGroup;
use crate::protocol::{Acked, Message};

pub use effects::{
    fail_batch, fail_request, unwritable, Append, Change, ClientIds, Effects, Found, GroupChange,
    Now, Outbound, Peer, Query, QueryKind, Read, Route, Write,
};

/// One hosted group.
#[derive(Debug)]
struct Group {
    id: i64,
    last_seq: u64,
    last_ts: i64,
    /// The first kept seq: 1 until retention trimmed older messages.
    first_seq: u64,
    members: HashSet<String>,
    /// Connections that receive MSG events live.
    subscribers: HashSet<Route>,
    /// Only keys in `allowed` may join (members stay members).
    private: bool,
    /// Keys allowed into a private group: the server's allow list and the invited.
    allowed: HashSet<String>,
    /// User names an operator banned: their JOINs are refused.
    banned: HashSet<String>,
}

/// One connection that subscribes to at least one group.
#[derive(Debug)]
struct Conn {
    user: String,
    groups: HashSet<String>,
    last_seen: Instant,
}

/// What the store holds of names and invitations, with security: read at start and after a
/// batch that did not commit.
#[derive(Debug, Default, Clone)]
pub struct Keys {
    /// Every user name bound to a key, as `(name, key)`.
    pub users: Vec<(String, String)>,
    /// The keys invited into each private group, by group id.
    pub invites: HashMap<i64, Vec<String>>,
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
    /// Requests must come over CURVE, and each user name belongs to one key.
    secure: bool,
    /// User name → the key it is bound to (with security).
    users: HashMap<String, String>,
    /// Keys the operator allowed into every private group.
    allow: Vec<String>,
    /// Keys that may make administration requests (KICK), with security.
    operators: Vec<String>,
    /// Without security: user name → the IP address that made it a member, for names made
    /// members since the server started.
    name_address: HashMap<String, String>,
    /// Without security: how many names of `name_address` each address made members.
    names_per_address: HashMap<String, usize>,
    limits: Limits,
    rates: RateLimiter,
    /// Groups were created, dropped or changed since the poll loop last asked.
    groups_changed: bool,
    /// Groups an operator deleted since the server started: a request naming one is told
    /// that its membership ended (NOT_MEMBER), not that the group is unknown here.
    dropped: HashSet<String>,
}

impl State {
    /// The state of a server hosting `groups` as stored.
    pub fn new(groups: Vec<StoredGroup>, address: String, epoch: u64) -> State {
        let groups = groups
            .into_iter()
            .map(|g| {
                info!(group = %g.name, last_seq = g.last_seq, members = g.members.len(), "group loaded");
                let group = Group {
                    id: g.id,
                    last_seq: g.last_seq,
                    last_ts: g.last_ts,
                    first_seq: 1,
                    members: g.members.into_iter().collect(),
                    subscribers: HashSet::new(),
                    private: false,
                    allowed: HashSet::new(),
                    banned: g.banned.into_iter().collect(),
                };
                (g.name, group)
            })
            .collect();
        State {
            groups,
            conns: HashMap::new(),
            epoch,
            address,
            key: String::new(),
            secure: false,
            users: HashMap::new(),
            allow: Vec::new(),
            operators: Vec::new(),
            name_address: HashMap::new(),
            names_per_address: HashMap::new(),
            limits: Limits::default(),
            rates: RateLimiter::default(),
            groups_changed: false,
            dropped: HashSet::new(),
        }
    }

    /// Starts hosting a group (one another server hosted until now, say): `private` ones
    /// admit only allowed or invited keys (with security; their invitations come with the
    /// next [`State::restore`]).
    pub fn host(&mut self, stored: StoredGroup, private: bool) {
        info!(group = %stored.name, last_seq = stored.last_seq, "group hosted");
        let group = Group {
            id: stored.id,
            last_seq: stored.last_seq,
            last_ts: stored.last_ts,
            first_seq: 1,
            members: stored.members.into_iter().collect(),
            subscribers: HashSet::new(),
            private: private && self.secure,
            allowed: self.allow.iter().cloned().collect(),
            banned: stored.banned.into_iter().collect(),
        };
        self.groups.insert(stored.name, group);
    }

    /// Stops hosting the group with store id `id`: its subscriptions end with it.
    pub fn unhost(&mut self, id: i64) {
        let Some(name) = self
            .groups
            .iter()
            .find(|(_, g)| g.id == id)
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        let routes: Vec<Route> = self.subscribers(&name).cloned().collect();
        for route in routes {
            self.unsubscribe(&route, &name);
        }
        self.groups.remove(&name);
        info!(group = %name, "group no longer hosted here");
    }

    /// Sets the limits this server enforces.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Turns security on: requests must carry an authenticated key, names bind to keys, and
    /// the `private` groups admit only `allow`ed or invited keys. The names and invitations
    /// stored so far come next, through [`State::restore`].
    pub fn secure(&mut self, key: String, private: &[String], allow: &[String]) {
        self.key = key;
        self.secure = true;
        self.allow = allow.to_vec();
        for name in private {
            if let Some(group) = self.groups.get_mut(name) {
                group.private = true;
                group.allowed = allow.iter().cloned().collect();
            }
        }
    }

    /// Lets the holders of `keys` make administration requests (with security; without it,
    /// loopback peers may).
    pub fn set_operators(&mut self, keys: Vec<String>) {
        self.operators = keys;
    }

    /// Whether names bind to keys (and [`Keys`] are to be read from the store).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The store ids of the hosted groups.
    pub fn group_ids(&self) -> Vec<i64> {
        self.groups.values().map(|g| g.id).collect()
    }

    /// The store id of a hosted group.
    pub fn group_id(&self, name: &str) -> Option<i64> {
        self.groups.get(name).map(|g| g.id)
    }

    /// Records where a group's kept history starts, after the store trimmed it.
    pub fn set_first_kept(&mut self, group_id: i64, first_seq: u64) {
        if let Some(g) = self.groups.values_mut().find(|g| g.id == group_id) {
            g.first_seq = first_seq;
        }
    }

    /// The store ids of the private groups, whose invitations [`Keys`] holds.
    pub fn private_group_ids(&self) -> Vec<i64> {
        self.groups
            .values()
            .filter(|g| g.private)
            .map(|g| g.id)
            .collect()
    }

    /// Makes memory agree with the store: sequencing and membership from `groups` (a group
    /// missing from it keeps what it had), names and invitations from `keys` (if read), and no
    /// subscription of a user who is not a member. At start, and after a batch that did not
    /// commit.
    pub fn restore(&mut self, groups: Vec<StoredGroup>, keys: Option<Keys>) {
        for stored in groups {
            if let Some(group) = self.groups.values_mut().find(|g| g.id == stored.id) {
                group.last_seq = stored.last_seq;
                group.last_ts = stored.last_ts;
                group.members = stored.members.into_iter().collect();
                group.banned = stored.banned.into_iter().collect();
            }
        }
        if let Some(keys) = keys.filter(|_| self.secure) {
            self.restore_keys(keys);
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

    fn restore_keys(&mut self, keys: Keys) {
        let Keys { users, mut invites } = keys;
        self.users = users.into_iter().collect();
        for group in self.groups.values_mut().filter(|g| g.private) {
            group.allowed = self
                .allow
                .iter()
                .cloned()
                .chain(invites.remove(&group.id).unwrap_or_default())
                .collect();
        }
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

    /// Answers an [`Append`] the store has carried out: `acks` says, for each of its messages,
    /// the seq it has (its original one if a duplicate), and `append.messages` now holds the
    /// new ones. Advances the group's sequencing past them, answers the sender (taking the
    /// acks) and pushes them.
    pub fn appended(&mut self, append: Append, acks: &mut Vec<Acked>, out: &mut Vec<Outbound>) {
        let Append {
            route,
            req_id,
            group,
            client_ids,
            messages,
            ..
        } = append;
        if let (Some(g), Some(last)) = (self.groups.get_mut(&group), messages.last()) {
            g.last_seq = last.seq;
            g.last_ts = last.ts;
        }
        out.push(Outbound::Durable {
            route,
            req_id,
            reply: effects::acks_reply(&client_ids, acks),
        });
        if !messages.is_empty() {
            out.push(Outbound::Messages { group, messages });
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

    /// Takes `user` out of `group` in memory: no member any more, and none of their connections
    /// follows it. The caller stores the removal and answers.
    fn remove_member(&mut self, group: &str, user: &str) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.members.remove(user);
        // Every connection of that user stops receiving the group.
        let routes: Vec<Route> = g
            .subscribers
            .iter()
            .filter(|r| self.conns.get(*r).is_some_and(|c| c.user == user))
            .cloned()
            .collect();
        for r in routes {
            self.unsubscribe(&r, group);
        }
        if !self.groups.values().any(|g| g.members.contains(user)) {
            self.uncount_name(user);
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
