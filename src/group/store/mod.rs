//! Durable storage of a group server: groups, members and messages in one SQLite file.
//!
//! The only module that holds SQL. The caller owns sequencing (it assigns seq and ts) and
//! transactions (one per batch of requests, so many sends share one commit). A transaction's
//! messages of a group are stored as one row, a chunk: a batch of 500 sends costs a few rows,
//! not 500. The client ids that find a retried send are kept in runs (`sent.rs`), likewise a row
//! per sender and transaction for ids that rise as counters do.

mod chunk;
mod mark;
mod sent;
mod varint;

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::protocol::{codec, Message};
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

/// What [`Store::append`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    New,
    /// The sender stored a message under this client id before: this one's seq and ts.
    Duplicate {
        seq: u64,
        ts: i64,
    },
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
    /// The open transaction's messages, not yet written: each group's chunk still taking
    /// messages, and the chunks that are full.
    open: HashMap<i64, Chunk>,
    full: Vec<(i64, Chunk)>,
    /// Buffers of written chunks, for the next ones: a busy batch's chunk is tens of KiB, and
    /// growing a new one each time costs copies and the allocator's trips to the kernel.
    spare: Vec<Vec<u8>>,
    /// Each sender's highest client id, and the open transaction's runs of them.
    sent: sent::Sent,
    /// Copies the write-ahead log into the database off the request path (file stores only).
    _checkpointer: Option<Checkpointer>,
    /// Set by the checkpointer when the log has passed its limit: the writer restarts it at
    /// its next [`Store::begin`] (see [`Checkpointer`]).
    restart_wanted: Arc<AtomicBool>,
    /// Each group's last seq as committed, and the open transaction's new ones.
    last_seqs: HashMap<i64, u64>,
    open_last_seqs: HashMap<i64, u64>,
    /// The sum of `last_seqs`: the messages stored, as the mark counts them.
    stored: u64,
    /// The acknowledged high-water mark, kept apart from the log (file stores only).
    mark: Option<mark::Mark>,
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
-- A group's messages first_seq..=last_seq, consecutive, written back to back as PROTOCOL.md's
-- `message` fields. `key` is group_id << 40 | first_seq (`chunk_key`): the rowid itself,
-- so a chunk is one B-tree's row and a lone send's commit writes no index page. No index on
-- ts: ts never decreases along seq, so a since-query is a binary search on the key.
CREATE TABLE IF NOT EXISTS chunks (
    key      INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_ts  INTEGER NOT NULL,
    messages BLOB NOT NULL
);
-- A retried send (same sender and client id) is found in one of the next two tables and not
-- stored twice (see sent.rs). A sender's rising client ids of a transaction, as one row: `lo`
-- and `hi` are the first and last as [length][bytes], so SQLite's order is a counter's.
CREATE TABLE IF NOT EXISTS sent_runs (
    group_id INTEGER NOT NULL,
    sender   TEXT NOT NULL,
    lo       BLOB NOT NULL,
    hi       BLOB NOT NULL,
    ids      BLOB NOT NULL,
    PRIMARY KEY (group_id, sender, lo)
) WITHOUT ROWID;
-- The other client ids, one row each.
CREATE TABLE IF NOT EXISTS sent (
    group_id  INTEGER NOT NULL,
    sender    TEXT NOT NULL,
    client_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    PRIMARY KEY (group_id, sender, client_id)
) WITHOUT ROWID;
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
        private_dir(dir)?;
        let lock = private_file(&dir.join("lock"))
            .map_err(|e| errinput!("cannot write in data directory {}: {e}", dir.display()))?;
        if lock.try_lock().is_err() {
            return Err(errinput!(
                "data directory {} is in use by another group server",
                dir.display()
            ));
        }
        let path: PathBuf = dir.join("zms.db");
        // SQLite gives the log the database file's mode, so creating it private first makes
        // both private; one left readable by an earlier version is made private here.
        private_file(&path)
            .map_err(|e| errinput!("cannot create database {}: {e}", path.display()))?;
        // A log left by a crash, and the index file an earlier version mapped.
        for left in ["zms.db-wal", "zms.db-shm"].map(|f| dir.join(f)) {
            if left.exists() {
                private_file(&left)
                    .map_err(|e| errinput!("cannot make {} private: {e}", left.display()))?;
            }
        }
        let conn = open_connection(&path)?;
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
        store.mark = Some(mark::Mark::open(
            &dir.join(mark::FILE),
            store.stored,
            &path,
        )?);
        // SQLite's automatic checkpoint runs inside a COMMIT, stalling that batch's answers
        // for as long as it copies the log; a thread of our own does it instead.
        // The log file is cut back to WAL_LIMIT when it restarts, so disk use stays bounded.
        store.conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_LIMIT}"
        ))?;
        store._checkpointer = Some(Checkpointer::start(
            &path,
            WAL_LIMIT,
            Arc::clone(&store.restart_wanted),
        )?);
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
        migrate_message_rows(&conn)?;
        migrate_layout(&conn)?;
        let mut store = Store {
            conn,
            open: HashMap::new(),
            full: Vec::new(),
            spare: Vec::new(),
            sent: sent::Sent::default(),
            _checkpointer: None,
            restart_wanted: Arc::new(AtomicBool::new(false)),
            last_seqs: HashMap::new(),
            open_last_seqs: HashMap::new(),
            stored: 0,
            mark: None,
            _lock: lock,
        };
        let ids: Vec<i64> = store
            .conn
            .prepare("SELECT id FROM groups")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in ids {
            let (last_seq, _) = store.last_stored(id)?;
            store.last_seqs.insert(id, last_seq);
            store.stored += last_seq;
        }
        Ok(store)
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
        if id > MAX_GROUP_ID {
            return Err(errinput!(
                "this data directory has hosted {MAX_GROUP_ID} groups, the most it can"
            ));
        }
        self.load_group(id)
    }

    /// Reads a group's last seq, last ts and members.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn load_group(&mut self, id: i64) -> Result<StoredGroup> {
        self.write_chunks()?;
        let name: String =
            self.conn
                .query_row("SELECT name FROM groups WHERE id = ?1", [id], |r| r.get(0))?;
        let (last_seq, last_ts) = self.last_stored(id)?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT user FROM members WHERE group_id = ?1 ORDER BY user")?;
        let members = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(StoredGroup {
            id,
            name,
            last_seq,
            last_ts,
            members,
        })
    }

    /// The seq and ts of the group's last written message; (0, 0) for none.
    fn last_stored(&self, group_id: i64) -> Result<(u64, i64)> {
        let last = self
            .conn
            .prepare_cached(
                "SELECT last_seq, last_ts FROM chunks WHERE key BETWEEN ?1 AND ?2
                 ORDER BY key DESC LIMIT 1",
            )?
            .query_row(
                params![chunk_key(group_id, 0), chunk_key(group_id, MAX_SEQ)],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?;
        Ok(last.unwrap_or((0, 0)))
    }

    /// Starts a transaction.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn begin(&mut self) -> Result<()> {
        self.drop_chunks();
        if self.restart_wanted.load(Ordering::Relaxed) {
            self.restart_log();
        }
        // IMMEDIATE takes the write lock now, waiting in the busy handler while another
        // connection holds it. A deferred transaction that read first could not wait for it
        // later: SQLite fails its upgrade to a write at once ("database is locked").
        // Prepared once: a lone send is a transaction of its own, so this runs per message.
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(())
    }

    /// Commits the transaction; when this returns `Ok`, everything in it is durable.
    ///
    /// # Errors
    /// The SQLite error; the transaction is then rolled back.
    pub fn commit(&mut self) -> Result<()> {
        let committed = self
            .write_chunks()
            .and_then(|()| self.sent.write(&self.conn))
            .and_then(|()| {
                self.conn
                    .prepare_cached("COMMIT")
                    .and_then(|mut commit| commit.execute([]))
                    .map_err(Into::into)
            });
        if let Err(err) = committed {
            self.rollback();
            return Err(err);
        }
        self.sent.committed();
        if !self.open_last_seqs.is_empty() {
            for (group_id, seq) in self.open_last_seqs.drain() {
                let before = self.last_seqs.insert(group_id, seq).unwrap_or(0);
                self.stored = (self.stored + seq).saturating_sub(before);
            }
            if let Some(mark) = &mut self.mark {
                mark.record(self.stored);
            }
        }
        Ok(())
    }

    /// Copies the rest of the log into the database and has the next write start it over
    /// (SQLite's RESTART checkpoint), clearing [`Store::restart_wanted`] once done. Run by the
    /// writer itself, between its transactions: the one moment nothing of the log is in
    /// use, which a checkpointing thread would have to catch (and, against a writer that never
    /// pauses, could miss for ever). Most of the log is already copied by the checkpointer,
    /// so this costs the writer the last few frames and a sync, once per [`WAL_LIMIT`].
    fn restart_log(&mut self) {
        // Busy (0 or 1), frames in the log, frames copied. Busy only while the checkpointer
        // is copying: then the next transaction tries again.
        let done = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        match done {
            Ok(0) => self.restart_wanted.store(false, Ordering::Relaxed),
            Ok(_) => {}
            // Asked again by the checkpointer's next pass, not tried again before each batch.
            Err(err) => {
                self.restart_wanted.store(false, Ordering::Relaxed);
                tracing::warn!(%err, "cannot restart the write-ahead log");
            }
        }
    }

    /// Abandons the transaction, if one is open.
    pub fn rollback(&mut self) {
        self.drop_chunks();
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Appends a message, unless this sender already stored one with this `client_id` (an
    /// empty one asks for no de-duplication). Within a transaction the message joins its
    /// group's chunk, written at commit (or before a read); outside one it is stored at once.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn append(
        &mut self,
        group_id: i64,
        message: &Message,
        client_id: &str,
    ) -> Result<Appended> {
        if self.conn.is_autocommit() {
            self.begin()?;
            let appended = self.append(group_id, message, client_id);
            return match appended {
                Ok(new) => self.commit().map(|()| new),
                Err(err) => {
                    self.rollback();
                    Err(err)
                }
            };
        }
        if message.seq > MAX_SEQ {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some(format!("a group stores at most {MAX_SEQ} messages")),
            )
            .into());
        }
        if !client_id.is_empty() {
            let before = self.sent.record(
                &self.conn,
                group_id,
                &message.sender,
                client_id,
                message.seq,
                message.ts,
            )?;
            if let Some((seq, ts)) = before {
                return Ok(Appended::Duplicate { seq, ts });
            }
        }
        let spare = &mut self.spare;
        let mut fresh = || Chunk::new(message.seq, spare.pop().unwrap_or_default());
        let chunk = self.open.entry(group_id).or_insert_with(&mut fresh);
        if !chunk.has_room(message) {
            // Full: written as it is; this message starts the group's next chunk.
            self.full
                .push((group_id, std::mem::replace(chunk, fresh())));
        }
        chunk.push(message);
        self.open_last_seqs.insert(group_id, message.seq);
        Ok(Appended::New)
    }

    /// Writes the open transaction's chunks.
    fn write_chunks(&mut self) -> Result<()> {
        if self.open.is_empty() && self.full.is_empty() {
            return Ok(());
        }
        let mut insert = self.conn.prepare_cached(INSERT_CHUNK)?;
        for (group_id, chunk) in self.full.drain(..).chain(self.open.drain()) {
            let buffer = chunk.insert(&mut insert, group_id)?;
            if self.spare.len() < SPARE_CHUNKS {
                self.spare.push(buffer);
            }
        }
        Ok(())
    }

    /// Forgets the open transaction's chunks and runs.
    fn drop_chunks(&mut self) {
        self.open.clear();
        self.full.clear();
        self.open_last_seqs.clear();
        self.sent.rollback();
    }

    /// The seq and ts of a message already stored with this sender and client id (the server
    /// learns it from [`Store::append`]; tests ask directly).
    #[cfg(test)]
    fn find_sent(
        &mut self,
        group_id: i64,
        sender: &str,
        client_id: &str,
    ) -> Result<Option<(u64, i64)>> {
        self.sent.find(&self.conn, group_id, sender, client_id)
    }

    /// Messages with `seq > after_seq` and `ts >= since_ms`, in seq order, at most `limit`.
    ///
    /// # Errors
    /// The SQLite error, or a stored chunk that does not decode.
    pub fn fetch(
        &mut self,
        group_id: i64,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        self.write_chunks()?;
        // ts never decreases along seq, so "since" is a lower bound on seq.
        let mut first = after_seq.saturating_add(1);
        if since_ms > 0 {
            match self.first_since(group_id, since_ms)? {
                Some(seq) => first = first.max(seq),
                None => return Ok(Vec::new()),
            }
        }
        if first > MAX_SEQ {
            return Ok(Vec::new());
        }
        // From the chunk holding `first` on, in seq order.
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, messages FROM chunks WHERE key <= ?3 AND key >=
                 (SELECT COALESCE(MAX(key), ?1) FROM chunks WHERE key BETWEEN ?1 AND ?2)
             ORDER BY key",
        )?;
        let mut rows = stmt.query(params![
            chunk_key(group_id, 0),
            chunk_key(group_id, first),
            chunk_key(group_id, MAX_SEQ)
        ])?;
        let mut page = Vec::new();
        while let Some(row) = rows.next()? {
            let key: i64 = row.get(0)?;
            let bytes = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            let most = limit as usize - page.len();
            page.extend(decode_chunk(group_id, key, bytes, first, most)?);
            if page.len() >= limit as usize {
                break;
            }
        }
        Ok(page)
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

    /// The first seq stored at or after `since_ms`, found by binary search on the chunks' key:
    /// ts never decreases along seq (the group server makes it so), so about log2(n) point reads,
    /// then the one chunk that holds it.
    fn first_since(&self, group_id: i64, since_ms: i64) -> Result<Option<u64>> {
        // Only the last seq: a whole `load_group` would read the member list too.
        let (last, _) = self.last_stored(group_id)?;
        // The chunk holding `seq`, or the last one before it: (first seq, last ts).
        let chunk_at = |seq: u64| -> Result<Option<(u64, i64)>> {
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT key, last_ts FROM chunks
                     WHERE key BETWEEN ?1 AND ?2 ORDER BY key DESC LIMIT 1",
                )?
                .query_row(
                    params![
                        chunk_key(group_id, 0),
                        chunk_key(group_id, seq.min(MAX_SEQ))
                    ],
                    |r| Ok((r.get::<_, i64>(0)? as u64 & MAX_SEQ, r.get(1)?)),
                )
                .optional()?)
        };
        // Every chunk that starts below `lo` ends before `since_ms`; `found` starts at `hi` and
        // does not.
        let (mut lo, mut hi, mut found) = (1, last.saturating_add(1), None);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match chunk_at(mid)? {
                Some((first, last_ts)) if last_ts >= since_ms => {
                    found = Some(first);
                    hi = first;
                }
                _ => lo = mid + 1,
            }
        }
        let Some(first) = found else {
            return Ok(None);
        };
        let key = chunk_key(group_id, first);
        let bytes: Vec<u8> =
            self.conn
                .query_row("SELECT messages FROM chunks WHERE key = ?1", [key], |r| {
                    r.get(0)
                })?;
        let messages = decode_chunk(group_id, key, &bytes, 0, usize::MAX)?;
        Ok(messages.iter().find(|m| m.ts >= since_ms).map(|m| m.seq))
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

/// Octets of messages past which a chunk takes no more (a single larger message is a chunk of
/// its own): history reads decode whole chunks, so a page of a few messages stays cheap.
const CHUNK_BYTES: usize = 64 * 1024;

/// Most buffers of written chunks kept for reuse: a batch fills about one chunk per busy group.
const SPARE_CHUNKS: usize = 4;

const INSERT_CHUNK: &str =
    "INSERT INTO chunks (key, last_seq, last_ts, messages) VALUES (?1, ?2, ?3, ?4)";

/// Bits of a chunk's key that hold its first seq; the group id is above them.
const SEQ_BITS: u32 = 40;

/// The highest seq a group's chunks can be keyed by: 2^40 - 1, about 10^12 messages.
const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// The highest group id a chunk can be keyed by, so that keys stay positive: 2^23 - 1, more
/// groups than one data directory could have hosted.
const MAX_GROUP_ID: i64 = (1 << (63 - SEQ_BITS)) - 1;

/// A chunk's key: its group in the high bits, its first seq in the low 40, so a group's chunks
/// are one range of keys in seq order.
fn chunk_key(group_id: i64, first_seq: u64) -> i64 {
    debug_assert!((0..=MAX_GROUP_ID).contains(&group_id) && first_seq <= MAX_SEQ);
    (group_id << SEQ_BITS) | first_seq as i64
}

/// A group's consecutive messages of one transaction, as they are stored ([`chunk`]).
struct Chunk {
    first_seq: u64,
    last_seq: u64,
    last_ts: i64,
    /// The last message's sender, which the next one's is written against.
    last_sender: String,
    messages: Vec<u8>,
}

impl Chunk {
    /// An empty chunk starting at `first_seq`, written into `buffer` (cleared first).
    fn new(first_seq: u64, mut buffer: Vec<u8>) -> Chunk {
        buffer.clear();
        Chunk {
            first_seq,
            last_seq: first_seq,
            last_ts: 0,
            last_sender: String::new(),
            messages: buffer,
        }
    }

    /// Whether `message` may join: a chunk stops at [`CHUNK_BYTES`], but always takes one.
    fn has_room(&self, message: &Message) -> bool {
        self.messages.is_empty() || self.messages.len() + codec::message_len(message) <= CHUNK_BYTES
    }

    fn push(&mut self, message: &Message) {
        let previous = (!self.messages.is_empty()).then_some((self.last_ts, &*self.last_sender));
        chunk::append(&mut self.messages, previous, message);
        self.last_seq = message.seq;
        self.last_ts = message.ts;
        if self.last_sender != message.sender {
            self.last_sender.clear();
            self.last_sender.push_str(&message.sender);
        }
    }

    /// Writes the chunk with `insert`, a prepared [`INSERT_CHUNK`]; returns its buffer.
    fn insert(
        self,
        insert: &mut rusqlite::Statement<'_>,
        group_id: i64,
    ) -> rusqlite::Result<Vec<u8>> {
        insert.execute(params![
            chunk_key(group_id, self.first_seq),
            self.last_seq as i64,
            self.last_ts,
            self.messages.as_slice()
        ])?;
        Ok(self.messages)
    }
}

/// The messages of a stored chunk of `group_id` keyed by `key`.
fn decode_chunk(
    group_id: i64,
    key: i64,
    bytes: &[u8],
    from: u64,
    most: usize,
) -> Result<Vec<Message>> {
    chunk::decode(key as u64 & MAX_SEQ, bytes, from, most).map_err(|reason| {
        undecodable(format!(
            "a stored chunk of group {group_id} does not decode: {reason}"
        ))
    })
}

/// The store error for a stored value that does not decode (a store fault, not bad input).
fn undecodable(reason: String) -> crate::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, reason.into()).into()
}

/// Moves a store made before chunks (one `messages` row per message) to chunks and `sent`, in
/// one transaction, and drops the old table: a store is never half moved.
fn migrate_message_rows(conn: &Connection) -> Result<()> {
    let old: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'messages')",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT INTO sent (group_id, sender, client_id, seq, ts)
         SELECT group_id, sender, client_id, seq, ts FROM messages WHERE client_id IS NOT NULL
         ON CONFLICT DO NOTHING",
        [],
    )?;
    {
        let mut insert = tx.prepare(INSERT_CHUNK)?;
        let mut select = tx.prepare(
            "SELECT group_id, seq, ts, sender, text FROM messages ORDER BY group_id, seq",
        )?;
        let mut rows = select.query([])?;
        let mut current: Option<(i64, Chunk)> = None;
        while let Some(row) = rows.next()? {
            let group_id: i64 = row.get(0)?;
            let message = Message {
                seq: row.get::<_, i64>(1)? as u64,
                ts: row.get(2)?,
                sender: row.get(3)?,
                text: row.get(4)?,
            };
            let fits = current.as_ref().is_some_and(|(g, chunk)| {
                *g == group_id && chunk.last_seq + 1 == message.seq && chunk.has_room(&message)
            });
            if !fits {
                if let Some((g, chunk)) = current.take() {
                    chunk.insert(&mut insert, g)?;
                }
                current = Some((group_id, Chunk::new(message.seq, Vec::new())));
            }
            if let Some((_, chunk)) = current.as_mut() {
                chunk.push(&message);
            }
        }
        if let Some((g, chunk)) = current {
            chunk.insert(&mut insert, g)?;
        }
    }
    tx.execute_batch("DROP TABLE messages")?;
    tx.commit()?;
    tracing::info!("moved the stored messages to chunks");
    Ok(())
}

/// The layout version in `PRAGMA user_version`: 1 since client ids are kept in runs, 2 since
/// chunks are keyed by one integer.
const LAYOUT: i64 = 2;

/// Brings a store of an earlier layout to this one, in one transaction: a store is never half
/// moved.
fn migrate_layout(conn: &Connection) -> Result<()> {
    let layout: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if layout >= LAYOUT {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    if layout < 1 {
        // A sender's ids of the old layout could lie above its highest run and so be missed.
        sent::move_to_runs(&tx)?;
    }
    if layout < 2 {
        rekey_chunks(&tx)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {LAYOUT}"))?;
    tx.commit()?;
    Ok(())
}

/// Moves chunks keyed by (group_id, first_seq), with the index that key needed, to one
/// integer key (`chunk_key`).
fn rekey_chunks(conn: &Connection) -> Result<()> {
    let old: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('chunks') WHERE name = 'group_id')",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    let beyond: i64 = conn.query_row(
        "SELECT COUNT(*) FROM chunks WHERE group_id NOT BETWEEN 0 AND ?1 OR first_seq NOT BETWEEN 0 AND ?2",
        params![MAX_GROUP_ID, MAX_SEQ as i64],
        |r| r.get(0),
    )?;
    if beyond > 0 {
        return Err(errinput!(
            "the store holds {beyond} chunks beyond the keys of this version (group id over {MAX_GROUP_ID} or seq over {MAX_SEQ})"
        ));
    }
    conn.execute_batch(&format!(
        "ALTER TABLE chunks RENAME TO chunks_by_group;
         {SCHEMA}
         INSERT INTO chunks (key, last_seq, last_ts, messages)
             SELECT (group_id << {SEQ_BITS}) | first_seq, last_seq, last_ts, messages FROM chunks_by_group;
         DROP TABLE chunks_by_group;"
    ))?;
    tracing::info!("moved the stored chunks to integer keys");
    Ok(())
}

/// How soon the log is copied into the database again while writes go on. Often, so each
/// checkpoint's fsyncs are short: the writer's own log appends stall behind them.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(5);

/// The longest wait between checkpoints of an idle store (and so the most log a burst after
/// a quiet spell writes before its first checkpoint).
const CHECKPOINT_IDLE: Duration = Duration::from_millis(200);

/// The longest wait before trying a failed checkpoint again.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);

/// The write-ahead log, in bytes, past which the checkpointer asks the writer to start it over.
const WAL_LIMIT: u64 = 64 << 20;

/// A thread with its own connection that copies the log into the database until dropped
/// (PASSIVE checkpoints, which never block the writer), and that asks the writer to start the
/// log over once it passes its limit ([`Store::restart_log`]).
struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, limit: u64, restart_wanted: Arc<AtomicBool>) -> Result<Checkpointer> {
        let conn = open_connection(path)?;
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                let (mut wait, mut last) = (CHECKPOINT_BUSY, None);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    match checkpoint(&conn, page_size, limit, &restart_wanted) {
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
/// writer that never pauses prevents: the log would grow without bound. So past `limit` this
/// sets `restart_wanted`, and the writer copies the last frames itself before its next
/// transaction, which then starts the log afresh.
fn checkpoint(
    conn: &Connection,
    page_size: u64,
    limit: u64,
    restart_wanted: &AtomicBool,
) -> rusqlite::Result<(i64, i64)> {
    let log: (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?;
    if log.0.max(0) as u64 * page_size > limit {
        restart_wanted.store(true, Ordering::Relaxed);
    }
    Ok(log)
}

/// Opens a connection to the store's database with SQLite's `unix-excl` VFS: the database is
/// locked to this process, and the log's index (the `-shm` file other VFSes map into memory)
/// is kept in this process's heap, shared by its connections. A mapped file that stops being
/// writable (made immutable, or truncated, under a running server) kills the process with
/// SIGBUS at the next write; a failed write to the log is an error SQLite returns, and a send
/// gets UNAVAILABLE. The data directory's lock already keeps other servers out.
fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), "unix-excl")?;
    // Take the write lock in the other connection's first pause, not after a sleep of
    // milliseconds.
    conn.busy_handler(Some(wait_briefly))?;
    Ok(conn)
}

/// Creates `dir` (and its parents) readable by its owner only; an existing one is left as it
/// is, with a warning if others can read it (it may be shared on purpose: its files are
/// private anyway).
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| errinput!("cannot create data directory {}: {e}", dir.display()))?;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777),
            "data directory is open to other users; its files are not, but `chmod 700` it");
    }
    Ok(())
}

/// Opens (creating if need be) a file readable and writable by its owner only, making an
/// existing one so.
fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// The longest a connection waits for the write lock before its write fails as busy.
const BUSY_LIMIT: Duration = Duration::from_secs(5);

/// The busy handler of both connections. A checkpoint and a write transaction each hold
/// their locks for a few milliseconds at most, and SQLite's default handler sleeps
/// 1, 2, 5, 10 ms… in turn, overshooting that; retry every 50 µs instead, for up to
/// [`BUSY_LIMIT`]. Timed by the clock, not by counting: a 50 µs sleep can take five times that.
fn wait_briefly(attempt: i32) -> bool {
    thread_local! {
        static WAITING_SINCE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    let since = WAITING_SINCE.with(|since| {
        if attempt == 0 {
            since.set(Some(now));
        }
        since.get().unwrap_or(now)
    });
    if now.duration_since(since) >= BUSY_LIMIT {
        return false;
    }
    std::thread::sleep(Duration::from_micros(50));
    true
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
    fn reads_cross_chunks_of_every_size() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        let other = store.ensure_group("other", 1).unwrap();
        // Transactions of 1, 2, 3 … messages, each of them a chunk, and one too large for a
        // single chunk; another group's messages interleaved.
        let (mut seq, mut batch) = (0u64, 1);
        while seq < 300 {
            store.begin().unwrap();
            for _ in 0..batch {
                seq += 1;
                let text = if seq == 150 {
                    "x".repeat(70_000)
                } else {
                    format!("m{seq}")
                };
                let message = Message {
                    text,
                    ..msg(seq, seq as i64 / 7)
                };
                assert_eq!(
                    store.append(g.id, &message, &format!("c{seq}")).unwrap(),
                    Appended::New
                );
                store.append(other.id, &msg(seq, 0), "").unwrap();
            }
            store.commit().unwrap();
            batch += 1;
        }
        let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
        for after in [0, 1, 2, 5, 44, 149, 150, 299, 300] {
            let want: Vec<u64> = (after + 1..=seq).take(37).collect();
            assert_eq!(
                seqs(store.fetch(g.id, after, 0, 37).unwrap()),
                want,
                "after {after}"
            );
        }
        for since in [0, 1, 20, 21, 40, 42, 43] {
            let want = (1..=seq).find(|&s| s as i64 / 7 >= since);
            let got = store
                .fetch(g.id, 0, since, 1)
                .unwrap()
                .first()
                .map(|m| m.seq);
            assert_eq!(got, want, "since {since}");
        }
        assert_eq!(store.fetch(g.id, 149, 0, 1).unwrap()[0].text.len(), 70_000);
        assert_eq!(
            store.find_sent(g.id, "alice", "c150").unwrap(),
            Some((150, 21))
        );
        let stored = store.load_group(g.id).unwrap();
        assert_eq!((stored.last_seq, stored.last_ts), (seq, seq as i64 / 7));
        assert_eq!(store.load_group(other.id).unwrap().last_seq, seq);
    }

    #[test]
    fn a_store_of_message_rows_moves_to_chunks_whole() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The layout before chunks: one row per message.
            let conn = Connection::open(dir.path().join("zms.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE groups (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL);
                 CREATE TABLE messages (group_id INTEGER NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
                     sender TEXT NOT NULL, client_id TEXT, text TEXT NOT NULL, PRIMARY KEY (group_id, seq)) WITHOUT ROWID;
                 CREATE UNIQUE INDEX messages_client ON messages (group_id, sender, client_id);
                 INSERT INTO groups VALUES (1, 'general', 1), (2, 'random', 1);",
            )
            .unwrap();
            for seq in 1..=2_000i64 {
                let client_id = (seq % 3 != 0).then(|| format!("c{seq}"));
                conn.execute(
                    "INSERT INTO messages VALUES (?1, ?2, ?3, 'alice', ?4, ?5)",
                    params![
                        1 + seq % 2,
                        (seq + 1) / 2,
                        seq,
                        client_id,
                        "y".repeat(seq as usize % 90)
                    ],
                )
                .unwrap();
            }
        }
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        for (name, id) in [("general", 1), ("random", 2)] {
            let g = store.ensure_group(name, 2).unwrap();
            assert_eq!((g.id, g.last_seq), (id, 1_000));
            let all = store.fetch(g.id, 0, 0, 1_000).unwrap();
            assert_eq!(all.len(), 1_000);
            for (i, m) in all.iter().enumerate() {
                let row = 2 * (i as i64 + 1) - (id - 1);
                assert_eq!(
                    (m.seq, m.ts, m.text.len()),
                    (i as u64 + 1, row, row as usize % 90)
                );
            }
        }
        assert_eq!(store.find_sent(1, "alice", "c2").unwrap(), Some((1, 2)));
        assert_eq!(
            store.find_sent(1, "alice", "c6").unwrap(),
            None,
            "no client id"
        );
        let old: bool = store
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'messages')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!old, "the old table is gone");
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
        // The checkpointer's step, run here at the worst moment for it, always inside the
        // writer's transaction (a thread could be scheduled anywhere): then no step ever
        // finds the whole log copied, and SQLite alone would never start it over.
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        store._checkpointer = None;
        let limit = 1 << 20;
        store
            .conn
            .execute_batch(&format!("PRAGMA journal_size_limit = {limit}"))
            .unwrap();
        let db = dir.path().join("zms.db");
        let checkpointer = open_connection(&db).unwrap();
        let page_size: u64 = checkpointer
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        let wal_size = || std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
        // One message per transaction writes whole pages, some 8 KiB of log each: the log
        // passes the limit within 130 or so, and only a restart ever shrinks it.
        let (mut largest, mut restarts, mut seq) = (0, 0, 0);
        while restarts < 3 {
            seq += 1;
            assert!(
                seq < 2_000,
                "the log restarted {restarts} times in {seq} writes ({largest} bytes)"
            );
            store.begin().unwrap();
            store.append(g.id, &msg(seq, 1), "").unwrap();
            let wanted = &store.restart_wanted;
            checkpoint(&checkpointer, page_size, limit, wanted).unwrap();
            store.commit().unwrap();
            let size = wal_size();
            if size < largest && largest > limit {
                restarts += 1;
                largest = 0;
            }
            largest = largest.max(size);
            assert!(largest < 2 * limit, "the log grew to {largest} bytes");
        }
        assert_eq!(store.load_group(g.id).unwrap().last_seq, seq);
    }

    #[test]
    fn the_checkpointer_thread_asks_for_a_restart_once_the_log_passes_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let db = dir.path().join("zms.db");
        store._checkpointer = None;
        let limit = 64 << 10;
        let g = store.ensure_group("g", 1).unwrap();
        store.begin().unwrap();
        for seq in 1..=200 {
            let text = "x".repeat(1_000);
            store
                .append(
                    g.id,
                    &Message {
                        text,
                        ..msg(seq, 1)
                    },
                    "",
                )
                .unwrap();
        }
        store.commit().unwrap();
        assert!(!store.restart_wanted.load(Ordering::Relaxed));
        let wanted = Arc::clone(&store.restart_wanted);
        store._checkpointer = Some(Checkpointer::start(&db, limit, Arc::clone(&wanted)).unwrap());
        // The event itself, waited for: the thread runs when the machine lets it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !wanted.load(Ordering::Relaxed) {
            assert!(std::time::Instant::now() < deadline, "no restart asked for");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The writer's next transaction restarts the log and clears the request (with the
        // thread stopped, which would ask again until that write).
        store._checkpointer = None;
        store.append(g.id, &msg(201, 1), "").unwrap();
        assert!(!wanted.load(Ordering::Relaxed));
        let frames: i64 = store
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap();
        assert!(frames < 10, "the log started over: {frames} frames");
    }

    #[test]
    fn the_store_maps_no_shared_memory_file() {
        // A mapped -shm file made immutable or truncated under the server kills it with SIGBUS
        // at the next write; the log's index lives in the heap instead.
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        for seq in 1..=3 {
            store.append(g.id, &msg(seq, 1), "").unwrap();
        }
        assert_eq!(store.fetch(g.id, 0, 0, 10).unwrap().len(), 3);
        assert!(dir.path().join("zms.db-wal").exists());
        assert!(!dir.path().join("zms.db-shm").exists());
    }

    #[test]
    fn data_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        // An earlier version's database, left readable by everyone.
        std::fs::create_dir(&dir).unwrap();
        Connection::open(dir.join("zms.db"))
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        std::fs::write(dir.join("zms.db-shm"), [0u8; 32]).unwrap();
        for file in ["zms.db", "zms.db-shm"] {
            std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let fresh = parent.path().join("fresh").join("data");
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        for dir in [&dir, &fresh] {
            let mut store = Store::open(dir, Durability::Process).unwrap();
            let g = store.ensure_group("g", 1).unwrap();
            store.append(g.id, &msg(1, 1), "").unwrap();
            for file in ["zms.db", "zms.db-wal", "lock", mark::FILE] {
                assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
            }
        }
        assert_eq!(mode(&dir.join("zms.db-shm")), 0o600, "an earlier version's");
        assert_eq!(mode(&fresh), 0o700, "a data directory it makes");
    }

    /// The files of a store killed now: what a crash leaves on disk.
    fn copy_store(from: &Path, to: &Path) {
        for file in ["zms.db", "zms.db-wal", mark::FILE] {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }

    #[test]
    fn a_log_that_lost_acknowledged_messages_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        // No checkpoints: every committed page stays in the log, as after a crash mid-load.
        store._checkpointer = None;
        let g = store.ensure_group("g", 1).unwrap();
        let other = store.ensure_group("other", 1).unwrap();
        for seq in 1..=5 {
            store
                .append(g.id, &msg(seq, 1), &format!("c{seq}"))
                .unwrap();
            store.append(other.id, &msg(seq, 1), "").unwrap();
        }
        let intact = tempfile::tempdir().unwrap();
        copy_store(dir.path(), intact.path());
        let damaged = tempfile::tempdir().unwrap();
        copy_store(dir.path(), damaged.path());
        // One byte of the last frame (the last commit, message 5 of `other`) changed: SQLite
        // drops that commit and everything after it.
        let wal = damaged.path().join("zms.db-wal");
        let mut bytes = std::fs::read(&wal).unwrap();
        let last = bytes.len() - 100;
        bytes[last] ^= 0x55;
        std::fs::write(&wal, bytes).unwrap();

        let mut store = Store::open(intact.path(), Durability::Process).unwrap();
        assert_eq!(store.load_group(other.id).unwrap().last_seq, 5);
        drop(store);
        let err = Store::open(damaged.path(), Durability::Process)
            .err()
            .expect("a store that lost acknowledged messages is refused");
        let err = err.to_string();
        assert!(
            err.contains("holds 9 messages but 10 were acknowledged") && err.contains("delete"),
            "{err}"
        );
        // The operator's way out: without the mark, what is left is served.
        std::fs::remove_file(damaged.path().join(mark::FILE)).unwrap();
        let mut store = Store::open(damaged.path(), Durability::Process).unwrap();
        assert_eq!(store.load_group(other.id).unwrap().last_seq, 4);
    }

    /// A sender's message `seq`, sent under `id`.
    fn sent_as(sender: &str, seq: u64, id: &str) -> (Message, String) {
        let message = Message {
            sender: sender.into(),
            ..msg(seq, seq as i64)
        };
        (message, id.to_string())
    }

    #[test]
    fn rising_client_ids_take_a_row_per_transaction_and_are_all_found() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        // 2,500 rising ids in one transaction (past a run's limit), then 10 in each of 20.
        let mut seq = 0;
        store.begin().unwrap();
        for n in 1..=2_500 {
            seq += 1;
            let (m, id) = sent_as("alice", seq, &format!("a-{n}"));
            assert_eq!(store.append(g.id, &m, &id).unwrap(), Appended::New);
        }
        // A retry within the transaction, of an id in a run already written and of one not.
        for (n, original) in [(3, 3), (2_499, 2_499)] {
            let (m, id) = sent_as("alice", seq + 1, &format!("a-{n}"));
            assert_eq!(
                store.append(g.id, &m, &id).unwrap(),
                Appended::Duplicate {
                    seq: original,
                    ts: original as i64
                }
            );
        }
        store.commit().unwrap();
        for n in 2_501..=2_700 {
            if n % 10 == 1 {
                store.begin().unwrap();
            }
            seq += 1;
            let (m, id) = sent_as("alice", seq, &format!("a-{n}"));
            assert_eq!(store.append(g.id, &m, &id).unwrap(), Appended::New);
            if n % 10 == 0 {
                store.commit().unwrap();
            }
        }
        let count = |table: &str| -> i64 {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            store.conn.query_row(&sql, [], |r| r.get(0)).unwrap()
        };
        assert_eq!((count("sent_runs"), count("sent")), (3 + 20, 0));
        for n in [
            1, 9, 10, 99, 100, 1_024, 1_025, 2_048, 2_049, 2_500, 2_501, 2_700,
        ] {
            let id = format!("a-{n}");
            assert_eq!(
                store.find_sent(g.id, "alice", &id).unwrap(),
                Some((n, n as i64)),
                "{id}"
            );
        }
        for absent in ["a-0", "a-2701", "a-01", "b-1"] {
            assert_eq!(store.find_sent(g.id, "alice", absent).unwrap(), None);
        }
        assert_eq!(store.find_sent(g.id, "bob", "a-1").unwrap(), None);
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A sender's next id above its last (by 1 or 2), or any id of a small pool.
        Send {
            sender: usize,
            rise: Option<u64>,
            any: u64,
        },
        Commit,
        Rollback,
        /// Commit, close and open the store again: only the database remembers.
        Reopen,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (0..3usize, proptest::option::of(1..3u64), 0..300u64)
                .prop_map(|(sender, rise, any)| Step::Send { sender, rise, any }),
            2 => Just(Step::Commit),
            1 => Just(Step::Rollback),
            1 => Just(Step::Reopen),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Against a map of every committed (sender, id): each send is new exactly when its id
        /// is new to its sender, and a duplicate answers with the first message's seq.
        #[test]
        fn client_ids_in_any_order_are_stored_once(steps in proptest::collection::vec(step(), 1..250)) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(dir.path(), Durability::Process).unwrap();
            let g = store.ensure_group("g", 1).unwrap().id;
            let mut committed: HashMap<(usize, String), u64> = HashMap::new();
            let mut open: HashMap<(usize, String), u64> = HashMap::new();
            let mut counters = [0u64; 3];
            let mut seq = 0;
            for step in steps {
                match step {
                    Step::Send { sender, rise, any } => {
                        if store.conn.is_autocommit() {
                            store.begin().unwrap();
                        }
                        let id = match rise {
                            Some(by) => {
                                counters[sender] += by;
                                format!("s{}", counters[sender])
                            }
                            None => format!("s{any}"),
                        };
                        seq += 1;
                        let (m, _) = sent_as(&format!("user{sender}"), seq, &id);
                        let key = (sender, id.clone());
                        let want = match committed.get(&key).or(open.get(&key)) {
                            Some(&first) => Appended::Duplicate { seq: first, ts: first as i64 },
                            None => {
                                open.insert(key, seq);
                                Appended::New
                            }
                        };
                        proptest::prop_assert_eq!(store.append(g, &m, &id).unwrap(), want, "{}", id);
                    }
                    Step::Commit => {
                        if !store.conn.is_autocommit() {
                            store.commit().unwrap();
                        }
                        committed.extend(open.drain());
                    }
                    Step::Rollback => {
                        store.rollback();
                        open.clear();
                    }
                    Step::Reopen => {
                        if !store.conn.is_autocommit() {
                            store.commit().unwrap();
                        }
                        committed.extend(open.drain());
                        drop(store);
                        store = Store::open(dir.path(), Durability::Process).unwrap();
                    }
                }
            }
            for ((sender, id), first) in &committed {
                let found = store.find_sent(g, &format!("user{sender}"), id).unwrap();
                proptest::prop_assert_eq!(found, Some((*first, *first as i64)));
            }
        }
    }

    #[test]
    fn a_store_of_single_client_id_rows_moves_to_runs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), Durability::Process).unwrap();
            let g = store.ensure_group("g", 1).unwrap();
            // The layout before runs: every client id a row of `sent`, in any order; "éé" is
            // longer than "c100" in bytes, shorter in characters.
            let ids = [
                ("c5", 5),
                ("c30", 30),
                ("éé", 200),
                ("c7", 7),
                ("c100", 100),
                ("c1", 1),
            ];
            for (id, n) in ids {
                store
                    .conn
                    .execute(
                        "INSERT INTO sent (group_id, sender, client_id, seq, ts) VALUES (?1, 'alice', ?2, ?3, ?3)",
                        params![g.id, id, n],
                    )
                    .unwrap();
            }
            store.conn.execute_batch("PRAGMA user_version = 0").unwrap();
        }
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        let rows: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM sent", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "every id moved to a run");
        // The highest old id is known: a retry of it is no new message.
        store.begin().unwrap();
        for (id, first) in [("éé", 200), ("c100", 100)] {
            let (m, id) = sent_as("alice", 201, id);
            assert_eq!(
                store.append(g.id, &m, &id).unwrap(),
                Appended::Duplicate {
                    seq: first,
                    ts: first as i64
                }
            );
        }
        let (m, id) = sent_as("alice", 201, "c6");
        assert_eq!(store.append(g.id, &m, &id).unwrap(), Appended::New);
        store.commit().unwrap();
        for n in [1, 5, 6, 7, 30] {
            assert!(store
                .find_sent(g.id, "alice", &format!("c{n}"))
                .unwrap()
                .is_some());
        }
    }

    #[test]
    fn chunks_keyed_by_group_and_seq_move_to_integer_keys() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), Durability::Process).unwrap();
            let g = store.ensure_group("g", 1).unwrap();
            let other = store.ensure_group("other", 1).unwrap();
            // The layout before: a rowid table with its key (group_id, first_seq) beside it.
            store
                .conn
                .execute_batch(
                    "DROP TABLE chunks;
                     CREATE TABLE chunks (group_id INTEGER NOT NULL, first_seq INTEGER NOT NULL,
                         last_seq INTEGER NOT NULL, last_ts INTEGER NOT NULL, messages BLOB NOT NULL,
                         PRIMARY KEY (group_id, first_seq));
                     PRAGMA user_version = 1;",
                )
                .unwrap();
            // Chunks of 1..=10 messages of `g`, each followed by one of `other`.
            let (mut seq, mut size) = (0u64, 1u64);
            while seq < 55 {
                let mut blob = Vec::new();
                for s in seq + 1..=seq + size {
                    codec::append_message(&mut blob, &msg(s, s as i64 * 10));
                }
                store
                    .conn
                    .execute(
                        "INSERT INTO chunks VALUES (?1, ?2, ?3, ?4, ?5), (?6, ?2, ?2, 0, ?7)",
                        params![
                            g.id,
                            (seq + 1) as i64,
                            (seq + size) as i64,
                            ((seq + size) * 10) as i64,
                            blob,
                            other.id,
                            {
                                let mut one = Vec::new();
                                codec::append_message(&mut one, &msg(seq + 1, 0));
                                one
                            }
                        ],
                    )
                    .unwrap();
                seq += size;
                size += 1;
            }
        }
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        let other = store.ensure_group("other", 1).unwrap();
        assert_eq!((g.last_seq, g.last_ts), (55, 550));
        assert_eq!(other.last_seq, 46, "the first seq of the last chunk of g");
        let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(store.fetch(g.id, 0, 0, 100).unwrap()),
            (1..=55).collect::<Vec<_>>()
        );
        assert_eq!(seqs(store.fetch(g.id, 20, 0, 3).unwrap()), vec![21, 22, 23]);
        assert_eq!(seqs(store.fetch(g.id, 0, 333, 2).unwrap()), vec![34, 35]);
        assert_eq!(
            seqs(store.fetch(other.id, 0, 0, 100).unwrap()),
            vec![1, 2, 4, 7, 11, 16, 22, 29, 37, 46]
        );
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, LAYOUT);
        // New messages follow the moved ones.
        store.append(g.id, &msg(56, 560), "").unwrap();
        assert_eq!(seqs(store.fetch(g.id, 54, 0, 10).unwrap()), vec![55, 56]);
    }

    #[test]
    fn a_seq_beyond_the_chunk_keys_is_refused_and_nothing_is_stored() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        store.append(g.id, &msg(MAX_SEQ, 1), "").unwrap();
        store.begin().unwrap();
        let err = store.append(g.id, &msg(MAX_SEQ + 1, 2), "c1").unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        store.rollback();
        assert_eq!(store.load_group(g.id).unwrap().last_seq, MAX_SEQ);
        assert_eq!(store.find_sent(g.id, "alice", "c1").unwrap(), None);
        assert!(store.fetch(g.id, MAX_SEQ, 0, 10).unwrap().is_empty());
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
