//! A key file as `zms` reads it from disk (`--key-file`, the user's keys): any file loads or is
//! refused with an error, and a pair that loads is saved and loaded back the same.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zms::keys::KeyPair;
use zms::protocol::check_key;

/// A directory of this process's own for the files it reads and writes.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("zms-fuzz-key-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    })
}

fuzz_target!(|text: &[u8]| {
    let path = dir().join("in.key");
    std::fs::write(&path, text).expect("the input file");
    let Ok(pair) = KeyPair::load(&path) else {
        return;
    };
    for key in [&pair.public, &pair.secret] {
        assert_eq!(key.len(), 40);
        assert_eq!(check_key(key), Ok(()));
    }
    let saved = dir().join("out.key");
    let _ = std::fs::remove_file(&saved);
    pair.save(&saved).expect("a loaded pair saves");
    assert_eq!(KeyPair::load(&saved).expect("a saved pair loads"), pair);
});
