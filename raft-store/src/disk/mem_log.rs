//! The in-memory model of the Raft log's segment files, for the simulation and crash tests.
//!
//! Like `MemDisk` it keeps what readers see (`live`) and what would survive power loss
//! (`durable`), plus the changes in between in order. A simulated crash keeps the durable
//! files, a chosen prefix of the later changes, and optionally the first bytes of the next
//! write: a torn write at the end of a segment, which the log must detect and cut off.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Mutex, MutexGuard};

use super::{LogFiles, MemFaults};

/// Most changes the model holds between syncs. At the limit a change fails with an I/O error;
/// the log syncs after every append, so a correct caller never gets near it.
pub const MAX_UNFLUSHED_LOG_WRITES: usize = 100_000;

#[derive(Debug, Clone)]
enum Change {
    Create(u64),
    Write(u64, u64, Vec<u8>),
    Truncate(u64, u64),
    Remove(u64),
}

type Files = BTreeMap<u64, Vec<u8>>;

#[derive(Default)]
struct State {
    live: Files,
    durable: Files,
    unflushed: Vec<Change>,
    faults: MemFaults,
}

/// Segment files that live in memory and forget unsynced changes on a simulated crash.
#[derive(Default)]
pub struct MemLogFiles {
    state: Mutex<State>,
}

fn not_found(id: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("log segment {id} does not exist"),
    )
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected log {what} fault"))
}

fn apply(files: &mut Files, change: &Change) {
    match change {
        Change::Create(id) => {
            files.insert(*id, Vec::new());
        }
        Change::Write(id, offset, bytes) => {
            if let Some(file) = files.get_mut(id) {
                let offset = *offset as usize;
                let end = offset + bytes.len();
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[offset..end].copy_from_slice(bytes);
            }
        }
        Change::Truncate(id, len) => {
            if let Some(file) = files.get_mut(id) {
                file.resize(*len as usize, 0);
            }
        }
        Change::Remove(id) => {
            files.remove(id);
        }
    }
}

impl MemLogFiles {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set_faults(&self, faults: MemFaults) {
        self.lock().faults = faults;
    }

    /// Changes made since the last successful sync.
    pub fn unflushed_writes(&self) -> usize {
        self.lock().unflushed.len()
    }

    /// Simulates power loss: keeps what was synced, the first `surviving_writes` changes after
    /// it, and, if the change after those is a write, its first `torn_bytes` bytes.
    pub fn crash(&self, surviving_writes: usize, torn_bytes: usize) {
        let mut state = self.lock();
        let keep = surviving_writes.min(state.unflushed.len());
        let mut changes: Vec<Change> = state.unflushed.drain(..).collect();
        if let Some(Change::Write(id, offset, bytes)) = changes.get(keep).cloned() {
            let torn = torn_bytes.min(bytes.len());
            changes[keep] = Change::Write(id, offset, bytes[..torn].to_vec());
            changes.truncate(keep + 1);
        } else {
            changes.truncate(keep);
        }
        for change in &changes {
            apply(&mut state.durable, change);
        }
        state.live = state.durable.clone();
        state.faults = MemFaults::default();
    }

    fn change(&self, change: Change) -> io::Result<()> {
        let mut state = self.lock();
        if state.faults.fail_writes {
            return Err(injected("write"));
        }
        if state.unflushed.len() >= MAX_UNFLUSHED_LOG_WRITES {
            return Err(io::Error::other("log model: too many unsynced changes"));
        }
        let id = match &change {
            Change::Create(id)
            | Change::Write(id, _, _)
            | Change::Truncate(id, _)
            | Change::Remove(id) => *id,
        };
        let exists = state.live.contains_key(&id);
        match (&change, exists) {
            (Change::Create(_), true) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("log segment {id} exists"),
                ))
            }
            (Change::Create(_), false) => {}
            (_, false) => return Err(not_found(id)),
            (_, true) => {}
        }
        apply(&mut state.live, &change);
        state.unflushed.push(change);
        Ok(())
    }
}

impl LogFiles for MemLogFiles {
    fn list(&self) -> io::Result<Vec<u64>> {
        let state = self.lock();
        if state.faults.fail_reads {
            return Err(injected("read"));
        }
        Ok(state.live.keys().copied().collect())
    }

    fn create(&self, id: u64) -> io::Result<()> {
        self.change(Change::Create(id))
    }

    fn len(&self, id: u64) -> io::Result<u64> {
        let state = self.lock();
        state
            .live
            .get(&id)
            .map(|f| f.len() as u64)
            .ok_or_else(|| not_found(id))
    }

    fn read_exact_at(&self, id: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let state = self.lock();
        if state.faults.fail_reads {
            return Err(injected("read"));
        }
        let file = state.live.get(&id).ok_or_else(|| not_found(id))?;
        let start = offset as usize;
        let bytes = file
            .get(start..start + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_at(&self, id: u64, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.change(Change::Write(id, offset, bytes.to_vec()))
    }

    fn truncate(&self, id: u64, len: u64) -> io::Result<()> {
        self.change(Change::Truncate(id, len))
    }

    fn remove(&self, id: u64) -> io::Result<()> {
        self.change(Change::Remove(id))
    }

    /// Zeros, as a write of zeros would leave them (a crash keeps or loses it like one).
    fn discard(&self, id: u64, offset: u64, len: u64) -> io::Result<()> {
        let file_len = self.len(id)?;
        if offset.saturating_add(len) > file_len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        self.change(Change::Write(id, offset, vec![0; len as usize]))
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.faults.fail_syncs {
            return Err(injected("sync"));
        }
        let changes = std::mem::take(&mut state.unflushed);
        for change in &changes {
            apply(&mut state.durable, change);
        }
        Ok(())
    }
}
