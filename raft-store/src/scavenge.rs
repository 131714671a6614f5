//! Scavenge: removing what retention hides, in two halves.
//!
//! 1. **Forget, at one point of the log on every replica.** A `Command::ScavengeWithin`
//!    examines at most `SCAVENGE_GROUPS_PER_COMMAND` append groups from a position on, and
//!    stops sooner once the groups examined hold `SCAVENGE_EVENT_BYTES_PER_COMMAND` of events
//!    (at least one group: a count alone let one step read 16 MiB on the apply path, with
//!    every append waiting behind it), and removes each group retention hides wholly: its location, stream-index entry, event ids and category,
//!    type and tag entries go in the apply batch, and its location is noted in the `RECLAIM`
//!    table. It is committed through Raft, so every replica forgets the same groups at the
//!    same log point, and the verdicts apply reaches from them (a retry recognised by its
//!    ids, a DCB condition over the indexes) stay the same on every replica.
//! 2. **Give the bytes back, on each node.** `Reclaimer::step` takes noted locations, makes
//!    the keyspace that forgot them durable, then zeroes their frames and punches holes in
//!    the group files (`LogFiles::discard`), syncs the files and deletes the notes. No live
//!    frame moves, so no crash at any point can lose a live event: a frame is discarded only
//!    once nothing durable points at it, and a crash before the notes are deleted discards
//!    it again.
//!
//! Kept on purpose: a group that is the last of `$all` (the committed clock is its created
//! time), groups of `$`-streams (metastreams hold the lifecycle itself) but for the consumer
//! groups' `$group-` streams (all but their newest `Limits::group_history` events go), and a
//! stream's last stream-index entry (its head: where revisions continue after a soft delete,
//! and what max count counts from); the entry stays without its group, whose bytes go.

use std::sync::Arc;

use crate::disk::{Disk, Order, WriteBatch};
use crate::error::StoreError;
use crate::group_files::{GroupFiles, Location, FRAME_HEADER_BYTES};
use crate::id_index::IdIndexBatch;
use crate::keys;
use crate::limits::RESERVED_STREAM_PREFIX;
use crate::read::{stream_head, Retention};
use crate::records::StoredGroup;
use crate::types::ScavengeResult;

/// Most append groups one `Scavenge` command examines: bounds the apply call's work, its
/// batch and the pause it puts in front of appends; the driver proposes the next command
/// from where this one stopped.
pub const SCAVENGE_GROUPS_PER_COMMAND: usize = 1_024;
/// Event bytes (data and metadata) of the groups one step examines, at least one group: the
/// budget the node's driver puts in each `Command::ScavengeWithin`. Counted from the events,
/// not the frames, so every replica stops at the same group whatever its file format.
pub const SCAVENGE_EVENT_BYTES_PER_COMMAND: u64 = 1 << 20;
/// Most noted groups one reclaimer step discards: bounds its memory and the time it holds
/// the reclaim lock (a snapshot install waits for it).
pub const RECLAIM_GROUPS_PER_STEP: usize = 256;

/// Streams a scavenge leaves alone: the `$` streams (metastreams hold the lifecycle itself,
/// `$auth` the security state, `$parked-` what a group set aside), but for the consumer
/// groups' `$group-` streams, whose retention is their group history.
fn kept_whole(stream: &str) -> bool {
    stream.starts_with(RESERVED_STREAM_PREFIX)
        && !stream.starts_with(crate::consumer_group::GROUP_STREAM_PREFIX)
}

fn position_of(key: &[u8]) -> Result<u64, StoreError> {
    keys::key_u64(key).ok_or_else(|| StoreError::corrupt("event key", "short key"))
}

/// The removals of one `Scavenge` command over `positions` (from its position to the applied
/// end; the group ending there is kept), added to `batch` and `ids`: the groups `retention`
/// hides wholly.
pub(crate) fn forget_hidden(
    disk: &dyn Disk,
    groups: &GroupFiles,
    batch: &mut WriteBatch,
    ids: &mut IdIndexBatch,
    positions: std::ops::Range<u64>,
    max_event_bytes: Option<u64>,
    mut retention: Retention,
) -> Result<ScavengeResult, StoreError> {
    let end_position = positions.end;
    let range = keys::u64_range(keys::EVENTS, positions.start, end_position);
    let found = disk.scan(&range, Order::Ascending, SCAVENGE_GROUPS_PER_COMMAND + 1)?;
    let mut result = ScavengeResult {
        next_position: match found.get(SCAVENGE_GROUPS_PER_COMMAND) {
            Some((key, _)) => Some(position_of(key)?),
            None => None,
        },
        ..ScavengeResult::default()
    };
    let mut examined_bytes = 0u64;
    for (key, value) in found.iter().take(SCAVENGE_GROUPS_PER_COMMAND) {
        if max_event_bytes.is_some_and(|max| examined_bytes >= max) {
            result.next_position = Some(position_of(key)?);
            break;
        }
        result.examined_groups += 1;
        let first_position = position_of(key)?;
        let location = Location::decode(value)?;
        let frame = groups.read(location, first_position)?;
        let group = StoredGroup::decode("event group", frame.payload())?;
        examined_bytes += group
            .events
            .iter()
            .map(|e| (e.data.len() + e.metadata.len()) as u64)
            .sum::<u64>();
        let count = group.events.len() as u64;
        if first_position + count >= end_position || kept_whole(&group.stream) {
            continue;
        }
        let mut shown = 0;
        for offset in 0..count {
            let revision = group.first_revision + offset;
            if retention.shows(disk, groups, &group.stream, revision, group.created_unix_ms)? {
                shown += 1;
            }
        }
        let remove = if crate::faults::active().scavenge_drops_partly_hidden {
            shown < count
        } else {
            shown == 0
        };
        if !remove {
            continue;
        }
        forget_group(disk, batch, ids, first_position, &group, location)?;
        result.removed_groups += 1;
        result.removed_events += count;
        result.removed_bytes += FRAME_HEADER_BYTES as u64 + u64::from(location.len);
    }
    Ok(result)
}

pub(crate) fn forget_group(
    disk: &dyn Disk,
    batch: &mut WriteBatch,
    ids: &mut IdIndexBatch,
    first_position: u64,
    group: &StoredGroup,
    location: Location,
) -> Result<(), StoreError> {
    batch.delete(keys::event_key(first_position));
    let last_revision = group.first_revision + group.events.len() as u64 - 1;
    if stream_head(disk, &group.stream)? != Some(last_revision) {
        batch.delete(keys::stream_key(&group.stream, group.first_revision));
    }
    for event in &group.events {
        ids.remove(&event.id)?;
    }
    crate::index::delete_entries(batch, first_position, &group.stream, &group.events);
    batch.put(
        keys::u64_key(keys::RECLAIM, first_position),
        location.encode(),
    );
    Ok(())
}

/// What one reclaimer step gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub groups: u64,
    /// Frame bytes zeroed and punched (the file system frees the whole blocks among them).
    pub bytes: u64,
}

/// Gives scavenged groups' bytes back to the file system, on this node. Cheap to clone.
#[derive(Clone)]
pub struct Reclaimer {
    disk: Arc<dyn Disk>,
    groups: Arc<GroupFiles>,
    /// The state machine's snapshot lock, held while discarding; an install holds it while
    /// it replaces the files, so a location noted before an install never zeroes a frame
    /// written by it.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Reclaimer {
    pub(crate) fn new(
        disk: Arc<dyn Disk>,
        groups: Arc<GroupFiles>,
        lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        Reclaimer { disk, groups, lock }
    }

    /// Discards at most `RECLAIM_GROUPS_PER_STEP` noted groups; nothing while a snapshot is
    /// being built or installed (the next step goes on). Blocking (syncs).
    pub fn step(&self) -> Result<Reclaimed, StoreError> {
        let Ok(_guard) = self.lock.try_lock() else {
            return Ok(Reclaimed::default());
        };
        let range = keys::table_range(keys::RECLAIM);
        let noted = self
            .disk
            .scan(&range, Order::Ascending, RECLAIM_GROUPS_PER_STEP)?;
        if noted.is_empty() {
            return Ok(Reclaimed::default());
        }
        // What forgot these groups must be durable before their bytes go: after a crash
        // nothing may point at a discarded frame.
        self.disk.sync()?;
        let mut reclaimed = Reclaimed::default();
        let mut done = WriteBatch::default();
        for (key, value) in &noted {
            let location = Location::decode(value)?;
            self.groups.discard(location)?;
            reclaimed.groups += 1;
            reclaimed.bytes += FRAME_HEADER_BYTES as u64 + u64::from(location.len);
            done.delete(key.clone());
        }
        self.groups.sync()?;
        self.disk.write(done)?;
        Ok(reclaimed)
    }

    /// Noted groups not given back yet, and their frame bytes (counted up to `limit` groups).
    pub fn pending(&self, limit: usize) -> Result<Reclaimed, StoreError> {
        let range = keys::table_range(keys::RECLAIM);
        let mut pending = Reclaimed::default();
        for (_, value) in self.disk.scan(&range, Order::Ascending, limit)? {
            let location = Location::decode(&value)?;
            pending.groups += 1;
            pending.bytes += FRAME_HEADER_BYTES as u64 + u64::from(location.len);
        }
        Ok(pending)
    }
}
