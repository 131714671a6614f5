//! The rules about appends: every acknowledgement is in the log where it said, expected
//! revisions and conditions were honoured, retries are retries, and a multi-stream append is
//! all or nothing.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::lifecycle::Removed;
use super::log::{At, Log};
use super::rule::{Rule, Sink};
use crate::history::{
    AppendOutcome, ConditionRef, EventRef, Expected, MultiOutcome, MultiPart, Record,
};

/// The history with each multi-stream append followed by one `Append` per stream part, as a
/// single append of that part would have been recorded: its place (each part's last position
/// follows from the total, since parts are contiguous), its expectation, and its verdict (the
/// parts of a refused request are refused).
pub(super) fn with_multi_parts(history: &[Record]) -> Vec<Record> {
    let mut expanded = Vec::with_capacity(history.len());
    for record in history {
        expanded.push(record.clone());
        let Record::MultiAppend {
            op,
            client,
            start_ms,
            end_ms,
            parts,
            outcome,
            ..
        } = record
        else {
            continue;
        };
        let after: Vec<u64> = parts
            .iter()
            .enumerate()
            .map(|(i, _)| parts[i + 1..].iter().map(|p| p.ids.len() as u64).sum())
            .collect();
        for (i, part) in parts.iter().enumerate() {
            let outcome = match outcome {
                MultiOutcome::Ok {
                    last_revisions,
                    last_position,
                } => match last_revisions.get(i) {
                    Some(&last_revision) => AppendOutcome::Ok {
                        last_revision,
                        last_position: last_position.saturating_sub(after[i]),
                    },
                    None => AppendOutcome::Rejected {
                        reason: "acknowledged without this stream's revision".into(),
                    },
                },
                MultiOutcome::WrongExpectedVersion { stream, actual } if *stream == part.stream => {
                    AppendOutcome::WrongExpectedVersion { actual: *actual }
                }
                MultiOutcome::WrongExpectedVersion { stream, .. } => AppendOutcome::Rejected {
                    reason: format!("stream {stream}'s expectation failed"),
                },
                MultiOutcome::ConditionFailed { position } => AppendOutcome::Rejected {
                    reason: format!("condition failed at {position}"),
                },
                MultiOutcome::Rejected { reason } => AppendOutcome::Rejected {
                    reason: reason.clone(),
                },
                MultiOutcome::Unknown { error } => AppendOutcome::Unknown {
                    error: error.clone(),
                },
            };
            expanded.push(Record::Append {
                op: *op,
                client: *client,
                start_ms: *start_ms,
                end_ms: *end_ms,
                stream: part.stream.clone(),
                expected: part.expected,
                ids: part.ids.clone(),
                digests: part.digests.clone(),
                outcome,
            });
        }
    }
    expanded
}

/// Multi-stream atomicity and DCB conditions, against the reference log.
pub(super) fn check_multi_appends(history: &[Record], log: &Log, sink: &mut Sink) {
    // (condition, op's own events match it) -> the first successful id list and its op.
    let mut winners: HashMap<&ConditionRef, (Vec<Uuid>, u64)> = HashMap::new();
    for record in history {
        let Record::MultiAppend {
            op,
            parts,
            condition,
            outcome,
            ..
        } = record
        else {
            continue;
        };
        let op = *op;
        let ids: Vec<Uuid> = parts.iter().flat_map(|p| p.ids.iter().copied()).collect();
        let first = match all_or_nothing(log, parts) {
            Ok(first) => first,
            Err(detail) => {
                sink.push(Rule::MultiNotAtomic, || format!("op {op}: {detail}"));
                continue;
            }
        };
        let Some(condition) = condition else { continue };
        if let (Some(first), MultiOutcome::Ok { .. } | MultiOutcome::Unknown { .. }) =
            (first, outcome)
        {
            let from = condition.after.map_or(0, |a| a + 1);
            if let Some(violator) = log
                .all_from(from)
                .iter()
                .take_while(|e| e.position < first)
                .find(|e| condition.matches(e))
            {
                sink.push(Rule::DcbCondition, || {
                    format!(
                        "op {op} landed at @{first} although {} matches its condition {:?}                          after {:?}",
                        At(violator),
                        condition.items,
                        condition.after
                    )
                });
            }
        }
        if let MultiOutcome::Ok { .. } = outcome {
            let own_match = ids
                .iter()
                .filter_map(|id| log.get(id))
                .any(|e| condition.matches(e));
            if own_match {
                match winners.get(condition) {
                    Some((winner, winner_op)) if *winner != ids => {
                        let winner_op = *winner_op;
                        sink.push(Rule::DcbCondition, || {
                            format!(
                                "ops {winner_op} and {op} both succeeded on condition {:?} \
                                 after {:?}, each writing an event that matches it",
                                condition.items, condition.after
                            )
                        });
                    }
                    Some(_) => {}
                    None => {
                        winners.insert(condition, (ids.clone(), op));
                    }
                }
            }
        }
        if let MultiOutcome::ConditionFailed { position } = outcome {
            // The refusal names the first matching event after `after`.
            let first = log
                .all_from(condition.after.map_or(0, |a| a.saturating_add(1)))
                .iter()
                .find(|e| condition.matches(e))
                .map(|e| e.position);
            if first != Some(*position) {
                sink.push(Rule::DcbCondition, || {
                    format!(
                        "op {op} was refused naming @{position}, but the first event matching \
                         {:?} after {:?} is {first:?}",
                        condition.items, condition.after
                    )
                });
            }
        }
    }
}

/// The first position of a multi-stream append wholly in the log (`None` if wholly absent),
/// or why it is partly there or out of order.
pub(super) fn all_or_nothing(log: &Log, parts: &[MultiPart]) -> Result<Option<u64>, String> {
    let found: Vec<Option<&EventRef>> = parts
        .iter()
        .flat_map(|p| p.ids.iter().map(move |id| (id, p.stream.as_str())))
        .map(|(id, _)| log.get(id))
        .collect();
    let present = found.iter().filter(|e| e.is_some()).count();
    if present == 0 {
        return Ok(None);
    }
    if present < found.len() {
        return Err(format!(
            "{present} of its {} events are in the log",
            found.len()
        ));
    }
    let events: Vec<&EventRef> = found.into_iter().flatten().collect();
    let streams = parts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.stream.as_str(), p.ids.len()));
    for (i, (event, stream)) in events.iter().zip(streams).enumerate() {
        if event.stream != stream {
            return Err(format!("{} should be in {stream}", At(event)));
        }
        if i > 0 && events[i - 1].position + 1 != event.position {
            return Err(format!(
                "{} does not directly follow {}",
                At(event),
                At(events[i - 1])
            ));
        }
    }
    Ok(Some(events[0].position))
}

/// Rules 4–7: acknowledgements and refusals against the log.
pub(super) fn check_appends(
    history: &[Record],
    log: &Log,
    has_log: bool,
    removed: &Removed,
    sink: &mut Sink,
) {
    // Id lists that may legitimately be in the log: acknowledged or possibly written.
    let mut maybe_written: HashSet<&[Uuid]> = HashSet::new();
    // (stream, expectation) -> the first id list that succeeded on it, and its op.
    let mut winners: HashMap<(&str, Expected), (&[Uuid], u64)> = HashMap::new();

    for record in history {
        let Record::Append {
            op,
            stream,
            expected,
            ids,
            digests,
            outcome,
            ..
        } = record
        else {
            continue;
        };
        let op = *op;
        let (last_revision, last_position) = match outcome {
            AppendOutcome::Ok {
                last_revision,
                last_position,
            } => (*last_revision, *last_position),
            AppendOutcome::Unknown { .. } => {
                maybe_written.insert(ids.as_slice());
                continue;
            }
            _ => continue,
        };
        maybe_written.insert(ids.as_slice());
        // An append a stream's lifecycle hid is judged by the lifecycle rules (`live-lost`).
        if has_log && !ids.is_empty() && !ids.iter().any(|id| removed.contains(id)) {
            if let Some(detail) = misplaced(log, op, stream, ids, last_revision, last_position) {
                sink.push(Rule::AcknowledgedLost, || detail);
            }
            if let Some(detail) = other_content(log, op, ids, digests) {
                sink.push(Rule::ReusedIdAcknowledged, || detail);
            }
        }
        check_expected(log, op, stream, *expected, ids, last_revision, sink);

        if matches!(expected, Expected::Exact(_) | Expected::NoStream) {
            match winners.get(&(stream.as_str(), *expected)) {
                Some(&(winner, winner_op)) if winner != ids.as_slice() => {
                    sink.push(Rule::ConflictingSuccess, || {
                        format!(
                            "stream {stream} expecting {expected:?}: op {winner_op} ({}) and \
                             op {op} ({}) both succeeded",
                            first_id(winner),
                            first_id(ids)
                        )
                    })
                }
                Some(_) => {} // a re-send of the same append
                None => {
                    winners.insert((stream.as_str(), *expected), (ids.as_slice(), op));
                }
            }
        }
    }

    if !has_log {
        return;
    }
    for record in history {
        let Record::Append {
            op,
            stream,
            ids,
            outcome,
            ..
        } = record
        else {
            continue;
        };
        let what = match outcome {
            AppendOutcome::WrongExpectedVersion { .. } => "wrong_expected_version",
            // Refused as an idempotency conflict: the ids clash with a write that exists.
            AppendOutcome::Rejected { reason }
                if reason.to_ascii_lowercase().contains("idempotency") =>
            {
                continue
            }
            AppendOutcome::Rejected { .. } => "rejected",
            AppendOutcome::Ok { .. } | AppendOutcome::Unknown { .. } => continue,
        };
        // A re-send of an append that was (or may have been) written can be refused once the
        // server has forgotten the ids; then those ids are visible because of the other send.
        if maybe_written.contains(ids.as_slice()) {
            continue;
        }
        if let Some(event) = ids.iter().find_map(|id| log.get(id)) {
            sink.push(Rule::FailedVisible, || {
                format!(
                    "op {op} to {stream} ended {what}, yet {} is in the log",
                    At(event)
                )
            });
        }
    }
}

/// Why an acknowledged append's events are not the ones stored under its ids, if they are not.
/// Judged only where both sides carry a content digest.
pub(super) fn other_content(log: &Log, op: u64, ids: &[Uuid], digests: &[u64]) -> Option<String> {
    ids.iter().zip(digests).find_map(|(id, &sent)| {
        let event = log.get(id)?;
        let stored = event.digest?;
        (stored != sent).then(|| {
            format!(
                "op {op} was acknowledged, but {} holds other content (digest {stored:016x}, \
                 the append sent {sent:016x}): an id reused for another event was taken for \
                 a retry",
                At(event)
            )
        })
    })
}

pub(super) fn first_id(ids: &[Uuid]) -> String {
    match ids {
        [] => "no events".to_string(),
        [id] => id.to_string(),
        [id, ..] => format!("{id} and {} more", ids.len() - 1),
    }
}

/// Rule 4: why an acknowledged append is not where its ack says, if it is not.
pub(super) fn misplaced(
    log: &Log,
    op: u64,
    stream: &str,
    ids: &[Uuid],
    last_revision: u64,
    last_position: u64,
) -> Option<String> {
    let mut previous: Option<&EventRef> = None;
    for (index, id) in ids.iter().enumerate() {
        let Some(event) = log.get(id) else {
            return Some(format!(
                "op {op} to {stream}: event {} of {} ({id}) is not in the log",
                index + 1,
                ids.len()
            ));
        };
        if event.stream != stream {
            return Some(format!(
                "op {op} to {stream}: {} is in another stream",
                At(event)
            ));
        }
        if let Some(previous) = previous {
            if previous.revision.checked_add(1) != Some(event.revision) {
                return Some(format!(
                    "op {op} to {stream}: {} does not directly follow {}",
                    At(event),
                    At(previous)
                ));
            }
        }
        previous = Some(event);
    }
    let last = previous?;
    (last.revision != last_revision || last.position != last_position).then(|| {
        format!(
            "op {op} acknowledged at {stream}/{last_revision} @{last_position}, \
             but the log has {}",
            At(last)
        )
    })
}

/// Rule 5: the first event sits where the expectation put it. Judged on the log when the first
/// event is there (in the right stream), else on the revision the ack implies.
pub(super) fn check_expected(
    log: &Log,
    op: u64,
    stream: &str,
    expected: Expected,
    ids: &[Uuid],
    last_revision: u64,
    sink: &mut Sink,
) {
    let Some(first) = ids.first() else { return };
    let (first_revision, source) = match log.get(first) {
        Some(event) if event.stream == stream => (Some(event.revision), "in the log"),
        _ => (
            last_revision
                .checked_add(1)
                .and_then(|next| next.checked_sub(ids.len() as u64)),
            "per its ack",
        ),
    };
    let fits = match (expected, first_revision) {
        (Expected::Any, _) => true,
        (_, None) => false,
        (Expected::Exact(r), Some(first)) => r.checked_add(1) == Some(first),
        (Expected::NoStream, Some(first)) => first == 0,
        (Expected::StreamExists, Some(first)) => first >= 1,
    };
    if !fits {
        sink.push(Rule::WrongRevision, || {
            let at = first_revision.map_or("an impossible revision".to_string(), |r| {
                format!("revision {r}")
            });
            format!(
                "op {op} to {stream} expecting {expected:?} has its first event at {at} ({source})"
            )
        });
    }
}
