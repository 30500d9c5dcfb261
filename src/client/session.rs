//! A user's session: many groups on many group servers, one ordered stream of messages.
//!
//! Delivery follows the zguide's Clone pattern: subscribe first, learn the group's last seq,
//! then take live pushes, dropping any seq already seen and filling any hole from HISTORY
//! before going on. Heartbeats (PING every second per server) find dead servers and lost
//! subscriptions; a PONG carries the server's last seq per group, so even a lost final push is
//! repaired within a heartbeat.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{unexpected, Conn, Curve, Timeouts};
use crate::keys::{KeyPair, Pins, Trusted};
use crate::protocol::codec;
use crate::protocol::{
    self, ErrorCode, Event, GroupEntry, Member, Message, Outgoing, Reply, Request,
};
use crate::{errinput, transport, Error, Result};

/// Refuses a text no server takes, before anything is sent.
fn check_text(text: &str) -> Result<()> {
    if text.len() > protocol::MAX_TEXT {
        return Err(errinput!(
            "message is {} bytes; the limit is {}",
            text.len(),
            protocol::MAX_TEXT
        ));
    }
    protocol::check_text(text).map_err(Error::Input)
}

/// How long a pinned server's key service has to answer before its key is taken on trust:
/// a loopback or LAN answer takes milliseconds.
const KEY_CHECK_WAIT: Duration = Duration::from_millis(500);

/// How long a send waits out a server's rate limit before reporting LIMITED.
const RATE_LIMIT_PATIENCE: Duration = Duration::from_secs(10);

/// A group as a client addresses it: name and the group server hosting it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupRef {
    pub name: String,
    /// `HOST:PORT` of the group server.
    pub address: String,
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.address)
    }
}

/// A message delivered to the session, in order within its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub group: GroupRef,
    pub message: Message,
}

/// What [`Session::next_event`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Message(Delivery),
    /// A group server stopped answering heartbeats; the session keeps trying.
    ServerLost(String),
    /// A lost group server answers again; subscriptions are back and gaps repaired.
    ServerBack(String),
    /// Another user joined or left a subscribed group.
    Presence {
        group: GroupRef,
        user: String,
        joined: bool,
    },
    /// This user is no longer a member of a subscribed group (they left from elsewhere, or
    /// were removed): the session stops following it.
    MembershipEnded(GroupRef),
}

/// Heartbeat state of one group server connection.
struct Server {
    conn: Conn,
    /// The server's epoch from its last PONG.
    epoch: Option<u64>,
    /// The outstanding PING: request id and when it was sent.
    ping: Option<(u32, Instant)>,
    last_ping: Instant,
    lost: bool,
}

/// One live subscription.
struct Sub {
    /// Highest seq delivered (or skipped as before the subscription).
    last_seq: u64,
}

/// A user connected to the message system.
pub struct Session {
    ctx: zmq::Context,
    name: String,
    timeouts: Timeouts,
    /// Directory endpoints, tried in order; the one that answered last goes first.
    directories: Vec<String>,
    directory: Option<Conn>,
    servers: HashMap<String, Server>,
    subs: HashMap<GroupRef, Sub>,
    ready: VecDeque<SessionEvent>,
    /// Prefix of this session's client message ids: unique per process run.
    client_prefix: String,
    sent: u64,
    /// CURVE settings; `None` talks plaintext.
    security: Option<ClientSecurity>,
    /// Group server keys as the (trusted) message server listed them, by address.
    listed_keys: HashMap<String, String>,
    /// Keys trusted on first use and not yet told ([`Session::take_trusted`]).
    trusted: Vec<Trusted>,
    /// Addresses whose pinned key was checked against their key service this session.
    checked: Vec<String>,
}

/// How a session authenticates itself and its servers.
#[derive(Debug)]
pub struct ClientSecurity {
    /// The user's key pair: the server binds the user's name to its public half.
    pub keys: KeyPair,
    /// Server keys trusted so far (`known_servers`).
    pub pins: Pins,
    /// The message server's key as given (`--server-key`), trusted over any pin.
    pub server_key: Option<String>,
    /// Fetch and pin the key of a server not yet known (trust on first use); without it an
    /// unknown server is an error.
    pub trust_on_first_use: bool,
}

/// History pages in flight at once past the first (see [`Session::history`]), so the server
/// reads the next pages while this client decodes the last. `zms bench history`, three to six
/// rounds each, alternately: all 100,000 one page at a time 78–98 ms, 1 ahead 72–90, 2: 56–77,
/// 4: 56–80, 8: 52–74; since the midpoint 44–58, 40–57, 33–50, 31–46, 33–40 ms. Eight gained
/// nothing on four and may hold twice as much, a page being up to a MiB.
const HISTORY_AHEAD: usize = 4;

impl Session {
    /// A session for user `name` with the given directory endpoints. Nothing is sent yet.
    ///
    /// # Errors
    /// An invalid user name.
    pub fn new(
        ctx: &zmq::Context,
        directories: Vec<String>,
        name: &str,
        timeouts: Timeouts,
    ) -> Result<Session> {
        protocol::check_user_name(name).map_err(Error::Input)?;
        // Client ids rise (PROTOCOL.md, "Sequencing") across this user's sessions too: the
        // start time, the process and the session's number in it, then a counter.
        static SESSIONS: AtomicU32 = AtomicU32::new(0);
        let number = SESSIONS.fetch_add(1, Ordering::Relaxed) & 0xffff;
        let client_prefix = format!(
            "{:012x}{:08x}{number:04x}",
            crate::time::now_ms(),
            std::process::id()
        );
        Ok(Session {
            ctx: ctx.clone(),
            name: name.to_string(),
            timeouts,
            directories,
            directory: None,
            servers: HashMap::new(),
            subs: HashMap::new(),
            ready: VecDeque::new(),
            client_prefix,
            sent: 0,
            security: None,
            listed_keys: HashMap::new(),
            trusted: Vec::new(),
            checked: Vec::new(),
        })
    }

    /// Uses CURVE for every connection, with these keys and trust rules.
    pub fn with_security(mut self, security: ClientSecurity) -> Session {
        self.security = Some(security);
        self
    }

    /// The CURVE settings for a server at `endpoint`, or `None` without security. A message
    /// server's key is the one given, else the pinned one, else (first use) fetched and pinned;
    /// a group server's is the one the message server lists, else pinned, else fetched.
    fn curve_for(&mut self, endpoint: &str, directory: bool) -> Result<Option<Curve>> {
        if self.security.is_none() {
            return Ok(None);
        }
        let address = transport::address(endpoint);
        if !directory && !self.listed_keys.contains_key(&address) {
            // Ask the message server first: it vouches for the group servers it lists.
            let _ = self.list_groups();
        }
        let security = self.security.as_mut().expect("bug: checked above");
        let listed = if directory {
            None
        } else {
            self.listed_keys.get(&address).cloned()
        };
        let given = if directory {
            security.server_key.clone()
        } else {
            None
        };
        let server_key = match (given.or(listed), security.pins.get(&address)) {
            (Some(key), _) => key,
            (None, Some(pinned)) if self.checked.contains(&address) => pinned.to_string(),
            (None, Some(pinned)) => {
                // A changed key fails the CURVE handshake, which looks like silence: ask the
                // key service first, briefly, so a changed key is refused at once rather
                // than after every try has timed out. No answer: go on with the pin.
                let pinned = pinned.to_string();
                let quick = self.timeouts.request.min(KEY_CHECK_WAIT);
                if let Ok(key) = transport::fetch_key(&self.ctx, &address, quick) {
                    security.pins.check_or_pin(&address, &key)?;
                }
                self.checked.push(address);
                pinned
            }
            (None, None) if security.trust_on_first_use => {
                let key = transport::fetch_key(&self.ctx, &address, self.timeouts.request)?;
                security.pins.check_or_pin(&address, &key)?;
                tracing::info!(%address, %key, "trusting this server's key on first use; pinned");
                self.trusted.push(Trusted {
                    address,
                    key: key.clone(),
                    path: security.pins.path().to_path_buf(),
                });
                key
            }
            (None, None) => {
                return Err(errinput!(
                    "no key known for {address}: pass --server-key KEY, or --secure to trust it on first use"
                ))
            }
        };
        Ok(Some(Curve {
            keys: security.keys.clone(),
            server_key,
        }))
    }

    /// The server keys trusted on first use since the last call, for the user to be told.
    pub fn take_trusted(&mut self) -> Vec<Trusted> {
        std::mem::take(&mut self.trusted)
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The message servers' addresses (`HOST:PORT`), the one in use first.
    pub fn directories(&self) -> Vec<String> {
        self.directories
            .iter()
            .map(|d| transport::address(d))
            .collect()
    }

    /// Asks the directories in turn until one answers.
    fn directory_request(&mut self, request: &Request) -> Result<Reply> {
        // With several directories, one try each per round, moving on at the first silence;
        // the rounds add up to the usual number of tries for each.
        let count = self.directories.len();
        let per_conn = if count > 1 {
            Timeouts {
                tries: 1,
                ..self.timeouts
            }
        } else {
            self.timeouts
        };
        let attempts = if count > 1 {
            count * self.timeouts.tries as usize
        } else {
            count
        };
        let mut last_err = None;
        for _ in 0..attempts {
            if self.directory.is_none() {
                let endpoint = self.directories[0].clone();
                let curve = self.curve_for(&endpoint, true)?;
                let conn =
                    Conn::connect_with(&self.ctx, &endpoint, "message server", per_conn, curve)?;
                self.directory = Some(conn);
            }
            let conn = self.directory.as_mut().expect("bug: directory just set");
            match conn.request(request) {
                Err(err @ Error::Timeout(_)) => {
                    tracing::debug!(%err, "message server did not answer; trying the next");
                    last_err = Some(err);
                    self.directory = None;
                    self.directories.rotate_left(1);
                }
                other => return other,
            }
        }
        match last_err {
            Some(err) => {
                let address = transport::address(&self.directories[0]);
                Err(self.explain_silence(&address, err))
            }
            None => Err(errinput!("no message server address given")),
        }
    }

    /// A CURVE server whose key changed looks silent (the handshake fails); when a pinned
    /// server does not answer, ask its key service, so a replaced key reads as a warning.
    fn explain_silence(&mut self, address: &str, err: Error) -> Error {
        let Some(security) = self.security.as_mut() else {
            return err;
        };
        let Some(pinned) = security.pins.get(address).map(str::to_string) else {
            return err;
        };
        match transport::fetch_key(&self.ctx, address, self.timeouts.request) {
            Ok(key) if key != pinned => security
                .pins
                .check_or_pin(address, &key)
                .err()
                .unwrap_or(err),
            _ => err,
        }
    }

    /// Registers the user's name with the message server.
    ///
    /// # Errors
    /// The directory's refusal, or no directory answering.
    pub fn hello(&mut self) -> Result<()> {
        let request = Request::Hello {
            name: self.name.clone(),
        };
        self.directory_request(&request)
            .and_then(|r| expect_ok(r, "OK"))
    }

    /// All groups the message server knows.
    ///
    /// # Errors
    /// No directory answering.
    pub fn list_groups(&mut self) -> Result<Vec<GroupEntry>> {
        match self.directory_request(&Request::List)? {
            Reply::Groups(groups) => {
                for g in groups.iter().filter(|g| !g.key.is_empty()) {
                    self.listed_keys.insert(g.address.clone(), g.key.clone());
                }
                Ok(groups)
            }
            other => Err(unexpected(other, "GROUPS")),
        }
    }

    /// The groups one group server hosts.
    ///
    /// # Errors
    /// The server not answering.
    pub fn list_hosted(&mut self, address: &str) -> Result<Vec<GroupEntry>> {
        match self.server(address)?.conn.request(&Request::List)? {
            Reply::Groups(groups) => Ok(groups),
            other => Err(unexpected(other, "GROUPS")),
        }
    }

    /// Turns what a user typed into a group: `NAME@HOST:PORT`, a group server's `HOST:PORT`
    /// (when it hosts exactly one group), or a name the message server knows.
    ///
    /// # Errors
    /// [`Error::Input`] naming what is wrong: unknown, ambiguous, unreachable.
    pub fn resolve(&mut self, spec: &str) -> Result<GroupRef> {
        let spec = spec.trim();
        if let Some((name, address)) = spec.split_once('@') {
            protocol::check_group_name(name).map_err(Error::Input)?;
            let address = transport::address(&transport::endpoint(address)?);
            return Ok(GroupRef {
                name: name.to_string(),
                address,
            });
        }
        if spec.contains(':') {
            let address = transport::address(&transport::endpoint(spec)?);
            let hosted = self.list_hosted(&address)?;
            return match hosted.as_slice() {
                [one] => Ok(GroupRef {
                    name: one.name.clone(),
                    address,
                }),
                _ => {
                    let names: Vec<_> = hosted.iter().map(|g| g.name.as_str()).collect();
                    Err(errinput!(
                        "{address} hosts several groups ({}); say which, e.g. {}@{address}",
                        names.join(", "),
                        names[0]
                    ))
                }
            };
        }
        protocol::check_group_name(spec).map_err(Error::Input)?;
        let all = self.list_groups()?;
        let matches: Vec<&GroupEntry> = all.iter().filter(|g| g.name == spec).collect();
        match matches.as_slice() {
            [one] => Ok(GroupRef {
                name: one.name.clone(),
                address: one.address.clone(),
            }),
            [] => {
                let mut names: Vec<&str> = all.iter().map(|g| g.name.as_str()).collect();
                names.dedup();
                let known = if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                };
                Err(errinput!(
                    "unknown group '{spec}' (the message server lists: {known})"
                ))
            }
            many => {
                let at: Vec<String> = many
                    .iter()
                    .map(|g| format!("{}@{}", g.name, g.address))
                    .collect();
                Err(errinput!(
                    "'{spec}' is hosted by several servers; say which: {}",
                    at.join(", ")
                ))
            }
        }
    }

    fn server(&mut self, address: &str) -> Result<&mut Server> {
        if !self.servers.contains_key(address) {
            let endpoint = transport::endpoint(address)?;
            let curve = self.curve_for(&endpoint, false)?;
            let conn =
                Conn::connect_with(&self.ctx, &endpoint, "group server", self.timeouts, curve)?;
            let server = Server {
                conn,
                epoch: None,
                ping: None,
                last_ping: Instant::now(),
                lost: false,
            };
            self.servers.insert(address.to_string(), server);
        }
        Ok(self
            .servers
            .get_mut(address)
            .expect("bug: server just added"))
    }

    fn group_request(&mut self, group: &GroupRef, request: &Request) -> Result<Reply> {
        let reply = self.server(&group.address)?.conn.request(request);
        self.collect_events(&group.address);
        match reply {
            Err(err @ Error::Timeout(_)) if !self.listed_keys.contains_key(&group.address) => {
                Err(self.explain_silence(&group.address, err))
            }
            other => other,
        }
    }

    /// Joins a group (membership is kept by the server) and starts receiving it live, from the
    /// message after the last one stored. Returns that last seq.
    ///
    /// # Errors
    /// The server's refusal or silence.
    pub fn join(&mut self, group: &GroupRef) -> Result<u64> {
        let request = Request::Join {
            group: group.name.clone(),
            user: self.name.clone(),
        };
        self.attach(group, &request)
    }

    /// Starts receiving a group this user is already a member of, live from now.
    ///
    /// # Errors
    /// NOT_MEMBER, or the server's silence.
    pub fn subscribe(&mut self, group: &GroupRef) -> Result<u64> {
        let request = Request::Subscribe {
            group: group.name.clone(),
            user: self.name.clone(),
        };
        self.attach(group, &request)
    }

    fn attach(&mut self, group: &GroupRef, request: &Request) -> Result<u64> {
        match self.group_request(group, request)? {
            Reply::Joined { last_seq, .. } => {
                let sub = self.subs.entry(group.clone()).or_insert(Sub { last_seq });
                if sub.last_seq > last_seq {
                    // The server lost messages we saw (its store was replaced): follow it.
                    sub.last_seq = last_seq;
                }
                Ok(last_seq)
            }
            other => Err(unexpected(other, "JOINED")),
        }
    }

    /// Stops following a group locally, without leaving it.
    pub fn unsubscribe(&mut self, group: &GroupRef) {
        self.subs.remove(group);
    }

    /// Leaves a group.
    ///
    /// # Errors
    /// NOT_MEMBER, or the server's silence.
    pub fn leave(&mut self, group: &GroupRef) -> Result<()> {
        let request = Request::Leave {
            group: group.name.clone(),
            user: self.name.clone(),
        };
        let reply = self.group_request(group, &request);
        // Not a member (any more) ends the subscription as leaving does.
        if matches!(
            reply,
            Ok(_)
                | Err(Error::Rejected {
                    code: ErrorCode::NotMember,
                    ..
                })
        ) {
            self.subs.remove(group);
        }
        expect_ok(reply?, "OK")
    }

    /// Sends a message; returns its seq and server timestamp once it is stored. A retried
    /// send carries the same client id, so it is stored once whatever happened to the first.
    ///
    /// # Errors
    /// NOT_MEMBER, TOO_LARGE, UNAVAILABLE (storage), or the server's silence.
    pub fn send(&mut self, group: &GroupRef, text: &str) -> Result<(u64, i64)> {
        let client_id = self.next_client_id();
        self.send_with_id(group, &client_id, text)
    }

    /// A fresh client message id, unique to this session.
    pub fn next_client_id(&mut self) -> String {
        self.sent += 1;
        format!("{}-{:06}", self.client_prefix, self.sent)
    }

    /// Sends with a caller-kept client id. Calling again with the same id after any failure
    /// (a timeout, a restart of the server) stores the message at most once and answers with
    /// its original seq: this is how a caller makes a send exactly-once across its own retries.
    ///
    /// # Errors
    /// As [`Session::send`].
    pub fn send_with_id(
        &mut self,
        group: &GroupRef,
        client_id: &str,
        text: &str,
    ) -> Result<(u64, i64)> {
        check_text(text)?;
        let request = Request::Send {
            group: group.name.clone(),
            user: self.name.clone(),
            client_id: client_id.to_string(),
            text: text.to_string(),
        };
        // Over the server's rate limit: wait and try again (the same id, so at most once),
        // slowing this sender down rather than failing it, for a bounded time.
        let mut pause = Duration::from_millis(50);
        let give_up = Instant::now() + RATE_LIMIT_PATIENCE;
        loop {
            match self.group_request(group, &request) {
                Ok(Reply::Ack { seq, ts, .. }) => return Ok((seq, ts)),
                Ok(other) => return Err(unexpected(other, "ACK")),
                Err(Error::Rejected {
                    code: ErrorCode::Limited,
                    ..
                }) if Instant::now() + pause < give_up => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends `texts` to `group`, in order, in as few SENDS requests as hold them; returns each
    /// message's seq and timestamp, in the same order, once all are stored. Each message has
    /// a client id of its own, so retries store none twice. A server that does not know SENDS
    /// (ERROR 400), or that holds the user to a rate, gets them one SEND at a time instead.
    ///
    /// # Errors
    /// As [`Session::send`]; a text over `MAX_TEXT` fails the call before anything is sent.
    /// Messages before the batch that failed are stored.
    pub fn send_many(&mut self, group: &GroupRef, texts: &[String]) -> Result<Vec<(u64, i64)>> {
        let messages: Vec<Outgoing> = texts
            .iter()
            .map(|text| Outgoing {
                client_id: self.next_client_id(),
                text: text.clone(),
            })
            .collect();
        self.send_outgoing(group, &messages)
    }

    /// Sends messages under caller-kept client ids, as [`Session::send_many`] does: sending
    /// the same ones again after any failure stores none twice.
    ///
    /// # Errors
    /// As [`Session::send_many`].
    pub fn send_outgoing(
        &mut self,
        group: &GroupRef,
        messages: &[Outgoing],
    ) -> Result<Vec<(u64, i64)>> {
        messages.iter().try_for_each(|m| check_text(&m.text))?;
        let mut stored = Vec::with_capacity(messages.len());
        let mut rest = messages;
        while !rest.is_empty() {
            let mut len = codec::batch_len(&group.name, &self.name, &[]);
            let mut count = 0;
            for m in rest.iter().take(protocol::MAX_BATCH) {
                let more = codec::outgoing_len(&m.client_id, &m.text);
                if count > 0 && len + more > protocol::MAX_BATCH_FRAME {
                    break;
                }
                len += more;
                count += 1;
            }
            let (batch, after) = rest.split_at(count);
            rest = after;
            let request = Request::SendBatch {
                group: group.name.clone(),
                user: self.name.clone(),
                messages: batch.to_vec(),
            };
            match self.group_request(group, &request) {
                Ok(Reply::Acks(acks)) if acks.len() == count => {
                    stored.extend(acks.iter().map(|a| (a.seq, a.ts)));
                }
                Ok(other) => return Err(unexpected(other, "ACKS")),
                Err(Error::Rejected {
                    code: ErrorCode::BadRequest | ErrorCode::Limited,
                    ..
                }) => {
                    for m in batch {
                        stored.push(self.send_with_id(group, &m.client_id, &m.text)?);
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(stored)
    }

    /// One page of history: messages after `after_seq` (and at or after `since_ms`), and the
    /// group's last seq.
    ///
    /// # Errors
    /// NOT_MEMBER, or the server's silence.
    pub fn history_page(
        &mut self,
        group: &GroupRef,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    ) -> Result<(Vec<Message>, u64)> {
        let request = Request::History {
            group: group.name.clone(),
            user: self.name.clone(),
            after_seq,
            since_ms,
            limit,
        };
        match self.group_request(group, &request)? {
            Reply::Messages {
                messages, last_seq, ..
            } => Ok((messages, last_seq)),
            other => Err(unexpected(other, "MESSAGES")),
        }
    }

    /// Stored messages, oldest first: all of them, those since `since_ms`, or with `limit`
    /// the first `limit` since `since_ms` (or, without `since_ms`, the last `limit`).
    ///
    /// # Errors
    /// As [`Session::history_page`].
    pub fn history(
        &mut self,
        group: &GroupRef,
        since_ms: Option<i64>,
        limit: Option<u64>,
    ) -> Result<Vec<Message>> {
        let mut after = 0;
        if let (None, Some(n)) = (since_ms, limit) {
            let (_, last) = self.history_page(group, 0, 0, 0)?;
            after = last.saturating_sub(n);
        }
        let since = since_ms.unwrap_or(0);
        let want = limit.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        // One page at a time finds where `since` begins and what the last seq is; from there
        // seqs run on without gaps, so the pages up to it are asked for ahead.
        while (out.len() as u64) < want {
            let page = (want - out.len() as u64).min(u64::from(protocol::HISTORY_PAGE_MAX)) as u32;
            let (messages, last_seq) = self.history_page(group, after, since, page)?;
            let Some(last) = messages.last() else { break };
            // Short of the limit before the end: held to the reply's size, so where the next
            // page starts cannot be foreseen.
            let short = messages.len() < page as usize;
            after = last.seq;
            out.extend(messages);
            if after >= last_seq {
                break;
            }
            if !short {
                after = self.history_ahead(group, after, since, last_seq, want, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Reads the pages after `after` up to `until` (or until `out` holds `want`), with up to
    /// [`HISTORY_AHEAD`] asked for at once: the server reads the next while this client
    /// decodes the last. Returns the last seq read. A page that comes back short (held to the
    /// reply's size) is taken and ends the run, as one out of line or unanswered does; the
    /// caller goes on one page at a time, and replies still on their way are dropped as
    /// unmatched.
    fn history_ahead(
        &mut self,
        group: &GroupRef,
        mut after: u64,
        since_ms: i64,
        until: u64,
        want: u64,
        out: &mut Vec<Message>,
    ) -> Result<u64> {
        let page = u64::from(protocol::HISTORY_PAGE_MAX);
        let mut asked = after;
        let mut pending: VecDeque<(u32, u64, u64)> = VecDeque::new();
        let read = loop {
            while pending.len() < HISTORY_AHEAD && asked < until {
                let promised = out.len() as u64 + (asked - after);
                if promised >= want {
                    break;
                }
                let count = (until - asked).min(page).min(want - promised);
                let request = Request::History {
                    group: group.name.clone(),
                    user: self.name.clone(),
                    after_seq: asked,
                    since_ms,
                    limit: count as u32,
                };
                let Some(id) = self.server(&group.address)?.conn.send_nowait(&request)? else {
                    break;
                };
                pending.push_back((id, asked + 1, asked + count));
                asked += count;
            }
            let Some((id, first, last)) = pending.pop_front() else {
                break Ok(());
            };
            match self.server(&group.address)?.conn.await_reply(id) {
                Ok(Some(Reply::Messages { messages, .. }))
                    if messages.first().map(|m| m.seq) == Some(first)
                        && messages.last().is_some_and(|m| {
                            m.seq <= last && m.seq - first + 1 == messages.len() as u64
                        }) =>
                {
                    let whole = messages.len() as u64 == last - first + 1;
                    after = first + messages.len() as u64 - 1;
                    out.extend(messages);
                    if !whole {
                        break Ok(());
                    }
                }
                Ok(_) => break Ok(()),
                Err(err) => break Err(err),
            }
        };
        self.collect_events(&group.address);
        read.map(|()| after)
    }

    /// Invites the holder of `key` (a user's public key, see `zms whoami`) into a private group.
    ///
    /// # Errors
    /// NOT_MEMBER, BAD_REQUEST for a group that is not private, or the server's silence.
    pub fn invite(&mut self, group: &GroupRef, key: &str) -> Result<()> {
        let request = Request::Invite {
            group: group.name.clone(),
            user: self.name.clone(),
            key: key.to_string(),
        };
        let reply = self.group_request(group, &request)?;
        expect_ok(reply, "OK")
    }

    /// A group's members and who is online.
    ///
    /// # Errors
    /// NOT_MEMBER, or the server's silence.
    pub fn members(&mut self, group: &GroupRef) -> Result<Vec<Member>> {
        let request = Request::Members {
            group: group.name.clone(),
            user: self.name.clone(),
        };
        match self.group_request(group, &request)? {
            Reply::Members { members, .. } => Ok(members),
            other => Err(unexpected(other, "MEMBERS")),
        }
    }

    /// Waits up to `timeout` for the next event of any subscribed group.
    ///
    /// # Errors
    /// A libzmq failure or a server speaking nonsense; unreachable servers are events, not errors.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<SessionEvent>> {
        self.next_event_or(None, timeout)
    }

    /// As [`Session::next_event`], but also returns `Ok(None)` as soon as `wake` is readable,
    /// so a caller can wait on its own socket too.
    ///
    /// # Errors
    /// As [`Session::next_event`].
    pub fn next_event_or(
        &mut self,
        wake: Option<&zmq::Socket>,
        timeout: Duration,
    ) -> Result<Option<SessionEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            let addresses: Vec<String> = self.servers.keys().cloned().collect();
            for address in &addresses {
                self.collect_events(address);
            }
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            self.heartbeat()?;
            if !self.ready.is_empty() {
                continue;
            }
            let now = Instant::now();
            let Some(remaining) = deadline.checked_duration_since(now) else {
                return Ok(None);
            };
            let beat = Duration::from_millis(protocol::HEARTBEAT_MS);
            let wait = remaining.min(beat);
            let mut items: Vec<zmq::PollItem> = Vec::new();
            if let Some(w) = wake {
                items.push(w.as_poll_item(zmq::POLLIN));
            }
            items.extend(
                addresses
                    .iter()
                    .map(|a| self.servers[a].conn.socket().as_poll_item(zmq::POLLIN)),
            );
            transport::poll(&mut items, wait)?;
            if wake.is_some() && items[0].is_readable() {
                return Ok(None);
            }
            drop(items);
            for address in &addresses {
                if let Some(server) = self.servers.get_mut(address) {
                    server.conn.drain()?;
                }
            }
        }
    }

    /// Moves received events and PONGs of one server into `ready`, in order, repairing gaps.
    fn collect_events(&mut self, address: &str) {
        let Some(server) = self.servers.get_mut(address) else {
            return;
        };
        let events = server.conn.take_events();
        let replies = server.conn.take_unmatched();
        for event in events {
            match event {
                Event::Message { group, message } => {
                    let group = GroupRef {
                        name: group,
                        address: address.to_string(),
                    };
                    self.accept(group, message);
                }
                // A batch is its messages, each accepted as if it came as a MSG of its own.
                Event::Messages { group, messages } => {
                    let group = GroupRef {
                        name: group,
                        address: address.to_string(),
                    };
                    for message in messages {
                        self.accept(group.clone(), message);
                    }
                }
                Event::Presence {
                    group,
                    user,
                    joined,
                } => {
                    let group = GroupRef {
                        name: group,
                        address: address.to_string(),
                    };
                    if self.subs.contains_key(&group) && user != self.name {
                        self.ready.push_back(SessionEvent::Presence {
                            group,
                            user,
                            joined,
                        });
                    }
                }
            }
        }
        for (id, reply) in replies {
            self.pong(address, id, reply);
        }
    }

    /// Delivers `message` if it is the next in its group; fills a hole first; drops a repeat.
    fn accept(&mut self, group: GroupRef, message: Message) {
        let Some(sub) = self.subs.get(&group) else {
            return;
        };
        if message.seq <= sub.last_seq {
            return;
        }
        if message.seq > sub.last_seq + 1 {
            self.repair(&group, message.seq - 1);
        }
        let Some(sub) = self.subs.get_mut(&group) else {
            return;
        };
        if message.seq == sub.last_seq + 1 {
            sub.last_seq = message.seq;
            self.ready
                .push_back(SessionEvent::Message(Delivery { group, message }));
        }
        // Otherwise the hole could not be filled now; the next PONG tells and repairs it.
    }

    /// Fetches the messages after the last delivered one, up to `upto`, from history.
    fn repair(&mut self, group: &GroupRef, upto: u64) {
        loop {
            let Some(after) = self.subs.get(group).map(|s| s.last_seq) else {
                return;
            };
            if after >= upto {
                return;
            }
            let page = (upto - after).min(u64::from(protocol::HISTORY_PAGE_MAX)) as u32;
            let request = Request::History {
                group: group.name.clone(),
                user: self.name.clone(),
                after_seq: after,
                since_ms: 0,
                limit: page,
            };
            let Ok(server) = self.server(&group.address) else {
                return;
            };
            let messages = match server.conn.request(&request) {
                Ok(Reply::Messages { messages, .. }) => messages,
                Ok(other) => return tracing::warn!(?other, "unexpected reply to HISTORY"),
                Err(err) => {
                    return tracing::warn!(%err, group = %group, "gap repair failed; will retry")
                }
            };
            tracing::debug!(group = %group, after, count = messages.len(), "gap repaired from history");
            if messages.is_empty() {
                return;
            }
            for message in messages {
                let Some(sub) = self.subs.get_mut(group) else {
                    return;
                };
                if message.seq == sub.last_seq + 1 {
                    sub.last_seq = message.seq;
                    self.ready.push_back(SessionEvent::Message(Delivery {
                        group: group.clone(),
                        message,
                    }));
                }
            }
        }
    }

    /// Sends PINGs that are due and treats servers that stopped answering as lost.
    fn heartbeat(&mut self) -> Result<()> {
        let beat = Duration::from_millis(protocol::HEARTBEAT_MS);
        let now = Instant::now();
        let with_subs: Vec<String> = {
            let mut a: Vec<String> = self.subs.keys().map(|g| g.address.clone()).collect();
            a.sort();
            a.dedup();
            a
        };
        for address in with_subs {
            let server = self.server(&address)?;
            if let Some((_, sent)) = server.ping {
                if now.duration_since(sent) < 3 * beat {
                    continue;
                }
                // Three heartbeats without an answer: start over on a new socket.
                server.ping = None;
                server.conn.reconnect()?;
                if !server.lost {
                    server.lost = true;
                    self.ready
                        .push_back(SessionEvent::ServerLost(address.clone()));
                }
                continue;
            }
            if now.duration_since(server.last_ping) >= beat {
                server.last_ping = now;
                if let Some(id) = server.conn.send_nowait(&Request::Ping)? {
                    server.ping = Some((id, now));
                } else if !server.lost {
                    server.lost = true;
                    self.ready
                        .push_back(SessionEvent::ServerLost(address.clone()));
                }
            }
        }
        Ok(())
    }

    /// Handles a PONG: resubscribes after a server restart or expiry, repairs tail gaps.
    fn pong(&mut self, address: &str, id: u32, reply: Reply) {
        let Reply::Pong { epoch, groups } = reply else {
            return;
        };
        let Some(server) = self.servers.get_mut(address) else {
            return;
        };
        if server.ping.map(|(want, _)| want) != Some(id) {
            return;
        }
        server.ping = None;
        let was_lost = std::mem::replace(&mut server.lost, false);
        // A new epoch is a new process: whatever it says about subscriptions, make them again.
        let restarted = server.epoch.is_some_and(|e| e != epoch);
        server.epoch = Some(epoch);
        let server_seqs: HashMap<String, u64> = groups.into_iter().collect();
        let mine: Vec<GroupRef> = self
            .subs
            .keys()
            .filter(|g| g.address == address)
            .cloned()
            .collect();
        for group in mine {
            match server_seqs.get(&group.name) {
                Some(&last) if !restarted => self.repair(&group, last),
                _ => {
                    // The server does not know this subscription (restart or expiry): make it
                    // again (which also follows a server that now has fewer messages than we
                    // saw), then fetch what was missed.
                    let request = Request::Subscribe {
                        group: group.name.clone(),
                        user: self.name.clone(),
                    };
                    match self.attach(&group, &request) {
                        Ok(last_seq) => self.repair(&group, last_seq),
                        // Left from elsewhere, or removed: following it again cannot work.
                        Err(Error::Rejected {
                            code: ErrorCode::NotMember,
                            ..
                        }) => {
                            self.subs.remove(&group);
                            self.ready.push_back(SessionEvent::MembershipEnded(group));
                        }
                        Err(err) => {
                            tracing::warn!(%err, group = %group, "resubscribe failed; will retry")
                        }
                    }
                }
            }
        }
        if was_lost {
            self.ready
                .push_back(SessionEvent::ServerBack(address.to_string()));
        }
    }
}

fn expect_ok(reply: Reply, wanted: &str) -> Result<()> {
    match reply {
        Reply::Ok => Ok(()),
        other => Err(unexpected(other, wanted)),
    }
}
