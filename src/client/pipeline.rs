//! Many requests in flight on one connection, matched to their replies by request id.
//!
//! [`Conn::request`](super::Conn::request) waits for each reply before the next request, one
//! round trip each. The protocol lets a client do better: every reply carries its request's
//! id, so a client may send the next requests before the first is answered. A [`Pipeline`]
//! does that for a sender with many messages at hand (a file piped into `zms send`, a load
//! generator): it keeps up to a window of messages unacknowledged, hands the answers back in
//! the order the requests were sent, and on silence does what `Conn` does (Lazy Pirate: a new
//! socket, the same requests again under the same ids, at most `tries` times), so a message
//! is stored at most once whatever happens to the connection.
//!
//! ```no_run
//! use zms::client::{Pipeline, Timeouts};
//! use zms::protocol::{Outgoing, Reply};
//!
//! # fn main() -> zms::Result<()> {
//! let ctx = zmq::Context::new();
//! let mut pipeline = Pipeline::connect(&ctx, "127.0.0.1:5556", Timeouts::default())?
//!     .with_window(1000);
//! for i in 0..10_000 {
//!     let message = Outgoing { client_id: format!("alice-run1-{i}"), text: format!("line {i}") };
//!     // Waits only when 1,000 messages are unacknowledged.
//!     pipeline.send_messages("general", "alice", &[message])?;
//!     while let Some((_id, reply)) = pipeline.take_answer() {
//!         assert!(matches!(reply, Reply::Ack { .. }));
//!     }
//! }
//! while let Some((_id, reply)) = pipeline.next_answer()? {
//!     assert!(matches!(reply, Reply::Ack { .. }));
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::{Conn, Curve, GroupRef, Session, Timeouts};
use crate::protocol::codec::{self, Incoming};
use crate::protocol::{Outgoing, Reply, Request};
use crate::{transport, Error, Result};

/// One connection to a group server (or any ZMS server) with requests in flight.
pub struct Pipeline {
    ctx: zmq::Context,
    endpoint: String,
    timeouts: Timeouts,
    /// Our keys and the server's, kept for the new sockets of retries.
    curve: Option<Curve>,
    socket: zmq::Socket,
    /// Where frames are received, reused from one to the next.
    frame: zmq::Message,
    next_req: u32,
    /// Most messages unacknowledged at once (a request other than SEND or SENDS counts as one).
    window: usize,
    /// Requests sent and not yet handed to [`Pipeline::answers`], oldest first.
    in_flight: VecDeque<Sent>,
    /// Messages of the requests in `in_flight`.
    in_flight_messages: usize,
    /// Answers to requests other than the oldest, until the oldest is answered.
    early: HashMap<u32, Reply>,
    /// Answers in the order their requests were sent, not yet taken.
    answers: VecDeque<(u32, Reply)>,
    /// Tries made since the last answer (a silence of one request timeout is one try).
    tries: u32,
}

impl Session {
    /// A [`Pipeline`] to `group`'s server, with this session's keys and timeouts: for many
    /// sends in flight on a connection of their own.
    ///
    /// # Errors
    /// A bad address, or no key known for a server with security on.
    pub fn pipeline(&mut self, group: &GroupRef) -> Result<Pipeline> {
        let endpoint = transport::endpoint(&group.address)?;
        let curve = self.curve_for(&endpoint, false)?;
        Pipeline::connect_with(&self.ctx, &group.address, self.timeouts, curve)
    }
}

/// A request on its way: kept whole, to be sent again on a new socket.
struct Sent {
    id: u32,
    frame: Vec<u8>,
    messages: usize,
}

impl Pipeline {
    /// Connects (lazily: libzmq connects in the background) to the server at `address`
    /// (`HOST:PORT`), with a window of one message. A request is given up after
    /// `timeouts.tries` silences of `timeouts.request` each.
    ///
    /// # Errors
    /// A bad address or a libzmq failure.
    pub fn connect(ctx: &zmq::Context, address: &str, timeouts: Timeouts) -> Result<Pipeline> {
        Self::connect_with(ctx, address, timeouts, None)
    }

    /// Connects, with CURVE when `curve` is given (as [`Conn::connect_with`]).
    ///
    /// # Errors
    /// A bad address, a libzmq failure or a malformed key.
    pub fn connect_with(
        ctx: &zmq::Context,
        address: &str,
        timeouts: Timeouts,
        curve: Option<Curve>,
    ) -> Result<Pipeline> {
        let endpoint = transport::endpoint(address)?;
        let socket = Conn::dealer(ctx, &endpoint, timeouts, curve.as_ref())?;
        Ok(Pipeline {
            ctx: ctx.clone(),
            endpoint,
            timeouts,
            curve,
            socket,
            frame: zmq::Message::new(),
            next_req: 0,
            window: 1,
            in_flight: VecDeque::new(),
            in_flight_messages: 0,
            early: HashMap::new(),
            answers: VecDeque::new(),
            tries: 1,
        })
    }

    /// Keeps up to `messages` messages unacknowledged (at least one request is always let go).
    pub fn with_window(mut self, messages: usize) -> Pipeline {
        self.window = messages.max(1);
        self
    }

    /// The server's `HOST:PORT`.
    pub fn address(&self) -> String {
        transport::address(&self.endpoint)
    }

    /// The socket, for polling. Frames read from it directly are lost to the pipeline: read
    /// only from a connection with nothing in flight (a member reading its pushes).
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// Messages sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight_messages
    }

    /// Sends `messages` of `user` to `group`: one as a SEND, several as one SENDS (the caller
    /// keeps them within [`crate::protocol::MAX_BATCH`] and
    /// [`crate::protocol::MAX_BATCH_FRAME`]). Returns the request id.
    ///
    /// # Errors
    /// As [`Pipeline::send`].
    pub fn send_messages(&mut self, group: &str, user: &str, messages: &[Outgoing]) -> Result<u32> {
        let request = match messages {
            [one] => Request::Send {
                group: group.to_string(),
                user: user.to_string(),
                client_id: one.client_id.clone(),
                text: one.text.clone(),
            },
            many => Request::SendBatch {
                group: group.to_string(),
                user: user.to_string(),
                messages: many.to_vec(),
            },
        };
        self.send(&request)
    }

    /// Sends `request` once the window has room for it, reading answers meanwhile (they wait
    /// in [`Pipeline::take_answer`]); returns its request id.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the server stays silent (or unreachable) for every try;
    /// [`Error::Protocol`] for a frame that does not decode; a libzmq failure.
    pub fn send(&mut self, request: &Request) -> Result<u32> {
        let messages = match request {
            Request::SendBatch { messages, .. } => messages.len().max(1),
            _ => 1,
        };
        while !self.in_flight.is_empty() && self.in_flight_messages + messages > self.window {
            self.await_answer()?;
        }
        self.next_req = self.next_req.wrapping_add(1).max(1);
        let id = self.next_req;
        let frame = codec::encode_request(id, request);
        let sent = match self.socket.send(frame.as_slice(), 0) {
            Ok(()) => true,
            Err(zmq::Error::EAGAIN) => false,
            Err(e) => return Err(e.into()),
        };
        self.in_flight.push_back(Sent {
            id,
            frame,
            messages,
        });
        self.in_flight_messages += messages;
        if !sent {
            // Not connected within a request timeout: as a try without an answer.
            self.retry()?;
        }
        Ok(id)
    }

    /// Sends `request` without waiting and without tracking it: its answer, like any answer to
    /// an id the pipeline does not know, is skipped by the pipeline (a PING whose PONG the
    /// caller reads from [`Pipeline::socket`]). `false` when it could not leave at once.
    ///
    /// # Errors
    /// A libzmq failure other than "would block".
    pub fn send_nowait(&mut self, request: &Request) -> Result<bool> {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        match self
            .socket
            .send(codec::encode_request(self.next_req, request), zmq::DONTWAIT)
        {
            Ok(()) => Ok(true),
            Err(zmq::Error::EAGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The next answer already received, in the order the requests were sent; no waiting.
    pub fn take_answer(&mut self) -> Option<(u32, Reply)> {
        self.answers.pop_front()
    }

    /// Reads the answers that have arrived, without waiting (they free the window and wait in
    /// [`Pipeline::take_answer`]).
    ///
    /// # Errors
    /// As [`Pipeline::send`].
    pub fn poll(&mut self) -> Result<()> {
        while self.receive(Duration::ZERO)? {}
        Ok(())
    }

    /// The answer to the oldest request not yet answered (or one already received), waiting
    /// for it as [`Pipeline::send`] does; `None` when nothing is in flight. An ERROR reply is
    /// an answer like any other.
    ///
    /// # Errors
    /// As [`Pipeline::send`].
    pub fn next_answer(&mut self) -> Result<Option<(u32, Reply)>> {
        if self.answers.is_empty() && !self.in_flight.is_empty() {
            self.await_answer()?;
        }
        Ok(self.answers.pop_front())
    }

    /// Waits until every request in flight is answered; the answers wait in
    /// [`Pipeline::take_answer`].
    ///
    /// # Errors
    /// As [`Pipeline::send`].
    pub fn finish(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.await_answer()?;
        }
        Ok(())
    }

    /// Sends `request` and returns its reply, once every request before it is answered (their
    /// answers are dropped); an ERROR reply is [`Error::Rejected`].
    ///
    /// # Errors
    /// [`Error::Rejected`], or as [`Pipeline::send`].
    pub fn call(&mut self, request: &Request) -> Result<Reply> {
        let id = self.send(request)?;
        while let Some((got, reply)) = self.next_answer()? {
            if got == id {
                return match reply {
                    Reply::Error { code, reason } => Err(Error::Rejected { code, reason }),
                    reply => Ok(reply),
                };
            }
        }
        Err(Error::Protocol(format!(
            "bug: request #{id} to {} left the pipeline unanswered",
            self.address()
        )))
    }

    /// Waits until at least one more request is answered, trying again on silence.
    fn await_answer(&mut self) -> Result<()> {
        let answered = self.answers.len();
        loop {
            let deadline = Instant::now() + self.timeouts.request;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                self.receive(left)?;
                if self.answers.len() > answered {
                    return Ok(());
                }
            }
            self.retry()?;
        }
    }

    /// One silence more: a new socket and every request in flight sent again on it, in order
    /// and under the same ids; the error once the tries are used up.
    fn retry(&mut self) -> Result<()> {
        while self.tries < self.timeouts.tries {
            self.tries += 1;
            tracing::debug!(server = %self.address(), attempt = self.tries, "retrying");
            self.socket = Conn::dealer(
                &self.ctx,
                &self.endpoint,
                self.timeouts,
                self.curve.as_ref(),
            )?;
            let mut all_sent = true;
            for sent in &self.in_flight {
                match self.socket.send(sent.frame.as_slice(), 0) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => {
                        all_sent = false;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if all_sent {
                return Ok(());
            }
        }
        // As `Conn::request` says it: a CURVE handshake that fails looks like silence too.
        let hint = match &self.curve {
            Some(_) => "is it running, and is its key the one pinned or given?",
            None => "is it running? (if it runs --secure, connect with --secure)",
        };
        Err(Error::Timeout(format!(
            "no answer from the group server at {} (tried {} times); {hint}",
            self.address(),
            self.timeouts.tries
        )))
    }

    /// Receives one frame, waiting up to `wait`; `false` when none came. A reply to a request
    /// in flight is recorded; events and replies to unknown ids are skipped.
    fn receive(&mut self, wait: Duration) -> Result<bool> {
        // Wait in the receive itself (whole milliseconds, rounded up; none for a zero wait).
        let timeout_ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        self.socket.set_rcvtimeo(timeout_ms)?;
        match self.socket.recv(&mut self.frame, 0) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        // Pushed events are not for a sender: skipped without decoding their messages.
        if self.frame.len() > 4 && self.frame[4] >= 0xC0 {
            return Ok(true);
        }
        let (id, reply) = match codec::decode_incoming(&self.frame) {
            Ok(Incoming::Reply(id, reply)) => (id, reply),
            Ok(_) => return Ok(true),
            Err(e) => {
                return Err(Error::Protocol(format!(
                    "the server at {} sent {}",
                    self.address(),
                    e.reason
                )))
            }
        };
        self.answered(id, reply);
        Ok(true)
    }

    /// Records the reply to request `id`, and moves what is answered in order to `answers`.
    fn answered(&mut self, id: u32, reply: Reply) {
        let Some(oldest) = self.in_flight.front().map(|s| s.id) else {
            tracing::debug!(id, "a reply to no request in flight; skipped");
            return;
        };
        // Request id 0: the server could not read a request; the oldest is the one waited for.
        let id = match (id, &reply) {
            (0, Reply::Error { .. }) => oldest,
            _ => id,
        };
        if id != oldest {
            if self.in_flight.iter().any(|s| s.id == id) {
                self.early.insert(id, reply);
            } else {
                tracing::debug!(id, "a reply to no request in flight; skipped");
            }
            return;
        }
        self.tries = 1;
        self.pop_answered(reply);
        while let Some(next) = self.in_flight.front().map(|s| s.id) {
            match self.early.remove(&next) {
                Some(reply) => self.pop_answered(reply),
                None => break,
            }
        }
    }

    fn pop_answered(&mut self, reply: Reply) {
        if let Some(sent) = self.in_flight.pop_front() {
            self.in_flight_messages -= sent.messages;
            self.answers.push_back((sent.id, reply));
        }
    }
}
