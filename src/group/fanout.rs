//! What a batch pushes: its events in order, each group's new messages coalesced.
//!
//! A busy group stores many messages per batch. Sent one MSG each, every message costs every
//! member a routed send and a pipe write; coalesced into MSGS frames, a batch costs each member
//! a handful, whatever its size. A quiet group's lone message still goes as MSG, at once.

use std::collections::HashMap;

use super::state::Outbound;
use crate::protocol::{self, codec, Message};

/// Largest MSGS frame the server builds, in octets of messages (a single message may be larger
/// and goes as MSG): the largest text. A peer's queue holds up to its high-water mark of
/// frames, so a slow member can pin no more than that many MSGs of the largest text already
/// could; and a batch of a busy group (512 sends of 100 bytes) goes to each member in one or
/// two frames rather than the five of a 16 KiB limit: every frame costs a send per member, so
/// fewer frames fan out faster.
pub const MAX_BATCH_BYTES: usize = protocol::MAX_TEXT;

/// One frame to push to a group's subscribers.
#[derive(Debug, PartialEq, Eq)]
pub struct Push {
    pub group: String,
    pub frame: Vec<u8>,
}

enum Pending {
    Frame(Vec<u8>),
    Run {
        messages: Vec<Message>,
        bytes: usize,
    },
}

/// The frames for a batch's pushes, in order. Each group's messages join its open run until
/// an event of the group (PRESENCE) or [`MAX_BATCH_BYTES`] closes it, so every member still
/// sees each group's events in the order they happened. Answers in `pushes` are skipped.
pub fn frames(pushes: impl IntoIterator<Item = Outbound>) -> Vec<Push> {
    let mut pending: Vec<(String, Pending)> = Vec::new();
    // The group's run still taking messages: its index in `pending`.
    let mut open: HashMap<String, usize> = HashMap::new();
    for push in pushes {
        match push {
            Outbound::Messages { group, messages } => {
                // The group's open run, looked up once for all of them.
                let mut at = open.get(&group).copied();
                for message in messages {
                    let len = codec::message_len(&message);
                    if let Some(Pending::Run { messages, bytes }) = at.map(|at| &mut pending[at].1)
                    {
                        if *bytes + len <= MAX_BATCH_BYTES {
                            messages.push(message);
                            *bytes += len;
                            continue;
                        }
                    }
                    at = Some(pending.len());
                    let run = Pending::Run {
                        messages: vec![message],
                        bytes: len,
                    };
                    pending.push((group.clone(), run));
                }
                if let Some(at) = at {
                    open.insert(group, at);
                }
            }
            Outbound::Event { group, event } => {
                open.remove(&group);
                pending.push((group, Pending::Frame(codec::encode_event(&event))));
            }
            Outbound::Reply { .. } | Outbound::Durable { .. } => {}
        }
    }
    pending
        .into_iter()
        .map(|(group, p)| {
            let frame = match p {
                Pending::Frame(frame) => frame,
                Pending::Run { messages, .. } if messages.len() == 1 => {
                    codec::encode_message_event(&group, &messages[0])
                }
                Pending::Run { messages, .. } => codec::encode_messages_event(&group, &messages),
            };
            Push { group, frame }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::{decode_incoming, Incoming};
    use crate::protocol::Event;

    fn message(group: &str, seq: u64, text_len: usize) -> Outbound {
        Outbound::Messages {
            group: group.into(),
            messages: vec![Message {
                seq,
                ts: 1,
                sender: "alice".into(),
                text: "x".repeat(text_len),
            }],
        }
    }

    fn presence(group: &str) -> Outbound {
        Outbound::Event {
            group: group.into(),
            event: Event::Presence {
                group: group.into(),
                user: "bob".into(),
                joined: true,
            },
        }
    }

    /// Each frame as (group, the seqs it carries; empty for PRESENCE).
    fn seqs(pushes: &[Push]) -> Vec<(String, Vec<u64>)> {
        pushes
            .iter()
            .map(|p| {
                let seqs = match decode_incoming(&p.frame).unwrap() {
                    Incoming::Event(Event::Message { message, .. }) => vec![message.seq],
                    Incoming::Event(Event::Messages { messages, .. }) => {
                        assert!(messages.len() > 1, "a lone message goes as MSG");
                        messages.iter().map(|m| m.seq).collect()
                    }
                    _ => vec![],
                };
                (p.group.clone(), seqs)
            })
            .collect()
    }

    #[test]
    fn a_groups_messages_share_one_frame_and_a_lone_one_stays_msg() {
        let out = frames([
            message("a", 1, 10),
            message("b", 7, 10),
            message("a", 2, 10),
        ]);
        assert_eq!(
            seqs(&out),
            [("a".to_string(), vec![1, 2]), ("b".to_string(), vec![7])]
        );
    }

    #[test]
    fn a_sends_messages_join_the_groups_run_and_split_at_the_size_limit() {
        let many =
            |group: &str, seqs: std::ops::RangeInclusive<u64>, len: usize| Outbound::Messages {
                group: group.into(),
                messages: seqs
                    .map(|seq| Message {
                        seq,
                        ts: 1,
                        sender: "alice".into(),
                        text: "x".repeat(len),
                    })
                    .collect(),
            };
        let out = frames([
            message("a", 1, 10),
            many("a", 2..=4, 10),
            message("a", 5, 10),
        ]);
        assert_eq!(seqs(&out), [("a".to_string(), vec![1, 2, 3, 4, 5])]);
        let out = frames([many("a", 1..=100, 1000)]);
        let sent: Vec<u64> = seqs(&out).iter().flat_map(|(_, s)| s.clone()).collect();
        assert_eq!(sent, (1..=100).collect::<Vec<_>>());
        assert!(out.len() > 1 && out.iter().all(|p| p.frame.len() <= MAX_BATCH_BYTES + 64));
    }

    #[test]
    fn presence_closes_its_groups_run_so_order_holds() {
        let out = frames([
            message("a", 1, 10),
            presence("a"),
            message("b", 1, 10),
            message("a", 2, 10),
            message("a", 3, 10),
            presence("b"),
        ]);
        assert_eq!(
            seqs(&out),
            [
                ("a".to_string(), vec![1]),
                ("a".to_string(), vec![]),
                ("b".to_string(), vec![1]),
                ("a".to_string(), vec![2, 3]),
                ("b".to_string(), vec![]),
            ]
        );
    }

    #[test]
    fn runs_stop_at_the_size_limit_and_answers_are_skipped() {
        let answer = Outbound::Reply {
            route: vec![1],
            req_id: 0,
            reply: crate::protocol::Reply::Ok,
        };
        let mut batch = vec![answer];
        batch.extend((1..=100).map(|seq| message("a", seq, 1000)));
        let out = frames(batch);
        let runs = seqs(&out);
        let sent: Vec<u64> = runs.iter().flat_map(|(_, s)| s.clone()).collect();
        assert_eq!(sent, (1..=100).collect::<Vec<_>>(), "all, in order, once");
        assert!(runs.len() > 1);
        for push in &out {
            assert!(
                push.frame.len() <= MAX_BATCH_BYTES + 64,
                "{}",
                push.frame.len()
            );
        }
    }
}
