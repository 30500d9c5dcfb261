//! Edits and deletions as stored messages (PROTOCOL.md, "EDIT and DELETE").
//!
//! An edit or a deletion is a new message of the group, with its own seq, whose text refers to
//! the original's seq: ordering, de-duplication and gap repair treat it as any other message.
//! Its text starts with [`MARK`] (U+0001), a control character no SEND may hold, so no member
//! can forge one, and reads as a plain line to a client that does not know edits
//! (`␁edit 12 new text`, `␁delete 12`). Clients fold them into the originals ([`fold`]).

use super::Message;

/// The first character of an edit's or a deletion's text.
pub const MARK: char = '\u{1}';

/// What a change message does to an earlier message of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Message `seq` now reads `text`.
    Edit { seq: u64, text: &'a str },
    /// Message `seq` is deleted.
    Delete { seq: u64 },
}

impl Change<'_> {
    /// The seq of the message changed.
    pub fn seq(&self) -> u64 {
        match *self {
            Change::Edit { seq, .. } | Change::Delete { seq } => seq,
        }
    }
}

/// The stored text of an edit of message `seq` to `text`.
pub fn edit_text(seq: u64, text: &str) -> String {
    format!("{MARK}edit {seq} {text}")
}

/// The stored text of the deletion of message `seq`.
pub fn delete_text(seq: u64) -> String {
    format!("{MARK}delete {seq}")
}

/// The change a message's text makes, if it is an edit or a deletion.
pub fn parse(text: &str) -> Option<Change<'_>> {
    let rest = text.strip_prefix(MARK)?;
    if let Some(rest) = rest.strip_prefix("edit ") {
        let (seq, text) = rest.split_once(' ')?;
        return Some(Change::Edit {
            seq: seq_of(seq)?,
            text,
        });
    }
    let seq = seq_of(rest.strip_prefix("delete ")?)?;
    Some(Change::Delete { seq })
}

/// A seq written in decimal: digits only, no sign, no leading zero.
fn seq_of(digits: &str) -> Option<u64> {
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !(digits.len() > 1 && digits.starts_with('0'));
    plain.then(|| digits.parse().ok()).flatten()
}

/// A message as a reader sees it once the later edits and deletions are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The original's seq, ts and sender, with its latest text (empty when deleted).
    pub message: Message,
    /// When it was last edited (the edit's ts), if it was.
    pub edited_ms: Option<i64>,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// Applies the edits and deletions among `messages` (in seq order) to the messages they refer
/// to, and leaves the change messages out. A change of a message not in `messages` is dropped;
/// a deletion is final (later edits of a deleted message are ignored).
pub fn fold(messages: Vec<Message>) -> Vec<Shown> {
    let mut shown: Vec<Shown> = Vec::with_capacity(messages.len());
    for message in messages {
        let change = parse(&message.text).map(|c| match c {
            Change::Edit { seq, text } => (seq, Some(text.to_string())),
            Change::Delete { seq } => (seq, None),
        });
        let Some((seq, text)) = change else {
            shown.push(Shown {
                message,
                edited_ms: None,
                deleted: false,
            });
            continue;
        };
        // Seqs rise along `shown`: the original is found by binary search.
        let Ok(at) = shown.binary_search_by_key(&seq, |s| s.message.seq) else {
            continue;
        };
        let original = &mut shown[at];
        if original.deleted {
            continue;
        }
        match text {
            Some(text) => {
                original.message.text = text;
                original.edited_ms = Some(message.ts);
            }
            None => {
                original.message.text.clear();
                original.deleted = true;
            }
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, text: &str) -> Message {
        Message {
            seq,
            ts: seq as i64 * 10,
            sender: "alice".into(),
            text: text.into(),
        }
    }

    #[test]
    fn change_texts_read_back_and_plain_texts_are_no_change() {
        assert_eq!(
            parse(&edit_text(12, "new words")),
            Some(Change::Edit {
                seq: 12,
                text: "new words"
            })
        );
        assert_eq!(parse(&delete_text(3)), Some(Change::Delete { seq: 3 }));
        for plain in [
            "edit 12 x",
            "\u{1}edit x y",
            "\u{1}edit 012 y",
            "\u{1}delete",
            "\u{1}delete -1",
            "\u{1}delete 3 more",
            "\u{1}other 3",
            "\u{1}edit 99999999999999999999999 y",
        ] {
            assert_eq!(parse(plain), None, "{plain:?}");
        }
    }

    #[test]
    fn fold_applies_edits_and_deletions_and_hides_them() {
        let shown = fold(vec![
            msg(1, "hello"),
            msg(2, "wrold"),
            msg(3, &edit_text(2, "world")),
            msg(4, "oops"),
            msg(5, &delete_text(4)),
            msg(6, &edit_text(4, "too late")),
            msg(7, &edit_text(99, "not here")),
            msg(8, &edit_text(2, "world!")),
        ]);
        let view: Vec<(u64, &str, Option<i64>, bool)> = shown
            .iter()
            .map(|s| {
                let m = &s.message;
                (m.seq, m.text.as_str(), s.edited_ms, s.deleted)
            })
            .collect();
        assert_eq!(
            view,
            [
                (1, "hello", None, false),
                (2, "world!", Some(80), false),
                (4, "", None, true)
            ]
        );
    }
}
