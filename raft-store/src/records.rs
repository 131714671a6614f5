//! The values stored in the keyspace (see `keys` for the keys).

use serde::{Deserialize, Serialize};

use crate::codec::{decode, decode_u64_u32, encode_u64_u32};
use crate::disk::{Disk, WriteBatch};
use crate::error::StoreError;
use crate::group_files::{GroupFiles, Location};
use crate::id_index::IdIndexBatch;
use crate::keys;
use crate::raft_types::{LogId, SnapshotMeta, StoredMembership};
use crate::types::NewEvent;

/// One append, stored whole as one frame of the group files (`group_files`), found through
/// its `Location` under the `$all` position of its first event. Storing the group rather than
/// each event keeps the apply path at one write per append (plus the id index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub stream: String,
    pub first_revision: u64,
    pub created_unix_ms: u64,
    pub events: Vec<NewEvent>,
}

/// The group stored under `first_position`, given the value of its key (its location).
pub fn read_group(
    groups: &GroupFiles,
    first_position: u64,
    location: &[u8],
) -> Result<StoredGroup, StoreError> {
    let frame = groups.read(Location::decode(location)?, first_position)?;
    let group: StoredGroup = decode("event group", frame.payload())?;
    if group.events.is_empty() {
        return Err(StoreError::corrupt(
            "event group",
            format!("empty group at {first_position}"),
        ));
    }
    Ok(group)
}

/// Value of a stream-index key: where one append to the stream landed in `$all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRun {
    pub first_position: u64,
    pub count: u32,
}

impl StreamRun {
    pub fn encode(self) -> Vec<u8> {
        encode_u64_u32(self.first_position, self.count)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let (first_position, count) = decode_u64_u32("stream run", bytes)?;
        Ok(StreamRun {
            first_position,
            count,
        })
    }
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

/// Indexes one append group whose frame is at `location`: where it is, its stream-index entry
/// and its event ids. Shared by apply and snapshot install, so an installed snapshot indexes
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
    Ok(())
}
