//! Secure mode (`zms web --secure`): who a browser is, and how the gateway proves it onward.
//!
//! A zms user *is* a CURVE key: a secure group server binds each name to the first key that
//! used it (PROTOCOL.md, "Identity"). So the gateway holds no keys and keeps no accounts. A
//! browser signs in with its user's CURVE secret key, which the page derives from a
//! passphrase in the browser (PBKDF2-SHA256 over the name and passphrase, WebCrypto) or
//! takes as pasted (a `zms keygen` pair, or the terminal client's key file, to be the same
//! user in both). The gateway computes the public key, connects to every server with that
//! pair for that one connection only, and forgets it when the browser goes. Someone who
//! does not hold alice's secret cannot make a session whose key the servers accept as
//! alice's; a name nobody has used yet goes to the first key that uses it, as it does for
//! the terminal client. Threat model: PROTOCOL.md, "Part 2", "Security".

use std::ffi::CString;
use std::path::PathBuf;

use crate::client::{ClientSecurity, Session};
use crate::keys::{KeyPair, Pins};
use crate::{errinput, protocol, Error, Result};

/// How the gateway trusts the servers it connects to for its browsers.
#[derive(Debug, Clone)]
pub struct WebSecurity {
    /// The message server's key, as given (`--server-key`).
    pub server_key: Option<String>,
    /// The gateway's own `known_servers` file: keys pinned for the servers.
    pub pins: PathBuf,
    /// Fetch and pin a server's key the first time (as `zms user --secure`).
    pub trust_on_first_use: bool,
}

impl WebSecurity {
    /// A session that authenticates as the holder of `secret` (Z85, 40 characters).
    ///
    /// # Errors
    /// No secret, or one that is not a key, as UNAUTHORIZED-worthy input.
    pub fn sign_in(&self, session: Session, user: &str, secret: Option<&str>) -> Result<Session> {
        let secret = secret.ok_or_else(|| Error::Rejected {
            code: protocol::ErrorCode::Unauthorized,
            reason: format!("this gateway is secure: sign in as {user} with a passphrase or key"),
        })?;
        let keys = key_pair(secret)?;
        Ok(session.with_security(ClientSecurity {
            keys,
            pins: Pins::load(&self.pins)?,
            server_key: self.server_key.clone(),
            trust_on_first_use: self.trust_on_first_use,
        }))
    }
}

// libzmq's own derivation of a public key (the libzmq that zmq-sys builds and links);
// zmq-sys does not re-export its declaration.
extern "C" {
    fn zmq_curve_public(public: *mut std::ffi::c_char, secret: *const std::ffi::c_char) -> i32;
}

/// The key pair of a Z85 secret key.
///
/// # Errors
/// A secret that is not 40 characters of Z85.
pub fn key_pair(secret: &str) -> Result<KeyPair> {
    let bad = || errinput!("the key is not a CURVE secret key (40 characters of Z85)");
    if secret.len() != 40 || protocol::check_key(secret).is_err() {
        return Err(bad());
    }
    let secret_c = CString::new(secret).map_err(|_| bad())?;
    let mut public = [0u8; 41];
    // SAFETY: libzmq reads a 40-character Z85 string plus its NUL and writes 40 characters
    // plus a NUL into a buffer of 41; both buffers live across the call.
    let rc = unsafe { zmq_curve_public(public.as_mut_ptr().cast(), secret_c.as_ptr()) };
    if rc != 0 {
        return Err(bad());
    }
    let public = std::str::from_utf8(&public[..40]).map_err(|_| bad())?;
    Ok(KeyPair {
        public: public.to_string(),
        secret: secret.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_key_follows_from_the_secret() {
        let pair = KeyPair::generate().unwrap();
        assert_eq!(key_pair(&pair.secret).unwrap(), pair);
        assert!(key_pair("short").is_err());
        assert!(key_pair(&"\u{7f}".repeat(40)).is_err());
    }
}
