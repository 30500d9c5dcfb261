//! The line editor of `zms user` on a terminal: rustyline with Emacs keys, input history kept
//! across runs in the state directory, Tab completion, and a status row under the input line.
//!
//! Why rustyline rather than reedline: the project already uses it; its `ExternalPrinter`
//! prints live messages above the line being edited and redraws that line intact (rustyline 19;
//! 17 lost typed multi-byte characters doing so); and it is a small dependency.
//!
//! The status row (unread counts, "reconnecting…", queued messages) is drawn as the hint after
//! the input, on its own row. rustyline measures the prompt once per `readline`, so the prompt
//! cannot change width while a line is edited; the hint, however, is drawn afresh (through
//! [`Highlighter::highlight_hint`]) every time the line is redrawn, which includes every live
//! message printed above it. rustyline erases the hint when a line is entered, so the row never
//! stays in the scrollback. Under a line longer than [`STATUS_ROW_UNTIL`] (a paste) there is
//! no status row, so each key typed at its end is drawn alone.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustyline::completion::Completer;
use rustyline::config::{ColorMode, CompletionType, Config, EditMode};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::{Hint, Hinter};
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Cmd, Context, Editor, KeyEvent, Movement};

use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

use super::complete;
use super::render::Style;
use super::view::View;
use crate::{errinput, Result};

/// The editor type of the interactive client.
pub type LineEditor = Editor<ZmsHelper, FileHistory>;

/// The status row shows under input lines up to this many bytes (a few rows), not longer.
pub const STATUS_ROW_UNTIL: usize = 1000;

/// How many input lines the history file keeps.
const HISTORY_SIZE: usize = 1000;

/// The editor: Emacs keys, history without duplicates or space-led lines, and Tab completion
/// that cycles through the choices, as irssi does. (rustyline's bash-like list prints the
/// choices below the line, where the status row is, and the redraw then lands a row off.)
///
/// # Errors
/// When the terminal cannot be set up.
pub fn new(view: Arc<Mutex<View>>, style: Style) -> Result<LineEditor> {
    let config = Config::builder()
        .max_history_size(HISTORY_SIZE)
        .and_then(|b| b.history_ignore_dups(true))
        .map_err(|e| errinput!("terminal: {e}"))?
        .history_ignore_space(true)
        .auto_add_history(false)
        .edit_mode(EditMode::Emacs)
        .completion_type(CompletionType::Circular)
        // The helper draws the status row; it decides about colour itself (NO_COLOR).
        .color_mode(ColorMode::Forced)
        .build();
    let mut editor = LineEditor::with_config(config).map_err(|e| errinput!("terminal: {e}"))?;
    // Ctrl-C clears the line in place (Ctrl-Y brings it back), as irssi does. rustyline's own
    // Ctrl-C ends the read without erasing the status row, which would stay in the scrollback.
    editor.bind_sequence(KeyEvent::ctrl('C'), Cmd::Kill(Movement::WholeBuffer));
    editor.set_helper(Some(ZmsHelper {
        view,
        style,
        status: AtomicBool::new(false),
        columns: AtomicUsize::new(80),
        prompt_width: AtomicUsize::new(0),
    }));
    Ok(editor)
}

/// Completion from the [`View`], and the status row.
pub struct ZmsHelper {
    view: Arc<Mutex<View>>,
    style: Style,
    /// Whether the status row shows: on the main prompt, not on the menu's questions.
    status: AtomicBool,
    /// Terminal width when the line was started: the status row is cut to fit one row.
    columns: AtomicUsize,
    /// Width of the prompt of the line being read.
    prompt_width: AtomicUsize,
}

impl ZmsHelper {
    /// Shows the status row (or not) on the next line read, with `prompt`, `columns` wide.
    pub fn set_status(&self, on: bool, prompt: &str, columns: usize) {
        self.status.store(on, Ordering::Relaxed);
        self.columns.store(columns.max(2), Ordering::Relaxed);
        self.prompt_width.store(prompt.width(), Ordering::Relaxed);
    }

    fn status_text(&self) -> String {
        self.view.lock().map(|v| v.status()).unwrap_or_default()
    }
}

/// Whether the prompt and `line` end exactly at the right edge. The terminal then holds the
/// cursor on that row until the next character, while rustyline counts it on the next row
/// already: a hint starting with a newline would land a row lower in rustyline's reckoning
/// than on the screen. Widths as rustyline measures them (per character here, per grapheme
/// there: the same but for emoji sequences).
pub fn fills_last_row(prompt_width: usize, line: &str, columns: usize) -> bool {
    let prompt = std::iter::repeat_n(Some(1), prompt_width);
    let typed = line
        .chars()
        .map(|c| (c != '\n').then(|| c.width().unwrap_or(0)));
    let mut col = 0;
    for width in prompt.chain(typed) {
        match width {
            None => col = 0,
            Some(w) => {
                col += w;
                if col > columns {
                    col = w;
                }
            }
        }
    }
    col == columns
}

/// The status row as drawn after the input, cut to fit in `columns` so it never wraps (a
/// wrapped row would throw rustyline's row count off): on a row of its own, so after a
/// newline, unless the input fills its last row exactly and the terminal wraps by itself.
pub fn status_row(status: &str, columns: usize, after_full_row: bool) -> String {
    // A leading space, and the last column left free.
    let fit: String = status.chars().take(columns.saturating_sub(2)).collect();
    match (fit.trim_end(), after_full_row) {
        ("", false) => "\n".to_string(),
        ("", true) => " ".to_string(),
        (fit, false) => format!("\n {fit}"),
        (fit, true) => format!(" {fit}"),
    }
}

/// The status row as a rustyline hint: displayed, never inserted by the right arrow.
pub struct StatusHint(String);

impl Hint for StatusHint {
    fn display(&self) -> &str {
        &self.0
    }

    fn completion(&self) -> Option<&str> {
        None
    }
}

impl Hinter for ZmsHelper {
    type Hint = StatusHint;

    fn hint(&self, line: &str, _pos: usize, _ctx: &Context<'_>) -> Option<StatusHint> {
        // Always a hint while the status row is on, even an empty one: the row must exist for
        // highlight_hint to fill it in when a live message redraws the line.
        // Nor on a long line: with a hint, rustyline redraws the whole line for every key,
        // and a paste the terminal does not bracket (thousands of keys) would take minutes.
        // Without one, a key at the end of the line is one character written.
        if !self.status.load(Ordering::Relaxed) || line.len() > STATUS_ROW_UNTIL {
            return None;
        }
        let columns = self.columns.load(Ordering::Relaxed);
        let full = fills_last_row(self.prompt_width.load(Ordering::Relaxed), line, columns);
        Some(StatusHint(status_row(&self.status_text(), columns, full)))
    }
}

impl Highlighter for ZmsHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if !self.status.load(Ordering::Relaxed) {
            return Cow::Borrowed(hint);
        }
        // Drawn fresh: the hint was computed at the last keystroke, the view may be newer.
        // Laid out as the hint was (a newline or not), so rustyline's row count still holds.
        let full = !hint.starts_with('\n');
        let row = status_row(
            &self.status_text(),
            self.columns.load(Ordering::Relaxed),
            full,
        );
        let (lead, text) = match row.strip_prefix('\n') {
            Some(text) => ("\n", text),
            None => ("", row.as_str()),
        };
        match text.strip_prefix(' ') {
            Some(status) if !status.is_empty() => {
                Cow::Owned(format!("{lead} {}", self.style.quiet(status)))
            }
            _ => Cow::Owned(row),
        }
    }

    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        false
    }
}

impl Completer for ZmsHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let known = self.view.lock().map(|v| v.known()).unwrap_or_default();
        Ok(complete::candidates(&line[..pos], &known))
    }
}

impl Validator for ZmsHelper {}

impl rustyline::Helper for ZmsHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_row_is_one_row_that_never_wraps() {
        assert_eq!(status_row("", 80, false), "\n");
        assert_eq!(status_row("random(3)", 80, false), "\n random(3)");
        let row = status_row("random(3) · reconnecting… 127.0.0.1:5556", 12, false);
        assert_eq!(row, "\n random(3)");
        assert!(row.chars().count() - 1 < 12);
        assert_eq!(status_row("x", 2, false), "\n");
        // After a full row the terminal wraps by itself: no newline of its own.
        assert_eq!(status_row("random(3)", 80, true), " random(3)");
        assert_eq!(status_row("", 80, true), " ");
    }

    #[test]
    fn a_row_filled_exactly_is_found_as_rustyline_counts_it() {
        // "[general]> " is 11 columns.
        assert!(!fills_last_row(11, "hello", 20));
        assert!(fills_last_row(11, "123456789", 20));
        assert!(fills_last_row(11, &"x".repeat(29), 20));
        assert!(!fills_last_row(11, &"x".repeat(30), 20));
        assert!(fills_last_row(20, "", 20));
        assert!(!fills_last_row(0, "", 20));
        // Wide characters take two columns; one that does not fit wraps early.
        assert!(fills_last_row(10, "日本語日本", 20));
        assert!(!fills_last_row(11, "日本語日本", 20));
        // 4 fit after the prompt (to column 19), the 5th wraps: 14 end the second row.
        assert!(fills_last_row(11, &"日".repeat(14), 20));
        assert!(!fills_last_row(11, &"日".repeat(13), 20));
        // A newline in the input starts a row.
        assert!(!fills_last_row(11, "123456789\n", 20));
    }
}
