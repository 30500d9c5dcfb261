//! The acknowledged high-water mark: how many messages the store had committed when it last
//! acknowledged any, kept in a file of its own beside the database.
//!
//! SQLite reads a write-ahead log up to its first damaged frame and silently drops the rest,
//! so a log whose tail was damaged while the server was stopped would be served without its
//! last acknowledged messages, and their seqs given to new ones. The mark lives outside the
//! log: a store holding fewer messages than the mark says were acknowledged is refused at
//! start. The mark is written after each commit and before any acknowledgement leaves, never
//! fsynced: it may lag the database (a crash between the two, a power loss), which only
//! leaves a loss undetected, never raises a false alarm.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{errinput, Result};

/// The mark's file in the data directory.
pub const FILE: &str = "acknowledged";

/// Reads a mark file's contents: a count in decimal digits, white space around it allowed (an
/// empty file is a count of 0). The reader of the mark's format, for any bytes at all.
///
/// # Errors
/// [`crate::Error::Input`] saying what the file holds instead (its first 40 characters);
/// never a panic.
pub fn decode_mark(bytes: &[u8]) -> Result<u64> {
    match String::from_utf8_lossy(bytes).trim() {
        "" => Ok(0),
        digits => digits.parse::<u64>().map_err(|_| {
            errinput!(
                "does not hold a count of messages ({:?})",
                digits.chars().take(40).collect::<String>()
            )
        }),
    }
}

/// The mark: its file and the count last written to it.
pub struct Mark {
    file: File,
    path: PathBuf,
    written: u64,
    /// Whether a failed write was logged already: one line, not one per batch.
    failing: bool,
}

impl Mark {
    /// Reads the mark in `path` (none yet counts as 0) and checks it against `stored`, the
    /// store's messages (the sum of its groups' last seqs); then raises it to `stored`.
    ///
    /// # Errors
    /// [`crate::Error::Input`] when the database (`db`, named in the message) holds fewer
    /// messages than were acknowledged; an unreadable or unwritable mark file.
    pub fn open(path: &Path, stored: u64, db: &Path) -> Result<Mark> {
        let file = super::private_file(path)
            .map_err(|e| errinput!("cannot open {}: {e}", path.display()))?;
        let bytes =
            std::fs::read(path).map_err(|e| errinput!("cannot read {}: {e}", path.display()))?;
        let acknowledged = decode_mark(&bytes)
            .map_err(|e| errinput!("{} {e}; refusing to start", path.display()))?;
        if stored < acknowledged {
            return Err(errinput!(
                "database {} holds {stored} messages but {acknowledged} were acknowledged: its \
                 write-ahead log lost its tail (damaged, or lost in a power cut without --fsync). \
                 Refusing to serve it, as the lost messages' seqs would go to other messages; \
                 restore the data directory from a backup, or delete {} to serve what is left",
                db.display(),
                path.display()
            ));
        }
        let mut mark = Mark {
            file,
            path: path.to_path_buf(),
            written: acknowledged,
            failing: false,
        };
        if stored != acknowledged {
            mark.record(stored);
            if mark.failing {
                return Err(errinput!("cannot write {}", path.display()));
            }
        }
        Ok(mark)
    }

    /// Records that `stored` messages are committed. A failure is logged, not returned: the
    /// messages are committed, and a mark that lags only misses a loss.
    pub fn record(&mut self, stored: u64) {
        if stored == self.written {
            return;
        }
        // Fixed width, so each write covers the last in place: one write, no truncation.
        let text = format!("{stored:020}\n");
        match self.file.write_all_at(text.as_bytes(), 0) {
            Ok(()) => {
                self.written = stored;
                self.failing = false;
            }
            Err(err) if !self.failing => {
                self.failing = true;
                tracing::warn!(%err, path = %self.path.display(),
                    "cannot write the acknowledged mark; a damaged log may go unnoticed");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::group::store::tests::msg;
    use crate::group::store::{Durability, Store};

    #[test]
    fn a_mark_is_a_count_or_an_error() {
        assert_eq!(decode_mark(b"").unwrap(), 0);
        assert_eq!(decode_mark(b"00000000000000000042\n").unwrap(), 42);
        for bad in [&b"12x"[..], b"-1", b"\xff\xfe", b"99999999999999999999999"] {
            let err = decode_mark(bad).unwrap_err();
            assert!(err.to_string().contains("count of messages"), "{err}");
        }
    }

    proptest::proptest! {
        /// Whatever the file holds, reading it answers or fails; it never panics.
        #[test]
        fn any_bytes_read_as_a_mark_give_a_count_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let _ = decode_mark(&bytes);
        }
    }

    /// The files of a store killed now: what a crash leaves on disk.
    fn copy_store(from: &Path, to: &Path) {
        for file in ["zms.db", "zms.db-wal", FILE] {
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
        std::fs::remove_file(damaged.path().join(FILE)).unwrap();
        let mut store = Store::open(damaged.path(), Durability::Process).unwrap();
        assert_eq!(store.load_group(other.id).unwrap().last_seq, 4);
    }
}
