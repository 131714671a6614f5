//! Stream lifecycle: metadata versioned like a stream, soft delete and recreation, tombstones,
//! and retention hiding events from stream, `$all`, index and DCB query reads at once.

use cairn_raft_store::{
    Append, AppendRejection, AppendResult, Command, DeleteKind, DeleteStream, Direction,
    ExpectedRevision as E, IndexName, InvalidInput, NewEvent, Query, QueryItem, SetStreamMetadata,
    StreamMetadata, StreamStatus,
};
use uuid::Uuid;

use crate::common::*;

const T0: u64 = 1_700_000_000_000;

fn set_meta(stream: &str, expected: E, metadata: StreamMetadata) -> Command {
    Command::SetStreamMetadata(SetStreamMetadata {
        stream: stream.to_owned(),
        expected,
        metadata,
        id: Uuid::new_v4(),
        created_unix_ms: T0,
    })
}

fn delete(stream: &str, expected: E, kind: DeleteKind) -> Command {
    Command::DeleteStream(DeleteStream {
        stream: stream.to_owned(),
        expected,
        kind,
        id: Uuid::new_v4(),
        created_unix_ms: T0,
    })
}

fn append_at(stream: &str, n: usize, created_unix_ms: u64) -> Command {
    Command::Append(Append {
        stream: stream.to_owned(),
        expected: E::Any,
        events: events(n),
        created_unix_ms,
    })
}

fn revisions(s: &TestStore, stream: &str) -> Vec<u64> {
    s.stream(stream).iter().map(|e| e.revision).collect()
}

fn all_of(s: &TestStore, stream: &str) -> Vec<u64> {
    s.all()
        .iter()
        .filter(|e| e.stream == stream)
        .map(|e| e.revision)
        .collect()
}

fn written(result: &AppendResult) -> bool {
    matches!(result, AppendResult::Written(_))
}

#[test]
fn metadata_is_versioned_and_its_limits_hide_events_from_stream_and_all_reads() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("a", E::NoStream, events(10))).await;
            let keep_three = StreamMetadata {
                max_count: Some(3),
                ..Default::default()
            };
            assert!(written(
                &s.apply(set_meta("a", E::NoStream, keep_three.clone()))
                    .await
            ));
            assert_eq!(revisions(&s, "a"), vec![7, 8, 9], "{name}: max count");
            assert_eq!(all_of(&s, "a"), vec![7, 8, 9], "{name}: max count in $all");
            // A stale metadata revision is refused and changes nothing.
            let truncate = StreamMetadata {
                truncate_before: Some(9),
                ..Default::default()
            };
            assert_eq!(
                s.apply(set_meta("a", E::NoStream, truncate.clone())).await,
                AppendResult::WrongExpectedVersion {
                    expected: E::NoStream,
                    actual: Some(0)
                },
                "{name}"
            );
            assert_eq!(revisions(&s, "a"), vec![7, 8, 9], "{name}");
            assert!(written(
                &s.apply(set_meta("a", E::Exact(0), truncate)).await
            ));
            assert_eq!(revisions(&s, "a"), vec![9], "{name}: truncate before");
            let (state, revision) = s.store.reader.stream_lifecycle("a").unwrap().unwrap();
            assert_eq!(revision, 1, "{name}");
            assert_eq!(state.metadata().truncate_before, Some(9), "{name}");
            assert_eq!(
                state.metadata().max_count,
                None,
                "{name}: replaced, not merged"
            );
            // Backwards reads stop at the hidden range too.
            let backwards: Vec<u64> = s
                .store
                .reader
                .read_stream("a", u64::MAX, cairn_raft_store::Direction::Backwards, 10)
                .map(|e| e.unwrap().revision)
                .collect();
            assert_eq!(backwards, vec![9], "{name}");
        });
    }
}

fn placed(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| {
            let mut e = event("OrderPlaced", b"{}");
            e.tags = vec!["customer:7".to_owned()];
            e
        })
        .collect()
}

/// `(stream, revision)` of what a read yields.
fn shown(
    read: impl Iterator<Item = Result<cairn_raft_store::RecordedEvent, cairn_raft_store::StoreError>>,
) -> Vec<(String, u64)> {
    read.map(|e| e.unwrap())
        .map(|e| (e.stream, e.revision))
        .collect()
}

#[test]
fn index_and_query_reads_hide_what_stream_reads_hide() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("order-1", E::NoStream, placed(5))).await;
            s.apply(append("order-2", E::NoStream, placed(3))).await;
            s.apply(append("order-3", E::NoStream, placed(1))).await;
            let keep_two = StreamMetadata {
                max_count: Some(2),
                ..Default::default()
            };
            s.apply(set_meta("order-1", E::NoStream, keep_two)).await;
            s.apply(delete("order-2", E::Any, DeleteKind::Soft)).await;
            s.apply(delete("order-3", E::Any, DeleteKind::Tombstone))
                .await;
            let visible = vec![("order-1".to_owned(), 3), ("order-1".to_owned(), 4)];
            let reader = &s.store.reader;
            for index in ["$ce-order", "$et-OrderPlaced", "$tag-customer:7"] {
                let index = IndexName::parse(index).unwrap();
                let forwards = reader.read_index(&index, 0, Direction::Forwards, u64::MAX);
                assert_eq!(shown(forwards), visible, "{name}: {index}");
                let backwards = reader.read_index(&index, u64::MAX, Direction::Backwards, 1);
                assert_eq!(shown(backwards), visible[1..], "{name}: {index} backwards");
                // Hidden events do not count against the read's count.
                let first = reader.read_index(&index, 0, Direction::Forwards, 1);
                assert_eq!(shown(first), visible[..1], "{name}: {index} counted");
            }
            let by_tag = Query {
                items: vec![QueryItem {
                    types: vec!["OrderPlaced".to_owned()],
                    tags: vec!["customer:7".to_owned()],
                }],
            };
            let query = reader.read_query(&by_tag, 0, Direction::Forwards, u64::MAX);
            assert_eq!(shown(query), visible, "{name}: DCB query");
            let query = reader.read_query(&by_tag, u64::MAX, Direction::Backwards, 1);
            assert_eq!(shown(query), visible[1..], "{name}: DCB query backwards");
            let everything = reader.read_query(&Query::default(), 0, Direction::Forwards, 100);
            let of_orders: Vec<_> = shown(everything)
                .into_iter()
                .filter(|(stream, _)| stream.starts_with("order-"))
                .collect();
            assert_eq!(of_orders, visible, "{name}: a query of every event");
        });
    }
}

#[test]
fn max_age_is_judged_against_the_committed_clock_not_the_readers() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append_at("a", 2, T0)).await;
            s.apply(append_at("a", 1, T0 + 60_000)).await;
            let one_minute = StreamMetadata {
                max_age_secs: Some(30),
                ..Default::default()
            };
            s.apply(set_meta("a", E::Any, one_minute)).await;
            // The newest committed event is at T0 + 60 s: the first two are over 30 s old.
            assert_eq!(revisions(&s, "a"), vec![2], "{name}");
            assert_eq!(all_of(&s, "a"), vec![2], "{name}");
            // A leader whose clock went back cannot make hidden events visible again.
            s.apply(append_at("b", 1, T0)).await;
            assert_eq!(revisions(&s, "a"), vec![2], "{name}");
            assert!(s.stream("b")[0].created_unix_ms >= T0 + 60_000, "{name}");
        });
    }
}

#[test]
fn a_soft_deleted_stream_reads_as_not_found_and_is_recreated_after_its_old_revisions() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("a", E::NoStream, events(3))).await;
            assert_eq!(
                s.apply(delete("a", E::Exact(1), DeleteKind::Soft)).await,
                AppendResult::WrongExpectedVersion {
                    expected: E::Exact(1),
                    actual: Some(2)
                },
                "{name}"
            );
            assert!(written(
                &s.apply(delete("a", E::Exact(2), DeleteKind::Soft)).await
            ));
            assert_eq!(
                s.store.reader.stream_status("a").unwrap(),
                StreamStatus::NotFound
            );
            assert!(revisions(&s, "a").is_empty(), "{name}");
            assert!(all_of(&s, "a").is_empty(), "{name}");
            assert_eq!(
                s.apply(delete("a", E::Any, DeleteKind::Soft)).await,
                AppendResult::StreamNotFound,
                "{name}: deleting it again"
            );
            // Recreated with no_stream: revisions continue after the old last one.
            let result = s.apply(append("a", E::NoStream, events(2))).await;
            assert!(
                matches!(result, AppendResult::Written(p) if p.last_revision == 4),
                "{name}: {result:?}"
            );
            assert_eq!(revisions(&s, "a"), vec![3, 4], "{name}");
            assert_eq!(all_of(&s, "a"), vec![3, 4], "{name}");
            assert_eq!(
                s.store.reader.stream_status("a").unwrap(),
                StreamStatus::Exists(4)
            );
        });
    }
}

#[test]
fn a_tombstoned_stream_is_never_written_again_and_a_second_tombstone_changes_nothing() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("a", E::NoStream, events(2))).await;
            let tombstone = delete("a", E::Any, DeleteKind::Tombstone);
            assert!(written(&s.apply(tombstone.clone()).await));
            // A retry of the same command (same id) gets its original answer.
            assert!(matches!(
                s.apply(tombstone).await,
                AppendResult::AlreadyWritten(_)
            ));
            let before = s.all().len();
            for command in [
                append("a", E::Any, events(1)),
                append("a", E::NoStream, events(1)),
                delete("a", E::Any, DeleteKind::Tombstone),
                delete("a", E::Any, DeleteKind::Soft),
                set_meta("a", E::Any, StreamMetadata::default()),
            ] {
                assert_eq!(
                    s.apply(command).await,
                    AppendResult::StreamDeleted,
                    "{name}"
                );
            }
            assert_eq!(s.all().len(), before, "{name}: nothing written");
            assert_eq!(
                s.store.reader.stream_status("a").unwrap(),
                StreamStatus::Tombstoned
            );
            assert!(revisions(&s, "a").is_empty(), "{name}");
            assert!(all_of(&s, "a").is_empty(), "{name}");
        });
    }
}

#[test]
fn bad_metadata_is_refused_and_changes_nothing() {
    run(async {
        let mut s = TestStore::mem();
        s.apply(append("a", E::NoStream, events(1))).await;
        let bad = [
            StreamMetadata {
                max_count: Some(0),
                ..Default::default()
            },
            StreamMetadata {
                max_age_secs: Some(u64::MAX),
                ..Default::default()
            },
            StreamMetadata {
                custom: Some("[1, 2]".to_owned()),
                ..Default::default()
            },
            StreamMetadata {
                custom: Some("{not json".to_owned()),
                ..Default::default()
            },
        ];
        for metadata in bad {
            let result = s.apply(set_meta("a", E::Any, metadata.clone())).await;
            assert!(
                matches!(result, AppendResult::Rejected(AppendRejection::Invalid(_))),
                "{metadata:?}: {result:?}"
            );
        }
        assert_eq!(
            s.apply(set_meta("$all", E::Any, StreamMetadata::default()))
                .await,
            AppendResult::Rejected(AppendRejection::Invalid(InvalidInput::ReservedStreamName {
                name: "$all".to_owned()
            }))
        );
        assert!(s.store.reader.stream_lifecycle("a").unwrap().is_none());
        assert_eq!(s.all().len(), 1);
    });
}

#[test]
fn lifecycle_survives_a_snapshot_install() {
    run(async {
        let mut s = TestStore::mem();
        s.apply(append("a", E::NoStream, events(5))).await;
        s.apply(append("b", E::NoStream, events(2))).await;
        s.apply(set_meta(
            "a",
            E::Any,
            StreamMetadata {
                max_count: Some(2),
                custom: Some(r#"{"owner":"x"}"#.to_owned()),
                ..Default::default()
            },
        ))
        .await;
        s.apply(delete("b", E::Any, DeleteKind::Tombstone)).await;
        let snapshot = s.build_snapshot().await;
        let mut t = TestStore::mem();
        crate::snapshot::ship(snapshot, &mut t).await;
        assert_eq!(revisions(&t, "a"), vec![3, 4]);
        assert_eq!(
            t.store.reader.stream_status("b").unwrap(),
            StreamStatus::Tombstoned
        );
        let (state, _) = t.store.reader.stream_lifecycle("a").unwrap().unwrap();
        assert_eq!(state.metadata().custom.as_deref(), Some(r#"{"owner":"x"}"#));
    });
}
