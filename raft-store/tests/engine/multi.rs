//! Multi-stream appends and DCB conditions at apply, and DCB query reads.

use cairn_raft_store::{
    AppendCondition, AppendRejection, Direction, ExpectedRevision as E, InvalidInput, MultiAppend,
    MultiAppendResult as M, MultiPosition, NewEvent, Query, QueryItem, RecordedEvent, StreamAppend,
    Write, WriteResult, DCB_STREAM,
};

use crate::common::*;

fn tagged(event_type: &str, tags: &[&str]) -> NewEvent {
    let mut e = event(event_type, b"{}");
    e.tags = tags.iter().map(|t| t.to_string()).collect();
    e
}

fn part(stream: &str, expected: E, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream: stream.into(),
        expected,
        events,
    }
}

fn multi(streams: Vec<StreamAppend>, condition: Option<AppendCondition>) -> MultiAppend {
    MultiAppend {
        streams,
        condition,
        created_unix_ms: 1_700_000_000_000,
    }
}

fn item(types: &[&str], tags: &[&str]) -> QueryItem {
    QueryItem {
        types: types.iter().map(|s| s.to_string()).collect(),
        tags: tags.iter().map(|s| s.to_string()).collect(),
    }
}

fn fail_if(items: Vec<QueryItem>, after: Option<u64>) -> Option<AppendCondition> {
    Some(AppendCondition {
        fail_if_events_match: Query { items },
        after,
    })
}

/// A DCB append: events in the DCB stream, with a condition.
fn dcb(events: Vec<NewEvent>, condition: Option<AppendCondition>) -> MultiAppend {
    multi(vec![part(DCB_STREAM, E::Any, events)], condition)
}

#[test]
fn a_multi_stream_append_lands_contiguously_or_not_at_all() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("order-1", E::Any, events(2))).await;
            let written = s
                .apply_multi(multi(
                    vec![
                        part("order-1", E::Exact(1), events(2)),
                        part("stock-9", E::NoStream, events(3)),
                    ],
                    None,
                ))
                .await;
            assert_eq!(
                written,
                M::Written(MultiPosition {
                    last_revisions: vec![("order-1".into(), 3), ("stock-9".into(), 2)],
                    last_position: 6,
                }),
                "{name}"
            );
            let all = s.all();
            let streams: Vec<_> = all[2..].iter().map(|e| e.stream.as_str()).collect();
            assert_eq!(
                streams,
                ["order-1", "order-1", "stock-9", "stock-9", "stock-9"],
                "{name}"
            );
            // One stream's expectation fails: the verdict names it, nothing of either lands.
            let refused = s
                .apply_multi(multi(
                    vec![
                        part("order-1", E::Exact(3), events(1)),
                        part("stock-9", E::Exact(0), events(1)),
                    ],
                    None,
                ))
                .await;
            assert_eq!(
                refused,
                M::WrongExpectedVersion {
                    stream: "stock-9".into(),
                    expected: E::Exact(0),
                    actual: Some(2),
                },
                "{name}"
            );
            assert_eq!(s.all().len(), 7, "{name}: nothing written");
            assert_eq!(s.stream("order-1").len(), 4, "{name}");
            assert!(s.assert_indexes_match_all(name) > 0);
        });
    }
}

#[test]
fn a_retried_multi_stream_append_returns_the_original_result_and_writes_nothing() {
    run(async {
        let mut s = TestStore::mem();
        let request = multi(
            vec![
                part("a-1", E::NoStream, events(2)),
                part("b-1", E::NoStream, events(1)),
            ],
            fail_if(vec![item(&["Tested"], &[])], None),
        );
        let M::Written(first) = s.apply_multi(request.clone()).await else {
            panic!("first write refused")
        };
        s.apply(append("c-1", E::Any, events(2))).await;
        // The retry passes although its condition now fails (the original was checked).
        assert_eq!(
            s.apply_multi(request.clone()).await,
            M::AlreadyWritten(first.clone())
        );
        assert_eq!(s.all().len(), 5);
        // The same ids with other content, or only one of the parts, are not retries.
        let mut other = request.clone();
        other.streams[1].events[0].data = b"{\"other\":1}".to_vec();
        assert!(matches!(
            s.apply_multi(other).await,
            M::Rejected(AppendRejection::ContentConflict { .. })
        ));
        let mut partial = request.clone();
        partial.streams[1].events = events(1);
        assert!(matches!(
            s.apply_multi(partial).await,
            M::Rejected(AppendRejection::IdempotencyConflict { .. })
        ));
        assert_eq!(s.all().len(), 5, "nothing written by refused retries");
    });
}

#[test]
fn a_dcb_condition_fails_on_a_matching_event_after_its_position_and_names_the_first() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply_multi(dcb(vec![tagged("CourseDefined", &["course:1"])], None))
                .await;
            s.apply(append("x-1", E::Any, vec![tagged("Other", &["course:1"])]))
                .await;
            s.apply_multi(dcb(
                vec![tagged("StudentSubscribed", &["course:1", "student:1"])],
                None,
            ))
            .await;
            s.apply(append("x-1", E::Any, vec![tagged("Other", &[])]))
                .await;
            let course = || vec![item(&["StudentSubscribed", "CourseDefined"], &["course:1"])];
            // Matches at 0 and 2 (not 1: wrong type; not 3: no tag): the first after `after`.
            assert_eq!(
                s.apply_multi(dcb(
                    vec![tagged("StudentSubscribed", &[])],
                    fail_if(course(), Some(0))
                ))
                .await,
                M::ConditionFailed { position: 2 },
                "{name}"
            );
            assert_eq!(
                s.apply_multi(dcb(vec![tagged("X", &[])], fail_if(course(), None)))
                    .await,
                M::ConditionFailed { position: 0 },
                "{name}"
            );
            // After the last match: holds. Tags AND'ed: student:2 never matched.
            assert!(matches!(
                s.apply_multi(dcb(vec![tagged("X", &[])], fail_if(course(), Some(2))))
                    .await,
                M::Written(_)
            ));
            assert!(matches!(
                s.apply_multi(dcb(
                    vec![tagged("X", &[])],
                    fail_if(vec![item(&[], &["course:1", "student:2"])], None)
                ))
                .await,
                M::Written(_)
            ));
            // An empty query matches every event.
            assert_eq!(
                s.apply_multi(dcb(vec![tagged("X", &[])], fail_if(vec![], Some(3))))
                    .await,
                M::ConditionFailed { position: 4 },
                "{name}"
            );
            assert_eq!(s.all().len(), 6, "{name}");
            assert_eq!(s.stream(DCB_STREAM).len(), 4, "{name}");
        });
    }
}

/// Conditional appends gathered into one entry: each sees the ones before it (exactly as if
/// each were an entry of its own), so of many claiming one user name, one succeeds.
#[test]
fn of_conflicting_conditional_appends_in_one_entry_exactly_one_succeeds() {
    run(async {
        let mut s = TestStore::mem();
        let claim = || {
            Write::Multi(dcb(
                vec![tagged("UserRegistered", &["username:ada"])],
                fail_if(vec![item(&["UserRegistered"], &["username:ada"])], None),
            ))
        };
        let results = s.apply_writes((0..8).map(|_| claim()).collect()).await;
        let won = results
            .iter()
            .filter(|r| matches!(r, WriteResult::Multi(M::Written(_))))
            .count();
        assert_eq!(won, 1, "{results:?}");
        assert!(results[1..]
            .iter()
            .all(|r| matches!(r, WriteResult::Multi(M::ConditionFailed { position: 0 }))));
        assert_eq!(s.all().len(), 1);
    });
}

fn filtered(all: &[RecordedEvent], query: &Query) -> Vec<RecordedEvent> {
    all.iter()
        .filter(|e| cairn_raft_store::query_matches(query, &e.event_type, &e.tags))
        .cloned()
        .collect()
}

#[test]
fn query_reads_equal_all_filtered_forwards_backwards_and_from_the_middle() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            for i in 0..30u32 {
                let tags: Vec<String> = (0..3)
                    .filter(|k| i % (k + 2) == 0)
                    .map(|k| format!("k{k}"))
                    .collect();
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                let t = ["A", "B", "C"][(i % 3) as usize];
                s.apply(append(
                    &format!("s-{}", i % 4),
                    E::Any,
                    vec![tagged(t, &tags)],
                ))
                .await;
            }
            s.apply(append("s-0", E::Any, events(5))).await;
            let queries = [
                Query { items: vec![] },
                Query {
                    items: vec![item(&["A"], &[])],
                },
                Query {
                    items: vec![item(&["A", "C"], &["k0"])],
                },
                Query {
                    items: vec![item(&[], &["k0", "k1"])],
                },
                Query {
                    items: vec![item(&["B"], &["k2"]), item(&["Tested"], &["both"])],
                },
                Query {
                    items: vec![item(&["Nope"], &[])],
                },
            ];
            let all = s.all();
            for query in &queries {
                let expected = filtered(&all, query);
                for from in [0u64, 17] {
                    let read: Vec<_> = s
                        .store
                        .reader
                        .read_query(query, from, Direction::Forwards, u64::MAX)
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let want: Vec<_> = expected
                        .iter()
                        .filter(|e| e.position >= from)
                        .cloned()
                        .collect();
                    assert_eq!(read, want, "{name}: {query:?} from {from}");
                }
                for from in [u64::MAX, 17] {
                    let read: Vec<_> = s
                        .store
                        .reader
                        .read_query(query, from, Direction::Backwards, 3)
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let want: Vec<_> = expected
                        .iter()
                        .rev()
                        .filter(|e| e.position <= from)
                        .take(3)
                        .cloned()
                        .collect();
                    assert_eq!(read, want, "{name}: {query:?} backwards from {from}");
                }
            }
        });
    }
}

#[test]
fn bad_multi_stream_appends_are_refused_naming_the_problem_and_write_nothing() {
    run(async {
        let mut s = TestStore::mem();
        let cases = [
            (
                multi(vec![part("$system", E::Any, events(1))], None),
                InvalidInput::ReservedStreamName {
                    name: "$system".into(),
                },
            ),
            (
                multi(
                    vec![part("a", E::Any, events(1)), part("a", E::Any, events(1))],
                    None,
                ),
                InvalidInput::DuplicateStreamInAppend { stream: "a".into() },
            ),
            (
                multi(
                    vec![part("a", E::Any, events(1))],
                    fail_if(vec![item(&[], &[])], None),
                ),
                InvalidInput::EmptyQueryItem { item: 0 },
            ),
            (
                multi(
                    vec![part("a", E::Any, events(1))],
                    fail_if((0..17).map(|_| item(&["A"], &[])).collect(), None),
                ),
                InvalidInput::TooManyQueryItems { count: 17, max: 16 },
            ),
            (multi(vec![], None), InvalidInput::NoEvents),
        ];
        for (request, invalid) in cases {
            assert_eq!(
                s.apply_multi(request).await,
                M::Rejected(AppendRejection::Invalid(invalid))
            );
        }
        // The limits count over the whole request: 6,000 + 6,000 events > 10,000.
        let big = multi(
            vec![
                part("a", E::Any, events(6_000)),
                part("b", E::Any, events(6_000)),
            ],
            None,
        );
        assert!(matches!(
            s.apply_multi(big).await,
            M::Rejected(AppendRejection::Invalid(InvalidInput::TooManyEvents {
                count: 12_000,
                ..
            }))
        ));
        assert!(s.all().is_empty());
    });
}

/// Past `MAX_UNFLUSHED_CONDITION_EVENTS` pending events a condition is judged from the
/// indexes after a write of what is pending: the same verdict.
#[test]
fn a_condition_behind_many_pending_events_of_the_same_entry_still_sees_them() {
    run(async {
        let mut s = TestStore::mem();
        let seat = || tagged("Seat", &["seat:1"]);
        let claim = |n: u32, after: u64| {
            let mut e = seat();
            e.data = format!("{{\"n\":{n}}}").into_bytes();
            Write::Multi(dcb(
                vec![e],
                fail_if(vec![item(&["Seat"], &["seat:1"])], Some(after)),
            ))
        };
        let many = cairn_raft_store::MAX_UNFLUSHED_CONDITION_EVENTS + 5;
        let results = s
            .apply_writes(vec![
                Write::Append(cairn_raft_store::Append {
                    stream: "x".into(),
                    expected: E::Any,
                    events: vec![tagged("Other", &[])],
                    created_unix_ms: 1,
                }),
                claim(1, 0),
                Write::Append(cairn_raft_store::Append {
                    stream: "seats".into(),
                    expected: E::Any,
                    events: (0..many).map(|_| seat()).collect(),
                    created_unix_ms: 1,
                }),
                // After claim 1's seat (position 1): the first of the many is the match.
                claim(2, 1),
            ])
            .await;
        assert!(
            matches!(results[1], WriteResult::Multi(M::Written(_))),
            "{results:?}"
        );
        assert_eq!(
            results[3],
            WriteResult::Multi(M::ConditionFailed { position: 2 })
        );
    });
}
