//! Catch-up subscriptions, served by any node from its applied state.
//!
//! One tailer per node ([`LiveFeed`], `feed.rs`) follows the applied position, reads each new event from
//! storage once and broadcasts it on a bounded ring. A subscription is a cursor: it joins the
//! ring *before* reading history from storage, so nothing can fall between history and live;
//! in live mode it skips what it already delivered and treats a hole as a reason to read
//! history again. A slow consumer blocks on its bounded gRPC channel, its ring receiver lags,
//! and it goes back to reading history (`fell_behind`, then `caught_up` again): it is never
//! dropped and never makes the node buffer for it.

use std::sync::Arc;

use cairn_client::proto;
use cairn_client::proto::subscribe_response::Message;
use cairn_raft_store::filter::EventFilter;
use cairn_raft_store::lifecycle::METASTREAM_PREFIX;
use cairn_raft_store::{Direction, EventReader, IndexName, RecordedEvent, Retention};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::convert::{recorded_to_proto, source_filter};
use super::status::{invalid, status, status_in};
use crate::error::NodeError;
use crate::feed::{LiveFeed, LiveItem, HISTORY_PAGE_EVENTS};

/// Most events sent in one message, and most bytes of event data in one message.
pub const MAX_EVENTS_PER_MESSAGE: usize = 128;
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Messages queued per subscriber ahead of gRPC; when full the subscription waits.
pub const SUBSCRIPTION_BUFFER_MESSAGES: usize = 32;
/// Default scanned events between checkpoints on a filtered `$all` subscription.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 1_000;

/// Which events a subscription wants.
pub enum Target {
    All(Option<Filter>),
    Stream(String),
    /// `$ce-`, `$et-`, `$tag-`: keyed by `$all` position like a filtered `$all`, its history
    /// read through the index.
    Index(IndexName),
}

impl Target {
    /// Whether the cursor counts `$all` positions (else a stream's revisions).
    fn by_position(&self) -> bool {
        !matches!(self, Target::Stream(_))
    }

    /// Whether it skips positions on purpose (so it sends checkpoints).
    fn filtered(&self) -> bool {
        matches!(self, Target::All(Some(_)) | Target::Index(_))
    }

    fn passes(&self, event: &proto::RecordedEvent) -> bool {
        self.passes_fields(&event.stream, &event.r#type, &event.tags)
    }

    fn passes_fields(&self, stream: &str, event_type: &str, tags: &[String]) -> bool {
        match self {
            Target::All(filter) => filter.as_ref().is_none_or(|f| f.passes(stream, event_type)),
            Target::Stream(_) => true,
            Target::Index(index) => index.matches(stream, event_type, tags),
        }
    }

    /// Whether a history read passes on some events of a group only, so that the ones it
    /// keeps must not hold their group's buffer (`RecordedEvent::detach`; an index's read
    /// detaches its events itself).
    fn keeps_some(&self) -> bool {
        matches!(self, Target::All(Some(_)))
    }
}

/// Server-side filter of a `$all` subscription: raft-store's [`EventFilter`], the one
/// consumer groups on `$all` use too.
pub type Filter = EventFilter;

/// A subscription's filter, compiled; `None` when the request has no (non-empty) filter. A
/// bad one is INVALID_ARGUMENT naming its part (`filter.event_type_regex`, ...).
pub fn filter_from_proto(
    filter: Option<&proto::SubscriptionFilter>,
) -> Result<Option<Filter>, Status> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    EventFilter::compile(&source_filter(filter))
        .map_err(|e| invalid(&format!("filter.{}", e.field), e.why))
}

pub struct Subscription {
    pub target: Target,
    /// First revision (stream) or position (`$all`) to deliver (see [`start`]).
    pub from: u64,
    pub checkpoint_interval: u64,
    pub node_id: u64,
}

type Out = mpsc::Sender<Result<proto::SubscribeResponse, Status>>;

/// The client went away: stop.
struct Gone;

async fn send(out: &Out, message: Message) -> Result<(), Gone> {
    out.send(Ok(proto::SubscribeResponse {
        message: Some(message),
    }))
    .await
    .map_err(|_| Gone)
}

async fn fail(out: &Out, status: Status) {
    let _ = out.send(Err(status)).await;
}

/// The state of one subscription between messages.
struct Cursor<'a> {
    sub: &'a Subscription,
    reader: &'a EventReader,
    out: &'a Out,
    /// Next position (`$all`) or revision (stream) to deliver.
    next: u64,
    /// The next one the client expects: behind `next` after hidden events, which a `Skipped`
    /// marker explains before the next event goes out.
    announced: u64,
    /// Which events of each stream met live are shown, forgotten when an event of the
    /// stream's metastream goes by.
    retention: Retention,
    scanned_since_checkpoint: u64,
    /// Events that passed, not yet sent (flushed before any other message).
    batch: Vec<proto::RecordedEvent>,
    batch_bytes: usize,
}

impl Cursor<'_> {
    fn key(&self, event: &proto::RecordedEvent) -> u64 {
        if self.sub.target.by_position() {
            event.position
        } else {
            event.revision
        }
    }

    /// Sends one event if it passes, advances the cursor, and checkpoints a filtered `$all`
    /// or an index.
    async fn deliver(&mut self, event: proto::RecordedEvent) -> Result<(), Gone> {
        let key = self.key(&event);
        // An index holds some positions only: its jumps are its nature, not retention's.
        let dense = !matches!(self.sub.target, Target::Index(_));
        if key > self.announced && dense {
            self.send(Message::Skipped(proto::Skipped { next: key }))
                .await?;
        }
        self.announced = key + 1;
        self.next = key + 1;
        if self.sub.target.passes(&event) {
            self.batch_bytes += event.data.len() + event.metadata.len();
            self.batch.push(event);
            if self.batch.len() >= MAX_EVENTS_PER_MESSAGE || self.batch_bytes >= MAX_BATCH_BYTES {
                self.flush().await?;
            }
        }
        if self.sub.target.filtered() {
            self.scanned_since_checkpoint += 1;
            if self.scanned_since_checkpoint >= self.sub.checkpoint_interval {
                self.scanned_since_checkpoint = 0;
                let next_position = self.next;
                self.send(Message::Checkpoint(proto::Checkpoint { next_position }))
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends the events gathered so far: one as `event`, several as `events`.
    async fn flush(&mut self) -> Result<(), Gone> {
        self.batch_bytes = 0;
        if self.batch.len() > 1 {
            let events = std::mem::take(&mut self.batch);
            return send(self.out, Message::Events(proto::EventBatch { events })).await;
        }
        match self.batch.pop() {
            Some(event) => send(self.out, Message::Event(event)).await,
            None => Ok(()),
        }
    }

    /// Sends a marker after the events gathered before it.
    async fn send(&mut self, message: Message) -> Result<(), Gone> {
        self.flush().await?;
        send(self.out, message).await
    }

    /// Delivers everything stored from the cursor on, page by page.
    async fn read_history(&mut self) -> Result<Result<(), Status>, Gone> {
        loop {
            // An index's history ends at its last event, not at the end of `$all`: the
            // applied end, read before the index is, is where the live feed takes over (every
            // event below it that the index holds is in this read).
            let applied_end = match &self.sub.target {
                Target::Index(_) => match self.reader.next_position() {
                    Ok(end) => end,
                    Err(e) => return Ok(Err(status_in("reading history", &e))),
                },
                _ => 0,
            };
            let page: Result<Vec<RecordedEvent>, _> = match &self.sub.target {
                Target::All(_) => self
                    .reader
                    .read_all_page(self.next, HISTORY_PAGE_EVENTS)
                    .collect(),
                Target::Stream(name) => self
                    .reader
                    .read_stream_page(name, self.next, HISTORY_PAGE_EVENTS)
                    .collect(),
                Target::Index(index) => self
                    .reader
                    .read_index(index, self.next, Direction::Forwards, HISTORY_PAGE_EVENTS)
                    .collect(),
            };
            let page = match page {
                Ok(page) => page,
                Err(e) => return Ok(Err(status_in("reading history", &e))),
            };
            if page.is_empty() {
                self.next = self.next.max(applied_end);
                return Ok(Ok(()));
            }
            for mut event in page {
                if self.sub.target.keeps_some()
                    && self
                        .sub
                        .target
                        .passes_fields(&event.stream, &event.event_type, &event.tags)
                {
                    event.detach();
                }
                self.deliver(recorded_to_proto(event)).await?;
            }
        }
    }

    /// Whether retention shows a live event. Only its stream's metastream changes that for
    /// a new event (it is the newest: within max count and max age), so the answer is kept
    /// until one of the metastream's events goes by (`forget_visibility`).
    fn shows(&mut self, event: &proto::RecordedEvent) -> Result<bool, Status> {
        self.reader
            .shows(
                &mut self.retention,
                &event.stream,
                event.revision,
                event.created_unix_ms,
            )
            .map_err(|e| status_in("reading stream metadata", &e))
    }

    fn forget_visibility(&mut self, item: &LiveItem) {
        let stream = match item {
            LiveItem::Event(e) => e.stream.as_str(),
            LiveItem::Large { stream, .. } => stream,
        };
        if let Some(of) = stream.strip_prefix(METASTREAM_PREFIX) {
            self.retention.forget(of);
        }
    }

    /// The event behind a ring item, if this subscription wants to look at it.
    fn live_event(&self, item: LiveItem) -> Result<Option<proto::RecordedEvent>, Status> {
        if let Target::Stream(name) = &self.sub.target {
            let stream = match &item {
                LiveItem::Event(e) => e.stream.as_str(),
                LiveItem::Large { stream, .. } => stream,
            };
            if stream != name {
                return Ok(None);
            }
        }
        match item {
            LiveItem::Event(event) => Ok(Some(Arc::unwrap_or_clone(event))),
            LiveItem::Large { position, .. } => match self
                .reader
                .read_all_stored(position, Direction::Forwards, 1)
                .next()
            {
                Some(Ok(mut event)) => {
                    // Held in this subscriber's queue apart from the rest of its group.
                    event.detach();
                    Ok(Some(recorded_to_proto(event)))
                }
                Some(Err(e)) => Err(status_in(format_args!("reading event {position}"), &e)),
                None => Err(NodeError::AnnouncedEventMissing { position }.into()),
            },
        }
    }
}

/// Why live delivery stopped.
enum LiveEnd {
    /// The ring overran this subscriber, or (which should not happen) showed a hole between
    /// the cursor and the ring: either way, read history again and say so.
    FellBehind,
    Failed(Status),
}

/// The first revision or position to deliver: `from`, or (`None`) the current end, read when
/// the request arrives so that "from the end" means "applied after I asked".
pub fn start(target: &Target, from: Option<u64>, reader: &EventReader) -> Result<u64, Status> {
    let end = match (target, from) {
        (_, Some(from)) => return Ok(from),
        (Target::All(_) | Target::Index(_), None) => reader.next_position(),
        (Target::Stream(name), None) => reader.stream_head(name).map(|h| h.map_or(0, |r| r + 1)),
    };
    end.map_err(|e| status(&e))
}

/// Runs one subscription until the client goes away or the node shuts down.
pub async fn run(sub: Subscription, reader: EventReader, feed: LiveFeed, out: Out) {
    if send(
        &out,
        Message::Confirmation(proto::SubscriptionConfirmation {
            node_id: sub.node_id,
        }),
    )
    .await
    .is_err()
    {
        return;
    }
    let mut cursor = Cursor {
        sub: &sub,
        reader: &reader,
        out: &out,
        next: sub.from,
        announced: sub.from,
        retention: reader.retention(),
        scanned_since_checkpoint: 0,
        batch: Vec::with_capacity(MAX_EVENTS_PER_MESSAGE),
        batch_bytes: 0,
    };
    loop {
        // Join the ring first: whatever is applied after the history read below is in it. If
        // the ring overran this receiver meanwhile (a long history), join again and read the
        // rest, rather than announce `caught_up` only to fall behind at once.
        let mut live = loop {
            let live = feed.subscribe();
            match cursor.read_history().await {
                Err(Gone) => return,
                Ok(Err(status)) => return fail(&out, status).await,
                Ok(Ok(())) => {}
            }
            if live.len() < feed.capacity() {
                break live;
            }
        };
        let caught_up = Message::CaughtUp(proto::CaughtUp { next: cursor.next });
        if cursor.send(caught_up).await.is_err() {
            return;
        }
        let end = loop {
            // About to wait: send what was gathered first, rather than hold it for more.
            if live.is_empty() && cursor.flush().await.is_err() {
                return;
            }
            let item = match live.recv().await {
                Ok(item) => item,
                Err(broadcast::error::RecvError::Lagged(_)) => break LiveEnd::FellBehind,
                Err(broadcast::error::RecvError::Closed) => {
                    break LiveEnd::Failed(NodeError::ShuttingDown.into())
                }
            };
            if cursor.sub.target.by_position() && item.position() < cursor.next {
                continue; // already delivered from history
            }
            cursor.forget_visibility(&item);
            let event = match cursor.live_event(item) {
                Ok(Some(event)) => event,
                Ok(None) => continue,
                Err(status) => break LiveEnd::Failed(status),
            };
            let key = cursor.key(&event);
            if key < cursor.next {
                continue;
            }
            match cursor.shows(&event) {
                Ok(true) => {}
                Ok(false) if key == cursor.next => {
                    // Hidden by retention: passed over; a `Skipped` marker tells the client.
                    cursor.next = key + 1;
                    continue;
                }
                Ok(false) => {}
                Err(status) => break LiveEnd::Failed(status),
            }
            if key > cursor.next {
                tracing::warn!(
                    next = cursor.next,
                    key,
                    "live feed skipped ahead; reading history"
                );
                break LiveEnd::FellBehind;
            }
            if cursor.deliver(event).await.is_err() {
                return;
            }
        };
        match end {
            LiveEnd::FellBehind => {
                let fell_behind = Message::FellBehind(proto::FellBehind { next: cursor.next });
                if cursor.send(fell_behind).await.is_err() {
                    return;
                }
            }
            LiveEnd::Failed(status) => return fail(&out, status).await,
        }
    }
}

/// A subscription's output channel.
pub fn channel() -> (
    Out,
    mpsc::Receiver<Result<proto::SubscribeResponse, Status>>,
) {
    mpsc::channel(SUBSCRIPTION_BUFFER_MESSAGES)
}

#[cfg(test)]
mod tests;
