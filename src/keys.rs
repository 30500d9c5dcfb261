//! CURVE keys: key pairs kept in files, and the pins of trusted servers (`known_servers`, as
//! SSH's `known_hosts`).
//!
//! Keys travel and rest as Z85 text (40 characters for 32 bytes), the form libzmq and PROTOCOL.md
//! use. This module owns files and checks; sockets get their keys in `transport`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{errinput, protocol, Result};

/// A CURVE key pair in Z85.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub public: String,
    pub secret: String,
}

impl std::fmt::Debug for KeyPair {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair from libzmq (libsodium's generator).
    ///
    /// # Errors
    /// When libzmq was built without CURVE.
    pub fn generate() -> Result<KeyPair> {
        let pair = zmq::CurveKeyPair::new()?;
        Ok(KeyPair {
            public: z85(&pair.public_key)?,
            secret: z85(&pair.secret_key)?,
        })
    }

    /// Reads a key file written by [`KeyPair::save`] (or `zms keygen --out`).
    ///
    /// # Errors
    /// A missing, unreadable or malformed file, named in the message.
    pub fn load(path: &Path) -> Result<KeyPair> {
        let text = fs::read_to_string(path)
            .map_err(|e| errinput!("cannot read key file {}: {e}", path.display()))?;
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
                .filter(|v| v.len() == 40 && protocol::check_key(v).is_ok())
                .ok_or_else(|| {
                    errinput!(
                        "key file {} has no valid `{name} = \"…\"` line",
                        path.display()
                    )
                })
        };
        Ok(KeyPair {
            public: field("public")?,
            secret: field("secret")?,
        })
    }

    /// Writes the pair to `path`, readable by its owner only.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| errinput!("cannot write key file {}: {e}", path.display()))?;
        writeln!(
            file,
            "# zms CURVE key pair. Keep this file secret; share only the public key."
        )?;
        writeln!(file, "public = \"{}\"", self.public)?;
        writeln!(file, "secret = \"{}\"", self.secret)?;
        Ok(())
    }

    /// The pair in `path`, made and saved there first if the file does not exist.
    ///
    /// # Errors
    /// As [`KeyPair::load`] and [`KeyPair::save`].
    pub fn load_or_create(path: &Path) -> Result<KeyPair> {
        if path.exists() {
            return KeyPair::load(path);
        }
        let pair = KeyPair::generate()?;
        pair.save(path)?;
        tracing::info!(path = %path.display(), public = %pair.public, "new key pair");
        Ok(pair)
    }
}

/// The 32 raw bytes of a Z85 key.
///
/// # Errors
/// [`crate::Error::Input`] for anything but 40 characters of Z85.
pub fn raw(key: &str) -> Result<Vec<u8>> {
    protocol::check_key(key).map_err(crate::Error::Input)?;
    zmq::z85_decode(key)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| errinput!("'{key}' is not a CURVE key (40 characters of Z85)"))
}

fn z85(bytes: &[u8]) -> Result<String> {
    zmq::z85_encode(bytes).map_err(|e| errinput!("z85: {e:?}"))
}

/// Where a user's keys and pins live: `$ZMS_HOME`, else `$XDG_CONFIG_HOME/zms`, else
/// `$HOME/.config/zms`.
///
/// # Errors
/// When none of those variables is set.
pub fn config_dir() -> Result<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = var("ZMS_HOME") {
        return Ok(home);
    }
    if let Some(xdg) = var("XDG_CONFIG_HOME") {
        return Ok(xdg.join("zms"));
    }
    var("HOME")
        .map(|h| h.join(".config").join("zms"))
        .ok_or_else(|| errinput!("no HOME, XDG_CONFIG_HOME or ZMS_HOME to keep keys in"))
}

/// The file holding user `name`'s key pair in `dir`: `dir/keys/NAME.key`.
///
/// # Errors
/// [`crate::Error::Input`] for a name that is not a valid user name, or that holds `/` and so
/// would name a file outside `dir/keys`.
pub fn user_key_path(dir: &Path, name: &str) -> Result<PathBuf> {
    protocol::check_user_name(name).map_err(crate::Error::Input)?;
    if name.contains('/') {
        return Err(errinput!(
            "user name '{name}' cannot have a key file: it may not hold '/'"
        ));
    }
    Ok(dir.join("keys").join(format!("{name}.key")))
}

/// Creates `dir` and its missing parents, each new one readable by its owner only (keys and
/// pins live there; a directory that exists is left as it is).
///
/// # Errors
/// When it cannot be created.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| errinput!("cannot create {}: {e}", dir.display()))
}

/// Writes `text` to `path` (replacing it), readable by its owner only.
///
/// # Errors
/// When the file cannot be written.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        // One made by an earlier version may be readable by others.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())
    };
    write().map_err(|e| errinput!("cannot write {}: {e}", path.display()))
}

/// Pinned server keys, by `HOST:PORT`, kept in a file: the first key seen for an address is
/// trusted, and a different one later is refused.
#[derive(Debug)]
pub struct Pins {
    path: PathBuf,
    keys: BTreeMap<String, String>,
}

impl Pins {
    /// Reads the pins in `path` (none if the file does not exist).
    ///
    /// # Errors
    /// An unreadable file.
    pub fn load(path: &Path) -> Result<Pins> {
        let mut keys = BTreeMap::new();
        match fs::read_to_string(path) {
            Ok(text) => {
                for line in text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    if let Some((address, key)) = line.split_once(char::is_whitespace) {
                        keys.insert(address.to_string(), key.trim().to_string());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(errinput!("cannot read {}: {e}", path.display())),
        }
        Ok(Pins {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The pinned key of `address`, if any.
    pub fn get(&self, address: &str) -> Option<&str> {
        self.keys.get(address).map(String::as_str)
    }

    /// The file the pins are kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every pin, `(HOST:PORT, KEY)`, by address.
    pub fn list(&self) -> impl Iterator<Item = (&str, &str)> {
        self.keys.iter().map(|(a, k)| (a.as_str(), k.as_str()))
    }

    /// Forgets the pin of `address`, so its key is trusted anew on next use; returns the key
    /// it had.
    ///
    /// # Errors
    /// No pin for `address`; a failure to write the file.
    pub fn forget(&mut self, address: &str) -> Result<String> {
        let key = self.keys.remove(address).ok_or_else(|| {
            crate::Error::NotFound(format!(
                "no key is pinned for {address} in {}",
                self.path.display()
            ))
        })?;
        self.save()?;
        Ok(key)
    }

    /// Pins `key` for `address`, replacing any pin it had (a key replaced on purpose);
    /// returns the key replaced.
    ///
    /// # Errors
    /// A malformed key; a failure to write the file.
    pub fn replace(&mut self, address: &str, key: &str) -> Result<Option<String>> {
        raw(key)?;
        let old = self.keys.insert(address.to_string(), key.to_string());
        self.save()?;
        Ok(old)
    }

    /// Accepts `key` for `address`: pins it if the address is new, agrees if it matches the pin,
    /// and refuses a different key with a warning that says what to do.
    ///
    /// # Errors
    /// [`crate::Error::Input`] for a changed key; a failure to write the pin file.
    pub fn check_or_pin(&mut self, address: &str, key: &str) -> Result<bool> {
        match self.keys.get(address) {
            Some(pinned) if pinned == key => Ok(false),
            Some(pinned) => Err(errinput!(
                "WARNING: the key of {address} has CHANGED (pinned {pinned}, now offered {key}). \
                 Someone may be impersonating it; refusing to connect. If the server's key was \
                 replaced on purpose: {} known-servers forget {address} (pins in {})",
                crate::program::name(),
                self.path.display()
            )),
            None => {
                self.keys.insert(address.to_string(), key.to_string());
                self.save()?;
                Ok(true)
            }
        }
    }

    fn save(&self) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let mut text = String::from("# zms: server keys trusted on first use (HOST:PORT KEY)\n");
        for (address, key) in &self.keys {
            text.push_str(&format!("{address} {key}\n"));
        }
        write_private(&self.path, &text)
    }
}

/// A server key trusted on first use: what the user is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    /// The server's `HOST:PORT`.
    pub address: String,
    /// Its public key (Z85), as `zms known-servers` lists it.
    pub key: String,
    /// The pin file it was written to.
    pub path: PathBuf,
}

impl std::fmt::Display for Trusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trusted {} on first use: key {}, pinned in {}",
            self.address,
            self.key,
            self.path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pairs_round_trip_through_files_readable_by_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("me.key");
        let made = KeyPair::load_or_create(&path).unwrap();
        assert_eq!(made.public.len(), 40);
        assert_eq!(raw(&made.public).unwrap().len(), 32);
        assert_eq!(KeyPair::load_or_create(&path).unwrap(), made);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            !format!("{made:?}").contains(&made.secret),
            "Debug hides the secret"
        );
        fs::write(&path, "public = \"short\"").unwrap();
        assert!(KeyPair::load(&path)
            .unwrap_err()
            .to_string()
            .contains("no valid `public"));
    }

    #[test]
    fn a_user_name_cannot_put_a_key_file_outside_the_keys_directory() {
        let dir = Path::new("/home/a/.config/zms");
        assert_eq!(
            user_key_path(dir, "alice").unwrap(),
            dir.join("keys").join("alice.key")
        );
        for name in ["../../escaped", "a/b", "/etc/x"] {
            let err = user_key_path(dir, name).unwrap_err().to_string();
            assert!(err.contains("may not hold '/'"), "{name}: {err}");
        }
        assert!(user_key_path(dir, "bad name").is_err());
    }

    #[test]
    fn directories_and_pins_it_makes_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("cfg").join("zms");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        KeyPair::load_or_create(&user_key_path(&dir, "alice").unwrap()).unwrap();
        assert_eq!(mode(&dir.join("keys")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let key = KeyPair::generate().unwrap().public;
        let pins_path = dir.join("known_servers");
        fs::write(&pins_path, "").unwrap();
        fs::set_permissions(&pins_path, fs::Permissions::from_mode(0o644)).unwrap();
        Pins::load(&pins_path)
            .unwrap()
            .check_or_pin("h:1", &key)
            .unwrap();
        assert_eq!(mode(&pins_path), 0o600);
    }

    /// Two freshly generated public keys, as two servers' keys.
    fn two_public_keys() -> (String, String) {
        (
            KeyPair::generate().unwrap().public,
            KeyPair::generate().unwrap().public,
        )
    }

    #[test]
    fn pins_trust_the_first_key_and_refuse_a_changed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        let (a, b) = two_public_keys();
        let mut pins = Pins::load(&path).unwrap();
        assert!(pins.check_or_pin("h:1", &a).unwrap(), "first use pins");
        assert!(!pins.check_or_pin("h:1", &a).unwrap(), "same key agrees");
        let mut again = Pins::load(&path).unwrap();
        assert_eq!(again.get("h:1"), Some(a.as_str()));
        let err = again.check_or_pin("h:1", &b).unwrap_err().to_string();
        assert!(
            err.contains("CHANGED") && err.contains("zms known-servers forget h:1"),
            "{err}"
        );
    }

    #[test]
    fn pins_are_listed_forgotten_and_replaced_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        let (a, b) = two_public_keys();
        let mut pins = Pins::load(&path).unwrap();
        pins.check_or_pin("h:1", &a).unwrap();
        pins.check_or_pin("h:2", &a).unwrap();
        assert_eq!(
            pins.list().collect::<Vec<_>>(),
            [("h:1", a.as_str()), ("h:2", a.as_str())]
        );
        assert_eq!(pins.forget("h:1").unwrap(), a);
        assert!(pins
            .forget("h:1")
            .unwrap_err()
            .to_string()
            .contains("no key"));
        assert_eq!(pins.replace("h:2", &b).unwrap(), Some(a.clone()));
        assert!(pins.replace("h:2", "not a key").is_err());
        let again = Pins::load(&path).unwrap();
        assert_eq!(again.list().collect::<Vec<_>>(), [("h:2", b.as_str())]);
    }
}
