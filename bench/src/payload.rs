//! What every bench message carries, and the clock it is stamped with.
//!
//! The text starts with the message's index and its send time, so a receiver can count losses
//! by index and measure latency without asking anyone; the rest is padding up to `--size`:
//!
//! ```text
//! "0000000042 0000001234567890 xxxxxxxx…"    index (10 digits), send time in ns (16), padding
//! ```
//!
//! Sender and receivers run in one process, so one monotonic clock serves both ([`now_ns`]).

use std::sync::OnceLock;
use std::time::Instant;

/// Bytes of the index and time header; the smallest message the bench sends.
pub const HEADER_LEN: usize = 28;

/// Nanoseconds since the bench's first call, on a monotonic clock shared by all its threads.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The text of message `index`, sent at `sent_ns`, padded to `size` bytes.
pub fn text(index: u64, sent_ns: u64, size: usize) -> String {
    let mut s = String::with_capacity(size.max(HEADER_LEN));
    use std::fmt::Write;
    let _ = write!(s, "{index:010} {sent_ns:016} ");
    let pad = size.saturating_sub(s.len());
    s.extend(std::iter::repeat_n('x', pad));
    s
}

/// The index and send time of a bench message's text; `None` for any other text.
pub fn parse(text: &[u8]) -> Option<(u64, u64)> {
    if text.len() < HEADER_LEN || text[10] != b' ' || text[27] != b' ' {
        return None;
    }
    Some((digits(&text[..10])?, digits(&text[11..27])?))
}

fn digits(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.wrapping_mul(10).wrapping_add(u64::from(b - b'0')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_pads() {
        let t = text(42, 1_234_567_890, 100);
        assert_eq!(t.len(), 100);
        assert_eq!(parse(t.as_bytes()), Some((42, 1_234_567_890)));
        assert_eq!(text(1, 2, 10).len(), HEADER_LEN);
        assert_eq!(parse(b"hello"), None);
        assert_eq!(parse(&[b'a'; 40]), None);
    }
}
