//! The state machine's append groups, in append-only segment files beside the keyspace.
//!
//! The keyspace keeps only where each group is (`Location`, 12 bytes under the group's first
//! position); the group's bytes go here, once. Storing them in sled made it rewrite every
//! group with its pages, hold large pages in memory and replay them all at open.
//!
//! The files are a `Layout::Stream` directory (`segment_file`): one byte stream in segments
//! named by the stream offset they start at, rolled at `GROUP_SEGMENT_BYTES` (a frame never
//! spans two). A group is one frame (`frame`) keyed by its first position, the
//! postcard-encoded group its payload.
//!
//! Apply writes the frames of a batch before the keyspace batch that points at them, and
//! neither is synced (the Raft log is the durable record; snapshots sync both, files first).
//! So after a crash the files may hold frames nobody points at, a torn one among them (cut at
//! open by `recover`, which knows from the keyspace where the stream ends), and, after a power
//! loss, the keyspace may point past what reached the files: the state machine then rolls
//! back to its last snapshot and openraft applies the log again (`recover`). Writes are
//! synced in the background every `BACKGROUND_SYNC_BYTES`, so a snapshot's sync never waits
//! for a long backlog.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

pub use crate::frame::FRAME_HEADER_BYTES;

use crate::codec::{decode_u64_u32, encode_u64_u32, U64_U32_BYTES};
use crate::disk::{wait_for_sync, LogFiles};
use crate::error::StoreError;
use crate::segment_file::{frame_under, FrameWriter, Layout, Placed, SegmentFiles};

/// A segment that reaches this size is closed; the next frame starts a new one.
pub const GROUP_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes written since the last sync after which a sync is started in the background. Small,
/// because three nodes may share one disk: at 16 MiB each node's sync flushed 16 MiB at once
/// about twice a second under S3, and every node's log fdatasync waited behind it. S3, one
/// binary switched by an environment variable, alternating (2026-12-07): 16 MiB p99 25.5-34.5
/// ms, 4 MiB 14.6-15.7, 2 MiB 11.4-12.7, 1 MiB 11.0-12.3, none at all 11.2-12.4; events/s the
/// same (126-151k). Not none: a snapshot's sync would then wait for every byte since the last.
pub const BACKGROUND_SYNC_BYTES: u64 = 2 * 1024 * 1024;
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

    fn placed(placed: Placed) -> Location {
        Location {
            offset: placed.segment + placed.offset,
            len: placed.len,
        }
    }
}

/// One frame read back: header and payload in one buffer.
pub struct Frame(Vec<u8>);

impl Frame {
    pub fn payload(&self) -> &[u8] {
        &self.0[FRAME_HEADER_BYTES..]
    }

    /// The payload, keeping the buffer it was read into (no copy).
    pub fn into_payload(self) -> bytes::Bytes {
        bytes::Bytes::from(self.0).slice(FRAME_HEADER_BYTES..)
    }

    /// The frame's checksum (of its first position and payload), checked when it was read.
    pub fn crc(&self) -> u32 {
        u32::from_le_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }
}

struct Segments {
    files: SegmentFiles,
    /// Bytes written since the last sync was started.
    unsynced_bytes: u64,
}

/// The group files. Readers and the one writer share it.
pub struct GroupFiles {
    /// The same files as `segments`', read and synced without the lock.
    files: Arc<dyn LogFiles>,
    segments: Mutex<Segments>,
}

/// Frames gathered by the one writer (apply, or a snapshot install) and not written yet.
/// Created from the files' end; `GroupFiles::write` writes them and moves it on.
pub struct GroupWriter(FrameWriter);

impl GroupWriter {
    /// Bytes gathered and not written yet.
    pub fn pending_bytes(&self) -> usize {
        self.0.pending_bytes()
    }

    /// Adds `group`'s frame, encoding it straight into the write buffer. Returns where it
    /// will be.
    pub fn push<T: Serialize>(
        &mut self,
        first_position: u64,
        group: &T,
    ) -> Result<Location, StoreError> {
        let placed = self.0.push(first_position, group, "encode event group")?;
        Ok(Location::placed(placed))
    }

    /// Adds an already encoded group's frame.
    pub fn push_encoded(
        &mut self,
        first_position: u64,
        encoded: &[u8],
    ) -> Result<Location, StoreError> {
        Ok(Location::placed(
            self.0.push_encoded(first_position, encoded)?,
        ))
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
        let segments = SegmentFiles::open(
            files.clone(),
            Layout::Stream,
            segment_bytes,
            "event group file",
        )?;
        Ok(GroupFiles {
            files,
            segments: Mutex::new(Segments {
                files: segments,
                unsynced_bytes: 0,
            }),
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
        GroupWriter(self.lock().files.writer())
    }

    /// Writes what `writer` gathered. Readable at once; durable after a sync.
    pub fn write(&self, writer: &mut GroupWriter) -> Result<(), StoreError> {
        let start_sync = {
            let mut segments = self.lock();
            segments.unsynced_bytes += segments.files.write(&mut writer.0)?;
            let start = segments.unsynced_bytes >= BACKGROUND_SYNC_BYTES;
            if start {
                segments.unsynced_bytes = 0;
            }
            start
        };
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
        let frame_bytes = FRAME_HEADER_BYTES as u64 + u64::from(location.len);
        let (id, in_segment) = self
            .lock()
            .files
            .locate(location.offset, frame_bytes)
            .ok_or_else(|| {
                corrupt(format!(
                    "group {first_position} at {} is not wholly inside a segment",
                    location.offset
                ))
            })?;
        let buf = self
            .files
            .read_vec_at(id, in_segment, frame_bytes as usize)?;
        let holds = frame_under(&buf, first_position).is_some_and(|(h, _)| h.len == location.len);
        if !holds {
            return Err(corrupt(format!(
                "group {first_position} does not read back at {}",
                location.offset
            )));
        }
        Ok(Frame(buf))
    }

    /// Zeroes the payload of the frame at `location` and gives its whole blocks back to the
    /// file system (`LogFiles::discard`): for a scavenged group, once nothing durable points
    /// at it. Its header stays, with the checksum of the zeros, so the frame stays valid for
    /// the scan at open (which walks every frame); no live frame moves. Durable after a sync.
    pub fn discard(&self, location: Location) -> Result<(), StoreError> {
        let frame_bytes = FRAME_HEADER_BYTES as u64 + u64::from(location.len);
        let (id, in_segment) = self
            .lock()
            .files
            .locate(location.offset, frame_bytes)
            .ok_or_else(|| {
                corrupt(format!(
                    "a discarded frame at {} is not wholly inside a segment",
                    location.offset
                ))
            })?;
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.files.read_exact_at(id, in_segment, &mut header)?;
        let parsed = crate::frame::Header::parse(&header)
            .filter(|h| h.len == location.len)
            .ok_or_else(|| {
                corrupt(format!(
                    "a discarded frame at {} has no header of its length",
                    location.offset
                ))
            })?;
        let crc = crate::frame::zeroed_crc(parsed.key, parsed.len);
        header[4..8].copy_from_slice(&crc.to_le_bytes());
        self.files.write_at(id, in_segment, &header)?;
        let payload_at = in_segment + FRAME_HEADER_BYTES as u64;
        let payload_bytes = frame_bytes - FRAME_HEADER_BYTES as u64;
        Ok(self.files.discard(id, payload_at, payload_bytes)?)
    }

    /// Reads and checks every frame starting below stream offset `below` (what the keyspace
    /// points at); the offset of the first damaged one and what was wrong.
    pub fn first_bad_frame(&self, below: u64) -> Result<Option<(u64, String)>, StoreError> {
        self.lock().files.first_bad_frame(below)
    }

    /// The stream offset after the last frame.
    pub fn end(&self) -> u64 {
        self.lock().files.end()
    }

    /// Removes everything from stream offset `end` on, then syncs.
    pub fn truncate(&self, end: u64) -> Result<(), StoreError> {
        if self.lock().files.truncate(end)? {
            self.sync()?;
        }
        Ok(())
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
