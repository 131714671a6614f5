//! openraft log storage: entries in segment files (`SegmentLog`), the vote and the purge point
//! in the keyspace.
//!
//! Entries are written with one write per `append` and reported to openraft only after the
//! files say they are durable (`sync_then`: a shared fdatasync). Vote and truncation are made
//! durable before the call returns. A store written before the log had files of its own kept
//! its entries in the keyspace's log table; `format` moves them into segments at open.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use std::io;

use futures_util::{stream, Stream, StreamExt};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::codec::{decode, encode};
use crate::disk::{sync_async, wait_for_sync, Disk, WriteBatch};
use crate::error::StoreError;
use crate::format;
use crate::keys;
use crate::raft_types::{Entry, LogId, TypeConfig, Vote};
use crate::repair::{self, Damage};
use crate::segment_log::SegmentLog;
use crate::storage_error::{Failed, OrStorage};
use crate::synced_mark::SyncedMark;

/// Entries returned by one `limited_get_log_entries` call (what replication reads at once).
pub const MAX_LOG_ENTRIES_PER_READ: usize = 4096;
/// Bytes returned by one `limited_get_log_entries` call (at least one entry is always returned).
/// It bounds each AppendEntries message, which the leader holds per follower several times over
/// (the entries, their encoding, the transport's copy): at 16 MiB a bulk load's replication
/// was the largest consumer of a leader's heap (a heap profile put 75 MiB in encoding alone).
pub const MAX_LOG_BYTES_PER_READ: usize = 4 * 1024 * 1024;

/// The Raft log. Cheap to clone: clones share the disk and the segments.
#[derive(Clone)]
pub struct LogStore {
    disk: Arc<dyn Disk>,
    segments: Arc<SegmentLog>,
    /// The synced mark (`synced_mark`), shared by the clones.
    mark: Arc<SyncedMark>,
    /// Damage the open found (and cut); the caller reports it.
    damage: Option<Damage>,
}

impl LogStore {
    /// Opens the log of a node that is starting. A vote this node had won (committed) is
    /// stored back as merely cast, so the node comes back as a follower and must win a new
    /// election, as in the Raft paper. openraft would otherwise resume leadership at once (0.9
    /// did; 0.10 does so by default, `enable_leader_restore`),
    /// without knowing what its previous life committed: its read index could then miss an
    /// acknowledged append (a stale linearizable read the simulation found, seed 4).
    pub fn open(disk: Arc<dyn Disk>) -> Result<Self, StoreError> {
        format::upgrade(disk.as_ref())?;
        if let Some(bytes) = disk.get(keys::VOTE)? {
            let mut vote: Vote = decode("vote", &bytes)?;
            if vote.committed {
                vote.committed = false;
                let mut batch = WriteBatch::default();
                batch.put(keys::VOTE, encode(&vote)?);
                // Not synced here: the first sync after a SIGKILL also writes back every page
                // the previous process left dirty (apply does not sync), ~0.6 s after a bulk
                // load. If this write is lost, the next open demotes the vote again.
                disk.write(batch)?;
            }
        }
        let segments = Arc::new(SegmentLog::open(disk.log_files())?);
        let mut store = LogStore {
            mark: SyncedMark::new(disk.clone()),
            disk,
            segments,
            damage: None,
        };
        if let Some(purged) = store.last_purged()? {
            // A purge whose files were not all deleted before a crash: finish it.
            store.segments.purge(purged.index)?;
        }
        store.damage = store.judge_cut()?;
        Ok(store)
    }

    /// Whether the log lost entries it had reported durable: a cut (or a shorter file) below
    /// the synced mark, or whole entries after a damaged one. A torn write at the end was
    /// never reported durable, so it is not damage. Damage starts a repair (`repair`).
    fn judge_cut(&self) -> Result<Option<Damage>, StoreError> {
        let cut = self.segments.cut();
        let acknowledged = self
            .mark
            .stored()?
            .max(cut.and_then(|c| c.highest_whole_key));
        let last = self.last_index()?;
        let Some(acknowledged) = acknowledged.filter(|&a| Some(a) > last) else {
            return Ok(None);
        };
        let until = repair::require(self.disk.as_ref(), acknowledged)?;
        // The repair record holds what was lost now; the mark comes down to the log as it is,
        // so the next open does not count the same damage again.
        let mut batch = WriteBatch::default();
        match last {
            Some(last) => batch.put(keys::LOG_SYNCED, encode(&last)?),
            None => batch.delete(keys::LOG_SYNCED),
        }
        self.disk.write(batch)?;
        self.disk.sync()?;
        let found = match cut {
            Some(cut) => format!(
                "{} (entries from {} on cut); the log had reported entries up to {acknowledged} durable",
                cut.detail, cut.key
            ),
            None => format!(
                "the log ends at {last:?} but had reported entries up to {acknowledged} durable (a file was cut short)"
            ),
        };
        tracing::error!(
            file = "raft-log",
            %found,
            repair_until = until,
            "corruption detected: the log keeps its entries up to {last:?}; the leader sends the rest, and this node neither votes nor stands for election until its log reaches {until}"
        );
        Ok(Some(Damage {
            file: "raft-log",
            found,
            action: "cut at the damage; the leader sends the rest",
        }))
    }

    /// Damage the open found in the log, if any.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// The last index this log may have acknowledged: what a repair must get back.
    pub fn acknowledged_end(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.mark.stored()?.max(self.last_index()?))
    }

    /// Removes every entry and the purge point (before a state machine cleared for repair is
    /// sent a snapshot), then syncs. The vote stays.
    pub fn clear_for_repair(&self) -> Result<(), StoreError> {
        self.mark.lower(None)?;
        self.segments.clear()?;
        let mut batch = WriteBatch::default();
        batch.delete(keys::LAST_PURGED);
        batch.delete(keys::LOG_SYNCED);
        self.disk.write(batch)?;
        self.disk.sync()?;
        Ok(())
    }

    /// Zeroes purged entries still inside a kept segment, then syncs
    /// (`SegmentLog::scrub_purged`): the last step of removing the log's copy of erased
    /// events. Blocking.
    pub fn scrub_purged(&self) -> Result<u64, StoreError> {
        self.segments.scrub_purged()
    }

    /// At open: purges the log up to `log_id` (a snapshot's), synced, when repair cut it
    /// below the snapshot the state machine holds.
    pub fn purge_at_open(&self, log_id: LogId) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(keys::LAST_PURGED, encode(&Some(log_id))?);
        self.disk.write(batch)?;
        self.disk.sync()?;
        self.segments.purge(log_id.index)
    }

    /// Writes the synced mark a log sync left pending now, unsynced: what happens within a
    /// second of a sync (`LOG_SYNCED_MARK_SYNC_DELAY_MS`). For tests of a node that stopped
    /// after a quiet second.
    pub fn write_synced_mark(&self) {
        self.mark.write_pending();
    }

    /// The index of the last entry the log holds (or was purged up to).
    pub fn last_index(&self) -> Result<Option<u64>, StoreError> {
        let last = self.segments.last_log_id().max(self.last_purged()?);
        Ok(last.map(|l| l.index))
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

/// The run of `entries` that starts exactly at `start` and has no gap: nothing if `start` itself
/// is not held (purged meanwhile). For `limited_get_log_entries`: openraft's replication reads the entries after the follower's
/// last match; a replication stream that outlived its turn (openraft 0.10.0-alpha.37 keeps a
/// pipelined stream running while it sends the same follower a snapshot and purges the log
/// under it) would otherwise be handed entries after a hole and send them as if they followed
/// its `prev_log_id`, leaving a gap in the follower's log. Given nothing, it sends a heartbeat
/// instead (and the network ends that stream: `network::raft_client`).
fn contiguous_from(start: u64, mut entries: Vec<Entry>) -> Vec<Entry> {
    let run = entries
        .iter()
        .zip(start..)
        .take_while(|(entry, index)| entry.log_id.index == *index)
        .count();
    if run < entries.len() {
        tracing::debug!(
            start,
            held_from = entries.first().map(|e| e.log_id.index),
            run,
            "a log read found a hole; returning only the entries before it"
        );
        entries.truncate(run);
    }
    entries
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        self.segments
            .read(start, end, usize::MAX, usize::MAX)
            .or_storage(Failed::ReadLogs)
    }

    /// Streams `range` a bounded read at a time (openraft's default reads the whole range into
    /// memory first; applying after a restart can be the whole log).
    async fn entries_stream<RB>(
        &mut self,
        range: RB,
    ) -> impl Stream<Item = Result<Entry, io::Error>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = bounds(&range);
        let segments = self.segments.clone();
        stream::unfold(Some(start), move |next| {
            let segments = segments.clone();
            async move {
                let from = next.filter(|&from| from < end)?;
                let read = segments
                    .read(from, end, MAX_LOG_ENTRIES_PER_READ, MAX_LOG_BYTES_PER_READ)
                    .or_storage(Failed::ReadLogs);
                let (items, after) = match read {
                    // Nothing left: the range ran past the end of the log.
                    Ok(entries) => {
                        let after = entries.last()?.log_id.index + 1;
                        (entries.into_iter().map(Ok).collect(), Some(after))
                    }
                    Err(e) => (vec![Err(e)], None),
                };
                Some((stream::iter::<Vec<Result<Entry, io::Error>>>(items), after))
            }
        })
        .flatten()
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.segments
            .read(start, end, MAX_LOG_ENTRIES_PER_READ, MAX_LOG_BYTES_PER_READ)
            .map(|entries| contiguous_from(start, entries))
            .or_storage(Failed::ReadLogs)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.disk.get(keys::VOTE).or_storage(Failed::ReadVote)? {
            Some(bytes) => decode::<Vote>("vote", &bytes)
                .map(Some)
                .or_storage(Failed::ReadVote),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.last_purged().or_storage(Failed::ReadLogs)?;
        let last_entry = self.segments.last_log_id();
        // Entries below the purge point may remain in a segment that also holds later ones;
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

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put(keys::VOTE, encode(vote).or_storage(Failed::WriteVote)?);
        self.disk.write(batch).or_storage(Failed::WriteVote)?;
        sync_async(self.disk.as_ref())
            .await
            .or_storage(Failed::WriteVote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut last = None;
        self.segments
            .append(entries.into_iter().inspect(|e| last = Some(e.log_id.index)))
            .or_storage(Failed::WriteLogs)?;
        if crate::faults::active().ack_before_durable {
            callback.io_completed(Ok(()));
            self.segments.sync_then(Box::new(|_| {}));
            return Ok(());
        }
        // Entries are readable now; openraft hears they are durable only from the files. The
        // synced mark follows within a second (`synced_mark`).
        let mark = self.mark.clone();
        let runtime = tokio::runtime::Handle::current();
        self.segments.sync_then(Box::new(move |result| {
            if let (Ok(()), Some(last)) = (&result, last) {
                mark.note(last, &runtime);
            }
            callback.io_completed(result)
        }));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        tracing::debug!(?last_log_id, "truncating log after");
        let from = last_log_id.map_or(0, |kept| kept.index + 1);
        // The synced mark comes down first, durably, once the appends before have noted theirs:
        // entries removed on purpose are not damage at the next open.
        wait_for_sync(|done| self.segments.sync_then(done))
            .await
            .or_storage(Failed::WriteLogs)?;
        if self
            .mark
            .lower(from.checked_sub(1))
            .or_storage(Failed::WriteLogs)?
        {
            sync_async(self.disk.as_ref())
                .await
                .or_storage(Failed::WriteLogs)?;
        }
        self.segments.truncate(from).or_storage(Failed::WriteLogs)?;
        wait_for_sync(|done| self.segments.sync_then(done))
            .await
            .or_storage(Failed::WriteLogs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        tracing::debug!(%log_id, "purging log");
        // The purge point is durable before any segment goes: otherwise a crash could leave a
        // log whose first entry is past a purge point the keyspace no longer remembers.
        // Segments that survive a crash after this are deleted again at open.
        let mut batch = WriteBatch::default();
        batch.put(
            keys::LAST_PURGED,
            encode(&Some(log_id)).or_storage(Failed::WriteLogs)?,
        );
        self.disk.write(batch).or_storage(Failed::WriteLogs)?;
        sync_async(self.disk.as_ref())
            .await
            .or_storage(Failed::WriteLogs)?;
        self.segments
            .purge(log_id.index)
            .or_storage(Failed::WriteLogs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{MemDisk, Order};
    use crate::raft_types::{log_id, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: log_id(2, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn a_log_kept_in_the_keyspace_by_an_older_build_moves_into_segments() {
        let disk = MemDisk::new();
        let mut batch = WriteBatch::default();
        for index in 3..=2000 {
            batch.put(keys::log_key(index), encode(&entry(index)).unwrap());
        }
        batch.put(keys::LAST_PURGED, encode(&Some(entry(2).log_id)).unwrap());
        disk.write(batch).unwrap();
        disk.sync().unwrap();

        let mut log = LogStore::open(disk.clone()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(entry(2).log_id));
        assert_eq!(state.last_log_id, Some(entry(2000).log_id));
        let entries = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(entries.len(), 1998);
        assert!(entries
            .iter()
            .zip(3..)
            .all(|(e, i)| e.log_id == entry(i).log_id));
        let table = keys::table_range(keys::LOG);
        assert!(
            disk.scan(&table, Order::Ascending, 1).unwrap().is_empty(),
            "table emptied"
        );

        // It survives a crash (the move was synced) and does not run twice.
        disk.crash(0);
        let mut log = LogStore::open(disk).unwrap();
        assert_eq!(log.try_get_log_entries(0..).await.unwrap().len(), 1998);
    }

    #[tokio::test]
    async fn replication_reading_from_a_purged_index_gets_nothing_rather_than_later_entries() {
        use openraft::storage::RaftLogStorageExt;
        let mut log = LogStore::open(MemDisk::new()).unwrap();
        log.blocking_append((1..=30).map(entry)).await.unwrap();
        log.purge(entry(20).log_id).await.unwrap();

        // A stale replication stream whose follower matched entry 10 asks for 11 onwards.
        assert!(log
            .limited_get_log_entries(11, 31)
            .await
            .unwrap()
            .is_empty());
        let held: Vec<u64> = log
            .limited_get_log_entries(21, 31)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(held, (21..=30).collect::<Vec<_>>());
    }
}
