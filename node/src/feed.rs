//! The node's live feed: one tailer per node follows the applied position, reads each new
//! event from storage once and broadcasts it on a bounded ring that every live subscription
//! (`api/subscribe`) reads. The ring is the only buffer: a subscriber it overruns reads
//! storage instead, so the node never buffers for a slow one.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::proto;
use cairn_raft_store::{EventReader, RecordedEvent};
use tokio::sync::{broadcast, watch};

use crate::api::convert::recorded_to_proto;

/// Events the live ring holds. A subscriber further behind than this reads storage instead.
pub const LIVE_BUFFER_EVENTS: usize = 1024;
/// Events up to this size travel in the ring; larger ones as their position only (the
/// subscriber reads them from storage), so the ring holds at most ~16 MiB.
pub const LIVE_INLINE_EVENT_BYTES: usize = 16 * 1024;
/// Events read from storage per page, by the tailer and by a subscription reading history;
/// a page goes on to the end of the group its last event is in (`read_all_page`,
/// `read_stream_page`), so a group is read once, however large.
pub const HISTORY_PAGE_EVENTS: u64 = 256;
/// Pause before the tailer retries after a storage error.
const TAILER_RETRY_MS: u64 = 100;

/// What the ring carries. Events travel in their wire form, converted once by the tailer
/// rather than once per subscriber (conversion and copies were most of a serving node's CPU
/// with 100 live subscribers).
#[derive(Clone, Debug)]
pub enum LiveItem {
    Event(Arc<proto::RecordedEvent>),
    /// Too large to hold in the ring: read it from storage.
    Large {
        position: u64,
        stream: Arc<str>,
        revision: u64,
    },
}

impl LiveItem {
    pub fn position(&self) -> u64 {
        match self {
            LiveItem::Event(e) => e.position,
            LiveItem::Large { position, .. } => *position,
        }
    }
}

/// The node's live event feed.
#[derive(Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<LiveItem>,
    capacity: usize,
}

impl LiveFeed {
    /// Starts the tailer. `applied` changes whenever the node applies something; the tailer
    /// ends when it closes. The tailer's starting position is read here, before any subscriber
    /// can join: everything after it is broadcast, everything before it is in storage.
    pub fn start(
        reader: EventReader,
        applied: watch::Receiver<u64>,
        capacity: usize,
    ) -> Result<LiveFeed, cairn_raft_store::StoreError> {
        let next = reader.next_position()?;
        let (tx, _) = broadcast::channel(capacity);
        tokio::spawn(run_tailer(reader, next, applied, tx.clone()));
        Ok(LiveFeed { tx, capacity })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveItem> {
        self.tx.subscribe()
    }

    /// Events the ring holds; a receiver holding this many has been overrun or is about to be.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Subscriptions currently joined to the feed.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

async fn run_tailer(
    reader: EventReader,
    mut next: u64,
    mut applied: watch::Receiver<u64>,
    tx: broadcast::Sender<LiveItem>,
) {
    loop {
        // Nobody live: skip ahead instead of reading every event back. The position is read
        // *before* the receiver count, so a subscriber that joins after the check reads its
        // history after this position was taken: nothing falls between.
        if let Ok(applied_position) = reader.next_position() {
            if tx.receiver_count() == 0 {
                next = next.max(applied_position);
            }
        }
        loop {
            let page: Result<Vec<RecordedEvent>, _> = reader
                .read_all_stored_page(next, HISTORY_PAGE_EVENTS)
                .collect();
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, next, "live feed read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(TAILER_RETRY_MS)).await;
                    continue;
                }
            };
            if page.is_empty() {
                break;
            }
            for mut event in page {
                // A gap is events a scavenge or an erasure removed after they were applied and
                // before this read: they were hidden already, and a subscriber that meets the
                // jump reads history again. Going backwards would be a bug.
                debug_assert!(event.position >= next, "the live feed went backwards");
                next = event.position + 1;
                let size = event.data.len() + event.metadata.len() + event.event_type.len();
                let item = if size <= LIVE_INLINE_EVENT_BYTES {
                    // The ring holds it long: its own buffers, not its group's (whose large
                    // events are not in the ring), so the ring's bound above holds.
                    event.detach();
                    LiveItem::Event(Arc::new(recorded_to_proto(event)))
                } else {
                    LiveItem::Large {
                        position: event.position,
                        stream: Arc::from(event.stream.as_str()),
                        revision: event.revision,
                    }
                };
                // No receivers is fine: nobody is live right now.
                let _ = tx.send(item);
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}
