use std::collections::BTreeSet;

use uuid::Uuid;

use super::reads::filtered;
use super::*;
use crate::history::{read_jsonl, write_jsonl};
use crate::history::{
    AppendOutcome, ConditionRef, Consistency, EventRef, Expected, MultiOutcome, MultiPart,
    ReadOutcome, Record,
};

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn ev(n: u128, stream: &str, revision: u64, position: u64) -> EventRef {
    EventRef {
        event_type: None,
        tags: Vec::new(),
        id: id(n),
        stream: stream.to_string(),
        revision,
        position,
        digest: None,
    }
}

fn ok(last_revision: u64, last_position: u64) -> AppendOutcome {
    AppendOutcome::Ok {
        last_revision,
        last_position,
    }
}

/// An append of events `ids` (as numbers) that ran from `start_ms` to `end_ms`.
fn append(
    op: u64,
    (start_ms, end_ms): (u64, u64),
    stream: &str,
    expected: Expected,
    ids: &[u128],
    outcome: AppendOutcome,
) -> Record {
    Record::Append {
        op,
        client: 0,
        start_ms,
        end_ms,
        stream: stream.to_string(),
        expected,
        ids: ids.iter().map(|&n| id(n)).collect(),
        digests: Vec::new(),
        outcome,
    }
}

fn read(
    op: u64,
    start_ms: u64,
    stream: Option<&str>,
    from_position: u64,
    max_count: u64,
    consistency: Consistency,
    events: Vec<EventRef>,
) -> Record {
    Record::Read {
        op,
        client: 1,
        start_ms,
        end_ms: start_ms + 5,
        stream: stream.map(str::to_string),
        from_position,
        max_count,
        consistency,
        outcome: ReadOutcome::Ok { events },
    }
}

fn subscription(sub: u32, stream: Option<&str>, from: u64, events: Vec<EventRef>) -> Record {
    Record::Subscription {
        sub,
        client: 2,
        stream: stream.map(str::to_string),
        from,
        events,
        caught_up: 1,
    }
}

/// The log every node holds in [`clean`].
fn clean_log() -> Vec<EventRef> {
    vec![
        ev(1, "a", 0, 0),
        ev(2, "a", 1, 1),
        ev(3, "b", 0, 2),
        ev(4, "a", 2, 3),
        ev(6, "b", 1, 4),
        ev(7, "b", 2, 5),
    ]
}

fn node_logs(log: &[EventRef]) -> Vec<Record> {
    (1..=3)
        .map(|node| Record::NodeLog {
            node,
            events: log.to_vec(),
        })
        .collect()
}

/// A small run that keeps every promise, exercising each exception the rules allow.
fn clean() -> Vec<Record> {
    use Consistency::*;
    use Expected::*;
    let mut history = vec![
        Record::Run {
            seed: 7,
            nodes: 3,
            clients: 2,
        },
        append(1, (0, 10), "a", NoStream, &[1, 2], ok(1, 1)),
        append(2, (5, 15), "b", Any, &[3], ok(0, 2)),
        Record::Fault {
            at_ms: 18,
            fault: "partition 1".into(),
        },
        append(3, (20, 30), "a", Exact(1), &[4], ok(2, 3)),
        // Lost the race with op 3: not written.
        append(
            4,
            (31, 35),
            "a",
            Exact(1),
            &[5],
            AppendOutcome::WrongExpectedVersion { actual: Some(2) },
        ),
        // Timed out but was written.
        append(
            5,
            (40, 50),
            "b",
            StreamExists,
            &[6],
            AppendOutcome::Unknown {
                error: "timeout".into(),
            },
        ),
        // A re-send of op 3: the same place, not a conflict.
        append(6, (52, 55), "a", Exact(1), &[4], ok(2, 3)),
        // A re-send of op 5 refused once the id was forgotten: 6 may be visible.
        append(
            8,
            (56, 57),
            "b",
            StreamExists,
            &[6],
            AppendOutcome::WrongExpectedVersion { actual: Some(2) },
        ),
        // Its ids clash with op 1: refused, but 1 is visible because of op 1.
        append(
            9,
            (57, 58),
            "c",
            Any,
            &[1],
            AppendOutcome::Rejected {
                reason: "idempotency conflict".into(),
            },
        ),
        Record::Fault {
            at_ms: 59,
            fault: "heal partition 1".into(),
        },
        Record::Healed { at_ms: 60 },
        append(7, (61, 70), "b", Exact(1), &[7], ok(2, 5)),
        read(
            10,
            40,
            Some("a"),
            0,
            10,
            Linearizable,
            vec![ev(1, "a", 0, 0), ev(2, "a", 1, 1), ev(4, "a", 2, 3)],
        ),
        // Cut by its count.
        read(
            11,
            45,
            None,
            2,
            2,
            Local,
            vec![ev(3, "b", 0, 2), ev(4, "a", 2, 3)],
        ),
        // Stale, but Local promises no freshness.
        read(12, 16, Some("b"), 0, 10, Local, vec![]),
        read(
            13,
            41,
            None,
            0,
            100,
            LocalMinPosition(3),
            clean_log()[..4].to_vec(),
        ),
        Record::Read {
            op: 14,
            client: 1,
            start_ms: 19,
            end_ms: 29,
            stream: None,
            from_position: 0,
            max_count: 10,
            consistency: Linearizable,
            outcome: ReadOutcome::Failed {
                error: "no leader".into(),
            },
        },
        subscription(
            1,
            None,
            2,
            vec![ev(3, "b", 0, 2), ev(4, "a", 2, 3), ev(6, "b", 1, 4)],
        ),
        subscription(2, Some("b"), 1, vec![ev(6, "b", 1, 4), ev(7, "b", 2, 5)]),
    ];
    history.extend(node_logs(&clean_log()));
    history
}

/// The set of rules a history breaks.
fn rules(history: &[Record]) -> BTreeSet<Rule> {
    check(history).violations.iter().map(|v| v.rule).collect()
}

fn only(rule: Rule) -> BTreeSet<Rule> {
    BTreeSet::from([rule])
}

/// Replaces every node's log with `log`.
fn with_log(mut history: Vec<Record>, log: &[EventRef]) -> Vec<Record> {
    history.retain(|r| !matches!(r, Record::NodeLog { .. }));
    history.extend(node_logs(log));
    history
}

/// The record of `op` (an append or a read).
fn op_mut(history: &mut [Record], wanted: u64) -> &mut Record {
    history
        .iter_mut()
        .find(|r| matches!(r, Record::Append { op, .. } | Record::Read { op, .. } if *op == wanted))
        .expect("no such op")
}

fn set_read_events(history: &mut [Record], wanted: u64, new: Vec<EventRef>) {
    match op_mut(history, wanted) {
        Record::Read {
            outcome: ReadOutcome::Ok { events },
            ..
        } => *events = new,
        other => panic!("not a successful read: {other:?}"),
    }
}

fn set_sub_events(history: &mut [Record], wanted: u32, new: Vec<EventRef>) {
    for record in history {
        if let Record::Subscription { sub, events, .. } = record {
            if *sub == wanted {
                *events = new;
                return;
            }
        }
    }
    panic!("no such subscription");
}

#[test]
fn clean_history_passes_with_right_stats() {
    let report = check(&clean());
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.stats,
        Stats {
            appends: 9,
            acknowledged: 5,
            unknown: 1,
            definite_failures: 3,
            reads: 5,
            subscriptions: 2,
            delivered: 5,
            faults: 2,
            events_committed: 6,
            heal_to_write_ms: Some(10),
            group_deliveries: 0,
        }
    );
}

/// Gives every event in the logs and reads of `history` the digest `digest(id)`, and every
/// append the digests of its ids.
fn with_digests(mut history: Vec<Record>, digest: impl Fn(Uuid) -> u64) -> Vec<Record> {
    let mark = |events: &mut Vec<EventRef>| {
        for event in events {
            event.digest = Some(digest(event.id));
        }
    };
    for record in &mut history {
        match record {
            Record::Append { ids, digests, .. } => {
                *digests = ids.iter().map(|id| digest(*id)).collect()
            }
            Record::NodeLog { events, .. } | Record::Subscription { events, .. } => mark(events),
            Record::Read {
                outcome: ReadOutcome::Ok { events },
                ..
            } => mark(events),
            _ => {}
        }
    }
    history
}

#[test]
fn an_id_reused_with_other_content_must_not_be_acknowledged() {
    let digest = |id: Uuid| id.as_u128() as u64 * 31;
    let history = with_digests(clean(), digest);
    assert!(check(&history).is_ok(), "{}", check(&history));
    // Op 1's ids again with other content for its second event: refused, fine.
    let reused = |outcome| {
        let mut record = append(30, (90, 95), "a", Expected::Any, &[1, 2], outcome);
        if let Record::Append { digests, .. } = &mut record {
            *digests = vec![digest(id(1)), 7];
        }
        record
    };
    let mut refused = history.clone();
    refused.push(reused(AppendOutcome::Rejected {
        reason: "idempotency conflict: event id ... is already stored with other content".into(),
    }));
    assert!(check(&refused).is_ok(), "{}", check(&refused));
    // Acknowledged as a retry: the bug.
    let mut taken = history;
    taken.push(reused(ok(1, 1)));
    let report = check(&taken);
    assert_eq!(rules(&taken), only(Rule::ReusedIdAcknowledged));
    assert!(report.violations[0].detail.contains("op 30"), "{report}");
}

#[test]
fn empty_history_committed_nothing() {
    assert_eq!(rules(&[]), only(Rule::NothingCommitted));
    assert_eq!(check(&[]).violations.len(), 2, "no ack and no node log");
}

#[test]
fn lost_ack() {
    let mut history = clean();
    history.push(append(20, (80, 90), "c", Expected::Any, &[99], ok(0, 6)));
    let report = check(&history);
    assert_eq!(rules(&history), only(Rule::AcknowledgedLost));
    assert!(report.violations[0].detail.contains("op 20"), "{report}");
}

#[test]
fn ack_at_the_wrong_place() {
    let mut history = clean();
    if let Record::Append { outcome, .. } = op_mut(&mut history, 6) {
        *outcome = ok(2, 4);
    }
    assert_eq!(rules(&history), only(Rule::AcknowledgedLost));
}

#[test]
fn ack_not_contiguous() {
    // Op 1's events with another stream's event between their revisions.
    let mut log = clean_log();
    log.truncate(2);
    log[1] = ev(2, "a", 2, 1);
    log.insert(1, ev(9, "a", 1, 1));
    log[2].position = 2;
    let history = vec![
        append(1, (0, 10), "a", Expected::Any, &[1, 2], ok(2, 2)),
        Record::NodeLog {
            node: 1,
            events: log,
        },
    ];
    assert_eq!(rules(&history), only(Rule::AcknowledgedLost));
}

#[test]
fn duplicate_id_in_log() {
    let mut log = clean_log();
    log.push(ev(1, "a", 3, 6));
    assert_eq!(
        rules(&with_log(clean(), &log)),
        only(Rule::DuplicateEventId)
    );
}

#[test]
fn revision_gap() {
    let mut log = clean_log();
    log.push(ev(8, "b", 4, 6));
    assert_eq!(rules(&with_log(clean(), &log)), only(Rule::RevisionGap));
}

#[test]
fn position_gap() {
    let mut log = clean_log();
    log.push(ev(8, "b", 3, 7));
    assert_eq!(rules(&with_log(clean(), &log)), only(Rule::PositionOrder));
}

#[test]
fn divergent_node_logs() {
    let mut history = clean();
    let mut other = clean_log();
    other[5] = ev(8, "b", 2, 5);
    history.push(Record::NodeLog {
        node: 4,
        events: other,
    });
    let report = check(&history);
    assert_eq!(rules(&history), only(Rule::DivergentLogs));
    assert!(report.violations[0]
        .detail
        .starts_with("node 4 differs from node 1 at index 5"));
}

#[test]
fn lagging_node_not_converged() {
    let mut history = clean();
    history.push(Record::NodeLog {
        node: 4,
        events: clean_log()[..3].to_vec(),
    });
    assert_eq!(rules(&history), only(Rule::NotConverged));
}

#[test]
fn two_successes_for_the_same_exact_revision() {
    // Both claim to be the event after a/1; only one of them can be in the log there.
    let mut history = clean();
    history.push(append(
        20,
        (80, 90),
        "a",
        Expected::Exact(1),
        &[8],
        ok(2, 3),
    ));
    assert_eq!(
        rules(&history),
        BTreeSet::from([Rule::AcknowledgedLost, Rule::ConflictingSuccess])
    );
}

#[test]
fn two_successes_for_no_stream() {
    let mut history = clean();
    history.push(append(
        20,
        (80, 90),
        "a",
        Expected::NoStream,
        &[8],
        ok(0, 6),
    ));
    assert!(rules(&history).contains(&Rule::ConflictingSuccess));
}

#[test]
fn wrong_revision_for_exact() {
    let mut history = clean();
    if let Record::Append { expected, .. } = op_mut(&mut history, 3) {
        *expected = Expected::Exact(0);
    }
    assert_eq!(rules(&history), only(Rule::WrongRevision));
}

#[test]
fn wrong_revision_for_stream_exists() {
    let mut history = clean();
    if let Record::Append { expected, .. } = op_mut(&mut history, 2) {
        *expected = Expected::StreamExists;
    }
    assert_eq!(rules(&history), only(Rule::WrongRevision));
}

#[test]
fn wrong_expected_version_yet_visible() {
    let mut log = clean_log();
    log.push(ev(5, "a", 3, 6));
    let history = with_log(clean(), &log);
    let report = check(&history);
    assert_eq!(rules(&history), only(Rule::FailedVisible));
    assert!(report.violations[0].detail.contains("op 4"), "{report}");
}

#[test]
fn rejected_yet_visible() {
    let mut log = clean_log();
    log.push(ev(5, "a", 3, 6));
    let mut history = with_log(clean(), &log);
    if let Record::Append { outcome, .. } = op_mut(&mut history, 4) {
        *outcome = AppendOutcome::Rejected {
            reason: "event too large".into(),
        };
    }
    assert_eq!(rules(&history), only(Rule::FailedVisible));
}

#[test]
fn stale_linearizable_read() {
    // Began at 40, after op 3 (a/2 @3) was acknowledged at 30, yet misses it.
    let mut history = clean();
    set_read_events(&mut history, 10, vec![ev(1, "a", 0, 0), ev(2, "a", 1, 1)]);
    let report = check(&history);
    assert_eq!(rules(&history), only(Rule::StaleRead));
    assert!(report.violations[0].detail.contains("op 3"), "{report}");
}

#[test]
fn empty_linearizable_read_after_an_ack() {
    let mut history = clean();
    history.push(read(
        20,
        16,
        Some("b"),
        0,
        10,
        Consistency::Linearizable,
        vec![],
    ));
    assert_eq!(rules(&history), only(Rule::StaleRead));
}

#[test]
fn linearizable_read_cut_by_its_count_is_fine() {
    let mut history = clean();
    history.push(read(
        20,
        100,
        None,
        0,
        1,
        Consistency::Linearizable,
        vec![ev(1, "a", 0, 0)],
    ));
    assert!(check(&history).is_ok());
}

#[test]
fn stale_local_min_position_read() {
    let mut history = clean();
    set_read_events(&mut history, 13, clean_log()[..3].to_vec());
    assert_eq!(rules(&history), only(Rule::StaleRead));
}

#[test]
fn stale_local_read_is_fine() {
    let mut history = clean();
    history.push(read(
        20,
        100,
        Some("a"),
        0,
        10,
        Consistency::Local,
        vec![ev(1, "a", 0, 0)],
    ));
    history.push(read(21, 100, None, 3, 10, Consistency::Local, vec![]));
    assert!(check(&history).is_ok());
}

#[test]
fn read_with_a_hole_or_too_many_events() {
    let mut history = clean();
    set_read_events(&mut history, 10, vec![ev(1, "a", 0, 0), ev(4, "a", 2, 3)]);
    assert_eq!(rules(&history), only(Rule::StaleRead));

    let mut history = clean();
    set_read_events(&mut history, 11, clean_log()[2..5].to_vec());
    assert_eq!(rules(&history), only(Rule::StaleRead));
}

#[test]
fn subscription_with_a_gap() {
    let mut history = clean();
    set_sub_events(&mut history, 1, vec![ev(3, "b", 0, 2), ev(6, "b", 1, 4)]);
    let report = check(&history);
    assert_eq!(rules(&history), only(Rule::SubscriptionGap));
    assert!(report.violations[0].detail.contains("a gap"), "{report}");
}

#[test]
fn subscription_with_a_duplicate() {
    let mut history = clean();
    let events = vec![ev(6, "b", 1, 4), ev(6, "b", 1, 4), ev(7, "b", 2, 5)];
    set_sub_events(&mut history, 2, events);
    let report = check(&history);
    assert_eq!(rules(&history), only(Rule::SubscriptionGap));
    assert!(
        report.violations[0].detail.contains("a duplicate"),
        "{report}"
    );
}

#[test]
fn subscription_with_an_invented_event() {
    let mut history = clean();
    set_sub_events(&mut history, 2, vec![ev(6, "b", 1, 4), ev(99, "b", 2, 5)]);
    let report = check(&history);
    assert_eq!(rules(&history), only(Rule::SubscriptionGap));
    assert!(
        report.violations[0].detail.contains("not in the log"),
        "{report}"
    );
}

#[test]
fn healed_but_no_write_after() {
    let mut history = clean();
    for record in &mut history {
        if let Record::Healed { at_ms } = record {
            *at_ms = 100;
        }
    }
    assert_eq!(rules(&history), only(Rule::NoWriteAfterHeal));
}

#[test]
fn violations_are_capped_per_rule() {
    let mut history = clean();
    for n in 0..50 {
        history.push(append(
            100 + n,
            (80, 90),
            "c",
            Expected::Any,
            &[1000 + n as u128],
            ok(0, 6),
        ));
    }
    let report = check(&history);
    assert_eq!(report.violations.len(), MAX_VIOLATIONS_PER_RULE + 1);
    let last = report.violations.last().unwrap();
    assert_eq!(last.to_string(), "acknowledged-lost: 30 more not shown");
}

#[test]
fn violation_display() {
    let violation = Violation {
        rule: Rule::StaleRead,
        detail: "op 3".into(),
    };
    assert_eq!(violation.to_string(), "stale-read: op 3");
}

#[test]
fn jsonl_round_trip_gives_the_same_report() {
    let mut history = clean();
    set_sub_events(&mut history, 1, vec![ev(3, "b", 0, 2), ev(6, "b", 1, 4)]);
    let mut bytes = Vec::new();
    write_jsonl(&history, &mut bytes).unwrap();
    let back = read_jsonl(bytes.as_slice()).unwrap();
    assert_eq!(back, history);
    let report = check(&back);
    assert!(!report.is_ok());
    assert_eq!(report, check(&history));
}

/// `clean()` with types and tags on its events (in the log and every node's log), and
/// each node's `$tag-x` and `$ce-a` indexes as the store must return them.
fn indexed() -> Vec<Record> {
    let tag = |e: &mut EventRef| {
        let n = e.id.as_u128();
        e.event_type = Some(format!("T{}", n % 2));
        if !n.is_multiple_of(3) {
            e.tags = vec!["x".into()];
        }
    };
    let mut history = clean();
    for record in &mut history {
        match record {
            Record::NodeLog { events, .. }
            | Record::Subscription { events, .. }
            | Record::Read {
                outcome: ReadOutcome::Ok { events },
                ..
            } => events.iter_mut().for_each(tag),
            _ => {}
        }
    }
    let mut log = clean_log();
    log.iter_mut().for_each(tag);
    for node in 1..=3 {
        for index in ["$tag-x", "$ce-a", "$et-T1"] {
            history.push(Record::NodeIndex {
                node,
                index: index.into(),
                events: filtered(index, &log.iter().collect::<Vec<_>>())
                    .into_iter()
                    .cloned()
                    .collect(),
            });
        }
    }
    let tagged: Vec<EventRef> = log.iter().filter(|e| !e.tags.is_empty()).cloned().collect();
    history.push(Record::IndexRead {
        op: 90,
        client: 2,
        start_ms: 100,
        end_ms: 101,
        index: "$tag-x".into(),
        from_position: 1,
        max_count: 10,
        consistency: Consistency::Local,
        outcome: ReadOutcome::Ok {
            events: tagged.into_iter().filter(|e| e.position >= 1).collect(),
        },
    });
    history
}

#[test]
fn index_reads_that_equal_all_filtered_pass() {
    assert!(check(&indexed()).is_ok(), "{}", check(&indexed()));
}

#[test]
fn a_node_index_missing_an_event_or_a_client_index_read_with_a_gap_is_found() {
    let mut history = indexed();
    let node_index = history
        .iter_mut()
        .find_map(|r| match r {
            Record::NodeIndex {
                node: 2,
                index,
                events,
            } if index == "$tag-x" => Some(events),
            _ => None,
        })
        .expect("node 2's $tag-x");
    node_index.remove(1);
    assert_eq!(rules(&history), only(Rule::IndexMismatch));

    let mut history = indexed();
    if let Some(Record::IndexRead {
        outcome: ReadOutcome::Ok { events },
        ..
    }) = history.last_mut()
    {
        events.remove(0);
    }
    assert_eq!(rules(&history), only(Rule::IndexMismatch));
}

fn seat(n: u128, revision: u64, position: u64) -> EventRef {
    EventRef {
        event_type: Some("Seat".into()),
        tags: vec!["seat:1".into()],
        ..ev(n, "$dcb", revision, position)
    }
}

fn multi(op: u64, parts: &[(&str, &[u128])], after: Option<u64>, outcome: MultiOutcome) -> Record {
    Record::MultiAppend {
        op,
        client: 0,
        start_ms: op * 10,
        end_ms: op * 10 + 5,
        parts: parts
            .iter()
            .map(|(stream, ids)| MultiPart {
                stream: stream.to_string(),
                expected: Expected::Any,
                ids: ids.iter().map(|&n| id(n)).collect(),
                digests: Vec::new(),
            })
            .collect(),
        condition: after.map(|after| ConditionRef {
            items: vec![crate::history::QueryItemRef {
                types: vec!["Seat".into()],
                tags: vec!["seat:1".into()],
            }],
            after: (after != u64::MAX).then_some(after),
        }),
        outcome,
    }
}

fn multi_ok(last_revisions: &[u64], last_position: u64) -> MultiOutcome {
    MultiOutcome::Ok {
        last_revisions: last_revisions.to_vec(),
        last_position,
    }
}

/// Two claims of one seat, both acknowledged: the second landed after the first matched
/// its condition. Refused with the first's position instead, the history is clean.
#[test]
fn a_dcb_success_despite_a_matching_event_before_it_is_found() {
    let log = vec![seat(1, 0, 0), seat(2, 1, 1)];
    let both = with_log(
        vec![
            multi(1, &[("$dcb", &[1])], Some(u64::MAX), multi_ok(&[0], 0)),
            multi(2, &[("$dcb", &[2])], Some(u64::MAX), multi_ok(&[1], 1)),
        ],
        &log,
    );
    assert_eq!(rules(&both), only(Rule::DcbCondition));
    let one = with_log(
        vec![
            multi(1, &[("$dcb", &[1])], Some(u64::MAX), multi_ok(&[0], 0)),
            multi(
                2,
                &[("$dcb", &[2])],
                Some(u64::MAX),
                MultiOutcome::ConditionFailed { position: 0 },
            ),
        ],
        &log[..1],
    );
    assert_eq!(rules(&one), BTreeSet::new());
    // A refusal must name a matching position after `after`.
    let wrong = with_log(
        vec![
            multi(1, &[("$dcb", &[1])], Some(u64::MAX), multi_ok(&[0], 0)),
            multi(
                2,
                &[("$dcb", &[2])],
                Some(0),
                MultiOutcome::ConditionFailed { position: 0 },
            ),
        ],
        &log[..1],
    );
    assert_eq!(rules(&wrong), only(Rule::DcbCondition));
    // ... and the first one: two seats taken, a third claim refused naming the second.
    let claims = |named: u64| {
        with_log(
            vec![
                multi(1, &[("$dcb", &[1])], Some(u64::MAX), multi_ok(&[0], 0)),
                multi(2, &[("a", &[2])], None, multi_ok(&[0], 1)),
                multi(3, &[("$dcb", &[3])], None, multi_ok(&[1], 2)),
                multi(
                    4,
                    &[("$dcb", &[4])],
                    Some(u64::MAX),
                    MultiOutcome::ConditionFailed { position: named },
                ),
            ],
            &[seat(1, 0, 0), ev(2, "a", 0, 1), seat(3, 1, 2)],
        )
    };
    assert_eq!(rules(&claims(0)), BTreeSet::new());
    assert_eq!(rules(&claims(2)), only(Rule::DcbCondition));
}

#[test]
fn a_multi_stream_append_partly_in_the_log_is_found() {
    let log = vec![ev(1, "a", 0, 0), ev(2, "b", 0, 1), ev(3, "a", 1, 2)];
    let history = vec![
        multi(1, &[("a", &[1]), ("b", &[2])], None, multi_ok(&[0, 0], 1)),
        multi(
            2,
            &[("a", &[3]), ("b", &[4])],
            None,
            MultiOutcome::Unknown {
                error: "timed out".into(),
            },
        ),
    ];
    assert_eq!(
        rules(&with_log(history.clone(), &log)),
        only(Rule::MultiNotAtomic)
    );
    assert_eq!(rules(&with_log(history, &log[..2])), BTreeSet::new());
}

/// A consumer-group history on [`clean`]'s log: deliveries and answers of stream `a` (positions
/// 0, 1, 3) and the group's recorded states.
fn group_history(order: &[(u64, &str)], states: Vec<(u64, Vec<(u64, u64)>)>) -> Vec<Record> {
    let log = clean_log();
    let mut history = clean();
    for &(position, what) in order {
        let event = log.iter().find(|e| e.position == position).unwrap().clone();
        history.push(match what {
            "deliver" => Record::GroupDelivery {
                consumer: 1,
                at_ms: 50,
                group: "g".into(),
                event,
                retry_count: 0,
            },
            action => Record::GroupAck {
                consumer: 1,
                at_ms: 50,
                group: "g".into(),
                id: event.id,
                stream: event.stream.clone(),
                revision: event.revision,
                position,
                action: action.into(),
            },
        });
    }
    history.push(Record::NodeGroup {
        node: 1,
        group: "g".into(),
        states: states
            .into_iter()
            .map(|(next, done)| crate::history::GroupStateRef {
                incarnation: 0,
                ordered: true,
                deleted: false,
                next,
                done,
            })
            .collect(),
        parked: Vec::new(),
    });
    history
}

#[test]
fn group_rules_hold_for_a_consumer_that_answers_in_order() {
    let history = group_history(
        &[
            (0, "deliver"),
            (0, "ack"),
            (1, "deliver"),
            (1, "park"),
            (2, "deliver"),
            (2, "ack"),
        ],
        vec![(0, vec![]), (1, vec![(2, 3)]), (3, vec![])],
    );
    let report = check(&history);
    assert!(report.is_ok(), "{report}");
}

#[test]
fn group_rules_find_order_loss_and_forgetting() {
    // Revision 1 of `a` delivered before revision 0 was answered.
    let history = group_history(
        &[(0, "deliver"), (1, "deliver"), (0, "ack"), (1, "ack")],
        vec![(2, vec![])],
    );
    assert_eq!(rules(&history), BTreeSet::from([Rule::GroupOrder]));
    // The checkpoint counts position 1 as done; nobody answered it.
    let history = group_history(
        &[(0, "deliver"), (0, "ack"), (1, "deliver")],
        vec![(2, vec![])],
    );
    assert_eq!(rules(&history), BTreeSet::from([Rule::GroupLost]));
    // A later checkpoint forgets position 2, which an earlier one had done.
    let history = group_history(
        &[(0, "deliver"), (0, "ack"), (2, "deliver"), (2, "ack")],
        vec![(1, vec![(2, 3)]), (1, vec![])],
    );
    assert_eq!(
        rules(&history),
        BTreeSet::from([Rule::GroupCheckpointForgot])
    );
}

/// A stream `s` with two appends (revisions 0-1 at positions 0-1, 2 at 2), then max count 1
/// (its metastream event at position 3): revisions 0 and 1 are hidden from 50 ms on.
fn lifecycle_history(late_read: Vec<EventRef>, log: &[EventRef]) -> Vec<Record> {
    use crate::history::{ChangeOutcome, LifecycleChange};
    let mut history = vec![
        Record::Run {
            seed: 7,
            nodes: 3,
            clients: 1,
        },
        append(1, (0, 10), "s", Expected::Any, &[1, 2], ok(1, 1)),
        append(2, (20, 30), "s", Expected::Any, &[3], ok(2, 2)),
        read(
            3,
            35,
            Some("s"),
            0,
            64,
            Consistency::Linearizable,
            vec![ev(1, "s", 0, 0), ev(2, "s", 1, 1), ev(3, "s", 2, 2)],
        ),
        Record::Lifecycle {
            op: 4,
            client: 0,
            start_ms: 40,
            end_ms: 50,
            stream: "s".into(),
            change: LifecycleChange::Metadata {
                max_count: Some(1),
                truncate_before: None,
            },
            id: Some(id(100)),
            outcome: ChangeOutcome::Ok {
                meta_revision: Some(0),
                meta_position: Some(3),
            },
        },
        read(
            5,
            60,
            Some("s"),
            0,
            64,
            Consistency::Linearizable,
            late_read,
        ),
    ];
    history.extend(node_logs(log));
    history
}

fn lifecycle_log() -> Vec<EventRef> {
    vec![ev(3, "s", 2, 2), ev(100, "$$s", 0, 3)]
}

#[test]
fn hidden_events_leave_holes_the_other_rules_accept() {
    let history = lifecycle_history(vec![ev(3, "s", 2, 2)], &lifecycle_log());
    assert_eq!(rules(&history), BTreeSet::new(), "{}", check(&history));
}

#[test]
fn a_read_after_the_change_must_not_show_what_it_hid() {
    let late = vec![ev(2, "s", 1, 1), ev(3, "s", 2, 2)];
    let history = lifecycle_history(late, &lifecycle_log());
    assert_eq!(rules(&history), only(Rule::RemovedVisible));
}

#[test]
fn a_node_log_must_not_keep_a_hidden_event() {
    let mut log = lifecycle_log();
    log.insert(0, ev(2, "s", 1, 1));
    let history = lifecycle_history(vec![ev(3, "s", 2, 2)], &log);
    assert!(rules(&history).contains(&Rule::RemovedVisible));
}

#[test]
fn a_live_event_must_not_be_lost() {
    let log = vec![ev(100, "$$s", 0, 3)];
    let history = lifecycle_history(Vec::new(), &log);
    assert!(
        rules(&history).contains(&Rule::LiveLost),
        "{}",
        check(&history)
    );
}

#[test]
fn a_tombstoned_stream_must_take_no_write() {
    use crate::history::{ChangeOutcome, LifecycleChange};
    let mut history = lifecycle_history(vec![ev(3, "s", 2, 2)], &lifecycle_log());
    let at = history.len() - 3;
    history.insert(
        at,
        Record::Lifecycle {
            op: 6,
            client: 0,
            start_ms: 70,
            end_ms: 80,
            stream: "s".into(),
            change: LifecycleChange::Tombstone,
            id: Some(id(101)),
            outcome: ChangeOutcome::Ok {
                meta_revision: Some(1),
                meta_position: Some(4),
            },
        },
    );
    history.insert(
        at + 1,
        append(7, (90, 95), "s", Expected::Any, &[5], ok(3, 5)),
    );
    let log = vec![ev(100, "$$s", 0, 3), ev(101, "$$s", 1, 4)];
    let history = with_log(history, &log);
    assert!(
        rules(&history).contains(&Rule::TombstoneWritten),
        "{}",
        check(&history)
    );
}

/// `clean()` with a group stream `$group-g` of five states at positions 6..=10, of which a
/// history of 2 shows `shown` (revision, position) on every node.
fn with_group_history(shown: &[(u64, u64)]) -> Vec<Record> {
    let mut log = clean_log();
    for &(revision, position) in shown {
        log.push(ev(
            100 + u128::from(revision),
            "$group-g",
            revision,
            position,
        ));
    }
    let mut history = with_log(clean(), &log);
    history.push(Record::GroupHistory { events: 2 });
    history
}

#[test]
fn a_group_stream_showing_its_newest_states_passes_and_its_hidden_positions_are_no_gap() {
    let report = check(&with_group_history(&[(3, 9), (4, 10)]));
    assert!(report.is_ok(), "{report}");
}

#[test]
fn a_gap_beyond_the_group_streams_hidden_history_is_found() {
    // Four positions (6..=9) are missing, but the group stream hides only three states.
    assert_eq!(
        rules(&with_group_history(&[(3, 10), (4, 11)])),
        BTreeSet::from([Rule::PositionOrder, Rule::GroupHistory])
    );
}

#[test]
fn a_group_stream_showing_fewer_states_than_its_history_is_found() {
    // The positions match the hidden states (6..=9), but a history of 2 shows revisions 3-4.
    assert_eq!(
        rules(&with_group_history(&[(4, 10)])),
        only(Rule::GroupHistory)
    );
}

#[test]
fn a_group_stream_with_a_hole_is_found() {
    assert_eq!(
        rules(&with_group_history(&[(2, 8), (4, 10)])),
        BTreeSet::from([Rule::RevisionGap, Rule::PositionOrder, Rule::GroupHistory])
    );
}
