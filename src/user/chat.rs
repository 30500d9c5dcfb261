//! The one-shot chat commands: `zms search`, `zms unread`, `zms edit`, `zms delete`.

use std::io::IsTerminal;

use serde_json::json;

use super::output::{self, Format};
use super::safe;
use crate::client::Session;
use crate::{protocol, time, Result};

/// Bold on and off: how a terminal shows the words a search matched. Our own escape codes,
/// around text already made harmless ([`safe::highlighted`]).
pub const BOLD: (&str, &str) = ("\x1b[1m", "\x1b[22m");

/// What a chat command does.
#[derive(Debug, Clone)]
pub enum ChatAction {
    /// Search one group, or every group the user is a member of.
    Search {
        group: Option<String>,
        query: String,
        since: Option<String>,
        limit: Option<u32>,
    },
    /// How many messages are new in each of the user's groups.
    Unread,
    /// Replace the text of one of the user's messages.
    Edit {
        group: String,
        seq: u64,
        text: String,
    },
    /// Delete one of the user's messages.
    Delete { group: String, seq: u64 },
}

/// Runs a chat command.
///
/// # Errors
/// Whatever went wrong, as one line for the user.
pub fn act(session: &mut Session, format: Format, action: ChatAction) -> Result<()> {
    let emit = output::emit;
    match action {
        ChatAction::Search {
            group,
            query,
            since,
            limit,
        } => {
            let since = since.map(|s| time::parse(&s, time::now_ms())).transpose()?;
            let groups = match group {
                Some(spec) => vec![session.resolve(&spec)?],
                None => session.my_groups()?.into_iter().map(|(g, _)| g).collect(),
            };
            let limit = limit.unwrap_or(20).min(protocol::SEARCH_MAX);
            let hits = session.search_all(&groups, &query, since.unwrap_or(0), limit)?;
            let marks = match std::io::stdout().is_terminal() {
                true => BOLD,
                false => ("", ""),
            };
            // Oldest first, as history reads.
            for (group, hit) in hits.iter().rev() {
                emit(&output::hit(format, group, hit, marks))?;
            }
            if hits.is_empty() && format == Format::Plain {
                eprintln!("no messages match {}", safe::field(&query));
            }
        }
        ChatAction::Unread => {
            for (group, state) in session.my_groups()? {
                emit(&output::unread(format, &group, &state))?;
            }
        }
        ChatAction::Edit { group, seq, text } => {
            let group = session.resolve(&group)?;
            let stored = session.edit(&group, seq, &text)?;
            changed(format, &group, seq, stored, "edited")?;
        }
        ChatAction::Delete { group, seq } => {
            let group = session.resolve(&group)?;
            let stored = session.delete(&group, seq)?;
            changed(format, &group, seq, stored, "deleted")?;
        }
    }
    Ok(())
}

/// Says that message `seq` was changed, by the change stored as `stored`.
fn changed(
    format: Format,
    group: &crate::client::GroupRef,
    seq: u64,
    stored: u64,
    done: &str,
) -> Result<()> {
    output::emit(&match format {
        Format::Plain => format!(
            "{done} #{seq} in {} (stored as #{stored})",
            safe::field(&group.to_string())
        ),
        Format::Json => output::json_line(&json!({
            "group": group.name,
            "address": group.address,
            "seq": seq,
            done: stored,
        })),
    })
}
