//! Readiness, one rule for HTTP `/health/ready` and the standard gRPC health service
//! (`grpc.health.v1.Health`): a node is ready when it is a member of the cluster
//! ([`crate::standing`]), knows a leader and has applied its log to within
//! [`READY_MAX_APPLY_LAG_ENTRIES`] of the index it knows to be committed.
//!
//! What the rule cannot see: a follower learns the commit index from its leader, and only up
//! to the entries it has received, so a follower that is far behind the leader but has applied
//! what it received counts as ready. A leader cut off from its quorum keeps calling itself
//! leader until it hears of a newer term (openraft 0.9 did not step down on its own; not
//! re-read in 0.10), so it
//! stays ready; its appends time out with UNAVAILABLE and clients move on.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_client::proto::streams_server::SERVICE_NAME as STREAMS_SERVICE_NAME;
use cairn_raft_store::{NodeId, Raft};
use futures_util::FutureExt;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::standing::Standing;
use crate::timing::RAFT_STATE_TIMEOUT_MS;

/// Most committed-but-not-applied log entries a ready node may have: about 10 ms of apply work
/// for one-event appends at the store's measured ~80k events/s (raft-store/DESIGN.md). More
/// means the node is replaying a backlog, and its local reads would be stale.
pub const READY_MAX_APPLY_LAG_ENTRIES: u64 = 1_000;
/// Least time between two re-evaluations of the gRPC health status (it is re-evaluated when
/// Raft's metrics change, at most this often).
pub const GRPC_HEALTH_REFRESH_MS: u64 = 250;

/// What Raft says about this node, read at one moment.
#[derive(Debug, Clone)]
pub struct RaftStatus {
    pub id: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Last log index covered by this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Last log index purged from this node's log (a follower needing it gets the snapshot).
    pub purged_index: Option<u64>,
    /// On the leader: every member's matched log index (`None`: nothing matched yet).
    pub replication: Option<BTreeMap<NodeId, Option<u64>>>,
    /// Why the status is incomplete (Raft stopped, or did not answer in time).
    pub problem: Option<String>,
    /// Why this node is not a member of the cluster (removed, or not added yet).
    pub not_member: Option<String>,
}

impl RaftStatus {
    pub async fn read(raft: &Raft, standing: &watch::Receiver<Standing>) -> RaftStatus {
        let mut status = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            RaftStatus {
                id: m.id,
                term: m.current_term,
                leader: m.current_leader,
                last_log_index: m.last_log_index,
                committed_index: None,
                applied_index: m.last_applied.map(|l| l.index),
                snapshot_index: m.snapshot.map(|l| l.index),
                purged_index: m.purged.map(|l| l.index),
                replication: m.replication.as_ref().map(|r| {
                    r.iter()
                        .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                        .collect()
                }),
                problem: m
                    .running_state
                    .as_ref()
                    .err()
                    .map(|e| format!("raft has stopped: {e}")),
                not_member: standing.borrow().reason(m.id),
            }
        };
        // The commit index is not among openraft's metrics: ask the core.
        let committed = raft.with_raft_state(|st| st.local_committed().map(|l| l.index));
        match tokio::time::timeout(Duration::from_millis(RAFT_STATE_TIMEOUT_MS), committed).await {
            Ok(Ok(committed)) => status.committed_index = committed,
            Ok(Err(e)) => status.problem = Some(format!("raft has stopped: {e}")),
            Err(_) => {
                status.problem = Some(format!(
                    "raft did not report its commit index within {RAFT_STATE_TIMEOUT_MS} ms"
                ))
            }
        }
        status
    }

    /// `Ok(summary)` when the node is ready, else `Err(reason)`; both one line.
    pub fn readiness(&self) -> Result<String, String> {
        if let Some(problem) = &self.problem {
            return Err(problem.clone());
        }
        if let Some(reason) = &self.not_member {
            return Err(reason.clone());
        }
        let Some(leader) = self.leader else {
            return Err(format!("node {} knows no leader", self.id));
        };
        let applied = self.applied_index.unwrap_or(0);
        let committed = self.committed_index.unwrap_or(0);
        // The two are read at slightly different moments: applied may be ahead.
        let behind = committed.saturating_sub(applied);
        if behind > READY_MAX_APPLY_LAG_ENTRIES {
            return Err(format!(
                "node {} has applied index {applied}, {behind} entries behind the committed index {committed} (at most {READY_MAX_APPLY_LAG_ENTRIES})",
                self.id
            ));
        }
        Ok(format!(
            "node {} is ready: leader node {leader}, term {}, applied index {applied}, committed index {committed}",
            self.id, self.term
        ))
    }

    /// On the leader: log entries each follower (and learner) still lacks.
    pub fn replication_lag(&self) -> Vec<(NodeId, u64)> {
        let Some(replication) = &self.replication else {
            return Vec::new();
        };
        let entries = self.last_log_index.map_or(0, |last| last + 1);
        replication
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, matched)| {
                let have = matched.map_or(0, |m| m + 1);
                (*id, entries.saturating_sub(have))
            })
            .collect()
    }
}

/// The standard gRPC health service for this node, kept up to date by a task that follows
/// Raft and this node's standing: SERVING when [`RaftStatus::readiness`] says ready,
/// NOT_SERVING otherwise, for the whole server (`""`) and for `cairn.v1.Streams`. The task
/// ends when Raft shuts down, leaving NOT_SERVING.
pub fn grpc_service(
    raft: Raft,
    standing: watch::Receiver<Standing>,
) -> HealthServer<HealthService> {
    let reporter = HealthReporter::new();
    // Not serving until the first check says otherwise (the reporter starts with SERVING).
    // The reporter's lock is uncontended here, so this completes in its first poll.
    let set_now = set_status(&reporter, ServingStatus::NotServing).now_or_never();
    debug_assert!(set_now.is_some(), "a new health reporter's lock is free");
    tokio::spawn(follow_raft(reporter.clone(), raft, standing));
    HealthServer::new(HealthService::from_health_reporter(reporter))
}

async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    for service in ["", STREAMS_SERVICE_NAME] {
        reporter.set_service_status(service, status).await;
    }
}

async fn follow_raft(
    reporter: HealthReporter,
    raft: Raft,
    mut standing: watch::Receiver<Standing>,
) {
    let mut metrics = raft.metrics();
    let mut serving = None;
    loop {
        let ready = RaftStatus::read(&raft, &standing).await.readiness().is_ok();
        if serving != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_status(&reporter, status).await;
            serving = Some(ready);
        }
        tokio::time::sleep(Duration::from_millis(GRPC_HEALTH_REFRESH_MS)).await;
        // A removed node's Raft metrics may never change again: its standing wakes it too.
        let woken = tokio::select! {
            changed = metrics.changed() => changed.is_ok(),
            changed = standing.changed() => changed.is_ok(),
        };
        if !woken {
            break; // Raft shut down
        }
    }
    set_status(&reporter, ServingStatus::NotServing).await;
}
