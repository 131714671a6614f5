//! The reference log, indexed once for every rule, and how an event of it is printed.

use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;

use crate::history::EventRef;

/// The reference log with the indexes every rule needs.
pub(super) struct Log<'a> {
    pub(super) events: &'a [EventRef],
    /// The whole log by reference, so `$all` and stream scopes are both `&[&EventRef]`.
    pub(super) all: Vec<&'a EventRef>,
    /// Each id's first occurrence.
    pub(super) by_id: HashMap<Uuid, &'a EventRef>,
    /// Each stream's events in position order.
    pub(super) streams: HashMap<&'a str, Vec<&'a EventRef>>,
}

impl<'a> Log<'a> {
    pub(super) fn new(events: &'a [EventRef]) -> Self {
        let mut by_id = HashMap::with_capacity(events.len());
        let mut streams: HashMap<&str, Vec<&EventRef>> = HashMap::new();
        for event in events {
            by_id.entry(event.id).or_insert(event);
            streams.entry(&event.stream).or_default().push(event);
        }
        Log {
            events,
            all: events.iter().collect(),
            by_id,
            streams,
        }
    }

    pub(super) fn get(&self, id: &Uuid) -> Option<&'a EventRef> {
        self.by_id.get(id).copied()
    }

    /// `$all` from `position` (included). Binary search: positions are sorted in a good log,
    /// and a bad one is already reported by PositionOrder.
    pub(super) fn all_from(&self, position: u64) -> &[&'a EventRef] {
        let start = self.all.partition_point(|e| e.position < position);
        &self.all[start..]
    }

    /// `stream` from `revision` (included); empty if the stream is not in the log.
    pub(super) fn stream_from(&self, stream: &str, revision: u64) -> &[&'a EventRef] {
        match self.streams.get(stream) {
            Some(events) => &events[events.partition_point(|e| e.revision < revision)..],
            None => &[],
        }
    }
}

/// Formats an event as `id stream/revision @position`.
pub(super) struct At<'a>(pub(super) &'a EventRef);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "{} {}/{} @{}", e.id, e.stream, e.revision, e.position)
    }
}
