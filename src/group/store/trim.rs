//! Retention: deleting a group's oldest chunks, a few at a time, and finding where what is
//! kept begins. Which chunks go is decided by [`chunks_to_trim`]; this file only reads the
//! chunks' summaries and deletes rows. The last chunk is never read for trimming, so a
//! group's last message, and with it its last seq, stays.

use rusqlite::{params, OptionalExtension};

use super::chunk::{chunk_key, MAX_SEQ};
use super::Store;
use crate::group::retention::{chunks_to_trim, ChunkSummary, Policy};
use crate::Result;

impl Store {
    /// Deletes up to `most` of the group's oldest chunks that `policy` lets go at `now_ms`,
    /// inside the open transaction. Returns how many messages went.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn trim(&mut self, group_id: i64, policy: Policy, now_ms: i64, most: usize) -> Result<u64> {
        if policy == Policy::Forever || most == 0 {
            return Ok(0);
        }
        self.write_chunks()?;
        let (lo, hi) = (chunk_key(group_id, 0), chunk_key(group_id, MAX_SEQ));
        let (last_seq, _) = self.last_stored(group_id)?;
        // The oldest chunks but the last: `most` of them and the one after, which may be it.
        let mut rows: Vec<(i64, ChunkSummary)> = self
            .conn
            .prepare_cached(
                "SELECT key, last_seq, last_ts, length(messages) FROM chunks
                 WHERE key BETWEEN ?1 AND ?2 ORDER BY key LIMIT ?3",
            )?
            .query_map(params![lo, hi, most as i64 + 1], |r| {
                Ok((
                    r.get(0)?,
                    ChunkSummary {
                        last_seq: r.get::<_, i64>(1)? as u64,
                        last_ts: r.get(2)?,
                        bytes: r.get::<_, i64>(3)? as u64,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows.retain(|(_, c)| c.last_seq < last_seq);
        rows.truncate(most);
        let total_bytes = if matches!(policy, Policy::Bytes(_)) {
            self.conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(length(messages)), 0) FROM chunks
                     WHERE key BETWEEN ?1 AND ?2",
                )?
                .query_row(params![lo, hi], |r| r.get::<_, i64>(0))? as u64
        } else {
            0
        };
        let summaries: Vec<ChunkSummary> = rows.iter().map(|(_, c)| *c).collect();
        let n = chunks_to_trim(policy, &summaries, last_seq, total_bytes, now_ms);
        let Some(&(key, last)) = rows[..n].last() else {
            return Ok(0);
        };
        let first = self.first_kept(group_id)?;
        self.conn
            .prepare_cached("DELETE FROM chunks WHERE key BETWEEN ?1 AND ?2")?
            .execute(params![lo, key])?;
        super::chat::unindex_through(&self.conn, group_id, last.last_seq)?;
        Ok(last.last_seq + 1 - first)
    }

    /// The group's first stored seq: 1 if nothing was trimmed (or nothing stored), else the
    /// seq after the trimmed ones.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn first_kept(&mut self, group_id: i64) -> Result<u64> {
        self.write_chunks()?;
        let first = self
            .conn
            .prepare_cached(
                "SELECT key FROM chunks WHERE key BETWEEN ?1 AND ?2 ORDER BY key LIMIT 1",
            )?
            .query_row(
                params![chunk_key(group_id, 0), chunk_key(group_id, MAX_SEQ)],
                |r| r.get::<_, i64>(0),
            )
            .optional()?;
        Ok(first.map_or(1, |key| (key as u64 & MAX_SEQ).max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::msg;
    use super::*;

    /// A store with `chunks` transactions of 10 messages each (a chunk each), ts = seq.
    fn store_of(chunks: u64) -> (Store, i64) {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("general", 1).unwrap();
        for c in 0..chunks {
            store.begin().unwrap();
            for seq in c * 10 + 1..=c * 10 + 10 {
                store.append(g.id, &msg(seq, seq as i64), "").unwrap();
            }
            store.commit().unwrap();
        }
        (store, g.id)
    }

    fn trim(store: &mut Store, id: i64, policy: Policy, now_ms: i64, most: usize) -> u64 {
        store.begin().unwrap();
        let n = store.trim(id, policy, now_ms, most).unwrap();
        store.commit().unwrap();
        n
    }

    #[test]
    fn trimming_goes_by_whole_chunks_in_small_steps_and_keeps_the_last() {
        let (mut store, id) = store_of(5);
        assert_eq!(store.first_kept(id).unwrap(), 1);
        assert_eq!(trim(&mut store, id, Policy::Count(15), 0, 1), 10);
        assert_eq!(store.first_kept(id).unwrap(), 11);
        assert_eq!(trim(&mut store, id, Policy::Count(15), 0, 8), 20);
        assert_eq!(trim(&mut store, id, Policy::Count(15), 0, 8), 0);
        assert_eq!(store.first_kept(id).unwrap(), 31);
        let seqs: Vec<u64> = store
            .fetch(id, 0, 0, 100)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, (31..=50).collect::<Vec<_>>());
        // Everything is old, but the last chunk stays, and so the last seq.
        assert_eq!(trim(&mut store, id, Policy::Age(1), 1_000, 8), 10);
        assert_eq!(trim(&mut store, id, Policy::Age(1), 1_000, 8), 0);
        let group = store.load_group(id).unwrap();
        assert_eq!((group.last_seq, store.first_kept(id).unwrap()), (50, 41));
        assert_eq!(trim(&mut store, id, Policy::Bytes(1), 0, 8), 0);
    }

    #[test]
    fn sends_after_trimming_go_on_from_the_last_seq() {
        let (mut store, id) = store_of(3);
        assert_eq!(trim(&mut store, id, Policy::Bytes(1), 0, 8), 20);
        store.begin().unwrap();
        store.append(id, &msg(31, 31), "").unwrap();
        store.commit().unwrap();
        let seqs: Vec<u64> = store
            .fetch(id, 0, 0, 100)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, (21..=31).collect::<Vec<_>>());
        assert_eq!(store.fetch(id, 0, 25, 100).unwrap()[0].seq, 25);
    }
}
