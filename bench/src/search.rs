//! `search`: messages stored, then searched through the client library (SEARCH, the group
//! server's full-text index): a word one message of each sender holds, a word every message
//! holds (the newest 20 of them), and two words together. Each query is timed from the
//! request to the reply, many times over; the figures are the median and the slowest. The
//! group server indexes while idle, not as it stores, so the first query after the load also
//! indexes what it has not yet: timed on its own, before the others (`--idle` leaves the
//! server time to index first).

use serde_json::{json, Value};

use super::deploy::Deployment;
use super::stats::per_s;
use super::workloads::ingest_into;
use super::{progress, BenchArgs};
use zms::client::{GroupRef, Session, Timeouts};
use zms::{transport, Error, Result};

/// Times each query is asked.
const REPEAT: usize = 50;
/// Hits asked for per query.
const LIMIT: u32 = 20;

/// Runs the workload: `--messages` stored (1,000,000 by default), then the queries.
///
/// # Errors
/// A failed load or query, or a query that finds what it should not.
pub fn run(args: &BenchArgs) -> Result<Value> {
    let d = Deployment::start(args)?;
    let messages = args.messages.unwrap_or(1_000_000).max(2);
    let load = ingest_into(args, &d, "search", messages, args.senders.unwrap_or(4))?;
    progress("search", format_args!("{} stored; searching", load.stored));
    // Left idle, the group server indexes what it stored (0 s by default: the first query
    // does it).
    std::thread::sleep(std::time::Duration::from_secs_f64(args.idle.max(0.0)));
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
    // Each text starts with its sender's index of it in ten digits (payload.rs): a word of
    // one message of each sender.
    let rare = format!("{:010}", 1);
    let common = "x".repeat(args.size.saturating_sub(super::payload::HEADER_LEN));
    let both = format!("{rare} {common}");
    let mut results = serde_json::Map::new();
    let senders = load.users.len();
    let started = std::time::Instant::now();
    let hits = session.search(&group, &rare, 0, LIMIT)?;
    let first_ms = started.elapsed().as_secs_f64() * 1000.0;
    if hits.len() != senders {
        return Err(Error::Protocol(format!(
            "first search: {} hits, {senders} expected",
            hits.len()
        )));
    }
    for (name, query, want) in [
        ("one_per_sender", rare.as_str(), senders),
        ("newest_of_all", common.as_str(), LIMIT as usize),
        ("two_words", both.as_str(), senders),
    ] {
        if query.is_empty() {
            continue;
        }
        let mut ms = Vec::with_capacity(REPEAT);
        for _ in 0..REPEAT {
            let started = std::time::Instant::now();
            let hits = session.search(&group, query, 0, LIMIT)?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            if hits.len() != want {
                return Err(Error::Protocol(format!(
                    "search {name}: {} hits, {want} expected",
                    hits.len()
                )));
            }
        }
        ms.sort_by(f64::total_cmp);
        results.insert(
            name.to_string(),
            json!({"p50_ms": ms[ms.len() / 2], "max_ms": ms[ms.len() - 1]}),
        );
    }
    Ok(json!({
        "messages": messages,
        "size": args.size,
        "load_msgs_per_s": per_s(load.stored, load.ns),
        "idle_s": args.idle.max(0.0),
        "first_ms": first_ms,
        "queries": results,
    }))
}
