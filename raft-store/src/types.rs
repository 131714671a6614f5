//! The domain types (ground floor: no imports from the crate): events as written and as
//! recorded, appends and their expected revision, the commands the state machine applies,
//! their verdicts, and why an input is invalid. openraft's type configuration is
//! `raft_types`'s.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Media type of an event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ContentType {
    #[default]
    Json,
    Binary,
}

impl ContentType {
    pub fn as_mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Binary => "application/octet-stream",
        }
    }
}

/// An event as the client writes it.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewEvent {
    /// Chosen by the client; the key of idempotency.
    pub id: Uuid,
    pub event_type: String,
    pub content_type: ContentType,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub metadata: Vec<u8>,
    /// What the event is about (`customer:7`), indexed as `$tag-<tag>`; limits in `limits`.
    pub tags: Vec<String>,
}

impl fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEvent")
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("data_bytes", &self.data.len())
            .field("metadata_bytes", &self.metadata.len())
            .field("tags", &self.tags)
            .finish()
    }
}

/// An event as the store recorded it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub stream: String,
    /// 0-based, gapless within the stream.
    pub revision: u64,
    /// 0-based, gapless across the store: the order of `$all`.
    pub position: u64,
    pub id: Uuid,
    pub event_type: String,
    pub content_type: ContentType,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub metadata: Vec<u8>,
    /// Milliseconds since the Unix epoch, assigned by the leader when it proposed the append.
    pub created_unix_ms: u64,
    pub tags: Vec<String>,
}

impl fmt::Debug for RecordedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedEvent")
            .field("stream", &self.stream)
            .field("revision", &self.revision)
            .field("position", &self.position)
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("data_bytes", &self.data.len())
            .field("tags", &self.tags)
            .finish()
    }
}

/// An event as format 1 encoded it, before tags: what the Raft log entries of that format
/// hold (`Command::Format1Append`), and the body of every stored event (`records`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Format1Event {
    pub id: Uuid,
    pub event_type: String,
    pub content_type: ContentType,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub metadata: Vec<u8>,
}

impl Format1Event {
    pub fn with_tags(self, tags: Vec<String>) -> NewEvent {
        NewEvent {
            id: self.id,
            event_type: self.event_type,
            content_type: self.content_type,
            data: self.data,
            metadata: self.metadata,
            tags,
        }
    }
}

/// An append as format 1 encoded it (events without tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format1Append {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub events: Vec<Format1Event>,
    pub created_unix_ms: u64,
}

impl From<Format1Append> for Append {
    fn from(old: Format1Append) -> Append {
        Append {
            stream: old.stream,
            expected: old.expected,
            events: old
                .events
                .into_iter()
                .map(|e| e.with_tags(Vec::new()))
                .collect(),
            created_unix_ms: old.created_unix_ms,
        }
    }
}

/// The optimistic-concurrency condition of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedRevision {
    /// No condition.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this revision.
    Exact(u64),
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no-stream"),
            ExpectedRevision::StreamExists => f.write_str("exists"),
            ExpectedRevision::Exact(r) => write!(f, "{r}"),
        }
    }
}

/// Append events to one stream, atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub events: Vec<NewEvent>,
    /// Set once by the leader when it proposes; every replica records this value, so created
    /// times never come from a follower's clock.
    pub created_unix_ms: u64,
}

/// A command carried by the Raft log and applied by the state machine.
///
/// Postcard encodes the variant by its index: new commands (stream metadata, deletes,
/// multi-stream appends) are added at the end, never reordered, so old logs stay readable.
/// The first two are what format 1 wrote (events without tags): still applied, never
/// proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Format1Append(Format1Append),
    Format1Appends(Vec<Format1Append>),
    Append(Append),
    /// Appends from concurrent requests that the leader proposed as one entry (group commit).
    /// Applied in order, each with its own verdict, exactly as if each were an entry of its own.
    Appends(Vec<Append>),
}

/// Where the last event of a successful append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendPosition {
    /// Revision of the last event written: what to pass as the next expected revision.
    pub last_revision: u64,
    /// `$all` position of the last event written: the minimum position for read-your-writes.
    pub last_position: u64,
}

/// Why a well-formed append was refused by the state machine (other than a version conflict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppendRejection {
    #[error("invalid append: {0}")]
    Invalid(InvalidInput),
    /// Some of the event ids are already stored, but the request is not an exact retry of the
    /// append that stored them (different ids, order, stream, or place).
    #[error("event id {id} is already stored at position {position}, and this append is not an exact retry of the append that stored it")]
    IdempotencyConflict { id: Uuid, position: u64 },
    /// The event ids are stored, as one append at this place, but an event's content (type,
    /// content type, data or metadata) differs from what is stored under its id: the id was
    /// reused for another event. Not a retry; nothing is written.
    #[error("event id {id} is already stored at position {position} with other content (type, content type, data or metadata): not a retry of the append that stored it, so nothing was written; a retry must resend the same events, and a new event needs a new id")]
    ContentConflict { id: Uuid, position: u64 },
}

/// The verdict of an append, reached identically on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    Written(AppendPosition),
    /// An exact retry of an append that was already written: nothing new was written.
    AlreadyWritten(AppendPosition),
    /// The condition did not hold. `actual` is the stream's last revision (`None`: no stream).
    WrongExpectedVersion {
        expected: ExpectedRevision,
        actual: Option<u64>,
    },
    Rejected(AppendRejection),
}

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry: nothing for a client.
    Empty,
    Append(AppendResult),
    /// The verdicts of a [`Command::Appends`], in its order.
    Appends(Vec<AppendResult>),
}

/// Why an append was refused before anything was written. Each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InvalidInput {
    #[error("stream name is empty")]
    EmptyStreamName,
    #[error("stream name is {bytes} bytes; the limit is {max}")]
    StreamNameTooLong { bytes: usize, max: usize },
    #[error("stream name contains a NUL character")]
    StreamNameHasNul,
    #[error("stream name {name:?} starts with '$', which is reserved for the system")]
    ReservedStreamName { name: String },
    #[error("append has no events")]
    NoEvents,
    #[error("append has {count} events; the limit is {max}")]
    TooManyEvents { count: usize, max: usize },
    #[error("event {index}: type is empty")]
    EmptyEventType { index: usize },
    #[error("event {index}: type is {bytes} bytes; the limit is {max}")]
    EventTypeTooLong {
        index: usize,
        bytes: usize,
        max: usize,
    },
    #[error("event {index}: {bytes} bytes; the limit is {max}")]
    EventTooLarge {
        index: usize,
        bytes: usize,
        max: usize,
    },
    #[error("append is {bytes} bytes; the limit is {max}")]
    AppendTooLarge { bytes: usize, max: usize },
    #[error("event {index}: id {id} appears twice in the same append")]
    DuplicateEventIdInAppend { index: usize, id: uuid::Uuid },
    // Last, so the encoding of the variants before it does not change.
    #[error("stream name is only whitespace")]
    BlankStreamName,
    #[error("event {index}: {count} tags; the limit is {max}")]
    TooManyTags {
        index: usize,
        count: usize,
        max: usize,
    },
    #[error("event {index}: tag {tag} is empty or only whitespace")]
    BlankTag { index: usize, tag: usize },
    #[error("event {index}: tag {tag} is {bytes} bytes; the limit is {max}")]
    TagTooLong {
        index: usize,
        tag: usize,
        bytes: usize,
        max: usize,
    },
    #[error("event {index}: tag {tag:?} appears twice")]
    DuplicateTag { index: usize, tag: String },
}
