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
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal, plain text for a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(err) = cli.command.run() {
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
