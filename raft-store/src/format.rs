//! The store's on-disk format version, and the one place that upgrades older formats, step by
//! step, in order, when a store opens.
//!
//! The version is a u32 under `keys::FORMAT_VERSION`, written (and synced) once the store is
//! at `FORMAT_VERSION`. Both `LogStore::open` and `StateMachineStore::open` call `upgrade`
//! first; the second call finds the version current and returns. A store whose version is newer
//! than this build's is refused with `StoreError::FormatTooNew`, before anything is written.
//!
//! Versions:
//! - 0: no version recorded. Every store written before the version existed: pre-release
//!   layouts with the Raft log in the keyspace's log table, with event groups inline in the
//!   keyspace, with event ids under keys of their own (before buckets), or the layout of
//!   version 1 without its record.
//! - 1: the Raft log and the event groups in segment files, the keyspace holding indexes
//!   (locations, stream index, event-id buckets and chains; ids under keys of their own only
//!   past a full chain). `tests/fixtures/format-1` is a store of this version.
//! - 2: events carry tags (a group's frame is format 1's, followed by its events' tags when
//!   any has some: `records::StoredGroup`; the Raft log's commands of format 1 are kept as
//!   `Command::Format1Append(s)`), and the category, type and tag indexes (`index`).
//!
//! To change the format: add a step at the end of `STEPS` (its `to` one more than the last),
//! which takes a store of the version before and leaves one of its own, restartable if a crash
//! cuts it short (the version is written only after the step finishes), and commit a fixture
//! of the format it leaves behind.

use crate::codec::decode;
use crate::disk::{delete_range, Disk, Order, WriteBatch};
use crate::error::StoreError;
use crate::group_files::{GroupFiles, Location, LOCATION_BYTES};
use crate::index;
use crate::keys;
use crate::raft_types::Entry;
use crate::records::read_group;
use crate::segment_log::SegmentLog;

/// The format this build writes, and the newest it opens.
pub const FORMAT_VERSION: u32 = 2;
/// Keys read or written per page by an upgrade step.
pub const UPGRADE_PAGE_KEYS: usize = 1024;

/// One upgrade: takes a store at version `to - 1` to version `to`.
struct Step {
    to: u32,
    what: &'static str,
    run: fn(&dyn Disk) -> Result<(), StoreError>,
}

/// Every upgrade, in order.
const STEPS: &[Step] = &[
    Step {
        to: 1,
        what: "the Raft log and event groups out of the keyspace into segment files",
        run: to_version_1,
    },
    Step {
        to: 2,
        what: "tags on events, and the category, type and tag indexes",
        run: to_version_2,
    },
];

/// The version recorded in the store (0 if none is).
pub fn stored_version(disk: &dyn Disk) -> Result<u32, StoreError> {
    match disk.get(keys::FORMAT_VERSION)? {
        None => Ok(0),
        Some(bytes) => {
            let bytes: [u8; 4] = bytes.as_slice().try_into().map_err(|_| {
                StoreError::corrupt("format version", format!("{} bytes", bytes.len()))
            })?;
            Ok(u32::from_be_bytes(bytes))
        }
    }
}

/// Brings the store to `FORMAT_VERSION`, or refuses one newer than this build.
pub fn upgrade(disk: &dyn Disk) -> Result<(), StoreError> {
    let found = stored_version(disk)?;
    if found > FORMAT_VERSION {
        return Err(StoreError::FormatTooNew {
            found,
            supported: FORMAT_VERSION,
        });
    }
    if found == FORMAT_VERSION {
        return Ok(());
    }
    debug_assert!(STEPS.windows(2).all(|w| w[1].to == w[0].to + 1));
    for step in STEPS.iter().filter(|s| s.to > found) {
        tracing::info!(
            from = step.to - 1,
            to = step.to,
            "upgrading the store: {}",
            step.what
        );
        (step.run)(disk)?;
        let mut batch = WriteBatch::default();
        batch.put(keys::FORMAT_VERSION, step.to.to_be_bytes().to_vec());
        disk.write(batch)?;
        disk.sync()?;
    }
    Ok(())
}

/// 0 -> 1. Each part finds by itself whether there is anything to do (a new store, or one
/// written as version 1 before versions were recorded, has nothing). Ids under keys of their
/// own stay where they are: version 1 reads them (`id_index::any_own_keys`).
fn to_version_1(disk: &dyn Disk) -> Result<(), StoreError> {
    move_keyspace_log(disk)?;
    move_inline_groups(disk)
}

/// 1 -> 2. Frames and log entries of format 1 read as they are (events without tags); the
/// category and type indexes are built from the stored groups, a page of groups per batch.
/// Entries are written whole and idempotently, so a build cut short starts again from the
/// beginning at the next open (the version is recorded only after it).
fn to_version_2(disk: &dyn Disk) -> Result<(), StoreError> {
    let groups = GroupFiles::open(disk.group_files())?;
    let mut start = keys::event_key(0).to_vec();
    let mut indexed = 0u64;
    let mut lost_tail = false;
    loop {
        let mut range = keys::table_range(keys::EVENTS);
        range.start = start.clone();
        let page = disk.scan(&range, Order::Ascending, UPGRADE_PAGE_KEYS)?;
        let Some((last_key, _)) = page.last() else {
            break;
        };
        start = last_key.clone();
        start.push(0);
        let mut batch = WriteBatch::default();
        for (key, location) in &page {
            let position =
                keys::key_u64(key).ok_or_else(|| StoreError::corrupt("event key", "short key"))?;
            let group = match read_group(&groups, position, location) {
                Ok(group) => group,
                // A power loss took the files' tail: `recover` rolls the state machine back
                // to its snapshot (whose groups were synced, and are indexed by now), and
                // Raft applies (and indexes) the rest again.
                Err(StoreError::Corrupt { .. }) => {
                    lost_tail = true;
                    break;
                }
                Err(other) => return Err(other),
            };
            index::write_entries(&mut batch, position, &group.stream, &group.events);
            indexed += 1;
        }
        disk.write(batch)?;
        if lost_tail || page.len() < UPGRADE_PAGE_KEYS {
            break;
        }
    }
    if indexed > 0 {
        disk.sync()?;
        tracing::info!(groups = indexed, "built the category and type indexes");
    }
    Ok(())
}

/// Moves entries left in the keyspace's log table (by a build that kept the log in sled)
/// into segments. The table stays authoritative until it is empty: a crash midway is
/// answered by starting the move again from scratch.
fn move_keyspace_log(disk: &dyn Disk) -> Result<(), StoreError> {
    let table = keys::table_range(keys::LOG);
    if disk.scan(&table, Order::Ascending, 1)?.is_empty() {
        return Ok(());
    }
    tracing::info!("moving the Raft log out of the keyspace into segment files");
    let segments = SegmentLog::open(disk.log_files())?;
    segments.clear()?;
    let mut next = 0;
    loop {
        let range = keys::u64_range(keys::LOG, next, u64::MAX);
        let page = disk.scan(&range, Order::Ascending, UPGRADE_PAGE_KEYS)?;
        let Some((last_key, _)) = page.last() else {
            break;
        };
        next =
            keys::key_u64(last_key).ok_or_else(|| StoreError::corrupt("log key", "short key"))? + 1;
        let mut entries = Vec::with_capacity(page.len());
        for (key, value) in page {
            let entry: Entry = decode("log entry", &value)?;
            if Some(entry.log_id.index) != keys::key_u64(&key) {
                return Err(StoreError::corrupt(
                    "log entry",
                    format!("entry {} stored under another index", entry.log_id),
                ));
            }
            entries.push(entry);
        }
        segments.append(entries)?;
    }
    segments.sync()?;
    delete_range(disk, &table, UPGRADE_PAGE_KEYS)?;
    disk.sync()?;
    Ok(())
}

/// Copies groups stored inline in the keyspace (by builds before the group files) into the
/// files, replacing each with its location. Each page's frames are synced before the page's
/// locations are written, so a migration cut short resumes: it keeps the locations it finds
/// and starts copying after the last one.
fn move_inline_groups(disk: &dyn Disk) -> Result<(), StoreError> {
    let groups = GroupFiles::open(disk.group_files())?;
    // Migration goes in position order, so the last group is inline until it is done.
    let last = disk.scan(&keys::table_range(keys::EVENTS), Order::Descending, 1)?;
    if last.first().is_none_or(|(_, v)| v.len() == LOCATION_BYTES) {
        return Ok(());
    }
    tracing::info!("moving event groups out of the keyspace into group files");
    let mut files_end = 0u64;
    let mut writer = None;
    let mut moved = 0u64;
    let mut start = keys::event_key(0).to_vec();
    loop {
        let mut range = keys::table_range(keys::EVENTS);
        range.start = start.clone();
        let page = disk.scan(&range, Order::Ascending, UPGRADE_PAGE_KEYS)?;
        let Some((last_key, _)) = page.last() else {
            break;
        };
        start = last_key.clone();
        start.push(0);
        let mut batch = WriteBatch::default();
        for (key, value) in &page {
            let position =
                keys::key_u64(key).ok_or_else(|| StoreError::corrupt("event key", "short key"))?;
            // An inline group is never 12 bytes long: its event id alone takes 17.
            if value.len() == LOCATION_BYTES {
                files_end = Location::decode(value)?.end();
                continue;
            }
            let frames = match &mut writer {
                Some(frames) => frames,
                None => {
                    groups.truncate(files_end)?;
                    writer.insert(groups.writer())
                }
            };
            let location = frames.push_encoded(position, value)?;
            batch.put(key.clone(), location.encode());
            moved += 1;
        }
        if let Some(frames) = &mut writer {
            groups.write(frames)?;
            groups.sync()?;
        }
        if !batch.is_empty() {
            disk.write(batch)?;
        }
        if page.len() < UPGRADE_PAGE_KEYS {
            break;
        }
    }
    disk.sync()?;
    tracing::info!(groups = moved, "moved event groups into group files");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::{open_store, Limits};

    #[test]
    fn a_new_store_records_the_current_format_version() {
        let disk = MemDisk::new();
        open_store(disk.clone(), Limits::default()).expect("open");
        disk.crash(0);
        assert_eq!(stored_version(disk.as_ref()).unwrap(), FORMAT_VERSION);
    }

    #[test]
    fn a_data_dir_newer_than_this_build_is_refused_naming_both_versions_and_left_unchanged() {
        let disk = MemDisk::new();
        let newer = FORMAT_VERSION + 1;
        let mut batch = WriteBatch::default();
        batch.put(keys::FORMAT_VERSION, newer.to_be_bytes().to_vec());
        batch.put(keys::VOTE, b"whatever a newer build keeps".to_vec());
        disk.write(batch).unwrap();
        disk.sync().unwrap();
        let before = disk.scan(&keys::table_range(keys::META), Order::Ascending, 100);
        let err = open_store(disk.clone(), Limits::default())
            .err()
            .expect("a newer format must be refused");
        assert!(
            matches!(err, StoreError::FormatTooNew { found, supported }
                if found == newer && supported == FORMAT_VERSION),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("version {newer}"))
                && message.contains(&format!("build's {FORMAT_VERSION}")),
            "{message}"
        );
        let after = disk.scan(&keys::table_range(keys::META), Order::Ascending, 100);
        assert_eq!(before.unwrap(), after.unwrap(), "nothing written");
    }

    #[test]
    fn the_steps_are_numbered_in_order_up_to_the_current_version() {
        assert!(STEPS.iter().zip(1..).all(|(s, v)| s.to == v));
        assert_eq!(STEPS.last().map(|s| s.to), Some(FORMAT_VERSION));
    }
}
