//! A directory of framed segment files (`disk::LogFiles`), the one home of what both of its
//! users do with them: the Raft log (`segment_log`) and the event groups (`group_files`).
//!
//! It owns segment naming, rolling to a new segment at a size limit (a frame never spans two),
//! writing gathered frames, truncating a suffix, purging whole segments of a prefix, the scan at
//! open and torn-tail handling. The frame itself is `frame`'s. Nothing here syncs on its own
//! account except where the layout says so (`Layout`): each user keeps its own durability.
//!
//! The two users differ on purpose, and `Layout` names the difference:
//! - `Layout::Keyed` (the Raft log): a segment is named by the key of its first frame and its
//!   frames carry consecutive keys. The files are their own index, so open reads every frame
//!   header (and every payload of the last segment) and cuts a torn tail there; for that to be
//!   sound the segment being closed is synced before the next one is created, so only the last
//!   segment can end torn. A gap in keys starts a new segment (openraft's test suite appends
//!   with gaps), so every segment stays consecutive.
//! - `Layout::Stream` (the event groups): the segments form one byte stream, each named by the
//!   stream offset it starts at, and the keyspace points at every frame (`Location`). The
//!   keyspace is the authority on where the stream ends, so open reads only lengths and the
//!   state machine's recovery cuts the tail to the last frame it points at; nothing is synced
//!   at a roll (apply syncs nothing; a snapshot syncs the files before the keyspace).

use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::sync::Arc;

use serde::Serialize;

use crate::disk::LogFiles;
use crate::error::StoreError;
use crate::frame::{self, Header, FRAME_HEADER_BYTES};

/// A frame claiming a longer payload is not a frame (an entry or a group is bounded far below
/// this by the append limits): at the end of the last segment a torn write, elsewhere
/// corruption.
pub const MAX_FRAME_PAYLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// How segments are named and who knows where frames are (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Named by the first frame's key; consecutive keys; scanned at open; synced at a roll.
    Keyed,
    /// One byte stream named by offsets; an index elsewhere points at each frame.
    Stream,
}

/// One segment file as the directory knows it.
pub struct Segment {
    /// The file's id: its first key (`Keyed`) or the stream offset it starts at (`Stream`).
    pub id: u64,
    /// Bytes in use (the file may be longer only while a torn write is being cut).
    pub len: u64,
    /// `Keyed` only: where each frame starts; frame `i` holds key `id + i`.
    starts: Vec<u64>,
}

impl Segment {
    fn new(id: u64) -> Segment {
        Segment {
            id,
            len: 0,
            starts: Vec::new(),
        }
    }

    /// `Keyed`: the key after the last frame.
    pub fn next_key(&self) -> u64 {
        self.id + self.starts.len() as u64
    }

    /// `Keyed`: the byte range of the frame holding `key`, which must be in this segment.
    pub fn frame_range(&self, key: u64) -> (u64, u64) {
        let i = (key - self.id) as usize;
        let start = self.starts[i];
        let end = self.starts.get(i + 1).copied().unwrap_or(self.len);
        (start, end)
    }

    /// Where the segment ends in the ids' space: the next key, or the next stream offset.
    fn end(&self, layout: Layout) -> u64 {
        match layout {
            Layout::Keyed => self.next_key(),
            Layout::Stream => self.id + self.len,
        }
    }
}

/// Where a frame was placed: its segment, its offset there, and its payload's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// Bytes to write at one place of one segment.
struct Chunk {
    segment: u64,
    offset: u64,
    /// The segment does not exist yet.
    create: bool,
    bytes: Vec<u8>,
    /// `Keyed`: where each frame of `bytes` starts in the segment.
    starts: Vec<u64>,
}

/// Frames gathered and not written yet, taken from the directory's end
/// (`SegmentFiles::writer`) and written by `SegmentFiles::write`; decides the rolls.
pub struct FrameWriter {
    layout: Layout,
    what: &'static str,
    segment_bytes: u64,
    /// The segment the next frame goes into, as it will be once `chunks` are written: its id
    /// and length. `None`: no segment exists.
    tail: Option<(u64, u64)>,
    /// The next key (`Keyed`) or stream offset (`Stream`) at the end.
    end: u64,
    chunks: Vec<Chunk>,
    pending_bytes: usize,
}

impl FrameWriter {
    /// Bytes gathered and not written yet.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Adds `value`, postcard-encoded straight into the write buffer, as one frame under `key`.
    pub fn push<T: Serialize>(
        &mut self,
        key: u64,
        value: &T,
        what: &'static str,
    ) -> Result<Placed, StoreError> {
        let chunk = self.chunk_for(key)?;
        let offset = chunk.offset + chunk.bytes.len() as u64;
        let len = frame::push(&mut chunk.bytes, key, value, what)?;
        Ok(self.frame_added(key, offset, len))
    }

    /// Adds an already encoded payload as one frame under `key`.
    pub fn push_encoded(&mut self, key: u64, payload: &[u8]) -> Result<Placed, StoreError> {
        let chunk = self.chunk_for(key)?;
        let offset = chunk.offset + chunk.bytes.len() as u64;
        let start = frame::begin(&mut chunk.bytes);
        chunk.bytes.extend_from_slice(payload);
        let len = frame::finish(&mut chunk.bytes, start, key)?;
        Ok(self.frame_added(key, offset, len))
    }

    /// The chunk the frame for `key` goes into, starting a new segment if the last one is
    /// full, if there is none, or (`Keyed`) if `key` leaves a gap.
    fn chunk_for(&mut self, key: u64) -> Result<&mut Chunk, StoreError> {
        if self.layout == Layout::Keyed && self.tail.is_some() && key < self.end {
            return Err(StoreError::corrupt(
                self.what,
                format!(
                    "a frame for key {key} over keys up to {} (truncate first)",
                    self.end - 1
                ),
            ));
        }
        let roll = match self.tail {
            None => true,
            Some((_, len)) if len >= self.segment_bytes => true,
            Some(_) => self.layout == Layout::Keyed && key > self.end,
        };
        if roll {
            let id = match self.layout {
                Layout::Keyed => key,
                Layout::Stream => self.end,
            };
            self.chunks.push(Chunk {
                segment: id,
                offset: 0,
                create: true,
                bytes: Vec::new(),
                starts: Vec::new(),
            });
            self.tail = Some((id, 0));
        } else if self.chunks.is_empty() {
            let (id, len) = self.tail.unwrap_or_default();
            self.chunks.push(Chunk {
                segment: id,
                offset: len,
                create: false,
                bytes: Vec::new(),
                starts: Vec::new(),
            });
        }
        Ok(self.chunks.last_mut().expect("a chunk was just ensured"))
    }

    /// Moves the writer past a frame just added to the last chunk at `offset`.
    fn frame_added(&mut self, key: u64, offset: u64, len: u32) -> Placed {
        let frame_bytes = FRAME_HEADER_BYTES as u64 + u64::from(len);
        let (segment, _) = self.tail.unwrap_or_default();
        if let Some(chunk) = self.chunks.last_mut() {
            if self.layout == Layout::Keyed {
                chunk.starts.push(offset);
            }
        }
        self.tail = self.tail.map(|(id, tail_len)| (id, tail_len + frame_bytes));
        self.end = match self.layout {
            Layout::Keyed => key + 1,
            Layout::Stream => self.end + frame_bytes,
        };
        self.pending_bytes += frame_bytes as usize;
        Placed {
            segment,
            offset,
            len,
        }
    }
}

/// What the open scan of a `Keyed` directory cut away: every frame from `key` on, because
/// the frame there was torn, damaged or out of place. Only the log's owner can tell a torn
/// write (never acknowledged) from damage to what it had acknowledged: `highest_whole_key`
/// and its own record of what it synced (`log_store`) decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The first key removed.
    pub key: u64,
    /// The highest key of a whole frame found at or past the cut (frames after a damaged one,
    /// later segments); `None` when nothing whole followed, as after a torn write.
    pub highest_whole_key: Option<u64>,
    /// Where the cut was made, and why.
    pub segment: u64,
    pub at: u64,
    pub detail: String,
}

/// The segment files of one directory and what is known of each. Not locked: each user keeps
/// it under its own lock with the state that goes with it.
pub struct SegmentFiles {
    files: Arc<dyn LogFiles>,
    layout: Layout,
    /// A segment that reaches this size is closed and the next frame starts a new one.
    segment_bytes: u64,
    /// What the files are, for errors ("log segment", "event group file").
    what: &'static str,
    segments: BTreeMap<u64, Segment>,
    /// `Keyed`: what the open scan cut, if anything.
    cut: Option<Cut>,
}

impl SegmentFiles {
    /// Opens the directory: lists its segments and scans them as `layout` says. A `Keyed`
    /// directory's frames are all checked; from the first that is torn, damaged or out of
    /// place on, everything is cut and the cut synced (`cut` says what went).
    pub fn open(
        files: Arc<dyn LogFiles>,
        layout: Layout,
        segment_bytes: u64,
        what: &'static str,
    ) -> Result<SegmentFiles, StoreError> {
        let mut dir = SegmentFiles {
            files,
            layout,
            segment_bytes,
            what,
            segments: BTreeMap::new(),
            cut: None,
        };
        let ids = dir.files.list()?;
        for &id in &ids {
            if layout == Layout::Stream {
                let len = dir.files.len(id)?;
                if let Some(end) = dir.segments.values().next_back().map(|s| s.end(layout)) {
                    if id < end {
                        return Err(dir.corrupt(format!(
                            "segment {id} overlaps the one before, which ends at {end}"
                        )));
                    }
                }
                dir.segments.insert(
                    id,
                    Segment {
                        id,
                        len,
                        starts: Vec::new(),
                    },
                );
                continue;
            }
            if dir.cut.is_some() {
                // Past a cut: note what was whole, then the segment goes.
                let whole = dir.whole_keys_from(id, 0)?;
                if let Some(cut) = &mut dir.cut {
                    cut.highest_whole_key = cut.highest_whole_key.max(whole);
                }
                dir.files.remove(id)?;
                continue;
            }
            let previous_end = dir.segments.values().next_back().map(|s| s.next_key());
            if previous_end.is_some_and(|end| id < end) {
                let end = previous_end.unwrap_or_default();
                dir.cut_at(
                    id,
                    0,
                    end,
                    format!("segment {id} overlaps the one before, which ends at {end}"),
                )?;
                continue;
            }
            if let Some(end) = previous_end.filter(|&end| id > end) {
                // A gap (see `FrameWriter::chunk_for`).
                tracing::warn!(segment = id, what, "the files hold nothing at {end}..{id}");
            }
            let (segment, problem) = dir.scan_frames(id)?;
            let (next_key, len) = (segment.next_key(), segment.len);
            if !segment.starts.is_empty() {
                dir.segments.insert(id, segment);
            }
            if let Some(problem) = problem {
                dir.cut_at(
                    id,
                    len,
                    next_key,
                    format!("segment {id}: {problem} at byte {len}"),
                )?;
            } else if len == 0 {
                // Created, then a crash before its first frame was durable; or, before the
                // last segment, a segment that lost its frames.
                dir.files.remove(id)?;
                if id != *ids.last().unwrap_or(&id) {
                    dir.cut = Some(Cut {
                        key: id,
                        highest_whole_key: None,
                        segment: id,
                        at: 0,
                        detail: format!("segment {id} is empty but not the last"),
                    });
                }
            }
        }
        if let Some(cut) = &dir.cut {
            dir.files.sync()?;
            let last = ids.last() == Some(&cut.segment);
            if last && cut.highest_whole_key.is_none() {
                tracing::warn!(
                    segment = cut.segment,
                    at = cut.at,
                    files = dir.what,
                    "cut a torn write at the end of the files ({})",
                    cut.detail
                );
            } else {
                tracing::error!(
                    segment = cut.segment,
                    at = cut.at,
                    first_key_cut = cut.key,
                    highest_whole_key_cut = ?cut.highest_whole_key,
                    files = dir.what,
                    "damaged files: cut everything from the damage on ({})",
                    cut.detail
                );
            }
        } else if ids.last().is_some_and(|id| !dir.segments.contains_key(id)) {
            dir.files.sync()?;
        }
        Ok(dir)
    }

    /// What the open scan cut (`Keyed`).
    pub fn cut(&self) -> Option<&Cut> {
        self.cut.as_ref()
    }

    /// Cuts segment `id` at byte `at`, where key `key` would have started, noting the whole
    /// frames after it.
    fn cut_at(&mut self, id: u64, at: u64, key: u64, detail: String) -> Result<(), StoreError> {
        let whole = self.whole_keys_from(id, at)?;
        if at == 0 {
            self.files.remove(id)?;
        } else {
            self.files.truncate(id, at)?;
        }
        self.cut = Some(Cut {
            key,
            highest_whole_key: whole,
            segment: id,
            at,
            detail,
        });
        Ok(())
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::corrupt(self.what, detail)
    }

    /// Reads and checks one `Keyed` segment's frames, every payload included (the log is kept
    /// short by snapshots, so this reads a few MiB at open); stops at the first frame that is
    /// torn, damaged or under the wrong key and says what it found there.
    fn scan_frames(&self, id: u64) -> Result<(Segment, Option<String>), StoreError> {
        let len = self.files.len(id)?;
        let mut segment = Segment::new(id);
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let mut payload = Vec::new();
        let mut at = 0u64;
        let problem = loop {
            if at == len {
                break None;
            }
            if at + FRAME_HEADER_BYTES as u64 > len {
                break Some("a partial frame header".to_string());
            }
            self.files.read_exact_at(id, at, &mut header)?;
            let h = Header::parse(&header).expect("a whole header was read");
            if u64::from(h.len) > MAX_FRAME_PAYLOAD_BYTES || at + h.frame_bytes() > len {
                break Some(format!("a frame of {} bytes past the end", h.len));
            }
            payload.resize(h.len as usize, 0);
            self.files
                .read_exact_at(id, at + FRAME_HEADER_BYTES as u64, &mut payload)?;
            if !h.holds(&payload) {
                break Some("a checksum mismatch".to_string());
            }
            if h.key != segment.next_key() {
                break Some(format!(
                    "key {} where {} belongs",
                    h.key,
                    segment.next_key()
                ));
            }
            segment.starts.push(at);
            at += h.frame_bytes();
        };
        segment.len = at;
        Ok((segment, problem))
    }

    /// The highest key of a whole frame in segment `id` from byte `from` on, stepping over
    /// damaged payloads while the headers still say where the next frame starts.
    fn whole_keys_from(&self, id: u64, from: u64) -> Result<Option<u64>, StoreError> {
        let len = self.files.len(id)?;
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let mut payload = Vec::new();
        let mut highest = None;
        let mut at = from;
        while at + FRAME_HEADER_BYTES as u64 <= len {
            self.files.read_exact_at(id, at, &mut header)?;
            let h = Header::parse(&header).expect("a whole header was read");
            if u64::from(h.len) > MAX_FRAME_PAYLOAD_BYTES || at + h.frame_bytes() > len {
                break;
            }
            payload.resize(h.len as usize, 0);
            self.files
                .read_exact_at(id, at + FRAME_HEADER_BYTES as u64, &mut payload)?;
            if h.holds(&payload) {
                highest = highest.max(Some(h.key));
            }
            at += h.frame_bytes();
        }
        Ok(highest)
    }

    /// `Stream`: reads and checks every frame that starts below stream offset `below`; the
    /// offset of the first that is damaged (or does not end where the next begins), and what
    /// was wrong with it.
    pub fn first_bad_frame(&self, below: u64) -> Result<Option<(u64, String)>, StoreError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let mut payload = Vec::new();
        for segment in self.segments.values() {
            let mut at = 0u64;
            while at < segment.len && segment.id + at < below {
                let offset = segment.id + at;
                if at + FRAME_HEADER_BYTES as u64 > segment.len {
                    return Ok(Some((offset, "a partial frame header".into())));
                }
                self.files.read_exact_at(segment.id, at, &mut header)?;
                let h = Header::parse(&header).expect("a whole header was read");
                if u64::from(h.len) > MAX_FRAME_PAYLOAD_BYTES || at + h.frame_bytes() > segment.len
                {
                    return Ok(Some((
                        offset,
                        format!("a frame of {} bytes past the end", h.len),
                    )));
                }
                payload.resize(h.len as usize, 0);
                self.files.read_exact_at(
                    segment.id,
                    at + FRAME_HEADER_BYTES as u64,
                    &mut payload,
                )?;
                if !h.holds(&payload) {
                    return Ok(Some((offset, "a checksum mismatch".into())));
                }
                at += h.frame_bytes();
            }
        }
        Ok(None)
    }

    /// The segments with ids in `range`, ascending.
    pub fn range(&self, range: impl RangeBounds<u64>) -> impl DoubleEndedIterator<Item = &Segment> {
        self.segments.range(range).map(|(_, segment)| segment)
    }

    /// The last segment.
    pub fn last(&self) -> Option<&Segment> {
        self.segments.values().next_back()
    }

    /// Where the files end: the next key (`Keyed`) or stream offset (`Stream`); 0 if empty.
    pub fn end(&self) -> u64 {
        self.last().map_or(0, |s| s.end(self.layout))
    }

    /// A writer starting at the end of the files. One writer at a time (each user serializes
    /// its writes; `write` refuses a writer that no longer starts at the end).
    pub fn writer(&self) -> FrameWriter {
        FrameWriter {
            layout: self.layout,
            what: self.what,
            segment_bytes: self.segment_bytes,
            tail: self.last().map(|s| (s.id, s.len)),
            end: self.end(),
            chunks: Vec::new(),
            pending_bytes: 0,
        }
    }

    /// Writes what `writer` gathered: one `write_at` per segment touched. Readable at once;
    /// durable after a sync (`Keyed`: a segment being closed is synced before the next one is
    /// created). Returns the bytes written.
    pub fn write(&mut self, writer: &mut FrameWriter) -> Result<u64, StoreError> {
        let chunks = std::mem::take(&mut writer.chunks);
        writer.pending_bytes = 0;
        let mut written = 0u64;
        for chunk in chunks {
            let end = self.end();
            let fits = match (chunk.create, self.last()) {
                // A new segment starts at the end: exactly (`Stream`) or past a gap (`Keyed`).
                (true, _) => match self.layout {
                    Layout::Keyed => chunk.segment >= end,
                    Layout::Stream => chunk.segment == end,
                },
                (false, Some(tail)) => chunk.segment == tail.id && chunk.offset == tail.len,
                (false, None) => false,
            };
            if !fits {
                return Err(self.corrupt(format!(
                    "a write at segment {} byte {} where the files end at {end} (two writers?)",
                    chunk.segment, chunk.offset
                )));
            }
            if chunk.create {
                if self.layout == Layout::Keyed && !self.segments.is_empty() {
                    // Only the last segment may end torn: the one being closed is made durable
                    // before the next exists (once per segment).
                    self.files.sync()?;
                }
                self.files.create(chunk.segment)?;
                self.segments
                    .insert(chunk.segment, Segment::new(chunk.segment));
            }
            self.files
                .write_at(chunk.segment, chunk.offset, &chunk.bytes)?;
            let Some(segment) = self.segments.get_mut(&chunk.segment) else {
                return Err(self.corrupt(format!("segment {} vanished", chunk.segment)));
            };
            segment.len += chunk.bytes.len() as u64;
            segment.starts.extend(chunk.starts);
            written += chunk.bytes.len() as u64;
        }
        Ok(written)
    }

    /// Removes everything from `at` on: the first key to remove (`Keyed`) or the stream
    /// offset to cut at (`Stream`). Segments starting there or later are deleted, the one
    /// before is cut. Returns whether anything was removed. Durable after the next sync.
    pub fn truncate(&mut self, at: u64) -> Result<bool, StoreError> {
        if at >= self.end() {
            return Ok(false);
        }
        let doomed: Vec<u64> = self.segments.range(at..).map(|(&id, _)| id).collect();
        for id in doomed.into_iter().rev() {
            self.files.remove(id)?;
            self.segments.remove(&id);
        }
        let layout = self.layout;
        if let Some((_, tail)) = self.segments.iter_mut().next_back() {
            if at < tail.end(layout) {
                let cut = match layout {
                    Layout::Keyed => tail.frame_range(at).0,
                    Layout::Stream => at - tail.id,
                };
                self.files.truncate(tail.id, cut)?;
                tail.starts.truncate((at - tail.id) as usize);
                tail.len = cut;
            }
        }
        Ok(true)
    }

    /// Deletes every segment that ends at or before `below` (keys or stream offsets). Frames
    /// below it in a segment that also holds later ones stay until that segment goes. Durable
    /// after the next sync.
    pub fn purge(&mut self, below: u64) -> Result<(), StoreError> {
        let layout = self.layout;
        let doomed: Vec<u64> = self
            .segments
            .values()
            .filter(|s| s.end(layout) <= below)
            .map(|s| s.id)
            .collect();
        for id in doomed {
            self.files.remove(id)?;
            self.segments.remove(&id);
        }
        Ok(())
    }

    /// `Keyed`: zeroes the payload of every frame with a key in `[from, below)` still in the
    /// files, and gives its whole blocks back (`LogFiles::discard`), keeping each header with
    /// the checksum of its zeros (`frame::zeroed_crc`), so the open's scan still walks a valid
    /// frame: for purged log entries left in a segment that also holds later ones (an erase
    /// must not leave their events there). Nothing reads those keys any more. Durable after the
    /// next sync. Returns the frames zeroed.
    pub fn zero_frames(&self, from: u64, below: u64) -> Result<u64, StoreError> {
        debug_assert_eq!(self.layout, Layout::Keyed);
        let mut zeroed = 0;
        for segment in self.range(..below) {
            let first = from.max(segment.id);
            let end = below.min(segment.next_key());
            for key in first..end {
                let (start, stop) = segment.frame_range(key);
                let len = (stop - start)
                    .checked_sub(FRAME_HEADER_BYTES as u64)
                    .and_then(|len| u32::try_from(len).ok())
                    .ok_or_else(|| {
                        self.corrupt(format!(
                            "segment {}: frame {key} is shorter than a header",
                            segment.id
                        ))
                    })?;
                let mut header = [0u8; FRAME_HEADER_BYTES];
                header[0..4].copy_from_slice(&len.to_le_bytes());
                header[4..8].copy_from_slice(&frame::zeroed_crc(key, len).to_le_bytes());
                header[8..16].copy_from_slice(&key.to_le_bytes());
                self.files.write_at(segment.id, start, &header)?;
                self.files.discard(
                    segment.id,
                    start + FRAME_HEADER_BYTES as u64,
                    u64::from(len),
                )?;
                zeroed += 1;
            }
        }
        Ok(zeroed)
    }

    /// `Stream`: the segment holding a frame of `frame_bytes` at stream `offset`, and where in
    /// it the frame starts; `None` if the frame is not wholly inside one segment.
    pub fn locate(&self, offset: u64, frame_bytes: u64) -> Option<(u64, u64)> {
        let segment = self.range(..=offset).next_back()?;
        let in_segment = offset - segment.id;
        (in_segment + frame_bytes <= segment.len).then_some((segment.id, in_segment))
    }
}

/// The frame at the start of `bytes` if it is whole, undamaged and under `key`.
pub fn frame_under(bytes: &[u8], key: u64) -> Option<(Header, &[u8])> {
    frame::parse(bytes).filter(|(h, _)| h.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemLogFiles;

    /// A directory of `layout` whose segments roll after 64 bytes (two or three frames).
    fn open(files: &Arc<MemLogFiles>, layout: Layout) -> Result<SegmentFiles, StoreError> {
        SegmentFiles::open(files.clone(), layout, 64, "test segment")
    }

    /// Writes one 8-byte payload per key (keys `from..to`; `Stream` keys are just labels).
    fn write(dir: &mut SegmentFiles, keys: std::ops::Range<u64>) -> Vec<Placed> {
        let mut writer = dir.writer();
        let placed = keys
            .map(|k| writer.push_encoded(k, &k.to_le_bytes()).expect("push"))
            .collect();
        dir.write(&mut writer).expect("write");
        placed
    }

    /// Every frame's key and payload, segment by segment, checked.
    fn read_back(dir: &SegmentFiles) -> Vec<u64> {
        let mut keys = Vec::new();
        for segment in dir.range(..) {
            let mut bytes = vec![0u8; segment.len as usize];
            dir.files
                .read_exact_at(segment.id, 0, &mut bytes)
                .expect("read");
            let mut at = 0;
            while at < bytes.len() {
                let (h, payload) = frame::parse(&bytes[at..]).expect("a whole frame");
                assert_eq!(payload, h.key.to_le_bytes());
                keys.push(h.key);
                at += h.frame_bytes() as usize;
            }
        }
        keys
    }

    #[test]
    fn both_layouts_roll_name_and_read_back_after_reopening() {
        for layout in [Layout::Keyed, Layout::Stream] {
            let files = Arc::new(MemLogFiles::default());
            let mut dir = open(&files, layout).unwrap();
            let placed = write(&mut dir, 0..7);
            write(&mut dir, 7..10);
            let ids = files.list().unwrap();
            assert!(ids.len() >= 3, "{layout:?}: segments rolled");
            let firsts: Vec<u64> = dir.range(..).map(|s| first_key(&files, s.id)).collect();
            match layout {
                // Named by the key of the first frame.
                Layout::Keyed => assert_eq!(ids, firsts),
                // Named by stream offsets: each starts where the one before ends.
                Layout::Stream => {
                    let ends: Vec<u64> = dir.range(..).map(|s| s.id + s.len).collect();
                    assert_eq!(ids[0], 0);
                    assert_eq!(ids[1..], ends[..ends.len() - 1]);
                    assert_eq!(placed[0].segment, 0);
                }
            }
            assert_eq!(read_back(&dir), (0..10).collect::<Vec<_>>());
            let reopened = open(&files, layout).unwrap();
            assert_eq!(read_back(&reopened), (0..10).collect::<Vec<_>>());
            assert_eq!(reopened.end(), dir.end());
        }
    }

    fn first_key(files: &Arc<MemLogFiles>, id: u64) -> u64 {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        files.read_exact_at(id, 0, &mut header).unwrap();
        Header::parse(&header).unwrap().key
    }

    #[test]
    fn a_keyed_torn_tail_is_cut_at_any_byte_and_nothing_synced_is_lost() {
        let frame_bytes = FRAME_HEADER_BYTES + 8;
        for torn in 0..=frame_bytes {
            let files = Arc::new(MemLogFiles::default());
            let mut dir = open(&files, Layout::Keyed).unwrap();
            write(&mut dir, 0..5);
            files.sync().unwrap();
            write(&mut dir, 5..6);
            files.crash(0, torn);
            let mut dir = open(&files, Layout::Keyed).unwrap();
            let survived = if torn == frame_bytes { 6 } else { 5 };
            assert_eq!(read_back(&dir), (0..survived).collect::<Vec<_>>(), "{torn}");
            assert_eq!(dir.end(), survived);
            write(&mut dir, survived..survived + 1);
            assert_eq!(
                read_back(&open(&files, Layout::Keyed).unwrap()).len() as u64,
                survived + 1
            );
        }
    }

    #[test]
    fn a_keyed_bad_frame_is_cut_with_everything_after_it_and_the_whole_frames_after_it_named() {
        let files = Arc::new(MemLogFiles::default());
        let mut dir = open(&files, Layout::Keyed).unwrap();
        write(&mut dir, 0..8);
        files.sync().unwrap();
        let ids = files.list().unwrap();
        let last = *ids.last().unwrap();
        let last_len = files.len(last).unwrap();
        // The last byte of the last frame's payload: that frame is cut, the rest stays, and
        // nothing whole followed it (as after a torn write).
        files.write_at(last, last_len - 1, &[0xff]).unwrap();
        let dir = open(&files, Layout::Keyed).unwrap();
        assert_eq!(read_back(&dir), (0..7).collect::<Vec<_>>());
        let cut = dir.cut().expect("a cut");
        assert_eq!((cut.key, cut.highest_whole_key), (7, None));
        // A damaged header in the first segment (a frame under the wrong key): everything
        // from it on goes, and the cut names the whole frames that went with it.
        files.write_at(ids[0], 8, &[0xee]).unwrap();
        let dir = open(&files, Layout::Keyed).unwrap();
        assert_eq!(read_back(&dir), Vec::<u64>::new());
        let cut = dir.cut().expect("a cut");
        assert_eq!((cut.key, cut.highest_whole_key), (0, Some(6)));
        assert!(files.list().unwrap().is_empty(), "{:?}", files.list());
        // Reopened, the files are whole again: nothing more is cut.
        assert!(open(&files, Layout::Keyed).unwrap().cut().is_none());
    }

    #[test]
    fn a_stream_frame_torn_or_damaged_does_not_read_back_and_truncation_cuts_it() {
        let files = Arc::new(MemLogFiles::default());
        let mut dir = open(&files, Layout::Stream).unwrap();
        let placed = write(&mut dir, 0..4);
        files.sync().unwrap();
        let torn = write(&mut dir, 4..5)[0];
        files.crash(0, 10);
        let mut dir = open(&files, Layout::Stream).unwrap();
        let frame_bytes = FRAME_HEADER_BYTES as u64 + 8;
        assert_eq!(dir.locate(torn.segment + torn.offset, frame_bytes), None);
        // The user's index says where the stream ends; the torn bytes after it go.
        assert!(dir.truncate(torn.segment + torn.offset).unwrap());
        assert_eq!(read_back(&dir), vec![0, 1, 2, 3]);
        // A damaged payload: its frame is where the index says, but its checksum fails.
        let damaged = placed[1];
        let payload_at = damaged.offset + FRAME_HEADER_BYTES as u64;
        files
            .write_at(damaged.segment, payload_at, &[0xff])
            .unwrap();
        let (id, at) = dir
            .locate(damaged.segment + damaged.offset, frame_bytes)
            .unwrap();
        let mut bytes = vec![0u8; frame_bytes as usize];
        files.read_exact_at(id, at, &mut bytes).unwrap();
        assert!(frame_under(&bytes, 1).is_none());
        bytes[FRAME_HEADER_BYTES] = 1;
        assert!(
            frame_under(&bytes, 1).is_some(),
            "the same bytes, undamaged"
        );
    }

    #[test]
    fn truncation_cuts_whole_and_partial_segments_in_both_layouts() {
        for layout in [Layout::Keyed, Layout::Stream] {
            let files = Arc::new(MemLogFiles::default());
            let mut dir = open(&files, layout).unwrap();
            let placed = write(&mut dir, 0..10);
            let segments_before = files.list().unwrap().len();
            let at = match layout {
                Layout::Keyed => 5,
                Layout::Stream => placed[5].segment + placed[5].offset,
            };
            assert!(dir.truncate(at).unwrap());
            assert!(
                !dir.truncate(at).unwrap(),
                "{layout:?}: nothing left to cut"
            );
            assert!(files.list().unwrap().len() < segments_before);
            assert_eq!(read_back(&dir), (0..5).collect::<Vec<_>>(), "{layout:?}");
            assert_eq!(dir.end(), at);
            write(&mut dir, 5..7);
            files.sync().unwrap();
            let mut reopened = open(&files, layout).unwrap();
            assert_eq!(
                read_back(&reopened),
                (0..7).collect::<Vec<_>>(),
                "{layout:?}"
            );
            reopened.truncate(0).unwrap();
            assert!(files.list().unwrap().is_empty());
            assert_eq!(reopened.end(), 0);
        }
    }

    #[test]
    fn purge_deletes_only_whole_segments_below_the_point() {
        let files = Arc::new(MemLogFiles::default());
        let mut dir = open(&files, Layout::Keyed).unwrap();
        write(&mut dir, 0..10);
        let first_kept = dir.range(..).find(|s| s.next_key() > 4).unwrap().id;
        dir.purge(4).unwrap();
        assert_eq!(dir.range(..).next().map(|s| s.id), Some(first_kept));
        assert_eq!(read_back(&dir), (first_kept..10).collect::<Vec<_>>());
        dir.purge(100).unwrap();
        assert!(files.list().unwrap().is_empty());
    }

    #[test]
    fn writes_that_do_not_follow_the_end_are_refused_and_change_nothing() {
        let files = Arc::new(MemLogFiles::default());
        let mut dir = open(&files, Layout::Keyed).unwrap();
        write(&mut dir, 0..3);
        let mut over = dir.writer();
        assert!(over.push_encoded(1, b"x").is_err(), "over existing keys");
        let mut stale = dir.writer();
        stale.push_encoded(3, b"y").unwrap();
        write(&mut dir, 3..4);
        assert!(dir.write(&mut stale).is_err(), "a second writer");
        assert_eq!(read_back(&dir), vec![0, 1, 2, 3]);
        // A gap starts a segment of its own.
        write(&mut dir, 9..10);
        assert_eq!(dir.last().map(|s| s.id), Some(9));
    }

    #[test]
    fn overlapping_stream_segments_fail_the_open() {
        let files = Arc::new(MemLogFiles::default());
        let mut dir = open(&files, Layout::Stream).unwrap();
        write(&mut dir, 0..2);
        files.create(1).unwrap();
        let err = open(&files, Layout::Stream).err().expect("open must fail");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
