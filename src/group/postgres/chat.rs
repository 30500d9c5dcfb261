//! Read positions, edits and SEARCH in PostgreSQL: `reads`, `changed` (each edited or deleted
//! message's latest state) and full-text search with `to_tsvector('simple', …)`.

use postgres::Client;

use crate::protocol::edit::{self, Change};
use crate::protocol::Hit;
use crate::Result;

/// Records what an appended message changes, if it is an edit or a deletion: a deletion is
/// final, so a later edit of a deleted message changes nothing.
pub(super) fn record_change(client: &mut Client, group_id: i64, text: &str) -> Result<()> {
    let (seq, text, deleted) = match edit::parse(text) {
        None => return Ok(()),
        Some(Change::Edit { seq, text }) => (seq, text, false),
        Some(Change::Delete { seq }) => (seq, "", true),
    };
    client.execute(
        "INSERT INTO changed (group_id, seq, text, deleted) VALUES ($1, $2, $3, $4)
         ON CONFLICT (group_id, seq) DO UPDATE SET text = excluded.text, deleted = excluded.deleted
         WHERE NOT changed.deleted",
        &[&group_id, &(seq as i64), &text, &deleted],
    )?;
    Ok(())
}

/// Moves `user`'s read position to `seq`, unless it is past it already.
pub(super) fn set_read(client: &mut Client, group_id: i64, user: &str, seq: u64) -> Result<()> {
    client.execute(
        "INSERT INTO reads (group_id, username, seq) VALUES ($1, $2, $3)
         ON CONFLICT (group_id, username) DO UPDATE SET seq = GREATEST(reads.seq, excluded.seq)",
        &[&group_id, &user, &(seq as i64)],
    )?;
    Ok(())
}

/// How far `user` has read the group: 0 if never.
pub(super) fn read_position(client: &mut Client, group_id: i64, user: &str) -> Result<u64> {
    let row = client.query_opt(
        "SELECT seq FROM reads WHERE group_id = $1 AND username = $2",
        &[&group_id, &user],
    )?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
}

/// Messages of the group since `since_ms` whose latest text holds every word of `query`,
/// newest first; the edits and deletions themselves, and deleted messages, are left out.
pub(super) fn search(
    client: &mut Client,
    group_id: i64,
    query: &str,
    since_ms: i64,
    limit: u32,
) -> Result<Vec<Hit>> {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    if words.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client.query(
        "SELECT m.seq, m.ts, m.sender, COALESCE(c.text, m.text) FROM messages m
         LEFT JOIN changed c ON c.group_id = m.group_id AND c.seq = m.seq
         WHERE m.group_id = $1 AND m.ts >= $2 AND left(m.text, 1) <> chr(1)
           AND NOT COALESCE(c.deleted, FALSE)
           AND ((c.text IS NULL AND to_tsvector('simple', m.text) @@ plainto_tsquery('simple', $3))
             OR to_tsvector('simple', c.text) @@ plainto_tsquery('simple', $3))
         ORDER BY m.seq DESC LIMIT $4",
        &[&group_id, &since_ms, &words.join(" "), &i64::from(limit)],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let text: String = r.get(3);
            Hit {
                seq: r.get::<_, i64>(0) as u64,
                ts: r.get(1),
                sender: r.get(2),
                matches: word_matches(&text, &words),
                text,
            }
        })
        .collect())
}

/// The byte ranges of `text`'s words that are one of `words` (lower case), as the client
/// highlights them.
pub fn word_matches(text: &str, words: &[String]) -> Vec<(u32, u32)> {
    let mut matches = Vec::new();
    let mut start = None;
    let ends = text.char_indices().map(Some).chain([None]);
    for item in ends {
        match (item, start) {
            (Some((at, c)), None) if c.is_alphanumeric() => start = Some(at),
            (Some((_, c)), Some(_)) if c.is_alphanumeric() => {}
            (item, Some(from)) => {
                let end = item.map_or(text.len(), |(at, _)| at);
                if words.contains(&text[from..end].to_lowercase()) {
                    matches.push((from as u32, end as u32));
                }
                start = None;
            }
            _ => {}
        }
    }
    matches
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_found_whole_whatever_their_case() {
        let words = ["lunch".to_string()];
        assert_eq!(
            super::word_matches("Lunch? lunchbox, LUNCH", &words),
            [(0, 5), (17, 22)]
        );
    }
}
