//! What people and scripts run: the one-shot commands and the interactive [`shell`].
//! The only module that prints.

pub mod admin;
pub mod chat;
pub mod command;
pub mod complete;
pub mod editor;
pub mod kept;
pub mod mention;
pub mod outbox;
pub mod output;
pub mod render;
pub mod safe;
pub mod shell;
pub mod status;
pub mod tty;
pub mod view;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{GroupRef, Pipeline, Session, SessionEvent};
use crate::protocol::{codec, ErrorCode, Outgoing, Reply};
use crate::{errinput, protocol, time, Error, Result};
use output::Format;

/// How often `zms tail --all` asks the message server for groups it does not follow yet.
const TAIL_RESCAN: Duration = Duration::from_secs(3);

/// What a one-shot command does.
#[derive(Debug, Clone)]
pub enum Action {
    List,
    Join(String),
    Leave(String),
    /// `None` text: send each line of stdin. `id`: the client id of the one message.
    Send {
        group: String,
        text: Option<String>,
        id: Option<String>,
    },
    History {
        group: String,
        since: Option<String>,
        limit: Option<u64>,
    },
    /// Follow `groups` (or with `all` every group the user is a member of), after printing
    /// each one's `last` messages.
    Tail {
        groups: Vec<String>,
        all: bool,
        last: Option<u64>,
    },
    Members(String),
    /// The messages mentioning the user among the `last` of each of their groups.
    Mentions {
        last: u64,
    },
    /// Invite a key into a private group.
    Invite(String, String),
    /// Remove a user from a group (operators).
    Kick(String, String),
    /// Remove a user from a group and refuse their joins (operators).
    Ban(String, String),
    /// Let a banned user join again (operators).
    Unban(String, String),
    /// Create a group on a group server (operators): name, private, the group server.
    CreateGroup(String, bool, Option<String>),
    /// Delete a group and its messages (operators).
    DeleteGroup(String),
    /// Make a group private or public (operators).
    SetPrivate(String, bool),
    /// Print every stored message of a group as JSON Lines (operators, or members).
    Export(String),
    /// Store the messages of an export, read from stdin (operators).
    Import(String),
    /// Search, unread counts, edits and deletions.
    Chat(chat::ChatAction),
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
    let result = act(&mut session, format, action);
    tell_trusted(&mut session);
    result
}

/// Tells on stderr which server keys were trusted on first use, and where they were pinned
/// (a closed stderr is no reason to stop).
fn tell_trusted(session: &mut Session) {
    for trusted in session.take_trusted() {
        // The address may be one a server listed: shown harmlessly.
        note(&safe::field(&trusted.to_string()));
    }
}

fn act(session: &mut Session, format: Format, action: Action) -> Result<()> {
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
        Action::Send {
            group: spec,
            text,
            id,
        } => {
            let group = session.resolve(&spec)?;
            let shown = safe::field(&group.to_string()).into_owned();
            // The confirmations are a courtesy: a closed stdout stops them, not the sending.
            let print = |(seq, ts): (u64, i64), again: bool| {
                let again = if again {
                    " (kept from an earlier try)"
                } else {
                    ""
                };
                let _ = emit(&match format {
                    Format::Plain => {
                        format!("sent {shown} #{seq} at {}{again}", time::rfc3339(ts))
                    }
                    Format::Json => output::json_line(
                        &json!({"group": group.name, "seq": seq, "ts": time::rfc3339(ts)}),
                    ),
                });
            };
            let kept = crate::dirs::state_home_of("unconfirmed")
                .ok()
                .map(|dir| kept::Kept::new(&dir, session.name()));
            // What earlier runs could not confirm goes first, under its ids: in order, once.
            let refused = send_kept(session, kept.as_ref(), &group, id.as_deref(), |s| {
                print(s, true)
            })?;
            match text {
                Some(text) => {
                    protocol::check_text(&text).map_err(|why| errinput!("not sent: {why}"))?;
                    let client_id = id.unwrap_or_else(|| session.next_client_id());
                    let message = Outgoing { client_id, text };
                    send_keeping(session, kept.as_ref(), &group, &[message])?
                        .into_iter()
                        .for_each(|s| print(s, false));
                }
                // Lines of stdin go as batches (SENDS) of what has arrived, so a file is sent
                // in few round trips and never held whole, and a line of a live stream (`tail
                // -f log |`) goes as soon as the input pauses after it. A line no server
                // takes (empty, control characters) is reported and skipped; the others go.
                None => {
                    let skipped = send_lines(session, kept.as_ref(), &group, |s| print(s, false))?;
                    if skipped > 0 {
                        let s = if skipped == 1 { "" } else { "s" };
                        return Err(errinput!("{skipped} line{s} not sent (see above)"));
                    }
                }
            }
            if let Some(err) = refused {
                return Err(err);
            }
        }
        Action::History {
            group,
            since,
            limit,
        } => {
            let group = session.resolve(&group)?;
            let since = since.map(|s| time::parse(&s, time::now_ms())).transpose()?;
            let messages = session.history(&group, since, limit)?;
            // Edits and deletions fold into the messages they change (PROTOCOL.md, EDIT).
            for shown in protocol::edit::fold(messages.clone()) {
                emit(&output::shown(format, &group, &shown))?;
            }
            // To stderr: the output stays the messages, one object a line with --json.
            if let Some(line) = output::trimmed_note(session.first_kept(&group)?, &messages) {
                eprintln!("{line}");
            }
        }
        Action::Mentions { last } => {
            let me = session.name().to_string();
            let mut scanned = Vec::new();
            for entry in session.list_groups()? {
                if protocol::conversation_users(&entry.name)
                    .is_some_and(|(a, b)| a != me && b != me)
                {
                    continue;
                }
                let group = GroupRef {
                    name: entry.name,
                    address: entry.address,
                };
                match session.history(&group, None, Some(last)) {
                    Ok(messages) => scanned.push((group, messages)),
                    Err(Error::Rejected {
                        code: ErrorCode::NotMember | ErrorCode::UnknownGroup,
                        ..
                    }) => {}
                    Err(err) => return Err(err),
                }
            }
            for (group, m) in mention::recent(scanned, &me, usize::MAX) {
                emit(&output::labelled_message(format, &group, &me, &m))?;
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
        Action::Chat(action) => chat::act(session, format, action)?,
        Action::Kick(spec, user) => remove(session, format, &spec, &user, false)?,
        Action::Ban(spec, user) => remove(session, format, &spec, &user, true)?,
        Action::Unban(spec, user) => admin::unban(session, format, &spec, &user)?,
        Action::CreateGroup(name, private, server) => {
            admin::create(session, format, &name, private, server.as_deref())?
        }
        Action::DeleteGroup(spec) => admin::delete(session, format, &spec)?,
        Action::SetPrivate(spec, private) => admin::set_private(session, format, &spec, private)?,
        Action::Export(spec) => admin::export(session, &spec)?,
        Action::Import(spec) => admin::import(session, format, &spec, std::io::stdin().lock())?,
        Action::Tail { groups, all, last } => {
            let started_ms = time::now_ms();
            let mut followed = follow(session, &groups, all)?;
            // One group prints as it always has; several say on each line whose it is.
            let labelled = all || followed.len() > 1;
            let me = session.name().to_string();
            let line = |group: &GroupRef, m: &protocol::Message| match labelled {
                true => output::labelled_message(format, group, &me, m),
                false => output::message(format, group, m),
            };
            let mut known: HashSet<GroupRef> = HashSet::new();
            let mut rescan = Instant::now() + TAIL_RESCAN;
            loop {
                // What a subscription from its last seq does not bring: the last N, or for a
                // group found after the start (a new conversation) what came since the start.
                for (group, last_seq) in followed.drain(..) {
                    let earlier = match (last, known.is_empty()) {
                        (Some(n), _) => last_messages(session, &group, last_seq, n)?,
                        (None, true) => Vec::new(),
                        (None, false) => session
                            .history(&group, Some(started_ms), None)?
                            .into_iter()
                            .filter(|m| m.seq <= last_seq)
                            .collect(),
                    };
                    for m in &earlier {
                        emit(&line(&group, m))?;
                    }
                    known.insert(group);
                }
                tell_trusted(session);
                let wait = match all {
                    true => rescan.saturating_duration_since(Instant::now()),
                    false => Duration::from_secs(3600),
                };
                match session.next_event(wait)? {
                    Some(SessionEvent::Message(d)) => emit(&line(&d.group, &d.message))?,
                    Some(SessionEvent::ServerLost(a)) => note(&format!(
                        "group server {} is not answering; reconnecting…",
                        safe::field(&a)
                    )),
                    Some(SessionEvent::ServerBack(a)) => {
                        note(&format!("group server {} is back", safe::field(&a)))
                    }
                    Some(SessionEvent::MembershipEnded(g)) if all => {
                        note(&format!(
                            "no longer a member of {}",
                            safe::field(&g.to_string())
                        ));
                        known.remove(&g);
                    }
                    Some(SessionEvent::Moved { from, to }) => {
                        note(&render::moved_line(&from, &to));
                        // Followed where it is now: a rescan must not take it for a new one.
                        if known.remove(&from) {
                            known.insert(to);
                        }
                    }
                    Some(SessionEvent::MembershipEnded(g)) => {
                        return Err(errinput!("no longer a member of {g}"))
                    }
                    Some(SessionEvent::Presence { .. }) | None => {}
                }
                // With --all, groups joined and conversations begun since are followed too.
                if all && Instant::now() >= rescan {
                    rescan = Instant::now() + TAIL_RESCAN;
                    match follow_all(session, &known) {
                        Ok(new) => followed = new,
                        Err(err) => note(&format!("error: cannot list groups: {err}")),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Subscribes to what `zms tail` follows: the groups named, or with `all` every group and
/// conversation of the message server's list this user is a member of (the others answer
/// NOT_MEMBER and are passed over). Returns each with its last seq at subscription.
///
/// # Errors
/// A group that cannot be resolved or followed; with `all`, none to follow.
fn follow(session: &mut Session, specs: &[String], all: bool) -> Result<Vec<(GroupRef, u64)>> {
    let mut followed = Vec::new();
    if !all {
        for spec in specs {
            let group = session.resolve(spec)?;
            let last_seq = session.subscribe(&group)?;
            followed.push((group, last_seq));
        }
        return Ok(followed);
    }
    followed = follow_all(session, &HashSet::new())?;
    if followed.is_empty() {
        return Err(Error::NotFound(format!(
            "'{}' is a member of no group the message server lists",
            session.name()
        )));
    }
    Ok(followed)
}

/// Subscribes to every group and conversation of the message server's list that this user is
/// a member of and that is not in `known`; returns each with its last seq.
///
/// # Errors
/// The message server's silence, or a group server's refusal other than NOT_MEMBER.
fn follow_all(session: &mut Session, known: &HashSet<GroupRef>) -> Result<Vec<(GroupRef, u64)>> {
    let mut followed = Vec::new();
    let me = session.name().to_string();
    for entry in session.list_groups()? {
        // Another pair's conversation is not this user's to ask about.
        if protocol::conversation_users(&entry.name).is_some_and(|(a, b)| a != me && b != me) {
            continue;
        }
        let group = GroupRef {
            name: entry.name,
            address: entry.address,
        };
        if known.contains(&group) {
            continue;
        }
        match session.subscribe(&group) {
            Ok(last_seq) => followed.push((group, last_seq)),
            Err(Error::Rejected {
                code: ErrorCode::NotMember | ErrorCode::UnknownGroup,
                ..
            }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(followed)
}

/// The last `n` messages of `group` up to seq `upto` (what a subscription from `upto` does not
/// bring), oldest first.
///
/// # Errors
/// As [`Session::history_page`].
fn last_messages(
    session: &mut Session,
    group: &GroupRef,
    upto: u64,
    n: u64,
) -> Result<Vec<protocol::Message>> {
    let mut after = upto.saturating_sub(n);
    let mut out = Vec::new();
    while after < upto {
        let page = (upto - after).min(u64::from(protocol::HISTORY_PAGE_MAX)) as u32;
        let (messages, _) = session.history_page(group, after, 0, page)?;
        let Some(last) = messages.last() else { break };
        after = last.seq;
        out.extend(messages.into_iter().filter(|m| m.seq <= upto));
    }
    Ok(out)
}

/// `zms kick` and `zms ban`: removes `user` from the group, and says so.
fn remove(session: &mut Session, format: Format, spec: &str, user: &str, ban: bool) -> Result<()> {
    let group = session.resolve(spec)?;
    session.remove(&group, user, ban)?;
    let (done, key) = match ban {
        true => ("banned", "banned"),
        false => ("removed", "kicked"),
    };
    match format {
        Format::Plain => output::emit(&format!(
            "{done} {} from {}",
            safe::field(user),
            safe::field(&group.to_string())
        )),
        Format::Json => output::emit(&output::json_line(
            &json!({"group": group.name, "address": group.address, key: user}),
        )),
    }
}

/// Sends the lines of stdin to `group` through a [`Pipeline`], batch by batch, each kept on
/// disk until answered (as [`send_keeping`] does); `print` is called with each stored
/// message's seq and time, in order. Returns how many lines were skipped as no server would
/// take them.
///
/// One batch is in flight at a time, while the next is read: with two, a server's refusal
/// of one (its rate limit) could let a later one be stored first, out of order.
///
/// # Errors
/// As [`send_keeping`], and a line that cannot be read.
fn send_lines(
    session: &mut Session,
    kept: Option<&kept::Kept>,
    group: &GroupRef,
    mut print: impl FnMut((u64, i64)),
) -> Result<u64> {
    let mut pipeline = session.pipeline(group)?.with_window(1);
    let mut input = BufReader::new(std::io::stdin().lock());
    let empty_len = codec::batch_len(&group.name, session.name(), &[]);
    let mut batch: Vec<Outgoing> = Vec::new();
    let mut batch_len = empty_len;
    // The batch in flight: its kept entry and its messages.
    let mut in_flight: Option<(Option<kept::Entry>, Vec<Outgoing>)> = None;
    let (mut number, mut skipped) = (0_u64, 0_u64);
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
                Ok(()) if line.len() > protocol::MAX_TEXT => {
                    // Nothing of the batch it would have joined is sent; what is in flight is
                    // confirmed first.
                    settle(session, &mut pipeline, group, &mut in_flight, &mut print)?;
                    return Err(errinput!(
                        "message is {} bytes; the limit is {}",
                        line.len(),
                        protocol::MAX_TEXT
                    ));
                }
                Ok(()) => {
                    let message = Outgoing {
                        client_id: session.next_client_id(),
                        text: line,
                    };
                    let more = codec::outgoing_len(&message.client_id, &message.text);
                    // A SENDS stays within the frame a group server takes.
                    if !batch.is_empty() && batch_len + more > protocol::MAX_BATCH_FRAME {
                        let full = std::mem::take(&mut batch);
                        batch_len = empty_len;
                        dispatch(
                            session,
                            &mut pipeline,
                            kept,
                            group,
                            &mut in_flight,
                            full,
                            &mut print,
                        )?;
                    }
                    batch_len += more;
                    batch.push(message);
                }
                Err(why) => {
                    skipped += 1;
                    note(&format!("error: line {number} not sent: {why}"));
                }
            }
        }
        let waits = end || !input.buffer().contains(&b'\n');
        if !batch.is_empty() && (waits || batch.len() >= protocol::MAX_BATCH) {
            let full = std::mem::take(&mut batch);
            batch_len = empty_len;
            dispatch(
                session,
                &mut pipeline,
                kept,
                group,
                &mut in_flight,
                full,
                &mut print,
            )?;
        }
        // Before waiting for more input, what was sent is confirmed.
        if waits {
            settle(session, &mut pipeline, group, &mut in_flight, &mut print)?;
        }
        if end {
            return Ok(skipped);
        }
    }
}

/// Sends `messages` (kept first) once the batch before is answered: one in flight.
fn dispatch(
    session: &mut Session,
    pipeline: &mut Pipeline,
    kept: Option<&kept::Kept>,
    group: &GroupRef,
    in_flight: &mut Option<(Option<kept::Entry>, Vec<Outgoing>)>,
    messages: Vec<Outgoing>,
    print: &mut impl FnMut((u64, i64)),
) -> Result<()> {
    settle(session, pipeline, group, in_flight, print)?;
    let entry = keep(kept, group, &messages);
    if let Err(err) = pipeline.send_messages(&group.name, session.name(), &messages) {
        return Err(unknown_outcome(
            err,
            session.name(),
            group,
            &messages,
            entry.is_some(),
        ));
    }
    *in_flight = Some((entry, messages));
    Ok(())
}

/// Waits for the answer to the batch in flight, if any, and prints what it stored.
fn settle(
    session: &mut Session,
    pipeline: &mut Pipeline,
    group: &GroupRef,
    in_flight: &mut Option<(Option<kept::Entry>, Vec<Outgoing>)>,
    print: &mut impl FnMut((u64, i64)),
) -> Result<()> {
    if let Some((entry, messages)) = in_flight.take() {
        answered(session, pipeline, group, entry, &messages)?
            .into_iter()
            .for_each(print);
    }
    Ok(())
}

/// Writes `messages` down before they are sent, when there is a place to keep them.
fn keep(kept: Option<&kept::Kept>, group: &GroupRef, messages: &[Outgoing]) -> Option<kept::Entry> {
    kept.and_then(|k| {
        k.keep(group, messages)
            .map_err(|err| tracing::warn!(%err, "cannot keep the send for a retry"))
            .ok()
    })
}

/// Waits for the answer to the batch in flight on `pipeline`: its seqs and times once stored,
/// its entry forgotten once the outcome is known. A SENDS the server does not take as a
/// batch (ERROR 400, or its rate limit) goes one SEND at a time, as
/// [`Session::send_outgoing`] sends it.
///
/// # Errors
/// As [`send_keeping`].
fn answered(
    session: &mut Session,
    pipeline: &mut Pipeline,
    group: &GroupRef,
    entry: Option<kept::Entry>,
    messages: &[Outgoing],
) -> Result<Vec<(u64, i64)>> {
    let sent = match pipeline.next_answer() {
        Ok(Some((_, reply))) => match (reply, messages) {
            (Reply::Ack { seq, ts, .. }, [_]) => Ok(vec![(seq, ts)]),
            (Reply::Acks(acks), _) if acks.len() == messages.len() => {
                Ok(acks.iter().map(|a| (a.seq, a.ts)).collect())
            }
            (
                Reply::Error {
                    code: ErrorCode::Limited,
                    ..
                },
                [one],
            ) => session
                .send_with_id(group, &one.client_id, &one.text)
                .map(|s| vec![s]),
            (
                Reply::Error {
                    code: ErrorCode::BadRequest | ErrorCode::Limited,
                    ..
                },
                many,
            ) if many.len() > 1 => many
                .iter()
                .map(|m| session.send_with_id(group, &m.client_id, &m.text))
                .collect(),
            (Reply::Error { code, reason }, _) => Err(Error::Rejected { code, reason }),
            (other, _) => Err(Error::Protocol(format!(
                "expected ACK or ACKS, got {other:?}"
            ))),
        },
        Ok(None) => Err(Error::Protocol("bug: no send in flight to settle".into())),
        Err(err) => Err(err),
    };
    settled_send(sent, entry.as_ref(), session, group, messages)
}

/// Forgets the kept `entry` once the outcome of `sent` is known: stored, refused (nothing of
/// a refused request is stored), or never sent (a text over the limit). Any other error
/// leaves the outcome unknown, and says so and how to retry.
fn settled_send(
    sent: Result<Vec<(u64, i64)>>,
    entry: Option<&kept::Entry>,
    session: &Session,
    group: &GroupRef,
    messages: &[Outgoing],
) -> Result<Vec<(u64, i64)>> {
    let known = matches!(sent, Ok(_) | Err(Error::Rejected { .. } | Error::Input(_)));
    if let (true, Some(entry)) = (known, entry) {
        entry.forget();
    }
    match sent {
        Ok(stored) => Ok(stored),
        Err(err @ (Error::Rejected { .. } | Error::Input(_))) => Err(err),
        Err(err) => Err(unknown_outcome(
            err,
            session.name(),
            group,
            messages,
            entry.is_some(),
        )),
    }
}

/// Sends `messages` to `group` under their ids, kept on disk (when there is a config
/// directory) until the server answers: stored, or refused. Without an answer they stay kept,
/// and the error says so and how to retry without a duplicate.
///
/// # Errors
/// The server's refusal, or its silence (the outcome then unknown, said in the message).
fn send_keeping(
    session: &mut Session,
    kept: Option<&kept::Kept>,
    group: &GroupRef,
    messages: &[Outgoing],
) -> Result<Vec<(u64, i64)>> {
    let entry = kept.and_then(|k| {
        k.keep(group, messages)
            .map_err(|err| tracing::warn!(%err, "cannot keep the send for a retry"))
            .ok()
    });
    let sent = match messages {
        [one] => session
            .send_with_id(group, &one.client_id, &one.text)
            .map(|s| vec![s]),
        many => session.send_outgoing(group, many),
    };
    settled_send(sent, entry.as_ref(), session, group, messages)
}

/// Sends again what earlier runs kept for `group` (but the message under `skip_id`, which
/// is about to be sent). Returns the refusal of a kept message, if any, after sending the
/// others; a kept send that gets no answer again stops everything, to keep the order.
///
/// # Errors
/// The server's silence, or a kept directory that cannot be listed.
fn send_kept(
    session: &mut Session,
    kept: Option<&kept::Kept>,
    group: &GroupRef,
    skip_id: Option<&str>,
    mut print: impl FnMut((u64, i64)),
) -> Result<Option<Error>> {
    let Some(kept) = kept else { return Ok(None) };
    let mut refused = None;
    for entry in kept.for_group(group)? {
        let messages: Vec<Outgoing> = entry
            .messages
            .iter()
            .filter(|m| Some(m.client_id.as_str()) != skip_id)
            .cloned()
            .collect();
        let sent = match messages.as_slice() {
            [] => Ok(Vec::new()),
            [one] => session
                .send_with_id(group, &one.client_id, &one.text)
                .map(|s| vec![s]),
            many => session.send_outgoing(group, many),
        };
        match sent {
            Ok(stored) => {
                entry.forget();
                stored.into_iter().for_each(&mut print);
            }
            Err(err @ (Error::Rejected { .. } | Error::Input(_))) => {
                entry.forget();
                let s = if messages.len() == 1 { "" } else { "s" };
                refused = Some(errinput!(
                    "{} kept message{s} not sent to {group}: {err}",
                    messages.len()
                ));
            }
            Err(err) => return Err(unknown_outcome(err, session.name(), group, &messages, true)),
        }
    }
    Ok(refused)
}

/// The error of a send that got no answer: what happened, that the outcome is unknown, and
/// how to retry without storing anything twice.
fn unknown_outcome(
    err: Error,
    user: &str,
    group: &GroupRef,
    messages: &[Outgoing],
    kept: bool,
) -> Error {
    let (what, them, ids) = match messages {
        [_] => ("the message was".to_string(), "it", "id"),
        many => (format!("these {} messages were", many.len()), "them", "ids"),
    };
    let zms = crate::program::name();
    let retry = match (kept, messages) {
        (true, [one]) => format!(
            "kept, the next `{zms} send {} --name {user}` sends it again first under the same \
             id, stored at most once (or send it yourself with --id {})",
            group.name, one.client_id
        ),
        (true, _) => format!(
            "kept, the next `{zms} send {} --name {user}` sends {them} again first under the \
             same {ids}, stored at most once",
            group.name
        ),
        (false, [one]) => format!(
            "to retry without a duplicate, send the same text with --id {}",
            one.client_id
        ),
        (false, _) => "sending them again may store some twice".to_string(),
    };
    Error::Timeout(format!("{err}; whether {what} stored is unknown: {retry}"))
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
