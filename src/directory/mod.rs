//! The message server ("directory"): where group servers announce their groups and users
//! look them up.
//!
//! One ROUTER socket serves everyone. The table is soft state ([`registry`]): group servers
//! re-register every heartbeat, so a restarted directory is whole again within one heartbeat,
//! and a group server that stops announcing drops out when its TTL runs out. This module is the
//! poll loop and nothing else.

pub mod registry;

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::protocol::codec::{self, DecodeError};
use crate::protocol::{self, ErrorCode, Reply, Request};
use crate::shutdown::ServerHandle;
use crate::{transport, Result};
use registry::Registry;

/// Longest TTL a registration may ask for; a longer one is cut to this.
const MAX_TTL: Duration = Duration::from_secs(60);
/// Most requests handled per poll wake-up before checking the control pipe again.
const BATCH: usize = 1024;

/// A bound directory, ready to run.
pub struct DirectoryServer {
    router: zmq::Socket,
    endpoint: String,
    registry: Registry,
    /// The encoded GROUPS reply for the registry version it was built from (request id 0):
    /// LIST is the hot request and the table changes rarely.
    list_cache: Option<(u64, Vec<u8>)>,
}

impl DirectoryServer {
    /// Binds the directory's ROUTER to `endpoint` (`tcp://HOST:PORT`, port `*` for any).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn bind(ctx: &zmq::Context, endpoint: &str) -> Result<DirectoryServer> {
        let (router, endpoint) = transport::bind_router(ctx, endpoint, protocol::MAX_FRAME)?;
        Ok(DirectoryServer {
            router,
            endpoint,
            registry: Registry::new(),
            list_cache: None,
        })
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
        info!("serving");
        loop {
            let now = Instant::now();
            let wait = self
                .registry
                .next_expiry()
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(10), Duration::from_secs(1));
            let mut items = [
                control.as_poll_item(zmq::POLLIN),
                self.router.as_poll_item(zmq::POLLIN),
            ];
            transport::poll(&mut items, wait)?;
            if items[0].is_readable() {
                info!("stopping");
                return Ok(());
            }
            if items[1].is_readable() {
                for _ in 0..BATCH {
                    match self.router.recv_multipart(zmq::DONTWAIT) {
                        Ok(frames) => self.serve(frames),
                        Err(zmq::Error::EAGAIN) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            self.registry.expire(Instant::now());
        }
    }

    /// Answers one envelope `[route, frame]`.
    fn serve(&mut self, mut frames: Vec<Vec<u8>>) {
        let route = frames.remove(0);
        let reply = if frames.len() != 1 {
            warn!(peer = %transport::hex(&route), frames = frames.len(), "expected exactly one frame");
            codec::encode_reply(
                0,
                &Reply::Error {
                    code: ErrorCode::BadRequest,
                    reason: "a ZMS message is exactly one frame".into(),
                },
            )
        } else {
            match codec::decode_request(&frames[0]) {
                Ok((req_id, request)) => {
                    debug!(peer = %transport::hex(&route), ?request, "request");
                    self.handle(req_id, request)
                }
                Err(DecodeError {
                    req_id,
                    code,
                    reason,
                }) => {
                    warn!(peer = %transport::hex(&route), %code, %reason, "bad request");
                    codec::encode_reply(req_id, &Reply::Error { code, reason })
                }
            }
        };
        if let Err(err) = self
            .router
            .send_multipart([route.as_slice(), reply.as_slice()], zmq::DONTWAIT)
        {
            debug!(peer = %transport::hex(&route), %err, "reply not sent");
        }
    }

    fn handle(&mut self, req_id: u32, request: Request) -> Vec<u8> {
        let now = Instant::now();
        let reply = match request {
            Request::Register {
                address,
                ttl_ms,
                groups,
                key,
            } => match check_registration(&address, &groups, &key) {
                Ok(address) => {
                    let ttl = Duration::from_millis(u64::from(ttl_ms)).min(MAX_TTL);
                    self.registry.register(&address, groups, &key, ttl, now);
                    Reply::Ok
                }
                Err(reason) => Reply::Error {
                    code: ErrorCode::BadRequest,
                    reason,
                },
            },
            Request::Unregister { address } => {
                self.registry.unregister(&address);
                Reply::Ok
            }
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
            Request::Key => Reply::Key(String::new()),
            Request::Ping => Reply::Pong {
                epoch: 0,
                groups: vec![],
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
        .try_for_each(|g| protocol::check_group_name(g))?;
    Ok(address)
}
