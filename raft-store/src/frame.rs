//! The frame of both kinds of segment files, the Raft log's (`segment_log`) and the event
//! groups' (`group_files`), written and checked here only; the files themselves are
//! `segment_file`'s.
//!
//! A frame is `[payload length u32][crc32 of key and payload u32][key u64]` then the payload,
//! little-endian. The key is the log entry's index or the group's first `$all` position; the
//! checksum covers it, so a frame read at the wrong place is found as surely as a damaged one.
//! The encoding is format 1's (`format`): changing it is a new format version.

use serde::Serialize;

use crate::error::StoreError;

/// Bytes of a frame before its payload.
pub const FRAME_HEADER_BYTES: usize = 16;

/// The checksum of a frame: its key, then its payload.
pub fn crc(key: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&key.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The checksum of a frame of `len` zero bytes under `key`: what a discarded (scavenged)
/// frame's header says, so that it stays a valid frame for every scan of the files.
pub fn zeroed_crc(key: u64, len: u32) -> u32 {
    const ZEROS_BYTES: usize = 64 * 1024;
    let zeros = [0u8; ZEROS_BYTES];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&key.to_le_bytes());
    let mut left = len as usize;
    while left > 0 {
        let step = left.min(ZEROS_BYTES);
        hasher.update(&zeros[..step]);
        left -= step;
    }
    hasher.finalize()
}

/// A frame header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload bytes.
    pub len: u32,
    pub crc: u32,
    pub key: u64,
}

impl Header {
    /// The header at the start of `bytes`; `None` if fewer than `FRAME_HEADER_BYTES` remain
    /// (a torn write, or a reader's bug).
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let header: &[u8; FRAME_HEADER_BYTES] = bytes.get(..FRAME_HEADER_BYTES)?.try_into().ok()?;
        let [l0, l1, l2, l3, c0, c1, c2, c3, k @ ..] = *header;
        Some(Header {
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
            key: u64::from_le_bytes(k),
        })
    }

    /// Bytes of the whole frame, header included.
    pub fn frame_bytes(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + u64::from(self.len)
    }

    /// Whether `payload` is this frame's, whole and undamaged.
    pub fn holds(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && crc(self.key, payload) == self.crc
    }
}

/// The frame at the start of `bytes`, checked: its header and payload, or `None` if the bytes
/// end before the frame does or its checksum does not hold.
pub fn parse(bytes: &[u8]) -> Option<(Header, &[u8])> {
    let header = Header::parse(bytes)?;
    let end = FRAME_HEADER_BYTES.checked_add(header.len as usize)?;
    let payload = bytes.get(FRAME_HEADER_BYTES..end)?;
    header.holds(payload).then_some((header, payload))
}

/// Starts a frame at the end of `buf` (its header, filled by `finish`); returns where it
/// starts. The payload is then appended to `buf`.
pub fn begin(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    start
}

/// Fills in the header of the frame begun at `start`, whose payload is everything after its
/// header. Returns the payload's length.
pub fn finish(buf: &mut [u8], start: usize, key: u64) -> Result<u32, StoreError> {
    let payload = &buf[start + FRAME_HEADER_BYTES..];
    let len = u32::try_from(payload.len())
        .map_err(|_| StoreError::corrupt("frame", "a payload larger than 4 GiB"))?;
    let checksum = crc(key, payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
    buf[start + 8..start + 16].copy_from_slice(&key.to_le_bytes());
    Ok(len)
}

/// Appends `value`, postcard-encoded straight into `buf`, as one frame under `key`. Returns
/// the payload's length.
pub fn push<T: Serialize>(
    buf: &mut Vec<u8>,
    key: u64,
    value: &T,
    what: &'static str,
) -> Result<u32, StoreError> {
    let start = begin(buf);
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(value, taken).map_err(|e| StoreError::corrupt(what, e))?;
    finish(buf, start, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(key: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let start = begin(&mut buf);
        buf.extend_from_slice(payload);
        finish(&mut buf, start, key).unwrap();
        buf
    }

    #[test]
    fn a_frame_is_the_format_1_layout_and_reads_back() {
        let bytes = frame(7, b"abc");
        assert_eq!(bytes.len(), FRAME_HEADER_BYTES + 3);
        assert_eq!(&bytes[0..4], &3u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &crc(7, b"abc").to_le_bytes());
        assert_eq!(&bytes[8..16], &7u64.to_le_bytes());
        let (header, payload) = parse(&bytes).expect("a whole frame");
        assert_eq!((header.key, header.len, payload), (7, 3, &b"abc"[..]));
        let mut pushed = Vec::new();
        let len = push(&mut pushed, 9, &(1u8, "x"), "test").unwrap();
        let (header, payload) = parse(&pushed).unwrap();
        assert_eq!((header.key, header.len as usize), (9, payload.len()));
        assert_eq!(len as usize, payload.len());
    }

    #[test]
    fn a_frame_cut_at_any_byte_does_not_parse() {
        let bytes = frame(3, b"a payload of some length");
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn damage_to_any_byte_of_a_frame_is_found() {
        let bytes = frame(3, b"a payload");
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(parse(&damaged).is_none(), "byte {at}");
        }
    }
}
