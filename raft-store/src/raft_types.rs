//! openraft's type configuration for Cairn and the aliases of openraft's generic types (the
//! top floor: the state machine's domain types below know nothing of Raft).

use openraft::BasicNode;

use crate::types::{Command, Response};

/// A node's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Cairn's Raft types. Terms, leader ids and votes are openraft's defaults (`u64` terms,
    /// a leader id of term and node, so several candidates may stand in one term); the on-disk
    /// encoding of votes, log ids, entries and snapshot metadata is the one 0.9 wrote. The
    /// runtime is tokio with a generator the simulation can seed ([`crate::runtime`]).
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        AsyncRuntime = crate::runtime::CairnRuntime,
);

pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
pub type CommittedLeaderId = LeaderId;
pub type LogId = openraft::LogId<CommittedLeaderId>;
pub type Entry = openraft::Entry<CommittedLeaderId, EntryPayload>;
pub type EntryPayload = openraft::EntryPayload<Command, NodeId, BasicNode>;
pub type Vote = openraft::Vote<LeaderId>;
pub type Membership = openraft::Membership<NodeId, BasicNode>;
pub type StoredMembership = openraft::StoredMembership<CommittedLeaderId, NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<CommittedLeaderId, NodeId, BasicNode>;
pub type Snapshot =
    openraft::Snapshot<CommittedLeaderId, NodeId, BasicNode, crate::snapshot::SnapshotData>;
pub type StorageError = openraft::StorageError<TypeConfig>;
/// What a node's Raft metrics look like.
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
/// A watch on them (`Raft::metrics`): the runtime's watch channel, read through
/// `openraft::async_runtime::WatchReceiver`.
pub type MetricsWatch = openraft_rt_tokio::TokioWatchReceiver<RaftMetrics>;

/// The log id of entry `index` written by `node` as leader in `term`.
pub fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
    LogId::new(
        LeaderId {
            term,
            node_id: node,
        },
        index,
    )
}
