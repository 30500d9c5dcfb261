//! Who owns a group name or an address on a secure message server: the key that first
//! registered it, kept on disk so the binding outlives a restart (otherwise whoever registers
//! first after a restart could take a live group server's name or address).
//!
//! The rules are pure ([`Owners::claim`]); [`Owners::bind`] applies a claim and writes it to
//! SQLite when a file was given. This is the message server's only SQL. Which live group
//! server lists what is the [`super::registry`]'s business.

use std::collections::HashMap;
use std::path::Path;

use crate::protocol::ErrorCode;
use crate::{errinput, Result};

/// Group names one key may hold by default.
pub const MAX_NAMES_PER_KEY: usize = 1_000;
/// Addresses one key may hold by default (a group server restarted on new ports moves on
/// freely: its addresses no longer listed are released when it reaches this).
pub const MAX_ADDRESSES_PER_KEY: usize = 16;

/// What a binding is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A group name.
    Name,
    /// A group server's `HOST:PORT`.
    Address,
}

impl Kind {
    fn column(self) -> &'static str {
        match self {
            Kind::Name => "name",
            Kind::Address => "address",
        }
    }
}

/// Bindings a registration makes or moves, found by [`Owners::claim`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Claim {
    key: String,
    /// Values to bind to `key`: new ones, or taken over by an operator.
    bind: Vec<(Kind, String)>,
    /// The key's own bindings released to make room (no longer listed).
    release: Vec<(Kind, String)>,
}

impl Claim {
    /// Whether applying the claim changes nothing.
    pub fn is_empty(&self) -> bool {
        self.bind.is_empty() && self.release.is_empty()
    }
}

/// A refusal: the code and the reason to answer with.
pub type Refusal = (ErrorCode, String);

/// Name and address bindings to keys.
#[derive(Debug)]
pub struct Owners {
    owner: HashMap<(Kind, String), String>,
    /// Bindings held per key and kind, for the caps.
    held: HashMap<(String, Kind), usize>,
    max_names_per_key: usize,
    max_addresses_per_key: usize,
    /// Most names bound over all keys; `None` is no cap.
    max_names: Option<usize>,
    db: Option<rusqlite::Connection>,
}

impl Default for Owners {
    fn default() -> Owners {
        Owners {
            owner: HashMap::new(),
            held: HashMap::new(),
            max_names_per_key: MAX_NAMES_PER_KEY,
            max_addresses_per_key: MAX_ADDRESSES_PER_KEY,
            max_names: None,
            db: None,
        }
    }
}

impl Owners {
    /// Bindings kept in memory only.
    pub fn in_memory() -> Owners {
        Owners::default()
    }

    /// Bindings kept in `dir/message-server.db` (the directory made 0700, the file 0600),
    /// loaded from there if it exists.
    ///
    /// # Errors
    /// When the directory or database cannot be made, opened or read.
    pub fn open(dir: &Path) -> Result<Owners> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| errinput!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("message-server.db");
        let db = rusqlite::Connection::open(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS bindings (
                kind TEXT NOT NULL, value TEXT NOT NULL, key TEXT NOT NULL,
                PRIMARY KEY (kind, value)
            ) WITHOUT ROWID;",
        )?;
        let mut owners = Owners::default();
        {
            let mut rows = db.prepare("SELECT kind, value, key FROM bindings")?;
            let rows = rows.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })?;
            for row in rows {
                let (kind, value, key) = row?;
                let kind = match kind.as_str() {
                    "name" => Kind::Name,
                    _ => Kind::Address,
                };
                owners.insert(kind, value, key);
            }
        }
        owners.db = Some(db);
        Ok(owners)
    }

    /// Caps the names one key may hold and the addresses.
    pub fn with_per_key(mut self, names: usize, addresses: usize) -> Owners {
        self.max_names_per_key = names;
        self.max_addresses_per_key = addresses;
        self
    }

    /// Caps the names bound over all keys.
    pub fn with_max_names(mut self, max: usize) -> Owners {
        self.max_names = Some(max);
        self
    }

    /// The key that owns `value`, if any.
    pub fn owner(&self, kind: Kind, value: &str) -> Option<&str> {
        self.owner
            .get(&(kind, value.to_string()))
            .map(String::as_str)
    }

    /// Number of bindings `key` holds of `kind`.
    pub fn held(&self, key: &str, kind: Kind) -> usize {
        self.held
            .get(&(key.to_string(), kind))
            .copied()
            .unwrap_or(0)
    }

    /// Checks that `key` may list `groups` at `address`: each must be unbound or bound to
    /// `key`, unless `takeover` (an operator's replace) moves it. When the key would pass a cap,
    /// its bindings that `listed` says are not listed right now are released to make room.
    ///
    /// # Errors
    /// A refusal naming the first value bound to another key (401), or the cap reached (429).
    pub fn claim(
        &self,
        key: &str,
        address: &str,
        groups: &[String],
        takeover: bool,
        listed: impl Fn(Kind, &str) -> bool,
    ) -> Result<Claim, Refusal> {
        let wanted = std::iter::once((Kind::Address, address))
            .chain(groups.iter().map(|g| (Kind::Name, g.as_str())));
        let mut claim = Claim {
            key: key.to_string(),
            ..Claim::default()
        };
        for (kind, value) in wanted {
            match self.owner(kind, value) {
                Some(owner) if owner == key => {}
                Some(owner) if !takeover => {
                    let what = match kind {
                        Kind::Name => format!("group '{value}'"),
                        Kind::Address => format!("address {value}"),
                    };
                    return Err((
                        ErrorCode::Unauthorized,
                        format!(
                            "{what} belongs to another group server (key {owner}); only that key \
                             or an operator (--replace with an --operator key) may change it"
                        ),
                    ));
                }
                _ => claim.bind.push((kind, value.to_string())),
            }
        }
        for (kind, cap) in [
            (Kind::Name, self.max_names_per_key),
            (Kind::Address, self.max_addresses_per_key),
        ] {
            let adding = claim.bind.iter().filter(|(k, _)| *k == kind).count();
            if adding == 0 {
                continue;
            }
            let mut held = self.held(key, kind);
            if held + adding > cap {
                // Room from the key's own bindings it no longer lists (a server moved ports).
                let keep: Vec<&str> = match kind {
                    Kind::Name => groups.iter().map(String::as_str).collect(),
                    Kind::Address => vec![address],
                };
                let stale = self.owner.iter().filter(|((k, v), owner)| {
                    *k == kind && *owner == key && !keep.contains(&v.as_str()) && !listed(*k, v)
                });
                for ((k, v), _) in stale {
                    if held + adding <= cap {
                        break;
                    }
                    claim.release.push((*k, v.clone()));
                    held -= 1;
                }
            }
            if held + adding > cap {
                let what = match kind {
                    Kind::Name => "group names",
                    Kind::Address => "addresses",
                };
                return Err((
                    ErrorCode::Limited,
                    format!("one group server key may hold at most {cap} {what} here"),
                ));
            }
        }
        if let Some(max) = self.max_names {
            let new = claim
                .bind
                .iter()
                .filter(|(k, v)| *k == Kind::Name && self.owner(*k, v).is_none())
                .count();
            let released = claim
                .release
                .iter()
                .filter(|(k, _)| *k == Kind::Name)
                .count();
            if new > 0 && self.count(Kind::Name) + new - released.min(new) > max {
                return Err((
                    ErrorCode::Limited,
                    format!("this message server lists at most {max} groups"),
                ));
            }
        }
        Ok(claim)
    }

    /// Applies a claim: in memory, and in one transaction on disk.
    ///
    /// # Errors
    /// The SQLite error (nothing changes in memory then).
    pub fn bind(&mut self, claim: Claim) -> Result<()> {
        if claim.is_empty() {
            return Ok(());
        }
        if let Some(db) = &mut self.db {
            let tx = db.transaction()?;
            for (kind, value) in &claim.release {
                tx.execute(
                    "DELETE FROM bindings WHERE kind = ?1 AND value = ?2",
                    (kind.column(), value),
                )?;
            }
            for (kind, value) in &claim.bind {
                tx.execute(
                    "INSERT OR REPLACE INTO bindings (kind, value, key) VALUES (?1, ?2, ?3)",
                    (kind.column(), value, &claim.key),
                )?;
            }
            tx.commit()?;
        }
        for (kind, value) in claim.release {
            self.remove(kind, &value);
        }
        for (kind, value) in claim.bind {
            self.remove(kind, &value);
            self.insert(kind, value, claim.key.clone());
        }
        Ok(())
    }

    fn count(&self, kind: Kind) -> usize {
        self.held
            .iter()
            .filter(|((_, k), _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    fn insert(&mut self, kind: Kind, value: String, key: String) {
        *self.held.entry((key.clone(), kind)).or_default() += 1;
        self.owner.insert((kind, value), key);
    }

    fn remove(&mut self, kind: Kind, value: &str) {
        if let Some(key) = self.owner.remove(&(kind, value.to_string())) {
            let slot = (key, kind);
            if let Some(n) = self.held.get_mut(&slot) {
                *n -= 1;
                if *n == 0 {
                    self.held.remove(&slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const NOT_LISTED: fn(Kind, &str) -> bool = |_, _| false;

    #[test]
    fn the_first_key_owns_names_and_addresses_until_an_operator_moves_them() {
        let mut owners = Owners::in_memory();
        let claim = owners
            .claim("A", "h:1", &groups(&["general"]), false, NOT_LISTED)
            .unwrap();
        owners.bind(claim).unwrap();
        let same = owners
            .claim("A", "h:2", &groups(&["general"]), false, NOT_LISTED)
            .unwrap();
        assert_eq!(
            same.bind,
            [(Kind::Address, "h:2".to_string())],
            "a restart on a new port"
        );
        owners.bind(same).unwrap();
        for (address, group) in [("h:1", "other"), ("h:9", "general")] {
            let (code, reason) = owners
                .claim("B", address, &groups(&[group]), false, NOT_LISTED)
                .unwrap_err();
            assert_eq!(code, ErrorCode::Unauthorized);
            assert!(
                reason.contains("belongs to another group server"),
                "{reason}"
            );
        }
        let moved = owners
            .claim("B", "h:1", &groups(&["general"]), true, NOT_LISTED)
            .unwrap();
        owners.bind(moved).unwrap();
        assert_eq!(owners.owner(Kind::Name, "general"), Some("B"));
        assert_eq!(owners.owner(Kind::Address, "h:1"), Some("B"));
        assert_eq!(
            (
                owners.held("A", Kind::Address),
                owners.held("A", Kind::Name)
            ),
            (1, 0)
        );
    }

    #[test]
    fn keys_are_capped_and_release_what_they_no_longer_list() {
        let mut owners = Owners::in_memory().with_per_key(2, 2).with_max_names(3);
        let many = groups(&["a", "b", "c"]);
        assert_eq!(
            owners
                .claim("A", "h:1", &many, false, NOT_LISTED)
                .unwrap_err()
                .0,
            ErrorCode::Limited
        );
        let claim = owners
            .claim("A", "h:1", &many[..2], false, NOT_LISTED)
            .unwrap();
        owners.bind(claim).unwrap();
        // Moving ports: the unlisted address is released, a listed one is kept.
        let claim = owners
            .claim("A", "h:2", &many[..2], false, NOT_LISTED)
            .unwrap();
        owners.bind(claim).unwrap();
        let listed = |_: Kind, v: &str| v == "h:1" || v == "h:2";
        assert_eq!(
            owners
                .claim("A", "h:3", &many[..2], false, listed)
                .unwrap_err()
                .0,
            ErrorCode::Limited
        );
        let claim = owners
            .claim("A", "h:3", &many[..2], false, NOT_LISTED)
            .unwrap();
        owners.bind(claim).unwrap();
        assert_eq!(owners.held("A", Kind::Address), 2);
        // The total: B may bind one more name, C none.
        let claim = owners
            .claim("B", "k:1", &groups(&["c"]), false, NOT_LISTED)
            .unwrap();
        owners.bind(claim).unwrap();
        let (code, reason) = owners
            .claim("C", "k:2", &groups(&["d"]), false, NOT_LISTED)
            .unwrap_err();
        assert_eq!(code, ErrorCode::Limited, "{reason}");
        // A key's bound names are never refused by the total.
        assert!(owners
            .claim("A", "h:3", &many[..2], false, NOT_LISTED)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bindings_outlive_a_restart_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("dir");
        let mut owners = Owners::open(&data).unwrap();
        let claim = owners
            .claim("A", "h:1", &groups(&["g"]), false, NOT_LISTED)
            .unwrap();
        owners.bind(claim).unwrap();
        drop(owners);
        let owners = Owners::open(&data).unwrap();
        assert_eq!(owners.owner(Kind::Name, "g"), Some("A"));
        assert_eq!(owners.owner(Kind::Address, "h:1"), Some("A"));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("message-server.db")), 0o600);
    }
}
