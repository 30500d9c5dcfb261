//! The `zms` binary: parse the command line, set up logging, run, report errors in one line.

mod cli;

use std::io::{IsTerminal, Write};

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = cli::Cli::parse();
    let filter = cli
        .log
        .clone()
        .unwrap_or_else(|| cli.command.default_log().to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
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
    let log = log_file.as_ref().map(|(path, _)| path.clone());
    match log_file {
        Some((_, file)) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colour for a person at a terminal, plain text for a log file or a pipe.
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
    if let Err(err) = cli.command.run(log.as_deref()) {
        // Its reader gone (`zms list | head -1`), a command has nothing left to do: as `cat`.
        if zms::user::output::is_closed_pipe(&err) {
            std::process::exit(0);
        }
        // Errors may quote a server's words: shown harmlessly, never as terminal control.
        let line = zms::user::safe::field(&err.to_string()).into_owned();
        let _ = writeln!(std::io::stderr(), "error: {line}");
        std::process::exit(1);
    }
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
