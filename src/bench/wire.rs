//! zms clients built for load, speaking ZMS/1 on raw DEALERs through [`crate::protocol::codec`].
//!
//! [`crate::client::Session::send`] waits for each ACK, so it cannot pipeline; the protocol
//! matches replies to requests by id, so a client may keep many sends in flight. [`Pipeline`]
//! does that with a bounded window. [`Members`] are members' connections, many per thread,
//! counting deliveries by seq ([`Tally`]) and heartbeating as the protocol asks. Nothing here
//! is special to the bench except what it measures: it is ordinary client code.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::flow::Credit;
use super::payload;
use crate::protocol::codec::{self, cmd, Incoming};
use crate::protocol::{self, Outgoing, Reply, Request};
use crate::{transport, Error, Result};

/// Most messages a client DEALER queues inbound, as `client::Conn` sets it.
const CLIENT_RCVHWM: i32 = 100_000;

/// One DEALER to one zms server, with request ids.
pub struct Wire {
    socket: zmq::Socket,
    /// Where replies are received, reused from one to the next.
    frame: zmq::Message,
    next_req: u32,
    /// `HOST:PORT`, for errors.
    address: String,
}

impl Wire {
    /// Connects to `address` (`HOST:PORT`).
    ///
    /// # Errors
    /// A bad address or a libzmq failure.
    pub fn connect(ctx: &zmq::Context, address: &str) -> Result<Wire> {
        let socket = transport::socket(ctx, zmq::DEALER)?;
        socket.set_rcvhwm(CLIENT_RCVHWM)?;
        // A send blocks only while the connection is being made; bound even that.
        socket.set_sndtimeo(5000)?;
        socket.connect(&transport::endpoint(address)?)?;
        Ok(Wire {
            socket,
            frame: zmq::Message::new(),
            next_req: 0,
            address: address.to_string(),
        })
    }

    /// The socket, for polling.
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// Sends `request` (blocking at most the send timeout); returns its request id.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the server cannot be reached; a libzmq failure.
    pub fn send(&mut self, request: &Request) -> Result<u32> {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        match self
            .socket
            .send(codec::encode_request(self.next_req, request), 0)
        {
            Ok(()) => Ok(self.next_req),
            Err(zmq::Error::EAGAIN) => Err(Error::Timeout(format!(
                "cannot send to {}: not connected within 5 s",
                self.address
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `request` if it can leave at once (heartbeats).
    ///
    /// # Errors
    /// A libzmq failure other than "would block".
    pub fn send_nowait(&mut self, request: &Request) -> Result<()> {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        match self
            .socket
            .send(codec::encode_request(self.next_req, request), zmq::DONTWAIT)
        {
            Ok(()) | Err(zmq::Error::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The next reply, waiting up to `wait`; pushed events are skipped.
    ///
    /// # Errors
    /// A libzmq failure or an undecodable frame.
    pub fn next_reply(&mut self, wait: Duration) -> Result<Option<(u32, Reply)>> {
        let deadline = Instant::now() + wait;
        loop {
            // Wait in the receive itself, as a REQ socket does, for what is left of `wait`
            // (whole milliseconds, rounded up; none at all for a zero wait).
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout_ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            self.socket.set_rcvtimeo(timeout_ms)?;
            match self.socket.recv(&mut self.frame, 0) {
                Ok(()) => match codec::decode_incoming(&self.frame) {
                    Ok(Incoming::Reply(id, reply)) => return Ok(Some((id, reply))),
                    Ok(_) => continue, // pushed events
                    Err(e) => {
                        return Err(Error::Protocol(format!(
                            "{} sent {}",
                            self.address, e.reason
                        )))
                    }
                },
                Err(zmq::Error::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `request` and waits up to `wait` for its reply; an ERROR reply is an error.
    ///
    /// # Errors
    /// [`Error::Rejected`], [`Error::Timeout`], or a transport failure.
    pub fn call(&mut self, request: &Request, wait: Duration) -> Result<Reply> {
        let id = self.send(request)?;
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_reply(left)? {
                Some((got, Reply::Error { code, reason })) if got == id => {
                    return Err(Error::Rejected { code, reason })
                }
                Some((got, reply)) if got == id => return Ok(reply),
                _ => {}
            }
        }
        Err(Error::Timeout(format!(
            "{} did not answer {} within {:.0} s",
            self.address,
            request.name(),
            wait.as_secs_f64()
        )))
    }

    /// The group's last seq (a HISTORY of zero messages), as `user`.
    ///
    /// # Errors
    /// As [`Wire::call`].
    pub fn last_seq(&mut self, group: &str, user: &str, wait: Duration) -> Result<u64> {
        let request = Request::History {
            group: group.to_string(),
            user: user.to_string(),
            after_seq: 0,
            since_ms: 0,
            limit: 0,
        };
        match self.call(&request, wait)? {
            Reply::Messages { last_seq, .. } => Ok(last_seq),
            other => Err(Error::Protocol(format!("expected MESSAGES, got {other:?}"))),
        }
    }
}

/// Makes `user` a member of `group` and returns the group's last seq. The JOIN goes over a
/// connection of its own that is closed at once, so the caller's own connections never
/// subscribe (a sender that received its own messages would be measuring itself); the server
/// drops that subscription at its first push to the closed connection.
///
/// # Errors
/// As [`Wire::call`].
pub fn join(
    ctx: &zmq::Context,
    address: &str,
    group: &str,
    user: &str,
    wait: Duration,
) -> Result<u64> {
    let mut wire = Wire::connect(ctx, address)?;
    let request = Request::Join {
        group: group.to_string(),
        user: user.to_string(),
    };
    match wire.call(&request, wait)? {
        Reply::Joined { last_seq, .. } => Ok(last_seq),
        other => Err(Error::Protocol(format!("expected JOINED, got {other:?}"))),
    }
}

/// A sender keeping up to `window` messages in flight, matching ACKs by request id. With a
/// `batch` above 1 it gathers messages into SENDS requests of up to that many (sent when full,
/// when the window would be, or at [`Pipeline::flush`]); with 1 each goes as a SEND at once.
pub struct Pipeline {
    wire: Wire,
    group: String,
    user: String,
    /// The SEND being made: from one to the next only its client id and text change.
    request: Request,
    batch: usize,
    /// Messages gathered for the next SENDS, and the octets that SENDS will take.
    pending: Vec<Outgoing>,
    pending_len: usize,
    /// Octets of a SENDS of no messages.
    header_len: usize,
    window: usize,
    stall: Duration,
    /// Messages of each unacknowledged request, by request id.
    outstanding: HashMap<u32, usize>,
    /// Messages sent and not yet acknowledged.
    in_flight: usize,
    /// Client ids are `PREFIX-N`, unique per run, as `Session` makes them.
    client_prefix: String,
    sent: u64,
    acked: u64,
    /// Highest seq acknowledged.
    last_seq: u64,
}

impl Pipeline {
    /// A sender for `user` (already a member) to `group` at `address`.
    ///
    /// # Errors
    /// A bad address.
    pub fn new(
        ctx: &zmq::Context,
        address: &str,
        group: &str,
        user: &str,
        window: usize,
        batch: usize,
        stall: Duration,
    ) -> Result<Pipeline> {
        let window = window.max(1);
        let header_len = codec::batch_len(group, user, &[]);
        Ok(Pipeline {
            wire: Wire::connect(ctx, address)?,
            group: group.to_string(),
            user: user.to_string(),
            request: Request::Send {
                group: group.to_string(),
                user: user.to_string(),
                client_id: String::new(),
                text: String::new(),
            },
            batch: batch.clamp(1, protocol::MAX_BATCH),
            pending: Vec::new(),
            pending_len: header_len,
            header_len,
            window,
            stall,
            outstanding: HashMap::with_capacity(window),
            in_flight: 0,
            client_prefix: format!("{user}-{:x}", payload::now_ns()),
            sent: 0,
            acked: 0,
            last_seq: 0,
        })
    }

    /// Sends `text`, or gathers it for the next SENDS; first waits for ACKs if the window is
    /// full.
    ///
    /// # Errors
    /// A refused send, or no ACK for `stall`.
    pub fn send(&mut self, text: String) -> Result<()> {
        self.sent += 1;
        if self.batch == 1 {
            if let Request::Send {
                client_id,
                text: to_send,
                ..
            } = &mut self.request
            {
                client_id.clear();
                let _ = write!(client_id, "{}-{}", self.client_prefix, self.sent);
                *to_send = text;
            }
            while self.in_flight >= self.window {
                self.wait_acks()?;
            }
            let id = self.wire.send(&self.request)?;
            self.sent_request(id, 1);
        } else {
            let client_id = format!("{}-{}", self.client_prefix, self.sent);
            let more = codec::outgoing_len(&client_id, &text);
            if self.pending_len + more > protocol::MAX_BATCH_FRAME {
                self.flush()?;
            }
            self.pending_len += more;
            self.pending.push(Outgoing { client_id, text });
            if self.pending.len() >= self.batch
                || self.in_flight + self.pending.len() >= self.window
            {
                self.flush()?;
            }
        }
        // Reading ACKs early keeps the window open without a blocking wait.
        if self.in_flight * 2 >= self.window {
            self.take_acks(Duration::ZERO)?;
        }
        Ok(())
    }

    /// Sends the gathered messages as one SENDS, once the window has room for them.
    ///
    /// # Errors
    /// As [`Pipeline::send`].
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        while self.in_flight > 0 && self.in_flight + self.pending.len() > self.window {
            self.wait_acks()?;
        }
        let count = self.pending.len();
        let batch = Request::SendBatch {
            group: self.group.clone(),
            user: self.user.clone(),
            messages: std::mem::take(&mut self.pending),
        };
        let id = self.wire.send(&batch)?;
        self.sent_request(id, count);
        self.pending_len = self.header_len;
        // The next batch reuses the buffer.
        if let Request::SendBatch { mut messages, .. } = batch {
            messages.clear();
            self.pending = messages;
        }
        Ok(())
    }

    fn sent_request(&mut self, id: u32, count: usize) {
        self.outstanding.insert(id, count);
        self.in_flight += count;
    }

    /// Sends what is gathered, then waits until every send is acknowledged.
    ///
    /// # Errors
    /// As [`Pipeline::send`].
    pub fn finish(&mut self) -> Result<()> {
        self.flush()?;
        while !self.outstanding.is_empty() {
            self.wait_acks()?;
        }
        Ok(())
    }

    fn wait_acks(&mut self) -> Result<()> {
        if self.take_acks(self.stall)? == 0 {
            return Err(Error::Timeout(format!(
                "no ACK from the group server for {:.0} s with {} sends in flight ({} acknowledged)",
                self.stall.as_secs_f64(),
                self.in_flight,
                self.acked
            )));
        }
        Ok(())
    }

    /// Takes the ACKs that arrive within `wait` (then those already queued); returns how many
    /// messages they acknowledge.
    fn take_acks(&mut self, wait: Duration) -> Result<usize> {
        let mut taken = 0;
        let mut wait = wait;
        while let Some((id, reply)) = self.wire.next_reply(wait)? {
            wait = Duration::ZERO;
            let highest = match &reply {
                Reply::Ack { seq, .. } => Some(*seq),
                Reply::Acks(acks) => acks.iter().map(|a| a.seq).max(),
                _ => None,
            };
            match (self.outstanding.remove(&id), highest) {
                (Some(count), Some(seq)) => {
                    self.in_flight -= count;
                    self.acked += count as u64;
                    self.last_seq = self.last_seq.max(seq);
                    taken += count;
                }
                _ => {
                    return Err(match reply {
                        Reply::Error { code, reason } => Error::Rejected { code, reason },
                        other => Error::Protocol(format!(
                            "expected an ACK for one of {} requests, got {other:?} for #{id}",
                            self.outstanding.len()
                        )),
                    })
                }
            }
        }
        Ok(taken)
    }

    /// Sends acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest seq acknowledged.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The connection, for requests after the load.
    pub fn wire(&mut self) -> &mut Wire {
        &mut self.wire
    }
}

/// Deliveries seen by one receiver: distinct indexes, repeats, reorderings, latencies.
#[derive(Debug, Clone)]
pub struct Tally {
    expect: u64,
    seen: Vec<u64>,
    /// Distinct messages received.
    pub distinct: u64,
    pub duplicates: u64,
    /// Messages that arrived after a later one.
    pub reordered: u64,
    last: Option<u64>,
    keep_latency: bool,
    /// Send-to-receipt time of every message, ns (when asked for).
    pub latencies_ns: Vec<u64>,
    /// When the last expected message arrived ([`payload::now_ns`]), if it did.
    pub done_ns: Option<u64>,
}

impl Tally {
    /// A tally expecting indexes `0..expect`.
    pub fn new(expect: u64, keep_latency: bool) -> Tally {
        Tally {
            expect,
            seen: vec![0; expect.div_ceil(64) as usize],
            distinct: 0,
            duplicates: 0,
            reordered: 0,
            last: None,
            keep_latency,
            latencies_ns: Vec::with_capacity(if keep_latency { expect as usize } else { 0 }),
            done_ns: None,
        }
    }

    /// Records message `index`, sent at `sent_ns`, received at `now_ns`.
    pub fn record(&mut self, index: u64, sent_ns: u64, now_ns: u64) {
        if index >= self.expect {
            return;
        }
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        if self.last.is_some_and(|l| index < l) {
            self.reordered += 1;
        }
        self.last = Some(index);
        if self.keep_latency {
            self.latencies_ns.push(now_ns.saturating_sub(sent_ns));
        }
        if self.distinct == self.expect {
            self.done_ns = Some(now_ns);
        }
    }

    /// Whether every expected message arrived.
    pub fn complete(&self) -> bool {
        self.distinct == self.expect
    }

    /// Expected messages that never arrived.
    pub fn lost(&self) -> u64 {
        self.expect - self.distinct
    }
}

/// Calls `each` with the seq and text of every message of a MSG or MSGS event, read in place
/// (the receivers' hot path: no allocation). `None` for any other frame; a frame cut short
/// yields its whole messages, then `None`.
pub fn each_msg(frame: &[u8], mut each: impl FnMut(u64, &[u8])) -> Option<()> {
    if frame.len() < 6 || &frame[..3] != protocol::SIGNATURE || frame[3] != protocol::VERSION {
        return None;
    }
    let batch = match frame[4] {
        cmd::MSG => false,
        cmd::MSGS => true,
        _ => return None,
    };
    let mut at = 5;
    let group_len = usize::from(*frame.get(at)?);
    at += 1 + group_len;
    let count = if batch {
        at += 4;
        u32::from_be_bytes(frame.get(at - 4..at)?.try_into().ok()?)
    } else {
        1
    };
    for _ in 0..count {
        let seq = u64::from_be_bytes(frame.get(at..at + 8)?.try_into().ok()?);
        at += 16; // seq, ts
        let sender_len = usize::from(*frame.get(at)?);
        at += 1 + sender_len;
        let text_len = u32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        each(seq, frame.get(at..at + text_len)?);
        at += text_len;
    }
    Some(())
}

/// What the member threads are to do.
#[derive(Debug, Clone)]
pub struct MemberPlan {
    /// The group server's `HOST:PORT`.
    pub address: String,
    pub group: String,
    /// One member (and one connection) per name.
    pub users: Vec<String>,
    /// Threads to spread them over.
    pub threads: usize,
    /// Messages each member should receive.
    pub expect: u64,
    /// Record send-to-receipt latency of every message.
    pub latency: bool,
    /// Give up after this long without a frame.
    pub stall: Duration,
    pub deadline: Instant,
}

/// Most sockets sharing one ZeroMQ context (libzmq's default limit is 1,023 per context).
const SOCKETS_PER_CONTEXT: usize = 500;

/// Members receiving on their own threads.
pub struct Members {
    handles: Vec<JoinHandle<Result<Vec<Tally>>>>,
    stop: Arc<AtomicBool>,
}

impl Members {
    /// Connects and joins every member, each thread reporting to `credit` slot = its index;
    /// returns once all have joined (the group's pushes to them start right after).
    ///
    /// # Errors
    /// A member that could not join.
    pub fn start(ctx: &zmq::Context, plan: &MemberPlan, credit: Arc<Credit>) -> Result<Members> {
        let threads = plan.threads.clamp(1, plan.users.len().max(1));
        let per_thread = plan.users.len().div_ceil(threads);
        let contexts = plan.users.len().div_ceil(SOCKETS_PER_CONTEXT);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut members = Members {
            handles: Vec::new(),
            stop: stop.clone(),
        };
        let mut ctxs = vec![ctx.clone()];
        for _ in 1..contexts {
            ctxs.push(zmq::Context::new());
        }
        for (t, users) in plan.users.chunks(per_thread.max(1)).enumerate() {
            let ctx = ctxs[t * ctxs.len() / threads].clone();
            let mut plan = plan.clone();
            plan.users = users.to_vec();
            let (credit, stop, ready) = (credit.clone(), stop.clone(), ready_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("member-{t}"))
                .spawn(move || member_thread(t, &ctx, &plan, &credit, &stop, &ready))?;
            members.handles.push(handle);
        }
        drop(ready_tx);
        let wait = plan.stall + Duration::from_millis(20) * plan.users.len() as u32;
        for _ in 0..members.handles.len() {
            match ready_rx.recv_timeout(wait) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    return Err(Error::Timeout(format!(
                        "{} members did not all join within {:.0} s",
                        plan.users.len(),
                        wait.as_secs_f64()
                    )))
                }
            }
        }
        Ok(members)
    }

    /// Waits for every member to finish (all received, stalled or past the deadline).
    ///
    /// # Errors
    /// A member thread's failure.
    pub fn finish(mut self) -> Result<Vec<Tally>> {
        let mut all = Vec::new();
        for handle in self.handles.drain(..) {
            let tallies = handle
                .join()
                .map_err(|_| Error::Protocol("a member thread panicked".into()))??;
            all.extend(tallies);
        }
        Ok(all)
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        // On an early return the threads see this within one poll and end.
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn member_thread(
    t: usize,
    ctx: &zmq::Context,
    plan: &MemberPlan,
    credit: &Credit,
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<()>>,
) -> Result<Vec<Tally>> {
    // All JOINs first, then the replies: the server commits them as one batch, so a thread of
    // many members is joined in milliseconds and none sits silent long enough to expire.
    let joined = (|| {
        let mut wires = Vec::new();
        let mut ids = Vec::new();
        for user in &plan.users {
            let mut wire = Wire::connect(ctx, &plan.address)?;
            ids.push(wire.send(&Request::Join {
                group: plan.group.clone(),
                user: user.clone(),
            })?);
            wires.push(wire);
        }
        let mut bases = Vec::new();
        for (wire, id) in wires.iter_mut().zip(ids) {
            let deadline = Instant::now() + plan.stall;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match wire.next_reply(left)? {
                    Some((got, Reply::Joined { last_seq, .. })) if got == id => {
                        bases.push(last_seq);
                        break;
                    }
                    Some((got, Reply::Error { code, reason })) if got == id => {
                        return Err(Error::Rejected { code, reason })
                    }
                    Some(_) => {}
                    None => {
                        return Err(Error::Timeout(format!(
                            "no answer to JOIN within {:.0} s",
                            plan.stall.as_secs_f64()
                        )))
                    }
                }
            }
        }
        Ok((wires, bases))
    })();
    let (mut wires, bases) = match joined {
        Ok(j) => {
            let _ = ready.send(Ok(()));
            j
        }
        Err(err) => {
            let message = err.to_string();
            let _ = ready.send(Err(err));
            return Err(Error::Protocol(message));
        }
    };
    let mut tallies: Vec<Tally> = plan
        .users
        .iter()
        .map(|_| Tally::new(plan.expect, plan.latency))
        .collect();
    let mut msg = zmq::Message::new();
    let beat = Duration::from_millis(protocol::HEARTBEAT_MS);
    let mut next_ping = Instant::now() + beat;
    let mut last_frame = Instant::now();
    let mut readable: Vec<usize> = Vec::with_capacity(wires.len());
    while !stop.load(Ordering::Relaxed) && !tallies.iter().all(Tally::complete) {
        let now = Instant::now();
        if now >= plan.deadline || now.duration_since(last_frame) >= plan.stall {
            break;
        }
        readable.clear();
        {
            let mut items: Vec<zmq::PollItem> = wires
                .iter()
                .map(|w| w.socket().as_poll_item(zmq::POLLIN))
                .collect();
            transport::poll(&mut items, Duration::from_millis(100))?;
            readable.extend((0..items.len()).filter(|&i| items[i].is_readable()));
        }
        for &i in &readable {
            let socket = wires[i].socket();
            // Bounded per socket so one busy member cannot starve the thread's others.
            for _ in 0..4096 {
                match socket.recv(&mut msg, zmq::DONTWAIT) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => return Err(e.into()),
                }
                last_frame = Instant::now();
                let now = payload::now_ns();
                let tally = &mut tallies[i];
                let base = bases[i];
                let pushed = each_msg(&msg, |seq, text| {
                    if seq > base {
                        let sent = if plan.latency {
                            payload::parse(text).map_or(now, |(_, sent)| sent)
                        } else {
                            now
                        };
                        tally.record(seq - base - 1, sent, now);
                    }
                });
                if pushed.is_none() {
                    check_pong(&msg, &plan.group, &plan.users[i])?;
                }
            }
        }
        let slowest = tallies.iter().map(|t| t.distinct).min().unwrap_or(0);
        credit.update(t, slowest);
        if Instant::now() >= next_ping {
            // Subscriptions expire after 5 s of silence; a member that only listens must PING.
            next_ping += beat;
            for wire in &mut wires {
                wire.send_nowait(&Request::Ping)?;
            }
        }
    }
    Ok(tallies)
}

/// A PONG that no longer lists the group means the server dropped this member's subscription
/// (it was silent too long): deliveries would be lost without a word, so fail instead.
fn check_pong(frame: &[u8], group: &str, user: &str) -> Result<()> {
    if let Ok(Incoming::Reply(_, Reply::Pong { groups, .. })) = codec::decode_incoming(frame) {
        if !groups.iter().any(|(g, _)| g == group) {
            return Err(Error::Protocol(format!(
                "the group server dropped {user}'s subscription to {group} (silent too long?)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Message;

    #[test]
    fn each_msg_reads_what_the_codec_writes() {
        let messages: Vec<Message> = (77..80)
            .map(|seq| Message {
                seq,
                ts: 5,
                sender: "alice".into(),
                text: payload::text(seq, 9, 40),
            })
            .collect();
        let read = |frame: &[u8]| {
            let mut got = Vec::new();
            let whole = each_msg(frame, |seq, text| got.push((seq, text.to_vec())));
            (whole, got)
        };
        let expected: Vec<(u64, Vec<u8>)> = messages
            .iter()
            .map(|m| (m.seq, m.text.as_bytes().to_vec()))
            .collect();
        let one = codec::encode_message_event("general", &messages[0]);
        assert_eq!(read(&one), (Some(()), expected[..1].to_vec()));
        let batch = codec::encode_messages_event("general", &messages);
        assert_eq!(read(&batch), (Some(()), expected.clone()));
        assert_eq!(
            read(&batch[..batch.len() - 1]),
            (None, expected[..2].to_vec())
        );
        assert_eq!(read(&one[..one.len() - 1]).0, None);
        assert_eq!(read(&codec::encode_reply(1, &Reply::Ok)).0, None);
    }

    #[test]
    fn tally_counts_losses_repeats_and_reorders() {
        let mut t = Tally::new(4, true);
        for (i, at) in [(0, 10), (2, 12), (1, 13), (2, 14), (9, 15)] {
            t.record(i, 0, at);
        }
        assert_eq!(
            (t.distinct, t.duplicates, t.reordered, t.lost()),
            (3, 1, 1, 1)
        );
        assert!(!t.complete());
        t.record(3, 0, 20);
        assert_eq!(t.done_ns, Some(20));
        assert_eq!(t.latencies_ns, [10, 12, 13, 20]);
    }
}
