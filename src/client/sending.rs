//! Sending from a session: one message, or many in as few SENDS as hold them; client ids
//! that make a retried send store once; waiting out a server's rate limit. Which server and
//! connection is the session's.

use std::time::{Duration, Instant};

use super::session::{GroupRef, Session};
use super::unexpected;
use crate::protocol::codec;
use crate::protocol::{self, ErrorCode, Outgoing, Reply, Request};
use crate::{errinput, Error, Result};

/// How long a send waits out a server's rate limit before reporting LIMITED.
const RATE_LIMIT_PATIENCE: Duration = Duration::from_secs(10);

/// Refuses a text no server takes, before anything is sent.
fn check_text(text: &str) -> Result<()> {
    if text.len() > protocol::MAX_TEXT {
        return Err(errinput!(
            "message is {} bytes; the limit is {}",
            text.len(),
            protocol::MAX_TEXT
        ));
    }
    protocol::check_text(text).map_err(Error::Input)
}

/// How many of `messages` (at least one) the next SENDS of `user` to `group` holds: up to
/// `MAX_BATCH` of them, within `MAX_BATCH_FRAME`.
fn batch_count(group: &str, user: &str, messages: &[Outgoing]) -> usize {
    let mut len = codec::batch_len(group, user, &[]);
    let mut count = 0;
    for m in messages.iter().take(protocol::MAX_BATCH) {
        let more = codec::outgoing_len(&m.client_id, &m.text);
        if count > 0 && len + more > protocol::MAX_BATCH_FRAME {
            break;
        }
        len += more;
        count += 1;
    }
    count
}

impl Session {
    /// Sends a message; returns its seq and server timestamp once it is stored. A retried
    /// send carries the same client id, so it is stored once whatever happened to the first.
    ///
    /// # Errors
    /// NOT_MEMBER, TOO_LARGE, UNAVAILABLE (storage), or the server's silence.
    pub fn send(&mut self, group: &GroupRef, text: &str) -> Result<(u64, i64)> {
        let client_id = self.next_client_id();
        self.send_with_id(group, &client_id, text)
    }

    /// A fresh client message id, unique to this session.
    pub fn next_client_id(&mut self) -> String {
        self.sent += 1;
        format!("{}-{:06}", self.client_prefix, self.sent)
    }

    /// Sends with a caller-kept client id. Calling again with the same id after any failure
    /// (a timeout, a restart of the server) stores the message at most once and answers with
    /// its original seq: this is how a caller makes a send exactly-once across its own retries.
    ///
    /// # Errors
    /// As [`Session::send`].
    pub fn send_with_id(
        &mut self,
        group: &GroupRef,
        client_id: &str,
        text: &str,
    ) -> Result<(u64, i64)> {
        check_text(text)?;
        let request = Request::Send {
            group: group.name.clone(),
            user: self.name.clone(),
            client_id: client_id.to_string(),
            text: text.to_string(),
        };
        // Over the server's rate limit: wait and try again (the same id, so at most once),
        // slowing this sender down rather than failing it, for a bounded time.
        let mut pause = Duration::from_millis(50);
        let give_up = Instant::now() + RATE_LIMIT_PATIENCE;
        loop {
            match self.group_request(group, &request) {
                Ok(Reply::Ack { seq, ts, .. }) => return Ok((seq, ts)),
                Ok(other) => return Err(unexpected(other, "ACK")),
                Err(Error::Rejected {
                    code: ErrorCode::Limited,
                    ..
                }) if Instant::now() + pause < give_up => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends `texts` to `group`, in order, in as few SENDS requests as hold them; returns each
    /// message's seq and timestamp, in the same order, once all are stored. Each message has
    /// a client id of its own, so retries store none twice. A server that does not know SENDS
    /// (ERROR 400), or that holds the user to a rate, gets them one SEND at a time instead.
    ///
    /// # Errors
    /// As [`Session::send`]; a text over `MAX_TEXT` fails the call before anything is sent.
    /// Messages before the batch that failed are stored.
    pub fn send_many(&mut self, group: &GroupRef, texts: &[String]) -> Result<Vec<(u64, i64)>> {
        let messages: Vec<Outgoing> = texts
            .iter()
            .map(|text| Outgoing {
                client_id: self.next_client_id(),
                text: text.clone(),
            })
            .collect();
        self.send_outgoing(group, &messages)
    }

    /// Sends messages under caller-kept client ids, as [`Session::send_many`] does: sending
    /// the same ones again after any failure stores none twice.
    ///
    /// # Errors
    /// As [`Session::send_many`].
    pub fn send_outgoing(
        &mut self,
        group: &GroupRef,
        messages: &[Outgoing],
    ) -> Result<Vec<(u64, i64)>> {
        messages.iter().try_for_each(|m| check_text(&m.text))?;
        let mut stored = Vec::with_capacity(messages.len());
        let mut rest = messages;
        while !rest.is_empty() {
            let count = batch_count(&group.name, &self.name, rest);
            let (batch, after) = rest.split_at(count);
            rest = after;
            let request = Request::SendBatch {
                group: group.name.clone(),
                user: self.name.clone(),
                messages: batch.to_vec(),
            };
            match self.group_request(group, &request) {
                Ok(Reply::Acks(acks)) if acks.len() == count => {
                    stored.extend(acks.iter().map(|a| (a.seq, a.ts)));
                }
                Ok(other) => return Err(unexpected(other, "ACKS")),
                Err(Error::Rejected {
                    code: ErrorCode::BadRequest | ErrorCode::Limited,
                    ..
                }) => {
                    for m in batch {
                        stored.push(self.send_with_id(group, &m.client_id, &m.text)?);
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(count: usize, text_len: usize) -> Vec<Outgoing> {
        (0..count)
            .map(|i| Outgoing {
                client_id: format!("id-{i:06}"),
                text: "x".repeat(text_len),
            })
            .collect()
    }

    #[test]
    fn a_batch_holds_as_many_as_the_count_and_the_frame_allow_and_never_none() {
        assert_eq!(batch_count("g", "ann", &outgoing(3, 10)), 3);
        let many = outgoing(protocol::MAX_BATCH + 5, 10);
        assert_eq!(batch_count("g", "ann", &many), protocol::MAX_BATCH);
        // Texts at the limit: one a frame, and the first always goes, whatever its size.
        let big = outgoing(3, protocol::MAX_TEXT);
        assert_eq!(batch_count("g", "ann", &big), 1);
        let half = outgoing(5, protocol::MAX_TEXT / 2);
        let count = batch_count("g", "ann", &half);
        assert!((1..5).contains(&count), "{count}");
        let len: usize = codec::batch_len("g", "ann", &[])
            + half[..count]
                .iter()
                .map(|m| codec::outgoing_len(&m.client_id, &m.text))
                .sum::<usize>();
        assert!(len <= protocol::MAX_BATCH_FRAME);
    }
}
