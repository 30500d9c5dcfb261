//! What people and scripts run: the one-shot commands and the interactive [`shell`].
//! The only module that prints.

pub mod command;
pub mod complete;
pub mod editor;
pub mod outbox;
pub mod output;
pub mod render;
pub mod shell;
pub mod view;

use std::io::{BufRead, BufReader};
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

/// Runs one command for user `name` against the directories `servers`.
///
/// # Errors
/// Whatever went wrong, as one line for the user.
pub fn run(mut session: Session, format: Format, action: Action) -> Result<()> {
    let result = act(&mut session, format, action);
    tell_trusted(&mut session);
    result
}

/// Tells on stderr which server keys were trusted on first use, and where they were pinned.
fn tell_trusted(session: &mut Session) {
    for trusted in session.take_trusted() {
        eprintln!("{trusted}");
    }
}

fn act(session: &mut Session, format: Format, action: Action) -> Result<()> {
    match action {
        Action::List => {
            for g in session.list_groups()? {
                println!("{}", output::group(format, &g));
            }
        }
        Action::Join(spec) => {
            let group = session.resolve(&spec)?;
            let last_seq = session.join(&group)?;
            match format {
                Format::Plain => {
                    let s = if last_seq == 1 { "" } else { "s" };
                    println!("joined {group} ({last_seq} message{s} so far)")
                }
                Format::Json => println!(
                    "{}",
                    json!({"group": group.name, "address": group.address, "last_seq": last_seq})
                ),
            }
        }
        Action::Leave(spec) => {
            let group = session.resolve(&spec)?;
            session.leave(&group)?;
            match format {
                Format::Plain => println!("left {group}"),
                Format::Json => println!(
                    "{}",
                    json!({"group": group.name, "address": group.address, "left": true})
                ),
            }
        }
        Action::Send(spec, text) => {
            let group = session.resolve(&spec)?;
            let print = |(seq, ts): (u64, i64)| match format {
                Format::Plain => println!("sent {group} #{seq} at {}", time::rfc3339(ts)),
                Format::Json => println!(
                    "{}",
                    json!({"group": group.name, "seq": seq, "ts": time::rfc3339(ts)})
                ),
            };
            match text {
                Some(text) => print(session.send(&group, &text)?),
                // Lines of stdin go as batches (SENDS) of what has arrived, so a file is sent
                // in few round trips and never held whole, and a line of a live stream (`tail
                // -f log |`) goes as soon as the input pauses after it.
                None => {
                    let mut input = BufReader::new(std::io::stdin().lock());
                    let mut batch: Vec<String> = Vec::new();
                    loop {
                        let mut line = String::new();
                        let end = input.read_line(&mut line)? == 0;
                        if !end {
                            // As `lines()` does: without its "\n" or "\r\n".
                            if let Some(text) = line.strip_suffix('\n') {
                                line = text.strip_suffix('\r').unwrap_or(text).to_string();
                            }
                            batch.push(line);
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
                println!("{}", output::message(format, &group, &m));
            }
        }
        Action::Members(spec) => {
            let group = session.resolve(&spec)?;
            for m in session.members(&group)? {
                println!("{}", output::member(format, &m));
            }
        }
        Action::Invite(spec, key) => {
            let group = session.resolve(&spec)?;
            session.invite(&group, &key)?;
            match format {
                Format::Plain => println!("invited {key} into {group}"),
                Format::Json => println!(
                    "{}",
                    json!({"group": group.name, "address": group.address, "invited": key})
                ),
            }
        }
        Action::Tail(spec) => {
            let group = session.resolve(&spec)?;
            session.subscribe(&group)?;
            tell_trusted(session);
            loop {
                match session.next_event(Duration::from_secs(3600))? {
                    Some(SessionEvent::Message(d)) => {
                        println!("{}", output::message(format, &d.group, &d.message))
                    }
                    Some(SessionEvent::ServerLost(a)) => {
                        eprintln!("group server {a} is not answering; reconnecting…")
                    }
                    Some(SessionEvent::ServerBack(a)) => eprintln!("group server {a} is back"),
                    Some(SessionEvent::MembershipEnded(g)) => {
                        return Err(errinput!("no longer a member of {g}"))
                    }
                    Some(SessionEvent::Presence { .. }) | None => {}
                }
            }
        }
    }
    Ok(())
}

/// Asks on the terminal, showing `default`; an empty answer takes it, or without a default
/// asks again.
///
/// # Errors
/// When stdin closes.
pub fn prompt(question: &str, default: Option<&str>) -> Result<String> {
    use std::io::Write;
    // Each round reads a line or ends at end of input: bounded by what the user types.
    loop {
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
            (true, Some(d)) => return Ok(d.to_string()),
            (true, None) => println!("'{question}' needs an answer (Ctrl-D gives up)"),
            (false, _) => return Ok(answer.to_string()),
        }
    }
}
