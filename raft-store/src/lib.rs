//! # cairn-raft-store
//!
//! Durable Raft log storage and the event-store state machine for Cairn, on openraft
//! 0.10.0-alpha.37 (its `RaftLogStorage` and `RaftStateMachine`). Everything durable goes through one narrow storage seam, [`disk::Disk`], with
//! two implementations: [`disk::FjallDisk`] for production (a fjall keyspace and segment
//! files, made durable with fdatasync) and [`disk::MemDisk`], an in-memory disk model for the simulation that loses unflushed
//! writes on a simulated crash and can fail I/O on demand.
//!
//! ```
//! use cairn_raft_store::{disk::MemDisk, open_store, Direction, Limits};
//! let store = open_store(MemDisk::new(), Limits::default()).expect("open");
//! assert_eq!(store.reader.next_position().expect("read"), 0);
//! assert!(store.reader.read_all(0, Direction::Forwards, 10).next().is_none());
//! ```

#[cfg(any(test, feature = "fault-injection"))]
pub mod alloc_probe;
pub mod auth;
mod auth_view;
mod codec;
pub mod consumer_group;
pub mod disk;
pub mod erase;
mod error;
pub mod faults;
pub mod filter;
pub mod format;
mod frame;
pub mod group_files;
#[cfg(test)]
mod hostile_input;
pub mod id_index;
mod index;
mod keys;
pub mod lifecycle;
pub mod limits;
mod log_store;
mod query;
mod raft_types;
mod read;
mod records;
pub mod repair;
pub mod runtime;
pub mod scavenge;
mod segment_file;
mod segment_log;
mod snapshot;
mod state_machine;
mod storage_error;
mod stream_run;
mod synced_mark;
mod types;

use std::sync::Arc;

pub use auth_view::AuthView;
pub use error::StoreError;
pub use index::{category, IndexKind, IndexName, READABLE_RESERVED_NAMES};
pub use limits::{InvalidInput, Limits};
pub use log_store::{LogStore, MAX_LOG_BYTES_PER_READ, MAX_LOG_ENTRIES_PER_READ};
pub use query::query_matches;
pub use raft_types::*;
pub use read::{
    AllEvents, AllStored, Direction, EventReader, IndexEvents, IndexStored, QueryEvents,
    QueryStored, Retained, Retention, StreamEvents, StreamStatus, MAX_CACHED_VISIBILITIES,
};
pub use snapshot::{
    SnapshotData, MAX_SNAPSHOT_MEMORY_SPOOL_BYTES, MAX_SNAPSHOT_SPOOL_BYTES,
    SNAPSHOT_GROUPS_PER_CHUNK,
};
pub use state_machine::{
    verify_snapshot, SnapshotBuilder, StateMachineStore, MAX_APPLY_BATCH_BYTES,
    MAX_UNFLUSHED_CONDITION_EVENTS,
};
pub use types::*;

/// The Raft instance of a node: openraft 0.10 makes it generic over the state machine (here,
/// on the top floor, so `raft_types` stays below `state_machine`).
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// The handles onto one store: the Raft log, the state machine, a reader and the reclaimer
/// of scavenged bytes; and what
/// the open found damaged and whether a repair is under way (`repair`).
pub struct Store {
    pub log: LogStore,
    pub state_machine: StateMachineStore,
    pub reader: EventReader,
    pub reclaimer: scavenge::Reclaimer,
    /// The erase steps this node has still to scrub from its disk.
    pub erasures: erase::Erasures,
    /// Damage this open found (and what it did about it).
    pub damage: Vec<repair::Damage>,
    /// The log index this node must hold again before it votes, if a repair is under way
    /// (found now or at an earlier open).
    pub repair_until: Option<u64>,
}

/// Opens (or creates) a store on `disk`, checking every frame of the log and of the event
/// groups and repairing what it can (`repair`). Every node of a cluster must use the same
/// `limits`.
pub fn open_store(disk: Arc<dyn disk::Disk>, limits: Limits) -> Result<Store, StoreError> {
    let log = LogStore::open(disk.clone())?;
    let mut damage: Vec<repair::Damage> = log.damage().cloned().into_iter().collect();
    let clear_log = || {
        let until = log.acknowledged_end()?.unwrap_or(0);
        repair::require(disk.as_ref(), until)?;
        log.clear_for_repair()
    };
    let (state_machine, sm_damage) =
        StateMachineStore::open_checked(disk.clone(), limits, log.last_index()?, clear_log)?;
    damage.extend(sm_damage);
    let repair_until = match faults::active().forget_repair {
        true => None,
        false => repair::pending(disk.as_ref())?,
    };
    Ok(Store {
        repair_until,
        log,
        reader: state_machine.reader(),
        reclaimer: state_machine.reclaimer(),
        erasures: state_machine.erasures(),
        state_machine,
        damage,
    })
}
