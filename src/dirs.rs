//! Where a user's files live, by kind, after the XDG base directory rules: configuration (keys,
//! pinned server keys) in [`crate::keys::config_dir`]; state a user need not back up (input
//! history, sends not confirmed, the client's log) in [`state_dir`]; data a server keeps (the
//! message server's name bindings) in [`data_dir`]. `$ZMS_HOME` puts them all in one place.
//! A file an earlier version kept in the config directory is used there while it stays there.
//! Creating the directories is left to the callers.

use std::path::PathBuf;

use crate::{errinput, Result};

/// Where state lives: `$ZMS_HOME`, else `$XDG_STATE_HOME/zms`, else `~/.local/state/zms`.
///
/// # Errors
/// When none of `ZMS_HOME`, `XDG_STATE_HOME` and `HOME` is set.
pub fn state_dir() -> Result<PathBuf> {
    base("XDG_STATE_HOME", &[".local", "state"])
}

/// Where a server's data lives by default: `$ZMS_HOME`, else `$XDG_DATA_HOME/zms`, else
/// `~/.local/share/zms`.
///
/// # Errors
/// When none of `ZMS_HOME`, `XDG_DATA_HOME` and `HOME` is set.
pub fn data_dir() -> Result<PathBuf> {
    base("XDG_DATA_HOME", &[".local", "share"])
}

/// The directory that holds state file (or directory) `name`: the state directory, or the
/// config directory if an earlier version left `name` there and the state directory has none.
///
/// # Errors
/// As [`state_dir`].
pub fn state_home_of(name: &str) -> Result<PathBuf> {
    Ok(moved(state_dir()?, crate::keys::config_dir().ok(), name))
}

/// The path of data `name`, as [`state_home_of`] finds it but in the data directory.
///
/// # Errors
/// As [`data_dir`].
pub fn data_path(name: &str) -> Result<PathBuf> {
    let dir = moved(data_dir()?, crate::keys::config_dir().ok(), name);
    Ok(dir.join(name))
}

/// `dir`, unless `name` is only in `old`, where earlier versions kept it.
fn moved(dir: PathBuf, old: Option<PathBuf>, name: &str) -> PathBuf {
    match old {
        Some(old) if !dir.join(name).exists() && old.join(name).exists() => old,
        _ => dir,
    }
}

/// `$ZMS_HOME`, else `$XDG` + `zms`, else `$HOME` + `under` + `zms`. An empty or relative XDG
/// variable is ignored, as the spec says.
fn base(xdg: &str, under: &[&str]) -> Result<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    pick(var("ZMS_HOME"), var(xdg), var("HOME"), under)
        .ok_or_else(|| errinput!("no HOME, {xdg} or ZMS_HOME to keep files in"))
}

/// The rule of [`base`], apart from the environment.
fn pick(
    zms_home: Option<PathBuf>,
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
    under: &[&str],
) -> Option<PathBuf> {
    if zms_home.is_some() {
        return zms_home;
    }
    if let Some(xdg) = xdg.filter(|p| p.is_absolute()) {
        return Some(xdg.join("zms"));
    }
    let mut dir = home?;
    dir.extend(under);
    Some(dir.join("zms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_data_follow_the_xdg_rules() {
        let p = |s: &str| Some(PathBuf::from(s));
        let state = [".local", "state"];
        assert_eq!(pick(p("/z"), p("/x"), p("/h"), &state), p("/z"));
        assert_eq!(pick(None, p("/x"), p("/h"), &state), p("/x/zms"));
        assert_eq!(pick(None, None, p("/h"), &state), p("/h/.local/state/zms"));
        assert_eq!(
            pick(None, p("rel"), p("/h"), &state),
            p("/h/.local/state/zms")
        );
        assert_eq!(
            pick(None, None, p("/h"), &[".local", "share"]),
            p("/h/.local/share/zms")
        );
        assert_eq!(pick(None, None, None, &state), None);
    }

    #[test]
    fn a_file_an_earlier_version_kept_with_the_config_is_used_there() {
        let root = tempfile::tempdir().unwrap();
        let (state, config) = (root.path().join("state"), root.path().join("config"));
        let find = || moved(state.clone(), Some(config.clone()), "history");
        assert_eq!(find(), state, "new users: the state directory");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("history"), "/list\n").unwrap();
        assert_eq!(find(), config, "an earlier version's file where it is");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("history"), "").unwrap();
        assert_eq!(find(), state, "once in the state directory, there");
    }
}
