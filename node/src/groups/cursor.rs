//! What a dispatcher checkpoints, computed from what it still owes.
//!
//! The dispatcher keeps only the keys it has read and not finished (`outstanding`); every
//! other key below its read head is done (acknowledged, parked, skipped, or not for this
//! group). So the checkpoint is: `next` = the lowest outstanding key (or the read head), the
//! gaps between outstanding keys as done ranges, and, beyond the read head, whatever the
//! checkpoint it started from had done (it must never forget: the state machine refuses a
//! checkpoint that does). The done ranges number at most one more than the outstanding keys.

use cairn_raft_store::GroupCursor;

/// The cursor for `outstanding` (ascending keys, all below `read_next`), the read head, and
/// the cursor the dispatcher loaded.
pub fn checkpoint(
    outstanding: impl IntoIterator<Item = u64>,
    read_next: u64,
    loaded: &GroupCursor,
) -> GroupCursor {
    let mut keys = outstanding.into_iter().peekable();
    let next = keys.peek().copied().unwrap_or(read_next).min(read_next);
    let mut done = Vec::new();
    let mut previous = None;
    for key in keys {
        debug_assert!(
            key < read_next,
            "outstanding key {key} at or past {read_next}"
        );
        if let Some(previous) = previous {
            if key > previous + 1 {
                done.push((previous + 1, key));
            }
        }
        previous = Some(key);
    }
    if let Some(last) = previous {
        if last + 1 < read_next {
            done.push((last + 1, read_next));
        }
    }
    done.extend(
        loaded
            .done
            .iter()
            .filter(|&&(_, to)| to > read_next)
            .map(|&(from, to)| (from.max(read_next), to)),
    );
    normalize(next.max(loaded.next.min(read_next)), done)
}

/// Merges touching or overlapping ranges and folds those that start at or below `next` into
/// it: the form the state machine accepts (ascending, apart, above `next`).
pub fn normalize(mut next: u64, mut ranges: Vec<(u64, u64)>) -> GroupCursor {
    ranges.sort_unstable();
    let mut done: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        if to <= from {
            continue;
        }
        if from <= next {
            next = next.max(to);
            continue;
        }
        match done.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => done.push((from, to)),
        }
    }
    // A range folded into `next` late may now touch the first ones.
    while let Some(&(from, to)) = done.first() {
        if from > next {
            break;
        }
        next = next.max(to);
        done.remove(0);
    }
    GroupCursor { next, done }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(next: u64, done: &[(u64, u64)]) -> GroupCursor {
        GroupCursor {
            next,
            done: done.to_vec(),
        }
    }

    #[test]
    fn gaps_between_outstanding_keys_are_done_and_loaded_progress_is_kept() {
        let loaded = cursor(0, &[(30, 40)]);
        assert_eq!(
            checkpoint([3, 4, 9], 20, &loaded),
            cursor(3, &[(5, 9), (10, 20), (30, 40)])
        );
        assert_eq!(checkpoint([], 20, &loaded), cursor(20, &[(30, 40)]));
        assert_eq!(checkpoint([], 30, &loaded), cursor(40, &[]));
        assert_eq!(checkpoint([], 35, &loaded), cursor(40, &[]));
        assert_eq!(
            checkpoint([19], 20, &cursor(0, &[(20, 25)])),
            cursor(19, &[(20, 25)])
        );
        // Nothing read yet: the loaded cursor as it was.
        assert_eq!(
            checkpoint([], 7, &cursor(7, &[(9, 10)])),
            cursor(7, &[(9, 10)])
        );
    }

    #[test]
    fn normalize_merges_and_folds() {
        assert_eq!(normalize(5, vec![(6, 8), (8, 9), (2, 6)]), cursor(9, &[]));
        assert_eq!(normalize(5, vec![(7, 8), (6, 7)]), cursor(5, &[(6, 8)]));
        assert_eq!(
            normalize(0, vec![(3, 3), (4, 6), (1, 2)]),
            cursor(0, &[(1, 2), (4, 6)])
        );
    }
}
