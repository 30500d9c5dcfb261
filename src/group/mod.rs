//! The group server: hosts groups, stores their messages, pushes them live to members.
//!
//! One ROUTER serves requests and carries live pushes (so one address reaches a group, as in
//! the original design, and only members' connections ever receive its messages). The loop
//! reads up to `BATCH` (512) requests per wake-up and commits their writes in one SQLite
//! transaction before any acknowledgement or push leaves (group commit), then pushes each
//! group's new messages of the batch in as few frames as it can ([`fanout`]); a page of
//! history leaves as soon as it is read. A DEALER per directory carries REGISTER every
//! heartbeat. Decisions live in [`state`], which is pure; [`batch`] carries them out through
//! the [`storage::Storage`] trait, which [`store`] (SQLite, the only SQL) implements.

pub mod batch;
mod conversation;
pub mod fanout;
pub mod limits;
mod ops;
pub mod postgres;
pub mod retention;
pub mod state;
pub mod storage;
pub mod store;
mod upkeep;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::backlog::Backlogs;
use crate::keys::{self, KeyPair};
use crate::peers::Connections;
use crate::protocol::codec::{self, DecodeError};
use crate::protocol::{self, Reply, Request};
use crate::shutdown::ServerHandle;
use crate::transport::{KeyService, SharedFrame};
use crate::{errinput, transport, zap, Result};
use batch::Batch;
use limits::Limits;
use retention::{Policy, Retention};
use state::{Now, Outbound, Peer, Route, State};
use storage::Storage;
use store::{Durability, Store};

/// Most requests read per wake-up; they share one transaction. Past a few hundred, a larger
/// batch saves little of the commit's cost but holds every answer in it back longer: at 1,024,
/// one batch could take in four pipelining senders' whole windows and leave them idle through
/// its commit (ingest measured 264k–274k msgs/s, against 270k–298k at 512).
const BATCH: usize = 512;

/// Most messages a batch takes in, however few requests carry them: with SENDS of up to
/// [`protocol::MAX_BATCH`] each, 512 requests could hold 131,072 messages and tens of MiB.
const BATCH_MESSAGES: usize = 4096;

/// Most chunks one trimming step deletes from a group: a step is its own short transaction
/// between batches, so a send waits behind at most this much deleting, never a whole backlog.
const TRIM_STEP_CHUNKS: usize = 16;

/// Most messages one step of search indexing takes in: like trimming, a step is its own short
/// transaction between batches, so a send waits behind at most this much indexing (a few
/// milliseconds: FTS5 indexes a few hundred thousand short messages a second), and a backlog is
/// worked off a step per idle turn.
const INDEX_STEP_MESSAGES: usize = 2_000;

/// How long no write must have come before the loop indexes. Pipelining senders leave the
/// queue empty for moments between batches; indexing in those moments does the index's work
/// on the serving thread in the middle of the load (ingest measured little faster than with
/// the index written by each append), so it waits for a pause in the writes instead. Under
/// writes that never pause this long, one step a heartbeat still runs.
const INDEX_QUIET: Duration = Duration::from_millis(10);

/// Most messages stored since the index last caught up before indexing stops waiting for a
/// pause: a step then runs between batches whatever the load. It bounds what a SEARCH, which
/// first indexes the rest of its group, may have to do while everyone else waits (a few
/// hundred milliseconds at most), so writes that never pause cannot build a backlog that
/// stalls the server for seconds.
const INDEX_BACKLOG_MAX: usize = 100_000;

/// How a group server is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Groups to host (created on first start).
    pub groups: Vec<String>,
    /// Directory holding the SQLite database.
    pub data: PathBuf,
    /// Endpoints of the directories to register with (may be empty).
    pub directories: Vec<String>,
    /// `HOST:PORT` to announce; by default the bound address (127.0.0.1 for a wildcard bind).
    pub advertise: Option<String>,
    pub durability: Durability,
    /// CURVE on every connection, names bound to keys, private groups; `None` runs open.
    pub security: Option<GroupSecurity>,
}

/// What a group server needs to run with security.
#[derive(Debug, Clone)]
pub struct GroupSecurity {
    /// Its own key pair; users learn the public half from the message server's list.
    pub keys: KeyPair,
    /// The public key of each message server in [`Config::directories`], in the same order.
    pub directory_keys: Vec<String>,
    /// Groups that only allowed or invited keys may join.
    pub private: Vec<String>,
    /// Keys allowed to join every private group.
    pub allow: Vec<String>,
}

/// A bound group server, ready to run.
pub struct GroupServer {
    router: zmq::Socket,
    endpoint: String,
    /// The `HOST:PORT` announced to directories and users.
    address: String,
    directories: Vec<zmq::Socket>,
    state: State,
    store: Box<dyn Storage>,
    /// Kept between wake-ups so its buffers are: a lone SEND per wake-up allocates no acks.
    batch: Batch,
    next_req: u32,
    /// When every request that had arrived was last read: silence is counted up to here, so
    /// a PING queued behind a stall of the server's own (a long checkpoint, a locked
    /// database) does not cost its connection the subscriptions.
    drained: Instant,
    /// The plaintext KEY service beside a secure server.
    key_service: Option<KeyService>,
    /// What each peer has not read yet: large requests and pushes wait on it.
    backlogs: Backlogs,
    /// Every connection, to close those over a cap or idle.
    connections: Connections,
    /// The ZAP handler this server started (none if another server of the process runs it).
    _zap: Option<ServerHandle>,
    /// The `HOST:PORT` of each directory, for messages.
    directory_addresses: Vec<String>,
    /// Asks directories to hand this server's names over from whoever holds them.
    replace: bool,
    /// Groups live in a database shared with other group servers (`bind_cluster`).
    cluster: bool,
    /// Why no directory has acknowledged a REGISTER yet; `None` once one has.
    unregistered: Option<String>,
    /// Called once, when the first directory acknowledges a REGISTER after
    /// [`GroupServer::register`] found none had.
    on_registered: Option<Box<dyn FnOnce() + Send>>,
    /// Metrics, health and STATUS ([`ops`]).
    ops: ops::Ops,
    /// Each group that does not keep everything, by store id, with what it keeps.
    retention: Vec<(i64, String, Policy)>,
    /// The policies `retention` was made from, for groups created at runtime.
    retention_policies: Retention,
    /// Whether trimming may have work: set every heartbeat, cleared when a round of steps
    /// deletes nothing. While set the loop polls without waiting and trims when idle.
    trim_due: bool,
    /// Whether the search index may lag the stored messages: set every heartbeat and after
    /// each batch that wrote, cleared when a step finds nothing more. While set the loop
    /// indexes a step per idle turn once writes have paused for [`INDEX_QUIET`], or at once
    /// while more than [`INDEX_BACKLOG_MAX`] messages wait.
    index_due: bool,
    /// When the last batch that wrote ended: indexing waits for [`INDEX_QUIET`] after it.
    last_write: Instant,
    /// Messages stored since the index last caught up (an upper bound: it counts what the
    /// batches wrote, and drops by a step's worth at each step).
    unindexed: usize,
}

impl Drop for GroupServer {
    fn drop(&mut self) {
        self.connections.stop(&mut self.router);
    }
}

impl GroupServer {
    /// Opens the store, loads the groups and binds the ROUTER to `endpoint`.
    ///
    /// # Errors
    /// A bad group name, a busy or corrupt data directory, or an address that cannot be bound.
    pub fn bind(ctx: &zmq::Context, endpoint: &str, config: Config) -> Result<GroupServer> {
        let store = Store::open(&config.data, config.durability)?;
        Self::bind_on(ctx, endpoint, config, Box::new(store), false)
    }

    /// Like [`GroupServer::bind`], in cluster mode: groups, messages and leases live in the
    /// PostgreSQL database at `url`, which other group servers share. `config.groups` are
    /// created there if new; this server hosts its fair share of all the database's groups,
    /// holding each by a lease of `lease` renewed every heartbeat (see [`postgres::lease`]).
    ///
    /// # Errors
    /// As [`GroupServer::bind`], or the database's error.
    pub fn bind_cluster(
        ctx: &zmq::Context,
        endpoint: &str,
        config: Config,
        url: &str,
        lease: Duration,
    ) -> Result<GroupServer> {
        let owner = format!("{}-{:x}", std::process::id(), epoch());
        let store = postgres::PgStore::connect(url, &owner, lease)?;
        Self::bind_on(ctx, endpoint, config, Box::new(store), true)
    }

    fn bind_on(
        ctx: &zmq::Context,
        endpoint: &str,
        config: Config,
        mut store: Box<dyn Storage>,
        cluster: bool,
    ) -> Result<GroupServer> {
        if config.groups.is_empty() && !cluster {
            return Err(errinput!("a group server needs at least one group"));
        }
        for g in &config.groups {
            protocol::check_group_name(g).map_err(crate::Error::Input)?;
        }
        if config.groups.len() > protocol::MAX_GROUPS_PER_SERVER {
            return Err(errinput!(
                "a group server hosts at most {} groups",
                protocol::MAX_GROUPS_PER_SERVER
            ));
        }
        let security = config.security.as_ref();
        let keys = security.map(|s| s.keys.clone());
        if let Some(s) = security {
            if s.directory_keys.len() != config.directories.len() {
                return Err(errinput!(
                    "a secure group server needs the key of every message server"
                ));
            }
            if let Some(g) = s
                .private
                .iter()
                .find(|g| !cluster && !config.groups.contains(g))
            {
                return Err(errinput!(
                    "--private {g} names a group this server does not host"
                ));
            }
            s.allow.iter().try_for_each(|k| keys::raw(k).map(drop))?;
        }
        let zap = if keys.is_some() {
            zap::start(ctx)?
        } else {
            None
        };
        let (router, endpoint, key_service) = transport::bind_server(
            ctx,
            endpoint,
            protocol::MAX_BATCH_FRAME as i64,
            keys.as_ref(),
        )?;
        let connections = Connections::watch(ctx, &router, Limits::default().peers)?;
        let address = match &config.advertise {
            Some(a) => transport::address(&transport::endpoint(a)?),
            None => advertised(&endpoint),
        };
        let mut directories = Vec::new();
        for (i, dir) in config.directories.iter().enumerate() {
            let dealer = transport::socket(ctx, zmq::DEALER)?;
            if let (Some(keys), Some(s)) = (&keys, security) {
                transport::curve_client(&dealer, keys, &s.directory_keys[i])?;
            }
            // Queue nothing for a directory that is down: a stale burst of REGISTERs is
            // useless, the next heartbeat says it all again.
            dealer.set_immediate(true)?;
            dealer.set_sndhwm(4)?;
            // Give UNREGISTER a moment to leave on shutdown.
            dealer.set_linger(200)?;
            dealer.connect(dir)?;
            directories.push(dealer);
        }
        let now_ms = crate::time::now_ms();
        // The groups named by the flags, and those an operator created at runtime.
        let mut names = config.groups.clone();
        for added in store.added_groups()? {
            if !names.contains(&added) {
                names.push(added);
            }
        }
        let mut groups = names
            .iter()
            .map(|name| store.ensure_group(name, now_ms))
            .collect::<Result<Vec<_>>>()?;
        let mut private: Vec<String> = security.map(|s| s.private.clone()).unwrap_or_default();
        // What an operator set at runtime (CREATE, SET) wins over --private.
        for g in &groups {
            match g.private {
                Some(true) if !private.contains(&g.name) => private.push(g.name.clone()),
                Some(false) => private.retain(|p| p != &g.name),
                _ => {}
            }
        }
        if cluster {
            // The database says which groups exist; this server hosts its share of them.
            let gained = store.balance()?.gained;
            private.extend(
                gained
                    .iter()
                    .filter(|h| h.private)
                    .map(|h| h.group.name.clone()),
            );
            groups = gained.into_iter().map(|h| h.group).collect();
        }
        let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        let ops = ops::Ops::new(&names, &config.data);
        let mut state = State::new(groups, address.clone(), epoch());
        for id in state.group_ids() {
            state.set_first_kept(id, store.first_kept(id)?);
        }
        if let (Some(keys), Some(s)) = (&keys, security) {
            state.secure(keys.public.clone(), &private, &s.allow);
            let stored = batch::read_keys(&state, store.as_mut())?;
            state.restore(Vec::new(), Some(stored));
        }
        Ok(GroupServer {
            router,
            endpoint,
            address,
            directories,
            state,
            store,
            batch: Batch::default(),
            next_req: 0,
            drained: Instant::now(),
            key_service,
            backlogs: Backlogs::new(Limits::default().backlog),
            connections,
            _zap: zap,
            directory_addresses: config
                .directories
                .iter()
                .map(|d| transport::address(d))
                .collect(),
            // A group moves between servers sharing a database: its new owner takes the name.
            replace: cluster,
            cluster,
            unregistered: Some("not registered yet".into()),
            on_registered: None,
            ops,
            retention: Vec::new(),
            retention_policies: Retention::default(),
            trim_due: false,
            index_due: true,
            last_write: Instant::now(),
            unindexed: 0,
        })
    }

    /// The bound endpoint, with the real port.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `HOST:PORT` this server announces.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Lets the holders of `keys` (Z85 public keys) make administration requests such as KICK;
    /// only with security (without it, clients on this host may).
    pub fn with_operators(mut self, keys: Vec<String>) -> GroupServer {
        self.state.set_operators(keys);
        self
    }

    /// Enforces `limits` (the defaults otherwise). libzmq's frame limit stays at
    /// [`protocol::MAX_BATCH_FRAME`] whatever the text limit, so that a batch of short messages
    /// still fits, and a text over a lowered limit is answered TOO_LARGE rather than costing
    /// its sender the connection.
    ///
    /// # Errors
    /// A text limit above the protocol's, or a libzmq failure.
    pub fn with_limits(mut self, limits: Limits) -> Result<GroupServer> {
        if limits.max_text > protocol::MAX_TEXT {
            return Err(errinput!(
                "the message size limit is at most {} bytes",
                protocol::MAX_TEXT
            ));
        }
        self.backlogs = Backlogs::new(limits.backlog);
        self.connections.set_caps(limits.peers);
        self.state.set_limits(limits);
        Ok(self)
    }

    /// Caps the store at about `max_bytes` (see [`Storage::limit_size`]).
    ///
    /// # Errors
    /// The store's error.
    pub fn limit_storage(mut self, max_bytes: u64) -> Result<GroupServer> {
        self.store.limit_size(max_bytes)?;
        Ok(self)
    }

    /// Keeps each group's messages as `retention` says (everything, by default), trimming the
    /// oldest in small steps while the server is idle.
    pub fn with_retention(mut self, retention: &Retention) -> GroupServer {
        self.retention_policies = retention.clone();
        self.apply_retention();
        self
    }

    /// Asks the directories to hand this server's group names over to it from the group
    /// servers holding them (open directories allow it; secure ones only from an operator key).
    pub fn with_replace(mut self, replace: bool) -> GroupServer {
        self.replace = replace;
        self
    }

    /// Why this server is not registered: `None` once a directory has acknowledged it.
    pub fn unregistered(&self) -> Option<&str> {
        self.unregistered.as_deref()
    }

    /// Calls `f` once, from the server's thread, when a directory first acknowledges a
    /// REGISTER (at once if one already has).
    pub fn on_registered(mut self, f: impl FnOnce() + Send + 'static) -> GroupServer {
        match self.unregistered {
            None => f(),
            Some(_) => self.on_registered = Some(Box::new(f)),
        }
        self
    }

    /// Registers with every directory, waiting up to `wait` for each to acknowledge.
    /// A directory that does not answer is only logged (see [`GroupServer::unregistered`]):
    /// the heartbeat keeps trying.
    ///
    /// A refusal is asked again every heartbeat until it has lasted a registration's TTL plus
    /// one heartbeat, so a server restarted at another address outlives its own old entry.
    ///
    /// # Errors
    /// A directory's refusal that lasted (a group name held by another group server, a key
    /// not allowed, a limit), naming that directory; a libzmq failure.
    pub fn register(mut self, wait: Duration) -> Result<GroupServer> {
        // A refusal may name this server's own entry from before a restart at another address,
        // which lives until its registration's TTL ends: only a refusal that outlasts it is final.
        let patience = Duration::from_millis(
            u64::from(protocol::REGISTRATION_TTL_MS) + protocol::HEARTBEAT_MS,
        );
        let started = Instant::now();
        loop {
            match self.register_once(wait) {
                Err(crate::Error::Rejected { reason, .. }) if started.elapsed() < patience => {
                    warn!(%reason, "refused; asking again until an earlier entry would have expired");
                    std::thread::sleep(Duration::from_millis(protocol::HEARTBEAT_MS));
                }
                Err(err) => return Err(err),
                Ok(()) => return Ok(self),
            }
        }
    }

    /// One round of [`GroupServer::register`].
    fn register_once(&mut self, wait: Duration) -> Result<()> {
        // IMMEDIATE refuses to queue before the TCP handshake, so the first REGISTER waits
        // (up to `wait`) for the connection; the heartbeat's later ones never block.
        for dir in &self.directories {
            dir.set_sndtimeo(wait.as_millis() as i32)?;
        }
        self.announce_with(0);
        for dir in &self.directories {
            dir.set_sndtimeo(-1)?;
        }
        let mut silent = Vec::new();
        for (dir, address) in self.directories.iter().zip(&self.directory_addresses) {
            let mut items = [dir.as_poll_item(zmq::POLLIN)];
            if transport::poll(&mut items, wait)? == 0 {
                warn!(%address, "message server did not answer REGISTER yet; will keep trying");
                silent.push(address.as_str());
                continue;
            }
            let Ok(frame) = dir.recv_bytes(zmq::DONTWAIT) else {
                continue;
            };
            match codec::decode_incoming(&frame) {
                Ok(codec::Incoming::Reply(_, Reply::Error { code, reason })) => {
                    return Err(crate::Error::Rejected {
                        code,
                        reason: format!(
                            "message server {address} refused to list this group server: {reason}"
                        ),
                    })
                }
                Ok(_) => self.unregistered = None,
                Err(e) => warn!(%address, reason = %e.reason, "message server sent a bad reply"),
            }
        }
        if self.unregistered.is_some() {
            self.unregistered = Some(match silent.as_slice() {
                [] => "no message server configured".to_string(),
                all => format!("no answer from message server {}", all.join(", ")),
            });
        }
        Ok(())
    }

    /// Runs the server on its own thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(self, ctx: &zmq::Context) -> Result<ServerHandle> {
        let endpoint = self.endpoint.clone();
        ServerHandle::spawn(ctx, "group", endpoint, move |control| self.run(control))
    }

    /// Serves until `control` becomes readable.
    ///
    /// # Errors
    /// Only when libzmq fails; bad input and storage faults are answered, not fatal.
    pub fn run(mut self, control: zmq::Socket) -> Result<()> {
        let _span = tracing::info_span!("group", address = %self.address).entered();
        info!(groups = ?self.state.group_names(), "serving");
        let heartbeat = Duration::from_millis(protocol::HEARTBEAT_MS);
        let ttl = Duration::from_millis(protocol::SUBSCRIPTION_TTL_MS);
        let mut next_beat = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_beat {
                self.rebalance();
                self.announce();
                if !self.router.get_events()?.contains(zmq::POLLIN) {
                    self.drained = now;
                }
                self.state.expire(self.drained, ttl);
                self.forget_gone_peers();
                self.connections.close_idle();
                self.update_gauges();
                self.trim_due = !self.retention.is_empty();
                if self.index_due {
                    // Still behind: writes have not paused since the last heartbeat.
                    self.index_step();
                }
                self.index_due = true;
                next_beat = now + heartbeat;
            }
            let mut items = Vec::with_capacity(4 + self.directories.len());
            items.push(control.as_poll_item(zmq::POLLIN));
            items.push(self.router.as_poll_item(zmq::POLLIN));
            items.push(self.connections.socket().as_poll_item(zmq::POLLIN));
            items.extend(self.directories.iter().map(|d| d.as_poll_item(zmq::POLLIN)));
            if let Some(service) = &self.key_service {
                items.push(service.socket().as_poll_item(zmq::POLLIN));
            }
            let quiet = now.saturating_duration_since(self.last_write);
            let index_now =
                self.index_due && (quiet >= INDEX_QUIET || self.unindexed >= INDEX_BACKLOG_MAX);
            let wait = if self.trim_due || index_now {
                Duration::ZERO
            } else if self.index_due {
                (INDEX_QUIET - quiet).min(next_beat.saturating_duration_since(now))
            } else {
                next_beat.saturating_duration_since(now)
            };
            transport::poll(&mut items, wait)?;
            if items[0].is_readable() {
                break;
            }
            let router_ready = items[1].is_readable();
            let monitor_ready = items[2].is_readable();
            let dirs = self.directories.len();
            let dirs_ready: Vec<bool> =
                items[3..3 + dirs].iter().map(|i| i.is_readable()).collect();
            let keys_asked = items.get(3 + dirs).is_some_and(|i| i.is_readable());
            drop(items);
            if monitor_ready {
                self.connections.take_reports();
            }
            if router_ready {
                self.serve_batch()?;
            } else if self.trim_due {
                self.trim_step();
            } else if index_now {
                self.index_step();
            }
            if keys_asked {
                if let Some(service) = &self.key_service {
                    service.serve();
                }
            }
            for (dir, _) in self
                .directories
                .iter()
                .zip(dirs_ready)
                .filter(|(_, ready)| *ready)
            {
                while let Ok(frame) = dir.recv_bytes(zmq::DONTWAIT) {
                    if log_directory_reply(&frame) && self.unregistered.take().is_some() {
                        info!("registered");
                        self.ops.health.set_registration(None);
                        if let Some(f) = self.on_registered.take() {
                            f();
                        }
                    }
                }
            }
        }
        info!("stopping");
        let bye = Request::Unregister {
            address: self.address.clone(),
        };
        for dir in &self.directories {
            let _ = dir.send(codec::encode_request(0, &bye), zmq::DONTWAIT);
        }
        Ok(())
    }

    /// Sends REGISTER to every directory (never blocks).
    fn announce(&mut self) {
        self.announce_with(zmq::DONTWAIT);
    }

    fn announce_with(&mut self, flags: i32) {
        let request = Request::Register {
            address: self.address.clone(),
            ttl_ms: protocol::REGISTRATION_TTL_MS,
            groups: self.state.group_names(),
            key: self.state.key().to_string(),
            replace: self.replace,
        };
        self.next_req = self.next_req.wrapping_add(1);
        let frame = codec::encode_request(self.next_req, &request);
        for dir in &self.directories {
            if let Err(err) = dir.send(frame.as_slice(), flags) {
                debug!(%err, "message server not reachable for REGISTER");
            }
        }
    }

    /// Reads up to [`BATCH`] requests, stores their writes in one transaction, then sends
    /// every answer and push. Reads that follow writes in the batch see them committed first.
    fn serve_batch(&mut self) -> Result<()> {
        // Every connection whose requests are read below is known by then.
        self.connections.take_reports();
        let mut batch = std::mem::take(&mut self.batch);
        let mut messages = 0;
        let mut requests = 0;
        let mut wrote = false;
        for _ in 0..BATCH {
            if messages >= BATCH_MESSAGES {
                break;
            }
            // Only a secure server has peers' keys to read (and a key service beside it).
            let secure = self.key_service.is_some();
            let Some(envelope) = transport::recv_envelope(&self.router, secure)? else {
                self.drained = Instant::now();
                break;
            };
            requests += 1;
            let route = envelope.route;
            let mut frames = envelope.frames;
            if !self.backlogs.knows(&route) {
                let fd = frames.first_mut().and_then(transport::source_fd);
                self.backlogs.watch(&route, fd);
                if let Some(fd) = fd {
                    self.connections.active(fd);
                }
            }
            // Without security a peer is known by its IP address (names per address, rates).
            let address = match frames.first_mut() {
                Some(first) if !secure => transport::peer_address(first),
                _ => None,
            };
            let (req_id, request) = match codec::decode_message(&frames) {
                Ok(decoded) => decoded,
                Err(DecodeError {
                    req_id,
                    code,
                    reason,
                }) => {
                    warn!(peer = %transport::hex(&route), %code, %reason, "bad request");
                    self.ops.asked(req_id, "INVALID");
                    let reply = Reply::Error { code, reason };
                    batch.reply(route, req_id, reply);
                    continue;
                }
            };
            self.ops.asked(req_id, request.name());
            if let Err((code, reason)) = self.open_conversation(&request, &mut batch) {
                let reply = Reply::Error { code, reason };
                batch.reply(route, req_id, reply);
                continue;
            }
            if let Some(reply) = batch.admit(&request, &mut self.state, self.store.as_mut()) {
                batch.reply(route, req_id, reply);
                continue;
            }
            if let Request::History { group, .. } = &request {
                self.ops.metrics.history(group);
            }
            if matches!(request, Request::Status) {
                let reply = self.status();
                batch.reply(route, req_id, reply);
                continue;
            }
            messages += sent(&request);
            wrote |= request.is_write();
            debug!(peer = %transport::hex(&route), request = request.name(), "request");
            // An answer that can be large (a page of history, a member or group list) is sent
            // as soon as it is made: nothing in it waits on a commit (one open before it was
            // settled above), a reader asking for pages ahead gets each while the server reads
            // the next, and the next such request of the batch sees it counted as unread.
            let large = matches!(
                request,
                Request::History { .. } | Request::Members { .. } | Request::List
            );
            if large {
                if let Err(reason) = self.backlogs.check(&route, Instant::now()) {
                    debug!(peer = %transport::hex(&route), %reason, "request held back");
                    let reply = Reply::Error {
                        code: protocol::ErrorCode::Limited,
                        reason,
                    };
                    batch.reply(route, req_id, reply);
                    continue;
                }
            }
            let from = Peer {
                route: &route,
                key: envelope.peer_key.as_deref(),
                address: address.as_deref(),
            };
            let store = self.store.as_mut();
            batch.handle(&mut self.state, store, Now::read(), from, req_id, request);
            if large {
                self.flush(batch.take_out());
            }
        }
        let out = batch.finish(&mut self.state, self.store.as_mut());
        for took in batch.commit_times.drain(..) {
            self.ops.metrics.commit(took);
        }
        self.flush(out);
        self.batch = batch;
        if wrote {
            self.index_due = true;
            self.last_write = Instant::now();
            self.unindexed = self.unindexed.saturating_add(messages.max(1));
        }
        self.ops.metrics.batch(requests);
        if self.state.take_groups_changed() {
            self.groups_changed();
        }
        Ok(())
    }

    /// Sends answers, then pushes. A peer that is gone loses its subscriptions; a peer whose
    /// queue is full misses the push and repairs the gap from history.
    fn flush(&mut self, out: Vec<Outbound>) {
        let mut gone: Vec<Route> = Vec::new();
        // Answers first: a pipelining sender refills its window while the pushes go out.
        // Who receives a push was settled by the whole batch, so the order changes no one's.
        let (pushes, answers): (Vec<_>, Vec<_>) = out.into_iter().partition(Outbound::is_push);
        for answer in answers {
            let durable = matches!(answer, Outbound::Durable { .. });
            if let Outbound::Reply {
                route,
                req_id,
                reply,
            }
            | Outbound::Durable {
                route,
                req_id,
                reply,
            } = answer
            {
                let frame = codec::encode_reply(req_id, &reply);
                self.ops.answered(&frame, durable);
                match send_to(&self.router, &route, &frame) {
                    Ok(()) => self.backlogs.sent(&route, frame.len()),
                    Err(err) => debug!(peer = %transport::hex(&route), %err, "reply not delivered"),
                }
            }
        }
        self.ops.answers_done();
        self.ops.stored(&pushes);
        // A group nobody follows live costs no encoding.
        let followed = pushes.into_iter().filter(|push| {
            push.group()
                .is_some_and(|g| self.state.subscribers(g).next().is_some())
        });
        for fanout::Push { group, frame } in fanout::frames(followed) {
            // One buffer for every member's copy of the push.
            let mut shared = SharedFrame::new(&frame);
            for route in self.state.subscribers(&group) {
                // A member that has not read its earlier pushes misses this one and repairs
                // the gap from history once it reads again.
                if !self.backlogs.push(route, frame.len()) {
                    self.ops.metrics.dropped(&group);
                    continue;
                }
                let sent = self
                    .router
                    .send(route.as_slice(), zmq::SNDMORE | zmq::DONTWAIT)
                    .and_then(|()| shared.send(&mut self.router, zmq::DONTWAIT));
                match sent {
                    Ok(()) => self.ops.metrics.pushed(&group),
                    Err(zmq::Error::EHOSTUNREACH) => gone.push(route.clone()),
                    Err(err) => debug!(peer = %transport::hex(route), %err, "push dropped"),
                }
            }
        }
        for route in gone {
            debug!(peer = %transport::hex(&route), "peer gone");
            self.state.drop_conn(&route);
            self.backlogs.forget(&route);
        }
    }

    /// Stops counting the unread answers of peers whose connections are gone.
    fn forget_gone_peers(&mut self) {
        self.backlogs.forget_gone(&mut self.router);
    }
}

/// Messages a request sends: a SENDS its batch's, a SEND one, any other none.
fn sent(request: &Request) -> usize {
    match request {
        Request::SendBatch { messages, .. } => messages.len(),
        Request::Send { .. } => 1,
        _ => 0,
    }
}

fn send_to(router: &zmq::Socket, route: &[u8], frame: &[u8]) -> Result<(), zmq::Error> {
    router.send(route, zmq::SNDMORE | zmq::DONTWAIT)?;
    router.send(frame, zmq::DONTWAIT)
}

/// Logs a directory's answer to REGISTER; returns whether it was OK.
fn log_directory_reply(frame: &[u8]) -> bool {
    match codec::decode_incoming(frame) {
        Ok(codec::Incoming::Reply(_, Reply::Error { code, reason })) => {
            warn!(%code, %reason, "message server refused registration");
            false
        }
        Ok(codec::Incoming::Reply(_, Reply::Ok)) => true,
        Ok(_) => false,
        Err(e) => {
            warn!(reason = %e.reason, "message server sent a bad reply");
            false
        }
    }
}

/// The address to announce for a bound endpoint: a wildcard host becomes 127.0.0.1, which
/// only local users can reach, so say so.
fn advertised(endpoint: &str) -> String {
    let address = transport::address(endpoint);
    match address.rsplit_once(':') {
        Some((host, port)) if host == "0.0.0.0" || host == "*" || host == "[::]" => {
            warn!(%address, "bound to all interfaces; announcing 127.0.0.1 (use --advertise HOST:PORT for remote users)");
            format!("127.0.0.1:{port}")
        }
        _ => address,
    }
}

/// A number that differs between runs of a server.
fn epoch() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40)
}
