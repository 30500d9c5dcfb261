//! The servers' options from a TOML file (`--config FILE`), and a `ZMS_*` variable for every
//! server option. Nothing is listed twice: the file's keys (the long flags, a section per
//! server), the variables' names and `zms config example` all come from the clap definitions
//! in `cli.rs`, so a new flag is a config key and a variable with no code here. Precedence: a
//! flag, then its variable, then the file, then the built-in default. The values go through
//! clap like the flags', so a bad one fails as a bad flag would, naming the key and the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// The subcommands whose options a config file holds, each in the section of its name.
pub const SERVER_SECTIONS: [&str; 2] = ["message-server", "group-server"];

/// The `[log]` section, for every command: its keys and the global flags they stand for.
const LOG_KEYS: [(&str, &str); 2] = [("filter", "log"), ("format", "log-format")];

/// Why the command line could not be read.
#[derive(Debug)]
pub enum Failure {
    /// The command line itself (clap prints it, with usage, and exits 2; or it asked for help).
    Clap(clap::Error),
    /// The config file: unreadable, not TOML, an unknown key or a bad value; one line.
    File(String),
}

impl From<clap::Error> for Failure {
    fn from(err: clap::Error) -> Self {
        Failure::Clap(err)
    }
}

/// The command line definition: `Cli`'s, with a `ZMS_*` variable on every server option that
/// has none (`--max-groups`: `ZMS_MAX_GROUPS`).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for section in SERVER_SECTIONS {
        cmd = cmd.mut_subcommand(section, |sub| {
            sub.mut_args(|arg| {
                let name = arg.get_long().map(env_name);
                match (arg.get_env(), name) {
                    // clap keeps names as &'static str: a few short strings, once a run.
                    (None, Some(name)) => arg.env(&*Box::leak(name.into_boxed_str())),
                    _ => arg,
                }
            })
        });
    }
    cmd
}

/// The variable of flag `--long`: `ZMS_` and the name in capitals, `-` as `_`.
fn env_name(long: &str) -> String {
    format!("ZMS_{}", long.to_uppercase().replace('-', "_"))
}

/// The options of a server subcommand that a config file may set: every long flag.
fn server_args(sub: &clap::Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments()
        .filter(|a| !a.is_global_set() && !matches!(a.get_long(), None | Some("help" | "version")))
}

/// Parses the command line `args` (program name first), adding the values of the config file
/// (`--config` or `ZMS_CONFIG`) for the options neither a flag nor a variable gave.
///
/// # Errors
/// [`Failure::Clap`] for a bad command line, [`Failure::File`] for a config file that cannot
/// be read or holds an unknown section or key or a bad value.
pub fn parse(args: Vec<OsString>) -> Result<Cli, Failure> {
    let cmd = command();
    let matches = cmd.clone().try_get_matches_from(&args)?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let in_file = |err: String| Failure::File(format!("config {}: {err}", path.display()));
    let table = read(&path).map_err(in_file)?;
    let (global, own) = from_file(&cmd, &matches, &table).map_err(in_file)?;
    // Global flags go first, where they are always read; a server's own at the end, after
    // its subcommand (servers take no positional arguments that they could be taken for).
    let mut with_file = vec![args[0].clone()];
    with_file.extend(global);
    with_file.extend(args.into_iter().skip(1));
    with_file.extend(own);
    let matches = cmd.try_get_matches_from(&with_file)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The file as a TOML table.
fn read(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.parse::<toml::Table>()
        .map_err(|e| e.to_string().trim_end().replace('\n', " "))
}

/// The flags the file adds: `(global, own)`, the `[log]` ones and the running server's. Every
/// section is checked, the running server's or not, so a mistake shows before it matters.
fn from_file(
    cmd: &clap::Command,
    matches: &ArgMatches,
    table: &toml::Table,
) -> Result<(Vec<OsString>, Vec<OsString>), String> {
    let (mut global, mut own) = (Vec::new(), Vec::new());
    for (section, keys) in table {
        let keys = match keys {
            toml::Value::Table(keys) => keys,
            _ => return Err(format!("'{section}' is not a section (write [{section}])")),
        };
        if section == "log" {
            for (key, value) in keys {
                let Some((_, flag)) = LOG_KEYS.iter().find(|(k, _)| k == key) else {
                    let known: Vec<_> = LOG_KEYS.iter().map(|(k, _)| *k).collect();
                    return Err(unknown_key(section, key, &known));
                };
                let arg = cmd
                    .get_arguments()
                    .find(|a| a.get_long() == Some(flag))
                    .expect("bug: the [log] keys are global flags");
                let args = flag_args(arg, value).map_err(|e| format!("[{section}] {key}: {e}"))?;
                check(cmd, "list", &args).map_err(|e| format!("[{section}] {key}: {e}"))?;
                if !given(matches, arg) {
                    global.extend(args);
                }
            }
            continue;
        }
        if !SERVER_SECTIONS.contains(&section.as_str()) {
            return Err(format!(
                "unknown section [{section}] (known: [log], [{}])",
                SERVER_SECTIONS.join("], [")
            ));
        }
        let sub = cmd
            .find_subcommand(section)
            .expect("bug: server sections are subcommands");
        let running = matches.subcommand_matches(section);
        for (key, value) in keys {
            let Some(arg) = server_args(sub).find(|a| a.get_long() == Some(key)) else {
                let known: Vec<_> = server_args(sub).filter_map(Arg::get_long).collect();
                return Err(unknown_key(section, key, &known));
            };
            let args = flag_args(arg, value).map_err(|e| format!("[{section}] {key}: {e}"))?;
            check(cmd, section, &args).map_err(|e| format!("[{section}] {key}: {e}"))?;
            if running.is_some_and(|m| !given(m, arg)) {
                own.extend(args);
            }
        }
    }
    Ok((global, own))
}

fn unknown_key(section: &str, key: &str, known: &[&str]) -> String {
    format!(
        "unknown key '{key}' in [{section}] (known: {})",
        known.join(", ")
    )
}

/// Whether a flag or a variable gave `arg`, which the file then leaves alone.
fn given(matches: &ArgMatches, arg: &Arg) -> bool {
    matches!(
        matches.value_source(arg.get_id().as_str()),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The flags that say what `value` says for `arg`: `--key=VALUE`, once per item of a list;
/// `--key` for `true`, nothing for `false`.
fn flag_args(arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().expect("bug: config keys are long flags");
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expected one value, found a {}", other.type_str())),
    };
    let flag = |v: &toml::Value| scalar(v).map(|s| OsString::from(format!("--{long}={s}")));
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => Ok(vec![format!("--{long}").into()]),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, other) => Err(format!(
            "expected true or false, found a {}",
            other.type_str()
        )),
        (ArgAction::Append, toml::Value::Array(items)) => items.iter().map(flag).collect(),
        (_, toml::Value::Array(_)) => Err("takes one value, not a list".to_string()),
        (_, value) => Ok(vec![flag(value)?]),
    }
}

/// Whether clap takes `args` for `subcommand`: the value of one key checked as its flag's is.
fn check(cmd: &clap::Command, subcommand: &str, args: &[OsString]) -> Result<(), String> {
    let line = ["zms".into(), OsString::from(subcommand)]
        .into_iter()
        .chain(args.iter().cloned());
    match cmd.clone().try_get_matches_from(line) {
        Ok(_) => Ok(()),
        Err(err) => {
            let text = err.to_string();
            let first = text.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_string())
        }
    }
}

/// `zms config example`: a config file with every key, each with its flag's help; the keys with
/// a default set to it (so the file as printed changes nothing), the others commented out.
pub fn example() -> String {
    let cmd = command();
    let mut out = String::from(
        "# zms configuration: zms --config FILE message-server (or group-server), or ZMS_CONFIG=FILE.\n\
         # The keys are the long flags. A flag wins over its ZMS_* variable, which wins over this\n\
         # file, which wins over the built-in default. Unknown keys and bad values are errors.\n\
         # Keys with a value are at their defaults; the commented ones have none.\n\n\
         [log]\n",
    );
    for (key, flag) in LOG_KEYS {
        let arg = cmd.get_arguments().find(|a| a.get_long() == Some(flag));
        push_key(
            &mut out,
            key,
            arg.expect("bug: the [log] keys are global flags"),
        );
    }
    for section in SERVER_SECTIONS {
        out.push_str(&format!("[{section}]\n"));
        let sub = cmd
            .find_subcommand(section)
            .expect("bug: server sections are subcommands");
        for arg in server_args(sub) {
            push_key(&mut out, arg.get_long().unwrap_or_default(), arg);
        }
    }
    out
}

/// One key of the example: its help as comment lines, then the key.
fn push_key(out: &mut String, key: &str, arg: &Arg) {
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    for line in wrap(&help, 96) {
        out.push_str(&format!("# {line}\n"));
    }
    let mut names = vec![format!("--{}", arg.get_long().unwrap_or_default())];
    names.extend(arg.get_env().map(|e| e.to_string_lossy().into_owned()));
    out.push_str(&format!("# ({})\n", names.join(", ")));
    let value_name = arg
        .get_value_names()
        .and_then(|n| n.first())
        .map_or_else(|| "VALUE".to_string(), ToString::to_string);
    let line = match (arg.get_action(), arg.get_default_values()) {
        (ArgAction::SetTrue, _) => format!("{key} = false"),
        (ArgAction::Append, _) => format!("# {key} = [{value_name}, …]"),
        (_, [default]) => format!("{key} = {}", literal(&default.to_string_lossy())),
        _ => format!("# {key} = {value_name}"),
    };
    out.push_str(&line);
    out.push_str("\n\n");
}

/// A default as TOML writes it: a number bare, anything else quoted.
fn literal(value: &str) -> String {
    match value.parse::<i64>() {
        Ok(n) => n.to_string(),
        Err(_) => toml::Value::String(value.to_string()).to_string(),
    }
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests;
