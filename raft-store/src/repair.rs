//! Damage found at open, and the repair it starts: what the node must get back from the
//! others before it takes part in elections again.
//!
//! A node whose log lost entries it had acknowledged (a damaged frame, a cut file, or a state
//! machine that had to be cleared with its log) may have been part of the majority that
//! committed them. If it voted now, a candidate lacking those entries could win with its vote
//! and the committed entries would be lost. So the store records, durably and before it
//! removes anything, the last index the node may have acknowledged (`REPAIR_UNTIL`); the node
//! (cairn-node's `repair`) neither votes nor stands for election until its log holds that
//! index again, sent by a leader that was elected without it (raft-store/DESIGN.md,
//! "Corruption and repair").

use crate::codec::{decode, encode};
use crate::disk::{Disk, WriteBatch};
use crate::error::StoreError;
use crate::keys;

/// One piece of damage found while opening the store, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Which kind of file: `raft-log`, `event-groups` (the label of
    /// `cairn_corruption_detected_total`).
    pub file: &'static str,
    /// What was found, where.
    pub found: String,
    /// What the store did about it.
    pub action: &'static str,
}

/// Records that this node must hold log index `until` again before it votes (the larger of
/// `until` and a repair already recorded), durably, before the caller removes anything.
pub fn require(disk: &dyn Disk, until: u64) -> Result<u64, StoreError> {
    let until = pending(disk)?.map_or(until, |recorded| recorded.max(until));
    let mut batch = WriteBatch::default();
    batch.put(keys::REPAIR_UNTIL, encode(&until)?);
    disk.write(batch)?;
    disk.sync()?;
    Ok(until)
}

/// The log index a repair under way waits for, if one is.
pub fn pending(disk: &dyn Disk) -> Result<Option<u64>, StoreError> {
    disk.get(keys::REPAIR_UNTIL)?
        .map(|bytes| decode("repair record", &bytes))
        .transpose()
}

/// Ends the repair: the log holds what the node may have acknowledged.
pub fn finish(disk: &dyn Disk) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    batch.delete(keys::REPAIR_UNTIL);
    disk.write(batch)?;
    disk.sync()?;
    Ok(())
}
