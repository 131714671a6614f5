//! Erase: a step tombstones the stream with a metastream event that keeps no metadata and
//! forgets its groups and its metadata's history at one log point (ids, every index), at
//! most `ERASE_GROUPS_PER_COMMAND` at a time; the node's notes say what it must scrub; the
//! log's purged entries left in a kept segment are zeroed; the keyspace rewrite keeps every
//! pair and drops every old version.

use cairn_raft_store::disk::{Disk, FjallDisk, FjallOptions, WriteBatch, KEYSPACE_DIR};
use cairn_raft_store::erase::ERASE_GROUPS_PER_COMMAND;
use cairn_raft_store::{
    AppendResult, Command, Direction, Entry, EntryPayload, EraseResult, EraseStream,
    ExpectedRevision as E, IndexName, NewEvent, Response, SetStreamMetadata, StreamMetadata,
    StreamStatus,
};
use uuid::Uuid;

use crate::common::*;

const SECRET: &[u8] = b"ERASE-ME-SECRET";

fn secret(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| {
            let mut e = event("Secret", SECRET);
            e.tags = vec!["person:42".to_owned()];
            e
        })
        .collect()
}

async fn erase(s: &mut TestStore, stream: &str) -> (u64, EraseResult) {
    let index = s.next_index;
    let entry = Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command::EraseStream(EraseStream {
            stream: stream.to_owned(),
            id: Uuid::now_v7(),
            created_unix_ms: 1_700_000_000_000,
        })),
    };
    s.next_index += 1;
    match s.sm().apply_entries(vec![entry]).await.unwrap().remove(0) {
        Response::Erased(result) => (index, result),
        other => panic!("unexpected response {other:?}"),
    }
}

#[test]
fn an_erase_step_forgets_the_stream_and_its_metadata_history_and_notes_the_scrub() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            let first = secret(2);
            let first_ids: Vec<Uuid> = first.iter().map(|e| e.id).collect();
            s.apply(append("person-42", E::Any, first)).await;
            s.apply(append("other-1", E::Any, events(3))).await;
            s.apply(append("person-42", E::Any, secret(3))).await;
            s.apply(Command::SetStreamMetadata(SetStreamMetadata {
                stream: "person-42".to_owned(),
                expected: E::Any,
                metadata: StreamMetadata {
                    custom: Some("{\"owner\":\"ERASE-ME-SECRET\"}".to_owned()),
                    ..Default::default()
                },
                id: Uuid::now_v7(),
                created_unix_ms: 1_700_000_000_000,
            }))
            .await;
            let kept = s.stream("other-1");

            let (index, result) = erase(&mut s, "person-42").await;
            assert_eq!(result.rejected, None, "{name}");
            assert_eq!(
                (result.removed_groups, result.removed_events),
                (3, 6),
                "{name}"
            );
            assert!(!result.more, "{name}");
            let reader = &s.store.reader;
            assert_eq!(
                reader.stream_status("person-42").unwrap(),
                StreamStatus::Tombstoned,
                "{name}"
            );
            let (state, _) = reader.stream_lifecycle("person-42").unwrap().unwrap();
            assert!(state.erased && state.tombstoned && state.metadata.custom.is_none());
            assert_eq!(reader.position_of_event(&first_ids[0]).unwrap(), None);
            let all = s.all();
            assert!(
                all.iter().all(|e| e.stream != "person-42"
                    && !e.data.windows(SECRET.len()).any(|w| w == SECRET)),
                "{name}: $all shows nothing of it: {all:?}"
            );
            let metastream = s.stream("$$person-42");
            assert_eq!(
                metastream.len(),
                1,
                "{name}: only the erase's event: {metastream:?}"
            );
            let tag = IndexName::parse("$tag-person:42").unwrap();
            assert!(s.index(&tag, 0, Direction::Forwards).is_empty(), "{name}");
            s.assert_indexes_match_all(name);
            assert_eq!(s.stream("other-1"), kept, "{name}");
            assert_eq!(s.store.erasures.pending().unwrap(), vec![index], "{name}");

            // The name stays dead; a retry of an erased append is refused, not stored again.
            let again = s.apply(append("person-42", E::Any, secret(1))).await;
            assert_eq!(again, AppendResult::StreamDeleted, "{name}");
            // Idempotent: a second step removes nothing and writes no second event.
            let (second, result) = erase(&mut s, "person-42").await;
            assert_eq!((result.removed_groups, result.more), (0, false), "{name}");
            assert_eq!(s.stream("$$person-42").len(), 1, "{name}");
            assert_eq!(s.store.erasures.pending().unwrap(), vec![index, second]);
            s.store.erasures.finished(second).unwrap();
            assert!(s.store.erasures.pending().unwrap().is_empty(), "{name}");
            // A `$` stream is refused and nothing changes.
            let (_, refused) = erase(&mut s, "$$other-1").await;
            assert!(refused.rejected.is_some(), "{name}");
            assert_eq!(s.stream("other-1"), kept, "{name}");
        });
    }
}

#[test]
fn a_long_stream_is_erased_a_bounded_step_at_a_time() {
    run(async {
        let mut s = TestStore::mem();
        let groups = ERASE_GROUPS_PER_COMMAND + 10;
        let commands = (0..groups)
            .map(|_| append("long", E::Any, events(1)))
            .collect();
        s.apply_all(commands).await;
        let (_, first) = erase(&mut s, "long").await;
        assert_eq!(first.removed_groups as usize, ERASE_GROUPS_PER_COMMAND);
        assert!(first.more);
        let (_, second) = erase(&mut s, "long").await;
        assert_eq!((second.removed_groups, second.more), (10, false));
        assert!(s.all().iter().all(|e| e.stream != "long"));
    });
}

/// Every file under `dir` holding `needle`.
fn holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(holding(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_keyspace_rewrite_keeps_every_pair_and_no_old_version_and_a_cut_short_one_settles() {
    let dir = tempfile::tempdir().unwrap();
    let needle = b"OLD-VERSION-OF-A-REMOVED-KEY";
    {
        let disk = FjallDisk::open(dir.path(), FjallOptions::default()).unwrap();
        let mut batch = WriteBatch::default();
        for i in 0..2_000u32 {
            batch.put(i.to_be_bytes().to_vec(), format!("value {i}").into_bytes());
        }
        batch.put(b"gone".to_vec(), needle.to_vec());
        disk.write(batch).unwrap();
        disk.sync().unwrap();
        let mut remove = WriteBatch::default();
        remove.delete(b"gone".to_vec());
        disk.write(remove).unwrap();
        disk.sync().unwrap();
        assert!(
            !holding(dir.path(), needle).is_empty(),
            "the keyspace's journal keeps the old version"
        );
        disk.rewrite_keyspace().unwrap();
        assert!(
            holding(dir.path(), needle).is_empty(),
            "the rewrite drops it"
        );
        assert_eq!(
            disk.get(&7u32.to_be_bytes()).unwrap(),
            Some(b"value 7".to_vec())
        );
        assert_eq!(disk.get(b"gone").unwrap(), None);
        // Writes go on in the new keyspace.
        let mut more = WriteBatch::default();
        more.put(b"after".to_vec(), b"rewrite".to_vec());
        disk.write(more).unwrap();
        disk.sync().unwrap();
    }
    let reopened = FjallDisk::open(dir.path(), FjallOptions::default()).unwrap();
    assert_eq!(reopened.get(b"after").unwrap(), Some(b"rewrite".to_vec()));
    assert_eq!(
        reopened.get(&1_999u32.to_be_bytes()).unwrap(),
        Some(b"value 1999".to_vec())
    );
    drop(reopened);
    // A rewrite cut short before its mark: the copy is dropped, the keyspace is the old one.
    std::fs::create_dir_all(dir.path().join("fjall.new")).unwrap();
    std::fs::write(dir.path().join("fjall.new").join("version"), b"half a copy").unwrap();
    let reopened = FjallDisk::open(dir.path(), FjallOptions::default()).unwrap();
    assert!(!dir.path().join("fjall.new").exists());
    assert_eq!(reopened.get(b"after").unwrap(), Some(b"rewrite".to_vec()));
}

#[test]
fn a_keyspace_rewrite_cut_short_after_its_mark_is_finished_by_the_next_open() {
    for old_gone_already in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = FjallDisk::open(dir.path(), FjallOptions::default()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put(b"k".to_vec(), b"old".to_vec());
            old.write(batch).unwrap();
            old.sync().unwrap();
        }
        // The copy, whole and synced: a keyspace written and closed like a rewrite's.
        let other = tempfile::tempdir().unwrap();
        {
            let new = FjallDisk::open(other.path(), FjallOptions::default()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put(b"k".to_vec(), b"new".to_vec());
            new.write(batch).unwrap();
            new.sync().unwrap();
        }
        std::fs::rename(
            other.path().join(KEYSPACE_DIR),
            dir.path().join("fjall.new"),
        )
        .unwrap();
        if old_gone_already {
            // Cut short between deleting the old keyspace and moving the copy in.
            std::fs::remove_dir_all(dir.path().join(KEYSPACE_DIR)).unwrap();
        }
        std::fs::write(dir.path().join("fjall.swap"), b"").unwrap();
        let disk = FjallDisk::open(dir.path(), FjallOptions::default()).unwrap();
        assert_eq!(
            disk.get(b"k").unwrap(),
            Some(b"new".to_vec()),
            "old gone already: {old_gone_already}"
        );
        for gone in ["fjall.new", "fjall.swap"] {
            assert!(!dir.path().join(gone).exists(), "{gone}");
        }
    }
}

#[test]
fn a_second_process_cannot_open_a_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _first = FjallDisk::open(dir.path(), FjallOptions::default()).unwrap();
    let second = FjallDisk::open(dir.path(), FjallOptions::default());
    let error = second.err().expect("the store is in use");
    assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock, "{error}");
}
