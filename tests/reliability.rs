//! Promises under faults: crashes, restarts, slow and vanished members, storage faults,
//! hostile input, shutdown. Each test injects the fault it is about.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use zms::client::{GroupRef, SessionEvent};
use zms::protocol::Message;

const LIMIT: Duration = Duration::from_secs(30);

fn spawn_group_server(directory: &str, bind: &str, data: &Path) -> Proc {
    Proc::spawn(&[
        "group-server",
        "--server",
        &zms::transport::address(directory),
        "--bind",
        bind,
        "--group",
        "general",
        "--data",
        data.to_str().unwrap(),
    ])
}

/// A message server and a group server process serving `general` from fresh data.
struct Served {
    data: tempfile::TempDir,
    dir: zms::shutdown::ServerHandle,
    server: Proc,
    general: GroupRef,
}

fn serve_general(ctx: &zmq::Context) -> Served {
    let data = tempfile::tempdir().unwrap();
    let dir = directory(ctx);
    let server = spawn_group_server(dir.endpoint(), "127.0.0.1:0", data.path());
    let general = GroupRef {
        name: "general".into(),
        address: server.listening(),
    };
    Served {
        data,
        dir,
        server,
        general,
    }
}

/// A member receiving live in its own thread until it has `expected` messages (once known).
fn spawn_member(
    directory: String,
    name: &'static str,
    group: GroupRef,
    expected: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<Message>> {
    let ctx = zmq::Context::new();
    let mut member = session(&ctx, &directory, name);
    member.join(&group).unwrap();
    std::thread::spawn(move || {
        let _ctx = ctx;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut got = Vec::new();
        while Instant::now() < deadline {
            let want = expected.load(Ordering::SeqCst);
            if want != usize::MAX && got.len() >= want {
                break;
            }
            if let Ok(Some(SessionEvent::Message(d))) =
                member.next_event(Duration::from_millis(200))
            {
                got.push(d.message);
            }
        }
        got
    })
}

#[test]
fn group_server_sigkilled_three_times_loses_and_duplicates_nothing() {
    const SENDERS: usize = 3;
    const PER_SENDER: usize = 1000;
    let ctx = zmq::Context::new();
    let Served {
        data,
        dir,
        mut server,
        general,
    } = serve_general(&ctx);
    let address = general.address.clone();

    let expected = Arc::new(AtomicUsize::new(usize::MAX));
    let members: Vec<_> = ["m1", "m2"]
        .into_iter()
        .map(|name| {
            spawn_member(
                dir.endpoint().to_string(),
                name,
                general.clone(),
                Arc::clone(&expected),
            )
        })
        .collect();

    let acked = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (acked, group, directory) = (
                Arc::clone(&acked),
                general.clone(),
                dir.endpoint().to_string(),
            );
            std::thread::spawn(move || {
                let ctx = zmq::Context::new();
                let name = format!("sender{s}");
                let mut sender = session(&ctx, &directory, &name);
                sender.join(&group).unwrap();
                // (text, seq) of every acknowledged send; failed tries are retried with the same id.
                let mut acks: Vec<(String, u64)> = Vec::new();
                let mut retries = 0;
                for i in 0..PER_SENDER {
                    let text = format!("{name} {i}");
                    let id = sender.next_client_id();
                    let deadline = Instant::now() + LIMIT;
                    loop {
                        match sender.send_with_id(&group, &id, &text) {
                            Ok((seq, _)) => break acks.push((text, seq)),
                            Err(err) if Instant::now() < deadline => {
                                retries += 1;
                                let _ = err;
                            }
                            Err(err) => panic!("{text} not acknowledged in {LIMIT:?}: {err}"),
                        }
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                (acks, retries)
            })
        })
        .collect();

    // Kill at pseudo-random points of the run (seeded, so a failure can be replayed).
    let total = SENDERS * PER_SENDER;
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut kills = Vec::new();
    for k in 0..3 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = total * (k * 2 + 1) / 8 + (seed as usize % (total / 8));
        kills.push(at);
        assert!(
            eventually(LIMIT, || acked.load(Ordering::SeqCst) >= at),
            "senders stalled before kill {k}"
        );
        server.signal("-KILL");
        server.wait();
        server = spawn_group_server(dir.endpoint(), &address, data.path());
        assert_eq!(server.listening(), address);
    }

    let mut all_acks: Vec<(String, u64)> = Vec::new();
    let mut retries = 0;
    for s in senders {
        let (acks, r) = s.join().unwrap();
        all_acks.extend(acks);
        retries += r;
    }
    let mut reader = session(&ctx, dir.endpoint(), "m1");
    let history = reader.history(&general, None, None).unwrap();
    expected.store(history.len(), Ordering::SeqCst);
    let delivered: Vec<Vec<Message>> = members.into_iter().map(|m| m.join().unwrap()).collect();

    // History: one order, seq 1..n, every acknowledged message exactly once at its acked seq.
    assert_eq!(
        seqs(&history),
        (1..=history.len() as u64).collect::<Vec<_>>()
    );
    let mut by_text: HashMap<&str, Vec<u64>> = HashMap::new();
    for m in &history {
        by_text.entry(m.text.as_str()).or_default().push(m.seq);
    }
    let duplicated = by_text.values().filter(|seqs| seqs.len() > 1).count();
    let lost = all_acks
        .iter()
        .filter(|(text, _)| !by_text.contains_key(text.as_str()))
        .count();
    let misplaced = all_acks
        .iter()
        .filter(|(text, seq)| by_text.get(text.as_str()) != Some(&vec![*seq]))
        .count();
    for (i, got) in delivered.iter().enumerate() {
        let dup = got.len()
            - got
                .iter()
                .map(|m| m.seq)
                .collect::<std::collections::HashSet<_>>()
                .len();
        eprintln!(
            "member m{}: delivered {} of {} stored, {dup} duplicates",
            i + 1,
            got.len(),
            history.len()
        );
    }
    eprintln!(
        "crash test: kills after {kills:?} acks; sent {total}, acknowledged {}, stored {}, lost {lost}, duplicated {duplicated}, misplaced {misplaced}, client retries {retries}",
        all_acks.len(),
        history.len()
    );
    assert_eq!(all_acks.len(), total);
    assert_eq!((lost, duplicated, misplaced), (0, 0, 0));
    assert_eq!(history.len(), total, "nothing stored that was not sent");
    for got in &delivered {
        assert_eq!(
            got, &history,
            "every live member saw every message once, in order"
        );
    }
}

#[test]
fn a_full_store_refuses_sends_loses_nothing_and_keeps_serving_reads() {
    let ctx = zmq::Context::new();
    let data = tempfile::tempdir().unwrap();
    let dir = directory(&ctx);
    let config = zms::group::Config {
        groups: vec!["general".into()],
        data: data.path().to_path_buf(),
        directories: vec![dir.endpoint().to_string()],
        advertise: None,
        durability: Default::default(),
        security: None,
    };
    let _grp = zms::group::GroupServer::bind(&ctx, "tcp://127.0.0.1:*", config)
        .unwrap()
        .limit_storage(256 * 1024)
        .unwrap()
        .register(Duration::from_secs(2))
        .unwrap()
        .spawn(&ctx)
        .unwrap();
    let mut alice = session(&ctx, dir.endpoint(), "alice");
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    let text = "x".repeat(1000);
    let mut acked = Vec::new();
    let err = loop {
        assert!(acked.len() < 10_000, "the quota never filled");
        match alice.send(&general, &format!("{} {text}", acked.len())) {
            Ok((seq, _)) => acked.push(seq),
            Err(err) => break err,
        }
    };
    match &err {
        zms::Error::Rejected {
            code: zms::protocol::ErrorCode::Unavailable,
            reason,
        } => {
            assert!(reason.contains("full"), "{reason}")
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    assert!(alice.send(&general, &text).is_err(), "still full");
    let history = alice.history(&general, None, None).unwrap();
    assert_eq!(
        seqs(&history),
        acked,
        "every acknowledged message, nothing else"
    );
    assert!(alice.members(&general).is_ok(), "reads go on");
}

#[test]
fn a_locked_database_delays_then_refuses_a_send_and_members_keep_their_subscriptions() {
    use zms::protocol::codec::{self, Incoming};
    use zms::protocol::{Reply, Request};
    let ctx = zmq::Context::new();
    let data = tempfile::tempdir().unwrap();
    let dir = directory(&ctx);
    let grp = group_server(&ctx, dir.endpoint(), &["general"], data.path());
    let joined = |user: &str| raw_member(&ctx, grp.endpoint(), "general", user);
    let (bob, alice) = (joined("bob"), joined("alice"));
    // Another connection holds the write lock: alice's SEND waits in SQLite's busy handler
    // for five seconds (a checkpoint holds it for milliseconds), then is refused.
    let blocker = rusqlite::Connection::open(data.path().join("zms.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let send = Request::Send {
        group: "general".into(),
        user: "alice".into(),
        client_id: "1".into(),
        text: "stalls".into(),
    };
    // The clock starts before the SEND leaves, so the server's wait lies wholly within it.
    let started = Instant::now();
    alice.send(codec::encode_request(2, &send), 0).unwrap();
    // bob keeps pinging every 300 ms; the server reads his PINGs only after the stall.
    let ping = codec::encode_request(3, &Request::Ping);
    let answer = 'stalled: loop {
        assert!(
            started.elapsed() < LIMIT,
            "the stalled SEND was never answered"
        );
        bob.send(ping.as_slice(), 0).unwrap();
        while alice.poll(zmq::POLLIN, 300).unwrap() > 0 {
            match codec::decode_incoming(&alice.recv_bytes(0).unwrap()).unwrap() {
                Incoming::Reply(2, reply) => break 'stalled reply,
                _ => continue,
            }
        }
    };
    assert!(matches!(answer, Reply::Error { .. }), "{answer:?}");
    // It waited for the lock (the server's busy limit, timed by its clock) before giving up;
    // how much longer it took depends on the machine, so that is not asserted.
    let stalled = started.elapsed();
    assert!(
        stalled >= Duration::from_secs(5),
        "the send waited for the lock for only {stalled:?}"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    // bob's PONG still lists the group: his PINGs waited in the queue, he was not silent.
    bob.send(codec::encode_request(4, &Request::Ping), 0)
        .unwrap();
    let last_pong = loop {
        match codec::decode_incoming(&bob.recv_bytes(0).unwrap()).unwrap() {
            Incoming::Reply(4, Reply::Pong { groups, .. }) => break groups,
            _ => continue,
        }
    };
    assert!(
        last_pong.iter().any(|(g, _)| g == "general"),
        "bob's subscription was dropped: {last_pong:?}"
    );
}

#[test]
fn two_message_servers_leave_no_single_point_of_failure() {
    let ctx = zmq::Context::new();
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (directory(&ctx), directory(&ctx));
    let _grp = group_server_at(
        &ctx,
        "tcp://127.0.0.1:*",
        &[a.endpoint(), b.endpoint()],
        &["general"],
        data.path(),
    );
    let mut alice = zms::client::Session::new(
        &ctx,
        vec![a.endpoint().to_string(), b.endpoint().to_string()],
        "alice",
        TIMEOUTS,
    )
    .unwrap();
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    // A stopped server's port is held by a listener that never answers, so that no other
    // test's server is given it and answers in its place.
    let hold = |endpoint: &str| std::net::TcpListener::bind(zms::transport::address(endpoint));
    let a_endpoint = a.endpoint().to_string();
    a.stop().unwrap();
    let _a_held = hold(&a_endpoint);
    // The list comes from B; messaging never needed a message server.
    assert_eq!(alice.list_groups().unwrap().len(), 1);
    alice.send(&general, "directory A is down").unwrap();
    let b_endpoint = b.endpoint().to_string();
    b.stop().unwrap();
    let _b_held = hold(&b_endpoint);
    alice.send(&general, "both are down").unwrap();
    assert_eq!(
        texts(&alice.history(&general, None, None).unwrap()),
        ["directory A is down", "both are down"]
    );
    assert!(alice.list_groups().is_err());
}

#[test]
fn a_slow_member_costs_the_others_nothing_and_catches_up_from_history() {
    const N: usize = 20_000;
    let c = cluster(&["general"]);
    let (mut alice, general) = c.member("alice", "general");
    let expected = Arc::new(AtomicUsize::new(N));
    let bob = spawn_member(
        c.dir.endpoint().to_string(),
        "bob",
        general.clone(),
        Arc::clone(&expected),
    );

    // The slow member: a raw connection with tiny buffers that joins and then does not read.
    let slow = c.ctx.socket(zmq::DEALER).unwrap();
    slow.set_linger(0).unwrap();
    slow.set_rcvhwm(1).unwrap();
    slow.set_rcvbuf(4096).unwrap();
    slow.set_rcvtimeo(5000).unwrap();
    slow.connect(c.grp.endpoint()).unwrap();
    let join = zms::protocol::Request::Join {
        group: "general".into(),
        user: "slow".into(),
    };
    slow.send(zms::protocol::codec::encode_request(1, &join), 0)
        .unwrap();
    slow.recv_bytes(0).unwrap();

    let text = "y".repeat(1024);
    for i in 0..N {
        alice.send(&general, &format!("{i} {text}")).unwrap();
    }
    let seen_by_bob = bob.join().unwrap();
    assert_eq!(
        seen_by_bob.len(),
        N,
        "the fast member got everything while the slow one slept"
    );

    // What reached the slow connection is bounded: the server dropped the rest for it.
    slow.set_rcvtimeo(200).unwrap();
    let mut pushed = 0;
    while slow.recv_bytes(0).is_ok() {
        pushed += 1;
    }
    assert!(
        pushed < N,
        "pushes to a member that does not read are bounded ({pushed} of {N})"
    );
    // The slow user catches up from history, complete and in order.
    let mut slow_user = c.session("slow");
    let caught_up = slow_user.history(&general, None, None).unwrap();
    assert_eq!(seqs(&caught_up), (1..=N as u64).collect::<Vec<_>>());
    eprintln!(
        "slow member: {pushed} of {N} pushes queued for it; the rest dropped and read from history"
    );
}

#[test]
fn a_vanished_member_is_freed_and_stays_a_member() {
    let c = cluster(&["general"]);
    let (mut alice, general) = c.member("alice", "general");
    {
        let _ghost = raw_member(&c.ctx, c.grp.endpoint(), "general", "ghost");
    } // the connection dies here, without a word
    let online = |alice: &mut zms::client::Session| -> Vec<(String, bool)> {
        alice
            .members(&general)
            .unwrap()
            .into_iter()
            .map(|m| (m.name, m.online))
            .collect()
    };
    assert!(eventually(LIMIT, || {
        // A push to the dead connection fails and frees it; silence would too, after 5 s.
        alice.send(&general, "anyone there?").unwrap();
        online(&mut alice) == [("alice".to_string(), true), ("ghost".to_string(), false)]
    }));
}

#[test]
fn tens_of_thousands_of_hostile_frames_while_users_chat() {
    const FRAMES: usize = 20_000;
    let c = cluster(&["general"]);
    let (mut alice, general) = c.member("alice", "general");
    let expected = Arc::new(AtomicUsize::new(usize::MAX));
    let bob = spawn_member(
        c.dir.endpoint().to_string(),
        "bob",
        general.clone(),
        Arc::clone(&expected),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = [c.dir.endpoint().to_string(), c.grp.endpoint().to_string()]
        .into_iter()
        .enumerate()
        .map(|(n, endpoint)| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || hostile_peer(&endpoint, FRAMES, n as u64 + 1, &stop))
        })
        .collect();
    let mut sent = Vec::new();
    while attackers.iter().any(|a| !a.is_finished()) && sent.len() < 20_000 {
        let text = format!("chat {}", sent.len());
        alice.send(&general, &text).unwrap();
        assert!(alice.list_groups().unwrap().len() == 1);
        sent.push(text);
    }
    stop.store(true, Ordering::SeqCst);
    let answered: usize = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    let history = alice.history(&general, None, None).unwrap();
    let chat: Vec<String> = texts(&history)
        .into_iter()
        .filter(|t| t.starts_with("chat "))
        .collect();
    assert_eq!(chat, sent, "no chat message lost or corrupted");
    expected.store(history.len(), Ordering::SeqCst);
    assert_eq!(
        bob.join().unwrap(),
        history,
        "the live member saw everything in order"
    );
    eprintln!(
        "hostile input: {answered} frames answered, {} chat messages meanwhile",
        sent.len()
    );
}

/// Sends `frames` random, truncated, mutated and oversized frames; returns how many were answered.
fn hostile_peer(endpoint: &str, frames: usize, seed: u64, stop: &AtomicBool) -> usize {
    let ctx = zmq::Context::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = zms::protocol::codec::encode_request(
        3,
        &zms::protocol::Request::History {
            group: "general".into(),
            user: "mallory".into(),
            after_seq: 0,
            since_ms: 0,
            limit: 1,
        },
    );
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket.set_linger(0).unwrap();
    socket.set_rcvtimeo(5000).unwrap();
    socket.connect(endpoint).unwrap();
    // Oversized frames make libzmq drop the connection (no answer), so they go on their own socket.
    let big = ctx.socket(zmq::DEALER).unwrap();
    big.set_linger(0).unwrap();
    big.connect(endpoint).unwrap();
    let mut answered = 0;
    for i in 0..frames {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut frame = valid.clone();
        match i % 5 {
            0 => frame.truncate(next() as usize % frame.len()),
            1 => {
                for _ in 0..(next() % 4 + 1) {
                    let at = next() as usize % frame.len();
                    frame[at] = next() as u8;
                }
            }
            2 => frame = (0..next() % 200).map(|_| next() as u8).collect(),
            3 => frame.extend((0..next() % 16 + 1).map(|_| next() as u8)),
            _ => {
                if i % 1000 == 4 {
                    let _ = big.send(vec![0u8; 2 * 1024 * 1024], zmq::DONTWAIT);
                }
                frame[3] = b'0' + (next() % 10) as u8;
            }
        }
        socket.send(&frame, 0).unwrap();
        socket.recv_bytes(0).expect("every frame is answered");
        answered += 1;
    }
    answered
}

#[test]
fn sigterm_stops_a_group_server_promptly_with_everything_on_disk() {
    let ctx = zmq::Context::new();
    let Served {
        data,
        dir,
        mut server,
        general,
    } = serve_general(&ctx);
    let address = general.address.clone();
    let mut alice = session(&ctx, dir.endpoint(), "alice");
    alice.join(&general).unwrap();
    for i in 0..500 {
        alice.send(&general, &format!("{i}")).unwrap();
    }
    let started = Instant::now();
    server.signal("-TERM");
    assert_eq!(server.wait(), Some(0), "a clean exit");
    let took = started.elapsed();
    assert!(
        eventually(LIMIT, || alice.list_groups().unwrap().is_empty()),
        "it unregistered"
    );
    let again = spawn_group_server(dir.endpoint(), &address, data.path());
    again.listening();
    assert_eq!(alice.history(&general, None, None).unwrap().len(), 500);
    eprintln!("SIGTERM to exit: {took:?}");
}

#[test]
fn immutable_database_files_get_sends_refused_while_reads_go_on() {
    let ctx = zmq::Context::new();
    let Served {
        data,
        dir,
        server: _server,
        general,
    } = serve_general(&ctx);
    let mut alice = session(&ctx, dir.endpoint(), "alice");
    let mut bob = session(&ctx, dir.endpoint(), "bob");
    alice.join(&general).unwrap();
    bob.join(&general).unwrap();
    alice.send(&general, "before").unwrap();
    let Some(immutable) = Immutable::store_in(data.path()) else {
        eprintln!("SKIPPED: chattr +i is not possible here (needs root on ext4 or xfs)");
        return;
    };
    // A write that fails is refused: the server does not die (SIGBUS from a mapped file).
    match alice.send(&general, "refused") {
        Err(zms::Error::Rejected {
            code: zms::protocol::ErrorCode::Unavailable,
            ..
        }) => {}
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    // Meanwhile a normal user reads, and the writer too.
    assert_eq!(
        texts(&bob.history(&general, None, None).unwrap()),
        ["before"]
    );
    assert_eq!(bob.members(&general).unwrap().len(), 2);
    assert_eq!(
        texts(&alice.history(&general, None, None).unwrap()),
        ["before"]
    );
    drop(immutable);
    // Writable again: sends are stored again, and the refused one never was.
    alice.send(&general, "after").unwrap();
    assert_eq!(
        texts(&bob.history(&general, None, None).unwrap()),
        ["before", "after"]
    );
}
