//! Cluster mode under faults: group servers on one PostgreSQL SIGKILLed, frozen (SIGSTOP) past
//! their lease and joined by a new one, while senders send numbered messages through the
//! client library and members follow live. Every acknowledged message must be stored once,
//! seqs gap-free, and every member must see each message once, in order, whichever server
//! owns the group meanwhile. Each test prints its figures (sent, acknowledged, stored,
//! delivered, lost, duplicated, takeover times); the heavy version is `#[ignore]`d:
//! `cargo test --test failover -- --ignored --nocapture`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::{cluster_server, Postgres};
use common::*;
use zms::client::SessionEvent;
use zms::protocol::Message;

/// How long any one awaited event may take: generous, for a machine busy with other work.
const LIMIT: Duration = Duration::from_secs(60);

/// The pid of the server holding `group`'s live lease, per the database.
fn owner(pg: &Postgres, db: &str, group: &str) -> Option<u32> {
    pg.psql(
        db,
        &format!(
            "SELECT split_part(owner, '-', 1) FROM groups
             WHERE name = '{group}' AND lease_until > now()"
        ),
    )
    .parse()
    .ok()
}

/// What a sender or member thread saw.
#[derive(Default)]
struct Tally {
    /// Acknowledged sends: (group, text) → seq.
    acked: HashMap<(String, String), u64>,
    /// Sends that failed at least once before they were acknowledged (retried under the
    /// same client id).
    retried: usize,
}

/// A load on a cluster: `senders` threads sending numbered messages round the `groups` and
/// `members` threads following them all live, until [`Load::finish`].
struct Load {
    groups: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    senders: Vec<std::thread::JoinHandle<Tally>>,
    members: Vec<std::thread::JoinHandle<Vec<(String, Message, usize)>>>,
    /// Per group, the last seq members must reach; `u64::MAX` until the senders are done.
    targets: Arc<Mutex<HashMap<String, u64>>>,
}

impl Load {
    fn start(directory: &str, groups: &[&str], senders: usize, members: usize) -> Load {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let targets = Arc::new(Mutex::new(HashMap::new()));
        let (joined_tx, joined_rx) = std::sync::mpsc::channel();
        let member_threads = (0..members)
            .map(|i| {
                let (directory, groups, targets) =
                    (directory.to_string(), groups.clone(), targets.clone());
                let joined = joined_tx.clone();
                std::thread::spawn(move || {
                    member(&directory, &format!("m{i}"), &groups, &targets, joined)
                })
            })
            .collect();
        for _ in 0..members {
            joined_rx.recv_timeout(LIMIT).expect("members joined");
        }
        let sender_threads = (0..senders)
            .map(|i| {
                let (directory, groups) = (directory.to_string(), groups.clone());
                let (stop, acked) = (stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    sender(&directory, &format!("s{i}"), &groups, &stop, &acked)
                })
            })
            .collect();
        Load {
            groups,
            stop,
            acked,
            senders: sender_threads,
            members: member_threads,
            targets,
        }
    }

    /// Acknowledged sends so far, over all senders.
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` further sends are acknowledged; how long that took.
    fn await_acks(&self, more: u64) -> Duration {
        let started = Instant::now();
        let want = self.acked() + more;
        assert!(
            eventually(LIMIT, || self.acked() >= want),
            "sends stalled at {} acknowledged",
            self.acked()
        );
        started.elapsed()
    }

    /// Stops the senders, lets the members catch up, and checks everything against the
    /// database: each acknowledged message stored once at its acknowledged seq, seqs
    /// gap-free, every member saw each once in order. Returns the figures as a line.
    fn finish(self, pg: &Postgres, db: &str) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let tallies: Vec<Tally> = self
            .senders
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let mut acked: HashMap<(String, String), u64> = HashMap::new();
        for tally in &tallies {
            acked.extend(tally.acked.clone());
        }
        let retried: usize = tallies.iter().map(|t| t.retried).sum();
        let mut stored: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for row in pg
            .psql(
                db,
                "SELECT g.name || '|' || m.seq || '|' || m.text FROM messages m
                 JOIN groups g ON g.id = m.group_id ORDER BY g.name, m.seq",
            )
            .lines()
            .filter(|l| !l.is_empty())
        {
            let mut parts = row.splitn(3, '|');
            let (g, seq, text) = (parts.next(), parts.next(), parts.next());
            let (Some(g), Some(seq), Some(text)) = (g, seq, text) else {
                panic!("unreadable row {row}")
            };
            stored
                .entry(g.to_string())
                .or_default()
                .push((seq.parse().unwrap(), text.to_string()));
        }
        {
            let mut targets = self.targets.lock().unwrap();
            for g in &self.groups {
                let last = stored.get(g).map_or(0, |rows| rows.len() as u64);
                targets.insert(g.clone(), last);
            }
        }
        let seen: Vec<Vec<(String, Message, usize)>> = self
            .members
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();

        let stored_count: usize = stored.values().map(Vec::len).sum();
        let mut lost = 0;
        let mut duplicated = 0;
        for (g, rows) in &stored {
            let seqs: Vec<u64> = rows.iter().map(|(s, _)| *s).collect();
            let gap_free: Vec<u64> = (1..=rows.len() as u64).collect();
            assert_eq!(seqs, gap_free, "{g}: seqs gap-free from 1");
            let distinct: HashSet<&String> = rows.iter().map(|(_, t)| t).collect();
            duplicated += rows.len() - distinct.len();
        }
        for ((g, text), seq) in &acked {
            let at = stored
                .get(g)
                .and_then(|rows| rows.get(*seq as usize - 1))
                .filter(|(_, t)| t == text);
            if at.is_none() {
                lost += 1;
            }
        }
        let mut delivered = Vec::new();
        let mut moves = 0;
        for messages in &seen {
            let mut by_group: BTreeMap<&str, Vec<&Message>> = BTreeMap::new();
            for (g, m, moved) in messages {
                by_group.entry(g).or_default().push(m);
                moves = moves.max(*moved);
            }
            for (g, rows) in &stored {
                let got = by_group.remove(g.as_str()).unwrap_or_default();
                let got: Vec<(u64, String)> = got.iter().map(|m| (m.seq, m.text.clone())).collect();
                assert_eq!(
                    &got, rows,
                    "a member saw {g} as stored, each once, in order"
                );
            }
            delivered.push(messages.len());
        }
        let figures = format!(
            "sent {}, acknowledged {}, stored {stored_count}, delivered {delivered:?}, \
             lost {lost}, duplicated {duplicated}, sends retried {retried}, \
             moves followed by a member {moves}",
            acked.len(),
            acked.len()
        );
        assert_eq!((lost, duplicated), (0, 0), "{figures}");
        assert_eq!(
            stored_count,
            acked.len(),
            "stored = acknowledged: {figures}"
        );
        figures
    }
}

/// Sends `s{i}-{n}` round `groups` until `stop`, each under a client id of its own and
/// retried under that id until acknowledged (the library follows a moved group itself).
fn sender(
    directory: &str,
    name: &str,
    groups: &[String],
    stop: &AtomicBool,
    acked: &AtomicU64,
) -> Tally {
    let ctx = zmq::Context::new();
    let mut session = session(&ctx, &format!("tcp://{directory}"), name);
    let refs: Vec<_> = groups
        .iter()
        .map(|g| {
            let group = session.resolve(g).unwrap();
            session.join(&group).unwrap();
            group
        })
        .collect();
    let mut tally = Tally::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let group = &refs[n % refs.len()];
        let text = format!("{name}-{n}");
        let id = session.next_client_id();
        let give_up = Instant::now() + LIMIT;
        let mut failed = false;
        let seq = loop {
            match session.send_with_id(group, &id, &text) {
                Ok((seq, _)) => break seq,
                Err(err) => {
                    assert!(Instant::now() < give_up, "{text} never acknowledged: {err}");
                    failed = true;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        tally.retried += usize::from(failed);
        tally.acked.insert((group.name.clone(), text), seq);
        acked.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    tally
}

/// Joins `groups` as `name`, then takes live messages until each group's target is reached;
/// each message with its group and the number of moves followed so far.
fn member(
    directory: &str,
    name: &str,
    groups: &[String],
    targets: &Mutex<HashMap<String, u64>>,
    joined: std::sync::mpsc::Sender<()>,
) -> Vec<(String, Message, usize)> {
    let ctx = zmq::Context::new();
    let mut session = session(&ctx, &format!("tcp://{directory}"), name);
    for g in groups {
        let group = session.resolve(g).unwrap();
        session.join(&group).unwrap();
    }
    joined.send(()).unwrap();
    let mut got = Vec::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut moves = 0;
    // While the load runs, as long as it may take; once the senders are done, a LIMIT more.
    let mut deadline = Instant::now() + 10 * LIMIT;
    let mut told = false;
    loop {
        let done = {
            let targets = targets.lock().unwrap();
            if !told && !targets.is_empty() {
                told = true;
                deadline = Instant::now() + LIMIT;
            }
            told && groups
                .iter()
                .all(|g| last.get(g).copied().unwrap_or(0) >= targets[g])
        };
        if done {
            return got;
        }
        assert!(Instant::now() < deadline, "{name} stalled at {last:?}");
        match session.next_event(Duration::from_millis(200)).unwrap() {
            Some(SessionEvent::Message(d)) => {
                last.insert(d.group.name.clone(), d.message.seq);
                got.push((d.group.name, d.message, moves));
            }
            Some(SessionEvent::Moved { .. }) => moves += 1,
            _ => {}
        }
    }
}

/// Kills (SIGKILL) the group's owner `kills` times under load, a new server joining each
/// time so three stay up; returns the figures.
fn kill_owner_repeatedly(kills: usize, per_round: u64) -> Option<String> {
    let pg = Postgres::shared()?;
    let db = format!("kill{kills}");
    let url = pg.database(&db);
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let mut servers: Vec<Proc> = vec![cluster_server(&dir, &url, &["general"]).0];
    servers.push(cluster_server(&dir, &url, &[]).0);
    servers.push(cluster_server(&dir, &url, &[]).0);
    let load = Load::start(&dir, &["general"], 2, 2);
    let mut takeovers = Vec::new();
    let mut resumed = Vec::new();
    for _ in 0..kills {
        load.await_acks(per_round);
        let pid = owner(&pg, &db, "general").expect("an owner");
        let at = servers
            .iter()
            .position(|s| s.child.id() == pid)
            .expect("the owner is one of ours");
        let victim = servers.remove(at);
        victim.signal("-KILL");
        let killed = Instant::now();
        assert!(eventually(LIMIT, || owner(&pg, &db, "general")
            .is_some_and(|p| p != pid)));
        takeovers.push(killed.elapsed());
        load.await_acks(1);
        resumed.push(killed.elapsed());
        drop(victim);
        servers.push(cluster_server(&dir, &url, &[]).0);
    }
    load.await_acks(per_round);
    let figures = load.finish(&pg, &db);
    Some(format!(
        "{kills} SIGKILLs: {figures}; takeover (new lease) {}; first acknowledgement after \
         the kill {}",
        seconds(&takeovers),
        seconds(&resumed)
    ))
}

/// Durations as `1.2 s, 3.4 s`.
fn seconds(durations: &[Duration]) -> String {
    let each: Vec<String> = durations
        .iter()
        .map(|d| format!("{:.1} s", d.as_secs_f64()))
        .collect();
    each.join(", ")
}

#[test]
fn the_owner_killed_three_times_under_load_loses_nothing_and_members_follow() {
    if let Some(figures) = kill_owner_repeatedly(3, 30) {
        println!("{figures}");
    }
}

#[test]
#[ignore = "heavy: cargo test --test failover -- --ignored --nocapture"]
fn heavy_the_owner_killed_ten_times_under_load() {
    if let Some(figures) = kill_owner_repeatedly(10, 500) {
        println!("{figures}");
    }
}

#[test]
fn a_frozen_owner_resumed_past_its_lease_writes_nothing_and_retries_land_at_the_new_owner() {
    let Some(pg) = Postgres::shared() else { return };
    let db = "frozen_load";
    let url = pg.database(db);
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let servers = [
        cluster_server(&dir, &url, &["general"]).0,
        cluster_server(&dir, &url, &[]).0,
    ];
    let load = Load::start(&dir, &["general"], 2, 2);
    load.await_acks(30);
    let pid = owner(&pg, db, "general").expect("an owner");
    let frozen = servers.iter().find(|s| s.child.id() == pid).unwrap();
    frozen.freeze();
    let stopped = Instant::now();
    assert!(eventually(LIMIT, || owner(&pg, db, "general")
        .is_some_and(|p| p != pid)));
    let takeover = stopped.elapsed();
    load.await_acks(30);
    // Resumed: what it read before the freeze is refused or answered as the duplicate it is.
    frozen.signal("-CONT");
    load.await_acks(30);
    let figures = load.finish(&pg, db);
    println!(
        "SIGSTOP past the lease, then SIGCONT: {figures}; takeover (new lease) {:.1} s",
        takeover.as_secs_f64()
    );
}

#[test]
fn a_server_that_joins_the_pool_takes_its_share_without_losing_a_message() {
    let Some(pg) = Postgres::shared() else { return };
    let db = "joining";
    let url = pg.database(db);
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let groups = ["g1", "g2", "g3", "g4"];
    let first = cluster_server(&dir, &url, &groups).0;
    let load = Load::start(&dir, &groups, 2, 2);
    load.await_acks(40);
    let second = cluster_server(&dir, &url, &[]).0;
    let owned = |pid: u32| {
        groups
            .iter()
            .filter(|g| owner(&pg, db, g) == Some(pid))
            .count()
    };
    assert!(eventually(LIMIT, || owned(second.child.id()) == 2
        && owned(first.child.id()) == 2));
    load.await_acks(40);
    let figures = load.finish(&pg, db);
    println!("a second server joining four groups' owner: {figures}");
}

/// `zms group-server --store URL` run to its end: exit code and stderr's last line.
fn refused_start(url: &str, home: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(ZMS)
        .env("ZMS_HOME", home)
        .current_dir(home)
        .args(["group-server", "--bind", "127.0.0.1:0", "--store", url])
        .args(["--lease-ms", "2000", "--group", "general"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_string();
    (out.status.code(), last)
}

#[test]
fn a_database_that_cannot_be_used_is_refused_at_start_with_what_to_do() {
    let Some(pg) = Postgres::shared() else { return };
    let home = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);

    let (code, line) = refused_start(&format!("postgres://zms@127.0.0.1:{port}/zms"), home.path());
    assert_eq!(code, Some(3), "{line}");
    assert!(
        line.starts_with(&format!(
            "error: cannot reach PostgreSQL at 127.0.0.1:{port}"
        )) && line.contains("is it running"),
        "{line}"
    );

    let url = pg.database("refusals");
    let wrong_user = url.replace("zms@", "nobody@");
    let (code, line) = refused_start(&wrong_user, home.path());
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("PostgreSQL refused user 'nobody'")
            && line.contains("check the user and password"),
        "{line}"
    );

    let (code, line) = refused_start(&pg.url("no_such_db"), home.path());
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("no database 'no_such_db'") && line.contains("createdb"),
        "{line}"
    );

    // A schema from a newer zms: refused, and nothing in it changed.
    pg.psql(
        "refusals",
        "CREATE TABLE zms_schema (version INTEGER NOT NULL)",
    );
    pg.psql("refusals", "INSERT INTO zms_schema VALUES (99)");
    let (code, line) = refused_start(&url, home.path());
    assert_ne!(code, Some(0), "{line}");
    assert!(
        line.contains("version 99, written by a newer zms"),
        "{line}"
    );
    assert_eq!(pg.psql("refusals", "SELECT version FROM zms_schema"), "99");

    // A SQLite data directory given to --store by mistake.
    let data = home.path().join("zms-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("zms.db"), b"").unwrap();
    let (code, line) = refused_start("zms-data", home.path());
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("--store zms-data is a SQLite data directory")
            && line.contains("use --data zms-data"),
        "{line}"
    );
}

/// Whether `event` says a group server stopped answering.
fn lost(event: &SessionEvent) -> bool {
    matches!(event, SessionEvent::ServerLost(_))
}

#[test]
fn while_the_database_is_down_sends_and_reads_fail_clearly_members_stay_and_service_resumes() {
    // An instance of its own: this test stops it.
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("outage");
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let endpoint = format!("tcp://{dir}");
    // A lease far longer than the outage: the server keeps its group throughout.
    let server = Proc::spawn(&[
        "group-server",
        "--server",
        &dir,
        "--bind",
        "127.0.0.1:0",
        "--store",
        &url,
        "--lease-ms",
        "60000",
        "--group",
        "general",
    ]);
    server.listening();
    let ctx = zmq::Context::new();
    let mut member = session(&ctx, &endpoint, "member");
    let general = member.resolve("general").unwrap();
    member.join(&general).unwrap();
    let mut sender = session(&ctx, &endpoint, "sender");
    let group = sender.resolve("general").unwrap();
    sender.join(&group).unwrap();
    sender.send(&group, "before").unwrap();
    assert_eq!(texts(&receive(&mut member, 1, LIMIT)), ["before"]);

    pg.stop("immediate");
    // Sends are refused, not acknowledged; history reads fail; both say so.
    let mut refusals = Vec::new();
    assert!(eventually(LIMIT, || match sender.send(&group, "during") {
        Err(zms::Error::Rejected { code, reason }) => {
            refusals.push(format!("{code}: {reason}"));
            code == zms::protocol::ErrorCode::Unavailable
        }
        other => panic!("a send while the database is down: {other:?}"),
    }));
    let read = sender.history(&group, None, None);
    assert!(matches!(read, Err(zms::Error::Rejected { .. })), "{read:?}");
    println!("while down: send {refusals:?}; history {read:?}");

    pg.start_again();
    let mut sent = None;
    assert!(eventually(LIMIT, || {
        sent = sender.send(&group, "after").ok();
        sent.is_some()
    }));
    assert_eq!(
        sent.map(|(seq, _)| seq),
        Some(2),
        "nothing refused was stored"
    );
    // The member never lost its server, and gets what was sent once the database was back.
    let deadline = std::time::Instant::now() + LIMIT;
    let after = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no message after the outage"
        );
        match member.next_event(Duration::from_millis(500)).unwrap() {
            Some(event) if lost(&event) => panic!("the member lost its server: {event:?}"),
            Some(SessionEvent::Message(d)) => break d.message,
            _ => {}
        }
    };
    assert_eq!((after.seq, after.text.as_str()), (2, "after"));
    assert_eq!(
        pg.psql(
            "outage",
            "SELECT string_agg(text, ',' ORDER BY seq) FROM messages"
        ),
        "before,after"
    );
}

#[test]
fn a_server_that_cannot_renew_its_leases_stops_serving_and_takes_them_back_when_it_can() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("renewal");
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let endpoint = format!("tcp://{dir}");
    let server = cluster_server(&dir, &url, &["general"]).0;
    let ctx = zmq::Context::new();
    let mut member = session(&ctx, &endpoint, "member");
    let general = member.resolve("general").unwrap();
    member.join(&general).unwrap();

    pg.stop("immediate");
    // Past the lease, the server no longer serves the group: another could have claimed it.
    let raw = raw_dealer(&ctx, &format!("tcp://{}", general.address));
    use zms::protocol::codec::{self, Incoming};
    use zms::protocol::{ErrorCode, Reply, Request};
    let history = Request::History {
        group: "general".into(),
        user: "member".into(),
        after_seq: 0,
        since_ms: 0,
        limit: 10,
    };
    let mut id = 0;
    assert!(eventually(LIMIT, || {
        id += 1;
        raw.send(codec::encode_request(id, &history), 0).unwrap();
        let reply = codec::decode_incoming(&raw.recv_bytes(0).unwrap()).unwrap();
        matches!(
            reply,
            Incoming::Reply(
                _,
                Reply::Error {
                    code: ErrorCode::UnknownGroup,
                    ..
                }
            )
        )
    }));

    pg.start_again();
    // It claims the group again by itself, and the member follows without doing anything.
    let mut sender = session(&ctx, &endpoint, "sender");
    let mut sent = false;
    assert!(eventually(LIMIT, || {
        sent = sender
            .resolve("general")
            .and_then(|g| sender.join(&g).and_then(|_| sender.send(&g, "back")))
            .is_ok();
        sent
    }));
    assert_eq!(texts(&receive(&mut member, 1, LIMIT)), ["back"]);
    drop(server);
}

#[test]
fn zms_tail_follows_its_group_to_the_new_owner_and_says_so_once() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.database("tail");
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    // The first server owns general (the only one when it starts); the second takes over.
    let first = cluster_server(&dir, &url, &["general"]).0;
    let _second = cluster_server(&dir, &url, &[]).0;
    let home = tempfile::tempdir().unwrap();
    let zms = |args: &[&str]| {
        let out = std::process::Command::new(ZMS)
            .env("ZMS_HOME", home.path())
            .args(args)
            .args(["--server", &dir])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    zms(&["join", "general", "--name", "bob"]);
    zms(&["join", "general", "--name", "alice"]);
    let stderr = home.path().join("tail.err");
    let mut command = std::process::Command::new(ZMS);
    command
        .env("ZMS_HOME", home.path())
        .args(["tail", "general", "--server", &dir, "--name", "bob"]);
    let tail = Proc::logging_to(command, std::fs::File::create(&stderr).unwrap());
    // Sent until the tail shows one: then it has subscribed.
    let shown = |text: &str| {
        let want = format!("alice: {text}");
        eventually(LIMIT, || {
            tail.lines.try_iter().any(|line| line.ends_with(&want))
        })
    };
    let mut subscribed = false;
    for i in 0..50 {
        zms(&["send", "general", &format!("before {i}"), "--name", "alice"]);
        if tail.lines.recv_timeout(Duration::from_millis(200)).is_ok() {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "tail printed a message");

    first.signal("-KILL");
    zms(&["send", "general", "after the move", "--name", "alice"]);
    assert!(shown("after the move"));
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(
        said.matches("-- general moved to 127.0.0.1:").count(),
        1,
        "{said}"
    );
    drop(tail);
}

/// The Python client's part of the follow test: a member iterating `messages()` and a sender
/// that resolved the group before its owner died. Prints what it sees, one line each.
const PYTHON_FOLLOWER: &str = r#"
import os
from zms import Client
directory = os.environ["ZMS_DIRECTORY"]
with Client(directory, "py", timeout=2, tries=2) as member, \
        Client(directory, "pysender", timeout=2, tries=2) as sender:
    member.join("general")
    sender.join("general")
    print("joined", flush=True)
    for m in member.messages("general", timeout=120):
        print(f"got {m['seq']} {m['text']}", flush=True)
        if m["text"] == "killed":
            print(f"sent {sender.send('general', 'from python after the move')}", flush=True)
        if m["text"] == "from python after the move":
            break
"#;

#[test]
fn the_python_client_follows_a_group_to_its_new_owner() {
    let python = python();
    let probe = std::process::Command::new(&python)
        .args(["-c", "import zmq"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("ZMS_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "{} with pyzmq is required",
            python.display()
        );
        eprintln!("skipped: {} with pyzmq not available", python.display());
        return;
    }
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.database("python");
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let first = cluster_server(&dir, &url, &["general"]).0;
    let _second = cluster_server(&dir, &url, &[]).0;
    let home = tempfile::tempdir().unwrap();
    let zms = |args: &[&str]| {
        let out = std::process::Command::new(ZMS)
            .env("ZMS_HOME", home.path())
            .args(args)
            .args(["--server", &dir, "--name", "alice"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    zms(&["join", "general"]);
    let mut command = std::process::Command::new(&python);
    command
        .args(["-c", PYTHON_FOLLOWER])
        .env("ZMS_DIRECTORY", &dir)
        .env("ZMS_HOME", home.path())
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python"),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let mut follower = Proc::logging_to(command, std::process::Stdio::inherit());
    let mut seen = Vec::new();
    let next = |seen: &mut Vec<String>| {
        let line = follower
            .lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("the Python client stalled after {seen:?}"));
        seen.push(line.clone());
        line
    };
    assert_eq!(next(&mut seen), "joined");
    // Sent until the iterator shows one: then it has subscribed.
    let mut subscribed = false;
    for i in 0..50 {
        zms(&["send", "general", &format!("before {i}")]);
        if follower
            .lines
            .recv_timeout(Duration::from_millis(300))
            .is_ok()
        {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "the Python member got a message");
    first.signal("-KILL");
    zms(&["send", "general", "killed"]);
    while !next(&mut seen).ends_with(" from python after the move") {}
    assert!(seen.iter().any(|l| l.starts_with("sent ")), "{seen:?}");
    assert_eq!(follower.wait(), Some(0));
    assert_eq!(
        pg.psql(
            "python",
            "SELECT count(*) FROM messages WHERE text = 'from python after the move'"
        ),
        "1"
    );
}
