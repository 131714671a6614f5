//! Damage found at open: cut or cleared, recorded as a repair when the log lost what it had
//! acknowledged, never read back; snapshots damaged on the way refused.

use cairn_raft_store::disk::{Disk, LogFiles, MemDisk};
use cairn_raft_store::{repair, verify_snapshot, Entry, SnapshotData, StoreError};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// A store on the disk model with `entries` log entries, durable and applied, the log's
/// synced mark and the state machine made durable too (a node stopped after a quiet second).
async fn written(entries: u64) -> (std::sync::Arc<MemDisk>, TestStore) {
    let (disk, mut s, log) = logged(entries).await;
    s.sm().apply_entries(log).await.unwrap();
    // What the second brings: the synced mark written (then the sync below).
    s.store.log.write_synced_mark();
    disk.sync().unwrap();
    (disk, s)
}

/// A store on the disk model with `entries` log entries (returned), durable, nothing
/// applied, and the synced mark left to its own timing.
async fn logged(entries: u64) -> (std::sync::Arc<MemDisk>, TestStore, Vec<Entry>) {
    let disk = MemDisk::new();
    let mut s = TestStore::on(disk.clone(), None);
    let log = log_entries(1, entries);
    s.store.log.blocking_append(log.clone()).await.unwrap();
    (disk, s, log)
}

fn flip(files: &dyn LogFiles, segment: u64, at: u64) {
    let mut byte = [0u8; 1];
    files.read_exact_at(segment, at, &mut byte).unwrap();
    files.write_at(segment, at, &[byte[0] ^ 0xff]).unwrap();
    files.sync().unwrap();
}

#[test]
fn a_damaged_log_is_cut_and_the_node_must_get_back_what_it_acknowledged() {
    run(async {
        let (disk, s) = written(20).await;
        let before = s.all();
        drop(s);
        let segment = disk.log_model().list().unwrap()[0];
        let len = disk.log_model().len(segment).unwrap();
        flip(disk.log_model().as_ref(), segment, len / 2);

        let mut s = TestStore::on(disk.clone(), None);
        assert_eq!(s.store.damage.len(), 1, "{:?}", s.store.damage);
        assert_eq!(s.store.damage[0].file, "raft-log");
        assert_eq!(s.store.repair_until, Some(20));
        let state = s.store.log.get_log_state().await.unwrap();
        let kept = state.last_log_id.map_or(0, |l| l.index);
        assert!(
            kept < 20,
            "the damaged entry and those after it are cut: {kept}"
        );
        // The state machine had applied past the cut: back to its snapshot (none: empty).
        assert!(s.all().len() < before.len());
        recover(&mut s).await;
        assert_eq!(
            s.all()[..],
            before[..s.all().len()],
            "what is kept is what was"
        );

        // The record outlives a restart, until the repair ends.
        drop(s);
        let s = TestStore::on(disk.clone(), None);
        assert!(s.store.damage.is_empty(), "the cut is whole now");
        assert_eq!(s.store.repair_until, Some(20));
        repair::finish(disk.as_ref()).unwrap();
        assert_eq!(repair::pending(disk.as_ref()).unwrap(), None);
    });
}

#[test]
fn a_log_file_cut_short_is_found_by_the_synced_mark_and_a_torn_write_is_not_damage() {
    run(async {
        let (disk, s) = written(20).await;
        drop(s);
        let files = disk.log_model();
        let segment = *files.list().unwrap().last().unwrap();
        let len = files.len(segment).unwrap();
        // Bytes of a write that never completed: cut, and not damage (never acknowledged).
        files.write_at(segment, len, &[7, 7, 7]).unwrap();
        files.sync().unwrap();
        let s = TestStore::on(disk.clone(), None);
        assert!(s.store.damage.is_empty(), "{:?}", s.store.damage);
        assert_eq!(s.store.repair_until, None);
        drop(s);
        // Cut to half: nothing whole follows the cut, but the mark says 20 were durable.
        files.truncate(segment, len / 2).unwrap();
        files.sync().unwrap();
        let s = TestStore::on(disk.clone(), None);
        assert_eq!(s.store.damage.len(), 1, "{:?}", s.store.damage);
        assert_eq!(s.store.repair_until, Some(20));
    });
}

#[test]
fn a_damaged_group_past_the_snapshot_rolls_back_to_it_and_the_log_rebuilds_the_rest() {
    run(async {
        let (disk, mut s) = written(10).await;
        s.build_snapshot().await;
        let more = log_entries(11, 20);
        s.store.log.blocking_append(more.clone()).await.unwrap();
        s.sm().apply_entries(more).await.unwrap();
        disk.sync().unwrap();
        let before = s.all();
        drop(s);
        let files = disk.group_model();
        let segment = *files.list().unwrap().last().unwrap();
        let len = files.len(segment).unwrap();
        flip(files.as_ref(), segment, len - 3);

        let mut s = TestStore::on(disk.clone(), None);
        assert_eq!(s.store.damage.len(), 1, "{:?}", s.store.damage);
        assert_eq!(s.store.damage[0].file, "event-groups");
        assert_eq!(s.store.repair_until, None, "the own log rebuilds it");
        assert_eq!(s.store.state_machine.last_applied(), Some(log_id(10)));
        recover(&mut s).await;
        assert_eq!(s.all(), before);
        s.assert_indexes_match_all("after the rollback");
    });
}

#[test]
fn a_damaged_group_below_the_snapshot_clears_the_store_for_a_snapshot_from_the_leader() {
    run(async {
        let (disk, mut s) = written(10).await;
        let mut snapshot = s.build_snapshot().await;
        let before = s.all();
        drop(s);
        // The leader's copy of the snapshot, read out before the damage.
        let mut bytes = Vec::new();
        snapshot.snapshot.read_to_end(&mut bytes).await.unwrap();
        flip(disk.group_model().as_ref(), 0, 40);

        let mut s = TestStore::on(disk.clone(), None);
        assert_eq!(s.store.damage.len(), 1, "{:?}", s.store.damage);
        assert_eq!(s.store.repair_until, Some(10));
        assert!(s.all().is_empty(), "nothing damaged is served");
        let state = s.store.log.get_log_state().await.unwrap();
        assert_eq!(
            (state.last_log_id, state.last_purged_log_id),
            (None, None),
            "the log is cleared with the state machine"
        );
        let mut data = SnapshotData::memory();
        data.write_all(&bytes).await.unwrap();
        s.sm().install_snapshot(&snapshot.meta, data).await.unwrap();
        assert_eq!(s.all(), before);
        s.assert_indexes_match_all("after the install");
    });
}

#[test]
fn a_snapshot_damaged_in_transit_or_in_the_spool_is_refused() {
    run(async {
        let (_, mut s) = written(6).await;
        let mut snapshot = s.build_snapshot().await;
        let mut bytes = Vec::new();
        snapshot.snapshot.read_to_end(&mut bytes).await.unwrap();
        for at in [bytes.len() / 2, bytes.len() - 2] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            let mut data = SnapshotData::memory();
            data.write_all(&damaged).await.unwrap();
            let refused = verify_snapshot(&mut data).await;
            assert!(
                matches!(refused, Err(StoreError::InvalidSnapshot(_))),
                "byte {at}: {refused:?}"
            );
        }
        let mut data = SnapshotData::memory();
        data.write_all(&bytes).await.unwrap();
        assert!(verify_snapshot(&mut data).await.is_ok());
    });
}

#[test]
fn the_synced_mark_reaches_the_disk_within_its_delay_and_finds_a_cut_made_after() {
    run(async {
        let (disk, s, _) = logged(20).await;
        // No explicit write: the mark's own task writes and syncs it.
        tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
        drop(s);
        let files = disk.log_model();
        let segment = *files.list().unwrap().last().unwrap();
        files
            .truncate(segment, files.len(segment).unwrap() / 2)
            .unwrap();
        files.sync().unwrap();
        disk.crash(0);
        let s = TestStore::on(disk.clone(), None);
        assert_eq!(s.store.damage.len(), 1, "{:?}", s.store.damage);
        assert_eq!(s.store.repair_until, Some(20));
    });
}

#[test]
fn a_truncation_below_a_pending_synced_mark_is_not_damage() {
    run(async {
        let (disk, mut s, _) = logged(20).await;
        // The mark for 20 is still pending when openraft removes the entries after 10.
        s.store.log.truncate_after(Some(log_id(10))).await.unwrap();
        s.store.log.write_synced_mark();
        disk.sync().unwrap();
        drop(s);
        let s = TestStore::on(disk.clone(), None);
        assert!(s.store.damage.is_empty(), "{:?}", s.store.damage);
        assert_eq!(s.store.repair_until, None);
        let state = s.store.log.clone().get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(10)));
    });
}
