//! State's decisions, with no SQLite and no sockets: requests go through [`Batch`] (the poll
//! loop's transaction logic) onto [`Memory`], a store kept in maps, or straight to
//! [`State::handle`] where the effects themselves are the point.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;
use crate::group::batch::Batch;
use crate::group::storage::{Appended, Storage};
use crate::protocol::{self, Acked, ErrorCode, Member, Message, Outgoing, Reply, Request};

/// What [`Memory`] holds.
#[derive(Debug, Clone, Default)]
struct Stored {
    groups: Vec<StoredGroup>,
    messages: Vec<(i64, Message)>,
    sent: HashMap<(i64, String, String), (u64, i64)>,
    users: Vec<(String, String)>,
    invites: Vec<(i64, String)>,
    bans: Vec<(i64, String)>,
    reads: HashMap<(i64, String), u64>,
}

/// A store in maps, with transactions, for State's tests: what the trait promises, nothing
/// more. A failure is asked for by setting `fail_commit` or `fail_writes`.
#[derive(Debug, Default)]
struct Memory {
    stored: Stored,
    /// The state before the open transaction, to go back to on a rollback.
    before: Option<Stored>,
    fail_commit: Option<String>,
    fail_writes: Option<String>,
    /// Transactions that cannot begin (the write lock is held elsewhere), and how many were
    /// asked for.
    fail_begin: Option<String>,
    begins: usize,
}

impl Memory {
    fn group(&mut self, id: i64) -> &mut StoredGroup {
        self.stored
            .groups
            .iter_mut()
            .find(|g| g.id == id)
            .expect("a group of the test")
    }

    fn written(&self) -> crate::Result<()> {
        match &self.fail_writes {
            Some(reason) => Err(crate::Error::Input(reason.clone())),
            None => Ok(()),
        }
    }
}

impl Storage for Memory {
    fn ensure_group(&mut self, name: &str, _now_ms: i64) -> crate::Result<StoredGroup> {
        if !self.stored.groups.iter().any(|g| g.name == name) {
            let id = self.stored.groups.len() as i64 + 1;
            self.stored.groups.push(StoredGroup {
                id,
                name: name.into(),
                last_seq: 0,
                last_ts: 0,
                members: Vec::new(),
                banned: Vec::new(),
                private: None,
            });
        }
        let id = self
            .stored
            .groups
            .iter()
            .find(|g| g.name == name)
            .unwrap()
            .id;
        self.load_group(id)
    }

    fn load_group(&mut self, id: i64) -> crate::Result<StoredGroup> {
        let (last_seq, last_ts) = self
            .stored
            .messages
            .iter()
            .filter(|(g, _)| *g == id)
            .map(|(_, m)| (m.seq, m.ts))
            .next_back()
            .unwrap_or((0, 0));
        let mut group = self.group(id).clone();
        (group.last_seq, group.last_ts) = (last_seq, last_ts);
        group.members.sort();
        let banned = self.stored.bans.iter().filter(|(g, _)| *g == id);
        group.banned = banned.map(|(_, u)| u.clone()).collect();
        Ok(group)
    }

    fn users(&mut self) -> crate::Result<Vec<(String, String)>> {
        Ok(self.stored.users.clone())
    }

    fn invites(&mut self, group_id: i64) -> crate::Result<Vec<String>> {
        let invited = self.stored.invites.iter().filter(|(g, _)| *g == group_id);
        Ok(invited.map(|(_, k)| k.clone()).collect())
    }

    fn begin(&mut self) -> crate::Result<()> {
        self.begins += 1;
        if let Some(reason) = &self.fail_begin {
            return Err(crate::Error::Input(reason.clone()));
        }
        self.before = Some(self.stored.clone());
        Ok(())
    }

    fn commit(&mut self) -> crate::Result<()> {
        if let Some(reason) = self.fail_commit.take() {
            self.rollback();
            return Err(crate::Error::Input(reason));
        }
        self.before = None;
        Ok(())
    }

    fn rollback(&mut self) {
        if let Some(before) = self.before.take() {
            self.stored = before;
        }
    }

    fn append(
        &mut self,
        group_id: i64,
        message: &Message,
        client_id: &str,
    ) -> crate::Result<Appended> {
        self.written()?;
        let key = (group_id, message.sender.clone(), client_id.to_string());
        if !client_id.is_empty() {
            if let Some(&(seq, ts)) = self.stored.sent.get(&key) {
                return Ok(Appended::Duplicate { seq, ts });
            }
            self.stored.sent.insert(key, (message.seq, message.ts));
        }
        self.stored.messages.push((group_id, message.clone()));
        Ok(Appended::New)
    }

    fn add_member(&mut self, group_id: i64, user: &str, _now_ms: i64) -> crate::Result<()> {
        self.written()?;
        let members = &mut self.group(group_id).members;
        if !members.iter().any(|m| m == user) {
            members.push(user.into());
        }
        Ok(())
    }

    fn remove_member(&mut self, group_id: i64, user: &str) -> crate::Result<()> {
        self.written()?;
        self.group(group_id).members.retain(|m| m != user);
        Ok(())
    }

    fn bind_user(&mut self, name: &str, key: &str, _now_ms: i64) -> crate::Result<()> {
        self.written()?;
        self.stored.users.push((name.into(), key.into()));
        Ok(())
    }

    fn add_invite(&mut self, group_id: i64, key: &str, _now_ms: i64) -> crate::Result<()> {
        self.written()?;
        self.stored.invites.push((group_id, key.into()));
        Ok(())
    }

    fn add_ban(&mut self, group_id: i64, user: &str, _now_ms: i64) -> crate::Result<()> {
        self.written()?;
        self.stored.bans.push((group_id, user.into()));
        Ok(())
    }

    fn remove_ban(&mut self, group_id: i64, user: &str) -> crate::Result<()> {
        self.written()?;
        self.stored
            .bans
            .retain(|(g, u)| (*g, u.as_str()) != (group_id, user));
        Ok(())
    }

    fn add_group(
        &mut self,
        name: &str,
        private: bool,
        now_ms: i64,
    ) -> crate::Result<Option<StoredGroup>> {
        self.written()?;
        let mut group = self.ensure_group(name, now_ms)?;
        self.group(group.id).private = Some(private);
        group.private = Some(private);
        Ok(Some(group))
    }

    fn drop_group(&mut self, group_id: i64) -> crate::Result<()> {
        self.written()?;
        self.stored.groups.retain(|g| g.id != group_id);
        self.stored.messages.retain(|(g, _)| *g != group_id);
        self.stored.bans.retain(|(g, _)| *g != group_id);
        Ok(())
    }

    fn set_private(&mut self, group_id: i64, private: bool) -> crate::Result<()> {
        self.written()?;
        self.group(group_id).private = Some(private);
        Ok(())
    }

    fn added_groups(&mut self) -> crate::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn fetch(
        &mut self,
        group_id: i64,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    ) -> crate::Result<Vec<Message>> {
        let page = self
            .stored
            .messages
            .iter()
            .filter(|(g, m)| *g == group_id && m.seq > after_seq && m.ts >= since_ms);
        Ok(page.take(limit as usize).map(|(_, m)| m.clone()).collect())
    }

    fn limit_size(&mut self, _max_bytes: u64) -> crate::Result<()> {
        Ok(())
    }

    fn trim(
        &mut self,
        _group_id: i64,
        _policy: crate::group::retention::Policy,
        _now_ms: i64,
        _most: usize,
    ) -> crate::Result<u64> {
        Ok(0)
    }

    fn first_kept(&mut self, _group_id: i64) -> crate::Result<u64> {
        Ok(1)
    }

    fn set_read(&mut self, group_id: i64, user: &str, seq: u64) -> crate::Result<()> {
        self.written()?;
        let read = self
            .stored
            .reads
            .entry((group_id, user.into()))
            .or_default();
        *read = (*read).max(seq);
        Ok(())
    }

    fn read_position(&mut self, group_id: i64, user: &str) -> crate::Result<u64> {
        let read = self.stored.reads.get(&(group_id, user.to_string()));
        Ok(read.copied().unwrap_or(0))
    }

    /// Latest texts holding the query as it is, newest first: enough for State's decisions.
    fn search(
        &mut self,
        group_id: i64,
        query: &str,
        since_ms: i64,
        limit: u32,
    ) -> crate::Result<Vec<protocol::Hit>> {
        let messages = self.fetch(group_id, 0, since_ms, u32::MAX)?;
        let shown = protocol::edit::fold(messages).into_iter().rev();
        let hits = shown.filter(|s| !s.deleted && s.message.text.contains(query));
        Ok(hits
            .take(limit as usize)
            .map(|s| protocol::Hit {
                seq: s.message.seq,
                ts: s.message.ts,
                sender: s.message.sender,
                text: s.message.text,
                matches: Vec::new(),
            })
            .collect())
    }
}

fn setup() -> (State, Memory) {
    let mut store = Memory::default();
    let general = store.ensure_group("general", 0).unwrap();
    let state = State::new(vec![general], "h:1".into(), 7);
    (state, store)
}

/// As [`setup`], with alice a member of general on route `a`.
fn setup_with_alice() -> (State, Memory) {
    let (mut state, mut store) = setup();
    run(&mut state, &mut store, b"a", join("general", "alice"));
    (state, store)
}

/// A time for requests, the same for all: these tests are about decisions, not clocks.
fn now() -> Now {
    Now {
        at: Instant::now(),
        ms: 1_000,
    }
}

fn peer(route: &Route) -> Peer<'_> {
    Peer {
        route,
        key: None,
        address: None,
    }
}

/// One request of its own batch, from `route`, as the poll loop handles it.
fn run(state: &mut State, store: &mut Memory, route: &[u8], request: Request) -> Vec<Outbound> {
    run_from(state, store, peer(&route.to_vec()), request)
}

fn run_from(
    state: &mut State,
    store: &mut Memory,
    from: Peer<'_>,
    request: Request,
) -> Vec<Outbound> {
    let mut batch = Batch::default();
    if let Some(reply) = batch.admit(&request, state, store) {
        return vec![Outbound::Reply {
            route: from.route.clone(),
            req_id: 1,
            reply,
        }];
    }
    batch.handle(state, store, now(), from, 1, request);
    batch.finish(state, store)
}

/// As [`run`], with the store's commit failing as on a full disk.
fn run_failing_commit(
    state: &mut State,
    store: &mut Memory,
    route: &[u8],
    request: Request,
) -> Vec<Outbound> {
    store.fail_commit = Some("disk full".into());
    run(state, store, route, request)
}

fn reply_of(out: &[Outbound]) -> Reply {
    match &out[0] {
        Outbound::Reply { reply, .. } | Outbound::Durable { reply, .. } => reply.clone(),
        Outbound::Event { .. } | Outbound::Messages { .. } => panic!("push first"),
    }
}

fn join(g: &str, u: &str) -> Request {
    Request::Join {
        group: g.into(),
        user: u.into(),
    }
}
fn send(u: &str, id: &str, text: &str) -> Request {
    Request::Send {
        group: "general".into(),
        user: u.into(),
        client_id: id.into(),
        text: text.into(),
    }
}

#[test]
fn only_members_send_and_sends_are_sequenced_and_pushed() {
    let (mut state, mut store) = setup();
    let refused = reply_of(&run(&mut state, &mut store, b"a", send("alice", "1", "hi")));
    assert!(
        matches!(
            refused,
            Reply::Error {
                code: ErrorCode::NotMember,
                ..
            }
        ),
        "{refused:?}"
    );

    assert_eq!(
        reply_of(&run(&mut state, &mut store, b"a", join("general", "alice"))),
        Reply::Joined {
            group: "general".into(),
            last_seq: 0
        }
    );
    let out = run(&mut state, &mut store, b"a", send("alice", "1", "hi"));
    assert!(matches!(
        reply_of(&out),
        Reply::Ack {
            seq: 1,
            duplicate: false,
            ..
        }
    ));
    assert!(
        matches!(&out[1], Outbound::Messages { group, messages } if group == "general" && messages[0].seq == 1)
    );
    assert_eq!(state.subscribers("general").count(), 1);

    let retried = run(&mut state, &mut store, b"a", send("alice", "1", "hi"));
    assert!(matches!(
        reply_of(&retried),
        Reply::Ack {
            seq: 1,
            duplicate: true,
            ..
        }
    ));
    assert_eq!(retried.len(), 1, "a duplicate is not pushed again");
    assert!(matches!(
        reply_of(&run(
            &mut state,
            &mut store,
            b"a",
            send("alice", "2", "again")
        )),
        Reply::Ack { seq: 2, .. }
    ));
}

#[test]
fn unknown_groups_bad_names_and_oversized_texts_are_refused() {
    let (mut state, mut store) = setup();
    let code = |r: Reply| match r {
        Reply::Error { code, .. } => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(reply_of(&run(
            &mut state,
            &mut store,
            b"a",
            join("nope", "alice")
        ))),
        ErrorCode::UnknownGroup
    );
    assert_eq!(
        code(reply_of(&run(
            &mut state,
            &mut store,
            b"a",
            join("general", "a b")
        ))),
        ErrorCode::BadRequest
    );
    run(&mut state, &mut store, b"a", join("general", "alice"));
    let big = "x".repeat(protocol::MAX_TEXT + 1);
    assert_eq!(
        code(reply_of(&run(
            &mut state,
            &mut store,
            b"a",
            send("alice", "", &big)
        ))),
        ErrorCode::TooLarge
    );
}

#[test]
fn empty_texts_control_characters_and_disguised_names_are_refused() {
    let (mut state, mut store) = setup();
    let mut refusal =
        |from: &[u8], request: Request| match reply_of(&run(&mut state, &mut store, from, request))
        {
            Reply::Error { code, reason } => Some((code, reason)),
            _ => None,
        };
    for name in [
        "ａｌｉｃｅ",
        "bob\u{202E}",
        "bo\u{200B}b",
        "e\u{301}ve",
        "x\u{1b}[2J",
    ] {
        let (code, reason) = refusal(b"m", join("general", name)).expect(name);
        assert_eq!(code, ErrorCode::BadRequest, "{name}");
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
    }
    assert!(refusal(b"a", join("general", "alice")).is_none());
    assert!(
        refusal(b"a", join("general", "ève")).is_none(),
        "NFC letters are fine"
    );
    for text in [
        "",
        "   ",
        "\n\t ",
        "\u{200B}",
        "hi\r\u{1b}[K07:42 bob: hi",
        "\u{1b}]0;t\u{7}",
        "\u{9b}2J",
    ] {
        let (code, _) = refusal(b"a", send("alice", "", text)).expect(text);
        assert_eq!(code, ErrorCode::BadRequest, "{text:?}");
    }
    assert!(refusal(b"a", send("alice", "", "two\n\tlines")).is_none());
    let batch = Request::SendBatch {
        group: "general".into(),
        user: "alice".into(),
        messages: ["fine", " "]
            .map(|text| Outgoing {
                client_id: String::new(),
                text: text.into(),
            })
            .to_vec(),
    };
    let (code, reason) = refusal(b"a", batch).expect("a batch with an empty message");
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(reason.starts_with("message 2 of the batch"), "{reason}");
}

#[test]
fn leave_unsubscribes_and_silent_connections_expire_keeping_membership() {
    let (mut state, mut store) = setup_with_alice();
    run(&mut state, &mut store, b"b", join("general", "bob"));
    assert_eq!(state.connections(), 2);
    assert_eq!(
        reply_of(&run(
            &mut state,
            &mut store,
            b"a",
            Request::Leave {
                group: "general".into(),
                user: "alice".into()
            }
        )),
        Reply::Ok
    );
    assert_eq!(
        state.subscribers("general").collect::<Vec<_>>(),
        [&b"b".to_vec()]
    );

    let later = Instant::now() + Duration::from_secs(60);
    assert_eq!(state.expire(later, Duration::from_secs(5)), 1);
    assert_eq!(state.subscribers("general").count(), 0);
    let members = reply_of(&run(
        &mut state,
        &mut store,
        b"b",
        Request::Members {
            group: "general".into(),
            user: "bob".into(),
        },
    ));
    assert_eq!(
        members,
        Reply::Members {
            group: "general".into(),
            members: vec![Member {
                name: "bob".into(),
                online: false
            }]
        }
    );
}

#[test]
fn a_join_that_fails_to_commit_leaves_no_subscription() {
    let (mut state, mut store) = setup();
    let out = run_failing_commit(&mut state, &mut store, b"a", join("general", "alice"));
    assert_eq!(code_of(&out), Some(ErrorCode::Unavailable));
    assert_eq!(state.subscribers("general").count(), 0);
    assert_eq!(state.connections(), 0);
}

#[test]
fn history_pages_stay_within_the_reply_limit() {
    let m = |seq| Message {
        seq,
        ts: 0,
        sender: "s".into(),
        text: "x".repeat(1000),
    };
    let mut page: Vec<Message> = (1..=10).map(m).collect();
    keep_within(&mut page, 3 * 1022);
    assert_eq!(page.len(), 3);
    keep_within(&mut page, 10);
    assert_eq!(page.len(), 1, "always at least one, so paging advances");
}

#[test]
fn a_failed_batch_turns_acks_into_errors_and_keeps_sequencing() {
    let (mut state, mut store) = setup_with_alice();
    let out = run_failing_commit(&mut state, &mut store, b"a", send("alice", "x", "lost"));
    assert_eq!(out.len(), 1, "the push is dropped");
    assert_eq!(code_of(&out), Some(ErrorCode::Unavailable));
    let next = run(&mut state, &mut store, b"a", send("alice", "y", "kept"));
    assert!(
        matches!(reply_of(&next), Reply::Ack { seq: 1, .. }),
        "seq 1 was never stored, so it is reused"
    );
}

fn batch(u: &str, messages: &[(&str, &str)]) -> Request {
    Request::SendBatch {
        group: "general".into(),
        user: u.into(),
        messages: messages
            .iter()
            .map(|(id, text)| Outgoing {
                client_id: id.to_string(),
                text: text.to_string(),
            })
            .collect(),
    }
}

#[test]
fn a_batch_is_sequenced_in_order_deduplicated_and_pushed_as_its_new_messages() {
    let (mut state, mut store) = setup_with_alice();
    run(&mut state, &mut store, b"a", send("alice", "c1", "before"));
    let out = run(
        &mut state,
        &mut store,
        b"a",
        batch(
            "alice",
            &[
                ("c2", "two"),
                ("c1", "again"),
                ("c3", "three"),
                ("c2", "twice"),
            ],
        ),
    );
    let Reply::Acks(acks) = reply_of(&out) else {
        panic!("{out:?}")
    };
    let seqs: Vec<(u64, bool)> = acks.iter().map(|a| (a.seq, a.duplicate)).collect();
    assert_eq!(
        seqs,
        [(2, false), (1, true), (3, false), (2, true)],
        "new messages take the next seqs in order; retried ids answer with their original"
    );
    let pushed: Vec<(u64, &str)> = out[1..]
        .iter()
        .flat_map(|o| match o {
            Outbound::Messages { messages, .. } => messages.iter(),
            other => panic!("{other:?}"),
        })
        .map(|m| (m.seq, m.text.as_str()))
        .collect();
    assert_eq!(pushed, [(2, "two"), (3, "three")]);
    let next = run(&mut state, &mut store, b"a", send("alice", "c4", "after"));
    assert!(matches!(reply_of(&next), Reply::Ack { seq: 4, .. }));
}

#[test]
fn a_batch_is_refused_whole_for_one_long_text_a_rate_or_a_failed_write() {
    let (mut state, mut store) = setup_with_alice();
    let big = "x".repeat(protocol::MAX_TEXT + 1);
    let out = run(
        &mut state,
        &mut store,
        b"a",
        batch("alice", &[("c1", "fine"), ("c2", &big)]),
    );
    assert!(
        matches!(reply_of(&out), Reply::Error { code: ErrorCode::TooLarge, ref reason }
            if reason.contains("message 2 of the batch")),
        "{out:?}"
    );
    assert_eq!(out.len(), 1, "nothing stored, nothing pushed");

    state.set_limits(Limits {
        rate: Some(2),
        ..Limits::default()
    });
    let five = [
        ("r1", "a"),
        ("r2", "b"),
        ("r3", "c"),
        ("r4", "d"),
        ("r5", "e"),
    ];
    let out = run(&mut state, &mut store, b"a", batch("alice", &five));
    assert!(
        matches!(reply_of(&out), Reply::Error { code: ErrorCode::Limited, ref reason }
            if reason.contains("send fewer at a time")),
        "{out:?}"
    );
    let out = run(&mut state, &mut store, b"a", batch("alice", &five[..4]));
    assert!(matches!(reply_of(&out), Reply::Acks(ref a) if a.len() == 4));
    let out = run(&mut state, &mut store, b"a", batch("alice", &five[4..]));
    assert!(
        matches!(reply_of(&out), Reply::Error { code: ErrorCode::Limited, ref reason }
            if reason.contains("slow down")),
        "the burst of 4 is spent: {out:?}"
    );

    state.set_limits(Limits::default());
    let lost = batch("alice", &[("l1", "lost"), ("l2", "lost too")]);
    let out = run_failing_commit(&mut state, &mut store, b"a", lost);
    assert_eq!(out.len(), 1, "the pushes are dropped");
    assert_eq!(code_of(&out), Some(ErrorCode::Unavailable));
    let next = run(&mut state, &mut store, b"a", send("alice", "n1", "kept"));
    assert!(
        matches!(reply_of(&next), Reply::Ack { seq: 5, .. }),
        "the failed batch's seqs are reused: {next:?}"
    );
}

/// A key as ZAP hands it over: 40 characters of Z85.
fn key(c: char) -> String {
    c.to_string().repeat(40)
}

/// `user` joins general from `route` under `key`, as [`run_from`] runs it.
fn join_keyed(
    state: &mut State,
    store: &mut Memory,
    route: &Route,
    key: &str,
    user: &str,
) -> Vec<Outbound> {
    run_from(state, store, keyed(route, key), join("general", user))
}

fn keyed<'a>(route: &'a Route, key: &'a str) -> Peer<'a> {
    Peer {
        route,
        key: Some(key),
        address: None,
    }
}

fn code_of(out: &[Outbound]) -> Option<ErrorCode> {
    match reply_of(out) {
        Reply::Error { code, .. } => Some(code),
        _ => None,
    }
}

#[test]
fn a_send_is_decided_without_a_store_and_numbered_from_the_groups_last_seq() {
    let general = StoredGroup {
        id: 3,
        name: "general".into(),
        last_seq: 41,
        last_ts: 5_000,
        members: vec!["alice".into()],
        banned: Vec::new(),
        private: None,
    };
    let mut state = State::new(vec![general], "h:1".into(), 7);
    let route = b"a".to_vec();
    let mut effects = Effects::default();
    state.handle(
        now(),
        peer(&route),
        9,
        send("alice", "c1", "hi"),
        &mut effects,
    );
    assert!(
        effects.out.is_empty(),
        "nothing is answered before it is stored"
    );
    assert!(effects.writes.is_empty() && effects.read.is_none());
    let mut append = effects.append.take().expect("an append");
    assert_eq!((append.group_id, append.first_seq), (3, 42));
    assert_eq!(append.client_ids, ClientIds::One("c1".into()));
    assert_eq!(
        append.messages[0].ts, 5_000,
        "a clock behind the group's last message does not take ts back"
    );

    append.messages[0].seq = 42;
    let acked = Acked {
        seq: 42,
        ts: 5_000,
        duplicate: false,
    };
    state.appended(append, &mut vec![acked], &mut effects.out);
    assert_eq!(
        reply_of(&effects.out),
        Reply::Ack {
            seq: 42,
            ts: 5_000,
            duplicate: false
        }
    );
    assert!(
        matches!(&effects.out[1], Outbound::Messages { messages, .. } if messages[0].seq == 42)
    );

    let mut next = Effects::default();
    state.handle(
        now(),
        peer(&route),
        10,
        send("alice", "c2", "more"),
        &mut next,
    );
    assert_eq!(next.append.expect("an append").first_seq, 43);
}

#[test]
fn a_duplicate_client_id_is_acked_with_the_original_seq_and_moves_nothing() {
    let (mut state, mut store) = setup_with_alice();
    run(&mut state, &mut store, b"a", send("alice", "c1", "hi"));
    let route = b"a".to_vec();
    let mut effects = Effects::default();
    state.handle(
        now(),
        peer(&route),
        2,
        send("alice", "c1", "hi"),
        &mut effects,
    );
    let mut append = effects.append.take().unwrap();
    assert_eq!(append.first_seq, 2, "State cannot know it is a retry");
    let mut acks = Vec::new();
    store.append_batch(&mut append, &mut acks).unwrap();
    assert!(append.messages.is_empty(), "nothing new to push");
    state.appended(append, &mut acks, &mut effects.out);
    assert_eq!(effects.out.len(), 1);
    assert!(matches!(
        reply_of(&effects.out),
        Reply::Ack {
            seq: 1,
            duplicate: true,
            ..
        }
    ));
    let next = run(&mut state, &mut store, b"a", send("alice", "c2", "new"));
    assert!(matches!(reply_of(&next), Reply::Ack { seq: 2, .. }));
}

#[test]
fn history_is_read_in_bounded_pages_and_an_empty_page_needs_no_read() {
    let (mut state, mut store) = setup_with_alice();
    for i in 0..5 {
        run(
            &mut state,
            &mut store,
            b"a",
            send("alice", &format!("c{i}"), "hi"),
        );
    }
    let route = b"a".to_vec();
    let history = |after_seq, limit| Request::History {
        group: "general".into(),
        user: "alice".into(),
        after_seq,
        since_ms: 0,
        limit,
    };
    let mut effects = Effects::default();
    state.handle(now(), peer(&route), 3, history(0, u32::MAX), &mut effects);
    let read = effects.read.take().expect("a read");
    assert_eq!(read.limit, protocol::HISTORY_PAGE_MAX);
    assert_eq!(read.last_seq, 5);

    state.handle(now(), peer(&route), 4, history(0, 0), &mut effects);
    assert!(effects.read.is_none(), "a page of none is answered at once");
    assert!(matches!(
        reply_of(&effects.out),
        Reply::Messages { last_seq: 5, ref messages, .. } if messages.is_empty()
    ));

    let out = run(&mut state, &mut store, b"a", history(2, 2));
    let Reply::Messages { messages, .. } = reply_of(&out) else {
        panic!("{out:?}")
    };
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [3, 4]);

    let failed = read.answer(Err(crate::Error::Input("disk gone".into())));
    assert!(matches!(
        failed,
        Outbound::Reply { reply: Reply::Error { code: ErrorCode::Internal, ref reason }, .. }
            if reason.contains("disk gone")
    ));
}

#[test]
fn a_gone_member_receives_no_pushes_and_stays_a_member() {
    let (mut state, mut store) = setup_with_alice();
    run(&mut state, &mut store, b"b", join("general", "bob"));
    // The loop found bob's connection gone (or too slow to keep) while pushing.
    state.drop_conn(&b"b".to_vec());
    assert_eq!(
        state.subscribers("general").collect::<Vec<_>>(),
        [&b"a".to_vec()]
    );
    let members = reply_of(&run(
        &mut state,
        &mut store,
        b"a",
        Request::Members {
            group: "general".into(),
            user: "alice".into(),
        },
    ));
    let Reply::Members { members, .. } = members else {
        panic!("{members:?}")
    };
    let online: Vec<(&str, bool)> = members
        .iter()
        .map(|m| (m.name.as_str(), m.online))
        .collect();
    assert_eq!(online, [("alice", true), ("bob", false)]);
    let back = run(
        &mut state,
        &mut store,
        b"c",
        Request::Subscribe {
            group: "general".into(),
            user: "bob".into(),
        },
    );
    assert!(matches!(reply_of(&back), Reply::Joined { .. }), "{back:?}");
    assert_eq!(state.subscribers("general").count(), 2);
}

#[test]
fn a_private_group_admits_allowed_and_invited_keys_only() {
    let (mut state, mut store) = setup();
    let (member, stranger) = (key('m'), key('s'));
    state.secure(key('S'), &["general".into()], std::slice::from_ref(&member));
    let (a, b) = (b"a".to_vec(), b"b".to_vec());
    let refused = join_keyed(&mut state, &mut store, &b, &stranger, "sam");
    assert!(
        matches!(reply_of(&refused), Reply::Error { code: ErrorCode::Unauthorized, ref reason }
            if reason.contains("is private")),
        "{refused:?}"
    );
    let joined = join_keyed(&mut state, &mut store, &a, &member, "mia");
    assert!(
        matches!(reply_of(&joined), Reply::Joined { .. }),
        "{joined:?}"
    );
    let invite = |key: &str| Request::Invite {
        group: "general".into(),
        user: "mia".into(),
        key: key.into(),
    };
    let bad = run_from(&mut state, &mut store, keyed(&a, &member), invite("short"));
    assert_eq!(code_of(&bad), Some(ErrorCode::BadRequest));
    let ok = run_from(
        &mut state,
        &mut store,
        keyed(&a, &member),
        invite(&stranger),
    );
    assert_eq!(reply_of(&ok), Reply::Ok);
    assert_eq!(store.stored.invites, [(1, stranger.clone())]);
    let joined = join_keyed(&mut state, &mut store, &b, &stranger, "sam");
    assert!(
        matches!(reply_of(&joined), Reply::Joined { .. }),
        "{joined:?}"
    );

    // A server started again on the same store admits the invited key still.
    let general = store.load_group(1).unwrap();
    let mut again = State::new(vec![general], "h:1".into(), 8);
    again.secure(key('S'), &["general".into()], &[]);
    let keys = crate::group::batch::read_keys(&again, &mut store).unwrap();
    again.restore(Vec::new(), Some(keys));
    let c = b"c".to_vec();
    let rejoin = join_keyed(&mut again, &mut store, &c, &stranger, "sam");
    assert!(
        matches!(reply_of(&rejoin), Reply::Joined { .. }),
        "{rejoin:?}"
    );
}

#[test]
fn with_security_a_name_belongs_to_the_first_key_that_uses_it() {
    let (mut state, mut store) = setup();
    state.secure(key('S'), &[], &[]);
    state.set_limits(Limits {
        max_names_per_key: 2,
        ..Limits::default()
    });
    let (one, two) = (key('1'), key('2'));
    let route = b"a".to_vec();
    let joined = join_keyed(&mut state, &mut store, &route, &one, "alice");
    assert!(
        matches!(reply_of(&joined), Reply::Joined { .. }),
        "{joined:?}"
    );
    assert_eq!(store.stored.users, [("alice".to_string(), one.clone())]);

    let taken = join_keyed(&mut state, &mut store, &route, &two, "alice");
    assert!(
        matches!(reply_of(&taken), Reply::Error { code: ErrorCode::Unauthorized, ref reason }
            if reason.contains("belongs to another key")),
        "{taken:?}"
    );
    let plain = run(&mut state, &mut store, b"a", join("general", "alice"));
    assert_eq!(code_of(&plain), Some(ErrorCode::Unauthorized));

    join_keyed(&mut state, &mut store, &route, &one, "al");
    let third = join_keyed(&mut state, &mut store, &route, &one, "ally");
    assert_eq!(code_of(&third), Some(ErrorCode::Limited), "{third:?}");

    // A name whose binding is not stored is not bound, and refuses only its own request.
    let mut batch = Batch::default();
    let sent = send("alice", "c1", "kept");
    assert!(batch.admit(&sent, &mut state, &mut store).is_none());
    batch.handle(&mut state, &mut store, now(), keyed(&route, &one), 1, sent);
    store.fail_writes = Some("disk full".into());
    let joins = join("general", "bob");
    assert!(batch.admit(&joins, &mut state, &mut store).is_none());
    let b = b"b".to_vec();
    batch.handle(&mut state, &mut store, now(), keyed(&b, &two), 2, joins);
    store.fail_writes = None;
    batch.settle(&mut state, &mut store);
    let out = batch.take_out();
    assert!(
        matches!(reply_of(&out), Reply::Ack { seq: 1, .. }),
        "{out:?}"
    );
    let lost = &out[out.len() - 1..];
    assert!(
        matches!(reply_of(lost), Reply::Error { code: ErrorCode::Unauthorized, ref reason }
            if reason.contains("cannot record the name 'bob'")),
        "{out:?}"
    );
    assert_eq!(out.len(), 3, "alice's ack and push, bob's refusal: {out:?}");
    assert_eq!(
        state.subscribers("general").count(),
        1,
        "bob is not subscribed"
    );
    let other = key('3');
    let bob = join_keyed(&mut state, &mut store, &route, &other, "bob");
    assert!(matches!(reply_of(&bob), Reply::Joined { .. }), "{bob:?}");
}

#[test]
fn a_failed_write_fails_its_whole_batch_and_state_is_read_back_from_the_store() {
    let (mut state, mut store) = setup_with_alice();
    let (a, b) = (b"a".to_vec(), b"b".to_vec());
    let mut batch = Batch::default();
    let sent = send("alice", "c1", "first");
    assert!(batch.admit(&sent, &mut state, &mut store).is_none());
    batch.handle(&mut state, &mut store, now(), peer(&a), 1, sent);
    store.fail_writes = Some("disk full".into());
    let joins = join("general", "bob");
    assert!(batch.admit(&joins, &mut state, &mut store).is_none());
    batch.handle(&mut state, &mut store, now(), peer(&b), 2, joins);
    batch.settle(&mut state, &mut store);
    let out = batch.take_out();
    assert_eq!(out.len(), 2, "both answered, nothing pushed: {out:?}");
    for o in &out {
        assert!(
            matches!(o, Outbound::Reply { reply: Reply::Error { code: ErrorCode::Unavailable, reason }, .. }
                if reason.contains("disk full")),
            "{o:?}"
        );
    }
    assert_eq!(
        state.subscribers("general").count(),
        1,
        "bob is not subscribed"
    );
    store.fail_writes = None;
    let next = run(&mut state, &mut store, b"a", send("alice", "c2", "again"));
    assert!(
        matches!(reply_of(&next), Reply::Ack { seq: 1, .. }),
        "seq 1 was never stored: {next:?}"
    );
    let members = run(
        &mut state,
        &mut store,
        b"a",
        Request::Members {
            group: "general".into(),
            user: "alice".into(),
        },
    );
    assert!(
        matches!(reply_of(&members), Reply::Members { ref members, .. } if members.len() == 1),
        "{members:?}"
    );
}

#[test]
fn a_batch_that_cannot_begin_refuses_its_writes_at_once_and_the_next_one_tries_again() {
    let (mut state, mut store) = setup_with_alice();
    store.fail_begin = Some("database is locked".into());
    let begins = store.begins;
    let a = b"a".to_vec();
    let mut batch = Batch::default();
    for i in 0..3 {
        let sent = send("alice", &format!("c{i}"), "hi");
        let refusal = batch.admit(&sent, &mut state, &mut store);
        assert!(
            matches!(refusal, Some(Reply::Error { code: ErrorCode::Unavailable, ref reason })
                if reason.contains("database is locked")),
            "{refusal:?}"
        );
    }
    let members = Request::Members {
        group: "general".into(),
        user: "alice".into(),
    };
    assert!(batch.admit(&members, &mut state, &mut store).is_none());
    batch.handle(&mut state, &mut store, now(), peer(&a), 4, members);
    assert_eq!(store.begins, begins + 1, "asked once for the whole batch");
    assert!(matches!(
        reply_of(&batch.finish(&mut state, &mut store)),
        Reply::Members { .. }
    ));

    store.fail_begin = None;
    let sent = send("alice", "c9", "later");
    assert!(batch.admit(&sent, &mut state, &mut store).is_none());
    batch.handle(&mut state, &mut store, now(), peer(&a), 5, sent);
    let out = batch.finish(&mut state, &mut store);
    assert!(
        matches!(reply_of(&out), Reply::Ack { seq: 1, .. }),
        "{out:?}"
    );
}

fn kick(g: &str, u: &str) -> Request {
    Request::Kick {
        group: g.into(),
        user: u.into(),
    }
}

fn from_address<'a>(route: &'a Route, address: &'a str) -> Peer<'a> {
    Peer {
        route,
        key: None,
        address: Some(address),
    }
}

#[test]
fn without_security_only_loopback_peers_may_kick_and_the_kicked_stop_receiving() {
    let (mut state, mut store) = setup();
    let (bob, admin) = (b"b".to_vec(), b"o".to_vec());
    run(&mut state, &mut store, &bob, join("general", "bob"));
    assert_eq!(state.subscribers("general").count(), 1);

    for remote in ["192.0.2.7", "not an address"] {
        let refused = run_from(
            &mut state,
            &mut store,
            from_address(&admin, remote),
            kick("general", "bob"),
        );
        assert_eq!(code_of(&refused), Some(ErrorCode::Unauthorized), "{remote}");
    }
    let no_address = run(&mut state, &mut store, &admin, kick("general", "bob"));
    assert_eq!(code_of(&no_address), Some(ErrorCode::Unauthorized));
    assert_eq!(store.stored.groups[0].members, ["bob"]);

    let local = from_address(&admin, "127.0.0.1");
    let unknown = run_from(&mut state, &mut store, local, kick("nope", "bob"));
    assert_eq!(code_of(&unknown), Some(ErrorCode::UnknownGroup));
    let stranger = run_from(&mut state, &mut store, local, kick("general", "eve"));
    assert_eq!(code_of(&stranger), Some(ErrorCode::NotMember));

    let kicked = run_from(&mut state, &mut store, local, kick("general", "bob"));
    assert_eq!(reply_of(&kicked), Reply::Ok);
    assert!(store.stored.groups[0].members.is_empty());
    assert_eq!(state.subscribers("general").count(), 0);
    assert!(kicked.iter().any(|o| matches!(o, Outbound::Event { .. })));
    // The kicked user's next request is a stranger's; joining again is allowed.
    let after = run(&mut state, &mut store, &bob, send("bob", "c1", "hi"));
    assert_eq!(code_of(&after), Some(ErrorCode::NotMember));
    let v6 = from_address(&admin, "::1");
    run(&mut state, &mut store, &bob, join("general", "bob"));
    let again = run_from(&mut state, &mut store, v6, kick("general", "bob"));
    assert_eq!(reply_of(&again), Reply::Ok);
}

#[test]
fn with_security_only_operator_keys_may_kick() {
    let (mut state, mut store) = setup();
    state.secure(key('S'), &[], &[]);
    state.set_operators(vec![key('o')]);
    let (bob, admin) = (b"b".to_vec(), b"o".to_vec());
    let bobs_key = key('b');
    run_from(
        &mut state,
        &mut store,
        keyed(&bob, &bobs_key),
        join("general", "bob"),
    );
    // A loopback address means nothing with security, and a member's key is no operator's.
    let member = run_from(
        &mut state,
        &mut store,
        keyed(&bob, &bobs_key),
        kick("general", "bob"),
    );
    assert!(
        matches!(reply_of(&member), Reply::Error { code: ErrorCode::Unauthorized, ref reason }
            if reason.contains("--operator")),
        "{member:?}"
    );
    let operator = key('o');
    let kicked = run_from(
        &mut state,
        &mut store,
        keyed(&admin, &operator),
        kick("general", "bob"),
    );
    assert_eq!(reply_of(&kicked), Reply::Ok);
    assert!(store.stored.groups[0].members.is_empty());
}

#[test]
fn a_ban_removes_a_member_refuses_their_joins_and_outlives_a_restart() {
    let (mut state, mut store) = setup();
    let (bob, admin) = (b"b".to_vec(), b"o".to_vec());
    let local = from_address(&admin, "127.0.0.1");
    let ban = |u: &str| Request::Ban {
        group: "general".into(),
        user: u.into(),
    };
    run(&mut state, &mut store, &bob, join("general", "bob"));
    let remote = run_from(
        &mut state,
        &mut store,
        from_address(&admin, "192.0.2.7"),
        ban("bob"),
    );
    assert_eq!(code_of(&remote), Some(ErrorCode::Unauthorized));
    assert!(store.stored.bans.is_empty());

    let banned = run_from(&mut state, &mut store, local, ban("bob"));
    assert_eq!(reply_of(&banned), Reply::Ok);
    assert!(store.stored.groups[0].members.is_empty());
    assert_eq!(store.stored.bans, [(1, "bob".to_string())]);
    assert_eq!(state.subscribers("general").count(), 0);
    let refused = run(&mut state, &mut store, &bob, join("general", "bob"));
    assert!(
        matches!(reply_of(&refused), Reply::Error { code: ErrorCode::Unauthorized, ref reason }
            if reason == "'bob' is banned from 'general'"),
        "{refused:?}"
    );
    // A name that is no member may be banned ahead.
    let ahead = run_from(&mut state, &mut store, local, ban("eve"));
    assert_eq!(reply_of(&ahead), Reply::Ok);

    let general = store.load_group(1).unwrap();
    let mut again = State::new(vec![general], "h:1".into(), 8);
    for user in ["bob", "eve"] {
        let refused = run(&mut again, &mut store, &bob, join("general", user));
        assert_eq!(code_of(&refused), Some(ErrorCode::Unauthorized), "{user}");
    }
    let others = run(&mut again, &mut store, &bob, join("general", "carol"));
    assert!(matches!(reply_of(&others), Reply::Joined { .. }));
}

fn imported(seq: u64, ts: i64, sender: &str, text: &str) -> protocol::Imported {
    protocol::Imported {
        message: Message {
            seq,
            ts,
            sender: sender.into(),
            text: text.into(),
        },
        client_id: format!("{sender}-{seq}"),
    }
}

#[test]
fn operators_create_set_and_drop_groups_and_the_loop_hears_of_it() {
    let (mut state, mut store) = setup();
    let admin = b"o".to_vec();
    let local = from_address(&admin, "127.0.0.1");
    let create = |g: &str| Request::Create {
        group: g.into(),
        private: false,
    };
    let remote = run_from(
        &mut state,
        &mut store,
        from_address(&admin, "192.0.2.7"),
        create("rust"),
    );
    assert_eq!(code_of(&remote), Some(ErrorCode::Unauthorized));
    assert!(!state.take_groups_changed());
    let bad = run_from(&mut state, &mut store, local, create("no spaces"));
    assert_eq!(code_of(&bad), Some(ErrorCode::BadRequest));
    let twice = run_from(&mut state, &mut store, local, create("general"));
    assert_eq!(code_of(&twice), Some(ErrorCode::BadRequest));

    let created = run_from(&mut state, &mut store, local, create("rust"));
    assert_eq!(reply_of(&created), Reply::Ok);
    assert_eq!(state.group_names(), ["general", "rust"]);
    assert!(state.take_groups_changed());
    let joined = run(&mut state, &mut store, b"b", join("rust", "bob"));
    assert!(
        matches!(reply_of(&joined), Reply::Joined { .. }),
        "{joined:?}"
    );

    let set = Request::Set {
        group: "rust".into(),
        private: true,
    };
    assert_eq!(
        reply_of(&run_from(&mut state, &mut store, local, set)),
        Reply::Ok
    );
    assert_eq!(store.stored.groups[1].private, Some(true));

    let drop = |g: &str| Request::Drop { group: g.into() };
    let unknown = run_from(&mut state, &mut store, local, drop("nope"));
    assert_eq!(code_of(&unknown), Some(ErrorCode::UnknownGroup));
    assert_eq!(state.subscribers("rust").count(), 1);
    let dropped = run_from(&mut state, &mut store, local, drop("rust"));
    assert_eq!(reply_of(&dropped), Reply::Ok);
    assert_eq!(state.group_names(), ["general"]);
    assert_eq!(store.stored.groups.len(), 1);
    let subscribe = Request::Subscribe {
        group: "rust".into(),
        user: "bob".into(),
    };
    let gone = run(&mut state, &mut store, b"b", subscribe);
    assert!(
        matches!(reply_of(&gone), Reply::Error { code: ErrorCode::NotMember, ref reason }
            if reason == "group 'rust' was deleted by an operator"),
        "{gone:?}"
    );

    // A store that cannot write: nothing changes in memory either.
    store.fail_writes = Some("disk full".into());
    let failed = run_from(&mut state, &mut store, local, create("ops"));
    assert_eq!(code_of(&failed), Some(ErrorCode::BadRequest));
    assert_eq!(state.group_names(), ["general"]);
}

#[test]
fn an_unban_lets_the_user_join_again() {
    let (mut state, mut store) = setup();
    let admin = b"o".to_vec();
    let local = from_address(&admin, "127.0.0.1");
    let (ban, unban) = (
        Request::Ban {
            group: "general".into(),
            user: "bob".into(),
        },
        Request::Unban {
            group: "general".into(),
            user: "bob".into(),
        },
    );
    let not_banned = run_from(&mut state, &mut store, local, unban.clone());
    assert_eq!(code_of(&not_banned), Some(ErrorCode::BadRequest));
    run_from(&mut state, &mut store, local, ban);
    let refused = run(&mut state, &mut store, b"b", join("general", "bob"));
    assert_eq!(code_of(&refused), Some(ErrorCode::Unauthorized));
    assert_eq!(
        reply_of(&run_from(&mut state, &mut store, local, unban)),
        Reply::Ok
    );
    assert!(store.stored.bans.is_empty());
    let joined = run(&mut state, &mut store, b"b", join("general", "bob"));
    assert!(
        matches!(reply_of(&joined), Reply::Joined { .. }),
        "{joined:?}"
    );
}

#[test]
fn an_import_keeps_seqs_and_times_and_must_follow_the_last_seq() {
    let (mut state, mut store) = setup_with_alice();
    let admin = b"o".to_vec();
    let local = from_address(&admin, "127.0.0.1");
    let import = |messages: Vec<protocol::Imported>| Request::Import {
        group: "general".into(),
        messages,
    };
    let remote = run_from(
        &mut state,
        &mut store,
        from_address(&admin, "192.0.2.7"),
        import(vec![imported(1, 5, "carol", "x")]),
    );
    assert_eq!(code_of(&remote), Some(ErrorCode::Unauthorized));
    for (wrong, why) in [
        (vec![imported(2, 5, "carol", "x")], "continues at seq 1"),
        (
            vec![imported(1, 5, "carol", "x"), imported(3, 6, "carol", "y")],
            "seq 3 follows seq 1",
        ),
        (
            vec![imported(1, 5, "carol", "x"), imported(2, 4, "carol", "y")],
            "back in time",
        ),
    ] {
        let refused = run_from(&mut state, &mut store, local, import(wrong));
        assert!(
            matches!(reply_of(&refused), Reply::Error { code: ErrorCode::BadRequest, ref reason }
                if reason.contains(why)),
            "{why}: {refused:?}"
        );
    }
    assert!(store.stored.messages.is_empty());

    let batch = vec![
        imported(1, 500, "carol", "old"),
        imported(2, 600, "dave", "older"),
    ];
    let done = run_from(&mut state, &mut store, local, import(batch));
    assert!(
        matches!(reply_of(&done), Reply::Acks(ref acks) if acks.len() == 2),
        "{done:?}"
    );
    // Alice follows the group live: the imported messages are pushed to her.
    assert!(done
        .iter()
        .any(|o| matches!(o, Outbound::Messages { messages, .. }
        if messages.iter().map(|m| (m.seq, m.ts)).eq([(1, 500), (2, 600)]))));
    let stored: Vec<(u64, i64, &str)> = store
        .stored
        .messages
        .iter()
        .map(|(_, m)| (m.seq, m.ts, m.sender.as_str()))
        .collect();
    assert_eq!(stored, [(1, 500, "carol"), (2, 600, "dave")]);
    // Sends go on after them, and a message imported again (same client id) is refused.
    let sent = run(&mut state, &mut store, b"a", send("alice", "c1", "new"));
    assert!(
        matches!(reply_of(&sent), Reply::Ack { seq: 3, .. }),
        "{sent:?}"
    );
    let mut again = imported(4, 2_000, "carol", "old");
    again.client_id = "carol-1".into();
    let refused = run_from(&mut state, &mut store, local, import(vec![again]));
    assert_eq!(code_of(&refused), Some(ErrorCode::BadRequest));
    assert_eq!(store.stored.messages.len(), 3);
}

#[test]
fn an_operator_key_reads_history_without_joining_and_loopback_does_not() {
    let (mut state, mut store) = setup_with_alice();
    run(&mut state, &mut store, b"a", send("alice", "c1", "hi"));
    let history = Request::History {
        group: "general".into(),
        user: "root".into(),
        after_seq: 0,
        since_ms: 0,
        limit: 10,
    };
    let admin = b"o".to_vec();
    // Open: a loopback peer may administer, but reads only as a member.
    let local = from_address(&admin, "127.0.0.1");
    let refused = run_from(&mut state, &mut store, local, history.clone());
    assert_eq!(code_of(&refused), Some(ErrorCode::NotMember));

    state.secure(key('S'), &[], &[]);
    state.set_operators(vec![key('o')]);
    let (stranger, operator) = (key('x'), key('o'));
    let mut strangers = history.clone();
    if let Request::History { user, .. } = &mut strangers {
        *user = "mallory".into();
    }
    let refused = run_from(&mut state, &mut store, keyed(&admin, &stranger), strangers);
    assert_eq!(code_of(&refused), Some(ErrorCode::NotMember));
    let read = run_from(&mut state, &mut store, keyed(&admin, &operator), history);
    assert!(
        matches!(reply_of(&read), Reply::Messages { ref messages, .. } if messages.len() == 1),
        "{read:?}"
    );
}

fn edit(u: &str, seq: u64, text: &str) -> Request {
    Request::Edit {
        group: "general".into(),
        user: u.into(),
        client_id: format!("e{seq}{text}"),
        seq,
        text: text.into(),
    }
}

#[test]
fn only_the_sender_edits_or_deletes_and_a_change_is_a_sequenced_message() {
    let (mut state, mut store) = setup_with_alice();
    run(&mut state, &mut store, b"b", join("general", "bob"));
    run(&mut state, &mut store, b"a", send("alice", "c1", "wrold"));
    run(&mut state, &mut store, b"b", send("bob", "c2", "hi"));
    let out = run(&mut state, &mut store, b"b", edit("bob", 1, "mine now"));
    assert_eq!(code_of(&out), Some(ErrorCode::NotMember), "{out:?}");
    let delete = |u: &str, seq| Request::Delete {
        group: "general".into(),
        user: u.into(),
        client_id: String::new(),
        seq,
    };
    let out = run(&mut state, &mut store, b"b", delete("bob", 1));
    assert_eq!(code_of(&out), Some(ErrorCode::NotMember), "{out:?}");
    for missing in [0, 3] {
        let out = run(&mut state, &mut store, b"a", edit("alice", missing, "x"));
        assert_eq!(code_of(&out), Some(ErrorCode::BadRequest), "{out:?}");
    }
    let out = run(
        &mut state,
        &mut store,
        b"a",
        edit("alice", 1, "bad\u{1b}[2J"),
    );
    assert_eq!(code_of(&out), Some(ErrorCode::BadRequest), "{out:?}");
    let out = run(&mut state, &mut store, b"a", edit("alice", 1, "world"));
    assert!(
        matches!(reply_of(&out), Reply::Ack { seq: 3, .. }),
        "{out:?}"
    );
    let pushed = out.iter().find_map(|o| match o {
        Outbound::Messages { messages, .. } => Some(messages.clone()),
        _ => None,
    });
    let pushed = pushed.expect("the edit is pushed");
    assert_eq!(pushed[0].text, protocol::edit::edit_text(1, "world"));
    // An edit of an edit is refused; the original may be deleted.
    let out = run(&mut state, &mut store, b"a", edit("alice", 3, "again"));
    assert_eq!(code_of(&out), Some(ErrorCode::BadRequest), "{out:?}");
    let out = run(&mut state, &mut store, b"b", delete("bob", 2));
    assert!(
        matches!(reply_of(&out), Reply::Ack { seq: 4, .. }),
        "{out:?}"
    );
    let history = store.fetch(1, 0, 0, 100).unwrap();
    let shown = protocol::edit::fold(history);
    let view: Vec<(u64, &str, bool)> = shown
        .iter()
        .map(|s| (s.message.seq, s.message.text.as_str(), s.deleted))
        .collect();
    assert_eq!(view, [(1, "world", false), (2, "", true)]);
}

#[test]
fn a_read_position_never_moves_back_nor_past_the_end_and_unread_reports_it() {
    let (mut state, mut store) = setup_with_alice();
    for i in 1..=5 {
        run(
            &mut state,
            &mut store,
            b"a",
            send("alice", &format!("c{i}"), "m"),
        );
    }
    let read = |seq| Request::Read {
        group: "general".into(),
        user: "alice".into(),
        seq,
    };
    let unread = Request::Unread {
        group: "general".into(),
        user: "alice".into(),
    };
    let answer =
        |state: &mut State, store: &mut Memory| reply_of(&run(state, store, b"a", unread.clone()));
    let expect = |read_seq| Reply::Unread {
        group: "general".into(),
        last_seq: 5,
        read_seq,
    };
    assert_eq!(answer(&mut state, &mut store), expect(0));
    assert_eq!(
        reply_of(&run(&mut state, &mut store, b"a", read(3))),
        Reply::Ok
    );
    run(&mut state, &mut store, b"a", read(2));
    assert_eq!(answer(&mut state, &mut store), expect(3));
    run(&mut state, &mut store, b"a", read(99));
    assert_eq!(answer(&mut state, &mut store), expect(5));
    let stranger = Request::Unread {
        group: "general".into(),
        user: "mallory".into(),
    };
    let out = run(&mut state, &mut store, b"m", stranger);
    assert_eq!(code_of(&out), Some(ErrorCode::NotMember));
}

#[test]
fn search_answers_members_only_and_refuses_empty_queries() {
    let (mut state, mut store) = setup_with_alice();
    run(
        &mut state,
        &mut store,
        b"a",
        send("alice", "c1", "lunch at noon"),
    );
    let search = |user: &str, query: &str| Request::Search {
        group: "general".into(),
        user: user.into(),
        since_ms: 0,
        limit: 10,
        query: query.into(),
    };
    let out = run(&mut state, &mut store, b"a", search("alice", "lunch"));
    match reply_of(&out) {
        Reply::Found { group, hits } => {
            assert_eq!(group, "general");
            assert_eq!(hits.len(), 1);
            assert_eq!(hits[0].text, "lunch at noon");
        }
        other => panic!("{other:?}"),
    }
    let out = run(&mut state, &mut store, b"m", search("mallory", "lunch"));
    assert_eq!(code_of(&out), Some(ErrorCode::NotMember));
    for bad in ["", "  ", "!!", &"x".repeat(protocol::MAX_QUERY + 1)] {
        let out = run(&mut state, &mut store, b"a", search("alice", bad));
        assert_eq!(code_of(&out), Some(ErrorCode::BadRequest), "{bad:?}");
    }
}
