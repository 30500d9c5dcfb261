//! How a chunk's messages are stored: a group's consecutive messages of one transaction as one
//! value, each in a few octets beyond its text.
//!
//! # Format
//! ```text
//! chunk   = %x01 1*message                       ; this layout
//! message = ts-delta:varint sender text-len:varint text
//! sender  = %x00                                 ; the same as the message before's
//!         / n:u8 n*OCTET                          ; n = 1..255, the sender's name
//! ```
//! A message's seq is the chunk's first seq (from its key) plus its place in the chunk, and its
//! ts the one before's plus `ts-delta` (zigzag LEB128; from 0 for the first). A busy sender's
//! message of 100 octets takes 104, where the layout before took 141: seq, ts and sender were
//! written out in full for each, as PROTOCOL.md's `message` fields back to back. Chunks of that
//! layout start with 0 (the high octet of a seq below 2^40) and are still read.

use super::varint::{self, unzigzag, zigzag};
use crate::protocol::{codec, Message};

/// The first octet of a chunk of this layout.
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
/// What is wrong with the first message that does not decode (truncated, invalid UTF-8).
pub fn decode(
    first_seq: u64,
    bytes: &[u8],
    from: u64,
    most: usize,
) -> Result<Vec<Message>, String> {
    let Some((&COMPACT, mut rest)) = bytes.split_first() else {
        let mut messages = codec::decode_messages(bytes)?;
        messages.retain(|m| m.seq >= from);
        messages.truncate(most);
        return Ok(messages);
    };
    let truncated = || "a chunk is truncated".to_string();
    let utf8 = |b| std::str::from_utf8(b).map_err(|_| "a chunk holds invalid UTF-8".to_string());
    let mut messages: Vec<Message> = Vec::new();
    let (mut seq, mut ts, mut sender) = (first_seq, 0i64, None);
    while !rest.is_empty() && messages.len() < most {
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
        seq += 1;
        rest = tail;
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn chunks_of_the_layout_before_are_still_read() {
        let messages = [message(1, 5, "a", "one"), message(2, 6, "b", "two")];
        let mut old = Vec::new();
        for m in &messages {
            codec::append_message(&mut old, m);
        }
        assert_eq!(old[0], 0, "a seq's high octet");
        assert_eq!(decode(1, &old, 0, usize::MAX).unwrap(), messages);
        assert_eq!(decode(1, &old, 2, 1).unwrap(), messages[1..]);
    }
}
