//! Value codecs shared by the keyspace's tables and the files: postcard for structured
//! values, fixed big-endian layouts for the small ones (a position; a u64 and a u32).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::corrupt("encode", e))
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::corrupt(what, e))
}

/// Decodes a value from the front of `bytes`; returns it and the bytes after it.
pub(crate) fn decode_prefix<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<(T, &'a [u8]), StoreError> {
    postcard::take_from_bytes(bytes).map_err(|e| StoreError::corrupt(what, e))
}

/// Bytes of a value made of a u64 and a u32 (a stream run, a group's location).
pub const U64_U32_BYTES: usize = 12;

/// A u64 then a u32, big-endian.
pub fn encode_u64_u32(a: u64, b: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(U64_U32_BYTES);
    v.extend_from_slice(&a.to_be_bytes());
    v.extend_from_slice(&b.to_be_bytes());
    v
}

pub fn decode_u64_u32(what: &'static str, bytes: &[u8]) -> Result<(u64, u32), StoreError> {
    let bytes: [u8; U64_U32_BYTES] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(what, "value is not 12 bytes"))?;
    let (a, b) = bytes.split_at(8);
    Ok((
        u64::from_be_bytes(a.try_into().expect("8 bytes")),
        u32::from_be_bytes(b.try_into().expect("4 bytes")),
    ))
}

/// A u32, big-endian (an index run's length).
pub fn encode_u32(n: u32) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

pub fn decode_u32(what: &'static str, bytes: &[u8]) -> Result<u32, StoreError> {
    let b: [u8; 4] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(what, "value is not 4 bytes"))?;
    Ok(u32::from_be_bytes(b))
}

pub fn decode_position(bytes: &[u8]) -> Result<u64, StoreError> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt("event id index", "value is not 8 bytes"))?;
    Ok(u64::from_be_bytes(b))
}
