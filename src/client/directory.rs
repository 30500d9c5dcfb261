//! A session's message servers: failing over between them, and turning what a user typed
//! into a group ([`Session::resolve`]). The keys they are trusted by are `trust.rs`'.

use super::session::{expect_ok, GroupRef, Session};
use super::trust::Trust;
use super::{unexpected, Conn, Timeouts};
use std::time::{Duration, Instant};

use crate::protocol::{self, ErrorCode, GroupEntry, Reply, Request};
use crate::{errinput, transport, Error, Result};

/// The message servers a session may ask, and the connection to the one it asks now.
pub(super) struct Directories {
    /// Directory endpoints, tried in order; the one that answered last goes first.
    endpoints: Vec<String>,
    conn: Option<Conn>,
}

impl Directories {
    /// Message servers at `endpoints`, not connected yet.
    pub(super) fn new(endpoints: Vec<String>) -> Directories {
        Directories {
            endpoints,
            conn: None,
        }
    }

    /// Their addresses (`HOST:PORT`), the one in use first.
    pub(super) fn addresses(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|d| transport::address(d))
            .collect()
    }

    /// Asks the directories in turn until one answers.
    ///
    /// # Errors
    /// None answering (explained by a changed key where there is one), or the key check.
    pub(super) fn request(
        &mut self,
        ctx: &zmq::Context,
        timeouts: Timeouts,
        trust: &mut Trust,
        request: &Request,
    ) -> Result<Reply> {
        // With several directories, one try each per round, moving on at the first silence;
        // the rounds add up to the usual number of tries for each.
        let count = self.endpoints.len();
        let per_conn = if count > 1 {
            Timeouts {
                tries: 1,
                ..timeouts
            }
        } else {
            timeouts
        };
        let attempts = if count > 1 {
            count * timeouts.tries as usize
        } else {
            count
        };
        let mut last_err = None;
        for _ in 0..attempts {
            if self.conn.is_none() {
                let endpoint = self.endpoints[0].clone();
                let address = transport::address(&endpoint);
                let curve = trust.curve_for(ctx, &address, true, timeouts)?;
                let conn = Conn::connect_with(ctx, &endpoint, "message server", per_conn, curve)?;
                self.conn = Some(conn);
            }
            let conn = self.conn.as_mut().expect("bug: directory just set");
            match conn.request(request) {
                Err(err @ Error::Timeout(_)) => {
                    tracing::debug!(%err, "message server did not answer; trying the next");
                    last_err = Some(err);
                    self.conn = None;
                    self.endpoints.rotate_left(1);
                }
                other => return other,
            }
        }
        match last_err {
            Some(err) => {
                let address = transport::address(&self.endpoints[0]);
                Err(trust.explain_silence(ctx, &address, timeouts, err))
            }
            None => Err(errinput!("no message server address given")),
        }
    }
}

impl Session {
    /// The message servers' addresses (`HOST:PORT`), the one in use first.
    pub fn directories(&self) -> Vec<String> {
        self.directories.addresses()
    }

    fn directory_request(&mut self, request: &Request) -> Result<Reply> {
        self.directories
            .request(&self.ctx, self.timeouts, &mut self.trust, request)
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
                self.trust.remember_listed(&groups);
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

    /// Where the conversation (direct messages) with `peer` lives, opened: the message
    /// server names its group server (DM), and a JOIN there creates it if it is new (with
    /// `peer` a member too) and subscribes this session to it. In cluster mode the pool may
    /// hand a new conversation to another of its servers: then the message server is asked
    /// again, for a few seconds.
    ///
    /// # Errors
    /// A name that is not a user's (or this user's own), no group server registered, or the
    /// group server's refusal.
    pub fn conversation(&mut self, peer: &str) -> Result<GroupRef> {
        protocol::conversation_name(&self.name, peer).map_err(Error::Input)?;
        let request = Request::Dm {
            user: self.name.clone(),
            peer: peer.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let entry = match self.directory_request(&request)? {
                Reply::Groups(mut one) if one.len() == 1 => one.remove(0),
                Reply::Error { code, reason } => return Err(Error::Rejected { code, reason }),
                other => return Err(unexpected(other, "GROUPS")),
            };
            self.trust.remember_listed(std::slice::from_ref(&entry));
            let group = GroupRef {
                name: entry.name,
                address: entry.address,
            };
            match self.join(&group) {
                Ok(_) => return Ok(group),
                Err(Error::Rejected {
                    code: ErrorCode::Unavailable,
                    ..
                }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Turns what a user typed into a group: `@USER` (the conversation with USER, opened as
    /// [`Session::conversation`] does), `NAME@HOST:PORT` (a conversation's name too), a group server's `HOST:PORT` (when it
    /// hosts exactly one group), or a name the message server knows.
    ///
    /// # Errors
    /// [`Error::Input`] naming what is wrong: unknown, ambiguous, unreachable.
    pub fn resolve(&mut self, spec: &str) -> Result<GroupRef> {
        let spec = spec.trim();
        if let Some(peer) = spec.strip_prefix('@') {
            // `@alice@bob@HOST:PORT`: a conversation named where it lives, as any group.
            if let Some((name, address)) = spec
                .rsplit_once('@')
                .filter(|(name, _)| protocol::conversation_users(name).is_some())
            {
                let address = transport::address(&transport::endpoint(address)?);
                return Ok(GroupRef {
                    name: name.to_string(),
                    address,
                });
            }
            return self.conversation(peer);
        }
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
            [one] => {
                let group = GroupRef {
                    name: one.name.clone(),
                    address: one.address.clone(),
                };
                self.by_name.insert(group.clone());
                Ok(group)
            }
            [] => {
                let mut names: Vec<&str> = all.iter().map(|g| g.name.as_str()).collect();
                names.dedup();
                let known = if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                };
                Err(Error::NotFound(format!(
                    "unknown group '{spec}' (the message server lists: {known})"
                )))
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
}
