//! The event-id index (id -> `$all` position), packed into buckets by the id's first 8 bytes.
//!
//! One sled key per event id made the id index the largest cost of applying an append (sled
//! splits a leaf every 16 keys and copies it on every insert). Ids that share their first 8
//! bytes share buckets instead: a UUIDv7's first 8 bytes are its millisecond and the high bits
//! of its generator's counter, so the ids of one append usually share one prefix and an
//! append of 100 events costs one read and one write of the index instead of 100 of each.
//! Random (v4) ids get a bucket each, as before.
//!
//! A bucket holds at most `MAX_IDS_PER_BUCKET`; the ids of one prefix fill a chain of buckets
//! (the first under the prefix's key, the next ones under the prefix and a 2-byte link), read
//! together by one range scan. Before chains, an id that found its bucket full got a key of
//! its own: a 1,000-event append made 744 such keys, and sled's memory grew with them (about
//! 10 MiB per million events). Own keys remain for a chain at `MAX_BUCKETS_PER_PREFIX`, and
//! for stores written before buckets; a lookup reads them while any exist (`any_own_keys`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use crate::codec::decode_position;
use crate::disk::{rewrite_range, Disk, KeyRange, Order, Rewrite, WriteBatch};
use crate::error::StoreError;
use crate::keys;

/// Most ids in one bucket; the next ones of the prefix start another. Bounds a bucket's value
/// at `MAX_IDS_PER_BUCKET * ENTRY_BYTES` (4 KiB), the cost of rewriting it.
pub const MAX_IDS_PER_BUCKET: usize = 256;
/// Most buckets in one prefix's chain (16k ids sharing a millisecond and counter prefix, more
/// than the largest append); past it an id gets a key of its own. Bounds what one lookup reads
/// (256 KiB).
pub const MAX_BUCKETS_PER_PREFIX: usize = 64;
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
    /// Its place in the chain (0: the prefix's own key).
    link: u16,
    entries: Vec<(Suffix, u64)>,
    /// Changed since it was read: to be written.
    dirty: bool,
}

impl Bucket {
    fn decode(link: u16, bytes: &[u8]) -> Result<Bucket, StoreError> {
        if !bytes.len().is_multiple_of(ENTRY_BYTES)
            || bytes.len() / ENTRY_BYTES > MAX_IDS_PER_BUCKET
        {
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
            link,
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

    fn find(&self, suffix: &Suffix) -> Option<u64> {
        self.place(suffix).ok().map(|i| self.entries[i].1)
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= MAX_IDS_PER_BUCKET
    }
}

/// The buckets of one prefix, in chain order.
#[derive(Debug, Default)]
struct Chain {
    buckets: Vec<Bucket>,
}

impl Chain {
    fn find(&self, suffix: &Suffix) -> Option<u64> {
        self.buckets.iter().find_map(|b| b.find(suffix))
    }

    /// Whether an id of this prefix may have been sent to a key of its own.
    fn is_full(&self) -> bool {
        self.buckets.len() >= MAX_BUCKETS_PER_PREFIX && self.buckets.iter().all(Bucket::is_full)
    }
}

/// Every key of one prefix's chain.
fn chain_range(prefix: &Prefix) -> KeyRange {
    let start = keys::event_id_bucket_key(prefix, 0);
    let mut end = keys::event_id_bucket_key(prefix, 0);
    end.extend_from_slice(&[0xff; 3]);
    KeyRange { start, end }
}

fn read_chain(disk: &dyn Disk, prefix: &Prefix) -> Result<Chain, StoreError> {
    let pairs = disk.scan(
        &chain_range(prefix),
        Order::Ascending,
        MAX_BUCKETS_PER_PREFIX,
    )?;
    let buckets = pairs
        .iter()
        .map(|(key, value)| {
            let link = keys::event_id_bucket_link(key)
                .ok_or_else(|| StoreError::corrupt("event id bucket", "bad key"))?;
            Bucket::decode(link, value)
        })
        .collect::<Result<_, _>>()?;
    Ok(Chain { buckets })
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
    match read_chain(disk, &prefix)?.find(&suffix) {
        Some(position) => Ok(Some(position)),
        None => read_own_key(disk, id),
    }
}

/// Whether any id is stored under a key of its own (a full chain's overflow, or a store
/// written before buckets). While none is, a lookup that misses a chain that is not full
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
        |key, value| {
            let link = keys::event_id_bucket_link(key)
                .ok_or_else(|| StoreError::corrupt("event id bucket", "bad key"))?;
            let mut bucket = Bucket::decode(link, value)?;
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

/// Reads and changes the index within one batch of writes: chains are read once, changed in
/// memory, and their changed buckets written whole when the batch is (`write_into`).
pub struct IdIndexBatch<'a> {
    disk: &'a dyn Disk,
    own_keys: &'a AtomicBool,
    chains: HashMap<Prefix, Chain>,
    /// Ids added to this batch whose chain was full.
    overflow: HashMap<Uuid, u64>,
    /// Ids removed in this batch, whose own keys (if any) go too.
    removed_own_keys: Vec<Uuid>,
    dirty_entries: usize,
}

impl<'a> IdIndexBatch<'a> {
    /// `own_keys` says whether ids with keys of their own may exist; set when one is written.
    pub fn new(disk: &'a dyn Disk, own_keys: &'a AtomicBool) -> Self {
        IdIndexBatch {
            disk,
            own_keys,
            chains: HashMap::new(),
            overflow: HashMap::new(),
            removed_own_keys: Vec::new(),
            dirty_entries: 0,
        }
    }

    fn chain(&mut self, prefix: Prefix) -> Result<&mut Chain, StoreError> {
        if !self.chains.contains_key(&prefix) {
            let chain = read_chain(self.disk, &prefix)?;
            self.chains.insert(prefix, chain);
        }
        Ok(self.chains.get_mut(&prefix).expect("inserted above"))
    }

    /// Where the event with this id is stored: written, or added to this batch.
    pub fn position(&mut self, id: &Uuid) -> Result<Option<u64>, StoreError> {
        if let Some(&position) = self.overflow.get(id) {
            return Ok(Some(position));
        }
        let (prefix, suffix) = split(id);
        let own_keys = self.own_keys.load(Ordering::Acquire);
        let chain = self.chain(prefix)?;
        match chain.find(&suffix) {
            Some(position) => Ok(Some(position)),
            None if chain.is_full() || own_keys => read_own_key(self.disk, id),
            None => Ok(None),
        }
    }

    /// Adds an id that is not stored yet: to its chain's last bucket, a new bucket if that one
    /// is full, or a key of its own if the chain is at its limit.
    pub fn insert(&mut self, id: &Uuid, position: u64) -> Result<(), StoreError> {
        let (prefix, suffix) = split(id);
        let chain = self.chain(prefix)?;
        // Apply never adds a stored id (the idempotency check comes first); if a planted bug
        // makes it, the new position replaces the old, as a put of its own key would.
        let stored = chain
            .buckets
            .iter_mut()
            .find_map(|b| b.place(&suffix).ok().map(|at| (b, at)));
        if let Some((bucket, at)) = stored {
            bucket.entries[at].1 = position;
            bucket.dirty = true;
            self.dirty_entries += 1;
            return Ok(());
        }
        let needs_bucket = chain.buckets.last().is_none_or(Bucket::is_full);
        if needs_bucket {
            let next_link = chain
                .buckets
                .last()
                .map_or(Some(0), |b| b.link.checked_add(1));
            match next_link {
                Some(link) if chain.buckets.len() < MAX_BUCKETS_PER_PREFIX => {
                    chain.buckets.push(Bucket {
                        link,
                        ..Bucket::default()
                    });
                }
                _ => {
                    self.own_keys.store(true, Ordering::Release);
                    self.overflow.insert(*id, position);
                    self.dirty_entries += 1;
                    return Ok(());
                }
            }
        }
        let bucket = chain.buckets.last_mut().expect("a bucket with room");
        if let Err(at) = bucket.place(&suffix) {
            bucket.entries.insert(at, (suffix, position));
        }
        bucket.dirty = true;
        self.dirty_entries += 1;
        Ok(())
    }

    /// Forgets a stored id (its event was scavenged): out of its bucket, and its own key
    /// removed in case it has one. An id not stored changes nothing.
    pub fn remove(&mut self, id: &Uuid) -> Result<(), StoreError> {
        let (prefix, suffix) = split(id);
        let chain = self.chain(prefix)?;
        for bucket in chain.buckets.iter_mut() {
            if let Ok(at) = bucket.place(&suffix) {
                bucket.entries.remove(at);
                bucket.dirty = true;
                self.dirty_entries += 1;
                break;
            }
        }
        self.overflow.remove(id);
        self.removed_own_keys.push(*id);
        Ok(())
    }

    /// Bytes the changed buckets will add to the batch, at most.
    pub fn pending_bytes(&self) -> usize {
        self.dirty_entries * (ENTRY_BYTES + keys::MAX_EVENT_ID_BUCKET_KEY_BYTES)
    }

    /// Puts every changed bucket and overflowed id into `batch` and forgets what was read: once
    /// the batch is written, the disk answers.
    pub fn write_into(&mut self, batch: &mut WriteBatch) {
        for id in self.removed_own_keys.drain(..) {
            batch.delete(keys::event_id_key(&id));
        }
        for (id, position) in self.overflow.drain() {
            batch.put(keys::event_id_key(&id), position.to_be_bytes().to_vec());
        }
        for (prefix, chain) in self.chains.drain() {
            for bucket in chain.buckets.into_iter().filter(|b| b.dirty) {
                let key = keys::event_id_bucket_key(&prefix, bucket.link);
                if bucket.entries.is_empty() {
                    // Inserts go after the chain's last link, so a gap in links is harmless.
                    batch.delete(key);
                } else {
                    batch.put(key, bucket.encode());
                }
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
    fn ids_sharing_a_prefix_fill_a_chain_of_buckets_and_no_keys_of_their_own() {
        let disk = MemDisk::new();
        let own = AtomicBool::new(false);
        let many = 2 * MAX_IDS_PER_BUCKET + 10;
        // Inserted out of order, across two batches, so the chain is read back and extended.
        let ids: Vec<(Uuid, u64)> = (0..many as u64)
            .map(|i| (id_with_prefix(7, (i * 7919) % 100_000), i))
            .collect();
        write(disk.as_ref(), &own, &ids[..100]);
        write(disk.as_ref(), &own, &ids[100..]);
        assert!(!own.load(Ordering::Acquire), "no overflow to own keys");
        assert!(!any_own_keys(disk.as_ref()).unwrap());
        let prefix = split(&ids[0].0).0;
        assert_eq!(read_chain(disk.as_ref(), &prefix).unwrap().buckets.len(), 3);
        for (id, position) in &ids {
            assert_eq!(stored_position(disk.as_ref(), id).unwrap(), Some(*position));
            let mut index = IdIndexBatch::new(disk.as_ref(), &own);
            assert_eq!(index.position(id).unwrap(), Some(*position));
        }
        let absent = id_with_prefix(7, 500_000);
        assert_eq!(stored_position(disk.as_ref(), &absent).unwrap(), None);
        let mut index = IdIndexBatch::new(disk.as_ref(), &own);
        assert_eq!(index.position(&absent).unwrap(), None);
        // Another prefix's chain is not read with this one.
        let other = id_with_prefix(8, 1);
        assert_eq!(stored_position(disk.as_ref(), &other).unwrap(), None);
    }

    #[test]
    fn a_full_chain_sends_ids_to_keys_of_their_own() {
        let disk = MemDisk::new();
        let own = AtomicBool::new(false);
        let capacity = (MAX_BUCKETS_PER_PREFIX * MAX_IDS_PER_BUCKET) as u64;
        let ids: Vec<(Uuid, u64)> = (0..capacity + 3)
            .map(|i| (id_with_prefix(9, i), i))
            .collect();
        let mut index = IdIndexBatch::new(disk.as_ref(), &own);
        for (id, position) in &ids {
            index.insert(id, *position).unwrap();
        }
        let mut batch = WriteBatch::default();
        index.write_into(&mut batch);
        disk.write(batch).unwrap();
        assert!(own.load(Ordering::Acquire));
        assert!(any_own_keys(disk.as_ref()).unwrap());
        for (id, position) in ids.iter().rev().take(5) {
            assert_eq!(stored_position(disk.as_ref(), id).unwrap(), Some(*position));
            let mut index = IdIndexBatch::new(disk.as_ref(), &own);
            assert_eq!(index.position(id).unwrap(), Some(*position));
        }
    }

    #[test]
    fn a_bucket_written_before_chains_is_the_first_of_its_chain() {
        let disk = MemDisk::new();
        let own = AtomicBool::new(false);
        let full: Vec<(Uuid, u64)> = (0..MAX_IDS_PER_BUCKET as u64)
            .map(|i| (id_with_prefix(4, i), i))
            .collect();
        // What an older build wrote: one full bucket under the 9-byte key.
        let old = Bucket {
            link: 0,
            entries: full.iter().map(|(id, p)| (split(id).1, *p)).collect(),
            dirty: true,
        };
        let mut batch = WriteBatch::default();
        batch.put(
            keys::event_id_bucket_key(&split(&full[0].0).0, 0),
            old.encode(),
        );
        disk.write(batch).unwrap();
        let next = (id_with_prefix(4, 10_000), 999);
        write(disk.as_ref(), &own, &[next]);
        for (id, position) in full.iter().chain([&next]) {
            assert_eq!(stored_position(disk.as_ref(), id).unwrap(), Some(*position));
        }
        assert!(!any_own_keys(disk.as_ref()).unwrap());
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
        batch.put(keys::event_id_bucket_key(&split(&id).0, 0), vec![0u8; 5]);
        disk.write(batch).unwrap();
        let own = AtomicBool::new(false);
        assert!(IdIndexBatch::new(disk.as_ref(), &own)
            .position(&id)
            .is_err());
        assert!(stored_position(disk.as_ref(), &id).is_err());
    }
}
