use super::*;

fn command(text: &str) -> Result<Command, Refusal> {
    parse(text).command
}

#[test]
fn a_hello_takes_a_name_and_the_last_seq_of_each_group() {
    let parsed =
        parse(r#"{"type":"hello","user":"alice","last":{"general@127.0.0.1:5556":7},"ref":1}"#);
    assert_eq!(parsed.reference, Some(json!(1)));
    let Ok(Command::Hello { user, last, key }) = parsed.command else {
        panic!("{:?}", parsed.command)
    };
    assert_eq!((user.as_str(), key), ("alice", None));
    assert_eq!(last.get("general@127.0.0.1:5556"), Some(&7));
}

#[test]
fn malformed_frames_are_refused_with_a_reason() {
    for (text, why) in [
        ("not json", "not JSON"),
        ("[1,2]", "JSON object"),
        (r#"{"user":"a"}"#, "missing \"type\""),
        (r#"{"type":"fly"}"#, "unknown type"),
        (r#"{"type":"hello","user":"bad name!"}"#, "name"),
        (r#"{"type":"hello","user":"al","last":[1]}"#, "\"last\""),
        (
            r#"{"type":"send","group":"g","cid":"x y","text":"hi"}"#,
            "\"cid\"",
        ),
        (
            r#"{"type":"send","group":"g","cid":"c1","text":"a\u001b[2Jb"}"#,
            "control character",
        ),
        (
            r#"{"type":"send","group":"g","cid":"c1","text":"   "}"#,
            "empty",
        ),
        (
            r#"{"type":"send","group":"../etc","cid":"c1","text":"hi"}"#,
            "group",
        ),
        (
            r#"{"type":"history","group":"g","before":-1}"#,
            "whole number",
        ),
    ] {
        let err = command(text).expect_err(text);
        assert_eq!(err.code, "BAD_REQUEST", "{text}");
        assert!(err.message.contains(why), "{text}: {}", err.message);
    }
}

#[test]
fn a_text_over_the_limit_is_too_large() {
    let text = "x".repeat(protocol::MAX_TEXT + 1);
    let frame = json!({"type": "send", "group": "g", "cid": "c1", "text": text}).to_string();
    assert_eq!(command(&frame).unwrap_err().code, "TOO_LARGE");
}

#[test]
fn a_send_keeps_its_client_id_and_history_limits_are_clamped() {
    assert_eq!(
        command(r#"{"type":"send","group":"general@h:1","cid":"w1-000001","text":"<b>hi</b>"}"#),
        Ok(Command::Send {
            group: "general@h:1".into(),
            cid: "w1-000001".into(),
            text: "<b>hi</b>".into()
        })
    );
    assert_eq!(
        command(r#"{"type":"history","group":"g","limit":100000}"#),
        Ok(Command::History {
            group: "g".into(),
            before: 0,
            limit: HISTORY_MAX
        })
    );
}

#[test]
fn replies_are_json_with_the_ref_echoed_and_text_as_data() {
    let group = GroupRef {
        name: "general".into(),
        address: "127.0.0.1:5556".into(),
    };
    let message = Message {
        seq: 3,
        ts: 10,
        sender: "bob".into(),
        text: "<script>alert(1)</script>".into(),
    };
    let text = Reply::Message {
        group: &group,
        message: &message,
    }
    .to_json(Some(&json!("r1")));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["group"], "general@127.0.0.1:5556");
    assert_eq!(v["text"], "<script>alert(1)</script>");
    assert_eq!(v["ref"], "r1");
    assert_eq!(v["colour"], json!(colour("bob")));
}

#[test]
fn conversations_are_named_as_groups_and_a_dm_names_a_user() {
    for spec in [
        "@alice@bob",
        "@alice@bob@127.0.0.1:5556",
        "general@127.0.0.1:5556",
    ] {
        let frame = json!({"type": "members", "group": spec}).to_string();
        assert_eq!(command(&frame), Ok(Command::Members { group: spec.into() }));
    }
    for spec in ["@bob@alice", "@alice", "@alice@alice"] {
        let frame = json!({"type": "members", "group": spec}).to_string();
        assert!(command(&frame).is_err(), "{spec}");
    }
    assert_eq!(
        command(r#"{"type":"dm","user":"bob"}"#),
        Ok(Command::Dm { peer: "bob".into() })
    );
    assert_eq!(peer_of("@alice@bob", "bob").as_deref(), Some("alice"));
    assert_eq!(peer_of("@alice@bob", "carol"), None);
    assert_eq!(peer_of("general", "alice"), None);
}

#[test]
fn a_moved_group_names_both_ids() {
    let at = |address: &str| GroupRef {
        name: "general".into(),
        address: address.into(),
    };
    let (from, to) = (at("h:1"), at("h:2"));
    let v: Value = serde_json::from_str(
        &Reply::Moved {
            from: &from,
            to: &to,
        }
        .to_json(None),
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"type": "moved", "from": "general@h:1", "to": "general@h:2"})
    );
}
