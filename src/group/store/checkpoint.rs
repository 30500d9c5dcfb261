//! The checkpointer: a thread that copies the write-ahead log into the database off the request
//! path, and the writer's restart of the log once it has grown past its limit.
//!
//! SQLite's automatic checkpoint runs inside a COMMIT, stalling that batch's answers for as long
//! as it copies the log; the store switches it off and runs this thread instead (file stores
//! only). What the thread leaves to the writer is starting the log over ([`Store::restart_log`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::{open_connection, Store};
use crate::Result;

/// How soon the log is copied into the database again while writes go on. Often, so each
/// checkpoint's fsyncs are short: the writer's own log appends stall behind them.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(5);

/// The longest wait between checkpoints of an idle store (and so the most log a burst after
/// a quiet spell writes before its first checkpoint).
const CHECKPOINT_IDLE: Duration = Duration::from_millis(200);

/// The longest wait before trying a failed checkpoint again.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);

/// The write-ahead log, in bytes, past which the checkpointer asks the writer to start it over.
pub const WAL_LIMIT: u64 = 64 << 20;

/// A thread with its own connection that copies the log into the database until dropped
/// (PASSIVE checkpoints, which never block the writer), and that asks the writer to start the
/// log over once it passes its limit ([`Store::restart_log`]).
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to the database at `path`.
    ///
    /// # Errors
    /// The SQLite error opening the connection, or the thread's spawn.
    pub fn start(path: &Path, limit: u64, restart_wanted: Arc<AtomicBool>) -> Result<Checkpointer> {
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

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Copies the rest of the log into the database and has the next write start it over
    /// (SQLite's RESTART checkpoint), clearing [`Store::restart_wanted`] once done. Run by the
    /// writer itself, between its transactions: the one moment nothing of the log is in
    /// use, which a checkpointing thread would have to catch (and, against a writer that never
    /// pauses, could miss for ever). Most of the log is already copied by the checkpointer,
    /// so this costs the writer the last few frames and a sync, once per [`WAL_LIMIT`].
    pub(super) fn restart_log(&mut self) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::store::tests::msg;
    use crate::group::store::Durability;
    use crate::protocol::Message;

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
}
