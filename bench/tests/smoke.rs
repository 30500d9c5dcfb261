//! `zms-bench` through the real binaries, with tiny counts: every workload runs, prints one JSON
//! line with its named fields, and loses nothing. Performance is never asserted here.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_zms-bench");
/// A smoke run takes a second or two; this only bounds a hang.
const LIMIT: Duration = Duration::from_secs(60);

/// The `zms` binary the benchmark starts servers with: cargo builds it next to `zms-bench`
/// when the workspace is tested (`cargo test` at the root).
fn zms() -> std::path::PathBuf {
    let path =
        std::path::Path::new(BENCH).with_file_name(format!("zms{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "no zms binary at {}: run the tests from the workspace root (cargo test), which builds it",
        path.display()
    );
    path
}

/// A child killed on drop, so a failing test leaves nothing behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `zms-bench ARGS…` (bounded by [`LIMIT`]); returns exit success, stdout lines, stderr.
fn run(args: &[&str]) -> (bool, Vec<String>, String) {
    let mut child = Proc(
        Command::new(BENCH)
            .args(args)
            .env_remove("ZMS_BIN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("zms-bench runs"),
    );
    let (mut stdout, mut stderr) = (
        child.0.stdout.take().unwrap(),
        child.0.stderr.take().unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((out, err));
    });
    let (out, err) = rx
        .recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("zms-bench {args:?} did not finish within {LIMIT:?}"));
    let status = child.0.wait().unwrap();
    (
        status.success(),
        out.lines().map(str::to_string).collect(),
        err,
    )
}

/// The one JSON line of a successful run, checked for `fields` and for nothing lost.
fn bench(args: &[&str], fields: &[&str]) -> Value {
    let (ok, lines, err) = run(args);
    assert!(ok, "zms-bench {args:?} failed: {err}");
    assert_eq!(lines.len(), 1, "one line of output: {lines:?}");
    let line: Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    for field in fields {
        let value = field
            .split('.')
            .try_fold(&line, |v, key| v.get(key))
            .unwrap_or_else(|| panic!("no {field} in {line}"));
        assert!(value.is_number(), "{field} is not a number in {line}");
    }
    assert_eq!(line["workload"], args[0]);
    line
}

fn lost(line: &Value) -> u64 {
    line["lost"].as_u64().expect("lost is a count")
}

#[test]
fn fanout_delivers_every_message_to_every_member() {
    let line = bench(
        &["fanout", "--messages", "300", "--members", "3"],
        &["deliveries_per_s", "lost", "stored"],
    );
    assert_eq!(lost(&line), 0);
    assert_eq!(line["stored"], 300);
    assert_eq!(line["deliveries"], 900);
}

#[test]
fn latency_reports_percentiles() {
    let line = bench(
        &[
            "latency",
            "--rate",
            "2000",
            "--duration",
            "0.25",
            "--members",
            "3",
        ],
        &["p50_us", "p99_us", "max_us", "lost"],
    );
    assert_eq!(lost(&line), 0);
    assert_eq!(line["samples"], 1500);
}

#[test]
fn rtt_and_ingest_store_everything() {
    let line = bench(
        &["rtt", "--messages", "200"],
        &["p50_us", "p99_us", "per_s"],
    );
    assert_eq!(line["samples"], 200);
    let line = bench(
        &["ingest", "--messages", "1000", "--senders", "2"],
        &["msgs_per_s", "stored"],
    );
    assert_eq!((lost(&line), line["stored"].as_u64()), (0, Some(1000)));
}

#[test]
fn history_reads_back_all_and_since() {
    let line = bench(
        &["history", "--messages", "2000"],
        &["all_ms", "since_ms", "all_count", "since_count"],
    );
    assert_eq!(line["all_count"], 2000);
    let since = line["since_count"].as_u64().unwrap();
    assert!((1000..=2000).contains(&since), "{line}");
}

#[test]
fn scale_lists_groups_and_measures_memory() {
    let line = bench(
        &[
            "scale",
            "--groups",
            "2000",
            "--lists",
            "20",
            "--stored",
            "3000",
            "--members",
            "20",
            "--messages",
            "50",
        ],
        &[
            "list_p99_ms",
            "deliveries_per_s",
            "group_rss_mib",
            "directory_rss_mib",
        ],
    );
    assert_eq!(lost(&line), 0);
    assert!(line["listed"].as_u64().unwrap() >= 2000, "{line}");
    assert_eq!(line["stored"], 3000);
}

#[test]
fn raw_runs_the_same_workloads_on_bare_libzmq() {
    let line = bench(
        &[
            "raw",
            "--messages",
            "500",
            "--members",
            "3",
            "--rate",
            "2000",
        ],
        &[
            "fanout.deliveries_per_s",
            "fanout.lost",
            "latency.p99_us",
            "latency_apart.p99_us",
            "rtt.p50_us",
            "rtt.per_s",
            "rtt_apart.p50_us",
        ],
    );
    assert_eq!(line["fanout"]["lost"], 0);
    assert_eq!(line["latency"]["lost"], 0);
    assert_eq!(line["latency_apart"]["lost"], 0);
    assert_eq!(line["rtt_apart"]["samples"], 500);
}

#[test]
fn aims_at_a_running_deployment_and_fails_clearly() {
    let spawn = |args: &[&str]| {
        let mut child = Proc(
            Command::new(zms())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(LIMIT).expect("a listening line");
        let address = line.strip_prefix("listening on ").unwrap().to_string();
        (child, address)
    };
    let (_directory, server) = spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let data = tempfile::tempdir().unwrap();
    let (_group, _) = spawn(&[
        "group-server",
        "--server",
        &server,
        "--bind",
        "127.0.0.1:0",
        "--group",
        "load",
        "--data",
        data.path().to_str().unwrap(),
    ]);
    let line = bench(
        &[
            "fanout",
            "--server",
            &server,
            "--group",
            "load",
            "--messages",
            "100",
            "--members",
            "2",
        ],
        &["deliveries_per_s", "lost", "stored"],
    );
    assert_eq!((lost(&line), line["stored"].as_u64()), (0, Some(100)));

    // No such group, and no workload: one clear error, non-zero exit.
    for (args, expect) in [
        (
            vec!["rtt", "--server", server.as_str(), "--group", "nope"],
            "unknown group",
        ),
        (vec![], "name a workload"),
    ] {
        let (ok, lines, err) = run(&args);
        assert!(!ok && lines.is_empty(), "{args:?} should fail: {lines:?}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_zms_binary_is_one_clear_error() {
    let (ok, lines, err) = run(&["rtt", "--zms", "/nonexistent/zms"]);
    assert!(!ok && lines.is_empty(), "{lines:?}");
    assert_eq!(
        err.lines().last(),
        Some("error: --zms /nonexistent/zms: no such file"),
        "{err}"
    );
}
