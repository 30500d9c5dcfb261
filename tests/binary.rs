//! The real `zms` binary: servers as child processes, one-shot commands, the scripted client.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{deploy, start_group, Proc, RogueGroup, ZMS};

fn zms(args: &[&str]) -> Output {
    zms_at(home(), args)
}

/// The config directory of these tests' users (pins, kept sends), not the real one.
fn home() -> &'static Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// `zms ARGS` with `home` as its config directory.
fn zms_at(home: &Path, args: &[&str]) -> Output {
    Command::new(ZMS)
        .args(args)
        .env("ZMS_HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("zms runs")
}

/// alice joins general at `server` and sends `text`, each command succeeding.
fn alice_says(server: &str, text: &str) {
    stdout(&zms(&[
        "join", "general", "--server", server, "--name", "alice",
    ]));
    stdout(&zms(&[
        "send", "general", text, "--server", server, "--name", "alice",
    ]));
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn one_shot_commands_work_end_to_end_with_json() {
    let d = deploy();
    let s = d.server.as_str();
    let groups = json_lines(&zms(&["list", "--server", s, "--json"]));
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["name"], "general");
    assert_eq!(groups[0]["address"], d.group_address.as_str());

    stdout(&zms(&["join", "general", "--server", s, "--name", "alice"]));
    let by_address = format!("random@{}", d.group_address);
    stdout(&zms(&[
        "join",
        &by_address,
        "--server",
        s,
        "--name",
        "alice",
    ]));
    let sent = json_lines(&zms(&[
        "send",
        "general",
        "hello, world",
        "--server",
        s,
        "--name",
        "alice",
        "--json",
    ]));
    assert_eq!(sent[0]["seq"], 1);

    let history = json_lines(&zms(&[
        "history", "general", "--server", s, "--name", "alice", "--json",
    ]));
    assert_eq!(history.len(), 1);
    let m = &history[0];
    assert_eq!(
        (m["group"].as_str(), m["seq"].as_u64(), m["sender"].as_str()),
        (Some("general"), Some(1), Some("alice"))
    );
    assert_eq!(m["text"], "hello, world");
    let ts = m["ts"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
        "RFC 3339 with ms: {ts}"
    );
    assert_eq!(
        stdout(&zms(&[
            "history", "general", "--server", s, "--name", "alice", "--since", "10m"
        ]))
        .lines()
        .count(),
        1
    );
    assert_eq!(
        stdout(&zms(&[
            "history",
            "general",
            "--server",
            s,
            "--name",
            "alice",
            "--since",
            "2999-01-01T00:00:00Z"
        ])),
        ""
    );

    let members = json_lines(&zms(&[
        "members", "general", "--server", s, "--name", "alice", "--json",
    ]));
    assert_eq!(members[0]["name"], "alice");
    assert!(stdout(&zms(&[
        "leave", "general", "--server", s, "--name", "alice"
    ]))
    .contains("left general@"));

    // Mistakes: one clear line on stderr, non-zero exit.
    for (args, expect) in [
        (
            vec!["send", "general", "x", "--name", "alice"],
            "not a member",
        ),
        (
            vec!["join", "nope", "--name", "alice"],
            "unknown group 'nope'",
        ),
        (
            vec!["history", "random", "--name", "alice", "--since", "soon"],
            "bad TIME",
        ),
        (vec!["join", "general"], "--name is required"),
        (
            vec!["join", "general", "--name", "bad name"],
            "may not hold spaces",
        ),
    ] {
        let mut args = args;
        args.extend(["--server", s]);
        let out = zms(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(expect),
            "{args:?}: {err}"
        );
    }
    drop(d._directory);
}

#[test]
fn tail_follows_live_messages() {
    let d = deploy();
    let s = d.server.as_str();
    stdout(&zms(&["join", "general", "--server", s, "--name", "bob"]));
    stdout(&zms(&["join", "general", "--server", s, "--name", "alice"]));
    let tail = Proc::spawn(&["tail", "general", "--server", s, "--name", "bob", "--json"]);
    // Send until the tail has subscribed and shows one; then everything after is in order.
    let mut first = None;
    for i in 0..50 {
        stdout(&zms(&[
            "send",
            "general",
            &format!("m{i}"),
            "--server",
            s,
            "--name",
            "alice",
        ]));
        if let Ok(line) = tail.lines.recv_timeout(Duration::from_millis(200)) {
            first = Some(line);
            break;
        }
    }
    let first: serde_json::Value =
        serde_json::from_str(&first.expect("tail printed a message")).unwrap();
    let next_seq = first["seq"].as_u64().unwrap() + 1;
    stdout(&zms(&[
        "send", "general", "after", "--server", s, "--name", "alice",
    ]));
    let mut line: serde_json::Value = serde_json::from_str(&tail.line()).unwrap();
    while line["text"] != "after" {
        line = serde_json::from_str(&tail.line()).unwrap();
    }
    assert!(line["seq"].as_u64().unwrap() >= next_seq);
    drop(d.group);
}

/// `zms send general` by `name` with no text, so it sends the lines written to its stdin.
fn piped_send(server: &str, name: &str) -> std::process::Child {
    Command::new(ZMS)
        .args(["send", "general", "--server", server, "--name", name])
        .env("ZMS_HOME", home())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_sigkilled_group_server_restarts_with_every_acknowledged_message() {
    let mut d = deploy();
    let s = d.server.clone();
    stdout(&zms(&[
        "join", "general", "--server", &s, "--name", "alice",
    ]));
    // More lines than one SENDS holds.
    let lines: String = (1..=600).map(|i| format!("line {i}\n")).collect();
    let mut send = piped_send(&s, "alice");
    send.stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let acked = stdout(&send.wait_with_output().unwrap()).lines().count();
    assert_eq!(acked, 600);

    d.group.signal("-KILL");
    d.group.wait();
    let restarted = start_group(&s, &d.group_address, d.data.path());
    assert_eq!(restarted.listening(), d.group_address);
    let history = stdout(&zms(&[
        "history", "general", "--server", &s, "--name", "alice",
    ]));
    let texts: Vec<&str> = history
        .lines()
        .map(|l| l.split_once(": ").unwrap().1)
        .collect();
    assert_eq!(
        texts,
        (1..=600).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
}

#[test]
fn a_piped_line_is_sent_as_soon_as_the_input_pauses_after_it() {
    let d = deploy();
    let s = d.server.clone();
    stdout(&zms(&[
        "join", "general", "--server", &s, "--name", "alice",
    ]));
    let mut send = piped_send(&s, "alice");
    let mut input = send.stdin.take().unwrap();
    let output = BufReader::new(send.stdout.take().unwrap());
    let (tx, sent) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in output.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // A live stream: each line is acknowledged before the next is written.
    for i in 1..=3 {
        input.write_all(format!("live {i}\n").as_bytes()).unwrap();
        input.flush().unwrap();
        let line = sent
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("line {i} was not sent while the input stayed open"));
        assert!(line.contains(&format!(" #{i} at ")), "{line}");
    }
    drop(input);
    assert!(send.wait().unwrap().success());
}

#[test]
fn the_scripted_user_client_joins_sends_and_reads() {
    let d = deploy();
    let mut user = Command::new(ZMS)
        .args(["user", "--server", &d.server, "--name", "carol"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script =
        "/list\n/join general\nhello from a script\n/frobnicate\n/history\n/who\n/leave\n/quit\n";
    user.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = user.wait_with_output().unwrap();
    let text = stdout(&out);
    for expect in [
        "connected to",
        "general",
        "joined general@",
        "unknown command /frobnicate",
        "#1 carol: hello from a script",
        "carol (online)",
        "left general@",
    ] {
        assert!(text.contains(expect), "missing {expect:?} in:\n{text}");
    }
}

/// `zms up` on free ports with its data in `data`, once it says it is up; and the message
/// server's address it prints.
fn up(data: &tempfile::TempDir, extra: &[&str]) -> (Proc, String) {
    let data = data.path().to_str().unwrap();
    let mut args = vec!["up"];
    args.extend_from_slice(extra);
    args.extend([
        "--bind",
        "127.0.0.1:0",
        "--group-bind",
        "127.0.0.1:0",
        "--data",
        data,
    ]);
    let up = Proc::spawn(&args);
    while !up.line().contains("zms is up") {}
    let server = up.line();
    assert!(server.contains("message server"), "{server}");
    let server = server.split_whitespace().last().unwrap().to_string();
    (up, server)
}

#[test]
fn up_runs_a_deployment_and_ctrl_c_stops_it() {
    let data = tempfile::tempdir().unwrap();
    let (mut up, server) = up(&data, &[]);
    let list = stdout(&zms(&["list", "--server", &server]));
    assert!(
        list.contains("general") && list.contains("random"),
        "{list}"
    );
    up.signal("-INT");
    assert_eq!(up.wait(), Some(0));
}

#[test]
fn a_busy_data_directory_and_a_bad_address_are_refused_clearly() {
    let d = deploy();
    let second = zms(&[
        "group-server",
        "--server",
        &d.server,
        "--bind",
        "127.0.0.1:0",
        "--data",
        d.data.path().to_str().unwrap(),
    ]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another group server"));
    let bad = zms(&["message-server", "--bind", "nonsense"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be HOST:PORT"));
}

#[test]
fn a_secure_deployment_works_unchanged_once_the_key_is_pinned() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (mut up, server) = up(&data, &["--secure"]);
    let as_user = |args: &[&str]| zms_at(home.path(), &[args, &["--server", &server]].concat());
    let plain = as_user(&["list"]);
    assert!(!plain.status.success(), "plaintext gets nothing");
    assert!(String::from_utf8_lossy(&plain.stderr).contains("--secure"));
    assert!(
        stdout(&as_user(&["list", "--secure"])).contains("general"),
        "first use pins the key"
    );
    // From now on the pin is enough: the same commands as without security.
    stdout(&as_user(&["join", "general", "--name", "alice"]));
    stdout(&as_user(&[
        "send",
        "general",
        "encrypted",
        "--name",
        "alice",
    ]));
    assert!(
        stdout(&as_user(&["history", "general", "--name", "alice"])).contains("alice: encrypted")
    );
    let pins = std::fs::read_to_string(home.path().join("known_servers")).unwrap();
    assert!(pins.contains(&server), "{pins}");
    up.signal("-INT");
    assert_eq!(up.wait(), Some(0));
}

#[test]
fn a_send_to_a_frozen_server_is_kept_and_sent_again_once_never_twice() {
    let d = deploy();
    let s = d.server.clone();
    let home = tempfile::tempdir().unwrap();
    let as_alice = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &s, "--name", "alice"]);
        zms_at(home.path(), &all)
    };
    let history = || -> Vec<String> {
        stdout(&as_alice(&["history", "general"]))
            .lines()
            .map(|l| l.split_once(": ").unwrap().1.to_string())
            .collect()
    };
    stdout(&as_alice(&["join", "general"]));
    let mut send = Command::new(ZMS)
        .args(["send", "general", "--server", &s, "--name", "alice"])
        .env("ZMS_HOME", home.path())
        // As when run from a shell, its hints naming it `…/zms`, not `cargo run --`.
        .env_remove("CARGO")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = send.stdin.take().unwrap();
    let mut output = BufReader::new(send.stdout.take().unwrap());
    input.write_all(b"before\n").unwrap();
    input.flush().unwrap();
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    assert!(line.contains(" #1 at "), "{line}");
    // Frozen for longer than the client waits (3 tries of 2 s): the line reaches the server
    // on the open connection, and no answer comes back.
    d.group.freeze();
    input.write_all(b"while frozen\n").unwrap();
    drop(input);
    let mut err = String::new();
    send.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = send.wait().unwrap();
    let mut rest = String::new();
    output.read_to_string(&mut rest).unwrap();
    assert!(!status.success(), "{status}: {err} / {rest}");
    d.group.signal("-CONT");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("error: no answer")
            && err.contains("unknown")
            && err.contains("zms send general --name alice"),
        "{err}"
    );
    // Resumed, the server stores it: the send failed, yet the line is there.
    assert!(
        common::eventually(Duration::from_secs(30), || history().len() == 2),
        "the frozen line was stored once the server resumed"
    );
    // Doing as the error says: the next send sends the kept line again first, under its id.
    let next = stdout(&as_alice(&["send", "general", "after"]));
    assert_eq!(next.lines().count(), 2, "{next}");
    assert!(
        next.lines().next().unwrap().contains("#2 at") && next.contains("kept from an earlier try"),
        "{next}"
    );
    assert_eq!(history(), ["before", "while frozen", "after"]);

    // By hand: a message sent under one id twice is stored once.
    for _ in 0..2 {
        let out = stdout(&as_alice(&["send", "general", "by hand", "--id", "my-1"]));
        assert!(out.contains("#4 at"), "{out}");
    }
    assert_eq!(history().len(), 4);
    let kept = home.path().join("unconfirmed").join("alice");
    assert_eq!(std::fs::read_dir(&kept).unwrap().count(), 0, "all answered");

    // A refused send was not stored, so it is not kept either.
    let as_bob = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &s, "--name", "bob"]);
        zms_at(home.path(), &all)
    };
    assert!(!as_bob(&["send", "general", "not a member yet"])
        .status
        .success());
    stdout(&as_bob(&["join", "general"]));
    stdout(&as_bob(&["send", "general", "now a member"]));
    assert_eq!(history().len(), 5);
    assert!(!history().contains(&"not a member yet".to_string()));
}

#[test]
fn a_user_name_cannot_write_a_key_outside_the_keys_directory() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("a").join("b");
    std::fs::create_dir_all(&config).unwrap();
    let out = zms_at(&config, &["whoami", "--name", "../../escaped"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.starts_with("error: ") && err.contains("'/'"), "{err}");
    let mut files = Vec::new();
    let mut dirs = vec![home.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert_eq!(files, Vec::<std::path::PathBuf>::new(), "no file written");
    assert!(stdout(&zms_at(&config, &["whoami", "--name", "alice"])).len() > 40);
}

#[test]
fn servers_bind_and_register_by_host_name() {
    let directory = Proc::spawn(&["message-server", "--bind", "localhost:0"]);
    let server = directory.listening();
    let port = server
        .strip_prefix("127.0.0.1:")
        .expect("localhost resolved");
    let data = tempfile::tempdir().unwrap();
    let group = start_group(&format!("localhost:{port}"), "localhost:0", data.path());
    let address = group.listening();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let listed = stdout(&zms(&["list", "--server", &format!("localhost:{port}")]));
    assert!(listed.contains(&address), "{listed}");
}

/// A group server killed and started again at another address (port 0 picks a new one) is
/// not refused for its own groups: its old entry expires within a registration's TTL, and
/// until then it asks again rather than stop.
#[test]
fn a_group_server_killed_and_restarted_at_another_address_takes_its_groups_back() {
    let mut d = deploy();
    d.group.signal("-KILL");
    d.group.wait();
    let again = start_group(&d.server, "127.0.0.1:0", d.data.path());
    let address = again.listening();
    assert_ne!(address, d.group_address, "port 0 gave another port");
    let listed = stdout(&zms(&["list", "--server", &d.server]));
    assert!(listed.contains(&address), "{listed}");
    assert!(!listed.contains(&d.group_address), "{listed}");
}

#[test]
fn a_second_group_server_for_a_held_name_stops_with_the_reason() {
    let d = deploy();
    let data = tempfile::tempdir().unwrap();
    let args = [
        "group-server",
        "--server",
        &d.server,
        "--bind",
        "127.0.0.1:0",
        "--group",
        "general",
        "--data",
        data.path().to_str().unwrap(),
    ];
    // Bounded: a server that wrongly went on serving would never exit on its own.
    let mut child = Command::new(ZMS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the second group server did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = child.wait_with_output().unwrap();
    assert!(!second.status.success());
    assert!(!String::from_utf8_lossy(&second.stdout).contains("listening on"));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!(
            "group 'general' is already hosted by the group server at {}",
            d.group_address
        )),
        "{err}"
    );
    stdout(&zms(&[
        "join", "general", "--server", &d.server, "--name", "alice",
    ]));
    let sent = stdout(&zms(&[
        "send",
        "general",
        "still here",
        "--server",
        &d.server,
        "--name",
        "alice",
    ]));
    assert!(
        sent.contains(&format!("general@{}", d.group_address)),
        "{sent}"
    );

    // With --replace it takes the name over and says so once listed.
    let replacing = Proc::spawn(&[&args[..], &["--replace"]].concat());
    let address = replacing.listening();
    let listed = stdout(&zms(&["list", "--server", &d.server]));
    assert!(
        listed.contains("general") && listed.contains(&address),
        "{listed}"
    );
}

#[test]
fn trusted_keys_are_told_listed_forgotten_and_replaced() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (mut up, server) = up(&data, &["--secure"]);
    let as_user = |args: &[&str]| {
        Command::new(ZMS)
            .args(args)
            .env("ZMS_HOME", home.path())
            .env_remove("ZMS_SERVER_KEY")
            .env_remove("ZMS_SECURE")
            // As when run from a shell, its hints naming it `…/zms`, not `cargo run --`.
            .env_remove("CARGO")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let pins = home.path().join("known_servers");

    // First use: one line says which key was trusted, and where it was pinned.
    let first = as_user(&["list", "--secure", "--server", &server]);
    assert!(stdout(&first).contains("general"));
    let told = stderr(&first);
    let line = format!("trusted {server} on first use: key ");
    assert!(
        told.contains(&line) && told.contains(&format!("pinned in {}", pins.display())),
        "{told}"
    );
    let key = told.split(&line).nth(1).unwrap()[..40].to_string();
    assert_eq!(
        stdout(&as_user(&["known-servers"])),
        format!("{server} {key}\n")
    );
    // Trusted once: not told again.
    let again = as_user(&["list", "--server", &server]);
    assert!(stdout(&again).contains("general"));
    assert!(!stderr(&again).contains("trusted"), "{}", stderr(&again));

    // A pin that no longer matches (as when the server's key changes) is refused, with the
    // command that fixes it.
    // One that starts with '-', as one key in 85 does: a key, not a flag.
    let other = (0..100_000)
        .map(|_| zms::keys::KeyPair::generate().unwrap().public)
        .find(|key| key.starts_with('-'))
        .unwrap();
    let pinned = stdout(&as_user(&["known-servers", "pin", &server, &other]));
    assert_eq!(pinned, format!("pinned {server} {other} (was {key})\n"));
    let refused = as_user(&["list", "--server", &server]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains("CHANGED") && err.contains(&format!("zms known-servers forget {server}")),
        "{err}"
    );

    // Forgotten, the key is trusted anew on next use.
    let forgot = stdout(&as_user(&["known-servers", "forget", &server]));
    assert_eq!(forgot, format!("forgot {server} {other}\n"));
    let unknown = as_user(&["known-servers", "forget", &server]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("no key is pinned"));
    let retrusted = as_user(&["list", "--secure", "--server", &server]);
    assert!(stdout(&retrusted).contains("general"));
    assert!(stderr(&retrusted).contains(&line), "{}", stderr(&retrusted));
    up.signal("-INT");
    assert_eq!(up.wait(), Some(0));
}

/// `zms args` with its stdout a pipe whose reader has already gone, as after `| head -1`.
fn with_closed_stdout(args: &[&str]) -> std::process::Child {
    let mut child = Command::new(ZMS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zms runs");
    drop(child.stdout.take());
    child
}

#[test]
fn a_closed_pipe_ends_every_command_quietly() {
    let d = deploy();
    let s = d.server.as_str();
    alice_says(s, "one");
    let quiet = |child: std::process::Child, what: &str| {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(out.status.success(), "{what}: {} {stderr}", out.status);
    };
    for args in [
        &["list"][..],
        &["history", "general"],
        &["history", "general", "--json"],
        &["members", "general"],
        &["send", "general", "two"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--server", s, "--name", "alice"]);
        quiet(with_closed_stdout(&args), &args.join(" "));
    }
    // Still sent, though nobody read the confirmation.
    let history = stdout(&zms(&[
        "history", "general", "--server", s, "--name", "alice",
    ]));
    assert!(history.contains("alice: two"), "{history}");

    // `tail` ends at the first message it cannot print.
    let mut tail = with_closed_stdout(&["tail", "general", "--server", s, "--name", "alice"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tail.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "tail did not end");
        stdout(&zms(&[
            "send", "general", "more", "--server", s, "--name", "alice",
        ]));
        std::thread::sleep(Duration::from_millis(100));
    }
    quiet(tail, "tail");
}

#[test]
fn one_shot_commands_show_network_text_harmlessly_and_json_exactly() {
    let rogue = RogueGroup::start();
    let group = format!("general@{}", rogue.address);
    let plain = stdout(&zms(&["history", &group, "--name", "alice"]));
    for control in ['\x1b', '\x07', '\r'] {
        assert!(!plain.contains(control), "{control:?} in:\n{plain}");
    }
    assert!(
        plain.contains(" #1 mallory: hi␍␛[K07:42:00 bob: the deploy key is in #team"),
        "{plain}"
    );
    assert!(
        plain.contains(" #3 mal␛[31mlory␛[1A: first line\n  | 07:42:01 bob: a second message?\n"),
        "{plain}"
    );
    assert!(!plain.lines().any(|l| l.starts_with("07:42")), "{plain}");
    let json = zms(&["history", &group, "--name", "alice", "--json"]);
    assert!(!json.stdout.contains(&0x1b), "raw escape in JSON output");
    let texts: Vec<serde_json::Value> = json_lines(&json)
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, [common::FORGED, common::CLEARS, common::TWO_LINES]);
    let members = stdout(&zms(&["members", &group, "--name", "alice"]));
    assert_eq!(members, "mal␛[31mlory␛[1A (online)\nmallory\n");
}

#[test]
fn empty_messages_are_refused_everywhere_with_one_clear_line() {
    let d = deploy();
    let s = d.server.as_str();
    stdout(&zms(&["join", "general", "--server", s, "--name", "alice"]));
    for text in ["", "  \t "] {
        let out = zms(&["send", "general", text, "--server", s, "--name", "alice"]);
        assert!(!out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "error: not sent: message is empty (or only spaces); nothing to send\n"
        );
    }
    let mut send = Command::new(ZMS)
        .args(["send", "general", "--server", s, "--name", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = send.stdin.take().unwrap();
    input.write_all(b"one\n\n  \ntwo\n").unwrap();
    drop(input);
    let out = send.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "empty lines are reported in the exit status"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with("error: line 2 not sent: message is empty"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("error: line 3 not sent: message is empty"),
        "{stderr}"
    );
    assert_eq!(lines[2], "error: 2 lines not sent (see above)");
    let history = json_lines(&zms(&[
        "history", "general", "--server", s, "--name", "alice", "--json",
    ]));
    let texts: Vec<&str> = history
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two"]);
}

#[test]
fn since_takes_seconds_milliseconds_dates_and_local_times() {
    let d = deploy();
    let s = d.server.as_str();
    alice_says(s, "hello");
    let history = |since: &str, tz: &str| -> usize {
        let out = Command::new(ZMS)
            .args(["history", "general", "--server", s, "--name", "alice"])
            .args(["--json", "--since", since])
            .env("TZ", tz)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        json_lines(&out).len()
    };
    let all = json_lines(&zms(&[
        "history", "general", "--server", s, "--name", "alice", "--json",
    ]));
    let ts_ms = all[0]["ts_ms"].as_i64().unwrap();
    let stamp = jiff::Timestamp::from_millisecond(ts_ms).unwrap();
    let seconds = ts_ms.div_euclid(1000);
    // Unix seconds and milliseconds.
    assert_eq!(history(&(seconds - 3600).to_string(), "UTC"), 1);
    assert_eq!(history(&(seconds + 3600).to_string(), "UTC"), 0);
    assert_eq!(history(&(ts_ms - 1).to_string(), "UTC"), 1);
    assert_eq!(history(&(ts_ms + 1000).to_string(), "UTC"), 0);
    // A plain date is local midnight.
    let utc = stamp.to_zoned_datetime(jiff::tz::TimeZone::UTC);
    let day = utc.date();
    assert_eq!(history(&day.to_string(), "UTC"), 1);
    assert_eq!(history(&day.tomorrow().unwrap().to_string(), "UTC"), 0);
    // A date-time without a zone is local: in UTC it is before the message, read five hours
    // behind UTC (Etc/GMT+5) it is after.
    let before = utc.datetime().strftime("%Y-%m-%dT%H:%M:%S").to_string();
    assert_eq!(history(&before, "UTC"), 1);
    assert_eq!(history(&before, "Etc/GMT+5"), 0);
    // RFC 3339 and durations, as before.
    assert_eq!(history(&format!("{:.0}", stamp), "UTC"), 1);
    assert_eq!(history("10m", "UTC"), 1);
}

#[test]
fn up_names_the_binary_the_user_runs_apart_from_the_log() {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(ZMS);
    command
        .args([
            "up",
            "--bind",
            "127.0.0.1:0",
            "--group-bind",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data.path())
        // As when run from a shell, not by `cargo run` (cargo sets these for its tests too).
        .env_remove("CARGO")
        .env_remove("CARGO_PKG_NAME");
    let up = Proc::from_command(command);
    let mut lines = Vec::new();
    while !lines
        .last()
        .is_some_and(|l: &String| l.contains(" user --server "))
    {
        lines.push(up.line());
    }
    let connect = lines.last().unwrap().trim();
    assert!(
        connect.starts_with(&format!("{ZMS} user --server ")),
        "{connect}"
    );
    assert!(!lines.iter().any(|l| l.contains("cargo")), "{lines:?}");
    // A blank line and a rule set the banner apart from the log lines around it.
    assert_eq!(lines[0], "", "{lines:?}");
    assert!(lines[1].starts_with("─── zms is up ───"), "{lines:?}");
}

/// Exit status of `out`, with its stderr when it is not `code`.
fn assert_status(out: &Output, code: i32, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: {err}");
}

#[test]
fn exit_statuses_say_what_kind_of_failure_it_was() {
    let d = deploy();
    let s = d.server.as_str();
    // 2: usage, whether clap, the command or a value finds the mistake.
    assert_status(&zms(&["list", "--no-such-flag"]), 2, "unknown flag");
    assert_status(&zms(&["--log", "verbose", "list"]), 2, "bad --log");
    let bad_name = zms(&["join", "general", "--server", s, "--name", "a b"]);
    assert_status(&bad_name, 2, "bad name");
    // 5: not found.
    let unknown = format!("nosuch@{}", d.group_address);
    let history = zms(&["history", &unknown, "--server", s, "--name", "alice"]);
    assert_status(&history, 5, "a group the server does not host");
    let join = zms(&["join", "nosuch", "--server", s, "--name", "alice"]);
    assert_status(&join, 5, "a group no message server lists");
    let forget = zms(&["known-servers", "forget", "192.0.2.1:5555"]);
    assert_status(&forget, 5, "no such pin");
    // 4: refused, a group server whose group is held by another.
    let data = tempfile::tempdir().unwrap();
    let mut second = Proc::spawn(&[
        "group-server",
        "--server",
        s,
        "--bind",
        "127.0.0.1:0",
        "--group",
        "general",
        "--data",
        data.path().to_str().unwrap(),
    ]);
    assert_eq!(second.wait(), Some(4), "a refused registration");
    // 3: unreachable, a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = format!("127.0.0.1:{port}");
    assert_status(&zms(&["list", "--server", &nobody]), 3, "no server");
    // 0: the rest.
    assert_status(&zms(&["list", "--server", s]), 0, "a list");
}

#[test]
fn completions_and_the_man_page_name_every_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&zms(&["completions", shell]));
        for command in [
            "message-server",
            "group-server",
            "known-servers",
            "completions",
        ] {
            assert!(script.contains(command), "{shell} completes {command}");
        }
    }
    let page = stdout(&zms(&["man"]));
    assert!(
        page.starts_with(".ie") || page.contains(".TH zms 1"),
        "roff: {page:.200}"
    );
    // roff writes a hyphen as `\-`.
    for command in [
        "message\\-server",
        "group\\-server",
        "known\\-servers",
        "config",
    ] {
        assert!(page.contains(command), "the page names {command}");
    }
    assert_status(&zms(&["completions", "tcsh"]), 2, "an unknown shell");
}

/// A child `zms` with `envs` set, its stdout lines on a channel and its stderr in `log`.
fn spawn_logging(args: &[&str], envs: &[(&str, &str)], log: &Path) -> Proc {
    let mut command = Command::new(ZMS);
    command.args(args).envs(envs.iter().copied());
    Proc::logging_to(command, std::fs::File::create(log).unwrap())
}

#[test]
fn a_config_file_sets_the_servers_and_flags_and_variables_win() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zms.toml");
    std::fs::write(
        &config,
        "[log]\nformat = \"json\"\n\n[message-server]\nbind = \"127.0.0.1:0\"\n\n\
         [group-server]\nbind = \"127.0.0.1:0\"\ngroup = [\"ops\"]\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let log = dir.path().join("message-server.log");
    let directory = spawn_logging(&["--config", config, "message-server"], &[], &log);
    let server = directory.listening();
    let data = dir.path().join("data");
    let group = Proc::spawn(&[
        "--config",
        config,
        "group-server",
        "--server",
        &server,
        "--data",
        data.to_str().unwrap(),
    ]);
    let group_address = group.listening();
    let listed = json_lines(&zms(&["list", "--server", &server, "--json"]));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "ops", "the file's groups");
    assert_eq!(listed[0]["address"], group_address.as_str());

    // JSON log lines, one object each, with the fields an operator filters on.
    let registered = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|line| {
                let event: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                event["message"] == "group server registered"
                    && event["address"] == group_address.as_str()
                    && event["level"] == "INFO"
            })
    };
    assert!(common::eventually(Duration::from_secs(30), registered));

    // A variable wins over the file, a flag over both.
    let out = zms(&["--config", config, "message-server", "--bind", "nonsense"]);
    assert_status(&out, 2, "the flag's address is used (and is bad)");
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be HOST:PORT"));
    let text = dir.path().join("text.log");
    let plain = spawn_logging(
        &["--config", config, "message-server"],
        &[("ZMS_LOG_FORMAT", "text"), ("ZMS_BIND", "127.0.0.1:0")],
        &text,
    );
    plain.listening();
    let serving = || std::fs::read_to_string(&text).is_ok_and(|t| t.contains("serving"));
    assert!(common::eventually(Duration::from_secs(30), serving));
    let logged = std::fs::read_to_string(&text).unwrap();
    assert!(
        !logged.trim_start().starts_with('{'),
        "text, not JSON: {logged}"
    );
}

#[test]
fn a_bad_config_file_is_one_line_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zms.toml");
    std::fs::write(&config, "[group-server]\nmax-members = -3\n").unwrap();
    let out = zms(&["--config", config.to_str().unwrap(), "group-server"]);
    assert_status(&out, 2, "a bad value");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("zms.toml") && err.contains("[group-server] max-members"),
        "{err}"
    );

    let example = stdout(&zms(&["config", "example"]));
    std::fs::write(&config, example).unwrap();
    let out = zms(&["--config", config.to_str().unwrap(), "config", "example"]);
    assert_status(&out, 0, "the example is a valid config file");
}

#[test]
fn the_deployment_example_config_is_valid() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/zms.toml");
    let out = zms(&["--config", config, "config", "example"]);
    assert_status(&out, 0, "deploy/zms.toml");
}

#[test]
fn history_says_when_older_messages_were_trimmed() {
    let c = common::cluster_retaining(&["log"], &["log=5msgs"]);
    let (mut alice, log) = c.member("alice", "log");
    for batch in 0..3 {
        let texts: Vec<String> = (0..5).map(|i| format!("{}", batch * 5 + i)).collect();
        alice.send_many(&log, &texts).unwrap();
    }
    let mut first = 1;
    assert!(
        common::eventually(Duration::from_secs(30), || {
            first = alice.first_kept(&log).unwrap();
            first > 1
        }),
        "the oldest messages were trimmed"
    );
    let server = c.dir.endpoint().trim_start_matches("tcp://");
    let out = zms(&[
        "history", "log", "--server", server, "--name", "alice", "--json",
    ]);
    let history = json_lines(&out);
    assert_eq!(history[0]["seq"].as_u64(), Some(first));
    assert_eq!(history.last().unwrap()["seq"].as_u64(), Some(15));
    let note = format!("older messages were trimmed: kept history starts at seq {first}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&note),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last few need no such line: nothing trimmed was asked for.
    let out = zms(&[
        "history", "log", "--server", server, "--name", "alice", "--limit", "2",
    ]);
    assert_eq!(stdout(&out).lines().count(), 2);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("trimmed"));
}

#[test]
fn a_client_on_the_servers_host_kicks_a_member_whose_tail_then_ends() {
    let d = deploy();
    let s = d.server.as_str();
    stdout(&zms(&["join", "general", "--server", s, "--name", "bob"]));
    stdout(&zms(&["join", "general", "--server", s, "--name", "alice"]));
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("tail.log");
    let mut command = Command::new(ZMS);
    command
        .args(["tail", "general", "--server", s, "--name", "bob"])
        .env("ZMS_HOME", home());
    let mut tail = Proc::logging_to(command, std::fs::File::create(&log).unwrap());
    // Send until the tail shows one: then it follows the group.
    let mut following = false;
    for i in 0..50 {
        let text = format!("m{i}");
        stdout(&zms(&[
            "send", "general", &text, "--server", s, "--name", "alice",
        ]));
        if tail.lines.recv_timeout(Duration::from_millis(200)).is_ok() {
            following = true;
            break;
        }
    }
    assert!(following, "tail printed a message");

    let kicked = stdout(&zms(&[
        "kick", "general", "bob", "--server", s, "--name", "alice",
    ]));
    assert!(kicked.contains("removed bob from general"), "{kicked}");
    let members = stdout(&zms(&[
        "members", "general", "--server", s, "--name", "alice",
    ]));
    assert!(!members.contains("bob"), "{members}");
    // The tail learns at a heartbeat that it follows nothing any more, and says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = tail.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "tail did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("no longer a member of general"), "{said}");

    let again = zms(&["kick", "general", "bob", "--server", s, "--name", "alice"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("'bob' is not a member of 'general'"));
}

#[test]
fn a_banned_user_is_removed_and_cannot_join_again() {
    let d = deploy();
    let s = d.server.as_str();
    stdout(&zms(&["join", "general", "--server", s, "--name", "bob"]));
    let banned = stdout(&zms(&[
        "ban", "general", "bob", "--server", s, "--name", "root",
    ]));
    assert!(banned.contains("banned bob from general"), "{banned}");
    let again = zms(&["join", "general", "--server", s, "--name", "bob"]);
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("'bob' is banned from 'general'"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one clear line: {said}");
    stdout(&zms(&["join", "general", "--server", s, "--name", "carol"]));
}

#[test]
fn search_unread_edit_and_delete_as_one_shot_commands() {
    let d = deploy();
    let s = d.server.as_str();
    let as_user = |name: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", s, "--name", name]);
        zms(&all)
    };
    stdout(&as_user("alice", &["join", "general"]));
    stdout(&as_user("bob", &["join", "general"]));
    stdout(&as_user("bob", &["join", "random"]));
    stdout(&as_user("alice", &["send", "general", "lunch at noon?"]));
    stdout(&as_user("alice", &["send", "general", "wrold peace"]));
    stdout(&as_user("bob", &["send", "random", "secret lunch"]));

    let hits = json_lines(&as_user("alice", &["search", "lunch", "--json"]));
    assert_eq!(hits.len(), 1, "only alice's groups: {hits:?}");
    assert_eq!(hits[0]["group"], "general");
    assert_eq!(hits[0]["seq"], 1);
    assert_eq!(hits[0]["matches"], serde_json::json!([[0, 5]]));
    let plain = stdout(&as_user("bob", &["search", "random", "lunch"]));
    assert!(plain.contains("random #1 bob: secret lunch"), "{plain}");

    let unread = json_lines(&as_user("bob", &["unread", "--json"]));
    let counts: Vec<(&str, u64)> = unread
        .iter()
        .map(|u| (u["group"].as_str().unwrap(), u["unread"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [("general", 2), ("random", 1)]);

    let refused = as_user("bob", &["edit", "general", "2", "bob was here"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("only its sender (alice)"), "{err}");
    let edited = json_lines(&as_user(
        "alice",
        &["edit", "general", "2", "world peace", "--json"],
    ));
    assert_eq!(
        (edited[0]["seq"].as_u64(), edited[0]["edited"].as_u64()),
        (Some(2), Some(3))
    );
    stdout(&as_user("alice", &["delete", "general", "1"]));
    let history = stdout(&as_user("bob", &["history", "general"]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(lines[0].ends_with("#1 alice: (deleted)"), "{history}");
    assert!(
        lines[1].contains("#2 alice: world peace (edited "),
        "{history}"
    );
    let json = json_lines(&as_user("bob", &["history", "general", "--json"]));
    assert_eq!(json[1]["text"], "world peace");
    assert!(json[1]["edited_ts_ms"].as_i64().is_some());
    assert_eq!(json[0]["deleted"], true);
}
