//! The search index and read positions: the `search` FTS5 table, kept in step with the
//! messages in the transaction that appends them, and the `reads` table.

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

/// Brings the index up to date with one appended message: a plain one is added, an edit
/// replaces its original's text, a deletion takes its original out.
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

/// Indexes every stored message, in seq order (the step to layout 3).
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

    /// Up to `limit` of the group's indexed messages with `ts >= since_ms` that hold every
    /// word of `query`, newest first, with the matched words' places.
    ///
    /// # Errors
    /// The SQLite error.
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
        store.drop_group(rust.id).unwrap();
        let fresh = store.add_group("rust", false, 2).unwrap();
        assert!(store.search(fresh.id, "ferris", 0, 10).unwrap().is_empty());
        assert_eq!(store.read_position(fresh.id, "bob").unwrap(), 0);
    }

    #[test]
    fn highlights_become_byte_ranges() {
        assert_eq!(
            split_highlights("a \u{2}lünch\u{3} b \u{2}x\u{3}"),
            ("a lünch b x".to_string(), vec![(2, 8), (11, 12)])
        );
    }
}
