//! The Raft log in append-only segment files of its own, beside sled rather than in it.
//!
//! Each entry is one frame (`frame`) keyed by its index, the postcard-encoded entry its
//! payload. A segment is named by the index of its
//! first entry and is rolled once it passes `SEGMENT_BYTES`; the previous segment is synced
//! before the next one is created, so only the last segment can end in a torn write. Purging
//! deletes whole segments; truncation cuts the segment that holds the first removed entry and
//! deletes the ones after it. An index of where each frame starts is kept in memory (8 bytes per
//! entry still in the log, which snapshots keep short).
//!
//! On open every frame header is checked, and every payload of the last segment (reads check
//! the others' checksums when they load them). A bad frame at the end of the last segment is a write that
//! a crash cut short (it was never reported durable): the segment is cut there. A bad frame
//! anywhere else, a segment not named by its first entry, or segments that overlap are
//! corruption, and opening fails rather than serve a damaged log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::codec::decode;
use crate::disk::{LogFiles, SyncCallback};
use crate::error::StoreError;
use crate::frame::{self, Header, FRAME_HEADER_BYTES};
use crate::raft_types::{Entry, LogId};

/// A segment that reaches this size is closed and the next entry starts a new one.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// A frame claiming a longer payload is not a frame (an entry is bounded far below this by
/// the append limits): at the end of the last segment a torn write, elsewhere corruption.
pub const MAX_FRAME_PAYLOAD_BYTES: u64 = 256 * 1024 * 1024;

struct Segment {
    /// Index of the first entry (also the file's id).
    first: u64,
    /// Where each entry's frame starts.
    starts: Vec<u64>,
    /// Bytes in use (the file may be longer only while a torn write is being cut).
    end: u64,
}

impl Segment {
    /// Index after the last entry.
    fn next(&self) -> u64 {
        self.first + self.starts.len() as u64
    }

    /// The byte range of entry `index`'s frame.
    fn frame(&self, index: u64) -> (u64, u64) {
        let i = (index - self.first) as usize;
        let start = self.starts[i];
        let end = self.starts.get(i + 1).copied().unwrap_or(self.end);
        (start, end)
    }
}

#[derive(Default)]
struct Index {
    segments: BTreeMap<u64, Segment>,
    last: Option<LogId>,
    /// Entries below this are purged, even where their segment remains.
    first_visible: u64,
}

/// The Raft log's entries. Shared by every clone of the log store.
pub struct SegmentLog {
    files: Arc<dyn LogFiles>,
    index: Mutex<Index>,
    /// `SEGMENT_BYTES`, smaller in tests.
    segment_bytes: u64,
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

/// Appends `entry` as one frame to `buf`.
fn push_frame(buf: &mut Vec<u8>, entry: &Entry) -> Result<(), StoreError> {
    frame::push(buf, entry.log_id.index, entry, "encode log entry")?;
    Ok(())
}

impl SegmentLog {
    /// Opens the log in `files`, checking every frame and cutting a torn tail.
    pub fn open(files: Arc<dyn LogFiles>) -> Result<SegmentLog, StoreError> {
        Self::open_with_segment_bytes(files, SEGMENT_BYTES)
    }

    fn open_with_segment_bytes(
        files: Arc<dyn LogFiles>,
        segment_bytes: u64,
    ) -> Result<SegmentLog, StoreError> {
        let ids = files.list()?;
        let mut index = Index::default();
        let mut expected_next: Option<u64> = None;
        for (n, &id) in ids.iter().enumerate() {
            let is_last = n + 1 == ids.len();
            let segment = Self::scan_segment(files.as_ref(), id, is_last)?;
            if segment.starts.is_empty() {
                if is_last {
                    // Created, then a crash before its first entry was durable.
                    files.remove(id)?;
                    files.sync()?;
                    continue;
                }
                return Err(corrupt(format!("segment {id} is empty but not the last")));
            }
            if let Some(next) = expected_next {
                if id < next {
                    return Err(corrupt(format!(
                        "segment {id} overlaps a segment that ends before {next}"
                    )));
                }
                if id > next {
                    tracing::warn!(segment = id, "the log has no entries {next}..{id}");
                }
            }
            expected_next = Some(segment.next());
            index.segments.insert(id, segment);
        }
        let log = SegmentLog {
            files,
            index: Mutex::new(index),
            segment_bytes,
        };
        let last = log.read_last()?;
        log.lock().last = last;
        Ok(log)
    }

    /// Reads one segment's frames; cuts a torn tail if it is the last segment. Only the last
    /// segment's payloads are read and checked here: the others were synced whole before the
    /// next segment existed, and every read checks its frames' checksums anyway. So opening
    /// reads at most one segment's bytes plus a header per entry, however long the log is.
    fn scan_segment(files: &dyn LogFiles, id: u64, is_last: bool) -> Result<Segment, StoreError> {
        let len = files.len(id)?;
        let mut segment = Segment {
            first: id,
            starts: Vec::new(),
            end: 0,
        };
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let mut payload = Vec::new();
        let mut at = 0u64;
        let torn = loop {
            if at == len {
                break None;
            }
            if at + FRAME_HEADER_BYTES as u64 > len {
                break Some("a partial frame header".to_string());
            }
            files.read_exact_at(id, at, &mut header)?;
            let h = Header::parse(&header).expect("a whole header was read");
            if u64::from(h.len) > MAX_FRAME_PAYLOAD_BYTES || at + h.frame_bytes() > len {
                break Some(format!("a frame of {} bytes past the end", h.len));
            }
            if is_last {
                payload.resize(h.len as usize, 0);
                files.read_exact_at(id, at + FRAME_HEADER_BYTES as u64, &mut payload)?;
                if !h.holds(&payload) {
                    break Some("a checksum mismatch".to_string());
                }
            }
            if h.key != segment.next() {
                return Err(corrupt(format!(
                    "segment {id} holds entry {} where {} belongs",
                    h.key,
                    segment.next()
                )));
            }
            segment.starts.push(at);
            at += h.frame_bytes();
        };
        segment.end = at;
        if let Some(what) = torn {
            if !is_last {
                return Err(corrupt(format!(
                    "segment {id} has {what} at byte {at}, and later segments exist"
                )));
            }
            tracing::warn!(
                segment = id,
                at,
                "cutting a torn write at the end of the log ({what}); it was never acknowledged"
            );
            files.truncate(id, at)?;
            files.sync()?;
        }
        Ok(segment)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_last(&self) -> Result<Option<LogId>, StoreError> {
        let next = self.lock().segments.values().next_back().map(Segment::next);
        match next {
            Some(next) => {
                let entries = self.read(next - 1, next, 1, usize::MAX)?;
                Ok(entries.last().map(|e| e.log_id))
            }
            None => Ok(None),
        }
    }

    /// The last entry's id, if the log holds any.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.lock().last
    }

    /// Writes `entries` (consecutive, after the last entry). Readable at once; durable after
    /// the next sync.
    pub fn append(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        let mut index = self.lock();
        let mut buf = Vec::new();
        let mut pending_starts = Vec::new();
        let mut last = index.last;
        for entry in entries {
            let log_index = entry.log_id.index;
            // Where this entry's frame would start in the last segment, and whether it must
            // start a new one instead.
            let tail = index.segments.values().next_back();
            let (frame_start, roll) = match tail {
                None => (0, true),
                Some(tail) => {
                    let expected = tail.next() + pending_starts.len() as u64;
                    if log_index < expected {
                        return Err(corrupt(format!(
                            "append of entry {log_index} over entries up to {} (truncate first)",
                            expected - 1
                        )));
                    }
                    let start = tail.end + buf.len() as u64;
                    // A gap (openraft never leaves one, but its test suite does) starts a new
                    // segment, so every segment stays consecutive.
                    (start, log_index > expected || start >= self.segment_bytes)
                }
            };
            let frame_start = if roll {
                let closing = tail.is_some();
                self.flush_pending(&mut index, &mut buf, &mut pending_starts)?;
                if closing {
                    // Only the last segment may end torn: the one being closed is made durable
                    // before the next exists (once per SEGMENT_BYTES).
                    self.files.sync()?;
                }
                self.files.create(log_index)?;
                index.segments.insert(
                    log_index,
                    Segment {
                        first: log_index,
                        starts: Vec::new(),
                        end: 0,
                    },
                );
                0
            } else {
                frame_start
            };
            pending_starts.push(frame_start);
            push_frame(&mut buf, &entry)?;
            last = Some(entry.log_id);
        }
        self.flush_pending(&mut index, &mut buf, &mut pending_starts)?;
        index.last = last;
        Ok(())
    }

    /// Writes the frames gathered for the last segment and records where they start.
    fn flush_pending(
        &self,
        index: &mut Index,
        buf: &mut Vec<u8>,
        starts: &mut Vec<u64>,
    ) -> Result<(), StoreError> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some((_, tail)) = index.segments.iter_mut().next_back() else {
            return Err(corrupt("frames to write but no segment".to_string()));
        };
        self.files.write_at(tail.first, tail.end, buf)?;
        tail.end += buf.len() as u64;
        tail.starts.append(starts);
        buf.clear();
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
            for segment in index.segments.range(..end).map(|(_, s)| s) {
                if segment.next() <= next {
                    continue;
                }
                // Skip a gap between segments (see `append`).
                next = next.max(segment.first);
                let first = next;
                let (from, _) = segment.frame(first);
                let mut to = from;
                let mut full = false;
                while next < end && next < segment.next() {
                    let (_, frame_end) = segment.frame(next);
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
                        segment: segment.first,
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
                let (h, payload) = frame::parse(&bytes[at..])
                    .filter(|(h, _)| h.key == expected)
                    .ok_or_else(|| {
                        corrupt(format!(
                            "segment {segment}: entry {expected} does not read back"
                        ))
                    })?;
                // The header's key is the entry's index (`push_frame`) and the checksum covers it.
                entries.push(decode("log entry", payload)?);
                expected += 1;
                at += h.frame_bytes() as usize;
            }
        }
        Ok(entries)
    }

    /// Removes entries from `from` on. Durable after the next sync.
    pub fn truncate(&self, from: u64) -> Result<(), StoreError> {
        {
            let mut index = self.lock();
            let doomed: Vec<u64> = index.segments.range(from..).map(|(&id, _)| id).collect();
            for id in doomed.into_iter().rev() {
                self.files.remove(id)?;
                index.segments.remove(&id);
            }
            if let Some((_, tail)) = index.segments.iter_mut().next_back() {
                if from < tail.next() {
                    let (cut, _) = tail.frame(from);
                    self.files.truncate(tail.first, cut)?;
                    tail.starts.truncate((from - tail.first) as usize);
                    tail.end = cut;
                }
            }
        }
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
        let doomed: Vec<u64> = index
            .segments
            .values()
            .filter(|s| s.next() <= upto.saturating_add(1))
            .map(|s| s.first)
            .collect();
        for id in doomed {
            self.files.remove(id)?;
            index.segments.remove(&id);
        }
        if index.segments.is_empty() {
            index.last = None;
        }
        Ok(())
    }

    /// Removes every segment (before a migration rewrites the log).
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut index = self.lock();
        for &id in index.segments.keys() {
            self.files.remove(id)?;
        }
        *index = Index::default();
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
            push_frame(&mut buf, &entry(6)).unwrap();
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
    fn a_damaged_frame_before_the_last_segment_is_corruption_not_a_torn_write() {
        let files = Arc::new(MemLogFiles::default());
        let log = small_log(&files);
        log.append((1..=12).map(entry)).unwrap();
        log.sync().unwrap();
        let first = files.list().unwrap()[0];
        // A damaged payload: found by the read that loads it.
        files
            .write_at(first, FRAME_HEADER_BYTES as u64 + 1, &[0xff])
            .unwrap();
        let log = small_log(&files);
        let err = log.read(first, first + 1, 1, usize::MAX).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        // A damaged header (an entry under the wrong index): found at open.
        files.write_at(first, 8, &[0xee]).unwrap();
        let err = SegmentLog::open_with_segment_bytes(files.clone(), 64)
            .err()
            .expect("open must fail");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
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
}
