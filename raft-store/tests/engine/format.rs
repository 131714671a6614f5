//! The store format fixtures: data dirs written by format 1 and format 2, committed in
//! `tests/fixtures/format-N`, that every build must open and read back exactly. Regenerate one
//! (only when a new format version is introduced: then keep the old ones and add the new) with
//! `cargo test -p cairn-raft-store --test engine -- --ignored write_format_2_fixture`.

use std::path::{Path, PathBuf};

use cairn_raft_store::disk::{FjallDisk, FjallOptions};
use cairn_raft_store::{
    format, Append, AppendPosition, AppendResult, Command, ContentType, ExpectedRevision, NewEvent,
    RecordedEvent, Vote,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::RaftLogReader;
use uuid::Uuid;

use crate::common::{run, TestStore};

const CREATED_UNIX_MS: u64 = 1_764_806_400_000;

fn fixture_dir() -> PathBuf {
    fixture("format-1")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn event(n: u128, event_type: &str) -> NewEvent {
    NewEvent {
        // UUIDv7-shaped, as the client library makes them: several share a bucket prefix.
        id: Uuid::from_u128(0x0193_8f00_0000_7000_8000_0000_0000_0000 + n),
        event_type: event_type.to_owned(),
        content_type: if n % 5 == 4 {
            ContentType::Binary
        } else {
            ContentType::Json
        },
        data: format!("{{\"n\":{n}}}").into_bytes(),
        metadata: if n.is_multiple_of(3) {
            vec![n as u8; 3]
        } else {
            Vec::new()
        },
        tags: Vec::new(),
    }
}

fn append(stream: &str, expected: ExpectedRevision, ids: std::ops::Range<u128>) -> Append {
    Append {
        stream: stream.to_owned(),
        expected,
        events: ids.map(|n| event(n, &format!("Type{}", n % 3))).collect(),
        created_unix_ms: CREATED_UNIX_MS,
    }
}

/// The log entries the fixture applies, before and after its snapshot.
fn before_snapshot() -> Vec<Command> {
    use ExpectedRevision::*;
    vec![
        Command::Append(append("order-1", NoStream, 0..2)),
        Command::Append(append("customer-7", Any, 2..3)),
        Command::Append(append("order-1", Exact(1), 3..4)),
        // A group commit: two appends in one entry.
        Command::Appends(vec![
            append("order-2", NoStream, 4..7),
            append("customer-7", StreamExists, 7..8),
        ]),
    ]
}

fn after_snapshot() -> Vec<Command> {
    use ExpectedRevision::*;
    vec![
        Command::Append(append("order-1", Exact(2), 8..11)),
        // Refused (wrong expected version): writes nothing.
        Command::Append(append("order-2", NoStream, 11..12)),
        Command::Append(append("binary-1", Any, 12..14)),
    ]
}

/// Every event the fixture holds, as a reader must return it, in `$all` order.
fn expected_events() -> Vec<RecordedEvent> {
    expected_of(before_snapshot().into_iter().chain(after_snapshot()))
}

fn expected_of(appends: impl Iterator<Item = Command>) -> Vec<RecordedEvent> {
    let mut heads: std::collections::HashMap<String, u64> = Default::default();
    let mut out = Vec::new();
    for command in appends {
        let list = match command {
            Command::Append(a) => vec![a],
            Command::Appends(list) => list,
            other => unreachable!("the fixture proposes no {other:?}"),
        };
        for a in list {
            if a.stream == "order-2" && heads.contains_key("order-2") {
                continue; // the refused one
            }
            for e in a.events {
                let revision = heads.entry(a.stream.clone()).or_insert(0);
                out.push(RecordedEvent {
                    stream: a.stream.clone(),
                    revision: *revision,
                    position: out.len() as u64,
                    id: e.id,
                    event_type: e.event_type,
                    content_type: e.content_type,
                    data: e.data.into(),
                    metadata: e.metadata.into(),
                    created_unix_ms: a.created_unix_ms,
                    tags: e.tags,
                });
                *revision += 1;
            }
        }
    }
    out
}

#[test]
#[ignore = "writes tests/fixtures/format-1; run by hand only when introducing a format"]
fn write_format_1_fixture() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    run(async {
        let disk = FjallDisk::open(&dir, FjallOptions::default()).expect("open the store");
        let mut s = TestStore::on(disk, None);
        s.apply_all(before_snapshot()).await;
        s.build_snapshot().await;
        s.apply_all(after_snapshot()).await;
        let vote = Vote::new(3, 2);
        s.store.log.save_vote(&vote).await.expect("vote");
        s.disk.sync().expect("sync");
        assert_eq!(s.all(), expected_events());
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn the_format_1_fixture_opens_and_reads_back_exactly() {
    // Opening writes (the copy out of sled, the vote demoted), so open a copy.
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture_dir(), copy.path());
    let disk = FjallDisk::open(copy.path(), FjallOptions::default()).expect("open the store");
    assert_eq!(format::stored_version(disk.as_ref()).unwrap(), 1);
    let mut s = TestStore::on(disk, None);
    let expected = expected_events();
    assert_eq!(expected.len(), 13);
    assert_eq!(s.all(), expected, "$all");
    for stream in ["order-1", "order-2", "customer-7", "binary-1"] {
        let of_stream: Vec<_> = expected
            .iter()
            .filter(|e| e.stream == stream)
            .cloned()
            .collect();
        assert_eq!(s.stream(stream), of_stream, "{stream}");
        let head = s.store.reader.stream_head(stream).unwrap();
        assert_eq!(head, of_stream.last().map(|e| e.revision), "{stream}");
    }
    for e in &expected {
        assert_eq!(
            s.store.reader.position_of_event(&e.id).unwrap(),
            Some(e.position),
            "id {}",
            e.id
        );
    }
    assert_eq!(s.store.reader.next_position().unwrap(), 13);
    run(async {
        let snapshot = s
            .sm()
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(4));
        let vote = s.store.log.read_vote().await.unwrap().expect("a vote");
        assert_eq!((vote.leader_id.term, vote.leader_id.node_id), (3, 2));
        // Idempotency holds across the format: an exact retry gets its original answer.
        let retry = Command::Append(append("order-1", ExpectedRevision::Exact(2), 8..11));
        assert_eq!(
            s.apply(retry).await,
            AppendResult::AlreadyWritten(AppendPosition {
                last_revision: 5,
                last_position: 10,
            })
        );
        let next = Command::Append(append("order-1", ExpectedRevision::Exact(5), 20..21));
        assert_eq!(
            s.apply(next).await,
            AppendResult::Written(AppendPosition {
                last_revision: 6,
                last_position: 13,
            })
        );
    });
}

/// What format 2 adds to format 1's fixture, after its snapshot: tagged events.
fn format_2_tagged() -> Vec<Command> {
    let tagged = |stream: &str, ids: std::ops::Range<u128>, tags: &[&str]| {
        let mut a = append(stream, ExpectedRevision::Any, ids);
        for e in &mut a.events {
            e.tags = tags.iter().map(|t| t.to_string()).collect();
        }
        a
    };
    vec![
        Command::Append(tagged("order-3", 14..16, &["customer:7", "order:3"])),
        Command::Appends(vec![
            tagged("customer-9", 16..17, &["customer:9"]),
            tagged("order-3", 17..18, &["order:3"]),
        ]),
    ]
}

fn expected_format_2() -> Vec<RecordedEvent> {
    expected_of(
        before_snapshot()
            .into_iter()
            .chain(after_snapshot())
            .chain(format_2_tagged()),
    )
}

#[test]
#[ignore = "writes tests/fixtures/format-2; run by hand only when introducing a format"]
fn write_format_2_fixture() {
    let dir = fixture("format-2");
    let _ = std::fs::remove_dir_all(&dir);
    run(async {
        let disk = FjallDisk::open(&dir, FjallOptions::default()).expect("open the store");
        let mut s = TestStore::on(disk, None);
        s.apply_all(before_snapshot()).await;
        s.build_snapshot().await;
        s.apply_all(after_snapshot()).await;
        s.apply_all(format_2_tagged()).await;
        let vote = Vote::new(3, 2);
        s.store.log.save_vote(&vote).await.expect("vote");
        s.disk.sync().expect("sync");
        assert_eq!(s.all(), expected_format_2());
    });
}

#[test]
fn the_format_1_fixture_is_indexed_by_its_upgrade() {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture_dir(), copy.path());
    let disk = FjallDisk::open(copy.path(), FjallOptions::default()).expect("open the store");
    let s = TestStore::on(disk, None);
    assert_eq!(
        format::stored_version(s.disk.as_ref()).unwrap(),
        format::FORMAT_VERSION
    );
    assert!(s.all().iter().all(|e| e.tags.is_empty()), "no tags before");
    // order, customer, binary; Type0..Type2.
    assert_eq!(s.assert_indexes_match_all("format 1 upgraded"), 6);
}

#[test]
fn the_format_2_fixture_opens_and_reads_back_exactly_with_its_tags_and_indexes() {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture("format-2"), copy.path());
    let disk = FjallDisk::open(copy.path(), FjallOptions::default()).expect("open the store");
    assert_eq!(format::stored_version(disk.as_ref()).unwrap(), 2);
    let mut s = TestStore::on(disk, None);
    let expected = expected_format_2();
    assert_eq!(expected.len(), 17);
    assert_eq!(s.all(), expected, "$all");
    assert_eq!(s.stream("order-3").len(), 3);
    // order, customer, binary; Type0..Type2; customer:7, customer:9, order:3.
    assert_eq!(s.assert_indexes_match_all("format 2"), 9);
    run(async {
        let retry = Command::Append(format_2_tagged().remove(0).clone_append());
        assert_eq!(
            s.apply(retry).await,
            AppendResult::AlreadyWritten(AppendPosition {
                last_revision: 1,
                last_position: 14,
            })
        );
        // The same ids with other tags are another event: refused, nothing written.
        let mut retagged = format_2_tagged().remove(0).clone_append();
        retagged.events[0].tags.pop();
        assert!(matches!(
            s.apply(Command::Append(retagged)).await,
            AppendResult::Rejected(cairn_raft_store::AppendRejection::ContentConflict { .. })
        ));
    });
    assert_eq!(s.all(), expected, "nothing written");
}

trait CloneAppend {
    fn clone_append(self) -> Append;
}

impl CloneAppend for Command {
    fn clone_append(self) -> Append {
        match self {
            Command::Append(a) => a,
            other => panic!("not one append: {other:?}"),
        }
    }
}

/// A store sled wrote is copied into fjall at its first open, and sled's files go; a copy cut
/// short before its swap is made again, and sled's files left after the swap are deleted.
#[test]
fn a_sled_store_is_copied_into_the_keyspace_once_even_when_a_copy_was_cut_short() {
    let sled_files = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n == "db" || n == "conf" || n == "blobs" || n.starts_with("snap."))
            .collect()
    };
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture("format-2"), copy.path());
    assert!(!sled_files(copy.path()).is_empty());
    // A copy cut short before its swap: half a keyspace, no mark.
    std::fs::create_dir_all(copy.path().join("fjall.new")).unwrap();
    std::fs::write(copy.path().join("fjall.new").join("version"), b"half").unwrap();
    {
        let disk = FjallDisk::open(copy.path(), FjallOptions::default()).expect("open");
        assert!(sled_files(copy.path()).is_empty(), "sled's files are gone");
        assert!(!copy.path().join("fjall.new").exists());
        let s = TestStore::on(disk, None);
        assert_eq!(s.all(), expected_format_2());
    }
    // sled's files left behind by a crash after the swap: deleted, the keyspace untouched.
    std::fs::write(copy.path().join("db"), b"left over").unwrap();
    std::fs::create_dir_all(copy.path().join("blobs")).unwrap();
    let disk = FjallDisk::open(copy.path(), FjallOptions::default()).expect("reopen");
    assert!(sled_files(copy.path()).is_empty());
    let s = TestStore::on(disk, None);
    assert_eq!(s.all(), expected_format_2());
}

/// A sled store whose own keyspace rewrite a crash cut short while moving the copy in (its old
/// files gone, the copy still in `keyspace.new/`): sled's open finishes the move, and the copy
/// into fjall takes that keyspace.
#[test]
fn a_sled_store_cut_short_in_its_own_rewrite_is_settled_before_the_copy() {
    use cairn_raft_store::disk::Disk;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // A sled keyspace as earlier builds wrote one (1 MiB segments), whole and flushed.
        let copy = sled::Config::new()
            .path(dir.path().join("keyspace.new"))
            .segment_size(1024 * 1024)
            .open()
            .expect("open sled");
        copy.insert(b"k", b"from the rewrite".to_vec()).unwrap();
        copy.flush().unwrap();
    }
    std::fs::write(dir.path().join("keyspace.move"), b"").unwrap();
    assert!(!dir.path().join("db").exists());
    let disk = FjallDisk::open(dir.path(), FjallOptions::default()).expect("open");
    assert_eq!(disk.get(b"k").unwrap(), Some(b"from the rewrite".to_vec()));
    for gone in ["db", "conf", "keyspace.new", "keyspace.move"] {
        assert!(!dir.path().join(gone).exists(), "{gone}");
    }
}
