//! Messages typed while their group server is away: kept in order and sent when it is back,
//! or reported as not sent. Never dropped silently.
//!
//! Each message keeps the client id of its first try, so sending it again after a timeout is
//! exactly-once ([`crate::client::Session::send_with_id`]): a try whose acknowledgement was lost
//! is not stored twice.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::client::GroupRef;
use crate::{Error, Result};

/// A message waiting for its group server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub group: GroupRef,
    pub client_id: String,
    pub text: String,
}

/// What became of a flush.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Stored now, in order.
    pub sent: usize,
    /// Refused for good (e.g. no longer a member), with why.
    pub failed: Vec<(Pending, String)>,
}

/// The queue, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: VecDeque<Pending>,
    /// When a flush to an address last timed out; retried only after [`Outbox::RETRY`].
    tried: Vec<(String, Instant)>,
}

impl Outbox {
    /// How long after a timed-out flush another is tried without the server being announced back.
    pub const RETRY: Duration = Duration::from_secs(5);

    /// Whether anything waits for the group server at `address`: a new message for it must
    /// then wait too, to keep the order.
    pub fn holds(&self, address: &str) -> bool {
        self.pending.iter().any(|p| p.group.address == address)
    }

    /// How many messages wait for `address`.
    pub fn count(&self, address: &str) -> usize {
        self.pending
            .iter()
            .filter(|p| p.group.address == address)
            .count()
    }

    /// Queues a message behind the others.
    pub fn push(&mut self, pending: Pending, now: Instant) {
        self.mark_tried(&pending.group.address, now);
        self.pending.push_back(pending);
    }

    fn mark_tried(&mut self, address: &str, now: Instant) {
        self.tried.retain(|(a, _)| a != address);
        self.tried.push((address.to_string(), now));
    }

    /// Addresses with messages waiting whose last try is older than [`Outbox::RETRY`].
    pub fn due(&self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.pending {
            let address = &p.group.address;
            let recent = self
                .tried
                .iter()
                .any(|(a, at)| a == address && now.duration_since(*at) < Self::RETRY);
            if !recent && !out.contains(address) {
                out.push(address.clone());
            }
        }
        out
    }

    /// Sends what waits for `address`, oldest first, with `send`. A timeout stops the flush and
    /// keeps the rest for later; any other error drops that message and reports it.
    pub fn flush(
        &mut self,
        address: &str,
        now: Instant,
        mut send: impl FnMut(&Pending) -> Result<()>,
    ) -> Flushed {
        let mut flushed = Flushed::default();
        let mut kept = VecDeque::new();
        let mut stalled = false;
        while let Some(p) = self.pending.pop_front() {
            if stalled || p.group.address != address {
                kept.push_back(p);
                continue;
            }
            match send(&p) {
                Ok(()) => flushed.sent += 1,
                Err(Error::Timeout(_)) => {
                    stalled = true;
                    kept.push_back(p);
                }
                Err(err) => flushed.failed.push((p, err.to_string())),
            }
        }
        self.pending = kept;
        if stalled {
            self.mark_tried(address, now);
        } else {
            self.tried.retain(|(a, _)| a != address);
        }
        flushed
    }

    /// Messages kept for `from` go to `to`, the group's new place, in the same order.
    pub fn moved(&mut self, from: &GroupRef, to: &GroupRef) {
        for p in self.pending.iter_mut().filter(|p| p.group == *from) {
            p.group = to.clone();
        }
    }

    /// Everything still waiting, for the report at exit.
    pub fn drain(&mut self) -> Vec<Pending> {
        self.pending.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn pending(address: &str, text: &str) -> Pending {
        Pending {
            group: GroupRef {
                name: "general".into(),
                address: address.into(),
            },
            client_id: format!("id-{text}"),
            text: text.into(),
        }
    }

    #[test]
    fn a_flush_sends_in_order_and_stops_at_a_timeout() {
        let now = Instant::now();
        let mut out = Outbox::default();
        for (a, t) in [
            ("h:1", "one"),
            ("h:2", "other"),
            ("h:1", "two"),
            ("h:1", "three"),
        ] {
            out.push(pending(a, t), now);
        }
        assert_eq!(out.count("h:1"), 3);
        let mut seen = Vec::new();
        let flushed = out.flush("h:1", now, |p| {
            seen.push(p.text.clone());
            if p.text == "two" {
                Err(Error::Timeout("down again".into()))
            } else {
                Ok(())
            }
        });
        assert_eq!(seen, ["one", "two"], "nothing after a timeout is tried");
        assert_eq!(flushed.sent, 1);
        assert!(out.holds("h:1") && out.holds("h:2"));
        let rest: Vec<String> = out.drain().into_iter().map(|p| p.text).collect();
        assert_eq!(rest, ["other", "two", "three"], "order is kept");
    }

    #[test]
    fn messages_kept_for_a_moved_group_go_to_its_new_server_in_order() {
        let now = Instant::now();
        let mut out = Outbox::default();
        for (a, t) in [("h:1", "one"), ("h:2", "other"), ("h:1", "two")] {
            out.push(pending(a, t), now);
        }
        let (from, to) = (pending("h:1", "").group, pending("h:3", "").group);
        out.moved(&from, &to);
        assert!(!out.holds("h:1"));
        assert_eq!(out.count("h:3"), 2);
        let mut seen = Vec::new();
        let flushed = out.flush("h:3", now, |p| {
            seen.push((p.text.clone(), p.client_id.clone()));
            Ok(())
        });
        assert_eq!(flushed.sent, 2);
        assert_eq!(
            seen,
            [
                ("one".into(), "id-one".into()),
                ("two".into(), "id-two".into())
            ],
            "in order, under the ids of their first try"
        );
        assert_eq!(out.count("h:2"), 1, "another server's messages stay");
    }

    #[test]
    fn a_refusal_is_reported_and_the_rest_still_goes() {
        let now = Instant::now();
        let mut out = Outbox::default();
        out.push(pending("h:1", "a"), now);
        out.push(pending("h:1", "b"), now);
        let flushed = out.flush("h:1", now, |p| {
            if p.text == "a" {
                Err(Error::Rejected {
                    code: ErrorCode::NotMember,
                    reason: "not a member".into(),
                })
            } else {
                Ok(())
            }
        });
        assert_eq!(flushed.sent, 1);
        assert_eq!(flushed.failed.len(), 1);
        assert_eq!(flushed.failed[0].0.text, "a");
        assert!(!out.holds("h:1"));
    }

    #[test]
    fn retries_wait_after_a_timeout() {
        let now = Instant::now();
        let mut out = Outbox::default();
        out.push(pending("h:1", "a"), now);
        assert!(out.due(now).is_empty(), "just tried");
        assert_eq!(out.due(now + Outbox::RETRY), ["h:1"]);
        let _ = out.flush("h:1", now + Outbox::RETRY, |_| {
            Err(Error::Timeout("no".into()))
        });
        assert!(out.due(now + Outbox::RETRY).is_empty());
    }
}
