//! DCB queries over the type and tag indexes: which positions match, found by seeking the
//! posting lists, never by reading events.
//!
//! An item (types OR'd, tags AND'ed) is an intersection of posting lists: one per tag, and
//! the union of its types' lists. It is walked as a zig-zag join: from a position, ask every
//! list for its nearest entry in the walk's direction; if they disagree, move to the farthest
//! answer and ask again; when all agree, that position matches. Each question is one index
//! seek, and every step skips at least one run of some list, so an item costs at most the
//! number of runs of its *smallest* list between the start and the bound (usually far
//! fewer: a step skips whole runs of the others at once), each step one seek per list. A
//! query is the nearest match over its items.

use crate::disk::Disk;
use crate::error::StoreError;
use crate::index::{run_after, run_at_or_before, IndexKind, IndexName};
use crate::types::{Query, QueryItem};

/// Which way a search walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Towards higher positions: the least match at or after the start.
    Up,
    /// Towards lower positions: the greatest match at or before the start.
    Down,
}

/// Whether an event with this type and these tags matches the query (no items: every event).
pub fn query_matches(query: &Query, event_type: &str, tags: &[String]) -> bool {
    query.items.is_empty()
        || query
            .items
            .iter()
            .any(|item| item_matches(item, event_type, tags))
}

fn item_matches(item: &QueryItem, event_type: &str, tags: &[String]) -> bool {
    (item.types.is_empty() || item.types.iter().any(|t| t == event_type))
        && item.tags.iter().all(|t| tags.contains(t))
}

/// The nearest position of one posting list from `position` in the walk's direction.
fn nearest(
    disk: &dyn Disk,
    index: &IndexName,
    position: u64,
    walk: Walk,
) -> Result<Option<u64>, StoreError> {
    let before = run_at_or_before(disk, index, position)?;
    Ok(match walk {
        Walk::Down => before.map(|run| position.min(run.last())),
        Walk::Up => match before {
            Some(run) if run.contains(position) => Some(position),
            _ => run_after(disk, index, position)?.map(|run| run.first),
        },
    })
}

/// The nearest position of any of `lists` (a union) from `position`.
fn nearest_of_any(
    disk: &dyn Disk,
    lists: &[IndexName],
    position: u64,
    walk: Walk,
) -> Result<Option<u64>, StoreError> {
    let mut best: Option<u64> = None;
    for index in lists {
        if let Some(p) = nearest(disk, index, position, walk)? {
            best = Some(match (best, walk) {
                (None, _) => p,
                (Some(b), Walk::Down) => b.max(p),
                (Some(b), Walk::Up) => b.min(p),
            });
        }
    }
    Ok(best)
}

/// Whether `position` is past `bound` in the walk's direction (the search stops there).
fn beyond(position: u64, bound: u64, walk: Walk) -> bool {
    match walk {
        Walk::Up => position > bound,
        Walk::Down => position < bound,
    }
}

/// The nearest position matching `item` from `start` (inclusive), not beyond `bound`
/// (inclusive): the zig-zag join of its lists.
fn item_match(
    disk: &dyn Disk,
    item: &QueryItem,
    start: u64,
    bound: u64,
    walk: Walk,
) -> Result<Option<u64>, StoreError> {
    let tags: Vec<IndexName> = item
        .tags
        .iter()
        .map(|t| IndexName {
            kind: IndexKind::Tag,
            name: t.clone(),
        })
        .collect();
    let types: Vec<IndexName> = item
        .types
        .iter()
        .map(|t| IndexName {
            kind: IndexKind::EventType,
            name: t.clone(),
        })
        .collect();
    let mut at = start;
    loop {
        if beyond(at, bound, walk) {
            return Ok(None);
        }
        let mut agreed = true;
        for tag in &tags {
            match nearest(disk, tag, at, walk)? {
                None => return Ok(None),
                Some(p) if p != at => {
                    at = p;
                    agreed = false;
                }
                Some(_) => {}
            }
        }
        if !types.is_empty() {
            match nearest_of_any(disk, &types, at, walk)? {
                None => return Ok(None),
                Some(p) if p != at => {
                    at = p;
                    agreed = false;
                }
                Some(_) => {}
            }
        }
        if agreed {
            return Ok((!beyond(at, bound, walk)).then_some(at));
        }
    }
}

/// The nearest position matching `query` (with items) from `start` (inclusive), not beyond
/// `bound` (inclusive). A query without items matches every position: the caller reads `$all`.
pub(crate) fn next_match(
    disk: &dyn Disk,
    query: &Query,
    start: u64,
    bound: u64,
    walk: Walk,
) -> Result<Option<u64>, StoreError> {
    let mut best: Option<u64> = None;
    for item in &query.items {
        // Only a nearer match than the best so far matters: narrow the bound to it.
        let bound = best.unwrap_or(bound);
        if let Some(p) = item_match(disk, item, start, bound, walk)? {
            best = Some(p);
        }
    }
    Ok(best)
}

/// The first position after `after` (all positions with none) that matches `query`, below
/// `end` (the next position to be written): what fails a DCB append condition, and what the
/// refusal names (the spec's "first matching position": everything the decision missed
/// starts there).
pub(crate) fn first_match_after(
    disk: &dyn Disk,
    query: &Query,
    after: Option<u64>,
    end: u64,
) -> Result<Option<u64>, StoreError> {
    let Some(last) = end.checked_sub(1) else {
        return Ok(None);
    };
    let floor = match after {
        Some(after) => match after.checked_add(1) {
            Some(floor) => floor,
            None => return Ok(None),
        },
        None => 0,
    };
    if last < floor {
        return Ok(None);
    }
    if query.items.is_empty() {
        return Ok(Some(floor));
    }
    next_match(disk, query, floor, last, Walk::Up)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(types: &[&str], tags: &[&str]) -> QueryItem {
        QueryItem {
            types: types.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_item_ors_its_types_and_ands_its_tags_and_items_or() {
        let tags = vec!["course:1".to_string(), "student:2".to_string()];
        let q = |items: Vec<QueryItem>| Query { items };
        assert!(query_matches(&q(vec![]), "Any", &[]));
        assert!(query_matches(
            &q(vec![item(&["A", "Subscribed"], &["course:1"])]),
            "Subscribed",
            &tags
        ));
        assert!(!query_matches(
            &q(vec![item(&["Subscribed"], &["course:1", "student:3"])]),
            "Subscribed",
            &tags
        ));
        assert!(query_matches(
            &q(vec![item(&[], &["course:1", "student:2"])]),
            "X",
            &tags
        ));
        assert!(query_matches(
            &q(vec![item(&["Nope"], &[]), item(&["X"], &[])]),
            "X",
            &[]
        ));
        assert!(!query_matches(&q(vec![item(&["Nope"], &[])]), "X", &tags));
    }
}
