//! The storage seam: the only way raft-store touches durable state.
//!
//! It is deliberately narrow (point read, bounded range scan, atomic batch, make durable) so
//! that a second implementation, the in-memory disk model the simulation runs on, can copy its
//! semantics exactly: writes are visible at once, survive a crash only once made durable, and a
//! batch is all-or-nothing.

mod fjall_disk;
mod flusher;
mod fs_log;
mod mem;
mod mem_log;
mod sled_disk;

use std::io;
use std::sync::Arc;

pub use fjall_disk::{FjallDisk, FjallOptions, GROUP_DIR, KEYSPACE_DIR, LOG_DIR, STORE_LOCK_FILE};
pub use flusher::{MAX_PENDING_SYNCS, MAX_SYNCS_PER_FDATASYNC};
pub use fs_log::FsLogFiles;
pub use mem::{MemDisk, MemFaults};
pub use mem_log::{MemLogFiles, MAX_UNFLUSHED_LOG_WRITES};

use crate::error::StoreError;

/// A half-open range of keys `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

/// Scan direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Changes applied all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<Op>,
    /// Bytes of keys and values, to let callers bound a batch.
    pub bytes: usize,
}

impl WriteBatch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        let key = key.into();
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put(key, value));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(Op::Delete(key));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Called once the writes before it are durable (or durability failed).
pub type SyncCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Waits for a `sync_then` (of the keyspace or of a directory of files) without blocking the
/// async runtime.
pub(crate) async fn wait_for_sync(sync_then: impl FnOnce(SyncCallback)) -> io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    sync_then(Box::new(move |result| {
        let _ = tx.send(result);
    }));
    match rx.await {
        Ok(result) => result,
        Err(_) => Err(io::Error::other("disk dropped a sync request")),
    }
}

/// Waits for `Disk::sync_then` without blocking the async runtime.
pub(crate) async fn sync_async(disk: &dyn Disk) -> io::Result<()> {
    wait_for_sync(|done| disk.sync_then(done)).await
}

/// Where a snapshot being received is spooled (`snapshot::SnapshotData` wraps it).
#[derive(Debug)]
pub enum SnapshotSpool {
    /// In memory (the disk model).
    Memory,
    /// An unnamed file, gone when dropped.
    File(std::fs::File),
}

/// A (key, value) pair returned by a scan.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The storage seam. All methods are synchronous and quick, except `sync`.
pub trait Disk: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>>;

    /// At most `limit` pairs of `range`, in `order`. Callers page through larger ranges, so
    /// memory stays bounded however large the store is.
    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> io::Result<Vec<KeyValue>>;

    /// Applies the batch atomically. Visible to readers at once; durable only after a sync.
    fn write(&self, batch: WriteBatch) -> io::Result<()>;

    /// Blocks until every write that returned before this call is durable.
    fn sync(&self) -> io::Result<()>;

    /// Like `sync`, but reports through `done`, possibly later and from another thread, so
    /// that concurrent callers can share one fdatasync (group commit).
    fn sync_then(&self, done: SyncCallback) {
        done(self.sync());
    }

    /// A writable, seekable scratch space for a snapshot being received.
    fn snapshot_spool(&self) -> io::Result<SnapshotSpool> {
        Ok(SnapshotSpool::Memory)
    }

    /// Bytes the store occupies (for benchmarks and metrics), the log's files included.
    fn size_on_disk(&self) -> io::Result<u64>;

    /// Rewrites the keyspace into fresh files and deletes the old ones, so that no old
    /// version of a removed or replaced key stays on disk (an erase needs it: an LSM tree keeps
    /// them in its journal and table files until a compaction drops them). Every keyspace call waits meanwhile.
    /// Crash-safe: an open finishes a rewrite that was cut short, or drops it. The disk
    /// model keeps no old versions, so by default there is nothing to do.
    fn rewrite_keyspace(&self) -> io::Result<()> {
        Ok(())
    }

    /// The files the Raft log lives in (beside the keyspace, not in it).
    fn log_files(&self) -> Arc<dyn LogFiles>;

    /// The files the state machine's append groups live in (`group_files`); the keyspace
    /// holds only where each one is.
    fn group_files(&self) -> Arc<dyn LogFiles>;
}

/// Bytes allocated on disk under `dir` (blocks, not apparent length: holes cost nothing).
pub(crate) fn dir_size(dir: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}

/// Deletes every key in `range`, `page_keys` at a time, so memory stays bounded however large
/// the range is. Each page is its own batch: a crash may leave a prefix deleted.
pub(crate) fn delete_range(disk: &dyn Disk, range: &KeyRange, page_keys: usize) -> io::Result<()> {
    loop {
        let page = disk.scan(range, Order::Ascending, page_keys)?;
        let done = page.len() < page_keys;
        let mut batch = WriteBatch::default();
        for (key, _) in page {
            batch.delete(key);
        }
        if !batch.is_empty() {
            disk.write(batch)?;
        }
        if done {
            return Ok(());
        }
    }
}

/// What `rewrite_range` does with one pair.
pub(crate) enum Rewrite {
    Keep,
    Delete,
    Put(Vec<u8>),
}

/// Visits every pair of `range`, `page_keys` at a time, and applies what `decide` says of each.
/// Each page is its own batch: a crash may leave a prefix rewritten.
pub(crate) fn rewrite_range(
    disk: &dyn Disk,
    range: &KeyRange,
    page_keys: usize,
    mut decide: impl FnMut(&[u8], &[u8]) -> Result<Rewrite, StoreError>,
) -> Result<(), StoreError> {
    let mut start = range.start.clone();
    loop {
        let page_range = KeyRange {
            start,
            end: range.end.clone(),
        };
        let page = disk.scan(&page_range, Order::Ascending, page_keys)?;
        let mut batch = WriteBatch::default();
        for (key, value) in &page {
            match decide(key, value)? {
                Rewrite::Keep => {}
                Rewrite::Delete => batch.delete(key.clone()),
                Rewrite::Put(new) => batch.put(key.clone(), new),
            }
        }
        if !batch.is_empty() {
            disk.write(batch)?;
        }
        match page.last() {
            Some((last, _)) if page.len() == page_keys => {
                // The smallest key after `last`.
                start = last.clone();
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// The second half of the seam: a directory of append-only files named by a number, for the
/// Raft log's segments and for the event groups' (two directories). Like `Disk`, every change is visible at once and durable only after a
/// sync; `sync` covers everything before it (file contents, lengths, creations, removals).
pub trait LogFiles: Send + Sync + 'static {
    /// The ids of the files present, ascending.
    fn list(&self) -> io::Result<Vec<u64>>;

    /// Creates an empty file; an error if it exists.
    fn create(&self, id: u64) -> io::Result<()>;

    fn len(&self, id: u64) -> io::Result<u64>;

    /// Fills `buf` from `offset`; an error if the file is shorter.
    fn read_exact_at(&self, id: u64, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// `len` bytes from `offset` in a new buffer; an error if the file is shorter. For reads
    /// whose buffer lives on (a group frame its events share): an implementation may fill it
    /// without zeroing it first, which was a tenth of a catch-up's CPU.
    fn read_vec_at(&self, id: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read_exact_at(id, offset, &mut buf)?;
        Ok(buf)
    }

    /// Writes `bytes` at `offset` (the log writes only at the end).
    fn write_at(&self, id: u64, offset: u64, bytes: &[u8]) -> io::Result<()>;

    /// Cuts the file to `len` bytes.
    fn truncate(&self, id: u64, len: u64) -> io::Result<()>;

    fn remove(&self, id: u64) -> io::Result<()>;

    /// Makes `len` bytes from `offset` read back as zeros and, where the file system can,
    /// stop taking space (a hole); the file's length is unchanged. For bytes nothing points at
    /// any more (scavenge): durable, like a write, only after a sync.
    fn discard(&self, id: u64, offset: u64, len: u64) -> io::Result<()>;

    /// Blocks until every change that returned before this call is durable.
    fn sync(&self) -> io::Result<()>;

    /// Like `sync`, but reports through `done`, possibly later and from another thread, so
    /// that concurrent log appends share one fdatasync (group commit).
    fn sync_then(&self, done: SyncCallback) {
        done(self.sync());
    }
}
