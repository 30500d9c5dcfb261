//! The deployment a workload runs against: a message server and a group server started as
//! child processes of the `zms` binary, exactly as an operator would start them, or a running
//! deployment named with `--server`.
//!
//! Children are killed when the [`Deployment`] is dropped, so a failed workload leaves nothing
//! running. Their stderr (the servers' logs) goes to files in the temporary data directory,
//! and the last lines are quoted when a server fails to start.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;
use zms::{errinput, Error, Result};

use crate::BenchArgs;

/// How long a server may take to print `listening on HOST:PORT`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The `zms` binary: `--zms` (or `ZMS_BIN`), else the one next to this program (cargo builds
/// both into one target directory).
///
/// # Errors
/// [`Error::Input`] naming both places when there is none.
pub fn zms_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return match path.is_file() {
            true => Ok(path.to_path_buf()),
            false => Err(errinput!("--zms {}: no such file", path.display())),
        };
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name(format!("zms{}", std::env::consts::EXE_SUFFIX));
    if beside.is_file() {
        return Ok(beside);
    }
    Err(errinput!(
        "cannot find the zms binary: not at {} and no --zms PATH (or ZMS_BIN) given; \
         build it with `cargo build --release -p zms`",
        beside.display()
    ))
}

/// One server child process.
pub struct ServerProcess {
    child: Child,
    /// `HOST:PORT` from its `listening on` line.
    address: String,
}

impl ServerProcess {
    /// Starts `zms ARGS…`, waiting (bounded) for its `listening on HOST:PORT` line.
    ///
    /// # Errors
    /// When it cannot start, exits, or does not say where it listens in time.
    pub fn start(exe: &Path, args: &[&str], log: &Path) -> Result<ServerProcess> {
        let log_file = File::create(log)?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| errinput!("cannot start {} {}: {e}", exe.display(), args[0]))?;
        let stdout = child
            .stdout
            .take()
            .expect("bug: stdout was asked to be piped");
        let (tx, rx) = mpsc::channel();
        // Reads the first line, then keeps draining so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines.map_while(std::result::Result::ok) {}
        });
        let mut process = ServerProcess {
            child,
            address: String::new(),
        };
        let line = rx.recv_timeout(START_TIMEOUT).map_err(|_| {
            let status = process.child.try_wait().ok().flatten();
            errinput!(
                "{} did not say where it listens within {} s ({}); its log ends:\n{}",
                args[0],
                START_TIMEOUT.as_secs(),
                status.map_or("still running".to_string(), |s| s.to_string()),
                log_tail(log)
            )
        })?;
        process.address = line
            .strip_prefix("listening on ")
            .ok_or_else(|| errinput!("{} printed '{line}', not 'listening on …'", args[0]))?
            .trim()
            .to_string();
        Ok(process)
    }

    /// Where it listens.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its peak resident memory so far, MiB.
    ///
    /// # Errors
    /// When /proc cannot be read (the process is gone, or this is not Linux).
    pub fn peak_rss_mib(&self) -> Result<f64> {
        peak_rss_mib(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident set size (VmHWM) of process `pid`, MiB.
///
/// # Errors
/// When /proc/PID/status cannot be read or has no VmHWM line.
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error::Protocol(format!("no VmHWM in /proc/{pid}/status")))?;
    Ok(kib / 1024.0)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// What a workload talks to.
pub struct Deployment {
    /// The message server's `HOST:PORT`.
    pub directory: String,
    /// The group server's `HOST:PORT` (of the group under test).
    pub group_address: String,
    /// The group under test.
    pub group: String,
    /// Our own group server, when we started it.
    pub group_server: Option<ServerProcess>,
    /// Our own message server, when we started it (dropped after the group server).
    pub directory_server: Option<ServerProcess>,
    /// Their data and logs.
    _data: Option<TempDir>,
}

impl Deployment {
    /// Starts a message server and a group server hosting `--group` on loopback ephemeral
    /// ports, or with `--server` resolves the group through that running deployment's message
    /// server.
    ///
    /// # Errors
    /// No `zms` binary, a server that does not start, or a group the deployment does not know.
    pub fn start(args: &BenchArgs) -> Result<Deployment> {
        let group = args.group.as_str();
        if let Some(server) = &args.server {
            return Self::existing(server, group);
        }
        let zms = zms_binary(args.zms.as_deref())?;
        let data = tempfile::Builder::new()
            .prefix("zms-bench-")
            .tempdir()
            .map_err(|e| errinput!("cannot create a temporary directory: {e}"))?;
        let directory = ServerProcess::start(
            &zms,
            &["message-server", "--bind", "127.0.0.1:0"],
            &data.path().join("message-server.log"),
        )?;
        let store = data.path().join("data");
        let store = store
            .to_str()
            .ok_or_else(|| errinput!("the temporary directory {} is not UTF-8", store.display()))?;
        let mut server_args = vec![
            "group-server",
            "--server",
            directory.address(),
            "--bind",
            "127.0.0.1:0",
            "--group",
            group,
        ];
        match &args.store {
            // Cluster mode: the database holds the group; this server is its only one.
            Some(url) => server_args.extend(["--store", url]),
            None => server_args.extend(["--data", store]),
        }
        if args.fsync {
            server_args.push("--fsync");
        }
        let group_server =
            ServerProcess::start(&zms, &server_args, &data.path().join("group-server.log"))?;
        Ok(Deployment {
            directory: directory.address().to_string(),
            group_address: group_server.address().to_string(),
            group: group.to_string(),
            group_server: Some(group_server),
            directory_server: Some(directory),
            _data: Some(data),
        })
    }

    fn existing(server: &str, group: &str) -> Result<Deployment> {
        let ctx = zmq::Context::new();
        let endpoints = zms::transport::endpoints(server)?;
        let mut session = zms::client::Session::new(
            &ctx,
            endpoints.clone(),
            "zms-bench",
            zms::client::Timeouts::default(),
        )?;
        let found = session.resolve(group)?;
        Ok(Deployment {
            directory: zms::transport::address(&endpoints[0]),
            group_address: found.address,
            group: found.name,
            group_server: None,
            directory_server: None,
            _data: None,
        })
    }

    /// Peak RSS of our group server and message server, MiB (`None` for a running deployment).
    pub fn peak_rss_mib(&self) -> (Option<f64>, Option<f64>) {
        (
            self.group_server
                .as_ref()
                .and_then(|p| p.peak_rss_mib().ok()),
            self.directory_server
                .as_ref()
                .and_then(|p| p.peak_rss_mib().ok()),
        )
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // The group server first, so it is not left re-registering with a dead directory.
        self.group_server.take();
        self.directory_server.take();
    }
}
