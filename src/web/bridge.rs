//! One browser's WebSocket bridged to one [`Session`] as the user it signed in as.
//!
//! A connection is one thread with one loop: read every whole frame the browser sent (the
//! socket is non-blocking), answer it through the session, write what the session pushed,
//! then wait for either (the session polls its group servers and the browser's socket at
//! once). Nothing a browser sends reaches a group server before [`wire::parse`] checked it,
//! and every request is made as the session's user: a browser has no way to name another.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::debug;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message as Frame, WebSocket};

use super::wire::{self, Command, GroupState, Reply};
use super::{Limits, Shared};
use crate::client::{GroupRef, Session, SessionEvent};
use crate::protocol::ErrorCode;
use crate::{Error, Result};

/// Messages caught up at most per group on a resume; an older gap is left for the browser to
/// page back through with `history`.
pub const CATCH_UP_MAX: u64 = 1000;

/// How often the gateway looks for conversations others opened with this user (the message
/// server lists them within a heartbeat of their creation), as the terminal client does.
const CONVERSATION_SCAN: Duration = Duration::from_secs(3);

/// The stream a browser speaks on: plain TCP, or TLS over it.
pub trait Stream: Read + Write {
    /// The TCP connection underneath.
    fn tcp(&self) -> &TcpStream;
    /// Says the stream ends (TLS's close_notify); the caller flushes.
    fn end(&mut self) {}
}

impl Stream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Stream for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    fn end(&mut self) {
        self.conn.send_close_notify();
    }
}

impl<S: Stream> Stream for super::http::Replay<S> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().tcp()
    }

    fn end(&mut self) {
        self.get_mut().end();
    }
}

/// The state of one browser connection.
pub struct Bridge<'a, S: Stream> {
    ws: WebSocket<S>,
    fd: RawFd,
    shared: &'a Shared,
    session: Option<Session>,
    /// The groups the message server listed at the last look: the only ones a browser may name.
    listed: Vec<GroupRef>,
    /// The groups (and conversations) this user is a member of, as far as this connection knows.
    member_of: HashSet<GroupRef>,
    /// When to look for new conversations next.
    scan_at: Instant,
    /// Frames a browser may still send now (a token bucket; below zero it is refused).
    tokens: f64,
    refill_at: Instant,
    /// Output the socket would not take yet: wait briefly, not a whole beat.
    blocked: bool,
}

/// How a connection ended, for the log.
enum End {
    Closed,
    Refused(CloseCode, String),
}

impl<'a, S: Stream> Bridge<'a, S> {
    /// Takes over an upgraded connection.
    pub fn new(ws: WebSocket<S>, fd: RawFd, shared: &'a Shared) -> Bridge<'a, S> {
        let limits = &shared.limits;
        Bridge {
            ws,
            fd,
            shared,
            session: None,
            listed: Vec::new(),
            member_of: HashSet::new(),
            scan_at: Instant::now() + CONVERSATION_SCAN,
            tokens: f64::from(limits.burst),
            refill_at: Instant::now(),
            blocked: false,
        }
    }

    /// Serves the browser until it goes, breaks a limit, or the gateway stops.
    ///
    /// # Errors
    /// A libzmq failure; a browser's misbehaviour ends its connection, not with an error.
    pub fn run(mut self, stopping: &AtomicBool) -> Result<()> {
        let limits = self.shared.limits.clone();
        let sign_in_by = Instant::now() + limits.sign_in;
        let secure = self.shared.secure.is_some();
        self.send(&Reply::Ready { secure }, None);
        let end = loop {
            if stopping.load(Ordering::Relaxed) {
                break End::Refused(CloseCode::Away, "the gateway is stopping".into());
            }
            match self.read_frames() {
                Ok(None) => {}
                Ok(Some(end)) => break end,
                Err(err) => {
                    debug!(%err, "browser connection failed");
                    return Ok(());
                }
            }
            if self.session.is_none() && Instant::now() > sign_in_by {
                let secs = limits.sign_in.as_secs();
                break End::Refused(CloseCode::Policy, format!("sign in within {secs} s"));
            }
            match self.ws.flush() {
                Ok(()) => self.blocked = false,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true
                }
                Err(err) => {
                    debug!(%err, "browser connection failed");
                    return Ok(());
                }
            }
            if self.session.is_some() && Instant::now() >= self.scan_at {
                self.scan_at = Instant::now() + CONVERSATION_SCAN;
                if let Err(err) = self.scan_conversations() {
                    debug!(%err, "cannot look for new conversations");
                }
            }
            let wait = match self.blocked {
                true => Duration::from_millis(20),
                false => Duration::from_millis(500),
            };
            match &mut self.session {
                Some(session) => {
                    if let Some(event) = session.next_event_or_fd(self.fd, wait)? {
                        self.on_event(event);
                    }
                }
                None => wait_readable(self.fd, wait),
            }
        };
        if let End::Refused(code, reason) = end {
            self.close(code, &reason);
        }
        Ok(())
    }

    /// Reads and answers every whole frame there is; `Some` when the connection is to end.
    fn read_frames(&mut self) -> std::result::Result<Option<End>, tungstenite::Error> {
        loop {
            match self.ws.read() {
                Ok(Frame::Text(text)) => {
                    if let Some(end) = self.take_token() {
                        return Ok(Some(end));
                    }
                    self.on_text(text.as_str());
                }
                Ok(Frame::Binary(_)) => self.error(None, "BAD_REQUEST", "frames are JSON text"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(None)
                }
                Err(tungstenite::Error::Capacity(e)) => {
                    let max = self.shared.limits.max_frame;
                    debug!(%e, "browser frame too large");
                    return Ok(Some(End::Refused(
                        CloseCode::Size,
                        format!("a frame holds at most {max} bytes"),
                    )));
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(Some(End::Closed))
                }
                Err(tungstenite::Error::WriteBufferFull(_)) => {
                    return Ok(Some(End::Refused(
                        CloseCode::Policy,
                        "too far behind; reconnect to catch up".into(),
                    )))
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Counts a frame against the rate; a browser far over it is cut off.
    fn take_token(&mut self) -> Option<End> {
        let limits = &self.shared.limits;
        let now = Instant::now();
        let refill = now.duration_since(self.refill_at).as_secs_f64() * f64::from(limits.rate);
        self.tokens = (self.tokens + refill).min(f64::from(limits.burst));
        self.refill_at = now;
        self.tokens -= 1.0;
        if self.tokens < -f64::from(limits.burst) {
            return Some(End::Refused(
                CloseCode::Policy,
                format!("more than {} frames a second", limits.rate),
            ));
        }
        None
    }

    fn on_text(&mut self, text: &str) {
        let parsed = wire::parse(text);
        let reference = parsed.reference.as_ref();
        if self.tokens < 0.0 {
            let rate = self.shared.limits.rate;
            return self.error(
                reference,
                "LIMITED",
                &format!("at most {rate} frames a second; this one was dropped"),
            );
        }
        let command = match parsed.command {
            Ok(c) => c,
            Err(refusal) => return self.error(reference, refusal.code, &refusal.message),
        };
        match command {
            Command::Ping => self.send(&Reply::Pong, reference),
            Command::Hello { user, key, last } => match &self.session {
                Some(s) => {
                    let message = format!("already signed in as {}", s.name());
                    self.error(reference, "BAD_REQUEST", &message)
                }
                None => {
                    if let Err(err) = self.sign_in(&user, key.as_deref(), &last, reference) {
                        self.session = None;
                        self.fail(reference, &err);
                    }
                }
            },
            _ if self.session.is_none() => {
                self.error(reference, "NOT_SIGNED_IN", "send hello first")
            }
            command => {
                if let Err(err) = self.act(command, reference) {
                    self.fail(reference, &err);
                }
            }
        }
    }

    /// Makes the session, says welcome, lists the groups (subscribing to those the user is
    /// in) and catches up each one from the browser's last seq.
    fn sign_in(
        &mut self,
        user: &str,
        key: Option<&str>,
        last: &BTreeMap<String, u64>,
        reference: Option<&Value>,
    ) -> Result<()> {
        let session = self.shared.session_for(user, key)?;
        self.session = Some(session);
        self.send(
            &Reply::Welcome {
                user,
                secure: self.shared.secure.is_some(),
            },
            reference,
        );
        let groups = self.groups()?;
        self.send(&Reply::Groups(groups.clone()), None);
        for state in groups.iter().filter(|g| g.member) {
            let Some(&from) = last.get(&wire::group_id(&state.group)) else {
                continue;
            };
            if from < state.last_seq {
                self.catch_up(&state.group, from, state.last_seq)?;
            }
        }
        Ok(())
    }

    fn session(&mut self) -> Result<&mut Session> {
        self.session
            .as_mut()
            .ok_or_else(|| Error::Input("send hello first".into()))
    }

    /// Every listed group and this user's conversations, subscribing to those this user is
    /// a member of. Other users' conversations are not shown.
    fn groups(&mut self) -> Result<Vec<GroupState>> {
        self.refresh_listed()?;
        let me = self.session()?.name().to_string();
        let mut states = Vec::new();
        for group in self.listed.clone() {
            let peer = wire::peer_of(&group.name, &me);
            if group.name.starts_with('@') && peer.is_none() {
                continue;
            }
            let (member, last_seq) = match self.session()?.subscribe(&group) {
                Ok(last) => (true, last),
                Err(_) => (false, 0),
            };
            match member {
                true => self.member_of.insert(group.clone()),
                false => self.member_of.remove(&group),
            };
            states.push(GroupState {
                group,
                member,
                last_seq,
                peer,
            });
        }
        Ok(states)
    }

    /// Subscribes to conversations with this user that others opened since the last look,
    /// telling the browser of each as `joined`.
    fn scan_conversations(&mut self) -> Result<()> {
        self.refresh_listed()?;
        let me = self.session()?.name().to_string();
        let new: Vec<GroupRef> = self
            .listed
            .iter()
            .filter(|g| wire::peer_of(&g.name, &me).is_some() && !self.member_of.contains(g))
            .cloned()
            .collect();
        for group in new {
            if let Ok(last_seq) = self.session()?.subscribe(&group) {
                self.member_of.insert(group.clone());
                let peer = wire::peer_of(&group.name, &me);
                let joined = Reply::Joined {
                    group: &group,
                    last_seq,
                    peer: peer.as_deref(),
                };
                self.send(&joined, None);
            }
        }
        Ok(())
    }

    fn refresh_listed(&mut self) -> Result<()> {
        let entries = self.session()?.list_groups()?;
        self.listed = entries
            .into_iter()
            .map(|e| GroupRef {
                name: e.name,
                address: e.address,
            })
            .collect();
        Ok(())
    }

    /// The listed group a browser means: `name@HOST:PORT` exactly, or a name listed once.
    /// Only listed groups: a browser cannot make the gateway connect anywhere else.
    fn pick(&mut self, spec: &str) -> Result<GroupRef> {
        if let Some(found) = pick(&self.listed, spec) {
            return Ok(found);
        }
        self.refresh_listed()?;
        pick(&self.listed, spec).ok_or_else(|| Error::NotFound(format!("unknown group '{spec}'")))
    }

    /// Sends messages after `from` up to `to`, at most [`CATCH_UP_MAX`] of the newest.
    fn catch_up(&mut self, group: &GroupRef, from: u64, to: u64) -> Result<()> {
        let mut after = from.max(to.saturating_sub(CATCH_UP_MAX));
        while after < to {
            let limit = (to - after).min(u64::from(crate::protocol::HISTORY_PAGE_MAX)) as u32;
            let (page, _) = self.session()?.history_page(group, after, 0, limit)?;
            let Some(last) = page.last().map(|m| m.seq) else {
                break;
            };
            for message in page.iter().filter(|m| m.seq <= to) {
                self.send(&Reply::Message { group, message }, None);
            }
            after = last;
        }
        Ok(())
    }

    fn act(&mut self, command: Command, reference: Option<&Value>) -> Result<()> {
        match command {
            Command::Groups => {
                let groups = self.groups()?;
                self.send(&Reply::Groups(groups), reference);
            }
            Command::Join { group } => {
                let group = self.pick(&group)?;
                let last_seq = self.session()?.join(&group)?;
                self.member_of.insert(group.clone());
                let peer = wire::peer_of(&group.name, self.session()?.name());
                let joined = Reply::Joined {
                    group: &group,
                    last_seq,
                    peer: peer.as_deref(),
                };
                self.send(&joined, reference);
            }
            Command::Dm { peer } => {
                let group = self.session()?.conversation(&peer)?;
                let last_seq = self.session()?.subscribe(&group)?;
                if !self.listed.contains(&group) {
                    self.listed.push(group.clone());
                }
                self.member_of.insert(group.clone());
                let joined = Reply::Joined {
                    group: &group,
                    last_seq,
                    peer: Some(&peer),
                };
                self.send(&joined, reference);
            }
            Command::Leave { group } => {
                let group = self.pick(&group)?;
                self.session()?.leave(&group)?;
                self.member_of.remove(&group);
                self.send(&Reply::Left { group: &group }, reference);
            }
            Command::Send { group, cid, text } => {
                let spec = group;
                let group = match self.pick(&spec) {
                    Ok(g) => g,
                    Err(err @ Error::NotFound(_)) => return Err(err),
                    Err(err) => return self.unsent(&spec, &cid, &err, reference),
                };
                match self.session()?.send_with_id(&group, &cid, &text) {
                    Ok((seq, ts)) => {
                        let ack = Reply::Ack {
                            group: &group,
                            cid: &cid,
                            seq,
                            ts,
                        };
                        self.send(&ack, reference);
                    }
                    Err(err @ Error::Rejected { .. }) => return Err(err),
                    // No answer: it may be stored; the browser keeps it to send again.
                    Err(err) => return self.unsent(&wire::group_id(&group), &cid, &err, reference),
                }
            }
            Command::History {
                group,
                before,
                limit,
            } => {
                let group = self.pick(&group)?;
                let session = self.session()?;
                let before = match before {
                    0 => session.history_page(&group, u64::MAX - 1, 0, 0)?.1 + 1,
                    b => b,
                };
                let after = before.saturating_sub(1 + u64::from(limit));
                let wanted = (before - 1 - after) as u32;
                let (messages, _) = match wanted {
                    0 => (Vec::new(), 0),
                    n => session.history_page(&group, after, 0, n)?,
                };
                let messages: Vec<_> = messages.into_iter().filter(|m| m.seq < before).collect();
                let start = after == 0 || (messages.len() as u32) < wanted;
                let reply = Reply::History {
                    group: &group,
                    before,
                    messages: &messages,
                    start,
                };
                self.send(&reply, reference);
            }
            Command::Members { group } => {
                let group = self.pick(&group)?;
                let members = self.session()?.members(&group)?;
                let reply = Reply::Members {
                    group: &group,
                    members: &members,
                };
                self.send(&reply, reference);
            }
            Command::Edit { group, seq, text } => {
                let group = self.pick(&group)?;
                let change = self.session()?.edit(&group, seq, &text)?;
                let changed = Reply::Changed {
                    group: &group,
                    seq,
                    change,
                };
                self.send(&changed, reference);
            }
            Command::Delete { group, seq } => {
                let group = self.pick(&group)?;
                let change = self.session()?.delete(&group, seq)?;
                let changed = Reply::Changed {
                    group: &group,
                    seq,
                    change,
                };
                self.send(&changed, reference);
            }
            Command::Search {
                group,
                query,
                limit,
            } => self.search(group.as_deref(), &query, limit, reference)?,
            Command::Hello { .. } | Command::Ping => unreachable!("bug: answered before"),
        }
        Ok(())
    }

    /// Searches one group, or every group this user is a member of. Over all groups, one
    /// whose server does not answer is listed in `missed` and the others are still searched;
    /// one that says this user is no member after all is passed over.
    fn search(
        &mut self,
        group: Option<&str>,
        query: &str,
        limit: u32,
        reference: Option<&Value>,
    ) -> Result<()> {
        let mut hits = Vec::new();
        let mut missed = Vec::new();
        match group {
            Some(spec) => {
                let group = self.pick(spec)?;
                let found = self.session()?.search(&group, query, 0, limit)?;
                hits.extend(found.into_iter().map(|hit| (group.clone(), hit)));
            }
            None => {
                let mut groups: Vec<GroupRef> = self.member_of.iter().cloned().collect();
                groups.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
                for group in groups {
                    match self.session()?.search(&group, query, 0, limit) {
                        Ok(found) => hits.extend(found.into_iter().map(|hit| (group.clone(), hit))),
                        Err(Error::Rejected {
                            code: ErrorCode::NotMember | ErrorCode::UnknownGroup,
                            ..
                        }) => {}
                        Err(err) => {
                            debug!(%group, %err, "search not answered");
                            missed.push(group);
                        }
                    }
                }
            }
        }
        // Newest first over all groups, as `Session::search_all` orders them.
        hits.sort_by(|(ga, a), (gb, b)| (b.ts, &gb.name, b.seq).cmp(&(a.ts, &ga.name, a.seq)));
        hits.truncate(limit as usize);
        let found = Reply::Found {
            query,
            hits: &hits,
            missed: &missed,
        };
        self.send(&found, reference);
        Ok(())
    }

    fn unsent(
        &mut self,
        group: &str,
        cid: &str,
        err: &Error,
        reference: Option<&Value>,
    ) -> Result<()> {
        let message = err.to_string();
        self.send(
            &Reply::Unsent {
                group,
                cid,
                message: &message,
            },
            reference,
        );
        Ok(())
    }

    fn on_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Message(d) => self.send(
                &Reply::Message {
                    group: &d.group,
                    message: &d.message,
                },
                None,
            ),
            SessionEvent::Presence {
                group,
                user,
                joined,
            } => self.send(
                &Reply::Presence {
                    group: &group,
                    user: &user,
                    joined,
                },
                None,
            ),
            SessionEvent::Moved { from, to } => {
                if self.member_of.remove(&from) {
                    self.member_of.insert(to.clone());
                }
                self.listed.retain(|g| *g != from);
                if !self.listed.contains(&to) {
                    self.listed.push(to.clone());
                }
                self.send(
                    &Reply::Moved {
                        from: &from,
                        to: &to,
                    },
                    None,
                )
            }
            SessionEvent::MembershipEnded(group) => {
                self.member_of.remove(&group);
                self.send(&Reply::Removed { group: &group }, None)
            }
            SessionEvent::ServerLost(address) => self.send(
                &Reply::Server {
                    address: &address,
                    up: false,
                },
                None,
            ),
            SessionEvent::ServerBack(address) => self.send(
                &Reply::Server {
                    address: &address,
                    up: true,
                },
                None,
            ),
        }
    }

    /// An error frame for a failed command: the server's code, or the gateway's.
    fn fail(&mut self, reference: Option<&Value>, err: &Error) {
        let code = match err {
            Error::Rejected { code, .. } => code.name(),
            Error::Timeout(_) => "TIMEOUT",
            Error::NotFound(_) => "UNKNOWN_GROUP",
            Error::Input(_) => "BAD_REQUEST",
            _ => "INTERNAL",
        };
        let message = match err {
            Error::Rejected { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        self.error(reference, code, &message);
    }

    fn error(&mut self, reference: Option<&Value>, code: &str, message: &str) {
        self.send(&Reply::Error { code, message }, reference);
    }

    /// Queues a frame; the loop flushes. A browser that reads too slowly fills the write
    /// buffer and is cut off at the next read.
    fn send(&mut self, reply: &Reply, reference: Option<&Value>) {
        let text = reply.to_json(reference);
        match self.ws.write(Frame::text(text)) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => debug!(%err, "cannot queue a frame to a browser"),
        }
    }

    /// Sends a close frame, and reads what the browser still sends for a moment so the
    /// close arrives before the connection goes (unread input would turn it into a reset).
    fn close(mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        let tcp = self.ws.get_ref().tcp();
        let _ = tcp.set_nonblocking(false);
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = self.ws.close(Some(frame));
        let _ = self.ws.flush();
        self.ws.get_mut().end();
        let _ = self.ws.get_mut().flush();
        let mut tcp = self.ws.get_ref().tcp();
        let _ = tcp.shutdown(std::net::Shutdown::Write);
        let give_up = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 16 * 1024];
        while Instant::now() < give_up {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// The listed group `spec` names, if exactly one.
fn pick(listed: &[GroupRef], spec: &str) -> Option<GroupRef> {
    let mut found = listed
        .iter()
        .filter(|g| g.name == spec || wire::group_id(g) == spec);
    match (found.next(), found.next()) {
        (Some(one), None) => Some(one.clone()),
        _ => None,
    }
}

/// Waits up to `timeout` for `fd` to be readable.
fn wait_readable(fd: RawFd, timeout: Duration) {
    let mut items = [zmq::PollItem::from_fd(fd, zmq::POLLIN)];
    let _ = zmq::poll(&mut items, timeout.as_millis() as i64);
}

impl Limits {
    /// The tungstenite settings these limits ask for.
    pub fn websocket_config(&self) -> tungstenite::protocol::WebSocketConfig {
        tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(self.max_frame))
            .max_frame_size(Some(self.max_frame))
            .max_write_buffer_size(self.max_backlog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_names_only_listed_groups() {
        let listed = vec![
            GroupRef {
                name: "general".into(),
                address: "127.0.0.1:5556".into(),
            },
            GroupRef {
                name: "rust".into(),
                address: "127.0.0.1:5556".into(),
            },
            GroupRef {
                name: "rust".into(),
                address: "127.0.0.1:5557".into(),
            },
        ];
        assert_eq!(
            pick(&listed, "general").map(|g| g.address),
            Some("127.0.0.1:5556".into())
        );
        assert_eq!(pick(&listed, "rust"), None, "ambiguous");
        assert_eq!(
            pick(&listed, "rust@127.0.0.1:5557").map(|g| g.name),
            Some("rust".into())
        );
        assert_eq!(
            pick(&listed, "general@10.0.0.1:22"),
            None,
            "not where it is listed"
        );
    }
}
