//! Search, read positions, edits and deletions, end to end: directory, group servers and
//! sessions in-process on loopback, a real SQLite store.

mod common;

use std::time::Duration;

use common::*;
use zms::client::ReadState;
use zms::protocol::{edit, ErrorCode};
use zms::Error;

const LIMIT: Duration = Duration::from_secs(20);

fn refusal(err: Error) -> ErrorCode {
    match err {
        Error::Rejected { code, .. } => code,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn search_covers_only_the_groups_the_user_is_a_member_of() {
    let c = cluster(&["general", "random"]);
    let (mut alice, general) = c.member("alice", "general");
    let (mut bob, _) = c.member("bob", "general");
    let random = bob.resolve("random").unwrap();
    bob.join(&random).unwrap();
    bob.send(&general, "lunch at noon?").unwrap();
    bob.send(&random, "secret lunch plans").unwrap();
    bob.send(&general, "or dinner").unwrap();

    let mine: Vec<String> = alice
        .my_groups()
        .unwrap()
        .into_iter()
        .map(|(g, _)| g.name)
        .collect();
    assert_eq!(mine, ["general"]);
    let groups: Vec<_> = alice
        .my_groups()
        .unwrap()
        .into_iter()
        .map(|(g, _)| g)
        .collect();
    let hits = alice.search_all(&groups, "LUNCH", 0, 10).unwrap();
    let found: Vec<(&str, u64, &str)> = hits
        .iter()
        .map(|(g, h)| (g.name.as_str(), h.seq, h.text.as_str()))
        .collect();
    assert_eq!(found, [("general", 1, "lunch at noon?")]);
    assert_eq!(hits[0].1.matches, [(0, 5)]);
    assert_eq!(hits[0].1.sender, "bob");
    let err = alice.search(&random, "lunch", 0, 10).unwrap_err();
    assert_eq!(refusal(err), ErrorCode::NotMember);
    // Bob sees both, newest first.
    let both = bob
        .search_all(&[general.clone(), random.clone()], "lunch", 0, 10)
        .unwrap();
    let names: Vec<&str> = both.iter().map(|(g, _)| g.name.as_str()).collect();
    assert_eq!(names, ["random", "general"]);
}

#[test]
fn a_read_position_never_goes_back_and_survives_a_restart() {
    let c = cluster(&["general"]);
    let endpoint = c.grp.endpoint().to_string();
    let (mut alice, general) = c.member("alice", "general");
    for i in 1..=5 {
        alice.send(&general, &format!("m{i}")).unwrap();
    }
    let state = |last_seq, read_seq| ReadState { last_seq, read_seq };
    assert_eq!(alice.read_state(&general).unwrap(), state(5, 0));
    alice.mark_read(&general, 4).unwrap();
    alice.mark_read(&general, 2).unwrap();
    assert_eq!(alice.read_state(&general).unwrap(), state(5, 4));
    assert_eq!(alice.read_state(&general).unwrap().unread(), 1);

    let mut after = c.session("alice");
    c.grp.stop().unwrap();
    let _grp = group_server_at(
        &c.ctx,
        &endpoint,
        &[c.dir.endpoint()],
        &["general"],
        c.data.path(),
    );
    let mut read = None;
    assert!(
        eventually(LIMIT, || {
            read = after.read_state(&general).ok();
            read.is_some()
        }),
        "the restarted server answers"
    );
    assert_eq!(read, Some(state(5, 4)));
    // Past the end is held at the end: a message sent later is still new.
    after.mark_read(&general, 99).unwrap();
    alice.send(&general, "m6").unwrap();
    assert_eq!(after.read_state(&general).unwrap(), state(6, 5));
}

#[test]
fn only_the_sender_edits_everyone_sees_it_and_history_folds_it() {
    let c = cluster(&["general"]);
    let (mut alice, general) = c.member("alice", "general");
    let (mut bob, _) = c.member("bob", "general");
    alice.send(&general, "wrold").unwrap();
    bob.send(&general, "typo above").unwrap();
    assert_eq!(receive(&mut bob, 2, LIMIT).len(), 2);

    let err = bob.edit(&general, 1, "bob was here").unwrap_err();
    assert_eq!(refusal(err), ErrorCode::NotMember);
    let err = bob.delete(&general, 1).unwrap_err();
    assert_eq!(refusal(err), ErrorCode::NotMember);
    assert_eq!(alice.edit(&general, 1, "world").unwrap(), 3);
    assert_eq!(bob.delete(&general, 2).unwrap(), 4);

    // Pushed to every member as messages of their own, in order, no gap.
    let got = receive(&mut bob, 2, LIMIT);
    assert_eq!(seqs(&got), [3, 4]);
    assert_eq!(
        edit::parse(&got[0].text),
        Some(edit::Change::Edit {
            seq: 1,
            text: "world"
        })
    );
    assert_eq!(
        edit::parse(&got[1].text),
        Some(edit::Change::Delete { seq: 2 })
    );

    let history = alice.history(&general, None, None).unwrap();
    assert_eq!(
        seqs(&history),
        [1, 2, 3, 4],
        "the changes are stored messages"
    );
    let shown = edit::fold(history);
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[0].message.text, "world");
    assert_eq!(shown[0].edited_ms, Some(got[0].ts));
    assert!(shown[1].deleted);
    // Search sees the latest text only.
    assert!(alice.search(&general, "wrold", 0, 10).unwrap().is_empty());
    assert_eq!(alice.search(&general, "world", 0, 10).unwrap()[0].seq, 1);
    assert!(alice.search(&general, "typo", 0, 10).unwrap().is_empty());
}
