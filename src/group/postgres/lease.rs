//! Group ownership among the group servers sharing one database: a lease per group, kept in
//! its `groups` row as `owner`, `epoch` and `lease_until` (the database's clock).
//!
//! Every heartbeat a server renews its leases, learns which it lost (another server raised the
//! epoch), and claims expired or free groups up to its fair share: the groups divided by the
//! live servers (`servers` rows renewed with the leases), rounded up. A server over its share
//! hands the excess back, so one that joins later takes its part. A lease only decides who may
//! write: the epoch check in every append ([`super::PgStore`]) is what keeps a paused owner
//! from writing after another has taken over.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::PgStore;
use crate::group::storage::{Balance, Hosted, Storage};
use crate::Result;

/// Renews this server's leases, claims its share of the groups and hands back any excess.
///
/// # Errors
/// PostgreSQL's error; the leases held stay as they were (they expire if it lasts).
pub fn balance(store: &mut PgStore) -> Result<Balance> {
    let ttl_ms = store.lease_ttl.as_millis() as i64;
    let mut balance = Balance::default();
    let started = Instant::now();
    store.client.execute(
        "INSERT INTO servers (owner, alive_until) VALUES ($1, now() + $2 * interval '1 millisecond')
         ON CONFLICT (owner) DO UPDATE SET alive_until = EXCLUDED.alive_until",
        &[&store.owner, &(ttl_ms as f64)],
    )?;
    // Renewed only where the epoch is still ours: a group claimed meanwhile is lost.
    let (ids, epochs): (Vec<i64>, Vec<i64>) = store.leases.iter().map(|(k, v)| (*k, *v)).unzip();
    let renewed: HashSet<i64> = store
        .client
        .query(
            "UPDATE groups g SET lease_until = now() + $4 * interval '1 millisecond'
             FROM unnest($2::bigint[], $3::bigint[]) AS l(id, epoch)
             WHERE g.id = l.id AND g.epoch = l.epoch AND g.owner = $1 RETURNING g.id",
            &[&store.owner, &ids, &epochs, &(ttl_ms as f64)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in ids.iter().filter(|id| !renewed.contains(id)) {
        store.leases.remove(id);
        balance.lost.push(*id);
    }
    store.renewed_at = Some(started);
    let row = store.client.query_one(
        "SELECT (SELECT count(*) FROM groups), (SELECT count(*) FROM servers WHERE alive_until > now())",
        &[],
    )?;
    let (groups, servers): (i64, i64) = (row.get(0), row.get(1));
    let share = (groups as usize).div_ceil(servers.max(1) as usize);
    if store.leases.len() > share {
        // Hand back the newest groups of this server: the oldest stay where their users are.
        let mut held: Vec<i64> = store.leases.keys().copied().collect();
        held.sort_unstable();
        for id in held.split_off(share) {
            let epoch = store.leases.remove(&id).unwrap_or_default();
            store.client.execute(
                "UPDATE groups SET owner = NULL, lease_until = NULL
                 WHERE id = $1 AND owner = $2 AND epoch = $3",
                &[&id, &store.owner, &epoch],
            )?;
            balance.lost.push(id);
        }
    }
    while store.leases.len() < share {
        // One at a time, each claim its own statement: two servers claiming at once each get
        // a different group (SKIP LOCKED), never the same one twice.
        let claimed = store.client.query_opt(
            "UPDATE groups SET owner = $1, epoch = epoch + 1,
                 lease_until = now() + $2 * interval '1 millisecond'
             WHERE id = (SELECT id FROM groups
                         WHERE owner IS NULL OR lease_until IS NULL OR lease_until < now()
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, epoch, private",
            &[&store.owner, &(ttl_ms as f64)],
        )?;
        let Some(row) = claimed else { break };
        let id: i64 = row.get(0);
        store.leases.insert(id, row.get(1));
        let group = store.load_group(id)?;
        tracing::info!(group = %group.name, epoch = row.get::<_, i64>(1), "lease claimed");
        balance.gained.push(Hosted {
            group,
            private: row.get(2),
        });
    }
    Ok(balance)
}

/// The leases this server could not renew in time (the database unreachable): it gives
/// them up, so that it never serves a group that another server may have claimed. They
/// count as held until one heartbeat before they could expire.
pub fn expire(store: &mut PgStore) -> Vec<i64> {
    let margin = Duration::from_millis(crate::protocol::HEARTBEAT_MS);
    let valid_for = store.lease_ttl.saturating_sub(margin);
    match store.renewed_at {
        Some(at) if at.elapsed() < valid_for => Vec::new(),
        _ if store.leases.is_empty() => Vec::new(),
        _ => {
            tracing::warn!(
                groups = store.leases.len(),
                "leases not renewed in time; no longer serving their groups"
            );
            store.leases.drain().map(|(id, _)| id).collect()
        }
    }
}

/// Gives every lease back and leaves the list of live servers, so others take the groups at
/// once rather than after the leases expire.
///
/// # Errors
/// PostgreSQL's error.
pub fn release_all(store: &mut PgStore) -> Result<()> {
    store.leases.clear();
    store.client.execute(
        "UPDATE groups SET owner = NULL, lease_until = NULL WHERE owner = $1",
        &[&store.owner],
    )?;
    store
        .client
        .execute("DELETE FROM servers WHERE owner = $1", &[&store.owner])?;
    Ok(())
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Err(err) = release_all(self) {
            tracing::warn!(%err, "cannot hand the leases back; they expire instead");
        }
    }
}
