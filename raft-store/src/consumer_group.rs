//! Consumer groups as state-machine data: definitions, checkpoints, parked events.
//!
//! A group's whole state is the newest event of its stream `$group-<name>` (the layout of a
//! stream's lifecycle in `$$<stream>`, and of EventStoreDB's persistent-subscription
//! checkpoint streams): it is then ordinary append-only data, replicated, snapshotted,
//! installed and rolled back with the event groups, and a retried command is recognised by
//! its event id like any append. Each event's data is the whole state as JSON, so reading
//! the stream shows the history of the group: its newest `Limits::group_history` states
//! (retention hides the older ones and a scavenge removes them, `read::visibility`), since a
//! checkpoint adds one.
//!
//! Parked events are recorded by reference in `$parked-<name>`, one event each (type
//! `$parked`, data: the source event's stream, revision, position and the reason; not its
//! id, which an erase of the source must leave nowhere), a stream any client can read. Replaying them is a marker in the group's state (`replay_to`):
//! the leader delivers the parked events below it again, once, and the group's checkpoint
//! keeps a second cursor over the parked stream's revisions, so a replay cut short by a
//! leader change resumes where it stood instead of starting over.
//!
//! The rules apply checks (`state_machine/apply/consumer_groups.rs`), all from committed
//! state: a create needs no live group of that name; update, delete, park and checkpoint
//! need one (of the incarnation named); an update keeps the source; a checkpoint is well
//! formed, ends within the source, and never forgets what the stored one has done.

use serde::{Deserialize, Serialize};

use crate::disk::{Disk, KeyRange, Order};
use crate::error::StoreError;
use crate::filter::EventFilter;
use crate::group_files::GroupFiles;
use crate::index::IndexName;
use crate::keys;
use crate::limits::validate_stream_name;
use crate::records::last_event;
use crate::types::{
    GroupCheckpoint, GroupCursor, GroupSettings, GroupStart, InvalidInput, ParkedEvent,
    SourceFilter,
};

/// Prefix of a group's state stream: `$group-billing` holds group `billing`.
pub const GROUP_STREAM_PREFIX: &str = "$group-";
/// Prefix of a group's parked stream.
pub const PARKED_STREAM_PREFIX: &str = "$parked-";
/// Longest group name, in bytes: its streams' names stay within the stream-name limit.
pub const MAX_GROUP_NAME_BYTES: usize = 200;
/// The source name of the whole log.
pub const ALL_SOURCE: &str = "$all";
/// Groups that may exist at once (deleted ones not counted; the default of
/// `Limits::max_groups`): a create past it is refused (`InvalidInput::TooManyGroups`,
/// RESOURCE_EXHAUSTED). Each live group may have a
/// dispatcher and a metrics series on the leader, and a list shows them all
/// (`MAX_LISTED_GROUPS` in the node is the same number).
pub const MAX_GROUPS: usize = crate::limits::DEFAULT_MAX_GROUPS;
/// Bounds of the settings (inclusive).
pub const MIN_MESSAGE_TIMEOUT_MS: u64 = 100;
pub const MAX_MESSAGE_TIMEOUT_MS: u64 = 3_600_000;
pub const MAX_MAX_RETRIES: u32 = 1_000;
pub const MAX_MAX_IN_FLIGHT: u32 = 10_000;
pub const MAX_MAX_CONSUMERS: u32 = 1_000;
/// Events in flight over all consumers of a group (max in flight x max consumers): also
/// bounds the done ranges of a checkpoint, which the in-flight events split.
pub const MAX_GROUP_IN_FLIGHT: u64 = 100_000;
pub const MIN_CHECKPOINT_INTERVAL_MS: u64 = 10;
pub const MAX_CHECKPOINT_INTERVAL_MS: u64 = 3_600_000;
/// Done ranges in one cursor of a checkpoint: one more than the events that can be
/// outstanding, with room for the dispatcher's read-ahead (`node/src/groups`).
pub const MAX_CHECKPOINT_RANGES: usize = 2 * MAX_GROUP_IN_FLIGHT as usize;
/// Events one park command records.
pub const MAX_PARKED_PER_COMMAND: usize = 1_000;
/// Longest reason a parked event records, in bytes (longer ones are cut at the edge).
pub const MAX_PARK_REASON_BYTES: usize = 1_024;
/// Defaults of the settings a create leaves out.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_RETRIES: u32 = 10;
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 10;
pub const DEFAULT_MAX_CONSUMERS: u32 = 16;
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 1_000;

/// Event types of the group stream's events, one per command.
pub const CREATED_EVENT_TYPE: &str = "$group-created";
pub const UPDATED_EVENT_TYPE: &str = "$group-updated";
pub const DELETED_EVENT_TYPE: &str = "$group-deleted";
pub const CHECKPOINT_EVENT_TYPE: &str = "$group-checkpoint";
pub const REPLAY_EVENT_TYPE: &str = "$group-replay";
/// Event type of a parked stream's events.
pub const PARKED_EVENT_TYPE: &str = "$parked";

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            source: ALL_SOURCE.to_owned(),
            start: GroupStart::Start,
            message_timeout_ms: DEFAULT_MESSAGE_TIMEOUT_MS,
            max_retries: DEFAULT_MAX_RETRIES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_consumers: DEFAULT_MAX_CONSUMERS,
            checkpoint_interval_ms: DEFAULT_CHECKPOINT_INTERVAL_MS,
            strategy: Default::default(),
        }
    }
}

pub fn group_stream(group: &str) -> String {
    format!("{GROUP_STREAM_PREFIX}{group}")
}

pub fn parked_stream(group: &str) -> String {
    format!("{PARKED_STREAM_PREFIX}{group}")
}

/// A group's whole state: what its stream's newest event records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// `start` is resolved to `At(..)` when the group is created.
    pub settings: GroupSettings,
    /// `$all` only: which events the group delivers. Fixed at create, like the source.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
    /// The revision of the event that created this group in its stream: a group deleted and
    /// created again is another incarnation, and its predecessor's checkpoints and parks are
    /// refused.
    pub incarnation: u64,
    pub deleted: bool,
    pub checkpoint: GroupCheckpoint,
    /// Parked revisions below this are to be delivered again (by `checkpoint.parked`).
    pub replay_to: u64,
}

impl GroupState {
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::corrupt("consumer group", e))
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupState, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt("consumer group", e))
    }
}

/// A parked-stream event's data: where the parked event is, by reference. It holds no id of
/// the event (records parked by earlier builds do): an erase must leave none of an erased
/// event's ids behind, and a `$all` position is never reused, so the position alone names
/// the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedRecord {
    pub stream: String,
    pub revision: u64,
    pub position: u64,
    /// Only in records written before ids were left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<uuid::Uuid>,
    pub reason: String,
}

impl ParkedRecord {
    pub fn of(event: &ParkedEvent) -> ParkedRecord {
        ParkedRecord {
            stream: event.stream.clone(),
            revision: event.revision,
            position: event.position,
            event_id: None,
            reason: event.reason.clone(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::corrupt("parked event", e))
    }

    pub fn decode(bytes: &[u8]) -> Result<ParkedRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt("parked event", e))
    }
}

fn bad_name(why: impl Into<String>) -> InvalidInput {
    InvalidInput::BadGroupName { why: why.into() }
}

fn bad_setting(field: &str, why: impl Into<String>) -> InvalidInput {
    InvalidInput::BadGroupSetting {
        field: field.to_owned(),
        why: why.into(),
    }
}

fn bad_checkpoint(why: impl Into<String>) -> InvalidInput {
    InvalidInput::BadGroupCheckpoint { why: why.into() }
}

/// A group name: a stream name's rules (no `$` first, no NUL, not blank), at most
/// `MAX_GROUP_NAME_BYTES`.
pub fn validate_name(group: &str) -> Result<(), InvalidInput> {
    if group.len() > MAX_GROUP_NAME_BYTES {
        return Err(bad_name(format!(
            "{} bytes; the limit is {MAX_GROUP_NAME_BYTES}",
            group.len()
        )));
    }
    validate_stream_name(group).map_err(|e| bad_name(e.to_string()))
}

/// What a group reads: the whole log, an index, or one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    All,
    Index(IndexName),
    Stream(String),
}

impl Source {
    pub fn parse(source: &str) -> Result<Source, InvalidInput> {
        if source == ALL_SOURCE {
            return Ok(Source::All);
        }
        if let Some(index) = IndexName::parse(source) {
            return Ok(Source::Index(index));
        }
        validate_stream_name(source).map_err(|e| {
            bad_setting(
                "source",
                format!("{e} (a group reads a stream, '$all', '$ce-', '$et-' or '$tag-')"),
            )
        })?;
        Ok(Source::Stream(source.to_owned()))
    }

    /// Whether its keys are `$all` positions (else a stream's revisions).
    pub fn by_position(&self) -> bool {
        !matches!(self, Source::Stream(_))
    }
}

/// The settings' bounds.
pub fn validate_settings(settings: &GroupSettings) -> Result<(), InvalidInput> {
    Source::parse(&settings.source)?;
    let range = |field: &str, value: u64, min: u64, max: u64| {
        if value < min || value > max {
            Err(bad_setting(
                field,
                format!("{value}; it must be between {min} and {max}"),
            ))
        } else {
            Ok(())
        }
    };
    range(
        "message timeout (ms)",
        settings.message_timeout_ms,
        MIN_MESSAGE_TIMEOUT_MS,
        MAX_MESSAGE_TIMEOUT_MS,
    )?;
    range(
        "max retries",
        settings.max_retries.into(),
        0,
        MAX_MAX_RETRIES.into(),
    )?;
    range(
        "max in flight",
        settings.max_in_flight.into(),
        1,
        MAX_MAX_IN_FLIGHT.into(),
    )?;
    range(
        "max consumers",
        settings.max_consumers.into(),
        1,
        MAX_MAX_CONSUMERS.into(),
    )?;
    range(
        "checkpoint interval (ms)",
        settings.checkpoint_interval_ms,
        MIN_CHECKPOINT_INTERVAL_MS,
        MAX_CHECKPOINT_INTERVAL_MS,
    )?;
    let total = u64::from(settings.max_in_flight) * u64::from(settings.max_consumers);
    if total > MAX_GROUP_IN_FLIGHT {
        return Err(bad_setting(
            "max in flight x max consumers",
            format!("{total}; the limit is {MAX_GROUP_IN_FLIGHT}"),
        ));
    }
    Ok(())
}

/// A group's filter: on `$all` only, and one that compiles (as its dispatcher will compile
/// it). An empty one is as none.
pub fn validate_filter(source: &str, filter: Option<&SourceFilter>) -> Result<(), InvalidInput> {
    let Some(filter) = filter else {
        return Ok(());
    };
    let compiled = EventFilter::compile(filter)
        .map_err(|e| bad_setting(&format!("filter {}", e.field), e.why))?;
    if compiled.is_some() && source != ALL_SOURCE {
        return Err(bad_setting(
            "filter",
            format!("filters apply to '$all' only, and this group reads {source:?}"),
        ));
    }
    Ok(())
}

/// Whether a group on `$all` leaves out events of `stream` before its filter looks at them:
/// `$` streams unless the filter asks for them by its stream prefix, and `$group-` streams
/// always (each group's checkpoints are events there: a group that delivered them would
/// cause a checkpoint with each one it acknowledged, for ever).
pub fn all_group_skips(filter: Option<&EventFilter>, stream: &str) -> bool {
    stream.starts_with(GROUP_STREAM_PREFIX)
        || (stream.starts_with('$') && !filter.is_some_and(EventFilter::asks_for_system_streams))
}

/// A cursor is well formed: its ranges non-empty, ascending, apart, above `next`, below
/// `end`, at most `MAX_CHECKPOINT_RANGES`; `next` at most `end`.
pub fn validate_cursor(what: &str, cursor: &GroupCursor, end: u64) -> Result<(), InvalidInput> {
    if cursor.next > end {
        return Err(bad_checkpoint(format!(
            "{what}: next {} is past the end ({end})",
            cursor.next
        )));
    }
    if cursor.done.len() > MAX_CHECKPOINT_RANGES {
        return Err(bad_checkpoint(format!(
            "{what}: {} done ranges; the limit is {MAX_CHECKPOINT_RANGES}",
            cursor.done.len()
        )));
    }
    let mut floor = cursor.next;
    for &(from, to) in &cursor.done {
        if from <= floor || to <= from || to > end {
            return Err(bad_checkpoint(format!(
                "{what}: done range [{from}, {to}) is empty, out of order, touches the one \
                 before it, or ends past {end}"
            )));
        }
        floor = to;
    }
    Ok(())
}

/// Whether `key` is done by `cursor`.
pub fn is_done(cursor: &GroupCursor, key: u64) -> bool {
    if key < cursor.next {
        return true;
    }
    let at = cursor.done.partition_point(|&(from, _)| from <= key);
    at > 0 && key < cursor.done[at - 1].1
}

/// A key `old` has done that `new` has not, if any: a checkpoint must never forget.
pub fn forgotten(old: &GroupCursor, new: &GroupCursor) -> Option<u64> {
    if new.next < old.next {
        return Some(new.next);
    }
    old.done
        .iter()
        .flat_map(|&(from, to)| {
            // Each range is covered if its first key and every key after it is; checking
            // the range's ends against `new`'s ranges is enough for ascending, apart ranges.
            let start = from.max(new.next);
            (start < to).then_some((start, to))
        })
        .find_map(|(from, to)| {
            if !is_done(new, from) {
                return Some(from);
            }
            // `from` is inside one of `new`'s ranges (or below `next`): that range must
            // reach `to`.
            let at = new.done.partition_point(|&(f, _)| f <= from);
            let reach = if at == 0 {
                new.next
            } else {
                new.done[at - 1].1.max(new.next)
            };
            (reach < to).then_some(reach)
        })
}

/// The state of `group` and its stream's last revision, if it ever existed.
pub fn load(
    disk: &dyn Disk,
    groups: &GroupFiles,
    group: &str,
) -> Result<Option<(GroupState, u64)>, StoreError> {
    Ok(match last_event(disk, groups, &group_stream(group))? {
        Some((event, revision)) => Some((GroupState::decode(&event.data)?, revision)),
        None => None,
    })
}

/// The names of groups that exist (not deleted), ascending, at most `max`: one seek per
/// group stream (past its other keys), then its newest event.
pub fn list(
    disk: &dyn Disk,
    groups: &GroupFiles,
    max: usize,
) -> Result<Vec<(String, GroupState)>, StoreError> {
    let mut start = vec![keys::STREAMS];
    start.extend_from_slice(GROUP_STREAM_PREFIX.as_bytes());
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last += 1; // '-' + 1: just past every name with the prefix
    }
    let mut found = Vec::new();
    while found.len() < max {
        let range = KeyRange {
            start: start.clone(),
            end: end.clone(),
        };
        let Some((key, _)) = disk.scan(&range, Order::Ascending, 1)?.into_iter().next() else {
            break;
        };
        let Some(nul) = key.iter().position(|&b| b == 0) else {
            return Err(StoreError::corrupt("stream key", "no NUL after the name"));
        };
        let stream = String::from_utf8_lossy(&key[1..nul]).into_owned();
        // Next: the first key after every key of this stream (`name` then 0x01).
        start = key[..nul].to_vec();
        start.push(1);
        let Some(name) = stream.strip_prefix(GROUP_STREAM_PREFIX) else {
            continue;
        };
        if let Some((state, _)) = load(disk, groups, name)? {
            if !state.deleted {
                found.push((name.to_owned(), state));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(next: u64, done: &[(u64, u64)]) -> GroupCursor {
        GroupCursor {
            next,
            done: done.to_vec(),
        }
    }

    #[test]
    fn a_checkpoint_that_drops_a_done_key_is_found() {
        let old = cursor(5, &[(7, 9), (12, 13)]);
        assert_eq!(forgotten(&old, &cursor(5, &[(7, 9), (12, 13)])), None);
        assert_eq!(forgotten(&old, &cursor(9, &[(12, 14)])), None);
        assert_eq!(forgotten(&old, &cursor(13, &[])), None);
        assert_eq!(forgotten(&old, &cursor(4, &[(7, 9), (12, 13)])), Some(4));
        assert_eq!(forgotten(&old, &cursor(5, &[(7, 8), (12, 13)])), Some(8));
        assert_eq!(forgotten(&old, &cursor(5, &[(7, 9)])), Some(12));
        assert_eq!(forgotten(&old, &cursor(8, &[(12, 13)])), Some(8));
        assert_eq!(forgotten(&old, &cursor(9, &[(11, 13)])), None);
    }

    #[test]
    fn cursors_must_be_ascending_apart_and_within_the_source() {
        assert!(validate_cursor("s", &cursor(3, &[(5, 6), (8, 10)]), 10).is_ok());
        assert!(validate_cursor("s", &cursor(3, &[(3, 6)]), 10).is_err());
        assert!(validate_cursor("s", &cursor(3, &[(5, 6), (6, 7)]), 10).is_err());
        assert!(validate_cursor("s", &cursor(3, &[(5, 5)]), 10).is_err());
        assert!(validate_cursor("s", &cursor(3, &[(5, 11)]), 10).is_err());
        assert!(validate_cursor("s", &cursor(11, &[]), 10).is_err());
        assert!(is_done(&cursor(3, &[(5, 6)]), 5));
        assert!(!is_done(&cursor(3, &[(5, 6)]), 6));
        assert!(is_done(&cursor(3, &[(5, 6)]), 2));
    }

    #[test]
    fn a_parked_record_holds_no_id_and_one_from_an_earlier_build_still_decodes() {
        let event = ParkedEvent {
            id: uuid::Uuid::new_v4(),
            stream: "orders-1".into(),
            revision: 3,
            position: 17,
            event_id: uuid::Uuid::from_u128(42),
            reason: "poison".into(),
        };
        let record = ParkedRecord::of(&event);
        let json = String::from_utf8(record.encode().unwrap()).unwrap();
        assert!(!json.contains("event_id"), "{json}");
        assert_eq!(ParkedRecord::decode(json.as_bytes()).unwrap(), record);
        let old = r#"{"stream":"orders-1","revision":3,"position":17,"event_id":"00000000-0000-0000-0000-00000000002a","reason":"poison"}"#;
        let decoded = ParkedRecord::decode(old.as_bytes()).unwrap();
        assert_eq!(decoded.event_id, Some(uuid::Uuid::from_u128(42)));
        assert_eq!((decoded.position, decoded.revision), (17, 3));
    }
}
