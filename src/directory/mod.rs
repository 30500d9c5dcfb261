//! The message server ("directory"): where group servers announce their groups and users
//! look them up.
//!
//! One ROUTER socket serves everyone. The table is soft state ([`registry`]): group servers
//! re-register every heartbeat, so a restarted directory is whole again within one heartbeat,
//! and a group server that stops announcing drops out when its TTL runs out. This module is the
//! poll loop and nothing else.

pub mod owners;
pub mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::backlog::{Backlogs, Budget};
use crate::keys::KeyPair;
use crate::ops::metrics::DirectoryMetrics;
use crate::ops::status::{DirectoryStatus, RegisteredServer};
use crate::ops::{http, Health};
use crate::peers::{Connections, PeerCaps};
use crate::protocol::codec::{self, DecodeError};
use crate::protocol::{self, ErrorCode, Reply, Request};
use crate::shutdown::ServerHandle;
use crate::transport::{Envelope, KeyService};
use crate::{transport, zap, Result};
use owners::{Kind, Owners};
use registry::Registry;

/// Longest TTL a registration may ask for; a longer one is cut to this.
const MAX_TTL: Duration = Duration::from_secs(60);
/// Most requests handled per poll wake-up before checking the control pipe again.
const BATCH: usize = 1024;

/// What a message server needs to run with security.
#[derive(Debug, Clone)]
pub struct DirectorySecurity {
    /// Its own key pair: users and group servers must know the public half.
    pub keys: KeyPair,
    /// Group server keys admitted to REGISTER; empty admits any key.
    pub allow_servers: Vec<String>,
}

/// A bound directory, ready to run.
pub struct DirectoryServer {
    router: zmq::Socket,
    endpoint: String,
    registry: Registry,
    /// The encoded GROUPS reply for the registry version it was built from (request id 0):
    /// LIST is the hot request and the table changes rarely.
    list_cache: Option<(u64, Vec<u8>)>,
    security: Option<DirectorySecurity>,
    /// With security: which key owns each group name and address (first come, kept).
    owners: Owners,
    /// With security: keys whose REGISTER may take names and addresses over (`replace`).
    operators: Vec<String>,
    /// The plaintext KEY service beside a secure server.
    key_service: Option<KeyService>,
    /// What each peer has not read yet: a LIST waits on it (a list can be megabytes).
    backlogs: Backlogs,
    /// Every connection, to close those over a cap or idle.
    connections: Connections,
    /// The ZAP handler this server started (none if another server of the process runs it).
    _zap: Option<ServerHandle>,
    /// Counters for `/metrics`, updated by the loop.
    metrics: Arc<DirectoryMetrics>,
    /// The `--metrics` HTTP endpoint, when asked for.
    ops: Option<http::Endpoint>,
    /// When the server started, unix milliseconds (STATUS).
    started_ms: i64,
}

impl Drop for DirectoryServer {
    fn drop(&mut self) {
        self.connections.stop(&mut self.router);
    }
}

impl DirectoryServer {
    /// Binds the directory's ROUTER to `endpoint` (`tcp://HOST:PORT`, port `*` for any),
    /// without security.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn bind(ctx: &zmq::Context, endpoint: &str) -> Result<DirectoryServer> {
        Self::bind_with(ctx, endpoint, None)
    }

    /// Binds with CURVE on every connection when `security` is given, and the plaintext key
    /// service on the next port.
    ///
    /// # Errors
    /// When an address cannot be bound or a key is malformed.
    pub fn bind_with(
        ctx: &zmq::Context,
        endpoint: &str,
        security: Option<DirectorySecurity>,
    ) -> Result<DirectoryServer> {
        let zap = match &security {
            Some(_) => zap::start(ctx)?,
            None => None,
        };
        let keys = security.as_ref().map(|s| &s.keys);
        let (router, endpoint, key_service) =
            transport::bind_server(ctx, endpoint, protocol::MAX_FRAME, keys)?;
        let connections = Connections::watch(ctx, &router, PeerCaps::default())?;
        Ok(DirectoryServer {
            router,
            endpoint,
            registry: Registry::new(),
            list_cache: None,
            operators: security.iter().map(|s| s.keys.public.clone()).collect(),
            owners: Owners::in_memory(),
            security,
            key_service,
            backlogs: Backlogs::new(Budget::default()),
            connections,
            _zap: zap,
            metrics: Arc::new(DirectoryMetrics::default()),
            ops: None,
            started_ms: crate::time::now_ms(),
        })
    }

    /// Serves `/metrics` and `/healthz` over HTTP on `bind` (`HOST:PORT`), until the server
    /// stops.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn serve_metrics(mut self, bind: &str) -> Result<DirectoryServer> {
        let metrics: Arc<dyn http::Exposed> = self.metrics.clone();
        self.ops = Some(http::Endpoint::start(bind, metrics, Health::default())?);
        Ok(self)
    }

    /// Where `/metrics` is served (`HOST:PORT`), if it is.
    pub fn metrics_address(&self) -> Option<&str> {
        self.ops.as_ref().map(http::Endpoint::address)
    }

    /// Caps the groups listed over all group servers; a REGISTER past it is refused (LIMITED).
    /// With security the cap is on the names bound to keys, so a name already bound is never
    /// refused for its owner, however many others fill the table.
    pub fn with_max_groups(mut self, max: usize) -> DirectoryServer {
        match self.security {
            None => self.registry = std::mem::take(&mut self.registry).with_max_groups(max),
            Some(_) => self.owners = std::mem::take(&mut self.owners).with_max_names(max),
        }
        self
    }

    /// With security: keeps the bindings of names and addresses to keys in `owners` (see
    /// [`Owners::open`]) instead of memory, so they outlive a restart. Call before
    /// [`DirectoryServer::with_max_groups`].
    pub fn with_owners(mut self, owners: Owners) -> DirectoryServer {
        self.owners = owners;
        self
    }

    /// With security: keys that may take names and addresses over with a `replace` REGISTER,
    /// besides this server's own key.
    pub fn with_operators(mut self, keys: Vec<String>) -> DirectoryServer {
        self.operators.extend(keys);
        self
    }

    /// Caps the users remembered from HELLO (see [`registry::MAX_USERS`]).
    pub fn with_max_users(mut self, max: usize) -> DirectoryServer {
        self.registry = std::mem::take(&mut self.registry).with_max_users(max);
        self
    }

    /// Bounds the unread answers a peer, and all peers, may leave before LIST is refused.
    pub fn with_backlog(mut self, budget: Budget) -> DirectoryServer {
        self.backlogs = Backlogs::new(budget);
        self
    }

    /// Caps connections per IP address and in all, and how long one may stay without a
    /// request (the defaults otherwise; the total is kept within the descriptor limit).
    pub fn with_peer_caps(mut self, caps: PeerCaps) -> DirectoryServer {
        self.connections.set_caps(caps);
        self
    }

    /// The bound endpoint, with the real port.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs the directory on its own thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(self, ctx: &zmq::Context) -> Result<ServerHandle> {
        let endpoint = self.endpoint.clone();
        ServerHandle::spawn(ctx, "directory", endpoint, move |control| self.run(control))
    }

    /// Serves until `control` becomes readable.
    ///
    /// # Errors
    /// Only when polling itself fails; a peer's bad input never ends the loop.
    pub fn run(mut self, control: zmq::Socket) -> Result<()> {
        let _span = tracing::info_span!("directory", endpoint = %self.endpoint).entered();
        info!(secure = self.security.is_some(), "serving");
        let mut next_sweep = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_sweep {
                self.forget_gone_peers();
                self.connections.close_idle();
                self.update_gauges();
                next_sweep = now + Duration::from_secs(1);
            }
            let wait = self
                .registry
                .next_expiry()
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(10), Duration::from_secs(1));
            let mut items = vec![
                control.as_poll_item(zmq::POLLIN),
                self.router.as_poll_item(zmq::POLLIN),
                self.connections.socket().as_poll_item(zmq::POLLIN),
            ];
            if let Some(service) = &self.key_service {
                items.push(service.socket().as_poll_item(zmq::POLLIN));
            }
            transport::poll(&mut items, wait)?;
            let (stop, requests) = (items[0].is_readable(), items[1].is_readable());
            let reports = items[2].is_readable();
            let keys_asked = items.get(3).is_some_and(|i| i.is_readable());
            drop(items);
            if stop {
                info!("stopping");
                return Ok(());
            }
            // Also before requests: every connection whose requests are read is known by then.
            if reports || requests {
                self.connections.take_reports();
            }
            if requests {
                for _ in 0..BATCH {
                    match transport::recv_envelope(&self.router, self.security.is_some())? {
                        Some(envelope) => self.serve(envelope),
                        None => break,
                    }
                }
            }
            if keys_asked {
                if let Some(service) = &self.key_service {
                    service.serve();
                }
            }
            let expired = self.registry.expire(Instant::now());
            self.metrics.expired(expired.len());
        }
    }

    /// Sets the gauges of the table's size and the connections.
    fn update_gauges(&self) {
        let (servers, entries) = self
            .registry
            .servers()
            .fold((0, 0), |(s, e), server| (s + 1, e + server.groups.len()));
        self.metrics.table(servers, entries, self.registry.users());
        self.metrics.peers(self.connections.count());
    }

    /// The STATUS reply: this server and the group servers registered.
    fn status(&self) -> Reply {
        let (now, now_ms) = (Instant::now(), crate::time::now_ms());
        let ms_at = |t: Instant| now_ms - now.saturating_duration_since(t).as_millis() as i64;
        let servers = self
            .registry
            .servers()
            .map(|s| RegisteredServer {
                address: s.address.to_string(),
                key: s.key.to_string(),
                groups: s.groups.to_vec(),
                registered_since_ms: ms_at(s.since),
                last_heartbeat_ms: ms_at(s.heard),
            })
            .collect();
        let status = DirectoryStatus {
            address: transport::address(&self.endpoint),
            key: self
                .security
                .as_ref()
                .map(|s| s.keys.public.clone())
                .unwrap_or_default(),
            up_since_ms: self.started_ms,
            users: self.registry.users(),
            connections: self.connections.count(),
            servers,
        };
        Reply::Status(status.to_json())
    }

    /// Answers one request.
    fn serve(&mut self, mut envelope: Envelope) {
        let route = &envelope.route;
        if !self.backlogs.knows(route) {
            let fd = envelope.frames.first_mut().and_then(transport::source_fd);
            self.backlogs.watch(route, fd);
            if let Some(fd) = fd {
                self.connections.active(fd);
            }
        }
        let mut command = "INVALID";
        let reply = match codec::decode_message(&envelope.frames) {
            Ok((req_id, request)) if matches!(request, Request::List) => {
                command = request.name();
                match self.backlogs.check(route, Instant::now()) {
                    Ok(()) => self.handle(req_id, request, None),
                    Err(reason) => {
                        let refusal = Reply::Error {
                            code: ErrorCode::Limited,
                            reason,
                        };
                        codec::encode_reply(req_id, &refusal)
                    }
                }
            }
            Ok((req_id, request)) => {
                debug!(peer = %transport::hex(route), ?request, "request");
                command = request.name();
                self.handle(req_id, request, envelope.peer_key.as_deref())
            }
            Err(DecodeError {
                req_id,
                code,
                reason,
            }) => {
                warn!(peer = %transport::hex(route), %code, %reason, "bad request");
                codec::encode_reply(req_id, &Reply::Error { code, reason })
            }
        };
        self.metrics.answered(command, &reply);
        match self
            .router
            .send_multipart([route.as_slice(), reply.as_slice()], zmq::DONTWAIT)
        {
            Ok(()) => self.backlogs.sent(route, reply.len()),
            Err(err) => debug!(peer = %transport::hex(route), %err, "reply not sent"),
        }
    }

    /// Stops counting the unread answers of peers whose connections are gone.
    fn forget_gone_peers(&mut self) {
        self.backlogs.forget_gone(&mut self.router);
    }

    /// With security: may the peer holding `peer` register (or unregister) `address`
    /// announcing `key`?
    fn admit(&self, peer: Option<&str>, address: &str, key: Option<&str>) -> Result<(), String> {
        let Some(security) = &self.security else {
            return Ok(());
        };
        let peer = peer.ok_or("this message server requires CURVE")?;
        if !security.allow_servers.is_empty() && !security.allow_servers.iter().any(|k| k == peer) {
            return Err(format!("this message server admits only allowed group servers; ask its operator to allow key {peer}"));
        }
        if key.is_some_and(|k| k != peer) {
            return Err("a group server must announce its own key".into());
        }
        // UNREGISTER: only the owner of the address (or an operator) may take it down.
        match (key, self.owners.owner(Kind::Address, address)) {
            (None, Some(owner)) if owner != peer && !self.operators.iter().any(|k| k == peer) => {
                Err(format!("{address} is registered by another key"))
            }
            _ => Ok(()),
        }
    }

    /// May `key` list `groups` at `address`? Open: a name belongs to the live group server
    /// listing it, and another address is refused unless `replace`. Secure: names and
    /// addresses belong to the key that first registered them ([`Owners`]); only an operator's
    /// `replace` moves them. A taken-over name leaves its former holder's entry.
    fn claim(
        &mut self,
        peer: Option<&str>,
        address: &str,
        groups: &[String],
        key: &str,
        replace: bool,
    ) -> Result<(), (ErrorCode, String)> {
        if self.registry.is_refresh(address, groups, key) {
            return Ok(());
        }
        if self.security.is_none() {
            if !replace {
                if let Some((g, holder)) = groups
                    .iter()
                    .find_map(|g| Some((g, self.registry.holder(g, address)?)))
                {
                    return Err((
                        ErrorCode::Unauthorized,
                        format!(
                            "group '{g}' is already hosted by the group server at {holder}; stop \
                             that one first, or start this one with --replace to take it over"
                        ),
                    ));
                }
            }
        } else {
            let operator = peer.is_some_and(|p| self.operators.iter().any(|k| k == p));
            if replace && !operator {
                return Err((
                    ErrorCode::Unauthorized,
                    format!(
                        "only an operator key may --replace; start the message server with \
                         --operator {key} to allow this group server to"
                    ),
                ));
            }
            let registry = &self.registry;
            let claim =
                self.owners
                    .claim(key, address, groups, replace, |kind, value| match kind {
                        Kind::Address => registry.key_of(value) == Some(key),
                        Kind::Name => registry.lists_name(key, value),
                    })?;
            self.owners.bind(claim).map_err(|err| {
                tracing::error!(%err, "cannot store a binding");
                (
                    ErrorCode::Internal,
                    format!("cannot store the binding: {err}"),
                )
            })?;
        }
        if replace {
            for g in groups {
                self.registry.release(g, address);
            }
        }
        Ok(())
    }

    fn handle(&mut self, req_id: u32, request: Request, peer: Option<&str>) -> Vec<u8> {
        let now = Instant::now();
        let reply = match request {
            Request::Register {
                address,
                ttl_ms,
                mut groups,
                key,
                replace,
            } => match check_registration(&address, &groups, &key) {
                Ok(address) => match self.admit(peer, &address, Some(&key)) {
                    Ok(()) => {
                        groups.sort();
                        groups.dedup();
                        let ttl = Duration::from_millis(u64::from(ttl_ms)).min(MAX_TTL);
                        let registered = self
                            .claim(peer, &address, &groups, &key, replace)
                            .and_then(|()| {
                                self.registry
                                    .register(&address, groups, &key, ttl, now)
                                    .map_err(|reason| (ErrorCode::Limited, reason))
                            });
                        match registered {
                            Ok(()) => Reply::Ok,
                            Err((code, reason)) => {
                                warn!(%address, %code, %reason, "registration refused");
                                Reply::Error { code, reason }
                            }
                        }
                    }
                    Err(reason) => {
                        let code = ErrorCode::Unauthorized;
                        warn!(%address, %code, %reason, "registration refused");
                        Reply::Error { code, reason }
                    }
                },
                Err(reason) => Reply::Error {
                    code: ErrorCode::BadRequest,
                    reason,
                },
            },
            Request::Unregister { address } => match self.admit(peer, &address, None) {
                Ok(()) => {
                    self.registry.unregister(&address);
                    Reply::Ok
                }
                Err(reason) => Reply::Error {
                    code: ErrorCode::Unauthorized,
                    reason,
                },
            },
            Request::Hello { name } => match protocol::check_user_name(&name) {
                Ok(()) => {
                    self.registry.hello(&name, now);
                    Reply::Ok
                }
                Err(reason) => Reply::Error {
                    code: ErrorCode::BadRequest,
                    reason,
                },
            },
            Request::List => return self.list_reply(req_id),
            Request::Key => Reply::Key(
                self.security
                    .as_ref()
                    .map(|s| s.keys.public.clone())
                    .unwrap_or_default(),
            ),
            Request::Ping => Reply::Pong {
                epoch: 0,
                groups: vec![],
            },
            Request::Status => self.status(),
            Request::Dm { user, peer } => match protocol::conversation_name(&user, &peer) {
                Ok(name) => match self.registry.place(&name) {
                    Some(entry) => Reply::Groups(vec![entry]),
                    None => Reply::Error {
                        code: ErrorCode::UnknownGroup,
                        reason: "no group server is registered to hold the conversation".into(),
                    },
                },
                Err(reason) => Reply::Error {
                    code: ErrorCode::BadRequest,
                    reason,
                },
            },
            other => Reply::Error {
                code: ErrorCode::BadRequest,
                reason: format!(
                    "{} is a group server request; this is a message server",
                    other.name()
                ),
            },
        };
        codec::encode_reply(req_id, &reply)
    }

    /// The GROUPS reply, rebuilt only when the registry changed.
    fn list_reply(&mut self, req_id: u32) -> Vec<u8> {
        let version = self.registry.version();
        if self.list_cache.as_ref().map(|(v, _)| *v) != Some(version) {
            let frame = codec::encode_reply(0, &Reply::Groups(self.registry.list()));
            self.list_cache = Some((version, frame));
        }
        let mut frame = self
            .list_cache
            .as_ref()
            .expect("bug: cache just filled")
            .1
            .clone();
        // The request id sits right after the 5-byte header.
        frame[5..9].copy_from_slice(&req_id.to_be_bytes());
        frame
    }
}

/// Checks a REGISTER and returns the address as it will be listed.
fn check_registration(address: &str, groups: &[String], key: &str) -> Result<String, String> {
    let address = transport::connectable(address).map_err(|e| e.to_string())?;
    protocol::check_key(key)?;
    if groups.len() > protocol::MAX_GROUPS_PER_SERVER {
        return Err(format!(
            "at most {} groups per group server",
            protocol::MAX_GROUPS_PER_SERVER
        ));
    }
    groups
        .iter()
        .try_for_each(|g| protocol::check_group_or_conversation(g))?;
    Ok(address)
}
