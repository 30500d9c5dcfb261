//! The metrics of both servers, as Prometheus counters, gauges and histograms
//! (prometheus-client). Every name is documented in README.md, "Metrics".
//!
//! Updates are atomic operations. A counter labelled by command and reply code is found
//! under a read lock without allocating (both labels are static strings); a group's counters
//! are made once, when the server starts or first hosts the group, and kept.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::protocol::codec::cmd;
use crate::protocol::ErrorCode;

/// `command` and `code` of a request counted.
type RequestLabels = [(&'static str, &'static str); 2];
/// `group` of a per-group metric.
type GroupLabels = [(&'static str, String); 1];

/// The counters every server has, and the registry `/metrics` shows.
#[derive(Debug)]
struct Common {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    peers: Gauge,
}

impl Common {
    fn new(role: &'static str) -> Common {
        let mut registry = Registry::with_prefix("zms");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by command and reply code (OK or the error's name)",
            requests.clone(),
        );
        let peers = Gauge::default();
        registry.register("connected_peers", "Open connections", peers.clone());
        registry.register(
            "build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION")), ("role", role)]),
        );
        Common {
            registry,
            requests,
            peers,
        }
    }

    fn answered(&self, command: &'static str, code: &'static str) {
        self.requests
            .get_or_create(&[("command", command), ("code", code)])
            .inc();
    }
}

/// A group's counters, made once.
#[derive(Debug, Clone, Default)]
struct GroupCounters {
    stored: Counter,
    pushed: Counter,
    dropped: Counter,
    history: Counter,
    online: Gauge,
}

/// The families a group's counters come from.
#[derive(Debug)]
struct GroupFamilies {
    stored: Family<GroupLabels, Counter>,
    pushed: Family<GroupLabels, Counter>,
    dropped: Family<GroupLabels, Counter>,
    history: Family<GroupLabels, Counter>,
    online: Family<GroupLabels, Gauge>,
}

impl GroupFamilies {
    fn counters(&self, group: &str) -> GroupCounters {
        let labels = [("group", group.to_string())];
        GroupCounters {
            stored: self.stored.get_or_create_owned(&labels),
            pushed: self.pushed.get_or_create_owned(&labels),
            dropped: self.dropped.get_or_create_owned(&labels),
            history: self.history.get_or_create_owned(&labels),
            online: self.online.get_or_create_owned(&labels),
        }
    }
}

/// The group server's metrics.
#[derive(Debug)]
pub struct GroupMetrics {
    common: Common,
    families: GroupFamilies,
    /// Written only when the server hosts a group it did not before; read on every count.
    groups: RwLock<HashMap<String, GroupCounters>>,
    commit_seconds: Histogram,
    batch_requests: Histogram,
    /// Messages retention deleted, by group (made when a group is first trimmed).
    trimmed: Family<GroupLabels, Counter>,
}

impl GroupMetrics {
    /// Metrics for a server hosting `groups`.
    pub fn new(groups: &[String]) -> GroupMetrics {
        let mut common = Common::new("group server");
        let registry = &mut common.registry;
        let family = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<GroupLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let stored = family(registry, "messages_stored", "Messages stored, by group");
        let pushed = family(
            registry,
            "pushes",
            "Live pushes (MSG, MSGS or PRESENCE frames) handed to members' connections, by group",
        );
        let dropped = family(
            registry,
            "push_drops",
            "Pushes a slow member missed (its unread backlog was full), by group",
        );
        let history = family(registry, "history_reads", "HISTORY requests, by group");
        let online = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "online_members",
            "Connections subscribed to live messages, by group",
            online.clone(),
        );
        let families = GroupFamilies {
            stored,
            pushed,
            dropped,
            history,
            online,
        };
        let groups = groups
            .iter()
            .map(|g| (g.clone(), families.counters(g)))
            .collect();
        // 100 µs to about 6.5 s: an in-memory commit up to an fsync on a slow disk.
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        registry.register(
            "store_commit_seconds",
            "Time to commit one batch's writes",
            commit_seconds.clone(),
        );
        let batch_requests = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "batch_requests",
            "Requests read in one wake-up of the server (one batch)",
            batch_requests.clone(),
        );
        let trimmed = family(
            registry,
            "trimmed_messages",
            "Messages deleted by retention (--retain), by group",
        );
        GroupMetrics {
            common,
            families,
            groups: RwLock::new(groups),
            commit_seconds,
            batch_requests,
            trimmed,
        }
    }

    /// The registry `/metrics` shows.
    pub fn registry(&self) -> &Registry {
        &self.common.registry
    }

    /// Makes the counters of each of `groups` the server did not host before (a group created
    /// at runtime, or gained from another server in cluster mode). A group no longer hosted
    /// keeps its counters: Prometheus counters do not go back.
    pub fn hosting(&self, groups: &[String]) {
        let known = self.groups.read().unwrap_or_else(|e| e.into_inner());
        let new: Vec<&String> = groups.iter().filter(|g| !known.contains_key(*g)).collect();
        drop(known);
        if new.is_empty() {
            return;
        }
        let mut known = self.groups.write().unwrap_or_else(|e| e.into_inner());
        for group in new {
            known
                .entry(group.clone())
                .or_insert_with(|| self.families.counters(group));
        }
    }

    /// Runs `count` on the counters of `group`, if the server hosts it.
    fn with_group(&self, group: &str, count: impl FnOnce(&GroupCounters)) {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = groups.get(group) {
            count(g);
        }
    }

    /// Counts a request answered with `frame`.
    pub fn answered(&self, command: &'static str, frame: &[u8]) {
        self.common.answered(command, reply_code(frame));
    }

    /// Counts `n` messages stored in `group`.
    pub fn stored(&self, group: &str, n: usize) {
        self.with_group(group, |g| {
            g.stored.inc_by(n as u64);
        });
    }

    /// Counts `n` messages of `group` deleted by retention.
    pub fn trimmed(&self, group: &str, n: u64) {
        self.trimmed
            .get_or_create(&[("group", group.to_string())])
            .inc_by(n);
    }

    /// Counts a push handed to a member of `group`.
    pub fn pushed(&self, group: &str) {
        self.with_group(group, |g| {
            g.pushed.inc();
        });
    }

    /// Counts a push a slow member of `group` missed.
    pub fn dropped(&self, group: &str) {
        self.with_group(group, |g| {
            g.dropped.inc();
        });
    }

    /// Counts a HISTORY request for `group`.
    pub fn history(&self, group: &str) {
        self.with_group(group, |g| {
            g.history.inc();
        });
    }

    /// Sets the connections subscribed to `group`.
    pub fn online(&self, group: &str, n: usize) {
        self.with_group(group, |g| {
            g.online.set(n as i64);
        });
    }

    /// Sets the open connections.
    pub fn peers(&self, n: usize) {
        self.common.peers.set(n as i64);
    }

    /// Records one commit's duration.
    pub fn commit(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// Records the requests of one batch.
    pub fn batch(&self, requests: usize) {
        self.batch_requests.observe(requests as f64);
    }
}

/// The message server's metrics.
#[derive(Debug)]
pub struct DirectoryMetrics {
    common: Common,
    servers: Gauge,
    entries: Gauge,
    users: Gauge,
    expiries: Counter,
}

impl Default for DirectoryMetrics {
    fn default() -> DirectoryMetrics {
        let mut common = Common::new("message server");
        let registry = &mut common.registry;
        let servers = Gauge::default();
        registry.register(
            "directory_servers",
            "Group servers registered",
            servers.clone(),
        );
        let entries = Gauge::default();
        registry.register(
            "directory_entries",
            "Groups listed, over all group servers",
            entries.clone(),
        );
        let users = Gauge::default();
        registry.register(
            "directory_users",
            "Users heard from (HELLO) lately",
            users.clone(),
        );
        let expiries = Counter::default();
        registry.register(
            "directory_expiries",
            "Group servers dropped because they stopped re-registering",
            expiries.clone(),
        );
        DirectoryMetrics {
            common,
            servers,
            entries,
            users,
            expiries,
        }
    }
}

impl DirectoryMetrics {
    /// The registry `/metrics` shows.
    pub fn registry(&self) -> &Registry {
        &self.common.registry
    }

    /// Counts a request answered with `frame`.
    pub fn answered(&self, command: &'static str, frame: &[u8]) {
        self.common.answered(command, reply_code(frame));
    }

    /// Sets the size of the table: servers, groups listed and users.
    pub fn table(&self, servers: usize, entries: usize, users: usize) {
        self.servers.set(servers as i64);
        self.entries.set(entries as i64);
        self.users.set(users as i64);
    }

    /// Counts group servers expired.
    pub fn expired(&self, n: usize) {
        self.expiries.inc_by(n as u64);
    }

    /// Sets the open connections.
    pub fn peers(&self, n: usize) {
        self.common.peers.set(n as i64);
    }
}

/// The reply code of an encoded reply: `OK` for any answer but an ERROR, else the error's
/// name (`LIMITED`, `UNAVAILABLE`…). Reads two bytes, decodes nothing.
pub fn reply_code(frame: &[u8]) -> &'static str {
    // "ZMS1", command, request id (4 bytes), then an ERROR's code (u16).
    if frame.get(4) != Some(&cmd::ERROR) {
        return "OK";
    }
    match frame.get(9..11) {
        Some(&[hi, lo]) => ErrorCode::from_value(u16::from_be_bytes([hi, lo])).name(),
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::encode_reply;
    use crate::protocol::Reply;
    use std::sync::Arc;

    #[test]
    fn reply_codes_are_read_from_the_frame() {
        assert_eq!(reply_code(&encode_reply(7, &Reply::Ok)), "OK");
        let limited = Reply::Error {
            code: ErrorCode::Limited,
            reason: "slow down".into(),
        };
        assert_eq!(reply_code(&encode_reply(7, &limited)), "LIMITED");
        assert_eq!(reply_code(b"ZMS1"), "OK");
        assert_eq!(
            reply_code(&[b'Z', b'M', b'S', b'1', cmd::ERROR, 0]),
            "OTHER"
        );
    }

    #[test]
    fn a_groups_counters_show_under_its_name() {
        let metrics = Arc::new(GroupMetrics::new(&["general".into()]));
        metrics.stored("general", 3);
        metrics.stored("unknown", 5);
        metrics.answered("SEND", &encode_reply(1, &Reply::Ok));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, metrics.registry())
            .unwrap();
        assert!(
            text.contains("zms_messages_stored_total{group=\"general\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("zms_requests_total{command=\"SEND\",code=\"OK\"} 1"),
            "{text}"
        );
        assert!(!text.contains("unknown"), "{text}");
        // A group hosted later is counted from then on.
        metrics.hosting(&["general".into(), "later".into()]);
        metrics.stored("later", 2);
        metrics.stored("general", 1);
        metrics.trimmed("general", 40);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, metrics.registry())
            .unwrap();
        assert!(
            text.contains("zms_trimmed_messages_total{group=\"general\"} 40"),
            "{text}"
        );
        assert!(
            text.contains("zms_messages_stored_total{group=\"later\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("zms_messages_stored_total{group=\"general\"} 4"),
            "{text}"
        );
    }
}
