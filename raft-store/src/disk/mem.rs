//! The in-memory disk model used by the simulation and by crash tests.
//!
//! It keeps two images: what readers see (`live`) and what would survive power loss
//! (`durable`). Writes go to `live` and to a queue of unflushed batches; `sync` moves the queue
//! into `durable`. A simulated crash throws `live` away and rebuilds it from `durable` plus a
//! chosen prefix of the unflushed batches: a sequential log (like sled's) may have reached the
//! platter partly, but never out of order and never half a batch.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Disk, KeyRange, KeyValue, LogFiles, MemLogFiles, Op, Order, WriteBatch};

/// Most batches the model holds between syncs. At the limit a write fails with an I/O error,
/// as a real disk that ran out of buffer space would; the log syncs after every append, so a
/// correct caller never gets near it.
pub const MAX_UNFLUSHED_BATCHES: usize = 100_000;

/// Faults the model injects while they are switched on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemFaults {
    pub fail_reads: bool,
    pub fail_writes: bool,
    pub fail_syncs: bool,
}

#[derive(Default)]
struct State {
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    unflushed: Vec<WriteBatch>,
    faults: MemFaults,
}

/// A disk that lives in memory and forgets unflushed writes on a simulated crash.
#[derive(Default)]
pub struct MemDisk {
    state: Mutex<State>,
    log: Arc<MemLogFiles>,
    groups: Arc<MemLogFiles>,
}

fn apply(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: &WriteBatch) {
    for op in &batch.ops {
        match op {
            Op::Put(k, v) => {
                map.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                map.remove(k);
            }
        }
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} fault"))
}

impl MemDisk {
    pub fn new() -> Arc<Self> {
        Arc::new(MemDisk::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than the panic itself; keep going with what is there.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Switches faults on or off, for the keyspace and the log's files alike.
    pub fn set_faults(&self, faults: MemFaults) {
        self.lock().faults = faults;
        self.log.set_faults(faults);
        self.groups.set_faults(faults);
    }

    /// The model of the Raft log's files, to crash them with a torn write.
    pub fn log_model(&self) -> &Arc<MemLogFiles> {
        &self.log
    }

    /// The model of the event groups' files, to crash them with a torn write.
    pub fn group_model(&self) -> &Arc<MemLogFiles> {
        &self.groups
    }

    /// Batches written since the last successful sync.
    pub fn unflushed_batches(&self) -> usize {
        self.lock().unflushed.len()
    }

    /// Simulates power loss: keeps what was made durable, plus the first
    /// `surviving_unflushed_batches` batches written after that, and nothing else; the log's
    /// and the groups' files lose every unsynced change (crash `log_model()` and
    /// `group_model()` first to keep some).
    /// Faults are switched off, as on a machine that comes back up.
    pub fn crash(&self, surviving_unflushed_batches: usize) {
        self.log.crash(0, 0);
        self.groups.crash(0, 0);
        let mut state = self.lock();
        let keep = surviving_unflushed_batches.min(state.unflushed.len());
        let survivors: Vec<WriteBatch> = state.unflushed.drain(..keep).collect();
        for batch in &survivors {
            apply(&mut state.durable, batch);
        }
        state.unflushed.clear();
        state.live = state.durable.clone();
        state.faults = MemFaults::default();
    }
}

impl Disk for MemDisk {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let state = self.lock();
        if state.faults.fail_reads {
            return Err(injected("read"));
        }
        Ok(state.live.get(key).cloned())
    }

    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> io::Result<Vec<KeyValue>> {
        let state = self.lock();
        if state.faults.fail_reads {
            return Err(injected("read"));
        }
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let iter = state.live.range(range.start.clone()..range.end.clone());
        let pairs = match order {
            Order::Ascending => iter
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Order::Descending => iter
                .rev()
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        Ok(pairs)
    }

    fn write(&self, batch: WriteBatch) -> io::Result<()> {
        let mut state = self.lock();
        if state.faults.fail_writes {
            return Err(injected("write"));
        }
        if state.unflushed.len() >= MAX_UNFLUSHED_BATCHES {
            return Err(io::Error::other("disk model: too many unflushed batches"));
        }
        apply(&mut state.live, &batch);
        state.unflushed.push(batch);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.faults.fail_syncs {
            return Err(injected("sync"));
        }
        let batches = std::mem::take(&mut state.unflushed);
        for batch in &batches {
            apply(&mut state.durable, batch);
        }
        Ok(())
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        let keyspace: u64 = {
            let state = self.lock();
            state
                .durable
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum()
        };
        let mut files = 0;
        for model in [&self.log, &self.groups] {
            for id in model.list()? {
                files += model.len(id)?;
            }
        }
        Ok(keyspace + files)
    }

    fn log_files(&self) -> Arc<dyn LogFiles> {
        self.log.clone()
    }

    fn group_files(&self) -> Arc<dyn LogFiles> {
        self.groups.clone()
    }
}
