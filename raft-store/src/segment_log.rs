//! The Raft log in append-only segment files of its own, beside the keyspace rather than in it.
//!
//! Each entry is one frame (`frame`) keyed by its index, the postcard-encoded entry its
//! payload, in a directory of `Layout::Keyed` segment files (`segment_file`: a segment is
//! named by its first entry, rolled at `SEGMENT_BYTES`, synced before the next one exists;
//! at open every frame is checked and everything from the first torn, damaged or misplaced
//! one is cut, which `log_store` judges: a torn write, or damage to repair from the leader). This module adds what is the log's
//! own: the last entry's id, the purge point below which entries are hidden, and reads that
//! plan byte ranges under the lock and read them without it. The start of each frame is kept
//! in memory (8 bytes per entry still in the log, which snapshots keep short).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::codec::decode;
use crate::disk::{LogFiles, SyncCallback};
use crate::error::StoreError;
use crate::raft_types::{Entry, LogId};
use crate::segment_file::{frame_under, Cut, Layout, SegmentFiles};

/// A segment that reaches this size is closed and the next entry starts a new one.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

struct Index {
    /// The segments, keyed by entry index (`Layout::Keyed`).
    segments: SegmentFiles,
    last: Option<LogId>,
    /// Entries below this are purged, even where their segment remains.
    first_visible: u64,
    /// Purged entries below this have been zeroed where their segment remains
    /// (`scrub_purged`); 0 after an open, so the first scrub zeroes again what an earlier
    /// process may already have zeroed.
    scrubbed_below: u64,
}

/// The Raft log's entries. Shared by every clone of the log store.
pub struct SegmentLog {
    /// The same files as `index.segments`', read and synced without the lock.
    files: Arc<dyn LogFiles>,
    index: Mutex<Index>,
    /// What the open scan cut (a torn write, or damage: `log_store` tells them apart).
    cut: Option<Cut>,
}

/// One contiguous byte range of a segment to read: frames of entries from `first` on.
struct Span {
    segment: u64,
    from: u64,
    to: u64,
    first: u64,
}

fn corrupt(detail: String) -> StoreError {
    StoreError::corrupt("log segment", detail)
}

impl SegmentLog {
    /// Opens the log in `files`, checking every frame and cutting everything from the first
    /// frame that is torn, damaged or out of place (`cut` says what went).
    pub fn open(files: Arc<dyn LogFiles>) -> Result<SegmentLog, StoreError> {
        Self::open_with_segment_bytes(files, SEGMENT_BYTES)
    }

    fn open_with_segment_bytes(
        files: Arc<dyn LogFiles>,
        segment_bytes: u64,
    ) -> Result<SegmentLog, StoreError> {
        let segments =
            SegmentFiles::open(files.clone(), Layout::Keyed, segment_bytes, "log segment")?;
        let log = SegmentLog {
            files,
            cut: segments.cut().cloned(),
            index: Mutex::new(Index {
                segments,
                last: None,
                first_visible: 0,
                scrubbed_below: 0,
            }),
        };
        let last = log.read_last()?;
        log.lock().last = last;
        Ok(log)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_last(&self) -> Result<Option<LogId>, StoreError> {
        let next = self.lock().segments.last().map(|s| s.next_key());
        match next {
            Some(next) => {
                let entries = self.read(next - 1, next, 1, usize::MAX)?;
                Ok(entries.last().map(|e| e.log_id))
            }
            None => Ok(None),
        }
    }

    /// What the open cut, if anything.
    pub fn cut(&self) -> Option<&Cut> {
        self.cut.as_ref()
    }

    /// The last entry's id, if the log holds any.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.lock().last
    }

    /// Writes `entries` (consecutive, after the last entry; a gap starts a new segment).
    /// Readable at once; durable after the next sync.
    pub fn append(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        let mut index = self.lock();
        let mut writer = index.segments.writer();
        let mut last = index.last;
        for entry in entries {
            // The frame's key is the entry's index; `read` checks it.
            writer.push(entry.log_id.index, &entry, "encode log entry")?;
            last = Some(entry.log_id);
        }
        index.segments.write(&mut writer)?;
        index.last = last;
        Ok(())
    }

    /// The entries the log holds with index in `[start, end)`, from the first one held,
    /// stopping at `max_entries` / `max_bytes` (but always returning the first entry found).
    pub fn read(
        &self,
        start: u64,
        end: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        // Plan under the lock: which byte ranges of which segments; read without it.
        let mut plan: Vec<Span> = Vec::new();
        {
            let index = self.lock();
            let mut next = start.max(index.first_visible);
            let mut entries = 0usize;
            let mut bytes = 0usize;
            for segment in index.segments.range(..end) {
                if segment.next_key() <= next {
                    continue;
                }
                // Skip a gap between segments (see `append`).
                next = next.max(segment.id);
                let first = next;
                let (from, _) = segment.frame_range(first);
                let mut to = from;
                let mut full = false;
                while next < end && next < segment.next_key() {
                    let (_, frame_end) = segment.frame_range(next);
                    let frame_bytes = (frame_end - to) as usize;
                    if entries >= max_entries || (entries > 0 && bytes + frame_bytes > max_bytes) {
                        full = true;
                        break;
                    }
                    bytes += frame_bytes;
                    entries += 1;
                    to = frame_end;
                    next += 1;
                }
                if to > from {
                    plan.push(Span {
                        segment: segment.id,
                        from,
                        to,
                        first,
                    });
                }
                if full || next >= end {
                    break;
                }
            }
        }
        let mut entries = Vec::new();
        for Span {
            segment,
            from,
            to,
            first,
        } in plan
        {
            let mut bytes = vec![0u8; (to - from) as usize];
            self.files.read_exact_at(segment, from, &mut bytes)?;
            let mut at = 0usize;
            let mut expected = first;
            while at < bytes.len() {
                let (h, payload) = frame_under(&bytes[at..], expected).ok_or_else(|| {
                    corrupt(format!(
                        "segment {segment}: entry {expected} does not read back"
                    ))
                })?;
                entries.push(decode("log entry", payload)?);
                expected += 1;
                at += h.frame_bytes() as usize;
            }
        }
        Ok(entries)
    }

    /// Removes entries from `from` on. Durable after the next sync.
    pub fn truncate(&self, from: u64) -> Result<(), StoreError> {
        self.lock().segments.truncate(from)?;
        let last = self.read_last()?;
        self.lock().last = last;
        Ok(())
    }

    /// Deletes every segment whose entries are all at or below `upto`. Entries at or below it
    /// in a segment that also holds later ones stay until that segment goes; the caller records
    /// the purge point and never asks for them.
    pub fn purge(&self, upto: u64) -> Result<(), StoreError> {
        let mut index = self.lock();
        index.first_visible = index.first_visible.max(upto.saturating_add(1));
        index.segments.purge(upto.saturating_add(1))?;
        if index.segments.last().is_none() {
            index.last = None;
        }
        Ok(())
    }

    /// Zeroes the purged entries that remain in a segment holding later ones (`purge` leaves
    /// them until that segment goes), then syncs: after this no byte of a purged entry is in
    /// the files (an erase relies on it). Returns the entries zeroed.
    pub fn scrub_purged(&self) -> Result<u64, StoreError> {
        let (zeroed, below) = {
            let index = self.lock();
            let below = index.first_visible;
            if index.scrubbed_below >= below {
                return Ok(0);
            }
            (
                index.segments.zero_frames(index.scrubbed_below, below)?,
                below,
            )
        };
        self.files.sync()?;
        let mut index = self.lock();
        index.scrubbed_below = index.scrubbed_below.max(below);
        Ok(zeroed)
    }

    /// Removes every segment (before a migration rewrites the log), then syncs.
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut index = self.lock();
        index.segments.truncate(0)?;
        index.last = None;
        index.first_visible = 0;
        index.scrubbed_below = 0;
        self.files.sync()?;
        Ok(())
    }

    /// Makes everything written so far durable, then calls `done`.
    pub fn sync_then(&self, done: SyncCallback) {
        self.files.sync_then(done);
    }

    pub fn sync(&self) -> Result<(), StoreError> {
        Ok(self.files.sync()?)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::disk::MemLogFiles;
    use crate::frame::{self, FRAME_HEADER_BYTES};
    use crate::raft_types::EntryPayload;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: crate::raft_types::log_id(1, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    /// A log whose segments roll every few entries (a blank entry's frame is ~20 bytes).
    fn small_log(files: &Arc<MemLogFiles>) -> SegmentLog {
        SegmentLog::open_with_segment_bytes(files.clone(), 64).expect("open")
    }

    fn all(log: &SegmentLog) -> Vec<u64> {
        indexes(&log.read(0, u64::MAX, usize::MAX, usize::MAX).expect("read"))
    }

    #[test]
    fn entries_read_back_across_segments_and_after_reopening() {
        let files = Arc::new(MemLogFiles::default());
        let log = small_log(&files);
        log.append((1..=10).map(entry)).unwrap();
        log.append((11..=25).map(entry)).unwrap();
        log.sync().unwrap();
        assert!(files.list().unwrap().len() > 3, "segments rolled");
        assert_eq!(all(&log), (1..=25).collect::<Vec<_>>());
        assert_eq!(
            indexes(&log.read(7, 19, usize::MAX, usize::MAX).unwrap()),
            (7..19).collect::<Vec<_>>()
        );
        assert_eq!(log.read(7, 19, 5, usize::MAX).unwrap().len(), 5);
        assert_eq!(
            indexes(&log.read(2, 26, 12, usize::MAX).unwrap()),
            (2..14).collect::<Vec<_>>(),
            "a limit that ends in a later segment"
        );
        assert_eq!(
            log.read(7, 19, usize::MAX, 1).unwrap().len(),
            1,
            "at least one entry"
        );
        let reopened = small_log(&files);
        assert_eq!(all(&reopened), (1..=25).collect::<Vec<_>>());
        assert_eq!(reopened.last_log_id().map(|l| l.index), Some(25));
        assert!(
            reopened.append([entry(27)]).is_ok(),
            "a gap starts a segment"
        );
        assert!(
            reopened.append([entry(20)]).is_err(),
            "no overwrite without truncate"
        );
    }

    #[test]
    fn a_torn_last_write_is_cut_at_any_byte_and_nothing_durable_is_lost() {
        let frame_bytes = {
            let mut buf = Vec::new();
            frame::push(&mut buf, 6, &entry(6), "test").unwrap();
            buf.len()
        };
        for torn in 0..=frame_bytes {
            let files = Arc::new(MemLogFiles::default());
            let log = SegmentLog::open(files.clone()).unwrap();
            log.append((1..=5).map(entry)).unwrap();
            log.sync().unwrap();
            log.append([entry(6)]).unwrap();
            files.crash(0, torn);
            let log = SegmentLog::open(files.clone()).unwrap();
            let expected: Vec<u64> = if torn == frame_bytes {
                (1..=6).collect()
            } else {
                (1..=5).collect()
            };
            assert_eq!(all(&log), expected, "torn after {torn} bytes");
            log.append([entry(*expected.last().unwrap() + 1)]).unwrap();
            log.sync().unwrap();
            assert_eq!(
                all(&SegmentLog::open(files.clone()).unwrap()).len(),
                expected.len() + 1
            );
        }
    }

    #[test]
    fn a_damaged_frame_anywhere_is_cut_at_open_with_everything_after_it() {
        let files = Arc::new(MemLogFiles::default());
        let log = small_log(&files);
        log.append((1..=12).map(entry)).unwrap();
        log.sync().unwrap();
        let segments = files.list().unwrap();
        assert!(segments.len() > 2);
        // A damaged payload in the second segment: the log keeps the entries before it.
        let second = segments[1];
        files
            .write_at(second, FRAME_HEADER_BYTES as u64 + 1, &[0xff])
            .unwrap();
        let log = small_log(&files);
        assert_eq!(all(&log), (1..second).collect::<Vec<_>>());
        assert_eq!(log.last_log_id().map(|l| l.index), Some(second - 1));
        let cut = log.cut().expect("a cut");
        assert_eq!((cut.key, cut.highest_whole_key), (second, Some(12)));
        // Appending goes on from there (the leader sends the rest).
        log.append((second..=12).map(entry)).unwrap();
        assert_eq!(all(&log), (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn truncate_and_purge_work_on_whole_and_partial_segments() {
        let files = Arc::new(MemLogFiles::default());
        let log = small_log(&files);
        log.append((1..=30).map(entry)).unwrap();
        let segments_before = files.list().unwrap().len();
        log.truncate(17).unwrap();
        assert_eq!(all(&log), (1..=16).collect::<Vec<_>>());
        assert_eq!(log.last_log_id().map(|l| l.index), Some(16));
        log.append((17..=20).map(entry)).unwrap();
        log.purge(9).unwrap();
        assert_eq!(
            all(&log),
            (10..=20).collect::<Vec<_>>(),
            "purged entries are not read"
        );
        assert!(files.list().unwrap().len() < segments_before);
        log.sync().unwrap();
        // Reopened, the caller re-applies its purge point; the entries are the same.
        let reopened = small_log(&files);
        reopened.purge(9).unwrap();
        assert_eq!(all(&reopened), (10..=20).collect::<Vec<_>>());
        // Purging past the end empties the log; the next append may start anywhere after it.
        reopened.purge(40).unwrap();
        assert!(files.list().unwrap().is_empty());
        assert_eq!(reopened.last_log_id(), None);
        reopened.append((41..=43).map(entry)).unwrap();
        assert_eq!(all(&reopened), vec![41, 42, 43]);
    }

    #[test]
    fn scrubbing_zeroes_purged_entries_in_a_kept_segment_and_the_log_reopens_whole() {
        let files = Arc::new(MemLogFiles::default());
        let log = SegmentLog::open_with_segment_bytes(files.clone(), 1 << 20).expect("open");
        log.append((1..=20).map(entry)).unwrap();
        log.purge(12).unwrap();
        assert_eq!(files.list().unwrap().len(), 1, "the one segment is kept");
        assert_eq!(log.scrub_purged().unwrap(), 12);
        assert_eq!(log.scrub_purged().unwrap(), 0, "done once");
        let segment = files.list().unwrap()[0];
        let mut bytes = vec![0u8; files.len(segment).unwrap() as usize];
        files.read_exact_at(segment, 0, &mut bytes).unwrap();
        let mut at = 0;
        for key in 1..=20u64 {
            let (header, payload) = frame::parse(&bytes[at..]).expect("a valid frame");
            assert_eq!(header.key, key);
            assert_eq!(payload.iter().all(|&b| b == 0), key <= 12, "entry {key}");
            at += FRAME_HEADER_BYTES + payload.len();
        }
        let reopened = SegmentLog::open_with_segment_bytes(files.clone(), 1 << 20).expect("open");
        assert!(reopened.cut().is_none(), "zeroed frames are no damage");
        reopened.purge(12).unwrap();
        assert_eq!(all(&reopened), (13..=20).collect::<Vec<_>>());
    }
}
