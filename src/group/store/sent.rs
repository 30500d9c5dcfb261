//! The client ids each sender used in each group: how a retried SEND finds its message instead
//! of being stored twice, for as long as the message is kept.
//!
//! Most clients number their sends (`…-1`, `…-2`, …), so a sender's ids usually arrive in
//! increasing order, comparing length first and then bytes ([`shortlex`]: the order in which a
//! counter without leading zeros rises). An id above every id the sender used before is new
//! without a lookup, and a transaction's such ids of one sender are stored together as one row
//! of `sent_runs`, a run. An id that is not above the sender's highest is looked up (in the run
//! whose range holds it, then in `sent`) and, if new, stored as a row of its own in `sent`. So
//! a sender of numbered ids costs a row per transaction, and one of random ids a row per
//! message plus a lookup.
//!
//! Invariant: the runs of a (group, sender) are disjoint ranges, each later one above the
//! earlier, and every id of theirs in `sent` lies below the highest run's end.

use std::cmp::Ordering;
use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::undecodable;
use super::varint::{self, unzigzag, zigzag};
use crate::Result;

/// A sender's ids in one run at most; past it the run is written and another begins, so a
/// lookup decodes a bounded row.
const RUN_MAX: usize = 1024;

/// Senders whose highest id is kept in memory at most; past it the cache starts over (it is
/// read back from `sent_runs` as needed).
const HIGHEST_MAX: usize = 10_000;

/// Orders client ids by length, then bytes.
pub fn shortlex(a: &str, b: &str) -> Ordering {
    shortlex_bytes(a.as_bytes(), b.as_bytes())
}

fn shortlex_bytes(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// A client id as `sent_runs` keeps a range's end: its length (at most 255 octets, as every
/// protocol string), then its bytes, so SQLite's byte order on it is [`shortlex`].
fn order_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(id.len() as u8);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The first octet of a run's `ids`: it names the format, so that a later one can be told apart.
const DELTAS: u8 = 0;

/// The ids of a sender's run, each with its message's seq and ts, in increasing order.
///
/// # Format
/// ```text
/// ids   = %x00 1*entry
/// entry = shared:u8 n:u8 suffix:n*OCTET seq-delta:varint ts-delta:varint
/// ```
/// Each id is the previous one's first `shared` octets followed by `suffix` (the first entry
/// shares none), and seq and ts are the differences from the previous entry's (from 0 for the
/// first), zigzag-encoded LEB128: a counter's next id, seq and ts take five octets or so,
/// where written out they would take fifty.
#[derive(Debug, Default)]
struct Run {
    /// The highest id of the (group, sender) in this transaction.
    hi: String,
    /// Entries not yet written.
    entries: Vec<u8>,
    lo: Option<String>,
    count: usize,
    /// The last entry's seq and ts, which the next one is written against.
    seq: u64,
    ts: i64,
}

impl Run {
    fn push(&mut self, id: &str, seq: u64, ts: i64) {
        let shared = if self.lo.is_none() {
            self.lo = Some(id.to_string());
            self.entries.push(DELTAS);
            (self.seq, self.ts) = (0, 0);
            0
        } else {
            shared_prefix(self.hi.as_bytes(), id.as_bytes())
        };
        self.entries.push(shared as u8);
        self.entries.push((id.len() - shared) as u8);
        self.entries.extend_from_slice(&id.as_bytes()[shared..]);
        varint::put(&mut self.entries, zigzag(seq.wrapping_sub(self.seq) as i64));
        varint::put(&mut self.entries, zigzag(ts.wrapping_sub(self.ts)));
        (self.seq, self.ts) = (seq, ts);
        self.count += 1;
        self.hi.clear();
        self.hi.push_str(id);
    }

    /// Writes the entries not yet written as a row, leaving `hi` as it is.
    fn write(&mut self, conn: &Connection, group_id: i64, sender: &str) -> Result<()> {
        let Some(lo) = self.lo.take() else {
            return Ok(());
        };
        conn.prepare_cached(
            "INSERT INTO sent_runs (group_id, sender, lo, hi, ids) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            group_id,
            sender,
            order_key(&lo),
            order_key(&self.hi),
            self.entries
        ])?;
        self.entries.clear();
        self.count = 0;
        Ok(())
    }
}

/// The seq and ts of `id` among a run's entries ([`Run`]'s format), reading them in order only
/// as far as `id`'s place.
fn find_in_run(run: &[u8], id: &str) -> std::result::Result<Option<(u64, i64)>, String> {
    let entries = match run.split_first() {
        Some((&DELTAS, entries)) => entries,
        Some((&format, _)) => {
            return Err(format!("a run of client ids of unknown format {format}"))
        }
        // A run whose entries were just written, in memory: it holds none.
        None => return Ok(None),
    };
    let truncated = || "a run of client ids is truncated".to_string();
    let mut current: Vec<u8> = Vec::with_capacity(64);
    let (mut seq, mut ts) = (0u64, 0i64);
    let mut rest = entries;
    while let Some((&shared, tail)) = rest.split_first() {
        let (&n, tail) = tail.split_first().ok_or_else(truncated)?;
        let (shared, n) = (usize::from(shared), usize::from(n));
        if shared > current.len() || tail.len() < n {
            return Err(truncated());
        }
        current.truncate(shared);
        current.extend_from_slice(&tail[..n]);
        let (seq_delta, tail) = varint::take(&tail[n..]).ok_or_else(truncated)?;
        let (ts_delta, tail) = varint::take(tail).ok_or_else(truncated)?;
        seq = seq.wrapping_add(unzigzag(seq_delta) as u64);
        ts = ts.wrapping_add(unzigzag(ts_delta));
        rest = tail;
        match shortlex_bytes(&current, id.as_bytes()) {
            Ordering::Less => {}
            Ordering::Equal => return Ok(Some((seq, ts))),
            Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

/// Finds `id` in a stored run of client ids (a `sent_runs` row's `ids`): the reader of the
/// run's format (`ids = %x00 1*entry`, given at `Run` in this module), as the store uses it,
/// for any bytes at all. An id above every id of the run reads it whole.
///
/// # Errors
/// [`crate::Error::Store`] saying what does not decode; never a panic, whatever `run` holds.
pub fn find_client_id(run: &[u8], id: &str) -> Result<Option<(u64, i64)>> {
    find_in_run(run, id)
        .map_err(|reason| undecodable(format!("a run of client ids does not decode: {reason}")))
}

/// How many leading octets `a` and `b` share (at most 255, as an id is at most that long).
fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count().min(255)
}

/// What the index knows beyond the database: each sender's highest id as committed, and the
/// open transaction's runs.
#[derive(Default)]
pub struct Sent {
    highest: HashMap<i64, HashMap<String, String>>,
    cached: usize,
    open: HashMap<i64, HashMap<String, Run>>,
}

impl Sent {
    /// Records that `sender` stored message `seq` (at `ts`) in the group under `id`, unless it
    /// used `id` before: then returns that message's seq and ts, and records nothing.
    ///
    /// # Errors
    /// The SQLite error, or a stored run that does not decode.
    pub fn record(
        &mut self,
        conn: &Connection,
        group_id: i64,
        sender: &str,
        id: &str,
        seq: u64,
        ts: i64,
    ) -> Result<Option<(u64, i64)>> {
        // Most ids rise: above the sender's run of this transaction, or for its first id of
        // the transaction above its committed highest.
        let above_open = self
            .open
            .get(&group_id)
            .and_then(|runs| runs.get(sender))
            .map(|run| shortlex(id, &run.hi) == Ordering::Greater);
        let new = match above_open {
            Some(above) => above,
            None => self.is_above_committed(conn, group_id, sender, id)?,
        };
        if new {
            let runs = self.open.entry(group_id).or_default();
            if above_open.is_none() {
                runs.insert(sender.to_string(), Run::default());
            }
            let run = runs
                .get_mut(sender)
                .expect("bug: the run was found or made above");
            run.push(id, seq, ts);
            if run.count >= RUN_MAX {
                run.write(conn, group_id, sender)?;
            }
            return Ok(None);
        }
        if let Some(found) = self.find(conn, group_id, sender, id)? {
            return Ok(Some(found));
        }
        conn.prepare_cached(
            "INSERT INTO sent (group_id, sender, client_id, seq, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![group_id, sender, id, seq as i64, ts])?;
        Ok(None)
    }

    /// The seq and ts of the message `sender` stored in the group under `id`.
    ///
    /// # Errors
    /// The SQLite error, or a stored run that does not decode.
    pub fn find(
        &self,
        conn: &Connection,
        group_id: i64,
        sender: &str,
        id: &str,
    ) -> Result<Option<(u64, i64)>> {
        if let Some(run) = self.open.get(&group_id).and_then(|runs| runs.get(sender)) {
            if let Some(found) = find_in_run(&run.entries, id).map_err(undecodable)? {
                return Ok(Some(found));
            }
        }
        let key = order_key(id);
        let run: Option<(Vec<u8>, Vec<u8>)> = conn
            .prepare_cached(
                "SELECT hi, ids FROM sent_runs WHERE group_id = ?1 AND sender = ?2 AND lo <= ?3
                 ORDER BY lo DESC LIMIT 1",
            )?
            .query_row(params![group_id, sender, key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((_, ids)) = run.filter(|(hi, _)| key <= *hi) {
            if let Some(found) = find_in_run(&ids, id).map_err(undecodable)? {
                return Ok(Some(found));
            }
        }
        Ok(conn
            .prepare_cached(
                "SELECT seq, ts FROM sent WHERE group_id = ?1 AND sender = ?2 AND client_id = ?3",
            )?
            .query_row(params![group_id, sender, id], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .optional()?)
    }

    /// Whether `id` is above every id `sender` used in the group before this transaction, so
    /// new without a lookup.
    fn is_above_committed(
        &mut self,
        conn: &Connection,
        group_id: i64,
        sender: &str,
        id: &str,
    ) -> Result<bool> {
        let cached = |highest: &HashMap<i64, HashMap<String, String>>| {
            highest
                .get(&group_id)
                .and_then(|senders| senders.get(sender))
                .map(|hi| shortlex(id, hi) == Ordering::Greater)
        };
        if let Some(above) = cached(&self.highest) {
            return Ok(above);
        }
        let stored: Option<Vec<u8>> = conn
            .prepare_cached(
                "SELECT hi FROM sent_runs WHERE group_id = ?1 AND sender = ?2 ORDER BY lo DESC LIMIT 1",
            )?
            .query_row(params![group_id, sender], |r| r.get(0))
            .optional()?;
        let Some(stored) = stored else {
            return Ok(true);
        };
        let hi = String::from_utf8_lossy(stored.get(1..).unwrap_or_default()).into_owned();
        let above = shortlex(id, &hi) == Ordering::Greater;
        self.remember(group_id, sender, hi);
        Ok(above)
    }

    fn remember(&mut self, group_id: i64, sender: &str, hi: String) {
        if self.cached >= HIGHEST_MAX {
            self.highest.clear();
            self.cached = 0;
        }
        let senders = self.highest.entry(group_id).or_default();
        if senders.insert(sender.to_string(), hi).is_none() {
            self.cached += 1;
        }
    }

    /// Forgets what it kept of a group that was deleted.
    pub fn forget_group(&mut self, group_id: i64) {
        if let Some(senders) = self.highest.remove(&group_id) {
            self.cached = self.cached.saturating_sub(senders.len());
        }
        self.open.remove(&group_id);
    }

    /// Writes the open transaction's runs (before its COMMIT).
    ///
    /// # Errors
    /// The SQLite error.
    pub fn write(&mut self, conn: &Connection) -> Result<()> {
        for (group_id, runs) in &mut self.open {
            for (sender, run) in runs {
                run.write(conn, *group_id, sender)?;
            }
        }
        Ok(())
    }

    /// The open transaction committed: its highest ids are now the senders' highest.
    pub fn committed(&mut self) {
        for (group_id, runs) in std::mem::take(&mut self.open) {
            for (sender, run) in runs {
                self.remember(group_id, &sender, run.hi);
            }
        }
    }

    /// The open transaction is abandoned: forget its runs.
    pub fn rollback(&mut self) {
        self.open.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::store::tests::msg;
    use crate::group::store::{Appended, Durability, Store};
    use crate::protocol::Message;

    #[test]
    fn shortlex_is_the_order_counters_rise_in() {
        let mut ids = vec!["a-10", "a-9", "a-100", "a-1", "b-1", "a-11"];
        ids.sort_by(|a, b| shortlex(a, b));
        assert_eq!(ids, ["a-1", "a-9", "b-1", "a-10", "a-11", "a-100"]);
        let mut keys: Vec<Vec<u8>> = ids.iter().map(|id| order_key(id)).collect();
        keys.sort();
        assert_eq!(keys, ids.iter().map(|id| order_key(id)).collect::<Vec<_>>());
    }

    #[test]
    fn a_run_finds_its_ids_and_no_others() {
        let mut run = Run::default();
        for n in [1u64, 2, 5, 30, 400] {
            run.push(&format!("c{n}"), n * 10, n as i64 * 100);
        }
        assert_eq!(run.hi, "c400");
        assert_eq!(find_in_run(&run.entries, "c5"), Ok(Some((50, 500))));
        assert_eq!(find_in_run(&run.entries, "c400"), Ok(Some((4000, 40_000))));
        for absent in ["c3", "c0", "c4000", "d1", ""] {
            assert_eq!(find_in_run(&run.entries, absent), Ok(None), "{absent}");
        }
        assert!(find_in_run(&run.entries[..run.entries.len() - 1], "c400").is_err());
    }

    #[test]
    fn a_counters_run_takes_a_few_octets_an_id() {
        let mut run = Run::default();
        let prefix = "alice-019abf2e5c1000012a3b0000";
        for n in 1..=1000u64 {
            run.push(&format!("{prefix}-{n:06}"), 5000 + 3 * n, 1_700_000_000_000);
        }
        assert!(run.entries.len() < 1000 * 8, "{} octets", run.entries.len());
        for n in [1u64, 2, 499, 1000] {
            assert_eq!(
                find_in_run(&run.entries, &format!("{prefix}-{n:06}")),
                Ok(Some((5000 + 3 * n, 1_700_000_000_000)))
            );
        }
        assert_eq!(
            find_in_run(&run.entries, &format!("{prefix}-001001")),
            Ok(None)
        );
        // The format takes any seq and ts, falling as well as rising.
        let mut odd = Run::default();
        odd.push("b1", u64::MAX >> 24, i64::MAX);
        odd.push("b2", 1, i64::MIN);
        assert_eq!(find_in_run(&odd.entries, "b2"), Ok(Some((1, i64::MIN))));
        assert_eq!(
            find_in_run(&odd.entries, "b1"),
            Ok(Some((u64::MAX >> 24, i64::MAX)))
        );
    }

    #[test]
    fn a_stored_run_of_another_format_is_an_error() {
        let mut run = Run::default();
        run.push("c1", 1, 1);
        assert_eq!(find_client_id(&run.entries, "c1").unwrap(), Some((1, 1)));
        run.entries[0] = 7;
        let err = find_client_id(&run.entries, "c1").unwrap_err();
        assert!(err.to_string().contains("unknown format 7"), "{err}");
    }

    proptest::proptest! {
        /// Whatever a stored run holds, reading it answers or fails; it never panics.
        #[test]
        fn any_bytes_read_as_a_run_give_an_answer_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            id in "[a-c0-9]{0,6}",
        ) {
            let mut run = bytes;
            if let Some(first) = run.first_mut() {
                // Mostly this format, so the reader goes past its first octet.
                *first = if *first < 224 { DELTAS } else { *first };
            }
            let _ = find_client_id(&run, &id);
        }
    }

    /// A sender's message `seq`, sent under `id`.
    fn sent_as(sender: &str, seq: u64, id: &str) -> (Message, String) {
        let message = Message {
            sender: sender.into(),
            ..msg(seq, seq as i64)
        };
        (message, id.to_string())
    }

    #[test]
    fn rising_client_ids_take_a_row_per_transaction_and_are_all_found() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        // 2,500 rising ids in one transaction (past a run's limit), then 10 in each of 20.
        let mut seq = 0;
        store.begin().unwrap();
        for n in 1..=2_500 {
            seq += 1;
            let (m, id) = sent_as("alice", seq, &format!("a-{n}"));
            assert_eq!(store.append(g.id, &m, &id).unwrap(), Appended::New);
        }
        // A retry within the transaction, of an id in a run already written and of one not.
        for (n, original) in [(3, 3), (2_499, 2_499)] {
            let (m, id) = sent_as("alice", seq + 1, &format!("a-{n}"));
            assert_eq!(
                store.append(g.id, &m, &id).unwrap(),
                Appended::Duplicate {
                    seq: original,
                    ts: original as i64
                }
            );
        }
        store.commit().unwrap();
        for n in 2_501..=2_700 {
            if n % 10 == 1 {
                store.begin().unwrap();
            }
            seq += 1;
            let (m, id) = sent_as("alice", seq, &format!("a-{n}"));
            assert_eq!(store.append(g.id, &m, &id).unwrap(), Appended::New);
            if n % 10 == 0 {
                store.commit().unwrap();
            }
        }
        let count = |table: &str| -> i64 {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            store.conn.query_row(&sql, [], |r| r.get(0)).unwrap()
        };
        assert_eq!((count("sent_runs"), count("sent")), (3 + 20, 0));
        for n in [
            1, 9, 10, 99, 100, 1_024, 1_025, 2_048, 2_049, 2_500, 2_501, 2_700,
        ] {
            let id = format!("a-{n}");
            assert_eq!(
                store.find_sent(g.id, "alice", &id).unwrap(),
                Some((n, n as i64)),
                "{id}"
            );
        }
        for absent in ["a-0", "a-2701", "a-01", "b-1"] {
            assert_eq!(store.find_sent(g.id, "alice", absent).unwrap(), None);
        }
        assert_eq!(store.find_sent(g.id, "bob", "a-1").unwrap(), None);
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A sender's next id above its last (by 1 or 2), or any id of a small pool.
        Send {
            sender: usize,
            rise: Option<u64>,
            any: u64,
        },
        Commit,
        Rollback,
        /// Commit, close and open the store again: only the database remembers.
        Reopen,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (0..3usize, proptest::option::of(1..3u64), 0..300u64)
                .prop_map(|(sender, rise, any)| Step::Send { sender, rise, any }),
            2 => Just(Step::Commit),
            1 => Just(Step::Rollback),
            1 => Just(Step::Reopen),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Against a map of every committed (sender, id): each send is new exactly when its id
        /// is new to its sender, and a duplicate answers with the first message's seq.
        #[test]
        fn client_ids_in_any_order_are_stored_once(steps in proptest::collection::vec(step(), 1..250)) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(dir.path(), Durability::Process).unwrap();
            let g = store.ensure_group("g", 1).unwrap().id;
            let mut committed: HashMap<(usize, String), u64> = HashMap::new();
            let mut open: HashMap<(usize, String), u64> = HashMap::new();
            let mut counters = [0u64; 3];
            let mut seq = 0;
            for step in steps {
                match step {
                    Step::Send { sender, rise, any } => {
                        if store.conn.is_autocommit() {
                            store.begin().unwrap();
                        }
                        let id = match rise {
                            Some(by) => {
                                counters[sender] += by;
                                format!("s{}", counters[sender])
                            }
                            None => format!("s{any}"),
                        };
                        seq += 1;
                        let (m, _) = sent_as(&format!("user{sender}"), seq, &id);
                        let key = (sender, id.clone());
                        let want = match committed.get(&key).or(open.get(&key)) {
                            Some(&first) => Appended::Duplicate { seq: first, ts: first as i64 },
                            None => {
                                open.insert(key, seq);
                                Appended::New
                            }
                        };
                        proptest::prop_assert_eq!(store.append(g, &m, &id).unwrap(), want, "{}", id);
                    }
                    Step::Commit => {
                        if !store.conn.is_autocommit() {
                            store.commit().unwrap();
                        }
                        committed.extend(open.drain());
                    }
                    Step::Rollback => {
                        store.rollback();
                        open.clear();
                    }
                    Step::Reopen => {
                        if !store.conn.is_autocommit() {
                            store.commit().unwrap();
                        }
                        committed.extend(open.drain());
                        drop(store);
                        store = Store::open(dir.path(), Durability::Process).unwrap();
                    }
                }
            }
            for ((sender, id), first) in &committed {
                let found = store.find_sent(g, &format!("user{sender}"), id).unwrap();
                proptest::prop_assert_eq!(found, Some((*first, *first as i64)));
            }
        }
    }
}
