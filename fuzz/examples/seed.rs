//! Writes the seed corpus of every fuzz target: real frames from the encoders, and real
//! records from a store on disk, into `corpus/<target>/seed-*` (files already there are kept).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed` from the repository root.

use std::fs;
use std::path::{Path, PathBuf};

use zms::group::store::{Durability, Store};
use zms::keys::KeyPair;
use zms::protocol::codec::{self, encode_event, encode_reply, encode_request};
use zms::protocol::{
    Acked, ErrorCode, Event, GroupEntry, Member, Message, Outgoing, Reply, Request,
};

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let messages = sample_messages();

    let requests: Vec<Vec<u8>> = requests()
        .iter()
        .enumerate()
        .map(|(i, r)| encode_request(i as u32 + 1, r))
        .collect();
    write(&corpus, "request", &requests);

    let mut incoming: Vec<Vec<u8>> = replies(&messages)
        .iter()
        .enumerate()
        .map(|(i, r)| encode_reply(i as u32 + 1, r))
        .collect();
    incoming.extend(events(&messages).iter().map(encode_event));
    write(&corpus, "incoming", &incoming);
    // The in-place reader opens MSG and MSGS events; every other frame is one it refuses.
    write(&corpus, "event_reader", &incoming);

    let mut lists = vec![Vec::new()];
    for n in [1, 2, messages.len()] {
        let mut bytes = Vec::new();
        messages[..n]
            .iter()
            .for_each(|m| codec::append_message(&mut bytes, m));
        lists.push(bytes);
    }
    write(&corpus, "messages", &lists);

    let (chunks, runs) = stored_records(&messages);
    write(&corpus, "chunk", &chunks);

    // The sent_run target reads the id to look up before the run.
    let mut run_inputs = Vec::new();
    for run in &runs {
        for id in ["alice-1", "alice-2", "alice-10", "bob-x"] {
            run_inputs.push([&[id.len() as u8][..], id.as_bytes(), run].concat());
        }
    }
    write(&corpus, "sent_run", &run_inputs);

    // A fixed pair (ZeroMQ's documented example keys), so the seeds are the same every time.
    let pair = KeyPair {
        public: "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID".into(),
        secret: "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs".into(),
    };
    let dir = scratch("keys");
    let path = dir.join("seed.key");
    pair.save(&path).expect("a key file");
    let saved = fs::read(&path).expect("the key file");
    let bare = format!("public={}\nsecret={}\n", pair.public, pair.secret).into_bytes();
    write(&corpus, "key_file", &[saved, bare]);

    let mut pins = zms::keys::Pins::load(&dir.join("known_servers")).expect("no file yet");
    pins.check_or_pin("127.0.0.1:5556", &pair.public)
        .expect("pinned");
    pins.check_or_pin(
        "group.example:7000",
        "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
    )
    .expect("pinned");
    let known = fs::read(pins.path()).expect("the pin file");
    write(&corpus, "known_servers", &[known]);
    fs::remove_dir_all(&dir).expect("scratch removed");
}

fn sample_messages() -> Vec<Message> {
    let m = |seq, ts, sender: &str, text: &str| Message {
        seq,
        ts,
        sender: sender.into(),
        text: text.into(),
    };
    vec![
        m(1, 1_700_000_000_000, "alice", "hello"),
        m(2, 1_700_000_000_000, "alice", ""),
        m(3, 1_700_000_000_250, "bob", "héllo, wörld ✓"),
        m(4, 1_700_000_000_249, "alice", &"x".repeat(300)),
    ]
}

fn requests() -> Vec<Request> {
    let s = |v: &str| v.to_string();
    vec![
        Request::Register {
            address: s("127.0.0.1:5556"),
            ttl_ms: 3000,
            groups: vec![s("rust"), s("zeromq")],
            key: s(""),
            replace: false,
        },
        Request::Register {
            address: s("127.0.0.1:5557"),
            ttl_ms: 3000,
            groups: vec![],
            key: s("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"),
            replace: true,
        },
        Request::Unregister {
            address: s("127.0.0.1:5556"),
        },
        Request::Hello { name: s("alice") },
        Request::List,
        Request::Join {
            group: s("rust"),
            user: s("alice"),
        },
        Request::Leave {
            group: s("rust"),
            user: s("alice"),
        },
        Request::Subscribe {
            group: s("rust"),
            user: s("alice"),
        },
        Request::Send {
            group: s("rust"),
            user: s("alice"),
            client_id: s("c-1"),
            text: s("hello"),
        },
        Request::SendBatch {
            group: s("rust"),
            user: s("alice"),
            messages: vec![
                Outgoing {
                    client_id: s("c-2"),
                    text: s("one"),
                },
                Outgoing {
                    client_id: s(""),
                    text: s("two"),
                },
            ],
        },
        Request::History {
            group: s("rust"),
            user: s("alice"),
            after_seq: 10,
            since_ms: -1,
            limit: 100,
        },
        Request::Members {
            group: s("rust"),
            user: s("alice"),
        },
        Request::Ping,
        Request::Status,
        Request::Invite {
            group: s("secret"),
            user: s("alice"),
            key: s("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"),
        },
        Request::Key,
    ]
}

fn replies(messages: &[Message]) -> Vec<Reply> {
    let s = |v: &str| v.to_string();
    vec![
        Reply::Ok,
        Reply::Error {
            code: ErrorCode::NotMember,
            reason: s("join the group first"),
        },
        Reply::Error {
            code: ErrorCode::Other(599),
            reason: s(""),
        },
        Reply::Groups(vec![GroupEntry {
            name: s("rust"),
            address: s("127.0.0.1:5556"),
            key: s(""),
        }]),
        Reply::Joined {
            group: s("rust"),
            last_seq: 42,
        },
        Reply::Ack {
            seq: 7,
            ts: 1_700_000_000_000,
            duplicate: true,
        },
        Reply::Acks(vec![
            Acked {
                seq: 8,
                ts: 1,
                duplicate: false,
            },
            Acked {
                seq: 9,
                ts: 2,
                duplicate: true,
            },
        ]),
        Reply::Messages {
            group: s("rust"),
            last_seq: 4,
            messages: messages.to_vec(),
        },
        Reply::Members {
            group: s("rust"),
            members: vec![
                Member {
                    name: s("alice"),
                    online: true,
                },
                Member {
                    name: s("bob"),
                    online: false,
                },
            ],
        },
        Reply::Pong {
            epoch: 12345,
            groups: vec![(s("rust"), 4), (s("zeromq"), 0)],
        },
        Reply::Key(s("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")),
        Reply::Status(s(r#"{"role":"group","members":2}"#)),
    ]
}

fn events(messages: &[Message]) -> Vec<Event> {
    vec![
        Event::Message {
            group: "rust".into(),
            message: messages[2].clone(),
        },
        Event::Presence {
            group: "rust".into(),
            user: "bob".into(),
            joined: true,
        },
        Event::Messages {
            group: "rust".into(),
            messages: messages.to_vec(),
        },
    ]
}

/// The `chunks.messages` and `sent_runs.ids` a real store wrote for `messages`.
fn stored_records(messages: &[Message]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let dir = scratch("store");
    {
        let mut store = Store::open(&dir, Durability::Process).expect("a store");
        let group = store.ensure_group("rust", 0).expect("a group");
        // One transaction: one chunk and one run per sender. Then one message a transaction.
        store.begin().expect("begin");
        for (i, m) in messages.iter().enumerate() {
            store
                .append(group.id, m, &format!("{}-{}", m.sender, i + 1))
                .expect("stored");
        }
        store.commit().expect("commit");
        let lone = Message {
            seq: 5,
            ts: 1_700_000_001_000,
            sender: "carol".into(),
            text: "late".into(),
        };
        store.append(group.id, &lone, "c7f3a9").expect("stored");
    }
    let conn = rusqlite::Connection::open(dir.join("zms.db")).expect("the database");
    let column = |sql: &str| -> Vec<Vec<u8>> {
        let mut statement = conn.prepare(sql).expect("a query");
        statement
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("blobs")
    };
    let chunks = column("SELECT messages FROM chunks");
    let runs = column("SELECT ids FROM sent_runs");
    drop(conn);
    fs::remove_dir_all(&dir).expect("scratch removed");
    assert!(
        !chunks.is_empty() && !runs.is_empty(),
        "the store wrote records"
    );
    (chunks, runs)
}

/// A fresh directory of this process's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zms-fuzz-seed-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn write(corpus: &Path, target: &str, inputs: &[Vec<u8>]) {
    let dir = corpus.join(target);
    fs::create_dir_all(&dir).expect("the corpus directory");
    for (i, input) in inputs.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:03}")), input).expect("a seed");
    }
    println!("{target}: {} seeds", inputs.len());
}
