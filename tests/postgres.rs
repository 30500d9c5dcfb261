//! Cluster mode against a real PostgreSQL: the store behind the Storage trait, leases and
//! their fencing, and group servers sharing one database. One instance for the file's tests
//! (started by the first, stopped with the last), a database each.

mod common;

use std::time::Duration;

use common::postgres::{cluster_server, Postgres};
use common::*;
use zms::group::postgres::PgStore;
use zms::group::state::{Append, ClientIds};
use zms::group::storage::{Appended, Storage};
use zms::protocol::{Acked, Message};

const LIMIT: Duration = Duration::from_secs(30);

fn message(sender: &str, text: &str, ts: i64) -> Message {
    Message {
        seq: 0,
        ts,
        sender: sender.into(),
        text: text.into(),
    }
}

/// Appends `texts` from `sender` with client ids in one transaction; the acks.
fn send(
    store: &mut PgStore,
    group_id: i64,
    first_seq: u64,
    texts: &[(&str, &str)],
) -> zms::Result<Vec<Acked>> {
    let mut append = Append {
        route: Vec::new(),
        req_id: 1,
        group: String::new(),
        group_id,
        first_seq,
        messages: texts
            .iter()
            .map(|(text, _)| message("alice", text, 1000))
            .collect(),
        client_ids: ClientIds::Each(texts.iter().map(|(_, id)| id.to_string()).collect()),
        import: false,
    };
    let mut acks = Vec::new();
    store.begin()?;
    store.append_batch(&mut append, &mut acks)?;
    store.commit()?;
    Ok(acks)
}

#[test]
fn the_store_appends_fetches_dedups_and_keeps_members_invites_and_names() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.database("store");
    let mut store = PgStore::connect(&url, "one", Duration::from_secs(30)).unwrap();
    let general = store.ensure_group("general", 1).unwrap();
    assert_eq!((general.last_seq, general.members.len()), (0, 0));
    assert_eq!(store.balance().unwrap().gained.len(), 1);

    let acks = send(
        &mut store,
        general.id,
        1,
        &[("a", "1"), ("b", "2"), ("c", "")],
    )
    .unwrap();
    assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), [1, 2, 3]);
    // A retry of client id 2 and a new one: the retry keeps its seq, the new one takes 4.
    let acks = send(
        &mut store,
        general.id,
        4,
        &[("b again", "2"), ("d", "4"), ("d", "4")],
    )
    .unwrap();
    assert_eq!(
        acks.iter()
            .map(|a| (a.seq, a.duplicate))
            .collect::<Vec<_>>(),
        [(2, true), (4, false), (4, true)]
    );
    let page = store.fetch(general.id, 1, 0, 2).unwrap();
    assert_eq!(texts(&page), ["b", "c"]);
    assert_eq!(
        seqs(&store.fetch(general.id, 0, 0, 100).unwrap()),
        [1, 2, 3, 4]
    );
    assert!(store.fetch(general.id, 0, 1001, 100).unwrap().is_empty());
    assert_eq!(
        store
            .append(
                general.id,
                &Message {
                    seq: 5,
                    ..message("bob", "e", 1000)
                },
                "x"
            )
            .unwrap(),
        Appended::New
    );
    assert_eq!(store.load_group(general.id).unwrap().last_seq, 5);

    store.add_member(general.id, "alice", 1).unwrap();
    store.add_member(general.id, "bob", 1).unwrap();
    store.add_member(general.id, "bob", 2).unwrap();
    store.remove_member(general.id, "alice").unwrap();
    assert_eq!(store.load_group(general.id).unwrap().members, ["bob"]);
    store.add_invite(general.id, "KEY", 1).unwrap();
    store.add_invite(general.id, "KEY", 2).unwrap();
    assert_eq!(store.invites(general.id).unwrap(), ["KEY"]);
    store.bind_user("bob", "K1", 1).unwrap();
    assert!(
        store.bind_user("bob", "K2", 1).is_err(),
        "a name is bound once"
    );
    assert_eq!(
        store.users().unwrap(),
        [("bob".to_string(), "K1".to_string())]
    );

    // Readable with psql, and a second connection finds the schema already there.
    assert_eq!(
        pg.psql(
            "store",
            "SELECT string_agg(text, ',' ORDER BY seq) FROM messages"
        ),
        "a,b,c,d,e"
    );
    drop(PgStore::connect(&url, "two", Duration::from_secs(30)).unwrap());
    assert_eq!(
        pg.psql("store", "SELECT version FROM zms_schema"),
        zms::group::postgres::schema::VERSION.to_string()
    );
}

#[test]
fn an_owner_whose_lease_was_taken_cannot_write_and_seqs_stay_gap_free() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.database("fencing");
    let mut old = PgStore::connect(&url, "old", Duration::from_millis(300)).unwrap();
    let group = old.ensure_group("general", 1).unwrap();
    assert_eq!(old.balance().unwrap().gained.len(), 1);
    send(&mut old, group.id, 1, &[("1", ""), ("2", "")]).unwrap();

    // `old` stops renewing (paused); `new` claims the group once the lease has expired.
    let mut new = PgStore::connect(&url, "new", Duration::from_secs(30)).unwrap();
    assert!(eventually(LIMIT, || !new
        .balance()
        .unwrap()
        .gained
        .is_empty()));
    let taken = new.load_group(group.id).unwrap();
    assert_eq!(taken.last_seq, 2);
    send(&mut new, group.id, 3, &[("3", "")]).unwrap();

    // The old owner, resumed, writes on at the seq that follows: only the epoch refuses it.
    let err = send(&mut old, group.id, 4, &[("stale", ""), ("stale 2", "")]).unwrap_err();
    assert!(err.to_string().contains("lease"), "{err}");
    // Nor can it write at the seq it believed next.
    assert!(send(&mut old, group.id, 3, &[("stale 3", "")]).is_err());
    assert_eq!(
        old.balance().unwrap().lost,
        Vec::<i64>::new(),
        "forgotten at the refusal"
    );
    send(&mut new, group.id, 4, &[("4", "")]).unwrap();
    assert_eq!(
        pg.psql(
            "fencing",
            "SELECT string_agg(seq || ':' || text, ',' ORDER BY seq) FROM messages"
        ),
        "1:1,2:2,3:3,4:4"
    );
}

/// How many groups each live server process owns, by pid, per the database.
fn owned(pg: &Postgres, db: &str, pid: u32) -> usize {
    let n = pg.psql(
        db,
        &format!("SELECT count(*) FROM groups WHERE owner LIKE '{pid}-%' AND lease_until > now()"),
    );
    n.parse().unwrap()
}

#[test]
fn group_servers_on_one_database_share_the_groups_and_a_later_one_takes_its_share() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.database("share");
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let (a, _) = cluster_server(&dir, &url, &["g1", "g2", "g3", "g4"]);
    assert_eq!(owned(&pg, "share", a.child.id()), 4);
    let (b, _) = cluster_server(&dir, &url, &[]);
    assert!(eventually(LIMIT, || owned(&pg, "share", a.child.id()) == 2
        && owned(&pg, "share", b.child.id()) == 2));

    // A group made at runtime goes to one of them and appears in the directory's list.
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ZMS)
        .args(["create-group", "g5", "--store", &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "created group g5"
    );
    assert!(eventually(LIMIT, || owned(&pg, "share", a.child.id())
        + owned(&pg, "share", b.child.id())
        == 5));
    let listed = || {
        let out = std::process::Command::new(ZMS)
            .env("ZMS_HOME", home.path())
            .args(["list", "--server", &dir])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("g5")
    };
    assert!(eventually(LIMIT, listed));
}

#[test]
fn a_frozen_group_server_loses_its_groups_and_resumed_cannot_write() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.database("frozen");
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let (a, address) = cluster_server(&dir, &url, &["general"]);
    let (b, _) = cluster_server(&dir, &url, &[]);
    assert_eq!(owned(&pg, "frozen", a.child.id()), 1);
    let home = tempfile::tempdir().unwrap();
    let zms = |args: &[&str]| {
        std::process::Command::new(ZMS)
            .env("ZMS_HOME", home.path())
            .args(args)
            .args(["--server", &dir, "--name", "alice"])
            .output()
            .unwrap()
    };
    assert!(zms(&["join", "general"]).status.success());
    for text in ["1", "2"] {
        assert!(zms(&["send", "general", text]).status.success());
    }
    // A member connected to `a` directly, with a send that waits in `a` while it is frozen.
    let ctx = zmq::Context::new();
    let member = raw_member(&ctx, &format!("tcp://{address}"), "general", "alice");

    a.freeze();
    assert!(eventually(LIMIT, || owned(&pg, "frozen", b.child.id()) == 1));
    use zms::protocol::codec::{self, Incoming};
    use zms::protocol::{Reply, Request};
    let stale = Request::Send {
        group: "general".into(),
        user: "alice".into(),
        client_id: String::new(),
        text: "from the frozen owner".into(),
    };
    member.send(codec::encode_request(7, &stale), 0).unwrap();
    // The new owner takes sends as soon as the directory lists it.
    assert!(eventually(LIMIT, || zms(&["send", "general", "3"])
        .status
        .success()));
    a.signal("-CONT");
    let reply = codec::decode_incoming(&member.recv_bytes(0).unwrap()).unwrap();
    assert!(
        matches!(reply, Incoming::Reply(7, Reply::Error { .. })),
        "{reply:?}"
    );
    assert_eq!(
        pg.psql(
            "frozen",
            "SELECT string_agg(seq || ':' || text, ',' ORDER BY seq) FROM messages"
        ),
        "1:1,2:2,3:3"
    );
    drop(b);
}

#[test]
fn an_operator_creates_imports_into_sets_and_deletes_a_group_in_cluster_mode() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.database("admin");
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let (a, _) = cluster_server(&dir, &url, &["g1"]);
    let home = tempfile::tempdir().unwrap();
    let zms = |args: &[&str], stdin: std::process::Stdio| {
        let out = std::process::Command::new(ZMS)
            .env("ZMS_HOME", home.path())
            .args(args)
            .args(["--server", &dir, "--name", "root"])
            .stdin(stdin)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {said}");
        String::from_utf8(out.stdout).unwrap()
    };
    let null = std::process::Stdio::null;
    // Over the wire: the row is made, and the lease puts the group on the server.
    let created = zms(&["create-group", "g2"], null());
    assert!(created.contains("created group g2@"), "{created}");
    assert!(eventually(LIMIT, || owned(&pg, "admin", a.child.id()) == 2));
    let listed = || zms(&["list"], null()).contains("g2");
    assert!(eventually(LIMIT, listed));

    let files = tempfile::tempdir().unwrap();
    let export = files.path().join("g2.jsonl");
    std::fs::write(
        &export,
        "{\"seq\":1,\"ts_ms\":1000,\"sender\":\"carol\",\"text\":\"old\"}\n\
         {\"seq\":2,\"ts_ms\":2000,\"sender\":\"dave\",\"text\":\"older\",\"client_id\":\"d-1\"}\n",
    )
    .unwrap();
    let imported = zms(
        &["import", "g2"],
        std::fs::File::open(&export).unwrap().into(),
    );
    assert!(
        imported.contains("imported 2 messages (seq 1 to 2)"),
        "{imported}"
    );
    assert_eq!(
        pg.psql(
            "admin",
            "SELECT string_agg(seq || ':' || ts || ':' || text || ':' || client_id, ',' ORDER BY seq) FROM messages"
        ),
        "1:1000:old:,2:2000:older:d-1"
    );
    // Without --secure an export reads as a member.
    zms(&["join", "g2"], null());
    let exported = zms(&["export", "g2"], null());
    assert_eq!(exported.lines().count(), 2, "{exported}");
    assert!(exported.contains("\"ts_ms\":2000"), "{exported}");

    zms(&["set-private", "g2", "on"], null());
    assert_eq!(
        pg.psql("admin", "SELECT private FROM groups WHERE name = 'g2'"),
        "t"
    );
    zms(&["delete-group", "g2"], null());
    assert_eq!(
        pg.psql("admin", "SELECT count(*) FROM groups WHERE name = 'g2'"),
        "0"
    );
    assert_eq!(pg.psql("admin", "SELECT count(*) FROM messages"), "0");
    assert!(eventually(LIMIT, || !listed()));
}

#[test]
fn a_conversation_lives_on_any_server_of_the_pool() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.database("conversations");
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let dir = directory.listening();
    let (_a, _) = cluster_server(&dir, &url, &["general"]);
    let (_b, _) = cluster_server(&dir, &url, &[]);
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
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Several pairs, so that some land on the server the pool's balance does not give them to
    // at first: the client asks again until the one hosting it is listed.
    for peer in ["bob", "carol", "dave", "erin"] {
        zms(&["dm", peer, "hello", "--name", "alice"]);
        let read = zms(&["history", "@alice", "--name", peer]);
        assert!(read.ends_with(" alice: hello\n"), "{read}");
    }
    let stored = pg.psql(
        "conversations",
        "SELECT count(*) FROM groups WHERE name LIKE '@alice@%'",
    );
    assert_eq!(stored, "4");
}

#[test]
fn the_store_searches_latest_texts_and_keeps_read_positions() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.database("chat");
    let mut store = PgStore::connect(&url, "one", Duration::from_secs(30)).unwrap();
    let general = store.ensure_group("general", 1).unwrap();
    assert_eq!(store.balance().unwrap().gained.len(), 1);
    let edited = zms::protocol::edit::edit_text(2, "lunch and dinner");
    let deleted = zms::protocol::edit::delete_text(1);
    send(
        &mut store,
        general.id,
        1,
        &[
            ("Lunch at noon?", "1"),
            ("dinner instead", "2"),
            ("lunch again", "3"),
            (&edited, "4"),
            (&deleted, "5"),
        ],
    )
    .unwrap();
    let hits = store.search(general.id, "LUNCH", 0, 10).unwrap();
    let found: Vec<(u64, &str)> = hits.iter().map(|h| (h.seq, h.text.as_str())).collect();
    assert_eq!(found, [(3, "lunch again"), (2, "lunch and dinner")]);
    assert_eq!(hits[1].matches, [(0, 5)]);
    assert_eq!(store.search(general.id, "lunch", 0, 1).unwrap().len(), 1);
    assert!(store
        .search(general.id, "instead", 0, 10)
        .unwrap()
        .is_empty());

    assert_eq!(store.read_position(general.id, "alice").unwrap(), 0);
    store.set_read(general.id, "alice", 4).unwrap();
    store.set_read(general.id, "alice", 2).unwrap();
    drop(store);
    let mut store = PgStore::connect(&url, "two", Duration::from_secs(30)).unwrap();
    assert_eq!(store.read_position(general.id, "alice").unwrap(), 4);
}
