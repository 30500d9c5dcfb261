//! The directory's table of groups: soft state that lives only while refreshed.
//!
//! Pure: no sockets, no clock of its own (callers pass `now`), so expiry is tested without waiting.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::protocol::GroupEntry;

/// Groups known to the directory, by the group server that announced them.
#[derive(Debug)]
pub struct Registry {
    /// Group server address → what it announced and until when it counts.
    servers: BTreeMap<String, Registration>,
    /// Users who said HELLO, with when they were last heard.
    users: HashMap<String, Instant>,
    /// Bumped on every change to the list, so callers can cache what they built from it.
    version: u64,
    /// Entries listed in all, over every group server; `None` is no cap.
    max_groups: Option<usize>,
    /// Most users remembered from HELLO (it reserves nothing, so a full table only stops
    /// counting newcomers until names expire).
    max_users: usize,
}

#[derive(Debug)]
struct Registration {
    /// Sorted, without repeats.
    groups: Vec<String>,
    /// The group server's public key, listed with its groups.
    key: String,
    expires: Instant,
    /// When it registered first (kept while it stays registered), for `zms status`.
    since: Instant,
    /// When its last REGISTER arrived.
    heard: Instant,
}

/// A registered group server, as STATUS shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView<'a> {
    pub address: &'a str,
    pub key: &'a str,
    pub groups: &'a [String],
    pub since: Instant,
    pub heard: Instant,
}

impl Registration {
    fn lists(&self, name: &str) -> bool {
        self.groups
            .binary_search_by(|g| g.as_str().cmp(name))
            .is_ok()
    }
}

/// How long a user's HELLO counts for listing them.
const USER_TTL: Duration = Duration::from_secs(600);

/// Most users a message server remembers from HELLO by default: about 2 MiB of names.
pub const MAX_USERS: usize = 10_000;

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            servers: BTreeMap::new(),
            users: HashMap::new(),
            version: 0,
            max_groups: None,
            max_users: MAX_USERS,
        }
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Caps the users remembered from HELLO.
    pub fn with_max_users(mut self, max: usize) -> Registry {
        self.max_users = max;
        self
    }

    /// Caps the number of entries (groups over all group servers).
    pub fn with_max_groups(mut self, max: usize) -> Registry {
        self.max_groups = Some(max);
        self
    }

    /// Records or refreshes a group server's groups.
    ///
    /// # Errors
    /// When the new groups would take the list past its cap (nothing changes then).
    pub fn register(
        &mut self,
        address: &str,
        mut groups: Vec<String>,
        key: &str,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), String> {
        groups.sort();
        groups.dedup();
        if let Some(max) = self.max_groups {
            let others: usize = self
                .servers
                .iter()
                .filter(|(a, _)| a.as_str() != address)
                .map(|(_, r)| r.groups.len())
                .sum();
            if others + groups.len() > max {
                return Err(format!("this message server lists at most {max} groups"));
            }
        }
        let expires = now + ttl;
        match self.servers.get_mut(address) {
            Some(reg) if reg.groups == groups && reg.key == key => {
                reg.expires = expires;
                reg.heard = now;
            }
            other => {
                tracing::info!(address, ?groups, "group server registered");
                let since = other.map_or(now, |r| r.since);
                let key = key.to_string();
                self.servers.insert(
                    address.to_string(),
                    Registration {
                        groups,
                        key,
                        expires,
                        since,
                        heard: now,
                    },
                );
                self.version += 1;
            }
        }
        Ok(())
    }

    /// Whether `groups` (sorted, without repeats) under `key` is what `address` lists now: a
    /// heartbeat that changes nothing.
    pub fn is_refresh(&self, address: &str, groups: &[String], key: &str) -> bool {
        self.servers
            .get(address)
            .is_some_and(|r| r.groups == groups && r.key == key)
    }

    /// A live group server other than `except` that lists `name`.
    pub fn holder(&self, name: &str, except: &str) -> Option<&str> {
        self.servers
            .iter()
            .find(|(a, r)| a.as_str() != except && r.lists(name))
            .map(|(a, _)| a.as_str())
    }

    /// Whether a live group server holding `key` lists group `name`.
    pub fn lists_name(&self, key: &str, name: &str) -> bool {
        self.servers.values().any(|r| r.key == key && r.lists(name))
    }

    /// Takes `name` off every group server but `except` (it has been handed over).
    pub fn release(&mut self, name: &str, except: &str) {
        for (address, r) in self.servers.iter_mut() {
            if address != except && r.lists(name) {
                r.groups.retain(|g| g != name);
                tracing::info!(
                    address,
                    group = name,
                    "group handed over to another group server"
                );
                self.version += 1;
            }
        }
    }

    /// The key a group server registered with, if it is registered.
    pub fn key_of(&self, address: &str) -> Option<&str> {
        self.servers.get(address).map(|r| r.key.as_str())
    }

    /// Forgets a group server at once.
    pub fn unregister(&mut self, address: &str) {
        if self.servers.remove(address).is_some() {
            tracing::info!(address, "group server unregistered");
            self.version += 1;
        }
    }

    /// Records a user's HELLO, unless the table is full and the name new.
    pub fn hello(&mut self, name: &str, now: Instant) {
        let room = self.users.len() < self.max_users;
        match self.users.get_mut(name) {
            Some(seen) => *seen = now,
            None if room => {
                self.users.insert(name.to_string(), now);
            }
            None => {}
        }
    }

    /// Number of users heard from recently.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Drops registrations and users whose time has run out; returns the addresses dropped.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .servers
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(a, _)| a.clone())
            .collect();
        for address in &gone {
            tracing::info!(address, "group server expired");
            self.servers.remove(address);
        }
        if !gone.is_empty() {
            self.version += 1;
        }
        self.users
            .retain(|_, seen| now.duration_since(*seen) < USER_TTL);
        gone
    }

    /// When the next registration runs out, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.servers.values().map(|r| r.expires).min()
    }

    /// All groups, sorted by name then address.
    pub fn list(&self) -> Vec<GroupEntry> {
        let mut all: Vec<GroupEntry> = self
            .servers
            .iter()
            .flat_map(|(address, r)| {
                r.groups.iter().map(move |name| GroupEntry {
                    name: name.clone(),
                    address: address.clone(),
                    key: r.key.clone(),
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
        all
    }

    /// Where group `name` lives: the group server listing it, or else the one it should be
    /// created on, chosen by rendezvous hashing of the name over the live group servers (every
    /// message server with the same registrations picks the same one, and a server coming or
    /// going moves only the names that hash best to it). `None` when no group server is live.
    pub fn place(&self, name: &str) -> Option<GroupEntry> {
        let (address, r) = self
            .servers
            .iter()
            .find(|(_, r)| r.lists(name))
            .or_else(|| {
                self.servers
                    .iter()
                    .max_by_key(|(address, _)| rendezvous(name, address))
            })?;
        Some(GroupEntry {
            name: name.to_string(),
            address: address.clone(),
            key: r.key.clone(),
        })
    }

    /// The registered group servers, by address.
    pub fn servers(&self) -> impl Iterator<Item = ServerView<'_>> {
        self.servers.iter().map(|(address, r)| ServerView {
            address,
            key: &r.key,
            groups: &r.groups,
            since: r.since,
            heard: r.heard,
        })
    }

    /// Changes whenever [`Registry::list`] would change.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// The weight of `address` for `name` in rendezvous hashing: FNV-1a 64 over both, a hash that
/// is the same in every build (unlike std's), so every message server agrees.
fn rendezvous(name: &str, address: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes().chain([0]).chain(address.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_placed_where_it_is_listed_or_else_by_rendezvous() {
        let now = Instant::now();
        let ttl = Duration::from_secs(3);
        let mut reg = Registry::new();
        assert_eq!(reg.place("@alice@bob"), None);
        for address in ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"] {
            reg.register(address, vec!["g".into()], "", ttl, now)
                .unwrap();
        }
        // Unlisted: the same choice every time, and spread over the servers.
        let chosen: std::collections::HashSet<String> = (0..30)
            .map(|i| reg.place(&format!("@a{i}@b")).unwrap().address)
            .collect();
        assert_eq!(reg.place("@alice@bob"), reg.place("@alice@bob"));
        assert!(chosen.len() > 1, "rendezvous put every name on one server");
        // Listed: where it lives, whatever the hash says.
        let hashed = reg.place("@alice@bob").unwrap().address;
        let other = ["127.0.0.1:1", "127.0.0.1:2"]
            .into_iter()
            .find(|a| *a != hashed)
            .unwrap();
        reg.register(other, vec!["g".into(), "@alice@bob".into()], "", ttl, now)
            .unwrap();
        assert_eq!(reg.place("@alice@bob").unwrap().address, other);
    }

    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn registrations_list_sorted_and_expire_unless_refreshed() {
        let t0 = Instant::now();
        let mut reg = Registry::new();
        reg.register("b:2", vec!["rust".into(), "general".into()], "", TTL, t0)
            .unwrap();
        reg.register("a:1", vec!["general".into()], "", TTL, t0)
            .unwrap();
        let names: Vec<_> = reg
            .list()
            .into_iter()
            .map(|g| format!("{}@{}", g.name, g.address))
            .collect();
        assert_eq!(names, ["general@a:1", "general@b:2", "rust@b:2"]);

        reg.register(
            "a:1",
            vec!["general".into()],
            "",
            TTL,
            t0 + Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(reg.expire(t0 + Duration::from_secs(3)), ["b:2"]);
        assert_eq!(reg.list().len(), 1);
        assert_eq!(reg.expire(t0 + Duration::from_secs(5)), ["a:1"]);
        assert!(reg.list().is_empty());
    }

    #[test]
    fn holders_are_found_and_names_handed_over() {
        let t0 = Instant::now();
        let mut reg = Registry::new();
        reg.register("a:1", vec!["g".into(), "h".into()], "K", TTL, t0)
            .unwrap();
        assert_eq!(reg.holder("g", "b:2"), Some("a:1"));
        assert_eq!(reg.holder("g", "a:1"), None, "its own entry is no conflict");
        assert!(reg.is_refresh("a:1", &["g".into(), "h".into()], "K"));
        assert!(reg.lists_name("K", "h") && !reg.lists_name("J", "h"));
        let v = reg.version();
        reg.release("g", "b:2");
        assert_eq!(reg.holder("g", "b:2"), None);
        assert_ne!(reg.version(), v);
        assert!(!reg.is_refresh("a:1", &["g".into(), "h".into()], "K"));
    }

    #[test]
    fn a_server_keeps_its_first_registration_time_and_shows_its_last_heartbeat() {
        let t0 = Instant::now();
        let (t1, t2) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        let mut reg = Registry::new();
        reg.register("a:1", vec!["g".into()], "", TTL, t0).unwrap();
        reg.register("a:1", vec!["g".into()], "", TTL, t1).unwrap();
        // A change of groups is a new entry for LIST, not a new server.
        reg.register("a:1", vec!["g".into(), "h".into()], "", TTL, t2)
            .unwrap();
        let servers: Vec<ServerView> = reg.servers().collect();
        assert_eq!(servers.len(), 1);
        assert_eq!((servers[0].since, servers[0].heard), (t0, t2));
        assert_eq!(servers[0].groups, ["g", "h"]);
    }

    #[test]
    fn hello_names_are_capped_and_expire() {
        let t0 = Instant::now();
        let mut reg = Registry::new().with_max_users(3);
        for i in 0..500 {
            reg.hello(&format!("user{i}"), t0);
        }
        assert_eq!(reg.users(), 3, "a flood of names stops at the cap");
        reg.hello("user0", t0 + USER_TTL / 2);
        reg.expire(t0 + USER_TTL);
        assert_eq!(reg.users(), 1, "only the refreshed name is left");
        reg.hello("newcomer", t0 + USER_TTL);
        assert_eq!(reg.users(), 2, "room again once names expire");
    }

    #[test]
    fn version_changes_only_when_the_list_does() {
        let t0 = Instant::now();
        let mut reg = Registry::new();
        reg.register("a:1", vec!["g".into()], "", TTL, t0).unwrap();
        let v = reg.version();
        reg.register("a:1", vec!["g".into()], "", TTL, t0 + TTL / 2)
            .unwrap();
        assert_eq!(reg.version(), v, "a refresh is not a change");
        reg.register("a:1", vec!["g".into(), "h".into()], "", TTL, t0)
            .unwrap();
        assert_ne!(reg.version(), v);
        let v = reg.version();
        reg.unregister("a:1");
        assert_ne!(reg.version(), v);
        assert_eq!(reg.next_expiry(), None);
    }
}
