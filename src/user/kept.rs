//! Sends whose outcome is unknown, kept on disk under their client ids.
//!
//! A send that got no answer may still be stored: the group server may have been slow, not
//! gone, and store it when it resumes. Sending the text again under a new id could then store
//! it twice; sending it under the same id stores it at most once. So `zms send` writes each
//! message down with its id before sending it and forgets it once the server has answered
//! (stored, or refused); whatever is left is sent again, under the same ids and before
//! anything new, by the next `zms send` of that user to that group. The interactive client
//! leaves here what it could not confirm before it quit.
//!
//! One file per send, JSON lines, in `CONFIG/unconfirmed/USER/`, readable by the user only.
//! Concurrent runs of the same user may both send a kept message again: the server stores
//! it once all the same.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use crate::client::GroupRef;
use crate::protocol::Outgoing;
use crate::{errinput, keys, Result};

/// A user's kept sends.
#[derive(Debug, Clone)]
pub struct Kept {
    dir: PathBuf,
}

/// One kept send: its file, and its group and messages.
#[derive(Debug)]
pub struct Entry {
    path: PathBuf,
    pub group: GroupRef,
    pub messages: Vec<Outgoing>,
}

impl Kept {
    /// The kept sends of `user` under the config directory `config`.
    pub fn new(config: &Path, user: &str) -> Kept {
        Kept {
            dir: config.join("unconfirmed").join(file_name(user)),
        }
    }

    /// Writes messages down before they are sent to `group`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn keep(&self, group: &GroupRef, messages: &[Outgoing]) -> Result<Entry> {
        keys::create_private_dir(&self.dir)?;
        // Named by time, so that names sort as the sends were made.
        static NUMBER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{:013}-{:010}-{:05}.jsonl",
            crate::time::now_ms(),
            std::process::id(),
            NUMBER.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(name);
        let mut text = String::new();
        for m in messages {
            let line = json!({
                "group": group.name,
                "address": group.address,
                "id": m.client_id,
                "text": m.text,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        keys::write_private(&path, &text)?;
        Ok(Entry {
            path,
            group: group.clone(),
            messages: messages.to_vec(),
        })
    }

    /// The sends kept for `group`, oldest first. A file that cannot be read is left alone
    /// and reported in the log.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn for_group(&self, group: &GroupRef) -> Result<Vec<Entry>> {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(errinput!("cannot list {}: {e}", self.dir.display())),
        };
        let mut paths: Vec<PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        paths.sort();
        let mut entries = Vec::new();
        for path in paths {
            match read_entry(&path) {
                Ok(Some(entry)) if entry.group == *group => entries.push(entry),
                Ok(_) => {}
                Err(err) => tracing::warn!(path = %path.display(), %err, "cannot read a kept send"),
            }
        }
        Ok(entries)
    }
}

impl Entry {
    /// Forgets the send: its outcome is known.
    pub fn forget(&self) {
        if let Err(err) = fs::remove_file(&self.path) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), %err, "cannot remove a kept send");
            }
        }
    }
}

/// A kept send from its file; `None` for an empty one.
fn read_entry(path: &Path) -> Result<Option<Entry>> {
    let text = fs::read_to_string(path)?;
    let mut group: Option<GroupRef> = None;
    let mut messages = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| errinput!("not JSON: {e}"))?;
        let field = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| errinput!("no `{name}`"))
        };
        group.get_or_insert(GroupRef {
            name: field("group")?,
            address: field("address")?,
        });
        messages.push(Outgoing {
            client_id: field("id")?,
            text: field("text")?,
        });
    }
    Ok(group.map(|group| Entry {
        path: path.to_path_buf(),
        group,
        messages,
    }))
}

/// A user name as one plain file name: letters, digits, `_` and `-` as they are, every
/// other octet as `%XX` (a name may hold `/` or be `..`).
fn file_name(user: &str) -> String {
    let mut name = String::new();
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn general() -> GroupRef {
        GroupRef {
            name: "general".into(),
            address: "127.0.0.1:5556".into(),
        }
    }

    fn out(id: &str, text: &str) -> Outgoing {
        Outgoing {
            client_id: id.into(),
            text: text.into(),
        }
    }

    #[test]
    fn kept_sends_come_back_by_group_oldest_first_until_forgotten() {
        let config = tempfile::tempdir().unwrap();
        let kept = Kept::new(config.path(), "alice");
        let random = GroupRef {
            name: "random".into(),
            ..general()
        };
        kept.keep(&general(), &[out("a-1", "one"), out("a-2", "two\nlines")])
            .unwrap();
        kept.keep(&random, &[out("a-3", "elsewhere")]).unwrap();
        kept.keep(&general(), &[out("a-4", "three")]).unwrap();
        let found = kept.for_group(&general()).unwrap();
        let ids: Vec<Vec<&str>> = found
            .iter()
            .map(|e| e.messages.iter().map(|m| m.client_id.as_str()).collect())
            .collect();
        assert_eq!(ids, [vec!["a-1", "a-2"], vec!["a-4"]]);
        assert_eq!(found[0].messages[1].text, "two\nlines");
        for entry in found {
            entry.forget();
        }
        assert!(kept.for_group(&general()).unwrap().is_empty());
        assert_eq!(kept.for_group(&random).unwrap().len(), 1);
        assert!(Kept::new(config.path(), "bob")
            .for_group(&random)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn every_user_name_is_one_private_directory_inside_the_config_directory() {
        use std::os::unix::fs::PermissionsExt;
        let config = tempfile::tempdir().unwrap();
        for user in ["../../escaped", "..", "a/b", "ünï"] {
            let entry = Kept::new(config.path(), user)
                .keep(&general(), &[out("1", "x")])
                .unwrap();
            let dir = entry.path.parent().unwrap();
            assert_eq!(dir.parent().unwrap(), config.path().join("unconfirmed"));
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!((mode(dir), mode(&entry.path)), (0o700, 0o600), "{user}");
        }
        assert_eq!(file_name("../x"), "%2E%2E%2Fx");
    }
}
