//! Chunks: how a group's messages are stored. A transaction's consecutive messages of one
//! group are one row of `chunks`, a chunk, each message in a few octets beyond its text; a
//! batch of 500 sends costs a few rows, not 500.
//!
//! # Format
//! ```text
//! chunk   = %x01 1*message                       ; %x01: this format
//! message = ts-delta:varint sender text-len:varint text
//! sender  = %x00                                 ; the same as the message before's
//!         / n:u8 n*OCTET                          ; n = 1..255, the sender's name
//! ```
//! A message's seq is the chunk's first seq (from its key, [`chunk_key`]) plus its place in the
//! chunk, and its ts the one before's plus `ts-delta` (zigzag LEB128; from 0 for the first). A
//! busy sender's message of 100 octets takes 104. The first octet names the format, so that a
//! later one can be told apart.

use rusqlite::params;

use super::undecodable;
use super::varint::{self, unzigzag, zigzag};
use crate::protocol::{codec, Message};
use crate::Result;

/// The first octet of a chunk of this format.
const COMPACT: u8 = 1;

/// Appends `message` to a chunk's `bytes`; `previous` is the ts and sender of the message
/// before it in the chunk (`None` for the first, which starts the chunk).
pub fn append(bytes: &mut Vec<u8>, previous: Option<(i64, &str)>, message: &Message) {
    let (ts, sender) = match previous {
        Some(previous) => previous,
        None => {
            bytes.push(COMPACT);
            (0, "")
        }
    };
    varint::put(bytes, zigzag(message.ts.wrapping_sub(ts)));
    if previous.is_some() && message.sender == sender {
        bytes.push(0);
    } else {
        // As the wire writes a name: a longer one than 255 octets would be cut, not overflow.
        codec::append_string(bytes, &message.sender);
    }
    varint::put(bytes, message.text.len() as u64);
    bytes.extend_from_slice(message.text.as_bytes());
}

/// The messages of a chunk whose first message has seq `first_seq`: those from seq `from` on,
/// at most `most` of them. The ones before `from` are walked over, not built.
///
/// # Errors
/// What is wrong with the chunk (an unknown format) or with the first message that does not
/// decode (truncated, invalid UTF-8).
pub fn decode(
    first_seq: u64,
    bytes: &[u8],
    from: u64,
    most: usize,
) -> Result<Vec<Message>, String> {
    let mut rest = match bytes.split_first() {
        Some((&COMPACT, rest)) => rest,
        Some((&format, _)) => return Err(format!("a chunk of unknown format {format}")),
        None => return Err("a chunk is empty".to_string()),
    };
    let truncated = || "a chunk is truncated".to_string();
    let utf8 = |b| std::str::from_utf8(b).map_err(|_| "a chunk holds invalid UTF-8".to_string());
    let mut messages: Vec<Message> = Vec::new();
    let (mut next_seq, mut ts, mut sender) = (Some(first_seq), 0i64, None);
    while !rest.is_empty() && messages.len() < most {
        let seq = next_seq.ok_or_else(|| "a chunk's seqs run past the largest seq".to_string())?;
        next_seq = seq.checked_add(1);
        let (delta, tail) = varint::take(rest).ok_or_else(truncated)?;
        ts = ts.wrapping_add(unzigzag(delta));
        let (&n, tail) = tail.split_first().ok_or_else(truncated)?;
        let tail = match (n, sender) {
            (0, Some(_)) => tail,
            _ if tail.len() >= usize::from(n) => {
                let (name, tail) = tail.split_at(usize::from(n));
                sender = Some(utf8(name)?);
                tail
            }
            _ => return Err(truncated()),
        };
        let (len, tail) = varint::take(tail).ok_or_else(truncated)?;
        let len = usize::try_from(len).map_err(|_| truncated())?;
        if tail.len() < len {
            return Err(truncated());
        }
        let (text, tail) = tail.split_at(len);
        if seq >= from {
            messages.push(Message {
                seq,
                ts,
                sender: sender.unwrap_or_default().to_string(),
                text: utf8(text)?.to_string(),
            });
        }
        rest = tail;
    }
    Ok(messages)
}

/// Reads a stored chunk whose first message has seq `first_seq`: the reader of the format above,
/// as the store uses it, for any bytes at all.
///
/// # Errors
/// [`crate::Error::Store`] saying what does not decode; never a panic, whatever `bytes` hold.
pub fn decode_chunk(first_seq: u64, bytes: &[u8]) -> Result<Vec<Message>> {
    decode(first_seq, bytes, 0, usize::MAX)
        .map_err(|reason| undecodable(format!("a chunk does not decode: {reason}")))
}

/// Octets of messages past which a chunk takes no more (a single larger message is a chunk of
/// its own): history reads decode whole chunks, so a page of a few messages stays cheap.
const CHUNK_BYTES: usize = 64 * 1024;

/// Most buffers of written chunks kept for reuse: a batch fills about one chunk per busy group.
pub const SPARE_CHUNKS: usize = 4;

/// Writes a chunk: its key, last seq, last ts and messages ([`Chunk::insert`]).
pub const INSERT_CHUNK: &str =
    "INSERT INTO chunks (key, last_seq, last_ts, messages) VALUES (?1, ?2, ?3, ?4)";

/// Reads a group's chunks in seq order from the one holding a seq on: ?1 is the group's first
/// possible key, ?2 the key of the seq (the chunk holding it is the last to start at or before
/// it, or, where retention trimmed it, the first kept after it), ?3 the last key wanted.
pub const CHUNKS_FROM: &str = "SELECT key, messages FROM chunks WHERE key <= ?3 AND key >=
        (SELECT COALESCE(MAX(key), ?1) FROM chunks WHERE key BETWEEN ?1 AND ?2)
    ORDER BY key";

/// Bits of a chunk's key that hold its first seq; the group id is above them.
pub const SEQ_BITS: u32 = 40;

/// The highest seq a group's chunks can be keyed by: 2^40 - 1, about 10^12 messages.
pub const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// The highest group id a chunk can be keyed by, so that keys stay positive: 2^23 - 1, more
/// groups than one data directory could have hosted.
pub const MAX_GROUP_ID: i64 = (1 << (63 - SEQ_BITS)) - 1;

/// A chunk's key: its group in the high bits, its first seq in the low 40, so a group's chunks
/// are one range of keys in seq order.
pub fn chunk_key(group_id: i64, first_seq: u64) -> i64 {
    debug_assert!((0..=MAX_GROUP_ID).contains(&group_id) && first_seq <= MAX_SEQ);
    (group_id << SEQ_BITS) | first_seq as i64
}

/// A group's consecutive messages of one transaction, written in the format above as they
/// come: the chunk still taking messages, and its buffer.
pub struct Chunk {
    first_seq: u64,
    last_seq: u64,
    last_ts: i64,
    /// The last message's sender, which the next one's is written against.
    last_sender: String,
    messages: Vec<u8>,
}

impl Chunk {
    /// An empty chunk starting at `first_seq`, written into `buffer` (cleared first).
    pub fn new(first_seq: u64, mut buffer: Vec<u8>) -> Chunk {
        buffer.clear();
        Chunk {
            first_seq,
            last_seq: first_seq,
            last_ts: 0,
            last_sender: String::new(),
            messages: buffer,
        }
    }

    /// Whether `message` may join: a chunk stops at [`CHUNK_BYTES`], but always takes one.
    pub fn has_room(&self, message: &Message) -> bool {
        self.messages.is_empty() || self.messages.len() + codec::message_len(message) <= CHUNK_BYTES
    }

    /// Adds `message`, the next seq of the group.
    pub fn push(&mut self, message: &Message) {
        let previous = (!self.messages.is_empty()).then_some((self.last_ts, &*self.last_sender));
        append(&mut self.messages, previous, message);
        self.last_seq = message.seq;
        self.last_ts = message.ts;
        if self.last_sender != message.sender {
            self.last_sender.clear();
            self.last_sender.push_str(&message.sender);
        }
    }

    /// Writes the chunk with `insert`, a prepared [`INSERT_CHUNK`]; returns its buffer.
    pub fn insert(
        self,
        insert: &mut rusqlite::Statement<'_>,
        group_id: i64,
    ) -> rusqlite::Result<Vec<u8>> {
        insert.execute(params![
            chunk_key(group_id, self.first_seq),
            self.last_seq as i64,
            self.last_ts,
            self.messages.as_slice()
        ])?;
        Ok(self.messages)
    }
}

/// The messages of a stored chunk of `group_id` keyed by `key`: those from seq `from` on, at
/// most `most`.
///
/// # Errors
/// [`crate::Error::Store`] naming the group, for a chunk that does not decode.
pub fn decode_stored(
    group_id: i64,
    key: i64,
    bytes: &[u8],
    from: u64,
    most: usize,
) -> Result<Vec<Message>> {
    decode(key as u64 & MAX_SEQ, bytes, from, most).map_err(|reason| {
        undecodable(format!(
            "a stored chunk of group {group_id} does not decode: {reason}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::store::tests::msg;
    use crate::group::store::{Appended, Store};

    fn message(seq: u64, ts: i64, sender: &str, text: &str) -> Message {
        Message {
            seq,
            ts,
            sender: sender.into(),
            text: text.into(),
        }
    }

    #[test]
    fn a_chunk_reads_back_what_was_written_in_a_few_octets_a_message() {
        let messages = [
            message(7, 1_700_000_000_000, "alice", &"x".repeat(100)),
            message(8, 1_700_000_000_000, "alice", ""),
            message(9, 1_700_000_000_003, "bob", "héllo"),
            message(10, 1_700_000_000_003, "alice", "back"),
        ];
        let mut bytes = Vec::new();
        let mut previous: Option<(i64, String)> = None;
        for m in &messages {
            append(
                &mut bytes,
                previous.as_ref().map(|(ts, s)| (*ts, s.as_str())),
                m,
            );
            previous = Some((m.ts, m.sender.clone()));
        }
        assert_eq!(decode(7, &bytes, 0, usize::MAX).unwrap(), messages);
        // A part of it: from seq 8, at most two.
        assert_eq!(decode(7, &bytes, 8, 2).unwrap(), messages[1..3]);
        assert_eq!(decode(7, &bytes, 10, 5).unwrap(), messages[3..]);
        assert_eq!(decode(7, &bytes, 11, 5).unwrap(), []);
        // The second message: its ts delta, the same sender, its length, no text.
        assert_eq!(
            bytes.len(),
            1 + (6 + 6 + 1 + 100) + 3 + (1 + 4 + 1 + 6) + (1 + 6 + 1 + 4)
        );
        for cut in 1..bytes.len() {
            let read = decode(7, &bytes[..cut], 0, usize::MAX);
            assert!(
                read.as_ref().is_err() || read.as_ref().unwrap().len() < messages.len(),
                "cut at {cut}: {read:?}"
            );
        }
        let mut bad = bytes.clone();
        let at = bad.len() - 1;
        bad[at] = 0xff;
        assert!(decode(7, &bad, 0, usize::MAX).is_err(), "invalid UTF-8");
    }

    #[test]
    fn a_stored_chunk_of_another_format_or_past_the_last_seq_is_an_error() {
        let messages = [message(1, 5, "a", "one"), message(2, 6, "a", "two")];
        let mut bytes = Vec::new();
        append(&mut bytes, None, &messages[0]);
        append(&mut bytes, Some((5, "a")), &messages[1]);
        assert_eq!(decode_chunk(1, &bytes).unwrap(), messages);
        let err = decode_chunk(u64::MAX, &bytes).unwrap_err().to_string();
        assert!(err.contains("run past the largest seq"), "{err}");
        assert_eq!(
            decode_chunk(u64::MAX, &bytes[..8]).unwrap()[0].seq,
            u64::MAX
        );
        for format in [0u8, 2, 0xff] {
            bytes[0] = format;
            let err = decode_chunk(1, &bytes).unwrap_err().to_string();
            assert!(err.contains(&format!("unknown format {format}")), "{err}");
        }
        assert!(decode_chunk(1, &[]).is_err(), "empty");
    }

    proptest::proptest! {
        /// Whatever a stored chunk holds, reading it answers or fails; it never panics.
        #[test]
        fn any_bytes_read_as_a_chunk_give_messages_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            first_seq in proptest::prelude::any::<u64>(),
        ) {
            let mut chunk = bytes;
            if let Some(first) = chunk.first_mut() {
                // Mostly this format, so the reader goes past its first octet.
                *first = if *first < 224 { COMPACT } else { *first };
            }
            let _ = decode_chunk(first_seq, &chunk);
        }
    }

    #[test]
    fn since_finds_the_first_of_equal_timestamps_by_binary_search() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        store.begin().unwrap();
        // ts: 10 10 10 20 20 30 … (many messages share a millisecond under load)
        for seq in 1..=1000u64 {
            store
                .append(g.id, &msg(seq, 10 * ((seq as i64 + 2) / 3)), "")
                .unwrap();
        }
        store.commit().unwrap();
        for since in [1, 10, 11, 20, 21, 3340, 3341, 5000] {
            let first = store
                .fetch(g.id, 0, since, 1)
                .unwrap()
                .first()
                .map(|m| m.seq);
            let want = (1..=1000u64).find(|&s| 10 * ((s as i64 + 2) / 3) >= since);
            assert_eq!(first, want, "since {since}");
        }
    }

    #[test]
    fn reads_cross_chunks_of_every_size() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        let other = store.ensure_group("other", 1).unwrap();
        // Transactions of 1, 2, 3 … messages, each of them a chunk, and one too large for a
        // single chunk; another group's messages interleaved.
        let (mut seq, mut batch) = (0u64, 1);
        while seq < 300 {
            store.begin().unwrap();
            for _ in 0..batch {
                seq += 1;
                let text = if seq == 150 {
                    "x".repeat(70_000)
                } else {
                    format!("m{seq}")
                };
                let message = Message {
                    text,
                    ..msg(seq, seq as i64 / 7)
                };
                assert_eq!(
                    store.append(g.id, &message, &format!("c{seq}")).unwrap(),
                    Appended::New
                );
                store.append(other.id, &msg(seq, 0), "").unwrap();
            }
            store.commit().unwrap();
            batch += 1;
        }
        let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
        for after in [0, 1, 2, 5, 44, 149, 150, 299, 300] {
            let want: Vec<u64> = (after + 1..=seq).take(37).collect();
            assert_eq!(
                seqs(store.fetch(g.id, after, 0, 37).unwrap()),
                want,
                "after {after}"
            );
        }
        for since in [0, 1, 20, 21, 40, 42, 43] {
            let want = (1..=seq).find(|&s| s as i64 / 7 >= since);
            let got = store
                .fetch(g.id, 0, since, 1)
                .unwrap()
                .first()
                .map(|m| m.seq);
            assert_eq!(got, want, "since {since}");
        }
        assert_eq!(store.fetch(g.id, 149, 0, 1).unwrap()[0].text.len(), 70_000);
        assert_eq!(
            store.find_sent(g.id, "alice", "c150").unwrap(),
            Some((150, 21))
        );
        let stored = store.load_group(g.id).unwrap();
        assert_eq!((stored.last_seq, stored.last_ts), (seq, seq as i64 / 7));
        assert_eq!(store.load_group(other.id).unwrap().last_seq, seq);
    }

    #[test]
    fn a_seq_beyond_the_chunk_keys_is_refused_and_nothing_is_stored() {
        let mut store = Store::open_in_memory().unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        store.append(g.id, &msg(MAX_SEQ, 1), "").unwrap();
        store.begin().unwrap();
        let err = store.append(g.id, &msg(MAX_SEQ + 1, 2), "c1").unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        store.rollback();
        assert_eq!(store.load_group(g.id).unwrap().last_seq, MAX_SEQ);
        assert_eq!(store.find_sent(g.id, "alice", "c1").unwrap(), None);
        assert!(store.fetch(g.id, MAX_SEQ, 0, 10).unwrap().is_empty());
    }
}
