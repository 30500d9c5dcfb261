//! `zms completions SHELL` and `zms man`: made from the clap definitions the command line is
//! parsed with, so they never disagree with it. Writing them where a system keeps them is
//! left to the packager (README, "Install").

use std::io::Write;

use zms::Result;

/// The name the generated files give the command: the installed binary's.
const NAME: &str = "zms";

/// Writes the completion script for `shell` to stdout.
///
/// # Errors
/// A failure to write stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::config::command(), NAME, &mut script);
    write_out(&script)
}

/// Writes the man page (roff) to stdout.
///
/// # Errors
/// A failure to write stdout.
pub fn man() -> Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(crate::config::command().name(NAME)).render(&mut page)?;
    write_out(&page)
}

fn write_out(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}
