//! The Python side of the interop story: `clients/python` holds a ZMS/1 client and a group
//! server written from PROTOCOL.md alone, and `test_interop.py` runs them against this build's
//! binary (and the binary's clients against the Python group server).
//!
//! Needs `python3` (3.10 or later) with pyzmq. Without them the test says it is skipped and
//! passes, unless `ZMS_REQUIRE_PYTHON=1` (as CI sets it), when it fails.

use std::io::Write;
use std::path::Path;
use std::process::Command;

const SKIPPED: &str = "skipped: python3 with pyzmq not available";

/// Whether `python3` runs, is recent enough, and imports zmq; if not, why.
fn python_with_pyzmq() -> Result<(), String> {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import sys, zmq; assert sys.version_info >= (3, 10), sys.version",
        ])
        .output()
        .map_err(|err| format!("python3 does not run: {err}"))?;
    if probe.status.success() {
        Ok(())
    } else {
        // The last line of a traceback says what is missing.
        let stderr = String::from_utf8_lossy(&probe.stderr);
        Err(stderr.trim().lines().last().unwrap_or("failed").to_string())
    }
}

#[test]
fn python_client_and_group_server_interoperate_with_the_binary() {
    if let Err(why) = python_with_pyzmq() {
        let required = std::env::var("ZMS_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "ZMS_REQUIRE_PYTHON=1, but python3 with pyzmq is not available: {why}"
        );
        // Straight to stderr, past the test harness's capture, so the skip is visible.
        let _ = writeln!(std::io::stderr(), "{SKIPPED} ({why})");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let out = Command::new("python3")
        .args(["-m", "unittest", "-v", "test_interop"])
        .current_dir(&dir)
        .env("ZMS_BIN", env!("CARGO_BIN_EXE_zms"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python interop tests failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
