//! The group server's upkeep between requests: retention (which groups trim, and one round
//! of trimming while idle), one step of search indexing while idle, group leases where the
//! store is shared, and what follows an operator's change of groups.

use tracing::{debug, warn};

use super::retention::Policy;
use super::{batch, GroupServer, INDEX_STEP_MESSAGES, TRIM_STEP_CHUNKS};
use crate::Result;

impl GroupServer {
    /// Chooses each hosted group's retention policy.
    pub(super) fn apply_retention(&mut self) {
        let policies = &self.retention_policies;
        self.retention = self
            .state
            .group_names()
            .into_iter()
            .filter_map(|name| {
                let policy = policies.policy(&name);
                let id = self.state.group_id(&name)?;
                (policy != Policy::Forever).then_some((id, name, policy))
            })
            .collect();
        self.trim_due = !self.retention.is_empty();
    }

    /// After an operator created, dropped or changed groups: their retention, the
    /// invitations of a group made private, and the message servers told at once.
    pub(super) fn groups_changed(&mut self) {
        self.ops.metrics.hosting(&self.state.group_names());
        self.apply_retention();
        if self.state.is_secure() {
            batch::restore(&mut self.state, self.store.as_mut());
        }
        self.announce();
    }

    /// Renews this server's hold on its groups where the store is shared, and starts or stops
    /// hosting the groups it gained or lost (before REGISTER, which then lists them).
    pub(super) fn rebalance(&mut self) {
        let balance = match self.store.balance() {
            Ok(balance) => balance,
            Err(err) => {
                warn!(%err, "cannot renew group leases");
                for id in self.store.expire_leases() {
                    self.state.unhost(id);
                }
                return;
            }
        };
        for id in balance.lost {
            self.state.unhost(id);
        }
        if balance.gained.is_empty() {
            return;
        }
        for hosted in balance.gained {
            let id = hosted.group.id;
            self.state.host(hosted.group, hosted.private);
            if let Ok(first) = self.store.first_kept(id) {
                self.state.set_first_kept(id, first);
            }
        }
        self.ops.metrics.hosting(&self.state.group_names());
        if self.state.is_secure() {
            batch::restore(&mut self.state, self.store.as_mut());
        }
    }

    /// One round of retention while no request waits: at most [`TRIM_STEP_CHUNKS`] chunks of
    /// each trimming group, in one transaction. Stops the rounds once one deletes nothing, or
    /// fails (a busy or full store: the next heartbeat tries again).
    pub(super) fn trim_step(&mut self) {
        let now_ms = crate::time::now_ms();
        let mut trimmed = Vec::new();
        let mut round = || -> Result<()> {
            self.store.begin()?;
            for (id, name, policy) in &self.retention {
                match self.store.trim(*id, *policy, now_ms, TRIM_STEP_CHUNKS) {
                    Ok(0) => {}
                    Ok(n) => trimmed.push((*id, name.clone(), n, *policy)),
                    Err(err) => {
                        self.store.rollback();
                        return Err(err);
                    }
                }
            }
            self.store.commit()
        };
        match round() {
            Ok(()) => {
                for (id, group, n, policy) in &trimmed {
                    debug!(group, messages = n, keep = %policy, "trimmed");
                    self.ops.metrics.trimmed(group, *n);
                    match self.store.first_kept(*id) {
                        Ok(first) => self.state.set_first_kept(*id, first),
                        Err(err) => warn!(%err, "cannot read where kept history starts"),
                    }
                }
                self.trim_due = !trimmed.is_empty();
            }
            Err(err) => {
                warn!(%err, "trimming failed; retrying at the next heartbeat");
                self.trim_due = false;
            }
        }
    }

    /// One step of search indexing while no request waits (and no write has come for a
    /// moment, or at a heartbeat while writes never pause): at most [`INDEX_STEP_MESSAGES`]
    /// stored messages the index has not seen, in one transaction. Stops the steps once the
    /// index has seen everything, or on a failure (a busy or full store: the next heartbeat
    /// tries again; a SEARCH indexes its group's rest itself meanwhile).
    pub(super) fn index_step(&mut self) {
        match self.store.index_step(INDEX_STEP_MESSAGES) {
            Ok(more) => {
                self.index_due = more;
                self.unindexed = match more {
                    true => self.unindexed.saturating_sub(INDEX_STEP_MESSAGES),
                    false => 0,
                };
            }
            Err(err) => {
                warn!(%err, "search indexing failed; retrying at the next heartbeat");
                self.index_due = false;
            }
        }
    }
}
