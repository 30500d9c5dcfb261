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
