//! The Python side of the interop story: `clients/python` holds a ZMS/1 client package and a
//! group server written from PROTOCOL.md alone, and `test_interop.py` runs them against this
//! build's binary (and the binary's clients against the Python group server), once against an
//! open deployment and once against a `--secure` one.
//!
//! The interpreter is `$ZMS_PYTHON`, else the virtual environment `target/venv` when it exists
//! (where CI installs the package: `python3 -m venv target/venv && target/venv/bin/pip install
//! ./clients/python`), else `python3`. It needs Python 3.10 or later with pyzmq built with
//! CURVE. Without them the tests say they are skipped and pass, unless `ZMS_REQUIRE_PYTHON=1`
//! (as CI sets it), when they fail.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::python;

/// Whether `python` runs, is recent enough, and imports a zmq with CURVE; if not, why.
fn python_with_pyzmq(python: &Path) -> Result<(), String> {
    let probe = Command::new(python)
        .args([
            "-c",
            "import sys, zmq; assert sys.version_info >= (3, 10), sys.version; \
             assert zmq.has('curve'), 'this pyzmq has no CURVE'",
        ])
        .output()
        .map_err(|err| format!("{} does not run: {err}", python.display()))?;
    if probe.status.success() {
        Ok(())
    } else {
        // The last line of a traceback says what is missing.
        let stderr = String::from_utf8_lossy(&probe.stderr);
        Err(stderr.trim().lines().last().unwrap_or("failed").to_string())
    }
}

/// Runs `test_interop.py` against an open deployment, or a `--secure` one.
fn run_interop_tests(secure: bool) {
    let python = python();
    if let Err(why) = python_with_pyzmq(&python) {
        let required = std::env::var("ZMS_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "ZMS_REQUIRE_PYTHON=1, but {} with pyzmq is not available: {why}",
            python.display()
        );
        // Straight to stderr, past the test harness's capture, so the skip is visible.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {} with pyzmq not available ({why})",
            python.display()
        );
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let out = Command::new(&python)
        .args(["-m", "unittest", "-v", "test_interop"])
        .current_dir(&dir)
        .env("ZMS_BIN", env!("CARGO_BIN_EXE_zms"))
        .env("ZMS_TEST_SECURE", if secure { "1" } else { "0" })
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONPATH")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the Python interop tests failed{} ({}):\n--- stdout\n{}\n--- stderr\n{}",
        if secure {
            " against --secure servers"
        } else {
            ""
        },
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_client_and_group_server_interoperate_with_the_binary() {
    run_interop_tests(false);
}

#[test]
fn python_client_speaks_curve_to_a_secure_deployment() {
    run_interop_tests(true);
}
