//! The rules of stream lifecycles (issue 18): what metadata changes, deletes, tombstones and
//! erases hide, judged from the history alone.
//!
//! A stream named by a [`Record::Lifecycle`] is *managed*: one client writes it, one operation
//! at a time, each sent again until its answer is known (`crate::lifecycle`), so the history
//! holds the exact order of its appends and changes. The checker replays them through its own
//! few lines of the retention rule (a revision is hidden below the highest of truncate-before,
//! the soft delete's mark and head + 1 - max count; a tombstoned or erased stream hides
//! everything; an erase also removes the metadata's history), apart from the store's code,
//! and learns for each event of a managed stream whether the final committed state hides it,
//! and from when (the end of the change, or append, that first hid it, and that change's
//! position in `$all`). The client only ever hides more, so an event once hidden stays hidden.
//!
//! Rules:
//! - `removed-visible`: no node's `$all` after the run holds an event the final state hides;
//!   no linearizable read begun after the change that hid an event returns it, nor a read at
//!   a minimum position at or past that change's position.
//! - `live-lost`: every acknowledged event of a managed stream (and every metastream event of
//!   an acknowledged change) that the final state does not hide is in the log at its
//!   acknowledged revision and position: retention, scavenges and crashes lose nothing live.
//! - `tombstone-written`: no append to a managed stream is acknowledged after a tombstone or
//!   erase of it was.
//!
//! The other rules judge the log with these removed events left out ([`Removed`]): a hole in
//! positions or revisions is allowed exactly where the removed events were, and reads and
//! subscriptions are compared with the log with those events taken out of both.

use std::collections::{HashMap, HashSet};

use cairn_raft_store::consumer_group::GROUP_STREAM_PREFIX;
use uuid::Uuid;

use super::log::{At, Log};
use super::rule::{Rule, Sink};
use crate::history::{
    AppendOutcome, ChangeOutcome, Consistency, EventRef, LifecycleChange, ReadOutcome, Record,
};

/// When an event was first hidden.
#[derive(Debug, Clone, Copy)]
struct Hidden {
    /// The end of the operation that hid it.
    at_ms: u64,
    /// That operation's own position in `$all` (its metastream event, or an append's last
    /// event), when known: a state at or past it hides the event.
    by_position: Option<u64>,
    op: u64,
}

/// One acknowledged event of a managed stream or of its metastream.
#[derive(Debug, Clone)]
struct Known {
    id: Uuid,
    stream: String,
    revision: u64,
    position: u64,
    hidden: Option<Hidden>,
}

/// What the checker believes of one managed stream after each acknowledged operation.
#[derive(Debug, Default)]
struct Managed {
    head: Option<u64>,
    max_count: Option<u64>,
    truncate_before: Option<u64>,
    deleted_before: Option<u64>,
    /// The end (ms) and op of the tombstone or erase that ended it.
    ended: Option<(u64, u64)>,
    events: Vec<Known>,
    metadata_events: Vec<Known>,
}

impl Managed {
    /// The first revision retention shows.
    fn first_visible(&self) -> u64 {
        let by_count = match (self.max_count, self.head) {
            (Some(count), Some(head)) => (head + 1).saturating_sub(count),
            _ => 0,
        };
        self.truncate_before
            .unwrap_or(0)
            .max(self.deleted_before.unwrap_or(0))
            .max(by_count)
    }

    /// Marks every event the current state hides and nothing hid before as hidden by `by`.
    fn hide(&mut self, by: Hidden) {
        let first_visible = self.first_visible();
        let ended = self.ended.is_some();
        for event in &mut self.events {
            if event.hidden.is_none() && (ended || event.revision < first_visible) {
                event.hidden = Some(by);
            }
        }
    }
}

/// The events of managed streams the final committed state hides, for the other rules.
#[derive(Debug, Default)]
pub(super) struct Removed {
    ids: HashSet<Uuid>,
    positions: HashSet<u64>,
    revisions: HashSet<(String, u64)>,
    /// The consumer groups' `$group-` streams show only their newest events
    /// ([`Record::GroupHistory`]): a read's events of them are left out of the comparisons
    /// with the final log, which no longer shows the older ones (`group-history` judges
    /// those streams).
    group_streams: bool,
}

impl Removed {
    pub(super) fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }

    /// Whether `event` is left out of the comparisons: removed by a lifecycle, or an event of
    /// a group stream with a bounded history.
    fn leaves_out(&self, event: &EventRef) -> bool {
        self.ids.contains(&event.id)
            || (self.group_streams && event.stream.starts_with(GROUP_STREAM_PREFIX))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty() && !self.group_streams
    }

    /// Whether revision `revision` of `stream` was removed.
    pub(super) fn has_revision(&self, stream: &str, revision: u64) -> bool {
        self.revisions.contains(&(stream.to_owned(), revision))
    }

    /// Whether the event at `position` was removed.
    pub(super) fn explains_position(&self, position: u64) -> bool {
        self.positions.contains(&position)
    }

    /// Whether every revision of `stream` from `from` to `to` (excluded) was removed.
    pub(super) fn explains_revisions(&self, stream: &str, from: u64, to: u64) -> bool {
        to > from && (from..to).all(|r| self.revisions.contains(&(stream.to_owned(), r)))
    }

    /// `events` without the removed ones (borrowed as they are when nothing was removed).
    pub(super) fn visible<'e>(&self, events: &'e [EventRef]) -> std::borrow::Cow<'e, [EventRef]> {
        if self.is_empty() {
            return std::borrow::Cow::Borrowed(events);
        }
        events
            .iter()
            .filter(|e| !self.leaves_out(e))
            .cloned()
            .collect::<Vec<_>>()
            .into()
    }

    /// `scope` without the removed events.
    pub(super) fn visible_scope<'a>(&self, scope: &[&'a EventRef]) -> Vec<&'a EventRef> {
        scope
            .iter()
            .copied()
            .filter(|e| !self.leaves_out(e))
            .collect()
    }
}

/// The managed streams replayed from the history.
pub(super) struct Lifecycles {
    streams: HashMap<String, Managed>,
    /// Appends acknowledged after their stream ended: (op, stream, the op that ended it).
    written_after_end: Vec<(u64, String, u64)>,
    pub(super) removed: Removed,
}

impl Lifecycles {
    pub(super) fn new(history: &[Record]) -> Lifecycles {
        let mut streams: HashMap<String, Managed> = history
            .iter()
            .filter_map(|record| match record {
                Record::Lifecycle { stream, .. } if !stream.is_empty() => {
                    Some((stream.clone(), Managed::default()))
                }
                _ => None,
            })
            .collect();
        let mut written_after_end = Vec::new();
        for record in history {
            match record {
                Record::Append {
                    op,
                    end_ms,
                    stream,
                    ids,
                    outcome:
                        AppendOutcome::Ok {
                            last_revision,
                            last_position,
                        },
                    ..
                } => {
                    let Some(managed) = streams.get_mut(stream) else {
                        continue;
                    };
                    if let Some((_, ended_by)) = managed.ended {
                        written_after_end.push((*op, stream.clone(), ended_by));
                    }
                    let count = ids.len() as u64;
                    for (offset, id) in ids.iter().enumerate() {
                        let back = count - 1 - offset as u64;
                        managed.events.push(Known {
                            id: *id,
                            stream: stream.clone(),
                            revision: last_revision.saturating_sub(back),
                            position: last_position.saturating_sub(back),
                            hidden: None,
                        });
                    }
                    managed.head = managed.head.max(Some(*last_revision));
                    managed.hide(Hidden {
                        at_ms: *end_ms,
                        by_position: Some(*last_position),
                        op: *op,
                    });
                }
                Record::Lifecycle {
                    op,
                    end_ms,
                    stream,
                    change,
                    id,
                    outcome:
                        ChangeOutcome::Ok {
                            meta_revision,
                            meta_position,
                        },
                    ..
                } => {
                    let Some(managed) = streams.get_mut(stream) else {
                        continue;
                    };
                    let by = Hidden {
                        at_ms: *end_ms,
                        by_position: *meta_position,
                        op: *op,
                    };
                    match change {
                        LifecycleChange::Metadata {
                            max_count,
                            truncate_before,
                        } => {
                            managed.max_count = *max_count;
                            managed.truncate_before = *truncate_before;
                        }
                        LifecycleChange::SoftDelete => {
                            managed.deleted_before =
                                managed.head.map(|h| h + 1).or(managed.deleted_before);
                        }
                        LifecycleChange::Tombstone => {
                            managed.ended = managed.ended.or(Some((*end_ms, *op)));
                        }
                        LifecycleChange::Erase => {
                            managed.ended = managed.ended.or(Some((*end_ms, *op)));
                            for event in &mut managed.metadata_events {
                                event.hidden = event.hidden.or(Some(by));
                            }
                        }
                        LifecycleChange::Scavenge => {}
                    }
                    if let (Some(id), Some(revision), Some(position)) =
                        (id, meta_revision, meta_position)
                    {
                        managed.metadata_events.push(Known {
                            id: *id,
                            stream: format!("$${stream}"),
                            revision: *revision,
                            position: *position,
                            hidden: None,
                        });
                    }
                    managed.hide(by);
                }
                _ => {}
            }
        }
        let mut removed = Removed {
            group_streams: history
                .iter()
                .any(|r| matches!(r, Record::GroupHistory { .. })),
            ..Removed::default()
        };
        for event in streams
            .values()
            .flat_map(|m| m.events.iter().chain(&m.metadata_events))
            .filter(|e| e.hidden.is_some())
        {
            removed.ids.insert(event.id);
            removed.positions.insert(event.position);
            removed
                .revisions
                .insert((event.stream.clone(), event.revision));
        }
        Lifecycles {
            streams,
            written_after_end,
            removed,
        }
    }

    fn known(&self) -> impl Iterator<Item = &Known> {
        self.streams
            .values()
            .flat_map(|m| m.events.iter().chain(&m.metadata_events))
    }

    fn hidden(&self) -> HashMap<Uuid, (&Known, Hidden)> {
        self.known()
            .filter_map(|e| Some((e.id, (e, e.hidden?))))
            .collect()
    }
}

/// The rules of the module docs.
pub(super) fn check_lifecycles(
    history: &[Record],
    lifecycles: &Lifecycles,
    node_logs: &[(u64, &[EventRef])],
    log: Option<&Log>,
    sink: &mut Sink,
) {
    if lifecycles.streams.is_empty() {
        return;
    }
    let hidden = lifecycles.hidden();
    for &(node, events) in node_logs {
        for event in events {
            if let Some((_, by)) = hidden.get(&event.id) {
                sink.push(Rule::RemovedVisible, || {
                    format!(
                        "node {node}'s $all holds {} after the run, hidden since op {}",
                        At(event),
                        by.op
                    )
                });
            }
        }
    }
    for record in history {
        let (op, start_ms, consistency, events) = match record {
            Record::Read {
                op,
                start_ms,
                consistency,
                outcome: ReadOutcome::Ok { events },
                ..
            }
            | Record::IndexRead {
                op,
                start_ms,
                consistency,
                outcome: ReadOutcome::Ok { events },
                ..
            } => (op, *start_ms, consistency, events),
            _ => continue,
        };
        for event in events {
            let Some((_, by)) = hidden.get(&event.id) else {
                continue;
            };
            let after_it = start_ms > by.at_ms
                && match *consistency {
                    Consistency::Linearizable => true,
                    Consistency::LocalMinPosition(min) => by.by_position.is_some_and(|p| p <= min),
                    Consistency::Local => false,
                };
            if after_it {
                sink.push(Rule::RemovedVisible, || {
                    format!(
                        "op {op} ({consistency:?}, began at {start_ms}ms) returned {}, hidden \
                         by op {} which ended at {}ms",
                        At(event),
                        by.op,
                        by.at_ms
                    )
                });
            }
        }
    }
    if let Some(log) = log {
        for known in lifecycles.known().filter(|e| e.hidden.is_none()) {
            let found = log.get(&known.id);
            if found.is_none_or(|e| {
                e.stream != known.stream
                    || e.revision != known.revision
                    || e.position != known.position
            }) {
                sink.push(Rule::LiveLost, || {
                    format!(
                        "{} {}/{} @{} is acknowledged and no change hides it, but the log has {}",
                        known.id,
                        known.stream,
                        known.revision,
                        known.position,
                        found.map_or("nothing under its id".to_string(), |e| At(e).to_string())
                    )
                });
            }
        }
    }
    for (op, stream, ended_by) in &lifecycles.written_after_end {
        sink.push(Rule::TombstoneWritten, || {
            format!("op {op}: an append to {stream} was acknowledged after op {ended_by} ended it")
        });
    }
}
