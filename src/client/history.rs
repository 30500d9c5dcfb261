//! Reading a group's history: paging through it for the user ([`Session::history`]), and
//! repairing a gap in live delivery ([`Session::repair`]). What counts as a gap is the
//! [`Sequencer`](super::sequencer::Sequencer)'s; every HISTORY request is built by [`Session::history_request`].

use std::collections::VecDeque;

use super::session::{GroupRef, Session};
use super::unexpected;
use crate::protocol::{self, Message, Reply, Request};
use crate::Result;

/// History pages in flight at once past the first (see [`Session::history`]), so the server
/// reads the next pages while this client decodes the last. Most of what reading ahead saves
/// a long read is won by two pages ahead; eight win nothing over four and may hold twice as
/// much, a page being up to a MiB.
const HISTORY_AHEAD: usize = 4;

impl Session {
    /// The one HISTORY request: messages of `group` after `after_seq`, at or after
    /// `since_ms`, at most `limit`.
    fn history_request(
        &self,
        group: &GroupRef,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    ) -> Request {
        Request::History {
            group: group.name.clone(),
            user: self.name.clone(),
            after_seq,
            since_ms,
            limit,
        }
    }

    /// One page of history: messages after `after_seq` (and at or after `since_ms`), and the
    /// group's last seq.
    ///
    /// # Errors
    /// NOT_MEMBER, or the server's silence.
    pub fn history_page(
        &mut self,
        group: &GroupRef,
        after_seq: u64,
        since_ms: i64,
        limit: u32,
    ) -> Result<(Vec<Message>, u64)> {
        let request = self.history_request(group, after_seq, since_ms, limit);
        match self.group_request(group, &request)? {
            Reply::Messages {
                messages, last_seq, ..
            } => Ok((messages, last_seq)),
            other => Err(unexpected(other, "MESSAGES")),
        }
    }

    /// The group's first kept seq: 1 unless the server's retention trimmed older messages.
    ///
    /// # Errors
    /// As [`Session::history_page`].
    pub fn first_kept(&mut self, group: &GroupRef) -> Result<u64> {
        let request = self.history_request(group, 0, 0, 0);
        match self.group_request(group, &request)? {
            Reply::Messages { first_seq, .. } => Ok(first_seq),
            other => Err(unexpected(other, "MESSAGES")),
        }
    }

    /// Stored messages, oldest first: all of them, those since `since_ms`, or with `limit`
    /// the first `limit` since `since_ms` (or, without `since_ms`, the last `limit`).
    ///
    /// # Errors
    /// As [`Session::history_page`].
    pub fn history(
        &mut self,
        group: &GroupRef,
        since_ms: Option<i64>,
        limit: Option<u64>,
    ) -> Result<Vec<Message>> {
        // Pages read ahead go straight to the server: to where the group lives now.
        let group = &self.locate(group);
        let mut after = 0;
        if let (None, Some(n)) = (since_ms, limit) {
            let (_, last) = self.history_page(group, 0, 0, 0)?;
            after = last.saturating_sub(n);
        }
        let since = since_ms.unwrap_or(0);
        let want = limit.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        // One page at a time finds where `since` begins and what the last seq is; from there
        // seqs run on without gaps, so the pages up to it are asked for ahead.
        while (out.len() as u64) < want {
            let page = (want - out.len() as u64).min(u64::from(protocol::HISTORY_PAGE_MAX)) as u32;
            let (messages, last_seq) = self.history_page(group, after, since, page)?;
            let Some(last) = messages.last() else { break };
            // Short of the limit before the end: held to the reply's size, so where the next
            // page starts cannot be foreseen.
            let short = messages.len() < page as usize;
            after = last.seq;
            out.extend(messages);
            if after >= last_seq {
                break;
            }
            if !short {
                after = self.history_ahead(group, after, since, last_seq, want, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Reads the pages after `after` up to `until` (or until `out` holds `want`), with up to
    /// [`HISTORY_AHEAD`] asked for at once: the server reads the next while this client
    /// decodes the last. Returns the last seq read. A page that comes back short (held to the
    /// reply's size) is taken and ends the run, as one out of line or unanswered does; the
    /// caller goes on one page at a time, and replies still on their way are dropped as
    /// unmatched.
    fn history_ahead(
        &mut self,
        group: &GroupRef,
        mut after: u64,
        since_ms: i64,
        until: u64,
        want: u64,
        out: &mut Vec<Message>,
    ) -> Result<u64> {
        let page = u64::from(protocol::HISTORY_PAGE_MAX);
        let mut asked = after;
        let mut pending: VecDeque<(u32, u64, u64)> = VecDeque::new();
        let read = loop {
            while pending.len() < HISTORY_AHEAD && asked < until {
                let promised = out.len() as u64 + (asked - after);
                if promised >= want {
                    break;
                }
                let count = (until - asked).min(page).min(want - promised);
                let request = self.history_request(group, asked, since_ms, count as u32);
                let Some(id) = self.server(&group.address)?.conn.send_nowait(&request)? else {
                    break;
                };
                pending.push_back((id, asked + 1, asked + count));
                asked += count;
            }
            let Some((id, first, last)) = pending.pop_front() else {
                break Ok(());
            };
            match self.server(&group.address)?.conn.await_reply(id) {
                Ok(Some(Reply::Messages { messages, .. }))
                    if messages.first().map(|m| m.seq) == Some(first)
                        && messages.last().is_some_and(|m| {
                            m.seq <= last && m.seq - first + 1 == messages.len() as u64
                        }) =>
                {
                    let whole = messages.len() as u64 == last - first + 1;
                    after = first + messages.len() as u64 - 1;
                    out.extend(messages);
                    if !whole {
                        break Ok(());
                    }
                }
                Ok(_) => break Ok(()),
                Err(err) => break Err(err),
            }
        };
        self.collect_events(&group.address);
        read.map(|()| after)
    }

    /// Fetches the messages after the last delivered one, up to `upto`, from history, and
    /// delivers them with any held messages that then follow on. A failure is left for the
    /// next PONG to find and repair.
    pub(super) fn repair(&mut self, group: &GroupRef, upto: u64) {
        // Each round delivers at least one message or stops.
        loop {
            let Some(gap) = self.subs.get(group).and_then(|s| s.gap_to(upto)) else {
                return;
            };
            let request =
                self.history_request(group, gap.after(), 0, gap.limit(protocol::HISTORY_PAGE_MAX));
            let Ok(server) = self.server(&group.address) else {
                return;
            };
            let (messages, first_seq) = match server.conn.request(&request) {
                Ok(Reply::Messages {
                    messages,
                    first_seq,
                    ..
                }) => (messages, first_seq),
                Ok(other) => return tracing::warn!(?other, "unexpected reply to HISTORY"),
                Err(err) => {
                    return tracing::warn!(%err, group = %group, "gap repair failed; will retry")
                }
            };
            tracing::debug!(group = %group, after = gap.after(), count = messages.len(), "gap repaired from history");
            let Some(sequencer) = self.subs.get_mut(group) else {
                return;
            };
            // What the server trimmed counts as delivered, so the page follows on from it.
            let mut delivered = sequencer.trimmed(first_seq);
            let after = gap.after().max(first_seq.saturating_sub(1));
            delivered.extend(sequencer.fill(after, messages));
            if delivered.is_empty() {
                return;
            }
            self.deliver(group, delivered);
        }
    }
}
