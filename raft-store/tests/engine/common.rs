//! Helpers: stores on either disk, commands, and applying them as committed log entries.

use std::sync::Arc;

use cairn_raft_store::disk::{Disk, MemDisk, SledDisk, SledOptions};
use cairn_raft_store::{
    open_store, Append, AppendResult, Command, ContentType, Direction, Entry, ExpectedRevision,
    Limits, LogId, NewEvent, RecordedEvent, Response, Snapshot, StateMachineStore, Store,
};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload};
use uuid::Uuid;

pub fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

pub fn event(event_type: &str, data: &[u8]) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        content_type: ContentType::Json,
        data: data.to_vec(),
        metadata: Vec::new(),
        tags: Vec::new(),
    }
}

pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event("Tested", format!("{{\"i\":{i}}}").as_bytes()))
        .collect()
}

pub fn append(stream: &str, expected: ExpectedRevision, events: Vec<NewEvent>) -> Command {
    Command::Append(Append {
        stream: stream.to_owned(),
        expected,
        events,
        created_unix_ms: 1_700_000_000_000,
    })
}

/// A store plus the next log index to apply at; owns whatever keeps its disk alive.
pub struct TestStore {
    pub store: Store,
    pub disk: Arc<dyn Disk>,
    pub next_index: u64,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub fn mem() -> Self {
        Self::on(MemDisk::new(), None)
    }

    pub fn sled() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = SledDisk::open(dir.path(), SledOptions::default()).expect("open sled");
        Self::on(disk, Some(dir))
    }

    pub fn on(disk: Arc<dyn Disk>, dir: Option<tempfile::TempDir>) -> Self {
        let store = open_store(disk.clone(), Limits::default()).expect("open store");
        let next_index = store
            .state_machine
            .last_applied()
            .map_or(1, |l| l.index + 1);
        TestStore {
            store,
            disk,
            next_index,
            _dir: dir,
        }
    }

    pub fn sm(&mut self) -> &mut StateMachineStore {
        &mut self.store.state_machine
    }

    /// Applies commands as consecutive committed entries, one `apply` call.
    pub async fn apply_all(&mut self, commands: Vec<Command>) -> Vec<AppendResult> {
        let entries: Vec<Entry> = commands
            .into_iter()
            .map(|command| {
                let entry = Entry {
                    log_id: log_id(self.next_index),
                    payload: EntryPayload::Normal(command),
                };
                self.next_index += 1;
                entry
            })
            .collect();
        let responses = self.sm().apply(entries).await.expect("apply");
        responses
            .into_iter()
            .flat_map(|r| match r {
                Response::Append(result) => vec![result],
                Response::Appends(results) => results,
                other => panic!("unexpected response {other:?}"),
            })
            .collect()
    }

    pub async fn build_snapshot(&mut self) -> Snapshot {
        self.sm()
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build snapshot")
    }

    pub async fn apply(&mut self, command: Command) -> AppendResult {
        self.apply_all(vec![command]).await.remove(0)
    }

    pub fn all(&self) -> Vec<RecordedEvent> {
        self.store
            .reader
            .read_all(0, Direction::Forwards, u64::MAX)
            .collect::<Result<_, _>>()
            .expect("read all")
    }

    pub fn stream(&self, stream: &str) -> Vec<RecordedEvent> {
        self.store
            .reader
            .read_stream(stream, 0, Direction::Forwards, u64::MAX)
            .collect::<Result<_, _>>()
            .expect("read stream")
    }
}

/// Runs an async test body on a fresh runtime.
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Makes a fresh store.
pub type MakeStore = fn() -> TestStore;

/// Both disks, for tests that must hold on each.
pub fn both() -> [(&'static str, MakeStore); 2] {
    [("mem", TestStore::mem), ("sled", TestStore::sled)]
}
