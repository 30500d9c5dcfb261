//! The order of one group's messages as a client receives them: pure, no sockets, no clock.
//!
//! A group server numbers each group's messages from 1 without gaps (PROTOCOL.md,
//! "Sequencing"). Live pushes can still arrive with holes (a push lost to a reconnect, a
//! restarted server) or twice (a push and the history that repairs it). A [`Sequencer`] knows
//! the last seq delivered and says, for each message that arrives, whether to deliver it, drop
//! it, or first repair a [`Gap`] from history; messages past a gap wait here until it is filled.
//! Asking for history and delivering is the session's (`session.rs`, `history.rs`).

use std::collections::BTreeMap;

use crate::protocol::Message;

/// Messages held past a gap at most. Beyond it a message is dropped, not lost: the repair
/// that fills the gap reads it from history too. Keeps a server that jumps far ahead (or
/// pushes garbage seqs) from growing the client without bound.
const MAX_HELD: usize = 1000;

/// Seqs `from..=to` of a group are missing and are to be read from history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The first missing seq.
    pub from: u64,
    /// The last missing seq.
    pub to: u64,
}

impl Gap {
    /// The `after_seq` of the HISTORY request that starts filling this gap.
    pub fn after(&self) -> u64 {
        self.from - 1
    }

    /// The `limit` of that request: the whole gap, or `max` if it is longer.
    pub fn limit(&self, max: u32) -> u32 {
        (self.to - self.from).min(u64::from(max.max(1)) - 1) as u32 + 1
    }
}

/// What to do with a message that arrived live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver these, in this order: the message, and any held ones it makes contiguous.
    Deliver(Vec<Message>),
    /// Already delivered (or before the subscription): drop it.
    Stale,
    /// Messages before it are missing: repair this gap from history, then call
    /// [`Sequencer::fill`]. The message is held until then (up to a thousand such).
    Gap(Gap),
}

/// Where one subscribed group's stream stands.
#[derive(Debug, Clone, Default)]
pub struct Sequencer {
    /// Highest seq delivered (or skipped as before the subscription).
    last: u64,
    /// Messages that arrived past a gap, by seq, until the gap is filled.
    held: BTreeMap<u64, Message>,
}

impl Sequencer {
    /// A group whose messages up to `last_seq` count as delivered: a new subscription starts
    /// at the server's last seq (JOINED) and takes only what comes after it.
    pub fn new(last_seq: u64) -> Sequencer {
        Sequencer {
            last: last_seq,
            held: BTreeMap::new(),
        }
    }

    /// The highest seq delivered.
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// Judges a message that arrived live (a MSG, or one of a MSGS batch, in order).
    pub fn accept(&mut self, message: Message) -> Verdict {
        let seq = message.seq;
        if seq <= self.last || self.held.contains_key(&seq) {
            return Verdict::Stale;
        }
        if seq == self.last + 1 {
            self.last = seq;
            let mut out = vec![message];
            self.release(&mut out);
            return Verdict::Deliver(out);
        }
        if self.held.len() < MAX_HELD {
            self.held.insert(seq, message);
        }
        Verdict::Gap(Gap {
            from: self.last + 1,
            to: seq - 1,
        })
    }

    /// The gap up to `server_last`, the last seq the server reports (PONG, JOINED), if any:
    /// a lost final push shows only there.
    pub fn gap_to(&self, server_last: u64) -> Option<Gap> {
        (server_last > self.last).then(|| Gap {
            from: self.last + 1,
            to: server_last,
        })
    }

    /// Takes a page of history read after `after` (oldest first) and returns what to deliver,
    /// in order: the page's messages not yet delivered, then held ones that follow on. An
    /// empty result means no progress (an empty page, or one that does not follow on).
    ///
    /// When the page answers from the last delivered seq and begins later than the next one,
    /// the server no longer has the messages between: they are passed over, as waiting for
    /// them would stall the group for good.
    pub fn fill(&mut self, after: u64, page: Vec<Message>) -> Vec<Message> {
        let from_last = after == self.last;
        let mut out = Vec::new();
        for message in page {
            if message.seq <= self.last {
                continue;
            }
            if message.seq > self.last + 1 && !(from_last && out.is_empty()) {
                // A hole inside the page: not history as a server keeps it.
                break;
            }
            self.last = message.seq;
            out.push(message);
        }
        self.release(&mut out);
        out
    }

    /// Takes the server's word that messages before `first_seq` were trimmed: they count as
    /// delivered (missing for good), so no repair waits for them. Returns held messages that
    /// then follow on.
    pub fn trimmed(&mut self, first_seq: u64) -> Vec<Message> {
        let mut out = Vec::new();
        if first_seq > self.last + 1 {
            self.last = first_seq - 1;
            self.release(&mut out);
        }
        out
    }

    /// Follows the server's last seq after a (re)subscription: a server that has fewer
    /// messages than were delivered (its store was replaced) numbers from there again, and
    /// what was held belongs to the old numbering.
    pub fn rejoined(&mut self, server_last: u64) {
        if server_last < self.last {
            self.last = server_last;
            self.held.clear();
        }
    }

    /// Moves held messages that now follow on into `out`; forgets those already passed.
    fn release(&mut self, out: &mut Vec<Message>) {
        while let Some(entry) = self.held.first_entry() {
            let seq = *entry.key();
            if seq <= self.last {
                entry.remove();
            } else if seq == self.last + 1 {
                self.last = seq;
                out.push(entry.remove());
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Message {
        Message {
            seq,
            ts: 1_000 + seq as i64,
            sender: "ann".into(),
            text: format!("m{seq}"),
        }
    }

    fn msgs(seqs: impl IntoIterator<Item = u64>) -> Vec<Message> {
        seqs.into_iter().map(msg).collect()
    }

    fn seqs(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    fn delivered(verdict: Verdict) -> Vec<u64> {
        match verdict {
            Verdict::Deliver(messages) => seqs(&messages),
            other => panic!("expected Deliver, got {other:?}"),
        }
    }

    #[test]
    fn messages_in_order_are_delivered_one_by_one() {
        let mut s = Sequencer::new(3);
        assert_eq!(delivered(s.accept(msg(4))), [4]);
        assert_eq!(delivered(s.accept(msg(5))), [5]);
        assert_eq!(s.last_seq(), 5);
        assert_eq!(s.gap_to(5), None);
    }

    #[test]
    fn a_duplicate_or_a_message_before_the_subscription_is_stale() {
        let mut s = Sequencer::new(3);
        assert_eq!(s.accept(msg(2)), Verdict::Stale);
        assert_eq!(s.accept(msg(3)), Verdict::Stale);
        assert_eq!(delivered(s.accept(msg(4))), [4]);
        assert_eq!(s.accept(msg(4)), Verdict::Stale);
        assert_eq!(s.last_seq(), 4);
    }

    #[test]
    fn a_gap_holds_the_message_until_history_fills_it() {
        let mut s = Sequencer::new(3);
        let gap = Gap { from: 4, to: 6 };
        assert_eq!(s.accept(msg(7)), Verdict::Gap(gap));
        assert_eq!((gap.after(), gap.limit(1000)), (3, 3));
        // A second push past the same gap is held too, and asks for the gap up to it.
        assert_eq!(s.accept(msg(8)), Verdict::Gap(Gap { from: 4, to: 7 }));
        assert_eq!(s.accept(msg(8)), Verdict::Stale, "held already");
        assert_eq!(s.last_seq(), 3, "nothing delivered past a gap");
        assert_eq!(seqs(&s.fill(3, msgs(4..=6))), [4, 5, 6, 7, 8]);
        assert_eq!(s.last_seq(), 8);
    }

    #[test]
    fn live_messages_already_repaired_from_history_are_stale() {
        let mut s = Sequencer::new(0);
        let gap = s.gap_to(5).expect("a gap up to the server's last seq");
        assert_eq!(seqs(&s.fill(gap.after(), msgs(1..=5))), [1, 2, 3, 4, 5]);
        for seq in 1..=5 {
            assert_eq!(s.accept(msg(seq)), Verdict::Stale);
        }
        assert_eq!(delivered(s.accept(msg(6))), [6]);
    }

    #[test]
    fn a_gap_at_the_end_shows_only_through_the_servers_last_seq() {
        // The final push was lost: no later message reveals it, a PONG's last seq does.
        let mut s = Sequencer::new(4);
        assert_eq!(s.gap_to(4), None);
        assert_eq!(s.gap_to(3), None, "a server behind us asks for nothing");
        let gap = s.gap_to(5).expect("gap");
        assert_eq!(gap, Gap { from: 5, to: 5 });
        assert_eq!(seqs(&s.fill(gap.after(), msgs([5]))), [5]);
        assert_eq!(s.gap_to(5), None);
    }

    #[test]
    fn a_batch_spanning_a_gap_delivers_before_it_and_holds_after_it() {
        // MSGS [3, 4, 7, 8] after 2: 3 and 4 go out, 7 and 8 wait for 5..6.
        let mut s = Sequencer::new(2);
        let mut out = Vec::new();
        let mut gaps = Vec::new();
        for message in msgs([3, 4, 7, 8]) {
            match s.accept(message) {
                Verdict::Deliver(m) => out.extend(seqs(&m)),
                Verdict::Gap(gap) => gaps.push(gap),
                Verdict::Stale => panic!("nothing stale here"),
            }
        }
        assert_eq!(out, [3, 4]);
        assert_eq!(gaps[0], Gap { from: 5, to: 6 });
        assert_eq!(seqs(&s.fill(4, msgs([5, 6]))), [5, 6, 7, 8]);
    }

    #[test]
    fn history_shorter_than_asked_fills_part_and_leaves_the_rest_of_the_gap() {
        // A page held to the reply's size (or to the page limit) stops short of the gap's end.
        let mut s = Sequencer::new(0);
        assert!(matches!(s.accept(msg(10)), Verdict::Gap(_)));
        let gap = s.gap_to(9).expect("gap");
        assert_eq!(gap.limit(4), 4, "a page asks at most the page limit");
        assert_eq!(seqs(&s.fill(gap.after(), msgs(1..=4))), [1, 2, 3, 4]);
        let rest = s.gap_to(9).expect("the rest of the gap");
        assert_eq!(rest, Gap { from: 5, to: 9 });
        assert_eq!(
            seqs(&s.fill(rest.after(), msgs(5..=9))),
            [5, 6, 7, 8, 9, 10]
        );
        assert!(
            s.fill(10, Vec::new()).is_empty(),
            "an empty page is no progress"
        );
    }

    #[test]
    fn history_that_begins_later_passes_over_what_the_server_no_longer_has() {
        let mut s = Sequencer::new(2);
        assert!(matches!(s.accept(msg(9)), Verdict::Gap(_)));
        // Asked after 2, the server's oldest is 6: 3..5 are gone for good.
        assert_eq!(seqs(&s.fill(2, msgs(6..=8))), [6, 7, 8, 9]);
        // A page asked from elsewhere, or with a hole inside, delivers only what follows on.
        let mut s = Sequencer::new(2);
        assert!(s.fill(1, msgs(5..=6)).is_empty());
        assert_eq!(seqs(&s.fill(2, msgs([3, 4, 6]))), [3, 4]);
    }

    #[test]
    fn trimmed_messages_count_as_delivered_and_release_what_follows() {
        let mut s = Sequencer::new(2);
        assert!(matches!(s.accept(msg(9)), Verdict::Gap(_)));
        // The server kept 9 on: 3..8 will never come, and 9 is delivered at once.
        assert_eq!(seqs(&s.trimmed(9)), [9]);
        assert_eq!(s.last_seq(), 9);
        assert_eq!(s.gap_to(9), None);
        // A trim at or before what was delivered changes nothing.
        assert!(s.trimmed(5).is_empty());
        assert_eq!(s.last_seq(), 9);
        // Trimmed past a held message: it is gone too, the gap moves to what is kept.
        assert!(matches!(s.accept(msg(12)), Verdict::Gap(_)));
        assert!(s.trimmed(14).is_empty());
        assert_eq!(s.gap_to(15), Some(Gap { from: 14, to: 15 }));
    }

    #[test]
    fn a_new_server_epoch_resubscribes_from_the_last_seq_delivered() {
        // The restarted server kept everything and has more: repair from where we are.
        let mut s = Sequencer::new(10);
        s.rejoined(12);
        assert_eq!(s.last_seq(), 10);
        assert_eq!(s.gap_to(12), Some(Gap { from: 11, to: 12 }));
        // A server whose store was replaced has fewer: follow it; held messages are of the
        // old numbering and go.
        assert!(matches!(s.accept(msg(14)), Verdict::Gap(_)));
        s.rejoined(4);
        assert_eq!(s.last_seq(), 4);
        assert_eq!(s.gap_to(4), None);
        assert_eq!(delivered(s.accept(msg(5))), [5]);
        assert_eq!(s.fill(5, msgs(6..=13)).len(), 8);
        assert_eq!(s.last_seq(), 13, "the old 14 was not kept");
    }

    #[test]
    fn a_huge_seq_jump_holds_a_bounded_number_of_messages() {
        let mut s = Sequencer::new(1);
        let gap = match s.accept(msg(u64::MAX)) {
            Verdict::Gap(gap) => gap,
            other => panic!("expected a gap, got {other:?}"),
        };
        assert_eq!(
            gap,
            Gap {
                from: 2,
                to: u64::MAX - 1
            }
        );
        assert_eq!(
            gap.limit(1000),
            1000,
            "one page at a time, however long the gap"
        );
        assert_eq!(
            Gap {
                from: 1,
                to: u64::MAX
            }
            .limit(u32::MAX),
            u32::MAX
        );
        for seq in 3..3 + 2 * MAX_HELD as u64 {
            assert!(matches!(s.accept(msg(seq)), Verdict::Gap(_)));
        }
        assert_eq!(s.held.len(), MAX_HELD);
        // What was not held comes from history with the rest.
        let page = s.fill(1, msgs(2..=2 + 2 * MAX_HELD as u64));
        assert_eq!(page.len(), 2 * MAX_HELD + 1);
        assert_eq!(s.last_seq(), 2 + 2 * MAX_HELD as u64);
    }
}
