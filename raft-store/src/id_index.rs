//! The event-id index (id -> `$all` position), packed into buckets by the id's first 8 bytes.
//!
//! One sled key per event id made the id index the largest cost of applying an append (sled
//! splits a leaf every 16 keys and copies it on every insert). Ids that share their first 8
//! bytes share one key instead: a UUIDv7's first 8 bytes are its millisecond and the high bits
//! of its generator's counter, so the ids of one append usually land in one bucket and an
//! append of 100 events costs one read and one write of the index instead of 100 of each.
//! Random (v4) ids get a bucket each, as before. A bucket holds at most
//! `MAX_IDS_PER_BUCKET`; an id that finds its bucket full is stored under a key of its own
//! (the older layout), and a lookup that misses a full bucket looks there too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use crate::disk::{rewrite_range, Disk, Order, Rewrite, WriteBatch};
use crate::error::StoreError;
use crate::keys;
use crate::records::decode_position;

/// Most ids in one bucket; beyond it an id gets its own key. Bounds a bucket's value at
/// `MAX_IDS_PER_BUCKET * ENTRY_BYTES` (4 KiB), the cost of rewriting it.
pub const MAX_IDS_PER_BUCKET: usize = 256;
/// The id's last 8 bytes and the position, both big-endian.
const ENTRY_BYTES: usize = 16;

type Prefix = [u8; 8];
type Suffix = [u8; 8];

fn split(id: &Uuid) -> (Prefix, Suffix) {
    let bytes = id.as_bytes();
    let mut prefix = [0u8; 8];
    let mut suffix = [0u8; 8];
    prefix.copy_from_slice(&bytes[..8]);
    suffix.copy_from_slice(&bytes[8..]);
    (prefix, suffix)
}

/// The ids of one bucket, sorted by suffix.
#[derive(Debug, Default, Clone)]
struct Bucket {
    entries: Vec<(Suffix, u64)>,
    /// Changed since it was read: to be written.
    dirty: bool,
}

impl Bucket {
    fn decode(bytes: &[u8]) -> Result<Bucket, StoreError> {
        if bytes.len() % ENTRY_BYTES != 0 || bytes.len() / ENTRY_BYTES > MAX_IDS_PER_BUCKET {
            return Err(StoreError::corrupt(
                "event id bucket",
                format!("{} bytes", bytes.len()),
            ));
        }
        let entries = bytes
            .chunks_exact(ENTRY_BYTES)
            .map(|chunk| {
                let mut suffix = [0u8; 8];
                suffix.copy_from_slice(&chunk[..8]);
                Ok((suffix, decode_position(&chunk[8..])?))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Bucket {
            entries,
            dirty: false,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * ENTRY_BYTES);
        for (suffix, position) in &self.entries {
            bytes.extend_from_slice(suffix);
            bytes.extend_from_slice(&position.to_be_bytes());
        }
        bytes
    }

    /// Where `suffix` is (`Ok`) or would go (`Err`).
    fn place(&self, suffix: &Suffix) -> Result<usize, usize> {
        self.entries.binary_search_by(|(s, _)| s.cmp(suffix))
    }

    fn find(&self, suffix: &Suffix) -> Result<u64, usize> {
        self.place(suffix).map(|i| self.entries[i].1)
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= MAX_IDS_PER_BUCKET
    }
}

fn read_bucket(disk: &dyn Disk, prefix: &Prefix) -> Result<Bucket, StoreError> {
    match disk.get(&keys::event_id_bucket_key(prefix))? {
        Some(bytes) => Bucket::decode(&bytes),
        None => Ok(Bucket::default()),
    }
}

fn read_own_key(disk: &dyn Disk, id: &Uuid) -> Result<Option<u64>, StoreError> {
    match disk.get(&keys::event_id_key(id))? {
        Some(bytes) => Ok(Some(decode_position(&bytes)?)),
        None => Ok(None),
    }
}

/// Where the event with this id is stored, straight from the disk.
pub fn stored_position(disk: &dyn Disk, id: &Uuid) -> Result<Option<u64>, StoreError> {
    let (prefix, suffix) = split(id);
    match read_bucket(disk, &prefix)?.find(&suffix) {
        Ok(position) => Ok(Some(position)),
        Err(_) => read_own_key(disk, id),
    }
}

/// Whether any id is stored under a key of its own (a full bucket's overflow, or a store
/// written before buckets). While none is, a lookup that misses a bucket that is not full
/// needs no second read.
pub fn any_own_keys(disk: &dyn Disk) -> Result<bool, StoreError> {
    let range = keys::table_range(keys::EVENT_IDS);
    Ok(!disk.scan(&range, Order::Ascending, 1)?.is_empty())
}

/// Removes every id stored at `position` or later (a state machine rolled back to a snapshot),
/// `page_keys` keys at a time.
pub fn forget_from(disk: &dyn Disk, position: u64, page_keys: usize) -> Result<(), StoreError> {
    rewrite_range(
        disk,
        &keys::table_range(keys::EVENT_ID_BUCKETS),
        page_keys,
        |_, value| {
            let mut bucket = Bucket::decode(value)?;
            let before = bucket.entries.len();
            bucket.entries.retain(|&(_, stored)| stored < position);
            Ok(match bucket.entries.len() {
                n if n == before => Rewrite::Keep,
                0 => Rewrite::Delete,
                _ => Rewrite::Put(bucket.encode()),
            })
        },
    )?;
    rewrite_range(
        disk,
        &keys::table_range(keys::EVENT_IDS),
        page_keys,
        |_, value| {
            Ok(if decode_position(value)? >= position {
                Rewrite::Delete
            } else {
                Rewrite::Keep
            })
        },
    )
}

/// Reads and changes the index within one batch of writes: buckets are read once, changed in
/// memory, and written whole when the batch is (`write_into`).
pub struct IdIndexBatch<'a> {
    disk: &'a dyn Disk,
    own_keys: &'a AtomicBool,
    buckets: HashMap<Prefix, Bucket>,
    /// Ids added to this batch whose bucket was full.
    overflow: HashMap<Uuid, u64>,
    dirty_entries: usize,
}

impl<'a> IdIndexBatch<'a> {
    /// `own_keys` says whether ids with keys of their own may exist; set when one is written.
    pub fn new(disk: &'a dyn Disk, own_keys: &'a AtomicBool) -> Self {
        IdIndexBatch {
            disk,
            own_keys,
            buckets: HashMap::new(),
            overflow: HashMap::new(),
            dirty_entries: 0,
        }
    }

    fn bucket(&mut self, prefix: Prefix) -> Result<&mut Bucket, StoreError> {
        if !self.buckets.contains_key(&prefix) {
            let bucket = read_bucket(self.disk, &prefix)?;
            self.buckets.insert(prefix, bucket);
        }
        Ok(self.buckets.get_mut(&prefix).expect("inserted above"))
    }

    /// Where the event with this id is stored: written, or added to this batch.
    pub fn position(&mut self, id: &Uuid) -> Result<Option<u64>, StoreError> {
        if let Some(&position) = self.overflow.get(id) {
            return Ok(Some(position));
        }
        let (prefix, suffix) = split(id);
        let own_keys = self.own_keys.load(Ordering::Acquire);
        let bucket = self.bucket(prefix)?;
        match bucket.find(&suffix) {
            Ok(position) => Ok(Some(position)),
            Err(_) if bucket.is_full() || own_keys => read_own_key(self.disk, id),
            Err(_) => Ok(None),
        }
    }

    /// Adds an id that is not stored yet. A full bucket sends it to a key of its own.
    pub fn insert(&mut self, id: &Uuid, position: u64) -> Result<(), StoreError> {
        let (prefix, suffix) = split(id);
        let bucket = self.bucket(prefix)?;
        if bucket.is_full() {
            self.own_keys.store(true, Ordering::Release);
            self.overflow.insert(*id, position);
            self.dirty_entries += 1;
            return Ok(());
        }
        match bucket.place(&suffix) {
            // Apply never adds a stored id (the idempotency check comes first); if a planted
            // bug makes it, the new position replaces the old, as a put of its own key would.
            Ok(at) => bucket.entries[at].1 = position,
            Err(at) => bucket.entries.insert(at, (suffix, position)),
        }
        bucket.dirty = true;
        self.dirty_entries += 1;
        Ok(())
    }

    /// Bytes the changed buckets will add to the batch, at most.
    pub fn pending_bytes(&self) -> usize {
        self.dirty_entries * (ENTRY_BYTES + keys::EVENT_ID_BUCKET_KEY_BYTES)
    }

    /// Puts every changed bucket and overflowed id into `batch` and forgets what was read: once
    /// the batch is written, the disk answers.
    pub fn write_into(&mut self, batch: &mut WriteBatch) {
        for (id, position) in self.overflow.drain() {
            batch.put(keys::event_id_key(&id), position.to_be_bytes().to_vec());
        }
        for (prefix, bucket) in self.buckets.drain() {
            if bucket.dirty {
                batch.put(keys::event_id_bucket_key(&prefix), bucket.encode());
            }
        }
        self.dirty_entries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    fn id_with_prefix(prefix: u64, suffix: u64) -> Uuid {
        Uuid::from_u64_pair(prefix, suffix)
    }

    fn write(disk: &dyn Disk, own: &AtomicBool, ids: &[(Uuid, u64)]) {
        let mut index = IdIndexBatch::new(disk, own);
        for (id, position) in ids {
            assert_eq!(index.position(id).unwrap(), None);
            index.insert(id, *position).unwrap();
            assert_eq!(index.position(id).unwrap(), Some(*position));
        }
        let mut batch = WriteBatch::default();
        index.write_into(&mut batch);
        disk.write(batch).unwrap();
    }

    #[test]
    fn ids_sharing_a_prefix_share_a_bucket_until_it_is_full_then_get_keys_of_their_own() {
        let disk = MemDisk::new();
        let own = AtomicBool::new(false);
        let many = MAX_IDS_PER_BUCKET + 10;
        // Inserted out of order, across two batches, so the bucket is read back and re-sorted.
        let ids: Vec<(Uuid, u64)> = (0..many as u64)
            .map(|i| (id_with_prefix(7, (i * 7919) % 1000), i))
            .collect();
        write(disk.as_ref(), &own, &ids[..100]);
        assert!(!own.load(Ordering::Acquire));
        write(disk.as_ref(), &own, &ids[100..]);
        assert!(
            own.load(Ordering::Acquire),
            "the overflow went to keys of their own"
        );
        assert!(
            any_own_keys(disk.as_ref()).unwrap(),
            "and that is visible on the disk"
        );
        for (id, position) in &ids {
            assert_eq!(stored_position(disk.as_ref(), id).unwrap(), Some(*position));
            let mut index = IdIndexBatch::new(disk.as_ref(), &own);
            assert_eq!(index.position(id).unwrap(), Some(*position));
        }
        let absent = id_with_prefix(7, 5000);
        assert_eq!(stored_position(disk.as_ref(), &absent).unwrap(), None);
        let mut index = IdIndexBatch::new(disk.as_ref(), &own);
        assert_eq!(index.position(&absent).unwrap(), None);
    }

    #[test]
    fn an_id_stored_under_its_own_key_by_an_older_build_is_still_found() {
        let disk = MemDisk::new();
        let old = id_with_prefix(1, 1);
        let mut batch = WriteBatch::default();
        batch.put(keys::event_id_key(&old), 42u64.to_be_bytes().to_vec());
        disk.write(batch).unwrap();
        let own = AtomicBool::new(any_own_keys(disk.as_ref()).unwrap());
        let mut index = IdIndexBatch::new(disk.as_ref(), &own);
        assert_eq!(index.position(&old).unwrap(), Some(42));
        assert_eq!(stored_position(disk.as_ref(), &old).unwrap(), Some(42));
    }

    #[test]
    fn a_corrupt_bucket_is_an_error_not_a_miss() {
        let disk = MemDisk::new();
        let id = id_with_prefix(3, 3);
        let mut batch = WriteBatch::default();
        batch.put(keys::event_id_bucket_key(&split(&id).0), vec![0u8; 5]);
        disk.write(batch).unwrap();
        let own = AtomicBool::new(false);
        assert!(IdIndexBatch::new(disk.as_ref(), &own)
            .position(&id)
            .is_err());
        assert!(stored_position(disk.as_ref(), &id).is_err());
    }
}
