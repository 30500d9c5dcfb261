//! How messages, groups and members look: plain lines for people, JSON Lines for scripts; and
//! the one way lines reach stdout ([`emit`]), which ends a command quietly when the reader of
//! its pipe has gone (`zms list | head -1`), as `cat` ends.
//!
//! Plain lines show network text through [`safe`], JSON through [`safe::json`]: exact
//! values, with anything a terminal could act on escaped.

use std::io::Write;

use serde_json::json;

use super::safe;
use crate::client::{GroupRef, ReadState};
use crate::protocol::{edit, GroupEntry, Hit, Member, Message};
use crate::{time, Error, Result};

/// Plain or JSON Lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
}

/// Writes one line to stdout.
///
/// # Errors
/// [`Error::Io`]; a closed pipe is one for which [`is_closed_pipe`] holds, and the command
/// then ends quietly.
pub fn emit(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// [`emit`] where there is no caller to hand an error to (the interactive client's threads):
/// a closed pipe ends the process quietly; another failure to write ends it with one line.
pub fn emit_or_exit(line: &str) {
    if let Err(err) = emit(line) {
        if !is_closed_pipe(&err) {
            let _ = writeln!(std::io::stderr(), "error: cannot write output: {err}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

/// Whether `err` is stdout's reader having gone: nothing is left to say, and nobody to say
/// it to, so the command ends quietly with success (as `cat | head` does in a shell).
pub fn is_closed_pipe(err: &Error) -> bool {
    matches!(err, Error::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A JSON value as one line, safe to print (see [`safe::json`]).
pub fn json_line(value: &serde_json::Value) -> String {
    safe::json(&value.to_string()).into_owned()
}

/// How a group is named to `me`: a conversation as `@` and the other user, a group by name.
pub fn group_label(name: &str, me: &str) -> String {
    match crate::protocol::conversation_users(name) {
        Some((low, high)) => format!("@{}", if low == me { high } else { low }),
        None => name.to_string(),
    }
}

/// A stored message as `tail` prints it when it follows several groups: in plain lines
/// [`message`] after the group's [`group_label`] in brackets; JSON names the group anyway.
pub fn labelled_message(format: Format, group: &GroupRef, me: &str, m: &Message) -> String {
    match format {
        Format::Plain => format!(
            "[{}] {}",
            safe::field(&group_label(&group.name, me)),
            message(format, group, m)
        ),
        Format::Json => message(format, group, m),
    }
}

/// A stored message, as `history` and `tail` print it. In plain lines a newline of the text
/// continues on a line of its own, marked with [`safe::CONTINUATION`].
/// An edit or a deletion shows what it changed: `edited #3: new text (edited)`, `deleted #3
/// (deleted)`; in JSON, `edit_of` or `delete_of` names the original's seq.
pub fn message(format: Format, group: &GroupRef, m: &Message) -> String {
    let change = edit::parse(&m.text);
    match format {
        Format::Plain => format!(
            "{} #{} {}: {}",
            time::rfc3339(m.ts),
            m.seq,
            safe::field(&m.sender),
            change_text(change).unwrap_or_else(|| safe::text(&m.text).into_owned())
        ),
        Format::Json => {
            let mut value = message_json(group, m);
            match change {
                Some(edit::Change::Edit { seq, .. }) => value["edit_of"] = json!(seq),
                Some(edit::Change::Delete { seq }) => value["delete_of"] = json!(seq),
                None => {}
            }
            json_line(&value)
        }
    }
}

/// A message as the JSON object every command prints (`history --json`, `tail --json`).
fn message_json(group: &GroupRef, m: &Message) -> serde_json::Value {
    json!({
        "group": group.name,
        "address": group.address,
        "seq": m.seq,
        "ts": time::rfc3339(m.ts),
        "ts_ms": m.ts,
        "sender": m.sender,
        "text": m.text,
    })
}

/// How a change message reads: `edited #3: new text (edited)` or `deleted #3 (deleted)`.
pub fn change_text(change: Option<edit::Change<'_>>) -> Option<String> {
    Some(match change? {
        edit::Change::Edit { seq, text } => format!("edited #{seq}: {} (edited)", safe::text(text)),
        edit::Change::Delete { seq } => format!("deleted #{seq} (deleted)"),
    })
}

/// A message as `history` shows it once edits are applied: as [`message`], with its latest
/// text and `(edited TIME)`, or `(deleted)`; in JSON with `edited_ts` or `deleted` then.
pub fn shown(format: Format, group: &GroupRef, s: &edit::Shown) -> String {
    let m = &s.message;
    match format {
        Format::Plain => {
            let note = match (s.deleted, s.edited_ms) {
                (true, _) => "(deleted)".to_string(),
                (false, Some(ms)) => {
                    format!("{} (edited {})", safe::text(&m.text), time::rfc3339(ms))
                }
                (false, None) => safe::text(&m.text).into_owned(),
            };
            format!(
                "{} #{} {}: {note}",
                time::rfc3339(m.ts),
                m.seq,
                safe::field(&m.sender)
            )
        }
        Format::Json => {
            let mut value = message_json(group, m);
            if let Some(ms) = s.edited_ms {
                value["edited_ts"] = json!(time::rfc3339(ms));
                value["edited_ts_ms"] = json!(ms);
            }
            if s.deleted {
                value["deleted"] = json!(true);
            }
            json_line(&value)
        }
    }
}

/// A search hit of `search`: time, group, seq, sender and text, the matched words marked with
/// `open` and `close` in plain lines; in JSON the text and the matches' byte ranges.
pub fn hit(format: Format, group: &GroupRef, hit: &Hit, marks: (&str, &str)) -> String {
    match format {
        Format::Plain => format!(
            "{} {} #{} {}: {}",
            time::rfc3339(hit.ts),
            safe::field(&group.name),
            hit.seq,
            safe::field(&hit.sender),
            safe::highlighted(&hit.text, &hit.matches, marks.0, marks.1)
        ),
        Format::Json => json_line(&json!({
            "group": group.name,
            "address": group.address,
            "seq": hit.seq,
            "ts": time::rfc3339(hit.ts),
            "ts_ms": hit.ts,
            "sender": hit.sender,
            "text": hit.text,
            "matches": hit.matches,
        })),
    }
}

/// One group of `unread`: how many messages are new since the user's read position.
pub fn unread(format: Format, group: &GroupRef, state: &ReadState) -> String {
    match format {
        Format::Plain => format!(
            "{:<24} {} new (read to #{} of #{})",
            safe::field(&group.name),
            state.unread(),
            state.read_seq,
            state.last_seq
        ),
        Format::Json => json_line(&json!({
            "group": group.name,
            "address": group.address,
            "last_seq": state.last_seq,
            "read_seq": state.read_seq,
            "unread": state.unread(),
        })),
    }
}

/// One entry of `list`.
pub fn group(format: Format, g: &GroupEntry) -> String {
    match format {
        Format::Plain => format!("{:<24} {}", safe::field(&g.name), safe::field(&g.address)),
        Format::Json => json_line(&json!({ "name": g.name, "address": g.address })),
    }
}

/// One entry of `members`.
pub fn member(format: Format, m: &Member) -> String {
    match format {
        Format::Plain => format!(
            "{}{}",
            safe::field(&m.name),
            if m.online { " (online)" } else { "" }
        ),
        Format::Json => json_line(&json!({ "name": m.name, "online": m.online })),
    }
}

/// The line that says a history listing reached where the server's retention trimmed older
/// messages: `first_kept` is the group's first kept seq, `messages` what was listed.
pub fn trimmed_note(first_kept: u64, messages: &[Message]) -> Option<String> {
    let reached = messages.first().is_none_or(|m| m.seq <= first_kept);
    (first_kept > 1 && reached)
        .then(|| format!("older messages were trimmed: kept history starts at seq {first_kept}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_show_network_text_harmlessly_and_json_exactly() {
        let group = GroupRef {
            name: "general".into(),
            address: "h:1".into(),
        };
        let m = Message {
            seq: 3,
            ts: 1_764_000_000_000,
            sender: "bob\x1b[8m".into(),
            text: "hi\r\x1b[K07:42:00 bob: paste it here\nsecond".into(),
        };
        assert_eq!(
            message(Format::Plain, &group, &m),
            "2025-11-24T16:00:00.000Z #3 bob␛[8m: hi␍␛[K07:42:00 bob: paste it here\n  | second"
        );
        let line = message(Format::Json, &group, &m);
        assert!(!line.contains('\x1b') && !line.contains('\n'), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["text"], m.text.as_str());
        assert_eq!(value["sender"], m.sender.as_str());
        let who = Member {
            name: "eve\u{202E}".into(),
            online: true,
        };
        assert_eq!(member(Format::Plain, &who), "eve<U+202E> (online)");
    }
}
