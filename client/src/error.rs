//! The crate's one error type, and how a gRPC status becomes one (or a reason to retry).

use tonic::{Code, Status};

use crate::event::ExpectedRevision;

/// ASCII metadata key on a FAILED_PRECONDITION status: the endpoint URL of the leader, sent by
/// a follower that was asked for the leader only (or that cannot serve a linearizable read).
pub const LEADER_METADATA_KEY: &str = "x-cairn-leader";
/// ASCII metadata key on an ALREADY_EXISTS answer to an append: the first conflicting event id.
pub const CONFLICT_EVENT_ID_METADATA_KEY: &str = "x-cairn-event-id";
/// ASCII metadata key on an ALREADY_EXISTS answer to an append: the kind of conflict,
/// [`CONFLICT_OTHER_CONTENT`] or [`CONFLICT_NOT_A_RETRY`].
pub const CONFLICT_KIND_METADATA_KEY: &str = "x-cairn-conflict";
/// The ids are stored at this place, but an event's content differs: an id reused.
pub const CONFLICT_OTHER_CONTENT: &str = "other-content";
/// The ids only partly match the stored append, or are stored in another stream or place.
pub const CONFLICT_NOT_A_RETRY: &str = "not-a-retry";

/// ASCII metadata key on a NOT_FOUND answer: the stream is deleted, not merely absent; its
/// value is [`STREAM_DELETED_TOMBSTONED`].
pub const STREAM_DELETED_METADATA_KEY: &str = "x-cairn-stream-deleted";
/// The stream is tombstoned: never to be written again.
pub const STREAM_DELETED_TOMBSTONED: &str = "tombstoned";

/// What went wrong, typed so callers can act on it (the CLI maps these to exit codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The optimistic-concurrency check failed: a normal outcome, never retried by the client.
    #[error("wrong expected version on stream {stream:?}: expected {expected}, actual {}", actual_text(.actual))]
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedRevision,
        /// The stream's last revision; `None` when the stream has no events.
        actual: Option<u64>,
    },
    /// A DCB append condition failed: an event matching its query is stored at `position`
    /// (the first such) after the condition's `after`. A normal outcome, never retried.
    #[error("append condition failed: an event matching the query is at position {position}")]
    ConditionFailed { position: u64 },
    /// A read of a stream that has no events.
    #[error("stream {stream:?} not found")]
    StreamNotFound { stream: String },
    /// The stream is tombstoned: it can never be written or read again.
    #[error("stream {stream:?} is deleted (tombstoned)")]
    StreamDeleted { stream: String },
    /// The request was malformed (the message names the field); retrying cannot help.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An event id is already stored, written by a different append.
    #[error("idempotency conflict: {0}")]
    IdempotencyConflict(String),
    /// Event `id` is already stored, as part of an append to the same stream and place, but
    /// with other content (type, content type, data or metadata): the id was reused for
    /// another event. Not a retry, never retried; nothing was written. A retry must resend the
    /// same events; a new event needs a new id.
    #[error("idempotency conflict: event id {id} is already stored with other content (type, content type, data or metadata); nothing was written (a retry must resend the same event; a new event needs a new id)")]
    EventIdReused { id: uuid::Uuid },
    /// No node could serve the request within the retry budget; the text is the last cause.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The node did not accept who the client is, or how it connected (a TLS node answers a
    /// plain-text client so); never retried. The CLI exits 6.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The caller is authenticated, but no grant of its user covers the call (an append to a
    /// stream it may only read, an admin call); never retried, nothing was written. The CLI
    /// exits 6.
    #[error("not allowed: {0}")]
    PermissionDenied(String),
    /// Event data could not be turned into or read from JSON.
    #[error("serialization: {0}")]
    Serialization(String),
    /// Anything else, including answers from the server that break the contract.
    #[error("internal: {0}")]
    Internal(String),
    /// The consumer group does not exist (never created, or deleted).
    #[error("consumer group {group:?} not found")]
    GroupNotFound { group: String },
    /// A create of a consumer group that exists.
    #[error("consumer group {group:?} already exists")]
    GroupExists { group: String },
    /// The group has as many consumers as its max consumers setting allows.
    #[error("consumer group is full: {0}")]
    GroupFull(String),
}

fn actual_text(actual: &Option<u64>) -> String {
    match actual {
        Some(revision) => revision.to_string(),
        None => "no stream".to_owned(),
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Serialization(err.to_string())
    }
}

/// What to do about a failed RPC.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Try again (the same request). `leader` is the endpoint a follower pointed to, if any.
    Retry {
        leader: Option<String>,
        cause: String,
    },
    /// Give up and return this error.
    Fatal(Error),
}

/// Sorts a status into retryable or final. `stream` names the stream for NOT_FOUND.
///
/// tonic reports transport failures that happen on this side (connection refused or reset,
/// broken HTTP/2 stream) as UNAVAILABLE, CANCELLED or UNKNOWN, and as INTERNAL for some h2
/// errors; those carry a `source()`, which a status decoded from a server's answer never has.
/// The server never sends UNKNOWN on purpose, so UNKNOWN is treated as a transport failure.
/// Retrying is safe for appends because a retry reuses the same event ids.
pub(crate) fn classify(status: &Status, stream: &str) -> Failure {
    let cause = format!(
        "{:?}: {}{}",
        status.code(),
        status.message(),
        tls_hint(status.message())
    );
    match status.code() {
        Code::InvalidArgument => {
            Failure::Fatal(Error::InvalidArgument(status.message().to_owned()))
        }
        Code::AlreadyExists => Failure::Fatal(conflict(status)),
        Code::Unauthenticated => {
            Failure::Fatal(Error::Unauthenticated(status.message().to_owned()))
        }
        Code::PermissionDenied => {
            Failure::Fatal(Error::PermissionDenied(status.message().to_owned()))
        }
        Code::NotFound
            if status
                .metadata()
                .get(STREAM_DELETED_METADATA_KEY)
                .is_some_and(|v| v == STREAM_DELETED_TOMBSTONED) =>
        {
            Failure::Fatal(Error::StreamDeleted {
                stream: stream.to_owned(),
            })
        }
        Code::NotFound => Failure::Fatal(Error::StreamNotFound {
            stream: stream.to_owned(),
        }),
        Code::FailedPrecondition => Failure::Retry {
            leader: leader_hint(status),
            cause,
        },
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Failure::Retry {
                leader: None,
                cause,
            }
        }
        Code::Internal if std::error::Error::source(status).is_some() => Failure::Retry {
            leader: None,
            cause,
        },
        _ => Failure::Fatal(Error::Internal(cause)),
    }
}

/// What to do about a transport failure that TLS explains: the two ways a TLS mismatch shows.
fn tls_hint(message: &str) -> &'static str {
    if message.contains("invalid peer certificate") {
        " (the node's certificate is not signed by a CA this client trusts: give the cluster's CA with --tls-ca / CAIRN_TLS_CA or the profile's tls_ca, or ClientConfig::tls_ca)"
    } else if message.contains("h2 protocol error") || message.contains("http2 error") {
        " (a node that runs with TLS answers a plain-text client like this: use https:// endpoints and the cluster's CA)"
    } else {
        ""
    }
}

/// The error a failed RPC becomes when it is not (or no longer) retried.
pub(crate) fn status_to_error(status: &Status, stream: &str) -> Error {
    match classify(status, stream) {
        Failure::Fatal(err) => err,
        Failure::Retry { cause, .. } => Error::Unavailable(cause),
    }
}

/// An ALREADY_EXISTS answer: [`Error::EventIdReused`] when the metadata says so (and names a
/// valid id), else [`Error::IdempotencyConflict`] with the server's message.
fn conflict(status: &Status) -> Error {
    let text = |key: &str| status.metadata().get(key).and_then(|v| v.to_str().ok());
    if text(CONFLICT_KIND_METADATA_KEY) == Some(CONFLICT_OTHER_CONTENT) {
        if let Some(id) = text(CONFLICT_EVENT_ID_METADATA_KEY).and_then(|id| id.parse().ok()) {
            return Error::EventIdReused { id };
        }
    }
    Error::IdempotencyConflict(status.message().to_owned())
}

/// The leader's endpoint from a "not the leader" answer; absent or unreadable means no hint.
fn leader_hint(status: &Status) -> Option<String> {
    let value = status.metadata().get(LEADER_METADATA_KEY)?;
    let text = value.to_str().ok()?.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
