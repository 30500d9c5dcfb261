//! `scale`: zms at size. 10,000 groups in the message server's list (registered
//! by the bench as synthetic group servers, with the same REGISTER frames a group server
//! sends), LIST latency; 1,000,000 messages stored and 1,000 connected members on one group
//! server, fan-out throughput; and the peak RSS (VmHWM) of both servers afterwards.

use serde_json::{json, Value};

use super::deploy::Deployment;
use super::payload;
use super::stats::{per_s, round1, round2, Percentiles};
use super::wire;
use super::workloads::{fan, ingest_into, run_prefix};
use super::{progress, BenchArgs};
use zms::protocol::codec::{self, Incoming};
use zms::protocol::{Reply, Request, MAX_GROUPS_PER_SERVER};
use zms::{transport, Error, Result};

/// Groups per synthetic group server (a real one may announce up to 10,000).
const GROUPS_PER_SERVER: usize = 1000;
/// Registrations outlive the measurement without refreshing (the directory caps TTLs at 60 s).
const TTL_MS: u32 = 60_000;

/// Runs the scale workload.
///
/// # Errors
/// A refused registration, a short LIST, or a failed load.
pub fn run(args: &BenchArgs) -> Result<Value> {
    let d = Deployment::start(args)?;
    let ctx = zmq::Context::new();
    let stall = args.stall();
    let prefix = run_prefix();

    // 1. The directory with `groups` groups.
    let mut dir = wire::connect(&ctx, &d.directory, stall)?;
    let per_server = GROUPS_PER_SERVER.min(MAX_GROUPS_PER_SERVER);
    let servers: Vec<String> = (0..args.groups.div_ceil(per_server))
        .map(|k| format!("127.0.0.1:{}", 1 + k))
        .collect();
    for (k, address) in servers.iter().enumerate() {
        let groups = (k * per_server..args.groups.min((k + 1) * per_server))
            .map(|j| format!("{prefix}-g{j}"))
            .collect();
        let request = Request::Register {
            address: address.clone(),
            ttl_ms: TTL_MS,
            groups,
            key: String::new(),
            replace: false,
        };
        dir.call(&request)?;
    }
    // Timed to the whole reply on the wire, and again once decoded (what a client sees).
    let mut wire_ns = Vec::with_capacity(args.lists);
    let mut samples = Vec::with_capacity(args.lists);
    let (mut listed, mut list_bytes) = (0, 0);
    // LIST on a DEALER of its own, read raw: the time to the whole reply is apart from decoding.
    let lister = transport::socket(&ctx, zmq::DEALER)?;
    lister.connect(&transport::endpoint(&d.directory)?)?;
    for i in 0..args.lists {
        let t0 = payload::now_ns();
        let id = i as u32 + 1;
        lister.send(codec::encode_request(id, &Request::List), 0)?;
        let frame = recv_frame(&lister, stall)?;
        wire_ns.push(payload::now_ns() - t0);
        match codec::decode_incoming(&frame) {
            Ok(Incoming::Reply(got, Reply::Groups(groups))) if got == id => {
                listed = groups.len();
                list_bytes = frame.len();
            }
            other => return Err(Error::Protocol(format!("expected GROUPS, got {other:?}"))),
        }
        samples.push(payload::now_ns() - t0);
    }
    if listed < args.groups {
        return Err(Error::Protocol(format!(
            "LIST returned {listed} groups; {} were registered",
            args.groups
        )));
    }
    let list = Percentiles::of(&mut samples);
    let list_wire = Percentiles::of(&mut wire_ns);
    progress(
        "scale",
        format_args!(
            "{listed} groups listed, LIST p99 {:.2} ms",
            list.p99_us / 1000.0
        ),
    );

    // 2. The group server with `stored` messages…
    let load = ingest_into(args, &d, "scale", args.stored, args.senders.unwrap_or(4))?;
    progress("scale", format_args!("{} messages stored", load.stored));
    let (rss_after_store, _) = d.peak_rss_mib();
    // …and `members` connected members receiving a fan-out.
    let members = args.members.unwrap_or(1000);
    let messages = args.messages.unwrap_or(2000);
    let fan = fan(args, &d, "scale", messages, members, None)?;
    let deliveries: u64 = fan.tallies.iter().map(|t| t.distinct).sum();
    let (group_rss, directory_rss) = d.peak_rss_mib();

    for address in servers {
        let _ = dir.call(&Request::Unregister { address });
    }
    Ok(json!({
        "groups": args.groups,
        "listed": listed,
        "list_p50_ms": round2(list.p50_us / 1000.0),
        "list_p99_ms": round2(list.p99_us / 1000.0),
        "list_max_ms": round2(list.max_us / 1000.0),
        "list_wire_p50_ms": round2(list_wire.p50_us / 1000.0),
        "list_wire_p99_ms": round2(list_wire.p99_us / 1000.0),
        "list_bytes": list_bytes,
        "stored": load.stored,
        "store_msgs_per_s": per_s(load.stored, load.ns),
        "members": members,
        "messages": messages,
        "deliveries": deliveries,
        "deliveries_per_s": per_s(deliveries, fan.deliver_ns),
        "lost": fan.tallies.iter().map(|t| t.lost()).sum::<u64>(),
        "group_rss_mib": group_rss.map(round1),
        "group_rss_before_fanout_mib": rss_after_store.map(round1),
        "directory_rss_mib": directory_rss.map(round1),
    }))
}

/// The next frame on `socket`, waiting at most `stall`.
fn recv_frame(socket: &zmq::Socket, stall: std::time::Duration) -> Result<Vec<u8>> {
    let mut items = [socket.as_poll_item(zmq::POLLIN)];
    if transport::poll(&mut items, stall)? == 0 {
        return Err(Error::Timeout(format!(
            "the message server did not answer LIST within {:.0} s",
            stall.as_secs_f64()
        )));
    }
    Ok(socket.recv_bytes(0)?)
}
