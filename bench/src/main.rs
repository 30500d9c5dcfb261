//! `zms-bench`: a load generator for zms, like `nats bench` or `redis-benchmark`.
//!
//! Each workload prints ONE JSON line on stdout (progress goes to stderr) and returns an error
//! when a message was lost, so scripts can rely on the exit status. By default every workload
//! starts its own message server and group server as child processes of the `zms` binary
//! ([`deploy`]), with production settings and a fresh data directory; `--server` aims it at a
//! running deployment instead.
//!
//! This file owns the flags and the dispatch. The pieces:
//!
//! - [`deploy`]: servers as child processes, their peak RSS, a temporary data directory.
//! - [`wire`]: zms clients on the public client API: senders pipelining through
//!   [`zms::client::Pipeline`], and members counting deliveries by seq.
//! - [`payload`], [`stats`], [`flow`]: what a message carries, percentiles, receiver-paced credit.
//! - [`workloads`] (fanout, latency, rtt, ingest, history), [`scale`], [`raw`] (bare libzmq),
//!   [`nats`] (the same workloads against a NATS server) and [`redis`] (ingest against a Redis
//!   server) produce the figures.
//! - [`tcp`]: the buffered TCP connection under the [`nats`] and [`redis`] clients.
//!
//! It leaves the servers and the client library alone: it measures them as they are.

pub mod deploy;
pub mod flow;
pub mod nats;
pub mod payload;
pub mod raw;
pub mod redis;
pub mod scale;
pub mod search;
pub mod stats;
pub mod tcp;
pub mod wire;
pub mod workloads;

use std::time::{Duration, Instant};

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde_json::Value;

use zms::{errinput, Error, Result};

/// What `zms-bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// 1 sender, N members: every message stored and delivered to every member.
    Fanout,
    /// 1 sender at a fixed rate to N members: send-to-receipt percentiles.
    Latency,
    /// One send at a time, each waiting for its acknowledgement.
    Rtt,
    /// Several pipelining senders, acknowledged once stored: stored messages per second.
    Ingest,
    /// Messages stored, then read back: all of them, and since the midpoint time.
    History,
    /// 10,000 groups listed, 1,000 members, 1,000,000 messages stored: latency and memory.
    Scale,
    /// 1,000,000 messages stored, then searched (full text): query times.
    Search,
    /// fanout, latency and rtt on bare libzmq sockets (PUB/SUB, REQ/REP): the limit.
    Raw,
    /// fanout, latency and rtt against a NATS server (`--nats`, `--jetstream`).
    Nats,
    /// ingest against a Redis server (`--redis`): pipelined XADDs into one stream.
    Redis,
    /// Every zms workload and raw, one line each.
    All,
}

/// Flags of `zms-bench`. Counts left unset take each workload's default (see `--help`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "zms-bench",
    version,
    about = "Load-test zms (fanout, latency, rtt, ingest, history, scale), bare libzmq (raw), \
             NATS or Redis; one JSON line per workload"
)]
pub struct BenchArgs {
    /// The workload: fanout, latency, rtt, ingest, history, scale, raw, nats, redis or all.
    #[arg(value_enum)]
    pub workload: Option<Workload>,
    /// The workload, as a flag (instead of the positional argument).
    #[arg(
        long = "workload",
        value_enum,
        conflicts_with = "workload",
        value_name = "WORKLOAD"
    )]
    pub workload_flag: Option<Workload>,
    /// The `zms` binary that runs the servers [the one next to this program].
    #[arg(long, env = "ZMS_BIN", value_name = "PATH")]
    pub zms: Option<PathBuf>,
    /// Aim at a running deployment: its message server HOST:PORT (default: start our own).
    #[arg(long)]
    pub server: Option<String>,
    /// Group to load (with --server it must exist there; the bench joins it under its own names).
    #[arg(long, default_value = "bench")]
    pub group: String,
    /// Messages to send [fanout 200000, latency rate×duration, rtt 20000, ingest 200000,
    /// history 100000, scale: fanout to the 1,000 members 2000, search 1000000, redis 200000].
    #[arg(long)]
    pub messages: Option<u64>,
    /// Message text size in bytes (at least 28, the index and send time the bench embeds).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Members receiving [fanout, latency, raw, nats 10; scale 1000].
    #[arg(long)]
    pub members: Option<usize>,
    /// Threads the members are spread over [min(members, 10)].
    #[arg(long)]
    pub member_threads: Option<usize>,
    /// Pipelining senders, each on its own connection [ingest, redis 4; history and scale
    /// preload 4].
    #[arg(long)]
    pub senders: Option<usize>,
    /// Most unacknowledged sends per sender (redis: XADDs awaiting their reply) [fanout and
    /// latency: --ahead, the bound on messages in flight that NATS and raw libzmq get too;
    /// ingest and redis 256].
    #[arg(long)]
    pub window: Option<usize>,
    /// Messages per request of the fanout's and ingest's senders: up to this many go as one
    /// SENDS, as a client with many messages at hand sends them (the most a SENDS holds, by
    /// default); 1 sends each as a SEND. The paced latency workload and rtt send one at a time.
    #[arg(long, default_value_t = zms::protocol::MAX_BATCH)]
    pub batch: usize,
    /// Most messages a sender may run ahead of its slowest receiver: end-to-end credit that
    /// keeps every queue well under the 10,000-message high-water marks (libzmq learns what its
    /// peer has read only every HWM/2 messages, so a pipe can look full at half its HWM).
    #[arg(long, default_value_t = 2000)]
    pub ahead: u64,
    /// Messages per second of the latency workload.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Seconds the latency workload runs.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Groups the scale workload registers with the message server.
    #[arg(long, default_value_t = 10_000)]
    pub groups: usize,
    /// LIST requests the scale workload times.
    #[arg(long, default_value_t = 1000)]
    pub lists: usize,
    /// Messages the scale workload stores before measuring the group server's memory.
    #[arg(long, default_value_t = 1_000_000)]
    pub stored: u64,
    /// Start the group server with --fsync (survive power loss) instead of the default durability.
    #[arg(long)]
    pub fsync: bool,
    /// Start the group server in cluster mode on this PostgreSQL database (`--store`: a libpq
    /// URL or key=value string) instead of SQLite in a temporary directory.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// NATS server HOST:PORT for the nats workload.
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub nats: String,
    /// nats workload: publish through JetStream (stored, acknowledged) instead of core NATS.
    #[arg(long)]
    pub jetstream: bool,
    /// nats workload with --jetstream: the stream's replicas (3 on a three-node cluster: a
    /// publish is acknowledged once a quorum of two has it).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Redis server HOST:PORT for the redis workload (its stream `zmsbench:ingest` is replaced).
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// Fail a wait that sees no progress (no ACK, reply or delivery) for this many seconds.
    #[arg(long, default_value_t = 15.0)]
    pub stall: f64,
    /// Fail a workload that has not finished after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// search: seconds to leave the group server idle between storing and the first query,
    /// so it indexes the messages itself rather than the first query.
    #[arg(long, default_value_t = 0.0)]
    pub idle: f64,
}

impl BenchArgs {
    /// The chosen workload.
    ///
    /// # Errors
    /// [`Error::Input`] when none was named.
    pub fn workload(&self) -> Result<Workload> {
        self.workload.or(self.workload_flag).ok_or_else(|| {
            errinput!(
                "name a workload: fanout, latency, rtt, ingest, history, scale, raw, nats, redis or all"
            )
        })
    }

    /// How long a wait may see no progress.
    pub fn stall(&self) -> Duration {
        Duration::from_secs_f64(self.stall.max(0.1))
    }

    /// When the current workload must have finished, counted from now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs_f64(self.timeout.max(1.0))
    }

    /// The window of a fan-out's sender: by default as many messages in flight, acknowledged
    /// or not, as it may run ahead of its receivers.
    pub fn fan_window(&self) -> usize {
        self.window
            .unwrap_or(usize::try_from(self.ahead).unwrap_or(usize::MAX))
    }

    /// The window of each of ingest's senders, 256 unless `--window` says otherwise.
    pub fn ingest_window(&self) -> usize {
        self.window.unwrap_or(256)
    }

    fn check(&self) -> Result<()> {
        if self.size < payload::HEADER_LEN || self.size > zms::protocol::MAX_TEXT {
            return Err(errinput!(
                "--size must be {} to {} bytes",
                payload::HEADER_LEN,
                zms::protocol::MAX_TEXT
            ));
        }
        if self.batch == 0 || self.batch > zms::protocol::MAX_BATCH {
            return Err(errinput!(
                "--batch must be 1 to {}",
                zms::protocol::MAX_BATCH
            ));
        }
        if self.window == Some(0) || self.ahead == 0 || self.rate == 0 || self.duration <= 0.0 {
            return Err(errinput!(
                "--window, --ahead, --rate and --duration must be positive"
            ));
        }
        Ok(())
    }
}

fn main() {
    let args = BenchArgs::parse();
    if let Err(err) = run(args) {
        // Errors may quote a server's words: shown harmlessly, never as terminal control.
        eprintln!("error: {}", zms::user::safe::field(&err.to_string()));
        std::process::exit(1);
    }
}

/// Runs the workload(s) and prints one JSON line each.
///
/// # Errors
/// A workload that failed, timed out or lost messages (its line is printed first when it
/// got that far).
pub fn run(args: BenchArgs) -> Result<()> {
    args.check()?;
    match args.workload()? {
        Workload::All => {
            for w in [
                Workload::Fanout,
                Workload::Latency,
                Workload::Rtt,
                Workload::Ingest,
                Workload::History,
                Workload::Scale,
                Workload::Raw,
            ] {
                run_one(&args, w)?;
            }
            Ok(())
        }
        w => run_one(&args, w),
    }
}

fn run_one(args: &BenchArgs, workload: Workload) -> Result<()> {
    let name = workload
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    progress(&name, format_args!("starting"));
    let mut line = match workload {
        Workload::Fanout => workloads::fanout(args)?,
        Workload::Latency => workloads::latency(args)?,
        Workload::Rtt => workloads::rtt(args)?,
        Workload::Ingest => workloads::ingest(args)?,
        Workload::History => workloads::history(args)?,
        Workload::Scale => scale::run(args)?,
        Workload::Search => search::run(args)?,
        Workload::Raw => raw::run(args)?,
        Workload::Nats => nats::run(args)?,
        Workload::Redis => redis::run(args)?,
        Workload::All => unreachable!("bug: all is expanded by run"),
    };
    if let Value::Object(map) = &mut line {
        map.insert("workload".into(), Value::String(name.clone()));
    }
    println!("{line}");
    let lost = total_lost(&line);
    if lost > 0 {
        return Err(Error::Protocol(format!(
            "{name}: {lost} deliveries lost (see the JSON line)"
        )));
    }
    Ok(())
}

/// Sums every `lost` field of a result, however deeply nested.
fn total_lost(value: &Value) -> u64 {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("lost", Value::Number(n)) => n.as_u64().unwrap_or(0),
                _ => total_lost(v),
            })
            .sum(),
        Value::Array(items) => items.iter().map(total_lost).sum(),
        _ => 0,
    }
}

/// One progress line on stderr.
pub fn progress(workload: &str, what: std::fmt::Arguments<'_>) {
    eprintln!("bench {workload}: {what}");
}

/// The clock of a sending loop: it paces messages to a rate, fails the workload past its
/// deadline, and prints progress on stderr at most once a second.
pub struct Ticker {
    label: &'static str,
    deadline: Instant,
    /// Whether it prints progress (one of several parallel senders speaks for all).
    reports: bool,
    calls: u64,
    next: Instant,
    started: Instant,
    /// When the loop started, on the clock the payloads carry ([`payload::now_ns`]).
    start_ns: u64,
}

impl Ticker {
    pub fn new(label: &'static str, deadline: Instant) -> Ticker {
        let now = Instant::now();
        Ticker {
            label,
            deadline,
            reports: true,
            calls: 0,
            next: now + Duration::from_secs(1),
            started: now,
            start_ns: payload::now_ns(),
        }
    }

    /// A ticker that paces and keeps the deadline but prints nothing.
    pub fn quiet(label: &'static str, deadline: Instant) -> Ticker {
        Ticker {
            reports: false,
            ..Ticker::new(label, deadline)
        }
    }

    /// When the loop started, in [`payload::now_ns`] nanoseconds.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// Sleeps until message `i` is due at `rate` messages a second; without a rate, at once.
    pub fn pace(&self, i: u64, rate: Option<u64>) {
        if let Some(rate) = rate {
            // Pacing, not synchronisation: message i is due i/rate seconds after the start.
            let due = self.start_ns + i * 1_000_000_000 / rate;
            let now = payload::now_ns();
            if due > now {
                std::thread::sleep(Duration::from_nanos(due - now));
            }
        }
    }

    /// Called once per message; every 1,024 calls it fails past the deadline, and reports
    /// `done` of `total` when a second has passed since the last report.
    ///
    /// # Errors
    /// The deadline passing.
    pub fn tick(&mut self, done: u64, total: u64) -> Result<()> {
        let check = self.calls.is_multiple_of(1024);
        self.calls += 1;
        if !check {
            return Ok(());
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Err(Error::Timeout(format!(
                "{}: the workload did not finish before --timeout",
                self.label
            )));
        }
        if self.reports && now >= self.next {
            self.next = now + Duration::from_secs(1);
            progress(
                self.label,
                format_args!(
                    "{done}/{total} after {:.1} s",
                    now.duration_since(self.started).as_secs_f64()
                ),
            );
        }
        Ok(())
    }
}

/// One-at-a-time round trips: `call(i)` makes call number `i` and returns how long it took
/// (ns). After a warm-up of up to 100 unmeasured calls (connections, caches), `messages` calls
/// are timed; the result is their percentiles with `messages` and `per_s`.
///
/// # Errors
/// The first failed call, or the deadline passing.
pub fn time_calls(
    label: &'static str,
    messages: u64,
    deadline: Instant,
    mut call: impl FnMut(u64) -> Result<u64>,
) -> Result<Value> {
    let warmup = 100.min(messages);
    for i in 0..warmup {
        call(i)?;
    }
    let mut samples = Vec::with_capacity(messages as usize);
    let mut ticker = Ticker::new(label, deadline);
    for i in 0..messages {
        ticker.tick(i, messages)?;
        samples.push(call(warmup + i)?);
    }
    let total = payload::now_ns() - ticker.start_ns();
    Ok(stats::merge(
        stats::Percentiles::of(&mut samples).json(),
        serde_json::json!({"messages": messages, "per_s": stats::per_s(messages, total)}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lost_is_summed_at_any_depth() {
        let v = json!({"lost": 1, "fanout": {"lost": 2}, "x": [{"lost": 3}], "p50_us": 4});
        assert_eq!(total_lost(&v), 6);
    }
}
