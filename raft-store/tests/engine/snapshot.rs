//! Snapshots stream the store and install on empty and stale nodes, leaving them identical.

use cairn_raft_store::disk::{Disk, MemDisk};
use cairn_raft_store::{
    AppendPosition, AppendResult, Direction, ExpectedRevision as E, NewEvent, RecordedEvent,
    Snapshot, SnapshotData,
};
use openraft::storage::RaftStateMachine;
use tokio::io::AsyncWriteExt;

use crate::common::*;

const EVENTS_TOTAL: usize = 100_000;
const EVENTS_PER_APPEND: usize = 100;
const STREAMS: usize = 50;

async fn fill(s: &mut TestStore, appends: std::ops::Range<usize>) {
    for chunk in appends.collect::<Vec<_>>().chunks(50) {
        let commands = chunk
            .iter()
            .map(|i| {
                append(
                    &format!("stream-{}", i % STREAMS),
                    E::Any,
                    events(EVENTS_PER_APPEND),
                )
            })
            .collect();
        for result in s.apply_all(commands).await {
            assert!(matches!(result, AppendResult::Written(_)));
        }
    }
}

/// Ships a snapshot the way a network transport would: reads it out, writes it into the
/// receiver's spool, then installs.
pub async fn ship(snapshot: Snapshot, to: &mut TestStore) {
    let mut source = snapshot.snapshot;
    let mut spool = SnapshotData::receiving(to.disk.as_ref()).unwrap();
    tokio::io::copy(&mut source, &mut spool).await.unwrap();
    spool.flush().await.unwrap();
    to.sm()
        .install_snapshot(&snapshot.meta, spool)
        .await
        .unwrap();
    to.next_index = snapshot.meta.last_log_id.map_or(1, |l| l.index + 1);
}

fn streams(s: &TestStore) -> Vec<Vec<RecordedEvent>> {
    (0..STREAMS)
        .map(|i| s.stream(&format!("stream-{i}")))
        .collect()
}

#[test]
fn a_snapshot_of_100k_events_installs_on_empty_and_stale_stores_identically() {
    run(async {
        let mut source = TestStore::on_disk();
        let mut stale = TestStore::mem();
        fill(&mut source, 0..EVENTS_TOTAL / EVENTS_PER_APPEND / 10).await;
        fill(&mut stale, 0..EVENTS_TOTAL / EVENTS_PER_APPEND / 10).await;
        fill(
            &mut source,
            EVENTS_TOTAL / EVENTS_PER_APPEND / 10..EVENTS_TOTAL / EVENTS_PER_APPEND,
        )
        .await;
        let snapshot = source.build_snapshot().await;
        assert_eq!(
            snapshot.meta.last_log_id,
            source.store.state_machine.last_applied()
        );

        // The source goes on after the snapshot; the snapshot still holds exactly its prefix.
        fill(&mut source, 0..3).await;

        let mut empty = TestStore::on_disk();
        ship(
            source.sm().get_current_snapshot().await.unwrap().unwrap(),
            &mut empty,
        )
        .await;
        ship(
            source.sm().get_current_snapshot().await.unwrap().unwrap(),
            &mut stale,
        )
        .await;

        let source_all = source.all();
        for (name, target) in [("empty", &mut empty), ("stale", &mut stale)] {
            let all = target.all();
            assert_eq!(all.len(), EVENTS_TOTAL, "{name}");
            assert_eq!(all[..], source_all[..EVENTS_TOTAL], "{name}: same $all");
            target.assert_indexes_match_all(name);
            assert_eq!(
                target.store.state_machine.last_applied(),
                snapshot.meta.last_log_id,
                "{name}"
            );
            assert_eq!(
                target.store.reader.next_position().unwrap(),
                EVENTS_TOTAL as u64,
                "{name}"
            );
            let (_, membership) = target.sm().applied_state().await.unwrap();
            assert_eq!(membership, snapshot.meta.last_membership, "{name}");
            let current = target.sm().get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(current.meta, snapshot.meta, "{name}");
            // Indexes were rebuilt too: the same streams, and ids found where they are.
            for (i, events) in streams(target).into_iter().enumerate() {
                assert_eq!(events.len(), EVENTS_TOTAL / STREAMS, "{name}: stream-{i}");
            }
            let probe = &source_all[EVENTS_TOTAL / 2];
            assert_eq!(
                target.store.reader.position_of_event(&probe.id).unwrap(),
                Some(probe.position),
                "{name}"
            );
            // And it keeps working as a state machine: a retry of an append that came with the
            // snapshot is recognised (every append above holds exactly EVENTS_PER_APPEND).
            let start = probe.position as usize / EVENTS_PER_APPEND * EVENTS_PER_APPEND;
            let original: Vec<NewEvent> = source_all[start..start + EVENTS_PER_APPEND]
                .iter()
                .map(|e| NewEvent {
                    id: e.id,
                    event_type: e.event_type.clone(),
                    content_type: e.content_type,
                    data: e.data.to_vec(),
                    metadata: e.metadata.to_vec(),
                    tags: e.tags.clone(),
                })
                .collect();
            let again = target.apply(append(&probe.stream, E::Any, original)).await;
            assert_eq!(
                again,
                AppendResult::AlreadyWritten(AppendPosition {
                    last_revision: source_all[start + EVENTS_PER_APPEND - 1].revision,
                    last_position: (start + EVENTS_PER_APPEND - 1) as u64,
                }),
                "{name}"
            );
            assert_eq!(
                target.all().len(),
                EVENTS_TOTAL,
                "{name}: the retry wrote nothing"
            );
        }
    });
}

#[test]
fn a_corrupt_snapshot_is_rejected_and_a_restart_comes_back_empty() {
    run(async {
        let disk = MemDisk::new();
        let mut target = TestStore::on(disk.clone(), None);
        fill(&mut target, 0..3).await;
        let mut source = TestStore::mem();
        fill(&mut source, 0..5).await;
        let snapshot = source.build_snapshot().await;

        // Only the first 1000 bytes arrive.
        let mut bytes = Vec::new();
        let mut reader = snapshot.snapshot;
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut bytes)
            .await
            .unwrap();
        let mut spool = SnapshotData::receiving(target.disk.as_ref()).unwrap();
        spool.write_all(&bytes[..1000]).await.unwrap();
        assert!(target
            .sm()
            .install_snapshot(&snapshot.meta, spool)
            .await
            .is_err());

        // The process dies here; on restart the half-installed state is cleared, not served.
        disk.sync().unwrap();
        disk.crash(0);
        let s = TestStore::on(disk, None);
        assert_eq!(s.store.state_machine.last_applied(), None);
        assert!(s.all().is_empty());
        assert!(s
            .store
            .reader
            .read_all(0, Direction::Forwards, 1)
            .next()
            .is_none());
    });
}
