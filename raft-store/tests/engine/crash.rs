//! Crashes: only what was never reported durable may be lost.

use cairn_raft_store::disk::{Disk, FjallDisk, FjallOptions, LogFiles, MemDisk, MemFaults};
use cairn_raft_store::{open_store, Entry, ExpectedRevision as E, Limits, Vote};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{EntryPayload, RaftLogReader};

use crate::common::*;

#[test]
fn a_crash_loses_only_writes_never_reported_durable() {
    run(async {
        let disk = MemDisk::new();
        let mut s = TestStore::on(disk.clone(), None);
        s.store.log.save_vote(&Vote::new(3, 1)).await.unwrap();
        let entries = log_entries(1, 10);
        s.store.log.blocking_append(entries.clone()).await.unwrap();
        // Applying does not sync: the state machine's writes are still in flight.
        s.sm().apply_entries(entries).await.unwrap();
        assert!(disk.unflushed_batches() > 0);
        let before = s.all();
        assert_eq!(before.len(), 20);

        disk.crash(0);
        let mut s = TestStore::on(disk.clone(), None);
        assert_eq!(
            s.store.log.read_vote().await.unwrap(),
            Some(Vote::new(3, 1)),
            "vote was durable"
        );
        let state = s.store.log.get_log_state().await.unwrap();
        assert_eq!(
            state.last_log_id,
            Some(log_id(10)),
            "every reported log entry survived"
        );
        assert_eq!(
            s.store.state_machine.last_applied(),
            None,
            "unsynced apply was lost"
        );
        recover(&mut s).await;
        assert_eq!(
            s.all(),
            before,
            "re-applying the log restores the same state"
        );
    });
}

#[test]
fn a_crash_keeping_any_prefix_of_unflushed_batches_leaves_a_consistent_store() {
    run(async {
        for survivors in 0..6 {
            // The group files keep what was written (a killed process), or lose all of it
            // (power loss before any sync): then the keyspace points at frames that are gone,
            // and the state machine rolls back to its snapshot (none here: empty).
            for groups_survive in [true, false] {
                let disk = MemDisk::new();
                let mut s = TestStore::on(disk.clone(), None);
                let entries = log_entries(1, 5);
                s.store.log.blocking_append(entries.clone()).await.unwrap();
                // The log's synced mark is a keyspace write of its own: made durable here, so
                // that the unflushed batches are the state machine's.
                disk.sync().unwrap();
                for entry in entries {
                    s.sm().apply_entries(vec![entry]).await.unwrap();
                }
                let full = s.all();
                let kept_writes = if groups_survive { usize::MAX } else { 0 };
                disk.group_model().crash(kept_writes, 0);
                disk.crash(survivors);
                let mut s = TestStore::on(disk.clone(), None);
                let applied = s.store.state_machine.last_applied().map_or(0, |l| l.index);
                let expected = if groups_survive {
                    survivors.min(5) as u64
                } else {
                    0
                };
                assert_eq!(
                    applied, expected,
                    "applied state moves with its writes (survivors={survivors}, \
                     groups survive: {groups_survive})"
                );
                assert_eq!(s.all().len() as u64, applied * 2, "whole appends only");
                s.assert_indexes_match_all("after the crash");
                recover(&mut s).await;
                assert_eq!(s.all(), full, "survivors={survivors}");
                s.assert_indexes_match_all("after recovery");
            }
        }
    });
}

#[test]
fn a_log_that_lost_applied_entries_rolls_the_state_machine_back_to_the_snapshot() {
    run(async {
        let disk = MemDisk::new();
        let mut s = TestStore::on(disk.clone(), None);
        let before_snapshot = log_entries(1, 5);
        let after_snapshot = log_entries(6, 10);
        s.store
            .log
            .blocking_append(before_snapshot.clone())
            .await
            .unwrap();
        s.sm().apply_entries(before_snapshot).await.unwrap();
        s.build_snapshot().await;
        s.store
            .log
            .blocking_append(after_snapshot.clone())
            .await
            .unwrap();
        s.sm().apply_entries(after_snapshot.clone()).await.unwrap();
        let full = s.all();
        // A follower applies what the leader says is committed as soon as it is in its log,
        // synced or not; a power loss can keep the state machine's writes and lose the log's
        // tail. Here the tail goes by truncation, the state machine's writes all survive.
        s.store.log.truncate_after(Some(log_id(7))).await.unwrap();
        disk.group_model().crash(usize::MAX, 0);
        disk.crash(usize::MAX);

        let mut s = TestStore::on(disk.clone(), None);
        let state = s.store.log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(7)), "the log lost 8..=10");
        assert_eq!(
            s.store.state_machine.last_applied(),
            Some(log_id(5)),
            "no further than the log: rolled back to the snapshot"
        );
        assert_eq!(s.all(), full[..10].to_vec(), "only what the snapshot holds");
        // What the log still holds applies again; the leader sends the rest.
        recover(&mut s).await;
        s.sm()
            .apply_entries(after_snapshot[2..].to_vec())
            .await
            .unwrap();
        assert_eq!(s.all(), full, "the same state again");
    });
}

#[test]
fn a_torn_event_group_frame_is_cut_at_open_and_the_log_reapplies_it() {
    run(async {
        // Torn in the last frame's header, in its payload, or whole but pointed at by nothing.
        for torn in [1, 15, 40, usize::MAX] {
            let disk = MemDisk::new();
            let mut s = TestStore::on(disk.clone(), None);
            let entries = log_entries(1, 4);
            s.store.log.blocking_append(entries.clone()).await.unwrap();
            for entry in entries[..3].iter().cloned() {
                s.sm().apply_entries(vec![entry]).await.unwrap();
            }
            let kept_batches = disk.unflushed_batches();
            let kept_frames = disk.group_model().unflushed_writes();
            let three = s.all();
            let three_bytes = group_bytes(&disk);
            s.sm()
                .apply_entries(vec![entries[3].clone()])
                .await
                .unwrap();
            let full = s.all();
            // The keyspace lost the last apply; its frame reached the files only in part.
            disk.group_model().crash(kept_frames, torn);
            disk.crash(kept_batches);
            let mut s = TestStore::on(disk.clone(), None);
            assert_eq!(s.store.state_machine.last_applied(), Some(log_id(3)));
            assert_eq!(s.all(), three, "torn after {torn} bytes");
            assert_eq!(group_bytes(&disk), three_bytes, "the torn frame was cut");
            recover(&mut s).await;
            assert_eq!(s.all(), full, "the entry applies again after the cut");
            let s = TestStore::on(disk.clone(), None);
            assert_eq!(s.all(), full, "and reopening reads the same");
        }
    });
}

/// Bytes in the group files.
fn group_bytes(disk: &MemDisk) -> u64 {
    let files = disk.group_model();
    let ids = files.list().unwrap();
    ids.into_iter().map(|id| files.len(id).unwrap()).sum()
}

#[test]
fn groups_lost_to_a_power_loss_roll_back_to_the_snapshot_and_reapply_the_same() {
    run(async {
        let disk = MemDisk::new();
        let mut s = TestStore::on(disk.clone(), None);
        let before_snapshot = log_entries(1, 5);
        let after_snapshot = log_entries(6, 10);
        s.store
            .log
            .blocking_append(before_snapshot.clone())
            .await
            .unwrap();
        s.sm().apply_entries(before_snapshot).await.unwrap();
        s.build_snapshot().await;
        s.store
            .log
            .blocking_append(after_snapshot.clone())
            .await
            .unwrap();
        s.sm().apply_entries(after_snapshot.clone()).await.unwrap();
        let full = s.all();
        let heads: Vec<_> = (0..3).map(|i| s.stream(&format!("s{i}"))).collect();

        // The keyspace kept everything, the group files nothing since the snapshot's sync.
        disk.group_model().crash(0, 0);
        disk.crash(usize::MAX);
        let mut s = TestStore::on(disk.clone(), None);
        assert_eq!(
            s.store.state_machine.last_applied(),
            Some(log_id(5)),
            "rolled back to the snapshot"
        );
        assert_eq!(s.all(), full[..10].to_vec(), "only what the snapshot holds");
        assert!(s.assert_indexes_match_all("rolled back") > 3);
        let responses = s.sm().apply_entries(after_snapshot).await.unwrap();
        assert!(
            responses.iter().all(|r| matches!(
                r,
                cairn_raft_store::Response::Append(cairn_raft_store::AppendResult::Written(_))
            )),
            "the lost appends' ids were forgotten with them: {responses:?}"
        );
        assert_eq!(s.all(), full, "re-applying the log restores the same state");
        s.assert_indexes_match_all("re-applied");
        let heads_again: Vec<_> = (0..3).map(|i| s.stream(&format!("s{i}"))).collect();
        assert_eq!(heads_again, heads, "every stream reads back the same");
        // A killed process: every write reached the files and the keyspace.
        disk.group_model().crash(usize::MAX, 0);
        disk.crash(usize::MAX);
        let s = TestStore::on(disk.clone(), None);
        assert_eq!(s.store.state_machine.last_applied(), Some(log_id(10)));
    });
}

#[test]
fn a_failed_sync_is_reported_and_never_acknowledged() {
    run(async {
        let disk = MemDisk::new();
        let mut s = TestStore::on(disk.clone(), None);
        s.store
            .log
            .blocking_append(log_entries(1, 2))
            .await
            .unwrap();
        disk.set_faults(MemFaults {
            fail_syncs: true,
            ..Default::default()
        });
        let err = s.store.log.blocking_append(log_entries(3, 4)).await;
        assert!(err.is_err(), "append must report the failed sync");
        assert!(s.store.log.save_vote(&Vote::new(9, 1)).await.is_err());
        disk.crash(0);
        let mut s = TestStore::on(disk, None);
        let state = s.store.log.get_log_state().await.unwrap();
        assert_eq!(
            state.last_log_id,
            Some(log_id(2)),
            "only acknowledged entries remain"
        );
        assert_eq!(s.store.log.read_vote().await.unwrap(), None);
    });
}

#[test]
fn failing_writes_are_errors_not_panics() {
    run(async {
        let disk = MemDisk::new();
        let mut s = TestStore::on(disk.clone(), None);
        disk.set_faults(MemFaults {
            fail_writes: true,
            fail_reads: true,
            ..Default::default()
        });
        assert!(s
            .store
            .log
            .blocking_append(log_entries(1, 1))
            .await
            .is_err());
        assert!(s.sm().apply_entries(log_entries(1, 1)).await.is_err());
        assert!(s
            .store
            .reader
            .read_all(0, cairn_raft_store::Direction::Forwards, 1)
            .next()
            .unwrap()
            .is_err());
    });
}

#[test]
fn the_disk_reopened_after_drop_keeps_every_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let expected = run(async {
        let disk = FjallDisk::open(dir.path(), FjallOptions::default()).unwrap();
        let mut store = open_store(disk.clone(), Limits::default()).unwrap();
        store.log.save_vote(&Vote::new(2, 1)).await.unwrap();
        for i in 1..=50 {
            store.log.blocking_append(log_entries(i, i)).await.unwrap();
        }
        // A large entry (sled wrote such to blob files it never synced itself).
        let mut big = events(1);
        big[0].data = vec![b'b'; 600 * 1024];
        store
            .log
            .blocking_append(vec![Entry {
                log_id: log_id(51),
                payload: EntryPayload::Normal(append("big", E::Any, big)),
            }])
            .await
            .unwrap();
        store
            .state_machine
            .apply_entries(store.log.try_get_log_entries(1..=51).await.unwrap())
            .await
            .unwrap();
        let all: Vec<_> = store
            .reader
            .read_all(0, cairn_raft_store::Direction::Forwards, u64::MAX)
            .collect::<Result<_, _>>()
            .unwrap();
        disk.sync().unwrap();
        all
    });
    run(async {
        let disk = FjallDisk::open(dir.path(), FjallOptions::default()).unwrap();
        let mut store = open_store(disk, Limits::default()).unwrap();
        assert_eq!(store.log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        let entries = store.log.try_get_log_entries(1..).await.unwrap();
        assert_eq!(entries.len(), 51);
        assert_eq!(entries.last().unwrap().log_id, log_id(51));
        let all: Vec<_> = store
            .reader
            .read_all(0, cairn_raft_store::Direction::Forwards, u64::MAX)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all, expected);
        assert_eq!(all.last().unwrap().data.len(), 600 * 1024);
    });
}

#[test]
fn truncate_and_purge_leave_no_holes() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.store
                .log
                .blocking_append(log_entries(1, 20))
                .await
                .unwrap();
            s.store.log.truncate_after(Some(log_id(14))).await.unwrap();
            s.store.log.purge(log_id(4)).await.unwrap();
            let state = s.store.log.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(4)), "{name}");
            assert_eq!(state.last_log_id, Some(log_id(14)), "{name}");
            let entries = s.store.log.try_get_log_entries(0..100).await.unwrap();
            let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
            assert_eq!(indexes, (5..=14).collect::<Vec<_>>(), "{name}");
            let limited = s.store.log.limited_get_log_entries(5, 15).await.unwrap();
            assert_eq!(limited.len(), 10, "{name}");
            s.disk.sync().unwrap();
        });
    }
}

/// Where the SIGKILL child writes; set only in the child process.
const CHILD_DIR_ENV: &str = "CAIRN_TEST_SIGKILL_CHILD_DIR";

fn numbered_entry(i: u64) -> Entry {
    Entry {
        log_id: log_id(i),
        payload: EntryPayload::Normal(append(&format!("s-{i}"), E::Any, events(3))),
    }
}

/// The child half of `the_disk_keeps_every_acknowledged_entry_across_sigkill`: appends entries
/// forever, printing each index once the store reports it durable. Ignored in normal runs.
#[test]
#[ignore = "run as a child process by the_disk_keeps_every_acknowledged_entry_across_sigkill"]
fn sigkill_child_appends_until_killed() {
    use std::io::Write;
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    run(async {
        let disk = FjallDisk::open(dir, FjallOptions::default()).unwrap();
        let mut store = open_store(disk, Limits::default()).unwrap();
        let mut stdout = std::io::stdout();
        for i in 1.. {
            let entry = numbered_entry(i);
            store
                .log
                .blocking_append(vec![entry.clone()])
                .await
                .unwrap();
            writeln!(stdout, "acked {i}").unwrap();
            stdout.flush().unwrap();
            store
                .state_machine
                .apply_entries(vec![entry])
                .await
                .unwrap();
        }
    });
}

#[test]
fn the_disk_keeps_every_acknowledged_entry_across_sigkill() {
    use std::io::BufRead;
    const ACKS_BEFORE_KILL: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::sigkill_child_appends_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut last_acked = 0u64;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            last_acked = n.parse().unwrap();
            if last_acked >= ACKS_BEFORE_KILL {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        last_acked >= ACKS_BEFORE_KILL,
        "child stopped early at {last_acked}"
    );

    run(async {
        let disk = FjallDisk::open(dir.path(), FjallOptions::default()).unwrap();
        let mut store = open_store(disk, Limits::default()).unwrap();
        let entries = store.log.try_get_log_entries(1..).await.unwrap();
        assert!(
            entries.len() as u64 >= last_acked,
            "{} entries survived, {last_acked} were acknowledged",
            entries.len()
        );
        for (i, entry) in (1..).zip(&entries) {
            assert_eq!(entry.log_id, log_id(i), "no hole in the log");
            let EntryPayload::Normal(cairn_raft_store::Command::Append(a)) = &entry.payload else {
                panic!("entry {i} is not an append");
            };
            assert_eq!(
                a.stream,
                format!("s-{i}"),
                "entry {i} holds what was written"
            );
        }
        // The state machine may lag the log; re-applying brings it to the same place.
        let from = store
            .state_machine
            .last_applied()
            .map_or(1, |l| l.index + 1);
        let rest = store.log.try_get_log_entries(from..).await.unwrap();
        store.state_machine.apply_entries(rest).await.unwrap();
        let all: Vec<_> = store
            .reader
            .read_all(0, cairn_raft_store::Direction::Forwards, u64::MAX)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all.len(), entries.len() * 3);
        assert!(all.iter().enumerate().all(|(p, e)| e.position == p as u64));
    });
}
