//! The blocking client library: what `zms user`, the one-shot commands, the tests and the
//! benchmarks use to talk to servers. Nothing here prints.
//!
//! [`Conn`] is one DEALER to one server with request/reply matching, timeouts and Lazy Pirate
//! retries (zguide ch. 4): on a timeout the socket is thrown away and a new one tries again, so
//! a stale request cannot answer a new one. [`Session`] is a user across many groups on many
//! group servers, with live delivery and gap repair. [`Pipeline`] keeps many requests in flight
//! on one connection, for a sender with many messages at hand.

mod admin;
mod chat;
mod directory;
mod follow;
mod history;
mod pipeline;
mod sending;
mod sequencer;
mod session;
mod trust;

pub use chat::ReadState;
pub use pipeline::Pipeline;
pub use sequencer::{Gap, Sequencer, Verdict};
pub use session::{Delivery, GroupRef, Session, SessionEvent};
pub use trust::ClientSecurity;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::keys::KeyPair;
use crate::protocol::codec::{self, Incoming};
use crate::protocol::{Event, Reply, Request};
use crate::{transport, Error, Result};

/// How long to wait for one answer, and how many times to ask.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub request: Duration,
    pub tries: u32,
}

impl Default for Timeouts {
    /// 2 s a try, 3 tries: a dead server is reported within about 6 s.
    fn default() -> Timeouts {
        Timeouts {
            request: Duration::from_secs(2),
            tries: 3,
        }
    }
}

/// One DEALER connection to a server.
pub struct Conn {
    ctx: zmq::Context,
    endpoint: String,
    socket: zmq::Socket,
    next_req: u32,
    timeouts: Timeouts,
    /// Events that arrived while a reply was awaited, in order.
    inbox: VecDeque<Event>,
    /// Replies to requests sent without waiting (PING), by request id.
    unmatched: VecDeque<(u32, Reply)>,
    /// What the peer is, for messages: "message server" or "group server".
    role: &'static str,
    /// Our keys and the server's, when the connection uses CURVE (kept for reconnects).
    curve: Option<Curve>,
}

/// The keys of a CURVE connection.
#[derive(Debug, Clone)]
pub struct Curve {
    /// This client's key pair.
    pub keys: KeyPair,
    /// The server's public key (Z85).
    pub server_key: String,
}

impl Conn {
    /// Connects (lazily: libzmq connects in the background) to `endpoint`.
    ///
    /// # Errors
    /// A libzmq failure, e.g. a malformed endpoint.
    pub fn connect(
        ctx: &zmq::Context,
        endpoint: &str,
        role: &'static str,
        timeouts: Timeouts,
    ) -> Result<Conn> {
        Self::connect_with(ctx, endpoint, role, timeouts, None)
    }

    /// Connects, with CURVE when `curve` is given.
    ///
    /// # Errors
    /// A libzmq failure or a malformed key.
    pub fn connect_with(
        ctx: &zmq::Context,
        endpoint: &str,
        role: &'static str,
        timeouts: Timeouts,
        curve: Option<Curve>,
    ) -> Result<Conn> {
        let socket = Self::dealer(ctx, endpoint, timeouts, curve.as_ref())?;
        Ok(Conn {
            ctx: ctx.clone(),
            endpoint: endpoint.to_string(),
            socket,
            next_req: 0,
            timeouts,
            inbox: VecDeque::new(),
            unmatched: VecDeque::new(),
            role,
            curve,
        })
    }

    fn dealer(
        ctx: &zmq::Context,
        endpoint: &str,
        timeouts: Timeouts,
        curve: Option<&Curve>,
    ) -> Result<zmq::Socket> {
        let socket = transport::socket(ctx, zmq::DEALER)?;
        if let Some(curve) = curve {
            transport::curve_client(&socket, &curve.keys, &curve.server_key)?;
        }
        // Queue only on a live connection, and give up a send after one request timeout:
        // a server that is down is reported, not silently queued for.
        socket.set_immediate(true)?;
        socket.set_sndtimeo(timeouts.request.as_millis() as i32)?;
        socket.set_rcvhwm(100_000)?;
        socket.set_reconnect_ivl_max(1000)?;
        socket
            .connect(endpoint)
            .map_err(|e| crate::errinput!("cannot connect to {endpoint}: {e}"))?;
        Ok(socket)
    }

    /// The server's `HOST:PORT`.
    pub fn address(&self) -> String {
        transport::address(&self.endpoint)
    }

    /// The socket, for polling.
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// Replaces the socket with a new one (the old one's queue is dropped).
    ///
    /// # Errors
    /// A libzmq failure.
    pub fn reconnect(&mut self) -> Result<()> {
        self.socket = Self::dealer(
            &self.ctx,
            &self.endpoint,
            self.timeouts,
            self.curve.as_ref(),
        )?;
        self.unmatched.clear();
        Ok(())
    }

    /// Sends `request` and waits for its reply, retrying with a new socket on timeout.
    /// Events that arrive meanwhile are kept for [`Conn::take_events`].
    ///
    /// # Errors
    /// [`Error::Rejected`] for an ERROR reply, [`Error::Timeout`] when no try was answered,
    /// [`Error::Protocol`] for an undecodable reply.
    pub fn request(&mut self, request: &Request) -> Result<Reply> {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        let req_id = self.next_req;
        let frame = codec::encode_request(req_id, request);
        for attempt in 1..=self.timeouts.tries {
            if attempt > 1 {
                tracing::debug!(server = %self.address(), attempt, "retrying");
                self.reconnect()?;
            }
            match self.socket.send(frame.as_slice(), 0) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => continue,
                Err(e) => return Err(e.into()),
            }
            if let Some(reply) = self.await_reply(req_id)? {
                return Ok(reply);
            }
        }
        // A CURVE handshake that fails (wrong key, or one side without CURVE) looks like
        // silence from here; say what could be wrong.
        let hint = match &self.curve {
            Some(_) => "is it running, and is its key the one pinned or given?",
            None => "is it running? (if it runs --secure, connect with --secure)",
        };
        Err(Error::Timeout(format!(
            "no answer from the {} at {} (tried {} times); {hint}",
            self.role,
            self.address(),
            self.timeouts.tries
        )))
    }

    /// Sends a request without waiting; its reply will be among [`Conn::take_unmatched`].
    /// Returns the request id, or `None` when the server is not connected.
    ///
    /// # Errors
    /// A libzmq failure other than "not connected".
    pub fn send_nowait(&mut self, request: &Request) -> Result<Option<u32>> {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        match self
            .socket
            .send(codec::encode_request(self.next_req, request), zmq::DONTWAIT)
        {
            Ok(()) => Ok(Some(self.next_req)),
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to one request timeout for the reply to `req_id` (one try of
    /// [`Conn::request`], or a request sent with [`Conn::send_nowait`]), keeping whatever else
    /// arrives. `None` when it does not come: a caller of `send_nowait` falls back to
    /// [`Conn::request`], which retries.
    ///
    /// # Errors
    /// [`Error::Rejected`] for an ERROR reply, a libzmq failure or an undecodable frame.
    pub fn await_reply(&mut self, req_id: u32) -> Result<Option<Reply>> {
        let deadline = Instant::now() + self.timeouts.request;
        while let Some(remaining) = deadline.checked_duration_since(Instant::now()) {
            let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
            if transport::poll(&mut items, remaining)? == 0 {
                break;
            }
            loop {
                match self.receive(Some(req_id))? {
                    Recv::Wanted(Reply::Error { code, reason }) => {
                        return Err(Error::Rejected { code, reason })
                    }
                    Recv::Wanted(reply) => return Ok(Some(reply)),
                    Recv::Kept => {}
                    Recv::Empty => break,
                }
            }
        }
        Ok(None)
    }

    /// Reads everything waiting on the socket without blocking.
    ///
    /// # Errors
    /// A libzmq failure or an undecodable frame.
    pub fn drain(&mut self) -> Result<()> {
        while !matches!(self.receive(None)?, Recv::Empty) {}
        Ok(())
    }

    /// Receives one frame if there is one: returns the reply to `want`, keeps anything else.
    fn receive(&mut self, want: Option<u32>) -> Result<Recv> {
        let frame = match self.socket.recv_bytes(zmq::DONTWAIT) {
            Ok(frame) => frame,
            Err(zmq::Error::EAGAIN) => return Ok(Recv::Empty),
            Err(e) => return Err(e.into()),
        };
        match codec::decode_incoming(&frame) {
            Ok(Incoming::Reply(id, reply)) if Some(id) == want => return Ok(Recv::Wanted(reply)),
            // Request id 0: the server could not read our request (e.g. another protocol
            // version); that is the answer to whatever we are waiting for.
            Ok(Incoming::Reply(0, reply @ Reply::Error { .. })) if want.is_some() => {
                return Ok(Recv::Wanted(reply))
            }
            Ok(Incoming::Reply(id, reply)) => self.unmatched.push_back((id, reply)),
            Ok(Incoming::Event(event)) => self.inbox.push_back(event),
            Ok(Incoming::UnknownEvent(command)) => {
                tracing::debug!(command, "ignoring an event this build does not know")
            }
            Err(e) => {
                return Err(Error::Protocol(format!(
                    "the {} at {} sent {}",
                    self.role,
                    self.address(),
                    e.reason
                )))
            }
        }
        Ok(Recv::Kept)
    }

    /// Takes the events received so far.
    pub fn take_events(&mut self) -> VecDeque<Event> {
        std::mem::take(&mut self.inbox)
    }

    /// Takes replies that matched no waiting request.
    pub fn take_unmatched(&mut self) -> VecDeque<(u32, Reply)> {
        std::mem::take(&mut self.unmatched)
    }
}

/// What one non-blocking receive found.
enum Recv {
    Empty,
    Wanted(Reply),
    Kept,
}

/// Tells a caller that a reply was not the kind asked for.
pub(crate) fn unexpected(reply: Reply, wanted: &str) -> Error {
    Error::Protocol(format!("expected {wanted}, got {reply:?}"))
}
