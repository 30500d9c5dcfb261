//! A stored chunk as a group server reads it from its database (either layout).
//!
//! Input: `skip:u8 most:u8 chunk…`. Any chunk decodes or is refused; reading a part of one
//! (from a later seq, at most `most` messages) gives that part of the whole; and a chunk of
//! the compact layout that decodes is written again by `chunk::append` into one no longer
//! than it, which decodes to the same messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zms::group::store::chunk;

/// The first message's seq, as a chunk's key gives it (a real one is below 2^40).
const FIRST_SEQ: u64 = 1_000;

fuzz_target!(|data: &[u8]| {
    let [skip, most, ref bytes @ ..] = *data else {
        return;
    };
    let Ok(whole) = chunk::decode(FIRST_SEQ, bytes, 0, usize::MAX) else {
        return;
    };
    let from = FIRST_SEQ + u64::from(skip);
    let most = usize::from(most);
    let part: Vec<_> = whole
        .iter()
        .filter(|m| m.seq >= from)
        .take(most)
        .cloned()
        .collect();
    assert_eq!(chunk::decode(FIRST_SEQ, bytes, from, most), Ok(part));
    if bytes.first() != Some(&1) {
        return;
    }
    let mut again = Vec::new();
    let mut previous: Option<(i64, &str)> = None;
    for message in &whole {
        chunk::append(&mut again, previous, message);
        previous = Some((message.ts, &message.sender));
    }
    if whole.is_empty() {
        // A chunk of no message is never written; `append` writes the layout octet with the first.
        return;
    }
    assert!(
        again.len() <= bytes.len(),
        "{} > {}",
        again.len(),
        bytes.len()
    );
    assert_eq!(chunk::decode(FIRST_SEQ, &again, 0, usize::MAX), Ok(whole));
});
