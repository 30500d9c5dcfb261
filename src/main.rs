//! The `zms` binary: parse the command line (and config file), set up logging, run, report
//! errors in one line with an exit status that says what kind of failure it was.

mod cli;
mod config;
mod packaging;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;
use zms::error::exit;

use cli::LogFormat;

fn main() {
    zms::program::find_name();
    let cli = match config::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        // Usage and help as clap prints them: help and version exit 0, mistakes 2.
        Err(config::Failure::Clap(err)) => err.exit(),
        Err(config::Failure::File(err)) => fail(&err, exit::USAGE),
    };
    let log = match init_log(&cli) {
        Ok(log) => log,
        Err(err) => fail(&err, exit::USAGE),
    };
    if let Err(err) = cli.command.run(log.as_deref()) {
        // Its reader gone (`zms list | head -1`), a command has nothing left to do: as `cat`.
        if zms::user::output::is_closed_pipe(&err) {
            std::process::exit(exit::OK);
        }
        // Errors may quote a server's words: shown harmlessly, never as terminal control.
        fail(&err.to_string(), err.exit_code());
    }
}

/// Ends the process with `error: LINE` on stderr and exit status `code`.
fn fail(line: &str, code: i32) -> ! {
    let line = zms::user::safe::field(line).into_owned();
    let _ = writeln!(std::io::stderr(), "error: {line}");
    std::process::exit(code);
}

/// Sets up logging as `--log`, `RUST_LOG` and `--log-format` ask; returns the log file, if
/// the log goes to one instead of stderr.
///
/// # Errors
/// `RUST_LOG` holding a filter that is not one (`--log` is checked as it is parsed).
fn init_log(cli: &cli::Cli) -> Result<Option<PathBuf>, String> {
    let filter = match (&cli.log, std::env::var("RUST_LOG")) {
        (Some(filter), _) => filter.clone(),
        (None, Ok(filter)) if !filter.trim().is_empty() => {
            cli::log_filter(&filter).map_err(|e| format!("invalid RUST_LOG '{filter}': {e}"))?
        }
        _ => cli.command.default_log().to_string(),
    };
    let filter = EnvFilter::try_new(&filter).map_err(|e| format!("invalid log filter: {e}"))?;
    let log_file = cli.log_file().and_then(|path| match open_log(&path) {
        Ok(file) => Some((path, file)),
        Err(err) => {
            let _ = writeln!(
                std::io::stderr(),
                "warning: logging to stderr: cannot open {}: {err}",
                path.display()
            );
            None
        }
    });
    // Colour for a person at a terminal, plain text for a log file or a pipe.
    let ansi = log_file.is_none() && std::io::stderr().is_terminal();
    let (log, writer) = match log_file {
        Some((path, file)) => (Some(path), BoxMakeWriter::new(std::sync::Mutex::new(file))),
        None => (None, BoxMakeWriter::new(std::io::stderr)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        // The event's fields at the top of each object, where a filter finds them.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(log)
}

/// The log file, appended to, its directory made if missing.
fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}
