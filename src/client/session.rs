//! A user's session: many groups on many group servers, one ordered stream of messages.
//!
//! Delivery follows the zguide's Clone pattern: subscribe first, learn the group's last seq,
//! then take live pushes, dropping any seq already seen and filling any hole from HISTORY
//! before going on. Heartbeats (PING every second per server) find dead servers and lost
//! subscriptions; a PONG carries the server's last seq per group, so even a lost final push is
//! repaired within a heartbeat.
//!
//! This file holds the public types, the group server connections, membership and the event
//! loop. The rest of [`Session`] lives by concern: `trust.rs` (server keys), `directory.rs`
//! (message server failover, name resolution), `sending.rs` (batching, rate-limit backoff),
//! `history.rs` (paging, gap repair) and `sequencer.rs` (the order of a group's messages,
//! pure).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::directory::Directories;
use super::sequencer::{Sequencer, Verdict};
use super::trust::{ClientSecurity, Trust};
use super::{unexpected, Conn, Curve, Timeouts};
use crate::keys::Trusted;
use crate::protocol::{self, ErrorCode, Event, Member, Message, Reply, Request};
use crate::{transport, Error, Result};

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
    /// A group now lives on another group server (its old one stopped answering or no longer
    /// hosts it, and the message server lists it at `to`): the session subscribed there and
    /// repairs what it missed; requests naming `from` go to `to` from now on.
    Moved {
        from: GroupRef,
        to: GroupRef,
    },
}

/// What else ends a wait for events.
#[derive(Clone, Copy)]
enum Wake<'a> {
    Socket(&'a zmq::Socket),
    Fd(std::os::fd::RawFd),
}

/// Heartbeat state of one group server connection.
pub(super) struct Server {
    pub(super) conn: Conn,
    /// The server's epoch from its last PONG.
    epoch: Option<u64>,
    /// The outstanding PING: request id and when it was sent.
    ping: Option<(u32, Instant)>,
    last_ping: Instant,
    lost: bool,
    /// While lost: when to ask the message server next where its groups live, and the pause
    /// after that (doubling up to [`super::follow::LOOKUP_MAX`]).
    pub(super) lookup: Option<(Instant, Duration)>,
}

/// A user connected to the message system.
pub struct Session {
    pub(super) ctx: zmq::Context,
    pub(super) name: String,
    pub(super) timeouts: Timeouts,
    /// The message servers, and the connection to the one in use.
    pub(super) directories: Directories,
    /// Group server connections, by address.
    pub(super) servers: HashMap<String, Server>,
    /// The subscribed groups and where each one's stream stands.
    pub(super) subs: HashMap<GroupRef, Sequencer>,
    /// Events to hand out, in order.
    pub(super) ready: VecDeque<SessionEvent>,
    /// Where groups that moved live now: requests naming the old place go to the new one.
    pub(super) moved: HashMap<GroupRef, GroupRef>,
    /// Groups found through the message server by name: those the session follows when they
    /// move (a group named with its address is asked there and nowhere else).
    pub(super) by_name: HashSet<GroupRef>,
    /// Prefix of this session's client message ids: unique per process run.
    pub(super) client_prefix: String,
    /// Client message ids handed out so far.
    pub(super) sent: u64,
    /// Server keys: which to trust, which were trusted on first use.
    pub(super) trust: Trust,
}

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
            directories: Directories::new(directories),
            servers: HashMap::new(),
            subs: HashMap::new(),
            ready: VecDeque::new(),
            moved: HashMap::new(),
            by_name: HashSet::new(),
            client_prefix,
            sent: 0,
            trust: Trust::default(),
        })
    }

    /// Waits and tries as `timeouts` says, for connections made from now on.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Session {
        self.timeouts = timeouts;
        self
    }

    /// Uses CURVE for every connection, with these keys and trust rules.
    pub fn with_security(mut self, security: ClientSecurity) -> Session {
        self.trust.secure(security);
        self
    }

    /// The server keys trusted on first use since the last call, for the user to be told.
    pub fn take_trusted(&mut self) -> Vec<Trusted> {
        self.trust.take_trusted()
    }

    /// The CURVE settings for a server at `endpoint`, or `None` without security (see
    /// [`Trust::curve_for`]).
    pub(super) fn curve_for(&mut self, endpoint: &str, directory: bool) -> Result<Option<Curve>> {
        let address = transport::address(endpoint);
        if self.trust.is_secure() && !directory && !self.trust.is_listed(&address) {
            // Ask the message server first: it vouches for the group servers it lists.
            let _ = self.list_groups();
        }
        self.trust
            .curve_for(&self.ctx, &address, directory, self.timeouts)
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A message server's STATUS (its JSON text), asked of `endpoint` alone.
    ///
    /// # Errors
    /// The server not answering, or answering something else.
    pub fn directory_status(&mut self, endpoint: &str) -> Result<String> {
        let curve = self.curve_for(endpoint, true)?;
        let mut conn =
            Conn::connect_with(&self.ctx, endpoint, "message server", self.timeouts, curve)?;
        match conn.request(&Request::Status)? {
            Reply::Status(json) => Ok(json),
            other => Err(unexpected(other, "STATUS")),
        }
    }

    /// A group server's STATUS (its JSON text).
    ///
    /// # Errors
    /// The server not answering, or answering something else.
    pub fn server_status(&mut self, address: &str) -> Result<String> {
        match self.server(address)?.conn.request(&Request::Status)? {
            Reply::Status(json) => Ok(json),
            other => Err(unexpected(other, "STATUS")),
        }
    }

    /// The connection to the group server at `address`, made on first use.
    pub(super) fn server(&mut self, address: &str) -> Result<&mut Server> {
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
                lookup: None,
            };
            self.servers.insert(address.to_string(), server);
        }
        Ok(self
            .servers
            .get_mut(address)
            .expect("bug: server just added"))
    }

    /// Asks the server where `group` lives now, taking in what it pushed meanwhile; follows
    /// the group to its new server if it moved (see `follow.rs`).
    pub(super) fn group_request(&mut self, group: &GroupRef, request: &Request) -> Result<Reply> {
        self.following(group, |session, at| session.request_at(at, request))
    }

    /// Asks `group`'s server, taking in what it pushed meanwhile.
    pub(super) fn request_at(&mut self, group: &GroupRef, request: &Request) -> Result<Reply> {
        let reply = self.server(&group.address)?.conn.request(request);
        self.collect_events(&group.address);
        match reply {
            Err(err @ Error::Timeout(_)) if !self.trust.is_listed(&group.address) => Err(self
                .trust
                .explain_silence(&self.ctx, &group.address, self.timeouts, err)),
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
        self.following(group, |session, at| session.attach(at, &request))
    }

    /// Joins a group as [`Session::join`] does, and delivers its stored messages after
    /// `after_seq` as if they had come live (in order, before any that follow): how a client
    /// takes in a conversation someone else began. Returns the group's last seq.
    ///
    /// # Errors
    /// The server's refusal or silence.
    pub fn join_from(&mut self, group: &GroupRef, after_seq: u64) -> Result<u64> {
        let new = !self.subs.contains_key(group);
        if new {
            self.subs.insert(group.clone(), Sequencer::new(after_seq));
        }
        match self.join(group) {
            Ok(last_seq) => {
                self.repair(group, last_seq);
                Ok(last_seq)
            }
            Err(err) => {
                if new {
                    self.subs.remove(group);
                }
                Err(err)
            }
        }
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
        self.following(group, |session, at| session.attach(at, &request))
    }

    pub(super) fn attach(&mut self, group: &GroupRef, request: &Request) -> Result<u64> {
        match self.request_at(group, request)? {
            Reply::Joined { last_seq, .. } => {
                self.subs
                    .entry(group.clone())
                    .or_insert_with(|| Sequencer::new(last_seq))
                    .rejoined(last_seq);
                Ok(last_seq)
            }
            other => Err(unexpected(other, "JOINED")),
        }
    }

    /// Leaves a group.
    ///
    /// # Errors
    /// NOT_MEMBER, or the server's silence.
    pub fn leave(&mut self, group: &GroupRef) -> Result<()> {
        let group = &self.locate(group);
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

    /// Removes `user` from a group (KICK), and with `ban` refuses their joins from now on
    /// (BAN); for operators only.
    ///
    /// # Errors
    /// UNAUTHORIZED for a client that is not an operator, NOT_MEMBER (a kick of a stranger),
    /// or the server's silence.
    pub fn remove(&mut self, group: &GroupRef, user: &str, ban: bool) -> Result<()> {
        let (name, user) = (group.name.clone(), user.to_string());
        let request = match ban {
            true => Request::Ban { group: name, user },
            false => Request::Kick { group: name, user },
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
        self.wait_event(wake.map(Wake::Socket), timeout)
    }

    /// As [`Session::next_event`], but also returns `Ok(None)` as soon as the file descriptor
    /// `fd` is readable (a browser's TCP connection in `zms web`).
    ///
    /// # Errors
    /// As [`Session::next_event`].
    pub fn next_event_or_fd(
        &mut self,
        fd: std::os::fd::RawFd,
        timeout: Duration,
    ) -> Result<Option<SessionEvent>> {
        self.wait_event(Some(Wake::Fd(fd)), timeout)
    }

    fn wait_event(
        &mut self,
        wake: Option<Wake>,
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
            match wake {
                Some(Wake::Socket(w)) => items.push(w.as_poll_item(zmq::POLLIN)),
                Some(Wake::Fd(fd)) => items.push(zmq::PollItem::from_fd(fd, zmq::POLLIN)),
                None => {}
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
    pub(super) fn collect_events(&mut self, address: &str) {
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
        let Some(sequencer) = self.subs.get_mut(&group) else {
            return;
        };
        match sequencer.accept(message) {
            Verdict::Deliver(messages) => self.deliver(&group, messages),
            Verdict::Stale => {}
            // The message waits in the sequencer; if the hole cannot be filled now, the next
            // PONG tells and repairs it.
            Verdict::Gap(gap) => self.repair(&group, gap.to),
        }
    }

    /// Queues messages the sequencer let through, in order.
    pub(super) fn deliver(&mut self, group: &GroupRef, messages: Vec<Message>) {
        self.ready.extend(messages.into_iter().map(|message| {
            SessionEvent::Message(Delivery {
                group: group.clone(),
                message,
            })
        }));
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
                // Three heartbeats without an answer: start over on a new socket, and ask
                // the message server whether its groups live elsewhere now.
                server.ping = None;
                server.conn.reconnect()?;
                if !server.lost {
                    server.lost = true;
                    self.ready
                        .push_back(SessionEvent::ServerLost(address.clone()));
                }
                self.follow_lost(&address, now);
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
            if self.servers.get(&address).is_some_and(|s| s.lost) {
                self.follow_lost(&address, now);
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
        server.lookup = None;
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
                        // No longer hosted here: it may live elsewhere now.
                        Err(Error::Rejected {
                            code: ErrorCode::UnknownGroup,
                            ..
                        }) => {
                            if self.relocate(&group).is_none() {
                                tracing::info!(group = %group, "not hosted there now, nor listed elsewhere yet; will retry");
                            }
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

/// `Ok` for an OK reply; any other is unexpected.
pub(super) fn expect_ok(reply: Reply, wanted: &str) -> Result<()> {
    match reply {
        Reply::Ok => Ok(()),
        other => Err(unexpected(other, wanted)),
    }
}
