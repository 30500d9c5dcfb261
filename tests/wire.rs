//! Keeps PROTOCOL.md honest.
//!
//! The worked examples are read from the document itself (`zms-example` blocks), so the text and
//! this test cannot drift apart: each frame's byte string and hex form must agree, every frame
//! must agree with the codec, and the whole session is sent to a real message server and group
//! server, whose replies must be the documented frames octet for octet (outside the bracketed
//! octets, which hold timestamps and epochs and are checked by decoding instead). The tables of
//! commands, error codes and constants are checked against the code too.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use zms::directory::DirectoryServer;
use zms::group::{Config, GroupServer};
use zms::protocol::codec::{self, cmd, Incoming};
use zms::protocol::{self, ErrorCode, Event, Message, Reply, Request};

/// The specification, as this build's tests see it.
const DOC: &str = include_str!("../PROTOCOL.md");

/// The address the examples' group server announces (it listens elsewhere, on a free port).
const ADVERTISED: &str = "127.0.0.1:5556";

/// How far a server's timestamp may lie outside the test's own clock readings, for a wall
/// clock that steps while the test runs.
const CLOCK_SLACK_MS: i64 = 1000;

/// The examples the specification must hold, whatever else it adds.
const REQUIRED: &[&str] = &[
    "dir-list",
    "dir-hello",
    "dir-register",
    "dir-list-registered",
    "dir-unregister",
    "dir-ping",
    "dir-version",
    "group-list",
    "group-join",
    "group-send",
    "group-send-retry",
    "group-send-batch",
    "group-search",
    "group-read",
    "group-unread",
    "group-edit-missing",
    "group-history-trimmed",
    "group-subscribe",
    "group-history",
    "group-members",
    "group-ping",
    "group-leave",
    "group-send-not-member",
    "group-join-unknown",
    "group-unknown-command",
    "group-truncated-body",
    "group-truncated-header",
    "group-trailing",
    "group-version",
    "group-not-zms",
    "group-two-frames",
    "group-create",
    "group-set-private",
    "group-unban-not-banned",
    "group-import-gap",
    "group-drop",
    "dir-dm",
    "group-join-conversation",
    "group-join-conversation-other",
];

/// One frame of an example, as the document writes it.
#[derive(Debug)]
struct Frame {
    bytes: Vec<u8>,
    /// Octets that vary from run to run (bracketed in the hex form).
    varies: Vec<bool>,
    /// Line of PROTOCOL.md the frame is on.
    line: usize,
}

impl Frame {
    /// Whether `got` is this frame, but for the octets that vary.
    fn matches(&self, got: &[u8]) -> bool {
        self.bytes.len() == got.len()
            && self
                .bytes
                .iter()
                .zip(&self.varies)
                .zip(got)
                .all(|((want, varies), got)| *varies || want == got)
    }
}

/// One `zms-example` block.
#[derive(Debug)]
struct Example {
    name: String,
    line: usize,
    /// What the client sends: ZeroMQ messages of one frame or more.
    sends: Vec<Vec<Frame>>,
    /// What the server sends back, in any order.
    expects: Vec<Frame>,
}

impl Example {
    fn at(&self) -> String {
        format!("example {} (PROTOCOL.md:{})", self.name, self.line)
    }
}

/// Reads every `zms-example` block of PROTOCOL.md, in document order.
fn examples() -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut lines = DOC.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((start, line)) = lines.next() {
        let Some(name) = line.strip_prefix("```zms-example ") else {
            continue;
        };
        let mut example = Example {
            name: name.trim().to_string(),
            line: start,
            sends: Vec::new(),
            expects: Vec::new(),
        };
        assert!(
            out.iter().all(|e| e.name != example.name),
            "PROTOCOL.md:{start}: a second example named {}",
            example.name
        );
        let mut message: Vec<Frame> = Vec::new();
        loop {
            let (n, line) = lines
                .next()
                .unwrap_or_else(|| panic!("PROTOCOL.md:{start}: example not closed"));
            if line.starts_with("```") {
                break;
            }
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (tag, literal) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("PROTOCOL.md:{n}: expected `C:`, `C+:` or `S:`"));
            let bytes =
                parse_byte_string(literal).unwrap_or_else(|e| panic!("PROTOCOL.md:{n}: {e}"));
            let (m, hex_line) = lines
                .next()
                .unwrap_or_else(|| panic!("PROTOCOL.md:{n}: the hex form is missing"));
            assert!(
                hex_line.starts_with(' '),
                "PROTOCOL.md:{m}: the hex form must follow the byte string, indented"
            );
            let (hex, varies) =
                parse_hex(hex_line).unwrap_or_else(|e| panic!("PROTOCOL.md:{m}: {e}"));
            assert_eq!(
                hex.escape_ascii().to_string(),
                bytes.escape_ascii().to_string(),
                "PROTOCOL.md:{n}-{m}: the byte string and the hex form differ"
            );
            let frame = Frame {
                bytes,
                varies,
                line: n,
            };
            match tag {
                "C+" => message.push(frame),
                "C" => {
                    message.push(frame);
                    example.sends.push(std::mem::take(&mut message));
                }
                "S" => example.expects.push(frame),
                other => panic!("PROTOCOL.md:{n}: unknown tag {other:?}"),
            }
        }
        assert!(
            message.is_empty(),
            "{}: a `C+:` frame must be followed by `C:`",
            example.at()
        );
        assert!(
            !example.sends.is_empty() && !example.expects.is_empty(),
            "{}: an example sends something and expects something",
            example.at()
        );
        out.push(example);
    }
    out
}

/// Reads a Rust byte-string literal, `b"..."`.
fn parse_byte_string(literal: &str) -> Result<Vec<u8>, String> {
    let inner = literal
        .trim()
        .strip_prefix("b\"")
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| format!("expected a byte string b\"…\", found {literal:?}"))?;
    let mut out = Vec::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('x') => {
                    let digits: String = chars.by_ref().take(2).collect();
                    if digits.len() != 2 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!("bad escape \\x{digits}"));
                    }
                    out.push(u8::from_str_radix(&digits, 16).expect("bug: checked hex digits"));
                }
                Some('\\') => out.push(b'\\'),
                Some('"') => out.push(b'"'),
                Some('\'') => out.push(b'\''),
                Some('n') => out.push(b'\n'),
                Some('r') => out.push(b'\r'),
                Some('t') => out.push(b'\t'),
                Some('0') => out.push(0),
                other => return Err(format!("unknown escape \\{other:?}")),
            },
            '"' => return Err("an unescaped '\"' inside the byte string".into()),
            ' '..='~' => out.push(c as u8),
            other => return Err(format!("{other:?} must be escaped in a byte string")),
        }
    }
    Ok(out)
}

/// Reads a hex form: fields of whole octets, a field in `[brackets]` varying from run to run.
fn parse_hex(line: &str) -> Result<(Vec<u8>, Vec<bool>), String> {
    let mut bytes = Vec::new();
    let mut varies = Vec::new();
    for field in line.split_whitespace() {
        let (digits, vary) = match field.strip_prefix('[') {
            Some(rest) => (
                rest.strip_suffix(']')
                    .ok_or_else(|| format!("unclosed '[' in {field:?}"))?,
                true,
            ),
            None => (field, false),
        };
        if digits.is_empty()
            || digits.len() % 2 != 0
            || !digits.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(format!("{field:?} is not whole octets of hexadecimal"));
        }
        for pair in digits.as_bytes().chunks(2) {
            let pair = std::str::from_utf8(pair).expect("bug: checked ASCII");
            bytes.push(u8::from_str_radix(pair, 16).expect("bug: checked hex digits"));
            varies.push(vary);
        }
    }
    Ok((bytes, varies))
}

/// The rows of the table after `<!-- zms-table: NAME -->`, without header, cells unquoted.
fn table(name: &str) -> Vec<Vec<String>> {
    let marker = format!("<!-- zms-table: {name} -->");
    let start = DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {marker}"));
    let rows: Vec<Vec<String>> = DOC[start + marker.len()..]
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            row.trim()
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "the {name} table of PROTOCOL.md is empty");
    rows
}

fn show(bytes: &[u8]) -> String {
    format!("b\"{}\"", bytes.escape_ascii())
}

#[test]
fn examples_agree_with_the_codec() {
    let examples = examples();
    // The parser's own anchor: the frame the specification quotes in its prose.
    let list = examples
        .iter()
        .find(|e| e.name == "dir-list")
        .expect("example dir-list");
    assert_eq!(list.sends[0][0].bytes, b"ZMS1\x04\x00\x00\x00\x01");
    for name in REQUIRED {
        assert!(
            examples.iter().any(|e| e.name == *name),
            "PROTOCOL.md lacks example {name}"
        );
    }

    let mut requests = HashSet::new();
    let mut answers = HashSet::new();
    for example in &examples {
        for message in &example.sends {
            for frame in message {
                let at = format!("{} (PROTOCOL.md:{})", example.at(), frame.line);
                assert!(
                    frame.varies.iter().all(|v| !v),
                    "{at}: a client frame is exact"
                );
                match codec::decode_request(&frame.bytes) {
                    Ok((id, request)) => {
                        requests.insert(frame.bytes[4]);
                        assert_eq!(
                            show(&codec::encode_request(id, &request)),
                            show(&frame.bytes),
                            "{at}: the codec encodes {request:?} otherwise"
                        );
                    }
                    Err(err) => {
                        // A malformed frame: its example's one reply is the decoder's error.
                        assert!(
                            example.sends.len() == 1 && message.len() == 1,
                            "{at}: a malformed frame goes alone"
                        );
                        assert_eq!(example.expects.len(), 1, "{at}: one ERROR answers it");
                        let error = Reply::Error {
                            code: err.code,
                            reason: err.reason,
                        };
                        assert_eq!(
                            show(&example.expects[0].bytes),
                            show(&codec::encode_reply(err.req_id, &error)),
                            "{at}: the decoder answers {error:?} with id {}",
                            err.req_id
                        );
                    }
                }
            }
        }
        for frame in &example.expects {
            let at = format!("{} (PROTOCOL.md:{})", example.at(), frame.line);
            let again = match codec::decode_incoming(&frame.bytes) {
                Ok(Incoming::Reply(id, reply)) => codec::encode_reply(id, &reply),
                Ok(Incoming::Event(event)) => codec::encode_event(&event),
                Ok(Incoming::UnknownEvent(command)) => {
                    panic!("{at}: unknown event 0x{command:02X}")
                }
                Err(err) => panic!("{at}: does not decode: {}", err.reason),
            };
            answers.insert(frame.bytes[4]);
            assert_eq!(show(&again), show(&frame.bytes), "{at}: does not re-encode");
        }
    }

    let all_requests = [
        cmd::REGISTER,
        cmd::UNREGISTER,
        cmd::HELLO,
        cmd::LIST,
        cmd::JOIN,
        cmd::LEAVE,
        cmd::SUBSCRIBE,
        cmd::SEND,
        cmd::SENDS,
        cmd::HISTORY,
        cmd::MEMBERS,
        cmd::PING,
    ];
    let all_answers = [
        cmd::OK,
        cmd::ERROR,
        cmd::GROUPS,
        cmd::JOINED,
        cmd::ACK,
        cmd::ACKS,
        cmd::MESSAGES,
        cmd::MEMBER_LIST,
        cmd::PONG,
        cmd::MSG,
        cmd::MSGS,
        cmd::PRESENCE,
    ];
    for c in all_requests {
        assert!(requests.contains(&c), "no example sends command 0x{c:02X}");
    }
    for c in all_answers {
        assert!(answers.contains(&c), "no example shows command 0x{c:02X}");
    }
}

#[test]
fn tables_match_the_code() {
    let commands: Vec<(u8, String, String)> = table("commands")
        .into_iter()
        .map(|row| {
            let byte = row[0]
                .strip_prefix("0x")
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| panic!("command table: bad byte {:?}", row[0]));
            (byte, row[1].clone(), row[2].clone())
        })
        .collect();
    let expected: Vec<(u8, String, String)> = [
        (cmd::REGISTER, "REGISTER", "request"),
        (cmd::UNREGISTER, "UNREGISTER", "request"),
        (cmd::HELLO, "HELLO", "request"),
        (cmd::LIST, "LIST", "request"),
        (cmd::KEY, "KEY", "request"),
        (cmd::STATUS, "STATUS", "request"),
        (cmd::JOIN, "JOIN", "request"),
        (cmd::LEAVE, "LEAVE", "request"),
        (cmd::SUBSCRIBE, "SUBSCRIBE", "request"),
        (cmd::SEND, "SEND", "request"),
        (cmd::HISTORY, "HISTORY", "request"),
        (cmd::MEMBERS, "MEMBERS", "request"),
        (cmd::PING, "PING", "request"),
        (cmd::INVITE, "INVITE", "request"),
        (cmd::SENDS, "SENDS", "request"),
        (cmd::KICK, "KICK", "request"),
        (cmd::BAN, "BAN", "request"),
        (cmd::CREATE, "CREATE", "request"),
        (cmd::DROP, "DROP", "request"),
        (cmd::SET, "SET", "request"),
        (cmd::UNBAN, "UNBAN", "request"),
        (cmd::IMPORT, "IMPORT", "request"),
        (cmd::SEARCH, "SEARCH", "request"),
        (cmd::READ, "READ", "request"),
        (cmd::UNREAD, "UNREAD", "request"),
        (cmd::EDIT, "EDIT", "request"),
        (cmd::DELETE, "DELETE", "request"),
        (cmd::DM, "DM", "request"),
        (cmd::OK, "OK", "reply"),
        (cmd::ERROR, "ERROR", "reply"),
        (cmd::GROUPS, "GROUPS", "reply"),
        (cmd::JOINED, "JOINED", "reply"),
        (cmd::ACK, "ACK", "reply"),
        (cmd::MESSAGES, "MESSAGES", "reply"),
        (cmd::MEMBER_LIST, "MEMBERS", "reply"),
        (cmd::PONG, "PONG", "reply"),
        (cmd::KEY_REPLY, "KEY", "reply"),
        (cmd::ACKS, "ACKS", "reply"),
        (cmd::STATUS_REPLY, "STATUS", "reply"),
        (cmd::FOUND, "FOUND", "reply"),
        (cmd::UNREAD_REPLY, "UNREAD", "reply"),
        (cmd::MSG, "MSG", "event"),
        (cmd::PRESENCE, "PRESENCE", "event"),
        (cmd::MSGS, "MSGS", "event"),
    ]
    .into_iter()
    .map(|(b, n, k)| (b, n.to_string(), k.to_string()))
    .collect();
    assert_eq!(commands, expected, "the command table");

    let codes: Vec<u16> = table("errors")
        .into_iter()
        .map(|row| {
            let value: u16 = row[0]
                .parse()
                .unwrap_or_else(|_| panic!("error table: bad code {:?}", row[0]));
            let code = ErrorCode::from_value(value);
            assert!(
                !matches!(code, ErrorCode::Other(_)),
                "error table: the code does not know {value}"
            );
            assert_eq!(code.to_string(), row[1], "error table: the name of {value}");
            value
        })
        .collect();
    let known: Vec<u16> = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::NotMember,
        ErrorCode::UnknownGroup,
        ErrorCode::TooLarge,
        ErrorCode::Limited,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::Version,
    ]
    .into_iter()
    .map(ErrorCode::value)
    .collect();
    assert_eq!(codes, known, "the error table");

    let timeouts = zms::client::Timeouts::default();
    let exported: HashMap<&str, u64> = HashMap::from([
        ("MAX_TEXT", protocol::MAX_TEXT as u64),
        ("MAX_BATCH", protocol::MAX_BATCH as u64),
        ("MAX_BATCH_FRAME", protocol::MAX_BATCH_FRAME as u64),
        ("MAX_NAME", protocol::MAX_NAME as u64),
        ("MAX_FRAME", protocol::MAX_FRAME as u64),
        ("HISTORY_PAGE_MAX", u64::from(protocol::HISTORY_PAGE_MAX)),
        ("SEARCH_MAX", u64::from(protocol::SEARCH_MAX)),
        ("MAX_QUERY", protocol::MAX_QUERY as u64),
        ("MAX_REPLY", protocol::MAX_REPLY as u64),
        (
            "MAX_GROUPS_PER_SERVER",
            protocol::MAX_GROUPS_PER_SERVER as u64,
        ),
        ("HEARTBEAT_MS", protocol::HEARTBEAT_MS),
        (
            "REGISTRATION_TTL_MS",
            u64::from(protocol::REGISTRATION_TTL_MS),
        ),
        ("SUBSCRIPTION_TTL_MS", protocol::SUBSCRIPTION_TTL_MS),
        ("REQUEST_TIMEOUT_MS", timeouts.request.as_millis() as u64),
        ("REQUEST_TRIES", u64::from(timeouts.tries)),
        ("SERVER_SNDHWM", zms::transport::SERVER_SNDHWM as u64),
        ("SERVER_RCVHWM", zms::transport::SERVER_RCVHWM as u64),
    ]);
    // Private to the directory: stated in the document, not checkable from here.
    let private = ["MAX_REGISTRATION_TTL_MS"];
    let mut listed = HashSet::new();
    for row in table("constants") {
        let name = row[0].as_str();
        let value: u64 = row[1]
            .parse()
            .unwrap_or_else(|_| panic!("constants table: {name} has value {:?}", row[1]));
        listed.insert(name.to_string());
        match exported.get(name) {
            Some(&actual) => assert_eq!(value, actual, "constants table: {name}"),
            None => assert!(
                private.contains(&name),
                "constants table: unknown constant {name}"
            ),
        }
    }
    for name in exported.keys() {
        assert!(listed.contains(*name), "constants table lacks {name}");
    }
}

/// A DEALER to `endpoint`, as the specification asks of peers, with every wait bounded.
fn dealer(ctx: &zmq::Context, endpoint: &str) -> zms::Result<zmq::Socket> {
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.set_rcvtimeo(5000)?;
    socket.set_sndtimeo(5000)?;
    socket.connect(endpoint)?;
    Ok(socket)
}

/// Receives one frame, which must be a whole ZeroMQ message.
fn receive(socket: &zmq::Socket, what: &str) -> Vec<u8> {
    let frame = socket
        .recv_bytes(0)
        .unwrap_or_else(|e| panic!("{what}: nothing received within 5 s ({e})"));
    assert!(
        !socket.get_rcvmore().expect("ZMQ_RCVMORE"),
        "{what}: a reply of more than one frame"
    );
    frame
}

fn decode(frame: &[u8], what: &str) -> Incoming {
    codec::decode_incoming(frame)
        .unwrap_or_else(|e| panic!("{what}: undecodable {}: {}", show(frame), e.reason))
}

/// Sends a request built by the library and receives `count` frames.
fn exchange(socket: &zmq::Socket, id: u32, request: &Request, count: usize) -> Vec<Incoming> {
    let what = format!("{} (request id {id})", request.name());
    socket
        .send(codec::encode_request(id, request), 0)
        .unwrap_or_else(|e| panic!("{what}: not sent ({e})"));
    (0..count)
        .map(|_| decode(&receive(socket, &what), &what))
        .collect()
}

/// What the session has shown of stored messages: each seq's timestamp, wherever it appeared.
#[derive(Default)]
struct Seen {
    /// The test's clock when the servers started: no timestamp may be older.
    since: i64,
    ts: HashMap<u64, i64>,
    acks: usize,
    events: usize,
    histories: usize,
    epochs: HashSet<u64>,
}

impl Seen {
    fn message(&mut self, seq: u64, ts: i64, what: &str) {
        let now = zms::time::now_ms();
        assert!(
            ts >= self.since - CLOCK_SLACK_MS && ts <= now + CLOCK_SLACK_MS,
            "{what}: ts {ts} of seq {seq} is not between {} and {now}",
            self.since
        );
        let first = *self.ts.entry(seq).or_insert(ts);
        assert_eq!(ts, first, "{what}: seq {seq} with two timestamps");
    }

    fn frame(&mut self, incoming: &Incoming, from_group: bool, what: &str) {
        match incoming {
            Incoming::Reply(_, Reply::Ack { seq, ts, .. }) => {
                self.acks += 1;
                self.message(*seq, *ts, what);
            }
            Incoming::Reply(_, Reply::Acks(acks)) => {
                for ack in acks {
                    self.acks += 1;
                    self.message(ack.seq, ack.ts, what);
                }
            }
            Incoming::Event(Event::Message { message, .. }) => {
                self.events += 1;
                self.message(message.seq, message.ts, what);
            }
            Incoming::Event(Event::Messages { messages, .. }) => {
                self.events += 1;
                for message in messages {
                    self.message(message.seq, message.ts, what);
                }
            }
            Incoming::Reply(_, Reply::Messages { messages, .. }) => {
                self.histories += 1;
                let mut previous = None;
                for Message { seq, ts, .. } in messages {
                    self.message(*seq, *ts, what);
                    assert!(
                        previous.is_none_or(|(s, t)| s < *seq && t <= *ts),
                        "{what}: seq must rise and ts never fall"
                    );
                    previous = Some((*seq, *ts));
                }
            }
            Incoming::Reply(_, Reply::Pong { epoch, .. }) if from_group => {
                self.epochs.insert(*epoch);
            }
            _ => {}
        }
    }
}

#[test]
fn examples_run_against_live_servers() -> zms::Result<()> {
    let ctx = zmq::Context::new();
    let data = tempfile::tempdir()?;
    let mut seen = Seen {
        since: zms::time::now_ms(),
        ..Seen::default()
    };
    let directory = DirectoryServer::bind(&ctx, "tcp://127.0.0.1:*")?.spawn(&ctx)?;
    // `register` returns once the directory has answered the first REGISTER, so the first LIST
    // of the examples already shows the group server.
    let group = GroupServer::bind(
        &ctx,
        "tcp://127.0.0.1:*",
        Config {
            groups: vec!["general".into()],
            data: data.path().to_path_buf(),
            directories: vec![directory.endpoint().to_string()],
            advertise: Some(ADVERTISED.into()),
            durability: Default::default(),
            security: None,
        },
    )?
    .register(Duration::from_secs(5))?
    .spawn(&ctx)?;
    let to_directory = dealer(&ctx, directory.endpoint())?;
    let to_group = dealer(&ctx, group.endpoint())?;

    for example in examples() {
        // A trimmed group needs a store its retention has worked on: the codec test reads
        // this example's bytes, and tests/system.rs runs trimming itself.
        if example.name == "group-history-trimmed" {
            continue;
        }
        let at = example.at();
        let (socket, from_group) = if example.name.starts_with("dir-") {
            (&to_directory, false)
        } else if example.name.starts_with("group-") {
            (&to_group, true)
        } else {
            panic!("{at}: the name must start with dir- or group-");
        };
        for message in &example.sends {
            for (i, frame) in message.iter().enumerate() {
                let flags = if i + 1 < message.len() {
                    zmq::SNDMORE
                } else {
                    0
                };
                socket
                    .send(frame.bytes.as_slice(), flags)
                    .unwrap_or_else(|e| panic!("{at}: not sent ({e})"));
            }
        }
        let mut pending: Vec<&Frame> = example.expects.iter().collect();
        while !pending.is_empty() {
            let got = receive(socket, &at);
            let Some(i) = pending.iter().position(|f| f.matches(&got)) else {
                let wanted: Vec<String> = pending
                    .iter()
                    .map(|f| format!("  PROTOCOL.md:{}: {}", f.line, show(&f.bytes)))
                    .collect();
                panic!(
                    "{at}: the server sent\n  {}\n  = {:?}\nbut the document expects one of\n{}",
                    show(&got),
                    codec::decode_incoming(&got),
                    wanted.join("\n")
                );
            };
            pending.remove(i);
            seen.frame(&decode(&got, &at), from_group, &at);
        }
    }
    assert_eq!(
        (seen.acks, seen.events, seen.histories),
        (5, 2, 1),
        "the examples show two ACKs of seq 1 (the send and its retry), its MSG and its HISTORY, \
         then a SENDS's three ACKs (seq 2, 3, and 1 again) and its MSGS"
    );
    assert_eq!(seen.ts.len(), 3, "the examples store three messages");

    // Beyond the examples: no de-duplication without a client id, and TOO_LARGE.
    let joined = exchange(
        &to_group,
        100,
        &Request::Join {
            group: "general".into(),
            user: "carol".into(),
        },
        2,
    );
    for want in [
        Incoming::Reply(
            100,
            Reply::Joined {
                group: "general".into(),
                last_seq: 3,
            },
        ),
        Incoming::Event(Event::Presence {
            group: "general".into(),
            user: "carol".into(),
            joined: true,
        }),
    ] {
        assert!(
            joined.contains(&want),
            "JOIN as carol: {want:?} not in {joined:?}"
        );
    }
    let send = |text: &str| Request::Send {
        group: "general".into(),
        user: "carol".into(),
        client_id: String::new(),
        text: text.into(),
    };
    for (id, seq) in [(101, 4), (102, 5)] {
        let what = format!("SEND without client id (request id {id})");
        let frames = exchange(&to_group, id, &send("same text"), 2);
        let ack = frames
            .iter()
            .find_map(|f| match f {
                Incoming::Reply(got, Reply::Ack { seq, duplicate, .. }) if *got == id => {
                    Some((*seq, *duplicate))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{what}: no ACK in {frames:?}"));
        assert_eq!(
            ack,
            (seq, false),
            "{what}: an empty client id is not de-duplicated"
        );
        for frame in &frames {
            seen.frame(frame, true, &what);
        }
    }
    assert_eq!(seen.events, 4, "each of those SENDs is pushed");
    let too_large = exchange(
        &to_group,
        103,
        &send(&"x".repeat(protocol::MAX_TEXT + 1)),
        1,
    );
    assert!(
        matches!(
            &too_large[..],
            [Incoming::Reply(
                103,
                Reply::Error {
                    code: ErrorCode::TooLarge,
                    ..
                }
            )]
        ),
        "a text over MAX_TEXT: {too_large:?}"
    );
    let largest = exchange(&to_group, 104, &send(&"x".repeat(protocol::MAX_TEXT)), 2);
    assert!(
        largest
            .iter()
            .any(|f| matches!(f, Incoming::Reply(104, Reply::Ack { seq: 6, .. }))),
        "a text of exactly MAX_TEXT is stored: {largest:?}"
    );

    // Nothing left over on either connection, and the group server's epoch never changed.
    for (socket, name) in [
        (&to_directory, "message server"),
        (&to_group, "group server"),
    ] {
        let what = format!("the last PING to the {name}");
        let frames = exchange(socket, 999, &Request::Ping, 1);
        assert!(
            matches!(&frames[..], [Incoming::Reply(999, Reply::Pong { .. })]),
            "{what}: the first frame back must be its PONG: {frames:?}"
        );
        seen.frame(&frames[0], name == "group server", &what);
    }
    assert_eq!(seen.epochs.len(), 1, "one epoch: {:?}", seen.epochs);
    Ok(())
}
