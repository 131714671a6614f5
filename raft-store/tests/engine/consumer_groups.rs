//! Consumer groups as state-machine data: definitions, checkpoints that never forget, parked
//! events in a readable stream, and state that survives a snapshot install.

use cairn_raft_store::consumer_group::{
    parked_stream, ParkedRecord, CHECKPOINT_EVENT_TYPE, MAX_GROUPS, PARKED_EVENT_TYPE,
};
use cairn_raft_store::{
    Command, Entry, EntryPayload, ExpectedRevision as E, GroupCheckpoint, GroupCommand,
    GroupCursor, GroupResult, GroupSettings, GroupSettingsChange, GroupStart, GroupStrategy,
    InvalidInput, ParkedEvent, Response, SourceFilter,
};
use uuid::Uuid;

use crate::common::*;

const T0: u64 = 1_700_000_000_000;

async fn group(s: &mut TestStore, command: GroupCommand) -> GroupResult {
    let entry = Entry {
        log_id: log_id(s.next_index),
        payload: EntryPayload::Normal(Command::ConsumerGroup(command)),
    };
    s.next_index += 1;
    match s
        .sm()
        .apply_entries(vec![entry])
        .await
        .expect("apply")
        .remove(0)
    {
        Response::ConsumerGroup(result) => result,
        other => panic!("unexpected response {other:?}"),
    }
}

fn settings(source: &str, start: GroupStart) -> GroupSettings {
    GroupSettings {
        source: source.to_owned(),
        start,
        ..GroupSettings::default()
    }
}

fn create(name: &str, settings: GroupSettings) -> GroupCommand {
    create_filtered(name, settings, None)
}

fn create_filtered(
    name: &str,
    settings: GroupSettings,
    filter: Option<SourceFilter>,
) -> GroupCommand {
    GroupCommand::Create {
        group: name.to_owned(),
        settings,
        filter,
        id: Uuid::new_v4(),
        created_unix_ms: T0,
    }
}

fn filter(stream_prefix: &str, event_type_regex: &str) -> Option<SourceFilter> {
    let part = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Some(SourceFilter {
        stream_prefix: part(stream_prefix),
        event_type_prefix: None,
        event_type_regex: part(event_type_regex),
    })
}

fn checkpoint(name: &str, incarnation: u64, next: u64, done: &[(u64, u64)]) -> GroupCommand {
    GroupCommand::Checkpoint {
        group: name.to_owned(),
        incarnation,
        checkpoint: GroupCheckpoint {
            source: GroupCursor {
                next,
                done: done.to_vec(),
            },
            parked: GroupCursor::default(),
        },
        id: Uuid::new_v4(),
        created_unix_ms: T0,
    }
}

fn delete(name: &str) -> GroupCommand {
    GroupCommand::Delete {
        group: name.to_owned(),
        id: Uuid::new_v4(),
        created_unix_ms: T0,
    }
}

fn written(result: &GroupResult) -> bool {
    matches!(result, GroupResult::Written { .. })
}

#[test]
fn groups_are_created_once_and_bad_definitions_change_nothing() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("orders-1", E::Any, events(5))).await;
            let first = create("billing", settings("orders-1", GroupStart::End));
            assert!(written(&group(&mut s, first.clone()).await), "{name}");
            // A retry of the same command is recognised by its id.
            assert!(
                matches!(
                    group(&mut s, first).await,
                    GroupResult::AlreadyWritten { .. }
                ),
                "{name}: retry"
            );
            assert_eq!(
                group(
                    &mut s,
                    create("billing", settings("$all", GroupStart::Start))
                )
                .await,
                GroupResult::AlreadyExists,
                "{name}: duplicate create"
            );
            let (state, _) = s.store.reader.consumer_group("billing").unwrap().unwrap();
            assert_eq!(
                state.settings.start,
                GroupStart::At(5),
                "{name}: end resolved"
            );
            assert_eq!(state.checkpoint.source.next, 5, "{name}");

            let before = s.all().len();
            let bad = [
                create("$x", settings("$all", GroupStart::Start)),
                create("g", settings("$nope", GroupStart::Start)),
                create("g", settings("orders-1", GroupStart::At(6))),
                create(
                    "g",
                    GroupSettings {
                        max_in_flight: 0,
                        ..settings("$all", GroupStart::Start)
                    },
                ),
                create(
                    "g",
                    GroupSettings {
                        message_timeout_ms: 1,
                        ..settings("$all", GroupStart::Start)
                    },
                ),
                // Filters are for `$all` only, and must compile.
                create_filtered(
                    "g",
                    settings("orders-1", GroupStart::Start),
                    filter("orders-", ""),
                ),
                create_filtered("g", settings("$all", GroupStart::Start), filter("", "(")),
            ];
            for command in bad {
                let result = group(&mut s, command.clone()).await;
                assert!(
                    matches!(result, GroupResult::Rejected(_)),
                    "{name}: {command:?} -> {result:?}"
                );
            }
            assert_eq!(
                group(&mut s, delete("nobody")).await,
                GroupResult::NotFound,
                "{name}: delete of an unknown group"
            );
            assert_eq!(
                s.all().len(),
                before,
                "{name}: refused commands wrote nothing"
            );
            let listed: Vec<String> = s
                .store
                .reader
                .consumer_groups(100)
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert_eq!(listed, vec!["billing".to_owned()], "{name}");

            // A filtered group on `$all` keeps its filter (empty parts dropped); a create
            // as older builds proposed it still applies, with none.
            let filtered = create_filtered(
                "shipping",
                settings("$all", GroupStart::Start),
                Some(SourceFilter {
                    stream_prefix: Some("orders-".into()),
                    event_type_prefix: Some(String::new()),
                    event_type_regex: None,
                }),
            );
            assert!(written(&group(&mut s, filtered).await), "{name}");
            let (state, _) = s.store.reader.consumer_group("shipping").unwrap().unwrap();
            assert_eq!(state.filter, filter("orders-", ""), "{name}");
            let old = GroupCommand::CreateUnfiltered {
                group: "audit".into(),
                settings: settings("$all", GroupStart::Start),
                id: Uuid::new_v4(),
                created_unix_ms: T0,
            };
            assert!(written(&group(&mut s, old).await), "{name}");
            let (state, _) = s.store.reader.consumer_group("audit").unwrap().unwrap();
            assert_eq!(state.filter, None, "{name}");
        })
    }
}

fn update(name: &str, change: GroupSettingsChange) -> GroupCommand {
    GroupCommand::Update {
        group: name.to_owned(),
        change,
        id: Uuid::new_v4(),
        created_unix_ms: T0,
    }
}

#[test]
fn an_update_changes_only_the_settings_it_names_and_keeps_the_checkpoint() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("a", E::Any, events(20))).await;
            let ordered = GroupSettings {
                strategy: GroupStrategy::Ordered,
                ..settings("a", GroupStart::At(4))
            };
            assert!(written(&group(&mut s, create("g", ordered)).await));
            let (before, _) = s.store.reader.consumer_group("g").unwrap().unwrap();
            let all_before = s.all().len();
            // Nothing named, a bad value, a product past the limit, no such group: refused,
            // nothing written.
            let refused = [
                update("g", GroupSettingsChange::default()),
                update(
                    "g",
                    GroupSettingsChange {
                        max_in_flight: Some(0),
                        ..Default::default()
                    },
                ),
                update(
                    "g",
                    GroupSettingsChange {
                        max_in_flight: Some(10_000),
                        max_consumers: Some(1_000),
                        ..Default::default()
                    },
                ),
            ];
            for command in refused {
                let result = group(&mut s, command.clone()).await;
                assert!(
                    matches!(result, GroupResult::Rejected(_)),
                    "{name}: {command:?} -> {result:?}"
                );
            }
            let unknown = update(
                "nobody",
                GroupSettingsChange {
                    max_retries: Some(1),
                    ..Default::default()
                },
            );
            assert_eq!(group(&mut s, unknown).await, GroupResult::NotFound);
            assert_eq!(
                s.all().len(),
                all_before,
                "{name}: refused updates wrote nothing"
            );

            // Two updates of different settings both hold (merged at apply).
            for change in [
                GroupSettingsChange {
                    max_in_flight: Some(3),
                    ..Default::default()
                },
                GroupSettingsChange {
                    message_timeout_ms: Some(500),
                    ..Default::default()
                },
            ] {
                assert!(written(&group(&mut s, update("g", change)).await), "{name}");
            }
            let (after, _) = s.store.reader.consumer_group("g").unwrap().unwrap();
            assert_eq!(
                after.settings,
                GroupSettings {
                    max_in_flight: 3,
                    message_timeout_ms: 500,
                    ..before.settings.clone()
                },
                "{name}"
            );
            assert_eq!(after.checkpoint, before.checkpoint, "{name}");
            assert_eq!(after.incarnation, before.incarnation, "{name}");
        })
    }
}

#[test]
fn creates_past_the_group_limit_are_refused_until_one_is_deleted() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            // Every group there may be, in one apply (the batch's own creates count).
            let entries: Vec<Entry> = (0..MAX_GROUPS)
                .map(|i| {
                    let entry = Entry {
                        log_id: log_id(s.next_index),
                        payload: EntryPayload::Normal(Command::ConsumerGroup(create(
                            &format!("g{i:04}"),
                            settings("$all", GroupStart::Start),
                        ))),
                    };
                    s.next_index += 1;
                    entry
                })
                .collect();
            let results = s.sm().apply_entries(entries).await.expect("apply");
            assert!(
                results
                    .iter()
                    .all(|r| matches!(r, Response::ConsumerGroup(GroupResult::Written { .. }))),
                "{name}"
            );
            let before = s.all().len();
            let one_more = create("late", settings("$all", GroupStart::Start));
            assert_eq!(
                group(&mut s, one_more.clone()).await,
                GroupResult::Rejected(InvalidInput::TooManyGroups { max: MAX_GROUPS }),
                "{name}"
            );
            assert_eq!(
                s.all().len(),
                before,
                "{name}: the refused create wrote nothing"
            );
            // A deleted group no longer counts.
            assert!(written(&group(&mut s, delete("g0000")).await), "{name}");
            assert!(written(&group(&mut s, one_more).await), "{name}");
            let again = create("later", settings("$all", GroupStart::Start));
            assert!(matches!(
                group(&mut s, again).await,
                GroupResult::Rejected(InvalidInput::TooManyGroups { .. })
            ));
        })
    }
}

#[test]
fn a_checkpoint_that_would_forget_done_events_is_refused() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("a", E::Any, events(20))).await;
            assert!(written(
                &group(&mut s, create("g", settings("a", GroupStart::Start))).await
            ));
            let (state, _) = s.store.reader.consumer_group("g").unwrap().unwrap();
            let inc = state.incarnation;
            assert!(written(
                &group(&mut s, checkpoint("g", inc, 5, &[(7, 10)])).await
            ));
            // Going back, or dropping a done range, would deliver acknowledged events again.
            for (next, done) in [(4, vec![(7, 10)]), (5, vec![(7, 9)]), (8, vec![])] {
                let result = group(&mut s, checkpoint("g", inc, next, &done)).await;
                assert!(
                    matches!(result, GroupResult::Stale { .. }),
                    "{name}: {next} {done:?} -> {result:?}"
                );
            }
            // Past the source's end, or malformed: bad input.
            for (next, done) in [(21, vec![]), (5, vec![(7, 21)]), (5, vec![(9, 8)])] {
                let result = group(&mut s, checkpoint("g", inc, next, &done)).await;
                assert!(
                    matches!(
                        result,
                        GroupResult::Rejected(InvalidInput::BadGroupCheckpoint { .. })
                    ),
                    "{name}: {next} {done:?} -> {result:?}"
                );
            }
            assert!(written(
                &group(&mut s, checkpoint("g", inc, 10, &[(12, 13)])).await
            ));
            let (state, _) = s.store.reader.consumer_group("g").unwrap().unwrap();
            assert_eq!(
                state.checkpoint.source,
                GroupCursor {
                    next: 10,
                    done: vec![(12, 13)]
                },
                "{name}"
            );
            // Deleted and created again: the old incarnation's checkpoints are refused.
            assert!(written(&group(&mut s, delete("g")).await));
            assert_eq!(
                group(&mut s, checkpoint("g", inc, 11, &[])).await,
                GroupResult::NotFound,
                "{name}: checkpoint of a deleted group"
            );
            assert!(written(
                &group(&mut s, create("g", settings("a", GroupStart::Start))).await
            ));
            assert_eq!(
                group(&mut s, checkpoint("g", inc, 11, &[])).await,
                GroupResult::NotFound,
                "{name}: the old incarnation"
            );
            let (state, _) = s.store.reader.consumer_group("g").unwrap().unwrap();
            assert_eq!(
                state.checkpoint.source.next, 0,
                "{name}: a new group starts over"
            );
            let checkpoints = s
                .stream("$group-g")
                .iter()
                .filter(|e| e.event_type == CHECKPOINT_EVENT_TYPE)
                .count();
            assert_eq!(checkpoints, 2, "{name}: refused checkpoints wrote nothing");
        })
    }
}

#[test]
fn parked_events_are_readable_and_a_replay_marks_them_once_through_a_snapshot() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("a", E::Any, events(3))).await;
            assert!(written(
                &group(&mut s, create("g", settings("a", GroupStart::Start))).await
            ));
            let inc = s
                .store
                .reader
                .consumer_group("g")
                .unwrap()
                .unwrap()
                .0
                .incarnation;
            let a = s.stream("a");
            let park = GroupCommand::Park {
                group: "g".into(),
                incarnation: inc,
                events: a[..2]
                    .iter()
                    .map(|e| ParkedEvent {
                        id: Uuid::new_v4(),
                        stream: e.stream.clone(),
                        revision: e.revision,
                        position: e.position,
                        event_id: e.id,
                        reason: "poison".into(),
                    })
                    .collect(),
                created_unix_ms: T0,
            };
            assert_eq!(
                group(&mut s, park.clone()).await,
                GroupResult::Written { revision: 1 },
                "{name}"
            );
            assert!(
                matches!(
                    group(&mut s, park).await,
                    GroupResult::AlreadyWritten { .. }
                ),
                "{name}: a retried park records nothing twice"
            );
            let parked = s.stream(&parked_stream("g"));
            assert_eq!(parked.len(), 2, "{name}");
            assert_eq!(parked[0].event_type, PARKED_EVENT_TYPE);
            let record = ParkedRecord::decode(&parked[1].data).unwrap();
            assert_eq!(
                (record.position, record.revision, record.event_id),
                (a[1].position, 1, None),
                "{name}: the record names the event by place, not by id"
            );

            let replay = GroupCommand::ReplayParked {
                group: "g".into(),
                id: Uuid::new_v4(),
                created_unix_ms: T0,
            };
            assert!(written(&group(&mut s, replay).await));
            let (state, _) = s.store.reader.consumer_group("g").unwrap().unwrap();
            assert_eq!(state.replay_to, 2, "{name}: both parked events to replay");
            assert_eq!(state.checkpoint.parked.next, 0, "{name}");

            // The group's state travels with a snapshot, like any stream.
            let snapshot = s.build_snapshot().await;
            let mut other = make();
            crate::snapshot::ship(snapshot, &mut other).await;
            assert_eq!(
                other.store.reader.consumer_group("g").unwrap(),
                s.store.reader.consumer_group("g").unwrap(),
                "{name}: after install"
            );
        })
    }
}
