//! `zms::client::Pipeline` on real sockets: many sends in flight against a real group server,
//! and against a bare ROUTER that answers out of order, to unknown ids, or not at all.

mod common;

use std::time::Duration;

use zms::client::{Pipeline, Timeouts};
use zms::protocol::codec;
use zms::protocol::{Acked, Message, Outgoing, Reply, Request};

fn outgoing(i: usize) -> Outgoing {
    Outgoing {
        client_id: format!("pipe-{i}"),
        text: format!("message {i}"),
    }
}

#[test]
fn many_sends_in_flight_are_matched_by_request_id() {
    let cluster = common::cluster(&["general"]);
    let (mut alice, general) = cluster.member("alice", "general");
    let mut pipeline = Pipeline::connect(&cluster.ctx, &general.address, common::TIMEOUTS)
        .unwrap()
        .with_window(1000);
    // 300 SENDs and three SENDS of 100, none waiting for an answer: the window holds them all.
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            pipeline
                .send_messages("general", "alice", &[outgoing(i)])
                .unwrap(),
        );
    }
    for batch in 0..3 {
        let messages: Vec<Outgoing> = (300 + batch * 100..400 + batch * 100)
            .map(outgoing)
            .collect();
        ids.push(
            pipeline
                .send_messages("general", "alice", &messages)
                .unwrap(),
        );
    }
    assert_eq!(pipeline.in_flight(), 600, "nothing was waited for");
    let mut seqs = Vec::new();
    let mut answered = Vec::new();
    while let Some((id, reply)) = pipeline.next_answer().unwrap() {
        answered.push(id);
        match reply {
            Reply::Ack { seq, .. } => seqs.push(seq),
            Reply::Acks(acks) => seqs.extend(acks.iter().map(|a| a.seq)),
            other => panic!("#{id}: {other:?}"),
        }
    }
    assert_eq!(
        answered, ids,
        "every request answered once, in the order sent"
    );
    assert_eq!(seqs, (1..=600).collect::<Vec<u64>>());
    assert_eq!(pipeline.in_flight(), 0);
    let stored = alice.history(&general, None, None).unwrap();
    assert_eq!(
        common::texts(&stored),
        (0..600).map(|i| format!("message {i}")).collect::<Vec<_>>()
    );

    // A window of 10 waits for answers before the 11th message goes; each is still answered.
    let mut narrow = Pipeline::connect(&cluster.ctx, &general.address, common::TIMEOUTS)
        .unwrap()
        .with_window(10);
    for i in 600..650 {
        narrow
            .send_messages("general", "alice", &[outgoing(i)])
            .unwrap();
        assert!(narrow.in_flight() <= 10);
    }
    narrow.finish().unwrap();
    let mut acked = 0;
    while let Some((_, reply)) = narrow.take_answer() {
        assert!(matches!(reply, Reply::Ack { .. }), "{reply:?}");
        acked += 1;
    }
    assert_eq!(acked, 50);
}

/// A bare ROUTER standing in for a server, so the test decides what is answered and when.
struct FakeServer {
    router: zmq::Socket,
    address: String,
}

impl FakeServer {
    fn start(ctx: &zmq::Context) -> FakeServer {
        let router = ctx.socket(zmq::ROUTER).unwrap();
        router.set_linger(0).unwrap();
        router.set_rcvtimeo(10_000).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = router.get_last_endpoint().unwrap().unwrap();
        let address = endpoint.trim_start_matches("tcp://").to_string();
        FakeServer { router, address }
    }

    /// The next request: its peer's routing id, its request id and the request.
    fn request(&self) -> (Vec<u8>, u32, Request) {
        let frames = self
            .router
            .recv_multipart(0)
            .expect("a request within 10 s");
        let (id, request) = codec::decode_request(&frames[1]).unwrap();
        (frames[0].clone(), id, request)
    }

    fn send(&self, peer: &[u8], frame: Vec<u8>) {
        self.router
            .send_multipart([peer.to_vec(), frame], 0)
            .unwrap();
    }

    fn ack(&self, peer: &[u8], id: u32, seq: u64) {
        let reply = Reply::Ack {
            seq,
            ts: 0,
            duplicate: false,
        };
        self.send(peer, codec::encode_reply(id, &reply));
    }
}

#[test]
fn answers_come_in_send_order_and_replies_to_unknown_ids_are_skipped() {
    let ctx = zmq::Context::new();
    let server = FakeServer::start(&ctx);
    let mut pipeline = Pipeline::connect(&ctx, &server.address, common::TIMEOUTS)
        .unwrap()
        .with_window(10);
    let first = pipeline.send_messages("g", "u", &[outgoing(1)]).unwrap();
    let second = pipeline.send_messages("g", "u", &[outgoing(2)]).unwrap();
    let (peer, got_first, _) = server.request();
    let (_, got_second, _) = server.request();
    assert_eq!((got_first, got_second), (first, second));
    // A reply to an id never sent, a pushed event, then the answers in the wrong order.
    server.ack(&peer, second + 1000, 99);
    let pushed = Message {
        seq: 1,
        ts: 0,
        sender: "x".into(),
        text: "pushed".into(),
    };
    server.send(&peer, codec::encode_message_event("g", &pushed));
    server.ack(&peer, second, 2);
    server.ack(&peer, first, 1);
    let answers: Vec<(u32, Reply)> =
        std::iter::from_fn(|| pipeline.next_answer().unwrap()).collect();
    let ack = |seq| Reply::Ack {
        seq,
        ts: 0,
        duplicate: false,
    };
    assert_eq!(answers, [(first, ack(1)), (second, ack(2))]);

    // ERROR with request id 0 (the server could not read a request) answers the oldest.
    let third = pipeline.send_messages("g", "u", &[outgoing(3)]).unwrap();
    let (peer, _, _) = server.request();
    let refusal = Reply::Error {
        code: zms::protocol::ErrorCode::BadRequest,
        reason: "unreadable".into(),
    };
    server.send(&peer, codec::encode_reply(0, &refusal));
    assert_eq!(pipeline.next_answer().unwrap(), Some((third, refusal)));

    // A SENDS is answered by one ACKS, counted as its messages in flight.
    let batch: Vec<Outgoing> = (4..7).map(outgoing).collect();
    let fourth = pipeline.send_messages("g", "u", &batch).unwrap();
    assert_eq!(pipeline.in_flight(), 3);
    let (peer, id, request) = server.request();
    assert!(matches!(request, Request::SendBatch { ref messages, .. } if messages.len() == 3));
    let acks: Vec<Acked> = (4..7)
        .map(|seq| Acked {
            seq,
            ts: 0,
            duplicate: false,
        })
        .collect();
    server.send(&peer, codec::encode_reply(id, &Reply::Acks(acks.clone())));
    assert_eq!(
        pipeline.next_answer().unwrap(),
        Some((fourth, Reply::Acks(acks)))
    );
    assert_eq!(pipeline.next_answer().unwrap(), None, "nothing in flight");
}

#[test]
fn a_server_that_stops_answering_is_tried_again_then_reported() {
    let ctx = zmq::Context::new();
    let server = FakeServer::start(&ctx);
    let timeouts = Timeouts {
        request: Duration::from_millis(300),
        tries: 3,
    };
    let mut pipeline = Pipeline::connect(&ctx, &server.address, timeouts)
        .unwrap()
        .with_window(10);
    let ids: Vec<u32> = (0..2)
        .map(|i| pipeline.send_messages("g", "u", &[outgoing(i)]).unwrap())
        .collect();
    // The first try reaches the server (read here before anything can be given up).
    let (first_peer, first, _) = server.request();
    let (_, second, _) = server.request();
    assert_eq!(vec![first, second], ids);
    let err = pipeline.next_answer().unwrap_err();
    assert!(matches!(err, zms::Error::Timeout(_)), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "no answer from the group server at {} (tried 3 times)",
            server.address
        )),
        "{err}"
    );
    // Each later try sent both again, in order, under the same ids, on a new connection. A
    // socket given up may drop what it had not yet passed on; the last one is still open, so
    // one new connection delivers both.
    let mut by_peer: std::collections::HashMap<Vec<u8>, Vec<u32>> = Default::default();
    loop {
        let (peer, id, _) = server.request();
        assert_ne!(peer, first_peer, "a new connection");
        let got = by_peer.entry(peer).or_default();
        got.push(id);
        assert!(ids.starts_with(got), "{got:?} in the order of {ids:?}");
        if *got == ids {
            break;
        }
    }
    assert!(by_peer.len() <= 2, "at most the two later tries");
}
