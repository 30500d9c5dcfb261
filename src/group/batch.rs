//! One wake-up's requests and their transaction: [`Batch`] hands each request to
//! [`State::handle`], carries out its store work through the [`Storage`] at once (so the next
//! request sees it), commits the writes of consecutive write requests as one transaction, and
//! when that fails turns their answers into errors, drops their pushes and restores State from
//! the store. No sockets here: the poll loop sends what [`Batch::out`] holds.

use std::time::{Duration, Instant};

use tracing::warn;

use super::state::{
    fail_batch, fail_request, unwritable, Effects, Found, Keys, Now, Outbound, Peer, Query,
    QueryKind, Route, State,
};
use super::storage::Storage;
use crate::protocol::{Acked, Reply, Request};
use crate::Result;

/// The open transaction.
struct Transaction {
    /// Where its answers and pushes start in [`Batch::out`].
    from: usize,
    /// Why it must not commit: a write in it failed.
    failed: Option<String>,
}

/// The requests of one wake-up, decided and carried out, with what to send; kept from one
/// wake-up to the next for its buffers.
#[derive(Default)]
pub struct Batch {
    effects: Effects,
    open: Option<Transaction>,
    /// Set when a transaction could not begin: the batch's other writes are refused at once
    /// rather than each waiting for the write lock again.
    unwritable: Option<Reply>,
    /// Each append's acks, kept so a lone SEND's answer costs no vector of its own.
    acks: Vec<Acked>,
    /// How long each commit of this wake-up took, for the loop's metrics to take.
    pub commit_times: Vec<Duration>,
}

impl Batch {
    /// Answers and pushes decided so far, in order; an open transaction's wait for
    /// [`Batch::settle`].
    pub fn out(&mut self) -> &mut Vec<Outbound> {
        &mut self.effects.out
    }

    /// Answers request `req_id` of `route` with `reply`, after what was decided before it.
    pub fn reply(&mut self, route: Route, req_id: u32, reply: Reply) {
        self.out().push(Outbound::Reply {
            route,
            req_id,
            reply,
        });
    }

    /// Takes what is ready to send. Nothing may be taken from an open transaction.
    pub fn take_out(&mut self) -> Vec<Outbound> {
        debug_assert!(self.open.is_none(), "bug: answers taken before a commit");
        std::mem::take(&mut self.effects.out)
    }

    /// Makes way for `request`: a write joins the open transaction (beginning one if none is
    /// open), anything else first settles it, so it sees the writes before it committed.
    /// Returns the refusal for a write when no transaction could begin.
    pub fn admit(
        &mut self,
        request: &Request,
        state: &mut State,
        storage: &mut dyn Storage,
    ) -> Option<Reply> {
        if !request.is_write() {
            self.settle(state, storage);
            return None;
        }
        if self.open.is_none() && self.unwritable.is_none() {
            match storage.begin() {
                Ok(()) => {
                    self.open = Some(Transaction {
                        from: self.effects.out.len(),
                        failed: None,
                    })
                }
                Err(err) => {
                    warn!(%err, "cannot begin a transaction");
                    self.unwritable = Some(unwritable(&err.to_string()));
                }
            }
        }
        self.unwritable.clone()
    }

    /// Decides `request` and carries out its store work: writes, then an append (answered
    /// once stored), then a read. A write that fails answers the request with its failure
    /// and keeps the transaction from committing.
    pub fn handle(
        &mut self,
        state: &mut State,
        storage: &mut dyn Storage,
        now: Now,
        from: Peer<'_>,
        req_id: u32,
        request: Request,
    ) {
        let mark = self.effects.out.len();
        state.handle(now, from, req_id, request, &mut self.effects);
        let mut writes = std::mem::take(&mut self.effects.writes);
        let failed = writes
            .iter()
            .find_map(|write| storage.write(write).err().map(|err| (write, err)));
        if let Some((write, err)) = failed {
            let reply = write.failure(&err.to_string());
            let whole = write.fails_batch();
            self.effects.append = None;
            self.effects.read = None;
            self.effects.query = None;
            self.write_failed(state, storage, mark, from.route, req_id, reply, &err, whole);
        }
        // Kept for the next request's writes, empty.
        writes.clear();
        self.effects.writes = writes;
        if let Some(change) = self.effects.change.take() {
            // Outside any transaction (`admit` settled the batch's): the store's own.
            let done = storage.change(&change.what, now.ms);
            state.changed(change, done, &mut self.effects.out);
        }
        if let Some(query) = self.effects.query.take() {
            let found = look_up(storage, &query);
            state.looked_up(query, found, &mut self.effects);
        }
        if let Some(mut append) = self.effects.append.take() {
            self.acks.clear();
            let appended = storage
                .append_batch(&mut append, &mut self.acks)
                .map(|()| imported_once(&append, &self.acks));
            match appended {
                Ok(None) => state.appended(append, &mut self.acks, &mut self.effects.out),
                Ok(Some(reason)) => {
                    let err = crate::Error::Input(reason.clone());
                    let reply = Reply::Error {
                        code: crate::protocol::ErrorCode::BadRequest,
                        reason,
                    };
                    self.write_failed(state, storage, mark, from.route, req_id, reply, &err, true);
                }
                Err(err) => {
                    let reply = unwritable(&err.to_string());
                    self.write_failed(state, storage, mark, from.route, req_id, reply, &err, true);
                }
            }
        }
        if let Some(read) = self.effects.read.take() {
            let page = storage.fetch(read.group_id, read.after_seq, read.since_ms, read.limit);
            self.effects.out.push(read.answer(page));
        }
    }

    /// Answers a request whose write failed with `reply`. If the failure is `whole`, the open
    /// transaction must then not commit; otherwise (or outside a transaction: a name bound by a
    /// read) only this request's decisions are undone, by reading memory back from the store,
    /// whose reads see the transaction's writes so far.
    #[allow(clippy::too_many_arguments)]
    fn write_failed(
        &mut self,
        state: &mut State,
        storage: &mut dyn Storage,
        mark: usize,
        route: &Route,
        req_id: u32,
        reply: Reply,
        err: &crate::Error,
        whole: bool,
    ) {
        warn!(%err, "storage write failed");
        fail_request(&mut self.effects.out, mark, route, req_id, reply);
        match &mut self.open {
            Some(open) if whole => open.failed = Some(err.to_string()),
            _ => restore(state, storage),
        }
    }

    /// Ends the wake-up: settles its transaction and takes what to send. The next wake-up may
    /// try to begin a transaction again.
    pub fn finish(&mut self, state: &mut State, storage: &mut dyn Storage) -> Vec<Outbound> {
        self.settle(state, storage);
        self.unwritable = None;
        self.take_out()
    }

    /// Ends the open transaction, if any: commits it, or on any failure rolls it back, turns
    /// its durable answers into errors, drops its pushes and restores State from the store.
    pub fn settle(&mut self, state: &mut State, storage: &mut dyn Storage) {
        let Some(open) = self.open.take() else {
            return;
        };
        let failure = match open.failed {
            Some(reason) => {
                storage.rollback();
                Some(reason)
            }
            None => {
                let started = Instant::now();
                let committed = storage.commit();
                self.commit_times.push(started.elapsed());
                committed.err().map(|e| e.to_string())
            }
        };
        let Some(reason) = failure else { return };
        warn!(%reason, "batch not stored; its senders get an error");
        let mut tail = self.effects.out.split_off(open.from);
        fail_batch(&mut tail, &reason);
        self.effects.out.append(&mut tail);
        restore(state, storage);
    }
}

/// Refuses an IMPORT of which a message was stored before under its client id: the seqs after
/// it would not be the ones imported.
fn imported_once(append: &super::state::Append, acks: &[Acked]) -> Option<String> {
    let i = acks
        .iter()
        .position(|a| a.duplicate)
        .filter(|_| append.import)?;
    Some(format!(
        "the message imported as seq {} was stored before (seq {}) under its client id '{}'",
        append.first_seq + i as u64,
        acks[i].seq,
        append.client_ids.get(i)
    ))
}

/// What the store holds for `query`.
fn look_up(storage: &mut dyn Storage, query: &Query) -> Result<Found> {
    Ok(match &query.kind {
        QueryKind::Search {
            query: text,
            since_ms,
            limit,
        } => Found::Hits(storage.search(query.group_id, text, *since_ms, *limit)?),
        QueryKind::Unread { user, .. } => {
            Found::ReadSeq(storage.read_position(query.group_id, user)?)
        }
        QueryKind::Original { seq, .. } => {
            let page = storage.fetch(query.group_id, seq - 1, 0, 1)?;
            Found::Original(page.into_iter().next())
        }
    })
}

/// Reads back into `state` what it mirrors of the store, after writes that were not stored.
/// What cannot be read is only logged: memory keeps what it had of it.
pub fn restore(state: &mut State, storage: &mut dyn Storage) {
    let groups = state
        .group_ids()
        .into_iter()
        .filter_map(|id| match storage.load_group(id) {
            Ok(group) => Some(group),
            Err(err) => {
                warn!(%err, "cannot reload group after a failed batch");
                None
            }
        })
        .collect();
    let keys = if state.is_secure() {
        read_keys(state, storage)
            .map_err(|err| warn!(%err, "cannot reload names and invitations after a failed batch"))
            .ok()
    } else {
        None
    };
    state.restore(groups, keys);
}

/// The names and invitations of `state`'s private groups, as stored.
///
/// # Errors
/// The store's error.
pub fn read_keys(state: &State, storage: &mut dyn Storage) -> Result<Keys> {
    let mut keys = Keys {
        users: storage.users()?,
        ..Keys::default()
    };
    for id in state.private_group_ids() {
        keys.invites.insert(id, storage.invites(id)?);
    }
    Ok(keys)
}
