//! The PostgreSQL schema, as numbered migrations that zms applies itself at start. Every table
//! is plain SQL types, so `psql` reads it: `SELECT seq, sender, text FROM messages
//! JOIN groups ON groups.id = group_id WHERE name = 'general' ORDER BY seq`.

use postgres::Client;

use crate::Result;

/// The schema version this zms writes: one per migration.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Migrations in order; `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Append
/// only: a database records the version it is at, and a released migration never changes.
const MIGRATIONS: &[&str] = &[
    "
-- A group and its lease. `last_seq`/`last_ts` are the counter every append advances in the
-- statement that checks the lease (gap-free, unlike a SEQUENCE); `owner` and `epoch` say which
-- group server may append, until `lease_until` (the database's clock, so servers' clocks may
-- disagree). `epoch` rises at every claim: it is the fencing token.
CREATE TABLE groups (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    private     BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms  BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL DEFAULT 0,
    last_ts     BIGINT NOT NULL DEFAULT 0,
    owner       TEXT,
    epoch       BIGINT NOT NULL DEFAULT 0,
    lease_until TIMESTAMPTZ
);
-- One row a message; `client_id` is the sender's id for a retried send ('' for none).
CREATE TABLE messages (
    group_id  BIGINT NOT NULL REFERENCES groups(id),
    seq       BIGINT NOT NULL,
    ts        BIGINT NOT NULL,
    sender    TEXT NOT NULL,
    text      TEXT NOT NULL,
    client_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (group_id, seq)
);
CREATE INDEX messages_ts ON messages (group_id, ts);
CREATE UNIQUE INDEX messages_client_id ON messages (group_id, sender, client_id)
    WHERE client_id <> '';
CREATE TABLE members (
    group_id  BIGINT NOT NULL REFERENCES groups(id),
    username  TEXT NOT NULL,
    joined_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, username)
);
-- With security: each user name belongs to the first key that used it.
CREATE TABLE users (
    name     TEXT PRIMARY KEY,
    key      TEXT NOT NULL,
    bound_ms BIGINT NOT NULL
);
CREATE TABLE invites (
    group_id   BIGINT NOT NULL REFERENCES groups(id),
    key        TEXT NOT NULL,
    invited_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, key)
);
-- Live group servers, for a fair share each: a row is renewed every heartbeat.
CREATE TABLE servers (
    owner       TEXT PRIMARY KEY,
    alive_until TIMESTAMPTZ NOT NULL
);
",
    // 1 → 2: user names an operator banned from a group.
    "
CREATE TABLE bans (
    group_id  BIGINT NOT NULL REFERENCES groups(id),
    username  TEXT NOT NULL,
    banned_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, username)
);
",
    // 2 → 3: read positions, the latest text of edited and deleted messages, and a full-text
    // index for SEARCH.
    "
CREATE TABLE reads (
    group_id BIGINT NOT NULL REFERENCES groups(id),
    username TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    PRIMARY KEY (group_id, username)
);
-- A message's text after its latest edit, or its deletion (text empty); the message row keeps
-- what was sent, and the edit is a message of its own.
CREATE TABLE changed (
    group_id BIGINT NOT NULL REFERENCES groups(id),
    seq      BIGINT NOT NULL,
    text     TEXT NOT NULL,
    deleted  BOOLEAN NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE INDEX messages_search ON messages USING GIN (to_tsvector('simple', text));
",
];

/// Any number for the advisory lock that makes servers starting at once migrate one by one.
const MIGRATION_LOCK: i64 = 0x007a_6d73_5f6d_6967;

/// Brings the database's schema to the newest version, in one transaction.
///
/// # Errors
/// PostgreSQL's error; nothing is changed then.
pub fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS zms_schema (version INTEGER NOT NULL)")?;
    let version: Option<i32> = tx
        .query_opt("SELECT version FROM zms_schema", &[])?
        .map(|row| row.get(0));
    let from = version.unwrap_or(0);
    if from > VERSION {
        return Err(crate::errinput!(
            "the database's schema is version {from}, written by a newer zms (this one knows \
             version {VERSION}): run that zms or a newer one against it, not this one"
        ));
    }
    for migration in &MIGRATIONS[from as usize..] {
        tx.batch_execute(migration)?;
    }
    let to = VERSION;
    if version.is_none() {
        tx.execute("INSERT INTO zms_schema (version) VALUES ($1)", &[&to])?;
    } else {
        tx.execute("UPDATE zms_schema SET version = $1", &[&to])?;
    }
    tx.commit()?;
    Ok(())
}
