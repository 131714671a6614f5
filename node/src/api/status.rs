//! The one edge between the node's typed errors and gRPC status codes.
//!
//! Every error the public services answer with becomes a `Status` here and nowhere else, and
//! the tests below pin the code of every kind. To add an error kind: one arm in its `code`
//! match (the matches are exhaustive, so the compiler asks for it) and one line in the test.
//!
//! The codes are chosen for what the client does with them (`cairn_client`'s
//! `error::classify`): INVALID_ARGUMENT, ALREADY_EXISTS and NOT_FOUND are final answers,
//! UNAVAILABLE means "try again, here or on another node", FAILED_PRECONDITION "go to the
//! leader", and INTERNAL from a server is final.
//!
//! - **A storage fault is UNAVAILABLE**, whatever its kind (I/O error, damage found, a
//!   snapshot that changed under a reader). The fault belongs to this node: its disk failed,
//!   or it found bytes it will not serve (a node that finds damage never serves it and repairs
//!   from its peers). Every other replica holds the same applied state, so the caller's right
//!   move is another node, and UNAVAILABLE is what makes the client take it. Before this module
//!   a read answered INTERNAL (final: the read failed where another node would have served it)
//!   and a subscription UNAVAILABLE (it moved on): the same fault ended one and not the other.
//! - **INTERNAL** is kept for what no other node would answer differently: this node's own
//!   bookkeeping broke (a group's verdicts do not match its appends, an append entry without a
//!   result). Retrying would not help; the message says what broke.
//! - **Raft stopped** (a fatal error, or it went away before answering) is UNAVAILABLE: this
//!   node cannot serve, the others can.

use std::fmt::Display;

use cairn_client::{
    CONFLICT_EVENT_ID_METADATA_KEY, CONFLICT_KIND_METADATA_KEY, CONFLICT_NOT_A_RETRY,
    CONFLICT_OTHER_CONTENT,
};
use cairn_raft_store::{AppendRejection, InvalidInput, NodeId, StoreError};
use openraft::error::Fatal;
use tonic::{Code, Status};

use super::group_commit::GroupError;

/// An error with its one gRPC code.
pub trait GrpcCode: Display {
    fn code(&self) -> Code;
}

/// The status for `error`, its message the error's own.
pub fn status(error: &impl GrpcCode) -> Status {
    Status::new(error.code(), error.to_string())
}

/// The status for `error`, its message prefixed with what was being done (`reading history`).
pub fn status_in(context: impl Display, error: &impl GrpcCode) -> Status {
    Status::new(error.code(), format!("{context}: {error}"))
}

/// INVALID_ARGUMENT naming the request field at fault.
pub fn invalid(field: &str, why: impl Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// An `InvalidInput`, its message prefixed with the field it is about.
pub fn invalid_input(e: &InvalidInput) -> Status {
    let field = match e {
        InvalidInput::EmptyStreamName
        | InvalidInput::StreamNameTooLong { .. }
        | InvalidInput::StreamNameHasNul
        | InvalidInput::BlankStreamName
        | InvalidInput::ReservedStreamName { .. } => "stream".to_owned(),
        InvalidInput::NoEvents
        | InvalidInput::TooManyEvents { .. }
        | InvalidInput::AppendTooLarge { .. } => "events".to_owned(),
        InvalidInput::EmptyEventType { index } | InvalidInput::EventTypeTooLong { index, .. } => {
            format!("events[{index}].type")
        }
        InvalidInput::EventTooLarge { index, .. } => format!("events[{index}]"),
        InvalidInput::DuplicateEventIdInAppend { index, .. } => format!("events[{index}].id"),
        InvalidInput::TooManyTags { index, .. } | InvalidInput::DuplicateTag { index, .. } => {
            format!("events[{index}].tags")
        }
        InvalidInput::BlankTag { index, tag } | InvalidInput::TagTooLong { index, tag, .. } => {
            format!("events[{index}].tags[{tag}]")
        }
        InvalidInput::DuplicateStreamInAppend { .. } => "streams".to_owned(),
        InvalidInput::TooManyQueryItems { .. } => "query".to_owned(),
        InvalidInput::EmptyQueryItem { item }
        | InvalidInput::TooManyQueryTypes { item, .. }
        | InvalidInput::TooManyQueryTags { item, .. }
        | InvalidInput::BadQueryName { item, .. } => format!("query.items[{item}]"),
    };
    Status::new(e.code(), format!("{field}: {e}"))
}

/// A state-machine rejection of an append. An idempotency conflict carries the conflicting id
/// and the kind of conflict in its metadata (the contract is in the proto's `Append`), which
/// the client turns into `Error::EventIdReused` for `other-content`.
pub fn rejection(rejection: &AppendRejection) -> Status {
    let (id, kind) = match rejection {
        // Named by field, like the same input refused before it was proposed.
        AppendRejection::Invalid(e) => return invalid_input(e),
        AppendRejection::IdempotencyConflict { id, .. } => (id, CONFLICT_NOT_A_RETRY),
        AppendRejection::ContentConflict { id, .. } => (id, CONFLICT_OTHER_CONTENT),
    };
    let mut status = status(rejection);
    let metadata = status.metadata_mut();
    if let Ok(value) = id.hyphenated().to_string().parse() {
        metadata.insert(CONFLICT_EVENT_ID_METADATA_KEY, value);
    }
    metadata.insert(
        CONFLICT_KIND_METADATA_KEY,
        tonic::metadata::MetadataValue::from_static(kind),
    );
    status
}

impl GrpcCode for StoreError {
    fn code(&self) -> Code {
        match self {
            StoreError::Io(_)
            | StoreError::Corrupt { .. }
            | StoreError::InvalidSnapshot(_)
            | StoreError::SnapshotSourceChanged => Code::Unavailable,
            // Only at open: the data dir needs a newer build, retrying will not help.
            StoreError::FormatTooNew { .. } => Code::FailedPrecondition,
        }
    }
}

impl GrpcCode for InvalidInput {
    fn code(&self) -> Code {
        Code::InvalidArgument
    }
}

impl GrpcCode for AppendRejection {
    fn code(&self) -> Code {
        match self {
            AppendRejection::Invalid(_) => Code::InvalidArgument,
            // Final: the ids are taken by another append; a retry would meet the same verdict.
            AppendRejection::IdempotencyConflict { .. } => Code::AlreadyExists,
            // Final: the ids are stored with other content; the events need new ids.
            AppendRejection::ContentConflict { .. } => Code::AlreadyExists,
        }
    }
}

impl GrpcCode for GroupError {
    fn code(&self) -> Code {
        match self {
            // The handler answers with the leader's hint instead (`not_leader`); same code.
            GroupError::NotLeader => Code::FailedPrecondition,
            GroupError::RaftStopped(_)
            | GroupError::ProposerGone
            | GroupError::StoppedBeforeApply
            | GroupError::Unanswered => Code::Unavailable,
            GroupError::DroppedUnanswered
            | GroupError::NoResult
            | GroupError::Membership(_)
            | GroupError::VerdictCount { .. } => Code::Internal,
        }
    }
}

impl GrpcCode for Fatal<NodeId> {
    fn code(&self) -> Code {
        Code::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use openraft::error::{ChangeMembershipError, EmptyMembership};
    use uuid::Uuid;

    use super::*;

    /// One line per kind: a change here is a change of the contract clients rely on.
    #[test]
    fn every_error_kind_has_its_pinned_grpc_code() {
        let store = [
            (StoreError::Io(io::Error::other("disk")), Code::Unavailable),
            (
                StoreError::Corrupt {
                    what: "group",
                    detail: "crc".into(),
                },
                Code::Unavailable,
            ),
            (
                StoreError::InvalidSnapshot("short".into()),
                Code::Unavailable,
            ),
            (StoreError::SnapshotSourceChanged, Code::Unavailable),
            (
                StoreError::FormatTooNew {
                    found: 2,
                    supported: 1,
                },
                Code::FailedPrecondition,
            ),
        ];
        for (error, code) in &store {
            assert_eq!(error.code(), *code, "{error}");
            assert_eq!(status_in("reading", error).code(), *code, "{error}");
        }

        let no_events = InvalidInput::NoEvents;
        assert_eq!(no_events.code(), Code::InvalidArgument);
        assert_eq!(invalid_input(&no_events).code(), Code::InvalidArgument);
        assert!(invalid_input(&no_events).message().starts_with("events: "));
        assert_eq!(
            invalid("direction", "unknown value 7").code(),
            Code::InvalidArgument
        );

        let rejections = [
            (
                AppendRejection::Invalid(InvalidInput::NoEvents),
                Code::InvalidArgument,
            ),
            (
                AppendRejection::IdempotencyConflict {
                    id: Uuid::nil(),
                    position: 3,
                },
                Code::AlreadyExists,
            ),
            (
                AppendRejection::ContentConflict {
                    id: Uuid::nil(),
                    position: 3,
                },
                Code::AlreadyExists,
            ),
        ];
        for (error, code) in &rejections {
            assert_eq!(error.code(), *code, "{error}");
            assert_eq!(rejection(error).code(), *code, "{error}");
        }
        // The kind of conflict and the id travel in the metadata.
        let id = Uuid::from_u128(7);
        for (error, kind) in [
            (
                AppendRejection::IdempotencyConflict { id, position: 3 },
                CONFLICT_NOT_A_RETRY,
            ),
            (
                AppendRejection::ContentConflict { id, position: 3 },
                CONFLICT_OTHER_CONTENT,
            ),
        ] {
            let answer = rejection(&error);
            let text = |key| answer.metadata().get(key).and_then(|v| v.to_str().ok());
            assert_eq!(text(CONFLICT_KIND_METADATA_KEY), Some(kind));
            assert_eq!(
                text(CONFLICT_EVENT_ID_METADATA_KEY),
                Some(id.to_string().as_str())
            );
        }

        let membership = ChangeMembershipError::EmptyMembership(EmptyMembership {});
        let group = [
            (GroupError::NotLeader, Code::FailedPrecondition),
            (GroupError::RaftStopped(Fatal::Stopped), Code::Unavailable),
            (GroupError::ProposerGone, Code::Unavailable),
            (GroupError::StoppedBeforeApply, Code::Unavailable),
            (GroupError::Unanswered, Code::Unavailable),
            (GroupError::DroppedUnanswered, Code::Internal),
            (GroupError::NoResult, Code::Internal),
            (GroupError::Membership(membership), Code::Internal),
            (
                GroupError::VerdictCount {
                    verdicts: 1,
                    appends: 2,
                },
                Code::Internal,
            ),
        ];
        for (error, code) in &group {
            assert_eq!(error.code(), *code, "{error}");
            assert_eq!(status(error).code(), *code, "{error}");
        }

        assert_eq!(Fatal::<NodeId>::Stopped.code(), Code::Unavailable);
    }
}
