//! The log's synced mark (`keys::LOG_SYNCED`): the highest index a log sync reported durable,
//! so that a log file cut short later is found at open (DESIGN.md, "The synced mark").
//!
//! A sync only leaves its index pending here; a task writes the mark and syncs the keyspace
//! `LOG_SYNCED_MARK_SYNC_DELAY_MS` later, for every sync in between at once: the second the
//! design always allowed it. Writing it (unsynced) after each sync was a sled batch, and the
//! I/O sled does behind one, on every node for every log sync: S1 made 527-578 appends/s with
//! it and 666-723 without it (BENCHMARKS.md, issue 15).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::codec::{decode, encode};
use crate::disk::{Disk, WriteBatch};
use crate::error::StoreError;
use crate::keys;

/// How long after a log sync its mark is written and the keyspace synced: the mark reaches the
/// disk within this long, so a log cut short later (a damaged or truncated file) is found at
/// open even after a SIGKILL or a power loss.
pub const LOG_SYNCED_MARK_SYNC_DELAY_MS: u64 = 1_000;

pub(crate) struct SyncedMark {
    disk: Arc<dyn Disk>,
    /// Reported durable, not written yet. Whatever writes the mark takes it under this lock,
    /// so a truncation's lower mark is never overwritten by an older, higher one.
    pending: Mutex<Option<u64>>,
    /// A task that writes the pending mark and syncs is on its way.
    scheduled: AtomicBool,
}

impl SyncedMark {
    pub(crate) fn new(disk: Arc<dyn Disk>) -> Arc<SyncedMark> {
        Arc::new(SyncedMark {
            disk,
            pending: Mutex::new(None),
            scheduled: AtomicBool::new(false),
        })
    }

    fn pending(&self) -> MutexGuard<'_, Option<u64>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mark as the keyspace holds it.
    pub(crate) fn stored(&self) -> Result<Option<u64>, StoreError> {
        self.disk
            .get(keys::LOG_SYNCED)?
            .map(|bytes| decode("log synced mark", &bytes))
            .transpose()
    }

    /// A log sync reported entries up to `index` durable. Called on the flusher's thread:
    /// the task that writes the mark runs on `runtime`.
    pub(crate) fn note(self: &Arc<Self>, index: u64, runtime: &tokio::runtime::Handle) {
        {
            let mut pending = self.pending();
            *pending = (*pending).max(Some(index));
        }
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let mark = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(LOG_SYNCED_MARK_SYNC_DELAY_MS)).await;
            // Cleared before the write: a sync noted after it schedules a task of its own.
            mark.scheduled.store(false, Ordering::Release);
            mark.write_pending();
            mark.disk.sync_then(Box::new(|result| {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "keyspace sync for the log's synced mark failed");
                }
            }));
        });
    }

    /// Writes the pending mark now, if there is one; not synced.
    pub(crate) fn write_pending(&self) {
        let mut pending = self.pending();
        let Some(index) = pending.take() else {
            return;
        };
        let mut batch = WriteBatch::default();
        match encode(&index) {
            Ok(value) => batch.put(keys::LOG_SYNCED, value),
            Err(_) => return,
        }
        if let Err(e) = self.disk.write(batch) {
            // A hint only: without it a cut file is found only if whole entries follow it.
            tracing::warn!(error = %e, "could not write the log's synced mark");
        }
    }

    /// Before entries after `kept` are removed on purpose (`None`: all of them): brings the
    /// mark down to `kept` if it, or a pending one, says more, so that the removal is not
    /// damage at the next open. Returns whether it wrote; the caller syncs before removing.
    pub(crate) fn lower(&self, kept: Option<u64>) -> Result<bool, StoreError> {
        let mut pending = self.pending();
        if (*pending).max(self.stored()?) <= kept {
            return Ok(false);
        }
        *pending = None;
        let mut batch = WriteBatch::default();
        match kept {
            Some(kept) => batch.put(keys::LOG_SYNCED, encode(&kept)?),
            None => batch.delete(keys::LOG_SYNCED),
        }
        self.disk.write(batch)?;
        Ok(true)
    }
}

impl Drop for SyncedMark {
    /// A store that closes writes what is pending, as every sync's mark was written before:
    /// into the keyspace, not synced.
    fn drop(&mut self) {
        self.write_pending();
    }
}
