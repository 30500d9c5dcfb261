//! Messages written back to back (as a MSGS frame's body holds them): any bytes decode or
//! are refused, and what decodes is the same bytes written again, octet for octet (the layout has one way to write each message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zms::protocol::codec::{append_message, decode_messages, message_len};

fuzz_target!(|bytes: &[u8]| {
    let Ok(messages) = decode_messages(bytes) else {
        return;
    };
    let mut encoded = Vec::new();
    for message in &messages {
        append_message(&mut encoded, message);
    }
    assert_eq!(encoded, bytes);
    assert_eq!(messages.iter().map(message_len).sum::<usize>(), bytes.len());
});
