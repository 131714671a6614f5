//! Reads agree with a plain model of the history, in every direction and from every start.

use std::collections::BTreeMap;

use cairn_raft_store::{AppendResult, Direction, ExpectedRevision as E, RecordedEvent};
use uuid::Uuid;

use crate::common::*;

/// A small deterministic generator (no seed crate needed for a test).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

async fn build_history(s: &mut TestStore, seed: u64) -> (Vec<Uuid>, BTreeMap<String, Vec<Uuid>>) {
    let mut rng = Lcg(seed);
    let mut all = Vec::new();
    let mut streams: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    for _ in 0..60 {
        let stream = format!("s-{}", rng.next(5));
        let batch = events(1 + rng.next(7) as usize);
        let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
        let result = s.apply(append(&stream, E::Any, batch)).await;
        assert!(matches!(result, AppendResult::Written(_)));
        all.extend(&ids);
        streams.entry(stream).or_default().extend(ids);
    }
    (all, streams)
}

fn ids(events: Vec<RecordedEvent>) -> Vec<Uuid> {
    events.into_iter().map(|e| e.id).collect()
}

fn expected_slice(model: &[Uuid], from: u64, direction: Direction, count: u64) -> Vec<Uuid> {
    let len = model.len() as u64;
    match direction {
        Direction::Forwards => model
            .iter()
            .skip(from as usize)
            .take(count as usize)
            .copied()
            .collect(),
        Direction::Backwards => {
            if len == 0 {
                return vec![];
            }
            let start = from.min(len - 1) as usize;
            model[..=start]
                .iter()
                .rev()
                .take(count as usize)
                .copied()
                .collect()
        }
    }
}

#[test]
fn reads_of_all_and_of_streams_match_the_model_from_every_start() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            let (all, streams) = build_history(&mut s, 7).await;
            let len = all.len() as u64;
            let starts = [0, 1, 2, len / 3, len / 2, len - 1, len, len + 5, u64::MAX];
            for direction in [Direction::Forwards, Direction::Backwards] {
                for &from in &starts {
                    for count in [0, 1, 3, 10, u64::MAX] {
                        let got = ids(s
                            .store
                            .reader
                            .read_all(from, direction, count)
                            .collect::<Result<_, _>>()
                            .unwrap());
                        assert_eq!(
                            got,
                            expected_slice(&all, from, direction, count),
                            "{name}: $all {direction:?} from {from} count {count}"
                        );
                    }
                }
                for (stream, model) in &streams {
                    let n = model.len() as u64;
                    for from in [0, 1, n / 2, n - 1, n, u64::MAX] {
                        for count in [1, 4, u64::MAX] {
                            let got = ids(s
                                .store
                                .reader
                                .read_stream(stream, from, direction, count)
                                .collect::<Result<_, _>>()
                                .unwrap());
                            assert_eq!(
                                got,
                                expected_slice(model, from, direction, count),
                                "{name}: {stream} {direction:?} from {from} count {count}"
                            );
                        }
                    }
                }
            }
            // Revisions and positions are what the model says.
            for (stream, model) in &streams {
                let events = s.stream(stream);
                for (revision, event) in events.iter().enumerate() {
                    assert_eq!(event.revision, revision as u64);
                    assert_eq!(all[event.position as usize], event.id);
                    assert_eq!(model[revision], event.id);
                }
            }
            assert!(s
                .store
                .reader
                .read_stream("missing", 0, Direction::Forwards, 10)
                .next()
                .is_none());
            assert_eq!(s.store.reader.next_position().unwrap(), len);
        });
    }
}

/// Pages through a read from each of `starts` with each of `min_counts` (`read(from,
/// min_count)`, events placed by `place`: a position or a revision) and checks every page:
/// at least `min_count` events unless it reaches the end, its last event the end of a group
/// (`group_ends`), and the pages together `model` from the start, each event once.
fn page_through(
    context: &str,
    read: impl Fn(u64, u64) -> Vec<RecordedEvent>,
    place: fn(&RecordedEvent) -> u64,
    model: &[Uuid],
    group_ends: &std::collections::BTreeSet<u64>,
    starts: &[u64],
    min_counts: &[u64],
) {
    let end = model.len() as u64 - 1;
    for &min_count in min_counts {
        for &start in starts {
            let mut from = start;
            let mut pages = Vec::new();
            loop {
                let page = read(from, min_count);
                let Some(last) = page.last().map(place) else {
                    break;
                };
                let context = format!("{context} min {min_count} from {from}");
                assert!(group_ends.contains(&last), "{context}: ends inside a group");
                assert!(
                    page.len() as u64 >= min_count || last == end,
                    "{context}: {} events",
                    page.len()
                );
                from = last + 1;
                pages.extend(ids(page));
            }
            assert_eq!(pages, model[start as usize..], "{context} min {min_count}");
        }
    }
}

/// `read_all_page` and `read_stream_page`: each page holds at least its count of events
/// (fewer only at the end) and ends where a group ends, so paging reads each group once; the
/// pages together are `$all` (or the stream), each event once, from any start.
#[test]
fn pages_of_all_end_at_group_ends_and_hold_every_event_once() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            let mut rng = Lcg(11);
            let mut group_ends = std::collections::BTreeSet::new();
            let mut all = Vec::new();
            // By stream: its events' ids, and the revisions its groups end at.
            let mut streams: BTreeMap<String, (Vec<Uuid>, std::collections::BTreeSet<u64>)> =
                BTreeMap::new();
            for _ in 0..40 {
                let batch = events(1 + rng.next(9) as usize);
                let stream = format!("s-{}", rng.next(3));
                all.extend(batch.iter().map(|e| e.id));
                let (ids, ends) = streams.entry(stream.clone()).or_default();
                ids.extend(batch.iter().map(|e| e.id));
                ends.insert(ids.len() as u64 - 1);
                s.apply(append(&stream, E::Any, batch)).await;
                group_ends.insert(all.len() as u64 - 1);
            }
            let reader = &s.store.reader;
            for (stream, (model, ends)) in &streams {
                let n = model.len() as u64;
                page_through(
                    &format!("{name}: {stream}"),
                    |from, min_count| {
                        reader
                            .read_stream_page(stream, from, min_count)
                            .collect::<Result<_, _>>()
                            .unwrap()
                    },
                    |e| e.revision,
                    model,
                    ends,
                    &[0, 1, n / 2],
                    &[1, 3, 1_000],
                );
            }
            let len = all.len() as u64;
            page_through(
                &format!("{name}: $all"),
                |from, min_count| {
                    reader
                        .read_all_page(from, min_count)
                        .collect::<Result<_, _>>()
                        .unwrap()
                },
                |e| e.position,
                &all,
                &group_ends,
                &[0, 1, len / 2, len - 1],
                &[1, 2, 5, 12, 1_000],
            );
        });
    }
}
