//! Search, read positions, edits and deletions from a session: one request each to the group
//! server hosting the group ([`Session::search_all`] asks every group given).

use tracing::warn;

use super::session::{expect_ok, GroupRef, Session};
use super::unexpected;
use crate::protocol::{self, ErrorCode, Hit, Reply, Request};
use crate::{errinput, Error, Result};

/// Where a user stands in one group: its last seq and how far they have read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    pub last_seq: u64,
    pub read_seq: u64,
}

impl ReadState {
    /// How many messages came after the user's read position.
    pub fn unread(&self) -> u64 {
        self.last_seq.saturating_sub(self.read_seq)
    }
}

impl Session {
    /// A group's messages whose latest text holds every word of `query`, newest first, at
    /// most `limit` (the server caps it), only those since `since_ms` if that is above 0.
    ///
    /// # Errors
    /// NOT_MEMBER, BAD_REQUEST for a query without words, or the server's silence.
    pub fn search(
        &mut self,
        group: &GroupRef,
        query: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Hit>> {
        let request = Request::Search {
            group: group.name.clone(),
            user: self.name.clone(),
            since_ms,
            limit,
            query: query.to_string(),
        };
        match self.group_request(group, &request)? {
            Reply::Found { hits, .. } => Ok(hits),
            other => Err(unexpected(other, "FOUND")),
        }
    }

    /// [`Session::search`] over several groups (each on its own server), newest first over
    /// all of them, at most `limit` in all.
    ///
    /// # Errors
    /// The first group's failure.
    pub fn search_all(
        &mut self,
        groups: &[GroupRef],
        query: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<(GroupRef, Hit)>> {
        let mut all = Vec::new();
        for group in groups {
            let hits = self.search(group, query, since_ms, limit)?;
            all.extend(hits.into_iter().map(|hit| (group.clone(), hit)));
        }
        all.sort_by(|(ga, a), (gb, b)| (b.ts, &gb.name, b.seq).cmp(&(a.ts, &ga.name, a.seq)));
        all.truncate(limit as usize);
        Ok(all)
    }

    /// Tells the server the user has seen the group up to `seq` (the position never moves
    /// back).
    ///
    /// # Errors
    /// NOT_MEMBER, or the server's silence.
    pub fn mark_read(&mut self, group: &GroupRef, seq: u64) -> Result<()> {
        let request = Request::Read {
            group: group.name.clone(),
            user: self.name.clone(),
            seq,
        };
        expect_ok(self.group_request(group, &request)?, "OK")
    }

    /// The group's last seq and the user's read position in it.
    ///
    /// # Errors
    /// NOT_MEMBER, or the server's silence.
    pub fn read_state(&mut self, group: &GroupRef) -> Result<ReadState> {
        let request = Request::Unread {
            group: group.name.clone(),
            user: self.name.clone(),
        };
        match self.group_request(group, &request)? {
            Reply::Unread {
                last_seq, read_seq, ..
            } => Ok(ReadState { last_seq, read_seq }),
            other => Err(unexpected(other, "UNREAD")),
        }
    }

    /// Replaces the text of message `seq` (the user's own); returns the seq of the edit.
    ///
    /// # Errors
    /// NOT_MEMBER for another's message, BAD_REQUEST for a seq the group does not hold, or
    /// the server's silence.
    pub fn edit(&mut self, group: &GroupRef, seq: u64, text: &str) -> Result<u64> {
        if text.len() > protocol::MAX_TEXT {
            return Err(errinput!(
                "message is {} bytes; the limit is {}",
                text.len(),
                protocol::MAX_TEXT
            ));
        }
        protocol::check_text(text).map_err(Error::Input)?;
        let request = Request::Edit {
            group: group.name.clone(),
            user: self.name.clone(),
            client_id: self.next_client_id(),
            seq,
            text: text.to_string(),
        };
        self.change(group, &request)
    }

    /// Deletes message `seq` (the user's own); returns the seq of the deletion.
    ///
    /// # Errors
    /// As [`Session::edit`].
    pub fn delete(&mut self, group: &GroupRef, seq: u64) -> Result<u64> {
        let request = Request::Delete {
            group: group.name.clone(),
            user: self.name.clone(),
            client_id: self.next_client_id(),
            seq,
        };
        self.change(group, &request)
    }

    fn change(&mut self, group: &GroupRef, request: &Request) -> Result<u64> {
        match self.group_request(group, request)? {
            Reply::Ack { seq, .. } => Ok(seq),
            other => Err(unexpected(other, "ACK")),
        }
    }
}

impl Session {
    /// The groups the message server lists of which the user is a member, with where they
    /// stand in each: every listed group is asked (UNREAD), and those that answer NOT_MEMBER
    /// (or are not hosted where listed, or whose server does not answer UNREAD) are left out.
    ///
    /// # Errors
    /// The message server's silence.
    pub fn my_groups(&mut self) -> Result<Vec<(GroupRef, ReadState)>> {
        let mut mine = Vec::new();
        for entry in self.list_groups()? {
            let group = GroupRef {
                name: entry.name,
                address: entry.address,
            };
            match self.read_state(&group) {
                Ok(state) => mine.push((group, state)),
                Err(Error::Rejected {
                    code: ErrorCode::NotMember | ErrorCode::UnknownGroup,
                    ..
                }) => {}
                // A server that does not know UNREAD (an earlier one), or does not answer:
                // its groups cannot be told apart, and the others still can.
                Err(err) => warn!(%group, %err, "cannot tell whether a member"),
            }
        }
        Ok(mine)
    }
}
