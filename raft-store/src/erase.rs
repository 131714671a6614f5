//! Erase: a stream's events gone from every byte of every node's disk.
//!
//! Two halves, as for scavenge (`scavenge`):
//!
//! 1. **Forget, at one point of the log on every replica.** A `Command::EraseStream` step
//!    tombstones the stream with a fresh metastream event that keeps no metadata (`$erased`),
//!    and forgets at most `ERASE_GROUPS_PER_COMMAND` groups: the metastream's older ones (the
//!    application's custom metadata may name the person too) and the stream's own (their
//!    locations, stream-index entries but the head, ids and category, type and tag entries),
//!    noting their frames in the `RECLAIM` table like a scavenge, and noting the step's log
//!    index in the `ERASE` table. The driver repeats the step until nothing is left.
//! 2. **Scrub, on each node** (the node's eraser, `cairn-node`'s `api/erase.rs`): until the
//!    noted frames are zeroed (the reclaimer), a snapshot covers the step and the Raft log is
//!    purged past it (the entries that carried the events), the purged frames still inside a
//!    kept log segment are zeroed (`LogStore::scrub_purged`), and the keyspace is rewritten
//!    into fresh files (`Disk::rewrite_keyspace`: the keyspace keeps old versions of removed
//!    keys, ids and index names among them, in its journal and table files until a
//!    compaction happens to drop them).
//!    Then the notes go (`Erasures::finished`), and the node reports nothing pending.
//!
//! Kept, and why: the stream's head stream-index entry (name, revision, position: no event
//! bytes; where a read of the tombstoned stream stops) and the tombstone itself (the name
//! must stay refused). A snapshot holds no copy of its own (it streams the store as it is),
//! and a received one is spooled to an unnamed file that vanishes once installed.

use std::sync::Arc;

use crate::disk::{Disk, Order, WriteBatch};
use crate::error::StoreError;
use crate::group_files::{GroupFiles, Location};
use crate::id_index::IdIndexBatch;
use crate::keys;
use crate::lifecycle::metastream;
use crate::records::StoredGroup;
use crate::scavenge::forget_group;
use crate::stream_run::StreamRun;

/// Most groups one `EraseStream` step forgets: bounds the apply call's work and batch, like
/// `scavenge::SCAVENGE_GROUPS_PER_COMMAND`; the driver proposes the next step while the last
/// one says `more`.
pub const ERASE_GROUPS_PER_COMMAND: usize = 1_024;
/// Most pending erase notes one look at the table returns (the eraser handles the highest
/// of them, which covers every lower one).
pub const MAX_PENDING_ERASES_READ: usize = 1_024;

/// What one step forgot.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Forgotten {
    pub groups: u64,
    pub events: u64,
    /// The step's limit was reached before the end.
    pub more: bool,
}

fn decode_group(
    disk: &dyn Disk,
    groups: &GroupFiles,
    first_position: u64,
) -> Result<Option<(StoredGroup, Location)>, StoreError> {
    let Some(value) = disk.get(&keys::event_key(first_position))? else {
        return Ok(None);
    };
    let location = Location::decode(&value)?;
    let frame = groups.read(location, first_position)?;
    Ok(Some((
        StoredGroup::decode("event group", frame.payload())?,
        location,
    )))
}

/// Forgets at most `budget` stored groups of `stream`'s metastream, deleting their
/// stream-index entries too (an erase writes the metastream's one event left after them),
/// except the last entry when `keep_last` (it is that event already).
pub(crate) fn forget_metastream(
    disk: &dyn Disk,
    groups: &GroupFiles,
    batch: &mut WriteBatch,
    ids: &mut IdIndexBatch,
    stream: &str,
    keep_last: bool,
    budget: usize,
) -> Result<Forgotten, StoreError> {
    let meta = metastream(stream);
    let mut entries = disk.scan(
        &keys::stream_range(&meta, 0, None),
        Order::Ascending,
        budget + 2,
    )?;
    if keep_last {
        // The last entry overall, not of this page: look it up.
        let last = disk.scan(&keys::stream_range(&meta, 0, None), Order::Descending, 1)?;
        if let Some((last_key, _)) = last.first() {
            entries.retain(|(key, _)| key != last_key);
        }
    }
    let mut forgotten = Forgotten::default();
    for (key, value) in entries {
        if forgotten.groups as usize >= budget {
            forgotten.more = true;
            break;
        }
        let run = StreamRun::decode(&value)?;
        if let Some((group, location)) = decode_group(disk, groups, run.first_position)? {
            forget_group(disk, batch, ids, run.first_position, &group, location)?;
            forgotten.groups += 1;
            forgotten.events += group.events.len() as u64;
        }
        batch.delete(key);
    }
    Ok(forgotten)
}

/// Forgets at most `budget` stored groups of `stream` (the head's stream-index entry stays,
/// without its group, as after a scavenge).
pub(crate) fn forget_stream(
    disk: &dyn Disk,
    groups: &GroupFiles,
    batch: &mut WriteBatch,
    ids: &mut IdIndexBatch,
    stream: &str,
    budget: usize,
) -> Result<Forgotten, StoreError> {
    // Entries without a group: at most the head (forgetting deletes the others), so a page
    // of `budget + 2` holds `budget + 1` groups when there are more.
    let entries = disk.scan(
        &keys::stream_range(stream, 0, None),
        Order::Ascending,
        budget + 2,
    )?;
    let mut forgotten = Forgotten::default();
    for (_, value) in entries {
        let run = StreamRun::decode(&value)?;
        let Some((group, location)) = decode_group(disk, groups, run.first_position)? else {
            continue;
        };
        if forgotten.groups as usize >= budget {
            forgotten.more = true;
            break;
        }
        forget_group(disk, batch, ids, run.first_position, &group, location)?;
        forgotten.groups += 1;
        forgotten.events += group.events.len() as u64;
    }
    Ok(forgotten)
}

/// Notes, in the batch of the step (or install) itself, that this node must scrub its disk
/// up to `log_index`.
pub(crate) fn note(batch: &mut WriteBatch, log_index: u64) {
    batch.put(keys::u64_key(keys::ERASE, log_index), Vec::new());
}

/// This node's erase notes (`keys::ERASE`). Cheap to clone.
#[derive(Clone)]
pub struct Erasures {
    disk: Arc<dyn Disk>,
}

impl Erasures {
    pub(crate) fn new(disk: Arc<dyn Disk>) -> Self {
        Erasures { disk }
    }

    /// The log indexes of the erase steps (and installs) this node has not scrubbed yet,
    /// ascending, at most `MAX_PENDING_ERASES_READ`.
    pub fn pending(&self) -> Result<Vec<u64>, StoreError> {
        self.disk
            .scan(
                &keys::table_range(keys::ERASE),
                Order::Ascending,
                MAX_PENDING_ERASES_READ,
            )?
            .iter()
            .map(|(key, _)| {
                keys::key_u64(key).ok_or_else(|| StoreError::corrupt("erase note", "short key"))
            })
            .collect()
    }

    /// Deletes the notes up to `upto` (their scrub is done) and makes that durable.
    pub fn finished(&self, upto: u64) -> Result<(), StoreError> {
        let range = keys::u64_range(keys::ERASE, 0, upto.saturating_add(1));
        let mut batch = WriteBatch::default();
        for (key, _) in self
            .disk
            .scan(&range, Order::Ascending, MAX_PENDING_ERASES_READ)?
        {
            batch.delete(key);
        }
        if !batch.is_empty() {
            self.disk.write(batch)?;
            self.disk.sync()?;
        }
        Ok(())
    }
}
