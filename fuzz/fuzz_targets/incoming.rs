//! A reply or event as a client reads it from a server: any frame decodes or is refused, and
//! one that decodes encodes back to the same reply or event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zms::protocol::codec::{decode_incoming, encode_event, encode_reply, Incoming};

fuzz_target!(|frame: &[u8]| {
    let Ok(incoming) = decode_incoming(frame) else {
        return;
    };
    let encoded = match &incoming {
        Incoming::Reply(req_id, reply) => encode_reply(*req_id, reply),
        Incoming::Event(event) => encode_event(event),
        // A newer server's event: read as its command alone, never encoded.
        Incoming::UnknownEvent(command) => {
            assert_eq!(frame.get(4), Some(command));
            return;
        }
    };
    assert_eq!(decode_incoming(&encoded), Ok(incoming));
});
