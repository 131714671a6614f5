//! The public gRPC services (`cairn.v1.Streams`, `cairn.v1.Cluster`) on top of the local Raft
//! instance and the applied state.

pub mod auth;
mod cluster;
pub(crate) mod convert;
pub mod deadlines;
pub mod erase;
pub mod group_commit;
pub mod groups;
pub(crate) mod lifecycle;
pub mod scavenge;
pub mod status;
mod streams;
pub mod subscribe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_raft_store::disk::Disk;
use cairn_raft_store::erase::Erasures;
use cairn_raft_store::scavenge::Reclaimer;
use cairn_raft_store::{EventReader, Limits, NodeId, Raft};
use openraft::async_runtime::WatchReceiver;
use tonic::transport::Channel;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use groups::GroupsService;
pub use streams::StreamsService;

use crate::auth::Auth;
use crate::error::NodeError;
use crate::feed::LiveFeed;
use crate::leadership::ProposalGate;
use crate::metrics::NodeMetrics;
use crate::network::Connector;
use crate::standing::Standing;

/// The contract's constants live with the contract, in the client crate: the metadata key of a
/// not-leader answer, and the largest public message (an append of 16 MiB plus framing; bigger
/// ones are refused by the transport before they are decoded).
pub use cairn_client::{LEADER_METADATA_KEY, MAX_MESSAGE_BYTES as MAX_CLIENT_MESSAGE_BYTES};

/// What the services share.
pub struct NodeContext {
    pub id: NodeId,
    pub raft: Raft,
    pub reader: EventReader,
    /// Gives scavenged bytes back; read for the status call's dead bytes.
    pub reclaimer: Reclaimer,
    /// The store's disk, measured for the status call's `with_space`.
    pub disk: Arc<dyn Disk>,
    /// The erase steps this node has still to scrub, and what its eraser is doing: read for
    /// the status call.
    pub erasures: Erasures,
    pub erase_progress: erase::EraseProgress,
    pub limits: Limits,
    pub connector: Arc<dyn Connector>,
    pub feed: LiveFeed,
    /// This node's counters, made with its context and shared with `Node` for `/metrics`
    /// (the simulation runs several nodes in one process, each with its own).
    pub metrics: Arc<NodeMetrics>,
    /// Closed while this node hands leadership over: new proposals wait (`leadership`).
    pub gate: ProposalGate,
    /// Where appends queue on the leader to share Raft entries.
    pub group_commit: group_commit::GroupCommit,
    /// One membership change at a time through this node (`api/cluster.rs`).
    pub membership_lock: tokio::sync::Mutex<()>,
    /// Authentication and authorization in force (`auth`); `None` when the node runs
    /// `--insecure` (and in the simulation): nothing is checked.
    pub auth: Option<Arc<Auth>>,
    /// Whether this node is still a member (`standing`); a node that is not refuses reads,
    /// appends and subscriptions.
    pub standing: tokio::sync::watch::Receiver<Standing>,
    /// One channel per peer address, reused across forwarded calls; addresses that left the
    /// membership are dropped (so removed nodes are not kept connected).
    channels: Mutex<HashMap<String, Channel>>,
}

/// What the services use of the store besides Raft.
pub struct StoreAccess {
    pub reader: EventReader,
    pub reclaimer: Reclaimer,
    pub disk: Arc<dyn Disk>,
    /// The applied security state's checks, when they are in force.
    pub auth: Option<Arc<Auth>>,
    pub erasures: Erasures,
    pub erase_progress: erase::EraseProgress,
}

impl NodeContext {
    /// Made once, by `app::start`, from the pieces of the node's wiring it made before.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        raft: Raft,
        store: StoreAccess,
        limits: Limits,
        connector: Arc<dyn Connector>,
        feed: LiveFeed,
        standing: tokio::sync::watch::Receiver<Standing>,
        metrics: Arc<NodeMetrics>,
    ) -> Arc<Self> {
        let StoreAccess {
            reader,
            reclaimer,
            disk,
            auth,
            erasures,
            erase_progress,
        } = store;
        Arc::new(NodeContext {
            id,
            group_commit: group_commit::GroupCommit::start(raft.clone()),
            raft,
            reader,
            reclaimer,
            disk,
            erasures,
            erase_progress,
            limits,
            connector,
            feed,
            metrics,
            auth,
            gate: ProposalGate::default(),
            membership_lock: tokio::sync::Mutex::new(()),
            standing,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// A channel to a peer's `HOST:PORT`.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        let members: Vec<String> = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(_, node)| node.addr.clone())
                .collect()
        };
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        // Membership is small (a handful of nodes): this costs nothing next to a call.
        channels.retain(|known, _| known == addr || members.contains(known));
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self
            .connector
            .channel(addr)
            .map_err(|e| NodeError::Unreachable {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?;
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// FAILED_PRECONDITION naming the members when this node is not one (`standing`).
    pub fn refuse_unless_member(&self) -> Result<(), tonic::Status> {
        let standing = self.standing.borrow().clone();
        if standing.is_member() {
            return Ok(());
        }
        if standing == Standing::NotMember && self.in_own_configuration() {
            // Added since the last check (which runs again at once): the configuration says
            // it is a member.
            return Ok(());
        }
        let leader = self.leader().map(|(_, addr)| self.endpoint(&addr));
        match standing.refusal(self.id, leader) {
            Some(refusal) => Err(refusal.into()),
            None => Ok(()),
        }
    }

    /// Whether this node's own configuration lists it.
    fn in_own_configuration(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some()
    }

    /// The URL clients use for a member at `addr` (`HOST:PORT`).
    pub fn endpoint(&self, addr: &str) -> String {
        format!("{}://{addr}", self.connector.scheme())
    }

    /// The current leader's id and `HOST:PORT`, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }
}

/// FAILED_PRECONDITION saying where the leader is (if known), for callers that asked for the
/// leader only.
pub fn not_leader(ctx: &NodeContext) -> tonic::Status {
    NodeError::NotLeader {
        node: ctx.id,
        leader: ctx.leader().map(|(id, addr)| (id, ctx.endpoint(&addr))),
    }
    .into()
}
