//! Events as written and as recorded, the expected revision of an append, and their
//! conversions to and from the wire types in [`crate::proto`].

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::error::Error;
use crate::proto;

/// The optimistic-concurrency condition of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpectedRevision {
    /// Append whatever the stream holds.
    #[default]
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last revision must be exactly this one.
    Exact(u64),
}

impl fmt::Display for ExpectedRevision {
    /// The CLI's spelling: `any`, `no-stream`, `exists` or the revision.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no-stream"),
            ExpectedRevision::StreamExists => f.write_str("exists"),
            ExpectedRevision::Exact(revision) => write!(f, "{revision}"),
        }
    }
}

impl FromStr for ExpectedRevision {
    type Err = Error;

    /// Accepts exactly what `Display` writes (plus leading zeros on a revision), so a typo
    /// such as `no_stream` or ` 3` is an error rather than a silently different condition.
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "any" => Ok(ExpectedRevision::Any),
            "no-stream" => Ok(ExpectedRevision::NoStream),
            "exists" => Ok(ExpectedRevision::StreamExists),
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits
                .parse()
                .map(ExpectedRevision::Exact)
                .map_err(|_| invalid_expected(text)),
            _ => Err(invalid_expected(text)),
        }
    }
}

fn invalid_expected(text: &str) -> Error {
    Error::InvalidArgument(format!(
        "expected revision {text:?}: use any, no-stream, exists or a revision number"
    ))
}

impl From<ExpectedRevision> for proto::ExpectedRevision {
    fn from(expected: ExpectedRevision) -> Self {
        use proto::expected_revision::Kind;
        let (kind, revision) = match expected {
            ExpectedRevision::Any => (Kind::Any, 0),
            ExpectedRevision::NoStream => (Kind::NoStream, 0),
            ExpectedRevision::StreamExists => (Kind::StreamExists, 0),
            ExpectedRevision::Exact(revision) => (Kind::Exact, revision),
        };
        proto::ExpectedRevision {
            kind: kind.into(),
            revision,
        }
    }
}

impl ExpectedRevision {
    /// Decodes the wire form; `None` for a kind this version does not know. The one decoder
    /// of the contract's expected revision: the server (cairn-node) uses it too, and names the
    /// field itself when it refuses one.
    pub fn from_proto(expected: &proto::ExpectedRevision) -> Option<ExpectedRevision> {
        use proto::expected_revision::Kind;
        match Kind::try_from(expected.kind).ok()? {
            Kind::Any => Some(ExpectedRevision::Any),
            Kind::NoStream => Some(ExpectedRevision::NoStream),
            Kind::StreamExists => Some(ExpectedRevision::StreamExists),
            Kind::Exact => Some(ExpectedRevision::Exact(expected.revision)),
        }
    }
}

impl TryFrom<proto::ExpectedRevision> for ExpectedRevision {
    type Error = Error;

    /// An unknown kind is an invalid argument: the server rejects such a request.
    fn try_from(expected: proto::ExpectedRevision) -> Result<Self, Error> {
        ExpectedRevision::from_proto(&expected).ok_or_else(|| {
            Error::InvalidArgument(format!("expected.kind: unknown value {}", expected.kind))
        })
    }
}

/// How an event's data is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContentType {
    #[default]
    Json,
    Binary,
}

impl ContentType {
    /// Decodes the wire value; `None` for a content type this version does not know. The one
    /// decoder of the contract's content type, shared with the server like
    /// [`ExpectedRevision::from_proto`].
    pub fn from_proto(value: i32) -> Option<ContentType> {
        proto::ContentType::try_from(value)
            .ok()
            .map(ContentType::from)
    }

    /// The media type, as the data model names it.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Binary => "application/octet-stream",
        }
    }
}

impl From<ContentType> for proto::ContentType {
    fn from(content_type: ContentType) -> Self {
        match content_type {
            ContentType::Json => proto::ContentType::Json,
            ContentType::Binary => proto::ContentType::Binary,
        }
    }
}

impl From<proto::ContentType> for ContentType {
    fn from(content_type: proto::ContentType) -> Self {
        match content_type {
            proto::ContentType::Json => ContentType::Json,
            proto::ContentType::Binary => ContentType::Binary,
        }
    }
}

/// An event to append. Its id is the key of idempotent retries: keep it when retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    pub id: Uuid,
    pub event_type: String,
    pub content_type: ContentType,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
    /// What the event is about (`customer:7`): read and subscribed to as `$tag-<tag>`.
    pub tags: Vec<String>,
}

impl EventData {
    /// A JSON event with a fresh UUIDv7 id: time-ordered ids keep the server's id index cheap.
    pub fn json<T: serde::Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
    ) -> Result<EventData, Error> {
        Ok(EventData {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            content_type: ContentType::Json,
            data: serde_json::to_vec(value)?,
            metadata: Vec::new(),
            tags: Vec::new(),
        })
    }

    /// An event with opaque bytes and a fresh UUIDv7 id.
    pub fn binary(event_type: impl Into<String>, data: impl Into<Vec<u8>>) -> EventData {
        EventData {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            content_type: ContentType::Binary,
            data: data.into(),
            metadata: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// Uses the caller's id, e.g. one derived from a command so a resend is deduplicated.
    pub fn with_id(self, id: Uuid) -> Self {
        EventData { id, ..self }
    }

    pub fn with_metadata(self, metadata: impl Into<Vec<u8>>) -> Self {
        EventData {
            metadata: metadata.into(),
            ..self
        }
    }

    /// Tags the event (the server checks the limits: at most 16, each 1..=255 bytes, not
    /// only whitespace, none twice).
    pub fn with_tags<T: Into<String>>(self, tags: impl IntoIterator<Item = T>) -> Self {
        EventData {
            tags: tags.into_iter().map(Into::into).collect(),
            ..self
        }
    }
}

impl From<EventData> for proto::NewEvent {
    fn from(event: EventData) -> Self {
        proto::NewEvent {
            id: event.id.hyphenated().to_string(),
            r#type: event.event_type,
            content_type: proto::ContentType::from(event.content_type).into(),
            data: event.data,
            metadata: event.metadata,
            tags: event.tags,
        }
    }
}

impl TryFrom<proto::NewEvent> for EventData {
    type Error = Error;

    /// What the server accepts: a hyphenated UUID id and a known content type.
    fn try_from(event: proto::NewEvent) -> Result<Self, Error> {
        let id = parse_hyphenated(&event.id).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "events.id: {:?} is not a hyphenated UUID",
                event.id
            ))
        })?;
        let content_type = ContentType::from_proto(event.content_type).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "events.content_type: unknown value {}",
                event.content_type
            ))
        })?;
        Ok(EventData {
            id,
            event_type: event.r#type,
            content_type,
            data: event.data,
            metadata: event.metadata,
            tags: event.tags,
        })
    }
}

/// Parses only the 36-character hyphenated form the contract prescribes.
fn parse_hyphenated(text: &str) -> Option<Uuid> {
    if text.len() != 36 {
        return None;
    }
    Uuid::try_parse(text).ok()
}

/// An event as stored: what was written plus where and when it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub stream: String,
    /// 0-based, gapless within the stream.
    pub revision: u64,
    /// Place in `$all`, gapless across the store.
    pub position: u64,
    pub id: Uuid,
    pub event_type: String,
    pub content_type: ContentType,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
    /// Assigned once by the leader, so every replica reports the same time.
    pub created_unix_ms: u64,
    pub tags: Vec<String>,
}

impl RecordedEvent {
    /// Decodes the data as JSON (whatever the content type says).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.data)?)
    }
}

impl TryFrom<proto::RecordedEvent> for RecordedEvent {
    type Error = Error;

    /// Comes from the server, so a malformed field is the server's bug: `Error::Internal`.
    fn try_from(event: proto::RecordedEvent) -> Result<Self, Error> {
        let id = parse_hyphenated(&event.id).ok_or_else(|| {
            Error::Internal(format!(
                "server sent event id {:?}, not a hyphenated UUID",
                event.id
            ))
        })?;
        let content_type = ContentType::from_proto(event.content_type).ok_or_else(|| {
            Error::Internal(format!(
                "server sent unknown content type {}",
                event.content_type
            ))
        })?;
        Ok(RecordedEvent {
            stream: event.stream,
            revision: event.revision,
            position: event.position,
            id,
            event_type: event.r#type,
            content_type,
            data: event.data.into(),
            metadata: event.metadata.into(),
            created_unix_ms: event.created_unix_ms,
            tags: event.tags,
        })
    }
}

impl From<RecordedEvent> for proto::RecordedEvent {
    fn from(event: RecordedEvent) -> Self {
        proto::RecordedEvent {
            stream: event.stream,
            revision: event.revision,
            position: event.position,
            id: event.id.hyphenated().to_string(),
            r#type: event.event_type,
            content_type: proto::ContentType::from(event.content_type).into(),
            data: event.data.into(),
            metadata: event.metadata.into(),
            created_unix_ms: event.created_unix_ms,
            tags: event.tags,
        }
    }
}
