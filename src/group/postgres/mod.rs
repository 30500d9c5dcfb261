//! The PostgreSQL store: groups, messages, members, names and invitations in a database that
//! any number of group servers share, each group owned by one of them at a time ([`lease`]).
//!
//! Like the SQLite store it leaves sequencing to the caller and keeps one transaction per batch:
//! a transaction's messages of a group are written at commit by two statements, one that
//! checks this server's lease epoch and advances the group's `last_seq` (so a server that lost
//! the group writes nothing, and seqs stay gap-free), and one multi-row insert.
//!
//! A lost connection (the primary failed over, the database restarted) is made again, with
//! at most every half second, at the next request or heartbeat outside a transaction; with a multi-host string
//! and `target_session_attrs=read-write` that finds whichever host is primary now. Meanwhile
//! every write is refused at once, so senders get a clear error and send again.

mod chat;
pub mod lease;
pub mod schema;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::{Client, NoTls, Statement};

use super::storage::{Appended, Storage, StoredGroup};
use crate::protocol::Message;
use crate::{errinput, Result};

/// A group's messages appended in the open transaction, written at commit.
#[derive(Default)]
struct Pending {
    /// The group's last seq before them.
    after: i64,
    seqs: Vec<i64>,
    tss: Vec<i64>,
    senders: Vec<String>,
    texts: Vec<String>,
    client_ids: Vec<String>,
}

/// Statements prepared once per connection: a batch costs no parsing.
struct Statements {
    advance: Statement,
    insert: Statement,
    find_sent: Statement,
    fetch: Statement,
}

/// How long connecting to PostgreSQL may take, unless the connection string says: a
/// database that has vanished from the network must not hold the server's loop for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The least time between two tries to connect again after the connection was lost: each
/// batch and heartbeat would otherwise try, each costing up to [`CONNECT_TIMEOUT`].
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// How long sent data may stay unacknowledged by the database host's TCP unless the string
/// says: a host that vanished without closing the connection is noticed in this time.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL store of one group server.
pub struct PgStore {
    /// Where the database is, for connecting again after the connection was lost.
    config: postgres::Config,
    client: Client,
    statements: Statements,
    /// When the connection was lost and not yet made again: the earliest next try.
    retry_at: Option<Instant>,
    /// When the last renewal of the leases that succeeded began: they hold at least until
    /// then plus `lease_ttl`, by the database's clock as by ours.
    renewed_at: Option<Instant>,
    /// This server's name in `groups.owner`: unique per run, so a restarted server claims anew.
    owner: String,
    /// How long a claimed or renewed lease lasts without renewal.
    lease_ttl: Duration,
    /// The epoch of each group this server holds the lease of: appends to others are refused.
    leases: HashMap<i64, i64>,
    /// A transaction is open.
    open: bool,
    /// The open transaction's messages, by group.
    pending: HashMap<i64, Pending>,
    /// The open transaction's client ids, so a retry within one batch is found too.
    pending_ids: HashMap<(i64, String, String), (u64, i64)>,
}

impl PgStore {
    /// Connects to `url` (a libpq URL or key=value string, several hosts allowed), creates or
    /// migrates the schema, and names this server `owner` in leases lasting `lease_ttl`.
    ///
    /// # Errors
    /// A bad connection string, an unreachable database, or PostgreSQL's error.
    pub fn connect(url: &str, owner: &str, lease_ttl: Duration) -> Result<PgStore> {
        let mut config = parse_url(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        let mut client = open(&config, lease_ttl)?;
        schema::migrate(&mut client)?;
        let statements = Self::prepare(&mut client)?;
        Ok(PgStore {
            config,
            client,
            statements,
            retry_at: None,
            renewed_at: None,
            owner: owner.to_string(),
            lease_ttl,
            leases: HashMap::new(),
            open: false,
            pending: HashMap::new(),
            pending_ids: HashMap::new(),
        })
    }

    /// Connects again if the connection was lost (the database restarted, or a standby was
    /// promoted), at most every [`RECONNECT_PAUSE`]. The leases held stay held: each is
    /// checked by its epoch at the next renewal and write.
    ///
    /// # Errors
    /// The database still unreachable.
    fn ensure_connected(&mut self) -> Result<()> {
        if !self.client.is_closed() {
            return Ok(());
        }
        self.open = false;
        self.discard();
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            return Err(crate::Error::Timeout(
                "the database connection is lost; trying again".into(),
            ));
        }
        self.retry_at = Some(now + RECONNECT_PAUSE);
        let mut client = open(&self.config, self.lease_ttl)?;
        self.statements = Self::prepare(&mut client)?;
        self.client = client;
        self.retry_at = None;
        tracing::info!("connected to the database again");
        Ok(())
    }

    /// The statements of a batch, prepared on a new connection.
    fn prepare(client: &mut Client) -> Result<Statements> {
        Ok(Statements {
            advance: client.prepare(
                "UPDATE groups SET last_seq = $4, last_ts = $5
                 WHERE id = $1 AND owner = $2 AND epoch = $3 AND last_seq = $6",
            )?,
            insert: client.prepare(
                "INSERT INTO messages (group_id, seq, ts, sender, text, client_id)
                 SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[])",
            )?,
            // One index probe per client id, whatever the statistics: written as
            // `client_id = ANY($3)` (or as a plain join) the generic plan, made while the table
            // was small, read every message of the sender for each request.
            find_sent: client.prepare(
                "SELECT c.id, m.seq, m.ts FROM unnest($3::text[]) AS c(id)
                 CROSS JOIN LATERAL (SELECT seq, ts FROM messages
                     WHERE group_id = $1 AND sender = $2 AND client_id = c.id
                       AND client_id <> '' LIMIT 1) m",
            )?,
            fetch: client.prepare(
                "SELECT seq, ts, sender, text FROM messages
                 WHERE group_id = $1 AND seq > $2 AND ts >= $3 ORDER BY seq LIMIT $4",
            )?,
        })
    }

    /// Makes sure a connection is there outside a transaction (inside one, a lost connection
    /// fails the transaction's next statement instead).
    ///
    /// # Errors
    /// The connection is lost and cannot be made again yet.
    fn connected(&mut self) -> Result<()> {
        if self.open {
            return Ok(());
        }
        self.ensure_connected()
    }

    /// Creates a group if it is new (private or not), without hosting it: one of the group
    /// servers sharing the database claims it at its next heartbeat.
    ///
    /// # Errors
    /// PostgreSQL's error.
    pub fn create_group(&mut self, name: &str, private: bool, now_ms: i64) -> Result<bool> {
        self.connected()?;
        let created = self.client.execute(
            "INSERT INTO groups (name, private, created_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &private, &now_ms],
        )?;
        Ok(created == 1)
    }

    /// Writes the open transaction's messages: per group, the fenced advance of its last seq,
    /// then the rows.
    fn write_pending(&mut self) -> Result<()> {
        for (group_id, p) in std::mem::take(&mut self.pending) {
            let Some(&epoch) = self.leases.get(&group_id) else {
                return Err(errinput!("group {group_id} is not hosted here"));
            };
            let (Some(&last_seq), Some(&last_ts)) = (p.seqs.last(), p.tss.last()) else {
                continue;
            };
            let advanced = self.client.execute(
                &self.statements.advance,
                &[
                    &group_id,
                    &self.owner,
                    &epoch,
                    &last_seq,
                    &last_ts,
                    &p.after,
                ],
            )?;
            if advanced != 1 {
                return Err(self.refused(group_id, epoch));
            }
            self.client.execute(
                &self.statements.insert,
                &[
                    &group_id,
                    &p.seqs,
                    &p.tss,
                    &p.senders,
                    &p.texts,
                    &p.client_ids,
                ],
            )?;
            for text in &p.texts {
                chat::record_change(&mut self.client, group_id, text)?;
            }
        }
        Ok(())
    }

    /// Why the fenced advance of a group wrote nothing. Another server claimed the group: this
    /// one writes nothing more to it. Otherwise the lease holds and only the seq was out of
    /// step (memory ran ahead of a batch that was lost with the connection): refused, and the
    /// failed batch's reload from the store sets memory right for the next one.
    fn refused(&mut self, group_id: i64, epoch: i64) -> crate::Error {
        let ours = self
            .client
            .query_opt(
                "SELECT 1 FROM groups WHERE id = $1 AND owner = $2 AND epoch = $3",
                &[&group_id, &self.owner, &epoch],
            )
            .is_ok_and(|row| row.is_some());
        if ours {
            return errinput!("group {group_id} was out of step with the database; write refused");
        }
        self.leases.remove(&group_id);
        errinput!("lease of group {group_id} lost to another group server; write refused")
    }

    fn discard(&mut self) {
        self.pending.clear();
        self.pending_ids.clear();
    }

    /// Runs `write` in a transaction of its own unless one is open.
    fn in_transaction<T>(&mut self, write: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.open {
            return write(self);
        }
        self.begin()?;
        match write(self) {
            Ok(value) => self.commit().map(|()| value),
            Err(err) => {
                self.rollback();
                Err(err)
            }
        }
    }

    /// Of `client_ids` (all from `sender`), those stored before in the group, with seq and ts.
    fn sent_before(
        &mut self,
        group_id: i64,
        sender: &str,
        client_ids: &[&str],
    ) -> Result<HashMap<String, (u64, i64)>> {
        let mut found = HashMap::new();
        let ask: Vec<&str> = client_ids
            .iter()
            .copied()
            .filter(|c| !c.is_empty())
            .collect();
        if ask.is_empty() {
            return Ok(found);
        }
        for row in self
            .client
            .query(&self.statements.find_sent, &[&group_id, &sender, &ask])?
        {
            let seq: i64 = row.get(1);
            found.insert(row.get(0), (seq as u64, row.get(2)));
        }
        Ok(found)
    }

    fn push(&mut self, group_id: i64, message: &Message, client_id: &str) {
        if !client_id.is_empty() {
            let key = (group_id, message.sender.clone(), client_id.to_string());
            self.pending_ids.insert(key, (message.seq, message.ts));
        }
        let p = self.pending.entry(group_id).or_insert_with(|| Pending {
            after: message.seq as i64 - 1,
            ..Pending::default()
        });
        p.seqs.push(message.seq as i64);
        p.tss.push(message.ts);
        p.senders.push(message.sender.clone());
        p.texts.push(message.text.clone());
        p.client_ids.push(client_id.to_string());
    }

    /// A stored duplicate of this message: from the open transaction or the database.
    fn duplicate(
        &self,
        group_id: i64,
        message: &Message,
        client_id: &str,
        stored: &HashMap<String, (u64, i64)>,
    ) -> Option<(u64, i64)> {
        if client_id.is_empty() {
            return None;
        }
        let key = (group_id, message.sender.clone(), client_id.to_string());
        self.pending_ids
            .get(&key)
            .or_else(|| stored.get(client_id))
            .copied()
    }
}

impl Storage for PgStore {
    fn ensure_group(&mut self, name: &str, now_ms: i64) -> Result<StoredGroup> {
        self.create_group(name, false, now_ms)?;
        let row = self
            .client
            .query_one("SELECT id FROM groups WHERE name = $1", &[&name])?;
        self.load_group(row.get(0))
    }

    fn load_group(&mut self, id: i64) -> Result<StoredGroup> {
        self.connected()?;
        let row = self.client.query_one(
            "SELECT name, last_seq, last_ts, private FROM groups WHERE id = $1",
            &[&id],
        )?;
        let last_seq: i64 = row.get(1);
        let members = self
            .client
            .query(
                "SELECT username FROM members WHERE group_id = $1 ORDER BY username",
                &[&id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let banned = self
            .client
            .query(
                "SELECT username FROM bans WHERE group_id = $1 ORDER BY username",
                &[&id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(StoredGroup {
            id,
            name: row.get(0),
            last_seq: last_seq as u64,
            last_ts: row.get(2),
            members,
            banned,
            private: Some(row.get(3)),
        })
    }

    fn users(&mut self) -> Result<Vec<(String, String)>> {
        self.connected()?;
        let rows = self.client.query("SELECT name, key FROM users", &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn invites(&mut self, group_id: i64) -> Result<Vec<String>> {
        self.connected()?;
        let rows = self
            .client
            .query("SELECT key FROM invites WHERE group_id = $1", &[&group_id])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn begin(&mut self) -> Result<()> {
        self.ensure_connected()?;
        self.discard();
        self.client.batch_execute("BEGIN")?;
        self.open = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let committed = self
            .write_pending()
            .and_then(|()| Ok(self.client.batch_execute("COMMIT")?));
        self.open = false;
        self.discard();
        if let Err(err) = committed {
            let _ = self.client.batch_execute("ROLLBACK");
            return Err(err);
        }
        Ok(())
    }

    fn rollback(&mut self) {
        self.discard();
        if self.open {
            self.open = false;
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }

    fn append(&mut self, group_id: i64, message: &Message, client_id: &str) -> Result<Appended> {
        self.in_transaction(|store| {
            let stored = store.sent_before(group_id, &message.sender, &[client_id])?;
            if let Some((seq, ts)) = store.duplicate(group_id, message, client_id, &stored) {
                return Ok(Appended::Duplicate { seq, ts });
            }
            store.push(group_id, message, client_id);
            Ok(Appended::New)
        })
    }

    /// One query finds every retried client id of the request (per sender), not one per message.
    fn append_batch(
        &mut self,
        append: &mut super::state::Append,
        acks: &mut Vec<crate::protocol::Acked>,
    ) -> Result<()> {
        let group_id = append.group_id;
        let mut stored: HashMap<String, HashMap<String, (u64, i64)>> = HashMap::new();
        for (i, message) in append.messages.iter().enumerate() {
            let client_id = append.client_ids.get(i);
            if !client_id.is_empty() && !stored.contains_key(&message.sender) {
                let ids: Vec<&str> = (0..append.messages.len())
                    .filter(|&j| append.messages[j].sender == message.sender)
                    .map(|j| append.client_ids.get(j))
                    .collect();
                let found = self.sent_before(group_id, &message.sender, &ids)?;
                stored.insert(message.sender.clone(), found);
            }
        }
        let none = HashMap::new();
        let mut next = append.first_seq;
        let mut kept = Vec::with_capacity(append.messages.len());
        for (i, mut message) in std::mem::take(&mut append.messages).into_iter().enumerate() {
            let client_id = append.client_ids.get(i);
            let before = stored.get(&message.sender).unwrap_or(&none);
            if let Some((seq, ts)) = self.duplicate(group_id, &message, client_id, before) {
                acks.push(crate::protocol::Acked {
                    seq,
                    ts,
                    duplicate: true,
                });
                continue;
            }
            message.seq = next;
            next += 1;
            self.push(group_id, &message, client_id);
            acks.push(crate::protocol::Acked {
                seq: message.seq,
                ts: message.ts,
                duplicate: false,
            });
            kept.push(message);
        }
        append.messages = kept;
        Ok(())
    }

    fn add_member(&mut self, group_id: i64, user: &str, now_ms: i64) -> Result<()> {
        self.connected()?;
        self.client.execute(
            "INSERT INTO members (group_id, username, joined_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&group_id, &user, &now_ms],
        )?;
        Ok(())
    }

    fn remove_member(&mut self, group_id: i64, user: &str) -> Result<()> {
        self.connected()?;
        self.client.execute(
            "DELETE FROM members WHERE group_id = $1 AND username = $2",
            &[&group_id, &user],
        )?;
        Ok(())
    }

    fn bind_user(&mut self, name: &str, key: &str, now_ms: i64) -> Result<()> {
        self.connected()?;
        self.client.execute(
            "INSERT INTO users (name, key, bound_ms) VALUES ($1, $2, $3)",
            &[&name, &key, &now_ms],
        )?;
        Ok(())
    }

    fn add_invite(&mut self, group_id: i64, key: &str, now_ms: i64) -> Result<()> {
        self.connected()?;
        self.client.execute(
            "INSERT INTO invites (group_id, key, invited_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&group_id, &key, &now_ms],
        )?;
        Ok(())
    }

    fn add_ban(&mut self, group_id: i64, user: &str, now_ms: i64) -> Result<()> {
        self.connected()?;
        self.client.execute(
            "INSERT INTO bans (group_id, username, banned_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&group_id, &user, &now_ms],
        )?;
        Ok(())
    }

    fn remove_ban(&mut self, group_id: i64, user: &str) -> Result<()> {
        self.client.execute(
            "DELETE FROM bans WHERE group_id = $1 AND username = $2",
            &[&group_id, &user],
        )?;
        Ok(())
    }

    /// The row only: whichever server's lease takes it hosts it, within a heartbeat.
    fn add_group(&mut self, name: &str, private: bool, now_ms: i64) -> Result<Option<StoredGroup>> {
        match self.create_group(name, private, now_ms)? {
            true => Ok(None),
            false => Err(errinput!(
                "group '{name}' exists already in the cluster's database"
            )),
        }
    }

    /// Only by the group's lease holder: another server's group is not this one's to drop.
    fn drop_group(&mut self, group_id: i64) -> Result<()> {
        let Some(&epoch) = self.leases.get(&group_id) else {
            return Err(errinput!("group {group_id} is not hosted here"));
        };
        self.in_transaction(|store| {
            for table in ["messages", "members", "invites", "bans", "reads", "changed"] {
                store.client.execute(
                    &format!("DELETE FROM {table} WHERE group_id = $1"),
                    &[&group_id],
                )?;
            }
            let deleted = store.client.execute(
                "DELETE FROM groups WHERE id = $1 AND owner = $2 AND epoch = $3",
                &[&group_id, &store.owner, &epoch],
            )?;
            match deleted {
                1 => Ok(()),
                _ => Err(errinput!(
                    "lease of group {group_id} lost to another group server; not dropped"
                )),
            }
        })?;
        self.leases.remove(&group_id);
        Ok(())
    }

    fn set_private(&mut self, group_id: i64, private: bool) -> Result<()> {
        self.client.execute(
            "UPDATE groups SET private = $2 WHERE id = $1",
            &[&group_id, &private],
        )?;
        Ok(())
    }

    fn added_groups(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn fetch(
        &mut self,
        group_id: i64,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        if !self.open {
            self.ensure_connected()?;
        }
        // A read in the open transaction sees its messages, as with SQLite.
        if self.open {
            self.write_pending()?;
        }
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let rows = self.client.query(
            &self.statements.fetch,
            &[&group_id, &after, &since_ms, &i64::from(limit)],
        )?;
        Ok(rows
            .iter()
            .map(|r| Message {
                seq: r.get::<_, i64>(0) as u64,
                ts: r.get(1),
                sender: r.get(2),
                text: r.get(3),
            })
            .collect())
    }

    fn set_read(&mut self, group_id: i64, user: &str, seq: u64) -> Result<()> {
        chat::set_read(&mut self.client, group_id, user, seq)
    }

    fn read_position(&mut self, group_id: i64, user: &str) -> Result<u64> {
        chat::read_position(&mut self.client, group_id, user)
    }

    fn search(
        &mut self,
        group_id: i64,
        query: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<crate::protocol::Hit>> {
        if self.open {
            self.write_pending()?;
        }
        chat::search(&mut self.client, group_id, query, since_ms, limit)
    }

    fn limit_size(&mut self, _max_bytes: u64) -> Result<()> {
        Err(errinput!(
            "--max-storage-mib applies to the SQLite store; cap a PostgreSQL database with its own quotas"
        ))
    }

    fn balance(&mut self) -> Result<super::storage::Balance> {
        self.ensure_connected()?;
        lease::balance(self)
    }

    fn expire_leases(&mut self) -> Vec<i64> {
        lease::expire(self)
    }
}

/// Connects to the database. A transaction left open past half a lease ends with its
/// session: a server frozen (or cut off) in the middle of a batch would otherwise hold its
/// groups' rows locked, and no other server could claim them when the lease runs out.
fn open(config: &postgres::Config, lease_ttl: Duration) -> Result<Client> {
    let mut client = config
        .connect(NoTls)
        .map_err(|e| explain_connect(config, e))?;
    let idle_ms = (lease_ttl / 2).as_millis().max(1000);
    client.batch_execute(&format!(
        "SET idle_in_transaction_session_timeout = {idle_ms}"
    ))?;
    Ok(client)
}

/// Reads `--store`, saying what to do when it is not a PostgreSQL connection string (a SQLite
/// data directory given by mistake, say).
fn parse_url(url: &str) -> Result<postgres::Config> {
    let path = std::path::Path::new(url);
    if !url.contains('=') && !url.contains("://") && path.exists() {
        let what = match path.is_dir() && path.join("zms.db").exists() {
            true => "a SQLite data directory",
            false => "a file or directory, not a database",
        };
        return Err(errinput!(
            "--store {url} is {what}: --store takes a PostgreSQL connection string \
             (postgres://user@host/db); to serve SQLite data use --data {url} instead"
        ));
    }
    url.parse().map_err(|e| {
        errinput!(
            "bad PostgreSQL connection string '{url}': {e} \
             (write postgres://user@host/db or 'host=h dbname=db user=u')"
        )
    })
}

/// PostgreSQL's refusal to connect, as one line that says what to do.
fn explain_connect(config: &postgres::Config, err: postgres::Error) -> crate::Error {
    let user = config.get_user().unwrap_or("(default)");
    let db = config.get_dbname().unwrap_or("(default)");
    let code = err.code().cloned();
    match code {
        Some(c)
            if c == SqlState::INVALID_PASSWORD
                || c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            errinput!(
                "PostgreSQL refused user '{user}': {}; check the user and password in --store \
                 (or ZMS_STORE, ~/.pgpass)",
                db_message(&err)
            )
        }
        Some(c) if c == SqlState::INVALID_CATALOG_NAME => errinput!(
            "PostgreSQL has no database '{db}': create it first (createdb -O {user} {db})"
        ),
        Some(_) => err.into(),
        None => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
                .map(|(h, p)| match h {
                    postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
                    postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            crate::Error::Timeout(format!(
                "cannot reach PostgreSQL at {}: {err}; is it running, and is --store right?",
                hosts.join(",")
            ))
        }
    }
}

/// The server's own words in a database error.
fn db_message(err: &postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| err.to_string())
}
