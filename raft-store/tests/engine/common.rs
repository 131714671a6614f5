//! Helpers: stores on either disk, commands, and applying them as committed log entries.

use std::sync::Arc;

use cairn_raft_store::disk::{Disk, FjallDisk, FjallOptions, MemDisk};
use cairn_raft_store::EntryPayload;
use cairn_raft_store::{
    category, open_store, Append, AppendResult, Command, ContentType, Direction, Entry,
    ExpectedRevision, IndexKind, IndexName, Limits, LogId, MultiAppend, MultiAppendResult,
    NewEvent, RecordedEvent, Response, Snapshot, StateMachineStore, Store, Write, WriteResult,
};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use uuid::Uuid;

pub fn log_id(index: u64) -> LogId {
    cairn_raft_store::log_id(1, 1, index)
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

/// `n` events of type `Tested`; the first two of every three tagged `t0`/`t1` and `both`,
/// so the tag index has runs that start and end inside an append.
pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let mut e = event("Tested", format!("{{\"i\":{i}}}").as_bytes());
            if i % 3 != 2 {
                e.tags = vec![format!("t{}", i % 3), "both".into()];
            }
            e
        })
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

    pub fn on_disk() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = FjallDisk::open(dir.path(), FjallOptions::default()).expect("open the store");
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
        let responses = self.sm().apply_entries(entries).await.expect("apply");
        responses
            .into_iter()
            .flat_map(|r| match r {
                Response::Append(result) => vec![result],
                Response::Appends(results) => results,
                other => panic!("unexpected response {other:?}"),
            })
            .collect()
    }

    /// Applies writes (single and multi-stream appends) as one group-commit entry.
    pub async fn apply_writes(&mut self, writes: Vec<Write>) -> Vec<WriteResult> {
        let entry = Entry {
            log_id: log_id(self.next_index),
            payload: EntryPayload::Normal(Command::Writes(writes)),
        };
        self.next_index += 1;
        match self
            .sm()
            .apply_entries(vec![entry])
            .await
            .expect("apply")
            .remove(0)
        {
            Response::Writes(results) => results,
            other => panic!("unexpected response {other:?}"),
        }
    }

    /// Applies one multi-stream append as its own entry.
    pub async fn apply_multi(&mut self, multi: MultiAppend) -> MultiAppendResult {
        match self.apply_writes(vec![Write::Multi(multi)]).await.remove(0) {
            WriteResult::Multi(result) => result,
            other => panic!("unexpected result {other:?}"),
        }
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

impl TestStore {
    pub fn index(&self, index: &IndexName, from: u64, direction: Direction) -> Vec<RecordedEvent> {
        self.store
            .reader
            .read_index(index, from, direction, u64::MAX)
            .collect::<Result<_, _>>()
            .expect("read index")
    }

    /// Every category, type and tag index of the store reads exactly `$all` filtered by it:
    /// forwards and backwards, from the start, the end and the middle; a name nobody used
    /// reads nothing. Returns how many index names were checked.
    pub fn assert_indexes_match_all(&self, context: &str) -> usize {
        let all = self.all();
        let mut names = std::collections::BTreeSet::new();
        for e in &all {
            names.insert((0, category(&e.stream).to_owned()));
            names.insert((1, e.event_type.clone()));
            for tag in &e.tags {
                names.insert((2, tag.clone()));
            }
        }
        let kinds = [IndexKind::Category, IndexKind::EventType, IndexKind::Tag];
        let middle = all.len() as u64 / 2;
        for (kind, name) in &names {
            let index = IndexName {
                kind: kinds[*kind],
                name: name.clone(),
            };
            let of = |from: u64, back: bool| -> Vec<RecordedEvent> {
                let mut v: Vec<_> = all
                    .iter()
                    .filter(|e| index.matches(&e.stream, &e.event_type, &e.tags))
                    .filter(|e| {
                        if back {
                            e.position <= from
                        } else {
                            e.position >= from
                        }
                    })
                    .cloned()
                    .collect();
                if back {
                    v.reverse();
                }
                v
            };
            assert_eq!(
                self.index(&index, 0, Direction::Forwards),
                of(0, false),
                "{context}: {index}"
            );
            assert_eq!(
                self.index(&index, middle, Direction::Forwards),
                of(middle, false),
                "{context}: {index} from {middle}"
            );
            assert_eq!(
                self.index(&index, u64::MAX, Direction::Backwards),
                of(u64::MAX, true),
                "{context}: {index} backwards"
            );
            assert_eq!(
                self.index(&index, middle, Direction::Backwards),
                of(middle, true),
                "{context}: {index} backwards from {middle}"
            );
            let last = of(u64::MAX, true).first().map(|e| e.position);
            assert_eq!(
                self.store.reader.last_in_index(&index).unwrap(),
                last,
                "{context}: {index}"
            );
        }
        for kind in kinds {
            let unused = IndexName {
                kind,
                name: "never-used".into(),
            };
            assert!(
                self.index(&unused, 0, Direction::Forwards).is_empty(),
                "{context}"
            );
        }
        names.len()
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
    [("mem", TestStore::mem), ("disk", TestStore::on_disk)]
}

/// Log entries `from..=to`, each an append of two events to one of three streams.
pub fn log_entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| Entry {
            log_id: log_id(i),
            payload: EntryPayload::Normal(append(
                &format!("s{}", i % 3),
                ExpectedRevision::Any,
                events(2),
            )),
        })
        .collect()
}

/// Re-applies the log after the state machine's last applied index, as openraft does on start.
pub async fn recover(s: &mut TestStore) {
    use openraft::RaftLogReader;
    let from = s
        .store
        .state_machine
        .last_applied()
        .map_or(1, |l| l.index + 1);
    let entries = s.store.log.try_get_log_entries(from..).await.unwrap();
    s.sm().apply_entries(entries).await.unwrap();
}
