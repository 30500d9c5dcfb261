//! Which key each server must prove to a session: the given one, the one a trusted message
//! server lists, a pin, or (trust on first use) one fetched and pinned. Connecting is the
//! session's; the pin file is `keys::Pins`'.

use std::collections::HashMap;
use std::time::Duration;

use super::{Curve, Timeouts};
use crate::keys::{KeyPair, Pins, Trusted};
use crate::protocol::GroupEntry;
use crate::{errinput, transport, Error, Result};

/// How long a pinned server's key service has to answer before its key is taken on trust:
/// a loopback or LAN answer takes milliseconds.
const KEY_CHECK_WAIT: Duration = Duration::from_millis(500);

/// How a session authenticates itself and its servers.
#[derive(Debug)]
pub struct ClientSecurity {
    /// The user's key pair: the server binds the user's name to its public half.
    pub keys: KeyPair,
    /// Server keys trusted so far (`known_servers`).
    pub pins: Pins,
    /// The message server's key as given (`--server-key`), trusted over any pin.
    pub server_key: Option<String>,
    /// Fetch and pin the key of a server not yet known (trust on first use); without it an
    /// unknown server is an error.
    pub trust_on_first_use: bool,
}

/// A session's trust in server keys, and what it learned this session.
#[derive(Default)]
pub(super) struct Trust {
    /// CURVE settings; `None` talks plaintext.
    security: Option<ClientSecurity>,
    /// Group server keys as the (trusted) message server listed them, by address.
    listed_keys: HashMap<String, String>,
    /// Keys trusted on first use and not yet told ([`Trust::take_trusted`]).
    trusted: Vec<Trusted>,
    /// Addresses whose pinned key was checked against their key service this session.
    checked: Vec<String>,
}

impl Trust {
    /// Uses CURVE from now on, with these keys and trust rules.
    pub(super) fn secure(&mut self, security: ClientSecurity) {
        self.security = Some(security);
    }

    /// Whether connections use CURVE.
    pub(super) fn is_secure(&self) -> bool {
        self.security.is_some()
    }

    /// Whether the message server listed a key for the group server at `address`.
    pub(super) fn is_listed(&self, address: &str) -> bool {
        self.listed_keys.contains_key(address)
    }

    /// Keeps the keys of the group servers a message server listed: it vouches for them.
    pub(super) fn remember_listed(&mut self, groups: &[GroupEntry]) {
        for g in groups.iter().filter(|g| !g.key.is_empty()) {
            self.listed_keys.insert(g.address.clone(), g.key.clone());
        }
    }

    /// The server keys trusted on first use since the last call, for the user to be told.
    pub(super) fn take_trusted(&mut self) -> Vec<Trusted> {
        std::mem::take(&mut self.trusted)
    }

    /// The CURVE settings for the server at `address`, or `None` without security. A message
    /// server's key is the one given, else the pinned one, else (first use) fetched and pinned;
    /// a group server's is the one the message server lists, else pinned, else fetched.
    ///
    /// # Errors
    /// A changed key, no key known without trust on first use, or no key service answering.
    pub(super) fn curve_for(
        &mut self,
        ctx: &zmq::Context,
        address: &str,
        directory: bool,
        timeouts: Timeouts,
    ) -> Result<Option<Curve>> {
        let Some(security) = self.security.as_mut() else {
            return Ok(None);
        };
        let listed = if directory {
            None
        } else {
            self.listed_keys.get(address).cloned()
        };
        let given = if directory {
            security.server_key.clone()
        } else {
            None
        };
        let server_key = match (given.or(listed), security.pins.get(address)) {
            (Some(key), _) => key,
            (None, Some(pinned)) if self.checked.iter().any(|c| c == address) => {
                pinned.to_string()
            }
            (None, Some(pinned)) => {
                // A changed key fails the CURVE handshake, which looks like silence: ask the
                // key service first, briefly, so a changed key is refused at once rather
                // than after every try has timed out. No answer: go on with the pin.
                let pinned = pinned.to_string();
                let quick = timeouts.request.min(KEY_CHECK_WAIT);
                if let Ok(key) = transport::fetch_key(ctx, address, quick) {
                    security.pins.check_or_pin(address, &key)?;
                }
                self.checked.push(address.to_string());
                pinned
            }
            (None, None) if security.trust_on_first_use => {
                let key = transport::fetch_key(ctx, address, timeouts.request)?;
                security.pins.check_or_pin(address, &key)?;
                tracing::info!(%address, %key, "trusting this server's key on first use; pinned");
                self.trusted.push(Trusted {
                    address: address.to_string(),
                    key: key.clone(),
                    path: security.pins.path().to_path_buf(),
                });
                key
            }
            (None, None) => {
                return Err(errinput!(
                    "no key known for {address}: pass --server-key KEY, or --secure to trust it on first use"
                ))
            }
        };
        Ok(Some(Curve {
            keys: security.keys.clone(),
            server_key,
        }))
    }

    /// A CURVE server whose key changed looks silent (the handshake fails); when a pinned
    /// server does not answer, ask its key service, so a replaced key reads as a warning.
    pub(super) fn explain_silence(
        &mut self,
        ctx: &zmq::Context,
        address: &str,
        timeouts: Timeouts,
        err: Error,
    ) -> Error {
        let Some(security) = self.security.as_mut() else {
            return err;
        };
        let Some(pinned) = security.pins.get(address).map(str::to_string) else {
            return err;
        };
        match transport::fetch_key(ctx, address, timeouts.request) {
            Ok(key) if key != pinned => security
                .pins
                .check_or_pin(address, &key)
                .err()
                .unwrap_or(err),
            _ => err,
        }
    }
}
