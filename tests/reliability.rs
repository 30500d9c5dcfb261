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
    let data = tempfile::tempdir().unwrap();
    let dir = directory(&ctx);
    let mut server = spawn_group_server(dir.endpoint(), "127.0.0.1:0", data.path());
    let address = server.listening();
    let general = GroupRef {
        name: "general".into(),
        address: address.clone(),
    };

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
