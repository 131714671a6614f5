//! Input limits, named with their unit, and the validation that enforces them.
//!
//! Validation runs twice: at the API edge (so bad input never reaches Raft) and again when the
//! state machine applies a command (so every replica reaches the same verdict even if a buggy
//! or hostile proposer skipped the edge). Because the apply-time check must be deterministic,
//! the limits are a cluster-wide setting: every node must run with the same [`Limits`].

use serde::{Deserialize, Serialize};

pub use crate::types::InvalidInput;
use crate::types::{Append, MultiAppend, NewEvent, Query, DCB_STREAM};

/// Longest stream name, in bytes of UTF-8 (data model: 1..=255 bytes).
pub const MAX_STREAM_NAME_BYTES: usize = 255;
/// Longest event type, in bytes of UTF-8.
pub const MAX_EVENT_TYPE_BYTES: usize = 255;
/// Default largest single event (type + data + metadata), in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Default largest append (all events of one append together), in bytes.
pub const DEFAULT_MAX_APPEND_BYTES: usize = 16 * 1024 * 1024;
/// Default largest number of events in one append.
pub const DEFAULT_MAX_EVENTS_PER_APPEND: usize = 10_000;
/// Most tags on one event. Each tag is an index entry written at apply, so this bounds an
/// event's cost there; a DCB query (issue 16) names a few, not dozens.
pub const MAX_TAGS_PER_EVENT: usize = 16;
/// Longest tag, in bytes of UTF-8 (the same bound as a type: it is a key of the tag index).
pub const MAX_TAG_BYTES: usize = 255;
/// Most items in a DCB query. Each item costs index seeks at apply (a condition) or per
/// event read, so a query names a few alternatives, not hundreds.
pub const MAX_QUERY_ITEMS: usize = 16;
/// Most event types in one query item (OR'd).
pub const MAX_QUERY_ITEM_TYPES: usize = 16;
/// Prefix of stream names reserved for the system; clients may not append to them.
pub const RESERVED_STREAM_PREFIX: char = '$';

/// The configurable limits. Every node of a cluster must use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_append_bytes: usize,
    pub max_events_per_append: usize,
    /// Live consumer groups at once (`DEFAULT_MAX_GROUPS` unless a test, such as the
    /// simulation's, sets a few to reach the limit).
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// Newest events a consumer group's `$group-` stream shows and a scavenge keeps
    /// (`DEFAULT_GROUP_HISTORY` unless a test, such as the simulation's, sets a few). At
    /// least 1: the newest event is the group's state. Every replica must have the same
    /// number, since a scavenge removes by it.
    #[serde(default = "default_group_history")]
    pub group_history: u64,
}

/// Live consumer groups at once unless configured (`consumer_group::MAX_GROUPS`).
pub const DEFAULT_MAX_GROUPS: usize = 1_000;

fn default_max_groups() -> usize {
    DEFAULT_MAX_GROUPS
}

/// Events of a `$group-` stream shown and kept unless configured: the group's state and the
/// checkpoints before it, about a quarter of a minute of a busy group's history at the
/// default checkpoint interval. Without a bound the stream grew by an event per checkpoint
/// for as long as the group lived (3,600 an hour), and a checkpoint's state can be large
/// (its done ranges).
pub const DEFAULT_GROUP_HISTORY: u64 = 16;

fn default_group_history() -> u64 {
    DEFAULT_GROUP_HISTORY
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_append_bytes: DEFAULT_MAX_APPEND_BYTES,
            max_events_per_append: DEFAULT_MAX_EVENTS_PER_APPEND,
            max_groups: default_max_groups(),
            group_history: default_group_history(),
        }
    }
}

/// Checks a client-chosen stream name against the data model.
pub fn validate_stream_name(name: &str) -> Result<(), InvalidInput> {
    if name.is_empty() {
        return Err(InvalidInput::EmptyStreamName);
    }
    if name.chars().all(char::is_whitespace) {
        return Err(InvalidInput::BlankStreamName);
    }
    if name.len() > MAX_STREAM_NAME_BYTES {
        return Err(InvalidInput::StreamNameTooLong {
            bytes: name.len(),
            max: MAX_STREAM_NAME_BYTES,
        });
    }
    if name.as_bytes().contains(&0) {
        return Err(InvalidInput::StreamNameHasNul);
    }
    if name.starts_with(RESERVED_STREAM_PREFIX) {
        return Err(InvalidInput::ReservedStreamName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Bytes an event counts against the size limits (its tags included).
pub fn event_size_bytes(event: &NewEvent) -> usize {
    event.event_type.len()
        + event.data.len()
        + event.metadata.len()
        + event.tags.iter().map(String::len).sum::<usize>()
}

/// Checks an event's tags: at most `MAX_TAGS_PER_EVENT`, each 1..=`MAX_TAG_BYTES` bytes, not
/// only whitespace, none twice.
pub fn validate_tags(index: usize, tags: &[String]) -> Result<(), InvalidInput> {
    if tags.len() > MAX_TAGS_PER_EVENT {
        return Err(InvalidInput::TooManyTags {
            index,
            count: tags.len(),
            max: MAX_TAGS_PER_EVENT,
        });
    }
    for (n, tag) in tags.iter().enumerate() {
        if tag.chars().all(char::is_whitespace) {
            return Err(InvalidInput::BlankTag { index, tag: n });
        }
        if tag.len() > MAX_TAG_BYTES {
            return Err(InvalidInput::TagTooLong {
                index,
                tag: n,
                bytes: tag.len(),
                max: MAX_TAG_BYTES,
            });
        }
        if tags[..n].contains(tag) {
            return Err(InvalidInput::DuplicateTag {
                index,
                tag: tag.clone(),
            });
        }
    }
    Ok(())
}

/// Checks a DCB query: at most `MAX_QUERY_ITEMS` items, each naming at least one type or
/// tag, at most `MAX_QUERY_ITEM_TYPES` types and `MAX_TAGS_PER_EVENT` tags (an item asking
/// for more tags than an event may carry could never match), every name 1..=255 bytes.
pub fn validate_query(query: &Query) -> Result<(), InvalidInput> {
    if query.items.len() > MAX_QUERY_ITEMS {
        return Err(InvalidInput::TooManyQueryItems {
            count: query.items.len(),
            max: MAX_QUERY_ITEMS,
        });
    }
    for (item, q) in query.items.iter().enumerate() {
        if q.types.is_empty() && q.tags.is_empty() {
            return Err(InvalidInput::EmptyQueryItem { item });
        }
        if q.types.len() > MAX_QUERY_ITEM_TYPES {
            return Err(InvalidInput::TooManyQueryTypes {
                item,
                count: q.types.len(),
                max: MAX_QUERY_ITEM_TYPES,
            });
        }
        if q.tags.len() > MAX_TAGS_PER_EVENT {
            return Err(InvalidInput::TooManyQueryTags {
                item,
                count: q.tags.len(),
                max: MAX_TAGS_PER_EVENT,
            });
        }
        let bad = |name: &String| name.is_empty() || name.len() > MAX_TAG_BYTES;
        if q.types.iter().chain(&q.tags).any(bad) {
            return Err(InvalidInput::BadQueryName {
                item,
                max: MAX_TAG_BYTES,
            });
        }
    }
    Ok(())
}

impl Limits {
    /// Checks everything about an append that does not depend on stored state.
    pub fn validate_append(&self, append: &Append) -> Result<(), InvalidInput> {
        validate_stream_name(&append.stream)?;
        self.validate_events(append.events.iter())
    }

    /// Checks a multi-stream append: the same limits as one append, counted over all its
    /// events; each stream named once, with at least one event; the condition's query.
    /// [`DCB_STREAM`] is accepted here (the API puts DCB events there); clients' own stream
    /// names are checked with [`validate_stream_name`] before.
    pub fn validate_multi_append(&self, multi: &MultiAppend) -> Result<(), InvalidInput> {
        let mut seen = std::collections::HashSet::new();
        for part in &multi.streams {
            if part.stream != DCB_STREAM {
                validate_stream_name(&part.stream)?;
            }
            if part.events.is_empty() {
                return Err(InvalidInput::NoEvents);
            }
            if !seen.insert(part.stream.as_str()) {
                return Err(InvalidInput::DuplicateStreamInAppend {
                    stream: part.stream.clone(),
                });
            }
        }
        self.validate_events(multi.streams.iter().flat_map(|p| &p.events))?;
        if let Some(condition) = &multi.condition {
            validate_query(&condition.fail_if_events_match)?;
        }
        Ok(())
    }

    /// The limits on the events of one request, counted over all of them.
    fn validate_events<'e>(
        &self,
        events: impl Iterator<Item = &'e NewEvent> + Clone,
    ) -> Result<(), InvalidInput> {
        let count = events.clone().count();
        if count == 0 {
            return Err(InvalidInput::NoEvents);
        }
        if count > self.max_events_per_append {
            return Err(InvalidInput::TooManyEvents {
                count,
                max: self.max_events_per_append,
            });
        }
        let mut total = 0usize;
        for (index, event) in events.clone().enumerate() {
            self.validate_event(index, event)?;
            total += event_size_bytes(event);
        }
        if total > self.max_append_bytes {
            return Err(InvalidInput::AppendTooLarge {
                bytes: total,
                max: self.max_append_bytes,
            });
        }
        // Appends are small in count (bounded above), so a quadratic scan would be wasteful
        // only for big ones; sort a copy of the ids instead.
        let mut ids: Vec<(uuid::Uuid, usize)> =
            events.enumerate().map(|(i, e)| (e.id, i)).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(InvalidInput::DuplicateEventIdInAppend {
                index: pair[0].1.max(pair[1].1),
                id: pair[0].0,
            });
        }
        Ok(())
    }

    fn validate_event(&self, index: usize, event: &NewEvent) -> Result<(), InvalidInput> {
        if event.event_type.is_empty() {
            return Err(InvalidInput::EmptyEventType { index });
        }
        if event.event_type.len() > MAX_EVENT_TYPE_BYTES {
            return Err(InvalidInput::EventTypeTooLong {
                index,
                bytes: event.event_type.len(),
                max: MAX_EVENT_TYPE_BYTES,
            });
        }
        validate_tags(index, &event.tags)?;
        let bytes = event_size_bytes(event);
        if bytes > self.max_event_bytes {
            return Err(InvalidInput::EventTooLarge {
                index,
                bytes,
                max: self.max_event_bytes,
            });
        }
        Ok(())
    }
}
