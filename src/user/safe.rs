//! Text that came over the network, made harmless for a terminal. Every line the client
//! prints that holds a name, an address, a message or a server's words goes through here, so
//! no peer can move the cursor, erase or forge a line, clear the screen or retitle the window:
//! control characters show as their Unicode symbols (ESC as `␛`, CR as `␍`), other
//! characters that steer the display (C1 controls, bidi overrides and isolates, line
//! separators; in names also zero-width and other invisible characters) as `<U+202E>`.
//!
//! The servers refuse such text (see `protocol::check_text`), but a client trusts no server:
//! messages stored before that rule, or another implementation, may still carry them.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::protocol;

/// What a line continuing a message after a newline starts with. No message line starts
/// this way (they start with a time), so text cannot pass for a message of its own.
pub const CONTINUATION: &str = "  | ";

/// A message text as [`text`] shows it, with the byte ranges `matches` (a search's hits, from
/// the network) wrapped in `open` and `close`, which the caller chooses: the markers are ours,
/// every character between them is escaped as in [`text`]. Ranges that are out of order, past
/// the end or not on character boundaries are ignored.
pub fn highlighted(message: &str, matches: &[(u32, u32)], open: &str, close: &str) -> String {
    let mut shown = String::with_capacity(message.len() + matches.len() * 8);
    let mut at = 0;
    for &(start, end) in matches {
        let (start, end) = (start as usize, end as usize);
        let valid = at <= start
            && start < end
            && end <= message.len()
            && message.is_char_boundary(start)
            && message.is_char_boundary(end);
        if !valid {
            continue;
        }
        shown.push_str(&text(&message[at..start]));
        shown.push_str(open);
        shown.push_str(&text(&message[start..end]));
        shown.push_str(close);
        at = end;
    }
    shown.push_str(&text(&message[at..]));
    shown
}

/// A one-line field: a name, an address, a server's reason. Everything that is not plainly
/// visible text (newline and tab too) is shown as a symbol.
pub fn field(text: &str) -> Cow<'_, str> {
    escape(text, |c| {
        c.is_control() || protocol::is_invisible(c) || steers_lines(c)
    })
}

/// A message text: as [`field`], except that a newline starts a [`CONTINUATION`] line, a tab
/// stays, and joiners and other invisible characters that scripts and emoji need are kept
/// (bidi controls are not: they would reorder what follows them).
pub fn text(text: &str) -> Cow<'_, str> {
    let escaped = escape(text, |c| {
        (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c) || steers_lines(c)
    });
    match escaped.contains('\n') {
        true => Cow::Owned(escaped.replace('\n', &format!("\n{CONTINUATION}"))),
        false => escaped,
    }
}

/// Bidi embeddings, overrides and isolates: they reorder the rest of the line.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Unicode's line and paragraph separators, which some terminals break lines at.
fn steers_lines(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` with every character `unsafe_char` picks shown as a symbol.
fn escape(text: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => shown.push(c),
            // C0 controls have symbols of their own: ␀ … ␟.
            '\0'..='\x1f' => shown.push(char::from_u32(0x2400 + u32::from(c)).unwrap_or('?')),
            '\x7f' => shown.push('␡'),
            c => {
                let _ = write!(shown, "<U+{:04X}>", u32::from(c));
            }
        }
    }
    Cow::Owned(shown)
}

/// A JSON text with every character a terminal could act on written as a `\uXXXX` escape:
/// the same JSON value, safe to print. serde_json already escapes C0 controls; this adds
/// DEL, C1 controls, bidi controls, separators and invisible characters.
pub fn json(encoded: &str) -> Cow<'_, str> {
    let risky = |c: char| c.is_control() || protocol::is_invisible(c) || steers_lines(c);
    if !encoded.chars().any(risky) {
        return Cow::Borrowed(encoded);
    }
    let mut out = String::with_capacity(encoded.len() + 12);
    for c in encoded.chars() {
        if risky(c) {
            // Outside JSON strings there is only ASCII punctuation, so `c` is inside one.
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_show_as_symbols_and_cannot_forge_a_line() {
        let forged = "hi\r\x1b[K07:42:00 bob: the deploy key is in #team, paste it here";
        assert_eq!(
            text(forged),
            "hi␍␛[K07:42:00 bob: the deploy key is in #team, paste it here"
        );
        assert_eq!(text("\x1b[2J\x1b]0;owned\x07"), "␛[2J␛]0;owned␇");
        assert_eq!(text("csi \u{9b}2J del \x7f"), "csi <U+009B>2J del ␡");
        assert_eq!(text("abc\u{202E}cba"), "abc<U+202E>cba");
        assert_eq!(
            text("plain, ünïcödé and 👩\u{200D}💻"),
            "plain, ünïcödé and 👩\u{200D}💻"
        );
        assert!(matches!(text("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_newline_continues_the_message_on_a_marked_line() {
        assert_eq!(
            text("one\n07:42:00 bob: two\tcolumns"),
            "one\n  | 07:42:00 bob: two\tcolumns"
        );
    }

    #[test]
    fn fields_show_invisible_characters_too() {
        assert_eq!(field("bo\u{200B}b"), "bo<U+200B>b");
        assert_eq!(field("a\nb\tc"), "a␊b␉c");
        assert_eq!(field("alice"), "alice");
    }

    #[test]
    fn json_stays_the_same_value() {
        let value = serde_json::json!({"text": "a\u{9b}b\u{202E}c\u{E0041}\x1b", "n": 1});
        let encoded = value.to_string();
        let safe = json(&encoded);
        assert!(
            safe.is_ascii() || !safe.chars().any(char::is_control),
            "{safe}"
        );
        assert!(!safe.contains('\u{202E}') && !safe.contains('\u{9b}'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&safe).unwrap(),
            value
        );
    }

    #[test]
    fn highlights_are_our_markers_around_escaped_text() {
        let message = "say \x1b[2Jlunch now";
        let shown = highlighted(message, &[(4, 8), (9, 14), (99, 100), (2, 3)], "[", "]");
        assert_eq!(shown, "say [␛[2J]l[unch ]now");
        // A range inside a character is ignored.
        assert_eq!(highlighted("é", &[(1, 2)], "[", "]"), "é");
    }
}
