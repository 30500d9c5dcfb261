//! A real PostgreSQL server for the cluster-mode tests: its own instance in a temporary
//! directory, on a free port of 127.0.0.1, stopped on drop. PostgreSQL refuses to run as root,
//! so as root its programs run as the `postgres` user. Also a primary whose commits wait for a
//! synchronous standby, the standby itself (streaming, made with `pg_basebackup -R`), a crash
//! and a promotion.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A running PostgreSQL instance whose superuser is `zms`, trusted on 127.0.0.1.
pub struct Postgres {
    bin: PathBuf,
    /// Holds the data directory, the unix socket and the log.
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
    /// The server's command-line settings, kept for a restart.
    options: String,
    /// Running (so drop stops it).
    running: AtomicBool,
}

impl Postgres {
    /// Starts an instance, or says why not and returns `None` when PostgreSQL is not installed
    /// (a failure instead where `ZMS_REQUIRE_POSTGRES=1`).
    pub fn start() -> Option<Postgres> {
        Postgres::start_with("")
    }

    /// One instance for the tests of a test binary that run at the same time, each in its own
    /// database: started by the first, stopped when the last lets it go; `None` as for
    /// [`Postgres::start`].
    pub fn shared() -> Option<Arc<Postgres>> {
        static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pg) = shared.upgrade() {
            return Some(pg);
        }
        let pg = Arc::new(Postgres::start()?);
        *shared = Arc::downgrade(&pg);
        Some(pg)
    }

    /// As [`Postgres::start`], a primary whose every commit waits until a synchronous standby
    /// has it (`synchronous_commit=on`, any standby: `synchronous_standby_names='*'`): start
    /// one with [`Postgres::standby`] before writing.
    pub fn start_primary() -> Option<Postgres> {
        Postgres::start_with("-c synchronous_commit=on -c synchronous_standby_names='*'")
    }

    /// Starts an instance with `settings` on its command line (so a base backup of its data
    /// directory does not carry them).
    fn start_with(settings: &str) -> Option<Postgres> {
        let Some(bin) = server_programs() else {
            let why = "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb)";
            assert!(
                std::env::var("ZMS_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{why}"
            );
            eprintln!("skipped: {why}");
            return None;
        };
        let pg = Postgres::new(bin, settings);
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "zms",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start_again();
        Some(pg)
    }

    /// An instance not yet created, in a new temporary directory, on a free port.
    fn new(bin: PathBuf, settings: &str) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown to postgres");
        }
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40 {settings}",
            dir.path().display()
        );
        Postgres {
            bin,
            dir,
            port,
            as_postgres,
            options,
            running: AtomicBool::new(false),
        }
    }

    /// A streaming standby of this instance, started, and synchronous once the primary lists
    /// it as such (waited for, up to 60 s).
    pub fn standby(&self) -> Postgres {
        let standby = Postgres::new(self.bin.clone(), "");
        let data = standby.dir.path().join("data");
        standby.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "zms",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        standby.start_again();
        self.wait_for_sync_standby();
        standby
    }

    /// Waits (up to 60 s) until a standby streams to this primary synchronously.
    pub fn wait_for_sync_standby(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
        ) == "0"
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no synchronous standby"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Starts the (stopped) instance with its settings, waiting until it takes connections.
    pub fn start_again(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &self.options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        self.running.store(true, Ordering::SeqCst);
    }

    /// Stops the instance: `fast` (a clean shutdown) or `immediate` (a crash: every process
    /// ends at once, nothing more is written or sent).
    pub fn stop(&self, mode: &str) {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        );
        self.running.store(false, Ordering::SeqCst);
    }

    /// Kills the instance as the loss of its host would: SIGKILL to the postmaster and to each
    /// of its processes, so nothing is written, sent or closed cleanly.
    pub fn kill(&self) {
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        let pids = std::fs::read_to_string(pid_file).unwrap();
        let postmaster = pids.lines().next().unwrap().trim().to_string();
        let children = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .unwrap();
        let children = String::from_utf8(children.stdout).unwrap();
        let status = Command::new("kill")
            .arg("-9")
            .arg(&postmaster)
            .args(children.split_whitespace())
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 the postmaster");
        self.running.store(false, Ordering::SeqCst);
    }

    /// Promotes a standby to primary, waiting until it takes writes.
    pub fn promote(&self) {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-w", "-t", "60", "promote"],
        );
    }

    /// Runs one of the server programs (as `postgres` when root); panics on failure.
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command.args(args).current_dir("/").output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new, empty database, as a URL.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://zms@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in database `db` with psql; its output, unaligned, one row a line.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "zms"])
            .args([
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.running.load(Ordering::SeqCst) {
            return;
        }
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop("immediate")));
    }
}

/// The newest installed PostgreSQL's server programs.
fn server_programs() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// Whether this process runs as root (PostgreSQL's programs then run as `postgres`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A port of 127.0.0.1 nothing listens on just now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `zms group-server` in cluster mode on `url` (2 s leases), hosting its share of the
/// database's groups and making sure `groups` exist; with the address it listens on.
pub fn cluster_server(directory: &str, url: &str, groups: &[&str]) -> (super::Proc, String) {
    let mut args = vec![
        "group-server",
        "--server",
        directory,
        "--bind",
        "127.0.0.1:0",
        "--store",
        url,
        "--lease-ms",
        "2000",
    ];
    for g in groups {
        args.extend(["--group", g]);
    }
    let server = super::Proc::spawn(&args);
    let address = server.listening();
    (server, address)
}
