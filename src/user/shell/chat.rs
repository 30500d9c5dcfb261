//! The network thread's part in direct messages and mentions: finding the conversations others
//! begin with the user, and `/mentions`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::super::mention;
use super::{render, safe, time, Network};
use crate::client::GroupRef;
use crate::protocol;
use crate::Result;

/// What the network thread knows of the user's conversations beyond the view.
#[derive(Default)]
pub(super) struct Conversations {
    /// When to look at the message server's list again; `None` before the first look.
    pub(super) next_look: Option<Instant>,
    /// Left in this run: not joined again when listed.
    pub(super) left: HashSet<GroupRef>,
}

/// How often the interactive client looks for conversations others began with the user.
const CONVERSATION_LOOK: Duration = Duration::from_secs(3);

impl Network {
    /// Every few seconds, joins the conversations with the user that the message server lists
    /// and this run has not joined: those there at the start quietly, as groups are; one begun
    /// since from its first message, which then arrives as live ones do (and calls).
    pub(super) fn look_for_conversations(&mut self) {
        let now = Instant::now();
        let first = self.conversations.next_look.is_none();
        if self.conversations.next_look.is_some_and(|at| now < at) {
            return;
        }
        self.conversations.next_look = Some(now + CONVERSATION_LOOK);
        // A message server that does not answer is told of by the lines that need it.
        let Ok(listed) = self.session.list_groups() else {
            return;
        };
        let me = self.session.name().to_string();
        let joined = self.view().joined().to_vec();
        let mut found = Vec::new();
        for entry in listed {
            let Some((low, high)) = protocol::conversation_users(&entry.name) else {
                continue;
            };
            let group = GroupRef {
                name: entry.name.clone(),
                address: entry.address,
            };
            let mine = low == me || high == me;
            if !mine || joined.contains(&group) || self.conversations.left.contains(&group) {
                continue;
            }
            let other = if low == me { high } else { low };
            let joined = match first {
                true => self.session.join(&group),
                false => self.session.join_from(&group, 0),
            };
            match joined {
                Ok(_) => {
                    self.view().add(group);
                    found.push(format!("@{other}"));
                    if !first {
                        (self.print)(self.style.quiet(&format!(
                            "-- {other} began a conversation with you (/query {other})"
                        )));
                    }
                }
                Err(err) => tracing::warn!(%err, group = %entry.name, "cannot join a conversation"),
            }
        }
        // Those from before this run are named once; /query or /g shows one.
        if first && !found.is_empty() {
            (self.print)(self.style.quiet(&format!(
                "-- your conversations: {} (/query NAME shows one)",
                found.join(" ")
            )));
        }
    }

    /// `/mentions`: the recent messages of the joined groups that mention the user.
    pub(super) fn print_mentions(&mut self) -> Result<()> {
        let joined = self.view().joined().to_vec();
        let mut scanned = Vec::new();
        for group in joined {
            let messages = self
                .session
                .history(&group, None, Some(mention::SCAN_DEFAULT))?;
            scanned.push((group, messages));
        }
        let me = self.session.name().to_string();
        let found = mention::recent(scanned, &me, mention::SHOW_DEFAULT);
        if found.is_empty() {
            (self.print)(format!("no recent mentions of @{}", safe::field(&me)));
        }
        let now = time::now_ms();
        let lines: Vec<String> = found
            .iter()
            .map(|(group, m)| {
                let label = super::super::output::group_label(&group.name, &me);
                let line = match self.terminal {
                    true => self.style.history(m, now),
                    false => render::plain_history(m),
                };
                format!("[{}] {line}", safe::field(&label))
            })
            .collect();
        self.print_lines(lines);
        Ok(())
    }
}
