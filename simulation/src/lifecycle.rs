//! The stream-lifecycle client (issue 18; `SimConfig::lifecycle`, `cairn-sim --lifecycle`):
//! one client that owns the streams `life-0` .. `life-3` and, through the faults, appends to
//! them, lowers their max count, raises their truncate-before, soft-deletes them (and writes
//! them again), tombstones `life-2`, erases `life-3`, reads them, and scavenges `$all` (crashes and
//! power losses of the schedule land during the scavenges and the nodes' reclaimers).
//!
//! It works one operation at a time and sends an operation whose outcome is unknown again,
//! with the same ids, until it gets an answer: so the history holds the exact order of every
//! change and append of these streams, and the checker (`checker/lifecycle.rs`) can say which
//! of their events every committed state hides. Its changes only ever hide more (max count
//! only lowered, truncate-before only raised; a soft delete and a tombstone are for ever):
//! an event once hidden is never shown again, which is what lets the checker judge a read by
//! its time. Max age is left out: the node stamps events with the wall clock, so what it
//! hides would differ from run to run of a seed.

use std::time::Duration;

use cairn_client::{Client, Error, EventData, ExpectedRevision, ReadOptions, StreamMetadata};
use uuid::Uuid;

use crate::history::{
    AppendOutcome, ChangeOutcome, Consistency, Expected, LifecycleChange, Record,
};
use crate::rng::SimRng;
use crate::workload::{
    client_for, digest_of, now_ms, record, timed_append, timed_read, Recorder, OP_TIMEOUT_MS,
    READ_MAX_COUNT,
};

/// Streams the lifecycle client owns: `life-0` ..
pub const LIFE_STREAMS: u64 = 4;
/// The one stream it may tombstone, and the one it may erase: the others stay writable to
/// the end, so that retention and scavenges have live events to keep.
pub const TOMBSTONED_STREAM: usize = 2;
pub const ERASED_STREAM: usize = 3;
/// The client number its records carry (the workload's clients are 1..=N, the heal probe 0).
pub const LIFECYCLE_CLIENT: u32 = 900;
/// The type of its events (in none of the indexes the workload reads).
pub const LIFE_EVENT_TYPE: &str = "Life";
/// Most events one of its appends carries (several, so that a max count cuts through an
/// append: a group partly hidden, which a scavenge must keep whole).
pub const MAX_LIFE_EVENTS_PER_APPEND: u64 = 3;
/// The max count a stream's first limit is drawn below (each later one is lower or equal),
/// and the lowest one drawn: above the most events of one append, so that the count cuts
/// through older appends, not only the last.
pub const FIRST_MAX_COUNT: u64 = 8;
pub const LOWEST_MAX_COUNT: u64 = 2;
/// Erases per run (each is a tombstone plus the removal of the stream's events and of its
/// metadata's history).
pub const ERASES_PER_RUN: u32 = 1;
/// Most steps one scavenge or erase takes before it gives up (a step examines 1,024 groups;
/// a run has a few hundred).
pub const MAX_STEPS_PER_OPERATION: u32 = 16;
/// Pause before an unknown outcome is sent again.
pub const RETRY_PAUSE_MS: u64 = 100;
/// Longest pause between two operations.
pub const MAX_PAUSE_MS: u64 = 40;

/// What the client believes of one of its streams.
#[derive(Default)]
struct LifeStream {
    name: String,
    head: Option<u64>,
    max_count: Option<u64>,
    truncate_before: Option<u64>,
    /// Tombstoned or erased: only appends that must be refused go to it.
    ended: bool,
}

struct Life {
    client: Client,
    rng: SimRng,
    recorder: Recorder,
    ops: u64,
    streams: Vec<LifeStream>,
    erases: u32,
    /// Unknown outcomes are sent again until this time.
    retry_until_ms: u64,
}

/// Runs the lifecycle client: operations until `until_ms`, answers awaited until
/// `retry_until_ms`.
pub async fn run_lifecycle(
    endpoints: Vec<String>,
    rng: SimRng,
    until_ms: u64,
    retry_until_ms: u64,
    recorder: Recorder,
) -> turmoil::Result {
    let mut life = Life {
        client: client_for(endpoints)?,
        rng,
        recorder,
        ops: 0,
        streams: (0..LIFE_STREAMS)
            .map(|n| LifeStream {
                name: format!("life-{n}"),
                ..LifeStream::default()
            })
            .collect(),
        erases: 0,
        retry_until_ms,
    };
    while now_ms() < until_ms {
        life.step().await;
        let pause = life.rng.below(MAX_PAUSE_MS);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    Ok(())
}

impl Life {
    fn next_op(&mut self) -> u64 {
        self.ops += 1;
        u64::from(LIFECYCLE_CLIENT) * 1_000_000 + self.ops
    }

    async fn step(&mut self) {
        let which = self.rng.below(LIFE_STREAMS) as usize;
        let ended = self.streams[which].ended;
        match self.rng.below(100) {
            // Appends to an ended stream are rarer: each must be refused.
            0..=44 if !ended || self.rng.percent(20) => self.append(which).await,
            45..=59 if !ended => self.set_metadata(which).await,
            60..=67 if !ended => {
                self.change(which, LifecycleChange::SoftDelete).await;
            }
            68..=79 => {
                self.change(which, LifecycleChange::Scavenge).await;
            }
            80..=91 => self.read(which).await,
            92..=95 if !ended && which == TOMBSTONED_STREAM => {
                self.change(which, LifecycleChange::Tombstone).await;
            }
            96..=99 if self.erases < ERASES_PER_RUN && which == ERASED_STREAM => {
                self.erases += 1;
                self.change(which, LifecycleChange::Erase).await;
            }
            _ => {}
        }
    }

    /// Appends 1..=3 events with `any`, sent again (same ids) until the answer is known.
    async fn append(&mut self, which: usize) {
        let count = self.rng.between(1, MAX_LIFE_EVENTS_PER_APPEND);
        let events: Vec<EventData> = (0..count)
            .map(|_| {
                let id = self.rng.uuid();
                EventData::binary(LIFE_EVENT_TYPE, id.as_bytes().to_vec()).with_id(id)
            })
            .collect();
        let stream = self.streams[which].name.clone();
        loop {
            let op = self.next_op();
            let start_ms = now_ms();
            let outcome =
                timed_append(&self.client, &stream, ExpectedRevision::Any, events.clone()).await;
            record(
                &self.recorder,
                Record::Append {
                    op,
                    client: LIFECYCLE_CLIENT,
                    start_ms,
                    end_ms: now_ms(),
                    stream: stream.clone(),
                    expected: Expected::Any,
                    ids: events.iter().map(|e| e.id).collect(),
                    digests: events.iter().map(digest_of).collect(),
                    outcome: outcome.clone(),
                },
            );
            match outcome {
                AppendOutcome::Ok { last_revision, .. } => {
                    self.streams[which].head = Some(last_revision);
                    return;
                }
                AppendOutcome::Unknown { .. } if self.may_retry() => self.pause().await,
                _ => return,
            }
        }
    }

    /// Lowers the max count or raises truncate-before (never the other way: see the module
    /// docs), keeping the other limit as it was.
    async fn set_metadata(&mut self, which: usize) {
        let stream = &self.streams[which];
        let (mut max_count, mut truncate_before) = (stream.max_count, stream.truncate_before);
        if self.rng.percent(50) {
            let ceiling = max_count.unwrap_or(FIRST_MAX_COUNT);
            max_count = Some(self.rng.between(LOWEST_MAX_COUNT.min(ceiling), ceiling));
        } else {
            let floor = truncate_before.unwrap_or(0);
            let ceiling = stream.head.map_or(floor, |h| h.max(floor));
            truncate_before = Some(self.rng.between(floor, ceiling));
        }
        let change = LifecycleChange::Metadata {
            max_count,
            truncate_before,
        };
        if self.change(which, change).await {
            let stream = &mut self.streams[which];
            (stream.max_count, stream.truncate_before) = (max_count, truncate_before);
        }
    }

    /// A linearizable read of the whole stream: it must show no event a change acknowledged
    /// before it began hid.
    async fn read(&mut self, which: usize) {
        let op = self.next_op();
        let stream = self.streams[which].name.clone();
        let start_ms = now_ms();
        let options = ReadOptions::forwards()
            .linearizable()
            .max_count(READ_MAX_COUNT);
        let outcome = timed_read(&self.client, &stream, options).await;
        record(
            &self.recorder,
            Record::Read {
                op,
                client: LIFECYCLE_CLIENT,
                start_ms,
                end_ms: now_ms(),
                stream: Some(stream),
                from_position: 0,
                max_count: READ_MAX_COUNT,
                consistency: Consistency::Linearizable,
                outcome,
            },
        );
    }

    /// Makes `change` to the stream (a scavenge: to `$all`), sent again with the same id
    /// until the answer is known (a scavenge is not: it changes no answer). Whether it was
    /// done.
    async fn change(&mut self, which: usize, change: LifecycleChange) -> bool {
        let stream = match change {
            LifecycleChange::Scavenge => String::new(),
            _ => self.streams[which].name.clone(),
        };
        let id = matches!(
            change,
            LifecycleChange::Metadata { .. }
                | LifecycleChange::SoftDelete
                | LifecycleChange::Tombstone
        )
        .then(|| self.rng.uuid());
        loop {
            let op = self.next_op();
            let start_ms = now_ms();
            let outcome = self.attempt(&stream, &change, id).await;
            record(
                &self.recorder,
                Record::Lifecycle {
                    op,
                    client: LIFECYCLE_CLIENT,
                    start_ms,
                    end_ms: now_ms(),
                    stream: stream.clone(),
                    change: change.clone(),
                    id,
                    outcome: outcome.clone(),
                },
            );
            match outcome {
                ChangeOutcome::Ok { .. } => {
                    if matches!(change, LifecycleChange::Tombstone | LifecycleChange::Erase) {
                        self.streams[which].ended = true;
                    }
                    return true;
                }
                ChangeOutcome::Unknown { .. }
                    if self.may_retry() && change != LifecycleChange::Scavenge =>
                {
                    self.pause().await
                }
                _ => return false,
            }
        }
    }

    /// One try of a change, bounded by [`OP_TIMEOUT_MS`] per call.
    async fn attempt(
        &self,
        stream: &str,
        change: &LifecycleChange,
        id: Option<Uuid>,
    ) -> ChangeOutcome {
        let id = id.unwrap_or_default();
        let written = |result: Result<Result<cairn_client::AppendResult, Error>, _>| match result {
            Ok(Ok(written)) => ChangeOutcome::Ok {
                meta_revision: Some(written.last_revision),
                meta_position: Some(written.last_position),
            },
            Ok(Err(e)) => refused_or_unknown(e),
            Err(_) => timed_out(),
        };
        let bound = Duration::from_millis(OP_TIMEOUT_MS);
        match change {
            LifecycleChange::Metadata {
                max_count,
                truncate_before,
            } => {
                let metadata = StreamMetadata {
                    max_count: *max_count,
                    truncate_before: *truncate_before,
                    ..StreamMetadata::default()
                };
                let call = self.client.set_stream_metadata_with_id(
                    stream,
                    ExpectedRevision::Any,
                    metadata,
                    id,
                );
                written(tokio::time::timeout(bound, call).await)
            }
            LifecycleChange::SoftDelete | LifecycleChange::Tombstone => {
                let tombstone = *change == LifecycleChange::Tombstone;
                let call =
                    self.client
                        .delete_stream_with_id(stream, ExpectedRevision::Any, tombstone, id);
                written(tokio::time::timeout(bound, call).await)
            }
            LifecycleChange::Erase => {
                for _ in 0..MAX_STEPS_PER_OPERATION {
                    match tokio::time::timeout(bound, self.client.erase_step(stream)).await {
                        Ok(Ok(step)) if step.more => {}
                        Ok(Ok(_)) => return done(),
                        Ok(Err(e)) => return refused_or_unknown(e),
                        Err(_) => return timed_out(),
                    }
                }
                ChangeOutcome::Unknown {
                    error: format!("more than {MAX_STEPS_PER_OPERATION} steps"),
                }
            }
            LifecycleChange::Scavenge => {
                let mut from = 0;
                for _ in 0..MAX_STEPS_PER_OPERATION {
                    match tokio::time::timeout(bound, self.client.scavenge_step(from)).await {
                        Ok(Ok(step)) => match step.next_position {
                            Some(next) => from = next,
                            None => return done(),
                        },
                        Ok(Err(e)) => return refused_or_unknown(e),
                        Err(_) => return timed_out(),
                    }
                }
                ChangeOutcome::Unknown {
                    error: format!("more than {MAX_STEPS_PER_OPERATION} steps"),
                }
            }
        }
    }

    fn may_retry(&self) -> bool {
        now_ms() < self.retry_until_ms
    }

    async fn pause(&self) {
        tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
    }
}

fn done() -> ChangeOutcome {
    ChangeOutcome::Ok {
        meta_revision: None,
        meta_position: None,
    }
}

fn timed_out() -> ChangeOutcome {
    ChangeOutcome::Unknown {
        error: "timed out".into(),
    }
}

/// A definite refusal, or an outcome the client cannot know.
fn refused_or_unknown(e: Error) -> ChangeOutcome {
    match e {
        Error::WrongExpectedVersion { .. }
        | Error::StreamNotFound { .. }
        | Error::StreamDeleted { .. }
        | Error::InvalidArgument(_) => ChangeOutcome::Rejected {
            reason: e.to_string(),
        },
        e => ChangeOutcome::Unknown {
            error: e.to_string(),
        },
    }
}
