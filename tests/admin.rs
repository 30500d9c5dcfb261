//! Operators at runtime, through the real binary: groups created, set and deleted, bans
//! lifted, a group's history exported from one deployment and imported into another.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{deploy, eventually, start_group, Deployment, Proc, ZMS};

/// Generous: the machine is busy, and each wait ends as soon as its condition holds.
const PATIENCE: Duration = Duration::from_secs(30);

/// The config directory of these tests' users, not the real one.
fn home() -> &'static Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn zms_with(args: &[&str], stdin: Stdio) -> Output {
    Command::new(ZMS)
        .args(args)
        .env("ZMS_HOME", home())
        .stdin(stdin)
        .output()
        .expect("zms runs")
}

fn zms(args: &[&str]) -> Output {
    zms_with(args, Stdio::null())
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether `zms list` at `server` shows `group`.
fn listed(server: &str, group: &str) -> bool {
    let out = zms(&["list", "--server", server, "--json"]);
    out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains(&format!("\"name\":\"{group}\""))
}

/// Stops a group server with SIGTERM and waits for it to exit.
fn stop(mut group: Proc) {
    group.signal("-TERM");
    group.wait();
}

#[test]
fn an_operator_creates_and_deletes_a_group_at_runtime_and_both_outlive_a_restart() {
    let Deployment {
        _directory,
        group,
        server,
        group_address: address,
        data,
    } = deploy();
    let s = server.as_str();
    let created = stdout(&zms(&[
        "create-group",
        "rust",
        "--server",
        s,
        "--name",
        "root",
    ]));
    assert!(
        created.contains(&format!("created group rust@{address}")),
        "{created}"
    );
    assert!(eventually(PATIENCE, || listed(s, "rust")), "rust is listed");
    let twice = zms(&["create-group", "rust", "--server", s, "--name", "root"]);
    assert_eq!(twice.status.code(), Some(4), "{}", stderr(&twice));
    assert!(
        stderr(&twice).contains("exists already"),
        "{}",
        stderr(&twice)
    );
    stdout(&zms(&["join", "rust", "--server", s, "--name", "bob"]));
    stdout(&zms(&[
        "send", "rust", "hello", "--server", s, "--name", "bob",
    ]));

    // Restarted with only its flags' groups, the server hosts the created one too.
    stop(group);
    let group = start_group(s, &address, data.path());
    group.listening();
    assert!(eventually(PATIENCE, || listed(s, "rust")), "rust is back");
    let history = stdout(&zms(&["history", "rust", "--server", s, "--name", "bob"]));
    assert!(history.contains("bob: hello"), "{history}");

    // A member following the group live learns it is gone.
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("tail.log");
    let mut command = Command::new(ZMS);
    command
        .args(["tail", "rust", "--server", s, "--name", "bob"])
        .env("ZMS_HOME", home());
    let mut tail = Proc::logging_to(command, std::fs::File::create(&log).unwrap());
    let mut following = false;
    for i in 0..50 {
        let text = format!("m{i}");
        stdout(&zms(&[
            "send", "rust", &text, "--server", s, "--name", "bob",
        ]));
        if tail.lines.recv_timeout(Duration::from_millis(200)).is_ok() {
            following = true;
            break;
        }
    }
    assert!(following, "tail printed a message");

    let deleted = stdout(&zms(&[
        "delete-group",
        "rust",
        "--server",
        s,
        "--name",
        "root",
    ]));
    assert!(deleted.contains("deleted group rust@"), "{deleted}");
    assert!(eventually(PATIENCE, || !listed(s, "rust")), "rust is gone");
    assert!(
        eventually(PATIENCE, || tail.child.try_wait().unwrap().is_some()),
        "tail ended"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("no longer a member of rust"), "{said}");
    let join = zms(&["join", "rust", "--server", s, "--name", "bob"]);
    assert_eq!(join.status.code(), Some(5), "{}", stderr(&join));

    // Deleted for good: a restart does not bring it back, and a new rust starts empty.
    stop(group);
    let _group = start_group(s, &address, data.path());
    _group.listening();
    assert!(listed(s, "general") && !listed(s, "rust"));
    stdout(&zms(&[
        "create-group",
        "rust",
        "--server",
        s,
        "--name",
        "root",
        "--group-server",
        &address,
    ]));
    assert!(
        eventually(PATIENCE, || listed(s, "rust")),
        "the new rust is listed"
    );
    let history = zms(&["history", "rust", "--server", s, "--name", "bob"]);
    assert!(
        stderr(&history).contains("not a member"),
        "{}",
        stderr(&history)
    );
}

#[test]
fn an_unbanned_user_joins_again() {
    let d = deploy();
    let s = d.server.as_str();
    stdout(&zms(&[
        "ban", "general", "bob", "--server", s, "--name", "root",
    ]));
    let refused = zms(&["join", "general", "--server", s, "--name", "bob"]);
    assert!(stderr(&refused).contains("banned"), "{}", stderr(&refused));
    let unbanned = stdout(&zms(&[
        "unban", "general", "bob", "--server", s, "--name", "root",
    ]));
    assert!(unbanned.contains("unbanned bob from general"), "{unbanned}");
    stdout(&zms(&["join", "general", "--server", s, "--name", "bob"]));
    let again = zms(&["unban", "general", "bob", "--server", s, "--name", "root"]);
    assert_eq!(again.status.code(), Some(4));
    assert!(
        stderr(&again).contains("'bob' is not banned from 'general'"),
        "{}",
        stderr(&again)
    );
    // The flag's group set public is answered; the choice is stored (private needs --secure).
    stdout(&zms(&[
        "set-private",
        "general",
        "off",
        "--server",
        s,
        "--name",
        "root",
    ]));
}

#[test]
fn an_export_imported_into_another_deployment_exports_byte_for_byte_the_same() {
    let Deployment {
        _directory,
        group,
        server,
        group_address: address,
        data: _data,
    } = deploy();
    let s = server.as_str();
    stdout(&zms(&["join", "general", "--server", s, "--name", "alice"]));
    // More than a page of history (1,000) and more than a batch of import (256), with text
    // that needs escaping in JSON.
    let files = tempfile::tempdir().unwrap();
    let lines: String = (0..1100)
        .map(|i| format!("line {i} ✓ \"q\"\t\\\n"))
        .collect();
    let input = files.path().join("lines.txt");
    std::fs::write(&input, lines).unwrap();
    let sent = zms_with(
        &["send", "general", "--server", s, "--name", "alice"],
        std::fs::File::open(&input).unwrap().into(),
    );
    stdout(&sent);
    let two_lines = "two\nlines, a\ttab, é ✓";
    stdout(&zms(&[
        "send", "general", two_lines, "--server", s, "--name", "alice",
    ]));
    // Without --secure an export reads as a member (with it, an operator key needs none).
    let first = stdout(&zms(&[
        "export", "general", "--server", s, "--name", "alice",
    ]));
    assert_eq!(first.lines().count(), 1101, "every message, one line each");
    let history = stdout(&zms(&[
        "history", "general", "--server", s, "--name", "alice", "--json",
    ]));
    assert_eq!(first, history, "the objects of history --json");
    let export = files.path().join("general.jsonl");
    std::fs::write(&export, &first).unwrap();

    // Another deployment's store, at the same address (the objects name it).
    stop(group);
    let other = tempfile::tempdir().unwrap();
    let _group = start_group(s, &address, other.path());
    _group.listening();
    // A member following the new group live is pushed what is imported.
    stdout(&zms(&["join", "general", "--server", s, "--name", "carol"]));
    let mut command = Command::new(ZMS);
    command
        .args(["tail", "general", "--server", s, "--name", "carol"])
        .env("ZMS_HOME", home());
    let tail = Proc::from_command(command);

    let imported = zms_with(
        &["import", "general", "--server", s, "--name", "root"],
        std::fs::File::open(&export).unwrap().into(),
    );
    let said = stdout(&imported);
    assert!(
        said.contains("imported 1101 messages (seq 1 to 1101) into general@"),
        "{said}"
    );
    let again = stdout(&zms(&[
        "export", "general", "--server", s, "--name", "carol",
    ]));
    assert!(again == first, "byte-identical after the round trip");
    assert!(
        eventually(PATIENCE, || tail
            .lines
            .try_iter()
            .any(|l| l.contains("line 1099"))),
        "the live member was pushed the imported messages"
    );

    // A second import would not follow the last seq: refused, nothing stored.
    let twice = zms_with(
        &["import", "general", "--server", s, "--name", "root"],
        std::fs::File::open(&export).unwrap().into(),
    );
    assert_eq!(twice.status.code(), Some(4));
    assert!(
        stderr(&twice).contains("continues at seq 1102"),
        "{}",
        stderr(&twice)
    );
    assert_eq!(
        stderr(&twice).trim().lines().count(),
        1,
        "one line: {}",
        stderr(&twice)
    );
    let bad = files.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"seq\": 1102}\n").unwrap();
    let bad = zms_with(
        &["import", "general", "--server", s, "--name", "root"],
        std::fs::File::open(&bad).unwrap().into(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("line 1: no \"ts\""),
        "{}",
        stderr(&bad)
    );
}
