//! The value of a stream-index key, on its own so that the snapshot format (which carries the
//! stream heads a scavenge keeps) reads it without the records' imports.

use crate::codec::{decode_u64_u32, encode_u64_u32};
use crate::error::StoreError;

/// Value of a stream-index key: where one append to the stream landed in `$all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRun {
    pub first_position: u64,
    pub count: u32,
}

impl StreamRun {
    pub fn encode(self) -> Vec<u8> {
        encode_u64_u32(self.first_position, self.count)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let (first_position, count) = decode_u64_u32("stream run", bytes)?;
        Ok(StreamRun {
            first_position,
            count,
        })
    }
}
