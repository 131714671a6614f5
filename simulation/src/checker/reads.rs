//! The rules about what readers saw: stream, `$all` and index reads and subscriptions are each
//! explained by the reference log, and each node's indexes equal its log filtered.

use std::collections::HashMap;

use super::lifecycle::Removed;
use super::log::{At, Log};
use super::rule::{Rule, Sink};
use crate::history::{in_index, AppendOutcome, Consistency, EventRef, ReadOutcome, Record};

/// Acknowledged appends sorted by end time, with the running maximum of their last position:
/// "the furthest append acknowledged before t" is then one binary search.
#[derive(Default)]
pub(super) struct AckedBefore {
    /// (end_ms, max last_position up to here, op of that max).
    entries: Vec<(u64, u64, u64)>,
}

impl AckedBefore {
    fn add(&mut self, end_ms: u64, last_position: u64, op: u64) {
        self.entries.push((end_ms, last_position, op));
    }

    fn seal(&mut self) {
        self.entries.sort_unstable();
        let mut best: Option<(u64, u64)> = None;
        for entry in &mut self.entries {
            if best.is_none_or(|(position, _)| entry.1 > position) {
                best = Some((entry.1, entry.2));
            }
            (entry.1, entry.2) = best.expect("set above");
        }
    }

    /// (last_position, op) of the furthest append that ended strictly before `ms`.
    fn before(&self, ms: u64) -> Option<(u64, u64)> {
        let count = self.entries.partition_point(|entry| entry.0 < ms);
        count.checked_sub(1).map(|last| {
            let (_, position, op) = self.entries[last];
            (position, op)
        })
    }
}

/// Rule 8: every successful read is a prefix of its scope in the log, fresh enough for the
/// consistency it asked for.
pub(super) fn check_reads(history: &[Record], log: &Log, removed: &Removed, sink: &mut Sink) {
    // Appends without events say nothing about what a read must see.
    let mut acked_all = AckedBefore::default();
    let mut acked_streams: HashMap<&str, AckedBefore> = HashMap::new();
    for record in history {
        if let Record::Append {
            op,
            end_ms,
            stream,
            ids,
            outcome: AppendOutcome::Ok { last_position, .. },
            ..
        } = record
        {
            // An append a lifecycle hid since need not be seen (`removed-visible` judges it).
            if !ids.is_empty() && !ids.iter().any(|id| removed.contains(id)) {
                acked_all.add(*end_ms, *last_position, *op);
                acked_streams
                    .entry(stream)
                    .or_default()
                    .add(*end_ms, *last_position, *op);
            }
        }
    }
    acked_all.seal();
    acked_streams.values_mut().for_each(AckedBefore::seal);

    for record in history {
        let Record::Read {
            op,
            start_ms,
            stream,
            from_position,
            max_count,
            consistency,
            outcome: ReadOutcome::Ok { events },
            ..
        } = record
        else {
            continue;
        };
        let (op, from_position, max_count) = (*op, *from_position, *max_count);
        let (scope, name) = match stream {
            Some(stream) => (log.stream_from(stream, 0), format!("stream {stream}")),
            None => (
                log.all_from(from_position),
                format!("$all from {from_position}"),
            ),
        };
        let returned = events.len() as u64;
        if returned > max_count {
            sink.push(Rule::StaleRead, || {
                format!("op {op} ({name}): returned {returned} events, max_count {max_count}")
            });
            continue;
        }
        // Events a lifecycle hid by the end are left out of both sides: whether the read
        // could still show them is `removed-visible`'s to judge.
        let events = &*removed.visible(events);
        let visible_scope = removed.visible_scope(scope);
        let scope = if removed.is_empty() {
            scope
        } else {
            &visible_scope[..]
        };
        if let Some(index) = first_mismatch(events, scope) {
            sink.push(Rule::StaleRead, || {
                format!(
                    "op {op} ({name}): {}",
                    describe_mismatch(events, index, scope, log)
                )
            });
            continue;
        }
        if returned == max_count {
            continue; // cut by its count: it makes no claim about what comes after
        }
        let seen = events.last().map(|e| e.position);
        match *consistency {
            Consistency::Local => {}
            Consistency::Linearizable => {
                let required = match stream {
                    Some(stream) => acked_streams
                        .get(stream.as_str())
                        .and_then(|a| a.before(*start_ms)),
                    None => acked_all
                        .before(*start_ms)
                        .filter(|&(position, _)| position >= from_position),
                };
                if let Some((position, append)) = required {
                    if seen.is_none_or(|seen| seen < position) {
                        sink.push(Rule::StaleRead, || {
                            format!(
                                "op {op} (linearizable, {name}, began at {start_ms}ms) saw up \
                                 to position {}, but op {append}, acknowledged before it began, \
                                 ends at {position}",
                                seen.map_or("none".to_string(), |p| p.to_string())
                            )
                        });
                    }
                }
            }
            Consistency::LocalMinPosition(min) => {
                let required = scope.partition_point(|e| e.position <= min);
                if events.len() < required {
                    sink.push(Rule::StaleRead, || {
                        format!(
                            "op {op} (local_min_position {min}, {name}) returned {} events, but \
                             the log has {required} in scope at or below position {min}",
                            events.len()
                        )
                    });
                }
            }
        }
    }
}

/// Rule 9: each subscription delivered a prefix of its scope: no gap, duplicate, reordering
/// or invented event.
pub(super) fn check_subscriptions(
    history: &[Record],
    log: &Log,
    removed: &Removed,
    sink: &mut Sink,
) {
    for record in history {
        let Record::Subscription {
            sub,
            client,
            stream,
            from,
            events,
            ..
        } = record
        else {
            continue;
        };
        let (scope, name) = match stream {
            Some(stream) => (log.stream_from(stream, *from), format!("stream {stream}")),
            None => (log.all_from(*from), "$all".to_string()),
        };
        // A subscription may have delivered an event before a lifecycle hid it, or passed
        // over one hidden already: both sides without them.
        let events = &*removed.visible(events);
        let visible_scope = removed.visible_scope(scope);
        let scope = if removed.is_empty() {
            scope
        } else {
            &visible_scope[..]
        };
        if let Some(index) = first_mismatch(events, scope) {
            sink.push(Rule::SubscriptionGap, || {
                format!(
                    "sub {sub} (client {client}, {name} from {from}): {}",
                    describe_mismatch(events, index, scope, log)
                )
            });
        }
    }
}

/// An index's events in the scope given, in order: `$all` filtered by it.
pub(super) fn filtered<'a>(index: &str, scope: &[&'a EventRef]) -> Vec<&'a EventRef> {
    scope
        .iter()
        .copied()
        .filter(|e| in_index(index, e) == Some(true))
        .collect()
}

/// Rule 16, on clients: an index read returned a prefix of the reference log filtered by the
/// index from its position (no gap, nothing foreign), no more than asked, and, at a minimum
/// position, everything of the index at or below it.
pub(super) fn check_index_reads(history: &[Record], log: &Log, sink: &mut Sink) {
    for record in history {
        let Record::IndexRead {
            op,
            index,
            from_position,
            max_count,
            consistency,
            outcome: ReadOutcome::Ok { events },
            ..
        } = record
        else {
            continue;
        };
        let name = format!("{index} from {from_position}");
        if in_index(index, &EventRef::default()).is_none() {
            sink.push(Rule::IndexMismatch, || {
                format!("op {op}: {index} names no index")
            });
            continue;
        }
        let scope = filtered(index, log.all_from(*from_position));
        if events.len() as u64 > *max_count {
            sink.push(Rule::IndexMismatch, || {
                format!(
                    "op {op} ({name}): {} events, max_count {max_count}",
                    events.len()
                )
            });
            continue;
        }
        if let Some(at) = first_mismatch(events, &scope) {
            sink.push(Rule::IndexMismatch, || {
                format!(
                    "op {op} ({name}): {}",
                    describe_mismatch(events, at, &scope, log)
                )
            });
            continue;
        }
        if let Consistency::LocalMinPosition(min) = *consistency {
            let required = scope.partition_point(|e| e.position <= min);
            if (events.len() as u64) < *max_count && events.len() < required {
                sink.push(Rule::IndexMismatch, || {
                    format!(
                        "op {op} (local_min_position {min}, {name}) returned {} events, but the \
                         log has {required} in the index at or below position {min}",
                        events.len()
                    )
                });
            }
        }
    }
}

/// Rule 16, on nodes: each node's whole index after the run is exactly its own log filtered.
pub(super) fn check_node_indexes(
    history: &[Record],
    node_logs: &[(u64, &[EventRef])],
    sink: &mut Sink,
) {
    for record in history {
        let Record::NodeIndex {
            node,
            index,
            events,
        } = record
        else {
            continue;
        };
        let Some((_, own)) = node_logs.iter().find(|(n, _)| n == node) else {
            continue;
        };
        let own_log = Log::new(own);
        let scope = filtered(index, &own_log.all);
        let at = first_mismatch(events, &scope)
            .or_else(|| (events.len() < scope.len()).then_some(events.len()));
        if let Some(at) = at {
            sink.push(Rule::IndexMismatch, || {
                let got = events
                    .get(at)
                    .map_or("nothing".to_string(), |e| At(e).to_string());
                let wanted = scope
                    .get(at)
                    .map_or("nothing".to_string(), |e| At(e).to_string());
                format!(
                    "node {node}: {index} has {} events, its log filtered {}; event {at} is \
                     {got}, the log has {wanted}",
                    events.len(),
                    scope.len()
                )
            });
        }
    }
}

/// Where `got` stops being a prefix of `scope`, if it does.
pub(super) fn first_mismatch(got: &[EventRef], scope: &[&EventRef]) -> Option<usize> {
    got.iter()
        .enumerate()
        .position(|(index, event)| scope.get(index).copied() != Some(event))
}

/// Says what went wrong at `got[index]` (only called for kept violations: it scans).
pub(super) fn describe_mismatch(
    got: &[EventRef],
    index: usize,
    scope: &[&EventRef],
    log: &Log,
) -> String {
    let event = &got[index];
    let wanted = scope
        .get(index)
        .map_or("the end of the log".to_string(), |e| At(e).to_string());
    let what = if got[..index].iter().any(|e| e.id == event.id) {
        "a duplicate"
    } else if scope.get(index).is_some_and(|e| e.id == event.id) {
        "misreported"
    } else {
        match scope.iter().position(|e| e.id == event.id) {
            Some(at) if at > index => "a gap",
            Some(_) => "out of order",
            None if log.get(&event.id).is_some() => "out of scope",
            None => "not in the log",
        }
    };
    format!(
        "event {index} is {}, {what}; the log has {wanted}",
        At(event)
    )
}
