//! The disk a simulated node runs on: raft-store's [`MemDisk`] (which outlives the node, so a
//! restart finds what was made durable), behind a wrapper that can make syncs slow. Syncs
//! finish in the order they were asked for, as on a real disk queue.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_raft_store::disk::{Disk, KeyRange, KeyValue, MemDisk, Order, SyncCallback, WriteBatch};
use cairn_raft_store::SnapshotData;
use tokio::sync::oneshot::{self, error::TryRecvError};

/// Most delayed syncs in flight on one disk. Beyond it a sync fails, as an overloaded disk's
/// would; the node stops and the harness restarts it at the heal.
pub const MAX_DELAYED_SYNCS: u64 = 1024;

/// One boot's view of a node's disk.
pub struct SimDisk {
    inner: Arc<MemDisk>,
    /// Added to every sync, in milliseconds; the fault schedule changes it.
    sync_delay_ms: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    /// Completes when the previous delayed sync has reported.
    previous: Mutex<Option<oneshot::Receiver<()>>>,
}

impl SimDisk {
    pub fn new(inner: Arc<MemDisk>, sync_delay_ms: Arc<AtomicU64>) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            inner,
            sync_delay_ms,
            in_flight: Arc::new(AtomicU64::new(0)),
            previous: Mutex::new(None),
        })
    }
}

impl Disk for SimDisk {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> io::Result<Vec<KeyValue>> {
        self.inner.scan(range, order, limit)
    }

    fn write(&self, batch: WriteBatch) -> io::Result<()> {
        self.inner.write(batch)
    }

    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }

    fn sync_then(&self, done: SyncCallback) {
        let delay = self.sync_delay_ms.load(Ordering::Relaxed);
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        // A delayed sync that has reported no longer orders anything.
        if previous
            .as_mut()
            .is_some_and(|before| !matches!(before.try_recv(), Err(TryRecvError::Empty)))
        {
            *previous = None;
        }
        if delay == 0 && previous.is_none() {
            return self.inner.sync_then(done);
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_DELAYED_SYNCS {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return done(Err(io::Error::other("simulated sync queue full")));
        }
        let (finished, next) = oneshot::channel();
        let before = previous.replace(next);
        let inner = self.inner.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            inner.sync_then(Box::new(move |result| {
                done(result);
                let _ = finished.send(());
            }));
        });
    }

    fn snapshot_spool(&self) -> io::Result<SnapshotData> {
        self.inner.snapshot_spool()
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        self.inner.size_on_disk()
    }
}
