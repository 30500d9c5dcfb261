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

#[test]
fn edits_deletions_and_searches_are_checked_like_sends() {
    assert_eq!(
        command(r#"{"type":"edit","group":"general","seq":3,"text":"<i>new</i>"}"#),
        Ok(Command::Edit {
            group: "general".into(),
            seq: 3,
            text: "<i>new</i>".into()
        })
    );
    assert_eq!(
        command(r#"{"type":"delete","group":"general","seq":3}"#),
        Ok(Command::Delete {
            group: "general".into(),
            seq: 3
        })
    );
    assert_eq!(
        command(r#"{"type":"search","query":"lunch plans"}"#),
        Ok(Command::Search {
            group: None,
            query: "lunch plans".into(),
            limit: SEARCH_DEFAULT
        })
    );
    assert_eq!(
        command(r#"{"type":"search","group":"general","query":"lunch","limit":5000}"#),
        Ok(Command::Search {
            group: Some("general".into()),
            query: "lunch".into(),
            limit: protocol::SEARCH_MAX
        })
    );
    for (text, why) in [
        (r#"{"type":"edit","group":"g","text":"x"}"#, "\"seq\""),
        (
            r#"{"type":"edit","group":"g","seq":0,"text":"x"}"#,
            "\"seq\"",
        ),
        (
            r#"{"type":"edit","group":"g","seq":"3","text":"x"}"#,
            "\"seq\"",
        ),
        (r#"{"type":"edit","group":"g","seq":3}"#, "\"text\""),
        (
            r#"{"type":"edit","group":"g","seq":3,"text":"  "}"#,
            "empty",
        ),
        (
            r#"{"type":"edit","group":"g","seq":3,"text":"\u0001delete 2"}"#,
            "control character",
        ),
        (r#"{"type":"delete","group":"g","seq":-2}"#, "\"seq\""),
        (r#"{"type":"delete","seq":2}"#, "\"group\""),
        (r#"{"type":"search"}"#, "\"query\""),
        (r#"{"type":"search","query":"!!"}"#, "word"),
        (r#"{"type":"search","query":"a\u0007b"}"#, "control"),
        (r#"{"type":"search","query":"x","group":7}"#, "\"group\""),
        (
            r#"{"type":"search","query":"x","limit":"all"}"#,
            "whole number",
        ),
    ] {
        let err = command(text).expect_err(text);
        assert_eq!(err.code, "BAD_REQUEST", "{text}");
        assert!(err.message.contains(why), "{text}: {}", err.message);
    }
    let long = json!({"type": "search", "query": "x".repeat(protocol::MAX_QUERY + 1)});
    assert!(command(&long.to_string()).is_err());
    let big =
        json!({"type": "edit", "group": "g", "seq": 1, "text": "x".repeat(protocol::MAX_TEXT + 1)});
    assert_eq!(command(&big.to_string()).unwrap_err().code, "TOO_LARGE");
}

#[test]
fn change_messages_go_structured_never_as_marked_text() {
    let group = GroupRef {
        name: "general".into(),
        address: "h:1".into(),
    };
    let at = |seq: u64, text: &str| Message {
        seq,
        ts: 10,
        sender: "bob".into(),
        text: text.into(),
    };
    let json_of = |m: &Message| -> Value {
        let text = Reply::Message {
            group: &group,
            message: m,
        }
        .to_json(None);
        assert!(
            !text.contains('\u{1}') && !text.contains("\\u0001"),
            "{text}"
        );
        serde_json::from_str(&text).unwrap()
    };
    let edit = json_of(&at(4, &edit::edit_text(2, "<b>new</b> words")));
    assert_eq!(edit["edit"], json!({"seq": 2, "text": "<b>new</b> words"}));
    assert_eq!((&edit["seq"], &edit["text"]), (&json!(4), &Value::Null));
    let delete = json_of(&at(5, &edit::delete_text(2)));
    assert_eq!(
        (&delete["delete"], &delete["text"]),
        (&json!(2), &Value::Null)
    );
    let unknown = json_of(&at(6, "\u{1}pin 2"));
    assert_eq!(
        (&unknown["text"], &unknown["edit"], &unknown["delete"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    let messages = [at(1, "plain"), at(2, &edit::delete_text(1))];
    let page: Value = serde_json::from_str(
        &Reply::History {
            group: &group,
            before: 3,
            messages: &messages,
            start: true,
        }
        .to_json(None),
    )
    .unwrap();
    assert_eq!(page["messages"][0]["text"], "plain");
    assert_eq!(page["messages"][1]["delete"], 1);
}

#[test]
fn hits_carry_their_match_ranges_in_utf16_units() {
    let group = GroupRef {
        name: "general".into(),
        address: "h:1".into(),
    };
    // "é" is 2 octets and 1 UTF-16 unit; "😀" is 4 octets and 2 units.
    let text = "café 😀 lunch";
    let start = text.find("lunch").unwrap() as u32;
    let hits = [(
        group.clone(),
        Hit {
            seq: 7,
            ts: 10,
            sender: "bob".into(),
            text: text.into(),
            matches: vec![(0, 5), (start, start + 5), (1, 200)],
        },
    )];
    let v: Value = serde_json::from_str(
        &Reply::Found {
            query: "café lunch",
            hits: &hits,
            missed: &[],
        }
        .to_json(Some(&json!("search"))),
    )
    .unwrap();
    assert_eq!(v["type"], "found");
    assert_eq!(v["ref"], "search");
    let hit = &v["hits"][0];
    assert_eq!(
        (&hit["group"], &hit["seq"], &hit["text"]),
        (&json!("general@h:1"), &json!(7), &json!(text))
    );
    assert_eq!(
        hit["matches"],
        json!([[0, 4], [8, 13]]),
        "out of range: left out"
    );
    assert_eq!(v["missed"], json!([]));
}
