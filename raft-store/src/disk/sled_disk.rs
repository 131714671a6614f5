//! The keyspace as builds before 2026-12-07 kept it: sled, made durable for real. Now only
//! opened to copy a store it wrote into fjall (`fjall_disk::migrate_from_sled`); the notes
//! below are why it was written as it is.
//!
//! sled's `flush` writes its buffers with `pwrite` and then calls `sync_file_range`, which
//! starts and waits for writeback of those pages but does not flush the drive's cache or the
//! file's metadata (sled issue 1452). So after `flush` we call `fdatasync` on our own handle to
//! sled's `db` file (fsync acts on the inode, whichever descriptor is used). Pages too large
//! for a quarter of a log segment are written by sled to files under `blobs/` without any sync
//! at all; when a write may have produced one (a large value, alone or with its page-mates),
//! the next sync also fdatasyncs each new blob file and fsyncs the `blobs` directory.
//!
//! Syncs go through one flusher thread that drains every waiting request before each
//! fdatasync. The Raft log and the event groups are not in sled: they live in segment files
//! of their own under `raft-log/` and `event-groups/` (`FsLogFiles`), which sled ignores.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};

use super::flusher::Flusher;
use super::{
    dir_size, Disk, FsLogFiles, KeyRange, KeyValue, LogFiles, Op, Order, SnapshotSpool,
    SyncCallback, WriteBatch,
};

/// Default size of sled's page cache. sled's own default (1 GiB) would let one node's RSS grow
/// far past what a small container has, and sled's accounting undercounts what its cached
/// nodes take (about 4x here). With only indexes left in sled (the groups are in files of
/// their own), 8 MiB costs no throughput and bounds memory (engine bench, 3M events in
/// 1,000-event appends: peak RSS 241 MiB at 64 MiB with 8 MiB segments, 73 MiB at 8 MiB with
/// 1 MiB segments; 10M events: 142 MiB).
pub const DEFAULT_SLED_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// sled's log segment size for a new store (an existing one keeps the size it was made with:
/// sled refuses to open it with another). sled stores any page larger than a quarter of a
/// segment as a separate blob file; when whole event groups lived in sled, 8 MiB kept their
/// leaves inline. With only indexes left (leaves of at most 17 id buckets of 4 KiB), 1 MiB
/// is enough, and sled keeps several segment-sized write buffers in memory (4 x 8 MiB seen).
pub const SLED_SEGMENT_BYTES: usize = 1024 * 1024;
/// Pages larger than this become blob files (in a store made with `SLED_SEGMENT_BYTES`; one
/// made with larger segments makes blobs only of larger pages, so the risk below is
/// overestimated there, never missed).
const SLED_BLOB_PAGE_BYTES: usize = SLED_SEGMENT_BYTES / 4;
/// sled splits a leaf once it holds more than 16 items, so a page holds at most 17.
const SLED_MAX_ITEMS_PER_PAGE: usize = 17;
/// A write with a value at least this large may turn its page into a blob file, which sled
/// never syncs: the next sync must then sync `blobs/`. Half the even share, to leave room for
/// keys and headers.
const BLOB_RISK_VALUE_BYTES: usize = SLED_BLOB_PAGE_BYTES / SLED_MAX_ITEMS_PER_PAGE / 2;
/// The directory, inside sled's, that holds the Raft log's segment files.
pub const LOG_DIR: &str = "raft-log";
/// The directory, inside sled's, that holds the event groups' segment files.
pub const GROUP_DIR: &str = "event-groups";

/// Options for opening a sled-backed disk.
#[derive(Debug, Clone)]
pub struct SledOptions {
    pub cache_capacity_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_capacity_bytes: DEFAULT_SLED_CACHE_BYTES,
        }
    }
}

/// Makes everything sled has accepted durable.
struct Durability {
    db: sled::Db,
    db_file: File,
    blob_dir: PathBuf,
    /// Set when a write may have produced a blob file since the last sync.
    blobs_dirty: AtomicBool,
    /// Blob files already fdatasynced (pruned to the files that still exist).
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Durability {
    fn sync(&self) -> io::Result<()> {
        self.db.flush()?;
        self.db_file.sync_data()?;
        if self.blobs_dirty.swap(false, AtomicOrdering::AcqRel) {
            if let Err(e) = self.sync_new_blobs() {
                self.blobs_dirty.store(true, AtomicOrdering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    fn sync_new_blobs(&self) -> io::Result<()> {
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut present = HashSet::new();
        for entry in std::fs::read_dir(&self.blob_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_data()?,
                    // sled removed it meanwhile: nothing to make durable.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            present.insert(name);
        }
        sync_dir(&self.blob_dir)?;
        *synced = present;
        Ok(())
    }
}

/// The segment size an existing sled store was made with (sled writes it to `conf` as
/// `segment_size: N`, then a binary checksum), or `None` for a new store.
fn persisted_segment_size(dir: &Path) -> io::Result<Option<usize>> {
    let conf = match std::fs::read(dir.join("conf")) {
        Ok(conf) => conf,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|n| n.trim().parse().ok()))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One open sled keyspace and what makes it durable. Fields drop in order: the flusher
/// (answering what is queued) before the last handles on the db.
struct Keyspace {
    flusher: Flusher,
    durability: Arc<Durability>,
    db: sled::Db,
}

impl Keyspace {
    fn open(dir: &Path, options: &SledOptions) -> io::Result<Keyspace> {
        std::fs::create_dir_all(dir)?;
        let segment_size = persisted_segment_size(dir)?.unwrap_or(SLED_SEGMENT_BYTES);
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity_bytes)
            .segment_size(segment_size)
            // We flush ourselves, right before each fdatasync.
            .flush_every_ms(None)
            .open()?;
        let db_file = File::open(dir.join("db"))?;
        let blob_dir = dir.join("blobs");
        // Make the files sled just created (and their names) durable before anything relies on
        // them.
        db_file.sync_all()?;
        sync_dir(&blob_dir)?;
        sync_dir(dir)?;
        let durability = Arc::new(Durability {
            db: db.clone(),
            db_file,
            blob_dir,
            blobs_dirty: AtomicBool::new(true),
            synced_blobs: Mutex::new(HashSet::new()),
        });
        let flusher_durability = durability.clone();
        let flusher = Flusher::start(
            "cairn-fdatasync",
            Arc::new(move || flusher_durability.sync()),
        )?;
        Ok(Keyspace {
            flusher,
            durability,
            db,
        })
    }
}

/// Where a rewrite builds the new keyspace, inside the store's directory.
const REWRITE_DIR: &str = "keyspace.new";
/// Present once the new keyspace is whole and synced: the old sled files at the top of the
/// store's directory are being deleted (an open deletes what is left, then moves the new in).
const SWAP_DELETING: &str = "keyspace.swap";
/// Present once the old sled files are gone: the new ones are being moved to the top.
const SWAP_MOVING: &str = "keyspace.move";

/// What every name a sled rewrite leaves at the top of the store's directory starts with.
pub(super) const SLED_REWRITE_PREFIX: &str = "keyspace.";

/// Whether `name`, at the top of the store's directory, is one of sled's own files.
pub(super) fn is_sled_file(name: &str) -> bool {
    matches!(name, "db" | "conf" | "blobs") || name.starts_with("snap.")
}

/// Finishes or drops a keyspace rewrite a crash cut short; then sled's files at the top of
/// `dir` are one whole keyspace (the old or the new).
fn settle_rewrite(dir: &Path) -> io::Result<()> {
    if dir.join(SWAP_DELETING).exists() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if is_sled_file(&name.to_string_lossy()) {
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
        sync_dir(dir)?;
        std::fs::rename(dir.join(SWAP_DELETING), dir.join(SWAP_MOVING))?;
        sync_dir(dir)?;
    }
    if dir.join(SWAP_MOVING).exists() {
        let new = dir.join(REWRITE_DIR);
        if new.exists() {
            for entry in std::fs::read_dir(&new)? {
                let entry = entry?;
                if is_sled_file(&entry.file_name().to_string_lossy()) {
                    std::fs::rename(entry.path(), dir.join(entry.file_name()))?;
                }
            }
            sync_dir(dir)?;
            std::fs::remove_dir_all(&new)?;
        }
        std::fs::remove_file(dir.join(SWAP_MOVING))?;
        sync_dir(dir)?;
    } else if dir.join(REWRITE_DIR).exists() {
        // A rewrite that never became whole: the old keyspace is still the one.
        std::fs::remove_dir_all(dir.join(REWRITE_DIR))?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// sled behind the storage seam.
pub struct SledDisk {
    dir: PathBuf,
    /// `None` only if a keyspace rewrite failed midway (every keyspace call then fails; the
    /// next open finishes the rewrite). A rewrite holds the write lock; calls hold the read
    /// lock, so none is lost between the copy and the swap.
    keyspace: RwLock<Option<Keyspace>>,
    log_files: Arc<FsLogFiles>,
    group_files: Arc<FsLogFiles>,
}

fn closed() -> io::Error {
    io::Error::other(
        "the keyspace is closed: its rewrite failed midway (the next start finishes it)",
    )
}

impl SledDisk {
    pub fn open(dir: impl AsRef<Path>, options: SledOptions) -> io::Result<Arc<Self>> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        settle_rewrite(&dir)?;
        let keyspace = Keyspace::open(&dir, &options)?;
        let log_files = FsLogFiles::open(dir.join(LOG_DIR), "cairn-log-fdatasync")?;
        let group_files = FsLogFiles::open(dir.join(GROUP_DIR), "cairn-group-fdatasync")?;
        Ok(Arc::new(SledDisk {
            dir,
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

impl Disk for SledDisk {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.with(|ks| Ok(ks.db.get(key)?.map(|v| v.to_vec())))
    }

    fn scan(&self, range: &KeyRange, order: Order, limit: usize) -> io::Result<Vec<KeyValue>> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        self.with(|ks| {
            let iter = ks.db.range(range.start.as_slice()..range.end.as_slice());
            let mut pairs = Vec::with_capacity(limit.min(1024));
            let mut push = |item: sled::Result<(sled::IVec, sled::IVec)>| -> io::Result<()> {
                let (k, v) = item?;
                pairs.push((k.to_vec(), v.to_vec()));
                Ok(())
            };
            match order {
                Order::Ascending => {
                    for item in iter.take(limit) {
                        push(item)?;
                    }
                }
                Order::Descending => {
                    for item in iter.rev().take(limit) {
                        push(item)?;
                    }
                }
            }
            Ok(pairs)
        })
    }

    fn write(&self, batch: WriteBatch) -> io::Result<()> {
        let mut sled_batch = sled::Batch::default();
        let mut large = false;
        for op in batch.ops {
            match op {
                Op::Put(k, v) => {
                    large |= v.len() >= BLOB_RISK_VALUE_BYTES;
                    sled_batch.insert(k, v);
                }
                Op::Delete(k) => sled_batch.remove(k),
            }
        }
        self.with(|ks| {
            if large {
                ks.durability
                    .blobs_dirty
                    .store(true, AtomicOrdering::Release);
            }
            ks.db.apply_batch(sled_batch)?;
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|ks| ks.flusher.sync())
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_made_with_other_sled_segments_still_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::Config::new()
                .path(dir.path())
                .segment_size(8 * 1024 * 1024)
                .open()
                .expect("sled");
            db.insert(b"k", b"v".to_vec()).expect("insert");
            db.flush().expect("flush");
        }
        assert_eq!(
            persisted_segment_size(dir.path()).expect("conf"),
            Some(8 * 1024 * 1024)
        );
        let disk = SledDisk::open(dir.path(), SledOptions::default()).expect("open");
        assert_eq!(disk.get(b"k").expect("get"), Some(b"v".to_vec()));
        let fresh = tempfile::tempdir().expect("tempdir");
        assert_eq!(persisted_segment_size(fresh.path()).expect("conf"), None);
    }
}
