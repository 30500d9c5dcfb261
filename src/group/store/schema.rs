//! The database's tables, and the version of their layout, kept in SQLite's `user_version`.
//!
//! A new database (version 0: SQLite's own start) gets [`TABLES`] at the current version (1,
//! and one more for each of [`MIGRATIONS`], so 5). One of an earlier version is brought up to date by [`MIGRATIONS`], in the transaction that
//! opens it, so a store is never half moved. One of a later version, written by a newer zms,
//! is refused: its rows may mean what this version would misread.

use std::path::Path;

use rusqlite::Connection;

use super::chunk::{MAX_SEQ, SEQ_BITS};
use crate::{errinput, Result};

/// A step from one version of the layout to the next, run inside the opening transaction.
type Migration = fn(&Connection) -> Result<()>;

/// The steps from each version to the next, in order: `MIGRATIONS[0]` brings version 1 to 2.
/// A change of layout adds its step here and changes [`TABLES`] to the layout the steps end in.
const MIGRATIONS: &[Migration] = &[
    // 1 → 2: bans (as in TABLES).
    |conn| {
        Ok(conn.execute_batch(
            "CREATE TABLE bans (
                group_id  INTEGER NOT NULL,
                user      TEXT NOT NULL,
                banned_ms INTEGER NOT NULL,
                PRIMARY KEY (group_id, user)
            ) WITHOUT ROWID;",
        )?)
    },
    // 2 → 3: group_settings (a new database gets it after TABLES).
    |conn| Ok(conn.execute_batch(GROUP_SETTINGS)?),
    // 3 → 4: the search index and read positions (as in TABLES), the index filled from the
    // messages stored so far.
    |conn| {
        conn.execute_batch(CHAT_TABLES)?;
        super::chat::index_stored(conn)
    },
    // 4 → 5: search_progress (as in TABLES). Layout 4 indexed each message as it was stored,
    // so the index has seen every group through its last stored seq.
    |conn| {
        conn.execute_batch(SEARCH_PROGRESS)?;
        conn.execute(
            "INSERT INTO search_progress (group_id, seq)
             SELECT id, last_seq FROM (
                 SELECT id, (SELECT last_seq FROM chunks WHERE key BETWEEN id << ?1
                             AND (id << ?1) + ?2 ORDER BY key DESC LIMIT 1) AS last_seq
                 FROM groups)
             WHERE last_seq IS NOT NULL",
            rusqlite::params![SEQ_BITS, MAX_SEQ as i64],
        )?;
        Ok(())
    },
];

/// What an operator set of a group at runtime: `added`, made by CREATE (hosted at every start,
/// whatever the flags say); `private`, set by CREATE or SET (it wins over `--private`; NULL:
/// as the flags say).
const GROUP_SETTINGS: &str = "
CREATE TABLE group_settings (
    group_id INTEGER PRIMARY KEY,
    added    INTEGER NOT NULL DEFAULT 0,
    private  INTEGER
);
";

/// The tables version 4 added: the search index and read positions.
const CHAT_TABLES: &str = "
-- The latest text of every message that is not an edit, a deletion or deleted, for SEARCH
-- (FTS5, words as Unicode sees them, accents ignored). The rowid is the chunk key's form of
-- (group, seq): group_id << 40 | seq, so a group's hits are a rowid range, newest first.
-- detail=none and columnsize=0: the index records which messages hold a word, not where, nor
-- how long each text is (SEARCH matches words and orders by seq, not by rank), which makes it
-- several times cheaper to write.
CREATE VIRTUAL TABLE search USING fts5(
    text, sender UNINDEXED, ts UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2', detail = none, columnsize = 0
);
-- How far each member has read each group (READ), only ever moved forward.
CREATE TABLE reads (
    group_id INTEGER NOT NULL,
    user     TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (group_id, user)
) WITHOUT ROWID;
";

/// The table version 5 added: how far the search index has followed each group.
const SEARCH_PROGRESS: &str = "
-- Each group's last seq the search index has seen: appends leave the index alone, and it is
-- brought up to this group's last committed seq while the server is idle and before a search
-- of the group (chat.rs).
CREATE TABLE search_progress (
    group_id INTEGER PRIMARY KEY,
    seq      INTEGER NOT NULL
);
";

/// The tables of the current layout, made in a new database.
const TABLES: &str = "
CREATE TABLE groups (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE members (
    group_id  INTEGER NOT NULL REFERENCES groups(id),
    user      TEXT NOT NULL,
    joined_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, user)
) WITHOUT ROWID;
-- A group's messages first_seq..=last_seq, consecutive, in the chunk format (chunk.rs: each
-- message its ts as a difference, its sender unless repeated, its text). `key` is
-- group_id << 40 | first_seq (`chunk_key`): the rowid itself,
-- so a chunk is one B-tree's row and a lone send's commit writes no index page. No index on
-- ts: ts never decreases along seq, so a since-query is a binary search on the key.
CREATE TABLE chunks (
    key      INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_ts  INTEGER NOT NULL,
    messages BLOB NOT NULL
);
-- A retried send (same sender and client id) is found in one of the next two tables and not
-- stored twice (see sent.rs). A sender's rising client ids of a transaction, as one row: `lo`
-- and `hi` are the first and last as [length][bytes], so SQLite's order is a counter's.
CREATE TABLE sent_runs (
    group_id INTEGER NOT NULL,
    sender   TEXT NOT NULL,
    lo       BLOB NOT NULL,
    hi       BLOB NOT NULL,
    ids      BLOB NOT NULL,
    PRIMARY KEY (group_id, sender, lo)
) WITHOUT ROWID;
-- The other client ids, one row each.
CREATE TABLE sent (
    group_id  INTEGER NOT NULL,
    sender    TEXT NOT NULL,
    client_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    PRIMARY KEY (group_id, sender, client_id)
) WITHOUT ROWID;
-- With security: each user name belongs to the first key that used it on this server.
CREATE TABLE users (
    name     TEXT PRIMARY KEY,
    key      TEXT NOT NULL,
    bound_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Keys a member invited into a private group.
CREATE TABLE invites (
    group_id   INTEGER NOT NULL,
    key        TEXT NOT NULL,
    invited_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, key)
) WITHOUT ROWID;
-- User names an operator banned from a group.
CREATE TABLE bans (
    group_id  INTEGER NOT NULL,
    user      TEXT NOT NULL,
    banned_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, user)
) WITHOUT ROWID;
";

/// Makes the tables of a new database, or brings one of an earlier layout up to date; a
/// database of the current layout is left as it is. `db` names the database in errors.
///
/// # Errors
/// [`crate::Error::Input`] for a database of a later layout, or a new one that already holds
/// tables of the same names; the SQLite error, or a migration's.
pub fn prepare(conn: &Connection, db: &Path) -> Result<()> {
    prepare_with(
        conn,
        db,
        &format!("{TABLES}{GROUP_SETTINGS}{CHAT_TABLES}{SEARCH_PROGRESS}"),
        MIGRATIONS,
    )
}

/// [`prepare`] for a given layout: its tables and the steps that lead to it.
fn prepare_with(
    conn: &Connection,
    db: &Path,
    tables: &str,
    migrations: &[Migration],
) -> Result<()> {
    let current = 1 + migrations.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found == current {
        return Ok(());
    }
    if !(0..current).contains(&found) {
        return Err(errinput!(
            "database {} has layout version {found}, which this version of zms does not know \
             (it writes version {current}); refusing to serve it: run the zms that wrote it",
            db.display()
        ));
    }
    let tx = conn.unchecked_transaction()?;
    if found == 0 {
        tx.execute_batch(tables).map_err(|e| {
            // SQLite names the table in the message: the cause an operator can act on.
            let reason = match &e {
                rusqlite::Error::SqlInputError { msg, .. } => msg,
                rusqlite::Error::SqliteFailure(_, Some(msg)) => msg,
                _ => return e.into(),
            };
            if !reason.contains("already exists") {
                return e.into();
            }
            errinput!(
                "database {} holds tables zms did not make ({reason}); refusing to serve it \
                 (move it aside to start empty)",
                db.display()
            )
        })?;
    } else {
        for (from, step) in (found..).zip(&migrations[found as usize - 1..]) {
            step(&tx)?;
            tracing::info!(db = %db.display(), "moved the store from layout {from} to {}", from + 1);
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {current}"))?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout this version writes.
    const VERSION: i64 = 1 + MIGRATIONS.len() as i64;
    use crate::group::store::{Durability, Store};

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        let sql = format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid");
        let mut stmt = conn.prepare(&sql).unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn a_new_database_gets_the_tables_at_the_current_version_once() {
        let conn = Connection::open_in_memory().unwrap();
        prepare(&conn, Path::new("new")).unwrap();
        assert_eq!(version(&conn), VERSION);
        assert_eq!(
            VERSION, 5,
            "the first layout, then bans, then group settings, then search and reads, then \
             search progress"
        );
        assert_eq!(columns(&conn, "search_progress"), ["group_id", "seq"]);
        assert_eq!(
            columns(&conn, "group_settings"),
            ["group_id", "added", "private"]
        );
        assert_eq!(columns(&conn, "reads"), ["group_id", "user", "seq"]);
        assert_eq!(columns(&conn, "bans"), ["group_id", "user", "banned_ms"]);
        assert_eq!(
            columns(&conn, "chunks"),
            ["key", "last_seq", "last_ts", "messages"]
        );
        prepare(&conn, Path::new("new")).unwrap();
        assert_eq!(version(&conn), VERSION);
    }

    #[test]
    fn a_database_of_the_first_layout_gets_bans() {
        let conn = Connection::open_in_memory().unwrap();
        // Version 1 is TABLES without the bans, which come last.
        let first = TABLES
            .split("-- User names an operator banned")
            .next()
            .unwrap();
        conn.execute_batch(&format!("{first} PRAGMA user_version = 1;"))
            .unwrap();
        prepare(&conn, Path::new("old")).unwrap();
        assert_eq!(version(&conn), VERSION);
        assert_eq!(columns(&conn, "bans"), ["group_id", "user", "banned_ms"]);
        assert_eq!(
            columns(&conn, "group_settings"),
            ["group_id", "added", "private"]
        );
        assert_eq!(columns(&conn, "search_progress"), ["group_id", "seq"]);
    }

    #[test]
    fn a_database_of_layout_4_has_seen_each_group_through_its_last_seq() {
        use crate::group::store::chunk::chunk_key;
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!(
            "{TABLES}{GROUP_SETTINGS}{CHAT_TABLES} PRAGMA user_version = 4;"
        ))
        .unwrap();
        // Group 1 with two chunks, group 2 with one whose first ones were trimmed, group 3
        // with none; the chunks' bytes are not read.
        for (id, name) in [(1, "a"), (2, "b"), (3, "c")] {
            conn.execute(
                "INSERT INTO groups (id, name, created_ms) VALUES (?1, ?2, 0)",
                rusqlite::params![id, name],
            )
            .unwrap();
        }
        for (group, first, last) in [(1, 1, 10), (1, 11, 12), (2, 41, 50)] {
            conn.execute(
                "INSERT INTO chunks (key, last_seq, last_ts, messages) VALUES (?1, ?2, 0, x'')",
                rusqlite::params![chunk_key(group, first), last],
            )
            .unwrap();
        }
        prepare(&conn, Path::new("old")).unwrap();
        assert_eq!(version(&conn), VERSION);
        let progress: Vec<(i64, i64)> = conn
            .prepare("SELECT group_id, seq FROM search_progress ORDER BY group_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(progress, [(1, 12), (2, 50)]);
    }

    #[test]
    fn a_database_of_a_later_version_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        store
            .conn
            .execute_batch(&format!("PRAGMA user_version = {}", VERSION + 1))
            .unwrap();
        drop(store);
        let err = Store::open(dir.path(), Durability::Process).err().unwrap();
        let err = err.to_string();
        assert!(
            err.contains(&format!("layout version {}", VERSION + 1))
                && err.contains("refusing to serve"),
            "{err}"
        );
        let conn = Connection::open(dir.path().join("zms.db")).unwrap();
        assert_eq!(version(&conn), VERSION + 1);
        let name: String = conn
            .query_row("SELECT name FROM groups WHERE id = ?1", [g.id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(name, "g");
    }

    #[test]
    fn a_new_database_with_tables_of_the_same_names_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE groups (x); INSERT INTO groups VALUES (1)")
            .unwrap();
        let err = prepare(&conn, Path::new("odd.db")).unwrap_err().to_string();
        assert!(
            err.contains("odd.db holds tables zms did not make"),
            "{err}"
        );
        assert_eq!(version(&conn), 0);
        assert_eq!(columns(&conn, "groups"), ["x"]);
        assert!(columns(&conn, "chunks").is_empty(), "nothing made");
    }

    /// A layout of three versions: `t (x)`, then `t (x, y)`, then a table `u` besides.
    const TABLES_3: &str = "CREATE TABLE t (x, y); CREATE TABLE u (z);";
    const STEPS_3: &[Migration] = &[
        |conn| Ok(conn.execute_batch("ALTER TABLE t ADD COLUMN y")?),
        |conn| Ok(conn.execute_batch("CREATE TABLE u (z)")?),
    ];

    #[test]
    fn migrations_run_in_order_from_the_version_found() {
        let at = |version: i64, tables: &str| {
            let conn = Connection::open_in_memory().unwrap();
            conn.execute_batch(&format!("{tables} PRAGMA user_version = {version};"))
                .unwrap();
            conn
        };
        for conn in [
            at(0, ""),
            at(1, "CREATE TABLE t (x);"),
            at(2, "CREATE TABLE t (x, y);"),
            at(3, TABLES_3),
        ] {
            prepare_with(&conn, Path::new("db"), TABLES_3, STEPS_3).unwrap();
            assert_eq!(version(&conn), 3);
            assert_eq!(columns(&conn, "t"), ["x", "y"]);
            assert_eq!(columns(&conn, "u"), ["z"]);
        }
        let later = at(4, "");
        let err = prepare_with(&later, Path::new("db"), TABLES_3, STEPS_3).unwrap_err();
        assert!(err.to_string().contains("layout version 4"), "{err}");
    }

    #[test]
    fn a_failing_migration_leaves_the_database_as_it_was() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (x); INSERT INTO t VALUES (1); PRAGMA user_version = 1;",
        )
        .unwrap();
        let steps: &[Migration] = &[
            |conn| Ok(conn.execute_batch("ALTER TABLE t ADD COLUMN y")?),
            |_| Err(errinput!("the second step fails")),
        ];
        let err = prepare_with(&conn, Path::new("db"), "", steps).unwrap_err();
        assert!(err.to_string().contains("second step"), "{err}");
        assert_eq!(version(&conn), 1);
        assert_eq!(columns(&conn, "t"), ["x"], "the first step undone");
    }
}
