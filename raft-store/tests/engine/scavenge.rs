//! Scavenge: groups retention hides wholly are forgotten at one log point (every index, the
//! ids) and their bytes given back by the reclaimer; every shown event stays, across a
//! reopen, a snapshot install and a crash at either half.

use cairn_raft_store::disk::MemDisk;
use cairn_raft_store::{
    Command, DeleteKind, DeleteStream, Direction, Entry, EntryPayload, ExpectedRevision as E,
    IndexName, NewEvent, Query, QueryItem, RecordedEvent, Response, Scavenge, ScavengeResult,
    SetStreamMetadata, StreamMetadata,
};
use openraft::storage::RaftStateMachine;
use uuid::Uuid;

use crate::common::*;

const T0: u64 = 1_700_000_000_000;

fn tagged(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| {
            let mut e = event("Placed", b"{\"marker\":\"SCAVENGE-ME\"}");
            e.tags = vec!["shop:1".to_owned()];
            e
        })
        .collect()
}

fn set_meta(stream: &str, metadata: StreamMetadata) -> Command {
    Command::SetStreamMetadata(SetStreamMetadata {
        stream: stream.to_owned(),
        expected: E::Any,
        metadata,
        id: Uuid::new_v4(),
        created_unix_ms: T0,
    })
}

fn delete(stream: &str, kind: DeleteKind) -> Command {
    Command::DeleteStream(DeleteStream {
        stream: stream.to_owned(),
        expected: E::Any,
        kind,
        id: Uuid::new_v4(),
        created_unix_ms: T0,
    })
}

/// `a`: 10 appends, max count 3; `b`: 5 appends, soft-deleted; `c`: 3 appends, tombstoned;
/// `d`: 4 appends, nothing hides them. Returns the ids of `a`'s first append.
async fn populate(s: &mut TestStore) -> Vec<Uuid> {
    let mut first_ids = Vec::new();
    for (stream, appends) in [("a", 10), ("b", 5), ("c", 3), ("d", 4)] {
        for _ in 0..appends {
            let events = tagged(2);
            if first_ids.is_empty() {
                first_ids = events.iter().map(|e| e.id).collect();
            }
            s.apply(append(stream, E::Any, events)).await;
        }
    }
    let keep_three = StreamMetadata {
        max_count: Some(3),
        ..Default::default()
    };
    s.apply(set_meta("a", keep_three)).await;
    s.apply(delete("b", DeleteKind::Soft)).await;
    s.apply(delete("c", DeleteKind::Tombstone)).await;
    first_ids
}

/// Every command of one scavenge pass, as a driver proposes them; the results summed.
async fn scavenge(s: &mut TestStore) -> ScavengeResult {
    scavenge_within(s, None).await.0
}

/// `scavenge` with commands that stop after `max_event_bytes` of examined events (the
/// node's driver's `Command::ScavengeWithin`); also the steps it took.
async fn scavenge_within(s: &mut TestStore, max_event_bytes: Option<u64>) -> (ScavengeResult, u64) {
    let mut total = ScavengeResult::default();
    let mut steps = 0;
    let mut from = Some(0);
    while let Some(from_position) = from {
        steps += 1;
        let scavenge = Scavenge {
            from_position,
            created_unix_ms: T0,
        };
        let command = match max_event_bytes {
            Some(max_event_bytes) => Command::ScavengeWithin {
                scavenge,
                max_event_bytes,
            },
            None => Command::Scavenge(scavenge),
        };
        let entry = Entry {
            log_id: log_id(s.next_index),
            payload: EntryPayload::Normal(command),
        };
        s.next_index += 1;
        let result = match s.sm().apply_entries(vec![entry]).await.unwrap().remove(0) {
            Response::Scavenged(result) => result,
            other => panic!("unexpected response {other:?}"),
        };
        total.examined_groups += result.examined_groups;
        total.removed_groups += result.removed_groups;
        total.removed_events += result.removed_events;
        total.removed_bytes += result.removed_bytes;
        from = result.next_position;
    }
    (total, steps)
}

/// A step within a byte budget stops at the group that reaches it (one group at least), and
/// the pass of such steps removes exactly what one unbounded pass removes.
#[test]
fn a_scavenge_within_a_byte_budget_takes_more_steps_and_removes_the_same() {
    for (name, make) in both() {
        run(async {
            let mut unbounded = make();
            populate(&mut unbounded).await;
            let (whole, steps) = scavenge_within(&mut unbounded, None).await;
            assert_eq!(steps, 1, "{name}");
            // Ids are random per store: compare where the shown events are.
            let places = |s: &TestStore| -> Vec<Vec<(String, u64, u64)>> {
                views(s)
                    .iter()
                    .map(|v| {
                        v.iter()
                            .map(|e| (e.stream.clone(), e.revision, e.position))
                            .collect()
                    })
                    .collect()
            };
            // An append here holds 48 bytes of events (a metastream's, about 20): a budget
            // of 1 byte stops after every group, one of 100 after two or three.
            for budget in [1, 100] {
                let mut s = make();
                populate(&mut s).await;
                let (result, steps) = scavenge_within(&mut s, Some(budget)).await;
                assert_eq!(result.removed_groups, whole.removed_groups, "{name}");
                assert_eq!(result.removed_events, whole.removed_events, "{name}");
                assert_eq!(result.examined_groups, whole.examined_groups, "{name}");
                if budget == 1 {
                    assert_eq!(steps, whole.examined_groups, "{name}");
                } else {
                    assert!(
                        steps > 1 && steps <= whole.examined_groups.div_ceil(2),
                        "{name}: {steps} steps of {} groups",
                        whole.examined_groups
                    );
                }
                assert_eq!(places(&s), places(&unbounded), "{name}: budget {budget}");
            }
        });
    }
}

/// What every kind of read shows: `$all`, each stream, an index and a DCB query.
fn views(s: &TestStore) -> Vec<Vec<RecordedEvent>> {
    let reader = &s.store.reader;
    let mut views = vec![s.all()];
    for stream in ["a", "b", "d"] {
        views.push(s.stream(stream));
    }
    let backwards: Vec<_> = reader
        .read_all(u64::MAX, Direction::Backwards, u64::MAX)
        .collect::<Result<_, _>>()
        .unwrap();
    views.push(backwards);
    let index = IndexName::parse("$tag-shop:1").unwrap();
    views.push(s.index(&index, 0, Direction::Forwards));
    let query = Query {
        items: vec![QueryItem {
            types: vec!["Placed".to_owned()],
            tags: vec![],
        }],
    };
    for q in [query, Query::default()] {
        views.push(
            reader
                .read_query(&q, 0, Direction::Forwards, u64::MAX)
                .collect::<Result<_, _>>()
                .unwrap(),
        );
    }
    views
}

#[test]
fn scavenge_forgets_only_what_retention_hides_and_the_reclaimer_gives_the_bytes_back() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            let first_ids = populate(&mut s).await;
            let before = views(&s);
            let result = scavenge(&mut s).await;
            // a: 8 of 10 appends (2 events each; 17..=19 shown), b: all 5, c: all 3; metastreams
            // and d stay.
            assert_eq!(result.removed_groups, 16, "{name}: {result:?}");
            assert_eq!(result.removed_events, 32, "{name}");
            assert_eq!(views(&s), before, "{name}: every read shows the same");
            assert_eq!(
                s.store.reader.position_of_event(&first_ids[0]).unwrap(),
                None,
                "{name}: the ids of removed events are forgotten"
            );
            s.assert_indexes_match_all(name);
            // Scavenging again finds nothing more.
            assert_eq!(scavenge(&mut s).await.removed_groups, 0, "{name}");

            let pending = s.store.reclaimer.pending(usize::MAX).unwrap();
            assert_eq!(pending.groups, 16, "{name}");
            assert_eq!(pending.bytes, result.removed_bytes, "{name}");
            let mut reclaimed = 0;
            loop {
                let step = s.store.reclaimer.step().unwrap();
                if step.groups == 0 {
                    break;
                }
                reclaimed += step.bytes;
            }
            assert_eq!(reclaimed, result.removed_bytes, "{name}");
            assert_eq!(s.store.reclaimer.pending(usize::MAX).unwrap().groups, 0);
            assert_eq!(views(&s), before, "{name}: after the bytes went");

            // Revisions go on where they were: b recreated after 9, a's head is still 9.
            s.apply(append("b", E::NoStream, tagged(1))).await;
            assert_eq!(
                s.stream("b").iter().map(|e| e.revision).collect::<Vec<_>>(),
                [10]
            );
            s.apply(append("a", E::Exact(19), tagged(1))).await;
            let a: Vec<u64> = s.stream("a").iter().map(|e| e.revision).collect();
            assert_eq!(a, [18, 19, 20], "{name}");
        });
    }
}

#[test]
fn a_scavenged_store_reopens_and_ships_as_a_snapshot_with_its_gaps() {
    run(async {
        let mut s = TestStore::on_disk();
        populate(&mut s).await;
        scavenge(&mut s).await;
        while s.store.reclaimer.step().unwrap().groups > 0 {}
        let before = views(&s);
        let snapshot = s.build_snapshot().await;
        let mut t = TestStore::mem();
        crate::snapshot::ship(snapshot, &mut t).await;
        assert_eq!(views(&t), before, "installed");
        t.assert_indexes_match_all("installed");
        let s = TestStore::on(s.disk.clone(), None);
        assert!(s.store.damage.is_empty(), "discarded frames are no damage");
        assert_eq!(views(&s), before, "reopened");
    });
}

/// The divergence the simulation found: a snapshot recorded before a scavenge and streamed
/// after it held the store as it was then, without the forgotten groups, and without the
/// heads a scavenge keeps without their group. The reader now stops, the recorded snapshot
/// is the scavenge's own point, and a node that installs it goes on exactly as the others:
/// the same revisions for the next appends, the same answers to retries.
#[test]
fn a_snapshot_streamed_after_a_scavenge_is_the_image_of_its_own_point() {
    run(async {
        let mut s = TestStore::on_disk();
        let first_ids = populate(&mut s).await;
        let early = s.build_snapshot().await;
        assert_eq!(scavenge(&mut s).await.removed_groups, 16);

        // A reader of the snapshot from before the scavenge stops instead of shipping a mix.
        let mut stale = early.snapshot;
        let mut sink = Vec::new();
        let error = tokio::io::copy(&mut stale, &mut sink).await.unwrap_err();
        assert!(error.to_string().contains("changed"), "{error}");

        let current = s
            .sm()
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert!(current.meta.last_log_id > early.meta.last_log_id);
        let mut t = TestStore::mem();
        crate::snapshot::ship(current, &mut t).await;
        assert_eq!(t.next_index, s.next_index);
        assert_eq!(views(&t), views(&s), "installed");
        t.assert_indexes_match_all("installed");

        let recreate = tagged(1);
        for store in [&mut s, &mut t] {
            // b's head (9) was kept without its group: revisions go on after it.
            store
                .apply(append("b", E::NoStream, recreate.clone()))
                .await;
            assert_eq!(
                store
                    .stream("b")
                    .iter()
                    .map(|e| e.revision)
                    .collect::<Vec<_>>(),
                [10]
            );
            // A's first append was forgotten with its ids: the same ids are a new append.
            let again: Vec<NewEvent> = first_ids
                .iter()
                .map(|id| {
                    let mut e = tagged(1).remove(0);
                    e.id = *id;
                    e
                })
                .collect();
            store.apply(append("a", E::Any, again)).await;
        }
        assert_eq!(views(&t), views(&s), "after the same appends");
    });
}

#[test]
fn a_crash_at_either_half_of_a_scavenge_loses_no_shown_event() {
    run(async {
        let disk = MemDisk::new();
        let mut s = TestStore::on(disk.clone(), None);
        populate(&mut s).await;
        s.build_snapshot().await; // everything so far durable
        let before = views(&s);
        // A forgetting step is made durable at apply, with the snapshot recorded at its
        // point (a rollback to an earlier snapshot would not bring its groups back).
        assert_eq!(scavenge(&mut s).await.removed_groups, 16);
        disk.group_model().crash(0, 0);
        disk.crash(0);
        let mut s = TestStore::on(disk.clone(), None);
        assert_eq!(views(&s), before, "crash before the bytes went");
        assert_eq!(
            scavenge(&mut s).await.removed_groups,
            0,
            "already forgotten"
        );
        // Reclaimed, but the notes' removal lost: the next step discards them again.
        assert_eq!(s.store.reclaimer.step().unwrap().groups, 16);
        disk.group_model().crash(0, 0);
        disk.crash(0);
        let s = TestStore::on(disk.clone(), None);
        assert_eq!(views(&s), before, "crash after the bytes went");
        assert_eq!(s.store.reclaimer.step().unwrap().groups, 16, "again");
        assert_eq!(s.store.reclaimer.step().unwrap().groups, 0);
        assert_eq!(views(&s), before);
    });
}

#[cfg(feature = "fault-injection")]
#[test]
fn the_planted_bug_that_drops_partly_hidden_groups_loses_shown_events() {
    run(async {
        let mut s = TestStore::mem();
        s.apply(append("a", E::Any, tagged(4))).await;
        s.apply(append("z", E::Any, tagged(1))).await;
        let keep_two = StreamMetadata {
            max_count: Some(2),
            ..Default::default()
        };
        s.apply(set_meta("a", keep_two)).await;
        let before = views(&s);
        cairn_raft_store::faults::set(cairn_raft_store::faults::Bugs {
            scavenge_drops_partly_hidden: true,
            ..Default::default()
        });
        scavenge(&mut s).await;
        cairn_raft_store::faults::set(Default::default());
        assert_ne!(views(&s), before, "the bug loses a's revisions 2 and 3");
    });
}
