//! The values stored in the keyspace (see `keys` for the keys).

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use crate::codec::{decode, decode_prefix};
use crate::disk::{Disk, WriteBatch};
use crate::error::StoreError;
use crate::group_files::{GroupFiles, Location};
use crate::id_index::IdIndexBatch;
use crate::keys;
use crate::raft_types::{LogId, SnapshotMeta, StoredMembership};
use crate::stream_run::StreamRun;
use crate::types::{ContentType, NewEvent};

/// One append, stored whole as one frame of the group files (`group_files`), found through
/// its `Location` under the `$all` position of its first event. Storing the group rather than
/// each event keeps the apply path at one write per append (plus the indexes).
///
/// Encoded (postcard) as format 1 wrote it, events without tags, followed, only when an
/// event has tags, by every event's tags (`Vec<Vec<String>>`). So a frame of format 1 is a
/// frame of format 2 without tags, and untagged events cost no byte more than before.
pub type StoredGroup = Group<NewEvent>;

/// A group as readers take it: every event's data and metadata are slices of the frame that
/// was read, so serving a read copies an event's bytes only into the answer (catch-up was
/// bound by decoding: BENCHMARKS.md, issue 15).
pub type SharedGroup = Group<SharedEvent>;

/// An append group's fields, with its events as the writer (`NewEvent`) or a reader
/// (`SharedEvent`) holds them; both come from one parse (`Group::decode_with`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<E> {
    pub stream: String,
    pub first_revision: u64,
    pub created_unix_ms: u64,
    pub events: Vec<E>,
}

/// An event of a `SharedGroup`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedEvent {
    pub id: Uuid,
    pub event_type: String,
    pub content_type: ContentType,
    pub data: Bytes,
    pub metadata: Bytes,
    pub tags: Vec<String>,
}

/// The part of a group format 1 wrote, as it is decoded: borrowed from the frame, so one
/// parse serves both the owned group (`StoredGroup`) and the readers' shared one
/// (`SharedGroup`), which copies no event's bytes.
#[derive(Deserialize)]
struct GroupView<'a> {
    stream: &'a str,
    first_revision: u64,
    created_unix_ms: u64,
    #[serde(borrow)]
    events: Vec<EventView<'a>>,
}

/// An event of format 1 (`Format1Event`), borrowed from the frame.
#[derive(Deserialize)]
struct EventView<'a> {
    id: Uuid,
    event_type: &'a str,
    content_type: ContentType,
    data: &'a [u8],
    metadata: &'a [u8],
}

/// The same part, as it is encoded, borrowing the group.
#[derive(Serialize)]
struct GroupHead<'a> {
    stream: &'a str,
    first_revision: u64,
    created_unix_ms: u64,
    events: Bodies<'a>,
}

/// An event without its tags, laid out as `Format1Event`.
#[derive(Serialize)]
struct EventBody<'a> {
    id: &'a Uuid,
    event_type: &'a str,
    content_type: ContentType,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
    #[serde(with = "serde_bytes")]
    metadata: &'a [u8],
}

struct Bodies<'a>(&'a [NewEvent]);

impl Serialize for Bodies<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|e| EventBody {
            id: &e.id,
            event_type: &e.event_type,
            content_type: e.content_type,
            data: &e.data,
            metadata: &e.metadata,
        }))
    }
}

struct Tags<'a>(&'a [NewEvent]);

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|e| &e.tags))
    }
}

impl Serialize for StoredGroup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let head = GroupHead {
            stream: &self.stream,
            first_revision: self.first_revision,
            created_unix_ms: self.created_unix_ms,
            events: Bodies(&self.events),
        };
        if self.events.iter().any(|e| !e.tags.is_empty()) {
            (head, Tags(&self.events)).serialize(s)
        } else {
            head.serialize(s)
        }
    }
}

impl<E> Group<E> {
    /// Decodes a group of either format (see `StoredGroup`), making each event with `event`
    /// from its borrowed form and its tags (an empty list each when the frame has none).
    fn decode_with(
        what: &'static str,
        bytes: &[u8],
        mut event: impl FnMut(EventView<'_>, Vec<String>) -> E,
    ) -> Result<Group<E>, StoreError> {
        let (head, rest): (GroupView, &[u8]) = decode_prefix(what, bytes)?;
        let tags: Vec<Vec<String>> = if rest.is_empty() {
            Vec::new()
        } else {
            decode(what, rest)?
        };
        if !rest.is_empty() && tags.len() != head.events.len() {
            return Err(StoreError::corrupt(
                what,
                format!("{} events, {} tag lists", head.events.len(), tags.len()),
            ));
        }
        let tags = tags.into_iter().chain(std::iter::repeat(Vec::new()));
        Ok(Group {
            stream: head.stream.to_owned(),
            first_revision: head.first_revision,
            created_unix_ms: head.created_unix_ms,
            events: head
                .events
                .into_iter()
                .zip(tags)
                .map(|(view, tags)| event(view, tags))
                .collect(),
        })
    }
}

impl StoredGroup {
    /// Decodes a group of either format, copying every event out.
    pub fn decode(what: &'static str, bytes: &[u8]) -> Result<StoredGroup, StoreError> {
        Group::decode_with(what, bytes, |event, tags| NewEvent {
            id: event.id,
            event_type: event.event_type.to_owned(),
            content_type: event.content_type,
            data: event.data.to_vec(),
            metadata: event.metadata.to_vec(),
            tags,
        })
    }
}

impl SharedGroup {
    /// Decodes a group of either format from `payload`, sharing its buffer.
    pub fn decode(what: &'static str, payload: &Bytes) -> Result<SharedGroup, StoreError> {
        Group::decode_with(what, payload, |event, tags| SharedEvent {
            id: event.id,
            event_type: event.event_type.to_owned(),
            content_type: event.content_type,
            data: payload.slice_ref(event.data),
            metadata: payload.slice_ref(event.metadata),
            tags,
        })
    }
}

/// The group stored under `first_position`, given the value of its key (its location).
pub fn read_group(
    groups: &GroupFiles,
    first_position: u64,
    location: &[u8],
) -> Result<StoredGroup, StoreError> {
    let frame = groups.read(Location::decode(location)?, first_position)?;
    let group = StoredGroup::decode("event group", frame.payload())?;
    if group.events.is_empty() {
        return Err(StoreError::corrupt(
            "event group",
            format!("empty group at {first_position}"),
        ));
    }
    Ok(group)
}

/// The group stored under `first_position` as readers take it (`SharedGroup`).
pub fn read_shared_group(
    groups: &GroupFiles,
    first_position: u64,
    location: &[u8],
) -> Result<SharedGroup, StoreError> {
    let frame = groups.read(Location::decode(location)?, first_position)?;
    let group = SharedGroup::decode("event group", &frame.into_payload())?;
    if group.events.is_empty() {
        return Err(StoreError::corrupt(
            "event group",
            format!("empty group at {first_position}"),
        ));
    }
    Ok(group)
}

/// The last event stored in `stream` and its revision, `None` if the stream has none: how
/// state kept as "the newest event of a system stream" is read (a stream's lifecycle, a
/// consumer group's state).
pub fn last_event(
    disk: &dyn Disk,
    groups: &GroupFiles,
    stream: &str,
) -> Result<Option<(NewEvent, u64)>, StoreError> {
    let last = disk.scan(
        &keys::stream_range(stream, 0, None),
        crate::disk::Order::Descending,
        1,
    )?;
    let Some((key, value)) = last.first() else {
        return Ok(None);
    };
    let first_revision = keys::stream_key_revision(key)
        .ok_or_else(|| StoreError::corrupt("stream key", "short key"))?;
    let run = StreamRun::decode(value)?;
    let location = disk
        .get(&keys::event_key(run.first_position))?
        .ok_or_else(|| StoreError::corrupt("stream", format!("{stream} points at nothing")))?;
    let mut group = read_group(groups, run.first_position, &location)?;
    let Some(event) = group.events.pop() else {
        return Ok(None);
    };
    Ok(Some((event, first_revision + u64::from(run.count) - 1)))
}

/// The state machine's own progress, written in the same batch as what it describes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The `$all` position the next event will get (= number of events stored).
    pub next_position: u64,
}

/// The current snapshot: its metadata and the `$all` position it ends before. Its data is the
/// prefix of the (append-only) state machine below `end_position`, streamed on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub meta: SnapshotMeta,
    pub end_position: u64,
}

/// The current snapshot's record, if one was built or installed.
pub fn read_snapshot_record(disk: &dyn Disk) -> Result<Option<SnapshotRecord>, StoreError> {
    match disk.get(keys::SNAPSHOT)? {
        Some(bytes) => Ok(Some(decode("snapshot record", &bytes)?)),
        None => Ok(None),
    }
}

/// Indexes one append group whose frame is at `location`: where it is, its stream-index entry,
/// its event ids, and its category, type and tag entries. Shared by apply and snapshot install, so an installed snapshot indexes
/// exactly as applying the log would have.
pub fn write_group(
    batch: &mut WriteBatch,
    ids: &mut IdIndexBatch,
    first_position: u64,
    group: &StoredGroup,
    location: Location,
) -> Result<(), StoreError> {
    batch.put(keys::event_key(first_position), location.encode());
    let run = StreamRun {
        first_position,
        count: group.events.len() as u32,
    };
    batch.put(
        keys::stream_key(&group.stream, group.first_revision),
        run.encode(),
    );
    for (offset, event) in group.events.iter().enumerate() {
        ids.insert(&event.id, first_position + offset as u64)?;
    }
    crate::index::write_entries(batch, first_position, &group.stream, &group.events);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::types::Format1Event;

    fn event(n: u8, tags: &[&str]) -> NewEvent {
        NewEvent {
            id: Uuid::from_u128(u128::from(n)),
            event_type: format!("Type{n}"),
            content_type: ContentType::Json,
            data: vec![n; 3],
            metadata: vec![n],
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn group(events: Vec<NewEvent>) -> StoredGroup {
        StoredGroup {
            stream: "order-1".into(),
            first_revision: 4,
            created_unix_ms: 1_700_000_000_000,
            events,
        }
    }

    #[derive(Serialize)]
    struct Format1Written {
        stream: String,
        first_revision: u64,
        created_unix_ms: u64,
        events: Vec<Format1Event>,
    }

    #[test]
    fn a_format_1_group_reads_back_with_no_tags_and_untagged_groups_keep_its_bytes() {
        let untagged = group(vec![event(1, &[]), event(2, &[])]);
        let format_1 = Format1Written {
            stream: untagged.stream.clone(),
            first_revision: 4,
            created_unix_ms: untagged.created_unix_ms,
            events: untagged
                .events
                .iter()
                .map(|e| Format1Event {
                    id: e.id,
                    event_type: e.event_type.clone(),
                    content_type: e.content_type,
                    data: e.data.clone(),
                    metadata: e.metadata.clone(),
                })
                .collect(),
        };
        let old_bytes = encode(&format_1).unwrap();
        assert_eq!(encode(&untagged).unwrap(), old_bytes);
        assert_eq!(StoredGroup::decode("test", &old_bytes).unwrap(), untagged);
    }

    #[test]
    fn tags_read_back_on_every_event_of_a_group() {
        let tagged = group(vec![
            event(1, &["customer:7"]),
            event(2, &[]),
            event(3, &["customer:7", "order:9"]),
        ]);
        let bytes = encode(&tagged).unwrap();
        assert_eq!(StoredGroup::decode("test", &bytes).unwrap(), tagged);
        // A tags section that does not match the events is damage, not data.
        let mut short = encode(&group(vec![event(1, &[]), event(2, &[])])).unwrap();
        short.extend(encode(&vec![vec!["x".to_string()]]).unwrap());
        assert!(StoredGroup::decode("test", &short).is_err());
    }
}
