//! Mentions and notifications: whether a message names the user (`@name` as a word), where
//! in its text, and what the terminal is sent to get a person's attention (the bell, an OSC
//! 9 or 777 desktop notification). Pure, so every case is tested here.

use std::fmt;
use std::str::FromStr;

use super::safe;
use crate::client::GroupRef;
use crate::protocol::{self, Message};

/// How many recent messages of each group `/mentions` and `zms mentions` look through.
pub const SCAN_DEFAULT: u64 = 200;
/// How many mentions `/mentions` shows.
pub const SHOW_DEFAULT: usize = 20;

/// Characters that may stand right before an `@name` mention: it begins a word.
const BEFORE: &[char] = &['(', '[', '{', '"', '\'', '<'];
/// Characters that may follow a mention: it ends a word (`@bob, hi`, `thanks @bob!`).
const AFTER: &[char] = &[',', '.', ';', ':', '!', '?', ')', ']', '}', '"', '\'', '>'];

/// Where `@me` stands as a word in `text`: byte ranges of each mention, `@` included.
pub fn mentions(text: &str, me: &str) -> Vec<std::ops::Range<usize>> {
    if me.is_empty() {
        return Vec::new();
    }
    let needle = format!("@{me}");
    let mut found = Vec::new();
    for (at, _) in text.match_indices(&needle) {
        let end = at + needle.len();
        let starts_word = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || BEFORE.contains(&c));
        let ends_word = text[end..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || AFTER.contains(&c));
        if starts_word && ends_word {
            found.push(at..end);
        }
    }
    found
}

/// Whether a message asks for the user's attention: it mentions them, or it is someone
/// else's message in one of their conversations.
pub fn calls(group: &str, sender: &str, text: &str, me: &str) -> bool {
    sender != me
        && (protocol::conversation_users(group).is_some() || !mentions(text, me).is_empty())
}

/// The messages of `groups` (each with some of its recent messages) that mention `me`, not
/// counting `me`'s own, oldest first by server time; the last `most` of them.
pub fn recent(
    groups: Vec<(GroupRef, Vec<Message>)>,
    me: &str,
    most: usize,
) -> Vec<(GroupRef, Message)> {
    let mut found: Vec<(GroupRef, Message)> = groups
        .into_iter()
        .flat_map(|(group, messages)| messages.into_iter().map(move |m| (group.clone(), m)))
        .filter(|(_, m)| m.sender != me && !mentions(&m.text, me).is_empty())
        .collect();
    found.sort_by(|(g1, m1), (g2, m2)| (m1.ts, &g1.name, m1.seq).cmp(&(m2.ts, &g2.name, m2.seq)));
    let skip = found.len().saturating_sub(most);
    found.split_off(skip)
}

/// How the interactive client gets attention for a mention or a direct message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Notify {
    /// Nothing (`--quiet`).
    None,
    /// The terminal bell (BEL).
    Bell,
    /// A desktop notification: OSC 777 (`notify`, as rxvt, foot, WezTerm, Ghostty read it)
    /// and OSC 9 (iTerm2, Windows Terminal, kitty); terminals that know neither ignore both.
    Osc,
    /// The bell and the notification.
    #[default]
    Both,
}

impl FromStr for Notify {
    type Err = String;

    fn from_str(s: &str) -> Result<Notify, String> {
        match s {
            "none" => Ok(Notify::None),
            "bell" => Ok(Notify::Bell),
            "osc" => Ok(Notify::Osc),
            "both" => Ok(Notify::Both),
            other => Err(format!(
                "'{}' is not a way to notify (bell, osc, both, none)",
                other.escape_debug()
            )),
        }
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Notify::None => "none",
            Notify::Bell => "bell",
            Notify::Osc => "osc",
            Notify::Both => "both",
        })
    }
}

impl Notify {
    /// What to write to the terminal after the line that calls for attention: `title` is the
    /// notification's text, shown harmlessly (its control characters as symbols), so a peer
    /// cannot end the sequence early and write its own.
    pub fn sequence(self, title: &str) -> String {
        let title = safe::field(title).replace([';', '\u{7}'], " ");
        let bell = "\u{7}";
        let osc = format!("\u{1b}]777;notify;zms;{title}\u{1b}\\\u{1b}]9;{title}\u{1b}\\");
        match self {
            Notify::None => String::new(),
            Notify::Bell => bell.to_string(),
            Notify::Osc => osc,
            Notify::Both => format!("{bell}{osc}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mention_is_the_name_as_a_word() {
        assert_eq!(mentions("hi @bob", "bob"), vec![(3..7)]);
        assert_eq!(mentions("@bob, look (@bob) @bob!", "bob").len(), 3);
        for text in [
            "hi bob",
            "hi @bobby",
            "mail bob@example.org",
            "x@bob",
            "@bo b",
        ] {
            assert!(mentions(text, "bob").is_empty(), "{text}");
        }
        assert!(mentions("dear @łukasz.", "łukasz").len() == 1);
    }

    #[test]
    fn a_direct_message_or_a_mention_calls_but_not_ones_own() {
        assert!(calls("general", "alice", "@bob hi", "bob"));
        assert!(!calls("general", "alice", "hi all", "bob"));
        assert!(calls("@alice@bob", "alice", "hi", "bob"));
        assert!(!calls("@alice@bob", "bob", "hi @bob", "bob"));
    }

    #[test]
    fn recent_mentions_are_the_last_over_all_groups_in_time_order() {
        let m = |seq, ts, sender: &str, text: &str| Message {
            seq,
            ts,
            sender: sender.into(),
            text: text.into(),
        };
        let g = |name: &str| GroupRef {
            name: name.into(),
            address: "h:1".into(),
        };
        let found = recent(
            vec![
                (
                    g("general"),
                    vec![m(1, 10, "alice", "@bob a"), m(2, 30, "bob", "@bob me")],
                ),
                (
                    g("random"),
                    vec![m(7, 20, "carol", "b @bob"), m(8, 40, "carol", "none")],
                ),
            ],
            "bob",
            5,
        );
        let texts: Vec<&str> = found.iter().map(|(_, m)| m.text.as_str()).collect();
        assert_eq!(texts, ["@bob a", "b @bob"]);
        assert_eq!(
            recent(
                vec![(
                    g("general"),
                    vec![m(1, 1, "a", "@bob"), m(2, 2, "a", "@bob")]
                )],
                "bob",
                1
            )[0]
            .1
            .seq,
            2
        );
    }

    #[test]
    fn notifications_are_chosen_and_cannot_be_forged() {
        assert_eq!("bell".parse::<Notify>().unwrap().sequence("x"), "\u{7}");
        assert_eq!(Notify::None.sequence("x"), "");
        assert!("loud".parse::<Notify>().is_err());
        let osc = Notify::Osc.sequence("alice\u{1b}]0;pwned\u{7}");
        // One ESC to open and one to close each of the two sequences: none from the title.
        assert_eq!(osc.matches('\u{1b}').count(), 4, "{osc:?}");
        assert!(!osc.contains('\u{7}'));
        assert!(osc.starts_with("\u{1b}]777;notify;zms;alice"));
    }
}
