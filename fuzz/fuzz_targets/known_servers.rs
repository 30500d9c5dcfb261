//! A known-servers file (pinned server keys) as `zms` reads it from disk: any file loads, and
//! the pins it holds are written back and read again the same, one of them replaced.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zms::keys::Pins;

/// A valid CURVE public key (Z85): what `replace` pins.
const KEY: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

/// A directory of this process's own for the file it reads and writes.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("zms-fuzz-known-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    })
}

fn pins(pins: &Pins) -> Vec<(String, String)> {
    pins.list()
        .map(|(address, key)| (address.to_string(), key.to_string()))
        .collect()
}

fuzz_target!(|text: &[u8]| {
    let path = dir().join("known_servers");
    std::fs::write(&path, text).expect("the input file");
    let Ok(mut loaded) = Pins::load(&path) else {
        // Only a file that is not UTF-8 is refused.
        assert!(std::str::from_utf8(text).is_err());
        return;
    };
    let mut expected = pins(&loaded);
    let Some((address, _)) = expected.first().cloned() else {
        return;
    };
    // Replacing a pin writes the file anew: every other pin must come back as it was.
    loaded.replace(&address, KEY).expect("a pin is replaced");
    expected[0].1 = KEY.to_string();
    assert_eq!(
        pins(&Pins::load(&path).expect("a written file loads")),
        expected
    );
});
