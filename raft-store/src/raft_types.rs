//! openraft's type configuration for Cairn and the aliases of openraft's generic types (the
//! top floor: the state machine's domain types below know nothing of Raft).

use openraft::BasicNode;

use crate::snapshot::SnapshotData;
use crate::types::{Command, Response};

/// A node's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Cairn's Raft types. The runtime is tokio with a generator the simulation can seed
    /// ([`crate::runtime`]).
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotData,
        AsyncRuntime = crate::runtime::CairnRuntime,
);

pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
