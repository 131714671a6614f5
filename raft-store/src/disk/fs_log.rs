//! Segment files (the Raft log's, the event groups') on a real file system.
//!
//! Files are `<id>.seg` in one directory, each kept open. A sync fdatasyncs every file changed
//! since the last sync, then the directory if a file was created or removed (so the names are
//! durable too). Syncs go through a flusher thread, so concurrent appends share them.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::flusher::Flusher;
use super::{LogFiles, SyncCallback};

const SUFFIX: &str = ".seg";

/// What the next sync must make durable.
#[derive(Default)]
struct Dirty {
    files: BTreeMap<u64, Arc<File>>,
    dir: bool,
}

struct Shared {
    dir: PathBuf,
    open: Mutex<BTreeMap<u64, Arc<File>>>,
    dirty: Mutex<Dirty>,
    /// Held through a whole sync: a sync that started later must not return while an earlier
    /// one is still syncing files it took from `dirty`.
    syncing: Mutex<()>,
}

/// A directory of segment files.
pub struct FsLogFiles {
    shared: Arc<Shared>,
    flusher: Flusher,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(id: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("log segment {id} does not exist"),
    )
}

impl Shared {
    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}{SUFFIX}"))
    }

    fn file(&self, id: u64) -> io::Result<Arc<File>> {
        lock(&self.open)
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    fn sync(&self) -> io::Result<()> {
        let _one_at_a_time = lock(&self.syncing);
        let dirty = std::mem::take(&mut *lock(&self.dirty));
        let result = (|| {
            for file in dirty.files.values() {
                file.sync_data()?;
            }
            if dirty.dir {
                sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            // Nothing of this group is known durable: the next sync tries all of it again.
            let mut now = lock(&self.dirty);
            now.dir |= dirty.dir;
            for (id, file) in dirty.files {
                now.files.entry(id).or_insert(file);
            }
        }
        result
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FsLogFiles {
    /// Opens (creating it if needed) the directory and every segment file in it; its syncs run
    /// on a thread named `flusher_name`.
    pub fn open(dir: impl AsRef<Path>, flusher_name: &str) -> io::Result<Arc<Self>> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let mut open = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(&name))?;
            open.insert(id, Arc::new(file));
        }
        let shared = Arc::new(Shared {
            dir,
            open: Mutex::new(open),
            dirty: Mutex::new(Dirty::default()),
            syncing: Mutex::new(()),
        });
        let flusher_shared = shared.clone();
        let flusher = Flusher::start(flusher_name, Arc::new(move || flusher_shared.sync()))?;
        Ok(Arc::new(FsLogFiles { shared, flusher }))
    }
}

impl LogFiles for FsLogFiles {
    fn list(&self) -> io::Result<Vec<u64>> {
        Ok(lock(&self.shared.open).keys().copied().collect())
    }

    fn create(&self, id: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.shared.path(id))?;
        let file = Arc::new(file);
        lock(&self.shared.open).insert(id, file.clone());
        let mut dirty = lock(&self.shared.dirty);
        dirty.dir = true;
        dirty.files.insert(id, file);
        Ok(())
    }

    fn len(&self, id: u64) -> io::Result<u64> {
        Ok(self.shared.file(id)?.metadata()?.len())
    }

    fn read_exact_at(&self, id: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.shared.file(id)?.read_exact_at(buf, offset)
    }

    fn read_vec_at(&self, id: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let file = self.shared.file(id)?;
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        while buf.len() < len {
            let at = offset + buf.len() as u64;
            let at = libc::off_t::try_from(at)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let want = len - buf.len();
            let spare = &mut buf.spare_capacity_mut()[..want];
            // SAFETY: pread writes at most `spare.len()` bytes into `spare`, memory this
            // buffer owns, on a descriptor this `File` keeps open for the call.
            let read = unsafe {
                libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at)
            };
            match read {
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                n if n < 0 => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
                // SAFETY: the kernel wrote these `n` bytes just past the initialised ones.
                n => unsafe { buf.set_len(buf.len() + n as usize) },
            }
        }
        Ok(buf)
    }

    fn write_at(&self, id: u64, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let file = self.shared.file(id)?;
        file.write_all_at(bytes, offset)?;
        lock(&self.shared.dirty).files.insert(id, file);
        Ok(())
    }

    fn truncate(&self, id: u64, len: u64) -> io::Result<()> {
        let file = self.shared.file(id)?;
        file.set_len(len)?;
        lock(&self.shared.dirty).files.insert(id, file);
        Ok(())
    }

    fn remove(&self, id: u64) -> io::Result<()> {
        if lock(&self.shared.open).remove(&id).is_none() {
            return Err(not_found(id));
        }
        std::fs::remove_file(self.shared.path(id))?;
        let mut dirty = lock(&self.shared.dirty);
        dirty.files.remove(&id);
        dirty.dir = true;
        Ok(())
    }

    /// A hole punched with `fallocate(PUNCH_HOLE | KEEP_SIZE)`: the file system zeroes the
    /// partial blocks at either end and frees the whole ones between. Where it cannot punch
    /// (EOPNOTSUPP), zeros are written instead: the bytes are gone, the space is not freed.
    fn discard(&self, id: u64, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let file = self.shared.file(id)?;
        if offset.saturating_add(len) > file.metadata()?.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let (Ok(at), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate on a descriptor this `File` owns and keeps open for the call.
        let punched = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                at,
                n,
            )
        };
        if punched != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(error);
            }
            const ZEROS_BYTES: usize = 64 * 1024;
            let zeros = [0u8; ZEROS_BYTES];
            let mut done = 0u64;
            while done < len {
                let step = (len - done).min(ZEROS_BYTES as u64) as usize;
                file.write_all_at(&zeros[..step], offset + done)?;
                done += step as u64;
            }
        }
        lock(&self.shared.dirty).files.insert(id, file);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.flusher.sync()
    }

    fn sync_then(&self, done: SyncCallback) {
        self.flusher.sync_then(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_into_a_new_buffer_gives_the_bytes_written_and_refuses_past_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = FsLogFiles::open(dir.path(), "test-fdatasync").expect("open");
        files.create(7).expect("create");
        let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        files.write_at(7, 0, &bytes).expect("write");
        assert_eq!(files.read_vec_at(7, 0, bytes.len()).expect("read"), bytes);
        assert_eq!(
            files.read_vec_at(7, 99_990, 10).expect("read the tail"),
            bytes[99_990..]
        );
        assert_eq!(files.read_vec_at(7, 5, 0).expect("read nothing"), b"");
        let past = files.read_vec_at(7, 99_990, 11).expect_err("past the end");
        assert_eq!(past.kind(), io::ErrorKind::UnexpectedEof);
        assert!(files.read_vec_at(8, 0, 1).is_err(), "no such file");
    }
}
