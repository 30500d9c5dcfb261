//! The zms workloads: fanout, latency, rtt, ingest and history, each against a fresh
//! deployment (or `--server`), each returning its JSON line.
//!
//! Times are taken on [`payload::now_ns`]: from the first send to the last ACK (`send`), and to
//! the last delivery at the slowest member (`deliver`). Counting is by seq, per member.

use std::sync::Arc;

use serde_json::{json, Value};

use super::deploy::Deployment;
use super::flow::Credit;
use super::stats::{self, per_s, round1, Percentiles};
use super::wire::{self, MemberPlan, Members, Sender, Tally};
use super::{payload, progress, time_calls, BenchArgs, Ticker};
use zms::client::{GroupRef, Session, Timeouts};
use zms::protocol::{Reply, Request};
use zms::{transport, Error, Result};

/// Names unique to this run, so repeated runs against one deployment never collide.
pub(crate) fn run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("bench{:x}{nanos:x}", std::process::id())
}

/// Joins receiver threads in order; a panic becomes an error naming `what`.
///
/// # Errors
/// A receiver's own error, or its panic.
pub(crate) fn join_tallies(
    handles: Vec<std::thread::JoinHandle<Result<Tally>>>,
    what: &str,
) -> Result<Vec<Tally>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| Error::Protocol(format!("a {what} thread panicked")))?
        })
        .collect()
}

/// Sends `messages` from `senders`, each on a thread of its own with an even share (the first
/// take the remainder): `send` each text, then `finish` (wait for the last answers). Returns
/// ns from the first send to the last answer. Every thread is joined before an error is
/// returned, so none outlives the run.
///
/// # Errors
/// The first sender's error, or a panicked thread.
pub(crate) fn send_shares<S: Send + 'static>(
    args: &BenchArgs,
    label: &'static str,
    senders: Vec<S>,
    messages: u64,
    send: fn(&mut S, String) -> Result<()>,
    finish: fn(&mut S) -> Result<()>,
) -> Result<u64> {
    let count = senders.len().max(1) as u64;
    let (size, deadline) = (args.size, args.deadline());
    let handles = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut sender)| {
            let share = messages / count + u64::from((i as u64) < messages % count);
            std::thread::Builder::new()
                .name(format!("{label}-sender-{i}"))
                .spawn(move || -> Result<(u64, u64)> {
                    // The first sender's progress stands for all of them.
                    let mut ticker = if i == 0 {
                        Ticker::new(label, deadline)
                    } else {
                        Ticker::quiet(label, deadline)
                    };
                    let start = ticker.start_ns();
                    for n in 0..share {
                        ticker.tick(n * count, messages)?;
                        send(&mut sender, payload::text(n, payload::now_ns(), size))?;
                    }
                    finish(&mut sender)?;
                    Ok((start, payload::now_ns()))
                })
                .map_err(Error::from)
        })
        .collect::<Result<Vec<_>>>()?;
    let (mut first, mut last, mut failure) = (u64::MAX, 0, None);
    for handle in handles {
        match handle.join() {
            Ok(Ok((start, end))) => {
                first = first.min(start);
                last = last.max(end);
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => {
                failure =
                    failure.or_else(|| Some(Error::Protocol("a sender thread panicked".into())))
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(last.saturating_sub(first)),
    }
}

/// What one fan-out run measured.
pub(crate) struct Fan {
    pub messages: u64,
    pub members: usize,
    /// First send to last ACK, ns.
    pub send_ns: u64,
    /// First send to the last delivery at the slowest member, ns.
    pub deliver_ns: u64,
    pub tallies: Vec<Tally>,
    /// Messages the group stored during the run (its last seq moved by this much).
    pub stored: u64,
}

impl Fan {
    /// A run's figures: `start` and `send_ns` from the sender, the tallies from the members
    /// (delivery ends at the slowest member's last message).
    pub fn new(
        messages: u64,
        members: usize,
        start: u64,
        send_ns: u64,
        tallies: Vec<Tally>,
        stored: u64,
    ) -> Fan {
        let last = tallies
            .iter()
            .map(|t| t.done_ns.unwrap_or_else(payload::now_ns))
            .max()
            .unwrap_or(start + send_ns);
        Fan {
            messages,
            members,
            send_ns,
            deliver_ns: last.max(start + send_ns) - start,
            tallies,
            stored,
        }
    }

    /// The JSON fields every fan-out reports.
    pub fn json(&self) -> Value {
        let deliveries: u64 = self.tallies.iter().map(|t| t.distinct).sum();
        json!({
            "messages": self.messages,
            "members": self.members,
            "deliveries": deliveries,
            "deliveries_per_s": per_s(deliveries, self.deliver_ns),
            "msgs_per_s": per_s(self.messages, self.deliver_ns),
            "acked_per_s": per_s(self.messages, self.send_ns),
            "lost": self.tallies.iter().map(Tally::lost).sum::<u64>(),
            "duplicates": self.tallies.iter().map(|t| t.duplicates).sum::<u64>(),
            "reordered": self.tallies.iter().map(|t| t.reordered).sum::<u64>(),
            "stored": self.stored,
            "duration_s": seconds(self.deliver_ns),
        })
    }

    /// Every delivery's latency, ns.
    pub fn latencies(&mut self) -> Vec<u64> {
        let mut all = Vec::new();
        for t in &mut self.tallies {
            all.append(&mut t.latencies_ns);
        }
        all
    }
}

/// One sender to `members` members of the deployment's group: as fast as the window and credit
/// allow, or at `rate` messages per second.
pub(crate) fn fan(
    args: &BenchArgs,
    d: &Deployment,
    label: &'static str,
    messages: u64,
    members: usize,
    rate: Option<u64>,
) -> Result<Fan> {
    let ctx = zmq::Context::new();
    let prefix = run_prefix();
    let sender = format!("{prefix}-s");
    let stall = args.stall();
    let deadline = args.deadline();
    let base = wire::join(&ctx, &d.group_address, &d.group, &sender, stall)?;
    let threads = args.member_threads.unwrap_or(members.min(10)).max(1);
    let credit = Arc::new(Credit::new(threads.min(members.max(1)), args.ahead));
    let plan = MemberPlan {
        address: d.group_address.clone(),
        group: d.group.clone(),
        users: (0..members).map(|i| format!("{prefix}-m{i}")).collect(),
        threads,
        expect: messages,
        latency: rate.is_some(),
        stall,
        deadline,
    };
    let receivers = Members::start(&ctx, &plan, credit.clone())?;
    progress(label, format_args!("{members} members joined"));
    let mut pipeline = Sender::new(
        &ctx,
        &d.group_address,
        &d.group,
        &sender,
        args.fan_window(),
        // A paced sender sends each message when it is due.
        if rate.is_some() { 1 } else { args.batch },
        stall,
    )?;
    let mut ticker = Ticker::new(label, deadline);
    let start = ticker.start_ns();
    for i in 0..messages {
        ticker.pace(i, rate);
        if members > 0 && !credit.ready(i) {
            // What is gathered must reach the members before they can grant more.
            pipeline.flush()?;
            credit.wait(i, stall)?;
        }
        ticker.tick(i, messages)?;
        pipeline.send(payload::text(i, payload::now_ns(), args.size))?;
    }
    pipeline.finish()?;
    let send_ns = payload::now_ns() - start;
    let tallies = receivers.finish()?;
    let stored = wire::last_seq(pipeline.pipeline(), &d.group, &sender)? - base;
    Ok(Fan::new(messages, members, start, send_ns, tallies, stored))
}

/// `fanout`: every message stored and delivered to every member.
///
/// # Errors
/// A deployment that does not start, or a stalled or refused load.
pub fn fanout(args: &BenchArgs) -> Result<Value> {
    let d = Deployment::start(args)?;
    let messages = args.messages.unwrap_or(200_000);
    let members = args.members.unwrap_or(10);
    let fan = fan(args, &d, "fanout", messages, members, None)?;
    Ok(stats::merge(
        fan.json(),
        json!({
            "size": args.size,
            "window": args.fan_window(),
            "ahead": args.ahead,
            "batch": args.batch,
        }),
    ))
}

/// `latency`: a paced sender; send-to-receipt percentiles over every delivery.
///
/// # Errors
/// As [`fanout`].
pub fn latency(args: &BenchArgs) -> Result<Value> {
    let d = Deployment::start(args)?;
    let messages = args
        .messages
        .unwrap_or((args.rate as f64 * args.duration) as u64);
    let members = args.members.unwrap_or(10);
    let mut fan = fan(args, &d, "latency", messages, members, Some(args.rate))?;
    let percentiles = Percentiles::of(&mut fan.latencies());
    Ok(stats::merge(
        stats::merge(fan.json(), percentiles.json()),
        json!({
            "rate": args.rate,
            "sent_per_s": per_s(messages, fan.send_ns),
            "size": args.size,
        }),
    ))
}

/// `rtt`: one send at a time, each waiting for its ACK.
///
/// # Errors
/// As [`fanout`].
pub fn rtt(args: &BenchArgs) -> Result<Value> {
    let d = Deployment::start(args)?;
    let messages = args.messages.unwrap_or(20_000);
    let ctx = zmq::Context::new();
    let user = format!("{}-r", run_prefix());
    let stall = args.stall();
    let deadline = args.deadline();
    wire::join(&ctx, &d.group_address, &d.group, &user, stall)?;
    let mut wire = wire::connect(&ctx, &d.group_address, stall)?;
    let send = |i: u64| Request::Send {
        group: d.group.clone(),
        user: user.clone(),
        client_id: format!("{user}-{i}"),
        text: payload::text(i, payload::now_ns(), args.size),
    };
    let call = |i: u64| -> Result<u64> {
        let request = send(i);
        let t0 = payload::now_ns();
        match wire.call(&request)? {
            Reply::Ack { .. } => Ok(payload::now_ns() - t0),
            other => Err(Error::Protocol(format!("expected ACK, got {other:?}"))),
        }
    };
    let timed = time_calls("rtt", messages, deadline, call)?;
    Ok(stats::merge(timed, json!({"size": args.size})))
}

/// What a multi-sender load stored.
pub(crate) struct Ingest {
    /// First send to the last ACK of the slowest sender, ns.
    pub ns: u64,
    /// The group's last seq moved by this much.
    pub stored: u64,
    /// The senders' names (members of the group), for reading back.
    pub users: Vec<String>,
    /// The group's last seq before the load.
    pub base: u64,
}

/// `senders` pipelining senders storing `messages` in all, acknowledged once stored.
pub(crate) fn ingest_into(
    args: &BenchArgs,
    d: &Deployment,
    label: &'static str,
    messages: u64,
    senders: usize,
) -> Result<Ingest> {
    let ctx = zmq::Context::new();
    let prefix = run_prefix();
    let stall = args.stall();
    let senders = senders.max(1);
    let users: Vec<String> = (0..senders).map(|i| format!("{prefix}-i{i}")).collect();
    let mut base = u64::MAX;
    for user in &users {
        base = base.min(wire::join(&ctx, &d.group_address, &d.group, user, stall)?);
    }
    // Connections are made here, before any thread starts, so a failure cannot leave the
    // others waiting; each thread then starts sending at once.
    let pipelines = users
        .iter()
        .map(|user| {
            Sender::new(
                &ctx,
                &d.group_address,
                &d.group,
                user,
                args.ingest_window(),
                args.batch,
                stall,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let ns = send_shares(
        args,
        label,
        pipelines,
        messages,
        Sender::send,
        Sender::finish,
    )?;
    let mut wire = wire::connect(&ctx, &d.group_address, stall)?;
    let stored = wire::last_seq(&mut wire, &d.group, &users[0])? - base;
    Ok(Ingest {
        ns,
        stored,
        users,
        base,
    })
}

/// `ingest`: several pipelining senders, stored messages per second.
///
/// # Errors
/// As [`fanout`].
pub fn ingest(args: &BenchArgs) -> Result<Value> {
    let d = Deployment::start(args)?;
    let messages = args.messages.unwrap_or(200_000);
    let senders = args.senders.unwrap_or(4);
    let load = ingest_into(args, &d, "ingest", messages, senders)?;
    Ok(json!({
        "messages": messages,
        "senders": senders,
        "window": args.ingest_window(),
        "batch": args.batch,
        "size": args.size,
        "msgs_per_s": per_s(messages, load.ns),
        "stored": load.stored,
        "lost": messages.saturating_sub(load.stored),
        "duration_s": seconds(load.ns),
    }))
}

/// Times `read` `REPEAT` times; returns the milliseconds of each and the last result.
fn timed<T>(mut read: impl FnMut() -> Result<T>) -> Result<(Vec<f64>, T)> {
    const REPEAT: usize = 3;
    let mut ms = Vec::with_capacity(REPEAT);
    let mut last = None;
    for _ in 0..REPEAT {
        let t0 = payload::now_ns();
        last = Some(read()?);
        ms.push(round1((payload::now_ns() - t0) as f64 / 1e6));
    }
    Ok((ms, last.expect("bug: REPEAT > 0")))
}

/// Nanoseconds as seconds with millisecond precision.
pub(crate) fn seconds(ns: u64) -> f64 {
    (ns as f64 / 1e6).round() / 1e3
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `history`: messages stored, then read back through the client library (`Session`, which
/// pages 1,000 at a time): all of them, and those since the midpoint message's time.
///
/// # Errors
/// As [`fanout`], or a read that returns the wrong number of messages.
pub fn history(args: &BenchArgs) -> Result<Value> {
    let d = Deployment::start(args)?;
    let messages = args.messages.unwrap_or(100_000).max(2);
    let load = ingest_into(args, &d, "history", messages, args.senders.unwrap_or(4))?;
    progress(
        "history",
        format_args!("{} stored; reading back", load.stored),
    );
    let ctx = zmq::Context::new();
    let mut session = Session::new(
        &ctx,
        vec![transport::endpoint(&d.directory)?],
        &load.users[0],
        Timeouts::default(),
    )?;
    let group = GroupRef {
        name: d.group.clone(),
        address: d.group_address.clone(),
    };
    let (all_ms, all) = timed(|| session.history(&group, None, None))?;
    let all_count = all.len() as u64;
    if all_count < load.stored {
        return Err(Error::Protocol(format!(
            "history returned {all_count} messages; {} were stored",
            load.stored
        )));
    }
    let mid_seq = load.base + messages / 2;
    let mid_ts = all
        .iter()
        .find(|m| m.seq == mid_seq)
        .map(|m| m.ts)
        .ok_or_else(|| Error::Protocol(format!("message #{mid_seq} missing from history")))?;
    drop(all);
    let (since_ms, since) = timed(|| session.history(&group, Some(mid_ts), None))?;
    Ok(json!({
        "messages": messages,
        "size": args.size,
        "load_msgs_per_s": per_s(load.stored, load.ns),
        "all_ms": median(&all_ms),
        "all_ms_runs": all_ms,
        "all_count": all_count,
        "since_ms": median(&since_ms),
        "since_ms_runs": since_ms,
        "since_count": since.len(),
    }))
}
