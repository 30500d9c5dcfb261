//! Direct messages: conversations of two users, placed on one of several group servers,
//! closed to everyone else.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use zms::client::GroupRef;
use zms::protocol::ErrorCode;
use zms::Error;

const LIMIT: Duration = Duration::from_secs(20);

fn code<T: std::fmt::Debug>(result: zms::Result<T>) -> ErrorCode {
    match result {
        Err(Error::Rejected { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn two_users_talk_directly_across_two_group_servers() {
    let ctx = zmq::Context::new();
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = directory(&ctx);
    let g1 = group_server(&ctx, dir.endpoint(), &["general"], t1.path());
    let g2 = group_server(&ctx, dir.endpoint(), &["random"], t2.path());
    let mut alice = session(&ctx, dir.endpoint(), "alice");

    // Conversations spread over the group servers, each on the one the message server names.
    let places: HashSet<String> = (0..16)
        .map(|i| alice.conversation(&format!("peer{i}")).unwrap().address)
        .collect();
    let servers: HashSet<String> = [g1.endpoint(), g2.endpoint()]
        .iter()
        .map(|e| zms::transport::address(e))
        .collect();
    assert_eq!(places, servers, "conversations were not spread over both");

    let with_bob = alice.resolve("@bob").unwrap();
    assert_eq!(with_bob.name, "@alice@bob");
    alice.send(&with_bob, "hi bob").unwrap();

    // Bob finds the same conversation (he is a member from its creation) and reads it.
    let mut bob = session(&ctx, dir.endpoint(), "bob");
    let with_alice = bob.conversation("alice").unwrap();
    assert_eq!(with_alice, with_bob);
    assert_eq!(
        texts(&bob.history(&with_alice, None, None).unwrap()),
        ["hi bob"]
    );
    // Live both ways, in order, once.
    bob.send(&with_alice, "hi alice").unwrap();
    // (A sender's own session sees its messages too, as in any group.)
    assert_eq!(
        texts(&receive(&mut alice, 2, LIMIT)),
        ["hi bob", "hi alice"]
    );
    for i in 0..5 {
        alice.send(&with_bob, &format!("m{i}")).unwrap();
    }
    let got = receive(&mut bob, 6, LIMIT);
    assert_eq!(texts(&got), ["hi alice", "m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(seqs(&got), [2, 3, 4, 5, 6, 7]);

    // The group server registers it: listed like any group, where it lives.
    assert!(
        eventually(LIMIT, || alice
            .list_groups()
            .unwrap()
            .iter()
            .any(|g| g.name == "@alice@bob" && g.address == with_bob.address)),
        "the conversation was never listed"
    );
}

#[test]
fn no_third_user_joins_or_reads_a_conversation() {
    let c = cluster(&["general"]);
    let mut alice = c.session("alice");
    let with_bob = alice.conversation("bob").unwrap();
    alice.send(&with_bob, "between us").unwrap();

    let mut carol = c.session("carol");
    assert_eq!(code(carol.join(&with_bob)), ErrorCode::Unauthorized);
    assert_eq!(
        code(carol.history(&with_bob, None, None)),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        code(carol.send(&with_bob, "hello?")),
        ErrorCode::Unauthorized
    );
    // A name out of order, or a made-up form, is no way in either.
    let reversed = GroupRef {
        name: "@bob@alice".into(),
        address: with_bob.address.clone(),
    };
    assert_eq!(code(carol.join(&reversed)), ErrorCode::BadRequest);
    // Her own conversations are apart from theirs; none with herself.
    assert_eq!(carol.conversation("alice").unwrap().name, "@alice@carol");
    assert!(matches!(carol.conversation("carol"), Err(Error::Input(_))));
    assert_eq!(
        texts(&alice.history(&with_bob, None, None).unwrap()),
        ["between us"]
    );
}

/// `zms ARGS` (the real binary) with `home` as its config directory and `stdin` as input.
fn zms(home: &std::path::Path, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(ZMS)
        .args(args)
        .env("ZMS_HOME", home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("zms runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "zms {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_texts(lines: &str) -> Vec<String> {
    lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].to_string())
        .map(|t| t.trim_matches('"').to_string())
        .collect()
}

#[test]
fn zms_dm_sends_and_history_at_name_reads_the_conversation() {
    let d = deploy();
    let home = tempfile::tempdir().unwrap();
    let (h, s) = (home.path(), d.server.as_str());
    let sent = zms(
        h,
        &["dm", "bob", "hello bob", "--server", s, "--name", "alice"],
        "",
    );
    assert!(sent.starts_with("sent @alice@bob@"), "{sent}");
    // Without TEXT each line of stdin is a message, as with `zms send`.
    zms(
        h,
        &["dm", "@bob", "--server", s, "--name", "alice"],
        "two\nthree\n",
    );
    let read = zms(
        h,
        &[
            "history", "@alice", "--server", s, "--name", "bob", "--json",
        ],
        "",
    );
    assert_eq!(json_texts(&read), ["hello bob", "two", "three"]);
    let own = zms(
        h,
        &["history", "@bob", "--server", s, "--name", "alice"],
        "",
    );
    assert!(
        own.lines().last().unwrap().ends_with(" alice: three"),
        "{own}"
    );
}

#[test]
fn tail_follows_every_group_of_the_user_from_the_last_messages() {
    let d = deploy();
    let home = tempfile::tempdir().unwrap();
    let (h, s) = (home.path(), d.server.as_str());
    for who in ["alice", "bob"] {
        zms(h, &["join", "general", "--server", s, "--name", who], "");
    }
    zms(
        h,
        &["send", "general", "--server", s, "--name", "alice"],
        "g1\ng2\ng3\n",
    );
    zms(
        h,
        &["dm", "bob", "--server", s, "--name", "alice"],
        "d1\nd2\n",
    );
    // The group server lists a new conversation with its next REGISTER.
    let listed = || zms(h, &["list", "--server", s], "").contains("@alice@bob");
    assert!(
        eventually(LIMIT, listed),
        "the conversation was never listed"
    );
    // bob is in general and his conversation with alice, not in random.
    let tail = Proc::spawn(&[
        "tail", "--all", "--last", "2", "--server", s, "--name", "bob",
    ]);
    let mut lines: Vec<String> = (0..4).map(|_| tail.line()).collect();
    lines.sort();
    let shown: Vec<String> = lines
        .iter()
        .map(|l| {
            let (label, rest) = l.split_once(' ').unwrap();
            format!("{label} {}", rest.rsplit_once(": ").unwrap().1)
        })
        .collect();
    assert_eq!(
        shown,
        ["[@alice] d1", "[@alice] d2", "[general] g2", "[general] g3"]
    );
    // Then live, labelled the same way.
    zms(
        h,
        &["send", "general", "g4", "--server", s, "--name", "alice"],
        "",
    );
    let live = tail.line();
    assert!(
        live.starts_with("[general] ") && live.ends_with("alice: g4"),
        "{live}"
    );
    // A conversation begun later is followed once listed, from its first message.
    zms(
        h,
        &["dm", "bob", "--server", s, "--name", "carol"],
        "c1\nc2\n",
    );
    let later: Vec<String> = (0..2)
        .map(|_| tail.lines.recv_timeout(LIMIT).unwrap())
        .collect();
    assert!(
        later[0].starts_with("[@carol] ") && later[0].ends_with("carol: c1"),
        "{later:?}"
    );
    assert!(later[1].ends_with("carol: c2"), "{later:?}");
}

#[test]
fn zms_mentions_lists_the_messages_naming_the_user_over_groups_and_conversations() {
    let d = deploy();
    let home = tempfile::tempdir().unwrap();
    let (h, s) = (home.path(), d.server.as_str());
    for (who, group) in [("alice", "general"), ("bob", "general"), ("bob", "random")] {
        zms(h, &["join", group, "--server", s, "--name", who], "");
    }
    zms(
        h,
        &["send", "general", "--server", s, "--name", "alice"],
        "hi @bob\nhi @bobby\nbob@example.org\n",
    );
    zms(
        h,
        &[
            "send",
            "random",
            "@bob: random",
            "--server",
            s,
            "--name",
            "bob",
        ],
        "",
    );
    zms(
        h,
        &["dm", "bob", "psst @bob", "--server", s, "--name", "carol"],
        "",
    );
    let listed = || zms(h, &["list", "--server", s], "").contains("@bob@carol");
    assert!(
        eventually(LIMIT, listed),
        "the conversation was never listed"
    );
    let out = zms(
        h,
        &["mentions", "--json", "--server", s, "--name", "bob"],
        "",
    );
    let found: Vec<(String, String)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["group"].as_str().unwrap().into(),
                v["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    // Not bob's own, not a longer name, not an address; oldest first.
    assert_eq!(
        found,
        [
            ("general".to_string(), "hi @bob".to_string()),
            ("@bob@carol".to_string(), "psst @bob".to_string())
        ]
    );
    let plain = zms(h, &["mentions", "--server", s, "--name", "bob"], "");
    assert!(
        plain.starts_with("[general] ") && plain.contains("\n[@carol] "),
        "{plain}"
    );
}
