//! The codec's own tests: every message round-trips, and bad frames get typed errors.

use super::*;
use crate::protocol::Hit;

fn requests() -> Vec<Request> {
    let (group, user) = ("general".to_string(), "alice".to_string());
    vec![
        Request::Register {
            address: "127.0.0.1:6000".into(),
            ttl_ms: 3000,
            groups: vec![group.clone()],
            key: "k".repeat(40),
            replace: false,
        },
        Request::Register {
            address: "127.0.0.1:6001".into(),
            ttl_ms: 3000,
            groups: vec![group.clone()],
            key: String::new(),
            replace: true,
        },
        Request::Invite {
            group: group.clone(),
            user: user.clone(),
            key: "k".repeat(40),
        },
        Request::Key,
        Request::Status,
        Request::Kick {
            group: group.clone(),
            user: user.clone(),
        },
        Request::Ban {
            group: group.clone(),
            user: user.clone(),
        },
        Request::Unban {
            group: group.clone(),
            user: user.clone(),
        },
        Request::Create {
            group: group.clone(),
            private: true,
        },
        Request::Create {
            group: group.clone(),
            private: false,
        },
        Request::Set {
            group: group.clone(),
            private: true,
        },
        Request::Drop {
            group: group.clone(),
        },
        Request::Import {
            group: group.clone(),
            messages: vec![
                Imported {
                    message: Message {
                        seq: 7,
                        ts: 1_764_000_000_000,
                        sender: user.clone(),
                        text: "from elsewhere".into(),
                    },
                    client_id: "c-1".into(),
                },
                Imported {
                    message: Message {
                        seq: 8,
                        ts: 1_764_000_000_001,
                        sender: "bob".into(),
                        text: String::new(),
                    },
                    client_id: String::new(),
                },
            ],
        },
        Request::Dm {
            user: user.clone(),
            peer: "bob".into(),
        },
        Request::Unregister {
            address: "127.0.0.1:6000".into(),
        },
        Request::Hello { name: user.clone() },
        Request::List,
        Request::Ping,
        Request::Join {
            group: group.clone(),
            user: user.clone(),
        },
        Request::Leave {
            group: group.clone(),
            user: user.clone(),
        },
        Request::Subscribe {
            group: group.clone(),
            user: user.clone(),
        },
        Request::Members {
            group: group.clone(),
            user: user.clone(),
        },
        Request::Send {
            group: group.clone(),
            user: user.clone(),
            client_id: "c1".into(),
            text: "héllo".into(),
        },
        Request::SendBatch {
            group: group.clone(),
            user: user.clone(),
            messages: vec![
                Outgoing {
                    client_id: "c2".into(),
                    text: "one".into(),
                },
                Outgoing {
                    client_id: String::new(),
                    text: String::new(),
                },
            ],
        },
        Request::Search {
            group: group.clone(),
            user: user.clone(),
            since_ms: 5,
            limit: 20,
            query: "lunch plans".into(),
        },
        Request::Read {
            group: group.clone(),
            user: user.clone(),
            seq: 12,
        },
        Request::Unread {
            group: group.clone(),
            user: user.clone(),
        },
        Request::Edit {
            group: group.clone(),
            user: user.clone(),
            client_id: "e1".into(),
            seq: 3,
            text: "fixed".into(),
        },
        Request::Delete {
            group: group.clone(),
            user: user.clone(),
            client_id: String::new(),
            seq: 4,
        },
        Request::History {
            group,
            user,
            after_seq: 7,
            since_ms: -1,
            limit: 100,
        },
    ]
}

fn replies() -> Vec<Reply> {
    let m = Message {
        seq: 1,
        ts: 1_700_000_000_000,
        sender: "bob".into(),
        text: "hi".into(),
    };
    vec![
        Reply::Ok,
        Reply::Error {
            code: ErrorCode::NotMember,
            reason: "not a member".into(),
        },
        Reply::Error {
            code: ErrorCode::Other(499),
            reason: String::new(),
        },
        Reply::Groups(vec![GroupEntry {
            name: "general".into(),
            address: "h:1".into(),
            key: String::new(),
        }]),
        Reply::Key("k".repeat(40)),
        Reply::Status(r#"{"role":"group server"}"#.into()),
        Reply::Joined {
            group: "g".into(),
            last_seq: 9,
        },
        Reply::Ack {
            seq: 3,
            ts: 5,
            duplicate: true,
        },
        Reply::Acks(vec![
            Acked {
                seq: 4,
                ts: 6,
                duplicate: false,
            },
            Acked {
                seq: 2,
                ts: 5,
                duplicate: true,
            },
        ]),
        Reply::Messages {
            group: "g".into(),
            last_seq: 1,
            messages: vec![m.clone()],
            first_seq: 1,
        },
        Reply::Messages {
            group: "g".into(),
            last_seq: 9,
            messages: vec![m],
            first_seq: 7,
        },
        Reply::Members {
            group: "g".into(),
            members: vec![Member {
                name: "a".into(),
                online: true,
            }],
        },
        Reply::Pong {
            epoch: 42,
            groups: vec![("g".into(), 3)],
        },
        Reply::Found {
            group: "g".into(),
            hits: vec![Hit {
                seq: 4,
                ts: 9,
                sender: "bob".into(),
                text: "lunch at noon".into(),
                matches: vec![(0, 5)],
            }],
        },
        Reply::Unread {
            group: "g".into(),
            last_seq: 10,
            read_seq: 7,
        },
    ]
}

#[test]
fn requests_round_trip() {
    for request in requests() {
        let frame = encode_request(77, &request);
        assert_eq!(decode_request(&frame), Ok((77, request)));
    }
}

#[test]
fn replies_and_events_round_trip() {
    for reply in replies() {
        let frame = encode_reply(5, &reply);
        assert_eq!(decode_incoming(&frame), Ok(Incoming::Reply(5, reply)));
    }
    let event = Event::Message {
        group: "g".into(),
        message: Message {
            seq: 2,
            ts: 3,
            sender: "s".into(),
            text: "t".into(),
        },
    };
    assert_eq!(
        decode_incoming(&encode_event(&event)),
        Ok(Incoming::Event(event))
    );
    let presence = Event::Presence {
        group: "g".into(),
        user: "u".into(),
        joined: true,
    };
    assert_eq!(
        decode_incoming(&encode_event(&presence)),
        Ok(Incoming::Event(presence))
    );
    let batch = Event::Messages {
        group: "g".into(),
        messages: (1..=3)
            .map(|seq| Message {
                seq,
                ts: 7,
                sender: "s".into(),
                text: "t".repeat(seq as usize),
            })
            .collect(),
    };
    let frame = encode_event(&batch);
    assert_eq!(decode_incoming(&frame), Ok(Incoming::Event(batch)));
    for cut in 5..frame.len() {
        assert!(decode_incoming(&frame[..cut]).is_err(), "MSGS cut at {cut}");
    }
}

#[test]
fn a_batch_is_one_to_max_batch_messages_within_its_frame_limit() {
    let batch = |n: usize, text: &str| Request::SendBatch {
        group: "g".into(),
        user: "u".into(),
        messages: (0..n)
            .map(|i| Outgoing {
                client_id: format!("c{i}"),
                text: text.into(),
            })
            .collect(),
    };
    for (n, text) in [(1, "x"), (MAX_BATCH, "x")] {
        let request = batch(n, text);
        let frame = encode_request(3, &request);
        if let Request::SendBatch {
            group,
            user,
            messages,
        } = &request
        {
            assert_eq!(frame.len(), batch_len(group, user, messages));
        }
        assert_eq!(decode_request(&frame), Ok((3, request)));
    }
    for (n, text) in [(0, "x"), (MAX_BATCH + 1, "x")] {
        let err = decode_request(&encode_request(3, &batch(n, text))).unwrap_err();
        assert_eq!((err.req_id, err.code), (3, ErrorCode::BadRequest));
        assert!(err.reason.contains("1 to 256 messages"), "{}", err.reason);
    }
    let long = "x".repeat(MAX_BATCH_FRAME / 2);
    let err = decode_request(&encode_request(3, &batch(2, &long))).unwrap_err();
    assert!(err.reason.contains("at most"), "{}", err.reason);
}

#[test]
fn message_len_is_what_a_message_takes_in_a_frame() {
    let message = Message {
        seq: 1,
        ts: 2,
        sender: "alice".into(),
        text: "héllo".into(),
    };
    let one = encode_messages_event("g", std::slice::from_ref(&message));
    let none = encode_messages_event("g", &[]);
    assert_eq!(one.len() - none.len(), message_len(&message));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for request in requests() {
        let frame = encode_request(9, &request);
        // REGISTER's flags octet is optional: without it the frame is a plain REGISTER.
        let optional = usize::from(matches!(request, Request::Register { replace: true, .. }));
        for cut in 0..frame.len() - optional {
            assert!(
                decode_request(&frame[..cut]).is_err(),
                "{request:?} cut at {cut}"
            );
        }
    }
    for reply in replies() {
        let frame = encode_reply(9, &reply);
        // MESSAGES's first seq is optional: without it the frame is an untrimmed group's.
        let trimmed = matches!(reply, Reply::Messages { first_seq: 2.., .. });
        for cut in 0..frame.len() {
            if trimmed && cut == frame.len() - 8 {
                continue;
            }
            assert!(
                decode_incoming(&frame[..cut]).is_err(),
                "{reply:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_rejected_with_the_request_id() {
    let mut frame = encode_request(12, &Request::Ping);
    frame.push(0);
    let err = decode_request(&frame).unwrap_err();
    assert_eq!((err.req_id, err.code), (12, ErrorCode::BadRequest));
}

#[test]
fn other_versions_get_a_version_error_naming_ours() {
    let mut frame = encode_request(1, &Request::List);
    frame[3] = b'2';
    let err = decode_request(&frame).unwrap_err();
    assert_eq!(err.code, ErrorCode::Version);
    assert!(err.reason.contains("speaks version 1"), "{}", err.reason);
}

#[test]
fn forged_list_counts_do_not_allocate() {
    let mut frame = encode_request(
        1,
        &Request::Register {
            address: "a".into(),
            ttl_ms: 1,
            groups: vec![],
            key: String::new(),
            replace: false,
        },
    );
    // The group count sits just before the empty key's length octet.
    let n = frame.len();
    frame[n - 5..n - 1].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode_request(&frame)
        .unwrap_err()
        .reason
        .contains("does not fit"));
}

#[test]
fn invalid_utf8_and_unknown_commands_are_rejected() {
    let mut frame = encode_request(1, &Request::Hello { name: "ab".into() });
    let n = frame.len();
    frame[n - 1] = 0xFF;
    assert!(decode_request(&frame).unwrap_err().reason.contains("UTF-8"));
    let mut frame = encode_request(1, &Request::List);
    frame[4] = 0x7F;
    assert!(decode_request(&frame)
        .unwrap_err()
        .reason
        .contains("unknown command"));
}

#[test]
fn admin_flags_and_import_counts_are_checked() {
    let frame = |cmd: u8, body: &[u8]| {
        let mut f = b"ZMS1".to_vec();
        f.push(cmd);
        f.extend_from_slice(&[0, 0, 0, 9]);
        f.extend_from_slice(body);
        f
    };
    let err = decode_request(&frame(cmd::CREATE, b"\x01g\x02")).unwrap_err();
    assert_eq!((err.req_id, err.code), (9, ErrorCode::BadRequest));
    assert!(err.reason.contains("CREATE flags 0x02"), "{}", err.reason);
    let err = decode_request(&frame(cmd::IMPORT, b"\x01g\x00\x00\x00\x00")).unwrap_err();
    assert!(err.reason.contains("1 to 256"), "{}", err.reason);
    let request = Request::Import {
        group: "g".into(),
        messages: vec![Imported {
            message: Message {
                seq: 1,
                ts: 2,
                sender: "a".into(),
                text: "t".into(),
            },
            client_id: "c".into(),
        }],
    };
    let Request::Import { group, messages } = &request else {
        unreachable!()
    };
    assert_eq!(
        encode_request(1, &request).len(),
        import_len(group, messages)
    );
}

#[test]
fn a_first_seq_of_zero_reads_as_one_so_messages_has_one_encoding() {
    let reply = Reply::Messages {
        group: "general".into(),
        last_seq: 3,
        messages: Vec::new(),
        first_seq: 1,
    };
    let mut frame = encode_reply(7, &reply);
    frame.extend_from_slice(&0u64.to_be_bytes());
    let decoded = decode_incoming(&frame).unwrap();
    assert_eq!(decoded, Incoming::Reply(7, reply.clone()));
    assert_eq!(decode_incoming(&encode_reply(7, &reply)).unwrap(), decoded);
}
