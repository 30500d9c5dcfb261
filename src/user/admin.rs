//! The operators' one-shot commands: `zms create-group` (over the wire), `delete-group`,
//! `set-private`, `unban`, `export` and `import`.

use std::io::BufRead;

use serde_json::{json, Value};

use super::output::{self, Format};
use super::safe;
use crate::client::{GroupRef, Session};
use crate::protocol::{self, codec, ErrorCode, Imported, Message, Request};
use crate::{errinput, time, Error, Result};

/// Says that `done` happened to `group`, as a line or a JSON object with `fields`.
fn done(format: Format, group: &GroupRef, done: &str, fields: Value) -> Result<()> {
    match format {
        Format::Plain => output::emit(&format!("{done} {}", safe::field(&group.to_string()))),
        Format::Json => {
            let mut object = json!({"group": group.name, "address": group.address});
            if let (Some(object), Value::Object(fields)) = (object.as_object_mut(), fields) {
                object.extend(fields);
            }
            output::emit(&output::json_line(&object))
        }
    }
}

/// `zms create-group NAME [--private] [--group-server HOST:PORT]`.
pub fn create(
    session: &mut Session,
    format: Format,
    name: &str,
    private: bool,
    server: Option<&str>,
) -> Result<()> {
    protocol::check_group_name(name).map_err(crate::Error::Input)?;
    let group = GroupRef {
        name: name.to_string(),
        address: session.group_server(server)?,
    };
    let request = Request::Create {
        group: name.to_string(),
        private,
    };
    session.administer(&group, &request)?;
    let what = if private {
        "created private group"
    } else {
        "created group"
    };
    done(
        format,
        &group,
        what,
        json!({"created": true, "private": private}),
    )
}

/// `zms delete-group GROUP`.
pub fn delete(session: &mut Session, format: Format, spec: &str) -> Result<()> {
    let group = session.resolve(spec)?;
    let request = Request::Drop {
        group: group.name.clone(),
    };
    session.administer(&group, &request)?;
    done(format, &group, "deleted group", json!({"deleted": true}))
}

/// `zms set-private GROUP on|off`.
pub fn set_private(session: &mut Session, format: Format, spec: &str, private: bool) -> Result<()> {
    let group = session.resolve(spec)?;
    let request = Request::Set {
        group: group.name.clone(),
        private,
    };
    session.administer(&group, &request)?;
    let what = if private {
        "made private:"
    } else {
        "made public:"
    };
    done(format, &group, what, json!({"private": private}))
}

/// `zms unban GROUP USER`.
pub fn unban(session: &mut Session, format: Format, spec: &str, user: &str) -> Result<()> {
    let group = session.resolve(spec)?;
    let request = Request::Unban {
        group: group.name.clone(),
        user: user.to_string(),
    };
    session.administer(&group, &request)?;
    match format {
        Format::Plain => output::emit(&format!(
            "unbanned {} from {}",
            safe::field(user),
            safe::field(&group.to_string())
        )),
        Format::Json => output::emit(&output::json_line(
            &json!({"group": group.name, "address": group.address, "unbanned": user}),
        )),
    }
}

/// `zms export GROUP`: every stored message as `history --json` prints it, a page at a time,
/// so memory holds one page whatever the group's size.
pub fn export(session: &mut Session, spec: &str) -> Result<()> {
    let group = session.resolve(spec)?;
    let mut after = 0;
    let mut first = true;
    loop {
        let page = protocol::HISTORY_PAGE_MAX;
        let (messages, last_seq) = match session.history_page(&group, after, 0, page) {
            Err(Error::Rejected {
                code: ErrorCode::NotMember,
                reason,
            }) => {
                // Only an operator's key reads a group it is not in, and that needs --secure.
                return Err(Error::Rejected {
                    code: ErrorCode::NotMember,
                    reason: format!(
                        "{reason}: export with the --name of one of its members, or as an \
                         operator's key on a --secure deployment"
                    ),
                });
            }
            page => page?,
        };
        let Some(last) = messages.last() else { break };
        if first && last.seq > 1 && messages[0].seq > 1 {
            eprintln!(
                "older messages were trimmed: the export starts at seq {}",
                messages[0].seq
            );
        }
        first = false;
        // Seqs only rise, so every page moves on and the loop ends.
        after = last.seq;
        for m in &messages {
            output::emit(&output::message(Format::Json, &group, m))?;
        }
        if after >= last_seq {
            break;
        }
    }
    Ok(())
}

/// One line of an export as an imported message: `seq`, `ts_ms` (else `ts`), `sender`,
/// `text`, and `client_id` if present.
fn parse_line(line: &str) -> std::result::Result<Imported, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| value.get(name).ok_or_else(|| format!("no \"{name}\""));
    let string = |name: &str| {
        field(name)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("\"{name}\" is not a string"))
    };
    let seq = field("seq")?
        .as_u64()
        .ok_or("\"seq\" is not a positive integer")?;
    let ts = match value.get("ts_ms").and_then(Value::as_i64) {
        Some(ms) => ms,
        None => time::parse(&string("ts")?, 0).map_err(|e| format!("\"ts\": {e}"))?,
    };
    let client_id = match value.get("client_id") {
        Some(_) => string("client_id")?,
        None => String::new(),
    };
    Ok(Imported {
        message: Message {
            seq,
            ts,
            sender: string("sender")?,
            text: string("text")?,
        },
        client_id,
    })
}

/// `zms import GROUP < export.jsonl`: the lines of an export, in batches as large as a frame
/// allows, each stored in one transaction and answered before the next is read.
pub fn import(
    session: &mut Session,
    format: Format,
    spec: &str,
    input: impl BufRead,
) -> Result<()> {
    let group = session.resolve(spec)?;
    let mut batch: Vec<Imported> = Vec::new();
    let mut imported = 0u64;
    let mut seqs: Option<(u64, u64)> = None;
    let mut flush = |batch: &mut Vec<Imported>, session: &mut Session| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (first, last) = (batch[0].message.seq, batch[batch.len() - 1].message.seq);
        session.import(&group, std::mem::take(batch))?;
        imported += last + 1 - first;
        seqs = Some((seqs.map_or(first, |(f, _)| f), last));
        Ok(())
    };
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let message = parse_line(&line)
            .map_err(|why| errinput!("line {}: {why}; nothing after it imported", n + 1))?;
        let full = batch.len() >= protocol::MAX_BATCH
            || codec::import_len(&group.name, &batch) + codec::imported_len(&message)
                > protocol::MAX_BATCH_FRAME;
        if full {
            flush(&mut batch, session)?;
        }
        batch.push(message);
    }
    flush(&mut batch, session)?;
    let Some((first, last)) = seqs else {
        return Err(errinput!("nothing to import: no messages on stdin"));
    };
    let s = if imported == 1 { "" } else { "s" };
    let what = format!("imported {imported} message{s} (seq {first} to {last}) into");
    let fields = json!({"imported": imported, "first_seq": first, "last_seq": last});
    done(format, &group, &what, fields)
}
