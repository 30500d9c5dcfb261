//! A stored run of client ids (a `sent_runs` row's `ids`, either layout) as a group server
//! reads it from its database when a send's client id is looked up.
//!
//! Input: `n:u8 id:n*OCTET ids…`. Any run answers a lookup or is refused, the same way every
//! time, and a lookup that finds its id reads no further: bytes after that entry change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zms::group::store::sent::find_in_run;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let Some((id, entries)) = rest.split_at_checked(usize::from(n)) else {
        return;
    };
    let Ok(id) = std::str::from_utf8(id) else {
        return;
    };
    let found = find_in_run(entries, id);
    assert_eq!(find_in_run(entries, id), found);
    if let Ok(Some(entry)) = found {
        let mut longer = entries.to_vec();
        longer.extend_from_slice(&[0xff; 20]);
        assert_eq!(find_in_run(&longer, id), Ok(Some(entry)));
    }
});
