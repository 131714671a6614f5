//! openraft log storage on the storage seam.
//!
//! Entries are written in one batch per `append` and reported to openraft only after the disk
//! says they are durable (`sync_then`: on sled, a shared fdatasync). Vote and truncation are
//! made durable before the call returns.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::disk::{Disk, KeyRange, Order, WriteBatch};
use crate::error::{decode, encode, Failed, OrStorage, StoreError};
use crate::keys;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Entries returned by one `limited_get_log_entries` call (what replication reads at once).
pub const MAX_LOG_ENTRIES_PER_READ: usize = 4096;
/// Bytes returned by one `limited_get_log_entries` call (at least one entry is always returned).
pub const MAX_LOG_BYTES_PER_READ: usize = 16 * 1024 * 1024;
/// Keys read or deleted per page when walking a range of the log.
pub const LOG_PAGE_KEYS: usize = 1024;

/// The Raft log. Cheap to clone: clones share the disk.
#[derive(Clone)]
pub struct LogStore {
    disk: Arc<dyn Disk>,
}

/// Waits for `Disk::sync_then` without blocking the async runtime.
pub(crate) async fn sync_async(disk: &dyn Disk) -> Result<(), StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    disk.sync_then(Box::new(move |result| {
        let _ = tx.send(result);
    }));
    match rx.await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Io(std::io::Error::other(
            "disk dropped a sync request",
        ))),
    }
}

impl LogStore {
    pub fn new(disk: Arc<dyn Disk>) -> Self {
        LogStore { disk }
    }

    /// Opens the log of a node that is starting. A vote this node had won (committed) is
    /// stored back as merely cast, so the node comes back as a follower and must win a new
    /// election, as in the Raft paper. openraft 0.9 would otherwise resume leadership at once,
    /// without knowing what its previous life committed: its read index could then miss an
    /// acknowledged append (a stale linearizable read the simulation found, seed 4).
    pub fn open(disk: Arc<dyn Disk>) -> Result<Self, StoreError> {
        if let Some(bytes) = disk.get(keys::VOTE)? {
            let mut vote: Vote = decode("vote", &bytes)?;
            if vote.is_committed() {
                vote.committed = false;
                let mut batch = WriteBatch::default();
                batch.put(keys::VOTE, encode(&vote)?);
                disk.write(batch)?;
                disk.sync()?;
            }
        }
        Ok(LogStore { disk })
    }

    /// Entries with index in `[start, end)`, stopping early at `max_entries` / `max_bytes`
    /// (but always returning the first entry found).
    fn read_entries(
        &self,
        start: u64,
        end: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut next = start;
        while next < end && entries.len() < max_entries {
            let range = keys::u64_range(keys::LOG, next, end);
            let page_limit = LOG_PAGE_KEYS.min(max_entries - entries.len());
            let page = self.disk.scan(&range, Order::Ascending, page_limit)?;
            let page_len = page.len();
            for (key, value) in page {
                if !entries.is_empty() && bytes + value.len() > max_bytes {
                    return Ok(entries);
                }
                bytes += value.len();
                let entry: Entry = decode("log entry", &value)?;
                let index = keys::key_u64(&key)
                    .ok_or_else(|| StoreError::corrupt("log key", "short key"))?;
                if entry.log_id.index != index {
                    return Err(StoreError::corrupt(
                        "log entry",
                        format!("entry {} stored under index {index}", entry.log_id),
                    ));
                }
                next = index + 1;
                entries.push(entry);
            }
            if page_len < page_limit {
                break;
            }
        }
        Ok(entries)
    }

    /// Deletes every key in `range`, page by page; `first` rides along with the first page so
    /// it lands atomically with the first deletions.
    fn delete_range(
        &self,
        range: KeyRange,
        mut first: Option<WriteBatch>,
    ) -> Result<(), StoreError> {
        loop {
            let page = self.disk.scan(&range, Order::Ascending, LOG_PAGE_KEYS)?;
            let mut batch = first.take().unwrap_or_default();
            let done = page.len() < LOG_PAGE_KEYS;
            for (key, _) in page {
                batch.delete(key);
            }
            if !batch.is_empty() {
                self.disk.write(batch)?;
            }
            if done {
                return Ok(());
            }
        }
    }

    fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        match self.disk.get(keys::LAST_PURGED)? {
            Some(bytes) => decode("last purged log id", &bytes),
            None => Ok(None),
        }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&n) => n.saturating_add(1),
        Bound::Excluded(&n) => n,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.read_entries(start, end, usize::MAX, usize::MAX)
            .or_storage(Failed::ReadLogs)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(start, end, MAX_LOG_ENTRIES_PER_READ, MAX_LOG_BYTES_PER_READ)
            .or_storage(Failed::ReadLogs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged().or_storage(Failed::ReadLogs)?;
        let last = self
            .disk
            .scan(&keys::table_range(keys::LOG), Order::Descending, 1)
            .or_storage(Failed::ReadLogs)?;
        let last_entry = match last.first() {
            Some((_, value)) => Some(
                decode::<Entry>("log entry", value)
                    .or_storage(Failed::ReadLogs)?
                    .log_id,
            ),
            None => None,
        };
        // After a crash in the middle of a purge, entries below the purge point may remain;
        // they never count as the last entry.
        let last_log_id = last_entry.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put(keys::VOTE, encode(vote).or_storage(Failed::WriteVote)?);
        self.disk.write(batch).or_storage(Failed::WriteVote)?;
        sync_async(self.disk.as_ref())
            .await
            .or_storage(Failed::WriteVote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self.disk.get(keys::VOTE).or_storage(Failed::ReadVote)? {
            Some(bytes) => decode::<Vote>("vote", &bytes)
                .map(Some)
                .or_storage(Failed::ReadVote),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut previous: Option<u64> = None;
        for entry in entries {
            let index = entry.log_id.index;
            debug_assert!(
                previous.is_none_or(|p| p + 1 == index),
                "log append leaves a hole: {previous:?} then {index}"
            );
            previous = Some(index);
            batch.put(
                keys::log_key(index),
                encode(&entry).or_storage(Failed::WriteLogs)?,
            );
        }
        self.disk.write(batch).or_storage(Failed::WriteLogs)?;
        if crate::faults::active().ack_before_durable {
            callback.log_io_completed(Ok(()));
            self.disk.sync_then(Box::new(|_| {}));
            return Ok(());
        }
        // Entries are readable now; openraft hears they are durable only from the disk.
        self.disk
            .sync_then(Box::new(move |result| callback.log_io_completed(result)));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating log");
        self.delete_range(keys::u64_range_from(keys::LOG, log_id.index), None)
            .or_storage(Failed::WriteLogs)?;
        sync_async(self.disk.as_ref())
            .await
            .or_storage(Failed::WriteLogs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging log");
        // The purge point is written with the first deletions: whatever prefix of this survives
        // a crash, `get_log_state` stays consistent. No sync needed: entries that come back
        // after a crash are merely purged again.
        let mut first = WriteBatch::default();
        first.put(
            keys::LAST_PURGED,
            encode(&Some(log_id)).or_storage(Failed::WriteLogs)?,
        );
        let end = log_id.index.saturating_add(1);
        self.delete_range(keys::u64_range(keys::LOG, 0, end), Some(first))
            .or_storage(Failed::WriteLogs)
    }
}
