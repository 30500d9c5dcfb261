//! A stored run of client ids (a `sent_runs` row's `ids`) as a group server reads it from its
//! database when a send's client id is looked up (`store::find_client_id`).
//!
//! Input: `n:u8 id:n*OCTET ids…`. Any run answers a lookup or is refused, the same way every
//! time, and a lookup that finds its id reads no further: bytes after the run change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zms::group::store::find_client_id;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let Some((id, run)) = rest.split_at_checked(usize::from(n)) else {
        return;
    };
    let Ok(id) = std::str::from_utf8(id) else {
        return;
    };
    let found = find_client_id(run, id).map_err(|e| e.to_string());
    assert_eq!(find_client_id(run, id).map_err(|e| e.to_string()), found);
    if let Ok(Some(entry)) = found {
        let mut longer = run.to_vec();
        longer.extend_from_slice(&[0xff; 20]);
        assert_eq!(find_client_id(&longer, id).ok(), Some(Some(entry)));
    }
});
