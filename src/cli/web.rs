//! `zms web`: the web gateway in the foreground, and the one `zms up` starts beside its servers.

use std::path::PathBuf;

use clap::Args;
use zms::web::tls::TlsFiles;
use zms::web::{Config, Gateway, Limits, WebSecurity};
use zms::{keys, transport, Result};

use super::serve::{announce, serve_until_signal};

/// Flags of `zms web`.
#[derive(Debug, Args)]
pub struct WebArgs {
    /// Where browsers connect: HOST:PORT (port 0 for any free one).
    #[arg(long, env = "ZMS_WEB_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Message server address(es), HOST:PORT[,HOST:PORT…].
    #[arg(long, env = "ZMS_SERVER", default_value = zms::DEFAULT_DIRECTORY)]
    server: String,
    /// A page origin allowed to use the gateway besides its own (e.g. https://chat.example.org
    /// behind a proxy); repeat for more.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    origins: Vec<String>,
    /// Browser connections at once.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Browser connections at once from one IP address.
    #[arg(long, default_value_t = Limits::default().max_per_address)]
    max_per_address: usize,
    /// Secure mode: browsers sign in with their user's CURVE key (derived in the page from a
    /// passphrase, or pasted), and the gateway speaks CURVE to the servers with it.
    #[arg(long, env = "ZMS_SECURE")]
    secure: bool,
    /// The message server's public key, instead of trusting it on first use (secure mode).
    #[arg(long, env = "ZMS_SERVER_KEY", value_name = "KEY")]
    server_key: Option<String>,
    /// Serve HTTPS and WSS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(
        long,
        env = "ZMS_WEB_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM); needs --tls-cert.
    #[arg(
        long,
        env = "ZMS_WEB_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

impl WebArgs {
    /// Serves until Ctrl-C or SIGTERM.
    ///
    /// # Errors
    /// A bad address or key, or an address that cannot be bound.
    pub fn run(self, ctx: &zmq::Context) -> Result<()> {
        let secure = match self.secure || self.server_key.is_some() {
            false => None,
            true => {
                if let Some(key) = &self.server_key {
                    keys::raw(key)?;
                }
                Some(WebSecurity {
                    server_key: self.server_key,
                    pins: keys::config_dir()?.join("known_servers"),
                    trust_on_first_use: self.secure,
                })
            }
        };
        let defaults = Limits::default();
        let config = Config {
            bind: self.bind,
            directories: transport::endpoints(&self.server)?,
            origins: self.origins,
            limits: Limits {
                max_connections: self.max_connections.max(1),
                max_per_address: self.max_per_address.max(1),
                ..defaults
            },
            secure,
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| TlsFiles { cert, key }),
        };
        let gateway = Gateway::bind(ctx, config)?;
        announce(&format!("listening on {}", gateway.url()));
        serve_until_signal(vec![gateway.spawn()?])
    }
}

/// `zms up`'s gateway on loopback, beside its servers; secure when they are, trusting the
/// message server's key as given.
pub(super) fn up_gateway(
    ctx: &zmq::Context,
    bind: &str,
    directory: &str,
    server_key: Option<String>,
    data: &std::path::Path,
) -> Result<Gateway> {
    let secure = server_key.map(|key| WebSecurity {
        server_key: Some(key),
        pins: data.join("web-known_servers"),
        trust_on_first_use: false,
    });
    let config = Config {
        bind: bind.to_string(),
        directories: vec![directory.to_string()],
        origins: Vec::new(),
        limits: Limits::default(),
        secure,
        tls: None,
    };
    // A second deployment on the same machine (or the port in other use) still gets its page,
    // on a free port: the banner says which.
    Gateway::bind(ctx, config.clone()).or_else(|err| {
        let host = bind.rsplit_once(':').map_or(bind, |(host, _)| host);
        tracing::warn!(%err, "serving the web client on a free port instead");
        Gateway::bind(
            ctx,
            Config {
                bind: format!("{host}:0"),
                ..config
            },
        )
    })
}
