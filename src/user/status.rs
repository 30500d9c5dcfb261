//! `zms status`: the whole deployment as the message servers know it, with each group
//! server asked too. A server that does not answer within the request timeout shows as
//! unreachable. Everything a server said is printed through [`safe`] (plain) or
//! [`output::json_line`] (JSON).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::output::{self, Format};
use super::safe;
use crate::client::Session;
use crate::{transport, Result};

/// One server's answer, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Its STATUS object.
    Status(Value),
    /// It did not answer, or not with a STATUS.
    Unreachable { address: String, error: String },
}

/// What every server said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub message_servers: Vec<Answer>,
    pub group_servers: Vec<Answer>,
}

/// Asks every message server of `session`, then every group server any of them lists.
pub fn gather(session: &mut Session) -> Report {
    let mut report = Report::default();
    let mut addresses = BTreeSet::new();
    for address in session.directories() {
        let answer =
            transport::endpoint(&address).and_then(|endpoint| session.directory_status(&endpoint));
        let answer = parse(&address, answer);
        if let Answer::Status(status) = &answer {
            for server in status["servers"].as_array().into_iter().flatten() {
                if let Some(a) = server["address"].as_str() {
                    addresses.insert(a.to_string());
                }
            }
        }
        report.message_servers.push(answer);
    }
    for address in addresses {
        let answer = session.server_status(&address);
        report.group_servers.push(parse(&address, answer));
    }
    report
}

fn parse(address: &str, answer: Result<String>) -> Answer {
    let unreachable = |error: String| Answer::Unreachable {
        address: address.to_string(),
        error,
    };
    match answer {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(value) if value.is_object() => Answer::Status(value),
            _ => unreachable("its STATUS is not a JSON object".into()),
        },
        Err(err) => unreachable(err.to_string()),
    }
}

/// The report as one JSON object: `message_servers` and `group_servers`, each a list of
/// STATUS objects or `{"address", "unreachable": true, "error"}`.
pub fn to_json(report: &Report) -> Value {
    let list = |answers: &[Answer]| -> Vec<Value> {
        answers
            .iter()
            .map(|a| match a {
                Answer::Status(status) => status.clone(),
                Answer::Unreachable { address, error } => {
                    json!({"address": address, "unreachable": true, "error": error})
                }
            })
            .collect()
    };
    json!({
        "message_servers": list(&report.message_servers),
        "group_servers": list(&report.group_servers),
    })
}

/// The report as lines for people, `now_ms` being the time (for ages).
pub fn to_lines(report: &Report, now_ms: i64) -> Vec<String> {
    let text = |v: &Value| safe::field(v.as_str().unwrap_or("?")).into_owned();
    let num = |v: &Value| v.as_u64().map_or("?".to_string(), |n| n.to_string());
    let age = |v: &Value| v.as_i64().map_or("?".to_string(), |t| ago(now_ms - t));
    let key = |v: &Value| match v.as_str() {
        Some(k) if !k.is_empty() => format!("  key {}…", safe::field(&k[..k.len().min(8)])),
        _ => String::new(),
    };
    let mut lines = vec!["message servers".to_string()];
    let mut unhealthy = Vec::new();
    for answer in &report.message_servers {
        match answer {
            Answer::Status(s) => lines.push(format!(
                "  {}  up {}  v{}  group servers {}  users {}  connections {}{}",
                text(&s["address"]),
                age(&s["up_since_ms"]),
                text(&s["version"]),
                s["servers"].as_array().map_or(0, Vec::len),
                num(&s["users"]),
                num(&s["connections"]),
                key(&s["key"]),
            )),
            Answer::Unreachable { address, error } => {
                lines.push(format!("  {}  unreachable", safe::field(address)));
                unhealthy.push(format!("{}: {}", safe::field(address), safe::field(error)));
            }
        }
    }
    lines.push("group servers".to_string());
    let mut groups = Vec::new();
    for answer in &report.group_servers {
        match answer {
            Answer::Status(s) => {
                let healthy = s["healthy"].as_bool() == Some(true);
                lines.push(format!(
                    "  {}  {}  up {}  v{}  connections {}  storage {}{}",
                    text(&s["address"]),
                    if healthy { "ok" } else { "UNHEALTHY" },
                    age(&s["up_since_ms"]),
                    text(&s["version"]),
                    num(&s["connections"]),
                    bytes(s["storage_bytes"].as_u64()),
                    key(&s["key"]),
                ));
                if !healthy {
                    unhealthy.push(format!("{}: {}", text(&s["address"]), text(&s["problem"])));
                }
                for g in s["groups"].as_array().into_iter().flatten() {
                    groups.push(format!(
                        "  {}  on {}  members {}  online {}  last seq {}  {:.2} msg/s",
                        text(&g["name"]),
                        text(&s["address"]),
                        num(&g["members"]),
                        num(&g["online"]),
                        num(&g["last_seq"]),
                        g["messages_per_second"].as_f64().unwrap_or(0.0),
                    ));
                }
            }
            Answer::Unreachable { address, error } => {
                lines.push(format!("  {}  unreachable", safe::field(address)));
                unhealthy.push(format!("{}: {}", safe::field(address), safe::field(error)));
            }
        }
    }
    lines.push("groups".to_string());
    lines.extend(groups);
    if !unhealthy.is_empty() {
        lines.push("unhealthy".to_string());
        lines.extend(unhealthy.into_iter().map(|u| format!("  {u}")));
    }
    lines
}

/// `3d 4h`, `5m 2s`: how long ago, in its two largest units.
fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn bytes(n: Option<u64>) -> String {
    match n {
        None => "?".into(),
        Some(n) if n < 1024 * 1024 => format!("{} KiB", n.div_ceil(1024)),
        Some(n) => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

/// Runs `zms status`: once, or with `watch` every so often until interrupted (Ctrl-C),
/// redrawing the screen in place (JSON: one object a line).
///
/// # Errors
/// A failure to write stdout.
pub fn run(mut session: Session, format: Format, watch: Option<Duration>) -> Result<()> {
    loop {
        let report = gather(&mut session);
        match format {
            Format::Json => output::emit(&output::json_line(&to_json(&report)))?,
            Format::Plain => {
                let lines = to_lines(&report, crate::time::now_ms());
                // Home and clear, then the report: the screen shows only the latest.
                let clear = if watch.is_some() { "\x1b[H\x1b[2J" } else { "" };
                output::emit(&format!("{clear}{}", lines.join("\n")))?;
            }
        }
        match watch {
            Some(every) => std::thread::sleep(every),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_and_unhealthy_servers_are_listed_and_network_text_is_escaped() {
        let report = Report {
            message_servers: vec![Answer::Status(json!({
                "address": "127.0.0.1:5555", "version": "0.1.0", "up_since_ms": 0,
                "servers": [{"address": "127.0.0.1:6000"}], "users": 1, "connections": 2,
                "key": "",
            }))],
            group_servers: vec![
                Answer::Status(json!({
                    "address": "127.0.0.1:6000", "version": "0.1.0", "up_since_ms": 0,
                    "healthy": false, "problem": "store unwritable: \x1b[2Jdisk",
                    "connections": 1, "storage_bytes": 4096,
                    "groups": [{"name": "general", "members": 2, "online": 1, "last_seq": 7,
                                "messages_per_second": 0.5}],
                })),
                Answer::Unreachable {
                    address: "127.0.0.1:6001".into(),
                    error: "no answer".into(),
                },
            ],
        };
        let lines = to_lines(&report, 90_000).join("\n");
        assert!(
            lines.contains("127.0.0.1:6000  UNHEALTHY  up 1m 30s"),
            "{lines}"
        );
        assert!(
            lines.contains(
                "general  on 127.0.0.1:6000  members 2  online 1  last seq 7  0.50 msg/s"
            ),
            "{lines}"
        );
        assert!(lines.contains("127.0.0.1:6001  unreachable"), "{lines}");
        assert!(
            lines.contains("127.0.0.1:6000: store unwritable: ␛[2Jdisk"),
            "{lines}"
        );
        assert!(!lines.contains('\x1b'), "{lines}");
        let value = to_json(&report);
        assert_eq!(value["group_servers"][1]["unreachable"], true);
    }
}
