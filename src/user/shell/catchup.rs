//! The interactive client catching up: starting in the user's groups with what is new in
//! each, the `── new ──` marker between read and unread when switching group, read positions
//! sent as messages are shown (coalesced), and `/search`, `/unread`, `/edit`, `/delete`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Line, Network};
use crate::client::GroupRef;
use crate::protocol::{edit, Message};
use crate::user::safe;
use crate::{errinput, time, Result};

/// The line between the messages a user had read and those new to them.
pub const MARKER: &str = "── new ──";
/// How often read positions go to the servers: showing messages costs no request each.
const READ_EVERY: Duration = Duration::from_secs(1);
/// Read messages shown above the marker, for context.
const BEFORE_MARKER: u64 = 3;
/// Unread messages shown below the marker; /history shows more.
const AFTER_MARKER: u64 = 20;
/// Hits `/search` shows.
const SEARCH_HITS: u32 = 20;

/// What the client knows of read positions and the user's own messages.
#[derive(Default)]
pub(super) struct Reading {
    /// Positions shown but not yet sent with READ, per group.
    pending: HashMap<GroupRef, u64>,
    /// When READ was last sent.
    sent_at: Option<Instant>,
    /// The user's last message in each group this session, for `/edit` and `/delete`.
    mine: HashMap<GroupRef, u64>,
}

impl Network {
    /// At start: subscribes to every group the user is a member of (conversations aside), says
    /// how many messages are new in each, and shows the first one's new messages under the
    /// marker.
    pub(super) fn start_in_my_groups(&mut self) {
        let groups = match self.session.my_groups() {
            // Conversations (`@alice@bob`) have their own start: named once, joined on /query.
            Ok(mut groups) => {
                groups.retain(|(g, _)| !g.name.starts_with('@'));
                groups
            }
            Err(err) => {
                let err = safe::field(&err.to_string()).into_owned();
                return (self.print)(self.style.error(&format!("error: your groups: {err}")));
            }
        };
        if groups.is_empty() {
            return;
        }
        let mut lines = vec!["your groups:".to_string()];
        for (group, state) in &groups {
            if let Err(err) = self.session.subscribe(group) {
                warn!(%group, %err, "cannot subscribe at start");
                continue;
            }
            self.view().join(group.clone());
            let new = match state.unread() {
                0 => "nothing new".to_string(),
                n => format!("{n} new since you were last here"),
            };
            lines.push(format!("  {:<20} {new}", safe::field(&group.name)));
        }
        (self.print)(lines.join("\n"));
        if let Some((first, _)) = groups.first() {
            self.view().switch(first.clone());
            if let Err(err) = self.switched(first) {
                (self.print)(self.style.error(&format!("error: {err}")));
            }
        }
    }

    /// After switching to `group`: the last read messages, the marker, then what is new,
    /// which now counts as read.
    pub(super) fn switched(&mut self, group: &GroupRef) -> Result<()> {
        let state = self.session.read_state(group)?;
        if state.unread() == 0 {
            return Ok(());
        }
        let after = state.read_seq.saturating_sub(BEFORE_MARKER);
        let want = (state.read_seq - after) + AFTER_MARKER;
        let (page, _) = self.session.history_page(group, after, 0, want as u32)?;
        let now = time::now_ms();
        let mut lines = Vec::new();
        let mut marked = false;
        for m in &page {
            if m.seq > state.read_seq && !marked {
                lines.push(self.style.quiet(MARKER));
                marked = true;
            }
            lines.push(match self.terminal {
                true => self.style.history(m, now),
                false => crate::user::render::plain_history(m),
            });
        }
        let shown = page.last().map_or(state.read_seq, |m| m.seq);
        if shown < state.last_seq {
            lines.push(self.style.quiet(&format!(
                "-- {} more new; /history shows them",
                state.last_seq - shown
            )));
        }
        (self.print)(lines.join("\n"));
        self.reading.pending.insert(group.clone(), shown);
        self.flush_reads(true);
        Ok(())
    }

    /// A live message was printed: one of the current group counts as read, one of the user's
    /// own (not an edit) is what `/edit` changes.
    pub(super) fn shown(&mut self, group: &GroupRef, message: &Message) {
        if message.sender == self.session.name() && edit::parse(&message.text).is_none() {
            self.reading.mine.insert(group.clone(), message.seq);
        }
        if self.view().current() == Some(group) {
            let read = self.reading.pending.entry(group.clone()).or_default();
            *read = (*read).max(message.seq);
        }
    }

    /// Sends the read positions shown since the last time, at most once a [`READ_EVERY`]
    /// unless `now`.
    pub(super) fn flush_reads(&mut self, now: bool) {
        let due = self
            .reading
            .sent_at
            .is_none_or(|at| at.elapsed() >= READ_EVERY);
        if self.reading.pending.is_empty() || !(now || due) {
            return;
        }
        self.reading.sent_at = Some(Instant::now());
        for (group, seq) in std::mem::take(&mut self.reading.pending) {
            if let Err(err) = self.session.mark_read(&group, seq) {
                warn!(%group, seq, %err, "read position not sent");
            }
        }
    }

    /// `/search`, `/unread`, `/edit` and `/delete`.
    pub(super) fn search_or_change(&mut self, line: Line) -> Result<()> {
        match line {
            Line::Search(words) => {
                let mut groups = self.view().joined().to_vec();
                if groups.is_empty() {
                    groups = self
                        .session
                        .my_groups()?
                        .into_iter()
                        .map(|(g, _)| g)
                        .collect();
                }
                let hits = self.session.search_all(&groups, &words, 0, SEARCH_HITS)?;
                if hits.is_empty() {
                    let none = format!("no messages in your groups hold {}", safe::field(&words));
                    (self.print)(none);
                    return Ok(());
                }
                let marks = self.style.highlight_marks();
                let now = time::now_ms();
                let lines: Vec<String> = hits
                    .iter()
                    .rev()
                    .map(|(group, hit)| {
                        let when = match self.terminal {
                            true => self.style.stamp(hit.ts, now),
                            false => time::rfc3339(hit.ts),
                        };
                        format!(
                            "{when} [{}] #{} {}: {}",
                            safe::field(&group.name),
                            hit.seq,
                            self.style.sender(&hit.sender),
                            safe::highlighted(&hit.text, &hit.matches, marks.0, marks.1)
                        )
                    })
                    .collect();
                (self.print)(lines.join("\n"));
            }
            Line::Unread => {
                let groups = self.session.my_groups()?;
                if groups.is_empty() {
                    (self.print)("you are a member of no group".into());
                    return Ok(());
                }
                let lines: Vec<String> = groups
                    .iter()
                    .map(|(g, state)| {
                        format!("  {:<20} {} new", safe::field(&g.name), state.unread())
                    })
                    .collect();
                (self.print)(lines.join("\n"));
            }
            Line::Edit(seq, text) => {
                let (group, seq) = self.target(seq, "edit")?;
                // The edit comes back as a live message: that is the confirmation.
                self.session.edit(&group, seq, &text)?;
            }
            Line::Delete(seq) => {
                let (group, seq) = self.target(seq, "delete")?;
                self.session.delete(&group, seq)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The current group and the message `/edit` or `/delete` means: `seq`, or the user's
    /// last one this session.
    fn target(&self, seq: Option<u64>, verb: &str) -> Result<(GroupRef, u64)> {
        let group = self.require_current()?;
        let seq = match seq.or_else(|| self.reading.mine.get(&group).copied()) {
            Some(seq) => seq,
            None => {
                return Err(errinput!(
                    "no message of yours in {} this session; /{verb} SEQ names one",
                    group.name
                ))
            }
        };
        Ok((group, seq))
    }
}
