//! Opening the state machine: its keyspace and its group files made to agree again.
//!
//! Apply writes a batch's frames, then the keyspace batch that points at them, and syncs
//! neither. So at open:
//! - the files may end with frames nothing points at (the keyspace batch did not survive):
//!   they are cut, and openraft applies those entries again;
//! - after a power loss, the keyspace may point at frames that did not survive. The state
//!   machine then rolls back to its last snapshot, which was synced, files first
//!   (`SnapshotBuilder::build`, `install`): every index entry at or past the snapshot's end
//!   goes (stream, id, category, type and tag indexes, the locations last), and openraft
//!   applies the log from the snapshot on. The log still holds those entries, because it is
//!   purged only below a snapshot.
//!
//! A store written before the groups moved out of sled held them inline; `format` copies them
//! into the files before this runs.

use crate::codec::{decode, encode};
use crate::disk::{delete_range, rewrite_range, Disk, Order, Rewrite, WriteBatch};
use crate::error::StoreError;
use crate::group_files::{GroupFiles, Location};
use crate::keys;
use crate::records::{read_group, read_snapshot_record, AppliedState};
use crate::stream_run::StreamRun;

/// Keys visited per batch while rolling back.
pub const RECOVER_PAGE_KEYS: usize = 4096;

/// The last group the keyspace points at, as found in the files.
enum LastGroup {
    None,
    /// It reads back; the position after it and the file offset after its frame.
    Intact {
        end_position: u64,
        end_offset: u64,
    },
    /// Its frame did not survive (or is not what the keyspace says).
    Lost,
}

fn last_group(disk: &dyn Disk, groups: &GroupFiles) -> Result<LastGroup, StoreError> {
    let last = disk.scan(&keys::table_range(keys::EVENTS), Order::Descending, 1)?;
    let Some((key, value)) = last.first() else {
        return Ok(LastGroup::None);
    };
    let position =
        keys::key_u64(key).ok_or_else(|| StoreError::corrupt("event key", "short key"))?;
    match read_group(groups, position, value) {
        Ok(group) => Ok(LastGroup::Intact {
            end_position: position + group.events.len() as u64,
            end_offset: Location::decode(value)?.end(),
        }),
        Err(StoreError::Corrupt { .. }) => Ok(LastGroup::Lost),
        Err(other) => Err(other),
    }
}

/// A damaged group frame found by `check_groups`.
pub struct DamagedGroups {
    /// Stream offset of the first damaged frame, and what was wrong with it.
    pub offset: u64,
    pub detail: String,
    /// It lies below the end of the last snapshot's groups: the log no longer holds what
    /// would rebuild it, so only a snapshot from the leader can.
    pub below_snapshot: bool,
}

/// The stream offset after the last group the keyspace points at below `position`.
fn groups_end_below(disk: &dyn Disk, position: u64) -> Result<u64, StoreError> {
    let range = keys::u64_range(keys::EVENTS, 0, position);
    Ok(match disk.scan(&range, Order::Descending, 1)?.first() {
        Some((_, value)) => Location::decode(value)?.end(),
        None => 0,
    })
}

/// Reads and checks every group frame the keyspace points at (the whole files up to the last
/// located group: every read checks its frame too, this finds damage before a read does).
pub fn check_groups(
    disk: &dyn Disk,
    groups: &GroupFiles,
) -> Result<Option<DamagedGroups>, StoreError> {
    let end = groups_end_below(disk, u64::MAX)?;
    let snapshot_end = match read_snapshot_record(disk)? {
        Some(record) => groups_end_below(disk, record.end_position)?,
        None => 0,
    };
    let bad = match groups.first_bad_frame(end)? {
        Some(bad) => Some(bad),
        // Files that end before the snapshot's groups do lost bytes that were synced (a
        // snapshot syncs the files first). Past the snapshot, a power loss can do the same
        // (`recover` rolls back, as it always did).
        None if groups.end() < snapshot_end => Some((
            groups.end(),
            format!(
                "the files end at {} before the snapshot's groups do, at {snapshot_end}",
                groups.end()
            ),
        )),
        None => None,
    };
    Ok(bad.map(|(offset, detail)| DamagedGroups {
        offset,
        detail,
        below_snapshot: offset < snapshot_end,
    }))
}

pub fn read_applied(disk: &dyn Disk) -> Result<AppliedState, StoreError> {
    match disk.get(keys::APPLIED)? {
        Some(bytes) => decode("applied state", &bytes),
        None => Ok(AppliedState::default()),
    }
}

/// Makes the keyspace and the files agree, and the state machine no further than the log;
/// returns the applied state to go on from. `log_end`: the index of the log's last entry (or
/// of its purge point), `None` for a store that never had a Raft log.
pub fn recover(
    disk: &dyn Disk,
    groups: &GroupFiles,
    log_end: Option<u64>,
) -> Result<AppliedState, StoreError> {
    let applied = read_applied(disk)?;
    let applied_index = applied.last_applied.map(|l| l.index);
    // No log at all (nothing written, nothing purged): the state machine was driven without
    // Raft (the engine tests, the format fixtures), and there is no log to be ahead of.
    if log_end.is_some() && applied_index > log_end {
        // A follower applies what the leader says is committed as soon as it is in its log,
        // synced or not; a power loss can then keep the applied state and lose the log's
        // tail. openraft would purge its log up to the applied entry, past the snapshot (an
        // invariant it stops on). From the snapshot on, the log is whole, and what it lacks
        // the leader sends again.
        return roll_back_to_snapshot(
            disk,
            groups,
            applied,
            "the log lost entries the state machine had applied (power loss before a sync)",
        );
    }
    match last_group(disk, groups)? {
        LastGroup::None if applied.next_position == 0 => {
            groups.truncate(0)?;
            Ok(applied)
        }
        LastGroup::Intact {
            end_position,
            end_offset,
        } if end_position == applied.next_position => {
            if groups.end() > end_offset {
                tracing::info!(
                    bytes = groups.end() - end_offset,
                    "cutting event group frames that no index entry points at"
                );
                groups.truncate(end_offset)?;
            }
            Ok(applied)
        }
        _ => roll_back_to_snapshot(
            disk,
            groups,
            applied,
            "event groups the index points at were lost (power loss before a sync)",
        ),
    }
}

pub fn roll_back_to_snapshot(
    disk: &dyn Disk,
    groups: &GroupFiles,
    applied: AppliedState,
    why: &str,
) -> Result<AppliedState, StoreError> {
    let target = match &read_snapshot_record(disk)? {
        Some(record) => AppliedState {
            last_applied: record.meta.last_log_id,
            membership: record.meta.last_membership.clone(),
            next_position: record.end_position,
        },
        None => AppliedState::default(),
    };
    let end = target.next_position;
    tracing::warn!(
        applied = ?applied.last_applied,
        applied_position = applied.next_position,
        snapshot = ?target.last_applied,
        snapshot_position = end,
        "{why}; rolling the state machine back to its last snapshot"
    );
    // The applied state first: until the last group past it is deleted (last, below), the
    // next open still finds groups past the applied state and takes the rollback up again.
    let mut batch = WriteBatch::default();
    batch.put(keys::APPLIED, encode(&target)?);
    disk.write(batch)?;
    disk.sync()?;
    rewrite_range(
        disk,
        &keys::table_range(keys::STREAMS),
        RECOVER_PAGE_KEYS,
        |_, value| {
            Ok(if StreamRun::decode(value)?.first_position >= end {
                Rewrite::Delete
            } else {
                Rewrite::Keep
            })
        },
    )?;
    crate::id_index::forget_from(disk, end, RECOVER_PAGE_KEYS)?;
    crate::index::forget_from(disk, end, RECOVER_PAGE_KEYS)?;
    let mut groups_past_end = keys::table_range(keys::EVENTS);
    groups_past_end.start = keys::event_key(end).to_vec();
    delete_range(disk, &groups_past_end, RECOVER_PAGE_KEYS)?;
    disk.sync()?;
    match last_group(disk, groups)? {
        LastGroup::None if end == 0 => groups.truncate(0)?,
        LastGroup::Intact {
            end_position,
            end_offset,
        } if end_position == end => groups.truncate(end_offset)?,
        _ => {
            return Err(StoreError::corrupt(
                "event group files",
                format!("the groups below the snapshot's end {end} did not survive"),
            ))
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::disk::MemDisk;
    use crate::group_files::LOCATION_BYTES;
    use crate::raft_types::{Entry, EntryPayload};
    use crate::types::{Append, Command, ContentType, ExpectedRevision, NewEvent};
    use crate::{open_store, Direction, Limits, RecordedEvent};

    fn entry(index: u64) -> Entry {
        let events = (0..3)
            .map(|i| NewEvent {
                id: uuid::Uuid::new_v4(),
                event_type: "Tested".into(),
                content_type: ContentType::Json,
                data: format!("{{\"i\":{i}}}").into_bytes(),
                metadata: Vec::new(),
                tags: Vec::new(),
            })
            .collect();
        Entry {
            log_id: crate::raft_types::log_id(1, 1, index),
            payload: EntryPayload::Normal(Command::Append(Append {
                stream: format!("s{}", index % 2),
                expected: ExpectedRevision::Any,
                events,
                created_unix_ms: 1_700_000_000_000,
            })),
        }
    }

    fn read_all(disk: &std::sync::Arc<MemDisk>) -> Vec<RecordedEvent> {
        let store = open_store(disk.clone(), Limits::default()).expect("open");
        store
            .reader
            .read_all(0, Direction::Forwards, u64::MAX)
            .collect::<Result<_, _>>()
            .expect("read")
    }

    fn event_values(disk: &MemDisk) -> Vec<(Vec<u8>, Vec<u8>)> {
        disk.scan(
            &keys::table_range(keys::EVENTS),
            Order::Ascending,
            usize::MAX,
        )
        .expect("scan")
    }

    /// Turns the store back into what a build before the group files wrote (groups inline),
    /// except for the first `keep_first` groups: a migration cut short after them.
    fn inline_groups(disk: &MemDisk, keep_first: usize) {
        let groups = GroupFiles::open(disk.group_files()).expect("open groups");
        let mut batch = WriteBatch::default();
        for (key, value) in event_values(disk).into_iter().skip(keep_first) {
            let position = keys::key_u64(&key).expect("key");
            let location = Location::decode(&value).expect("location");
            let frame = groups.read(location, position).expect("frame");
            batch.put(key, frame.payload().to_vec());
        }
        // Stores of that build recorded no format version.
        batch.delete(keys::FORMAT_VERSION);
        disk.write(batch).expect("write");
        if keep_first == 0 {
            groups.truncate(0).expect("truncate");
        }
        disk.sync().expect("sync");
    }

    #[test]
    fn groups_stored_inline_by_an_older_build_move_into_the_files_at_open() {
        for keep_first in [0, 3] {
            let disk = MemDisk::new();
            {
                let mut store = open_store(disk.clone(), Limits::default()).expect("open");
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                runtime
                    .block_on(store.state_machine.apply_entries((1..=8).map(entry)))
                    .expect("apply");
            }
            let expected = read_all(&disk);
            assert_eq!(expected.len(), 24);
            inline_groups(&disk, keep_first);
            assert!(event_values(&disk)
                .iter()
                .any(|(_, v)| v.len() != LOCATION_BYTES));
            assert_eq!(read_all(&disk), expected, "keep_first={keep_first}");
            assert!(
                event_values(&disk)
                    .iter()
                    .all(|(_, v)| v.len() == LOCATION_BYTES),
                "every group moved"
            );
            disk.crash(0);
            assert_eq!(read_all(&disk), expected, "the move was durable");
        }
    }
}
