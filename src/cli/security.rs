//! The commands about keys and trust: a client session's security, a group server's, `zms
//! known-servers` and `zms keygen`. The flags are defined in `cli.rs`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use zms::client::{ClientSecurity, Session, Timeouts};
use zms::group::GroupSecurity;
use zms::keys::{self, KeyPair, Pins};
use zms::user::{output, safe};
use zms::{errinput, transport, Result};

use super::{ClientSecureArgs, PinAction, ServerSecureArgs};

/// A client session for `name`: with CURVE when asked to (`--secure`, `--server-key`) or when
/// a message server's key is already pinned, so commands work unchanged once trusted.
pub(super) fn session(
    ctx: &zmq::Context,
    server: &str,
    name: &str,
    secure: ClientSecureArgs,
) -> Result<Session> {
    let endpoints = transport::endpoints(server)?;
    let session = Session::new(ctx, endpoints.clone(), name, Timeouts::default())?;
    let wanted = secure.secure || secure.server_key.is_some();
    let dir = match keys::config_dir() {
        Ok(dir) => dir,
        Err(_) if !wanted => return Ok(session),
        Err(err) => return Err(err),
    };
    let pins = Pins::load(&dir.join("known_servers"))?;
    let pinned = endpoints
        .iter()
        .any(|e| pins.get(&transport::address(e)).is_some());
    if !wanted && !pinned {
        return Ok(session);
    }
    if let Some(key) = &secure.server_key {
        keys::raw(key)?;
    }
    let keys = KeyPair::load_or_create(&keys::user_key_path(&dir, name)?)?;
    Ok(session.with_security(ClientSecurity {
        keys,
        pins,
        server_key: secure.server_key,
        trust_on_first_use: secure.secure,
    }))
}

/// The security of a group server from its flags: its key pair (in DATA), and each message
/// server's key, given, pinned, or trusted on first use and pinned in DATA/known_servers.
pub(super) fn group_security(
    ctx: &zmq::Context,
    data: &std::path::Path,
    directories: &[String],
    secure: ServerSecureArgs,
    server_key: Option<String>,
    private: Vec<String>,
    allow: Vec<String>,
) -> Result<Option<GroupSecurity>> {
    if !secure.secure {
        if !private.is_empty() || !allow.is_empty() || server_key.is_some() {
            return Err(errinput!(
                "--private, --allow and --server-key need --secure"
            ));
        }
        return Ok(None);
    }
    let keys = KeyPair::load_or_create(&secure.key.unwrap_or_else(|| data.join("server.key")))?;
    let given: Vec<String> = server_key
        .iter()
        .flat_map(|k| k.split(','))
        .map(|k| k.trim().to_string())
        .collect();
    let mut pins = Pins::load(&data.join("known_servers"))?;
    let mut directory_keys = Vec::new();
    for (i, endpoint) in directories.iter().enumerate() {
        let address = transport::address(endpoint);
        let key = match (given.get(i), pins.get(&address)) {
            (Some(key), _) => key.clone(),
            (None, Some(pinned)) => pinned.to_string(),
            (None, None) => {
                let key = transport::fetch_key(ctx, &address, Duration::from_secs(2))?;
                tracing::warn!(%address, %key, "trusting the message server's key on first use; pinned");
                key
            }
        };
        pins.check_or_pin(&address, &key)?;
        directory_keys.push(key);
    }
    Ok(Some(GroupSecurity {
        keys,
        directory_keys,
        private,
        allow,
    }))
}

/// `zms known-servers`: list, forget or replace pinned server keys.
pub(super) fn known_servers(action: Option<PinAction>, file: Option<PathBuf>) -> Result<()> {
    let path = match file {
        Some(path) => path,
        None => keys::config_dir()?.join("known_servers"),
    };
    let mut pins = Pins::load(&path)?;
    // As clients write it: HOST:PORT, whatever form was typed.
    let canonical = |a: &str| transport::endpoint(a).map(|e| transport::address(&e));
    // Pinned addresses may be ones a server listed: shown harmlessly.
    let emit = |line: String| output::emit(&safe::field(&line));
    match action {
        None => {
            if pins.list().next().is_none() {
                let _ = writeln!(
                    std::io::stderr(),
                    "no server keys pinned in {}",
                    path.display()
                );
            }
            for (address, key) in pins.list() {
                emit(format!("{address} {key}"))?;
            }
        }
        Some(PinAction::Forget { address }) => {
            let address = canonical(&address)?;
            let key = pins.forget(&address)?;
            emit(format!("forgot {address} {key}"))?;
        }
        Some(PinAction::Pin { address, key }) => {
            let address = canonical(&address)?;
            match pins.replace(&address, &key)? {
                Some(old) if old != key => emit(format!("pinned {address} {key} (was {old})"))?,
                _ => emit(format!("pinned {address} {key}"))?,
            }
        }
    }
    Ok(())
}

/// `zms keygen`.
pub(super) fn keygen(out: Option<PathBuf>) -> Result<()> {
    let pair = KeyPair::generate()?;
    match out {
        Some(path) => {
            pair.save(&path)?;
            output::emit(&pair.public)?;
            eprintln!(
                "key pair written to {} (keep it secret; the line above is the public key)",
                path.display()
            );
        }
        None => {
            output::emit(&format!("public = \"{}\"", pair.public))?;
            output::emit(&format!("secret = \"{}\"", pair.secret))?;
        }
    }
    Ok(())
}
