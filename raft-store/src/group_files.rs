//! The state machine's append groups, in append-only segment files beside sled.
//!
//! sled keeps only where each group is (`Location`, 12 bytes under the group's first
//! position); the group's bytes go here, once. Storing them in sled made it rewrite every
//! group with its pages, hold large pages in memory and replay them all at open.
//!
//! The files form one byte stream: a segment is named by the stream offset it starts at and a
//! new one starts once the last reaches `GROUP_SEGMENT_BYTES` (a frame never spans two). A
//! group is one frame (`frame`) keyed by its first position, the postcard-encoded group its
//! payload.
//!
//! Apply writes the frames of a batch before the keyspace batch that points at them, and
//! neither is synced (the Raft log is the durable record; snapshots sync both, files first).
//! So after a crash the files may hold frames nobody points at (cut at open), and, after a
//! power loss, the keyspace may point past what reached the files: the state machine then
//! rolls back to its last snapshot and openraft applies the log again (`recover`). Writes
//! are synced in the background every `BACKGROUND_SYNC_BYTES`, so a snapshot's sync never
//! waits for a long backlog.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

pub use crate::frame::FRAME_HEADER_BYTES;

use crate::codec::{decode_u64_u32, encode_u64_u32, U64_U32_BYTES};
use crate::disk::{wait_for_sync, LogFiles};
use crate::error::StoreError;
use crate::frame;

/// A segment that reaches this size is closed; the next frame starts a new one.
pub const GROUP_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes written since the last sync after which a sync is started in the background.
pub const BACKGROUND_SYNC_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes of an encoded `Location`.
pub const LOCATION_BYTES: usize = U64_U32_BYTES;

/// Where a group's frame is: its offset in the byte stream of all segments, and its payload's
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub offset: u64,
    pub len: u32,
}

impl Location {
    pub fn encode(self) -> Vec<u8> {
        encode_u64_u32(self.offset, self.len)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let (offset, len) = decode_u64_u32("group location", bytes)?;
        Ok(Location { offset, len })
    }

    /// The stream offset just after the frame.
    pub fn end(self) -> u64 {
        self.offset + FRAME_HEADER_BYTES as u64 + u64::from(self.len)
    }
}

/// One frame read back: header and payload in one buffer.
pub struct Frame(Vec<u8>);

impl Frame {
    pub fn payload(&self) -> &[u8] {
        &self.0[FRAME_HEADER_BYTES..]
    }
}

#[derive(Default)]
struct Segments {
    /// Stream offset each segment starts at (its file id) -> its length.
    lens: BTreeMap<u64, u64>,
    /// Stream offset after the last frame.
    end: u64,
    /// Bytes written since the last sync was started.
    unsynced_bytes: u64,
}

/// The group files. Readers and the one writer share it.
pub struct GroupFiles {
    files: Arc<dyn LogFiles>,
    segments: Mutex<Segments>,
    /// `GROUP_SEGMENT_BYTES`, smaller in tests.
    segment_bytes: u64,
}

/// Bytes to write at one place of one segment.
struct Chunk {
    segment: u64,
    offset: u64,
    /// The segment does not exist yet.
    create: bool,
    bytes: Vec<u8>,
}

/// Frames gathered by the one writer (apply, or a snapshot install) and not written yet.
/// Created from the files' end; `GroupFiles::write` writes them and moves it on.
pub struct GroupWriter {
    /// Stream offset the next frame gets.
    end: u64,
    /// Length of the segment the next frame goes into, and whether one is open at all.
    tail: Option<u64>,
    chunks: Vec<Chunk>,
    pending_bytes: usize,
    segment_bytes: u64,
}

impl GroupWriter {
    /// Bytes gathered and not written yet.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Adds `group`'s frame, encoding it straight into the write buffer. Returns where it
    /// will be.
    pub fn push<T: Serialize>(
        &mut self,
        first_position: u64,
        group: &T,
    ) -> Result<Location, StoreError> {
        let buf = self.buffer_for_next_frame();
        let len = frame::push(buf, first_position, group, "encode event group")?;
        Ok(self.frame_added(first_position, len))
    }

    /// Adds an already encoded group's frame.
    pub fn push_encoded(
        &mut self,
        first_position: u64,
        encoded: &[u8],
    ) -> Result<Location, StoreError> {
        let buf = self.buffer_for_next_frame();
        let start = frame::begin(buf);
        buf.extend_from_slice(encoded);
        let len = frame::finish(buf, start, first_position)?;
        Ok(self.frame_added(first_position, len))
    }

    fn buffer_for_next_frame(&mut self) -> &mut Vec<u8> {
        if self.tail.is_none_or(|len| len >= self.segment_bytes) {
            self.chunks.push(Chunk {
                segment: self.end,
                offset: 0,
                create: true,
                bytes: Vec::new(),
            });
            self.tail = Some(0);
        } else if self.chunks.is_empty() {
            let len = self.tail.unwrap_or(0);
            self.chunks.push(Chunk {
                segment: self.end - len,
                offset: len,
                create: false,
                bytes: Vec::new(),
            });
        }
        &mut self
            .chunks
            .last_mut()
            .expect("a chunk was just ensured")
            .bytes
    }

    /// Moves the writer past a frame just added to the last chunk.
    fn frame_added(&mut self, first_position: u64, len: u32) -> Location {
        debug_assert!(self.chunks.last().is_some(), "{first_position}: no chunk");
        let location = Location {
            offset: self.end,
            len,
        };
        let frame_bytes = FRAME_HEADER_BYTES + len as usize;
        self.end += frame_bytes as u64;
        self.tail = self.tail.map(|t| t + frame_bytes as u64);
        self.pending_bytes += frame_bytes;
        location
    }
}

fn corrupt(detail: String) -> StoreError {
    StoreError::corrupt("event group file", detail)
}

impl GroupFiles {
    /// Opens the files; reads only their lengths (what is in them is checked by `recover`
    /// against the keyspace, and by every read).
    pub fn open(files: Arc<dyn LogFiles>) -> Result<GroupFiles, StoreError> {
        Self::open_with_segment_bytes(files, GROUP_SEGMENT_BYTES)
    }

    pub(crate) fn open_with_segment_bytes(
        files: Arc<dyn LogFiles>,
        segment_bytes: u64,
    ) -> Result<GroupFiles, StoreError> {
        let mut segments = Segments::default();
        for id in files.list()? {
            let len = files.len(id)?;
            if id < segments.end {
                return Err(corrupt(format!(
                    "segment {id} overlaps the one before, which ends at {}",
                    segments.end
                )));
            }
            segments.lens.insert(id, len);
            segments.end = id + len;
        }
        Ok(GroupFiles {
            files,
            segments: Mutex::new(segments),
            segment_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Segments> {
        self.segments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A writer starting at the end of the files. There is one writer at a time (apply or an
    /// install, which `&mut` on the state machine serializes).
    pub fn writer(&self) -> GroupWriter {
        let segments = self.lock();
        GroupWriter {
            end: segments.end,
            tail: segments.lens.iter().next_back().map(|(_, &len)| len),
            chunks: Vec::new(),
            pending_bytes: 0,
            segment_bytes: self.segment_bytes,
        }
    }

    /// Writes what `writer` gathered. Readable at once; durable after a sync.
    pub fn write(&self, writer: &mut GroupWriter) -> Result<(), StoreError> {
        let chunks = std::mem::take(&mut writer.chunks);
        writer.pending_bytes = 0;
        let mut start_sync = false;
        {
            let mut segments = self.lock();
            for Chunk {
                segment: id,
                offset,
                create,
                bytes,
            } in chunks
            {
                let expected_end = segments.end;
                if id + offset != expected_end {
                    return Err(corrupt(format!(
                        "a write at {} where the files end at {expected_end} (two writers?)",
                        id + offset
                    )));
                }
                if create {
                    self.files.create(id)?;
                    segments.lens.insert(id, 0);
                }
                self.files.write_at(id, offset, &bytes)?;
                let len = offset + bytes.len() as u64;
                segments.lens.insert(id, len);
                segments.end = id + len;
                segments.unsynced_bytes += bytes.len() as u64;
            }
            if segments.unsynced_bytes >= BACKGROUND_SYNC_BYTES {
                segments.unsynced_bytes = 0;
                start_sync = true;
            }
        }
        if start_sync {
            self.files.sync_then(Box::new(|result| {
                if let Err(e) = result {
                    // Nothing waits on it; the next sync (a snapshot's) reports it again.
                    tracing::warn!(error = %e, "background sync of event group files failed");
                }
            }));
        }
        Ok(())
    }

    /// Reads the frame at `location` and checks it is the group starting at `first_position`.
    pub fn read(&self, location: Location, first_position: u64) -> Result<Frame, StoreError> {
        let (id, segment_len) = {
            let segments = self.lock();
            match segments.lens.range(..=location.offset).next_back() {
                Some((&id, &len)) => (id, len),
                None => {
                    return Err(corrupt(format!(
                        "group {first_position} at {} is before the first segment",
                        location.offset
                    )))
                }
            }
        };
        let in_segment = location.offset - id;
        let frame_bytes = FRAME_HEADER_BYTES as u64 + u64::from(location.len);
        if in_segment + frame_bytes > segment_len {
            return Err(corrupt(format!(
                "group {first_position} at {} runs past the end of segment {id}",
                location.offset
            )));
        }
        let mut buf = vec![0u8; frame_bytes as usize];
        self.files.read_exact_at(id, in_segment, &mut buf)?;
        let holds = frame::parse(&buf)
            .is_some_and(|(h, _)| h.len == location.len && h.key == first_position);
        if !holds {
            return Err(corrupt(format!(
                "group {first_position} does not read back at {}",
                location.offset
            )));
        }
        Ok(Frame(buf))
    }

    /// The stream offset after the last frame.
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// Removes everything from stream offset `end` on, then syncs.
    pub fn truncate(&self, end: u64) -> Result<(), StoreError> {
        {
            let mut segments = self.lock();
            if end >= segments.end {
                return Ok(());
            }
            let doomed: Vec<u64> = segments.lens.range(end..).map(|(&id, _)| id).collect();
            for id in doomed.into_iter().rev() {
                self.files.remove(id)?;
                segments.lens.remove(&id);
            }
            if let Some((&id, len)) = segments.lens.iter_mut().next_back() {
                if id + *len > end {
                    self.files.truncate(id, end - id)?;
                    *len = end - id;
                }
            }
            segments.end = segments
                .lens
                .iter()
                .next_back()
                .map_or(0, |(&id, &len)| id + len);
        }
        self.sync()
    }

    pub fn sync(&self) -> Result<(), StoreError> {
        Ok(self.files.sync()?)
    }

    /// `sync` without blocking the async runtime.
    pub async fn sync_async(&self) -> Result<(), StoreError> {
        Ok(wait_for_sync(|done| self.files.sync_then(done)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemLogFiles;

    fn groups(files: &Arc<MemLogFiles>, segment_bytes: u64) -> GroupFiles {
        GroupFiles::open_with_segment_bytes(files.clone(), segment_bytes).expect("open")
    }

    /// Writes `n` groups of `payload_bytes` each (first positions 0, 10, 20, ...), three to a
    /// write.
    fn write_groups(g: &GroupFiles, n: u64, payload_bytes: usize) -> Vec<Location> {
        let mut writer = g.writer();
        let mut locations = Vec::new();
        for i in 0..n {
            let payload = vec![i as u8; payload_bytes];
            locations.push(writer.push_encoded(i * 10, &payload).unwrap());
            if i % 3 == 2 {
                g.write(&mut writer).unwrap();
            }
        }
        g.write(&mut writer).unwrap();
        locations
    }

    #[test]
    fn groups_read_back_across_segments_and_after_reopening() {
        let files = Arc::new(MemLogFiles::default());
        let g = groups(&files, 100);
        let locations = write_groups(&g, 20, 30);
        assert!(files.list().unwrap().len() >= 6, "segments rolled");
        let check = |g: &GroupFiles| {
            for (i, location) in locations.iter().enumerate() {
                let frame = g.read(*location, i as u64 * 10).unwrap();
                assert_eq!(frame.payload(), &vec![i as u8; 30][..]);
            }
        };
        check(&g);
        g.sync().unwrap();
        let reopened = groups(&files, 100);
        check(&reopened);
        assert_eq!(reopened.end(), locations.last().unwrap().end());
        // The wrong position, or a location past the end, is corruption.
        let wrong = reopened.read(locations[3], 31).err().expect("must fail");
        assert!(matches!(wrong, StoreError::Corrupt { .. }), "{wrong}");
        let past = Location {
            offset: reopened.end(),
            len: 30,
        };
        assert!(reopened.read(past, 200).is_err());
    }

    #[test]
    fn a_damaged_frame_is_found_by_the_read() {
        let files = Arc::new(MemLogFiles::default());
        let g = groups(&files, GROUP_SEGMENT_BYTES);
        let locations = write_groups(&g, 3, 40);
        files
            .write_at(
                0,
                locations[1].offset + FRAME_HEADER_BYTES as u64 + 5,
                &[0xff],
            )
            .unwrap();
        assert!(g.read(locations[0], 0).is_ok());
        let err = g.read(locations[1], 10).err().expect("must fail");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn truncate_cuts_whole_and_partial_segments_and_writing_goes_on_from_there() {
        let files = Arc::new(MemLogFiles::default());
        let g = groups(&files, 100);
        let locations = write_groups(&g, 20, 30);
        g.truncate(locations[9].end()).unwrap();
        assert_eq!(g.end(), locations[9].end());
        assert!(g.read(locations[9], 90).is_ok());
        assert!(g.read(locations[10], 100).is_err());
        let mut writer = g.writer();
        let again = writer.push_encoded(100, &[7u8; 30]).unwrap();
        g.write(&mut writer).unwrap();
        assert_eq!(again.offset, locations[9].end());
        assert_eq!(g.read(again, 100).unwrap().payload(), &[7u8; 30]);
        g.truncate(0).unwrap();
        assert!(files.list().unwrap().is_empty());
        assert_eq!(g.end(), 0);
    }

    #[test]
    fn a_crash_keeps_a_prefix_of_unsynced_frames() {
        let files = Arc::new(MemLogFiles::default());
        let g = groups(&files, 100);
        let locations = write_groups(&g, 4, 30);
        g.sync().unwrap();
        let mut writer = g.writer();
        let lost = writer.push_encoded(40, &[9u8; 30]).unwrap();
        g.write(&mut writer).unwrap();
        files.crash(0, 10);
        let g = groups(&files, 100);
        assert!(g.read(locations[3], 30).is_ok());
        assert!(g.read(lost, 40).is_err(), "a torn frame does not read back");
        assert!(
            g.end() > locations[3].end(),
            "the torn bytes are there until recovery"
        );
    }
}
