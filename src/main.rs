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
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let log_file = cli.log_file().and_then(|path| match open_log(&path) {
        Ok(file) => Some((path, file)),
        Err(err) => {
            eprintln!(
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
        eprintln!("error: {err}");
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
