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
}

impl fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEvent")
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("data_bytes", &self.data.len())
            .field("metadata_bytes", &self.metadata.len())
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
            .finish()
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Append(Append),
    /// Appends from concurrent requests that the leader proposed as one entry (group commit).
    /// Applied in order, each with its own verdict, exactly as if each were an entry of its own.
    Appends(Vec<Append>),
    /// Replace a stream's metadata (kept in its metastream, `lifecycle`).
    SetStreamMetadata(SetStreamMetadata),
    /// Soft-delete or tombstone a stream.
    DeleteStream(DeleteStream),
}

/// A stream's retention settings and the application's own metadata. Every limit is
/// optional; `None` keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMetadata {
    /// Keep only the last this many events.
    pub max_count: Option<u64>,
    /// Hide events older than this, judged against the committed log's clock (`lifecycle`).
    pub max_age_secs: Option<u64>,
    /// Hide revisions below this one.
    pub truncate_before: Option<u64>,
    /// The application's own metadata: the text of a JSON object.
    pub custom: Option<String>,
}

/// Set a stream's metadata. `expected` is checked against the metadata's own revision (its
/// metastream's), so metadata is versioned like a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStreamMetadata {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub metadata: StreamMetadata,
    /// The id of the metastream event that records the change: a retry is recognised by it.
    pub id: Uuid,
    pub created_unix_ms: u64,
}

/// How a stream is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteKind {
    /// Reads as not found; appending again recreates it, revisions continuing after the old.
    Soft,
    /// The name can never be written again.
    Tombstone,
}

/// Delete a stream. `expected` is checked against the stream's own last revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteStream {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub kind: DeleteKind,
    /// The id of the metastream event that records the delete: a retry is recognised by it.
    pub id: Uuid,
    pub created_unix_ms: u64,
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
    /// The stream is tombstoned: it can never be written again.
    StreamDeleted,
    /// A delete of a stream that has no events (or is already soft-deleted).
    StreamNotFound,
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
    #[error("metadata {field} is {value}; it must be between {min} and {max}")]
    MetadataOutOfRange {
        field: String,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("custom metadata is {bytes} bytes; the limit is {max}")]
    CustomMetadataTooLarge { bytes: usize, max: usize },
    #[error("custom metadata must be a JSON object: {why}")]
    CustomMetadataNotAnObject { why: String },
}
