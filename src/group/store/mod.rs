//! Durable storage of a group server: groups, members and messages in one SQLite file.
//!
//! The only module that holds SQL. The caller owns sequencing (it assigns seq and ts) and
//! transactions (one per batch of requests, so many sends share one commit). This file is the
//! API, the transaction and the opening of the data directory; each concern beside it has a file:
//!
//! - `schema`: the tables, the layout's version and the migrations between versions.
//! - `chunk`: a transaction's messages of a group as one row, a chunk: a batch of 500 sends
//!   costs a few rows, not 500.
//! - `sent`: the client ids that find a retried send, kept in runs, likewise a row per sender
//!   and transaction for ids that rise as counters do.
//! - `checkpoint`: the thread that copies the write-ahead log into the database.
//! - `mark`: the acknowledged high-water mark, which catches a log that lost its tail.
//! - `admin`: groups created and dropped at runtime, their private flag, bans lifted.
//! - `trim`: retention, deleting a group's oldest chunks a few at a time.
//! - `chat`: the search index (FTS5), filled from the stored messages while the server is idle
//!   and before each search, not by the appends; and read positions.
//! - `varint`: the compact integers of chunks and runs.
//!
//! Every reader of stored bytes returns an error, never panics, on any input: [`decode_chunk`],
//! [`find_client_id`] and [`decode_mark`] are those readers, public for fuzzing.

mod admin;
mod chat;
mod checkpoint;
mod chunk;
mod mark;
mod schema;
mod sent;
mod trim;
mod varint;

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::protocol::Message;
use crate::{errinput, Result};
use checkpoint::{Checkpointer, WAL_LIMIT};
use chunk::{chunk_key, Chunk, CHUNKS_FROM, INSERT_CHUNK, MAX_GROUP_ID, MAX_SEQ, SPARE_CHUNKS};

pub use chunk::decode_chunk;
pub use mark::decode_mark;
pub use sent::find_client_id;

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
    /// User names an operator banned from the group (BAN): their JOINs are refused.
    pub banned: Vec<String>,
    /// Whether an operator made the group private or public (CREATE, SET); `None`: as the
    /// server's `--private` flags say.
    pub private: Option<bool>,
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
    /// Each group's last seq as committed, and the open transaction's new ones. The search
    /// index follows the committed ones (see `chat`).
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

impl Store {
    /// Opens (or creates) the store in `dir`, refusing a directory another server holds and a
    /// database that fails its integrity check.
    ///
    /// # Errors
    /// [`crate::Error::Input`] for a busy or corrupt data directory, or a database of a layout
    /// this version does not know; the SQLite error.
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
        // both private; one made readable to others elsewhere is made private here.
        private_file(&path)
            .map_err(|e| errinput!("cannot create database {}: {e}", path.display()))?;
        // A log left by a crash, and the index file another SQLite program may leave (this
        // server keeps its own in memory, see `open_connection`).
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
        let mut store = Self::init(conn, &path, durability, Some(lock))?;
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
        Self::init(
            Connection::open_in_memory()?,
            Path::new(":memory:"),
            Durability::Process,
            None,
        )
    }

    /// The store on `conn`, the database `db` (named in errors), with its tables made or
    /// brought up to date.
    fn init(
        mut conn: Connection,
        db: &Path,
        durability: Durability,
        lock: Option<File>,
    ) -> Result<Store> {
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
        ))?;
        conn.set_prepared_statement_cache_capacity(32);
        // A page cache of 512 KiB rather than SQLite's 2 MB: appends touch only the right
        // edge of each B-tree and history reads stream through pages once, so a larger cache
        // holds memory without saving reads (ingest and history measured the same).
        conn.execute_batch("PRAGMA cache_size = -512")?;
        conn.busy_handler(Some(wait_briefly))?;
        schema::prepare(&conn, db)?;
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
        let mut stmt = self
            .conn
            .prepare_cached("SELECT user FROM bans WHERE group_id = ?1 ORDER BY user")?;
        let banned = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(StoredGroup {
            id,
            name,
            last_seq,
            last_ts,
            members,
            banned,
            private: self.private_setting(id)?,
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
        let mut stmt = self.conn.prepare_cached(CHUNKS_FROM)?;
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
            page.extend(chunk::decode_stored(group_id, key, bytes, first, most)?);
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

    /// Bans a user name from a group for good.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn add_ban(&mut self, group_id: i64, user: &str, now_ms: i64) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO bans (group_id, user, banned_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
            .execute(params![group_id, user, now_ms])?;
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
        let messages = chunk::decode_stored(group_id, key, &bytes, 0, usize::MAX)?;
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

/// The store error for a stored value that does not decode (a store fault, not bad input).
fn undecodable(reason: String) -> crate::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, reason.into()).into()
}

/// Opens a connection to the store's database with SQLite's `unix-excl` VFS: the database is
/// locked to this process, and the log's index (the `-shm` file other VFSes map into memory)
/// is kept in this process's heap, shared by its connections. A mapped file that stops being
/// writable (made immutable, or truncated, under a running server) kills the process with
/// SIGBUS at the next write; a failed write to the log is an error SQLite returns, and a send
/// gets UNAVAILABLE. The data directory's lock already keeps other servers out.
fn open_connection(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), "unix-excl")?;
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

#[cfg(test)]
mod tests;
