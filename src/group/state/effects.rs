//! What [`State::handle`](super::State::handle) decides, as typed values: what to write, what
//! to answer, what to push, what to read. The poll loop carries them out (writes through the
//! store, commits) and only then encodes and sends.

use std::time::Instant;

use tracing::warn;

use super::keep_within;
use crate::protocol::{Acked, ErrorCode, Event, Message, Reply};

/// A peer's ZeroMQ routing id.
pub type Route = Vec<u8>;

/// Who sent a request.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The connection's routing id: where answers go, what live pushes follow.
    pub route: &'a Route,
    /// The peer's CURVE public key (Z85), as ZAP authenticated it; `None` without security.
    pub key: Option<&'a str>,
    /// The peer's IP address, without security (names per address, the send rate).
    pub address: Option<&'a str>,
}

/// The time a request is handled at, read once by the poll loop: State keeps no clock, so a
/// test can set it.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For rates and silence.
    pub at: Instant,
    /// For timestamps that are stored (messages, joins, names, invitations).
    pub ms: i64,
}

impl Now {
    /// The current time.
    pub fn read() -> Now {
        Now {
            at: Instant::now(),
            ms: crate::time::now_ms(),
        }
    }
}

/// What a request decided, gathered over a batch of requests. [`Effects::writes`],
/// [`Effects::append`] and [`Effects::read`] belong to the request just handled and are carried
/// out before the next one is; [`Effects::out`] holds every answer and push until the batch
/// settles.
#[derive(Debug, Default)]
pub struct Effects {
    /// Answers and pushes, in the order they were decided.
    pub out: Vec<Outbound>,
    /// Store writes, in the batch's transaction. If one fails, the request's answer is
    /// [`Write::failure`] and, as [`Write::fails_batch`] says, the batch does not commit.
    pub writes: Vec<Write>,
    /// Messages to store; once stored, [`State::appended`](super::State::appended) answers.
    pub append: Option<Append>,
    /// A page of history to read from the store and answer with [`Read::answer`].
    pub read: Option<Read>,
    /// A group to create, drop or change, in a store transaction of its own; once done,
    /// [`State::changed`](super::State::changed) answers.
    pub change: Option<Change>,
    /// Something else to look up in the store before answering: a search, a read position,
    /// or the message an edit or deletion refers to.
    pub query: Option<Query>,
}

/// A change of which groups exist or how one admits (CREATE, DROP, SET), decided by State and
/// carried out by the store outside any batch's transaction, so memory changes only once the
/// store has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub route: Route,
    pub req_id: u32,
    /// Who asked (an operator's key or loopback address), for the log.
    pub operator: String,
    pub what: GroupChange,
}

/// What a [`Change`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// Make the group (or take up one the store holds) and host it.
    Create { name: String, private: bool },
    /// Delete the group and everything of it.
    Drop { name: String, group_id: i64 },
    /// Make the group private or public.
    Set {
        name: String,
        group_id: i64,
        private: bool,
    },
}

impl GroupChange {
    /// The group's name.
    pub fn name(&self) -> &str {
        match self {
            GroupChange::Create { name, .. }
            | GroupChange::Drop { name, .. }
            | GroupChange::Set { name, .. } => name,
        }
    }
}

/// Something to send once the current batch is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// An answer that is true whatever happens to the batch.
    Reply {
        route: Route,
        req_id: u32,
        reply: Reply,
    },
    /// An answer that is true only if the batch commits; otherwise it becomes an
    /// UNAVAILABLE error for `req_id` ([`fail_batch`]).
    Durable {
        route: Route,
        req_id: u32,
        reply: Reply,
    },
    /// An event for every live subscriber of `group`; dropped if the batch fails.
    Event { group: String, event: Event },
    /// New messages (one for a SEND, a SENDS's new ones) for every live subscriber of
    /// `group`, sent as MSG or, with the batch's other new messages of the group, as MSGS
    /// ([`crate::group::fanout`]); dropped if the batch fails.
    Messages {
        group: String,
        messages: Vec<Message>,
    },
}

impl Outbound {
    /// Whether this goes to a group's subscribers rather than answering one request.
    pub fn is_push(&self) -> bool {
        self.group().is_some()
    }

    /// The group whose subscribers a push goes to; `None` for an answer.
    pub fn group(&self) -> Option<&str> {
        match self {
            Outbound::Event { group, .. } | Outbound::Messages { group, .. } => Some(group),
            Outbound::Reply { .. } | Outbound::Durable { .. } => None,
        }
    }
}

/// A change to the store that State has already made in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    AddMember {
        group_id: i64,
        user: String,
        now_ms: i64,
    },
    RemoveMember {
        group_id: i64,
        user: String,
    },
    /// With security: the name belongs to the key from now on.
    BindUser {
        user: String,
        key: String,
        now_ms: i64,
    },
    AddInvite {
        group_id: i64,
        key: String,
        now_ms: i64,
    },
    /// The user's JOINs to the group are refused from now on.
    AddBan {
        group_id: i64,
        user: String,
        now_ms: i64,
    },
    /// The user may join the group again.
    RemoveBan {
        group_id: i64,
        user: String,
    },
    /// The user has read the group up to `seq` (a position that only moves forward).
    SetRead {
        group_id: i64,
        user: String,
        seq: u64,
    },
}

impl Write {
    /// The answer to a request whose write failed with `err`.
    pub fn failure(&self, err: &str) -> Reply {
        match self {
            Write::BindUser { user, .. } => Reply::Error {
                code: ErrorCode::Unauthorized,
                reason: format!("cannot record the name '{user}': {err}"),
            },
            _ => unwritable(err),
        }
    }

    /// Whether a failure of this write keeps the whole batch from committing. A name that
    /// cannot be bound refuses only the request that used it: nothing else of the request was
    /// written yet, and the rest of the batch does not depend on it.
    pub fn fails_batch(&self) -> bool {
        !matches!(self, Write::BindUser { .. })
    }
}

/// The messages of one SEND or SENDS, to append to a group in order. A message whose sender
/// stored one under the same client id before is not stored again; the new ones take
/// consecutive seqs from `first_seq` (see [`crate::group::storage::Storage::append_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub route: Route,
    pub req_id: u32,
    pub group: String,
    pub group_id: i64,
    /// The seq the first new message takes.
    pub first_seq: u64,
    /// Each with its sender, text and ts; the store sets the seq of the new ones and drops
    /// the duplicates, so afterwards this holds exactly the messages to push.
    pub messages: Vec<Message>,
    /// Each message's client id (empty: no de-duplication).
    pub client_ids: ClientIds,
    /// An IMPORT: the messages carry their own seqs and times, so one stored before under
    /// its client id (which would shift the seqs after it) fails the request.
    pub import: bool,
}

/// The client ids of an [`Append`]'s messages: a SEND's one (answered ACK) without a vector of
/// its own, or a SENDS's (answered ACKS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIds {
    One(String),
    Each(Vec<String>),
}

impl ClientIds {
    /// The client id of message `i`.
    pub fn get(&self, i: usize) -> &str {
        match self {
            ClientIds::One(id) => id,
            ClientIds::Each(ids) => ids.get(i).map_or("", String::as_str),
        }
    }
}

/// A store look-up whose answer State decides from what it finds
/// ([`State::looked_up`](super::State::looked_up)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub route: Route,
    pub req_id: u32,
    pub group: String,
    pub group_id: i64,
    pub kind: QueryKind,
}

/// What a [`Query`] looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKind {
    /// SEARCH: the group's messages matching `query`, newest first.
    Search {
        query: String,
        since_ms: i64,
        /// At most [`crate::protocol::SEARCH_MAX`], and more than 0.
        limit: u32,
    },
    /// UNREAD: how far `user` has read; `last_seq` is the group's, for the answer.
    Unread { user: String, last_seq: u64 },
    /// EDIT or DELETE: message `seq`, to check before `change` is appended.
    Original {
        seq: u64,
        /// The change to store once allowed: one message, its text made by
        /// [`crate::protocol::edit`].
        change: Append,
        /// Who asks: the original's sender may change it, an operator any message.
        user: String,
        operator: bool,
    },
}

/// What the store found for a [`Query`].
#[derive(Debug)]
pub enum Found {
    Hits(Vec<crate::protocol::Hit>),
    ReadSeq(u64),
    Original(Option<Message>),
}

/// A page of a group's history to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub route: Route,
    pub req_id: u32,
    pub group: String,
    pub group_id: i64,
    /// The group's last seq when asked, for the answer.
    pub last_seq: u64,
    /// The group's first kept seq when asked, for the answer.
    pub first_seq: u64,
    pub after_seq: u64,
    pub since_ms: i64,
    /// At most [`crate::protocol::HISTORY_PAGE_MAX`], and more than 0.
    pub limit: u32,
}

impl Read {
    /// The answer to this read, given what the store returned: the page, shortened to fit a
    /// reply, or INTERNAL.
    pub fn answer(self, page: crate::Result<Vec<Message>>) -> Outbound {
        let reply = match page {
            Ok(mut messages) => {
                keep_within(&mut messages, crate::protocol::MAX_REPLY);
                Reply::Messages {
                    group: self.group,
                    last_seq: self.last_seq,
                    messages,
                    first_seq: self.first_seq,
                }
            }
            Err(err) => {
                warn!(%err, "history read failed");
                Reply::Error {
                    code: ErrorCode::Internal,
                    reason: format!("storage cannot read: {err}"),
                }
            }
        };
        Outbound::Reply {
            route: self.route,
            req_id: self.req_id,
            reply,
        }
    }
}

/// The answer to a change the store could not write: UNAVAILABLE, nothing of it stored.
pub fn unwritable(err: &str) -> Reply {
    Reply::Error {
        code: ErrorCode::Unavailable,
        reason: format!("storage cannot write: {err}"),
    }
}

/// What becomes of a batch that did not commit (its part of `out`): its pushes are dropped and
/// its [`Outbound::Durable`] answers become UNAVAILABLE errors naming `reason`.
pub fn fail_batch(batch: &mut Vec<Outbound>, reason: &str) {
    batch.retain(|o| !o.is_push());
    for o in batch.iter_mut() {
        if let Outbound::Durable { route, req_id, .. } = o {
            *o = Outbound::Reply {
                route: std::mem::take(route),
                req_id: *req_id,
                reply: unwritable(reason),
            };
        }
    }
}

/// What a request whose write failed answers: its decisions so far (from `from` in `out`) are
/// replaced by `reply`.
pub fn fail_request(
    out: &mut Vec<Outbound>,
    from: usize,
    route: &Route,
    req_id: u32,
    reply: Reply,
) {
    out.truncate(from);
    out.push(Outbound::Reply {
        route: route.clone(),
        req_id,
        reply,
    });
}

/// The answer to a SEND (ACK) or SENDS (ACKS) once stored, taking the acks out of `acks`.
pub(super) fn acks_reply(ids: &ClientIds, acks: &mut Vec<Acked>) -> Reply {
    match (ids, acks.as_slice()) {
        (ClientIds::One(_), &[Acked { seq, ts, duplicate }]) => {
            acks.clear();
            Reply::Ack { seq, ts, duplicate }
        }
        _ => Reply::Acks(std::mem::take(acks)),
    }
}
