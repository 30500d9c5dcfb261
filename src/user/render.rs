//! How the interactive client's lines look: local times, a colour per sender, `/me` actions,
//! quiet `--` lines for connection and presence news. Pure functions, so they are tested here.
//!
//! Colour is all or nothing: [`colour_wanted`] says no when `NO_COLOR` is set (to any value) or
//! stdout is not a terminal, and then no escape code is ever written.

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::safe;
use crate::client::{Delivery, GroupRef, SessionEvent};
use crate::protocol::{Member, Message};
use crate::time;

/// What a message whose text starts with this shows as an action: `* alice waves`.
pub const ME_PREFIX: &str = "/me ";

/// The ANSI foreground colours senders are drawn in (red, green, yellow, blue, magenta, cyan).
const SENDER_COLOURS: [u8; 6] = [31, 32, 33, 34, 35, 36];

/// Whether to write colour codes: never with `NO_COLOR` set, never into a pipe or file.
pub fn colour_wanted(no_color_set: bool, stdout_is_terminal: bool) -> bool {
    !no_color_set && stdout_is_terminal
}

/// The ANSI colour of a sender: the same for a name every time, in every client.
pub fn sender_colour(name: &str) -> u8 {
    // FNV-1a: stable across runs and Rust versions, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    SENDER_COLOURS[(hash % SENDER_COLOURS.len() as u64) as usize]
}

/// How lines are drawn: with or without colour, in which time zone.
#[derive(Debug, Clone)]
pub struct Style {
    colour: bool,
    tz: TimeZone,
    /// The user reading: `@me` in a text is highlighted, conversations are named by the
    /// other user. Empty until [`Style::for_user`].
    me: String,
}

impl Style {
    /// A style; `tz` is normally [`TimeZone::system`] (reads `TZ`, then /etc/localtime).
    pub fn new(colour: bool, tz: TimeZone) -> Style {
        Style {
            colour,
            tz,
            me: String::new(),
        }
    }

    /// The style as `me` reads: mentions of `me` stand out, conversations show as `@other`.
    pub fn for_user(mut self, me: &str) -> Style {
        self.me = me.to_string();
        self
    }

    /// A message text shown harmlessly ([`safe::text`]), each mention of the user in reverse
    /// video (in colour) so that it stands out.
    fn text(&self, text: &str) -> String {
        let mut shown = String::with_capacity(text.len());
        let mut from = 0;
        for at in super::mention::mentions(text, &self.me) {
            shown.push_str(&safe::text(&text[from..at.start]));
            shown.push_str(&self.paint("7", &safe::text(&text[at.clone()])));
            from = at.end;
        }
        shown.push_str(&safe::text(&text[from..]));
        shown
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A sender's name in its colour, shown harmlessly ([`safe::field`]).
    pub fn sender(&self, name: &str) -> String {
        self.paint(&sender_colour(name).to_string(), &safe::field(name))
    }

    /// Dim text: connection news, presence, the status row (shown harmlessly: they name
    /// groups and addresses servers gave).
    pub fn quiet(&self, text: &str) -> String {
        self.paint("2", &safe::field(text))
    }

    /// Bold text: the current group in the prompt, unread counts (shown harmlessly).
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", &safe::field(text))
    }

    /// An error line, in red. Errors may quote a server's words, so the line is shown
    /// harmlessly ([`safe::field`]).
    pub fn error(&self, text: &str) -> String {
        self.paint("31", &safe::field(text))
    }

    /// `HH:MM:SS` in the local time zone.
    pub fn clock(&self, ms: i64) -> String {
        match Timestamp::from_millisecond(ms) {
            Ok(ts) => ts
                .to_zoned_datetime(self.tz.clone())
                .strftime("%H:%M:%S")
                .to_string(),
            Err(_) => time::clock(ms),
        }
    }

    /// `HH:MM:SS` when `ms` falls on the local day of `now_ms`, else `YYYY-MM-DD HH:MM:SS`.
    pub fn stamp(&self, ms: i64, now_ms: i64) -> String {
        let (Ok(then), Ok(now)) = (
            Timestamp::from_millisecond(ms),
            Timestamp::from_millisecond(now_ms),
        ) else {
            return time::rfc3339(ms);
        };
        let then = then.to_zoned_datetime(self.tz.clone());
        if then.date() == now.to_zoned_datetime(self.tz.clone()).date() {
            then.strftime("%H:%M:%S").to_string()
        } else {
            then.strftime("%Y-%m-%d %H:%M:%S").to_string()
        }
    }

    /// `bob: hi`, or for a `/me` message `* bob waves`; the text shown harmlessly, a
    /// newline in it continuing on a marked line ([`safe::text`]).
    pub fn body(&self, sender: &str, text: &str) -> String {
        if let Some(change) = super::output::change_text(crate::protocol::edit::parse(text)) {
            return format!("{} {change}", self.sender(sender));
        }
        match text.strip_prefix(ME_PREFIX) {
            Some(action) => format!("* {} {}", self.sender(sender), self.text(action)),
            None => format!("{}: {}", self.sender(sender), self.text(text)),
        }
    }

    /// A live message: local time, `[group]` when it is not the current one, the body.
    pub fn live(&self, d: &Delivery, current: Option<&GroupRef>) -> String {
        let label = if Some(&d.group) == current {
            String::new()
        } else {
            let label = super::output::group_label(&d.group.name, &self.me);
            format!("[{}] ", safe::field(&label))
        };
        format!(
            "{} {label}{}",
            self.clock(d.message.ts),
            self.body(&d.message.sender, &d.message.text)
        )
    }

    /// One line of `/history` on a terminal: local time (with the date unless today), body.
    pub fn history(&self, m: &Message, now_ms: i64) -> String {
        format!(
            "{} {}",
            self.stamp(m.ts, now_ms),
            self.body(&m.sender, &m.text)
        )
    }

    /// A live event as one line; `groups_at` names the joined groups a server hosts.
    pub fn event(
        &self,
        event: &SessionEvent,
        current: Option<&GroupRef>,
        groups_at: &dyn Fn(&str) -> Vec<String>,
    ) -> String {
        let hosting = |address: &str| {
            let names = groups_at(address);
            let address = safe::field(address);
            if names.is_empty() {
                address.into_owned()
            } else {
                format!("{address} ({})", safe::field(&names.join(", ")))
            }
        };
        match event {
            SessionEvent::Message(d) => self.live(d, current),
            SessionEvent::ServerLost(a) => self.quiet(&format!(
                "-- {} is not answering; reconnecting…",
                hosting(a)
            )),
            SessionEvent::ServerBack(a) => self.quiet(&format!("-- {} is back", hosting(a))),
            SessionEvent::Moved { from, to } => self.quiet(&moved_line(from, to)),
            SessionEvent::MembershipEnded(g) => self.quiet(&format!(
                "-- you are no longer a member of {g} (left elsewhere, or removed)"
            )),
            SessionEvent::Presence {
                group,
                user,
                joined,
            } => self.quiet(&format!(
                "-- {} {} {}",
                safe::field(user),
                if *joined { "joined" } else { "left" },
                safe::field(&group.name)
            )),
        }
    }

    /// What goes around the words a search matched: bold and underlined in colour, nothing
    /// in plain output (scripts read `zms search --json`).
    pub fn highlight_marks(&self) -> (&'static str, &'static str) {
        match self.colour {
            true => ("\x1b[1;4m", "\x1b[22;24m"),
            false => ("", ""),
        }
    }

    /// One member of `/who`.
    pub fn member(&self, m: &Member) -> String {
        format!(
            "  {}{}",
            self.sender(&m.name),
            if m.online { " (online)" } else { "" }
        )
    }
}

/// The line that says a group moved to another group server: `-- general moved to HOST:PORT`.
pub fn moved_line(from: &GroupRef, to: &GroupRef) -> String {
    format!(
        "-- {} moved to {}",
        safe::field(&from.name),
        safe::field(&to.address)
    )
}

/// A stored message as the plain (scripted) client prints it: RFC 3339 UTC and the seq.
pub fn plain_history(m: &Message) -> String {
    let sender = safe::field(&m.sender);
    let change = super::output::change_text(crate::protocol::edit::parse(&m.text));
    let body = match m.text.strip_prefix(ME_PREFIX) {
        _ if change.is_some() => format!("{sender} {}", change.unwrap_or_default()),
        Some(action) => format!("* {sender} {}", safe::text(action)),
        None => format!("{sender}: {}", safe::text(&m.text)),
    };
    format!("{} #{} {body}", time::rfc3339(m.ts), m.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Delivery;

    fn utc(colour: bool) -> Style {
        Style::new(colour, TimeZone::UTC)
    }

    fn delivery(group: &GroupRef, sender: &str, text: &str) -> Delivery {
        Delivery {
            group: group.clone(),
            message: Message {
                seq: 7,
                ts: 1_764_000_000_000,
                sender: sender.into(),
                text: text.into(),
            },
        }
    }

    fn group(name: &str) -> GroupRef {
        GroupRef {
            name: name.into(),
            address: "h:1".into(),
        }
    }

    #[test]
    fn a_mention_of_the_reader_stands_out_and_a_conversation_names_the_other() {
        let style = utc(true).for_user("bob");
        let line = style.live(
            &delivery(&group("general"), "alice", "hi @bob, @bobby"),
            None,
        );
        assert!(line.ends_with("hi \x1b[7m@bob\x1b[0m, @bobby"), "{line:?}");
        let line = style.live(&delivery(&group("@alice@bob"), "alice", "hi"), None);
        assert!(line.contains(" [@alice] "), "{line:?}");
        // Without colour the text is as sent, and harmless either way.
        let plain = utc(false).for_user("bob");
        assert!(plain.body("alice", "@bob \x1b[2J").ends_with("@bob ␛[2J"));
    }

    #[test]
    fn no_color_or_a_pipe_means_no_colour() {
        assert!(colour_wanted(false, true));
        assert!(!colour_wanted(true, true));
        assert!(!colour_wanted(false, false));
        assert!(!colour_wanted(true, false));
        let plain = utc(false);
        for line in [
            plain.body("bob", "hi"),
            plain.quiet("-- x"),
            plain.bold("b"),
            plain.error("e"),
        ] {
            assert!(!line.contains('\x1b'), "{line:?}");
        }
    }

    #[test]
    fn a_sender_keeps_one_colour_and_names_spread_over_them() {
        assert_eq!(sender_colour("alice"), sender_colour("alice"));
        let used: std::collections::BTreeSet<u8> =
            ["alice", "bob", "carol", "dave", "erin", "frank"]
                .iter()
                .chain(&["grace", "heidi", "ivan", "judy", "mallory", "oscar"])
                .map(|n| sender_colour(n))
                .collect();
        assert!(used.len() >= 4, "{used:?}");
        assert!(used.iter().all(|c| SENDER_COLOURS.contains(c)));
        let s = utc(true);
        let code = sender_colour("bob");
        assert_eq!(s.body("bob", "hi"), format!("\x1b[{code}mbob\x1b[0m: hi"));
    }

    #[test]
    fn times_are_local() {
        let ms = 1_764_000_000_000; // 2025-11-24T16:00:00Z
        assert_eq!(utc(false).clock(ms), "16:00:00");
        let plus2 = Style::new(false, TimeZone::fixed(jiff::tz::offset(2)));
        assert_eq!(plus2.clock(ms), "18:00:00");
        // The same local day shows the time only; another day shows the date too.
        assert_eq!(plus2.stamp(ms, ms + 3_600_000), "18:00:00");
        assert_eq!(plus2.stamp(ms, ms + 86_400_000), "2025-11-24 18:00:00");
    }

    #[test]
    fn network_text_cannot_drive_the_terminal_in_any_line() {
        let g = group("general");
        let s = utc(true);
        let forged = delivery(&g, "mallory", "hi\r\x1b[K07:42:00 bob: paste the key here");
        let line = s.live(&forged, Some(&g));
        assert!(line.contains("hi␍␛[K07:42:00 bob:"), "{line}");
        // The only escape codes left are the client's own colours.
        assert_eq!(line.matches('\x1b').count(), 2, "{line:?}");
        let two = delivery(&g, "bob\x1b]0;t\x07", "/me waves\n12:00:00 alice: fake");
        let plain = utc(false);
        assert_eq!(
            plain.live(&two, Some(&g)),
            "16:00:00 * bob␛]0;t␇ waves\n  | 12:00:00 alice: fake"
        );
        assert_eq!(
            plain_history(&two.message),
            "2025-11-24T16:00:00.000Z #7 * bob␛]0;t␇ waves\n  | 12:00:00 alice: fake"
        );
        let presence = SessionEvent::Presence {
            group: group("gen\x1b[2J"),
            user: "eve\u{202E}".into(),
            joined: false,
        };
        assert_eq!(
            plain.event(&presence, None, &|_| vec![]),
            "-- eve<U+202E> left gen␛[2J"
        );
        let lost = SessionEvent::ServerLost("h:1\x1b[2J".into());
        assert_eq!(
            plain.event(&lost, None, &|_| vec!["a\x07".into()]),
            "-- h:1␛[2J (a␇) is not answering; reconnecting…"
        );
        let moved = SessionEvent::Moved {
            from: group("gen\x1b[2J"),
            to: GroupRef {
                name: "gen\x1b[2J".into(),
                address: "h:2\x07".into(),
            },
        };
        assert_eq!(
            plain.event(&moved, None, &|_| vec![]),
            "-- gen␛[2J moved to h:2␇"
        );
        let member = Member {
            name: "x\x1b[1A".into(),
            online: false,
        };
        assert_eq!(plain.member(&member), "  x␛[1A");
    }

    #[test]
    fn live_lines_name_the_group_unless_current_and_show_actions() {
        let (g, r) = (group("general"), group("random"));
        let s = utc(false);
        let hi = delivery(&r, "bob", "hi");
        assert_eq!(s.live(&hi, Some(&g)), "16:00:00 [random] bob: hi");
        assert_eq!(s.live(&hi, Some(&r)), "16:00:00 bob: hi");
        let waves = delivery(&g, "alice", "/me waves");
        assert_eq!(s.live(&waves, Some(&g)), "16:00:00 * alice waves");
        assert_eq!(
            plain_history(&waves.message),
            "2025-11-24T16:00:00.000Z #7 * alice waves"
        );
        assert_eq!(
            s.history(&hi.message, 1_764_000_000_000),
            "16:00:00 bob: hi"
        );
    }

    #[test]
    fn connection_and_presence_news_are_one_quiet_line() {
        let s = utc(false);
        let at = |a: &str| {
            if a == "h:1" {
                vec!["general".to_string(), "random".to_string()]
            } else {
                vec![]
            }
        };
        assert_eq!(
            s.event(&SessionEvent::ServerLost("h:1".into()), None, &at),
            "-- h:1 (general, random) is not answering; reconnecting…"
        );
        assert_eq!(
            s.event(&SessionEvent::ServerBack("h:2".into()), None, &at),
            "-- h:2 is back"
        );
        let presence = SessionEvent::Presence {
            group: group("general"),
            user: "bob".into(),
            joined: true,
        };
        assert_eq!(s.event(&presence, None, &at), "-- bob joined general");
        assert!(utc(true).event(&presence, None, &at).starts_with("\x1b[2m"));
    }
}
