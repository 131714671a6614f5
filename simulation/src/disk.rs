//! The disk a simulated node runs on: raft-store's [`MemDisk`] (which outlives the node, so a
//! restart finds what was made durable), behind a wrapper that can make syncs slow, of the
//! keyspace and of the log's files alike. Syncs finish in the order they were asked for, as on
//! a real disk queue.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_raft_store::disk::{
    Disk, KeyRange, KeyValue, LogFiles, MemDisk, Order, SnapshotSpool, SyncCallback, WriteBatch,
};
use tokio::sync::oneshot::{self, error::TryRecvError};

/// Most delayed syncs in flight on one disk. Beyond it a sync fails, as an overloaded disk's
/// would; the node stops and the harness restarts it at the heal.
pub const MAX_DELAYED_SYNCS: u64 = 1024;

/// Delays syncs by the fault schedule's current delay, keeping them in order.
struct DelayedSyncs {
    /// Added to every sync, in milliseconds; the fault schedule changes it.
    sync_delay_ms: Arc<AtomicU64>,
    in_flight: AtomicU64,
    /// Completes when the previous delayed sync has reported.
    previous: Mutex<Option<oneshot::Receiver<()>>>,
}

impl DelayedSyncs {
    /// Runs `sync` (which reports to the callback it is given) after the delay and after every
    /// earlier delayed sync has reported, then calls `done`.
    fn sync_then(
        self: &Arc<Self>,
        sync: impl FnOnce(SyncCallback) + Send + 'static,
        done: SyncCallback,
    ) {
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
            return sync(done);
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_DELAYED_SYNCS {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return done(Err(io::Error::other("simulated sync queue full")));
        }
        let (finished, next) = oneshot::channel();
        let before = previous.replace(next);
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
            this.in_flight.fetch_sub(1, Ordering::Relaxed);
            sync(Box::new(move |result| {
                done(result);
                let _ = finished.send(());
            }));
        });
    }
}

/// One boot's view of a node's disk.
pub struct SimDisk {
    inner: Arc<MemDisk>,
    syncs: Arc<DelayedSyncs>,
    log: Arc<SimLogFiles>,
    groups: Arc<SimLogFiles>,
}

impl SimDisk {
    pub fn new(inner: Arc<MemDisk>, sync_delay_ms: Arc<AtomicU64>) -> Arc<SimDisk> {
        let syncs = Arc::new(DelayedSyncs {
            sync_delay_ms,
            in_flight: AtomicU64::new(0),
            previous: Mutex::new(None),
        });
        let log = Arc::new(SimLogFiles {
            inner: inner.log_files(),
            syncs: syncs.clone(),
        });
        let groups = Arc::new(SimLogFiles {
            inner: inner.group_files(),
            syncs: syncs.clone(),
        });
        Arc::new(SimDisk {
            inner,
            syncs,
            log,
            groups,
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
        let inner = self.inner.clone();
        self.syncs
            .sync_then(move |done| inner.sync_then(done), done);
    }

    fn snapshot_spool(&self) -> io::Result<SnapshotSpool> {
        self.inner.snapshot_spool()
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        self.inner.size_on_disk()
    }

    fn log_files(&self) -> Arc<dyn LogFiles> {
        self.log.clone()
    }

    fn group_files(&self) -> Arc<dyn LogFiles> {
        self.groups.clone()
    }
}

/// The log's (or the event groups') files of one boot, sharing the disk's sync delay and
/// order.
struct SimLogFiles {
    inner: Arc<dyn LogFiles>,
    syncs: Arc<DelayedSyncs>,
}

impl LogFiles for SimLogFiles {
    fn list(&self) -> io::Result<Vec<u64>> {
        self.inner.list()
    }

    fn create(&self, id: u64) -> io::Result<()> {
        self.inner.create(id)
    }

    fn len(&self, id: u64) -> io::Result<u64> {
        self.inner.len(id)
    }

    fn read_exact_at(&self, id: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(id, offset, buf)
    }

    fn write_at(&self, id: u64, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_at(id, offset, bytes)
    }

    fn truncate(&self, id: u64, len: u64) -> io::Result<()> {
        self.inner.truncate(id, len)
    }

    fn remove(&self, id: u64) -> io::Result<()> {
        self.inner.remove(id)
    }

    fn discard(&self, id: u64, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(id, offset, len)
    }

    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }

    fn sync_then(&self, done: SyncCallback) {
        let inner = self.inner.clone();
        self.syncs
            .sync_then(move |done| inner.sync_then(done), done);
    }
}

/// Damages one of a stopped node's segment files, durably, as `damage` (a number from the
/// seed) chooses: the Raft log's or the event groups', which segment, and whether a byte is
/// flipped (one bit, anywhere) or the file cut short (to any length).
pub fn damage(disk: &MemDisk, damage: u64) {
    let mut choice = crate::rng::SimRng::new(damage);
    let files = if choice.percent(50) {
        disk.log_model()
    } else {
        disk.group_model()
    };
    let Ok(segments) = files.list() else { return };
    if segments.is_empty() {
        return;
    }
    let segment = segments[choice.below(segments.len() as u64) as usize];
    let len = files.len(segment).unwrap_or(0);
    if len == 0 {
        return;
    }
    let at = choice.below(len);
    if choice.percent(50) {
        let mut byte = [0u8; 1];
        if files.read_exact_at(segment, at, &mut byte).is_ok() {
            let _ = files.write_at(segment, at, &[byte[0] ^ (1 << choice.below(8))]);
        }
    } else {
        let _ = files.truncate(segment, at);
    }
    let _ = files.sync();
}
