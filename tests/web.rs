//! `zms web`: the gateway spoken to over real WebSockets (tungstenite's client), in front of
//! a real message server and group server; and the web client driven in a real headless
//! Chromium (tests/web/browser.js), when Chromium and Node are there.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as Frame, WebSocket};
use zms::shutdown::ServerHandle;
use zms::web::{Config, Gateway, Limits};

use common::{cluster, Cluster};

/// How long any one awaited frame may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

fn gateway(c: &Cluster, limits: Limits) -> ServerHandle {
    let config = Config {
        bind: "127.0.0.1:0".into(),
        directories: vec![c.dir.endpoint().to_string()],
        origins: Vec::new(),
        limits,
        secure: None,
        tls: None,
    };
    Gateway::bind(&c.ctx, config).unwrap().spawn().unwrap()
}

/// A browser as the gateway sees one: a WebSocket of JSON frames.
struct Browser {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Browser {
    fn connect(web: &ServerHandle) -> Browser {
        Self::try_connect(web, None).unwrap()
    }

    fn try_connect(web: &ServerHandle, origin: Option<&str>) -> tungstenite::Result<Browser> {
        let mut request = format!("ws://{}/ws", web.address())
            .into_client_request()
            .unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        let (ws, _) = tungstenite::connect(request)?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(WAIT)).unwrap();
        }
        let mut browser = Browser { ws };
        let ready = browser.next();
        assert_eq!(ready["type"], "ready", "{ready}");
        Ok(browser)
    }

    /// Connects and signs in as `user` with `last` seqs; returns the `groups` frame.
    fn sign_in(web: &ServerHandle, user: &str, last: Value) -> (Browser, Value) {
        let mut b = Browser::connect(web);
        b.send(json!({"type": "hello", "user": user, "last": last}));
        let welcome = b.next();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let groups = b.expect("groups");
        (b, groups)
    }

    fn send(&mut self, frame: Value) {
        self.ws.send(Frame::text(frame.to_string())).unwrap();
    }

    fn send_raw(&mut self, text: &str) {
        self.ws.send(Frame::text(text.to_string())).unwrap();
    }

    /// The next JSON frame.
    fn next(&mut self) -> Value {
        loop {
            match self.ws.read().expect("a frame from the gateway") {
                Frame::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Frame::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// The next frame of `kind`, skipping others (presence, members, …) within [`WAIT`].
    fn expect(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let frame = self.next();
            if frame["type"] == kind {
                return frame;
            }
        }
        panic!("no {kind} frame within {WAIT:?}");
    }

    /// Messages of `group` until `n` have come, in the order they came.
    fn messages(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.expect("message")).collect()
    }

    /// The close frame the gateway ends with, reading past other frames.
    fn close_code(&mut self) -> Option<CloseCode> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Frame::Close(c)) => return c.map(|c| c.code),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

fn general(groups: &Value) -> String {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "general")
        .expect("general listed")["group"]
        .as_str()
        .unwrap()
        .to_string()
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn browsers_and_a_terminal_user_chat_and_a_retried_send_is_stored_once() {
    let c = cluster(&["general", "random"]);
    let web = gateway(&c, Limits::default());
    let (mut alice, groups) = Browser::sign_in(&web, "alice", json!({}));
    let id = general(&groups);
    assert_eq!(groups["groups"][0]["member"], false, "{groups}");
    alice.send(json!({"type": "join", "group": "general", "ref": 1}));
    let joined = alice.expect("joined");
    assert_eq!(
        (joined["group"].as_str(), &joined["ref"]),
        (Some(id.as_str()), &json!(1))
    );
    let (mut bob, _) = Browser::sign_in(&web, "bob", json!({}));
    bob.send(json!({"type": "join", "group": id}));
    bob.expect("joined");
    let (mut carol, group) = c.member("carol", "general");

    alice.send(json!({"type": "send", "group": id, "cid": "w1-000001", "text": "<b>hi</b> & bye"}));
    let ack = alice.expect("ack");
    assert_eq!(
        (ack["cid"].as_str(), ack["seq"].as_u64()),
        (Some("w1-000001"), Some(1))
    );
    let got = bob.expect("message");
    assert_eq!(
        (got["sender"].as_str(), got["text"].as_str()),
        (Some("alice"), Some("<b>hi</b> & bye"))
    );
    assert_eq!(
        common::texts(&common::receive(&mut carol, 1, WAIT)),
        ["<b>hi</b> & bye"]
    );

    // The same client id again (a browser that lost the ack): the first seq, nothing new.
    alice.send(json!({"type": "send", "group": id, "cid": "w1-000001", "text": "<b>hi</b> & bye"}));
    assert_eq!(alice.expect("ack")["seq"], 1);
    carol.send(&group, "from the terminal").unwrap();
    let both = bob.messages(1);
    assert_eq!(both[0]["text"], "from the terminal");
    assert_eq!(both[0]["seq"], 2, "the retry stored nothing: {both:?}");

    bob.send(json!({"type": "members", "group": id}));
    let members = bob.expect("members");
    let names: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"alice") && names.contains(&"carol"),
        "{members}"
    );

    bob.send(json!({"type": "history", "group": id, "before": 0, "limit": 1}));
    let page = bob.expect("history");
    assert_eq!(
        (seqs(page["messages"].as_array().unwrap()), &page["start"]),
        (vec![2], &json!(false))
    );
    bob.send(json!({"type": "history", "group": id, "before": 2, "limit": 50}));
    let page = bob.expect("history");
    assert_eq!(
        (seqs(page["messages"].as_array().unwrap()), &page["start"]),
        (vec![1], &json!(true))
    );
}

#[test]
fn a_browser_that_comes_back_with_its_last_seq_gets_what_it_missed_in_order() {
    let c = cluster(&["general"]);
    let web = gateway(&c, Limits::default());
    let (mut alice, groups) = Browser::sign_in(&web, "alice", json!({}));
    let id = general(&groups);
    alice.send(json!({"type": "join", "group": id}));
    alice.expect("joined");
    let (mut carol, group) = c.member("carol", "general");
    carol.send(&group, "one").unwrap();
    assert_eq!(alice.expect("message")["seq"], 1);
    drop(alice);

    for text in ["two", "three", "four"] {
        carol.send(&group, text).unwrap();
    }
    let (mut alice, groups) = Browser::sign_in(&web, "alice", json!({ id.clone(): 1 }));
    let entry = &groups["groups"][0];
    assert_eq!(
        (&entry["member"], &entry["last_seq"]),
        (&json!(true), &json!(4))
    );
    let missed = alice.messages(3);
    assert_eq!(seqs(&missed), [2, 3, 4]);
    carol.send(&group, "five").unwrap();
    assert_eq!(
        alice.expect("message")["seq"],
        5,
        "live again after the catch-up"
    );
}

#[test]
fn malformed_frames_get_an_error_and_the_connection_goes_on() {
    let c = cluster(&["general"]);
    let web = gateway(&c, Limits::default());
    let mut b = Browser::connect(&web);
    b.send(json!({"type": "join", "group": "general", "ref": "r0"}));
    let e = b.expect("error");
    assert_eq!(
        (e["code"].as_str(), &e["ref"]),
        (Some("NOT_SIGNED_IN"), &json!("r0"))
    );
    b.send(json!({"type": "hello", "user": "alice"}));
    b.expect("welcome");
    b.send(json!({"type": "join", "group": "general"}));
    b.expect("joined");
    for bad in [
        "not json at all",
        "[]",
        r#"{"type":"send","group":"general","cid":"has space","text":"x"}"#,
        r#"{"type":"send","group":"general","cid":"c1","text":"\u001b]0;pwned\u0007"}"#,
        r#"{"type":"hello","user":"mallory"}"#,
        r#"{"type":"join","group":"nosuch"}"#,
    ] {
        b.send_raw(bad);
        let e = b.expect("error");
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}: {e}"
        );
    }
    b.ws.send(Frame::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(b.expect("error")["code"], "BAD_REQUEST");
    b.send(json!({"type": "ping"}));
    b.expect("pong");
    // Nothing of that reached the group: no message was stored.
    b.send(json!({"type": "history", "group": "general"}));
    assert_eq!(b.expect("history")["messages"], json!([]));
}

#[test]
fn an_oversized_frame_closes_the_connection_with_1009_and_others_are_served() {
    let c = cluster(&["general"]);
    let limits = Limits {
        max_frame: 4096,
        ..Limits::default()
    };
    let web = gateway(&c, limits);
    let mut big = Browser::connect(&web);
    big.send_raw(&"x".repeat(64 * 1024));
    assert_eq!(big.close_code(), Some(CloseCode::Size));
    let (mut next, _) = Browser::sign_in(&web, "alice", json!({}));
    next.send(json!({"type": "ping"}));
    next.expect("pong");
}

#[test]
fn a_page_from_another_origin_cannot_open_a_websocket() {
    let c = cluster(&["general"]);
    let web = gateway(&c, Limits::default());
    let refused = Browser::try_connect(&web, Some("https://evil.example")).err();
    match refused {
        Some(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("not refused: {:?}", other.map(|e| e.to_string())),
    }
    let own = format!("http://{}", web.address());
    assert!(Browser::try_connect(&web, Some(&own)).is_ok());
}

#[test]
fn connections_past_the_cap_are_refused_until_one_goes() {
    let c = cluster(&["general"]);
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let web = gateway(&c, limits);
    let mut open: Vec<Browser> = (0..3).map(|_| Browser::connect(&web)).collect();
    match Browser::try_connect(&web, None).err() {
        Some(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("not refused: {:?}", other.map(|e| e.to_string())),
    }
    drop(open.pop());
    assert!(
        common::eventually(WAIT, || Browser::try_connect(&web, None).is_ok()),
        "a place came free"
    );
}

#[test]
fn a_browser_that_never_signs_in_or_floods_is_cut_off() {
    let c = cluster(&["general"]);
    let limits = Limits {
        sign_in: Duration::from_secs(1),
        rate: 5,
        burst: 10,
        ..Limits::default()
    };
    let web = gateway(&c, limits);
    let mut idle = Browser::connect(&web);
    assert_eq!(idle.close_code(), Some(CloseCode::Policy));

    let (mut flood, _) = Browser::sign_in(&web, "alice", json!({}));
    for _ in 0..200 {
        if flood.ws.send(Frame::text(r#"{"type":"ping"}"#)).is_err() {
            break;
        }
    }
    assert_eq!(flood.close_code(), Some(CloseCode::Policy));
    let (mut calm, _) = Browser::sign_in(&web, "bob", json!({}));
    calm.send(json!({"type": "ping"}));
    calm.expect("pong");
}

#[test]
fn the_page_is_served_with_a_policy_that_allows_no_inline_script() {
    let c = cluster(&["general"]);
    let web = gateway(&c, Limits::default());
    let get = |path: &str| {
        let mut s = TcpStream::connect(web.address()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", web.address()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Content-Security-Policy: default-src 'none'; script-src 'self'"));
    assert!(page.contains("<script src=\"/app.js\""));
    let script = get("/app.js");
    assert!(script.contains("textContent") && !script.contains("innerHTML"));
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

/// The web client in headless Chromium (tests/web/browser.js): two browser users and a
/// terminal user chat, HTML shows as text, a gateway restart loses nothing, edits (by Up and
/// from a terminal) and a deletion show on the other page, and search finds messages with
/// their words marked. Skipped, saying
/// so, without Node, Chromium or `npm ci --prefix tests/web`, unless `ZMS_REQUIRE_BROWSER=1`
/// (as `.ci/run` sets).
/// `ZMS_WEB_SHOTS=docs` also writes the README's screenshots.
#[test]
fn the_web_client_in_a_real_browser() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = match (node_ok, std::path::Path::new(&chromium).exists()) {
        (false, _) => Some("node is not installed"),
        (_, false) => Some("chromium is not installed (apt-get install chromium)"),
        _ if !dir.join("node_modules/playwright-core").exists() => {
            Some("playwright-core is not installed (npm ci --prefix tests/web)")
        }
        _ => None,
    };
    if let Some(why) = missing {
        assert!(
            std::env::var("ZMS_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "{why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let c = cluster(&["general", "random"]);
    let mut command = std::process::Command::new("node");
    command
        .arg(dir.join("browser.js"))
        .env("ZMS", common::ZMS)
        .env("ZMS_SERVER", zms::transport::address(c.dir.endpoint()))
        .env("CHROMIUM", &chromium);
    if let Some(shots) = std::env::var_os("ZMS_WEB_SHOTS") {
        let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(shots);
        command.env("SHOTS", shots);
    }
    let out = command.output().expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    assert!(text.contains("browser test passed"), "{text}\n{err}");
}

/// A TLS client trusting only the test certificate (tests/web/test-cert.pem, self-signed
/// for 127.0.0.1 and localhost).
fn tls_client(address: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(dir.join("test-cert.pem")).unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(address).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

#[test]
fn with_a_certificate_the_page_and_the_websocket_are_served_over_tls_only() {
    let c = cluster(&["general"]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let config = Config {
        bind: "127.0.0.1:0".into(),
        directories: vec![c.dir.endpoint().to_string()],
        origins: Vec::new(),
        limits: Limits::default(),
        secure: None,
        tls: Some(zms::web::tls::TlsFiles {
            cert: dir.join("test-cert.pem"),
            key: dir.join("test-key.pem"),
        }),
    };
    let gateway = Gateway::bind(&c.ctx, config).unwrap();
    assert!(gateway.url().starts_with("https://"), "{}", gateway.url());
    let web = gateway.spawn().unwrap();

    let mut tls = tls_client(&web.address());
    write!(tls, "GET / HTTP/1.1\r\nHost: {}\r\n\r\n", web.address()).unwrap();
    let mut page = String::new();
    let _ = tls.read_to_string(&mut page);
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("<html"),
        "{page}"
    );

    let url = format!("wss://{}/ws", web.address());
    let (mut ws, _) = tungstenite::client(url.as_str(), tls_client(&web.address())).unwrap();
    let mut next = || loop {
        if let Frame::Text(t) = ws.read().unwrap() {
            return serde_json::from_str::<Value>(t.as_str()).unwrap();
        }
    };
    assert_eq!(next()["type"], "ready");
    ws.send(Frame::text(
        json!({"type": "hello", "user": "alice"}).to_string(),
    ))
    .unwrap();
    let welcome = loop {
        if let Frame::Text(t) = ws.read().unwrap() {
            break serde_json::from_str::<Value>(t.as_str()).unwrap();
        }
    };
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // Plain HTTP to the TLS port gets no page.
    let mut plain = TcpStream::connect(web.address()).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    write!(plain, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out);
    assert!(!String::from_utf8_lossy(&out).contains("<html"));
}

/// A secure deployment: message server, group server and gateway, all with CURVE.
fn secure_gateway(
    ctx: &zmq::Context,
    data: &std::path::Path,
) -> (ServerHandle, ServerHandle, ServerHandle) {
    use zms::directory::{DirectorySecurity, DirectoryServer};
    use zms::group::{self, GroupSecurity, GroupServer};
    use zms::keys::KeyPair;
    let dir_keys = KeyPair::generate().unwrap();
    let security = DirectorySecurity {
        keys: dir_keys.clone(),
        allow_servers: Vec::new(),
    };
    let dir = common::rebind(|| {
        DirectoryServer::bind_with(ctx, "tcp://127.0.0.1:*", Some(security.clone()))
    })
    .spawn(ctx)
    .unwrap();
    let config = group::Config {
        groups: vec!["general".into()],
        data: data.to_path_buf(),
        directories: vec![dir.endpoint().to_string()],
        advertise: None,
        durability: Default::default(),
        security: Some(GroupSecurity {
            keys: KeyPair::generate().unwrap(),
            directory_keys: vec![dir_keys.public.clone()],
            private: Vec::new(),
            allow: Vec::new(),
        }),
    };
    let grp = common::rebind(|| GroupServer::bind(ctx, "tcp://127.0.0.1:*", config.clone()))
        .register(Duration::from_secs(2))
        .unwrap()
        .spawn(ctx)
        .unwrap();
    let web = Gateway::bind(
        ctx,
        Config {
            bind: "127.0.0.1:0".into(),
            directories: vec![dir.endpoint().to_string()],
            origins: Vec::new(),
            limits: Limits::default(),
            secure: Some(zms::web::WebSecurity {
                server_key: Some(dir_keys.public),
                pins: data.join("web-known_servers"),
                trust_on_first_use: false,
            }),
            tls: None,
        },
    )
    .unwrap()
    .spawn()
    .unwrap();
    (dir, grp, web)
}

#[test]
fn a_secure_gateway_lets_no_browser_act_as_a_user_whose_key_it_lacks() {
    let ctx = zmq::Context::new();
    let data = tempfile::tempdir().unwrap();
    let (_dir, _grp, web) = secure_gateway(&ctx, data.path());
    let alice_key = zms::keys::KeyPair::generate().unwrap();

    let mut b = Browser::connect(&web);
    b.send(json!({"type": "hello", "user": "alice"}));
    assert_eq!(b.expect("error")["code"], "UNAUTHORIZED");

    b.send(json!({"type": "hello", "user": "alice", "key": alice_key.secret}));
    b.expect("welcome");
    b.expect("groups");
    b.send(json!({"type": "join", "group": "general"}));
    b.expect("joined");
    b.send(json!({"type": "send", "group": "general", "cid": "w1-000001", "text": "signed"}));
    assert_eq!(b.expect("ack")["seq"], 1);

    // Mallory, with a key of her own, names alice: the group server refuses every request.
    let mallory = zms::keys::KeyPair::generate().unwrap();
    let mut m = Browser::connect(&web);
    m.send(json!({"type": "hello", "user": "alice", "key": mallory.secret}));
    m.expect("welcome");
    let groups = m.expect("groups");
    assert_eq!(groups["groups"][0]["member"], false, "{groups}");
    for frame in [
        json!({"type": "join", "group": "general"}),
        json!({"type": "send", "group": "general", "cid": "w2-000001", "text": "forged"}),
        json!({"type": "history", "group": "general"}),
    ] {
        m.send(frame.clone());
        let e = m.expect("error");
        assert!(
            ["UNAUTHORIZED", "NOT_MEMBER"].contains(&e["code"].as_str().unwrap()),
            "{frame}: {e}"
        );
    }
    // And alice's own browser still reads only her one message.
    b.send(json!({"type": "history", "group": "general"}));
    let page = b.expect("history");
    assert_eq!(seqs(page["messages"].as_array().unwrap()), [1], "{page}");

    let mut bad = Browser::connect(&web);
    bad.send(json!({"type": "hello", "user": "bob", "key": "not a key"}));
    assert_eq!(bad.expect("error")["code"], "BAD_REQUEST");
}

fn http_get(address: &str, path: &str) -> String {
    let mut s = TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn zms_up_serves_the_web_client_and_zms_web_says_where() {
    let data = tempfile::tempdir().unwrap();
    let up = common::Proc::spawn(&[
        "up",
        "--bind",
        "127.0.0.1:0",
        "--group-bind",
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--data",
        data.path().to_str().unwrap(),
    ]);
    let (mut server, mut web) = (None, None);
    while web.is_none() {
        let line = up.line();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["message", "server", address] => server = Some(address.to_string()),
            ["web:", url] => web = Some(url.to_string()),
            _ => {}
        }
    }
    let web = web.unwrap();
    let address = web
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{web}"));
    assert!(address.starts_with("127.0.0.1:"), "{web}");
    assert!(http_get(address, "/").starts_with("HTTP/1.1 200"));

    let gateway =
        common::Proc::spawn(&["web", "--bind", "127.0.0.1:0", "--server", &server.unwrap()]);
    let line = gateway.line();
    let url = line
        .strip_prefix("listening on http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(http_get(url, "/healthz").ends_with("ok\n"));
}

#[test]
fn a_direct_message_reaches_its_two_users_only() {
    let c = cluster(&["general"]);
    let web = gateway(&c, Limits::default());
    let (mut bob, _) = Browser::sign_in(&web, "bob", json!({}));
    let (mut alice, _) = Browser::sign_in(&web, "alice", json!({}));
    alice.send(json!({"type": "dm", "user": "bob", "ref": "dm"}));
    let joined = alice.expect("joined");
    assert_eq!(
        (&joined["name"], &joined["peer"]),
        (&json!("@alice@bob"), &json!("bob")),
        "{joined}"
    );
    let id = joined["group"].as_str().unwrap().to_string();
    alice.send(json!({"type": "send", "group": id, "cid": "w1-000001", "text": "just for bob"}));
    alice.expect("ack");

    // Bob's gateway connection finds the conversation alice opened and subscribes to it.
    let found = bob.expect("joined");
    assert_eq!(
        (found["group"].as_str(), &found["peer"]),
        (Some(id.as_str()), &json!("alice"))
    );
    bob.send(json!({"type": "history", "group": id}));
    let page = bob.expect("history");
    assert_eq!(page["messages"][0]["text"], "just for bob", "{page}");
    bob.send(json!({"type": "send", "group": id, "cid": "w2-000001", "text": "thanks"}));
    // Her own message comes back live first, then bob's answer, in seq order.
    let live = alice.messages(2);
    assert_eq!(
        (&live[0]["text"], &live[1]["text"]),
        (&json!("just for bob"), &json!("thanks"))
    );

    // Carol neither sees it listed nor reads it.
    let (mut carol, groups) = Browser::sign_in(&web, "carol", json!({}));
    assert!(!groups.to_string().contains("@alice@bob"), "{groups}");
    carol.send(json!({"type": "history", "group": id}));
    let refused = carol.expect("error");
    assert!(
        ["UNAUTHORIZED", "UNKNOWN_GROUP"].contains(&refused["code"].as_str().unwrap()),
        "{refused}"
    );
}

/// Whether a frame holds Part 1's change marker (U+0001) anywhere, raw or escaped.
fn marked(frame: &Value) -> bool {
    let text = frame.to_string();
    text.contains('\u{1}') || text.contains("\\u0001")
}

#[test]
fn a_terminal_users_edits_reach_a_browser_as_structured_changes_live_in_history_and_on_resume() {
    let c = cluster(&["general"]);
    let web = gateway(&c, Limits::default());
    let (mut alice, groups) = Browser::sign_in(&web, "alice", json!({}));
    let id = general(&groups);
    alice.send(json!({"type": "join", "group": id}));
    alice.expect("joined");
    let (mut carol, group) = c.member("carol", "general");

    carol.send(&group, "wrold").unwrap();
    assert_eq!(alice.expect("message")["text"], "wrold");
    assert_eq!(carol.edit(&group, 1, "world <i>&amp;</i>").unwrap(), 2);
    carol.send(&group, "oops").unwrap();
    assert_eq!(carol.delete(&group, 3).unwrap(), 4);
    let live = alice.messages(3);
    for frame in &live {
        assert!(!marked(frame), "{frame}");
    }
    assert_eq!(
        (&live[0]["seq"], &live[0]["sender"], &live[0]["text"]),
        (&json!(2), &json!("carol"), &Value::Null)
    );
    assert_eq!(
        live[0]["edit"],
        json!({"seq": 1, "text": "world <i>&amp;</i>"})
    );
    assert_eq!(live[1]["text"], "oops");
    assert_eq!(
        (&live[2]["delete"], &live[2]["text"]),
        (&json!(3), &Value::Null)
    );

    alice.send(json!({"type": "history", "group": id}));
    let page = alice.expect("history");
    assert!(!marked(&page), "{page}");
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(seqs(messages), [1, 2, 3, 4]);
    assert_eq!(messages[1]["edit"]["seq"], 1);
    assert_eq!(messages[3]["delete"], 3);

    // A browser back with seq 1 catches up on the changes the same way.
    let (mut back, _) = Browser::sign_in(&web, "alice", json!({ id.clone(): 1 }));
    let missed = back.messages(3);
    assert_eq!(seqs(&missed), [2, 3, 4]);
    assert!(missed.iter().all(|m| !marked(m)), "{missed:?}");
    assert_eq!(missed[0]["edit"]["text"], "world <i>&amp;</i>");
}

#[test]
fn a_browser_edits_and_deletes_its_own_messages_and_not_anothers() {
    let c = cluster(&["general"]);
    let web = gateway(&c, Limits::default());
    let (mut alice, groups) = Browser::sign_in(&web, "alice", json!({}));
    let id = general(&groups);
    alice.send(json!({"type": "join", "group": id}));
    alice.expect("joined");
    let (mut bob, _) = Browser::sign_in(&web, "bob", json!({}));
    bob.send(json!({"type": "join", "group": id}));
    bob.expect("joined");
    let (mut carol, group) = c.member("carol", "general");

    alice.send(json!({"type": "send", "group": id, "cid": "w1-000001", "text": "teh plan"}));
    assert_eq!(alice.expect("ack")["seq"], 1);
    alice.send(
        json!({"type": "edit", "group": id, "seq": 1, "text": "the <b>plan</b>", "ref": "e1"}),
    );
    let changed = alice.expect("changed");
    assert_eq!(
        (
            &changed["ref"],
            &changed["group"],
            &changed["seq"],
            &changed["change"]
        ),
        (&json!("e1"), &json!(id), &json!(1), &json!(2))
    );
    let seen = bob.messages(2);
    assert_eq!(
        seen[1]["edit"],
        json!({"seq": 1, "text": "the <b>plan</b>"})
    );
    // A terminal user gets it as Part 1 has it, an edit by alice.
    let stored = common::receive(&mut carol, 2, WAIT);
    assert_eq!(
        (
            stored[1].sender.as_str(),
            zms::protocol::edit::parse(&stored[1].text)
        ),
        (
            "alice",
            Some(zms::protocol::edit::Change::Edit {
                seq: 1,
                text: "the <b>plan</b>"
            })
        )
    );

    // Carol's message is hers: the group server refuses, and the browser hears why.
    carol.send(&group, "carol's own").unwrap();
    assert_eq!(bob.expect("message")["seq"], 3);
    for frame in [
        json!({"type": "edit", "group": id, "seq": 3, "text": "forged", "ref": "e2"}),
        json!({"type": "delete", "group": id, "seq": 3, "ref": "d2"}),
    ] {
        alice.send(frame.clone());
        let e = alice.expect("error");
        assert_eq!(
            (e["code"].as_str(), &e["ref"]),
            (Some("NOT_MEMBER"), &frame["ref"]),
            "{e}"
        );
    }
    alice.send(json!({"type": "edit", "group": id, "seq": 99, "text": "nothing there"}));
    assert_eq!(alice.expect("error")["code"], "BAD_REQUEST");

    alice.send(json!({"type": "delete", "group": id, "seq": 1, "ref": "d1"}));
    assert_eq!(alice.expect("changed")["change"], 4);
    let gone = bob.expect("message");
    assert_eq!((&gone["seq"], &gone["delete"]), (&json!(4), &json!(1)));

    // Malformed changes and searches are answered with errors and reach no server.
    for bad in [
        r#"{"type":"edit","group":"general","seq":"1","text":"x"}"#,
        r#"{"type":"edit","group":"general","seq":0,"text":"x"}"#,
        r#"{"type":"edit","group":"general","seq":1}"#,
        r#"{"type":"edit","group":"general","seq":1,"text":"\u0001delete 3"}"#,
        r#"{"type":"edit","group":"general","seq":1,"text":"   "}"#,
        r#"{"type":"delete","group":"general"}"#,
        r#"{"type":"delete","group":["general"],"seq":1}"#,
        r#"{"type":"search"}"#,
        r#"{"type":"search","query":"?!"}"#,
        r#"{"type":"search","query":"a\u001bb"}"#,
        r#"{"type":"search","query":"x","group":"../etc"}"#,
    ] {
        alice.send_raw(bad);
        let e = alice.expect("error");
        assert_eq!(e["code"], "BAD_REQUEST", "{bad}: {e}");
    }
    let huge = "x".repeat(zms::protocol::MAX_TEXT + 1);
    alice.send(json!({"type": "edit", "group": id, "seq": 1, "text": huge}));
    assert_eq!(alice.expect("error")["code"], "TOO_LARGE");
    alice.send(json!({"type": "history", "group": id}));
    assert_eq!(
        seqs(alice.expect("history")["messages"].as_array().unwrap()),
        [1, 2, 3, 4],
        "nothing more was stored"
    );
}

#[test]
fn a_browser_searches_the_groups_it_is_in_and_only_those() {
    let c = cluster(&["general", "random", "secret"]);
    let web = gateway(&c, Limits::default());
    let (mut alice, groups) = Browser::sign_in(&web, "alice", json!({}));
    let id = general(&groups);
    for group in ["general", "random"] {
        alice.send(json!({"type": "join", "group": group}));
        alice.expect("joined");
    }
    let (mut carol, group) = c.member("carol", "general");
    let secret = carol.resolve("secret").unwrap();
    carol.join(&secret).unwrap();
    carol.send(&secret, "lunch is a secret").unwrap();
    carol.send(&group, "café lunch at noon").unwrap();
    alice.send(
        json!({"type": "send", "group": "random", "cid": "w1-000001", "text": "no LUNCH for me"}),
    );
    alice.expect("ack");

    alice.send(json!({"type": "search", "query": "lunch", "ref": "s1"}));
    let found = alice.expect("found");
    assert_eq!(
        (&found["ref"], &found["query"]),
        (&json!("s1"), &json!("lunch"))
    );
    let hits = found["hits"].as_array().unwrap();
    let texts: Vec<&str> = hits.iter().map(|h| h["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 2, "not the secret group's: {found}");
    assert!(texts.contains(&"café lunch at noon") && texts.contains(&"no LUNCH for me"));
    let cafe = hits.iter().find(|h| h["sender"] == "carol").unwrap();
    assert_eq!(
        (&cafe["group"], &cafe["seq"], &cafe["name"]),
        (&json!(id), &json!(1), &json!("general"))
    );
    // "é" is two octets but one UTF-16 unit: the range is in the browser's units.
    assert_eq!(cafe["matches"], json!([[5, 10]]));
    assert!(cafe["ts"].as_i64().is_some());

    alice.send(json!({"type": "search", "group": "general", "query": "lunch"}));
    assert_eq!(alice.expect("found")["hits"].as_array().unwrap().len(), 1);
    alice.send(json!({"type": "search", "group": "secret", "query": "lunch"}));
    assert_eq!(alice.expect("error")["code"], "NOT_MEMBER");

    // Search reads the latest text: an edit is found by its new words.
    carol.edit(&group, 1, "café brunch at noon").unwrap();
    alice.expect("message");
    alice.send(json!({"type": "search", "query": "brunch"}));
    let found = alice.expect("found");
    assert_eq!(
        (&found["hits"][0]["seq"], &found["hits"][0]["text"]),
        (&json!(1), &json!("café brunch at noon")),
        "{found}"
    );
}
