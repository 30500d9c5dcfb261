//! How long a group's messages are kept: by age, by count, by bytes, or forever (the default).
//! Pure parsing and choosing; the store deletes what is chosen ([`Storage::trim`]) and the
//! poll loop calls it in small steps while idle.
//!
//! [`Storage::trim`]: super::storage::Storage::trim

use std::collections::HashMap;
use std::fmt;

use crate::{errinput, Result};

/// What one group keeps. Trimming removes whole chunks of the oldest messages, so a group
/// keeps at least what its policy says, and never loses its last message (its last seq stays
/// known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Every message, for good.
    #[default]
    Forever,
    /// Messages younger than this many milliseconds.
    Age(i64),
    /// The newest this many messages.
    Count(u64),
    /// The newest messages that fit in about this many stored octets.
    Bytes(u64),
}

impl Policy {
    /// Reads `forever`, an age (`30d`, `12h`, `90m`, `45s`), a count (`1000` or `1000msgs`)
    /// or a size (`512KiB`, `100MiB`, `2GiB`).
    ///
    /// # Errors
    /// [`crate::Error::Input`] naming the accepted forms.
    pub fn parse(text: &str) -> Result<Policy> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("forever") {
            return Ok(Policy::Forever);
        }
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let bad = || {
            errinput!(
                "retention {text:?} is not forever, an age (30d, 12h, 90m, 45s), a count \
                 (1000msgs) or a size (100MiB)"
            )
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(errinput!("retention {text:?} would keep nothing"));
        }
        let scaled = |factor: u64| n.checked_mul(factor).ok_or_else(bad);
        Ok(match unit {
            "" | "msgs" => Policy::Count(n),
            "s" => Policy::Age(scaled(1_000)? as i64),
            "m" => Policy::Age(scaled(60_000)? as i64),
            "h" => Policy::Age(scaled(3_600_000)? as i64),
            "d" => Policy::Age(scaled(86_400_000)? as i64),
            "B" => Policy::Bytes(n),
            "KiB" => Policy::Bytes(scaled(1 << 10)?),
            "MiB" => Policy::Bytes(scaled(1 << 20)?),
            "GiB" => Policy::Bytes(scaled(1 << 30)?),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Policy {
    /// The form [`Policy::parse`] reads, in the largest whole unit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let largest = |n: u64, units: &[(u64, &str)]| {
            let (factor, unit) = units
                .iter()
                .find(|(factor, _)| n.is_multiple_of(*factor))
                .copied()
                .unwrap_or((1, units[units.len() - 1].1));
            format!("{}{unit}", n / factor)
        };
        match *self {
            Policy::Forever => f.write_str("forever"),
            Policy::Count(n) => write!(f, "{n}msgs"),
            Policy::Age(ms) => f.write_str(&largest(
                ms as u64,
                &[
                    (86_400_000, "d"),
                    (3_600_000, "h"),
                    (60_000, "m"),
                    (1_000, "s"),
                ],
            )),
            Policy::Bytes(n) => f.write_str(&largest(
                n,
                &[
                    (1 << 30, "GiB"),
                    (1 << 20, "MiB"),
                    (1 << 10, "KiB"),
                    (1, "B"),
                ],
            )),
        }
    }
}

/// A group server's retention: a default, and the groups that differ from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// What a group not named in `groups` keeps.
    pub default: Policy,
    /// Policies of single groups.
    pub groups: HashMap<String, Policy>,
}

impl Retention {
    /// Reads `--retain` values: `POLICY` sets the default, `GROUP=POLICY` one group's; a later
    /// value for the same target wins.
    ///
    /// # Errors
    /// [`crate::Error::Input`] for a policy [`Policy::parse`] refuses.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Retention> {
        let mut retention = Retention::default();
        for value in values {
            match value.as_ref().split_once('=') {
                Some((group, policy)) => {
                    retention
                        .groups
                        .insert(group.trim().to_string(), Policy::parse(policy)?);
                }
                None => retention.default = Policy::parse(value.as_ref())?,
            }
        }
        Ok(retention)
    }

    /// What `group` keeps.
    pub fn policy(&self, group: &str) -> Policy {
        self.groups.get(group).copied().unwrap_or(self.default)
    }

    /// Whether any group trims at all.
    pub fn trims(&self) -> bool {
        self.default != Policy::Forever || self.groups.values().any(|p| *p != Policy::Forever)
    }
}

/// One stored chunk as trimming sees it: the last seq and ts it holds, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSummary {
    pub last_seq: u64,
    pub last_ts: i64,
    pub bytes: u64,
}

/// How many of `oldest` (a group's oldest chunks, in seq order, never its last) `policy`
/// lets go, given the group's last seq, its stored octets in all and the time.
pub fn chunks_to_trim(
    policy: Policy,
    oldest: &[ChunkSummary],
    last_seq: u64,
    total_bytes: u64,
    now_ms: i64,
) -> usize {
    match policy {
        Policy::Forever => 0,
        Policy::Age(age) => oldest
            .iter()
            .take_while(|c| c.last_ts < now_ms.saturating_sub(age))
            .count(),
        Policy::Count(keep) => oldest
            .iter()
            .take_while(|c| c.last_seq <= last_seq.saturating_sub(keep))
            .count(),
        Policy::Bytes(keep) => {
            let mut left = total_bytes;
            oldest
                .iter()
                .take_while(|c| {
                    let over = left > keep;
                    left = left.saturating_sub(c.bytes);
                    over
                })
                .count()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_and_print_in_the_same_forms() {
        for (text, policy) in [
            ("forever", Policy::Forever),
            ("30d", Policy::Age(30 * 86_400_000)),
            ("90m", Policy::Age(90 * 60_000)),
            ("45s", Policy::Age(45_000)),
            ("1000msgs", Policy::Count(1000)),
            ("100MiB", Policy::Bytes(100 << 20)),
            ("1536KiB", Policy::Bytes(1536 << 10)),
        ] {
            assert_eq!(Policy::parse(text).unwrap(), policy, "{text}");
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!(Policy::parse("1000").unwrap(), Policy::Count(1000));
        assert_eq!(Policy::parse("24h").unwrap().to_string(), "1d");
        for bad in ["", "0d", "30x", "d", "-5d", "99999999999999999999d", "1.5d"] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_group_policy_overrides_the_default() {
        let r = Retention::parse(&["30d", "log=1000", "chat = forever"]).unwrap();
        assert_eq!(r.policy("general"), Policy::Age(30 * 86_400_000));
        assert_eq!(r.policy("log"), Policy::Count(1000));
        assert_eq!(r.policy("chat"), Policy::Forever);
        assert!(r.trims());
        assert!(!Retention::parse::<&str>(&[]).unwrap().trims());
        assert!(Retention::parse(&["log=soon"]).is_err());
    }

    #[test]
    fn only_chunks_wholly_past_the_policy_go() {
        // Chunks of 10 messages (seqs 1-10, 11-20, 21-30), ts = seq, 100 octets each; the
        // group's last chunk (31-40) is not among them.
        let oldest: Vec<ChunkSummary> = (1..=3)
            .map(|i| ChunkSummary {
                last_seq: i * 10,
                last_ts: i as i64 * 10,
                bytes: 100,
            })
            .collect();
        let trim = |p| chunks_to_trim(p, &oldest, 40, 400, 40);
        assert_eq!(trim(Policy::Forever), 0);
        assert_eq!(trim(Policy::Count(25)), 1, "15 kept would be too few");
        assert_eq!(trim(Policy::Count(20)), 2);
        assert_eq!(trim(Policy::Count(1)), 3);
        assert_eq!(
            trim(Policy::Age(25)),
            1,
            "chunk 11-20 has a message at ts 20"
        );
        assert_eq!(trim(Policy::Age(1_000)), 0);
        assert_eq!(trim(Policy::Bytes(250)), 2);
        assert_eq!(trim(Policy::Bytes(400)), 0);
        assert_eq!(trim(Policy::Bytes(1)), 3);
    }
}
