//! Snapshot data: the type openraft moves around, its byte format, and the lazy reader that
//! streams a snapshot straight out of the store.
//!
//! The snapshot at log point P is the append groups below P's `$all` end that the store still
//! holds, plus the stream-index entries a scavenge or erase kept without their group (a
//! stream's head: where its revisions go on). Building one costs nothing; its bytes are
//! produced only when somebody reads them, a few groups at a time, so neither side ever holds
//! the store in memory.
//!
//! That is an exact image of P because below P's end only a forgetting step (scavenge, erase)
//! changes the store, and each one bumps the store's generation before it writes and records
//! a new snapshot at its own point (`state_machine`): a reader checks the generation after
//! reading each chunk and stops with `SnapshotSourceChanged` when it moved, so the leader
//! sends the newer snapshot instead.
//!
//! Format: `MAGIC`, then frames `[len: u32 LE][first_position: u64 LE][crc: u32 LE][group: len
//! bytes]` in position order, then kept heads `[KEPT_HEAD_MARK][len: u32 LE][crc: u32 LE][len
//! bytes: key length u16 LE, stream-index key, run]`, then `[0u32][end_position: u64 LE]
//! [group_count: u64 LE][head_count: u64 LE][crc: u32 LE]`. A frame's checksum is the group
//! file frame's (`frame::crc` of the first position and the group), carried over as it was
//! read back and checked; a kept head's covers its bytes, the trailer's its three counts. So a
//! bit flipped on the wire or in the receiver's spool file is refused before it is installed,
//! and the group is never re-hashed by the sender. `MAGIC_V2` streams (no kept heads, a
//! trailer without their count) from nodes of the previous version are still read.

use std::io::{self, Cursor, SeekFrom};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::disk::{Disk, Order, SnapshotSpool};
use crate::error::StoreError;
use crate::group_files::{GroupFiles, Location};
use crate::keys;
use crate::stream_run::StreamRun;

pub const MAGIC: &[u8; 8] = b"CAIRNSN3";
/// The previous version's streams: groups only, a trailer of two counts.
pub const MAGIC_V2: &[u8; 8] = b"CAIRNSN2";
/// Stands where a group frame's length would, before a kept head (no group is that long).
pub const KEPT_HEAD_MARK: u32 = u32::MAX;
/// Largest kept head record: a stream-index key (a stream name of at most a few hundred
/// bytes, a metastream's `$$` prefix, a revision) and its run. A record claiming more is
/// refused before anything is allocated for it.
pub const MAX_KEPT_HEAD_BYTES: usize = 1024;
/// Stream-index entries read per chunk while looking for kept heads.
pub const KEPT_HEAD_SCAN_KEYS: usize = 1024;
/// Largest snapshot a node spools to a file while receiving it; past it the install fails
/// with an error naming this limit (and the leader retries later), so a runaway or hostile
/// stream cannot fill the disk.
pub const MAX_SNAPSHOT_SPOOL_BYTES: u64 = 256 * 1024 * 1024 * 1024;
/// The same for the in-memory spool of the disk model (the simulation).
pub const MAX_SNAPSHOT_MEMORY_SPOOL_BYTES: u64 = 1024 * 1024 * 1024;

/// Appends one snapshot frame: the group `payload` starting at `position`, with `crc`
/// (`frame::crc(position, payload)`).
pub(crate) fn push_frame(buf: &mut Vec<u8>, position: u64, crc: u32, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&position.to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// A stream-index entry kept without its group: the key and its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeptHead {
    pub key: Vec<u8>,
    pub run: StreamRun,
}

impl KeptHead {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(2 + self.key.len() + 12);
        bytes.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&self.key);
        bytes.extend_from_slice(&self.run.encode());
        bytes
    }

    /// Decodes and checks a kept head record: a stream-index key of a valid stream name.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let bad = |detail: &str| StoreError::InvalidSnapshot(format!("kept head: {detail}"));
        let (len, rest) = bytes
            .split_at_checked(2)
            .ok_or_else(|| bad("short record"))?;
        let key_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let (key, run) = rest
            .split_at_checked(key_len)
            .ok_or_else(|| bad("key longer than the record"))?;
        let stream = keys::stream_key_name(key).ok_or_else(|| bad("not a stream-index key"))?;
        if stream.is_empty() {
            return Err(bad("empty stream name"));
        }
        let run = StreamRun::decode(run)?;
        if run.count == 0 {
            return Err(bad("a run of no events"));
        }
        Ok(KeptHead {
            key: key.to_vec(),
            run,
        })
    }
}

/// Appends one kept head record.
pub(crate) fn push_kept_head(buf: &mut Vec<u8>, head: &KeptHead) {
    let payload = head.encode();
    buf.extend_from_slice(&KEPT_HEAD_MARK.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
}

/// The trailer's checksum: its end position, group count and (from `MAGIC` on) head count.
pub(crate) fn trailer_crc(end_position: u64, group_count: u64, head_count: Option<u64>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&end_position.to_le_bytes());
    hasher.update(&group_count.to_le_bytes());
    if let Some(heads) = head_count {
        hasher.update(&heads.to_le_bytes());
    }
    hasher.finalize()
}

/// Appends the trailer.
pub(crate) fn push_trailer(buf: &mut Vec<u8>, end_position: u64, group_count: u64, heads: u64) {
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&end_position.to_le_bytes());
    buf.extend_from_slice(&group_count.to_le_bytes());
    buf.extend_from_slice(&heads.to_le_bytes());
    buf.extend_from_slice(&trailer_crc(end_position, group_count, Some(heads)).to_le_bytes());
}
/// Append groups read from the store per chunk of a lazy snapshot. A group is at most
/// `MAX_APPEND_BYTES`, so a chunk is bounded by this many of those.
pub const SNAPSHOT_GROUPS_PER_CHUNK: usize = 8;

/// Snapshot bytes: streamed from a store, or spooled to a file or memory while being received.
pub struct SnapshotData {
    inner: Inner,
    /// Bytes written to the spool so far (bounded by `MAX_SNAPSHOT_SPOOL_BYTES`).
    spooled: u64,
}

enum Inner {
    Memory(Cursor<Vec<u8>>),
    File(tokio::fs::File),
    Lazy(Box<LazySnapshot>),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            Inner::Memory(c) => format!("memory({} bytes)", c.get_ref().len()),
            Inner::File(_) => "file".to_string(),
            Inner::Lazy(l) => format!("lazy(end_position {})", l.source.end_position),
        };
        write!(f, "SnapshotData::{kind}")
    }
}

impl SnapshotData {
    /// An empty in-memory spool (the simulation's disk model uses this).
    pub fn memory() -> Self {
        SnapshotData {
            inner: Inner::Memory(Cursor::new(Vec::new())),
            spooled: 0,
        }
    }

    /// A spool on disk.
    pub fn file(file: std::fs::File) -> Self {
        SnapshotData {
            inner: Inner::File(tokio::fs::File::from_std(file)),
            spooled: 0,
        }
    }

    /// The spool a disk gave for a snapshot being received.
    pub fn spool(spool: SnapshotSpool) -> Self {
        match spool {
            SnapshotSpool::Memory => Self::memory(),
            SnapshotSpool::File(file) => Self::file(file),
        }
    }

    /// Where a snapshot received from the leader is spooled until it is installed: the
    /// disk's scratch space (a file in the data dir, or memory for the disk model).
    pub fn receiving(disk: &dyn Disk) -> io::Result<Self> {
        Ok(Self::spool(disk.snapshot_spool()?))
    }

    pub(crate) fn lazy(source: SnapshotSource) -> Self {
        SnapshotData {
            inner: Inner::Lazy(Box::new(LazySnapshot::new(source))),
            spooled: 0,
        }
    }
}

/// Where a lazy snapshot reads from.
#[derive(Clone)]
pub(crate) struct SnapshotSource {
    pub disk: Arc<dyn Disk>,
    pub groups: Arc<GroupFiles>,
    /// Bumped whenever the state machine is replaced; a reader of the old one must stop.
    pub generation: Arc<AtomicU64>,
    pub expected_generation: u64,
    /// The snapshot holds every group below this `$all` position.
    pub end_position: u64,
    /// Whether it carries the stream heads kept without their group (always, but for the
    /// planted bug `snapshot_ignores_forgetting`).
    pub kept_heads: bool,
}

impl SnapshotSource {
    /// Whether the store still holds what this snapshot was made from (checked after each
    /// read: a forgetting step bumps the generation before it writes).
    fn check_unchanged(&self) -> Result<(), StoreError> {
        if self.generation.load(Ordering::Acquire) != self.expected_generation {
            return Err(StoreError::SnapshotSourceChanged);
        }
        Ok(())
    }
}

enum Stage {
    Header,
    Groups {
        next_position: u64,
        groups: u64,
    },
    /// Stream-index entries after `after` (the whole table when `None`) are looked at next.
    KeptHeads {
        after: Option<Vec<u8>>,
        groups: u64,
        heads: u64,
    },
    Done,
}

/// Produces the snapshot bytes chunk by chunk.
struct Generator {
    stage: Stage,
    chunk: Vec<u8>,
    chunk_pos: usize,
}

impl Generator {
    fn new() -> Self {
        Generator {
            stage: Stage::Header,
            chunk: Vec::new(),
            chunk_pos: 0,
        }
    }

    fn available(&self) -> &[u8] {
        &self.chunk[self.chunk_pos..]
    }

    /// Refills `chunk` with the next piece; leaves it empty at the end of the stream.
    fn fill(&mut self, source: &SnapshotSource) -> Result<(), StoreError> {
        self.chunk.clear();
        self.chunk_pos = 0;
        match self.stage {
            Stage::Header => {
                self.chunk.extend_from_slice(MAGIC);
                self.stage = Stage::Groups {
                    next_position: 0,
                    groups: 0,
                };
            }
            Stage::Groups {
                mut next_position,
                mut groups,
            } => {
                source.check_unchanged()?;
                let range = keys::u64_range(keys::EVENTS, next_position, source.end_position);
                let page = source
                    .disk
                    .scan(&range, Order::Ascending, SNAPSHOT_GROUPS_PER_CHUNK)?;
                if page.is_empty() {
                    self.stage = if !source.kept_heads {
                        push_trailer(&mut self.chunk, source.end_position, groups, 0);
                        Stage::Done
                    } else {
                        Stage::KeptHeads {
                            after: None,
                            groups,
                            heads: 0,
                        }
                    };
                    return Ok(());
                }
                for (key, value) in page {
                    let position = keys::key_u64(&key)
                        .ok_or_else(|| StoreError::corrupt("event key", "short key"))?;
                    let location = Location::decode(&value)?;
                    let frame = source.groups.read(location, position)?;
                    push_frame(&mut self.chunk, position, frame.crc(), frame.payload());
                    next_position = position + 1;
                    groups += 1;
                }
                source.check_unchanged()?;
                self.stage = Stage::Groups {
                    next_position,
                    groups,
                };
            }
            Stage::KeptHeads {
                ref after,
                groups,
                mut heads,
            } => {
                let mut range = keys::table_range(keys::STREAMS);
                if let Some(after) = after {
                    range.start = after.clone();
                    range.start.push(0);
                }
                let page = source
                    .disk
                    .scan(&range, Order::Ascending, KEPT_HEAD_SCAN_KEYS)?;
                let last_key = page.last().map(|(key, _)| key.clone());
                for (key, value) in page {
                    let run = StreamRun::decode(&value)?;
                    if run.first_position < source.end_position
                        && source
                            .disk
                            .get(&keys::event_key(run.first_position))?
                            .is_none()
                    {
                        push_kept_head(&mut self.chunk, &KeptHead { key, run });
                        heads += 1;
                    }
                }
                source.check_unchanged()?;
                match last_key {
                    Some(after) => {
                        self.stage = Stage::KeptHeads {
                            after: Some(after),
                            groups,
                            heads,
                        }
                    }
                    None => {
                        // Contiguity and the end are checked by the receiver.
                        push_trailer(&mut self.chunk, source.end_position, groups, heads);
                        self.stage = Stage::Done;
                    }
                }
            }
            Stage::Done => {}
        }
        Ok(())
    }
}

/// A read-only snapshot generated from the store as it is read. Seeking backwards restarts the
/// generator; seeking from the end first measures the whole stream (a full pass without
/// keeping anything), which is why Cairn's own transport streams snapshots without asking for
/// their length.
struct LazySnapshot {
    source: SnapshotSource,
    generator: Generator,
    /// Bytes handed out so far (the stream position).
    offset: u64,
    total_len: Option<u64>,
    seek_target: Option<SeekFrom>,
}

impl LazySnapshot {
    fn new(source: SnapshotSource) -> Self {
        LazySnapshot {
            source,
            generator: Generator::new(),
            offset: 0,
            total_len: None,
            seek_target: None,
        }
    }

    /// Makes bytes available unless the stream has ended.
    fn ensure_available(&mut self) -> io::Result<()> {
        while self.generator.available().is_empty() && !matches!(self.generator.stage, Stage::Done)
        {
            self.generator.fill(&self.source)?;
        }
        Ok(())
    }

    fn measure(&mut self) -> io::Result<u64> {
        if let Some(len) = self.total_len {
            return Ok(len);
        }
        let mut generator = Generator::new();
        let mut len = 0u64;
        loop {
            generator.fill(&self.source)?;
            len += generator.chunk.len() as u64;
            if matches!(generator.stage, Stage::Done) {
                break;
            }
        }
        self.total_len = Some(len);
        Ok(len)
    }

    fn seek_to(&mut self, target: SeekFrom) -> io::Result<u64> {
        let absolute = match target {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.offset.checked_add_signed(d),
            SeekFrom::End(d) => self.measure()?.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        if absolute < self.offset {
            self.generator = Generator::new();
            self.offset = 0;
        }
        while self.offset < absolute {
            self.ensure_available()?;
            let available = self.generator.available().len() as u64;
            if available == 0 {
                break; // past the end: reads return nothing, as with a file
            }
            let step = available.min(absolute - self.offset);
            self.generator.chunk_pos += step as usize;
            self.offset += step;
        }
        Ok(absolute)
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Memory(c) => Pin::new(c).poll_read(cx, buf),
            Inner::File(f) => Pin::new(f).poll_read(cx, buf),
            Inner::Lazy(lazy) => {
                lazy.ensure_available()?;
                let available = lazy.generator.available();
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                lazy.generator.chunk_pos += n;
                lazy.offset += n as u64;
                Poll::Ready(Ok(()))
            }
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a snapshot streamed from the store is read-only",
    )
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let limit = match &this.inner {
            Inner::Memory(_) => MAX_SNAPSHOT_MEMORY_SPOOL_BYTES,
            Inner::File(_) => MAX_SNAPSHOT_SPOOL_BYTES,
            Inner::Lazy(_) => return Poll::Ready(Err(read_only())),
        };
        if this.spooled + data.len() as u64 > limit {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "a snapshot of more than {limit} bytes (MAX_SNAPSHOT_SPOOL_BYTES) is refused"
                ),
            )));
        }
        let written = match &mut this.inner {
            Inner::Memory(c) => Pin::new(c).poll_write(cx, data),
            Inner::File(f) => Pin::new(f).poll_write(cx, data),
            Inner::Lazy(_) => Poll::Ready(Err(read_only())),
        };
        if let Poll::Ready(Ok(n)) = &written {
            this.spooled += *n as u64;
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Memory(c) => Pin::new(c).poll_flush(cx),
            Inner::File(f) => Pin::new(f).poll_flush(cx),
            Inner::Lazy(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Memory(c) => Pin::new(c).poll_shutdown(cx),
            Inner::File(f) => Pin::new(f).poll_shutdown(cx),
            Inner::Lazy(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        match &mut self.get_mut().inner {
            Inner::Memory(c) => Pin::new(c).start_seek(position),
            Inner::File(f) => Pin::new(f).start_seek(position),
            Inner::Lazy(lazy) => {
                lazy.seek_target = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match &mut self.get_mut().inner {
            Inner::Memory(c) => Pin::new(c).poll_complete(cx),
            Inner::File(f) => Pin::new(f).poll_complete(cx),
            Inner::Lazy(lazy) => match lazy.seek_target.take() {
                Some(target) => Poll::Ready(lazy.seek_to(target)),
                None => Poll::Ready(Ok(lazy.offset)),
            },
        }
    }
}
