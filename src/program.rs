//! How a user runs this binary, for the hints that name a command (`zms send …`): the name it
//! was run by when installed on PATH, `cargo run --` under cargo, else its full path. The
//! printing is left to the callers.

use std::path::Path;
use std::sync::OnceLock;

/// What [`name`] says, once the binary has worked it out ([`find_name`]).
static NAME: OnceLock<String> = OnceLock::new();

/// The command that runs this binary, as a user would type it: `zms` until the binary has
/// called [`find_name`] (a library in another program names the installed command).
pub fn name() -> &'static str {
    NAME.get().map_or("zms", String::as_str)
}

/// Works out, from how this process was started, the name [`name`] gives from now on.
pub fn find_name() {
    let found = invocation(
        std::env::var_os("CARGO").is_some()
            && std::env::var("CARGO_PKG_NAME").as_deref() == Ok("zms"),
        &std::env::args().next().unwrap_or_default(),
        std::env::current_exe().ok().as_deref(),
    );
    let _ = NAME.set(found);
}

/// How a user runs this binary from another terminal: `cargo run --release --` when cargo
/// started it (`cargo_run`), else the name it was run by when found on PATH (`argv0` without
/// a `/`), else its full path `exe` (quoted for a shell where needed).
pub fn invocation(cargo_run: bool, argv0: &str, exe: Option<&Path>) -> String {
    if cargo_run {
        return match cfg!(debug_assertions) {
            true => "cargo run --".to_string(),
            false => "cargo run --release --".to_string(),
        };
    }
    if !argv0.is_empty() && !argv0.contains('/') {
        return argv0.to_string();
    }
    let path = exe.map_or_else(|| argv0.to_string(), |p| p.display().to_string());
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    match path.chars().all(plain) {
        true => path,
        false => format!("'{}'", path.replace('\'', r"'\''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_named_as_the_user_can_run_it() {
        let exe = Path::new("/opt/zms tools/bin/zms");
        assert_eq!(invocation(false, "zms", Some(exe)), "zms");
        assert_eq!(
            invocation(false, "./target/release/zms", Some(exe)),
            "'/opt/zms tools/bin/zms'"
        );
        let plain = Path::new("/home/a/zms/target/release/zms");
        assert_eq!(
            invocation(false, "target/release/zms", Some(plain)),
            "/home/a/zms/target/release/zms"
        );
        assert!(invocation(true, "target/debug/zms", Some(plain)).starts_with("cargo run "));
    }
}
