//! A store's keyspace as builds before 2026-12-07 kept it, in sled: opened only to be read
//! once, page by page, when `fjall_disk::migrate_from_sled` copies it into fjall. Nothing is
//! written to it (beyond what sled's own open does), so none of the durability work that
//! made sled's writes durable for real (sled issue 1452) is needed any more.

use std::fs::File;
use std::io;
use std::path::Path;

use super::KeyValue;

/// sled's page cache while the copy reads: small, the copy reads each page once.
const SLED_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// The segment size builds before 2026-12-07 made new stores with (sled refuses to open a
/// store with another size than its `conf` says; this is only for a `conf` that is missing).
const SLED_SEGMENT_BYTES: usize = 1024 * 1024;

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

/// An open sled keyspace being read in key order.
pub(super) struct SledSource {
    pairs: sled::Iter,
    /// Kept open for as long as `pairs` reads it.
    _db: sled::Db,
}

impl SledSource {
    /// Settles a sled rewrite a crash cut short (its copy may be all there is of the keyspace),
    /// then opens the keyspace at the top of `dir`.
    pub(super) fn open(dir: &Path) -> io::Result<SledSource> {
        settle_rewrite(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .segment_size(persisted_segment_size(dir)?.unwrap_or(SLED_SEGMENT_BYTES))
            .flush_every_ms(None)
            .open()?;
        Ok(SledSource {
            pairs: db.iter(),
            _db: db,
        })
    }

    /// The next at most `max` pairs, or `None` once every pair was read.
    pub(super) fn next_page(&mut self, max: usize) -> io::Result<Option<Vec<KeyValue>>> {
        let mut page = Vec::new();
        for pair in self.pairs.by_ref().take(max) {
            let (k, v) = pair?;
            page.push((k.to_vec(), v.to_vec()));
        }
        Ok((!page.is_empty()).then_some(page))
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
        let mut source = SledSource::open(dir.path()).expect("open");
        assert_eq!(
            source.next_page(10).expect("read"),
            Some(vec![(b"k".to_vec(), b"v".to_vec())])
        );
        let fresh = tempfile::tempdir().expect("tempdir");
        assert_eq!(persisted_segment_size(fresh.path()).expect("conf"), None);
    }
}
