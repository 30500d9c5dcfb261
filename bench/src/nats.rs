//! `nats`: the fanout, latency and rtt workloads against a NATS server (core NATS, or with
//! `--jetstream` publishing into a file-backed stream and waiting for its acks), through a small
//! client of the NATS text protocol written here on `std::net::TcpStream`.
//!
//! Why our own client rather than a Python one from PyPI: the NATS figures then come from the
//! same process, clock, payload, credit, receiver threads and percentile code as the zms and raw
//! figures, so the comparison measures the servers, not two harnesses. The protocol subset is
//! small: `CONNECT`, `PUB`, `SUB`, `MSG`, `PING`/`PONG`, `+OK`/`-ERR`, and JetStream's API
//! (stream create, info, delete; publish acks) is request-reply on `$JS.API.…` subjects.
//!
//! What each workload means here:
//! - fanout: 1 publisher, N subscribers on their own connections and threads; with JetStream
//!   every publish carries a reply inbox and at most `--window` acks are outstanding.
//! - latency: the same, paced at `--rate`; send time is in the payload.
//! - rtt: core: `PUB` then `PING`, waiting for `PONG` (the server has taken the message);
//!   JetStream: `PUB` with a reply inbox, waiting for the stored-ack.

use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::flow::{Credit, StopOnDrop};
use super::stats::{self, per_s, Percentiles};
use super::tcp::{Conn, READ_SLICE};
use super::wire::Tally;
use super::workloads::{join_tallies, run_prefix, Fan};
use super::{payload, progress, time_calls, BenchArgs, Ticker};
use zms::{Error, Result};

/// One operation from the server. Ranges index [`Nats::slice`] until the next read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Info,
    Pong,
    Msg { sid: u64, payload: Range<usize> },
}

/// A connection to a NATS server.
pub struct Nats {
    /// The socket and its buffers; the NATS protocol, PINGs answered included, is this type's.
    conn: Conn,
}

impl Nats {
    /// Connects, reads INFO, sends CONNECT and waits for the PONG to a PING.
    ///
    /// # Errors
    /// A refused connection, an `-ERR`, or no answer within `wait`.
    pub fn connect(address: &str, wait: Duration) -> Result<Nats> {
        let mut nats = Nats {
            conn: Conn::connect("NATS", address, wait, 256 * 1024)?,
        };
        let deadline = Instant::now() + wait;
        match nats.next_op(deadline)? {
            Some(Op::Info) => {}
            other => return Err(nats.unexpected("INFO", other)),
        }
        nats.conn.out().extend_from_slice(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"headers\":false,\
              \"lang\":\"rust\",\"version\":\"zms-bench\",\"protocol\":1}\r\n",
        );
        nats.ping(deadline)?;
        Ok(nats)
    }

    fn unexpected(&self, wanted: &str, got: Option<Op>) -> Error {
        match got {
            None => Error::Timeout(format!("no {wanted} from {}", self.conn.peer())),
            Some(op) => Error::Protocol(format!(
                "expected {wanted} from {}, got {op:?}",
                self.conn.peer()
            )),
        }
    }

    /// Queues a PUB (written once 32 KiB are queued, or on [`Nats::flush`]).
    ///
    /// # Errors
    /// A write failure.
    pub fn publish(&mut self, subject: &str, reply: Option<&str>, data: &[u8]) -> Result<()> {
        let out = self.conn.out();
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(subject.as_bytes());
        if let Some(reply) = reply {
            out.push(b' ');
            out.extend_from_slice(reply.as_bytes());
        }
        write!(out, " {}\r\n", data.len())?;
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.conn.flush_if_full()
    }

    /// Queues a SUB.
    pub fn subscribe(&mut self, subject: &str, sid: u64) {
        self.conn
            .out()
            .extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// A write failure or timeout.
    pub fn flush(&mut self) -> Result<()> {
        self.conn.flush()
    }

    /// PING, then waits for PONG (so the server has processed everything sent before).
    /// Messages arriving meanwhile are dropped: call it when none are expected.
    ///
    /// # Errors
    /// No PONG by `deadline`, or an `-ERR`.
    pub fn ping(&mut self, deadline: Instant) -> Result<()> {
        self.conn.out().extend_from_slice(b"PING\r\n");
        self.flush()?;
        loop {
            match self.next_op(deadline)? {
                Some(Op::Pong) => return Ok(()),
                Some(_) => {}
                None => return Err(self.unexpected("PONG", None)),
            }
        }
    }

    /// The bytes of a range from the last [`Op`].
    pub fn slice(&self, range: Range<usize>) -> &[u8] {
        self.conn.slice(range)
    }

    /// The next operation, or `None` when `deadline` passes first. PINGs are answered here.
    ///
    /// # Errors
    /// A closed connection, an `-ERR`, or a malformed line.
    pub fn next_op(&mut self, deadline: Instant) -> Result<Option<Op>> {
        self.conn.take_next(deadline, Nats::parse)
    }

    /// Parses one complete operation from what `conn` has read, if there is one.
    fn parse(conn: &mut Conn) -> Result<Option<Op>> {
        loop {
            let data = conn.unread();
            let Some(nl) = data.windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let line = &data[..nl];
            if let Some(rest) = line.strip_prefix(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let fields: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
                let number = |f: &[u8]| {
                    std::str::from_utf8(f)
                        .ok()
                        .and_then(|s| s.parse::<usize>().ok())
                };
                let (Some(sid), Some(len)) = (
                    fields.get(1).and_then(|f| number(f)),
                    fields.last().and_then(|f| number(f)),
                ) else {
                    return Err(Error::Protocol(format!(
                        "bad MSG line from NATS: {}",
                        String::from_utf8_lossy(line)
                    )));
                };
                let total = nl + 2 + len + 2;
                if data.len() < total {
                    return Ok(None);
                }
                let payload = conn.base() + nl + 2..conn.base() + nl + 2 + len;
                conn.consume(total);
                return Ok(Some(Op::Msg {
                    sid: sid as u64,
                    payload,
                }));
            }
            let op = if line == b"PING" {
                None
            } else if line == b"PONG" {
                Some(Op::Pong)
            } else if line == b"+OK" {
                None
            } else if line.starts_with(b"INFO") {
                Some(Op::Info)
            } else if line.starts_with(b"-ERR") {
                return Err(Error::Protocol(format!(
                    "{}: {}",
                    conn.peer(),
                    String::from_utf8_lossy(line)
                )));
            } else {
                return Err(Error::Protocol(format!(
                    "unknown line from NATS: {}",
                    String::from_utf8_lossy(line)
                )));
            };
            let is_ping = line == b"PING";
            conn.consume(nl + 2);
            if is_ping {
                conn.out().extend_from_slice(b"PONG\r\n");
                conn.flush()?;
            }
            if let Some(op) = op {
                return Ok(Some(op));
            }
        }
    }

    /// A JetStream API request: publishes `body` to `subject` and returns the JSON answer.
    ///
    /// # Errors
    /// No answer by `deadline`, or an answer carrying an `error`.
    pub fn js_api(&mut self, subject: &str, body: &Value, deadline: Instant) -> Result<Value> {
        let inbox = format!("_INBOX.{}.api", run_prefix());
        self.subscribe(&inbox, 9);
        self.publish(subject, Some(&inbox), body.to_string().as_bytes())?;
        self.conn.out().extend_from_slice(b"UNSUB 9 1\r\n");
        self.flush()?;
        loop {
            match self.next_op(deadline)? {
                Some(Op::Msg { sid: 9, payload }) => {
                    let answer: Value =
                        serde_json::from_slice(self.slice(payload)).map_err(|e| {
                            Error::Protocol(format!("JetStream answered non-JSON: {e}"))
                        })?;
                    if let Some(error) = answer.get("error") {
                        return Err(Error::Protocol(format!("JetStream {subject}: {error}")));
                    }
                    return Ok(answer);
                }
                Some(_) => {}
                None => {
                    return Err(Error::Timeout(format!(
                        "no answer to {subject}: is JetStream enabled (nats-server -js)?"
                    )))
                }
            }
        }
    }
}

/// A JetStream stream made for one run, deleted on drop.
struct Stream {
    name: String,
    api: Nats,
}

impl Stream {
    fn create(address: &str, replicas: u32, stall: Duration) -> Result<Stream> {
        let name = run_prefix().to_uppercase();
        let mut api = Nats::connect(address, stall)?;
        let config = json!({
            "name": name, "subjects": [format!("{name}.>")], "storage": "file",
            "retention": "limits", "discard": "old", "num_replicas": replicas,
        });
        api.js_api(
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &config,
            Instant::now() + stall,
        )?;
        Ok(Stream { name, api })
    }

    /// Messages the stream holds.
    fn messages(&mut self, stall: Duration) -> Result<u64> {
        let info = self.api.js_api(
            &format!("$JS.API.STREAM.INFO.{}", self.name),
            &json!({}),
            Instant::now() + stall,
        )?;
        Ok(info["state"]["messages"].as_u64().unwrap_or(0))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let subject = format!("$JS.API.STREAM.DELETE.{}", self.name);
        let _ = self.api.js_api(
            &subject,
            &json!({}),
            Instant::now() + Duration::from_secs(5),
        );
    }
}

/// Runs fanout, latency and rtt against the NATS server at `--nats`.
///
/// # Errors
/// No server, no JetStream when asked for, or a stalled run.
pub fn run(args: &BenchArgs) -> Result<Value> {
    let stall = args.stall();
    let mut stream = if args.jetstream {
        Some(Stream::create(&args.nats, args.replicas, stall)?)
    } else {
        None
    };
    let prefix = run_prefix();
    let subject = |what: &str| match &stream {
        Some(s) => format!("{}.{what}", s.name),
        None => format!("zmsbench.{prefix}.{what}"),
    };
    let (fanout_subject, latency_subject, rtt_subject, ingest_subject) = (
        subject("fanout"),
        subject("latency"),
        subject("rtt"),
        subject("ingest"),
    );
    let members = args.members.unwrap_or(10);
    let messages = args.messages.unwrap_or(200_000);
    let fanout = fan(
        args,
        "nats fanout",
        &fanout_subject,
        messages,
        members,
        None,
    )?;
    let stored = match &mut stream {
        Some(s) => s.messages(stall)?,
        None => 0,
    };
    let latency_messages = args
        .messages
        .unwrap_or((args.rate as f64 * args.duration) as u64);
    let mut latency = fan(
        args,
        "nats latency",
        &latency_subject,
        latency_messages,
        members,
        Some(args.rate),
    )?;
    let percentiles = Percentiles::of(&mut latency.latencies());
    let rtt = rtt(args, &rtt_subject, args.messages.unwrap_or(20_000))?;
    // Ingest needs acknowledgements: JetStream only.
    let ingest = match args.jetstream {
        true => ingest(args, &ingest_subject, args.messages.unwrap_or(200_000))?,
        false => Value::Null,
    };
    let mut fanout = fanout.json();
    fanout["stored"] = json!(stored);
    Ok(json!({
        "url": args.nats,
        "jetstream": args.jetstream,
        "replicas": args.replicas,
        "ingest": ingest,
        "size": args.size,
        "fanout": fanout,
        "latency": stats::merge(
            stats::merge(latency.json(), percentiles.json()),
            json!({"rate": args.rate, "sent_per_s": per_s(latency_messages, latency.send_ns)}),
        ),
        "rtt": rtt,
    }))
}

/// A publisher that, with JetStream, keeps at most `window` publishes unacknowledged.
struct Publisher {
    nats: Nats,
    jetstream: bool,
    inbox: String,
    window: usize,
    outstanding: usize,
    acked: u64,
    stall: Duration,
}

impl Publisher {
    fn new(args: &BenchArgs) -> Result<Publisher> {
        Publisher::with_window(args, args.fan_window())
    }

    fn with_window(args: &BenchArgs, window: usize) -> Result<Publisher> {
        let mut nats = Nats::connect(&args.nats, args.stall())?;
        let inbox = format!("_INBOX.{}", run_prefix());
        if args.jetstream {
            nats.subscribe(&format!("{inbox}.*"), 1);
            nats.ping(args.deadline())?;
        }
        Ok(Publisher {
            nats,
            jetstream: args.jetstream,
            inbox,
            window: window.max(1),
            outstanding: 0,
            acked: 0,
            stall: args.stall(),
        })
    }

    fn publish(&mut self, subject: &str, i: u64, data: &[u8]) -> Result<()> {
        if !self.jetstream {
            return self.nats.publish(subject, None, data);
        }
        while self.outstanding >= self.window {
            self.nats.flush()?;
            self.wait_ack()?;
        }
        let reply = format!("{}.{i}", self.inbox);
        self.nats.publish(subject, Some(&reply), data)?;
        self.outstanding += 1;
        Ok(())
    }

    /// Waits for one JetStream ack, then takes those already read.
    fn wait_ack(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.stall;
        let mut got = 0;
        loop {
            let op = if got == 0 {
                self.nats.next_op(deadline)?
            } else {
                Nats::parse(&mut self.nats.conn)?
            };
            match op {
                Some(Op::Msg { sid: 1, payload }) => {
                    let ack = self.nats.slice(payload);
                    if ack.windows(7).any(|w| w == b"\"error\"") {
                        return Err(Error::Protocol(format!(
                            "JetStream refused a publish: {}",
                            String::from_utf8_lossy(ack)
                        )));
                    }
                    self.outstanding = self.outstanding.saturating_sub(1);
                    self.acked += 1;
                    got += 1;
                }
                Some(_) => {}
                None if got > 0 => return Ok(()),
                None => {
                    return Err(Error::Timeout(format!(
                        "no JetStream ack for {:.0} s with {} publishes in flight",
                        self.stall.as_secs_f64(),
                        self.outstanding
                    )))
                }
            }
        }
    }

    /// Writes everything and waits until the server has it (core) or has stored it (JetStream).
    fn finish(&mut self) -> Result<()> {
        self.nats.flush()?;
        while self.outstanding > 0 {
            self.wait_ack()?;
        }
        self.nats.ping(Instant::now() + self.stall)
    }
}

/// One publisher to `members` subscribers, each on its own connection and thread.
fn fan(
    args: &BenchArgs,
    label: &'static str,
    subject: &str,
    messages: u64,
    members: usize,
    rate: Option<u64>,
) -> Result<Fan> {
    let stall = args.stall();
    let deadline = args.deadline();
    let credit = Arc::new(Credit::new(members.max(1), args.ahead));
    let stop = Arc::new(AtomicBool::new(false));
    // Whatever way this returns, the receiver threads stop within one poll.
    let _stop_on_return = StopOnDrop(stop.clone());
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for m in 0..members {
        let (credit, stop, ready) = (credit.clone(), stop.clone(), ready_tx.clone());
        let (address, subject) = (args.nats.clone(), subject.to_string());
        let latency = rate.is_some();
        handles.push(
            std::thread::Builder::new()
                .name(format!("nats-sub-{m}"))
                .spawn(move || -> Result<Tally> {
                    let mut nats = Nats::connect(&address, stall)?;
                    nats.subscribe(&subject, 1);
                    nats.ping(Instant::now() + stall)?;
                    let _ = ready.send(());
                    let mut tally = Tally::new(messages, latency);
                    let mut last_frame = Instant::now();
                    while !stop.load(Ordering::Relaxed) && !tally.complete() {
                        let now = Instant::now();
                        if now >= deadline || now.duration_since(last_frame) >= stall {
                            break;
                        }
                        match nats.next_op(now + READ_SLICE)? {
                            Some(Op::Msg { payload, .. }) => {
                                last_frame = Instant::now();
                                if let Some((index, sent)) = payload::parse(nats.slice(payload)) {
                                    tally.record(index, sent, payload::now_ns());
                                }
                                if tally.distinct.is_multiple_of(256) {
                                    credit.update(m, tally.distinct);
                                }
                            }
                            Some(_) => {}
                            None => credit.update(m, tally.distinct),
                        }
                    }
                    credit.update(m, tally.distinct);
                    Ok(tally)
                })?,
        );
    }
    drop(ready_tx);
    for _ in 0..members {
        if ready_rx.recv_timeout(stall).is_err() {
            stop.store(true, Ordering::SeqCst);
            return Err(Error::Timeout(format!(
                "NATS subscribers did not connect within {:.0} s",
                stall.as_secs_f64()
            )));
        }
    }
    progress(label, format_args!("{members} subscribers connected"));
    let result = (|| {
        let mut publisher = Publisher::new(args)?;
        let mut ticker = Ticker::new(label, deadline);
        let start = ticker.start_ns();
        for i in 0..messages {
            ticker.pace(i, rate);
            if members > 0 && !credit.ready(i) {
                // Buffered messages must leave before the receivers can catch up.
                publisher.nats.flush()?;
                credit.wait(i, stall)?;
            }
            ticker.tick(i, messages)?;
            let data = payload::text(i, payload::now_ns(), args.size);
            publisher.publish(subject, i, data.as_bytes())?;
            if rate.is_some() {
                publisher.nats.flush()?;
            }
        }
        publisher.finish()?;
        Ok(start)
    })();
    let start = match result {
        Ok(start) => start,
        Err(err) => {
            stop.store(true, Ordering::SeqCst);
            return Err(err);
        }
    };
    let send_ns = payload::now_ns() - start;
    let tallies = join_tallies(handles, "NATS subscriber")?;
    Ok(Fan::new(messages, members, start, send_ns, tallies, 0))
}

/// One publish at a time, each waiting for the server: PONG (core) or the stored-ack (JetStream).
fn rtt(args: &BenchArgs, subject: &str, messages: u64) -> Result<Value> {
    let stall = args.stall();
    let deadline = args.deadline();
    let mut publisher = Publisher::new(args)?;
    let call = |i: u64| -> Result<u64> {
        let t0 = payload::now_ns();
        let data = payload::text(i, t0, args.size);
        if args.jetstream {
            publisher.publish(subject, i, data.as_bytes())?;
            publisher.nats.flush()?;
            publisher.wait_ack()?;
        } else {
            publisher.nats.publish(subject, None, data.as_bytes())?;
            publisher.nats.ping(Instant::now() + stall)?;
        }
        Ok(payload::now_ns() - t0)
    };
    time_calls("nats rtt", messages, deadline, call)
}

/// `--senders` publishers (4), each keeping `--window` (256) publishes unacknowledged, share
/// `messages` into the stream: stored (acknowledged) messages per second, as zms's ingest.
fn ingest(args: &BenchArgs, subject: &str, messages: u64) -> Result<Value> {
    let senders = args.senders.unwrap_or(4).max(1) as u64;
    let started = Instant::now();
    let acked = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..senders)
            .map(|s| {
                scope.spawn(move || -> Result<u64> {
                    let mut publisher = Publisher::with_window(args, args.ingest_window())?;
                    let mine = messages / senders + u64::from(s < messages % senders);
                    for i in 0..mine {
                        let data = payload::text(i, payload::now_ns(), args.size);
                        publisher.publish(subject, i, data.as_bytes())?;
                    }
                    publisher.finish()?;
                    Ok(publisher.acked)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Protocol("a publisher panicked".into())))
            })
            .sum::<Result<u64>>()
    })?;
    let elapsed = started.elapsed();
    if acked != messages {
        return Err(Error::Protocol(format!(
            "nats ingest: {acked} of {messages} publishes acknowledged"
        )));
    }
    Ok(json!({
        "senders": senders,
        "window": args.ingest_window(),
        "messages": messages,
        "msgs_per_s": messages as f64 / elapsed.as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A scripted NATS server: sends `script`, then echoes nothing.
    fn server(script: &'static [u8]) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        crate::tcp::one_peer(move |mut s| {
            s.write_all(b"INFO {\"server_id\":\"x\"}\r\n").unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Answer the client's first PING, then play the script.
            while !got.windows(6).any(|w| w == b"PING\r\n") {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"PONG\r\n").unwrap();
            s.write_all(script).unwrap();
            // Keep the connection until the client closes it, so no reset races its reads.
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        })
    }

    #[test]
    fn parses_msgs_split_anywhere_and_answers_pings() {
        let (address, handle) =
            server(b"+OK\r\nMSG a.b 7 _INBOX.x 5\r\nhello\r\nPING\r\nMSG c 2 0\r\n\r\n");
        let mut nats = Nats::connect(&address, Duration::from_secs(5)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let Some(Op::Msg { sid, payload }) = nats.next_op(deadline).unwrap() else {
            panic!("a MSG")
        };
        assert_eq!((sid, nats.slice(payload)), (7, &b"hello"[..]));
        let Some(Op::Msg { sid, payload }) = nats.next_op(deadline).unwrap() else {
            panic!("a MSG")
        };
        assert_eq!((sid, payload.len()), (2, 0));
        drop(nats);
        let sent = handle.join().unwrap();
        assert!(
            sent.starts_with(b"CONNECT {"),
            "{}",
            String::from_utf8_lossy(&sent)
        );
    }
}
