//! Consumer groups: per-stream order of an ordered group as its consumers saw it, no event
//! counted done by a committed checkpoint that nobody answered (nor parked), checkpoints
//! that never forget, no delivery its filter does not pass, and never more live groups than
//! the limit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cairn_raft_store::consumer_group::{
    CREATED_EVENT_TYPE, DELETED_EVENT_TYPE, GROUP_STREAM_PREFIX,
};

use super::lifecycle::Removed;
use super::log::Log;
use super::rule::{Rule, Sink};
use crate::history::{EventRef, GroupStateRef, Record};

/// Whether `key` is done by a recorded checkpoint.
fn done(state: &GroupStateRef, key: u64) -> bool {
    key < state.next || state.done.iter().any(|&(from, to)| from <= key && key < to)
}

/// Judges every group the history has consumers or states of.
pub(super) fn check_groups(history: &[Record], log: &Log, removed: &Removed, sink: &mut Sink) {
    // The strategy, from any node's recorded states (they are one committed history).
    let mut states: BTreeMap<&str, &[GroupStateRef]> = BTreeMap::new();
    let mut parked: HashMap<&str, HashSet<u64>> = HashMap::new();
    for record in history {
        if let Record::NodeGroup {
            group,
            states: recorded,
            parked: positions,
            ..
        } = record
        {
            let longest = states.entry(group).or_insert(recorded);
            if recorded.len() > longest.len() {
                *longest = recorded;
            }
            parked
                .entry(group)
                .or_default()
                .extend(positions.iter().copied());
        }
    }
    // The filter each group was asked for (every create of a group carries the same one).
    let mut filters: HashMap<&str, Option<&str>> = HashMap::new();
    for record in history {
        if let Record::GroupCreate {
            group,
            stream_prefix,
            ..
        } = record
        {
            filters.insert(group, stream_prefix.as_deref());
        }
    }
    check_order(history, &states, removed, sink);
    check_filter(history, &filters, sink);
    check_limit(history, sink);
    check_checkpoints(history, &states, &parked, &filters, log, sink);
}

/// Whether `group`'s filter passes an event of `stream` (groups read `$all`, which leaves
/// `$` streams out unless the prefix asks for them).
fn passes(filters: &HashMap<&str, Option<&str>>, group: &str, stream: &str) -> bool {
    match filters.get(group).copied().flatten() {
        Some(prefix) => stream.starts_with(prefix),
        None => !stream.starts_with('$'),
    }
}

/// The group history the run's nodes were configured with, when it is bounded.
pub(super) fn group_history(history: &[Record]) -> Option<u64> {
    history.iter().find_map(|r| match r {
        Record::GroupHistory { events } => Some(*events),
        _ => None,
    })
}

/// `group-history`: each node's `$group-` streams show exactly their newest `events` events:
/// a run of revisions without a hole, ending at the stream's head (the group's state), as
/// long as the history or the whole stream if shorter. (That the positions `$all` misses
/// are those events is `check_log_shape`'s.)
pub(super) fn check_group_history(node_logs: &[(u64, &[EventRef])], events: u64, sink: &mut Sink) {
    for &(node, log) in node_logs {
        let mut shown: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for event in log {
            if event.stream.starts_with(GROUP_STREAM_PREFIX) {
                shown.entry(&event.stream).or_default().push(event.revision);
            }
        }
        for (stream, revisions) in shown {
            let (Some(&first), Some(&head)) = (revisions.first(), revisions.last()) else {
                continue;
            };
            let expected_first = (head + 1).saturating_sub(events);
            let contiguous = revisions
                .iter()
                .enumerate()
                .all(|(i, &r)| r == first + i as u64);
            if first != expected_first || !contiguous {
                sink.push(Rule::GroupHistory, || {
                    format!(
                        "node {node}: {stream} shows {} events from revision {first} to its head \
                         {head}{}, but a history of {events} shows revisions {expected_first} to \
                         {head}",
                        revisions.len(),
                        if contiguous { "" } else { " with holes" }
                    )
                });
            }
        }
    }
}

/// `group-limit`: with a limit recorded (`Record::GroupLimit`), no point of any node's log
/// holds more live groups than it. A group is live from its `$group-created` event to its
/// `$group-deleted` one, both in its `$group-` stream, which every node's `$all` shows.
fn check_limit(history: &[Record], sink: &mut Sink) {
    let Some(max) = history.iter().find_map(|r| match r {
        Record::GroupLimit { max } => Some(*max),
        _ => None,
    }) else {
        return;
    };
    for record in history {
        let Record::NodeLog { node, events } = record else {
            continue;
        };
        let mut live: BTreeSet<&str> = BTreeSet::new();
        for event in events {
            let Some(group) = event.stream.strip_prefix(GROUP_STREAM_PREFIX) else {
                continue;
            };
            match event.event_type.as_deref() {
                Some(CREATED_EVENT_TYPE) => live.insert(group),
                Some(DELETED_EVENT_TYPE) => live.remove(group),
                _ => continue,
            };
            if live.len() as u64 > max {
                sink.push(Rule::GroupLimit, || {
                    format!(
                        "node {node}: after position {} ({group}) {} groups are live, more \
                         than the limit {max}: {live:?}",
                        event.position,
                        live.len()
                    )
                });
                break;
            }
        }
    }
}

/// `group-filter`: a group delivers only events its filter passes.
fn check_filter(history: &[Record], filters: &HashMap<&str, Option<&str>>, sink: &mut Sink) {
    for record in history {
        if let Record::GroupDelivery {
            group,
            event,
            consumer,
            at_ms,
            ..
        } = record
        {
            if !passes(filters, group, &event.stream) {
                sink.push(Rule::GroupFilter, || {
                    format!(
                        "group {group}: {}@{} delivered to consumer {consumer} at {at_ms} ms, \
                         which its filter {:?} does not pass",
                        event.stream,
                        event.revision,
                        filters.get(group.as_str()).copied().flatten()
                    )
                });
            }
        }
    }
}

/// `group-order`: in an ordered group, a stream's revision r (r > 0) is delivered only after
/// revision r - 1 was answered (acknowledged, parked or skipped) by some consumer, or removed
/// by the stream's lifecycle (hidden events are passed over, never delivered). Consumers
/// answer before the dispatcher moves on, so the answer is in the history first.
fn check_order(
    history: &[Record],
    states: &BTreeMap<&str, &[GroupStateRef]>,
    removed: &Removed,
    sink: &mut Sink,
) {
    let mut answered: HashSet<(&str, &str, u64)> = HashSet::new();
    for record in history {
        match record {
            Record::GroupAck {
                group,
                stream,
                revision,
                action,
                ..
            } if action != "retry" => {
                answered.insert((group, stream, *revision));
            }
            Record::GroupDelivery {
                group,
                event,
                consumer,
                at_ms,
                ..
            } => {
                let ordered = states
                    .get(group.as_str())
                    .and_then(|s| s.last())
                    .is_some_and(|s| s.ordered);
                if ordered
                    && event.revision > 0
                    && !removed.has_revision(&event.stream, event.revision - 1)
                    && !answered.contains(&(
                        group.as_str(),
                        event.stream.as_str(),
                        event.revision - 1,
                    ))
                {
                    sink.push(Rule::GroupOrder, || {
                        format!(
                            "group {group}: {}@{} delivered to consumer {consumer} at {at_ms} ms \
                             before revision {} was answered",
                            event.stream,
                            event.revision,
                            event.revision - 1
                        )
                    });
                }
            }
            _ => {}
        }
    }
}

/// `group-lost` and `group-checkpoint-forgot`, against each group's recorded states.
fn check_checkpoints(
    history: &[Record],
    states: &BTreeMap<&str, &[GroupStateRef]>,
    parked: &HashMap<&str, HashSet<u64>>,
    filters: &HashMap<&str, Option<&str>>,
    log: &Log,
    sink: &mut Sink,
) {
    let mut answered: HashMap<&str, HashSet<u64>> = HashMap::new();
    for record in history {
        if let Record::GroupAck {
            group,
            position,
            action,
            ..
        } = record
        {
            if action != "retry" {
                answered.entry(group).or_default().insert(*position);
            }
        }
    }
    for (&group, &recorded) in states {
        for pair in recorded.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            if before.incarnation != after.incarnation || after.deleted {
                continue;
            }
            let forgotten = (before.next.min(after.next)..before.next)
                .chain(before.done.iter().flat_map(|&(from, to)| from..to))
                .find(|&key| !done(after, key));
            if let Some(key) = forgotten {
                sink.push(Rule::GroupCheckpointForgot, || {
                    format!(
                        "group {group}: key {key} was done (next {}, done {:?}) and a later \
                         checkpoint (next {}, done {:?}) forgot it",
                        before.next, before.done, after.next, after.done
                    )
                });
            }
        }
        // The last checkpoint: every event it counts as done was answered or parked. (Groups
        // in the simulation read `$all`, whose keys are positions; what their filter does
        // not pass is passed over, done without an answer.)
        let Some(last) = recorded.last().filter(|s| !s.deleted) else {
            continue;
        };
        let answered = answered.get(group);
        let parked = parked.get(group);
        for event in log.events {
            if !passes(filters, group, &event.stream) || !done(last, event.position) {
                continue;
            }
            let handled = answered.is_some_and(|a| a.contains(&event.position))
                || parked.is_some_and(|p| p.contains(&event.position));
            if !handled {
                sink.push(Rule::GroupLost, || {
                    format!(
                        "group {group}: {}@{} (position {}) is done by the last checkpoint \
                         (next {}) but no consumer answered it and it is not parked",
                        event.stream, event.revision, event.position, last.next
                    )
                });
            }
        }
    }
}
