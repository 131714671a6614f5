//! The layout of the one ordered keyspace that both the log and the state machine live in.
//!
//! The first byte names the table, so one atomic write batch can span tables (a keyspace batch is
//! atomic). Integers are big-endian so byte order is numeric order.

use uuid::Uuid;

use crate::disk::KeyRange;

/// Single keys: vote, purge point, applied state, snapshot record, install marker, format
/// version, the log's synced mark, a repair under way.
pub const META: u8 = 0x01;
/// Raft log: index -> entry. Only in stores of format 0 (`format` moves it into the log's
/// segment files); `format` is its one reader.
pub const LOG: u8 = 0x02;
/// Events: first `$all` position of an append -> where its group's frame is in the group
/// files (`group_files::Location`, 12 bytes). In stores of format 0 the whole group, inline,
/// until `format` moves it out.
pub const EVENTS: u8 = 0x03;
/// Stream index: stream name, NUL, first revision of an append -> (first position, count).
pub const STREAMS: u8 = 0x04;
/// Event ids with keys of their own: event id -> `$all` position (a full bucket's overflow,
/// and every id of a store written before buckets).
pub const EVENT_IDS: u8 = 0x05;
/// Event-id buckets: the id's first 8 bytes (and a link, for the second bucket of a chain on)
/// -> its ids' last 8 bytes and positions (`id_index`).
pub const EVENT_ID_BUCKETS: u8 = 0x06;

/// Category index (`index`): length, category, first position of a run -> the run's length.
pub const CATEGORIES: u8 = 0x07;
/// Event-type index, laid out as the category index.
pub const EVENT_TYPES: u8 = 0x08;
/// Tag index, laid out as the category index.
pub const TAGS: u8 = 0x09;

/// Scavenged groups whose bytes are still in the group files: first position -> location.
/// Written at apply with the removal; each node's reclaimer discards the frames once the
/// keyspace that forgot them is durable, then deletes the entries (`scavenge`).
pub const RECLAIM: u8 = 0x0a;

/// Erasures this node has not finished scrubbing from its disk: log index of an erase step
/// (or of an installed snapshot) -> nothing. Written at apply with the step (or with the
/// install); deleted by the node's eraser once the Raft log is purged past the index, the
/// purged frames left in a kept segment are zeroed and the keyspace has been rewritten
/// (`erase`). Not a state-machine table: an install keeps it.
pub const ERASE: u8 = 0x0b;

/// The state machine's tables (cleared when a snapshot is installed).
pub const STATE_MACHINE_TABLES: [u8; 8] = [
    EVENTS,
    STREAMS,
    EVENT_IDS,
    EVENT_ID_BUCKETS,
    CATEGORIES,
    EVENT_TYPES,
    TAGS,
    RECLAIM,
];
/// The tables of the category, type and tag indexes.
pub const INDEX_TABLES: [u8; 3] = [CATEGORIES, EVENT_TYPES, TAGS];

pub const VOTE: &[u8] = &[META, b'v'];
pub const LAST_PURGED: &[u8] = &[META, b'p'];
pub const APPLIED: &[u8] = &[META, b'a'];
pub const SNAPSHOT: &[u8] = &[META, b's'];
pub const INSTALLING: &[u8] = &[META, b'i'];
/// The highest log index this node has reported durable to Raft (a u64, postcard), written
/// after each log sync and made durable by a keyspace sync soon after (`log_store`): what the
/// log must still hold at the next open.
pub const LOG_SYNCED: &[u8] = &[META, b'l'];
/// A repair under way (`repair`): the log index this node must hold again, from a leader,
/// before it votes or stands for election (a u64, postcard).
pub const REPAIR_UNTIL: &[u8] = &[META, b'r'];
/// The store's format version (`format`), a u32 big-endian; absent in stores written before it.
pub const FORMAT_VERSION: &[u8] = &[META, b'f'];

/// A key of a table keyed by one u64 (`EVENTS`, `RECLAIM`).
pub fn u64_key(table: u8, n: u64) -> [u8; 9] {
    table_u64(table, n)
}

fn table_u64(table: u8, n: u64) -> [u8; 9] {
    let mut key = [table; 9];
    key[1..].copy_from_slice(&n.to_be_bytes());
    key
}

#[cfg(test)]
pub fn log_key(index: u64) -> [u8; 9] {
    table_u64(LOG, index)
}

pub fn event_key(position: u64) -> [u8; 9] {
    table_u64(EVENTS, position)
}

/// The u64 after the table byte, for keys of `LOG` and `EVENTS`.
pub fn key_u64(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Stream names contain no NUL, so `name NUL` is a prefix no other stream's keys share.
pub fn stream_key(stream: &str, revision: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(STREAMS);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

/// The revision at the end of a stream-index key.
pub fn stream_key_revision(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The stream name of a stream-index key, if `key` is one (table, name, NUL, revision).
pub fn stream_key_name(key: &[u8]) -> Option<&str> {
    let name_end = key.len().checked_sub(9)?;
    if key.first() != Some(&STREAMS) || key.get(name_end) != Some(&0) || name_end < 1 {
        return None;
    }
    let name = std::str::from_utf8(&key[1..name_end]).ok()?;
    (!name.contains('\0')).then_some(name)
}

/// Stream-index keys of one stream with revision in `[from, to)`.
pub fn stream_range(stream: &str, from: u64, to_exclusive: Option<u64>) -> KeyRange {
    let start = stream_key(stream, from);
    let end = match to_exclusive {
        Some(to) => stream_key(stream, to),
        None => {
            let mut end = Vec::with_capacity(stream.len() + 2);
            end.push(STREAMS);
            end.extend_from_slice(stream.as_bytes());
            end.push(1);
            end
        }
    };
    KeyRange { start, end }
}

pub fn event_id_key(id: &Uuid) -> [u8; 17] {
    let mut key = [EVENT_IDS; 17];
    key[1..].copy_from_slice(id.as_bytes());
    key
}

/// Longest event-id bucket key: table, prefix, link.
pub const MAX_EVENT_ID_BUCKET_KEY_BYTES: usize = 11;

/// The key of bucket `link` of a prefix's chain: the first is the table byte and the prefix
/// (the only bucket before chains); the next ones add the link, big-endian.
pub fn event_id_bucket_key(prefix: &[u8; 8], link: u16) -> Vec<u8> {
    let mut key = Vec::with_capacity(MAX_EVENT_ID_BUCKET_KEY_BYTES);
    key.push(EVENT_ID_BUCKETS);
    key.extend_from_slice(prefix);
    if link > 0 {
        key.extend_from_slice(&link.to_be_bytes());
    }
    key
}

/// The link of an event-id bucket key.
pub fn event_id_bucket_link(key: &[u8]) -> Option<u16> {
    match key.len() {
        9 => Some(0),
        11 => Some(u16::from_be_bytes([key[9], key[10]])),
        _ => None,
    }
}

/// The key of an index entry: the table, the name's length (one byte: every indexed name is
/// at most 255 bytes) and bytes, then the run's first position. The length keeps one name's
/// keys apart from every other's, whatever bytes the names hold (a type may hold a NUL).
pub fn index_key(table: u8, name: &str, position: u64) -> Vec<u8> {
    debug_assert!(
        name.len() <= usize::from(u8::MAX),
        "index name over 255 bytes"
    );
    let mut key = Vec::with_capacity(name.len() + 10);
    key.push(table);
    key.push(name.len() as u8);
    key.extend_from_slice(name.as_bytes());
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// The position at the end of an index key (stream-index keys end the same way).
pub fn index_key_position(key: &[u8]) -> Option<u64> {
    stream_key_revision(key)
}

/// Index keys of one name with a run starting in `[from, to)` (`None`: to the end).
pub fn index_range(table: u8, name: &str, from: u64, to_exclusive: Option<u64>) -> KeyRange {
    let start = index_key(table, name, from);
    let end = match to_exclusive {
        Some(to) => index_key(table, name, to),
        // Past the greatest position: every key of this name is 8 bytes after its prefix.
        None => {
            let mut end = index_key(table, name, u64::MAX);
            end.push(0);
            end
        }
    };
    KeyRange { start, end }
}

/// Every key of one table.
pub fn table_range(table: u8) -> KeyRange {
    KeyRange {
        start: vec![table],
        end: vec![table + 1],
    }
}

/// Keys of a u64-keyed table in `[from, to)`.
pub fn u64_range(table: u8, from: u64, to_exclusive: u64) -> KeyRange {
    KeyRange {
        start: table_u64(table, from).to_vec(),
        end: table_u64(table, to_exclusive).to_vec(),
    }
}
