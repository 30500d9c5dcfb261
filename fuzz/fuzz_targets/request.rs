//! A request as a server reads it from a peer: any frame decodes or is refused, and one that
//! decodes encodes back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zms::protocol::codec::{decode_message, decode_request, encode_request};

fuzz_target!(|frame: &[u8]| {
    let decoded = decode_request(frame);
    // The one-frame message a server receives is the frame itself.
    assert_eq!(decode_message(&[frame]), decoded);
    if let Ok((req_id, request)) = decoded {
        let again = decode_request(&encode_request(req_id, &request));
        assert_eq!(again, Ok((req_id, request)));
    }
});
