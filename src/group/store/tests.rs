//! Tests of the store's API: what a caller of [`Store`] sees.

use super::*;

/// Message `seq` of alice at `ts`.
pub(super) fn msg(seq: u64, ts: i64) -> Message {
    Message {
        seq,
        ts,
        sender: "alice".into(),
        text: format!("m{seq}"),
    }
}

#[test]
fn appends_fetch_in_order_with_since_and_limit() {
    let mut store = Store::open_in_memory().unwrap();
    let g = store.ensure_group("general", 1).unwrap();
    store.begin().unwrap();
    for seq in 1..=10 {
        store
            .append(g.id, &msg(seq, 100 + seq as i64 * 10), &format!("c{seq}"))
            .unwrap();
    }
    store.commit().unwrap();
    let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.fetch(g.id, 0, 0, 3).unwrap()), [1, 2, 3]);
    assert_eq!(seqs(store.fetch(g.id, 8, 0, 100).unwrap()), [9, 10]);
    assert_eq!(seqs(store.fetch(g.id, 0, 175, 100).unwrap()), [8, 9, 10]);
    assert_eq!(seqs(store.fetch(g.id, 9, 175, 100).unwrap()), [10]);
    assert!(store.fetch(g.id, 0, 1_000, 100).unwrap().is_empty());
    assert_eq!(
        store.find_sent(g.id, "alice", "c4").unwrap(),
        Some((4, 140))
    );
    assert_eq!(store.find_sent(g.id, "bob", "c4").unwrap(), None);
    let reloaded = store.ensure_group("general", 2).unwrap();
    assert_eq!(
        (reloaded.id, reloaded.last_seq, reloaded.last_ts),
        (g.id, 10, 200)
    );
}

#[test]
fn rollback_keeps_nothing_and_members_persist() {
    let mut store = Store::open_in_memory().unwrap();
    let g = store.ensure_group("g", 1).unwrap();
    store.begin().unwrap();
    store.append(g.id, &msg(1, 1), "").unwrap();
    store.append(g.id, &msg(2, 1), "").unwrap();
    store.rollback();
    assert_eq!(store.load_group(g.id).unwrap().last_seq, 0);
    store.add_member(g.id, "bob", 1).unwrap();
    store.add_member(g.id, "bob", 2).unwrap();
    store.add_member(g.id, "amy", 2).unwrap();
    assert_eq!(store.load_group(g.id).unwrap().members, ["amy", "bob"]);
    store.remove_member(g.id, "bob").unwrap();
    assert_eq!(store.load_group(g.id).unwrap().members, ["amy"]);
}

#[test]
fn the_store_maps_no_shared_memory_file() {
    // A mapped -shm file made immutable or truncated under the server kills it with SIGBUS
    // at the next write; the log's index lives in the heap instead.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Durability::Process).unwrap();
    let g = store.ensure_group("g", 1).unwrap();
    for seq in 1..=3 {
        store.append(g.id, &msg(seq, 1), "").unwrap();
    }
    assert_eq!(store.fetch(g.id, 0, 0, 10).unwrap().len(), 3);
    assert!(dir.path().join("zms.db-wal").exists());
    assert!(!dir.path().join("zms.db-shm").exists());
}

#[test]
fn data_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    // An earlier version's database, left readable by everyone.
    std::fs::create_dir(&dir).unwrap();
    Connection::open(dir.join("zms.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    std::fs::write(dir.join("zms.db-shm"), [0u8; 32]).unwrap();
    for file in ["zms.db", "zms.db-shm"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let fresh = parent.path().join("fresh").join("data");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for dir in [&dir, &fresh] {
        let mut store = Store::open(dir, Durability::Process).unwrap();
        let g = store.ensure_group("g", 1).unwrap();
        store.append(g.id, &msg(1, 1), "").unwrap();
        for file in ["zms.db", "zms.db-wal", "lock", mark::FILE] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
    }
    assert_eq!(mode(&dir.join("zms.db-shm")), 0o600, "an earlier version's");
    assert_eq!(mode(&fresh), 0o700, "a data directory it makes");
}

#[test]
fn a_second_server_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), Durability::Process).unwrap();
    let err = Store::open(dir.path(), Durability::Process).err().unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn a_corrupt_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("zms.db"), vec![0x5a; 8192]).unwrap();
    let err = Store::open(dir.path(), Durability::Process).err().unwrap();
    assert!(err.to_string().contains("refusing to serve"), "{err}");
}
