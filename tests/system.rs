//! The whole system in-process: directory, group servers and sessions on loopback.

mod common;

use std::time::Duration;

use common::*;
use zms::client::SessionEvent;
use zms::protocol::codec::{self, Incoming};
use zms::protocol::{ErrorCode, Event, Outgoing, Reply, Request};
use zms::Error;

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn groups_register_list_and_resolve_by_name_or_address() {
    let c = cluster(&["general", "random"]);
    let mut alice = c.session("alice");
    alice.hello().unwrap();
    let names: Vec<String> = alice
        .list_groups()
        .unwrap()
        .iter()
        .map(|g| format!("{}@{}", g.name, g.address))
        .collect();
    assert_eq!(
        names,
        [
            format!("general@{}", c.grp.address()),
            format!("random@{}", c.grp.address())
        ]
    );

    assert_eq!(alice.resolve("random").unwrap().address, c.grp.address());
    let by_address = alice
        .resolve(&format!("random@{}", c.grp.address()))
        .unwrap();
    assert_eq!(by_address.name, "random");
    let err = alice.resolve(&c.grp.address()).unwrap_err().to_string();
    assert!(
        err.contains("hosts several groups (general, random)"),
        "{err}"
    );
    let err = alice.resolve("nope").unwrap_err().to_string();
    assert!(
        err.contains("unknown group 'nope'") && err.contains("general, random"),
        "{err}"
    );
}

#[test]
fn a_stopped_group_server_leaves_the_list_and_an_expired_one_too() {
    let c = cluster(&["general"]);
    let mut alice = c.session("alice");
    assert_eq!(alice.list_groups().unwrap().len(), 1);
    c.grp.stop().unwrap(); // sends UNREGISTER
    assert!(eventually(LIMIT, || alice
        .list_groups()
        .unwrap()
        .is_empty()));

    // A server that registers and then falls silent (no UNREGISTER) expires with its TTL.
    let raw = c.ctx.socket(zmq::DEALER).unwrap();
    raw.set_linger(0).unwrap();
    raw.connect(c.dir.endpoint()).unwrap();
    let register = Request::Register {
        address: "127.0.0.1:1".into(),
        ttl_ms: 300,
        groups: vec!["ghost".into()],
        key: String::new(),
        replace: false,
    };
    raw.send(codec::encode_request(1, &register), 0).unwrap();
    raw.set_rcvtimeo(5000).unwrap();
    assert_eq!(
        codec::decode_incoming(&raw.recv_bytes(0).unwrap()).unwrap(),
        Incoming::Reply(1, Reply::Ok)
    );
    assert_eq!(alice.list_groups().unwrap().len(), 1);
    assert!(
        eventually(LIMIT, || alice.list_groups().unwrap().is_empty()),
        "expired within a few seconds"
    );
}

#[test]
fn a_restarted_message_server_has_the_list_back_within_a_heartbeat() {
    let ctx = zmq::Context::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = directory(&ctx);
    let endpoint = dir.endpoint().to_string();
    let _grp = group_server(&ctx, &endpoint, &["general"], tmp.path());
    dir.stop().unwrap();
    let _dir = directory_at(&ctx, &endpoint);
    let mut alice = session(&ctx, &endpoint, "alice");
    // One heartbeat is 1 s; allow reconnection time on a loaded machine.
    assert!(eventually(Duration::from_secs(3), || alice
        .list_groups()
        .map(|l| l.len() == 1)
        .unwrap_or(false)));
}

#[test]
fn members_get_messages_live_in_order_and_history_matches() {
    let c = cluster(&["general"]);
    let mut alice = c.session("alice");
    let mut bob = c.session("bob");
    let general = alice.resolve("general").unwrap();
    assert_eq!(alice.join(&general).unwrap(), 0);
    assert_eq!(bob.join(&general).unwrap(), 0);

    let sent: Vec<String> = (1..=200).map(|i| format!("message {i}")).collect();
    for (i, text) in sent.iter().enumerate() {
        assert_eq!(alice.send(&general, text).unwrap().0, i as u64 + 1);
    }
    let got = receive(&mut bob, sent.len(), LIMIT);
    assert_eq!(texts(&got), sent);
    assert_eq!(seqs(&got), (1..=200).collect::<Vec<_>>());
    assert!(
        got.windows(2).all(|w| w[0].ts <= w[1].ts),
        "timestamps never decrease"
    );
    // The sender receives its own messages too, as the confirmation of order.
    assert_eq!(texts(&receive(&mut alice, sent.len(), LIMIT)), sent);

    let all = bob.history(&general, None, None).unwrap();
    assert_eq!(all, got);
    assert_eq!(
        seqs(&bob.history(&general, None, Some(3)).unwrap()),
        [198, 199, 200]
    );
    let since = got[150].ts;
    let later = bob.history(&general, Some(since), None).unwrap();
    assert!(later.iter().all(|m| m.ts >= since) && later.last().unwrap().seq == 200);
    assert_eq!(
        later.first().unwrap().seq,
        got.iter().find(|m| m.ts >= since).unwrap().seq
    );
    assert_eq!(
        bob.history(&general, Some(since), Some(2)).unwrap().len(),
        2
    );
}

#[test]
fn history_pages_past_the_server_page_limit() {
    let c = cluster(&["big"]);
    let (mut alice, big) = c.member("alice", "big");
    // Seven pages: more than the client asks for ahead at once, so its window refills.
    let sent: Vec<String> = (0..6_500).map(|i| format!("{i}")).collect();
    let stored = alice.send_many(&big, &sent).unwrap();
    let all = alice.history(&big, None, None).unwrap();
    assert_eq!(seqs(&all), (1..=6_500).collect::<Vec<_>>());
    assert_eq!(texts(&all), sent);
    // The last n, the first n since a time, and all since a time, each across pages.
    let last = alice.history(&big, None, Some(4_321)).unwrap();
    assert_eq!(seqs(&last), (2_180..=6_500).collect::<Vec<_>>());
    let since = stored[1_234].1;
    let first = all.iter().position(|m| m.ts >= since).unwrap();
    let later = alice.history(&big, Some(since), None).unwrap();
    assert_eq!(later, all[first..]);
    let some = alice.history(&big, Some(since), Some(3_003)).unwrap();
    assert_eq!(some, all[first..first + 3_003]);
}

#[test]
fn history_of_long_messages_pages_by_the_reply_limit() {
    let c = cluster(&["big"]);
    let (mut alice, big) = c.member("alice", "big");
    // 2 KiB each: a page of 1,000 would pass the 1 MiB reply limit, so every page comes back
    // short and the client cannot know in advance where the next one starts.
    let long = |i| format!("{i:>2048}");
    let sent: Vec<String> = (0..2_400).map(long).collect();
    alice.send_many(&big, &sent).unwrap();
    let all = alice.history(&big, None, None).unwrap();
    assert_eq!(seqs(&all), (1..=2_400).collect::<Vec<_>>());
    assert_eq!(texts(&all), sent);
    // Short messages, then long ones: the first page is whole, so the next are asked for
    // ahead, and one of those comes back short.
    let c = cluster(&["mixed"]);
    let (mut alice, mixed) = c.member("alice", "mixed");
    let sent: Vec<String> = (0..1_200)
        .map(|i| i.to_string())
        .chain((0..1_200).map(long))
        .collect();
    alice.send_many(&mixed, &sent).unwrap();
    let all = alice.history(&mixed, None, None).unwrap();
    assert_eq!(seqs(&all), (1..=2_400).collect::<Vec<_>>());
    assert_eq!(texts(&all), sent);
}

#[test]
fn non_members_are_refused_and_leaving_stops_delivery() {
    let c = cluster(&["general"]);
    let mut alice = c.session("alice");
    let mut eve = c.session("eve");
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    for attempt in [
        eve.send(&general, "hi").map(|_| ()),
        eve.history(&general, None, None).map(|_| ()),
        eve.members(&general).map(|_| ()),
        eve.subscribe(&general).map(|_| ()),
        eve.leave(&general),
    ] {
        match attempt {
            Err(Error::Rejected {
                code: ErrorCode::NotMember,
                reason,
            }) => assert!(reason.contains("'eve' is not a member")),
            other => panic!("expected NOT_MEMBER, got {other:?}"),
        }
    }

    eve.join(&general).unwrap();
    let members = alice.members(&general).unwrap();
    assert_eq!(
        members
            .iter()
            .map(|m| (m.name.as_str(), m.online))
            .collect::<Vec<_>>(),
        [("alice", true), ("eve", true)]
    );
    eve.leave(&general).unwrap();
    alice.send(&general, "after eve left").unwrap();
    assert_eq!(texts(&receive(&mut alice, 1, LIMIT)), ["after eve left"]);
    assert!(
        eve.next_event(Duration::from_millis(300))
            .unwrap()
            .is_none(),
        "no delivery after leaving"
    );
    assert!(matches!(
        eve.send(&general, "x"),
        Err(Error::Rejected {
            code: ErrorCode::NotMember,
            ..
        })
    ));
}

#[test]
fn a_user_is_in_several_groups_on_two_group_servers() {
    let ctx = zmq::Context::new();
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = directory(&ctx);
    let _g1 = group_server(&ctx, dir.endpoint(), &["rust", "zmq"], t1.path());
    let _g2 = group_server(&ctx, dir.endpoint(), &["sqlite"], t2.path());
    let mut alice = session(&ctx, dir.endpoint(), "alice");
    let mut bob = session(&ctx, dir.endpoint(), "bob");
    let groups: Vec<_> = ["rust", "zmq", "sqlite"]
        .iter()
        .map(|g| alice.resolve(g).unwrap())
        .collect();
    assert_ne!(groups[0].address, groups[2].address);
    for g in &groups {
        alice.join(g).unwrap();
        bob.join(g).unwrap();
    }
    for round in 0..5 {
        for g in &groups {
            alice.send(g, &format!("{}-{round}", g.name)).unwrap();
        }
    }
    let mut per_group: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let deadline = std::time::Instant::now() + LIMIT;
    while per_group.values().map(Vec::len).sum::<usize>() < 15 {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .expect("all 15 in time");
        if let Some(SessionEvent::Message(d)) = bob.next_event(left).unwrap() {
            per_group
                .entry(d.group.name.clone())
                .or_default()
                .push(d.message.text);
        }
    }
    for g in &groups {
        let want: Vec<String> = (0..5).map(|r| format!("{}-{r}", g.name)).collect();
        assert_eq!(per_group[&g.name], want);
    }
}

#[test]
fn a_restarted_group_server_keeps_everything_and_members_repair_the_gap() {
    let c = cluster(&["general"]);
    let endpoint = c.grp.endpoint().to_string();
    let mut alice = c.session("alice");
    let mut bob = c.session("bob");
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    bob.join(&general).unwrap();
    for i in 1..=10 {
        alice.send(&general, &format!("before {i}")).unwrap();
    }
    assert_eq!(receive(&mut bob, 10, LIMIT).len(), 10);

    c.grp.stop().unwrap();
    let _grp = group_server_at(
        &c.ctx,
        &endpoint,
        &[c.dir.endpoint()],
        &["general"],
        c.data.path(),
    );
    // Bob's subscription died with the old process; messages sent now are not pushed to him.
    for i in 1..=10 {
        alice.send(&general, &format!("after {i}")).unwrap();
    }
    // His heartbeat sees the new epoch, subscribes again and fills the gap from history.
    let got = receive(&mut bob, 10, LIMIT);
    assert_eq!(seqs(&got), (11..=20).collect::<Vec<_>>());
    assert_eq!(got[0].text, "after 1");
    assert_eq!(alice.history(&general, None, None).unwrap().len(), 20);
    assert!(
        bob.next_event(Duration::from_millis(200))
            .unwrap()
            .is_none(),
        "no duplicates"
    );
}

#[test]
fn pipelined_sends_reach_every_member_once_and_in_order() {
    const N: u32 = 500;
    let c = cluster(&["general"]);
    let (_alice, _) = c.member("alice", "general");
    let (mut bob, _) = c.member("bob", "general");
    let raw = |user: &str| raw_member(&c.ctx, c.grp.endpoint(), "general", user);
    let carol = raw("carol");
    // Every SEND written before any ACK is read: the server takes them in large batches.
    let sender = raw("alice");
    for i in 1..=N {
        let send = Request::Send {
            group: "general".into(),
            user: "alice".into(),
            client_id: format!("p-{i}"),
            text: format!("m{i}"),
        };
        sender.send(codec::encode_request(i + 1, &send), 0).unwrap();
    }
    // A raw member reads MSG and MSGS frames alike, each message once, in seq order.
    let mut seqs_seen = Vec::new();
    while seqs_seen.len() < N as usize {
        let frame = carol
            .recv_bytes(0)
            .unwrap_or_else(|e| panic!("carol got {} of {N} ({e})", seqs_seen.len()));
        match codec::decode_incoming(&frame).unwrap() {
            Incoming::Event(Event::Message { message, .. }) => seqs_seen.push(message.seq),
            Incoming::Event(Event::Messages { messages, .. }) => {
                seqs_seen.extend(messages.iter().map(|m| m.seq))
            }
            _ => {}
        }
    }
    assert_eq!(seqs_seen, (1..=u64::from(N)).collect::<Vec<_>>());
    // The client library does the same for its user.
    let got = receive(&mut bob, N as usize, LIMIT);
    assert_eq!(seqs(&got), (1..=u64::from(N)).collect::<Vec<_>>());
    assert_eq!(got[41].text, "m42");
}

#[test]
fn a_retried_send_is_stored_once() {
    let c = cluster(&["general"]);
    let (mut alice, general) = c.member("alice", "general");
    let raw = raw_dealer(&c.ctx, c.grp.endpoint());
    let send = Request::Send {
        group: "general".into(),
        user: "alice".into(),
        client_id: "retry-1".into(),
        text: "once".into(),
    };
    let mut acks = Vec::new();
    for id in 1..=3 {
        raw.send(codec::encode_request(id, &send), 0).unwrap();
        acks.push(codec::decode_incoming(&raw.recv_bytes(0).unwrap()).unwrap());
    }
    let seq_of = |i: &Incoming| match i {
        Incoming::Reply(_, Reply::Ack { seq, duplicate, .. }) => (*seq, *duplicate),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        acks.iter().map(seq_of).collect::<Vec<_>>(),
        [(1, false), (1, true), (1, true)]
    );
    assert_eq!(alice.history(&general, None, None).unwrap().len(), 1);
}

#[test]
fn a_batch_of_sends_is_stored_in_order_and_reaches_members_once() {
    let c = cluster(&["general"]);
    let (mut alice, general) = c.member("alice", "general");
    let (mut bob, _) = c.member("bob", "general");
    // More messages than one SENDS holds: the session sends them as three, in order.
    let sent: Vec<String> = (1..=600).map(|i| format!("b{i}")).collect();
    let stored = alice.send_many(&general, &sent).unwrap();
    let stored_seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(stored_seqs, (1..=600).collect::<Vec<_>>());
    let got = receive(&mut bob, 600, LIMIT);
    assert_eq!(texts(&got), sent);
    // Texts too long for one frame together go in as many SENDS as their octets need.
    let long: Vec<String> = ["x", "y", "z"].iter().map(|c| c.repeat(30_000)).collect();
    let stored = alice.send_many(&general, &long).unwrap();
    assert_eq!(
        stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [601, 602, 603]
    );
    assert_eq!(texts(&receive(&mut bob, 3, LIMIT)), long);
    assert_eq!(alice.history(&general, None, None).unwrap().len(), 603);
    // A text over the limit fails the call before anything is sent.
    let over = vec!["fine".to_string(), "x".repeat(zms::protocol::MAX_TEXT + 1)];
    assert!(matches!(
        alice.send_many(&general, &over),
        Err(Error::Input(_))
    ));
    assert_eq!(alice.history(&general, None, None).unwrap().len(), 603);
}

#[test]
fn a_retried_batch_is_stored_once() {
    let c = cluster(&["general"]);
    let (mut alice, general) = c.member("alice", "general");
    let raw = raw_dealer(&c.ctx, c.grp.endpoint());
    let batch = Request::SendBatch {
        group: "general".into(),
        user: "alice".into(),
        messages: ["one", "two"]
            .iter()
            .enumerate()
            .map(|(i, text)| Outgoing {
                client_id: format!("retry-{i}"),
                text: text.to_string(),
            })
            .collect(),
    };
    let mut answers = Vec::new();
    for id in 1..=2 {
        raw.send(codec::encode_request(id, &batch), 0).unwrap();
        match codec::decode_incoming(&raw.recv_bytes(0).unwrap()).unwrap() {
            Incoming::Reply(got, Reply::Acks(acks)) if got == id => answers.push(
                acks.iter()
                    .map(|a| (a.seq, a.duplicate))
                    .collect::<Vec<_>>(),
            ),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        answers,
        [[(1, false), (2, false)], [(1, true), (2, true)]],
        "the second try finds both messages stored"
    );
    let history = alice.history(&general, None, None).unwrap();
    assert_eq!(texts(&history), ["one", "two"]);
}

#[test]
fn garbage_from_peers_is_answered_and_everyone_else_is_served() {
    let c = cluster(&["general"]);
    let (mut alice, general) = c.member("alice", "general");

    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = codec::encode_request(
        7,
        &Request::Send {
            group: "general".into(),
            user: "alice".into(),
            client_id: String::new(),
            text: "a valid message".into(),
        },
    );
    for endpoint in [c.dir.endpoint(), c.grp.endpoint()] {
        let raw = raw_dealer(&c.ctx, endpoint);
        for i in 0..300u32 {
            let mut frame = valid.clone();
            match i % 4 {
                0 => frame.truncate((next() as usize) % frame.len()),
                1 => {
                    let at = next() as usize % frame.len();
                    frame[at] ^= (next() as u8) | 1;
                }
                2 => frame = (0..(next() % 64)).map(|_| next() as u8).collect(),
                _ => frame.extend((0..(next() % 8 + 1)).map(|_| next() as u8)),
            }
            raw.send(&frame, 0).unwrap();
            // Every frame gets exactly one answer (a mutation may still be a valid request).
            let reply = raw.recv_bytes(0).expect("an answer to every frame");
            assert!(codec::decode_incoming(&reply).is_ok());
            if i % 50 == 0 {
                alice.send(&general, &format!("still here {i}")).unwrap();
            }
        }
        raw.send_multipart(["ZMS1", "two frames"], 0).unwrap();
        match codec::decode_incoming(&raw.recv_bytes(0).unwrap()).unwrap() {
            Incoming::Reply(
                0,
                Reply::Error {
                    code: ErrorCode::BadRequest,
                    ..
                },
            ) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(alice.list_groups().is_ok());
    let history = alice.history(&general, None, None).unwrap();
    assert!(
        history
            .iter()
            .filter(|m| m.text.starts_with("still here"))
            .count()
            == 12,
        "{history:?}"
    );
}

#[test]
fn an_unreachable_server_is_a_clear_error_not_a_hang() {
    let ctx = zmq::Context::new();
    // A port held by a listener that never speaks ZMTP: nothing there answers, and no other
    // test's server can be given the port meanwhile (as it could once a stopped one freed it).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unused = format!("tcp://{}", silent.local_addr().unwrap());
    let mut alice = session(&ctx, &unused, "alice");
    let err = alice.list_groups().unwrap_err().to_string();
    assert!(err.contains("no answer from the message server"), "{err}");
    let err = alice
        .resolve(&format!("general@{}", zms::transport::address(&unused)))
        .and_then(|g| alice.send(&g, "x"));
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("no answer from the group server"));
}

#[test]
fn members_see_others_join_and_leave() {
    let c = cluster(&["general"]);
    let mut alice = c.session("alice");
    let mut bob = c.session("bob");
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    bob.join(&general).unwrap();
    bob.leave(&general).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match alice.next_event(LIMIT).unwrap() {
            Some(SessionEvent::Presence {
                group,
                user,
                joined,
            }) => seen.push((group.name, user, joined)),
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("no presence events within {LIMIT:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("general".into(), "bob".into(), true),
            ("general".into(), "bob".into(), false)
        ]
    );
}

/// A group server config for `groups` registering with `directory`, data in `data`.
fn group_config(directory: &str, groups: &[&str], data: &std::path::Path) -> zms::group::Config {
    zms::group::Config {
        groups: groups.iter().map(|g| g.to_string()).collect(),
        data: data.to_path_buf(),
        directories: vec![directory.to_string()],
        advertise: None,
        durability: Default::default(),
        security: None,
    }
}

#[test]
fn a_group_name_held_by_a_live_server_is_refused_to_another_unless_it_replaces() {
    use zms::group::GroupServer;
    let c = cluster(&["general"]);
    let (mut alice, general) = c.member("alice", "general");
    let data = tempfile::tempdir().unwrap();
    let config = group_config(c.dir.endpoint(), &["general", "rust"], data.path());

    // The second server is told why, and registers nothing (not even `rust`).
    let err = GroupServer::bind(&c.ctx, "tcp://127.0.0.1:*", config.clone())
        .unwrap()
        .register(LIMIT)
        .err()
        .expect("a second holder of general is refused")
        .to_string();
    assert!(
        err.contains(&format!(
            "group 'general' is already hosted by the group server at {}",
            c.grp.address()
        )) && err.contains("--replace"),
        "{err}"
    );
    let listed = |s: &mut zms::client::Session| -> Vec<String> {
        s.list_groups()
            .unwrap()
            .iter()
            .map(|g| format!("{}@{}", g.name, g.address))
            .collect()
    };
    assert_eq!(listed(&mut alice), [format!("general@{}", c.grp.address())]);
    alice.send(&general, "still served").unwrap();
    let mut bob = c.session("bob");
    let found = bob.resolve("general").unwrap();
    bob.join(&found).unwrap();
    bob.send(&found, "me too").unwrap();

    // The same server restarting (same address) is itself, not a rival.
    let address = c.grp.address();
    c.grp.stop().unwrap();
    let restarted = rebind(|| {
        GroupServer::bind(
            &c.ctx,
            &format!("tcp://{address}"),
            group_config(c.dir.endpoint(), &["general"], c.data.path()),
        )
    })
    .register(LIMIT)
    .unwrap()
    .spawn(&c.ctx)
    .unwrap();

    // An operator's --replace takes the name over; the former holder is refused from then on.
    let replacing = GroupServer::bind(&c.ctx, "tcp://127.0.0.1:*", config)
        .unwrap()
        .with_replace(true)
        .register(LIMIT)
        .unwrap();
    let new_address = replacing.address().to_string();
    let _replacing = replacing.spawn(&c.ctx).unwrap();
    let wanted = [
        format!("general@{new_address}"),
        format!("rust@{new_address}"),
    ];
    assert!(eventually(LIMIT, || listed(&mut alice) == wanted));
    assert!(
        restarted.is_running(),
        "the former holder serves on, unlisted"
    );
}

#[test]
fn a_group_server_says_it_is_not_registered_until_a_message_server_answers() {
    use zms::directory::DirectoryServer;
    use zms::group::GroupServer;
    let ctx = zmq::Context::new();
    // Bound but not yet serving: REGISTER arrives and waits unanswered.
    let dir = rebind(|| DirectoryServer::bind(&ctx, "tcp://127.0.0.1:*"));
    let data = tempfile::tempdir().unwrap();
    let server = GroupServer::bind(
        &ctx,
        "tcp://127.0.0.1:*",
        group_config(dir.endpoint(), &["general"], data.path()),
    )
    .unwrap()
    .register(Duration::from_millis(200))
    .unwrap();
    let why = server
        .unregistered()
        .expect("not registered yet")
        .to_string();
    assert!(
        why.contains(&format!(
            "no answer from message server {}",
            zms::transport::address(dir.endpoint())
        )),
        "{why}"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let _grp = server
        .on_registered(move || tx.send(()).unwrap())
        .spawn(&ctx)
        .unwrap();
    assert!(
        rx.try_recv().is_err(),
        "not before a message server answered"
    );
    let _dir = dir.spawn(&ctx).unwrap();
    rx.recv_timeout(LIMIT)
        .expect("told once a message server acknowledged it");
}

#[test]
fn servers_refuse_empty_texts_control_characters_and_disguised_names() {
    let c = cluster(&["general"]);
    let raw = raw_member(&c.ctx, c.grp.endpoint(), "general", "alice");
    let refusal = |socket: &zmq::Socket, request: &Request| -> (ErrorCode, String) {
        socket.send(codec::encode_request(9, request), 0).unwrap();
        loop {
            match codec::decode_incoming(&socket.recv_bytes(0).unwrap()).unwrap() {
                Incoming::Reply(9, Reply::Error { code, reason }) => return (code, reason),
                Incoming::Event(_) => continue, // presence and messages pushed meanwhile
                other => panic!("{request:?} was taken: {other:?}"),
            }
        }
    };
    let send = |text: &str| Request::Send {
        group: "general".into(),
        user: "alice".into(),
        client_id: String::new(),
        text: text.into(),
    };
    for text in [
        "",
        " \n\t ",
        "hi\r\u{1b}[K07:42:00 bob: paste it",
        "\u{1b}]0;x\u{7}",
        "\u{9b}2J",
    ] {
        let (code, reason) = refusal(&raw, &send(text));
        assert_eq!(code, ErrorCode::BadRequest, "{text:?}: {reason}");
    }
    let (_, reason) = refusal(&raw, &send("bell\u{7}"));
    assert_eq!(
        reason,
        "message holds control character U+0007 at byte 4; only newline and tab are allowed"
    );
    let batch = Request::SendBatch {
        group: "general".into(),
        user: "alice".into(),
        messages: ["fine", ""]
            .map(|text| Outgoing {
                client_id: String::new(),
                text: text.into(),
            })
            .to_vec(),
    };
    assert_eq!(refusal(&raw, &batch).0, ErrorCode::BadRequest);
    let join = |user: &str| Request::Join {
        group: "general".into(),
        user: user.into(),
    };
    let (code, reason) = refusal(&raw, &join("ａｌｉｃｅ"));
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(reason.ends_with("write it as 'alice'"), "{reason}");
    for user in ["bob\u{202E}", "b\u{200B}ob", "e\u{301}ve", "x\u{1b}[2J"] {
        let (code, reason) = refusal(&raw, &join(user));
        assert_eq!(code, ErrorCode::BadRequest, "{user:?}");
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
    }
    let hello = Request::Hello {
        name: "bob\u{2066}".into(),
    };
    let dir = raw_dealer(&c.ctx, c.dir.endpoint());
    assert_eq!(refusal(&dir, &hello).0, ErrorCode::BadRequest);
    // A two-line message with a tab is fine, and nothing refused was stored.
    let (mut alice, general) = c.member("alice", "general");
    alice.send(&general, "two\n\tlines").unwrap();
    let history = alice.history(&general, None, None).unwrap();
    assert_eq!(texts(&history), ["two\n\tlines"]);
}

#[test]
fn trimming_under_live_load_keeps_the_newest_and_members_catch_up_from_history() {
    let c = cluster_retaining(&["log", "keep"], &["200msgs", "keep=forever"]);
    let (mut alice, log) = c.member("alice", "log");
    let (mut bob, _) = c.member("bob", "log");
    let keep = alice.resolve("keep").unwrap();
    alice.join(&keep).unwrap();
    alice.send(&keep, "kept for good").unwrap();
    // 40 SENDS of 25: a chunk each, trimmed behind the sender while it goes on.
    let mut sent = Vec::new();
    for batch in 0..40 {
        let texts: Vec<String> = (0..25).map(|i| format!("{}", batch * 25 + i)).collect();
        alice.send_many(&log, &texts).unwrap();
        sent.extend(texts);
    }
    // The live member misses nothing while the store trims.
    let live = receive(&mut bob, sent.len(), LIMIT);
    assert_eq!(texts(&live), sent);
    // Trimming runs while the server is idle: wait for it to reach the policy.
    let kept_from = |s: &mut zms::client::Session| {
        s.history_page(&log, 0, 0, 1)
            .unwrap()
            .0
            .first()
            .unwrap()
            .seq
    };
    assert!(
        eventually(Duration::from_secs(30), || kept_from(&mut bob)
            > 1_000 - 225),
        "the oldest messages were trimmed"
    );
    // A member catching up reads the newest, at least 200, without gaps, to the last seq.
    let mut carol = c.session("carol");
    carol.join(&log).unwrap();
    let history = carol.history(&log, None, None).unwrap();
    let first = history[0].seq;
    assert!(history.len() >= 200, "kept {}", history.len());
    assert_eq!(seqs(&history), (first..=1_000).collect::<Vec<_>>());
    assert_eq!(texts(&history), sent[first as usize - 1..]);
    // HISTORY says where kept history starts, so a client waits for nothing before it.
    assert_eq!(carol.first_kept(&log).unwrap(), first);
    assert_eq!(alice.first_kept(&keep).unwrap(), 1);
    // The last message stays, and sends go on from it; a group kept forever loses nothing.
    assert_eq!(alice.send(&log, "after").unwrap().0, 1_001);
    assert_eq!(
        texts(&alice.history(&keep, None, None).unwrap()),
        ["kept for good"]
    );
}
