//! The line editor of `zms user` on a terminal: rustyline with Emacs keys, input history kept
//! across runs in the config directory, Tab completion, and a status row under the input line.
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
//! stays in the scrollback.

use std::borrow::Cow;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustyline::completion::Completer;
use rustyline::config::{ColorMode, CompletionType, Config, EditMode};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::{Hint, Hinter};
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor};

use super::complete;
use super::render::Style;
use super::view::View;
use crate::{errinput, Result};

/// The editor type of the interactive client.
pub type LineEditor = Editor<ZmsHelper, FileHistory>;

/// How many input lines the history file keeps.
const HISTORY_SIZE: usize = 1000;

/// Where input history lives: `$XDG_CONFIG_HOME/zms/history`, else `~/.config/zms/history`.
/// `None` when neither variable gives an absolute directory.
pub fn history_path(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let config = absolute(xdg_config_home).or_else(|| absolute(home).map(|h| h.join(".config")))?;
    Some(config.join("zms").join("history"))
}

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
    editor.set_helper(Some(ZmsHelper {
        view,
        style,
        status: AtomicBool::new(false),
        columns: AtomicUsize::new(80),
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
}

impl ZmsHelper {
    /// Shows the status row (or not) on the next line read, `columns` wide.
    pub fn set_status(&self, on: bool, columns: usize) {
        self.status.store(on, Ordering::Relaxed);
        self.columns.store(columns.max(2), Ordering::Relaxed);
    }

    fn status_row(&self) -> String {
        let status = self.view.lock().map(|v| v.status()).unwrap_or_default();
        status_row(&status, self.columns.load(Ordering::Relaxed))
    }
}

/// The status row as drawn after the input: a newline, then the status cut to fit in
/// `columns` so it never wraps (a wrapped row would throw rustyline's row count off).
pub fn status_row(status: &str, columns: usize) -> String {
    // A leading space, and the last column left free.
    let fit: String = status.chars().take(columns.saturating_sub(2)).collect();
    match fit.trim_end() {
        "" => "\n".to_string(),
        fit => format!("\n {fit}"),
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

    fn hint(&self, _line: &str, _pos: usize, _ctx: &Context<'_>) -> Option<StatusHint> {
        // Always a hint while the status row is on, even an empty one: the row must exist for
        // highlight_hint to fill it in when a live message redraws the line.
        self.status
            .load(Ordering::Relaxed)
            .then(|| StatusHint(self.status_row()))
    }
}

impl Highlighter for ZmsHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if !self.status.load(Ordering::Relaxed) {
            return Cow::Borrowed(hint);
        }
        // Drawn fresh: the hint was computed at the last keystroke, the view may be newer.
        // Same number of rows (one newline), so rustyline's layout still holds.
        let row = self.status_row();
        match row.strip_prefix('\n') {
            Some(text) if !text.is_empty() => Cow::Owned(format!("\n{}", self.style.quiet(text))),
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
    fn history_lives_in_the_config_directory() {
        let path = |x: Option<&str>, h: Option<&str>| {
            history_path(x.map(OsString::from), h.map(OsString::from))
        };
        assert_eq!(
            path(Some("/x/cfg"), Some("/home/a")),
            Some(PathBuf::from("/x/cfg/zms/history"))
        );
        assert_eq!(
            path(None, Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/zms/history"))
        );
        // An empty or relative XDG_CONFIG_HOME is ignored, as the spec says.
        assert_eq!(
            path(Some(""), Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/zms/history"))
        );
        assert_eq!(
            path(Some("rel"), Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/zms/history"))
        );
        assert_eq!(path(None, None), None);
    }

    #[test]
    fn the_status_row_is_one_row_that_never_wraps() {
        assert_eq!(status_row("", 80), "\n");
        assert_eq!(status_row("random(3)", 80), "\n random(3)");
        let row = status_row("random(3) · reconnecting… 127.0.0.1:5556", 12);
        assert_eq!(row, "\n random(3)");
        assert!(row.chars().count() - 1 < 12);
        assert_eq!(status_row("x", 2), "\n");
    }
}
