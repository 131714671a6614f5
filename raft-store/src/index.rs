//! The category, event-type and tag indexes: written at apply in the same atomic batch as
//! the events they point at (no link events), read and subscribed to as `$ce-<category>`,
//! `$et-<type>` and `$tag-<tag>`.
//!
//! An entry is a *run*: consecutive `$all` positions of one append that share the name, keyed
//! by the name and the run's first position, valued by its length (`keys::index_key`). An
//! append is one stream, so it is one category run; events of one type or one tag side by
//! side are one run. So an append of 100 events of one type costs two keys, not 200.
//!
//! Keys sort by name, then position: a name's posting list is one key range, walked forwards
//! or backwards from any position with one seek. "Is there an event of this type (or tag)
//! after position P" — the DCB condition check — is one reverse seek from the end.

use std::fmt;

use crate::codec::{decode_u32, encode_u32};
use crate::disk::{rewrite_range, Disk, Order, Rewrite, WriteBatch};
use crate::error::StoreError;
use crate::keys;
use crate::types::NewEvent;

/// The three indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKind {
    /// By category: the stream name before its first `-` ([`category`]).
    Category,
    EventType,
    Tag,
}

impl IndexKind {
    const ALL: [IndexKind; 3] = [IndexKind::Category, IndexKind::EventType, IndexKind::Tag];

    fn table(self) -> u8 {
        match self {
            IndexKind::Category => keys::CATEGORIES,
            IndexKind::EventType => keys::EVENT_TYPES,
            IndexKind::Tag => keys::TAGS,
        }
    }

    /// The reserved stream-name prefix that reads this index.
    pub fn prefix(self) -> &'static str {
        match self {
            IndexKind::Category => "$ce-",
            IndexKind::EventType => "$et-",
            IndexKind::Tag => "$tag-",
        }
    }
}

/// What an unknown `$` name is told: the names that read something.
pub const READABLE_RESERVED_NAMES: &str =
    "'$all', '$ce-<category>', '$et-<event type>', '$tag-<tag>', '$group-<group>' or '$parked-<group>'";

/// One index's posting list: `$ce-orders` is (`Category`, `orders`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexName {
    pub kind: IndexKind,
    pub name: String,
}

impl IndexName {
    /// The index a reserved stream name reads, or `None` if it names none (then it is `$all`
    /// or an error). The part after the prefix must be 1..=255 bytes, as every indexed name is.
    pub fn parse(stream: &str) -> Option<IndexName> {
        IndexKind::ALL.into_iter().find_map(|kind| {
            let name = stream.strip_prefix(kind.prefix())?;
            (!name.is_empty() && name.len() <= usize::from(u8::MAX)).then(|| IndexName {
                kind,
                name: name.to_owned(),
            })
        })
    }

    /// Whether an event of `stream` with this type and these tags is in this index.
    pub fn matches(&self, stream: &str, event_type: &str, tags: &[String]) -> bool {
        match self.kind {
            IndexKind::Category => category(stream) == self.name,
            IndexKind::EventType => event_type == self.name,
            IndexKind::Tag => tags.contains(&self.name),
        }
    }

    fn table(&self) -> u8 {
        self.kind.table()
    }
}

impl fmt::Display for IndexName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.prefix(), self.name)
    }
}

/// The category of a stream: its name before the first `-` (`order-42` -> `order`), the
/// EventStoreDB convention. A name without a `-`, or starting with one, is its own category.
pub fn category(stream: &str) -> &str {
    match stream.find('-') {
        Some(end) if end > 0 => &stream[..end],
        _ => stream,
    }
}

/// Consecutive positions of one name: `[first, first + count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first: u64,
    pub count: u32,
}

impl Run {
    pub fn last(self) -> u64 {
        self.first + u64::from(self.count) - 1
    }

    pub fn contains(self, position: u64) -> bool {
        position >= self.first && position - self.first < u64::from(self.count)
    }
}

/// Calls `run` with (table, name, first position, count) for each index entry of one append
/// (its events from `first_position` on; the tag entries from `tagged`, which is `events`
/// unless a planted bug leaves one out).
fn for_each_run(
    first_position: u64,
    stream: &str,
    events: &[NewEvent],
    tagged: &[NewEvent],
    mut run: impl FnMut(u8, &str, u64, usize),
) {
    if events.is_empty() {
        return;
    }
    run(
        keys::CATEGORIES,
        category(stream),
        first_position,
        events.len(),
    );
    let mut start = 0;
    for end in 1..=events.len() {
        if end == events.len() || events[end].event_type != events[start].event_type {
            let name = &events[start].event_type;
            run(
                keys::EVENT_TYPES,
                name,
                first_position + start as u64,
                end - start,
            );
            start = end;
        }
    }
    for (i, event) in tagged.iter().enumerate() {
        for tag in &event.tags {
            if i > 0 && tagged[i - 1].tags.contains(tag) {
                continue; // in the run started before
            }
            let len = tagged[i..]
                .iter()
                .take_while(|e| e.tags.contains(tag))
                .count();
            run(keys::TAGS, tag, first_position + i as u64, len);
        }
    }
}

/// Adds the index entries of one append (its events from `first_position` on) to `batch`.
/// Shared by apply, snapshot install and the format upgrade, so all three index alike.
pub(crate) fn write_entries(
    batch: &mut WriteBatch,
    first_position: u64,
    stream: &str,
    events: &[NewEvent],
) {
    let tagged = if crate::faults::active().index_skips_tag && !events.is_empty() {
        &events[..events.len() - 1]
    } else {
        events
    };
    for_each_run(
        first_position,
        stream,
        events,
        tagged,
        |table, name, first, count| {
            debug_assert!(count > 0 && count <= u32::MAX as usize);
            batch.put(
                keys::index_key(table, name, first),
                encode_u32(count as u32),
            );
        },
    );
}

/// Adds the removal of every index entry `write_entries` made for this append (scavenge).
pub(crate) fn delete_entries(
    batch: &mut WriteBatch,
    first_position: u64,
    stream: &str,
    events: &[NewEvent],
) {
    for_each_run(
        first_position,
        stream,
        events,
        events,
        |table, name, first, _| {
            batch.delete(keys::index_key(table, name, first));
        },
    );
}

fn decode_run(key: &[u8], value: &[u8]) -> Result<Run, StoreError> {
    let first = keys::index_key_position(key)
        .ok_or_else(|| StoreError::corrupt("index key", "short key"))?;
    let count = decode_u32("index run", value)?;
    if count == 0 {
        return Err(StoreError::corrupt(
            "index run",
            format!("empty run at {first}"),
        ));
    }
    Ok(Run { first, count })
}

/// The run of `index` with the greatest first position at or below `position`.
pub(crate) fn run_at_or_before(
    disk: &dyn Disk,
    index: &IndexName,
    position: u64,
) -> Result<Option<Run>, StoreError> {
    let to = position.checked_add(1);
    let range = keys::index_range(index.table(), &index.name, 0, to);
    match disk.scan(&range, Order::Descending, 1)?.first() {
        Some((key, value)) => Ok(Some(decode_run(key, value)?)),
        None => Ok(None),
    }
}

/// The run of `index` with the least first position above `position`.
pub(crate) fn run_after(
    disk: &dyn Disk,
    index: &IndexName,
    position: u64,
) -> Result<Option<Run>, StoreError> {
    let Some(from) = position.checked_add(1) else {
        return Ok(None);
    };
    let range = keys::index_range(index.table(), &index.name, from, None);
    match disk.scan(&range, Order::Ascending, 1)?.first() {
        Some((key, value)) => Ok(Some(decode_run(key, value)?)),
        None => Ok(None),
    }
}

/// Removes every index entry at or past `end` (a rollback to a snapshot), `page_keys` at a
/// time. Entries start within one append, so an entry at or past `end` is wholly past it.
pub(crate) fn forget_from(disk: &dyn Disk, end: u64, page_keys: usize) -> Result<(), StoreError> {
    for table in keys::INDEX_TABLES {
        rewrite_range(disk, &keys::table_range(table), page_keys, |key, _| {
            let first = keys::index_key_position(key)
                .ok_or_else(|| StoreError::corrupt("index key", "short key"))?;
            Ok(if first >= end {
                Rewrite::Delete
            } else {
                Rewrite::Keep
            })
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_category_is_the_stream_name_before_its_first_dash() {
        assert_eq!(category("order-42"), "order");
        assert_eq!(category("order-42-b"), "order");
        assert_eq!(category("orders"), "orders");
        assert_eq!(category("-x"), "-x");
        assert_eq!(category("a-"), "a");
    }

    #[test]
    fn reserved_names_parse_into_indexes_and_nothing_else_does() {
        let parsed = IndexName::parse("$ce-order").unwrap();
        assert_eq!(
            (parsed.kind, parsed.name.as_str()),
            (IndexKind::Category, "order")
        );
        assert_eq!(parsed.to_string(), "$ce-order");
        assert_eq!(IndexName::parse("$et-A-b").unwrap().name, "A-b");
        assert_eq!(
            IndexName::parse("$tag-customer:7").unwrap().kind,
            IndexKind::Tag
        );
        for not_one in ["$all", "$ce-", "$tag-", "$xx-a", "order-1", "$CE-a"] {
            assert_eq!(IndexName::parse(not_one), None, "{not_one}");
        }
        let long = format!("$et-{}", "t".repeat(256));
        assert_eq!(IndexName::parse(&long), None);
    }
}
