//! Durable storage of a group server: groups, members and messages in one SQLite file.
//!
//! The only file that holds SQL. The caller owns sequencing (it assigns seq and ts) and
//! transactions (one per batch of requests, so many sends share one commit).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::protocol::Message;
use crate::{errinput, Result};

/// What an acknowledged message survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Committed to the write-ahead log before the ack: survives a crash of the process
    /// (SIGKILL), not a power loss (SQLite `synchronous=NORMAL` in WAL mode).
    #[default]
    Process,
    /// Also fsynced before the ack: survives power loss, at the cost of one fsync per batch
    /// (SQLite `synchronous=FULL`).
    Power,
}

/// One hosted group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub id: i64,
    pub name: String,
    pub last_seq: u64,
    pub last_ts: i64,
    pub members: Vec<String>,
}

/// The SQLite store.
pub struct Store {
    conn: Connection,
    /// Copies the write-ahead log into the database off the request path (file stores only).
    _checkpointer: Option<Checkpointer>,
    /// Held for the life of the store: a second group server on the same data directory
    /// would interleave sequence numbers, so it is refused at start.
    _lock: Option<File>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS groups (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    group_id  INTEGER NOT NULL REFERENCES groups(id),
    user      TEXT NOT NULL,
    joined_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    group_id  INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    sender    TEXT NOT NULL,
    client_id TEXT,
    text      TEXT NOT NULL,
    PRIMARY KEY (group_id, seq)
) WITHOUT ROWID;
-- A retried send (same sender and client id) is found here and not stored twice.
CREATE UNIQUE INDEX IF NOT EXISTS messages_client ON messages (group_id, sender, client_id);
-- No index on ts: ts never decreases along seq, so a since-query is a binary search on the key,
-- and every message costs one B-tree insert fewer. (Dropped from stores made before.)
DROP INDEX IF EXISTS messages_ts;
-- With security: each user name belongs to the first key that used it on this server.
CREATE TABLE IF NOT EXISTS users (
    name     TEXT PRIMARY KEY,
    key      TEXT NOT NULL,
    bound_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Keys a member invited into a private group.
CREATE TABLE IF NOT EXISTS invites (
    group_id   INTEGER NOT NULL,
    key        TEXT NOT NULL,
    invited_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, key)
) WITHOUT ROWID;
";

impl Store {
    /// Opens (or creates) the store in `dir`, refusing a directory another server holds and a
    /// database that fails its integrity check.
    ///
    /// # Errors
    /// [`crate::Error::Input`] for a busy or corrupt data directory, or the SQLite error.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store> {
        fs::create_dir_all(dir)
            .map_err(|e| errinput!("cannot create data directory {}: {e}", dir.display()))?;
        let lock = File::create(dir.join("lock"))
            .map_err(|e| errinput!("cannot write in data directory {}: {e}", dir.display()))?;
        if lock.try_lock().is_err() {
            return Err(errinput!(
                "data directory {} is in use by another group server",
                dir.display()
            ));
        }
        let path: PathBuf = dir.join("zms.db");
        let conn = Connection::open(&path)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(|e| {
                errinput!(
                    "database {} is unreadable ({e}); refusing to serve it",
                    path.display()
                )
            })?;
        if check != "ok" {
            return Err(errinput!(
                "database {} is corrupt ({check}); refusing to serve it (move it aside to start empty)",
                path.display()
            ));
        }
        let mut store = Self::init(conn, durability, Some(lock))?;
        // SQLite's automatic checkpoint runs inside a COMMIT, stalling that batch's answers
        // for as long as it copies the log; a thread of our own does it instead.
        // The log file is cut back to WAL_LIMIT when it restarts, so disk use stays bounded.
        store.conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_LIMIT}"
        ))?;
        store._checkpointer = Some(Checkpointer::start(&path, WAL_LIMIT)?);
        Ok(store)
    }

    /// A store in memory, for tests.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?, Durability::Process, None)
    }

    fn init(conn: Connection, durability: Durability, lock: Option<File>) -> Result<Store> {
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; {SCHEMA}"
        ))?;
        conn.set_prepared_statement_cache_capacity(32);
        // A page cache of 512 KiB rather than SQLite's 2 MB: appends touch only the right
        // edge of each B-tree and history reads stream through pages once, so a larger cache
        // holds memory without saving reads (ingest and history measured the same).
        conn.execute_batch("PRAGMA cache_size = -512")?;
        conn.busy_handler(Some(wait_briefly))?;
        Ok(Store {
            conn,
            _checkpointer: None,
            _lock: lock,
        })
    }

    /// Caps the database at about `max_bytes`: past it, writes fail with SQLite's "database or
    /// disk is full" (exactly as on a full disk), sends are refused with UNAVAILABLE and reads
    /// go on. A quota, and the way tests inject a storage fault.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn limit_size(&mut self, max_bytes: u64) -> Result<()> {
        let page: u64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = (max_bytes / page.max(1)).max(1);
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        Ok(())
    }

    /// Creates the group if it is new, and returns it as stored.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn ensure_group(&mut self, name: &str, now_ms: i64) -> Result<StoredGroup> {
        self.conn.execute(
            "INSERT INTO groups (name, created_ms) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![name, now_ms],
        )?;
        let id: i64 =
            self.conn
                .query_row("SELECT id FROM groups WHERE name = ?1", [name], |r| {
                    r.get(0)
                })?;
        self.load_group(id)
    }

    /// Reads a group's last seq, last ts and members.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn load_group(&self, id: i64) -> Result<StoredGroup> {
        let name: String =
            self.conn
                .query_row("SELECT name FROM groups WHERE id = ?1", [id], |r| r.get(0))?;
        let (last_seq, last_ts): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(ts), 0) FROM messages WHERE group_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT user FROM members WHERE group_id = ?1 ORDER BY user")?;
        let members = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(StoredGroup {
            id,
            name,
            last_seq: last_seq as u64,
            last_ts,
            members,
        })
    }

    /// Starts a transaction.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn begin(&mut self) -> Result<()> {
        // Prepared once: a lone send is a transaction of its own, so this runs per message.
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(())
    }

    /// Commits the transaction; when this returns `Ok`, everything in it is durable.
    ///
    /// # Errors
    /// The SQLite error; the transaction is then rolled back.
    pub fn commit(&mut self) -> Result<()> {
        let committed = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut commit| commit.execute([]));
        if let Err(err) = committed {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(err.into());
        }
        Ok(())
    }

    /// Abandons the transaction, if one is open.
    pub fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Appends a message, unless this sender already stored one with this `client_id`
    /// (returns `false` then; [`Store::find_sent`] tells which). An empty `client_id` means the
    /// sender asked for no de-duplication.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn append(&mut self, group_id: i64, message: &Message, client_id: &str) -> Result<bool> {
        let client_id = (!client_id.is_empty()).then_some(client_id);
        // A retried send hits the (group, sender, client id) index and stores nothing: the
        // common case, a new message, costs no lookup first.
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (group_id, seq, ts, sender, client_id, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (group_id, sender, client_id) DO NOTHING",
            )?
            .execute(params![group_id, message.seq as i64, message.ts, message.sender, client_id, message.text])?;
        Ok(inserted == 1)
    }

    /// The seq and ts of a message already stored with this sender and client id.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn find_sent(
        &mut self,
        group_id: i64,
        sender: &str,
        client_id: &str,
    ) -> Result<Option<(u64, i64)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq, ts FROM messages WHERE group_id = ?1 AND sender = ?2 AND client_id = ?3")?
            .query_row(params![group_id, sender, client_id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .optional()?)
    }

    /// Messages with `seq > after_seq` and `ts >= since_ms`, in seq order, at most `limit`.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn fetch(
        &mut self,
        group_id: i64,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        // ts never decreases along seq, so "since" is a lower bound on seq: find it through
        // the ts index, then page along the primary key.
        let mut first = after_seq.saturating_add(1);
        if since_ms > 0 {
            match self.first_since(group_id, since_ms)? {
                Some(seq) => first = first.max(seq),
                None => return Ok(Vec::new()),
            }
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, ts, sender, text FROM messages WHERE group_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![group_id, first.min(i64::MAX as u64) as i64, limit],
            |r| {
                Ok(Message {
                    seq: r.get::<_, i64>(0)? as u64,
                    ts: r.get(1)?,
                    sender: r.get(2)?,
                    text: r.get(3)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every user name bound to a key, as `(name, key)`.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn users(&mut self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached("SELECT name, key FROM users")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Binds a user name to a key for good.
    ///
    /// # Errors
    /// The SQLite error (the name is already bound, the store cannot write).
    pub fn bind_user(&mut self, name: &str, key: &str, now_ms: i64) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO users (name, key, bound_ms) VALUES (?1, ?2, ?3)")?
            .execute(params![name, key, now_ms])?;
        Ok(())
    }

    /// The keys invited into a group.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn invites(&mut self, group_id: i64) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM invites WHERE group_id = ?1")?;
        let rows = stmt.query_map([group_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records an invitation of `key` into a group.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn add_invite(&mut self, group_id: i64, key: &str, now_ms: i64) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO invites (group_id, key, invited_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
            .execute(params![group_id, key, now_ms])?;
        Ok(())
    }

    /// The first seq stored at or after `since_ms`, found by binary search on the key: ts never
    /// decreases along seq (the group server makes it so), so about log2(n) point reads.
    fn first_since(&mut self, group_id: i64, since_ms: i64) -> Result<Option<u64>> {
        let last: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE group_id = ?1")?
            .query_row([group_id], |r| r.get(0))?;
        // The ts of the first message at or after `seq` (robust to a hole in the seqs).
        let ts_from = |seq: i64| -> Result<Option<i64>> {
            Ok(self
                .conn
                .prepare_cached("SELECT ts FROM messages WHERE group_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT 1")?
                .query_row(params![group_id, seq], |r| r.get(0))
                .optional()?)
        };
        let (mut lo, mut hi) = (1, last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match ts_from(mid)? {
                Some(ts) if ts >= since_ms => hi = mid,
                Some(_) => lo = mid + 1,
                None => hi = mid,
            }
        }
        Ok((lo <= last).then_some(lo as u64))
    }

    /// Makes `user` a member (again).
    ///
    /// # Errors
    /// The SQLite error.
    pub fn add_member(&mut self, group_id: i64, user: &str, now_ms: i64) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO members (group_id, user, joined_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
            .execute(params![group_id, user, now_ms])?;
        Ok(())
    }

    /// Ends `user`'s membership.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn remove_member(&mut self, group_id: i64, user: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM members WHERE group_id = ?1 AND user = ?2")?
            .execute(params![group_id, user])?;
        Ok(())
    }
}

/// How soon the log is copied into the database again while writes go on. Often, so each
/// checkpoint's fsyncs are short: the writer's own log appends stall behind them.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(5);

/// The longest wait between checkpoints of an idle store (and so the most log a burst after
/// a quiet spell writes before its first checkpoint).
const CHECKPOINT_IDLE: Duration = Duration::from_millis(200);

/// The longest wait before trying a failed checkpoint again.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);

/// The write-ahead log, in bytes, past which the checkpointer makes SQLite start it over.
const WAL_LIMIT: u64 = 64 << 20;

/// A thread with its own connection that checkpoints the log until dropped: PASSIVE, which
/// never blocks the writer, and RESTART once the log passes its limit.
struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, limit: u64) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        // Take the write lock in the writer's first pause, not after a sleep of milliseconds.
        conn.busy_handler(Some(wait_briefly))?;
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                let (mut wait, mut last) = (CHECKPOINT_BUSY, None);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    match checkpoint(&conn, page_size, limit) {
                        // The log moved since last time: writes are going on.
                        Ok(log) if Some(log) != last => (wait, last) = (CHECKPOINT_BUSY, Some(log)),
                        Ok(_) => wait = (wait * 2).min(CHECKPOINT_IDLE),
                        // A full or failing disk: back off, so the log says so a few times,
                        // not hundreds of times a second.
                        Err(err) => {
                            wait = (wait * 2).clamp(CHECKPOINT_IDLE, CHECKPOINT_RETRY);
                            tracing::warn!(%err, retry_in = ?wait, "checkpoint failed; will try again");
                        }
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Copies the log into the database; returns its frames and how many are copied. SQLite
/// starts the log over only when a write begins with every frame already copied, which a
/// writer that never pauses prevents: the log would grow without bound. So past `limit` a
/// RESTART checkpoint holds the writer back (through its busy handler) while it copies the
/// last frames, and the next write starts the log afresh.
fn checkpoint(conn: &Connection, page_size: u64, limit: u64) -> rusqlite::Result<(i64, i64)> {
    let log: (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?;
    if log.0.max(0) as u64 * page_size > limit {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(log)
}

/// The busy handler of both connections. A RESTART checkpoint and a write transaction each
/// hold the write lock for a few milliseconds at most, and SQLite's default handler sleeps
/// 1, 2, 5, 10 ms… in turn, overshooting that; retry every 50 µs instead, for up to about
/// five seconds.
fn wait_briefly(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_micros(50));
    attempt < 100_000
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, ts: i64) -> Message {
        Message {
            seq,
            ts,
            sender: "alice".into(),
            text: format!("m{seq}"),
        }
    }

    #[test]
    fn appends_fetch_in_order_with_since_and_limit() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("general", 1).unwrap();
        store.begin().unwrap();
        for seq in 1..=10 {
            store
                .append(g.id, &msg(seq, 100 + seq as i64 * 10), &format!("c{seq}"))
                .unwrap();
        }
        store.commit().unwrap();
        let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.fetch(g.id, 0, 0, 3).unwrap()), [1, 2, 3]);
        assert_eq!(seqs(store.fetch(g.id, 8, 0, 100).unwrap()), [9, 10]);
        assert_eq!(seqs(store.fetch(g.id, 0, 175, 100).unwrap()), [8, 9, 10]);
        assert_eq!(seqs(store.fetch(g.id, 9, 175, 100).unwrap()), [10]);
        assert!(store.fetch(g.id, 0, 1_000, 100).unwrap().is_empty());
        assert_eq!(
            store.find_sent(g.id, "alice", "c4").unwrap(),
            Some((4, 140))
        );
        assert_eq!(store.find_sent(g.id, "bob", "c4").unwrap(), None);
        let reloaded = store.ensure_group("general", 2).unwrap();
        assert_eq!(
            (reloaded.id, reloaded.last_seq, reloaded.last_ts),
            (g.id, 10, 200)
        );
    }

    #[test]
    fn since_finds_the_first_of_equal_timestamps_by_binary_search() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        store.begin().unwrap();
        // ts: 10 10 10 20 20 30 … (many messages share a millisecond under load)
        for seq in 1..=1000u64 {
            store
                .append(g.id, &msg(seq, 10 * ((seq as i64 + 2) / 3)), "")
                .unwrap();
        }
        store.commit().unwrap();
        for since in [1, 10, 11, 20, 21, 3340, 3341, 5000] {
            let first = store
                .fetch(g.id, 0, since, 1)
                .unwrap()
                .first()
                .map(|m| m.seq);
            let want = (1..=1000u64).find(|&s| 10 * ((s as i64 + 2) / 3) >= since);
            assert_eq!(first, want, "since {since}");
        }
    }

    #[test]
    fn rollback_keeps_nothing_and_members_persist() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        store.begin().unwrap();
        store.append(g.id, &msg(1, 1), "").unwrap();
        store.append(g.id, &msg(2, 1), "").unwrap();
        store.rollback();
        assert_eq!(store.load_group(g.id).unwrap().last_seq, 0);
        store.add_member(g.id, "bob", 1).unwrap();
        store.add_member(g.id, "bob", 2).unwrap();
        store.add_member(g.id, "amy", 2).unwrap();
        assert_eq!(store.load_group(g.id).unwrap().members, ["amy", "bob"]);
        store.remove_member(g.id, "bob").unwrap();
        assert_eq!(store.load_group(g.id).unwrap().members, ["amy"]);
    }

    #[test]
    fn the_log_starts_over_under_a_writer_that_never_pauses() {
        // On tmpfs where there is one: the checkpointer's fsyncs of a fast-growing log would
        // otherwise make its pace the disk's, and this test is about the policy.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let limit = 1 << 20;
        store
            .conn
            .execute_batch(&format!("PRAGMA journal_size_limit = {limit}"))
            .unwrap();
        let db = dir.path().join("zms.db");
        store._checkpointer = Some(Checkpointer::start(&db, limit).unwrap());
        let g = store.ensure_group("g", 1).unwrap();
        let wal_size = || std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
        // One message per transaction writes whole pages, some 8 KiB of log each: the log
        // passes the limit every 130 or so, and only a restart ever shrinks it.
        let (mut largest, mut restarted, mut seq) = (0, false, 0);
        while !restarted && seq < 20_000 {
            seq += 1;
            store.begin().unwrap();
            store.append(g.id, &msg(seq, 1), "").unwrap();
            store.commit().unwrap();
            let size = wal_size();
            restarted = size < largest && largest > 2 * limit;
            largest = largest.max(size);
        }
        assert!(
            restarted,
            "the log never restarted in {seq} writes ({largest} bytes)"
        );
        assert_eq!(store.load_group(g.id).unwrap().last_seq, seq);
    }

    #[test]
    fn a_second_server_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), Durability::Process).unwrap();
        let err = Store::open(dir.path(), Durability::Process).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn a_corrupt_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("zms.db"), vec![0x5a; 8192]).unwrap();
        let err = Store::open(dir.path(), Durability::Process).err().unwrap();
        assert!(err.to_string().contains("refusing to serve"), "{err}");
    }
}
