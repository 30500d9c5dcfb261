//! `raw`: the fanout, latency and rtt workloads on bare libzmq sockets in this process (PUB/SUB
//! and REQ/REP over TCP loopback), so every run shows the limit zms is measured against.
//!
//! Same message size, counts, rate, receiver threads and end-to-end credit as the zms
//! workloads; nothing is stored, nothing is acknowledged but REQ/REP's reply.
//!
//! `fanout`, `latency` and `rtt` run both ends on one libzmq context, so one I/O thread writes
//! and reads both ends of each connection: the goals' baselines. `latency_apart` and
//! `rtt_apart` give each end a context of its own, so a message crosses two I/O threads as it
//! does between two processes: what libzmq itself can do between a client and a server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::flow::{Credit, StopOnDrop};
use super::stats::{self, per_s, Percentiles};
use super::wire::Tally;
use super::workloads::{join_tallies, Fan};
use super::{payload, progress, time_calls, BenchArgs, Ticker};
use zms::transport::{self, SERVER_SNDHWM};
use zms::{Error, Result};

/// A subscriber queues as much as a zms client DEALER does.
const SUB_RCVHWM: i32 = 100_000;
/// The size of a zms ACK frame, so REP answers like the group server does.
const ACK_LEN: usize = 26;

/// Runs raw fanout, latency and rtt; one JSON object with the three.
///
/// # Errors
/// A socket failure or a stalled receiver.
pub fn run(args: &BenchArgs) -> Result<Value> {
    let ctx = zmq::Context::new();
    let apart = zmq::Context::new();
    let members = args.members.unwrap_or(10);
    let fanout = pubsub(
        args,
        [&ctx, &ctx],
        "raw fanout",
        args.messages.unwrap_or(200_000),
        members,
        None,
    )?;
    let latency_messages = args
        .messages
        .unwrap_or((args.rate as f64 * args.duration) as u64);
    let paced = |contexts: [&zmq::Context; 2], label| -> Result<Value> {
        let mut latency = pubsub(
            args,
            contexts,
            label,
            latency_messages,
            members,
            Some(args.rate),
        )?;
        let percentiles = Percentiles::of(&mut latency.latencies());
        Ok(stats::merge(
            stats::merge(latency.json(), percentiles.json()),
            json!({"rate": args.rate, "sent_per_s": per_s(latency_messages, latency.send_ns)}),
        ))
    };
    let latency = paced([&ctx, &ctx], "raw latency")?;
    let latency_apart = paced([&ctx, &apart], "raw latency apart")?;
    let rtt_messages = args.messages.unwrap_or(20_000);
    let rtt = reqrep(args, [&ctx, &ctx], "raw rtt", rtt_messages)?;
    let rtt_apart = reqrep(args, [&ctx, &apart], "raw rtt apart", rtt_messages)?;
    Ok(json!({
        "size": args.size,
        "fanout": fanout.json(),
        "latency": latency,
        "latency_apart": latency_apart,
        "rtt": rtt,
        "rtt_apart": rtt_apart,
    }))
}

/// One PUB to `members` SUBs, each on its own thread; the PUB on the first context, the SUBs
/// on the second.
fn pubsub(
    args: &BenchArgs,
    [ctx, sub_ctx]: [&zmq::Context; 2],
    label: &'static str,
    messages: u64,
    members: usize,
    rate: Option<u64>,
) -> Result<Fan> {
    let stall = args.stall();
    let deadline = args.deadline();
    let publisher = transport::socket(ctx, zmq::PUB)?;
    publisher.set_sndhwm(SERVER_SNDHWM)?;
    publisher.bind("tcp://127.0.0.1:*")?;
    let endpoint = publisher
        .get_last_endpoint()?
        .map_err(|_| Error::Protocol("PUB endpoint is not UTF-8".into()))?;
    let credit = Arc::new(Credit::new(members.max(1), args.ahead));
    let stop = Arc::new(AtomicBool::new(false));
    // Whatever way this returns, the receiver threads stop within one poll.
    let _stop_on_return = StopOnDrop(stop.clone());
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for m in 0..members {
        let subscriber = transport::socket(sub_ctx, zmq::SUB)?;
        subscriber.set_rcvhwm(SUB_RCVHWM)?;
        subscriber.set_subscribe(b"")?;
        subscriber.connect(&endpoint)?;
        let (credit, stop, ready) = (credit.clone(), stop.clone(), ready_tx.clone());
        let latency = rate.is_some();
        handles.push(
            std::thread::Builder::new()
                .name(format!("sub-{m}"))
                .spawn(move || {
                    subscribe(
                        m,
                        &subscriber,
                        messages,
                        latency,
                        &credit,
                        &stop,
                        &ready,
                        stall,
                        deadline,
                    )
                })?,
        );
    }
    drop(ready_tx);
    // PUB drops whatever is sent before a SUB has connected (the slow joiner): send probes
    // until every subscriber has seen one.
    let mut ready = 0;
    let joined_by = Instant::now() + stall;
    while ready < members {
        if Instant::now() >= joined_by {
            stop.store(true, Ordering::SeqCst);
            return Err(Error::Timeout(format!(
                "{ready} of {members} subscribers connected within {:.0} s",
                stall.as_secs_f64()
            )));
        }
        publisher.send(&b"probe"[..], 0)?;
        while ready_rx.recv_timeout(Duration::from_millis(1)).is_ok() {
            ready += 1;
        }
    }
    progress(label, format_args!("{members} subscribers connected"));
    let mut ticker = Ticker::new(label, deadline);
    let start = ticker.start_ns();
    let sent = (|| {
        for i in 0..messages {
            ticker.pace(i, rate);
            if members > 0 {
                credit.wait(i, stall)?;
            }
            ticker.tick(i, messages)?;
            publisher.send(payload::text(i, payload::now_ns(), args.size).as_bytes(), 0)?;
        }
        Ok(())
    })();
    if let Err(err) = sent {
        stop.store(true, Ordering::SeqCst);
        return Err(err);
    }
    let send_ns = payload::now_ns() - start;
    let tallies = join_tallies(handles, "subscriber")?;
    Ok(Fan::new(messages, members, start, send_ns, tallies, 0))
}

#[allow(clippy::too_many_arguments)]
fn subscribe(
    m: usize,
    subscriber: &zmq::Socket,
    expect: u64,
    latency: bool,
    credit: &Credit,
    stop: &AtomicBool,
    ready: &mpsc::Sender<()>,
    stall: Duration,
    deadline: Instant,
) -> Result<Tally> {
    let mut tally = Tally::new(expect, latency);
    let mut msg = zmq::Message::new();
    let mut announced = false;
    let mut last_frame = Instant::now();
    while !stop.load(Ordering::Relaxed) && !tally.complete() {
        let now = Instant::now();
        if now >= deadline || now.duration_since(last_frame) >= stall {
            break;
        }
        let mut items = [subscriber.as_poll_item(zmq::POLLIN)];
        if transport::poll(&mut items, Duration::from_millis(100))? == 0 {
            continue;
        }
        loop {
            match subscriber.recv(&mut msg, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            }
            last_frame = Instant::now();
            match payload::parse(&msg) {
                Some((index, sent)) => tally.record(index, sent, payload::now_ns()),
                None if !announced => {
                    announced = true;
                    let _ = ready.send(());
                }
                None => {}
            }
        }
        credit.update(m, tally.distinct);
    }
    Ok(tally)
}

/// REQ/REP: one request at a time, each waiting for its reply; the REQ on the first context,
/// the REP on the second.
fn reqrep(
    args: &BenchArgs,
    [ctx, rep_ctx]: [&zmq::Context; 2],
    label: &'static str,
    messages: u64,
) -> Result<Value> {
    let stall = args.stall();
    let deadline = args.deadline();
    let rep = transport::socket(rep_ctx, zmq::REP)?;
    rep.bind("tcp://127.0.0.1:*")?;
    let endpoint = rep
        .get_last_endpoint()?
        .map_err(|_| Error::Protocol("REP endpoint is not UTF-8".into()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let replier = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("rep".into())
            .spawn(move || -> Result<()> {
                let mut msg = zmq::Message::new();
                let reply = [0u8; ACK_LEN];
                while !stop.load(Ordering::Relaxed) {
                    let mut items = [rep.as_poll_item(zmq::POLLIN)];
                    if transport::poll(&mut items, Duration::from_millis(100))? == 0 {
                        continue;
                    }
                    rep.recv(&mut msg, 0)?;
                    rep.send(&reply[..], 0)?;
                }
                Ok(())
            })?
    };
    let result = (|| {
        let req = transport::socket(ctx, zmq::REQ)?;
        req.set_rcvtimeo(stall.as_millis() as i32)?;
        req.set_sndtimeo(stall.as_millis() as i32)?;
        req.connect(&endpoint)?;
        let mut reply = zmq::Message::new();
        let call = |i: u64| -> Result<u64> {
            let t0 = payload::now_ns();
            req.send(payload::text(i, t0, args.size).as_bytes(), 0)?;
            match req.recv(&mut reply, 0) {
                Ok(()) => Ok(payload::now_ns() - t0),
                Err(zmq::Error::EAGAIN) => Err(Error::Timeout(format!(
                    "REP did not answer within {:.0} s",
                    stall.as_secs_f64()
                ))),
                Err(e) => Err(e.into()),
            }
        };
        time_calls(label, messages, deadline, call)
    })();
    stop.store(true, Ordering::SeqCst);
    replier
        .join()
        .map_err(|_| Error::Protocol("the REP thread panicked".into()))??;
    result
}
