//! Property tests of every decoder: arbitrary and mutated bytes never panic, every message
//! survives encode → decode unchanged, and the in-place reader of MSG and MSGS frames
//! ([`EventMessages`]) agrees with the allocating decoder on every frame.
//!
//! `cargo test --test codec_props` runs the default number of cases; a long run:
//! `PROPTEST_CASES=1000000 cargo test --release --test codec_props`. Failing inputs are saved
//! in `tests/codec_props.proptest-regressions` and replayed first on every run (kept in the
//! repository as the corpus of inputs that once broke a decoder).

use proptest::prelude::*;
use zms::protocol::codec::{self, decode_incoming, decode_request, Incoming};
use zms::protocol::{ErrorCode, Event, EventMessages, GroupEntry, Member, Message, Reply, Request};

fn short() -> impl Strategy<Value = String> {
    // Short strings stay under the 255-byte `string` limit; the regex keeps generation cheap.
    "[a-zA-Z0-9_.@: é-]{0,40}"
}

fn text() -> impl Strategy<Value = String> {
    ".{0,300}"
}

fn message() -> impl Strategy<Value = Message> {
    (any::<u64>(), any::<i64>(), short(), text()).prop_map(|(seq, ts, sender, text)| Message {
        seq,
        ts,
        sender,
        text,
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            short(),
            any::<u32>(),
            prop::collection::vec(short(), 0..8),
            short(),
            any::<bool>()
        )
            .prop_map(
                |(address, ttl_ms, groups, key, replace)| Request::Register {
                    address,
                    ttl_ms,
                    groups,
                    key,
                    replace
                }
            ),
        (short(), short(), short()).prop_map(|(group, user, key)| Request::Invite {
            group,
            user,
            key
        }),
        Just(Request::Key),
        Just(Request::Status),
        short().prop_map(|address| Request::Unregister { address }),
        short().prop_map(|name| Request::Hello { name }),
        Just(Request::List),
        Just(Request::Ping),
        (short(), short()).prop_map(|(group, user)| Request::Join { group, user }),
        (short(), short()).prop_map(|(group, user)| Request::Leave { group, user }),
        (short(), short()).prop_map(|(group, user)| Request::Subscribe { group, user }),
        (short(), short()).prop_map(|(group, user)| Request::Members { group, user }),
        (short(), short(), short(), text()).prop_map(|(group, user, client_id, text)| {
            Request::Send {
                group,
                user,
                client_id,
                text,
            }
        }),
        (short(), short(), any::<u64>(), any::<i64>(), any::<u32>()).prop_map(
            |(group, user, after_seq, since_ms, limit)| Request::History {
                group,
                user,
                after_seq,
                since_ms,
                limit
            }
        ),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Ok),
        (any::<u16>(), text()).prop_map(|(code, reason)| Reply::Error {
            code: ErrorCode::from_value(code),
            reason
        }),
        prop::collection::vec((short(), short(), short()), 0..6).prop_map(|g| Reply::Groups(
            g.into_iter()
                .map(|(name, address, key)| GroupEntry { name, address, key })
                .collect()
        )),
        short().prop_map(Reply::Key),
        short().prop_map(Reply::Status),
        (short(), any::<u64>()).prop_map(|(group, last_seq)| Reply::Joined { group, last_seq }),
        (any::<u64>(), any::<i64>(), any::<bool>()).prop_map(|(seq, ts, duplicate)| Reply::Ack {
            seq,
            ts,
            duplicate
        }),
        (
            short(),
            any::<u64>(),
            prop::collection::vec(message(), 0..5),
            1..u64::MAX
        )
            .prop_map(|(group, last_seq, messages, first_seq)| Reply::Messages {
                group,
                last_seq,
                messages,
                first_seq
            }),
        (
            short(),
            prop::collection::vec((short(), any::<bool>()), 0..6)
        )
            .prop_map(|(group, m)| Reply::Members {
                group,
                members: m
                    .into_iter()
                    .map(|(name, online)| Member { name, online })
                    .collect()
            }),
        (
            any::<u64>(),
            prop::collection::vec((short(), any::<u64>()), 0..6)
        )
            .prop_map(|(epoch, groups)| Reply::Pong { epoch, groups }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (short(), message()).prop_map(|(group, message)| Event::Message { group, message }),
        (short(), short(), any::<bool>()).prop_map(|(group, user, joined)| Event::Presence {
            group,
            user,
            joined
        }),
        (short(), prop::collection::vec(message(), 0..6))
            .prop_map(|(group, messages)| Event::Messages { group, messages }),
    ]
}

/// A MSG or MSGS frame as [`EventMessages`] reads it: its group and messages, or the reason of
/// its first fault; `None` for any other frame.
fn read_in_place(frame: &[u8]) -> Option<Result<(String, Vec<Message>), String>> {
    EventMessages::read(frame).map(|opened| {
        let event = opened.map_err(|e| e.reason)?;
        let group = event.group().to_string();
        let messages = event
            .map(|m| m.map(|m| m.to_message()).map_err(|e| e.reason))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((group, messages))
    })
}

/// The same frame as [`decode_incoming`] reads it, in the same form.
fn read_allocating(frame: &[u8]) -> Option<Result<(String, Vec<Message>), String>> {
    if frame.len() < 5 || &frame[..4] != b"ZMS1" || !matches!(frame[4], 0xC0 | 0xC2) {
        return None;
    }
    Some(match decode_incoming(frame) {
        Ok(Incoming::Event(Event::Message { group, message })) => Ok((group, vec![message])),
        Ok(Incoming::Event(Event::Messages { group, messages })) => Ok((group, messages)),
        Ok(other) => Err(format!("not a message event: {other:?}")),
        Err(e) => Err(e.reason),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_incoming(&bytes);
        prop_assert_eq!(read_in_place(&bytes), read_allocating(&bytes));
    }

    #[test]
    fn bytes_after_a_valid_header_never_panic(command in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut frame = b"ZMS1".to_vec();
        frame.push(command);
        frame.extend(body);
        let _ = decode_request(&frame);
        let _ = decode_incoming(&frame);
    }

    #[test]
    fn requests_round_trip(id in any::<u32>(), request in request()) {
        prop_assert_eq!(decode_request(&codec::encode_request(id, &request)), Ok((id, request)));
    }

    #[test]
    fn replies_round_trip(id in any::<u32>(), reply in reply()) {
        prop_assert_eq!(decode_incoming(&codec::encode_reply(id, &reply)), Ok(Incoming::Reply(id, reply)));
    }

    #[test]
    fn events_round_trip(event in event()) {
        prop_assert_eq!(decode_incoming(&codec::encode_event(&event)), Ok(Incoming::Event(event)));
    }

    #[test]
    fn mutated_frames_never_panic(request in request(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut frame = codec::encode_request(1, &request);
        for (at, byte) in flips {
            let n = frame.len();
            frame[at % n] = byte;
        }
        let n = frame.len();
        frame.truncate(cut % (n + 1));
        let _ = decode_request(&frame);
        let _ = decode_incoming(&frame);
    }

    #[test]
    fn events_read_in_place_as_decoded(event in event()) {
        let frame = codec::encode_event(&event);
        prop_assert_eq!(read_in_place(&frame), read_allocating(&frame));
    }

    #[test]
    fn message_bodies_read_in_place_as_decoded(batch in any::<bool>(), body in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut frame = b"ZMS1".to_vec();
        frame.push(if batch { 0xC2 } else { 0xC0 });
        frame.extend(body);
        prop_assert_eq!(read_in_place(&frame), read_allocating(&frame));
    }

    #[test]
    fn mutated_events_read_in_place_as_decoded(event in event(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut frame = codec::encode_event(&event);
        for (at, byte) in flips {
            let n = frame.len();
            // The header stays, so most frames reach the reader's fields.
            if n > 5 {
                frame[5 + at % (n - 5)] = byte;
            }
        }
        let n = frame.len();
        frame.truncate(cut % (n + 1));
        prop_assert_eq!(read_in_place(&frame), read_allocating(&frame));
    }
}
