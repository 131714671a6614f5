//! The node's own conditions as typed errors: what a request meets on this node that is not
//! the store's verdict (no leader, a deadline passed, a removed node, a membership request
//! that cannot be done, ...). Each kind has its one gRPC code in `api/status.rs`, which is
//! also where a `NodeError` becomes a `tonic::Status` (`From`), leader hints included. The
//! messages are what users and scripts read today: change them as a contract.

use cairn_raft_store::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    // Leadership and forwarding.
    #[error("no leader is known; retry shortly")]
    NoLeaderKnown,
    #[error("leadership is changing; retry shortly")]
    LeadershipChanging,
    #[error("leader {leader} did not answer in time")]
    LeaderTimedOut { leader: NodeId },
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("leadership is being handed over; retry shortly")]
    HandoverUnderway,
    #[error("leadership could not be confirmed in time")]
    LeadershipUnconfirmed,
    /// This node does not lead; `leader` is the one it knows (id, endpoint), sent back as a
    /// hint in `x-cairn-leader`.
    #[error("{}", not_leader_message(*node, leader))]
    NotLeader {
        node: NodeId,
        leader: Option<(NodeId, String)>,
    },
    #[error("node {node} cannot serve: {reason}")]
    CannotServe { node: NodeId, reason: String },

    // Deadlines and the node's life.
    #[error(
        "append not committed within {timeout_ms} ms (no quorum?); retrying with the same event ids is safe"
    )]
    AppendTimedOut { timeout_ms: u64 },
    #[error(
        "node {node} has not applied position {position} within {timeout_ms} ms (it has {applied} events)"
    )]
    PositionNotApplied {
        node: NodeId,
        position: u64,
        timeout_ms: u64,
        applied: u64,
    },
    #[error("node is shutting down")]
    ShuttingDown,

    // Standing: a node that is not (or no longer) a member.
    /// `reason` says why (`standing`); `leader_endpoint` goes back as a hint.
    #[error("{reason}; it serves no reads, appends or subscriptions: use a member")]
    NotServing {
        reason: String,
        leader_endpoint: Option<String>,
    },
    #[error("this node is no longer a member")]
    NoLongerMember,

    // Reads.
    #[error("stream {stream:?} not found")]
    StreamNotFound { stream: String },
    /// Tombstoned: never to be written again. NOT_FOUND, with `x-cairn-stream-deleted`.
    #[error("stream {stream:?} is deleted (tombstoned): it can never be written or read again")]
    StreamDeleted { stream: String },
    #[error("event {position} was announced but is not stored")]
    AnnouncedEventMissing { position: u64 },

    // Consumer groups.
    #[error("consumer group {group:?} not found")]
    GroupNotFound { group: String },
    #[error("consumer group {group:?} already exists")]
    GroupExists { group: String },
    #[error("consumer group {group:?} has its {max} consumers (its max consumers setting)")]
    GroupFull { group: String, max: u32 },
    /// The dispatcher stopped (the group changed, or a commit failed): consumers reconnect.
    #[error("consumer group {group:?} closed this consumer: {reason}; reconnect")]
    GroupClosed { group: String, reason: String },

    // Membership changes.
    #[error("a membership change is in progress; retry shortly")]
    MembershipChangeInProgress,
    #[error("another membership change is under way; retry shortly")]
    MembershipLocked,
    #[error("{reason}; retry shortly")]
    MembershipChangeConflict { reason: String },
    #[error(
        "the membership change ({change}) did not commit within {timeout_ms} ms (no quorum?); it may still; retrying is safe"
    )]
    MembershipChangeTimedOut { change: String, timeout_ms: u64 },
    /// A membership request that cannot be done as asked; `reason` names what to do instead.
    #[error("{reason}")]
    MembershipRefused { reason: String },
    /// The node to add did not answer: `how` is `(its error)` or `within N ms`.
    #[error(
        "node {id} at {addr} did not answer {how}: start it (cairn node --id {id} ...) before adding it"
    )]
    JoinerSilent {
        id: NodeId,
        addr: String,
        how: String,
    },
    #[error(
        "node {id} is a learner, still catching up after {timeout_ms} ms (it has the log {had}, the leader had {target}); add-node again resumes"
    )]
    LearnerCatchingUp {
        id: NodeId,
        timeout_ms: u64,
        had: String,
        target: u64,
    },
    #[error(
        "node {id} leads and could not hand leadership over ({reason}); nothing changed; retry"
    )]
    HandoverFailed { id: NodeId, reason: String },

    // The Raft-internal service (node/proto), between nodes.
    #[error("undecodable raft message: {0}")]
    UndecodableRaftMessage(String),
    #[error("{0}")]
    MalformedSnapshotStream(&'static str),
    #[error("encoding reply: {0}")]
    EncodingReply(String),
    #[error("spooling snapshot: {0}")]
    SpoolingSnapshot(String),
    /// A snapshot that arrived damaged (or was damaged in the spool): refused before Raft
    /// sees it; the leader sends it again.
    #[error("damaged snapshot refused: {0}")]
    DamagedSnapshot(String),
    /// A vote request (or a handoff) to a node repairing its store (`repair`).
    #[error("{0}")]
    Repairing(String),
    /// Raft refused or could not take the request now (it is stopping or busy).
    #[error("{0}")]
    RaftBusy(String),
}

fn not_leader_message(node: NodeId, leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, endpoint)) => {
            format!("node {node} is not the leader; the leader is node {id} at {endpoint}")
        }
        None => format!("node {node} is not the leader and knows no leader"),
    }
}
