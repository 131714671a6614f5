//! The rules about the cluster as a whole: something was committed, every node holds the same
//! log of the right shape, writes resume after the heal, and nothing panicked.

use std::collections::{BTreeSet, HashMap};

use cairn_raft_store::consumer_group::GROUP_STREAM_PREFIX;
use uuid::Uuid;

use super::lifecycle::Removed;
use super::log::{At, Log};
use super::rule::{Rule, Sink};
use crate::history::{AppendOutcome, EventRef, Record};

/// Rule 1: a run that committed nothing (or left no log) proves nothing, so it fails.
pub(super) fn check_committed(history: &[Record], has_node_log: bool, sink: &mut Sink) {
    let acknowledged = history.iter().any(|record| {
        matches!(
            record,
            Record::Append {
                outcome: AppendOutcome::Ok { .. },
                ..
            }
        )
    });
    if !acknowledged {
        sink.push(Rule::NothingCommitted, || {
            "no append was acknowledged".to_string()
        });
    }
    if !has_node_log {
        sink.push(Rule::NothingCommitted, || {
            "the history has no node log".to_string()
        });
    }
}

/// Rule 2: after heal and convergence every node holds the reference log.
pub(super) fn check_convergence(
    reference: (u64, &[EventRef]),
    logs: &[(u64, &[EventRef])],
    sink: &mut Sink,
) {
    let (reference_node, reference_log) = reference;
    for &(node, events) in logs {
        match events.iter().zip(reference_log).position(|(a, b)| a != b) {
            Some(index) => sink.push(Rule::DivergentLogs, || {
                format!(
                    "node {node} differs from node {reference_node} at index {index}: {} vs {}",
                    At(&events[index]),
                    At(&reference_log[index])
                )
            }),
            None if events.len() < reference_log.len() => sink.push(Rule::NotConverged, || {
                format!(
                    "node {node} has {} events, a strict prefix of node {reference_node}'s {}",
                    events.len(),
                    reference_log.len()
                )
            }),
            None => {}
        }
    }
}

/// Rule 3: the reference log itself is well formed. Each check resynchronises after a
/// violation so one bad event gives one violation, not one per event after it. A gap of
/// `hidden` positions only (the security state's events, which `$all` never shows) is none,
/// nor is one that `removed` explains (events a stream's lifecycle removed). With a bounded
/// group history (`group_history`), a `$group-` stream starts at its first shown revision,
/// and the positions no other rule explains must be exactly as many as the group events the
/// log no longer shows (which ones is not in the history: only their count is).
pub(super) fn check_log_shape(
    log: &Log,
    hidden: &BTreeSet<u64>,
    removed: &Removed,
    group_history: Option<u64>,
    sink: &mut Sink,
) {
    let mut next_revision: HashMap<&str, u64> = HashMap::new();
    let mut first_at: HashMap<Uuid, u64> = HashMap::with_capacity(log.events.len());
    let explained = |p: u64| hidden.contains(&p) || removed.explains_position(p);
    // Gaps nothing explains, as (event after the gap, position before it), and their size.
    let mut gaps: Vec<(&EventRef, u64)> = Vec::new();
    let mut unexplained = match log.events.first() {
        Some(first) => (0..first.position).filter(|&p| !explained(p)).count() as u64,
        None => 0,
    };
    let mut group_hidden = 0u64;
    let mut previous: Option<&EventRef> = None;
    for event in log.events {
        if let Some(previous) = previous {
            match previous.position.checked_add(1) {
                Some(next) if next == event.position => {}
                // Each position of a gap is either hidden from reads (`$auth`) or removed by
                // a lifecycle change: one gap may hold both.
                Some(next) if event.position > next => {
                    let count = (next..event.position).filter(|&p| !explained(p)).count();
                    if count > 0 {
                        unexplained += count as u64;
                        gaps.push((event, previous.position));
                    }
                }
                _ => gaps.push((event, previous.position)),
            }
        }
        previous = Some(event);

        let first_of_group_stream = group_history.is_some()
            && event.stream.starts_with(GROUP_STREAM_PREFIX)
            && !next_revision.contains_key(event.stream.as_str());
        let next = next_revision.entry(&event.stream).or_insert(0);
        if first_of_group_stream {
            group_hidden += event.revision;
            *next = event.revision;
        }
        if event.revision != *next
            && !removed.explains_revisions(&event.stream, *next, event.revision)
        {
            let expected = *next;
            sink.push(Rule::RevisionGap, || {
                format!("{} should have revision {expected}", At(event))
            });
        }
        *next = event.revision.saturating_add(1);

        if let Some(&first) = first_at.get(&event.id) {
            sink.push(Rule::DuplicateEventId, || {
                format!("{} already at position {first}", At(event))
            });
        } else {
            first_at.insert(event.id, event.position);
        }
    }
    if group_history.is_some() && unexplained == group_hidden {
        return; // every gap is the group streams' hidden history
    }
    if group_history.is_some() {
        sink.push(Rule::GroupHistory, || {
            format!(
                "the log misses {unexplained} positions that neither `$auth` nor a lifecycle \
                 explains, but its group streams no longer show {group_hidden} events"
            )
        });
    }
    for (event, before) in gaps {
        sink.push(Rule::PositionOrder, || {
            format!("{} follows position {before}", At(event))
        });
    }
}

/// Rule 10: once every fault is lifted the cluster must accept writes again.
pub(super) fn check_heal(history: &[Record], sink: &mut Sink) {
    let Some(healed) = history
        .iter()
        .filter_map(|record| match record {
            Record::Healed { at_ms } => Some(*at_ms),
            _ => None,
        })
        .max()
    else {
        return;
    };
    let written = history.iter().any(|record| {
        matches!(
            record,
            Record::Append {
                start_ms,
                outcome: AppendOutcome::Ok { .. },
                ..
            } if *start_ms >= healed
        )
    });
    if !written {
        sink.push(Rule::NoWriteAfterHeal, || {
            format!("healed at {healed}ms, but no append begun since was acknowledged")
        });
    }
}

/// How long after the (last) heal the first append begun since was acknowledged.
pub(super) fn heal_to_write_ms(history: &[Record]) -> Option<u64> {
    let healed = history
        .iter()
        .filter_map(|record| match record {
            Record::Healed { at_ms } => Some(*at_ms),
            _ => None,
        })
        .max()?;
    history
        .iter()
        .filter_map(|record| match record {
            Record::Append {
                start_ms,
                end_ms,
                outcome: AppendOutcome::Ok { .. },
                ..
            } if *start_ms >= healed => Some(end_ms - healed),
            _ => None,
        })
        .min()
}

/// Rule 12: node code never panics, whatever the faults.
pub(super) fn check_panics(history: &[Record], sink: &mut Sink) {
    for record in history {
        if let Record::Panic { at_ms, message } = record {
            sink.push(Rule::NodePanicked, || format!("at {at_ms}ms: {message}"));
        }
    }
}
