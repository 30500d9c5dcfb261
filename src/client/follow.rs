//! Following a group to its new group server. In cluster mode a group moves when its server
//! dies, freezes past its lease or hands it over; the message server then lists it at its new
//! owner. A session finds out in two ways: a request to the old server fails (no answer,
//! UNKNOWN_GROUP, UNAVAILABLE), or the heartbeat finds the old server lost or no longer
//! hosting a subscribed group. It then asks the message server where the group lives
//! ([`Session::relocate`]), subscribes there and repairs the gap from history through the
//! group's [`Sequencer`](super::sequencer::Sequencer), and retries the failed request there:
//! a send keeps its client id, so it is stored once wherever it landed first.

use std::time::{Duration, Instant};

use super::session::{GroupRef, Session, SessionEvent};
use crate::protocol::{ErrorCode, Request};
use crate::{Error, Result};

/// The first pause between asking the message server about a lost server's groups.
const LOOKUP_FIRST: Duration = Duration::from_secs(1);

/// The longest pause between those questions: a lost server is asked about for as long as
/// it is lost, at most this often once it has been lost a while.
pub(super) const LOOKUP_MAX: Duration = Duration::from_secs(8);

/// How long a request refused by a server that no longer hosts its group (UNKNOWN_GROUP,
/// UNAVAILABLE) waits for the message server to list the group's new owner: one lease's
/// takeover, with room to spare.
const HANDOVER_PATIENCE: Duration = Duration::from_secs(15);

/// Most moves one request follows: a group handed on again while it was being followed.
const MAX_MOVES: usize = 4;

impl Session {
    /// Where `group` lives now, as far as this session knows.
    pub(super) fn locate(&self, group: &GroupRef) -> GroupRef {
        self.moved
            .get(group)
            .cloned()
            .unwrap_or_else(|| group.clone())
    }

    /// Whether the session follows `group` when it moves: found by name, or subscribed.
    fn follows(&self, group: &GroupRef) -> bool {
        self.by_name.contains(group) || self.subs.contains_key(group)
    }

    /// Runs `call` against where `group` lives now; when that fails in a way that says the
    /// group may have moved, asks the message server, and if it lists the group elsewhere
    /// moves there and runs `call` again.
    pub(super) fn following<T>(
        &mut self,
        group: &GroupRef,
        mut call: impl FnMut(&mut Session, &GroupRef) -> Result<T>,
    ) -> Result<T> {
        let mut at = self.locate(group);
        for _ in 0..MAX_MOVES {
            let err = match call(self, &at) {
                Err(err) if self.follows(&at) => err,
                other => return other,
            };
            let moved = match &err {
                // A server that is gone: one question, so a server restarted where it was
                // (SQLite) is reported as before, in the same time.
                Error::Timeout(_) => self.relocate(&at),
                // A live server that does not host the group (now): its new owner may not be
                // listed yet, so ask again for a while.
                Error::Rejected {
                    code: ErrorCode::UnknownGroup | ErrorCode::Unavailable,
                    ..
                } => self.await_relocation(&at),
                _ => None,
            };
            match moved {
                Some(to) => at = to,
                None => return Err(err),
            }
        }
        call(self, &at)
    }

    /// Asks the message server again and again, up to [`HANDOVER_PATIENCE`], while it lists
    /// `group` nowhere: the group is between owners. Listed where it was, it has not moved.
    fn await_relocation(&mut self, group: &GroupRef) -> Option<GroupRef> {
        let give_up = Instant::now() + HANDOVER_PATIENCE;
        let mut pause = Duration::from_millis(200);
        loop {
            let listed = self.listed_at(&group.name)?;
            match listed {
                Some(address) if address == group.address => return None,
                Some(_) => return self.relocate(group),
                None if Instant::now() + pause < give_up => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                None => return None,
            }
        }
    }

    /// Where the message server lists group `name`: `Some(None)` for nowhere, `None` when no
    /// message server answered.
    fn listed_at(&mut self, name: &str) -> Option<Option<String>> {
        match self.list_groups() {
            Ok(groups) => Some(
                groups
                    .into_iter()
                    .find(|g| g.name == name)
                    .map(|g| g.address),
            ),
            Err(err) => {
                tracing::debug!(%err, "no message server to ask where {name} lives");
                None
            }
        }
    }

    /// Asks the message server where `group` lives; if elsewhere, moves there (see
    /// [`Session::move_group`]) and returns the new place.
    pub(super) fn relocate(&mut self, group: &GroupRef) -> Option<GroupRef> {
        let address = self.listed_at(&group.name)??;
        if address == group.address {
            return None;
        }
        let to = GroupRef {
            name: group.name.clone(),
            address,
        };
        self.move_group(group, &to);
        Some(to)
    }

    /// Sends requests for `from` to `to` from now on; a subscription moves with its place in
    /// the stream: SUBSCRIBE at `to`, then the messages missed since, from history.
    fn move_group(&mut self, from: &GroupRef, to: &GroupRef) {
        tracing::info!(group = %from.name, from = %from.address, to = %to.address, "group moved");
        for place in self.moved.values_mut() {
            if place == from {
                *place = to.clone();
            }
        }
        self.moved.remove(to);
        self.moved.insert(from.clone(), to.clone());
        if self.by_name.remove(from) {
            self.by_name.insert(to.clone());
        }
        let Some(sequencer) = self.subs.remove(from) else {
            return;
        };
        self.subs.insert(to.clone(), sequencer);
        self.ready.push_back(SessionEvent::Moved {
            from: from.clone(),
            to: to.clone(),
        });
        let request = Request::Subscribe {
            group: to.name.clone(),
            user: self.name.clone(),
        };
        match self.attach(to, &request) {
            Ok(last_seq) => self.repair(to, last_seq),
            // The next PONG from `to` finds the subscription missing and makes it again.
            Err(err) => {
                tracing::warn!(%err, group = %to, "subscribing at the new server failed; will retry")
            }
        }
    }

    /// For a group server that stopped answering: asks the message server, at most every
    /// few seconds (backing off while it stays lost), where each of its subscribed groups
    /// lives, and follows those it lists elsewhere.
    pub(super) fn follow_lost(&mut self, address: &str, now: Instant) {
        let Some(server) = self.servers.get_mut(address) else {
            return;
        };
        let (due, pause) = server.lookup.unwrap_or((now, LOOKUP_FIRST));
        if now < due {
            return;
        }
        server.lookup = Some((now + pause, (pause * 2).min(LOOKUP_MAX)));
        let groups: Vec<GroupRef> = self
            .subs
            .keys()
            .filter(|g| g.address == address)
            .cloned()
            .collect();
        for group in groups {
            self.relocate(&group);
        }
    }
}
