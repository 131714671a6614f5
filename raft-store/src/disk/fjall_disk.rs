//! The production disk: the keyspace in fjall (an LSM tree), the log and the event groups in
//! segment files of their own beside it.
//!
//! fjall writes each batch to its journal (buffered here: `manual_journal_persist`) and to a
//! memtable; a sync is `persist(SyncData)`, which writes the journal's buffer and fdatasyncs
//! it. A crash keeps a prefix of the batches (each is checksummed in the journal; a torn tail
//! is cut at open), never half of one: the seam's promise. Memtables become sorted table files
//! in the background, each synced before the journal behind it is dropped.
//!
//! It replaced sled (2026-12-07): sled's per-key cost (a page copy per insert, a split every
//! 9 increasing keys, its I/O threads' writes behind every batch) was half of S2's CPU. Same
//! build, one switch, alternating (BENCHMARKS.md, issue 15): S2 7.4-8.6k -> 11.6-13.0k
//! appends/s, S1 858-889 -> 1,146-1,188 (p50 1.09-1.12 -> 0.81-0.84 ms), S3 +15 %.
//!
//! A store sled wrote is copied into fjall at its first open here (`migrate_from_sled`), and
//! sled's files are deleted once the copy is whole.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::flusher::Flusher;
use super::sled_disk::{is_sled_file, SledSource, SLED_REWRITE_PREFIX};
use super::{
    dir_size, Disk, FsLogFiles, KeyRange, KeyValue, LogFiles, Op, Order, SnapshotSpool,
    SyncCallback, WriteBatch,
};

/// The directory, inside the store's, that holds the Raft log's segment files.
pub const LOG_DIR: &str = "raft-log";
/// The directory, inside the store's, that holds the event groups' segment files.
pub const GROUP_DIR: &str = "event-groups";

/// The keyspace's directory, inside the store's.
pub const KEYSPACE_DIR: &str = "fjall";
/// Where a copy of the keyspace (a rewrite, or the copy of a sled store) is built.
const COPY_DIR: &str = "fjall.new";
/// Present once the copy in `COPY_DIR` is whole and synced: the old keyspace is being replaced
/// by it (an open finishes the swap).
const SWAP_MARKER: &str = "fjall.swap";
/// Held (`flock`) by the process that has the store open, for as long as it has it: nothing
/// below it (a swap to settle, a migration) is touched before it is taken.
pub const STORE_LOCK_FILE: &str = "lock";
/// The one tree every table lives in (tables are key prefixes: `keys.rs`).
const TREE: &str = "cairn";
/// fjall's block cache. Small: reads of recent keys hit the memtable, and a node must fit a
/// small container (the catch-up bench's bulk load stays under 256 MiB per node).
pub const DEFAULT_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// A memtable is sealed and written out as a table file at this size. It bounds the journal
/// replayed at open too. Fewer, larger table writes cost less than many small ones on a disk
/// three nodes share: S2 over 60 s, alternating, 8 MiB 9,974 and 10,561 appends/s (p99 19.5,
/// 16.0 ms), 32 MiB 11,397 and 11,451 (p99 13.8, 15.0 ms); 2 MiB was worse than 8 in 4 of 4
/// pairs of 8 s. Peak RSS per node 146-157 -> 172-182 MiB (S3 at most 183, catch-up 148).
pub const MEMTABLE_BYTES: u64 = 32 * 1024 * 1024;
/// Most bytes of journal kept (fjall's smallest allowed; its default is 512 MiB): past it fjall
/// writes the oldest memtables out to table files so that their journals can go. With
/// `MEMTABLE_BYTES` memtables this is reached only when table writes fall behind.
pub const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// fjall's background threads (memtable flushes, compactions). One: three nodes may share
/// two cores, and the index is small beside the event groups.
pub const WORKER_THREADS: usize = 1;
/// Pairs copied per batch when the keyspace is copied (a rewrite, a migration): bounds the
/// copy's memory.
pub const COPY_BATCH_KEYS: usize = 4_096;

/// Options for opening a fjall-backed disk.
#[derive(Debug, Clone)]
pub struct FjallOptions {
    pub cache_bytes: u64,
}

impl Default for FjallOptions {
    fn default() -> Self {
        FjallOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

fn to_io(e: fjall::Error) -> io::Error {
    match e {
        fjall::Error::Io(e) => e,
        fjall::Error::Locked => io::Error::new(
            io::ErrorKind::WouldBlock,
            "the keyspace is locked by another process",
        ),
        other => io::Error::other(other.to_string()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One open fjall keyspace. Fields drop in order: the flusher (answering what is queued)
/// before the tree and the database.
struct Keyspace {
    flusher: Flusher,
    tree: fjall::Keyspace,
    db: fjall::Database,
}

impl Keyspace {
    fn open(path: &Path, options: &FjallOptions) -> io::Result<Keyspace> {
        let db = fjall::Database::builder(path)
            .cache_size(options.cache_bytes)
            .manual_journal_persist(true)
            .worker_threads(WORKER_THREADS)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()
            .map_err(to_io)?;
        let tree = db
            .keyspace(TREE, || {
                fjall::KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(to_io)?;
        let sync_db = db.clone();
        let flusher = Flusher::start(
            "cairn-fdatasync",
            Arc::new(move || sync_db.persist(fjall::PersistMode::SyncData).map_err(to_io)),
        )?;
        Ok(Keyspace { flusher, tree, db })
    }

    fn write(&self, ops: impl IntoIterator<Item = Op>) -> io::Result<()> {
        let mut batch = self.db.batch();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(&self.tree, k, v),
                Op::Delete(k) => batch.remove(&self.tree, k),
            }
        }
        batch.commit().map_err(to_io)
    }

    fn sync_now(&self) -> io::Result<()> {
        self.flusher.sync()
    }
}

/// Builds a whole copy in `COPY_DIR` from the pages `next_page` gives (until `None`), synced
/// and closed.
fn build_copy(
    dir: &Path,
    options: &FjallOptions,
    mut next_page: impl FnMut() -> io::Result<Option<Vec<KeyValue>>>,
) -> io::Result<()> {
    let copy_dir = dir.join(COPY_DIR);
    if copy_dir.exists() {
        std::fs::remove_dir_all(&copy_dir)?;
    }
    let copy = Keyspace::open(&copy_dir, options)?;
    while let Some(page) = next_page()? {
        copy.write(page.into_iter().map(|(k, v)| Op::Put(k, v)))?;
    }
    copy.sync_now()?;
    drop(copy);
    sync_dir(&copy_dir)?;
    sync_dir(dir)
}

/// Finishes a swap a crash cut short, or drops a copy that never became whole; then
/// `KEYSPACE_DIR`, if present, is one whole keyspace.
fn settle_copy(dir: &Path) -> io::Result<()> {
    let copy_dir = dir.join(COPY_DIR);
    if dir.join(SWAP_MARKER).exists() {
        if copy_dir.exists() {
            let old = dir.join(KEYSPACE_DIR);
            if old.exists() {
                std::fs::remove_dir_all(&old)?;
                sync_dir(dir)?;
            }
            std::fs::rename(&copy_dir, &old)?;
            sync_dir(dir)?;
        }
        std::fs::remove_file(dir.join(SWAP_MARKER))?;
        sync_dir(dir)?;
    } else if copy_dir.exists() {
        std::fs::remove_dir_all(&copy_dir)?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// Marks the whole, synced copy in `COPY_DIR` as the keyspace to be: from here on an open
/// swaps it in (`settle_copy`).
fn mark_swap(dir: &Path) -> io::Result<()> {
    File::create(dir.join(SWAP_MARKER))?.sync_all()?;
    sync_dir(dir)
}

/// Whether the top of `dir` holds any of sled's files (a store written before fjall, or what
/// a migration cut short left of one).
fn has_sled_files(dir: &Path) -> io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if is_sled_file(&name) || name.starts_with(SLED_REWRITE_PREFIX) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn remove_sled_files(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_sled_file(&name) || name.starts_with(SLED_REWRITE_PREFIX) {
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    sync_dir(dir)
}

/// A store sled wrote: copies its keyspace into fjall (whole and synced before it becomes the
/// keyspace), then deletes sled's files. A crash before the swap starts the copy again; one
/// after it only deletes what is left of sled's files. The log's and the groups' files stay.
fn migrate_from_sled(dir: &Path, options: &FjallOptions) -> io::Result<()> {
    if dir.join(KEYSPACE_DIR).exists() {
        // The copy was swapped in before a crash: only sled's leftovers remain to go.
        return remove_sled_files(dir);
    }
    // Opening settles a sled rewrite a crash cut short (its copy may be all there is of the
    // keyspace, in `keyspace.new/`), so it is opened even when `db` is missing.
    tracing::info!(dir = %dir.display(), "copying a sled keyspace into fjall (once)");
    let mut sled = SledSource::open(dir)?;
    build_copy(dir, options, || sled.next_page(COPY_BATCH_KEYS))?;
    drop(sled);
    mark_swap(dir)?;
    settle_copy(dir)?;
    remove_sled_files(dir)
}

/// fjall behind the storage seam.
pub struct FjallDisk {
    dir: PathBuf,
    /// The store's lock (`STORE_LOCK_FILE`), released when the disk is dropped.
    _lock: File,
    options: FjallOptions,
    /// `None` only if a keyspace rewrite failed midway (every keyspace call then fails; the
    /// next open finishes the rewrite). A rewrite holds the write lock; calls hold the read
    /// lock, so none is lost between the copy and the swap.
    keyspace: RwLock<Option<Keyspace>>,
    log_files: Arc<FsLogFiles>,
    group_files: Arc<FsLogFiles>,
}

/// Takes the store's lock, or fails with `WouldBlock` if another process holds it.
fn lock_store(dir: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(STORE_LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "the store is locked by another process",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn closed() -> io::Error {
    io::Error::other(
        "the keyspace is closed: its rewrite failed midway (the next start finishes it)",
    )
}

impl FjallDisk {
    pub fn open(dir: impl AsRef<Path>, options: FjallOptions) -> io::Result<Arc<Self>> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let lock = lock_store(&dir)?;
        settle_copy(&dir)?;
        if has_sled_files(&dir)? {
            migrate_from_sled(&dir, &options)?;
        }
        let keyspace = Keyspace::open(&dir.join(KEYSPACE_DIR), &options)?;
        sync_dir(&dir)?;
        let log_files = FsLogFiles::open(dir.join(LOG_DIR), "cairn-log-fdatasync")?;
        let group_files = FsLogFiles::open(dir.join(GROUP_DIR), "cairn-group-fdatasync")?;
        Ok(Arc::new(FjallDisk {
            dir,
            _lock: lock,
            options,
            keyspace: RwLock::new(Some(keyspace)),
            log_files,
            group_files,
        }))
    }

    fn with<T>(&self, f: impl FnOnce(&Keyspace) -> io::Result<T>) -> io::Result<T> {
        let guard = self
            .keyspace
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_ref() {
            Some(keyspace) => f(keyspace),
            None => Err(closed()),
        }
    }
}

impl Disk for FjallDisk {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.with(|ks| Ok(ks.tree.get(key).map_err(to_io)?.map(|v| v.to_vec())))
    }

    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> io::Result<Vec<KeyValue>> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        self.with(|ks| {
            let iter = ks.tree.range(range.start.as_slice()..range.end.as_slice());
            let mut pairs = Vec::with_capacity(limit.min(1024));
            let mut push = |guard: fjall::Guard| -> io::Result<()> {
                let (k, v) = guard.into_inner().map_err(to_io)?;
                pairs.push((k.to_vec(), v.to_vec()));
                Ok(())
            };
            match order {
                Order::Ascending => {
                    for guard in iter.take(limit) {
                        push(guard)?;
                    }
                }
                Order::Descending => {
                    for guard in iter.rev().take(limit) {
                        push(guard)?;
                    }
                }
            }
            Ok(pairs)
        })
    }

    fn write(&self, batch: WriteBatch) -> io::Result<()> {
        self.with(|ks| ks.write(batch.ops))
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|ks| ks.sync_now())
    }

    fn sync_then(&self, done: SyncCallback) {
        let guard = self
            .keyspace
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_ref() {
            Some(keyspace) => keyspace.flusher.sync_then(done),
            None => done(Err(closed())),
        }
    }

    fn log_files(&self) -> Arc<dyn LogFiles> {
        self.log_files.clone()
    }

    fn group_files(&self) -> Arc<dyn LogFiles> {
        self.group_files.clone()
    }

    fn snapshot_spool(&self) -> io::Result<SnapshotSpool> {
        // An unnamed file in the data directory: it vanishes when dropped, even after a crash.
        Ok(SnapshotSpool::File(tempfile::tempfile_in(&self.dir)?))
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        dir_size(&self.dir)
    }

    /// Copies the live pairs into `keyspace.new/` and syncs it; marks the swap durably; closes
    /// the old keyspace and deletes its directory (an LSM tree keeps old versions of a key in
    /// its journal and table files until a compaction happens to drop them); moves the copy in;
    /// opens it. A crash after the mark is finished by the next open (`settle_copy`), one
    /// before it drops the copy.
    fn rewrite_keyspace(&self) -> io::Result<()> {
        let mut guard = self
            .keyspace
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(old) = guard.as_ref() else {
            return Err(closed());
        };
        // Everything accepted so far goes into the copy; sync the old one too, so that a
        // crash before the swap keeps what callers were told is durable.
        old.sync_now()?;
        let mut pairs = old.tree.iter();
        build_copy(&self.dir, &self.options, || {
            let mut page = Vec::new();
            for guard in pairs.by_ref().take(COPY_BATCH_KEYS) {
                let (k, v) = guard.into_inner().map_err(to_io)?;
                page.push((k.to_vec(), v.to_vec()));
            }
            Ok((!page.is_empty()).then_some(page))
        })?;
        drop(pairs);
        mark_swap(&self.dir)?;
        drop(guard.take());
        settle_copy(&self.dir)?;
        *guard = Some(Keyspace::open(&self.dir.join(KEYSPACE_DIR), &self.options)?);
        Ok(())
    }
}
