//! The command line: clap definitions, turned into library calls. Kept out of the library so
//! the library stays usable without clap.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use zms::directory::DirectoryServer;
use zms::group::{self, store::Durability, GroupServer};
use zms::shutdown::ServerHandle;
use zms::user::{self, output::Format, Action};
use zms::{errinput, transport, Result};

/// zms: durable group messaging on ZeroMQ.
#[derive(Debug, Parser)]
#[command(name = "zms", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter for stderr (e.g. info, debug, zms=trace); servers default to info, clients to warn.
    #[arg(long, global = true, env = "ZMS_LOG")]
    pub log: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a message server: the directory of groups (prompts for the bind address on a terminal).
    MessageServer {
        /// Address to bind, HOST:PORT (port 0 picks a free one).
        #[arg(long, env = "ZMS_BIND")]
        bind: Option<String>,
    },
    /// Run a group server hosting groups and register them with the message server(s).
    GroupServer(GroupArgs),
    /// The interactive client (prompts for the server and your name on a terminal).
    User {
        /// Message server address(es), HOST:PORT[,HOST:PORT…].
        #[arg(long, env = "ZMS_SERVER")]
        server: Option<String>,
        /// Your display name.
        #[arg(long, env = "ZMS_NAME")]
        name: Option<String>,
    },
    /// List the groups the message server knows.
    List(ClientArgs),
    /// Join a group: GROUP is a name, NAME@HOST:PORT, or a group server's HOST:PORT.
    Join {
        group: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Leave a group.
    Leave {
        group: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send TEXT to a group (without TEXT, send each line of stdin).
    Send {
        group: String,
        text: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a group's stored messages, oldest first.
    History {
        group: String,
        /// Only messages at or after TIME: RFC 3339, unix milliseconds, or a duration ago (10m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// At most N messages: the first N since TIME, or without --since the last N.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a group's new messages live until interrupted.
    Tail {
        group: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a group's members and who is online.
    Members {
        group: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a whole local deployment: a message server and a group server with `general` and `random`.
    Up {
        /// Message server address.
        #[arg(long, default_value = zms::DEFAULT_DIRECTORY)]
        bind: String,
        /// Group server address.
        #[arg(long, default_value = zms::DEFAULT_GROUP_BIND)]
        group_bind: String,
        /// Data directory of the group server.
        #[arg(long, default_value = zms::DEFAULT_DATA_DIR)]
        data: PathBuf,
    },
    /// Load-test zms (fanout, latency, rtt, ingest, history, scale), bare libzmq (raw) or NATS;
    /// one JSON line per workload.
    Bench(zms::bench::BenchArgs),
}

/// Flags of a group server.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Message server address(es) to register with, HOST:PORT[,HOST:PORT…].
    #[arg(long, env = "ZMS_SERVER")]
    server: Option<String>,
    /// Address to bind, HOST:PORT (port 0 picks a free one).
    #[arg(long, env = "ZMS_BIND")]
    bind: Option<String>,
    /// Address to announce to users, when it differs from --bind (e.g. behind 0.0.0.0).
    #[arg(long)]
    advertise: Option<String>,
    /// A group to host (repeat for more); default `general`.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Directory for the SQLite database.
    #[arg(long, env = "ZMS_DATA", default_value = zms::DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// fsync every batch before acknowledging: survive power loss, not just a crash.
    #[arg(long)]
    fsync: bool,
    /// Refuse new messages once the database reaches this many MiB (reads go on).
    #[arg(long, value_name = "MIB")]
    max_storage_mib: Option<u64>,
}

/// Flags shared by the one-shot commands.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Message server address(es), HOST:PORT[,HOST:PORT…].
    #[arg(long, env = "ZMS_SERVER", default_value = zms::DEFAULT_DIRECTORY)]
    server: String,
    /// Your display name.
    #[arg(long, env = "ZMS_NAME")]
    name: Option<String>,
    /// Print JSON Lines.
    #[arg(long)]
    json: bool,
}

impl Command {
    /// The log level when none is given: servers tell what they do, clients keep quiet.
    pub fn default_log(&self) -> &'static str {
        match self {
            Command::MessageServer { .. } | Command::GroupServer(_) | Command::Up { .. } => "info",
            _ => "warn",
        }
    }

    /// Runs the command.
    ///
    /// # Errors
    /// Whatever stopped it, as one line for the user.
    pub fn run(self) -> Result<()> {
        let ctx = zmq::Context::new();
        let interactive = std::io::stdin().is_terminal();
        match self {
            Command::MessageServer { bind } => {
                let bind = ask_or(
                    bind,
                    interactive,
                    "Address to bind (IP:port)",
                    zms::DEFAULT_DIRECTORY,
                )?;
                let server = DirectoryServer::bind(&ctx, &transport::endpoint(&bind)?)?;
                println!("listening on {}", transport::address(server.endpoint()));
                serve_until_signal(vec![server.spawn(&ctx)?])
            }
            Command::GroupServer(args) => {
                let server = ask_or(
                    args.server,
                    interactive,
                    "Message server address (IP:port)",
                    zms::DEFAULT_DIRECTORY,
                )?;
                let bind = ask_or(
                    args.bind,
                    interactive,
                    "This group server's address (IP:port)",
                    zms::DEFAULT_GROUP_BIND,
                )?;
                let groups = if args.groups.is_empty() {
                    vec!["general".to_string()]
                } else {
                    args.groups
                };
                let config = group::Config {
                    groups,
                    data: args.data,
                    directories: transport::endpoints(&server)?,
                    advertise: args.advertise,
                    durability: if args.fsync {
                        Durability::Power
                    } else {
                        Durability::Process
                    },
                };
                // Registered (or given up waiting) before saying so: "listening" means listed.
                let mut server = GroupServer::bind(&ctx, &transport::endpoint(&bind)?, config)?;
                if let Some(mib) = args.max_storage_mib {
                    server = server.limit_storage(mib * 1024 * 1024)?;
                }
                let server = server.register(Duration::from_secs(1))?;
                println!("listening on {}", server.address());
                let handle = server.spawn(&ctx)?;
                serve_until_signal(vec![handle])
            }
            Command::User { server, name } => {
                let server = ask_or(
                    server,
                    interactive,
                    "Message server address (IP:port)",
                    zms::DEFAULT_DIRECTORY,
                )?;
                let name = match name {
                    Some(n) => n,
                    None if interactive => user::prompt("Your name", None)?,
                    None => {
                        return Err(errinput!(
                            "--name is required when stdin is not a terminal (or set ZMS_NAME)"
                        ))
                    }
                };
                user::shell::run(&ctx, transport::endpoints(&server)?, &name)
            }
            Command::List(c) => c.run(&ctx, Action::List),
            Command::Join { group, client } => client.run(&ctx, Action::Join(group)),
            Command::Leave { group, client } => client.run(&ctx, Action::Leave(group)),
            Command::Send {
                group,
                text,
                client,
            } => client.run(&ctx, Action::Send(group, text)),
            Command::History {
                group,
                since,
                limit,
                client,
            } => client.run(
                &ctx,
                Action::History {
                    group,
                    since,
                    limit,
                },
            ),
            Command::Tail { group, client } => client.run(&ctx, Action::Tail(group)),
            Command::Members { group, client } => client.run(&ctx, Action::Members(group)),
            Command::Up {
                bind,
                group_bind,
                data,
            } => up(&ctx, &bind, &group_bind, data),
            Command::Bench(args) => zms::bench::run(args),
        }
    }
}

impl ClientArgs {
    fn run(self, ctx: &zmq::Context, action: Action) -> Result<()> {
        // LIST needs no name; everything else acts as someone.
        let name = match (self.name, &action) {
            (Some(n), _) => n,
            (None, Action::List) => "anonymous".to_string(),
            (None, _) => return Err(errinput!("--name is required (or set ZMS_NAME)")),
        };
        let format = if self.json {
            Format::Json
        } else {
            Format::Plain
        };
        user::run(
            ctx,
            transport::endpoints(&self.server)?,
            &name,
            format,
            action,
        )
    }
}

/// The flag's value, or on a terminal the user's answer, or the default.
fn ask_or(
    value: Option<String>,
    interactive: bool,
    question: &str,
    default: &str,
) -> Result<String> {
    match value {
        Some(v) => Ok(v),
        None if interactive => user::prompt(question, Some(default)),
        None => Ok(default.to_string()),
    }
}

/// `zms up`: a message server and a group server in one process.
fn up(ctx: &zmq::Context, bind: &str, group_bind: &str, data: PathBuf) -> Result<()> {
    let directory = DirectoryServer::bind(ctx, &transport::endpoint(bind)?)?;
    let dir_address = transport::address(directory.endpoint());
    let dir_handle = directory.spawn(ctx)?;
    let config = group::Config {
        groups: vec!["general".into(), "random".into()],
        data: data.clone(),
        directories: vec![dir_handle.endpoint().to_string()],
        advertise: None,
        durability: Durability::Process,
    };
    let group = GroupServer::bind(ctx, &transport::endpoint(group_bind)?, config)?;
    let group_address = group.address().to_string();
    let group_handle = group.register(Duration::from_secs(1))?.spawn(ctx)?;
    println!("zms is up");
    println!("  message server  {dir_address}");
    println!(
        "  group server    {group_address}  (groups: general, random; data in {})",
        data.display()
    );
    println!("connect a user from another terminal:");
    println!("  cargo run --release -- user --server {dir_address} --name alice");
    println!("Ctrl-C stops.");
    serve_until_signal(vec![group_handle, dir_handle])
}

/// Waits for Ctrl-C or SIGTERM (or a server failing), then stops the servers in order.
fn serve_until_signal(handles: Vec<ServerHandle>) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| errinput!("cannot handle signals: {e}"))?;
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if handles.iter().any(|h| !h.is_running()) => {
                break
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let mut result = Ok(());
    for handle in handles {
        if let Err(err) = handle.stop() {
            result = Err(err);
        }
    }
    result
}
