//! # cairn-client
//!
//! The public gRPC contract of Cairn ([`proto`]) and the Rust client library: append events
//! to streams with optimistic concurrency, read streams and `$all`, follow them with catch-up
//! subscriptions, ask for cluster status, add and remove nodes. The client follows the Raft leader, retries appends
//! safely (a retry reuses the event ids, which the server deduplicates) and resubscribes where
//! delivery stopped when a node fails. See `DESIGN.md` for the rules and the limits.
//!
//! ```no_run
//! use cairn_client::{Client, Error, EventData, ExpectedRevision, ReadOptions};
//! use tokio_stream::StreamExt;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Error> {
//! let client = Client::connect(["http://127.0.0.1:2113"])?;
//!
//! let placed = EventData::json(
//!     "OrderPlaced",
//!     &serde_json::json!({ "order": "order-42", "total_cents": 1999 }),
//! )?;
//! match client.append("order-42", ExpectedRevision::NoStream, vec![placed]).await {
//!     Ok(written) => println!("written as revision {}", written.last_revision),
//!     Err(Error::WrongExpectedVersion { actual, .. }) => {
//!         println!("order-42 was already placed (last revision {actual:?})")
//!     }
//!     Err(other) => return Err(other),
//! }
//!
//! let mut events = client.read_stream("order-42", ReadOptions::forwards()).await?;
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     let body: serde_json::Value = event.json()?;
//!     println!("{} {} {body}", event.revision, event.event_type);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Following a stream: its history, then `CaughtUp`, then new events as they are written.
//!
//! ```no_run
//! use cairn_client::{Client, Error, SubscribeOptions, SubscriptionMessage};
//! use tokio_stream::StreamExt;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Error> {
//! let client = Client::connect(["http://127.0.0.1:2113", "http://127.0.0.1:2114"])?;
//! let mut orders = client.subscribe("order-42", SubscribeOptions::default()).await?;
//! while let Some(message) = orders.next().await {
//!     match message? {
//!         SubscriptionMessage::Event(event) => println!("{} {}", event.revision, event.event_type),
//!         SubscriptionMessage::CaughtUp { next } => println!("live from revision {next}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod credentials;
mod dcb;
mod endpoints;
mod error;
mod event;
mod filter;
mod policy;
pub mod profile;
mod read;
mod subscribe;

pub use client::{
    AppendResult, Client, ClientConfig, Consumer, ConsumerMessage, GroupEvent, GroupSettings,
    GroupStart, GroupStrategy, GroupUpdate, Membership, NackAction, StreamMetadata,
    StreamMetadataState, CONSUMER_CLOSE_TIMEOUT_MS, CONSUMER_OUTBOUND_MESSAGES,
    CONSUMER_RECONNECT_ATTEMPTS, DEFAULT_ENDPOINT, DEFAULT_MAX_APPEND_ATTEMPTS,
    DEFAULT_REQUEST_TIMEOUT_MS, MAX_MESSAGE_BYTES,
};
pub use credentials::Credentials;
pub use dcb::{AppendCondition, MultiAppendResult, Query, QueryItem, StreamAppend};
pub use endpoints::{
    ChannelFactory, CONNECT_TIMEOUT_MS, KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, MAX_ENDPOINTS,
    MEMBERSHIP_REQUEST_TIMEOUT_MS,
};
pub use error::{
    Error, CONFLICT_EVENT_ID_METADATA_KEY, CONFLICT_KIND_METADATA_KEY, CONFLICT_NOT_A_RETRY,
    CONFLICT_OTHER_CONTENT, LEADER_METADATA_KEY, STREAM_DELETED_METADATA_KEY,
    STREAM_DELETED_TOMBSTONED,
};
pub use event::{ContentType, EventData, ExpectedRevision, RecordedEvent};
pub use policy::{RETRY_BACKOFF_INITIAL_MS, RETRY_BACKOFF_MAX_MS};
pub use read::{
    reads_by_position, Direction, EventStream, NodePreference, ReadConsistency, ReadFrom,
    ReadOptions, ALL_STREAM,
};
pub use subscribe::{
    SubscribeOptions, Subscription, SubscriptionFilter, SubscriptionMessage,
    MAX_RESUBSCRIBE_ATTEMPTS,
};

/// Generated from `proto/cairn/v1/cairn.proto`.
pub mod proto {
    tonic::include_proto!("cairn.v1");
}

#[cfg(test)]
mod tests;
