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
        let text = std::fs::read_to_string(path)
            .map_err(|e| errinput!("cannot read {}: {e}", path.display()))?;
        let acknowledged = match text.trim() {
            "" => 0,
            digits => digits.parse::<u64>().map_err(|_| {
                errinput!(
                    "{} does not hold a count of messages ({:?}); refusing to start",
                    path.display(),
                    digits.chars().take(40).collect::<String>()
                )
            })?,
        };
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
