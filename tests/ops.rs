//! Operations through the real binary: `--metrics` (Prometheus text and /healthz over real
//! HTTP) and `zms status`, against servers started as child processes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{eventually, session, Immutable, Proc, ZMS};
use zms::client::GroupRef;
use zms::protocol::codec::{self, Incoming};
use zms::protocol::{ErrorCode, Reply, Request};

/// How long a condition the test waits for may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// `GET path` over HTTP/1.1 (connection closed by us after the answer); status and body.
fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("metrics endpoint accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// The value of the sample `series` (name and labels as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/metrics` until `series` is at least `min`.
fn metric_reaches(address: &str, series: &str, min: f64) -> bool {
    eventually(PATIENCE, || {
        sample(&http_get(address, "/metrics").1, series).is_some_and(|v| v >= min)
    })
}

/// The address after `prefix` in a line like `metrics on http://HOST:PORT/metrics`.
fn metrics_address(line: &str) -> String {
    line.strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected line: {line}"))
        .to_string()
}

/// A message server serving metrics: its address and its metrics address.
fn message_server() -> (Proc, String, String) {
    let proc = Proc::spawn(&[
        "message-server",
        "--bind",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let address = proc.listening();
    let metrics = metrics_address(&proc.line());
    (proc, address, metrics)
}

/// A group server of `group` serving metrics: its metrics address, read before
/// `listening on` (which waits for the registration).
fn group_server(server: &str, group: &str, data: &std::path::Path) -> (Proc, String) {
    let proc = Proc::spawn(&[
        "group-server",
        "--server",
        server,
        "--bind",
        "127.0.0.1:0",
        "--group",
        group,
        "--data",
        data.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_address(&proc.line());
    (proc, metrics)
}

#[test]
fn metrics_count_stored_and_pushed_messages_and_refusals_by_code() {
    let (_directory, server, directory_metrics) = message_server();
    let data = tempfile::tempdir().unwrap();
    let (group, metrics) = group_server(&server, "general", data.path());
    let general = GroupRef {
        name: "general".into(),
        address: group.listening(),
    };
    let (status, text) = http_get(&metrics, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        sample(&text, r#"zms_messages_stored_total{group="general"}"#),
        Some(0.0)
    );
    assert!(text.contains(r#"zms_build_info{version=""#), "{text}");
    let ctx = zmq::Context::new();
    let endpoint = format!("tcp://{server}");
    let mut alice = session(&ctx, &endpoint, "alice");
    let mut bob = session(&ctx, &endpoint, "bob");
    alice.join(&general).unwrap();
    bob.join(&general).unwrap();
    alice.send(&general, "hello").unwrap();
    assert!(metric_reaches(
        &metrics,
        r#"zms_messages_stored_total{group="general"}"#,
        1.0
    ));
    // Both members are subscribed: the message is pushed to each.
    assert!(metric_reaches(
        &metrics,
        r#"zms_pushes_total{group="general"}"#,
        2.0
    ));
    assert!(metric_reaches(
        &metrics,
        r#"zms_requests_total{command="SEND",code="OK"}"#,
        1.0
    ));
    // A refused request is counted under its code.
    let mut carol = session(&ctx, &endpoint, "carol");
    match carol.send(&general, "not a member") {
        Err(zms::Error::Rejected {
            code: ErrorCode::NotMember,
            ..
        }) => {}
        other => panic!("expected NOT_MEMBER, got {other:?}"),
    }
    assert!(metric_reaches(
        &metrics,
        r#"zms_requests_total{command="SEND",code="NOT_MEMBER"}"#,
        1.0
    ));
    let text = http_get(&metrics, "/metrics").1;
    assert!(
        sample(&text, "zms_store_commit_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "zms_batch_requests_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // The message server counts the registrations and lists the group.
    assert!(metric_reaches(
        &directory_metrics,
        "zms_directory_entries",
        1.0
    ));
    assert!(metric_reaches(
        &directory_metrics,
        r#"zms_requests_total{command="REGISTER",code="OK"}"#,
        1.0
    ));
    assert_eq!(
        http_get(&directory_metrics, "/healthz"),
        (200, "ok\n".into())
    );
    assert_eq!(http_get(&metrics, "/nothing").0, 404);
}

#[test]
fn healthz_turns_503_while_the_store_cannot_write_and_200_again_after() {
    let (_directory, server, _) = message_server();
    let data = tempfile::tempdir().unwrap();
    let (group, metrics) = group_server(&server, "general", data.path());
    let general = GroupRef {
        name: "general".into(),
        address: group.listening(),
    };
    assert!(eventually(PATIENCE, || http_get(&metrics, "/healthz").0 == 200));
    let ctx = zmq::Context::new();
    let mut alice = session(&ctx, &format!("tcp://{server}"), "alice");
    alice.join(&general).unwrap();
    let Some(immutable) = Immutable::store_in(data.path()) else {
        eprintln!("SKIPPED: chattr +i is not possible here (needs root on ext4 or xfs)");
        return;
    };
    assert!(alice.send(&general, "refused").is_err());
    let (status, body) = http_get(&metrics, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("store unwritable: "), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    assert!(metric_reaches(
        &metrics,
        r#"zms_requests_total{command="SEND",code="UNAVAILABLE"}"#,
        1.0
    ));
    drop(immutable);
    alice.send(&general, "stored").unwrap();
    assert_eq!(http_get(&metrics, "/healthz"), (200, "ok\n".into()));
}

#[test]
fn healthz_is_503_until_a_message_server_acknowledges_the_group_server() {
    // A port nothing listens on yet: the message server starts there later.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = free.local_addr().unwrap().to_string();
    drop(free);
    let data = tempfile::tempdir().unwrap();
    let (group, metrics) = group_server(&server, "general", data.path());
    assert!(group.line().starts_with("serving on "));
    let (status, body) = http_get(&metrics, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not registered with a message server"),
        "{body}"
    );
    let directory = Proc::spawn(&["message-server", "--bind", &server]);
    assert_eq!(directory.listening(), server);
    assert!(eventually(PATIENCE, || http_get(&metrics, "/healthz").0 == 200));
}

/// Runs `zms status` with `args`; its stdout, after checking it succeeded.
fn status(server: &str, args: &[&str]) -> String {
    let output = Command::new(ZMS)
        .args(["status", "--server", server])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn status_shows_servers_groups_and_a_frozen_group_server_as_unreachable() {
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let server = directory.listening();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (general_server, _) = group_server(&server, "general", one.path());
    let (random_server, _) = group_server(&server, "random", two.path());
    let general = GroupRef {
        name: "general".into(),
        address: general_server.listening(),
    };
    let random_address = random_server.listening();
    let ctx = zmq::Context::new();
    let endpoint = format!("tcp://{server}");
    let mut alice = session(&ctx, &endpoint, "alice");
    alice.join(&general).unwrap();
    alice.send(&general, "hello").unwrap();

    random_server.freeze();
    // Keep the frozen server listed however long the test takes (its own registration would
    // run out after a few seconds of silence): register it for a minute in its place.
    let dealer = common::raw_dealer(&ctx, &endpoint);
    let register = Request::Register {
        address: random_address.clone(),
        ttl_ms: 60_000,
        groups: vec!["random".into()],
        key: String::new(),
        replace: false,
    };
    dealer.send(codec::encode_request(1, &register), 0).unwrap();
    let answer = codec::decode_incoming(&dealer.recv_bytes(0).unwrap()).unwrap();
    assert_eq!(answer, Incoming::Reply(1, Reply::Ok));

    let plain = status(&server, &[]);
    assert!(plain.contains(&format!("  {server}  up ")), "{plain}");
    assert!(
        plain.contains(&format!("  {}  ok  up ", general.address)),
        "{plain}"
    );
    assert!(
        plain.contains(&format!(
            "general  on {}  members 1  online ",
            general.address
        )),
        "{plain}"
    );
    assert!(plain.contains("last seq 1"), "{plain}");
    assert!(
        plain.contains(&format!("  {random_address}  unreachable")),
        "{plain}"
    );
    assert!(plain.contains("unhealthy\n"), "{plain}");

    let json: serde_json::Value = serde_json::from_str(&status(&server, &["--json"])).unwrap();
    assert_eq!(json["message_servers"][0]["address"], server.as_str());
    let servers = json["message_servers"][0]["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{json}");
    let group_servers = json["group_servers"].as_array().unwrap();
    let answered = group_servers
        .iter()
        .find(|s| s["address"] == general.address.as_str())
        .unwrap();
    assert_eq!(answered["healthy"], true);
    assert_eq!(answered["groups"][0]["name"], "general");
    assert_eq!(answered["groups"][0]["last_seq"], 1);
    assert_eq!(answered["groups"][0]["members"], 1);
    assert!(
        answered["groups"][0]["messages_per_second"]
            .as_f64()
            .unwrap()
            >= 0.0
    );
    let frozen = group_servers
        .iter()
        .find(|s| s["address"] == random_address.as_str())
        .unwrap();
    assert_eq!(frozen["unreachable"], true, "{json}");
}

#[test]
fn kicks_and_bans_are_counted_by_reply_code() {
    let (_directory, server, _) = message_server();
    let data = tempfile::tempdir().unwrap();
    let (group, metrics) = group_server(&server, "general", data.path());
    let general = GroupRef {
        name: "general".into(),
        address: group.listening(),
    };
    let ctx = zmq::Context::new();
    let endpoint = format!("tcp://{server}");
    let mut bob = session(&ctx, &endpoint, "bob");
    let mut root = session(&ctx, &endpoint, "root");
    bob.join(&general).unwrap();
    root.remove(&general, "bob", false).unwrap();
    root.remove(&general, "bob", true).unwrap();
    assert!(root.remove(&general, "bob", false).is_err());
    for series in [
        r#"zms_requests_total{command="KICK",code="OK"}"#,
        r#"zms_requests_total{command="BAN",code="OK"}"#,
        r#"zms_requests_total{command="KICK",code="NOT_MEMBER"}"#,
    ] {
        assert!(metric_reaches(&metrics, series, 1.0), "{series}");
    }
}

#[test]
fn administration_and_trims_are_counted() {
    let (_directory, server, _) = message_server();
    let data = tempfile::tempdir().unwrap();
    let proc = Proc::spawn(&[
        "group-server",
        "--server",
        &server,
        "--bind",
        "127.0.0.1:0",
        "--group",
        "general",
        "--data",
        data.path().to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
        "--retain",
        "log=5msgs",
    ]);
    let metrics = metrics_address(&proc.line());
    let address = proc.listening();
    let ctx = zmq::Context::new();
    let endpoint = format!("tcp://{server}");
    let mut root = session(&ctx, &endpoint, "root");
    let at = |name: &str| GroupRef {
        name: name.into(),
        address: address.clone(),
    };
    let create = |name: &str| zms::protocol::Request::Create {
        group: name.into(),
        private: false,
    };
    // A group created at runtime takes its retention policy.
    root.administer(&at("log"), &create("log")).unwrap();
    assert!(root.administer(&at("log"), &create("log")).is_err());
    let unban = zms::protocol::Request::Unban {
        group: "general".into(),
        user: "bob".into(),
    };
    assert!(root.administer(&at("general"), &unban).is_err());
    let log = at("log");
    root.join(&log).unwrap();
    for batch in 0..3 {
        let texts: Vec<String> = (0..5).map(|i| format!("{}", batch * 5 + i)).collect();
        root.send_many(&log, &texts).unwrap();
    }
    for (series, at_least) in [
        (r#"zms_requests_total{command="CREATE",code="OK"}"#, 1.0),
        (
            r#"zms_requests_total{command="CREATE",code="BAD_REQUEST"}"#,
            1.0,
        ),
        (
            r#"zms_requests_total{command="UNBAN",code="BAD_REQUEST"}"#,
            1.0,
        ),
        (r#"zms_trimmed_messages_total{group="log"}"#, 5.0),
        // Counted like a group hosted from the start.
        (r#"zms_messages_stored_total{group="log"}"#, 15.0),
    ] {
        assert!(metric_reaches(&metrics, series, at_least), "{series}");
    }
    // STATUS lists the groups hosted now, those created at runtime included.
    let json = status(&server, &["--json"]);
    assert!(json.contains(r#""last_seq":15"#), "{json}");
    assert!(json.contains(r#""name":"log""#), "{json}");
}
