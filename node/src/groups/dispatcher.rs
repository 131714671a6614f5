//! One group's dispatcher: reads the source from the checkpoint, hands events to consumers
//! within their windows, takes acks and nacks, redelivers on timeout with backoff, parks
//! after max retries, and proposes checkpoints through Raft.
//!
//! One task owns all of a group's delivery state; consumers talk to it through one bounded
//! control queue, and its proposals (checkpoints, parks) run beside it and report back, so a
//! slow commit never stalls acks.
//!
//! **Ordered strategy: a per-stream lock.** An event is handed out only when it is the
//! lowest outstanding key of its stream and nothing of its stream is in flight (or waiting
//! for a retry, or being parked); any consumer with room may take it. So never two events of
//! one stream are in flight, and a stream's events go out (and are acknowledged) in revision
//! order, while different streams spread over every consumer. Hashing streams to consumers
//! was the alternative; it needs a rebalance whenever a consumer joins or leaves (and a
//! careful hand-over of the streams in flight), and one slow consumer holds a fixed share of
//! the streams. The lock needs neither. A parked event lets its stream go on (parking is its
//! handling).
//!
//! **Limits.** Events read ahead of delivery: `read_ahead` (four windows of the consumers
//! connected, between `MIN_READ_AHEAD_EVENTS` and `MAX_READ_AHEAD_EVENTS`); past it the source
//! is not read. Events done but not yet in a committed checkpoint: at most
//! `UNCHECKPOINTED_WINDOWS` windows; past it the source is not read until a checkpoint
//! commits. So after a leader change at most the windows in flight plus those done since the
//! last checkpoint are delivered again. Per consumer, at most its window of events in flight
//! and `REJECTIONS_QUEUED` answers to bad acks waiting: a consumer that leaves those unread
//! is disconnected.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::proto;
use cairn_client::proto::consume_response::Message as Out;
use cairn_raft_store::consumer_group::{
    all_group_skips, is_done, parked_stream, GroupState, ParkedRecord, Source, ALL_SOURCE,
    MAX_PARKED_PER_COMMAND, MAX_PARK_REASON_BYTES,
};
use cairn_raft_store::filter::EventFilter;
use cairn_raft_store::{
    Command, Direction, GroupCheckpoint, GroupCommand, GroupResult, GroupStrategy, ParkedEvent,
    Response,
};
use openraft::async_runtime::WatchReceiver;
use openraft::error::RaftError;
use openraft::ReadPolicy;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;
use uuid::Uuid;

use super::cursor::checkpoint;
use super::{Admitted, Control};
use crate::api::lifecycle::{now_unix_ms, propose};
use crate::api::subscribe::{self, Subscription, Target};
use crate::api::{not_leader, NodeContext};
use crate::error::NodeError;

/// Control messages queued per group; a consumer's acks wait when it is full.
pub const CONTROL_QUEUE_MESSAGES: usize = 1_024;
/// Answers to unknown acks queued per consumer beyond its window.
pub const REJECTIONS_QUEUED: usize = 64;
/// Bounds of the read-ahead (events read from the source and not yet done).
pub const MIN_READ_AHEAD_EVENTS: usize = 64;
pub const MAX_READ_AHEAD_EVENTS: usize = 16_384;
/// Windows of events done and not yet checkpointed before reading stops.
pub const UNCHECKPOINTED_WINDOWS: usize = 4;
/// How often timeouts, backoffs and the checkpoint interval are looked at.
pub const TICK_MS: u64 = 20;
/// Backoff of the first retry, doubled per retry up to the maximum.
pub const RETRY_BACKOFF_MS: u64 = 50;
pub const MAX_RETRY_BACKOFF_MS: u64 = 5_000;
/// How long a starting dispatcher waits for the leader's read index.
pub const START_TIMEOUT_MS: u64 = 5_000;
/// How often a dispatcher measures its group for the metrics.
pub const METRICS_EVERY_MS: u64 = 1_000;
/// Parked events read per page when replaying.
const PARKED_PAGE_EVENTS: u64 = 64;

/// Where a key comes from: a replayed parked event (by its parked-stream revision) or the
/// source (by revision or position). Replays sort first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Parked(u64),
    Source(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Can go out (when its stream lets it, for the ordered strategy).
    Waiting,
    /// Waits for its retry's backoff.
    Delayed,
    InFlight {
        consumer: u64,
        deadline: Instant,
    },
    Parking,
}

struct Item {
    event: Arc<proto::RecordedEvent>,
    id: Uuid,
    /// Deliveries so far.
    deliveries: u32,
    state: State,
}

struct Consumer {
    peer: String,
    out: mpsc::Sender<Result<proto::ConsumeResponse, Status>>,
    /// The window it joined with: its channel has room for that many events (and its
    /// rejections). A smaller max in flight applies to it at once, a larger one only up to
    /// this (consumers that join after get all of it).
    joined_window: usize,
    in_flight: HashMap<Uuid, Key>,
    acked: u64,
}

/// A running group's figures (for `GroupInfo` and the metrics).
#[derive(Debug, Clone, Default)]
pub struct GroupStats {
    pub group: String,
    pub checkpoint: GroupCheckpoint,
    pub read_next: u64,
    pub in_flight: u64,
    pub outstanding: u64,
    pub redeliveries: u64,
    pub parked_by_this_leader: u64,
    pub consumers: Vec<(u64, String, u32, u64)>,
}

/// A proposal's outcome, reported back to the loop.
enum Proposed {
    Checkpoint {
        cursor: GroupCheckpoint,
        done: usize,
        result: Result<GroupResult, Status>,
    },
    Park {
        keys: Vec<Key>,
        result: Result<GroupResult, Status>,
    },
}

struct Dispatcher {
    ctx: Arc<NodeContext>,
    group: String,
    state: GroupState,
    ordered: bool,
    source_by_position: bool,
    /// A group on `$all`: it leaves out system streams (`all_group_skips`) by `filter`.
    on_all: bool,
    filter: Option<EventFilter>,
    items: BTreeMap<Key, Item>,
    /// Keys that may go out now, lowest first.
    ready: BTreeSet<Key>,
    /// Ordered strategy: each stream's outstanding keys.
    streams: HashMap<String, BTreeSet<Key>>,
    /// The deadline of each delivery in flight (one entry per item in flight).
    deadlines: BTreeSet<(Instant, Key)>,
    delayed: BTreeSet<(Instant, Key)>,
    to_park: VecDeque<(Key, String)>,
    consumers: BTreeMap<u64, Consumer>,
    next_consumer: u64,
    /// Round-robin over consumers: the one after this gets the next event.
    last_served: u64,
    read_next: u64,
    replay_next: u64,
    replay_to: u64,
    source_open: bool,
    committed: GroupCheckpoint,
    done_since_committed: usize,
    done_since_proposed: usize,
    last_checkpoint: Instant,
    checkpoint_in_flight: bool,
    park_in_flight: bool,
    redeliveries: u64,
    parked: u64,
    last_measured: Option<Instant>,
    stop: Option<Status>,
}

/// Starts `group`'s dispatcher on this node, the leader: confirms leadership and waits for
/// the committed state (so the checkpoint loaded is the last one committed), then loads the
/// group.
pub async fn start(ctx: Arc<NodeContext>, group: &str) -> Result<mpsc::Sender<Control>, Status> {
    if ctx.raft.metrics().borrow_watched().current_leader != Some(ctx.id) {
        return Err(not_leader(&ctx));
    }
    let check = ctx.raft.ensure_linearizable(ReadPolicy::ReadIndex);
    match tokio::time::timeout(Duration::from_millis(START_TIMEOUT_MS), check).await {
        Ok(Ok(_)) => {}
        Ok(Err(RaftError::APIError(_))) => return Err(not_leader(&ctx)),
        Ok(Err(RaftError::Fatal(e))) => return Err(crate::api::status::status(&e)),
        Err(_) => return Err(NodeError::LeadershipUnconfirmed.into()),
    }
    let state = match ctx.reader.consumer_group(group) {
        Ok(Some((state, _))) if !state.deleted => state,
        Ok(_) => {
            return Err(NodeError::GroupNotFound {
                group: group.to_owned(),
            }
            .into())
        }
        Err(e) => return Err(crate::api::status::status(&e)),
    };
    let source =
        Source::parse(&state.settings.source).map_err(|e| crate::api::status::invalid_input(&e))?;
    // The subscription applies the filter; the dispatcher leaves out system streams after it.
    let filter = match &state.filter {
        Some(filter) => EventFilter::compile(filter)
            .map_err(|e| crate::api::status::invalid(&format!("filter.{}", e.field), e.why))?,
        None => None,
    };
    let target = match &source {
        Source::All => Target::All(filter.clone()),
        Source::Index(index) => Target::Index(index.clone()),
        Source::Stream(stream) => Target::Stream(stream.clone()),
    };
    let (events_tx, events_rx) = subscribe::channel();
    let sub = Subscription {
        target,
        from: state.checkpoint.source.next,
        checkpoint_interval: subscribe::DEFAULT_CHECKPOINT_INTERVAL,
        node_id: ctx.id,
    };
    let source_task = tokio::spawn(subscribe::run(
        sub,
        ctx.reader.clone(),
        ctx.feed.clone(),
        events_tx,
    ));
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE_MESSAGES);
    let dispatcher = Dispatcher {
        group: group.to_owned(),
        ordered: state.settings.strategy == GroupStrategy::Ordered,
        source_by_position: source.by_position(),
        on_all: state.settings.source == ALL_SOURCE,
        filter,
        items: BTreeMap::new(),
        ready: BTreeSet::new(),
        streams: HashMap::new(),
        deadlines: BTreeSet::new(),
        delayed: BTreeSet::new(),
        to_park: VecDeque::new(),
        consumers: BTreeMap::new(),
        next_consumer: 1,
        last_served: 0,
        read_next: state.checkpoint.source.next,
        replay_next: state.checkpoint.parked.next,
        replay_to: state.replay_to,
        source_open: true,
        committed: state.checkpoint.clone(),
        done_since_committed: 0,
        done_since_proposed: 0,
        last_checkpoint: Instant::now(),
        checkpoint_in_flight: false,
        park_in_flight: false,
        redeliveries: 0,
        parked: 0,
        last_measured: None,
        stop: None,
        state,
        ctx,
    };
    tracing::info!(group, "consumer group dispatcher started");
    tokio::spawn(async move {
        dispatcher.run(control_rx, events_rx).await;
        source_task.abort();
    });
    Ok(control_tx)
}

fn backoff(retry: u32) -> Duration {
    let ms = RETRY_BACKOFF_MS.saturating_mul(1u64 << retry.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(MAX_RETRY_BACKOFF_MS))
}

impl Dispatcher {
    async fn run(
        mut self,
        mut control: mpsc::Receiver<Control>,
        mut events: mpsc::Receiver<Result<proto::SubscribeResponse, Status>>,
    ) {
        let (proposed_tx, mut proposed) = mpsc::channel::<Proposed>(4);
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.stop.is_none() {
            let can_read = self.source_open && self.may_read();
            tokio::select! {
                message = control.recv() => match message {
                    Some(message) => self.control(message),
                    None => break,
                },
                message = events.recv(), if can_read => self.source(message),
                Some(result) = proposed.recv() => self.proposed(result),
                _ = tick.tick() => self.tick(&proposed_tx),
            }
            self.read_parked();
            self.dispatch();
        }
        let status = self
            .stop
            .take()
            .unwrap_or_else(|| NodeError::ShuttingDown.into());
        tracing::info!(group = %self.group, %status, "consumer group dispatcher stopped");
        for consumer in self.consumers.values() {
            let _ = consumer.out.try_send(Err(status.clone()));
        }
        self.ctx.metrics.group_stopped(&self.group);
    }

    /// Publishes the group's figures (lag and parked read from the applied state).
    fn measure(&mut self, now: Instant) {
        let due = self
            .last_measured
            .is_none_or(|at| now.duration_since(at) >= Duration::from_millis(METRICS_EVERY_MS));
        if !due {
            return;
        }
        self.last_measured = Some(now);
        let reader = &self.ctx.reader;
        let end = match Source::parse(&self.state.settings.source) {
            Ok(Source::Stream(stream)) => {
                reader.stream_head(&stream).map(|h| h.map_or(0, |r| r + 1))
            }
            _ => reader.next_position(),
        };
        let parked = reader
            .stream_head(&parked_stream(&self.group))
            .map(|h| h.map_or(0, |r| r + 1));
        let (Ok(end), Ok(parked)) = (end, parked) else {
            return;
        };
        let cursor = &self.committed.source;
        let done_above: u64 = cursor.done.iter().map(|(from, to)| to - from).sum();
        let figures = crate::metrics::GroupFigures {
            lag: end.saturating_sub(cursor.next).saturating_sub(done_above),
            in_flight: self
                .consumers
                .values()
                .map(|c| c.in_flight.len() as u64)
                .sum(),
            parked,
            consumers: self.consumers.len() as u64,
        };
        self.ctx.metrics.group_figures(&self.group, figures);
    }

    fn windows(&self) -> usize {
        self.consumers.len().max(1) * self.state.settings.max_in_flight as usize
    }

    fn read_ahead(&self) -> usize {
        (4 * self.windows()).clamp(MIN_READ_AHEAD_EVENTS, MAX_READ_AHEAD_EVENTS)
    }

    fn may_read(&self) -> bool {
        !self.consumers.is_empty()
            && self.items.len() < self.read_ahead()
            && self.done_since_committed < UNCHECKPOINTED_WINDOWS * self.windows()
    }

    fn control(&mut self, message: Control) {
        match message {
            Control::Join { peer, reply } => {
                let _ = reply.send(self.join(peer));
            }
            Control::Ack { consumer, ids } => {
                for id in ids {
                    if let Some(key) = self.take_in_flight(consumer, &id) {
                        if let Some(c) = self.consumers.get_mut(&consumer) {
                            c.acked += 1;
                        }
                        self.finish(key);
                    }
                }
            }
            Control::Nack {
                consumer,
                ids,
                action,
                reason,
            } => {
                for id in ids {
                    let Some(key) = self.take_in_flight(consumer, &id) else {
                        continue;
                    };
                    match action {
                        proto::NackAction::Skip => self.finish(key),
                        proto::NackAction::Park => self.park(key, cut(&reason)),
                        proto::NackAction::Retry => self.retry(key),
                    }
                }
            }
            Control::Reject {
                consumer,
                ids,
                reason,
            } => {
                for id in ids {
                    self.reject(consumer, id, reason.clone());
                }
            }
            Control::Leave { consumer } => self.leave(consumer),
            Control::Info { reply } => {
                let _ = reply.send(self.stats());
            }
            Control::ReplayTo(to) => self.replay_to = self.replay_to.max(to),
            Control::Stop(status) => self.stop = Some(status),
            Control::Reload => self.reload(),
        }
    }

    /// Takes the group's committed settings (an update was applied): message timeout, max
    /// retries and checkpoint interval from the next use on, max in flight at the next
    /// hand-out (up to each consumer's joined window), max consumers at the next join. A
    /// group deleted or created again since is not this one: the dispatcher stops.
    fn reload(&mut self) {
        match self.ctx.reader.consumer_group(&self.group) {
            Ok(Some((state, _)))
                if !state.deleted && state.incarnation == self.state.incarnation =>
            {
                tracing::info!(group = %self.group, settings = ?state.settings, "consumer group settings changed");
                self.state.settings = state.settings;
            }
            Ok(_) => {
                self.stop = Some(
                    NodeError::GroupNotFound {
                        group: self.group.clone(),
                    }
                    .into(),
                )
            }
            Err(e) => self.stop = Some(crate::api::status::status(&e)),
        }
    }

    fn join(&mut self, peer: String) -> Result<Admitted, Status> {
        let max = self.state.settings.max_consumers;
        if self.consumers.len() >= max as usize {
            return Err(NodeError::GroupFull {
                group: self.group.clone(),
                max,
            }
            .into());
        }
        let id = self.next_consumer;
        self.next_consumer += 1;
        let window = self.state.settings.max_in_flight;
        let (out_tx, out) = mpsc::channel(window as usize + REJECTIONS_QUEUED + 1);
        let started = Out::Started(proto::ConsumeStarted {
            consumer_id: id,
            max_in_flight: window,
        });
        let _ = out_tx.try_send(Ok(proto::ConsumeResponse {
            message: Some(started),
        }));
        self.consumers.insert(
            id,
            Consumer {
                peer,
                out: out_tx,
                joined_window: window as usize,
                in_flight: HashMap::new(),
                acked: 0,
            },
        );
        tracing::debug!(group = %self.group, consumer = id, "consumer joined");
        Ok((id, out))
    }

    /// The key of event `id` in flight to `consumer`, taken out of flight; an unknown id is
    /// answered with a rejection.
    fn take_in_flight(&mut self, consumer: u64, id: &str) -> Option<Key> {
        let c = self.consumers.get_mut(&consumer)?;
        let key = Uuid::parse_str(id)
            .ok()
            .and_then(|uuid| c.in_flight.remove(&uuid));
        let Some(key) = key else {
            let reason = format!(
                "event {id} is not in flight to this consumer of group {:?} (unknown, already \
                 acknowledged, or timed out and to be delivered again)",
                self.group
            );
            self.reject(consumer, id.to_owned(), reason);
            return None;
        };
        if let Some(item) = self.items.get_mut(&key) {
            if let State::InFlight { deadline, .. } = item.state {
                self.deadlines.remove(&(deadline, key));
            }
            item.state = State::Waiting;
        }
        Some(key)
    }

    /// Answers `id` with `rejected`; a consumer that leaves its rejections unread goes.
    fn reject(&mut self, consumer: u64, id: String, reason: String) {
        let Some(c) = self.consumers.get(&consumer) else {
            return;
        };
        let rejected = Out::Rejected(proto::AckRejected { id, reason });
        let sent = c.out.try_send(Ok(proto::ConsumeResponse {
            message: Some(rejected),
        }));
        if sent.is_err() {
            self.leave(consumer);
        }
    }

    fn leave(&mut self, consumer: u64) {
        let Some(c) = self.consumers.remove(&consumer) else {
            return;
        };
        tracing::debug!(group = %self.group, consumer, in_flight = c.in_flight.len(), "consumer left");
        for key in c.in_flight.into_values() {
            if let Some(item) = self.items.get_mut(&key) {
                if let State::InFlight { deadline, .. } = item.state {
                    self.deadlines.remove(&(deadline, key));
                }
                item.state = State::Waiting;
            }
            self.available(key);
        }
    }

    /// A key is done: acknowledged, skipped or parked.
    fn finish(&mut self, key: Key) {
        let Some(item) = self.items.remove(&key) else {
            return;
        };
        self.ready.remove(&key);
        self.done_since_committed += 1;
        self.done_since_proposed += 1;
        if self.ordered {
            let stream = item.event.stream.clone();
            let mut next = None;
            if let Some(keys) = self.streams.get_mut(&stream) {
                keys.remove(&key);
                next = keys.first().copied();
                if keys.is_empty() {
                    self.streams.remove(&stream);
                }
            }
            if let Some(next) = next {
                if self.items.get(&next).map(|i| i.state) == Some(State::Waiting) {
                    self.ready.insert(next);
                }
            }
        }
    }

    /// A key that may go out again (new, back from a consumer, or past its backoff).
    fn available(&mut self, key: Key) {
        let Some(item) = self.items.get(&key) else {
            return;
        };
        if item.state != State::Waiting {
            return;
        }
        if self.ordered {
            let head = self
                .streams
                .get(&item.event.stream)
                .and_then(|keys| keys.first().copied());
            if head != Some(key) {
                return;
            }
        }
        self.ready.insert(key);
    }

    fn retry(&mut self, key: Key) {
        let max_retries = self.state.settings.max_retries;
        let Some(item) = self.items.get_mut(&key) else {
            return;
        };
        // Deliveries after the first are retries.
        if item.deliveries > max_retries {
            self.park(key, format!("not acknowledged after {max_retries} retries"));
            return;
        }
        item.state = State::Delayed;
        let until = Instant::now() + backoff(item.deliveries);
        self.delayed.insert((until, key));
    }

    fn park(&mut self, key: Key, reason: String) {
        if let Some(item) = self.items.get_mut(&key) {
            item.state = State::Parking;
            self.to_park.push_back((key, reason));
        }
    }

    /// One message from the source's subscription.
    fn source(&mut self, message: Option<Result<proto::SubscribeResponse, Status>>) {
        use proto::subscribe_response::Message as M;
        let message = match message {
            Some(Ok(response)) => response.message,
            Some(Err(status)) => {
                self.stop = Some(status);
                return;
            }
            None => {
                self.source_open = false;
                self.stop = Some(NodeError::ShuttingDown.into());
                return;
            }
        };
        match message {
            Some(M::Event(event)) => self.read(event),
            Some(M::Events(batch)) => {
                for event in batch.events {
                    self.read(event);
                }
            }
            Some(M::CaughtUp(proto::CaughtUp { next }))
            | Some(M::FellBehind(proto::FellBehind { next }))
            | Some(M::Skipped(proto::Skipped { next }))
            | Some(M::Checkpoint(proto::Checkpoint {
                next_position: next,
            })) => self.read_next = self.read_next.max(next),
            Some(M::Confirmation(_)) | None => {}
        }
    }

    fn read(&mut self, event: proto::RecordedEvent) {
        let key = if self.source_by_position {
            event.position
        } else {
            event.revision
        };
        if key < self.read_next {
            return; // already read (the subscription may repeat after falling behind)
        }
        self.read_next = key + 1;
        if is_done(&self.committed.source, key)
            || (self.on_all && all_group_skips(self.filter.as_ref(), &event.stream))
        {
            return;
        }
        self.add(Key::Source(key), event);
    }

    fn add(&mut self, key: Key, mut event: proto::RecordedEvent) {
        // Held until a consumer acks it, maybe long after the rest of its group went.
        crate::api::convert::detach(&mut event);
        let id = Uuid::parse_str(&event.id).unwrap_or_default();
        if self.ordered {
            self.streams
                .entry(event.stream.clone())
                .or_default()
                .insert(key);
        }
        self.items.insert(
            key,
            Item {
                event: Arc::new(event),
                id,
                deliveries: 0,
                state: State::Waiting,
            },
        );
        self.available(key);
    }

    /// Reads parked events to replay, a page at a time, within the read-ahead.
    fn read_parked(&mut self) {
        if self.replay_next >= self.replay_to
            || self.consumers.is_empty()
            || self.items.len() >= self.read_ahead()
        {
            return;
        }
        let stream = parked_stream(&self.group);
        let page: Result<Vec<_>, _> = self
            .ctx
            .reader
            .read_stream(
                &stream,
                self.replay_next,
                Direction::Forwards,
                PARKED_PAGE_EVENTS,
            )
            .collect();
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                self.stop = Some(crate::api::status::status_in("reading parked events", &e));
                return;
            }
        };
        if page.is_empty() {
            self.replay_next = self.replay_to;
            return;
        }
        for parked in page {
            if parked.revision >= self.replay_to {
                self.replay_next = self.replay_to;
                return;
            }
            self.replay_next = parked.revision + 1;
            if is_done(&self.committed.parked, parked.revision) {
                continue;
            }
            let original = ParkedRecord::decode(&parked.data).ok().and_then(|record| {
                let event = self
                    .ctx
                    .reader
                    .read_all(record.position, Direction::Forwards, 1)
                    .next()?
                    .ok()?;
                // A record from before ids were left out is checked by its id too.
                record
                    .event_id
                    .is_none_or(|id| id == event.id)
                    .then_some(event)
            });
            match original {
                Some(event) => self.add(
                    Key::Parked(parked.revision),
                    crate::api::convert::recorded_to_proto(event),
                ),
                None => {
                    // Gone since (retention, scavenge): nothing to deliver; counted as done.
                    tracing::warn!(group = %self.group, revision = parked.revision, "parked event no longer stored; not replayed");
                }
            }
        }
    }

    /// Hands ready events to consumers with room, round-robin.
    fn dispatch(&mut self) {
        let window = self.state.settings.max_in_flight as usize;
        let timeout = Duration::from_millis(self.state.settings.message_timeout_ms);
        while !self.ready.is_empty() {
            let next_consumer = self
                .consumers
                .range(self.last_served + 1..)
                .chain(self.consumers.range(..=self.last_served))
                .find(|(_, c)| c.in_flight.len() < window.min(c.joined_window))
                .map(|(&id, _)| id);
            let Some(consumer) = next_consumer else {
                return;
            };
            let Some(key) = self.ready.pop_first() else {
                return;
            };
            let Some(item) = self.items.get_mut(&key) else {
                continue;
            };
            let Some(c) = self.consumers.get_mut(&consumer) else {
                return;
            };
            let message = Out::Event(proto::GroupEvent {
                event: Some(proto::RecordedEvent::clone(&item.event)),
                retry_count: item.deliveries,
            });
            if c.out
                .try_send(Ok(proto::ConsumeResponse {
                    message: Some(message),
                }))
                .is_err()
            {
                // Gone, or not reading its rejections: it leaves, and the event waits.
                self.ready.insert(key);
                self.leave(consumer);
                continue;
            }
            if item.deliveries > 0 {
                self.redeliveries += 1;
                self.ctx.metrics.group_redelivered(&self.group);
            }
            item.deliveries += 1;
            let deadline = Instant::now() + timeout;
            item.state = State::InFlight { consumer, deadline };
            c.in_flight.insert(item.id, key);
            self.deadlines.insert((deadline, key));
            self.last_served = consumer;
        }
    }

    fn tick(&mut self, proposed: &mpsc::Sender<Proposed>) {
        let now = Instant::now();
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(item) = self.items.get(&key) else {
                continue;
            };
            // Only the deadline of the delivery in flight counts (not an earlier one's).
            let State::InFlight { consumer, deadline } = item.state else {
                continue;
            };
            if deadline != at {
                continue;
            }
            let id = item.id;
            if let Some(c) = self.consumers.get_mut(&consumer) {
                c.in_flight.remove(&id);
            }
            self.retry(key);
        }
        while let Some(&(at, key)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            if let Some(item) = self.items.get_mut(&key) {
                if item.state == State::Delayed {
                    item.state = State::Waiting;
                }
            }
            self.available(key);
        }
        self.propose_park(proposed);
        self.propose_checkpoint(proposed, now);
        self.measure(now);
    }

    fn cursor(&self) -> GroupCheckpoint {
        let source = self.items.keys().filter_map(|k| match k {
            Key::Source(key) => Some(*key),
            Key::Parked(_) => None,
        });
        let parked = self.items.keys().filter_map(|k| match k {
            Key::Parked(key) => Some(*key),
            Key::Source(_) => None,
        });
        GroupCheckpoint {
            source: checkpoint(source, self.read_next, &self.committed.source),
            parked: checkpoint(parked, self.replay_next, &self.committed.parked),
        }
    }

    fn propose_checkpoint(&mut self, proposed: &mpsc::Sender<Proposed>, now: Instant) {
        if self.checkpoint_in_flight {
            return;
        }
        let interval = Duration::from_millis(self.state.settings.checkpoint_interval_ms);
        let due = now.duration_since(self.last_checkpoint) >= interval
            || self.done_since_proposed >= self.windows();
        if !due {
            return;
        }
        let cursor = self.cursor();
        if cursor == self.committed {
            self.last_checkpoint = now;
            return;
        }
        self.checkpoint_in_flight = true;
        self.last_checkpoint = now;
        let done = std::mem::take(&mut self.done_since_proposed);
        let command = Command::ConsumerGroup(GroupCommand::Checkpoint {
            group: self.group.clone(),
            incarnation: self.state.incarnation,
            checkpoint: cursor.clone(),
            id: cairn_raft_store::runtime::random_uuid(),
            created_unix_ms: now_unix_ms(),
        });
        let ctx = self.ctx.clone();
        let proposed = proposed.clone();
        tokio::spawn(async move {
            let result = propose_group(&ctx, command).await;
            let _ = proposed
                .send(Proposed::Checkpoint {
                    cursor,
                    done,
                    result,
                })
                .await;
        });
    }

    fn propose_park(&mut self, proposed: &mpsc::Sender<Proposed>) {
        if self.park_in_flight || self.to_park.is_empty() {
            return;
        }
        let mut keys = Vec::new();
        let mut events = Vec::new();
        while let Some((key, reason)) = self.to_park.pop_front() {
            if let Some(item) = self.items.get(&key) {
                events.push(ParkedEvent {
                    id: cairn_raft_store::runtime::random_uuid(),
                    stream: item.event.stream.clone(),
                    revision: item.event.revision,
                    position: item.event.position,
                    event_id: item.id,
                    reason,
                });
                keys.push(key);
            }
            if keys.len() >= MAX_PARKED_PER_COMMAND {
                break;
            }
        }
        if keys.is_empty() {
            return;
        }
        self.park_in_flight = true;
        let command = Command::ConsumerGroup(GroupCommand::Park {
            group: self.group.clone(),
            incarnation: self.state.incarnation,
            events,
            created_unix_ms: now_unix_ms(),
        });
        let ctx = self.ctx.clone();
        let proposed = proposed.clone();
        tokio::spawn(async move {
            let result = propose_group(&ctx, command).await;
            let _ = proposed.send(Proposed::Park { keys, result }).await;
        });
    }

    fn proposed(&mut self, proposed: Proposed) {
        match proposed {
            Proposed::Checkpoint {
                cursor,
                done,
                result,
            } => {
                self.checkpoint_in_flight = false;
                match result {
                    Ok(GroupResult::Written { .. } | GroupResult::AlreadyWritten { .. }) => {
                        self.committed = cursor;
                        self.done_since_committed = self.done_since_committed.saturating_sub(done);
                    }
                    Ok(other) => self.stop = Some(self.refused(other)),
                    Err(status) => self.stop = Some(status),
                }
            }
            Proposed::Park { keys, result } => {
                self.park_in_flight = false;
                match result {
                    Ok(GroupResult::Written { .. } | GroupResult::AlreadyWritten { .. }) => {
                        self.parked += keys.len() as u64;
                        for key in keys {
                            self.finish(key);
                        }
                    }
                    Ok(other) => self.stop = Some(self.refused(other)),
                    Err(status) => self.stop = Some(status),
                }
            }
        }
    }

    fn refused(&self, result: GroupResult) -> Status {
        match result {
            GroupResult::NotFound => NodeError::GroupNotFound {
                group: self.group.clone(),
            }
            .into(),
            other => NodeError::GroupClosed {
                group: self.group.clone(),
                reason: format!("the state machine refused its checkpoint: {other:?}"),
            }
            .into(),
        }
    }

    fn stats(&self) -> GroupStats {
        GroupStats {
            group: self.group.clone(),
            checkpoint: self.committed.clone(),
            read_next: self.read_next,
            in_flight: self
                .consumers
                .values()
                .map(|c| c.in_flight.len() as u64)
                .sum(),
            outstanding: self.items.len() as u64,
            redeliveries: self.redeliveries,
            parked_by_this_leader: self.parked,
            consumers: self
                .consumers
                .iter()
                .map(|(&id, c)| (id, c.peer.clone(), c.in_flight.len() as u32, c.acked))
                .collect(),
        }
    }
}

/// A group command proposed by the leader, its verdict.
pub async fn propose_group(ctx: &NodeContext, command: Command) -> Result<GroupResult, Status> {
    match propose(ctx, command).await?.1 {
        Response::ConsumerGroup(result) => Ok(result),
        other => Err(NodeError::GroupClosed {
            group: String::new(),
            reason: format!("unexpected answer {other:?}"),
        }
        .into()),
    }
}

/// A nack's reason, cut to `MAX_PARK_REASON_BYTES` at a character boundary.
fn cut(reason: &str) -> String {
    let mut end = reason.len().min(MAX_PARK_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_limit() {
        assert_eq!(backoff(1), Duration::from_millis(RETRY_BACKOFF_MS));
        assert_eq!(backoff(2), Duration::from_millis(2 * RETRY_BACKOFF_MS));
        assert_eq!(backoff(40), Duration::from_millis(MAX_RETRY_BACKOFF_MS));
        assert_eq!(cut("é".repeat(1000).as_str()).len(), MAX_PARK_REASON_BYTES);
    }

    #[test]
    fn parked_replays_sort_before_source_events() {
        assert!(Key::Parked(100) < Key::Source(0));
    }
}
