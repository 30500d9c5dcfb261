//! Test harness: real servers on loopback ephemeral ports, SQLite in temporary directories.
#![allow(dead_code)]

pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zms::client::{Session, SessionEvent, Timeouts};
use zms::directory::DirectoryServer;
use zms::group::{self, GroupServer};
use zms::protocol::Message;
use zms::shutdown::ServerHandle;

/// The real binary.
pub const ZMS: &str = env!("CARGO_BIN_EXE_zms");
/// The Python interpreter of the tests that run the Python client: `$ZMS_PYTHON`, else the
/// virtual environment `target/venv` when it exists (where CI installs the package), else
/// `python3`.
pub fn python() -> std::path::PathBuf {
    if let Some(given) = std::env::var_os("ZMS_PYTHON").filter(|p| !p.is_empty()) {
        return given.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python3");
    match venv.exists() {
        true => venv,
        false => "python3".into(),
    }
}

/// How long a child process may take to say something.
const LIMIT: Duration = Duration::from_secs(10);

/// Short timeouts so a failing test fails fast; still far above loopback latency.
pub const TIMEOUTS: Timeouts = Timeouts {
    request: Duration::from_secs(2),
    tries: 2,
};

pub fn directory(ctx: &zmq::Context) -> ServerHandle {
    directory_at(ctx, "tcp://127.0.0.1:*")
}

pub fn directory_at(ctx: &zmq::Context, endpoint: &str) -> ServerHandle {
    rebind(|| DirectoryServer::bind(ctx, endpoint))
        .spawn(ctx)
        .unwrap()
}

/// Binds, retrying for a while if the port is still held: libzmq closes a stopped server's
/// socket on its I/O thread, a moment after `stop` returns, so an in-process restart on the
/// same port can race it.
pub fn rebind<T>(mut bind: impl FnMut() -> zms::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match bind() {
            Ok(bound) => return bound,
            Err(err) if err.to_string().contains("in use") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(err) => panic!("bind failed: {err}"),
        }
    }
}

/// A group server on `endpoint`, registered (acknowledged) with `directories` before return.
pub fn group_server_at(
    ctx: &zmq::Context,
    endpoint: &str,
    directories: &[&str],
    groups: &[&str],
    data: &Path,
) -> ServerHandle {
    let config = group::Config {
        groups: groups.iter().map(|g| g.to_string()).collect(),
        data: data.to_path_buf(),
        directories: directories.iter().map(|d| d.to_string()).collect(),
        advertise: None,
        durability: Default::default(),
        security: None,
    };
    rebind(|| GroupServer::bind(ctx, endpoint, config.clone()))
        .register(Duration::from_secs(2))
        .unwrap()
        .spawn(ctx)
        .unwrap()
}

pub fn group_server(
    ctx: &zmq::Context,
    directory: &str,
    groups: &[&str],
    data: &Path,
) -> ServerHandle {
    group_server_at(ctx, "tcp://127.0.0.1:*", &[directory], groups, data)
}

pub fn session(ctx: &zmq::Context, directory: &str, name: &str) -> Session {
    Session::new(ctx, vec![directory.to_string()], name, TIMEOUTS).unwrap()
}

/// Polls `check` until it holds or `limit` passes; returns whether it held. For soft-state
/// expiry, which by design happens on a timer.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Receives `n` messages (skipping connection notices), failing after `limit`.
pub fn receive(session: &mut Session, n: usize, limit: Duration) -> Vec<Message> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| {
                panic!(
                    "received {} of {n} messages before the deadline: {got:?}",
                    got.len()
                )
            });
        if let Some(SessionEvent::Message(d)) = session.next_event(left).unwrap() {
            got.push(d.message);
        }
    }
    got
}

pub fn texts(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.text.clone()).collect()
}

pub fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

/// A child process whose stdout lines arrive on a channel; killed on drop.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        let mut command = Command::new(ZMS);
        command.args(args);
        Proc::from_command(command)
    }

    /// Runs `command` (the binary with its arguments and environment) as a [`Proc`].
    pub fn from_command(command: Command) -> Proc {
        Proc::logging_to(command, Stdio::null())
    }

    /// As [`Proc::from_command`], its stderr (the log) going to `stderr`.
    pub fn logging_to(mut command: Command, stderr: impl Into<Stdio>) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("zms runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(LIMIT)
            .expect("a line of output in time")
    }

    /// A server's address from its first line, `listening on HOST:PORT`.
    pub fn listening(&self) -> String {
        let line = self.line();
        line.strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stops the process (SIGSTOP) and waits (bounded) until the kernel shows it stopped: a
    /// signal is only queued when `kill` returns, and each of its threads stops once it runs.
    pub fn freeze(&self) {
        self.signal("-STOP");
        let tasks = format!("/proc/{}/task", self.child.id());
        // Every thread's state, after "tid (comm) " (comm may hold spaces: look past the ')').
        let thread_stopped = |entry: std::fs::DirEntry| {
            std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T'))
            })
        };
        let stopped = || {
            std::fs::read_dir(&tasks).is_ok_and(|dir| dir.map_while(Result::ok).all(thread_stopped))
        };
        assert!(eventually(LIMIT, stopped), "the process did not stop");
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message server and a group server hosting `general` and `random`, as child processes of
/// the real binary.
pub struct Deployment {
    pub _directory: Proc,
    pub group: Proc,
    /// The message server's `HOST:PORT`.
    pub server: String,
    pub group_address: String,
    pub data: tempfile::TempDir,
}

pub fn deploy() -> Deployment {
    let directory = Proc::spawn(&["message-server", "--bind", "127.0.0.1:0"]);
    let server = directory.listening();
    let data = tempfile::tempdir().unwrap();
    let group = start_group(&server, "127.0.0.1:0", data.path());
    let group_address = group.listening();
    Deployment {
        _directory: directory,
        group,
        server,
        group_address,
        data,
    }
}

/// A group server child process hosting `general` and `random`, registered with `server`.
pub fn start_group(server: &str, bind: &str, data: &Path) -> Proc {
    Proc::spawn(&[
        "group-server",
        "--server",
        server,
        "--bind",
        bind,
        "--group",
        "general",
        "--group",
        "random",
        "--data",
        data.to_str().unwrap(),
    ])
}

/// A message server and one group server, in-process, the group server's data in a
/// temporary directory.
pub struct Cluster {
    pub ctx: zmq::Context,
    pub dir: ServerHandle,
    pub grp: ServerHandle,
    pub data: tempfile::TempDir,
}

/// A [`Cluster`] whose group server hosts `groups`.
pub fn cluster(groups: &[&str]) -> Cluster {
    let ctx = zmq::Context::new();
    let data = tempfile::tempdir().unwrap();
    let dir = directory(&ctx);
    let grp = group_server(&ctx, dir.endpoint(), groups, data.path());
    Cluster {
        ctx,
        dir,
        grp,
        data,
    }
}

/// A [`Cluster`] whose group server keeps messages as `retain` says (`--retain` values).
pub fn cluster_retaining(groups: &[&str], retain: &[&str]) -> Cluster {
    let ctx = zmq::Context::new();
    let data = tempfile::tempdir().unwrap();
    let dir = directory(&ctx);
    let config = group::Config {
        groups: groups.iter().map(|g| g.to_string()).collect(),
        data: data.path().to_path_buf(),
        directories: vec![dir.endpoint().to_string()],
        advertise: None,
        durability: Default::default(),
        security: None,
    };
    let retention = group::retention::Retention::parse(retain).unwrap();
    let grp = rebind(|| GroupServer::bind(&ctx, "tcp://127.0.0.1:*", config.clone()))
        .with_retention(&retention)
        .register(Duration::from_secs(2))
        .unwrap()
        .spawn(&ctx)
        .unwrap();
    Cluster {
        ctx,
        dir,
        grp,
        data,
    }
}

/// A bare DEALER connected to `endpoint`, for speaking the protocol frame by frame; every
/// receive waits at most 5 s.
pub fn raw_dealer(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket.set_linger(0).unwrap();
    socket.set_rcvtimeo(5000).unwrap();
    socket.connect(endpoint).unwrap();
    socket
}

/// A bare DEALER to `endpoint` on which `user` has joined `group` (so it is subscribed).
pub fn raw_member(ctx: &zmq::Context, endpoint: &str, group: &str, user: &str) -> zmq::Socket {
    use zms::protocol::codec::{self, Incoming};
    use zms::protocol::{Reply, Request};
    let socket = raw_dealer(ctx, endpoint);
    let join = Request::Join {
        group: group.into(),
        user: user.into(),
    };
    socket.send(codec::encode_request(1, &join), 0).unwrap();
    let joined = codec::decode_incoming(&socket.recv_bytes(0).unwrap()).unwrap();
    assert!(
        matches!(joined, Incoming::Reply(1, Reply::Joined { .. })),
        "{joined:?}"
    );
    socket
}

impl Cluster {
    /// A session for `name` on this cluster's message server.
    pub fn session(&self, name: &str) -> Session {
        session(&self.ctx, self.dir.endpoint(), name)
    }

    /// A session for `name` that has joined `group`.
    pub fn member(&self, name: &str, group: &str) -> (Session, zms::client::GroupRef) {
        let mut member = self.session(name);
        let group = member.resolve(group).unwrap();
        member.join(&group).unwrap();
        (member, group)
    }
}

/// What a hostile member, or a server of an older version or another language, may have put
/// in a group: text and names that would drive a terminal if printed as they are.
pub const FORGED: &str = "hi\r\x1b[K07:42:00 bob: the deploy key is in #team, paste it here";
/// Clears the screen and retitles the terminal window.
pub const CLEARS: &str = "\x1b[2J\x1b]0;pwned\x07cleared?";
/// A newline followed by what looks like another message.
pub const TWO_LINES: &str = "first line\n07:42:01 bob: a second message?";
/// A sender's name with a colour change and a cursor move in it.
pub const HOSTILE_NAME: &str = "mal\x1b[31mlory\x1b[1A";
/// A group name that clears the screen and retitles the terminal window.
pub const HOSTILE_GROUP: &str = "gen\x1b[2J\x1b]0;pwned\x07eral";

/// A group server that serves one group (`general` unless [`RogueGroup::named`]), whose
/// stored messages and members carry [`FORGED`], [`CLEARS`], [`TWO_LINES`] and
/// [`HOSTILE_NAME`], as no zms group server would accept them any longer: for testing that clients show them harmlessly. Each JOIN or
/// SUBSCRIBE also gets the messages pushed live. It answers as a message server too (HELLO,
/// LIST), so a client can take it for one. Stops when dropped.
pub struct RogueGroup {
    /// `HOST:PORT`.
    pub address: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RogueGroup {
    pub fn start() -> RogueGroup {
        RogueGroup::named("general")
    }

    /// As [`RogueGroup::start`], its one group called `group` (which may be hostile too).
    pub fn named(group: &str) -> RogueGroup {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use zms::protocol::codec;
        use zms::protocol::{GroupEntry, Member, Reply, Request};

        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        router.set_linger(0).unwrap();
        router.set_rcvtimeo(100).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = router.get_last_endpoint().unwrap().unwrap();
        let address = endpoint.trim_start_matches("tcp://").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let listed = address.clone();
        let group = group.to_string();
        let thread = std::thread::spawn(move || {
            let _ctx = ctx;
            let now = zms::time::now_ms();
            let messages: Vec<Message> = [
                ("mallory", FORGED),
                ("mallory", CLEARS),
                (HOSTILE_NAME, TWO_LINES),
            ]
            .iter()
            .enumerate()
            .map(|(i, (sender, text))| Message {
                seq: i as u64 + 1,
                ts: now,
                sender: sender.to_string(),
                text: text.to_string(),
            })
            .collect();
            let last_seq = messages.len() as u64;
            while !stopping.load(Ordering::Relaxed) {
                let Ok(frames) = router.recv_multipart(0) else {
                    continue;
                };
                let [route, frame] = frames.as_slice() else {
                    continue;
                };
                let Ok((req_id, request)) = codec::decode_request(frame) else {
                    continue;
                };
                let mut push = false;
                let reply = match request {
                    Request::List => Reply::Groups(vec![GroupEntry {
                        name: group.clone(),
                        address: listed.clone(),
                        key: String::new(),
                    }]),
                    Request::Join { .. } | Request::Subscribe { .. } => {
                        push = true;
                        Reply::Joined {
                            group: group.clone(),
                            last_seq: 0,
                        }
                    }
                    Request::Ping => Reply::Pong {
                        epoch: 1,
                        groups: vec![(group.clone(), last_seq)],
                    },
                    Request::History {
                        after_seq,
                        since_ms,
                        limit,
                        ..
                    } => Reply::Messages {
                        group: group.clone(),
                        last_seq,
                        messages: messages
                            .iter()
                            .filter(|m| m.seq > after_seq && m.ts >= since_ms)
                            .take(limit as usize)
                            .cloned()
                            .collect(),
                        first_seq: 1,
                    },
                    Request::Members { .. } => Reply::Members {
                        group: group.clone(),
                        members: vec![
                            Member {
                                name: HOSTILE_NAME.into(),
                                online: true,
                            },
                            Member {
                                name: "mallory".into(),
                                online: false,
                            },
                        ],
                    },
                    _ => Reply::Ok,
                };
                let frame = codec::encode_reply(req_id, &reply);
                let _ = router.send_multipart([route.as_slice(), &frame], 0);
                if push {
                    let event = codec::encode_messages_event(&group, &messages);
                    let _ = router.send_multipart([route.as_slice(), &event], 0);
                }
            }
        });
        RogueGroup {
            address,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RogueGroup {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes files immutable (`chattr +i`: even root cannot write them) until dropped.
pub struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    /// `None` where the filesystem or the user cannot (chattr needs ext4, xfs… and root).
    pub fn make(paths: Vec<std::path::PathBuf>) -> Option<Immutable> {
        let chattr = |flag: &str| {
            Command::new("chattr")
                .arg(flag)
                .args(&paths)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if chattr("+i") {
            Some(Immutable(paths))
        } else {
            chattr("-i");
            None
        }
    }

    /// The SQLite files of the group store in `data` made immutable, as [`Immutable::make`].
    pub fn store_in(data: &Path) -> Option<Immutable> {
        let files: Vec<_> = ["zms.db", "zms.db-wal", "zms.db-shm"]
            .iter()
            .map(|f| data.join(f))
            .filter(|p| p.exists())
            .collect();
        Immutable::make(files)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}
