//! Security, tried as an attacker would: plaintext peers, wrong keys, stolen names, private
//! groups, rogue group servers, replaced server keys.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use zms::client::{ClientSecurity, Conn, Session, Timeouts};
use zms::directory::owners::Owners;
use zms::directory::{DirectorySecurity, DirectoryServer};
use zms::group::limits::Limits;
use zms::group::{self, GroupSecurity, GroupServer};
use zms::keys::{KeyPair, Pins};
use zms::protocol::{codec, ErrorCode, Request};
use zms::shutdown::ServerHandle;
use zms::Error;

fn secure_directory(
    ctx: &zmq::Context,
    keys: &KeyPair,
    allow_servers: Vec<String>,
) -> ServerHandle {
    let security = DirectorySecurity {
        keys: keys.clone(),
        allow_servers,
    };
    rebind(|| DirectoryServer::bind_with(ctx, "tcp://127.0.0.1:*", Some(security.clone())))
        .spawn(ctx)
        .unwrap()
}

struct GroupSetup<'a> {
    directory: &'a ServerHandle,
    directory_key: &'a str,
    keys: KeyPair,
    groups: &'a [&'a str],
    private: &'a [&'a str],
    allow: Vec<String>,
    limits: Limits,
}

fn secure_group(ctx: &zmq::Context, setup: GroupSetup, data: &Path) -> ServerHandle {
    secure_group_bound(ctx, setup, data)
        .register(Duration::from_secs(2))
        .unwrap()
        .spawn(ctx)
        .unwrap()
}

/// A secure group server, bound but neither registered nor running.
fn secure_group_bound(ctx: &zmq::Context, setup: GroupSetup, data: &Path) -> GroupServer {
    let config = group::Config {
        groups: setup.groups.iter().map(|g| g.to_string()).collect(),
        data: data.to_path_buf(),
        directories: vec![setup.directory.endpoint().to_string()],
        advertise: None,
        durability: Default::default(),
        security: Some(GroupSecurity {
            keys: setup.keys,
            directory_keys: vec![setup.directory_key.to_string()],
            private: setup.private.iter().map(|g| g.to_string()).collect(),
            allow: setup.allow,
        }),
    };
    rebind(|| GroupServer::bind(ctx, "tcp://127.0.0.1:*", config.clone()))
        .with_limits(setup.limits)
        .unwrap()
}

/// A user with its own key pair, trusting the message server's given key.
fn user(
    ctx: &zmq::Context,
    directory: &ServerHandle,
    directory_key: &str,
    name: &str,
    keys: &KeyPair,
    home: &Path,
) -> Session {
    session(ctx, directory.endpoint(), name).with_security(ClientSecurity {
        keys: keys.clone(),
        pins: Pins::load(&home.join("known_servers")).unwrap(),
        server_key: Some(directory_key.to_string()),
        trust_on_first_use: false,
    })
}

/// As [`user`], under a fresh key pair.
fn fresh_user(
    ctx: &zmq::Context,
    directory: &ServerHandle,
    directory_key: &str,
    name: &str,
    home: &Path,
) -> Session {
    user(
        ctx,
        directory,
        directory_key,
        name,
        &KeyPair::generate().unwrap(),
        home,
    )
}

struct World {
    ctx: zmq::Context,
    dir_keys: KeyPair,
    directory: ServerHandle,
    group: ServerHandle,
    group_keys: KeyPair,
    _data: tempfile::TempDir,
    home: tempfile::TempDir,
}

fn world(private: &[&str], allow: Vec<String>) -> World {
    world_with(&["general", "secret"], private, allow, Limits::default())
}

/// A secure message server and one secure group server serving `groups` under `limits`.
fn world_with(groups: &[&str], private: &[&str], allow: Vec<String>, limits: Limits) -> World {
    let ctx = zmq::Context::new();
    let dir_keys = KeyPair::generate().unwrap();
    let directory = secure_directory(&ctx, &dir_keys, Vec::new());
    let data = tempfile::tempdir().unwrap();
    let group_keys = KeyPair::generate().unwrap();
    let setup = GroupSetup {
        directory: &directory,
        directory_key: &dir_keys.public,
        keys: group_keys.clone(),
        groups,
        private,
        allow,
        limits,
    };
    let group = secure_group(&ctx, setup, data.path());
    World {
        ctx,
        dir_keys,
        directory,
        group,
        group_keys,
        _data: data,
        home: tempfile::tempdir().unwrap(),
    }
}

impl World {
    fn user(&self, name: &str, keys: &KeyPair) -> Session {
        user(
            &self.ctx,
            &self.directory,
            &self.dir_keys.public,
            name,
            keys,
            self.home.path(),
        )
    }

    /// A raw protocol connection to the group server under a fresh key.
    fn raw_conn(&self) -> Conn {
        curve_conn(
            &self.ctx,
            self.group.endpoint(),
            "group server",
            &self.group_keys.public,
            &KeyPair::generate().unwrap(),
        )
    }
}

/// A raw protocol connection to `endpoint` under `keys`, trusting `server_key`.
fn curve_conn(
    ctx: &zmq::Context,
    endpoint: &str,
    role: &'static str,
    server_key: &str,
    keys: &KeyPair,
) -> Conn {
    Conn::connect_with(
        ctx,
        endpoint,
        role,
        TIMEOUTS,
        Some(zms::client::Curve {
            keys: keys.clone(),
            server_key: server_key.to_string(),
        }),
    )
    .unwrap()
}

fn code(result: Result<impl std::fmt::Debug, Error>) -> ErrorCode {
    match result {
        Err(Error::Rejected { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_message_server_lists_each_group_server_with_its_key() {
    let w = world(&[], Vec::new());
    let mut alice = w.user("alice", &KeyPair::generate().unwrap());
    let groups = alice.list_groups().unwrap();
    assert_eq!(groups.len(), 2);
    assert!(groups
        .iter()
        .all(|g| g.key == w.group_keys.public && g.address == w.group.address()));
    // Trust flows from the message server: alice reaches the group server with the listed key.
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    assert_eq!(alice.send(&general, "over CURVE").unwrap().0, 1);
}

#[test]
fn plaintext_peers_and_wrong_keys_get_nothing() {
    let w = world(&[], Vec::new());
    let mut plain = session(&w.ctx, w.directory.endpoint(), "eve");
    let err = plain.list_groups().unwrap_err().to_string();
    assert!(
        err.contains("no answer") && err.contains("--secure"),
        "{err}"
    );

    // A raw plaintext socket to the group server: its JOIN is never answered.
    let raw = w.ctx.socket(zmq::DEALER).unwrap();
    raw.set_linger(0).unwrap();
    raw.set_rcvtimeo(1000).unwrap();
    raw.connect(w.group.endpoint()).unwrap();
    let join = Request::Join {
        group: "general".into(),
        user: "eve".into(),
    };
    raw.send(codec::encode_request(1, &join), 0).unwrap();
    assert!(
        raw.recv_bytes(0).is_err(),
        "a plaintext peer gets no answer"
    );

    // A client that does not hold the server's key cannot complete the handshake.
    let wrong = KeyPair::generate().unwrap().public;
    let mut eve = fresh_user(&w.ctx, &w.directory, &wrong, "eve", w.home.path());
    assert!(matches!(eve.list_groups(), Err(Error::Timeout(_))));
}

#[test]
fn no_one_can_post_or_read_under_another_users_name() {
    let w = world(&[], Vec::new());
    let alice_keys = KeyPair::generate().unwrap();
    let mut alice = w.user("alice", &alice_keys);
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    alice.send(&general, "only alice writes this").unwrap();

    let mut mallory = w.user("alice", &KeyPair::generate().unwrap());
    assert_eq!(
        code(mallory.send(&general, "I am alice")),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        code(mallory.history(&general, None, None)),
        ErrorCode::Unauthorized
    );
    assert_eq!(code(mallory.leave(&general)), ErrorCode::Unauthorized);
    // Under her own name she is just not a member.
    let mut mallory = w.user("mallory", &KeyPair::generate().unwrap());
    assert_eq!(
        code(mallory.history(&general, None, None)),
        ErrorCode::NotMember
    );

    // Alice, with her key, is still alice (a new session, the same key).
    let mut again = w.user("alice", &alice_keys);
    assert_eq!(
        texts(&again.history(&general, None, None).unwrap()),
        ["only alice writes this"]
    );
}

#[test]
fn private_groups_admit_only_allowed_and_invited_keys() {
    let alice_keys = KeyPair::generate().unwrap();
    let w = world(&["secret"], vec![alice_keys.public.clone()]);
    let bob_keys = KeyPair::generate().unwrap();
    let mut alice = w.user("alice", &alice_keys);
    let mut bob = w.user("bob", &bob_keys);
    let secret = alice.resolve("secret").unwrap();
    let general = alice.resolve("general").unwrap();

    match bob.join(&secret) {
        Err(Error::Rejected {
            code: ErrorCode::Unauthorized,
            reason,
        }) => {
            assert!(
                reason.contains("private") && reason.contains(&bob_keys.public),
                "{reason}"
            )
        }
        other => panic!("bob joined uninvited: {other:?}"),
    }
    bob.join(&general).unwrap();
    alice.join(&general).unwrap();
    alice.join(&secret).unwrap();
    // Only a member invites, and only into a private group.
    let mut carol = w.user("carol", &KeyPair::generate().unwrap());
    assert_eq!(
        code(carol.invite(&secret, &bob_keys.public)),
        ErrorCode::NotMember
    );
    assert_eq!(
        code(alice.invite(&general, &bob_keys.public)),
        ErrorCode::BadRequest
    );
    alice.invite(&secret, &bob_keys.public).unwrap();
    bob.join(&secret).unwrap();
    alice.send(&secret, "welcome, bob").unwrap();
    assert_eq!(
        texts(&bob.history(&secret, None, None).unwrap()),
        ["welcome, bob"]
    );
}

#[test]
fn a_message_server_admits_only_allowed_group_servers_announcing_their_own_key() {
    let ctx = zmq::Context::new();
    let dir_keys = KeyPair::generate().unwrap();
    let (good, rogue) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let directory = secure_directory(&ctx, &dir_keys, vec![good.public.clone()]);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let setup = |keys: KeyPair, groups: &'static [&'static str]| GroupSetup {
        directory: &directory,
        directory_key: &dir_keys.public,
        keys,
        groups,
        private: &[],
        allow: Vec::new(),
        limits: Limits::default(),
    };
    let _good = secure_group(&ctx, setup(good.clone(), &["general"]), d1.path());
    let refused = secure_group_bound(&ctx, setup(rogue.clone(), &["phishing"]), d2.path())
        .register(Duration::from_secs(2))
        .err()
        .expect("the rogue server is refused")
        .to_string();
    assert!(
        refused.contains("admits only allowed group servers"),
        "{refused}"
    );
    let home = tempfile::tempdir().unwrap();
    let mut alice = fresh_user(&ctx, &directory, &dir_keys.public, "alice", home.path());
    let names: Vec<String> = alice
        .list_groups()
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["general"], "the rogue server is not listed");

    // An allowed server cannot announce someone else's key.
    let mut conn = curve_conn(
        &ctx,
        directory.endpoint(),
        "message server",
        &dir_keys.public,
        &good,
    );
    let lie = Request::Register {
        address: "127.0.0.1:9".into(),
        ttl_ms: 1000,
        groups: vec!["x".into()],
        key: rogue.public,
        replace: false,
    };
    assert!(matches!(
        conn.request(&lie),
        Err(Error::Rejected {
            code: ErrorCode::Unauthorized,
            ..
        })
    ));
}

#[test]
fn keys_are_trusted_on_first_use_and_a_changed_key_is_refused() {
    let ctx = zmq::Context::new();
    let home = tempfile::tempdir().unwrap();
    let first = KeyPair::generate().unwrap();
    let directory = secure_directory(&ctx, &first, Vec::new());
    let endpoint = directory.endpoint().to_string();
    let tofu = |name: &str| {
        session(&ctx, &endpoint, name).with_security(ClientSecurity {
            keys: KeyPair::generate().unwrap(),
            pins: Pins::load(&home.path().join("known_servers")).unwrap(),
            server_key: None,
            trust_on_first_use: true,
        })
    };
    tofu("alice").list_groups().unwrap();
    let pins = std::fs::read_to_string(home.path().join("known_servers")).unwrap();
    assert!(pins.contains(&first.public), "{pins}");

    // The server comes back with another key: an impostor, as far as the client can tell.
    directory.stop().unwrap();
    let second = KeyPair::generate().unwrap();
    let security = DirectorySecurity {
        keys: second,
        allow_servers: Vec::new(),
    };
    let _impostor = rebind(|| DirectoryServer::bind_with(&ctx, &endpoint, Some(security.clone())))
        .spawn(&ctx)
        .unwrap();
    let err = tofu("alice").list_groups().unwrap_err().to_string();
    assert!(
        err.contains("CHANGED") && err.contains("known_servers"),
        "{err}"
    );

    // Refused at once: a client with patient timeouts (100 tries of 5 s) is not made to wait
    // them out before it is told, since the key service names the new key first.
    let (told, refusal) = std::sync::mpsc::channel();
    let patient = Timeouts {
        request: Duration::from_secs(5),
        tries: 100,
    };
    let mut client = Session::new(&ctx, vec![endpoint.clone()], "alice", patient)
        .unwrap()
        .with_security(ClientSecurity {
            keys: KeyPair::generate().unwrap(),
            pins: Pins::load(&home.path().join("known_servers")).unwrap(),
            server_key: None,
            trust_on_first_use: true,
        });
    std::thread::spawn(move || drop(told.send(client.list_groups().map(drop))));
    let err = refusal
        .recv_timeout(Duration::from_secs(30))
        .expect("a changed key is refused without waiting out the retries")
        .unwrap_err()
        .to_string();
    assert!(err.contains("CHANGED"), "{err}");
}

#[test]
fn an_oversized_message_is_refused_and_the_server_goes_on() {
    let w = world(&[], Vec::new());
    let mut alice = w.user("alice", &KeyPair::generate().unwrap());
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    let big = "x".repeat(zms::protocol::MAX_TEXT + 1);
    assert!(alice.send(&general, &big).is_err(), "the client refuses it");
    let mut raw = w.raw_conn();
    raw.request(&Request::Join {
        group: "general".into(),
        user: "bob".into(),
    })
    .unwrap();
    let send = Request::Send {
        group: "general".into(),
        user: "bob".into(),
        client_id: String::new(),
        text: big,
    };
    assert!(matches!(
        raw.request(&send),
        Err(Error::Rejected {
            code: ErrorCode::TooLarge,
            ..
        })
    ));
    assert_eq!(alice.send(&general, "still serving").unwrap().0, 1);
}

#[test]
fn a_flooder_is_throttled_while_others_send_freely() {
    const RATE: u32 = 20;
    let limits = Limits {
        rate: Some(RATE),
        max_members: 2,
        ..Default::default()
    };
    let w = world_with(&["general"], &[], Vec::new(), limits);
    let mut alice = w.user("alice", &KeyPair::generate().unwrap());
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();

    // The flooder speaks the protocol directly, ignoring LIMITED, as fast as it can.
    let mut flooder = w.raw_conn();
    flooder
        .request(&Request::Join {
            group: "general".into(),
            user: "flooder".into(),
        })
        .unwrap();
    let started = std::time::Instant::now();
    let (mut stored, mut limited) = (0u32, 0u32);
    for i in 0..300 {
        let send = Request::Send {
            group: "general".into(),
            user: "flooder".into(),
            client_id: String::new(),
            text: format!("spam {i}"),
        };
        match flooder.request(&send) {
            Ok(_) => stored += 1,
            Err(Error::Rejected {
                code: ErrorCode::Limited,
                ..
            }) => limited += 1,
            Err(other) => panic!("{other}"),
        }
        if i % 15 == 0 {
            alice.send(&general, &format!("alice {i}")).unwrap();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ceiling = f64::from(2 * RATE) + f64::from(RATE) * elapsed + 1.0;
    assert!(
        limited > 0 && f64::from(stored) <= ceiling,
        "flooder stored {stored} in {elapsed:.2}s, {limited} refused"
    );
    let history = alice.history(&general, None, None).unwrap();
    assert_eq!(
        texts(&history)
            .iter()
            .filter(|t| t.starts_with("alice"))
            .count(),
        20,
        "alice never waited or failed"
    );

    // A batch over the burst is refused whole; the session then sends its messages one at a
    // time, waiting out the rate, and all of them are stored in order.
    let batch: Vec<String> = (0..3 * RATE).map(|i| format!("batch {i}")).collect();
    let stored = alice.send_many(&general, &batch).unwrap();
    assert_eq!(stored.len(), batch.len());
    let history = alice.history(&general, None, None).unwrap();
    let tail: Vec<String> = texts(&history)
        .into_iter()
        .filter(|t| t.starts_with("batch"))
        .collect();
    assert_eq!(tail, batch);

    // The group holds at most two members.
    let mut third = w.user("carol", &KeyPair::generate().unwrap());
    assert_eq!(code(third.join(&general)), ErrorCode::Limited);
}

/// A secure message server at `endpoint` keeping its bindings in `owners`.
fn secure_directory_at(
    ctx: &zmq::Context,
    keys: &KeyPair,
    endpoint: &str,
    owners: impl Fn() -> Owners,
    operators: Vec<String>,
) -> ServerHandle {
    let security = DirectorySecurity {
        keys: keys.clone(),
        allow_servers: Vec::new(),
    };
    rebind(|| DirectoryServer::bind_with(ctx, endpoint, Some(security.clone())))
        .with_operators(operators.clone())
        .with_owners(owners())
        .spawn(ctx)
        .unwrap()
}

/// A CURVE connection to the message server holding `keys`, to speak as a rogue group server.
fn rogue(ctx: &zmq::Context, directory: &str, dir_key: &str, keys: &KeyPair) -> Conn {
    curve_conn(ctx, directory, "message server", dir_key, keys)
}

fn register(address: &str, groups: &[&str], keys: &KeyPair) -> Request {
    Request::Register {
        address: address.into(),
        ttl_ms: 60_000,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        key: keys.public.clone(),
        replace: false,
    }
}

/// The same registration, asking to take the names over from their owner.
fn register_replacing(address: &str, groups: &[&str], keys: &KeyPair) -> Request {
    let mut request = register(address, groups, keys);
    if let Request::Register { replace, .. } = &mut request {
        *replace = true;
    }
    request
}

#[test]
fn names_and_addresses_stay_with_their_first_key_across_a_message_server_restart() {
    let ctx = zmq::Context::new();
    let dir_keys = KeyPair::generate().unwrap();
    let state = tempfile::tempdir().unwrap();
    let owners = || Owners::open(state.path()).unwrap();
    let directory = secure_directory_at(&ctx, &dir_keys, "tcp://127.0.0.1:*", owners, vec![]);
    let endpoint = directory.endpoint().to_string();
    let data = tempfile::tempdir().unwrap();
    let good_keys = KeyPair::generate().unwrap();
    let setup = GroupSetup {
        directory: &directory,
        directory_key: &dir_keys.public,
        keys: good_keys.clone(),
        groups: &["general"],
        private: &[],
        allow: Vec::new(),
        limits: Limits::default(),
    };
    let good = secure_group(&ctx, setup, data.path());
    let good_address = good.address();

    // The message server restarts; before the real server's next heartbeat, a rogue key
    // tries its address and its group name.
    directory.stop().unwrap();
    let directory = secure_directory_at(&ctx, &dir_keys, &endpoint, owners, vec![]);
    let evil = KeyPair::generate().unwrap();
    let mut conn = rogue(&ctx, &endpoint, &dir_keys.public, &evil);
    for (address, groups) in [
        (good_address.as_str(), &["phishing"][..]),
        ("127.0.0.1:9", &["general"][..]),
    ] {
        match conn.request(&register(address, groups, &evil)) {
            Err(Error::Rejected {
                code: ErrorCode::Unauthorized,
                reason,
            }) => assert!(
                reason.contains("belongs to another group server"),
                "{reason}"
            ),
            other => panic!("a rogue registration was not refused: {other:?}"),
        }
    }
    // A rogue --replace needs an operator key.
    let replace = register_replacing("127.0.0.1:9", &["general"], &evil);
    assert_eq!(code(conn.request(&replace)), ErrorCode::Unauthorized);

    // Meanwhile the real server is listed again and serves its users.
    let home = tempfile::tempdir().unwrap();
    let mut alice = fresh_user(&ctx, &directory, &dir_keys.public, "alice", home.path());
    assert!(eventually(Duration::from_secs(20), || {
        alice
            .list_groups()
            .unwrap()
            .iter()
            .map(|g| (g.name.clone(), g.address.clone(), g.key.clone()))
            .collect::<Vec<_>>()
            == [(
                "general".to_string(),
                good_address.clone(),
                good_keys.public.clone(),
            )]
    }));
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    assert_eq!(alice.send(&general, "still ours").unwrap().0, 1);

    // An operator key may move the name: the operator's group server takes it over.
    directory.stop().unwrap();
    let operator = KeyPair::generate().unwrap();
    let directory = secure_directory_at(
        &ctx,
        &dir_keys,
        &endpoint,
        owners,
        vec![operator.public.clone()],
    );
    let mut conn = rogue(&ctx, &endpoint, &dir_keys.public, &operator);
    let moved = register_replacing("127.0.0.1:9", &["general"], &operator);
    conn.request(&moved).unwrap();
    let mut bob = fresh_user(&ctx, &directory, &dir_keys.public, "bob", home.path());
    assert!(eventually(Duration::from_secs(20), || {
        let list = bob.list_groups().unwrap();
        list.len() == 1 && list[0].address == "127.0.0.1:9"
    }));
}

#[test]
fn one_key_cannot_fill_the_directory_and_owners_are_never_refused_for_room() {
    let ctx = zmq::Context::new();
    let dir_keys = KeyPair::generate().unwrap();
    let security = DirectorySecurity {
        keys: dir_keys.clone(),
        allow_servers: Vec::new(),
    };
    // Small caps, the same code paths: 5 names per key, 12 names in all.
    let directory =
        rebind(|| DirectoryServer::bind_with(&ctx, "tcp://127.0.0.1:*", Some(security.clone())))
            .with_owners(Owners::in_memory().with_per_key(5, 2))
            .with_max_groups(12)
            .spawn(&ctx)
            .unwrap();
    let data = tempfile::tempdir().unwrap();
    let setup = GroupSetup {
        directory: &directory,
        directory_key: &dir_keys.public,
        keys: KeyPair::generate().unwrap(),
        groups: &["general"],
        private: &[],
        allow: Vec::new(),
        limits: Limits::default(),
    };
    let _good = secure_group(&ctx, setup, data.path());

    let evil = KeyPair::generate().unwrap();
    let mut conn = rogue(&ctx, directory.endpoint(), &dir_keys.public, &evil);
    let names: Vec<String> = (0..6).map(|i| format!("spam{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    match conn.request(&register("127.0.0.1:9", &names, &evil)) {
        Err(Error::Rejected {
            code: ErrorCode::Limited,
            reason,
        }) => assert!(reason.contains("at most 5 group names"), "{reason}"),
        other => panic!("one key filled past its cap: {other:?}"),
    }
    conn.request(&register("127.0.0.1:9", &names[..5], &evil))
        .unwrap();
    assert_eq!(
        code(conn.request(&register("127.0.0.1:10", &["more"], &evil))),
        ErrorCode::Limited,
        "a second address adds no names past the key's cap"
    );
    // Many keys can still fill the table (the answer to that is --allow-server), but the
    // real server's name is bound to it, so its heartbeats are never refused.
    for k in 0..2 {
        let sybil = KeyPair::generate().unwrap();
        let mut conn = rogue(&ctx, directory.endpoint(), &dir_keys.public, &sybil);
        let names: Vec<String> = (0..5).map(|i| format!("sybil{k}-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = conn.request(&register(&format!("127.0.0.1:{}", 20 + k), &names, &sybil));
    }
    let home = tempfile::tempdir().unwrap();
    let mut alice = fresh_user(&ctx, &directory, &dir_keys.public, "alice", home.path());
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    alice.send(&general, "still listed").unwrap();
}

#[test]
fn a_flood_of_the_key_service_is_answered_in_bounded_turns() {
    use zms::transport::{self, KEY_SERVICE_BATCH};
    let ctx = zmq::Context::new();
    let keys = KeyPair::generate().unwrap();
    let (_router, endpoint, service) =
        transport::bind_server(&ctx, "tcp://127.0.0.1:*", 1024, Some(&keys)).unwrap();
    let service = service.unwrap();
    let flood = raw_dealer(&ctx, &transport::key_service(&endpoint).unwrap());
    const FLOOD: usize = 20 * KEY_SERVICE_BATCH;
    for i in 0..FLOOD {
        flood
            .send(codec::encode_request(i as u32, &Request::Key), 0)
            .unwrap();
    }
    // However much is queued, one turn answers at most a batch, so the server's own socket
    // is polled again soon; every request is answered in the end.
    let (mut answered, mut largest) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while answered < FLOOD && std::time::Instant::now() < deadline {
        let mut items = [service.socket().as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, 100).unwrap();
        let turn = service.serve();
        largest = largest.max(turn);
        answered += turn;
    }
    assert_eq!(answered, FLOOD);
    assert!(largest <= KEY_SERVICE_BATCH, "one turn answered {largest}");
    for _ in 0..FLOOD {
        flood.recv_bytes(0).unwrap();
    }
}

#[test]
fn a_flood_of_a_group_servers_key_service_leaves_its_users_served() {
    let w = world(&[], Vec::new());
    let flood = raw_dealer(
        &w.ctx,
        &zms::transport::key_service(w.group.endpoint()).unwrap(),
    );
    flood.set_sndhwm(0).unwrap();
    let mut alice = w.user("alice", &KeyPair::generate().unwrap());
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    for i in 0..20u64 {
        for _ in 0..500 {
            let _ = flood.send(codec::encode_request(1, &Request::Key), zmq::DONTWAIT);
        }
        assert_eq!(alice.send(&general, &format!("m{i}")).unwrap().0, i + 1);
    }
}

#[test]
fn one_key_cannot_fill_a_groups_member_cap() {
    let limits = Limits {
        max_members: 3,
        max_names_per_key: 2,
        ..Default::default()
    };
    let w = world_with(&["general"], &[], Vec::new(), limits);
    let mut squatter = w.raw_conn();
    let join = |user: &str| Request::Join {
        group: "general".into(),
        user: user.into(),
    };
    squatter.request(&join("s1")).unwrap();
    squatter.request(&join("s2")).unwrap();
    match squatter.request(&join("s3")) {
        Err(Error::Rejected {
            code: ErrorCode::Limited,
            reason,
        }) => assert!(reason.contains("at most 2 names"), "{reason}"),
        other => panic!("one key took a third name: {other:?}"),
    }
    let mut alice = w.user("alice", &KeyPair::generate().unwrap());
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    assert_eq!(alice.send(&general, "there was room").unwrap().0, 1);
}

#[test]
fn only_an_operator_key_kicks_even_from_the_servers_host() {
    let ctx = zmq::Context::new();
    let dir_keys = KeyPair::generate().unwrap();
    let directory = secure_directory(&ctx, &dir_keys, Vec::new());
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let operator_keys = KeyPair::generate().unwrap();
    let setup = GroupSetup {
        directory: &directory,
        directory_key: &dir_keys.public,
        keys: KeyPair::generate().unwrap(),
        groups: &["general"],
        private: &[],
        allow: Vec::new(),
        limits: Limits::default(),
    };
    let _group = secure_group_bound(&ctx, setup, data.path())
        .with_operators(vec![operator_keys.public.clone()])
        .register(Duration::from_secs(2))
        .unwrap()
        .spawn(&ctx)
        .unwrap();
    let as_user = |name: &str, keys: &KeyPair| {
        user(&ctx, &directory, &dir_keys.public, name, keys, home.path())
    };
    let mut bob = as_user("bob", &KeyPair::generate().unwrap());
    let mut mallory = as_user("mallory", &KeyPair::generate().unwrap());
    let mut operator = as_user("root", &operator_keys);
    let general = bob.resolve("general").unwrap();
    bob.join(&general).unwrap();
    mallory.join(&general).unwrap();

    // Loopback is no credential with security; membership is none either.
    assert_eq!(
        code(mallory.remove(&general, "bob", false)),
        ErrorCode::Unauthorized
    );
    assert_eq!(bob.send(&general, "still here").unwrap().0, 1);
    operator.remove(&general, "bob", false).unwrap();
    assert_eq!(code(bob.send(&general, "gone")), ErrorCode::NotMember);
    let members = mallory.members(&general).unwrap();
    assert!(members.iter().all(|m| m.name != "bob"), "{members:?}");
}

#[test]
fn only_an_operator_key_creates_groups_and_sets_them_private_or_public() {
    let ctx = zmq::Context::new();
    let dir_keys = KeyPair::generate().unwrap();
    let directory = secure_directory(&ctx, &dir_keys, Vec::new());
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let operator_keys = KeyPair::generate().unwrap();
    let setup = GroupSetup {
        directory: &directory,
        directory_key: &dir_keys.public,
        keys: KeyPair::generate().unwrap(),
        groups: &["general"],
        private: &[],
        allow: Vec::new(),
        limits: Limits::default(),
    };
    let _group = secure_group_bound(&ctx, setup, data.path())
        .with_operators(vec![operator_keys.public.clone()])
        .register(Duration::from_secs(2))
        .unwrap()
        .spawn(&ctx)
        .unwrap();
    let as_user = |name: &str, keys: &KeyPair| {
        user(&ctx, &directory, &dir_keys.public, name, keys, home.path())
    };
    let mut bob = as_user("bob", &KeyPair::generate().unwrap());
    let mut mallory = as_user("mallory", &KeyPair::generate().unwrap());
    let mut operator = as_user("root", &operator_keys);
    let general = bob.resolve("general").unwrap();
    bob.join(&general).unwrap();
    let set = |private: bool| Request::Set {
        group: "general".into(),
        private,
    };
    assert_eq!(
        code(mallory.administer(&general, &set(true))),
        ErrorCode::Unauthorized
    );
    operator.administer(&general, &set(true)).unwrap();
    // Private now: a member stays one, a stranger's key is refused.
    assert_eq!(bob.send(&general, "still in").unwrap().0, 1);
    assert_eq!(code(mallory.join(&general)), ErrorCode::Unauthorized);
    // An operator key reads (exports) history without joining; a stranger's does not.
    let read = operator.history(&general, None, None).unwrap();
    assert_eq!(texts(&read), ["still in"]);
    assert_eq!(
        code(mallory.history(&general, None, None)),
        ErrorCode::NotMember
    );
    operator.administer(&general, &set(false)).unwrap();
    mallory.join(&general).unwrap();

    let team = zms::client::GroupRef {
        name: "team".into(),
        address: general.address.clone(),
    };
    let create = Request::Create {
        group: "team".into(),
        private: true,
    };
    assert_eq!(
        code(mallory.administer(&team, &create)),
        ErrorCode::Unauthorized
    );
    operator.administer(&team, &create).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || bob
            .list_groups()
            .is_ok_and(|groups| groups.iter().any(|g| g.name == "team"))),
        "team is listed"
    );
    assert_eq!(code(bob.join(&team)), ErrorCode::Unauthorized);
}

#[test]
fn a_conversation_is_read_only_by_the_keys_of_its_two_names() {
    let w = world(&[], Vec::new());
    let (alice_keys, bob_keys) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let mut alice = w.user("alice", &alice_keys);
    let with_bob = alice.conversation("bob").unwrap();
    alice.send(&with_bob, "for bob only").unwrap();
    let mut bob = w.user("bob", &bob_keys);
    assert_eq!(bob.conversation("alice").unwrap(), with_bob);
    assert_eq!(
        texts(&bob.history(&with_bob, None, None).unwrap()),
        ["for bob only"]
    );
    // Bob's name is his key's now: another key cannot read as bob, nor as alice.
    for name in ["bob", "alice"] {
        let mut mallory = w.user(name, &KeyPair::generate().unwrap());
        assert_eq!(
            code(mallory.history(&with_bob, None, None)),
            ErrorCode::Unauthorized
        );
    }
    let mut mallory = w.user("mallory", &KeyPair::generate().unwrap());
    assert_eq!(code(mallory.join(&with_bob)), ErrorCode::Unauthorized);
}
