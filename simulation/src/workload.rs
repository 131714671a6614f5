//! What the simulated clients do, chosen from the seed: appends to a few hot streams with
//! conflicting expected revisions and to many cold streams, re-sends with the same event ids
//! (after a timeout, and of appends that were acknowledged), linearizable and local reads, and
//! subscriptions. Everything they see goes into the history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::{
    AppendCondition, Client, ClientConfig, ContentType, Error, EventData, ExpectedRevision,
    NodePreference, Query, QueryItem, ReadFrom, ReadOptions, RecordedEvent, StreamAppend,
    SubscribeOptions, SubscriptionMessage, ALL_STREAM,
};
use tokio_stream::StreamExt;

use crate::history::{
    content_digest, AppendOutcome, ConditionRef, Consistency, EventRef, Expected, MultiOutcome,
    MultiPart, QueryItemRef, ReadOutcome, Record,
};
use crate::rng::SimRng;

/// Bound on one operation, client retries included: past it the outcome is unknown.
pub const OP_TIMEOUT_MS: u64 = 4_000;
/// Per-attempt bound inside the client library.
pub const REQUEST_TIMEOUT_MS: u64 = 1_000;
/// Attempts the client library makes per append before reporting `Unavailable`.
pub const APPEND_ATTEMPTS: u32 = 3;
/// Hot streams shared by every client (where expected revisions conflict).
pub const HOT_STREAMS: u64 = 3;
/// Cold streams per client.
pub const COLD_STREAMS: u64 = 40;
/// Most events a read asks for.
pub const READ_MAX_COUNT: u64 = 64;
/// Most events one append carries.
pub const MAX_EVENTS_PER_APPEND: u64 = 4;
/// Most appends a client remembers for re-sending.
pub const RESEND_MEMORY: usize = 32;
/// Share of re-sends that change one event's data but keep its id (a reused id).
pub const REUSE_WITH_OTHER_CONTENT_PERCENT: u64 = 30;
/// Share of events tagged with their client (`client:N`), and of those also with a colour
/// (`color:0`..`color:2`, shared by every client).
pub const TAGGED_PERCENT: u64 = 70;
pub const COLOURED_PERCENT: u64 = 40;
pub const COLOURS: u64 = 3;
/// Share of `$all` reads that read an index instead.
pub const INDEX_READ_PERCENT: u64 = 50;
/// Share of operations that are multi-stream or DCB appends (issue 16).
pub const MULTI_PERCENT: u64 = 20;
/// Of those, the share that are DCB appends (the rest: two hot streams at once, some with a
/// DCB condition too).
pub const DCB_OF_MULTI_PERCENT: u64 = 60;
/// Seats every client competes for: a DCB append of a `Seat` event tagged `seat:K`, failing
/// if another `Seat` of `seat:K` exists (after the position the client last read, or at all).
pub const SEATS: u64 = 4;

/// The indexes the workload's events can be in: what clients read and what each node's
/// indexes are dumped and judged by after the run.
pub fn index_names(clients: u32) -> Vec<String> {
    let mut names: Vec<String> = ["$ce-hot", "$ce-cold", "$ce-heal"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    names.extend((0..MAX_EVENTS_PER_APPEND).map(|i| format!("$et-T{i}")));
    names.push("$et-Healed".to_owned());
    names.extend((1..=clients).map(|c| format!("$tag-client:{c}")));
    names.extend((0..COLOURS).map(|c| format!("$tag-color:{c}")));
    names.push("$et-Seat".to_owned());
    names.push("$ce-$dcb".to_owned());
    names.extend((0..SEATS).map(|k| format!("$tag-seat:{k}")));
    names
}

/// The history as it is being recorded (shared by the clients of one run).
pub type Recorder = Arc<Mutex<Vec<Record>>>;

pub(crate) fn record(recorder: &Recorder, record: Record) {
    recorder
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(record);
}

/// Milliseconds of simulated time since the run began.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

/// One simulated client.
pub struct ClientPlan {
    pub client: u32,
    pub rng: SimRng,
    pub endpoints: Vec<String>,
    /// Stop starting operations after this time.
    pub until_ms: u64,
    /// Follow `$all` (from the start) while working, and record what it delivered.
    pub subscribe_all: bool,
    /// How many clients the run has (the `$tag-client:N` indexes there are).
    pub clients: u32,
}

/// An append as sent, kept for re-sending.
#[derive(Clone)]
struct Sent {
    stream: String,
    expected: ExpectedRevision,
    events: Vec<EventData>,
}

struct ClientState {
    plan: ClientPlan,
    client: Client,
    recorder: Recorder,
    ops: u64,
    /// The last revision this client believes each stream has.
    known: BTreeMap<String, Option<u64>>,
    sent: Vec<(Sent, bool)>,
    last_position: Option<u64>,
    /// The re-sends' reused-id choices, a stream of their own so that every other choice of a
    /// seed stays what it was before they existed.
    reuse: SimRng,
    /// Tags and index reads, likewise a stream of their own.
    indexes: SimRng,
    /// Multi-stream and DCB appends, likewise.
    multi: SimRng,
}

/// The `split` purpose of [`ClientState::reuse`].
const REUSE_STREAM: u64 = 0x05EE_D1D5;
/// The `split` purpose of [`ClientState::indexes`].
const INDEX_STREAM: u64 = 0x1DE7_0001;
/// The `split` purpose of [`ClientState::multi`].
const MULTI_STREAM: u64 = 0xDCB0_0001;

pub fn client_for(endpoints: Vec<String>) -> Result<Client, Error> {
    let config = ClientConfig {
        endpoints,
        request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
        max_append_attempts: APPEND_ATTEMPTS,
        leader_only: true,
        // turmoil's network has no TLS.
        tls_ca: None,
        credentials: None,
    };
    Client::with_channel_factory(config, crate::net::channel)
}

/// Runs one client until `until_ms`.
pub async fn run_client(plan: ClientPlan, recorder: Recorder) -> turmoil::Result {
    let client = client_for(plan.endpoints.clone())?;
    let subscription = plan
        .subscribe_all
        .then(|| tokio::spawn(follow_all(client.clone(), plan.client, recorder.clone())));
    let mut state = ClientState {
        reuse: plan.rng.split(REUSE_STREAM),
        indexes: plan.rng.split(INDEX_STREAM),
        multi: plan.rng.split(MULTI_STREAM),
        plan,
        client,
        recorder,
        ops: 0,
        known: BTreeMap::new(),
        sent: Vec::new(),
        last_position: None,
    };
    while now_ms() < state.plan.until_ms {
        if state.multi.percent(MULTI_PERCENT) {
            state.multi_step().await;
        } else {
            state.step().await;
        }
        let pause = state.plan.rng.below(20);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    if let Some(subscription) = subscription {
        subscription.abort();
        let _ = subscription.await;
    }
    Ok(())
}

/// After the heal, appends one event until the cluster acknowledges it (or `deadline_ms`
/// passes): the proof that the healed cluster accepts writes again, however long the
/// workload's own clients were stuck on connections the faults broke.
pub async fn run_heal_probe(
    endpoints: Vec<String>,
    mut rng: SimRng,
    heal_at_ms: u64,
    deadline_ms: u64,
    recorder: Recorder,
) -> turmoil::Result {
    tokio::time::sleep(Duration::from_millis(heal_at_ms.saturating_sub(now_ms()))).await;
    let mut state = ClientState {
        plan: ClientPlan {
            client: 0,
            rng: rng.split(0),
            endpoints: endpoints.clone(),
            until_ms: deadline_ms,
            subscribe_all: false,
            clients: 0,
        },
        client: client_for(endpoints)?,
        recorder,
        ops: 0,
        known: BTreeMap::new(),
        sent: Vec::new(),
        last_position: None,
        reuse: rng.split(REUSE_STREAM),
        indexes: rng.split(INDEX_STREAM),
        multi: rng.split(MULTI_STREAM),
    };
    let id = rng.uuid();
    let sent = Sent {
        stream: "heal-probe".into(),
        expected: ExpectedRevision::Any,
        events: vec![EventData::binary("Healed", id.as_bytes().to_vec()).with_id(id)],
    };
    while now_ms() < deadline_ms {
        if let AppendOutcome::Ok { .. } = state.append(&sent).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(HEAL_PROBE_PAUSE_MS)).await;
    }
    Ok(())
}

/// Pause between the heal probe's attempts.
pub const HEAL_PROBE_PAUSE_MS: u64 = 100;

/// Everything a subscription to `$all` delivered, recorded when the task is dropped.
struct Delivered {
    recorder: Recorder,
    client: u32,
    events: Vec<EventRef>,
    caught_up: u32,
}

impl Drop for Delivered {
    fn drop(&mut self) {
        record(
            &self.recorder,
            Record::Subscription {
                sub: self.client,
                client: self.client,
                stream: None,
                from: 0,
                events: std::mem::take(&mut self.events),
                caught_up: self.caught_up,
            },
        );
    }
}

async fn follow_all(client: Client, id: u32, recorder: Recorder) {
    let mut delivered = Delivered {
        recorder,
        client: id,
        events: Vec::new(),
        caught_up: 0,
    };
    let options = SubscribeOptions::default().from(ReadFrom::At(0));
    let Ok(mut subscription) = client.subscribe_all(options).await else {
        return;
    };
    while let Some(Ok(message)) = subscription.next().await {
        match message {
            SubscriptionMessage::Event(event) => delivered.events.push(event_ref(&event)),
            SubscriptionMessage::CaughtUp { .. } => delivered.caught_up += 1,
            _ => {}
        }
    }
}

pub fn event_ref(event: &RecordedEvent) -> EventRef {
    EventRef {
        id: event.id,
        stream: event.stream.clone(),
        revision: event.revision,
        position: event.position,
        digest: Some(content_digest(
            &event.event_type,
            event.content_type == ContentType::Binary,
            &event.data,
            &event.metadata,
        )),
        event_type: Some(event.event_type.clone()),
        tags: event.tags.clone(),
    }
}

pub fn digest_of(event: &EventData) -> u64 {
    content_digest(
        &event.event_type,
        event.content_type == ContentType::Binary,
        &event.data,
        &event.metadata,
    )
}

pub fn expected_of(expected: ExpectedRevision) -> Expected {
    match expected {
        ExpectedRevision::Any => Expected::Any,
        ExpectedRevision::NoStream => Expected::NoStream,
        ExpectedRevision::StreamExists => Expected::StreamExists,
        ExpectedRevision::Exact(revision) => Expected::Exact(revision),
    }
}

impl ClientState {
    fn next_op(&mut self) -> u64 {
        self.ops += 1;
        u64::from(self.plan.client) * 1_000_000 + self.ops
    }

    async fn step(&mut self) {
        match self.plan.rng.below(100) {
            0..=39 => {
                let stream = format!("hot-{}", self.plan.rng.below(HOT_STREAMS));
                let expected = match self.known.get(&stream) {
                    Some(Some(revision)) => ExpectedRevision::Exact(*revision),
                    Some(None) => ExpectedRevision::NoStream,
                    None if self.plan.rng.percent(50) => ExpectedRevision::NoStream,
                    None => ExpectedRevision::Any,
                };
                self.append_new(stream, expected).await;
            }
            40..=64 => {
                let stream = format!(
                    "cold-{}-{}",
                    self.plan.client,
                    self.plan.rng.below(COLD_STREAMS)
                );
                let expected = match self.plan.rng.below(3) {
                    0 => ExpectedRevision::Any,
                    1 => ExpectedRevision::StreamExists,
                    _ => match self.known.get(&stream) {
                        Some(Some(revision)) => ExpectedRevision::Exact(*revision),
                        _ => ExpectedRevision::NoStream,
                    },
                };
                self.append_new(stream, expected).await;
            }
            65..=74 => self.resend().await,
            75..=89 => {
                let stream = if self.plan.rng.percent(50) {
                    format!("hot-{}", self.plan.rng.below(HOT_STREAMS))
                } else {
                    format!(
                        "cold-{}-{}",
                        self.plan.client,
                        self.plan.rng.below(COLD_STREAMS)
                    )
                };
                self.read(Some(stream)).await;
            }
            _ => self.read(None).await,
        }
    }

    async fn append_new(&mut self, stream: String, expected: ExpectedRevision) {
        let count = self.plan.rng.between(1, MAX_EVENTS_PER_APPEND);
        let events = (0..count)
            .map(|i| {
                let id = self.plan.rng.uuid();
                let event = EventData::binary(format!("T{i}"), id.as_bytes().to_vec()).with_id(id);
                event.with_tags(self.tags())
            })
            .collect();
        let sent = Sent {
            stream,
            expected,
            events,
        };
        let outcome = self.append(&sent).await;
        let unknown = matches!(outcome, AppendOutcome::Unknown { .. });
        let acknowledged = matches!(outcome, AppendOutcome::Ok { .. });
        if unknown || acknowledged {
            if self.sent.len() == RESEND_MEMORY {
                self.sent.remove(0);
            }
            self.sent.push((sent.clone(), unknown));
        }
        // A timed-out append is re-sent at once half the time, as an application would.
        if unknown && self.plan.rng.percent(50) {
            self.append(&sent).await;
        }
    }

    /// An event's tags, drawn from [`ClientState::indexes`].
    fn tags(&mut self) -> Vec<String> {
        let mut tags = Vec::new();
        if self.indexes.percent(TAGGED_PERCENT) {
            tags.push(format!("client:{}", self.plan.client));
            if self.indexes.percent(COLOURED_PERCENT) {
                tags.push(format!("color:{}", self.indexes.below(COLOURS)));
            }
        }
        tags
    }

    /// Sends a remembered append again, same ids: what was written must not be written twice.
    /// One time in [`REUSE_WITH_OTHER_CONTENT_PERCENT`] one of its events goes with other data
    /// (the same id reused for another event): where the original was written, that must be
    /// refused and write nothing. Such a variant is not remembered.
    async fn resend(&mut self) {
        if self.sent.is_empty() {
            return;
        }
        let index = self.plan.rng.below(self.sent.len() as u64) as usize;
        let (mut sent, _) = self.sent[index].clone();
        if self.reuse.percent(REUSE_WITH_OTHER_CONTENT_PERCENT) {
            let which = self.reuse.below(sent.events.len() as u64) as usize;
            let other = self.reuse.uuid();
            sent.events[which].data = other.as_bytes().to_vec();
        }
        self.append(&sent).await;
    }

    async fn append(&mut self, sent: &Sent) -> AppendOutcome {
        let op = self.next_op();
        let start_ms = now_ms();
        let outcome = timed_append(
            &self.client,
            &sent.stream,
            sent.expected,
            sent.events.clone(),
        )
        .await;
        learn_from(
            &mut self.known,
            &mut self.last_position,
            &sent.stream,
            &outcome,
        );
        record(
            &self.recorder,
            Record::Append {
                op,
                client: self.plan.client,
                start_ms,
                end_ms: now_ms(),
                stream: sent.stream.clone(),
                expected: expected_of(sent.expected),
                ids: sent.events.iter().map(|e| e.id).collect(),
                digests: sent.events.iter().map(digest_of).collect(),
                outcome: outcome.clone(),
            },
        );
        outcome
    }

    /// A multi-stream or DCB append, chosen from [`ClientState::multi`].
    async fn multi_step(&mut self) {
        let seat = self.multi.below(SEATS);
        let seat_query = QueryItem::types(["Seat"]).with_tags([format!("seat:{seat}")]);
        if self.multi.percent(DCB_OF_MULTI_PERCENT) {
            // Claim a seat: at all (no `after`), or after the last Seat of it this client read.
            let after = if self.multi.percent(50) {
                None
            } else {
                let query = Query::of(vec![seat_query.clone()]);
                let read = self
                    .client
                    .read_query(&query, ReadOptions::backwards().max_count(1).linearizable());
                match tokio::time::timeout(Duration::from_millis(OP_TIMEOUT_MS), async {
                    let mut events = read.await?;
                    events.next().await.transpose()
                })
                .await
                {
                    Ok(Ok(last)) => last.map(|e| e.position),
                    _ => return,
                }
            };
            let id = self.multi.uuid();
            let event = EventData::binary("Seat", id.as_bytes().to_vec())
                .with_id(id)
                .with_tags([
                    format!("seat:{seat}"),
                    format!("client:{}", self.plan.client),
                ]);
            let condition = AppendCondition {
                fail_if_events_match: Query::of(vec![seat_query]),
                after,
            };
            self.multi_append(Vec::new(), vec![event], Some(condition))
                .await;
            return;
        }
        let first = self.multi.below(HOT_STREAMS);
        let second = (first + 1 + self.multi.below(HOT_STREAMS - 1)) % HOT_STREAMS;
        let mut parts = Vec::new();
        for n in [first, second] {
            let stream = format!("hot-{n}");
            let expected = match self.known.get(&stream) {
                Some(Some(revision)) => ExpectedRevision::Exact(*revision),
                Some(None) => ExpectedRevision::NoStream,
                None => ExpectedRevision::Any,
            };
            let events = (0..self.multi.between(1, 2))
                .map(|i| {
                    let id = self.multi.uuid();
                    EventData::binary(format!("T{i}"), id.as_bytes().to_vec()).with_id(id)
                })
                .collect();
            parts.push(StreamAppend {
                stream,
                expected,
                events,
            });
        }
        let condition = self.multi.percent(30).then(|| AppendCondition {
            fail_if_events_match: Query::of(vec![seat_query]),
            after: self.last_position,
        });
        self.multi_append(parts, Vec::new(), condition).await;
    }

    /// Sends a multi-stream append and records it; an unknown outcome is re-sent at once half
    /// the time, the same request (ids and condition).
    async fn multi_append(
        &mut self,
        parts: Vec<StreamAppend>,
        dcb_events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) {
        for _ in 0..2 {
            let op = self.next_op();
            let start_ms = now_ms();
            let attempt =
                self.client
                    .append_multi(parts.clone(), dcb_events.clone(), condition.clone());
            let outcome =
                match tokio::time::timeout(Duration::from_millis(OP_TIMEOUT_MS), attempt).await {
                    Ok(Ok(written)) => {
                        for (stream, revision) in &written.last_revisions {
                            self.known.insert(stream.clone(), Some(*revision));
                        }
                        self.last_position = self.last_position.max(Some(written.last_position));
                        MultiOutcome::Ok {
                            last_revisions: written.last_revisions.iter().map(|r| r.1).collect(),
                            last_position: written.last_position,
                        }
                    }
                    Ok(Err(Error::WrongExpectedVersion { stream, actual, .. })) => {
                        self.known.insert(stream.clone(), actual);
                        MultiOutcome::WrongExpectedVersion { stream, actual }
                    }
                    Ok(Err(Error::ConditionFailed { position })) => {
                        MultiOutcome::ConditionFailed { position }
                    }
                    Ok(Err(
                        e @ (Error::InvalidArgument(_)
                        | Error::IdempotencyConflict(_)
                        | Error::EventIdReused { .. }),
                    )) => MultiOutcome::Rejected {
                        reason: e.to_string(),
                    },
                    Ok(Err(e)) => MultiOutcome::Unknown {
                        error: e.to_string(),
                    },
                    Err(_) => MultiOutcome::Unknown {
                        error: "timed out".into(),
                    },
                };
            let unknown = matches!(outcome, MultiOutcome::Unknown { .. });
            let mut recorded: Vec<MultiPart> = parts
                .iter()
                .map(|p| MultiPart {
                    stream: p.stream.clone(),
                    expected: expected_of(p.expected),
                    ids: p.events.iter().map(|e| e.id).collect(),
                    digests: p.events.iter().map(digest_of).collect(),
                })
                .collect();
            if !dcb_events.is_empty() {
                recorded.push(MultiPart {
                    stream: "$dcb".to_owned(),
                    expected: Expected::Any,
                    ids: dcb_events.iter().map(|e| e.id).collect(),
                    digests: dcb_events.iter().map(digest_of).collect(),
                });
            }
            let condition = condition.as_ref().map(|c| ConditionRef {
                items: c
                    .fail_if_events_match
                    .items
                    .iter()
                    .map(|i| QueryItemRef {
                        types: i.types.clone(),
                        tags: i.tags.clone(),
                    })
                    .collect(),
                after: c.after,
            });
            record(
                &self.recorder,
                Record::MultiAppend {
                    op,
                    client: self.plan.client,
                    start_ms,
                    end_ms: now_ms(),
                    parts: recorded,
                    condition,
                    outcome,
                },
            );
            if !(unknown && self.multi.percent(50)) {
                return;
            }
        }
    }

    /// A forwards read of a whole stream (`Some`) or of `$all` from a recent position.
    async fn read(&mut self, stream: Option<String>) {
        let op = self.next_op();
        let (consistency, mut options) = match self.plan.rng.below(3) {
            0 => (
                Consistency::Linearizable,
                ReadOptions::forwards().linearizable(),
            ),
            1 => (Consistency::Local, ReadOptions::forwards()),
            _ => {
                let min = self.last_position.unwrap_or(0);
                (
                    Consistency::LocalMinPosition(min),
                    ReadOptions::forwards().min_position(min),
                )
            }
        };
        options = options
            .max_count(READ_MAX_COUNT)
            .prefer(match self.plan.rng.below(3) {
                0 => NodePreference::Leader,
                1 => NodePreference::Follower,
                _ => NodePreference::Any,
            });
        let from_position = match &stream {
            Some(_) => 0,
            None => self.last_position.map_or(0, |p| {
                p.saturating_sub(self.plan.rng.below(2 * READ_MAX_COUNT))
            }),
        };
        if stream.is_none() {
            options = options.from(ReadFrom::At(from_position));
        }
        let index = match stream {
            None if self.indexes.percent(INDEX_READ_PERCENT) => {
                let names = index_names(self.plan.clients);
                Some(names[self.indexes.below(names.len() as u64) as usize].clone())
            }
            _ => None,
        };
        let start_ms = now_ms();
        let name = index
            .clone()
            .or_else(|| stream.clone())
            .unwrap_or_else(|| ALL_STREAM.to_owned());
        let outcome = timed_read(&self.client, &name, options).await;
        let (client, end_ms, max_count) = (self.plan.client, now_ms(), READ_MAX_COUNT);
        let read = match index {
            Some(index) => Record::IndexRead {
                op,
                client,
                start_ms,
                end_ms,
                index,
                from_position,
                max_count,
                consistency,
                outcome,
            },
            None => Record::Read {
                op,
                client,
                start_ms,
                end_ms,
                stream,
                from_position,
                max_count,
                consistency,
                outcome,
            },
        };
        record(&self.recorder, read);
    }
}

/// What an append's outcome tells a client about the stream (its last revision) and about the
/// newest position it wrote (for its reads of its own writes).
pub fn learn_from(
    known: &mut BTreeMap<String, Option<u64>>,
    last_position: &mut Option<u64>,
    stream: &str,
    outcome: &AppendOutcome,
) {
    match outcome {
        AppendOutcome::Ok {
            last_revision,
            last_position: position,
        } => {
            known.insert(stream.to_owned(), Some(*last_revision));
            *last_position = (*last_position).max(Some(*position));
        }
        AppendOutcome::WrongExpectedVersion { actual } => {
            known.insert(stream.to_owned(), *actual);
        }
        _ => {}
    }
}

/// An append bounded by [`OP_TIMEOUT_MS`] (the client's own retries included), as the history
/// records it: acknowledged, definitely not written, or unknown.
pub async fn timed_append(
    client: &Client,
    stream: &str,
    expected: ExpectedRevision,
    events: Vec<EventData>,
) -> AppendOutcome {
    let attempt = client.append(stream, expected, events);
    match tokio::time::timeout(Duration::from_millis(OP_TIMEOUT_MS), attempt).await {
        Ok(Ok(written)) => AppendOutcome::Ok {
            last_revision: written.last_revision,
            last_position: written.last_position,
        },
        Ok(Err(Error::WrongExpectedVersion { actual, .. })) => {
            AppendOutcome::WrongExpectedVersion { actual }
        }
        // A tombstoned stream refuses every append (the lifecycle client's, issue 18).
        Ok(Err(
            e @ (Error::InvalidArgument(_)
            | Error::IdempotencyConflict(_)
            | Error::EventIdReused { .. }
            | Error::StreamDeleted { .. }),
        )) => AppendOutcome::Rejected {
            reason: e.to_string(),
        },
        Ok(Err(e)) => AppendOutcome::Unknown {
            error: e.to_string(),
        },
        Err(_) => AppendOutcome::Unknown {
            error: "timed out".into(),
        },
    }
}

/// A forwards read of `stream` (or `$all`) bounded by [`OP_TIMEOUT_MS`], as the history
/// records it; a stream that does not exist reads as empty.
pub async fn timed_read(client: &Client, stream: &str, options: ReadOptions) -> ReadOutcome {
    let read = collect(client, stream, options);
    match tokio::time::timeout(Duration::from_millis(OP_TIMEOUT_MS), read).await {
        Ok(Ok(events)) => ReadOutcome::Ok { events },
        Ok(Err(Error::StreamNotFound { .. })) => ReadOutcome::Ok { events: Vec::new() },
        Ok(Err(e)) => ReadOutcome::Failed {
            error: e.to_string(),
        },
        Err(_) => ReadOutcome::Failed {
            error: "timed out".into(),
        },
    }
}

pub async fn collect(
    client: &Client,
    stream: &str,
    options: ReadOptions,
) -> Result<Vec<EventRef>, Error> {
    let mut events = if stream == ALL_STREAM {
        client.read_all(options).await?
    } else {
        client.read_stream(stream, options).await?
    };
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        seen.push(event_ref(&event?));
    }
    Ok(seen)
}
