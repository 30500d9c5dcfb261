//! Security, tried as an attacker would: plaintext peers, wrong keys, stolen names, private
//! groups, rogue group servers, replaced server keys.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use zms::client::{ClientSecurity, Session};
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
        .register(Duration::from_secs(2))
        .unwrap()
        .spawn(ctx)
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
    let ctx = zmq::Context::new();
    let dir_keys = KeyPair::generate().unwrap();
    let directory = secure_directory(&ctx, &dir_keys, Vec::new());
    let data = tempfile::tempdir().unwrap();
    let group_keys = KeyPair::generate().unwrap();
    let setup = GroupSetup {
        directory: &directory,
        directory_key: &dir_keys.public,
        keys: group_keys.clone(),
        groups: &["general", "secret"],
        private,
        allow,
        limits: Limits::default(),
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
    let mut eve = user(
        &w.ctx,
        &w.directory,
        &wrong,
        "eve",
        &KeyPair::generate().unwrap(),
        w.home.path(),
    );
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
    let _rogue = secure_group(&ctx, setup(rogue.clone(), &["phishing"]), d2.path());
    let home = tempfile::tempdir().unwrap();
    let mut alice = user(
        &ctx,
        &directory,
        &dir_keys.public,
        "alice",
        &KeyPair::generate().unwrap(),
        home.path(),
    );
    let names: Vec<String> = alice
        .list_groups()
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["general"], "the rogue server is not listed");

    // An allowed server cannot announce someone else's key.
    let mut conn = zms::client::Conn::connect_with(
        &ctx,
        directory.endpoint(),
        "message server",
        TIMEOUTS,
        Some(zms::client::Curve {
            keys: good,
            server_key: dir_keys.public.clone(),
        }),
    )
    .unwrap();
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
}

#[test]
fn an_oversized_message_is_refused_and_the_server_goes_on() {
    let w = world(&[], Vec::new());
    let mut alice = w.user("alice", &KeyPair::generate().unwrap());
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();
    let big = "x".repeat(zms::protocol::MAX_TEXT + 1);
    assert!(alice.send(&general, &big).is_err(), "the client refuses it");
    let mut raw = zms::client::Conn::connect_with(
        &w.ctx,
        w.group.endpoint(),
        "group server",
        TIMEOUTS,
        Some(zms::client::Curve {
            keys: KeyPair::generate().unwrap(),
            server_key: w.group_keys.public.clone(),
        }),
    )
    .unwrap();
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
    let ctx = zmq::Context::new();
    let dir_keys = KeyPair::generate().unwrap();
    let directory = secure_directory(&ctx, &dir_keys, Vec::new());
    let data = tempfile::tempdir().unwrap();
    let group_keys = KeyPair::generate().unwrap();
    let setup = GroupSetup {
        directory: &directory,
        directory_key: &dir_keys.public,
        keys: group_keys.clone(),
        groups: &["general"],
        private: &[],
        allow: Vec::new(),
        limits: Limits {
            rate: Some(RATE),
            max_members: 2,
            ..Default::default()
        },
    };
    let group = secure_group(&ctx, setup, data.path());
    let home = tempfile::tempdir().unwrap();
    let mut alice = user(
        &ctx,
        &directory,
        &dir_keys.public,
        "alice",
        &KeyPair::generate().unwrap(),
        home.path(),
    );
    let general = alice.resolve("general").unwrap();
    alice.join(&general).unwrap();

    // The flooder speaks the protocol directly, ignoring LIMITED, as fast as it can.
    let mut flooder = zms::client::Conn::connect_with(
        &ctx,
        group.endpoint(),
        "group server",
        TIMEOUTS,
        Some(zms::client::Curve {
            keys: KeyPair::generate().unwrap(),
            server_key: group_keys.public.clone(),
        }),
    )
    .unwrap();
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
    let mut third = user(
        &ctx,
        &directory,
        &dir_keys.public,
        "carol",
        &KeyPair::generate().unwrap(),
        home.path(),
    );
    assert_eq!(code(third.join(&general)), ErrorCode::Limited);
}
