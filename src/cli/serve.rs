//! Servers in the foreground: `zms up` (a whole local deployment in one process), and the
//! wait for Ctrl-C or SIGTERM that every server command ends in.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use zms::directory::{owners::Owners, DirectorySecurity, DirectoryServer};
use zms::group::{self, store::Durability, GroupSecurity, GroupServer};
use zms::keys::KeyPair;
use zms::shutdown::ServerHandle;
use zms::user::output;
use zms::{errinput, transport, Result};

/// `zms up`: a message server and a group server in one process.
pub(super) fn up(
    ctx: &zmq::Context,
    bind: &str,
    group_bind: &str,
    data: PathBuf,
    secure: bool,
    web: &str,
) -> Result<()> {
    // Each secure server's key service takes the port after its own, so the default group
    // server port moves up by one to leave the message server's free.
    let group_bind = match (secure, group_bind) {
        (true, zms::DEFAULT_GROUP_BIND) => "127.0.0.1:5557",
        (_, other) => other,
    };
    let dir_keys = secure
        .then(|| KeyPair::load_or_create(&data.join("message-server.key")))
        .transpose()?;
    let dir_security = dir_keys.clone().map(|keys| DirectorySecurity {
        keys,
        allow_servers: Vec::new(),
    });
    let mut directory = DirectoryServer::bind_with(ctx, &transport::endpoint(bind)?, dir_security)?;
    if secure {
        directory = directory.with_owners(Owners::open(&data)?);
    }
    let dir_address = transport::address(directory.endpoint());
    let dir_endpoint = directory.endpoint().to_string();
    let dir_endpoint_for_web = dir_endpoint.clone();
    let dir_handle = directory.spawn(ctx)?;
    let security = match &dir_keys {
        Some(dk) => Some(GroupSecurity {
            keys: KeyPair::load_or_create(&data.join("server.key"))?,
            directory_keys: vec![dk.public.clone()],
            private: Vec::new(),
            allow: Vec::new(),
        }),
        None => None,
    };
    let config = group::Config {
        groups: vec!["general".into(), "random".into()],
        data: data.clone(),
        directories: vec![dir_endpoint],
        advertise: None,
        durability: Durability::Process,
        security,
    };
    let group = GroupServer::bind(ctx, &transport::endpoint(group_bind)?, config)?;
    let group_address = group.address().to_string();
    let group_handle = group.register(Duration::from_secs(1))?.spawn(ctx)?;
    let server_key = dir_keys.as_ref().map(|k| k.public.clone());
    let gateway = super::web::up_gateway(ctx, web, &dir_endpoint_for_web, server_key, &data)?;
    let web_url = gateway.url();
    let web_handle = gateway.spawn()?;
    let mut banner = vec![
        format!("  message server  {dir_address}"),
        format!(
            "  group server    {group_address}  (groups: general, random; data in {})",
            data.display()
        ),
    ];
    banner.push(format!("  web: {web_url}"));
    let flag = match &dir_keys {
        Some(keys) => {
            banner.push(format!(
                "  secure: CURVE on every connection; message server key {}",
                keys.public
            ));
            " --secure"
        }
        None => "",
    };
    let zms = zms::program::name();
    banner.extend([
        String::new(),
        "  connect a user from another terminal:".to_string(),
        format!("    {zms} user --server {dir_address} --name alice{flag}"),
        String::new(),
        "  Ctrl-C stops; the servers' log follows.".to_string(),
    ]);
    // Set apart from the log lines (stderr) that go to the same terminal: a blank line and a
    // rule above and below, written at once so no server thread's log line lands inside it.
    banner.insert(0, format!("\n─── zms is up {}", "─".repeat(58)));
    banner.push(format!("{}\n", "─".repeat(72)));
    announce(&banner.join("\n"));
    serve_until_signal(vec![web_handle, group_handle, dir_handle])
}

/// A line of a server's own on stdout. A server goes on serving when nobody reads it.
pub(super) fn announce(line: &str) {
    let _ = output::emit(line);
}

/// Waits for Ctrl-C or SIGTERM (or a server failing), then stops the servers in order.
pub(super) fn serve_until_signal(handles: Vec<ServerHandle>) -> Result<()> {
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
