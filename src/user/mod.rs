//! What people and scripts run: the one-shot commands and the interactive [`shell`].
//! The only module that prints.

pub mod command;
pub mod complete;
pub mod editor;
pub mod outbox;
pub mod output;
pub mod render;
pub mod safe;
pub mod shell;
pub mod view;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use serde_json::json;

use crate::client::{Session, SessionEvent};
use crate::{errinput, protocol, time, Result};
use output::Format;

/// What a one-shot command does.
#[derive(Debug, Clone)]
pub enum Action {
    List,
    Join(String),
    Leave(String),
    /// `None` text: send each line of stdin.
    Send(String, Option<String>),
    History {
        group: String,
        since: Option<String>,
        limit: Option<u64>,
    },
    Tail(String),
    Members(String),
    /// Invite a key into a private group.
    Invite(String, String),
}

/// `println!` for the interactive client: through [`output::emit_or_exit`], so a closed pipe
/// ends the process quietly instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => { $crate::user::output::emit_or_exit(&format!($($arg)*)) };
}
pub(crate) use say;

/// A line on stderr; a closed stderr is no reason to stop.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs one command for user `name` against the directories `servers`.
///
/// # Errors
/// Whatever went wrong, as one line for the user; a closed stdout as an error for which
/// [`output::is_closed_pipe`] holds.
pub fn run(mut session: Session, format: Format, action: Action) -> Result<()> {
    let emit = output::emit;
    match action {
        Action::List => {
            for g in session.list_groups()? {
                emit(&output::group(format, &g))?;
            }
        }
        Action::Join(spec) => {
            let group = session.resolve(&spec)?;
            let last_seq = session.join(&group)?;
            match format {
                Format::Plain => {
                    let s = if last_seq == 1 { "" } else { "s" };
                    let group = safe::field(&group.to_string()).into_owned();
                    emit(&format!("joined {group} ({last_seq} message{s} so far)"))?
                }
                Format::Json => emit(&output::json_line(
                    &json!({"group": group.name, "address": group.address, "last_seq": last_seq}),
                ))?,
            }
        }
        Action::Leave(spec) => {
            let group = session.resolve(&spec)?;
            session.leave(&group)?;
            match format {
                Format::Plain => emit(&format!("left {}", safe::field(&group.to_string())))?,
                Format::Json => emit(&output::json_line(
                    &json!({"group": group.name, "address": group.address, "left": true}),
                ))?,
            }
        }
        Action::Send(spec, text) => {
            let group = session.resolve(&spec)?;
            let shown = safe::field(&group.to_string()).into_owned();
            // The confirmations are a courtesy: a closed stdout stops them, not the sending.
            let print = |(seq, ts): (u64, i64)| {
                let _ = emit(&match format {
                    Format::Plain => format!("sent {shown} #{seq} at {}", time::rfc3339(ts)),
                    Format::Json => output::json_line(
                        &json!({"group": group.name, "seq": seq, "ts": time::rfc3339(ts)}),
                    ),
                });
            };
            match text {
                Some(text) => {
                    protocol::check_text(&text).map_err(|why| errinput!("not sent: {why}"))?;
                    print(session.send(&group, &text)?)
                }
                // Lines of stdin go as batches (SENDS) of what has arrived, so a file is sent
                // in few round trips and never held whole, and a line of a live stream (`tail
                // -f log |`) goes as soon as the input pauses after it. A line no server
                // takes (empty, control characters) is reported and skipped; the others go.
                None => {
                    let mut input = BufReader::new(std::io::stdin().lock());
                    let mut batch: Vec<String> = Vec::new();
                    let (mut number, mut refused) = (0_u64, 0_u64);
                    loop {
                        let mut line = String::new();
                        let end = input.read_line(&mut line)? == 0;
                        if !end {
                            number += 1;
                            // As `lines()` does: without its "\n" or "\r\n".
                            if let Some(text) = line.strip_suffix('\n') {
                                line = text.strip_suffix('\r').unwrap_or(text).to_string();
                            }
                            match protocol::check_text(&line) {
                                Ok(()) => batch.push(line),
                                Err(why) => {
                                    refused += 1;
                                    note(&format!("error: line {number} not sent: {why}"));
                                }
                            }
                        }
                        let waits = end || !input.buffer().contains(&b'\n');
                        if !batch.is_empty() && (waits || batch.len() >= protocol::MAX_BATCH) {
                            session
                                .send_many(&group, &batch)?
                                .into_iter()
                                .for_each(print);
                            batch.clear();
                        }
                        if end {
                            break;
                        }
                    }
                    if refused > 0 {
                        let s = if refused == 1 { "" } else { "s" };
                        return Err(errinput!("{refused} line{s} not sent (see above)"));
                    }
                }
            }
        }
        Action::History {
            group,
            since,
            limit,
        } => {
            let group = session.resolve(&group)?;
            let since = since.map(|s| time::parse(&s, time::now_ms())).transpose()?;
            for m in session.history(&group, since, limit)? {
                emit(&output::message(format, &group, &m))?;
            }
        }
        Action::Members(spec) => {
            let group = session.resolve(&spec)?;
            for m in session.members(&group)? {
                emit(&output::member(format, &m))?;
            }
        }
        Action::Invite(spec, key) => {
            let group = session.resolve(&spec)?;
            session.invite(&group, &key)?;
            match format {
                Format::Plain => emit(&format!(
                    "invited {} into {}",
                    safe::field(&key),
                    safe::field(&group.to_string())
                ))?,
                Format::Json => emit(&output::json_line(
                    &json!({"group": group.name, "address": group.address, "invited": key}),
                ))?,
            }
        }
        Action::Tail(spec) => {
            let group = session.resolve(&spec)?;
            session.subscribe(&group)?;
            loop {
                match session.next_event(Duration::from_secs(3600))? {
                    Some(SessionEvent::Message(d)) => {
                        emit(&output::message(format, &d.group, &d.message))?
                    }
                    Some(SessionEvent::ServerLost(a)) => note(&format!(
                        "group server {} is not answering; reconnecting…",
                        safe::field(&a)
                    )),
                    Some(SessionEvent::ServerBack(a)) => {
                        note(&format!("group server {} is back", safe::field(&a)))
                    }
                    Some(SessionEvent::Presence { .. }) | None => {}
                }
            }
        }
    }
    Ok(())
}

/// Asks on the terminal, showing `default`; an empty answer takes it.
///
/// # Errors
/// When stdin closes.
pub fn prompt(question: &str, default: Option<&str>) -> Result<String> {
    use std::io::Write;
    match default {
        Some(d) => print!("{question} [{d}]: "),
        None => print!("{question}: "),
    }
    std::io::stdout().flush()?;
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line)? == 0 {
        return Err(errinput!("no answer to '{question}'"));
    }
    let answer = line.trim();
    match (answer.is_empty(), default) {
        (true, Some(d)) => Ok(d.to_string()),
        (true, None) => Err(errinput!("'{question}' needs an answer")),
        (false, _) => Ok(answer.to_string()),
    }
}
