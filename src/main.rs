//! The `zms` binary: parse the command line, set up logging, run, report errors in one line.

mod cli;

use std::io::IsTerminal;

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
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
