//! zms clients built for load, on the public client API.
//!
//! [`Sender`] pipelines a sender's messages through [`zms::client::Pipeline`] (many in flight,
//! matched to their ACKs by request id), gathering them into SENDS requests as a client with
//! many messages at hand does. [`Members`] are members' connections, many per thread, counting
//! deliveries by seq ([`Tally`]) as they read each MSG or MSGS frame in place
//! ([`zms::protocol::EventMessages`]) and heartbeating as the protocol asks.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::flow::Credit;
use super::payload;
use zms::client::{Pipeline, Timeouts};
use zms::protocol::codec::{self, Incoming};
use zms::protocol::{self, EventMessages, Outgoing, Reply, Request};
use zms::{transport, Error, Result};

/// A connection to `address` whose requests fail after `stall` of silence, with no retry: a
/// bench reports a stalled server rather than waiting it out.
///
/// # Errors
/// A bad address.
pub fn connect(ctx: &zmq::Context, address: &str, stall: Duration) -> Result<Pipeline> {
    let timeouts = Timeouts {
        request: stall,
        tries: 1,
    };
    Pipeline::connect(ctx, address, timeouts)
}

/// Makes `user` a member of `group` and returns the group's last seq. The JOIN goes over a
/// connection of its own that is closed at once, so the caller's own connections never
/// subscribe (a sender that received its own messages would be measuring itself); the server
/// drops that subscription at its first push to the closed connection.
///
/// # Errors
/// A refusal or a stall.
pub fn join(
    ctx: &zmq::Context,
    address: &str,
    group: &str,
    user: &str,
    wait: Duration,
) -> Result<u64> {
    let request = Request::Join {
        group: group.to_string(),
        user: user.to_string(),
    };
    match connect(ctx, address, wait)?.call(&request)? {
        Reply::Joined { last_seq, .. } => Ok(last_seq),
        other => Err(Error::Protocol(format!("expected JOINED, got {other:?}"))),
    }
}

/// The group's last seq (a HISTORY of zero messages), as `user`.
///
/// # Errors
/// A refusal or a stall.
pub fn last_seq(pipeline: &mut Pipeline, group: &str, user: &str) -> Result<u64> {
    let request = Request::History {
        group: group.to_string(),
        user: user.to_string(),
        after_seq: 0,
        since_ms: 0,
        limit: 0,
    };
    match pipeline.call(&request)? {
        Reply::Messages { last_seq, .. } => Ok(last_seq),
        other => Err(Error::Protocol(format!("expected MESSAGES, got {other:?}"))),
    }
}

/// A sender keeping up to `window` messages in flight. With a `batch` above 1 it gathers
/// messages into SENDS requests of up to that many (sent when full, when the window would
/// be, or at [`Sender::flush`]); with 1 each goes as a SEND at once.
pub struct Sender {
    pipeline: Pipeline,
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
    /// Client ids are `PREFIX-N`, unique per run, as `Session` makes them.
    client_prefix: String,
    sent: u64,
}

impl Sender {
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
    ) -> Result<Sender> {
        let window = window.max(1);
        let header_len = codec::batch_len(group, user, &[]);
        Ok(Sender {
            pipeline: connect(ctx, address, stall)?.with_window(window),
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
            client_prefix: format!("{user}-{:x}", payload::now_ns()),
            sent: 0,
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
            self.pipeline.send(&self.request)?;
        } else {
            let client_id = format!("{}-{}", self.client_prefix, self.sent);
            let more = codec::outgoing_len(&client_id, &text);
            if self.pending_len + more > protocol::MAX_BATCH_FRAME {
                self.flush()?;
            }
            self.pending_len += more;
            self.pending.push(Outgoing { client_id, text });
            if self.pending.len() >= self.batch
                || self.pipeline.in_flight() + self.pending.len() >= self.window
            {
                self.flush()?;
            }
        }
        // Reading ACKs early keeps the window open without a blocking wait.
        if self.pipeline.in_flight() * 2 >= self.window {
            self.pipeline.poll()?;
        }
        self.check_answers()
    }

    /// Sends the gathered messages as one SENDS, once the window has room for them.
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = Request::SendBatch {
            group: self.group.clone(),
            user: self.user.clone(),
            messages: std::mem::take(&mut self.pending),
        };
        self.pipeline.send(&batch)?;
        self.pending_len = self.header_len;
        // The next batch reuses the buffer.
        if let Request::SendBatch { mut messages, .. } = batch {
            messages.clear();
            self.pending = messages;
        }
        Ok(())
    }

    /// Sends what is gathered, then waits until every send is acknowledged.
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.pipeline.finish()?;
        self.check_answers()
    }

    /// Takes the answers received: each must acknowledge its messages.
    fn check_answers(&mut self) -> Result<()> {
        while let Some((id, reply)) = self.pipeline.take_answer() {
            match reply {
                Reply::Ack { .. } | Reply::Acks(_) => {}
                Reply::Error { code, reason } => return Err(Error::Rejected { code, reason }),
                other => {
                    return Err(Error::Protocol(format!(
                        "expected an ACK, got {other:?} for #{id}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The connection, for requests after the load.
    pub fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
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
        for user in &plan.users {
            let mut wire = connect(ctx, &plan.address, plan.stall)?;
            wire.send(&Request::Join {
                group: plan.group.clone(),
                user: user.clone(),
            })?;
            wires.push(wire);
        }
        let mut bases = Vec::new();
        for wire in &mut wires {
            match wire.next_answer()? {
                Some((_, Reply::Joined { last_seq, .. })) => bases.push(last_seq),
                Some((_, Reply::Error { code, reason })) => {
                    return Err(Error::Rejected { code, reason })
                }
                other => return Err(Error::Protocol(format!("expected JOINED, got {other:?}"))),
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
                let Some(event) = EventMessages::read(&msg) else {
                    check_pong(&msg, &plan.group, &plan.users[i])?;
                    continue;
                };
                let garbled = |e: zms::protocol::codec::DecodeError| {
                    Error::Protocol(format!("the group server sent {}", e.reason))
                };
                for message in event.map_err(garbled)? {
                    let message = message.map_err(garbled)?;
                    if message.seq > base {
                        let sent = if plan.latency {
                            payload::parse(message.text.as_bytes()).map_or(now, |(_, sent)| sent)
                        } else {
                            now
                        };
                        tally.record(message.seq - base - 1, sent, now);
                    }
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
