//! A stored chunk as a group server reads it from its database (`store::decode_chunk`).
//!
//! Input: the chunk's bytes. Any chunk decodes or is refused, the same way every time, and
//! the messages it gives are numbered from the chunk's first seq on, one apart.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zms::group::store::decode_chunk;

/// The first message's seq, as a chunk's key gives it (a real one is below 2^40).
const FIRST_SEQ: u64 = 1_000;

fuzz_target!(|bytes: &[u8]| {
    let decoded = decode_chunk(FIRST_SEQ, bytes);
    assert_eq!(
        decode_chunk(FIRST_SEQ, bytes).map_err(|e| e.to_string()),
        decoded
            .as_ref()
            .map(Clone::clone)
            .map_err(|e| e.to_string())
    );
    let Ok(messages) = decoded else {
        return;
    };
    for (place, message) in messages.iter().enumerate() {
        assert_eq!(message.seq, FIRST_SEQ + place as u64);
    }
});
