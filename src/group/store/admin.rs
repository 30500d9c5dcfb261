//! What operators change at runtime: groups created (CREATE) and dropped (DROP), their private
//! flag (SET), bans lifted (UNBAN). Each group change is a transaction of its own.

use rusqlite::{params, OptionalExtension};

use super::chunk::{chunk_key, MAX_SEQ};
use super::{Store, StoredGroup};
use crate::Result;

impl Store {
    /// Creates a group at runtime, or takes up one this store holds (its history with it), and
    /// marks it to be hosted at every start; `private` overrides the server's flags.
    ///
    /// # Errors
    /// The SQLite error; then nothing changed.
    pub fn add_group(&mut self, name: &str, private: bool, now_ms: i64) -> Result<StoredGroup> {
        self.begin()?;
        let added = self.ensure_group(name, now_ms).and_then(|group| {
            self.conn
                .prepare_cached(
                    "INSERT INTO group_settings (group_id, added, private) VALUES (?1, 1, ?2)
                     ON CONFLICT (group_id) DO UPDATE SET added = 1, private = excluded.private",
                )?
                .execute(params![group.id, private])?;
            self.load_group(group.id)
        });
        self.settle(added)
    }

    /// Deletes a group and every row of it. The acknowledged mark is lowered first, so a crash
    /// between the two leaves a mark that lags (a loss unnoticed), never one above the store
    /// (a false alarm at start).
    ///
    /// # Errors
    /// The SQLite error; then nothing was deleted.
    pub fn drop_group(&mut self, group_id: i64) -> Result<()> {
        let held = self.last_seqs.get(&group_id).copied().unwrap_or(0);
        let stored_after = self.stored.saturating_sub(held);
        if let Some(mark) = &mut self.mark {
            mark.record(stored_after);
        }
        self.begin()?;
        let deleted = (|| -> Result<()> {
            let (lo, hi) = (chunk_key(group_id, 0), chunk_key(group_id, MAX_SEQ));
            self.conn
                .prepare_cached("DELETE FROM chunks WHERE key BETWEEN ?1 AND ?2")?
                .execute(params![lo, hi])?;
            for table in [
                "members",
                "sent_runs",
                "sent",
                "invites",
                "bans",
                "group_settings",
                "reads",
                "search_progress",
            ] {
                self.conn.execute(
                    &format!("DELETE FROM {table} WHERE group_id = ?1"),
                    [group_id],
                )?;
            }
            super::chat::unindex_through(&self.conn, group_id, MAX_SEQ)?;
            self.conn
                .execute("DELETE FROM groups WHERE id = ?1", [group_id])?;
            Ok(())
        })();
        match self.settle(deleted) {
            Ok(()) => {
                self.last_seqs.remove(&group_id);
                self.stored = stored_after;
                // A later group may get this id: it must not find this one's client ids.
                self.sent.forget_group(group_id);
                Ok(())
            }
            Err(err) => {
                if let Some(mark) = &mut self.mark {
                    mark.record(self.stored);
                }
                Err(err)
            }
        }
    }

    /// Records that a group is private or public, whatever `--private` says.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn set_private(&mut self, group_id: i64, private: bool) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO group_settings (group_id, private) VALUES (?1, ?2)
                 ON CONFLICT (group_id) DO UPDATE SET private = excluded.private",
            )?
            .execute(params![group_id, private])?;
        Ok(())
    }

    /// The private flag an operator set for a group (CREATE, SET), if any.
    ///
    /// # Errors
    /// The SQLite error.
    pub(super) fn private_setting(&self, group_id: i64) -> Result<Option<bool>> {
        let private: Option<Option<bool>> = self
            .conn
            .prepare_cached("SELECT private FROM group_settings WHERE group_id = ?1")?
            .query_row([group_id], |r| r.get(0))
            .optional()?;
        Ok(private.flatten())
    }

    /// The groups CREATE made, to host at every start.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn added_groups(&mut self) -> Result<Vec<String>> {
        let names = self
            .conn
            .prepare_cached(
                "SELECT name FROM groups JOIN group_settings ON id = group_id
                 WHERE added = 1 ORDER BY name",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(names)
    }

    /// Lifts a ban.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn remove_ban(&mut self, group_id: i64, user: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM bans WHERE group_id = ?1 AND user = ?2")?
            .execute(params![group_id, user])?;
        Ok(())
    }

    /// Commits the transaction `done` ran in, or rolls it back if it failed.
    fn settle<T>(&mut self, done: Result<T>) -> Result<T> {
        match done {
            Ok(value) => self.commit().map(|()| value),
            Err(err) => {
                self.rollback();
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::group::store::tests::msg;
    use crate::group::store::{Durability, Store};

    #[test]
    fn a_created_group_is_hosted_again_and_a_dropped_one_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        store.ensure_group("general", 1).unwrap();
        let rust = store.add_group("rust", true, 2).unwrap();
        assert_eq!(rust.private, Some(true));
        store.begin().unwrap();
        for seq in 1..=3 {
            store
                .append(rust.id, &msg(seq, 10), &format!("c{seq}"))
                .unwrap();
        }
        store.add_ban(rust.id, "bob", 3).unwrap();
        store.commit().unwrap();
        store.set_private(rust.id, false).unwrap();
        drop(store);

        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        assert_eq!(store.added_groups().unwrap(), ["rust"]);
        let again = store.load_group(rust.id).unwrap();
        assert_eq!((again.last_seq, again.private), (3, Some(false)));
        store.drop_group(rust.id).unwrap();
        assert!(store.added_groups().unwrap().is_empty());
        drop(store);

        // The acknowledged mark went down with the group: the store opens, and a group of the
        // same name starts afresh (its client ids forgotten too).
        let mut store = Store::open(dir.path(), Durability::Process).unwrap();
        let fresh = store.add_group("rust", false, 4).unwrap();
        assert_eq!((fresh.last_seq, fresh.banned.len()), (0, 0));
        assert!(store.fetch(fresh.id, 0, 0, 10).unwrap().is_empty());
        store.begin().unwrap();
        let appended = store.append(fresh.id, &msg(1, 20), "c1").unwrap();
        store.commit().unwrap();
        assert_eq!(appended, crate::group::store::Appended::New);
    }
}
