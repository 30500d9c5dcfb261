//! A MSG or MSGS event as a client reads it in place (`protocol::EventMessages`): on every
//! frame it agrees with `decode_incoming`. A frame it does not open is no MSG or MSGS event
//! to the decoder either; one it opens is valid to it exactly when every message reads and
//! nothing is left over, and then gives the same group and messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zms::protocol::codec::{decode_incoming, Incoming};
use zms::protocol::{Event, EventMessages};

fuzz_target!(|frame: &[u8]| {
    let decoded = decode_incoming(frame);
    let Some(opened) = EventMessages::read(frame) else {
        assert!(!matches!(
            decoded,
            Ok(Incoming::Event(
                Event::Message { .. } | Event::Messages { .. }
            ))
        ));
        return;
    };
    let Ok(event) = opened else {
        assert!(decoded.is_err(), "{decoded:?}");
        return;
    };
    let group = event.group();
    let counted = event.remaining();
    let read: Result<Vec<_>, _> = event.map(|m| m.map(|m| m.to_message())).collect();
    match (read, decoded) {
        (Ok(messages), Ok(Incoming::Event(Event::Message { group: g, message }))) => {
            assert_eq!((group, messages.as_slice()), (g.as_str(), &[message][..]));
        }
        (
            Ok(messages),
            Ok(Incoming::Event(Event::Messages {
                group: g,
                messages: m,
            })),
        ) => {
            assert_eq!((group, &messages), (g.as_str(), &m));
            assert_eq!(counted, m.len());
        }
        (Err(_), Err(_)) => {}
        (read, decoded) => panic!("reader {read:?}, decoder {decoded:?}"),
    }
});
