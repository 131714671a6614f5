//! Expected revisions, atomic appends, idempotency, created time.

use cairn_raft_store::{
    AppendPosition, AppendRejection, AppendResult, Command, ExpectedRevision as E,
};

use crate::common::*;

fn written(last_revision: u64, last_position: u64) -> AppendResult {
    AppendResult::Written(AppendPosition {
        last_revision,
        last_position,
    })
}

#[test]
fn every_expected_revision_case_gets_the_right_verdict_on_both_disks() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            // no stream yet
            assert_eq!(
                s.apply(append("a", E::StreamExists, events(1))).await,
                AppendResult::WrongExpectedVersion {
                    expected: E::StreamExists,
                    actual: None
                },
                "{name}: stream_exists on a missing stream"
            );
            assert_eq!(
                s.apply(append("a", E::Exact(0), events(1))).await,
                AppendResult::WrongExpectedVersion {
                    expected: E::Exact(0),
                    actual: None
                },
                "{name}: exact on a missing stream"
            );
            assert_eq!(
                s.apply(append("a", E::NoStream, events(2))).await,
                written(1, 1),
                "{name}"
            );
            assert_eq!(
                s.apply(append("a", E::NoStream, events(1))).await,
                AppendResult::WrongExpectedVersion {
                    expected: E::NoStream,
                    actual: Some(1)
                },
                "{name}: no_stream on an existing stream"
            );
            assert_eq!(
                s.apply(append("a", E::StreamExists, events(1))).await,
                written(2, 2),
                "{name}"
            );
            assert_eq!(
                s.apply(append("a", E::Exact(2), events(3))).await,
                written(5, 5),
                "{name}"
            );
            assert_eq!(
                s.apply(append("a", E::Exact(2), events(1))).await,
                AppendResult::WrongExpectedVersion {
                    expected: E::Exact(2),
                    actual: Some(5)
                },
                "{name}: stale exact revision"
            );
            assert_eq!(
                s.apply(append("a", E::Exact(9), events(1))).await,
                AppendResult::WrongExpectedVersion {
                    expected: E::Exact(9),
                    actual: Some(5)
                },
                "{name}: future exact revision"
            );
            assert_eq!(
                s.apply(append("b", E::Any, events(1))).await,
                written(0, 6),
                "{name}"
            );
            assert_eq!(
                s.apply(append("a", E::Any, events(1))).await,
                written(6, 7),
                "{name}"
            );
            // Only successful appends are visible, gapless in both numberings.
            let a = s.stream("a");
            assert_eq!(
                a.iter().map(|e| e.revision).collect::<Vec<_>>(),
                (0..7).collect::<Vec<_>>(),
                "{name}"
            );
            let all = s.all();
            assert_eq!(
                all.iter().map(|e| e.position).collect::<Vec<_>>(),
                (0..8).collect::<Vec<_>>(),
                "{name}"
            );
            assert_eq!(s.store.reader.stream_head("a").unwrap(), Some(6), "{name}");
            assert_eq!(s.store.reader.stream_head("zzz").unwrap(), None, "{name}");
        });
    }
}

#[test]
fn conflicting_appends_in_one_batch_get_exactly_one_success() {
    run(async {
        let mut s = TestStore::mem();
        s.apply(append("hot", E::NoStream, events(1))).await;
        let results = s
            .apply_all(
                (0..5)
                    .map(|_| append("hot", E::Exact(0), events(2)))
                    .collect(),
            )
            .await;
        let successes = results
            .iter()
            .filter(|r| matches!(r, AppendResult::Written(_)))
            .count();
        assert_eq!(successes, 1, "{results:?}");
        assert_eq!(results[0], written(2, 2));
        for r in &results[1..] {
            assert_eq!(
                r,
                &AppendResult::WrongExpectedVersion {
                    expected: E::Exact(0),
                    actual: Some(2)
                }
            );
        }
        assert_eq!(s.stream("hot").len(), 3);
    });
}

#[test]
fn a_multi_event_append_lands_contiguously_with_the_command_created_time() {
    run(async {
        let mut s = TestStore::mem();
        s.apply(append("x", E::Any, events(1))).await;
        let batch = events(4);
        let ids: Vec<_> = batch.iter().map(|e| e.id).collect();
        assert_eq!(
            s.apply(append("y", E::NoStream, batch)).await,
            written(3, 4)
        );
        let y = s.stream("y");
        assert_eq!(y.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert_eq!(
            y.iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(y.iter().all(|e| e.created_unix_ms == 1_700_000_000_000));
        assert!(y.iter().all(|e| e.stream == "y"));
    });
}

#[test]
fn an_exact_retry_returns_the_original_result_and_writes_nothing() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("s", E::NoStream, events(2))).await;
            let batch = events(3);
            let original = s.apply(append("s", E::Exact(1), batch.clone())).await;
            assert_eq!(original, written(4, 4), "{name}");
            s.apply(append("other", E::Any, events(1))).await;
            // The retry's expected revision is stale now, but it is the same append.
            let retry = s.apply(append("s", E::Exact(1), batch.clone())).await;
            assert_eq!(
                retry,
                AppendResult::AlreadyWritten(AppendPosition {
                    last_revision: 4,
                    last_position: 4
                }),
                "{name}"
            );
            let retry_any = s.apply(append("s", E::Any, batch)).await;
            assert!(
                matches!(retry_any, AppendResult::AlreadyWritten(_)),
                "{name}: {retry_any:?}"
            );
            assert_eq!(s.all().len(), 6, "{name}: nothing written twice");
        });
    }
}

#[test]
fn a_retry_in_the_same_batch_as_its_original_is_recognised() {
    run(async {
        let mut s = TestStore::mem();
        let batch = events(2);
        let results = s
            .apply_all(vec![
                append("s", E::NoStream, batch.clone()),
                append("s", E::NoStream, batch),
            ])
            .await;
        assert_eq!(results[0], written(1, 1));
        assert_eq!(
            results[1],
            AppendResult::AlreadyWritten(AppendPosition {
                last_revision: 1,
                last_position: 1
            })
        );
        assert_eq!(s.all().len(), 2);
    });
}

#[test]
fn a_group_commit_entry_gives_each_append_the_verdict_it_would_get_alone() {
    let original = events(2);
    let all = {
        vec![
            append("hot", E::NoStream, original.clone()),
            append("hot", E::NoStream, events(1)),
            append("hot", E::Exact(1), events(3)),
            append("hot", E::Exact(1), events(1)),
            // an exact retry of the first, in the same entry
            append("hot", E::NoStream, original.clone()),
            append("", E::Any, events(1)),
            append("cold", E::StreamExists, events(1)),
            append("cold", E::Any, events(2)),
        ]
    };
    let appends = || all.clone();
    run(async {
        let mut alone = TestStore::mem();
        let one_by_one = alone.apply_all(appends()).await;
        let group = appends()
            .into_iter()
            .map(|c| match c {
                Command::Append(a) => a,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut grouped = TestStore::mem();
        let together = grouped.apply_all(vec![Command::Appends(group)]).await;
        assert_eq!(together, one_by_one);
        assert_eq!(one_by_one[0], written(1, 1));
        assert!(matches!(
            one_by_one[1],
            AppendResult::WrongExpectedVersion { .. }
        ));
        assert_eq!(one_by_one[2], written(4, 4));
        assert!(matches!(
            one_by_one[3],
            AppendResult::WrongExpectedVersion { .. }
        ));
        assert!(matches!(one_by_one[4], AppendResult::AlreadyWritten(_)));
        assert!(matches!(one_by_one[5], AppendResult::Rejected(_)));
        assert!(matches!(
            one_by_one[6],
            AppendResult::WrongExpectedVersion { .. }
        ));
        assert_eq!(one_by_one[7], written(1, 6));
        let stored = |s: &TestStore| {
            s.all()
                .iter()
                .map(|e| (e.id, e.stream.clone(), e.revision, e.position))
                .collect::<Vec<_>>()
        };
        assert_eq!(stored(&grouped), stored(&alone));
    });
}

#[test]
fn idempotency_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let batch = events(3);
    let open = || {
        let disk = cairn_raft_store::disk::FjallDisk::open(dir.path(), Default::default()).unwrap();
        TestStore::on(disk, None)
    };
    run(async {
        let mut s = open();
        assert_eq!(
            s.apply(append("s", E::NoStream, batch.clone())).await,
            written(2, 2)
        );
        s.disk.sync().unwrap();
    });
    run(async {
        let mut s = open();
        let retry = s.apply(append("s", E::NoStream, batch.clone())).await;
        assert_eq!(
            retry,
            AppendResult::AlreadyWritten(AppendPosition {
                last_revision: 2,
                last_position: 2
            })
        );
        assert_eq!(s.all().len(), 3);
    });
}

/// Issue 14: `--id X` with another type and data was answered "already written: a retry" and
/// stored nothing. Same ids at the same place are a retry only when every event is the one
/// stored under its id; otherwise the verdict is a content conflict naming the first differing
/// id, and nothing is written, also in the same batch as the original and after a restart.
#[test]
fn an_id_reused_with_other_content_is_refused_and_writes_nothing() {
    type Change = fn(&mut cairn_raft_store::NewEvent);
    let changes: [(&str, Change); 4] = [
        ("type", |e| e.event_type.push('2')),
        ("content type", |e| {
            e.content_type = cairn_raft_store::ContentType::Binary
        }),
        ("data", |e| e.data.push(b' ')),
        ("metadata", |e| e.metadata.push(b'm')),
    ];
    let conflict = |result: &AppendResult, id: uuid::Uuid, position: u64| {
        *result == AppendResult::Rejected(AppendRejection::ContentConflict { id, position })
    };
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("s", E::Any, events(1))).await;
            let batch = events(3);
            assert_eq!(
                s.apply(append("s", E::Exact(0), batch.clone())).await,
                written(3, 3)
            );
            let before = s.all();
            for (what, change) in changes {
                let mut reused = batch.clone();
                change(&mut reused[1]);
                for expected in [E::Exact(0), E::Any, E::StreamExists] {
                    let result = s.apply(append("s", expected, reused.clone())).await;
                    assert!(
                        conflict(&result, batch[1].id, 2),
                        "{name}: other {what}, expected {expected}: {result:?}"
                    );
                }
            }
            // The case: one event, a reused id, --expected no-stream.
            let first = before[0].clone();
            let mut one = events(1);
            one[0].id = first.id;
            one[0].event_type = "OrderShipped".into();
            let result = s.apply(append("s", E::NoStream, one)).await;
            assert!(conflict(&result, first.id, 0), "{name}: {result:?}");
            assert_eq!(s.all(), before, "{name}: nothing written");
            // A true retry still gets the original answer.
            assert_eq!(
                s.apply(append("s", E::Exact(0), batch.clone())).await,
                AppendResult::AlreadyWritten(AppendPosition {
                    last_revision: 3,
                    last_position: 3
                }),
                "{name}"
            );
        });
    }
    // In the same batch as the original.
    run(async {
        let mut s = TestStore::mem();
        let batch = events(2);
        let mut reused = batch.clone();
        reused[0].data = b"{\"other\":true}".to_vec();
        let results = s
            .apply_all(vec![
                append("s", E::NoStream, batch.clone()),
                append("s", E::NoStream, reused),
            ])
            .await;
        assert_eq!(results[0], written(1, 1));
        assert!(conflict(&results[1], batch[0].id, 0), "{:?}", results[1]);
        assert_eq!(s.all().len(), 2);
    });
    // After a restart (the comparison reads the stored events back from disk).
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let disk = cairn_raft_store::disk::FjallDisk::open(dir.path(), Default::default()).unwrap();
        TestStore::on(disk, None)
    };
    let batch = events(2);
    run(async {
        let mut s = open();
        s.apply(append("s", E::NoStream, batch.clone())).await;
        s.disk.sync().unwrap();
    });
    run(async {
        let mut s = open();
        let mut reused = batch.clone();
        reused[1].event_type = "Other".into();
        let result = s.apply(append("s", E::NoStream, reused)).await;
        assert!(conflict(&result, batch[1].id, 1), "{result:?}");
        assert_eq!(s.all().len(), 2);
    });
}

#[test]
fn a_retry_whose_ids_only_partly_match_is_rejected_and_writes_nothing() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            let batch = events(3);
            s.apply(append("s", E::NoStream, batch.clone())).await;
            let before = s.all();
            let cases = vec![
                ("prefix", batch[..2].to_vec(), E::NoStream),
                (
                    "superset",
                    {
                        let mut b = batch.clone();
                        b.extend(events(1));
                        b
                    },
                    E::NoStream,
                ),
                (
                    "one reused id",
                    {
                        let mut b = events(2);
                        b.push(batch[1].clone());
                        b
                    },
                    E::Any,
                ),
                (
                    "reordered",
                    vec![batch[1].clone(), batch[0].clone(), batch[2].clone()],
                    E::NoStream,
                ),
                ("other stream", batch.clone(), E::Any),
                ("other place", batch.clone(), E::Exact(7)),
            ];
            for (case, events, expected) in cases {
                let stream = if case == "other stream" { "t" } else { "s" };
                let result = s.apply(append(stream, expected, events)).await;
                assert!(
                    matches!(
                        result,
                        AppendResult::Rejected(AppendRejection::IdempotencyConflict { .. })
                    ),
                    "{name}/{case}: {result:?}"
                );
            }
            assert_eq!(s.all(), before, "{name}: nothing written");
        });
    }
}

/// Ids that share their first 8 bytes (custom sequential ids, or a big append of UUIDv7s from
/// one millisecond) fill one id bucket and then overflow to keys of their own: every one of
/// them still counts, before and after a restart, as a retry or as a conflict.
#[test]
fn ids_overflowing_one_id_bucket_keep_idempotency_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let shared_prefix = |n: u64| -> Vec<cairn_raft_store::NewEvent> {
        (0..n)
            .map(|i| {
                let mut e = event("Tested", b"{}");
                e.id = uuid::Uuid::from_u64_pair(42, i);
                e
            })
            .collect()
    };
    let batch = shared_prefix(700);
    let (first, second) = (batch[..300].to_vec(), batch[300..].to_vec());
    let open = || {
        let disk = cairn_raft_store::disk::FjallDisk::open(dir.path(), Default::default()).unwrap();
        TestStore::on(disk, None)
    };
    let conflicts = |result: &AppendResult| {
        matches!(
            result,
            AppendResult::Rejected(AppendRejection::IdempotencyConflict { .. })
        )
    };
    run(async {
        let mut s = open();
        assert_eq!(
            s.apply(append("s", E::NoStream, first.clone())).await,
            written(299, 299)
        );
        assert_eq!(
            s.apply(append("s", E::Exact(299), second.clone())).await,
            written(699, 699)
        );
        s.disk.sync().unwrap();
    });
    run(async {
        let mut s = open();
        let before = s.all();
        assert_eq!(before.len(), 700);
        assert_eq!(
            s.apply(append("s", E::NoStream, first.clone())).await,
            AppendResult::AlreadyWritten(AppendPosition {
                last_revision: 299,
                last_position: 299
            })
        );
        assert_eq!(
            s.apply(append("s", E::Exact(299), second.clone())).await,
            AppendResult::AlreadyWritten(AppendPosition {
                last_revision: 699,
                last_position: 699
            })
        );
        // One reused id, from the bucket and from the overflow, each beside a new id.
        for reused in [&batch[3], &batch[650]] {
            let result = s
                .apply(append(
                    "t",
                    E::Any,
                    vec![event("New", b"{}"), reused.clone()],
                ))
                .await;
            assert!(conflicts(&result), "{result:?}");
        }
        assert_eq!(s.all(), before, "nothing written");
    });
}
