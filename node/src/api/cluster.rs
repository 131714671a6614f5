//! `cairn.v1.Cluster`: this node's view, and (unless asked not to) each member's own.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::proto;
use cairn_client::proto::cluster_client::ClusterClient;
use cairn_client::proto::cluster_server::Cluster;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::NodeContext;

/// Longest the status call waits for each other member's answer.
pub const STATUS_PEER_TIMEOUT_MS: u64 = 500;

pub struct ClusterService {
    ctx: Arc<NodeContext>,
}

impl ClusterService {
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        ClusterService { ctx }
    }

    fn local(&self) -> Result<proto::StatusResponse, Status> {
        let metrics = self.ctx.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let endpoint_of = |id: u64| {
            membership
                .get_node(&id)
                .map(|n| format!("http://{}", n.addr))
                .unwrap_or_default()
        };
        let role = match metrics.state {
            ServerState::Leader => proto::Role::Leader,
            ServerState::Follower => proto::Role::Follower,
            ServerState::Candidate => proto::Role::Candidate,
            ServerState::Learner => proto::Role::Learner,
            ServerState::Shutdown => proto::Role::Unknown,
        };
        let applied_position = self
            .ctx
            .reader
            .next_position()
            .map_err(|e| Status::internal(e.to_string()))?;
        let members = membership
            .nodes()
            .map(|(&id, node)| {
                if id == self.ctx.id {
                    proto::Member {
                        id,
                        endpoint: format!("http://{}", node.addr),
                        role: role as i32,
                        reachable: true,
                        term: metrics.current_term,
                        last_applied_index: metrics.last_applied.map_or(0, |l| l.index),
                        applied_position,
                    }
                } else {
                    proto::Member {
                        id,
                        endpoint: format!("http://{}", node.addr),
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
    async fn ask(&self, member: &proto::Member) -> Option<proto::Member> {
        let addr = member
            .endpoint
            .strip_prefix("http://")
            .unwrap_or(&member.endpoint);
        let mut client = ClusterClient::new(self.ctx.channel(addr).ok()?);
        let call = client.status(proto::StatusRequest { local_only: true });
        let reply = tokio::time::timeout(Duration::from_millis(STATUS_PEER_TIMEOUT_MS), call)
            .await
            .ok()?
            .ok()?
            .into_inner();
        reply.members.into_iter().find(|m| m.id == member.id)
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let mut status = self.local()?;
        if !request.into_inner().local_only {
            let others: Vec<_> = status
                .members
                .iter()
                .filter(|m| m.id != self.ctx.id)
                .cloned()
                .collect();
            let answers = futures_util::future::join_all(others.iter().map(|m| self.ask(m))).await;
            for answer in answers.into_iter().flatten() {
                if let Some(slot) = status.members.iter_mut().find(|m| m.id == answer.id) {
                    *slot = answer;
                }
            }
        }
        Ok(Response::new(status))
    }
}
