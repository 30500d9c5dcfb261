//! What the group server's poll loop needs of a store, as a trait: open a group, begin, append
//! a request's messages, write membership, names and invitations, commit, read a range of
//! history and read back what memory mirrors. [`Store`] (SQLite) implements it here by
//! delegating to its own methods; another backend can sit beside it without touching
//! [`State`](super::state::State), which never calls a store.

use super::retention::Policy;
use super::state::{Append, GroupChange, Write};
use super::store::Store;
use crate::protocol::{Acked, Hit, Message};
use crate::Result;

pub use super::store::{Appended, StoredGroup};

/// A group server's durable storage. Writes happen inside a transaction
/// ([`Storage::begin`] … [`Storage::commit`]); one transaction holds a batch of requests.
pub trait Storage: Send {
    /// Creates the group if it is new, and returns it as stored.
    ///
    /// # Errors
    /// The store's error.
    fn ensure_group(&mut self, name: &str, now_ms: i64) -> Result<StoredGroup>;

    /// Reads a group's last seq, last ts and members.
    ///
    /// # Errors
    /// The store's error.
    fn load_group(&mut self, id: i64) -> Result<StoredGroup>;

    /// Every user name bound to a key, as `(name, key)`.
    ///
    /// # Errors
    /// The store's error.
    fn users(&mut self) -> Result<Vec<(String, String)>>;

    /// The keys invited into a group.
    ///
    /// # Errors
    /// The store's error.
    fn invites(&mut self, group_id: i64) -> Result<Vec<String>>;

    /// Starts a transaction.
    ///
    /// # Errors
    /// The store's error (the write lock was not free in time, say).
    fn begin(&mut self) -> Result<()>;

    /// Commits the transaction; when this returns `Ok`, everything in it is durable.
    ///
    /// # Errors
    /// The store's error; the transaction is then rolled back.
    fn commit(&mut self) -> Result<()>;

    /// Abandons the transaction, if one is open.
    fn rollback(&mut self);

    /// Appends one message, unless its sender already stored one with this `client_id` in the
    /// group (an empty one asks for no de-duplication): then it says which.
    ///
    /// # Errors
    /// The store's error; the transaction must then not commit.
    fn append(&mut self, group_id: i64, message: &Message, client_id: &str) -> Result<Appended>;

    /// Appends a request's messages in order ([`Storage::append`] each): the new ones take
    /// consecutive seqs from `append.first_seq`, a duplicate takes none. Puts each message's
    /// seq, ts and whether it was a duplicate in `acks` (empty before); leaves in
    /// `append.messages` only the new ones, numbered.
    ///
    /// # Errors
    /// The store's error; the transaction must then not commit.
    fn append_batch(&mut self, append: &mut Append, acks: &mut Vec<Acked>) -> Result<()> {
        acks.reserve(append.messages.len());
        let mut next = append.first_seq;
        for (i, message) in append.messages.iter_mut().enumerate() {
            let client_id = append.client_ids.get(i);
            message.seq = next;
            acks.push(match self.append(append.group_id, message, client_id)? {
                Appended::New => {
                    next += 1;
                    Acked {
                        seq: message.seq,
                        ts: message.ts,
                        duplicate: false,
                    }
                }
                // Stored before under this client id: answered with the original seq.
                Appended::Duplicate { seq, ts } => Acked {
                    seq,
                    ts,
                    duplicate: true,
                },
            });
        }
        if acks.iter().any(|a| a.duplicate) {
            let mut duplicate = acks.iter().map(|a| a.duplicate);
            append
                .messages
                .retain(|_| !duplicate.next().unwrap_or(false));
        }
        Ok(())
    }

    /// Makes `user` a member (again).
    ///
    /// # Errors
    /// The store's error.
    fn add_member(&mut self, group_id: i64, user: &str, now_ms: i64) -> Result<()>;

    /// Ends `user`'s membership.
    ///
    /// # Errors
    /// The store's error.
    fn remove_member(&mut self, group_id: i64, user: &str) -> Result<()>;

    /// Binds a user name to a key for good.
    ///
    /// # Errors
    /// The store's error (the name is already bound, the store cannot write).
    fn bind_user(&mut self, name: &str, key: &str, now_ms: i64) -> Result<()>;

    /// Records an invitation of `key` into a group.
    ///
    /// # Errors
    /// The store's error.
    fn add_invite(&mut self, group_id: i64, key: &str, now_ms: i64) -> Result<()>;

    /// Bans a user name from a group for good.
    ///
    /// # Errors
    /// The store's error.
    fn add_ban(&mut self, group_id: i64, user: &str, now_ms: i64) -> Result<()>;

    /// Lifts a ban.
    ///
    /// # Errors
    /// The store's error.
    fn remove_ban(&mut self, group_id: i64, user: &str) -> Result<()>;

    /// Creates a group at runtime (CREATE), in a transaction of its own, and returns it if
    /// this server is to host it now. A store of one server's own takes up a group it holds
    /// but did not host, history and all, and hosts it at every start from now on; a shared
    /// store returns `None`, as the group servers' leases decide who hosts it.
    ///
    /// # Errors
    /// [`crate::Error::Input`] for a group a shared store holds already; the store's error.
    fn add_group(&mut self, name: &str, private: bool, now_ms: i64) -> Result<Option<StoredGroup>>;

    /// Deletes a group and everything of it (messages, members, client ids, invitations,
    /// bans), in a transaction of its own.
    ///
    /// # Errors
    /// The store's error; then nothing was deleted.
    fn drop_group(&mut self, group_id: i64) -> Result<()>;

    /// Records that a group is private or public, overriding the server's `--private` flags.
    ///
    /// # Errors
    /// The store's error.
    fn set_private(&mut self, group_id: i64, private: bool) -> Result<()>;

    /// The groups CREATE made that this server hosts at every start (none for a shared store,
    /// whose leases say).
    ///
    /// # Errors
    /// The store's error.
    fn added_groups(&mut self) -> Result<Vec<String>>;

    /// Carries out one of State's [`GroupChange`]s (outside any batch's transaction): the
    /// group created, if this server hosts it now.
    ///
    /// # Errors
    /// The store's error.
    fn change(&mut self, change: &GroupChange, now_ms: i64) -> Result<Option<StoredGroup>> {
        match change {
            GroupChange::Create { name, private } => self.add_group(name, *private, now_ms),
            GroupChange::Drop { group_id, .. } => self.drop_group(*group_id).map(|()| None),
            GroupChange::Set {
                group_id, private, ..
            } => self.set_private(*group_id, *private).map(|()| None),
        }
    }

    /// Carries out one of State's [`Write`]s.
    ///
    /// # Errors
    /// The store's error.
    fn write(&mut self, write: &Write) -> Result<()> {
        match write {
            Write::AddMember {
                group_id,
                user,
                now_ms,
            } => self.add_member(*group_id, user, *now_ms),
            Write::RemoveMember { group_id, user } => self.remove_member(*group_id, user),
            Write::BindUser { user, key, now_ms } => self.bind_user(user, key, *now_ms),
            Write::AddInvite {
                group_id,
                key,
                now_ms,
            } => self.add_invite(*group_id, key, *now_ms),
            Write::AddBan {
                group_id,
                user,
                now_ms,
            } => self.add_ban(*group_id, user, *now_ms),
            Write::RemoveBan { group_id, user } => self.remove_ban(*group_id, user),
            Write::SetRead {
                group_id,
                user,
                seq,
            } => self.set_read(*group_id, user, *seq),
        }
    }

    /// Moves `user`'s read position in the group to `seq`, unless it is past it already.
    ///
    /// # Errors
    /// The store's error.
    fn set_read(&mut self, group_id: i64, user: &str, seq: u64) -> Result<()>;

    /// How far `user` has read the group: 0 if never.
    ///
    /// # Errors
    /// The store's error.
    fn read_position(&mut self, group_id: i64, user: &str) -> Result<u64>;

    /// Up to `limit` of the group's messages with `ts >= since_ms` whose latest text matches
    /// every word of `query` (edits applied, deleted messages and the edits themselves left
    /// out), newest first, each with the matched parts of its text.
    ///
    /// # Errors
    /// The store's error.
    fn search(&mut self, group_id: i64, query: &str, since_ms: i64, limit: u32)
        -> Result<Vec<Hit>>;

    /// Messages with `seq > after_seq` and `ts >= since_ms`, in seq order, at most `limit`.
    ///
    /// # Errors
    /// The store's error.
    fn fetch(
        &mut self,
        group_id: i64,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Message>>;

    /// Caps the store at about `max_bytes`: past it, writes fail as on a full disk.
    ///
    /// # Errors
    /// The store's error, or a store that cannot be capped.
    fn limit_size(&mut self, max_bytes: u64) -> Result<()>;

    /// Deletes up to `most` chunks of the group's oldest messages that `policy` lets go at
    /// `now_ms`, inside the open transaction, never the last message; returns how many
    /// messages went. A backend that does not trim (the PostgreSQL store, so far) keeps
    /// everything.
    ///
    /// # Errors
    /// The store's error; the transaction must then not commit.
    fn trim(&mut self, group_id: i64, policy: Policy, now_ms: i64, most: usize) -> Result<u64> {
        let _ = (group_id, policy, now_ms, most);
        Ok(0)
    }

    /// Brings the search index a step closer to the stored messages, while the server is
    /// idle: indexes at most `budget` committed messages it has not seen, in a transaction of
    /// its own; returns whether more remain. A backend whose appends index their messages
    /// themselves (the PostgreSQL store) has nothing to do.
    ///
    /// # Errors
    /// The store's error; nothing of the step is kept.
    fn index_step(&mut self, budget: usize) -> Result<bool> {
        let _ = budget;
        Ok(false)
    }

    /// The group's first stored seq: 1 until messages were trimmed, then the one after them.
    ///
    /// # Errors
    /// The store's error.
    fn first_kept(&mut self, group_id: i64) -> Result<u64> {
        let _ = group_id;
        Ok(1)
    }

    /// For a store shared by several group servers: renews this server's hold on its groups
    /// and says which groups it gained or lost. A store of one server's own changes nothing.
    ///
    /// # Errors
    /// The store's error.
    fn balance(&mut self) -> Result<Balance> {
        Ok(Balance::default())
    }

    /// For a shared store whose [`Storage::balance`] failed: the groups whose hold lapsed
    /// (not renewed within the lease), which this server must stop serving at once, as
    /// another may own them now. A store of one server's own has none.
    fn expire_leases(&mut self) -> Vec<i64> {
        Vec::new()
    }
}

/// A group a server has begun to host.
#[derive(Debug, Clone)]
pub struct Hosted {
    pub group: StoredGroup,
    /// Only allowed or invited keys may join (with security).
    pub private: bool,
}

/// What [`Storage::balance`] changed: groups to start and stop hosting.
#[derive(Debug, Clone, Default)]
pub struct Balance {
    pub gained: Vec<Hosted>,
    /// Store ids of the groups another server hosts now.
    pub lost: Vec<i64>,
}

impl Storage for Store {
    fn ensure_group(&mut self, name: &str, now_ms: i64) -> Result<StoredGroup> {
        Store::ensure_group(self, name, now_ms)
    }

    fn load_group(&mut self, id: i64) -> Result<StoredGroup> {
        Store::load_group(self, id)
    }

    fn users(&mut self) -> Result<Vec<(String, String)>> {
        Store::users(self)
    }

    fn invites(&mut self, group_id: i64) -> Result<Vec<String>> {
        Store::invites(self, group_id)
    }

    fn begin(&mut self) -> Result<()> {
        Store::begin(self)
    }

    fn commit(&mut self) -> Result<()> {
        Store::commit(self)
    }

    fn rollback(&mut self) {
        Store::rollback(self)
    }

    fn append(&mut self, group_id: i64, message: &Message, client_id: &str) -> Result<Appended> {
        Store::append(self, group_id, message, client_id)
    }

    fn add_member(&mut self, group_id: i64, user: &str, now_ms: i64) -> Result<()> {
        Store::add_member(self, group_id, user, now_ms)
    }

    fn remove_member(&mut self, group_id: i64, user: &str) -> Result<()> {
        Store::remove_member(self, group_id, user)
    }

    fn bind_user(&mut self, name: &str, key: &str, now_ms: i64) -> Result<()> {
        Store::bind_user(self, name, key, now_ms)
    }

    fn add_invite(&mut self, group_id: i64, key: &str, now_ms: i64) -> Result<()> {
        Store::add_invite(self, group_id, key, now_ms)
    }

    fn add_ban(&mut self, group_id: i64, user: &str, now_ms: i64) -> Result<()> {
        Store::add_ban(self, group_id, user, now_ms)
    }

    fn remove_ban(&mut self, group_id: i64, user: &str) -> Result<()> {
        Store::remove_ban(self, group_id, user)
    }

    fn add_group(&mut self, name: &str, private: bool, now_ms: i64) -> Result<Option<StoredGroup>> {
        Store::add_group(self, name, private, now_ms).map(Some)
    }

    fn drop_group(&mut self, group_id: i64) -> Result<()> {
        Store::drop_group(self, group_id)
    }

    fn set_private(&mut self, group_id: i64, private: bool) -> Result<()> {
        Store::set_private(self, group_id, private)
    }

    fn added_groups(&mut self) -> Result<Vec<String>> {
        Store::added_groups(self)
    }

    fn fetch(
        &mut self,
        group_id: i64,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        Store::fetch(self, group_id, after_seq, since_ms, limit)
    }

    fn limit_size(&mut self, max_bytes: u64) -> Result<()> {
        Store::limit_size(self, max_bytes)
    }

    fn trim(&mut self, group_id: i64, policy: Policy, now_ms: i64, most: usize) -> Result<u64> {
        Store::trim(self, group_id, policy, now_ms, most)
    }

    fn first_kept(&mut self, group_id: i64) -> Result<u64> {
        Store::first_kept(self, group_id)
    }

    fn index_step(&mut self, budget: usize) -> Result<bool> {
        Store::index_step(self, budget)
    }

    fn set_read(&mut self, group_id: i64, user: &str, seq: u64) -> Result<()> {
        Store::set_read(self, group_id, user, seq)
    }

    fn read_position(&mut self, group_id: i64, user: &str) -> Result<u64> {
        Store::read_position(self, group_id, user)
    }

    fn search(
        &mut self,
        group_id: i64,
        query: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Hit>> {
        Store::search(self, group_id, query, since_ms, limit)
    }
}
