//! The command line: clap definitions, turned into library calls. Kept out of the library so
//! the library stays usable without clap.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use zms::directory::{owners::Owners, DirectorySecurity, DirectoryServer};
use zms::group::{self, limits::Limits, retention::Retention, store::Durability, GroupServer};
use zms::keys::{self, KeyPair};
use zms::peers::PeerCaps;
use zms::user::{self, mention::Notify, output, output::Format, Action};
use zms::{errinput, transport, Result};

mod admin;
mod chat;
mod security;
mod serve;
mod web;

use security::{group_security, keygen, known_servers, session};
use serve::{announce, serve_until_signal, up};

/// zms: durable group messaging on ZeroMQ.
#[derive(Debug, Parser)]
#[command(name = "zms", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter for stderr (e.g. info, debug, zms=trace); servers default to info, clients to warn.
    #[arg(long, global = true, env = "ZMS_LOG", value_name = "FILTER", value_parser = log_filter)]
    pub log: Option<String>,
    /// Log lines as text for people, or as JSON objects, one a line, for machines.
    #[arg(
        long,
        global = true,
        env = "ZMS_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,
    /// Options from this TOML file (`zms config example` prints one); flags and ZMS_*
    /// variables win over it.
    #[arg(long, global = true, env = "ZMS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per line, its fields at the top (group, peer, user, code…).
    Json,
}

/// A log filter as `--log` takes it: levels (`info`) and `TARGET=LEVEL` directives. A bare word
/// that is not a level is taken for a typo rather than a target (`zms` and `zms::…` aside).
pub fn log_filter(filter: &str) -> std::result::Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let plain = !directive.contains(['=', '[', ':']);
        let known = LEVELS.contains(&directive.to_lowercase().as_str()) || directive == "zms";
        if plain && !known {
            return Err(format!(
                "'{directive}' is not a level ({}) nor TARGET=LEVEL",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(filter.to_string())
}

// Parsed once a run: the group server's many flags make its variant large, which costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a message server: the directory of groups (prompts for the bind address on a terminal).
    MessageServer {
        /// Address to bind, HOST:PORT (port 0 picks a free one).
        #[arg(long, env = "ZMS_BIND")]
        bind: Option<String>,
        #[command(flatten)]
        secure: ServerSecureArgs,
        /// With --secure: admit only group servers with this public key (repeat for more).
        #[arg(long = "allow-server", value_name = "KEY", allow_hyphen_values = true)]
        allow_servers: Vec<String>,
        /// Most groups listed, over all group servers; more registrations are refused.
        #[arg(long, default_value_t = 100_000)]
        max_groups: usize,
        /// With --secure: a key that may take group names and addresses over from their owners
        /// (a group server started with --replace holding it); repeat for more. The message
        /// server's own key is always one.
        #[arg(long = "operator", value_name = "KEY", allow_hyphen_values = true)]
        operators: Vec<String>,
        /// With --secure: where the bindings of names and addresses to keys are kept
        /// (message-server.db); default: the data directory's `message-server`.
        #[arg(long, env = "ZMS_DATA", value_name = "DIR")]
        data: Option<PathBuf>,
        #[command(flatten)]
        connections: ConnectionArgs,
        /// Serve Prometheus metrics at http://HOST:PORT/metrics and a health check at /healthz.
        #[arg(long, value_name = "HOST:PORT")]
        metrics: Option<String>,
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
        #[command(flatten)]
        secure: ClientSecureArgs,
        /// How a mention of you (@NAME) or a direct message gets your attention: the terminal
        /// bell, a desktop notification (OSC 777 and 9, where the terminal supports them),
        /// both, or none.
        #[arg(long, env = "ZMS_NOTIFY", default_value_t = Notify::Both)]
        notify: Notify,
        /// No bell and no notification (as --notify none).
        #[arg(long)]
        quiet: bool,
    },
    /// The web client: serve its page and bridge browsers to the servers over WebSocket.
    Web(web::WebArgs),
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
    /// Send TEXT to a group (without TEXT, send each line of stdin). Sends of this user to
    /// this group whose outcome is unknown (no answer) are kept and sent again first.
    Send {
        group: String,
        text: Option<String>,
        /// The message's client id: sending it again under the same id stores it at most once.
        #[arg(long, requires = "text")]
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a group's stored messages, oldest first.
    History {
        group: String,
        /// Only messages at or after TIME: RFC 3339, a local date or date-time (2026-11-24,
        /// 2026-11-24T10:00), unix seconds or milliseconds, or a duration ago (10m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// At most N messages: the first N since TIME, or without --since the last N.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send TEXT to USER in your conversation with them (without TEXT, each line of stdin).
    Dm {
        user: String,
        text: Option<String>,
        /// The message's client id: sending it again under the same id stores it at most once.
        #[arg(long, requires = "text")]
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow groups' new messages live until interrupted (`@USER` for a conversation); with
    /// several groups or --all each line starts with its group.
    Tail {
        #[arg(required_unless_present = "all")]
        groups: Vec<String>,
        /// Every group and conversation you are a member of.
        #[arg(long, conflicts_with = "groups")]
        all: bool,
        /// Start with each group's last N messages.
        #[arg(long, value_name = "N")]
        last: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the recent messages that mention you (@NAME), over every group you are in, oldest
    /// first, each line starting with its group.
    Mentions {
        /// How many of each group's last messages to look through.
        #[arg(long, value_name = "N", default_value_t = user::mention::SCAN_DEFAULT)]
        last: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a group's members and who is online.
    Members {
        group: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove USER from GROUP (an operator: with --secure, a key the group server names with
    /// --operator; without, a client on the group server's host). They may join again.
    Kick {
        group: String,
        user: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove USER from GROUP and refuse their joins from now on (an operator, as for kick).
    Ban {
        group: String,
        user: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Let a key into a private group (you must be a member); KEY is what `zms whoami` prints.
    Invite {
        group: String,
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show every server the message server(s) know and each group server's groups and health.
    Status {
        /// Redraw every SECONDS until interrupted (Ctrl-C).
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
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
        /// CURVE on every connection (keys kept in the data directory). The group server
        /// then binds 127.0.0.1:5557, since each secure server's key service takes the next port.
        #[arg(long)]
        secure: bool,
        /// Where the web client is served (`zms web`); port 0 for any free one.
        #[arg(long, default_value = "127.0.0.1:8080")]
        web: String,
    },
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Make a CURVE key pair: print it, or write it to a file (kept secret: mode 0600).
    Keygen {
        /// Write the pair here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the server keys trusted so far (pinned on first use), or forget or replace one.
    KnownServers {
        #[command(subcommand)]
        action: Option<PinAction>,
        /// The pin file; default: known_servers in the config directory (a group server keeps
        /// its own in DATA/known_servers).
        #[arg(long, value_name = "FILE", global = true)]
        file: Option<PathBuf>,
    },
    /// Print the public key of a user (made on first use), to give to whoever invites you.
    Whoami {
        /// Your display name.
        #[arg(long, env = "ZMS_NAME")]
        name: String,
    },
    /// Config files of the servers (`zms config example`).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print the completion script for SHELL (e.g. `zms completions bash > /etc/bash_completion.d/zms`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (`zms man > zms.1; man ./zms.1`).
    Man,
    #[command(flatten)]
    Chat(chat::ChatCommand),
}

/// What `zms config` does.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print a commented config file with every server option, set to its default.
    Example,
}

/// What `zms known-servers` does besides listing.
#[derive(Debug, Subcommand)]
pub enum PinAction {
    /// Forget a server's key: the next connection with --secure trusts the key it offers.
    Forget {
        /// The server, HOST:PORT.
        address: String,
    },
    /// Pin KEY for a server, replacing the key pinned (a key replaced on purpose).
    Pin {
        /// The server, HOST:PORT.
        address: String,
        /// Its new public key (what the server prints as `public key`).
        #[arg(allow_hyphen_values = true)]
        key: String,
    },
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
    /// Keep messages by age (30d, 12h), count (1000msgs) or size (100MiB), or forever (the
    /// default); GROUP=POLICY for one group (repeat for more). Older ones are trimmed.
    #[arg(long = "retain", value_name = "[GROUP=]POLICY")]
    retain: Vec<String>,
    #[command(flatten)]
    secure: ServerSecureArgs,
    /// With --secure: the message server's key(s), comma-separated like --server; otherwise
    /// the pinned key, or the one it offers on first use (pinned in DATA/known_servers).
    #[arg(
        long,
        env = "ZMS_SERVER_KEY",
        value_name = "KEY[,KEY…]",
        allow_hyphen_values = true
    )]
    server_key: Option<String>,
    /// With --secure: a group only allowed or invited keys may join (repeat for more).
    #[arg(long = "private", value_name = "GROUP")]
    private: Vec<String>,
    /// With --secure: a public key allowed into every private group (repeat for more).
    #[arg(long = "allow", value_name = "KEY", allow_hyphen_values = true)]
    allow: Vec<String>,
    /// With --secure: a user key (what `zms whoami` prints) that may kick members; without
    /// --secure, clients on this host may (repeat for more).
    #[arg(long = "operator", value_name = "KEY", allow_hyphen_values = true)]
    operators: Vec<String>,
    /// Take the groups over from the group servers that hold them on the message server
    /// (with --secure, only if this server's key is one of its --operator keys).
    #[arg(long)]
    replace: bool,
    /// Longest message text, in KiB (at most 64).
    #[arg(long, default_value_t = 64, value_name = "KIB")]
    max_message_kib: usize,
    /// Messages a second each user may send (bursts of twice that); 0 for no limit. Default:
    /// 100 with --secure; none without, where names are not bound to keys.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Members per group.
    #[arg(long, default_value_t = 10_000)]
    max_members: usize,
    /// Connections receiving live messages, over all groups.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_live_connections: usize,
    /// With --secure: user names one key may hold on this server (so no one peer can fill a
    /// group's member cap).
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_names_per_key: usize,
    /// Without --secure: user names one IP address may make members on this server (so no one
    /// peer can fill a group's member cap).
    #[arg(long, default_value_t = Limits::default().max_names_per_address, value_name = "N")]
    max_names_per_address: usize,
    #[command(flatten)]
    connections: ConnectionArgs,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics and a health check at /healthz.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
    /// Cluster mode: keep groups, messages and leases in this PostgreSQL database (a URL or a
    /// key=value string), shared with other group servers; each hosts its share of the groups.
    #[arg(long, env = "ZMS_STORE", value_name = "postgres://…")]
    store: Option<String>,
    /// Cluster mode: how long a group's lease outlives its owner's last heartbeat, in ms.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    lease_ms: u64,
}

impl GroupArgs {
    /// The limits these flags ask for.
    fn limits(&self) -> Limits {
        let rate = match (self.rate_limit, self.secure.secure) {
            (Some(0), _) | (None, false) => None,
            (Some(n), _) => Some(n),
            (None, true) => Some(DEFAULT_SECURE_RATE),
        };
        Limits {
            max_text: self.max_message_kib.saturating_mul(1024),
            rate,
            max_members: self.max_members,
            max_connections: self.max_live_connections,
            max_names_per_key: self.max_names_per_key,
            max_names_per_address: self.max_names_per_address,
            peers: self.connections.caps(),
            ..Limits::default()
        }
    }
}

/// Connection caps of a server.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Connections in all (at most 3/4 of the open-descriptor limit); more are closed at once.
    #[arg(long, default_value_t = PeerCaps::default().total, value_name = "N")]
    max_connections: usize,
    /// Connections from one IP address; more are closed at once.
    #[arg(long, default_value_t = PeerCaps::default().per_address, value_name = "N")]
    max_connections_per_address: usize,
}

impl ConnectionArgs {
    /// The caps these flags ask for.
    fn caps(&self) -> PeerCaps {
        PeerCaps {
            total: self.max_connections,
            per_address: self.max_connections_per_address,
            ..PeerCaps::default()
        }
    }
}

/// Messages a second per user on a secure group server unless told otherwise.
const DEFAULT_SECURE_RATE: u32 = 100;

/// Security flags of a server.
#[derive(Debug, Args)]
pub struct ServerSecureArgs {
    /// CURVE on every connection; plaintext peers are refused. A key service on the next port
    /// up gives the public key to clients that pin it on first use.
    #[arg(long)]
    secure: bool,
    /// The server's key pair file (made if missing); default: in the data or config directory.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

/// Security flags of a client.
#[derive(Debug, Args)]
pub struct ClientSecureArgs {
    /// Use CURVE, trusting a server's key on first use and pinning it (as SSH does). Once a
    /// message server's key is pinned, CURVE is used for it without this flag.
    #[arg(long, env = "ZMS_SECURE")]
    secure: bool,
    /// The message server's public key, instead of trusting it on first use.
    #[arg(
        long,
        env = "ZMS_SERVER_KEY",
        value_name = "KEY",
        allow_hyphen_values = true
    )]
    server_key: Option<String>,
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
    #[command(flatten)]
    secure: ClientSecureArgs,
}

impl Cli {
    /// Where the log goes instead of stderr: an interactive `zms user` writes it to a file,
    /// so log lines never land on the prompt, unless `--log` (or ZMS_LOG) asks for stderr.
    pub fn log_file(&self) -> Option<PathBuf> {
        match (&self.command, &self.log) {
            (Command::User { .. }, None) if std::io::stdin().is_terminal() => {
                user::shell::log_path()
            }
            _ => None,
        }
    }
}

impl Command {
    /// The log level when none is given: servers tell what they do, clients keep quiet.
    pub fn default_log(&self) -> &'static str {
        match self {
            Command::MessageServer { .. }
            | Command::GroupServer(_)
            | Command::Up { .. }
            | Command::Web(_) => "info",
            _ => "warn",
        }
    }

    /// Runs the command; `log` is the file the log goes to instead of stderr, if any.
    ///
    /// # Errors
    /// Whatever stopped it, as one line for the user.
    pub fn run(self, log: Option<&std::path::Path>) -> Result<()> {
        match zms::transport::raise_fd_limit() {
            Ok(limit) => tracing::debug!(limit, "open descriptors"),
            Err(err) => tracing::warn!(%err, "cannot raise the limit on open descriptors"),
        }
        let ctx = zmq::Context::new();
        let interactive = std::io::stdin().is_terminal();
        match self {
            Command::MessageServer {
                bind,
                secure,
                allow_servers,
                max_groups,
                operators,
                data,
                connections,
                metrics,
            } => {
                let bind = ask_or(
                    bind,
                    interactive,
                    "Address to bind (IP:port)",
                    zms::DEFAULT_DIRECTORY,
                )?;
                let security = match secure.secure {
                    true => {
                        let path = secure.key.map_or_else(
                            || keys::config_dir().map(|d| d.join("message-server.key")),
                            Ok,
                        )?;
                        allow_servers
                            .iter()
                            .try_for_each(|k| keys::raw(k).map(drop))?;
                        Some(DirectorySecurity {
                            keys: KeyPair::load_or_create(&path)?,
                            allow_servers,
                        })
                    }
                    false if !allow_servers.is_empty() || !operators.is_empty() => {
                        return Err(errinput!("--allow-server and --operator need --secure"))
                    }
                    false => None,
                };
                operators.iter().try_for_each(|k| keys::raw(k).map(drop))?;
                let owners = match &security {
                    Some(_) => Some(Owners::open(&match data {
                        Some(dir) => dir,
                        None => zms::dirs::data_path("message-server")?,
                    })?),
                    None => None,
                };
                let public = security.as_ref().map(|s| s.keys.public.clone());
                let mut server =
                    DirectoryServer::bind_with(&ctx, &transport::endpoint(&bind)?, security)?
                        .with_operators(operators)
                        .with_peer_caps(connections.caps());
                if let Some(owners) = owners {
                    server = server.with_owners(owners);
                }
                let mut server = server.with_max_groups(max_groups);
                if let Some(bind) = metrics {
                    server = server.serve_metrics(&bind)?;
                }
                announce(&format!(
                    "listening on {}",
                    transport::address(server.endpoint())
                ));
                if let Some(address) = server.metrics_address() {
                    announce(&format!("metrics on http://{address}/metrics"));
                }
                if let Some(public) = public {
                    announce(&format!("public key {public}"));
                }
                serve_until_signal(vec![server.spawn(&ctx)?])
            }
            Command::GroupServer(args) => {
                let limits = args.limits();
                let retention = Retention::parse(&args.retain)?;
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
                let groups = if args.groups.is_empty() && args.store.is_none() {
                    vec!["general".to_string()]
                } else {
                    args.groups
                };
                let directories = transport::endpoints(&server)?;
                if !args.operators.is_empty() && !args.secure.secure {
                    return Err(errinput!("--operator needs --secure"));
                }
                args.operators
                    .iter()
                    .try_for_each(|k| keys::raw(k).map(drop))?;
                let security = group_security(
                    &ctx,
                    &args.data,
                    &directories,
                    args.secure,
                    args.server_key,
                    args.private,
                    args.allow,
                )?;
                let config = group::Config {
                    groups,
                    data: args.data,
                    directories,
                    advertise: args.advertise,
                    durability: if args.fsync {
                        Durability::Power
                    } else {
                        Durability::Process
                    },
                    security,
                };
                // Registered before saying so: "listening" means listed. A refusal ends here
                // with its reason; a message server that is down is said, and retried.
                let endpoint = transport::endpoint(&bind)?;
                let mut server = match &args.store {
                    Some(url) => {
                        let lease = Duration::from_millis(args.lease_ms);
                        if lease.as_millis() < 2 * u128::from(zms::protocol::HEARTBEAT_MS) {
                            return Err(zms::errinput!(
                                "--lease-ms must be at least two heartbeats ({} ms)",
                                2 * zms::protocol::HEARTBEAT_MS
                            ));
                        }
                        GroupServer::bind_cluster(&ctx, &endpoint, config, url, lease)?
                    }
                    None => GroupServer::bind(&ctx, &endpoint, config)?.with_replace(args.replace),
                }
                .with_limits(limits)?
                .with_retention(&retention)
                .with_operators(args.operators);
                if let Some(mib) = args.max_storage_mib {
                    server = server.limit_storage(mib * 1024 * 1024)?;
                }
                if let Some(bind) = &args.metrics {
                    server = server.serve_metrics(bind)?;
                    if let Some(address) = server.metrics_address() {
                        announce(&format!("metrics on http://{address}/metrics"));
                    }
                }
                let server = server.register(Duration::from_secs(1))?;
                let address = server.address().to_string();
                if let Some(why) = server.unregistered() {
                    announce(&format!(
                        "serving on {address} but not registered yet ({why}); retrying every second"
                    ));
                }
                let server =
                    server.on_registered(move || announce(&format!("listening on {address}")));
                let handle = server.spawn(&ctx)?;
                serve_until_signal(vec![handle])
            }
            Command::User {
                server,
                name,
                secure,
                notify,
                quiet,
            } => {
                let notify = if quiet { Notify::None } else { notify };
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
                user::shell::run(&ctx, session(&ctx, &server, &name, secure)?, log, notify)
            }
            Command::Web(args) => args.run(&ctx),
            Command::List(c) => c.run(&ctx, Action::List),
            Command::Join { group, client } => client.run(&ctx, Action::Join(group)),
            Command::Leave { group, client } => client.run(&ctx, Action::Leave(group)),
            Command::Send {
                group,
                text,
                id,
                client,
            } => client.run(&ctx, Action::Send { group, text, id }),
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
            Command::Dm {
                user,
                text,
                id,
                client,
            } => {
                // `zms dm @bob` reads as well as `zms dm bob`.
                let group = format!("@{}", user.strip_prefix('@').unwrap_or(&user));
                client.run(&ctx, Action::Send { group, text, id })
            }
            Command::Tail {
                groups,
                all,
                last,
                client,
            } => client.run(&ctx, Action::Tail { groups, all, last }),
            Command::Mentions { last, client } => client.run(&ctx, Action::Mentions { last }),
            Command::Members { group, client } => client.run(&ctx, Action::Members(group)),
            Command::Invite { group, key, client } => client.run(&ctx, Action::Invite(group, key)),
            Command::Status { watch, client } => client.status(&ctx, watch),
            Command::Kick {
                group,
                user,
                client,
            } => client.run(&ctx, Action::Kick(group, user)),
            Command::Ban {
                group,
                user,
                client,
            } => client.run(&ctx, Action::Ban(group, user)),
            Command::Up {
                bind,
                group_bind,
                data,
                secure,
                web,
            } => up(&ctx, &bind, &group_bind, data, secure, &web),
            Command::Admin(admin) => admin.run(&ctx),
            Command::Keygen { out } => keygen(out),
            Command::KnownServers { action, file } => known_servers(action, file),
            Command::Whoami { name } => {
                let path = keys::user_key_path(&keys::config_dir()?, &name)?;
                output::emit(&KeyPair::load_or_create(&path)?.public)?;
                Ok(())
            }
            Command::Config {
                action: ConfigAction::Example,
            } => output::emit(crate::config::example().trim_end()),
            Command::Completions { shell } => crate::packaging::completions(shell),
            Command::Man => crate::packaging::man(),
            Command::Chat(command) => {
                let (client, action) = command.into_action()?;
                client.run(&ctx, action)
            }
        }
    }
}

impl ClientArgs {
    /// `zms status`: one try of 2 s per server, so one that does not answer costs little.
    fn status(self, ctx: &zmq::Context, watch: Option<u64>) -> Result<()> {
        let name = self.name.unwrap_or_else(|| "status".to_string());
        let format = if self.json {
            Format::Json
        } else {
            Format::Plain
        };
        let session =
            session(ctx, &self.server, &name, self.secure)?.with_timeouts(zms::client::Timeouts {
                request: Duration::from_secs(2),
                tries: 1,
            });
        let watch = watch.map(|s| Duration::from_secs(s.max(1)));
        user::status::run(session, format, watch)
    }

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
            session(ctx, &self.server, &name, self.secure)?,
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
