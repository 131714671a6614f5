//! The one edge between the node's typed errors and gRPC status codes.
//!
//! Every error the services answer with becomes a `Status` here and nowhere else: the store's
//! errors and verdicts, and the node's own conditions (`crate::error::NodeError`: no leader, a
//! deadline, a removed node, a refused membership change, ...), whose `From` impl also puts
//! the leader hint in `x-cairn-leader`. The tests below pin the code of every kind, and the
//! message of every node condition. To add an error kind: one arm in its `code`
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
    CONFLICT_OTHER_CONTENT, LEADER_METADATA_KEY, STREAM_DELETED_METADATA_KEY,
    STREAM_DELETED_TOMBSTONED,
};
use cairn_raft_store::{AppendRejection, InvalidInput, StoreError, TypeConfig};
use openraft::error::Fatal;
use tonic::{Code, Status};

use super::group_commit::GroupError;
use crate::error::NodeError;

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
        InvalidInput::MetadataOutOfRange { .. }
        | InvalidInput::CustomMetadataTooLarge { .. }
        | InvalidInput::CustomMetadataNotAnObject { .. } => "metadata".to_owned(),
        InvalidInput::BadGroupName { .. } | InvalidInput::TooManyGroups { .. } => {
            "group".to_owned()
        }
        InvalidInput::BadGroupSetting { .. } => "settings".to_owned(),
        InvalidInput::BadGroupCheckpoint { .. } => "checkpoint".to_owned(),
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
        match self {
            // Not a bad request: the cluster is at its limit (`MAX_GROUPS`).
            InvalidInput::TooManyGroups { .. } => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        }
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
            | GroupError::Unexpected(_)
            | GroupError::VerdictCount { .. } => Code::Internal,
        }
    }
}

impl GrpcCode for Fatal<TypeConfig> {
    fn code(&self) -> Code {
        Code::Unavailable
    }
}

impl GrpcCode for NodeError {
    fn code(&self) -> Code {
        match self {
            // Try again shortly, here or on another node.
            NodeError::NoLeaderKnown
            | NodeError::LeadershipChanging
            | NodeError::LeaderTimedOut { .. }
            | NodeError::Unreachable { .. }
            | NodeError::HandoverUnderway
            | NodeError::LeadershipUnconfirmed
            | NodeError::CannotServe { .. }
            | NodeError::AppendTimedOut { .. }
            | NodeError::ShuttingDown
            | NodeError::NoLongerMember
            | NodeError::MembershipChangeInProgress
            | NodeError::MembershipLocked
            | NodeError::MembershipChangeConflict { .. }
            | NodeError::MembershipChangeTimedOut { .. }
            | NodeError::LearnerCatchingUp { .. }
            | NodeError::HandoverFailed { .. }
            | NodeError::RaftBusy(_)
            | NodeError::GroupClosed { .. }
            | NodeError::Repairing(_) => Code::Unavailable,
            NodeError::GroupNotFound { .. } => Code::NotFound,
            NodeError::GroupExists { .. } => Code::AlreadyExists,
            // Final until a consumer leaves: the caller decides whether to wait.
            NodeError::GroupFull { .. } => Code::ResourceExhausted,
            // Go to the leader (or a member): the hint travels in `x-cairn-leader`.
            NodeError::NotLeader { .. } | NodeError::NotServing { .. } => Code::FailedPrecondition,
            // A read-your-writes wait that ran out: the caller's own deadline logic decides.
            NodeError::PositionNotApplied { .. } => Code::DeadlineExceeded,
            // A tombstone is a final "not found" too; the metadata tells it apart.
            NodeError::StreamNotFound { .. } | NodeError::StreamDeleted { .. } => Code::NotFound,
            // The node to add is not running: final until someone starts it.
            NodeError::JoinerSilent { .. } => Code::Aborted,
            NodeError::MembershipRefused { .. }
            | NodeError::UndecodableRaftMessage(_)
            | NodeError::MalformedSnapshotStream(_) => Code::InvalidArgument,
            // Damaged on the way or in the spool: the leader sends it again.
            NodeError::DamagedSnapshot(_) => Code::DataLoss,
            // This node's own bookkeeping broke.
            NodeError::AnnouncedEventMissing { .. }
            | NodeError::EncodingReply(_)
            | NodeError::SpoolingSnapshot(_) => Code::Internal,
        }
    }
}

/// The status for a node condition, with the leader's endpoint in `x-cairn-leader` where the
/// error carries one (the client follows it at once).
impl From<NodeError> for Status {
    fn from(error: NodeError) -> Status {
        let leader = match &error {
            NodeError::NotLeader {
                leader: Some((_, endpoint)),
                ..
            } => Some(endpoint.clone()),
            NodeError::NotServing {
                leader_endpoint, ..
            } => leader_endpoint.clone(),
            _ => None,
        };
        let mut answer = status(&error);
        if let Some(Ok(value)) = leader.map(|endpoint| endpoint.parse()) {
            answer.metadata_mut().insert(LEADER_METADATA_KEY, value);
        }
        if let NodeError::StreamDeleted { .. } = error {
            answer.metadata_mut().insert(
                STREAM_DELETED_METADATA_KEY,
                tonic::metadata::MetadataValue::from_static(STREAM_DELETED_TOMBSTONED),
            );
        }
        answer
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
                GroupError::Unexpected("a precondition".into()),
                Code::Internal,
            ),
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

        assert_eq!(Fatal::<TypeConfig>::Stopped.code(), Code::Unavailable);
    }

    /// One line per node condition: its code and the message users and scripts read.
    #[test]
    fn every_node_condition_has_its_pinned_grpc_code_and_message() {
        use NodeError as E;
        let text = |s: &str| s.to_owned();
        let conditions = [
            (E::NoLeaderKnown, Code::Unavailable, "no leader is known; retry shortly"),
            (E::LeadershipChanging, Code::Unavailable, "leadership is changing; retry shortly"),
            (E::LeaderTimedOut { leader: 2 }, Code::Unavailable, "leader 2 did not answer in time"),
            (
                E::Unreachable { addr: text("h:1"), reason: text("refused") },
                Code::Unavailable,
                "cannot reach h:1: refused",
            ),
            (
                E::HandoverUnderway,
                Code::Unavailable,
                "leadership is being handed over; retry shortly",
            ),
            (
                E::LeadershipUnconfirmed,
                Code::Unavailable,
                "leadership could not be confirmed in time",
            ),
            (
                E::NotLeader { node: 1, leader: Some((2, text("http://h:2"))) },
                Code::FailedPrecondition,
                "node 1 is not the leader; the leader is node 2 at http://h:2",
            ),
            (
                E::NotLeader { node: 1, leader: None },
                Code::FailedPrecondition,
                "node 1 is not the leader and knows no leader",
            ),
            (
                E::CannotServe { node: 1, reason: text("stopped") },
                Code::Unavailable,
                "node 1 cannot serve: stopped",
            ),
            (
                E::AppendTimedOut { timeout_ms: 5 },
                Code::Unavailable,
                "append not committed within 5 ms (no quorum?); retrying with the same event ids is safe",
            ),
            (
                E::PositionNotApplied { node: 1, position: 9, timeout_ms: 5, applied: 4 },
                Code::DeadlineExceeded,
                "node 1 has not applied position 9 within 5 ms (it has 4 events)",
            ),
            (E::ShuttingDown, Code::Unavailable, "node is shutting down"),
            (
                E::NotServing { reason: text("node 3 was removed"), leader_endpoint: None },
                Code::FailedPrecondition,
                "node 3 was removed; it serves no reads, appends or subscriptions: use a member",
            ),
            (E::NoLongerMember, Code::Unavailable, "this node is no longer a member"),
            (
                E::StreamNotFound { stream: text("orders-1") },
                Code::NotFound,
                "stream \"orders-1\" not found",
            ),
            (
                E::StreamDeleted { stream: text("orders-1") },
                Code::NotFound,
                "stream \"orders-1\" is deleted (tombstoned): it can never be written or read again",
            ),
            (
                E::AnnouncedEventMissing { position: 7 },
                Code::Internal,
                "event 7 was announced but is not stored",
            ),
            (
                E::GroupNotFound { group: text("billing") },
                Code::NotFound,
                "consumer group \"billing\" not found",
            ),
            (
                E::GroupExists { group: text("billing") },
                Code::AlreadyExists,
                "consumer group \"billing\" already exists",
            ),
            (
                E::GroupFull { group: text("billing"), max: 2 },
                Code::ResourceExhausted,
                "consumer group \"billing\" has its 2 consumers (its max consumers setting)",
            ),
            (
                E::GroupClosed { group: text("billing"), reason: text("it was updated") },
                Code::Unavailable,
                "consumer group \"billing\" closed this consumer: it was updated; reconnect",
            ),
            (
                E::MembershipChangeInProgress,
                Code::Unavailable,
                "a membership change is in progress; retry shortly",
            ),
            (
                E::MembershipLocked,
                Code::Unavailable,
                "another membership change is under way; retry shortly",
            ),
            (
                E::MembershipChangeConflict { reason: text("in progress") },
                Code::Unavailable,
                "in progress; retry shortly",
            ),
            (
                E::MembershipChangeTimedOut { change: text("AddNodes"), timeout_ms: 5 },
                Code::Unavailable,
                "the membership change (AddNodes) did not commit within 5 ms (no quorum?); it may still; retrying is safe",
            ),
            (
                E::MembershipRefused { reason: text("node 4 is the last voter") },
                Code::InvalidArgument,
                "node 4 is the last voter",
            ),
            (
                E::JoinerSilent { id: 4, addr: text("h:4"), how: text("within 5 ms") },
                Code::Aborted,
                "node 4 at h:4 did not answer within 5 ms: start it (cairn node --id 4 ...) before adding it",
            ),
            (
                E::LearnerCatchingUp { id: 4, timeout_ms: 5, had: text("nothing"), target: 9 },
                Code::Unavailable,
                "node 4 is a learner, still catching up after 5 ms (it has the log nothing, the leader had 9); add-node again resumes",
            ),
            (
                E::HandoverFailed { id: 1, reason: text("no voter") },
                Code::Unavailable,
                "node 1 leads and could not hand leadership over (no voter); nothing changed; retry",
            ),
            (
                E::UndecodableRaftMessage(text("eof")),
                Code::InvalidArgument,
                "undecodable raft message: eof",
            ),
            (
                E::MalformedSnapshotStream("a snapshot stream starts with its header"),
                Code::InvalidArgument,
                "a snapshot stream starts with its header",
            ),
            (E::EncodingReply(text("full")), Code::Internal, "encoding reply: full"),
            (E::SpoolingSnapshot(text("disk")), Code::Internal, "spooling snapshot: disk"),
            (E::RaftBusy(text("stopping")), Code::Unavailable, "stopping"),
            (E::Repairing(text("repairing")), Code::Unavailable, "repairing"),
            (
                E::DamagedSnapshot(text("bad crc")),
                Code::DataLoss,
                "damaged snapshot refused: bad crc",
            ),
        ];
        for (error, code, message) in conditions {
            assert_eq!(error.code(), code, "{error}");
            let answer = Status::from(error);
            assert_eq!((answer.code(), answer.message()), (code, message));
        }
    }

    #[test]
    fn a_leader_hint_travels_in_the_metadata() {
        let hinted = [
            NodeError::NotLeader {
                node: 1,
                leader: Some((2, "http://h:2".to_owned())),
            },
            NodeError::NotServing {
                reason: "node 1 was removed".to_owned(),
                leader_endpoint: Some("http://h:2".to_owned()),
            },
        ];
        for error in hinted {
            let answer = Status::from(error);
            let leader = answer.metadata().get(LEADER_METADATA_KEY);
            assert_eq!(leader.and_then(|v| v.to_str().ok()), Some("http://h:2"));
        }
        let unhinted = Status::from(NodeError::NotLeader {
            node: 1,
            leader: None,
        });
        assert!(unhinted.metadata().get(LEADER_METADATA_KEY).is_none());
    }
}
