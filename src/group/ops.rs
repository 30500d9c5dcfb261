//! The group server's side of [`crate::ops`]: what its loop counts, its health, and its
//! STATUS answer. Kept apart from the loop so the loop only calls a few methods.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::state::Outbound;
use super::GroupServer;
use crate::ops::metrics::GroupMetrics;
use crate::ops::rate::Rate;
use crate::ops::status::{GroupServerStatus, GroupStatus};
use crate::ops::{http, Health};
use crate::protocol::codec::cmd;
use crate::protocol::{ErrorCode, Reply};
use crate::Result;

/// What the loop keeps for operators.
pub(super) struct Ops {
    pub(super) metrics: Arc<GroupMetrics>,
    pub(super) health: Health,
    /// The `--metrics` HTTP endpoint, when asked for.
    endpoint: Option<http::Endpoint>,
    /// Messages stored a second, by group (a group's rate starts when it first stores).
    rates: HashMap<String, Rate>,
    /// The data directory, whose database files STATUS sizes.
    data: PathBuf,
    started_ms: i64,
    /// The requests read since the last flush, in order, with their ids: their answers leave
    /// in the same order, so each answer is counted under its request's command.
    asked: Vec<(u32, &'static str)>,
    /// How many of `asked` have been matched to an answer.
    matched: usize,
}

impl Ops {
    pub(super) fn new(groups: &[String], data: &Path) -> Ops {
        let now_ms = crate::time::now_ms();
        let now = Instant::now();
        let health = Health::default();
        health.set_registration(Some("not registered yet"));
        Ops {
            metrics: Arc::new(GroupMetrics::new(groups)),
            health,
            endpoint: None,
            rates: groups.iter().map(|g| (g.clone(), Rate::new(now))).collect(),
            data: data.to_path_buf(),
            started_ms: now_ms,
            asked: Vec::new(),
            matched: 0,
        }
    }

    /// Notes a request read, for counting its answer.
    pub(super) fn asked(&mut self, req_id: u32, command: &'static str) {
        self.asked.push((req_id, command));
    }

    /// Counts an answer by its request's command and its code. An answer that stayed
    /// `durable` was committed; an UNAVAILABLE one was a write the store refused.
    pub(super) fn answered(&mut self, frame: &[u8], durable: bool) {
        let req_id = frame
            .get(5..9)
            .map(|b| u32::from_be_bytes(b.try_into().expect("bug: 4 bytes")));
        let command = match self.asked.get(self.matched) {
            Some((id, command)) if Some(*id) == req_id => {
                self.matched += 1;
                command
            }
            _ => "UNKNOWN",
        };
        self.metrics.answered(command, frame);
        if durable {
            self.health.set_store(None);
        } else if frame.get(4) == Some(&cmd::ERROR)
            && frame.get(9..11) == Some(&ErrorCode::Unavailable.value().to_be_bytes())
        {
            let reason = match crate::protocol::codec::decode_incoming(frame) {
                Ok(crate::protocol::codec::Incoming::Reply(_, Reply::Error { reason, .. })) => {
                    reason
                }
                _ => "a write failed".to_string(),
            };
            self.health.set_store(Some(&reason));
        }
    }

    /// Forgets the requests of the answers just sent.
    pub(super) fn answers_done(&mut self) {
        self.asked.clear();
        self.matched = 0;
    }

    /// Counts the messages of a batch's pushes: they were stored (pushes of a batch that
    /// failed are dropped before this).
    pub(super) fn stored(&mut self, pushes: &[Outbound]) {
        let now = Instant::now();
        for push in pushes {
            if let Outbound::Messages { group, messages } = push {
                self.metrics.stored(group, messages.len());
                self.rates
                    .entry(group.clone())
                    .or_insert_with(|| Rate::new(now))
                    .record(messages.len() as u64, now);
            }
        }
    }
}

impl GroupServer {
    /// Serves `/metrics` and `/healthz` over HTTP on `bind` (`HOST:PORT`), until the server
    /// stops.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn serve_metrics(mut self, bind: &str) -> Result<GroupServer> {
        let metrics: Arc<dyn http::Exposed> = self.ops.metrics.clone();
        self.ops.endpoint = Some(http::Endpoint::start(
            bind,
            metrics,
            self.ops.health.clone(),
        )?);
        Ok(self)
    }

    /// Where `/metrics` is served (`HOST:PORT`), if it is.
    pub fn metrics_address(&self) -> Option<&str> {
        self.ops.endpoint.as_ref().map(http::Endpoint::address)
    }

    /// Sets the gauges of connections and online members; notes registration in health.
    pub(super) fn update_gauges(&mut self) {
        self.ops.metrics.peers(self.connections.count());
        for group in self.state.group_names() {
            self.ops
                .metrics
                .online(&group, self.state.subscribers(&group).count());
        }
        self.ops
            .health
            .set_registration(self.unregistered.as_deref());
    }

    /// The STATUS reply: this server, its groups and its health.
    pub(super) fn status(&mut self) -> Reply {
        let now = Instant::now();
        let mut groups = Vec::new();
        // The groups hosted now: those created at runtime or gained in cluster mode included.
        for name in self.state.group_names() {
            let Some(id) = self.state.group_id(&name) else {
                continue;
            };
            let (members, last_seq) = match self.store.load_group(id) {
                Ok(g) => (g.members.len(), g.last_seq),
                Err(err) => {
                    tracing::warn!(%err, group = %name, "cannot read a group for STATUS");
                    (0, 0)
                }
            };
            groups.push(GroupStatus {
                name: name.clone(),
                members,
                online: self.state.subscribers(&name).count(),
                last_seq,
                messages_per_second: self
                    .ops
                    .rates
                    .get_mut(&name)
                    .map_or(0.0, |r| r.per_second(now)),
            });
        }
        let storage_bytes = ["zms.db", "zms.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.ops.data.join(f)).ok())
            .map(|m| m.len())
            .sum();
        let status = GroupServerStatus {
            address: self.address.clone(),
            key: self.state.key().to_string(),
            up_since_ms: self.ops.started_ms,
            problem: self.ops.health.problem(),
            storage_bytes,
            connections: self.connections.count(),
            groups,
        };
        Reply::Status(status.to_json())
    }
}
