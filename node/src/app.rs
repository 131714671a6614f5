//! Wiring: storage, Raft, the gRPC services, bootstrap and shutdown.
//!
//! [`start`] takes its disk and its channel factory and [`Node::serve`] its incoming
//! connections as parameters, so
//! the same node runs on files and TCP in production and on the disk model and turmoil in the
//! simulation.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_client::proto::auth_server::AuthServer;
use cairn_client::proto::cluster_server::ClusterServer;
use cairn_client::proto::groups_server::GroupsServer;
use cairn_client::proto::streams_server::StreamsServer;
use cairn_raft_store::disk::Disk;
use cairn_raft_store::{open_store, AuthView, EventReader, Limits, NodeId, Raft};
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;
use tonic::transport::Server;

use crate::api::{
    AuthService, ClusterService, GroupsService, NodeContext, StoreAccess, StreamsService,
    MAX_CLIENT_MESSAGE_BYTES,
};
use crate::auth::layer::Authenticated;
use crate::auth::Auth;
use crate::feed::{LiveFeed, LIVE_BUFFER_EVENTS};
use crate::leadership::{transfer_leadership, HandoffError};
use crate::metrics::NodeMetrics;
use crate::network::proto::raft_internal_server::RaftInternalServer;
use crate::network::{Connector, NetworkFactory, RaftService, MAX_RAFT_MESSAGE_BYTES};
use crate::repair::Repair;
use crate::timing::{
    ELECTION_TIMEOUT_MAX_MS, ELECTION_TIMEOUT_MIN_MS, HEARTBEAT_INTERVAL_MS,
    RESTART_ELECTION_GRACE_MS,
};
use crate::tls::{require_peer_certificate, MemberHosts};

/// A snapshot is recorded after this many log entries (cheap: snapshots are lazy views)...
pub const SNAPSHOT_EVERY_LOG_ENTRIES: u64 = 5_000;
/// ...and this many entries are kept behind it for followers that lag a little.
pub const LOG_ENTRIES_KEPT_AFTER_SNAPSHOT: u64 = 1_000;
/// Most entries in one AppendEntries message (their bytes are bounded by the log reader).
pub const MAX_ENTRIES_PER_REPLICATION: u64 = 300;

/// How often the server pings a connection that is otherwise quiet, and how long it waits for
/// the answer before dropping it: frees what a vanished client's subscriptions held.
pub const SERVER_KEEPALIVE_INTERVAL_MS: u64 = 5_000;
pub const SERVER_KEEPALIVE_TIMEOUT_MS: u64 = 5_000;

/// When snapshots are taken and how much log stays behind them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSettings {
    pub every_log_entries: u64,
    pub log_entries_kept: u64,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            every_log_entries: SNAPSHOT_EVERY_LOG_ENTRIES,
            log_entries_kept: LOG_ENTRIES_KEPT_AFTER_SNAPSHOT,
        }
    }
}

/// Who this node is and who its peers are.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    pub id: NodeId,
    /// Every member's `HOST:PORT`, this node's included.
    pub peers: BTreeMap<NodeId, String>,
    pub limits: Limits,
    /// The defaults in production; the simulation snapshots far more often, so that its short
    /// runs build, install and roll back to snapshots too.
    pub snapshots: SnapshotSettings,
    /// Refuse Raft calls from connections without a client certificate (mutual TLS between
    /// nodes; see `tls`). Off when the node runs `--insecure`, and in the simulation, whose
    /// network has no TLS.
    pub peers_need_certificates: bool,
    /// The admin secret (`--admin-token-file`): users, tokens and grants are checked on every
    /// public call, and the first admin is bootstrapped from it. `None` (`--insecure`, the
    /// simulation): nothing is checked.
    pub admin_secret: Option<String>,
}

pub fn raft_config(snapshots: SnapshotSettings) -> anyhow::Result<Arc<Config>> {
    let config = Config {
        cluster_name: "cairn".into(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshots.every_log_entries),
        max_in_snapshot_log_to_keep: snapshots.log_entries_kept,
        max_payload_entries: MAX_ENTRIES_PER_REPLICATION,
        // A node that repaired a damaged store comes back with a shorter log than its leader
        // saw it acknowledge (`repair`); without this the leader stops on openraft's
        // reversion check (it panicked in the corruption test). The repair keeps it safe: the
        // node does not vote until it holds again what it may have acknowledged.
        allow_log_reversion: Some(true),
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}

/// A started node: Raft running, the store open, not yet serving.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    /// The store's disk: a snapshot received from the leader is spooled in its scratch space.
    disk: Arc<dyn Disk>,
    /// Whether the store is being repaired from the others (then this node does not vote).
    repair: Arc<Repair>,
    /// Reads this node's applied state directly (what the simulation's checker compares).
    pub reader: EventReader,
    /// This node's applied security state, as its gate reads it (the simulation judges
    /// tokens with it).
    pub auth_view: AuthView,
    /// What this node counts (appends, subscriptions); `/metrics` renders it.
    pub metrics: Arc<NodeMetrics>,
    ctx: Arc<NodeContext>,
    peers_need_certificates: bool,
    /// `--peers`' addresses: hosts a node certificate may name before the membership is known.
    configured_peers: Vec<String>,
}

/// Opens the store, starts Raft and bootstraps the cluster if this node is the one to.
pub async fn start(
    setup: NodeSetup,
    disk: Arc<dyn Disk>,
    connector: Arc<dyn Connector>,
) -> anyhow::Result<Node> {
    let id = setup.id;
    if !setup.peers.contains_key(&id) {
        anyhow::bail!("node {id} is not among the peers {:?}", setup.peers);
    }
    let opening = std::time::Instant::now();
    let store = open_store(disk.clone(), setup.limits)?;
    tracing::info!(
        node = id,
        ms = opening.elapsed().as_millis() as u64,
        "store opened"
    );
    let reader = store.reader.clone();
    let auth_view = store.state_machine.auth_view();
    let reclaimer = store.reclaimer.clone();
    let auth = setup
        .admin_secret
        .is_some()
        .then(|| Auth::new(store.state_machine.auth_view()));
    let erasures = store.erasures.clone();
    let log = store.log.clone();
    let (damage, repair_until) = (store.damage, store.repair_until);
    let raft = Raft::new(
        id,
        raft_config(setup.snapshots)?,
        NetworkFactory::new(connector.clone()),
        store.log,
        store.state_machine,
    )
    .await?;
    let metrics = Arc::new(NodeMetrics::new());
    let repair = Repair::start(
        id,
        &raft,
        disk.clone(),
        &damage,
        repair_until,
        metrics.clone(),
    );
    if raft.is_initialized().await? {
        hold_elections_until_a_leader_is_heard(&raft, id, repair.clone());
    }
    if !repair.is_active() {
        // A node repairing its store waits for the cluster it belongs to: never a new one.
        bootstrap(&setup, &raft).await?;
    }

    let feed = LiveFeed::start(reader.clone(), applied_watch(&raft), LIVE_BUFFER_EVENTS)?;
    let standing = crate::standing::watch(id, raft.clone(), connector.clone());
    let erase_progress = crate::api::erase::EraseProgress::default();
    let ctx = NodeContext::new(
        id,
        raft.clone(),
        StoreAccess {
            reader: reader.clone(),
            reclaimer: reclaimer.clone(),
            disk: disk.clone(),
            auth,
            erasures: erasures.clone(),
            erase_progress: erase_progress.clone(),
        },
        setup.limits,
        connector,
        feed,
        standing,
        metrics,
    );
    crate::api::scavenge::start_reclaimer(reclaimer.clone(), ctx.metrics.clone());
    crate::api::erase::Eraser {
        raft: raft.clone(),
        log,
        erasures,
        reclaimer,
        disk: disk.clone(),
        progress: erase_progress,
    }
    .start();
    if let Some(secret) = setup.admin_secret.clone() {
        crate::api::auth::start_bootstrap(ctx.clone(), secret);
    }
    tracing::info!(node = id, peers = ?setup.peers, "serving");
    Ok(Node {
        id,
        raft,
        disk,
        repair,
        reader,
        auth_view,
        metrics: ctx.metrics.clone(),
        ctx,
        peers_need_certificates: setup.peers_need_certificates,
        configured_peers: setup.peers.values().cloned().collect(),
    })
}

impl Node {
    /// Whether this node is still a member of the cluster, kept up to date (`standing`).
    pub fn standing(&self) -> tokio::sync::watch::Receiver<crate::standing::Standing> {
        self.ctx.standing.clone()
    }

    /// Serves the gRPC services on `incoming` until `shutdown` resolves, then stops Raft.
    pub async fn serve<I, IO, IE>(
        self,
        incoming: I,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()>
    where
        I: Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Node {
            id,
            raft,
            ctx,
            disk,
            repair,
            peers_need_certificates,
            configured_peers,
            ..
        } = self;
        // First the signal, then (if this node leads) the handoff, while the server still runs:
        // the candidate's vote request must reach this node. Then the server stops.
        // Then the replication streams a leader holds open to this node end, or the server
        // would wait for them for ever.
        let handoff_ctx = ctx.clone();
        let (stop_streams, streams_stopped) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            tracing::info!(node = id, "stopping");
            hand_over_if_leader(&handoff_ctx).await;
            stop_streams.send_replace(true);
        };
        let auth = ctx.auth.clone();
        let members = Arc::new(MemberHosts::new(raft.clone(), configured_peers));
        let raft_members = members.clone();
        let streams = StreamsServer::new(StreamsService::new(ctx.clone()))
            .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES);
        let cluster = ClusterServer::new(ClusterService::new(ctx.clone()));
        let users = AuthServer::new(AuthService::new(ctx.clone()));
        let groups = GroupsServer::new(GroupsService::new(
            ctx.clone(),
            crate::groups::Groups::start(ctx.clone()),
        ))
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES);
        let router = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_millis(SERVER_KEEPALIVE_INTERVAL_MS)))
            .http2_keepalive_timeout(Some(Duration::from_millis(SERVER_KEEPALIVE_TIMEOUT_MS)))
            .add_service(InterceptedService::new(
                RaftInternalServer::new(RaftService::new(
                    raft.clone(),
                    disk,
                    streams_stopped,
                    repair,
                ))
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
                move |request: tonic::Request<()>| {
                    if peers_need_certificates {
                        require_peer_certificate(request, &raft_members)
                    } else {
                        Ok(request)
                    }
                },
            ))
            // Probes ask without credentials: health is not behind the gate.
            .add_service(crate::health::grpc_service(
                raft.clone(),
                ctx.standing.clone(),
            ));
        // The public services behind the one gate of `auth::layer` when checks are in force.
        let router = match auth {
            Some(auth) => router
                .add_service(Authenticated::new(streams, auth.clone(), members.clone()))
                .add_service(Authenticated::new(cluster, auth.clone(), members.clone()))
                .add_service(Authenticated::new(groups, auth.clone(), members.clone()))
                .add_service(Authenticated::new(users, auth, members)),
            None => router
                .add_service(streams)
                .add_service(cluster)
                .add_service(groups)
                .add_service(users),
        };
        let served = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        tracing::info!(node = id, "shutting down");
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(node = id, error = %e, "raft did not shut down cleanly");
        }
        served?;
        Ok(())
    }
}

/// See [`RESTART_ELECTION_GRACE_MS`]. Only elections by timeout are held back; a leader's
/// handoff (`TimeoutNow`) still works. A node repairing its store (`repair`) holds them until
/// the repair ends instead.
fn hold_elections_until_a_leader_is_heard(raft: &Raft, id: NodeId, repair: Arc<Repair>) {
    raft.runtime_config().elect(false);
    let raft = raft.clone();
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let heard = tokio::time::timeout(
            Duration::from_millis(RESTART_ELECTION_GRACE_MS),
            // The borrow it returns is a read lock on the metrics: let it go at once.
            async {
                metrics
                    .wait_until(|m| m.current_leader.is_some())
                    .await
                    .is_ok()
            },
        )
        .await;
        if heard != Ok(true) {
            tracing::info!(
                node = id,
                RESTART_ELECTION_GRACE_MS,
                "no leader heard since the restart; elections allowed"
            );
        }
        if !repair.is_active() {
            raft.runtime_config().elect(true);
        }
    });
}

/// On the way out: a leader hands over to a caught-up voter, so that clients see one short
/// election instead of waiting for the others to notice it is gone.
async fn hand_over_if_leader(ctx: &NodeContext) {
    match transfer_leadership(&ctx.raft, ctx.connector.as_ref(), &ctx.gate).await {
        Ok(leader) => tracing::info!(node = ctx.id, new_leader = leader, "handed leadership over"),
        Err(HandoffError::NotLeader(_)) => {}
        Err(e) => tracing::warn!(node = ctx.id, error = %e, "stopping without a handoff"),
    }
}

/// The last applied log index, as a watch that changes whenever the node applies something
/// (what wakes the live feed). It closes when Raft shuts down.
fn applied_watch(raft: &Raft) -> tokio::sync::watch::Receiver<u64> {
    let mut metrics = raft.metrics();
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        while metrics.changed().await.is_ok() {
            let applied = metrics.borrow_watched().last_applied.map_or(0, |l| l.index);
            tx.send_if_modified(|current| std::mem::replace(current, applied) != applied);
        }
    });
    rx
}

/// Static bootstrap: the lowest id initializes an empty cluster with every peer as a voter.
/// A node with any Raft state (a restart) never initializes again.
async fn bootstrap(setup: &NodeSetup, raft: &Raft) -> anyhow::Result<()> {
    let lowest = setup.peers.keys().next().copied();
    if lowest != Some(setup.id) || raft.is_initialized().await? {
        return Ok(());
    }
    let members: BTreeMap<NodeId, BasicNode> = setup
        .peers
        .iter()
        .map(|(&id, addr)| (id, BasicNode { addr: addr.clone() }))
        .collect();
    tracing::info!(node = setup.id, ?members, "initializing a new cluster");
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        // Another start of this node got there first: fine.
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
