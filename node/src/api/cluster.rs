//! `cairn.v1.Cluster`: this node's view, and (unless asked not to) each member's own; and
//! membership changes (add-node, remove-node), made by the leader.
//!
//! Adding: check the input against the membership and the new node itself (it must answer,
//! with the id it was given, and not belong to another cluster), add it as a learner, wait
//! (boundedly) until it has the log the leader had when the wait began, then make it a voter.
//! A learner left by an earlier attempt (its catch-up outlasted the bound) is resumed.
//! Removing: a voter or a learner; never the last voter, nor below [`MIN_SAFE_VOTERS`] without
//! `force`; a leader asked to remove itself first hands leadership over
//! (`leadership::transfer_leadership`) and points the caller at the new leader.
//! Every check happens before anything changes, one change at a time per node.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_client::proto;
use cairn_client::proto::cluster_client::ClusterClient;
use cairn_client::proto::cluster_server::Cluster;
use cairn_raft_store::NodeId;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Membership, ServerState};
use tonic::{Request, Response, Status};

use super::{not_leader, NodeContext};
use crate::address::check_host_port;
use crate::error::NodeError;
use crate::leadership::transfer_leadership;

/// Longest the status call waits for each other member's answer.
pub const STATUS_PEER_TIMEOUT_MS: u64 = 500;
/// Fewest voters remove-node leaves without `force`: three voters survive losing one.
pub const MIN_SAFE_VOTERS: usize = 3;
/// Longest add-node waits for the new node to answer before changing anything. A node just
/// started on a loaded machine took over a second to answer its first call (a scaling test
/// under load failed at 1 s), and its first connection can fail outright (CI saw an "http2
/// error" from a node that had started listening), so failed calls are retried until then;
/// with the machine loaded by four builds besides, a listening node took over 3 s to answer.
pub const JOINER_PROBE_TIMEOUT_MS: u64 = 10_000;
/// Pause between add-node's calls to a joiner that failed to answer.
pub const JOINER_PROBE_RETRY_MS: u64 = 200;
/// Longest one membership change may take to commit (openraft commits a joint configuration,
/// then the new one). At the limit: UNAVAILABLE; the change may still land, and a retry (the
/// client marks it as one) finds it made.
pub const MEMBERSHIP_CHANGE_TIMEOUT_MS: u64 = 10_000;
/// Longest add-node waits for the new learner to catch up. At the limit: UNAVAILABLE, the node
/// stays a learner (still catching up), and add-node again resumes from there.
pub const LEARNER_CATCH_UP_TIMEOUT_MS: u64 = 30_000;
/// Longest remove-node waits for a removed voter to receive the configuration that demotes it
/// to a learner (so that it stops standing for election). At the limit (it is down, say) it
/// is removed anyway; if it comes back it may stand for election in vain: stop it.
pub const REMOVED_NODE_NOTICE_TIMEOUT_MS: u64 = 2_000;
/// Longest a membership change waits for another one on this node to finish.
pub const MEMBERSHIP_LOCK_WAIT_MS: u64 = 5_000;

pub struct ClusterService {
    ctx: Arc<NodeContext>,
}

/// INVALID_ARGUMENT: a membership request that cannot be done as asked.
fn refused(reason: String) -> Status {
    NodeError::MembershipRefused { reason }.into()
}

impl ClusterService {
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        ClusterService { ctx }
    }

    /// This node's view; with `with_space`, its store measured too.
    fn local(&self, with_space: bool) -> Result<proto::StatusResponse, Status> {
        let metrics = self.ctx.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let endpoint_of = |id: u64| {
            membership
                .get_node(&id)
                .map(|n| self.ctx.endpoint(&n.addr))
                .unwrap_or_default()
        };
        let role = match metrics.state {
            ServerState::Leader => proto::Role::Leader,
            ServerState::Follower => proto::Role::Follower,
            ServerState::Candidate => proto::Role::Candidate,
            ServerState::Learner => proto::Role::Learner,
            ServerState::Shutdown => proto::Role::Unknown,
        };
        let role = if self.ctx.standing.borrow().is_member() {
            role
        } else {
            proto::Role::Removed
        };
        let applied_position = self
            .ctx
            .reader
            .next_position()
            .map_err(|e| super::status::status(&e))?;
        let space = if with_space {
            let (groups, bytes) = super::scavenge::dead(&self.ctx.reclaimer)?;
            let store_bytes = self.ctx.disk.size_on_disk().map_err(|e| {
                super::status::status_in(
                    "measuring the store",
                    &cairn_raft_store::StoreError::from(e),
                )
            })?;
            (store_bytes, groups, bytes)
        } else {
            (0, 0, 0)
        };
        let erase_pending_steps = super::erase::pending(&self.ctx.erasures)?;
        let erase_progress = self.ctx.erase_progress.get();
        let members = membership
            .nodes()
            .map(|(&id, node)| {
                if id == self.ctx.id {
                    proto::Member {
                        id,
                        endpoint: self.ctx.endpoint(&node.addr),
                        role: role as i32,
                        reachable: true,
                        term: metrics.current_term,
                        last_applied_index: metrics.last_applied.map_or(0, |l| l.index),
                        applied_position,
                        store_bytes: space.0,
                        reclaim_pending_groups: space.1,
                        reclaim_pending_bytes: space.2,
                        erase_pending_steps,
                        erase_progress: erase_progress.clone(),
                    }
                } else {
                    proto::Member {
                        id,
                        endpoint: self.ctx.endpoint(&node.addr),
                        role: proto::Role::Unknown as i32,
                        reachable: false,
                        ..Default::default()
                    }
                }
            })
            .collect();
        Ok(proto::StatusResponse {
            node_id: self.ctx.id,
            leader_id: metrics.current_leader,
            leader_endpoint: metrics.current_leader.map(endpoint_of).unwrap_or_default(),
            term: metrics.current_term,
            members,
        })
    }

    /// A member's view of itself, or `None` if it does not answer in time.
    async fn ask(&self, member: &proto::Member, with_space: bool) -> Option<proto::Member> {
        let addr = member
            .endpoint
            .split_once("://")
            .map_or(member.endpoint.as_str(), |(_, addr)| addr);
        let mut client = ClusterClient::new(self.ctx.channel(addr).ok()?);
        let call = client.status(proto::StatusRequest {
            local_only: true,
            with_space,
        });
        let reply = tokio::time::timeout(Duration::from_millis(STATUS_PEER_TIMEOUT_MS), call)
            .await
            .ok()?
            .ok()?
            .into_inner();
        reply.members.into_iter().find(|m| m.id == member.id)
    }
}

fn ids(ids: impl IntoIterator<Item = NodeId>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(",")
    }
}

fn describe(membership: &Membership<NodeId, BasicNode>) -> String {
    format!(
        "voters {}; learners {}",
        ids(membership.voter_ids()),
        ids(membership.learner_ids())
    )
}

async fn bounded<T>(ms: u64, f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(Duration::from_millis(ms), f)
        .await
        .ok()
}

impl ClusterService {
    /// This node's current membership, if it leads; else the not-leader answer with the hint.
    fn leader_membership(&self) -> Result<Membership<NodeId, BasicNode>, Status> {
        let metrics = self.ctx.raft.metrics().borrow_watched().clone();
        if metrics.state != ServerState::Leader || metrics.current_leader != Some(self.ctx.id) {
            return Err(not_leader(&self.ctx));
        }
        Ok(metrics.membership_config.membership().clone())
    }

    /// The membership a change can start from, under `membership_lock`. A joint configuration
    /// found here was left by a leader that lost office between the two steps of a change
    /// (openraft does not finish it): it is completed first, to its second half (voters it
    /// drops stay learners, which a retried remove-node then drops).
    async fn settled_membership(&self) -> Result<Membership<NodeId, BasicNode>, Status> {
        let membership = self.leader_membership()?;
        let Some(goal) = membership
            .get_joint_config()
            .last()
            .filter(|_| membership.get_joint_config().len() > 1)
            .cloned()
        else {
            return Ok(membership);
        };
        tracing::info!(
            node = self.ctx.id,
            ?goal,
            "completing a membership change left half done"
        );
        self.change(ChangeMembers::ReplaceAllVoters(goal), true)
            .await?;
        let membership = self.leader_membership()?;
        if membership.get_joint_config().len() > 1 {
            return Err(NodeError::MembershipChangeInProgress.into());
        }
        Ok(membership)
    }

    fn answer(&self, unchanged: bool) -> proto::MembershipResponse {
        let metrics = self.ctx.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        proto::MembershipResponse {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            unchanged,
            leader_id: self.ctx.id,
        }
    }

    /// Proposes one membership change through the proposal gate, boundedly; the log index of
    /// the configuration it ends with. `retain`: removed voters stay as learners.
    async fn change(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> Result<u64, Status> {
        let _in_flight = self.ctx.gate.enter().await?;
        let what = format!("{change:?}");
        let done = bounded(
            MEMBERSHIP_CHANGE_TIMEOUT_MS,
            self.ctx.raft.change_membership(change, retain),
        )
        .await
        .ok_or(NodeError::MembershipChangeTimedOut {
            change: what,
            timeout_ms: MEMBERSHIP_CHANGE_TIMEOUT_MS,
        })?;
        match done {
            Ok(written) => Ok(written.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(not_leader(&self.ctx))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(e),
            ))) => Err(NodeError::MembershipChangeConflict {
                reason: e.to_string(),
            }
            .into()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(refused(e.to_string()))
            }
            // A new leader truncated the change: whether it took effect is unknown, and the
            // client's retry settles it (see `retry` in the module's doc).
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(e))) => {
                Err(NodeError::MembershipChangeConflict {
                    reason: format!("the change was discarded by a leader change ({e})"),
                }
                .into())
            }
            // No change carries a precondition.
            Err(RaftError::APIError(ClientWriteError::PreconditionFailed(e))) => {
                Err(refused(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(NodeError::CannotServe {
                node: self.ctx.id,
                reason: e.to_string(),
            }
            .into()),
        }
    }

    /// The node at `addr` must answer, be node `id`, and not belong to another cluster.
    async fn probe_joiner(&self, id: NodeId, addr: &str) -> Result<(), Status> {
        let status = self
            .answer_of_joiner(addr)
            .await
            .map_err(|how| NodeError::JoinerSilent {
                id,
                addr: addr.to_owned(),
                how,
            })?;
        if status.node_id != id {
            return Err(refused(format!(
                "{addr} is node {}, not node {id}",
                status.node_id
            )));
        }
        if !status.members.is_empty() && !status.members.iter().any(|m| m.id == self.ctx.id) {
            let theirs = ids(status.members.iter().map(|m| m.id));
            return Err(refused(format!(
                "node {id} at {addr} belongs to another cluster (members {theirs}): start it with an empty data directory"
            )));
        }
        Ok(())
    }

    /// The joiner's own status, asked again after each failure until `JOINER_PROBE_TIMEOUT_MS`;
    /// Err says how the last call failed.
    async fn answer_of_joiner(&self, addr: &str) -> Result<proto::StatusResponse, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(JOINER_PROBE_TIMEOUT_MS);
        loop {
            let mut client = ClusterClient::new(
                self.ctx
                    .channel(addr)
                    .map_err(|s| format!("({})", s.message()))?,
            );
            let call = client.status(proto::StatusRequest {
                local_only: true,
                ..Default::default()
            });
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let failed = match tokio::time::timeout(left, call).await {
                Ok(Ok(reply)) => return Ok(reply.into_inner()),
                Ok(Err(status)) => format!("({})", status.message()),
                Err(_) => format!("within {JOINER_PROBE_TIMEOUT_MS} ms"),
            };
            let retry_at =
                tokio::time::Instant::now() + Duration::from_millis(JOINER_PROBE_RETRY_MS);
            if retry_at >= deadline {
                return Err(failed);
            }
            tokio::time::sleep_until(retry_at).await;
        }
    }

    /// Waits until learner `id` holds the log this leader has now; Err at the bound.
    async fn catch_up(&self, id: NodeId) -> Result<(), Status> {
        let mut metrics = self.ctx.raft.metrics();
        let target = metrics.borrow_watched().last_log_index.unwrap_or(0);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(LEARNER_CATCH_UP_TIMEOUT_MS);
        loop {
            let matched = {
                let m = metrics.borrow_and_update();
                if m.state != ServerState::Leader {
                    return Err(not_leader(&self.ctx));
                }
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|log_id| log_id.index)
            };
            if matched >= Some(target) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(NodeError::ShuttingDown.into()),
                Err(_) => {
                    let had = matched.map_or("nothing".to_owned(), |m| format!("up to {m}"));
                    return Err(NodeError::LearnerCatchingUp {
                        id,
                        timeout_ms: LEARNER_CATCH_UP_TIMEOUT_MS,
                        had,
                        target,
                    }
                    .into());
                }
            }
        }
    }

    /// Waits (at most [`REMOVED_NODE_NOTICE_TIMEOUT_MS`]) until node `id` holds log `index`.
    async fn replicated(&self, id: NodeId, index: u64) -> bool {
        let mut metrics = self.ctx.raft.metrics();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(REMOVED_NODE_NOTICE_TIMEOUT_MS);
        loop {
            let matched = metrics
                .borrow_and_update()
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|log_id| log_id.index);
            if matched >= Some(index) {
                return true;
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    async fn lock_membership(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, Status> {
        bounded(MEMBERSHIP_LOCK_WAIT_MS, self.ctx.membership_lock.lock())
            .await
            .ok_or_else(|| NodeError::MembershipLocked.into())
    }

    async fn add(
        &self,
        request: proto::AddNodeRequest,
    ) -> Result<proto::MembershipResponse, Status> {
        let proto::AddNodeRequest { id, address, retry } = request;
        let addr = address.trim();
        check_host_port("address", addr).map_err(refused)?;
        self.leader_membership()?;
        let _one_change = self.lock_membership().await?;
        let membership = self.settled_membership().await?;
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if let Some(node) = membership.get_node(&id) {
            if voters.contains(&id) {
                if retry && node.addr == addr {
                    return Ok(self.answer(true));
                }
                return Err(refused(format!(
                    "node {id} is already a voter (at {}); nothing changed",
                    node.addr
                )));
            }
            if node.addr != addr {
                return Err(refused(format!(
                    "node {id} is already a learner at {}; remove-node {id} first to move it",
                    node.addr
                )));
            }
        }
        if let Some((other, _)) = membership
            .nodes()
            .find(|(other, node)| **other != id && node.addr == addr)
        {
            return Err(refused(format!(
                "{addr} is the address of node {other}; nothing changed"
            )));
        }
        self.probe_joiner(id, addr).await?;
        if membership.get_node(&id).is_none() {
            tracing::info!(node = self.ctx.id, new = id, addr, "adding a learner");
            let learner = BTreeMap::from([(
                id,
                BasicNode {
                    addr: addr.to_owned(),
                },
            )]);
            self.change(ChangeMembers::AddNodes(learner), false).await?;
        } else {
            tracing::info!(
                node = self.ctx.id,
                new = id,
                addr,
                "resuming a learner's catch-up"
            );
        }
        self.catch_up(id).await?;
        tracing::info!(
            node = self.ctx.id,
            new = id,
            "learner caught up; making it a voter"
        );
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await?;
        let answer = self.answer(false);
        tracing::info!(node = self.ctx.id, added = id, voters = ?answer.voters, "node added");
        Ok(answer)
    }

    async fn remove(
        &self,
        request: proto::RemoveNodeRequest,
    ) -> Result<proto::MembershipResponse, Status> {
        let proto::RemoveNodeRequest { id, force, retry } = request;
        self.leader_membership()?;
        let _one_change = self.lock_membership().await?;
        let membership = self.settled_membership().await?;
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if membership.get_node(&id).is_none() {
            if retry {
                return Ok(self.answer(true));
            }
            return Err(refused(format!(
                "node {id} is not a member ({}); nothing changed",
                describe(&membership)
            )));
        }
        if !voters.contains(&id) {
            tracing::info!(node = self.ctx.id, learner = id, "removing a learner");
            self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await?;
            return Ok(self.answer(false));
        }
        let remaining = voters.len() - 1;
        if remaining == 0 {
            return Err(refused(format!(
                "node {id} is the last voter; a cluster cannot remove its last voter; nothing changed"
            )));
        }
        if remaining < MIN_SAFE_VOTERS && !force {
            return Err(refused(format!(
                "removing node {id} would leave {remaining} voter(s), which cannot survive losing one; at least {MIN_SAFE_VOTERS} stay unless forced (--force); nothing changed"
            )));
        }
        if id == self.ctx.id {
            // The removal is the next leader's job: hand over, then point the caller there.
            tracing::info!(node = id, "asked to remove the leader: handing over first");
            return match transfer_leadership(
                &self.ctx.raft,
                self.ctx.connector.as_ref(),
                &self.ctx.gate,
            )
            .await
            {
                Ok(_) => Err(not_leader(&self.ctx)),
                Err(e) => Err(NodeError::HandoverFailed {
                    id,
                    reason: e.to_string(),
                }
                .into()),
            };
        }
        // A voter that never learns it was removed stands for election again and again (its
        // last configuration still counts it). So it is demoted to a learner first, which the
        // leader keeps replicating to: once it holds that configuration it never stands again.
        // Then it is removed for good and no longer contacted.
        tracing::info!(
            node = self.ctx.id,
            voter = id,
            "removing a voter: demoting it first"
        );
        let demoted = self
            .change(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
            .await?;
        if !self.replicated(id, demoted).await {
            tracing::info!(
                node = self.ctx.id,
                removed = id,
                REMOVED_NODE_NOTICE_TIMEOUT_MS,
                "the removed node did not confirm its demotion (down?)"
            );
        }
        self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await?;
        let answer = self.answer(false);
        tracing::info!(node = self.ctx.id, removed = id, voters = ?answer.voters, "node removed");
        Ok(answer)
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn add_node(
        &self,
        request: Request<proto::AddNodeRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        self.add(request.into_inner()).await.map(Response::new)
    }

    async fn remove_node(
        &self,
        request: Request<proto::RemoveNodeRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        self.remove(request.into_inner()).await.map(Response::new)
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let request = request.into_inner();
        let mut status = self.local(request.with_space)?;
        if !request.local_only {
            let others: Vec<_> = status
                .members
                .iter()
                .filter(|m| m.id != self.ctx.id)
                .cloned()
                .collect();
            let answers = futures_util::future::join_all(
                others.iter().map(|m| self.ask(m, request.with_space)),
            )
            .await;
            for answer in answers.into_iter().flatten() {
                if let Some(slot) = status.members.iter_mut().find(|m| m.id == answer.id) {
                    *slot = answer;
                }
            }
        }
        Ok(Response::new(status))
    }

    async fn scavenge(
        &self,
        request: Request<proto::ScavengeRequest>,
    ) -> Result<Response<proto::ScavengeResponse>, Status> {
        super::scavenge::step(&self.ctx, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn erase(
        &self,
        request: Request<proto::EraseRequest>,
    ) -> Result<Response<proto::EraseResponse>, Status> {
        super::erase::step(&self.ctx, request.into_inner())
            .await
            .map(Response::new)
    }
}
