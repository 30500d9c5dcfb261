//! The search index and read positions: the `search` FTS5 table with `search_progress`, and
//! the `reads` table.
//!
//! Appends do not touch the index, so a send pays nothing for it. The index follows the stored
//! messages instead: `search_progress` holds each group's last seq the index has seen, and
//! [`Store::index_step`] indexes a bounded number of committed messages past it, which the group
//! server calls while idle. [`Store::search`] first indexes whatever of its group is left, so a
//! search sees every message committed before it.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::chunk::{self, chunk_key, MAX_SEQ};
use super::Store;
use crate::protocol::edit::{self, Change};
use crate::protocol::{Hit, Message};
use crate::Result;

/// Marks FTS5's `highlight()` puts around each matched word: control characters no stored
/// text holds (SEND refuses them), taken out again by [`split_highlights`].
const OPEN: char = '\u{2}';
const CLOSE: char = '\u{3}';

/// Brings the index up to date with one stored message: a plain one is added, an edit
/// replaces its original's text, a deletion takes its original out. Messages go in seq order,
/// so an edit or deletion finds its original indexed (unless retention trimmed it).
pub(super) fn index(conn: &Connection, group_id: i64, message: &Message) -> Result<()> {
    match edit::parse(&message.text) {
        None => {
            conn.prepare_cached(
                "INSERT INTO search (rowid, text, sender, ts) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                chunk_key(group_id, message.seq),
                message.text,
                message.sender,
                message.ts
            ])?;
        }
        Some(Change::Edit { seq, text }) => {
            conn.prepare_cached("UPDATE search SET text = ?2 WHERE rowid = ?1")?
                .execute(params![chunk_key(group_id, seq), text])?;
        }
        Some(Change::Delete { seq }) => {
            conn.prepare_cached("DELETE FROM search WHERE rowid = ?1")?
                .execute([chunk_key(group_id, seq)])?;
        }
    }
    Ok(())
}

/// Indexes every stored message, in seq order (the step to layout 4).
pub(super) fn index_stored(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare("SELECT key, messages FROM chunks ORDER BY key")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key: i64 = row.get(0)?;
        let group_id = key >> 40;
        let bytes = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        for message in chunk::decode_stored(group_id, key, bytes, 0, usize::MAX)? {
            index(conn, group_id, &message)?;
        }
    }
    Ok(())
}

/// Takes the group's messages up to `last_seq` out of the index (retention trimmed them).
pub(super) fn unindex_through(conn: &Connection, group_id: i64, last_seq: u64) -> Result<()> {
    conn.prepare_cached("DELETE FROM search WHERE rowid BETWEEN ?1 AND ?2")?
        .execute(params![
            chunk_key(group_id, 0),
            chunk_key(group_id, last_seq)
        ])?;
    Ok(())
}

/// How far the index has seen the group: its last seq indexed, 0 if none.
fn progress(conn: &Connection, group_id: i64) -> Result<u64> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM search_progress WHERE group_id = ?1")?
        .query_row([group_id], |r| r.get(0))
        .optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

/// Indexes up to `budget` of the group's stored messages after seq `after`, up to seq `last`,
/// in seq order, and moves the group's progress to the last one indexed; retention's trimmed
/// messages are skipped (their chunks are gone). Returns how many were indexed and whether the
/// group is then indexed through `last`.
fn index_group(
    conn: &Connection,
    group_id: i64,
    after: u64,
    last: u64,
    budget: usize,
) -> Result<(usize, bool)> {
    let first = after + 1;
    // From the chunk holding `first` (or the first kept after it) on, as `Store::fetch` reads.
    let mut stmt = conn.prepare_cached(chunk::CHUNKS_FROM)?;
    let mut rows = stmt.query(params![
        chunk_key(group_id, 0),
        chunk_key(group_id, first.min(MAX_SEQ)),
        chunk_key(group_id, last.min(MAX_SEQ))
    ])?;
    let (mut indexed, mut seen) = (0, after);
    while indexed < budget {
        let Some(row) = rows.next()? else {
            // Every stored message through `last` is indexed.
            seen = last;
            break;
        };
        let key: i64 = row.get(0)?;
        let bytes = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        let most = (budget - indexed).min((last - seen) as usize);
        for message in chunk::decode_stored(group_id, key, bytes, first, most)? {
            if message.seq > last {
                break;
            }
            index(conn, group_id, &message)?;
            indexed += 1;
            seen = message.seq;
        }
        if seen >= last {
            break;
        }
    }
    drop(rows);
    if seen > after {
        conn.prepare_cached(
            "INSERT INTO search_progress (group_id, seq) VALUES (?1, ?2)
             ON CONFLICT (group_id) DO UPDATE SET seq = excluded.seq",
        )?
        .execute(params![group_id, seen as i64])?;
    }
    Ok((indexed, seen >= last))
}

/// A user's words as an FTS5 query that matches messages holding every one of them: each word
/// quoted, so nothing the user types is FTS5 syntax.
fn fts_query(query: &str) -> String {
    query
        .split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text of `highlight()`'s answer without its marks, and the byte ranges they enclosed.
pub fn split_highlights(marked: &str) -> (String, Vec<(u32, u32)>) {
    let mut text = String::with_capacity(marked.len());
    let mut matches = Vec::new();
    let mut start = None;
    for c in marked.chars() {
        match c {
            OPEN => start = Some(text.len() as u32),
            CLOSE => {
                if let Some(start) = start.take() {
                    matches.push((start, text.len() as u32));
                }
            }
            c => text.push(c),
        }
    }
    (text, matches)
}

impl Store {
    /// Indexes up to `budget` committed messages the index has not seen yet, each group's in
    /// seq order, in one transaction with their groups' progress (a savepoint of the open one,
    /// if a transaction is open). Messages of an open transaction wait for its commit. The
    /// group server calls this while idle, a step at a time, so a send waits behind one step
    /// at most, never a backlog. Returns whether messages remain to index.
    ///
    /// # Errors
    /// The SQLite error (nothing of the step is kept), or a stored chunk that does not decode.
    pub fn index_step(&mut self, budget: usize) -> Result<bool> {
        let behind = self.behind()?;
        if behind.is_empty() || budget == 0 {
            return Ok(!behind.is_empty());
        }
        self.in_transaction(|conn| {
            let mut left = budget;
            let mut done = 0;
            for &(group_id, after, last) in &behind {
                let (indexed, finished) = index_group(conn, group_id, after, last, left)?;
                left -= indexed;
                done += usize::from(finished);
                if left == 0 {
                    break;
                }
            }
            Ok(done < behind.len())
        })
    }

    /// Indexes every committed message of the group the index has not seen, at once.
    fn catch_up(&mut self, group_id: i64) -> Result<()> {
        let last = self.last_seqs.get(&group_id).copied().unwrap_or(0);
        let after = progress(&self.conn, group_id)?;
        if after >= last {
            return Ok(());
        }
        self.in_transaction(|conn| index_group(conn, group_id, after, last, usize::MAX))?;
        Ok(())
    }

    /// The groups whose committed messages the index has not all seen, in id order: each with
    /// its progress and last committed seq.
    fn behind(&self) -> Result<Vec<(i64, u64, u64)>> {
        let mut seen: HashMap<i64, u64> = HashMap::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT group_id, seq FROM search_progress")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            seen.insert(row.get(0)?, row.get::<_, i64>(1)? as u64);
        }
        let mut behind: Vec<(i64, u64, u64)> = self
            .last_seqs
            .iter()
            .map(|(&id, &last)| (id, seen.get(&id).copied().unwrap_or(0), last))
            .filter(|&(_, after, last)| after < last)
            .collect();
        behind.sort_unstable();
        Ok(behind)
    }

    /// Runs `f` in a transaction of its own (`BEGIN IMMEDIATE`, as [`Store::begin`]), or in a
    /// savepoint of the open one, leaving nothing of it behind if it fails.
    fn in_transaction<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let own = self.conn.is_autocommit();
        let (start, keep, undo) = match own {
            true => ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"),
            false => (
                "SAVEPOINT indexing",
                "RELEASE indexing",
                "ROLLBACK TO indexing; RELEASE indexing",
            ),
        };
        self.conn.prepare_cached(start)?.execute([])?;
        let done = f(&self.conn).and_then(|value| {
            self.conn.prepare_cached(keep)?.execute([])?;
            Ok(value)
        });
        if done.is_err() && (!own || !self.conn.is_autocommit()) {
            let _ = self.conn.execute_batch(undo);
        }
        done
    }

    /// Moves `user`'s read position in the group to `seq`, unless it is past it already.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn set_read(&mut self, group_id: i64, user: &str, seq: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO reads (group_id, user, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_id, user) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?
            .execute(params![group_id, user, seq as i64])?;
        Ok(())
    }

    /// How far `user` has read the group: 0 if never.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn read_position(&mut self, group_id: i64, user: &str) -> Result<u64> {
        let seq: Option<i64> = self
            .conn
            .prepare_cached("SELECT seq FROM reads WHERE group_id = ?1 AND user = ?2")?
            .query_row(params![group_id, user], |r| r.get(0))
            .optional()?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// Up to `limit` of the group's messages with `ts >= since_ms` that hold every word of
    /// `query`, newest first, with the matched words' places. The group's committed messages
    /// the index has not seen yet are indexed first, so every one is searched; those of an
    /// open transaction are not.
    ///
    /// # Errors
    /// The SQLite error (indexing the rest writes, so a full or locked store can fail it), or
    /// a stored chunk that does not decode.
    pub fn search(
        &mut self,
        group_id: i64,
        query: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Hit>> {
        let fts = fts_query(query);
        if fts.is_empty() {
            return Ok(Vec::new());
        }
        self.catch_up(group_id)?;
        // ts never decreases along seq: a time bound is a rowid bound.
        let first = match since_ms > 0 {
            true => match self.first_since(group_id, since_ms)? {
                Some(seq) => seq,
                None => return Ok(Vec::new()),
            },
            false => 0,
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, ts, sender, highlight(search, 0, char(2), char(3)) FROM search
             WHERE search MATCH ?1 AND rowid BETWEEN ?2 AND ?3
             ORDER BY rowid DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                fts,
                chunk_key(group_id, first),
                chunk_key(group_id, MAX_SEQ),
                limit
            ],
            |r| {
                let (text, matches) = split_highlights(&r.get::<_, String>(3)?);
                Ok(Hit {
                    seq: r.get::<_, i64>(0)? as u64 & MAX_SEQ,
                    ts: r.get(1)?,
                    sender: r.get(2)?,
                    text,
                    matches,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(seq: u64, sender: &str, text: &str) -> Message {
        Message {
            seq,
            ts: seq as i64 * 10,
            sender: sender.into(),
            text: text.into(),
        }
    }

    /// A hit's seq, text and matches.
    type Seen<'a> = (u64, &'a str, &'a [(u32, u32)]);

    #[test]
    fn search_finds_latest_texts_newest_first_within_a_group() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("general", 1).unwrap();
        let other = store.ensure_group("other", 1).unwrap();
        store.begin().unwrap();
        for m in [
            said(1, "alice", "Lunch at noon?"),
            said(2, "bob", "lunch sounds good"),
            said(3, "alice", "dinner instead"),
            said(4, "bob", &edit::edit_text(3, "lunch and dinner")),
            said(5, "bob", &edit::delete_text(2)),
        ] {
            store.append(g.id, &m, "").unwrap();
        }
        store
            .append(other.id, &said(1, "eve", "lunch elsewhere"), "")
            .unwrap();
        store.commit().unwrap();
        let hits = store.search(g.id, "LUNCH", 0, 10).unwrap();
        let seen: Vec<Seen> = hits
            .iter()
            .map(|h| (h.seq, h.text.as_str(), h.matches.as_slice()))
            .collect();
        assert_eq!(
            seen,
            [
                (3, "lunch and dinner", &[(0, 5)][..]),
                (1, "Lunch at noon?", &[(0, 5)][..])
            ]
        );
        assert_eq!(hits[1].sender, "alice");
        assert_eq!(hits[1].ts, 10);
        // Both words, any order; a time bound; FTS5 syntax is taken as words.
        assert_eq!(store.search(g.id, "dinner lunch", 0, 10).unwrap().len(), 1);
        assert_eq!(store.search(g.id, "lunch", 20, 10).unwrap().len(), 1);
        assert!(store
            .search(g.id, "\"lunch OR (", 0, 10)
            .unwrap()
            .is_empty());
        assert_eq!(store.search(g.id, "lunch", 0, 1).unwrap()[0].seq, 3);
    }

    #[test]
    fn a_read_position_only_moves_forward_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), super::super::Durability::Process).unwrap();
        let g = store.ensure_group("general", 1).unwrap();
        assert_eq!(store.read_position(g.id, "alice").unwrap(), 0);
        store.set_read(g.id, "alice", 7).unwrap();
        store.set_read(g.id, "alice", 3).unwrap();
        store.set_read(g.id, "bob", 2).unwrap();
        drop(store);
        let mut store = Store::open(dir.path(), super::super::Durability::Process).unwrap();
        assert_eq!(store.read_position(g.id, "alice").unwrap(), 7);
        assert_eq!(store.read_position(g.id, "bob").unwrap(), 2);
    }

    #[test]
    fn a_dropped_group_leaves_no_hits_or_read_positions_to_a_new_one() {
        let mut store = Store::open_in_memory().unwrap();
        let rust = store.add_group("rust", false, 1).unwrap();
        store.begin().unwrap();
        store
            .append(rust.id, &said(1, "bob", "ferris"), "")
            .unwrap();
        store.commit().unwrap();
        store.set_read(rust.id, "bob", 1).unwrap();
        assert_eq!(store.search(rust.id, "ferris", 0, 10).unwrap().len(), 1);
        store.drop_group(rust.id).unwrap();
        let fresh = store.add_group("rust", false, 2).unwrap();
        assert!(store.search(fresh.id, "ferris", 0, 10).unwrap().is_empty());
        assert_eq!(store.read_position(fresh.id, "bob").unwrap(), 0);
        // The new group's first message is indexed: the old one's progress went with it.
        store.begin().unwrap();
        store.append(fresh.id, &said(1, "bob", "crab"), "").unwrap();
        store.commit().unwrap();
        assert_eq!(store.search(fresh.id, "crab", 0, 10).unwrap().len(), 1);
    }

    /// A store in a file of its own, as the server opens it.
    fn file_store(dir: &tempfile::TempDir) -> Store {
        Store::open(dir.path(), super::super::Durability::Process).unwrap()
    }

    /// Messages in the index, of every group.
    fn indexed(store: &Store) -> i64 {
        store
            .conn
            .query_row("SELECT count(*) FROM search", [], |r| r.get(0))
            .unwrap()
    }

    fn seqs(hits: &[Hit]) -> Vec<u64> {
        hits.iter().map(|h| h.seq).collect()
    }

    fn append_all(store: &mut Store, group_id: i64, messages: &[Message]) {
        store.begin().unwrap();
        for m in messages {
            store.append(group_id, m, "").unwrap();
        }
        store.commit().unwrap();
    }

    #[test]
    fn appends_leave_the_index_alone_and_a_search_right_after_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = file_store(&dir);
        let g = store.ensure_group("general", 1).unwrap();
        append_all(
            &mut store,
            g.id,
            &[said(1, "alice", "lunch?"), said(2, "bob", "lunch!")],
        );
        // A send outside a batch's transaction, as well.
        store
            .append(g.id, &said(3, "carol", "no lunch"), "")
            .unwrap();
        assert_eq!(indexed(&store), 0, "appends do not index");
        assert_eq!(
            seqs(&store.search(g.id, "lunch", 0, 10).unwrap()),
            [3, 2, 1]
        );
        assert_eq!(indexed(&store), 3);
        assert!(!store.index_step(100).unwrap(), "nothing left to index");
    }

    #[test]
    fn index_steps_are_bounded_and_say_when_the_index_has_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = file_store(&dir);
        let g = store.ensure_group("general", 1).unwrap();
        let other = store.ensure_group("other", 1).unwrap();
        let texts: Vec<Message> = (1..=5).map(|seq| said(seq, "alice", "word")).collect();
        append_all(&mut store, g.id, &texts);
        append_all(&mut store, other.id, &texts[..2]);
        assert!(store.index_step(3).unwrap());
        assert_eq!(indexed(&store), 3);
        assert!(store.index_step(3).unwrap());
        assert_eq!(indexed(&store), 6);
        assert!(!store.index_step(3).unwrap(), "the last one indexed");
        assert_eq!(indexed(&store), 7);
        assert!(!store.index_step(3).unwrap());
        assert_eq!(
            seqs(&store.search(other.id, "word", 0, 10).unwrap()),
            [2, 1]
        );
        // An open transaction's messages wait for its commit.
        store.begin().unwrap();
        store.append(g.id, &said(6, "bob", "word"), "").unwrap();
        assert!(!store.index_step(3).unwrap());
        assert_eq!(indexed(&store), 7);
        store.commit().unwrap();
        assert!(!store.index_step(3).unwrap());
        assert_eq!(indexed(&store), 8);
        // A search inside one indexes the committed messages only, even once the open
        // transaction's are written (a read writes them), and what it indexed goes if the
        // transaction does.
        append_all(&mut store, g.id, &[said(7, "bob", "word")]);
        store.begin().unwrap();
        store.append(g.id, &said(8, "bob", "word"), "").unwrap();
        assert_eq!(store.fetch(g.id, 0, 0, 100).unwrap().len(), 8);
        assert_eq!(store.search(g.id, "word", 0, 1).unwrap()[0].seq, 7);
        assert_eq!(indexed(&store), 9);
        store.rollback();
        assert_eq!(indexed(&store), 8);
        assert_eq!(store.search(g.id, "word", 0, 1).unwrap()[0].seq, 7);
        assert!(!store.index_step(3).unwrap());
        assert_eq!(indexed(&store), 9);
    }

    #[test]
    fn edits_and_deletions_indexed_after_their_originals_change_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = file_store(&dir);
        let g = store.ensure_group("general", 1).unwrap();
        append_all(
            &mut store,
            g.id,
            &[said(1, "alice", "helo wrold"), said(2, "bob", "typo here")],
        );
        assert!(!store.index_step(10).unwrap());
        append_all(
            &mut store,
            g.id,
            &[
                said(3, "alice", &edit::edit_text(1, "hello world")),
                said(4, "bob", &edit::delete_text(2)),
                said(5, "carol", "a world"),
                said(6, "carol", &edit::edit_text(5, "a planet")),
            ],
        );
        // One message a step: each change comes in a step after its original's.
        for _ in 0..3 {
            assert!(store.index_step(1).unwrap());
        }
        assert!(!store.index_step(1).unwrap());
        assert!(store.search(g.id, "wrold", 0, 10).unwrap().is_empty());
        assert!(store.search(g.id, "typo", 0, 10).unwrap().is_empty());
        let hits = store.search(g.id, "world", 0, 10).unwrap();
        assert_eq!(
            (seqs(&hits), hits[0].text.as_str()),
            (vec![1], "hello world")
        );
        assert_eq!(seqs(&store.search(g.id, "planet", 0, 10).unwrap()), [5]);
        assert_eq!(indexed(&store), 2, "the originals left, no changes");
    }

    #[test]
    fn trimmed_messages_the_index_never_saw_are_skipped() {
        use crate::group::retention::Policy;
        let dir = tempfile::tempdir().unwrap();
        let mut store = file_store(&dir);
        let g = store.ensure_group("general", 1).unwrap();
        // Three chunks of ten; the first indexed, the second not.
        for chunk in 0..3 {
            let messages: Vec<Message> = (chunk * 10 + 1..=chunk * 10 + 10)
                .map(|seq| said(seq, "alice", "word"))
                .collect();
            append_all(&mut store, g.id, &messages);
            if chunk == 0 {
                assert!(!store.index_step(100).unwrap());
            }
        }
        store.begin().unwrap();
        assert_eq!(store.trim(g.id, Policy::Count(10), 0, 8).unwrap(), 20);
        store.commit().unwrap();
        assert_eq!(indexed(&store), 0, "trimming took out what was indexed");
        assert!(store.index_step(5).unwrap());
        assert!(!store.index_step(100).unwrap());
        let hits = store.search(g.id, "word", 0, 100).unwrap();
        assert_eq!(seqs(&hits), (21..=30).rev().collect::<Vec<_>>());
        assert_eq!(indexed(&store), 10);
    }

    #[test]
    fn a_store_of_layout_4_keeps_its_index_and_goes_on_indexing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = file_store(&dir);
        let g = store.ensure_group("general", 1).unwrap();
        let quiet = store.ensure_group("quiet", 1).unwrap();
        append_all(
            &mut store,
            g.id,
            &[said(1, "alice", "lunch?"), said(2, "bob", "lunch!")],
        );
        assert!(!store.index_step(100).unwrap());
        // What layout 4 left: every stored message indexed, no progress table.
        store
            .conn
            .execute_batch("DROP TABLE search_progress; PRAGMA user_version = 4")
            .unwrap();
        drop(store);
        let mut store = file_store(&dir);
        let progress: Vec<(i64, i64)> = store
            .conn
            .prepare("SELECT group_id, seq FROM search_progress ORDER BY group_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(progress, [(g.id, 2)], "each group that holds messages");
        assert!(!store.index_step(100).unwrap(), "nothing indexed twice");
        assert_eq!(seqs(&store.search(g.id, "lunch", 0, 10).unwrap()), [2, 1]);
        append_all(&mut store, g.id, &[said(3, "carol", "lunch.")]);
        append_all(&mut store, quiet.id, &[said(1, "dan", "lunch")]);
        assert!(!store.index_step(100).unwrap());
        assert_eq!(
            seqs(&store.search(g.id, "lunch", 0, 10).unwrap()),
            [3, 2, 1]
        );
        assert_eq!(seqs(&store.search(quiet.id, "lunch", 0, 10).unwrap()), [1]);
        assert_eq!(indexed(&store), 4);
    }

    #[test]
    fn highlights_become_byte_ranges() {
        assert_eq!(
            split_highlights("a \u{2}lünch\u{3} b \u{2}x\u{3}"),
            ("a lünch b x".to_string(), vec![(2, 8), (11, 12)])
        );
    }
}
