//! Receiving Raft messages from peers and handing them to the local openraft instance.

use cairn_raft_store::{NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};
use openraft::error::Fatal;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest};
use openraft::{Raft, ServerState};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::proto::raft_internal_server::RaftInternal;
use super::proto::{
    snapshot_chunk, RaftBytes, SnapshotChunk, TimeoutNowRequest, TimeoutNowResponse,
};
use super::{decode, encode};
use crate::error::NodeError;

/// The `RaftInternal` gRPC service.
pub struct RaftService {
    raft: Raft<TypeConfig>,
}

impl RaftService {
    pub fn new(raft: Raft<TypeConfig>) -> Self {
        RaftService { raft }
    }
}

fn bad_message(e: impl std::fmt::Display) -> NodeError {
    NodeError::UndecodableRaftMessage(e.to_string())
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftBytes>, Status> {
    let payload = encode(value).map_err(|e| NodeError::EncodingReply(e.to_string()))?;
    Ok(Response::new(RaftBytes { payload }))
}

#[tonic::async_trait]
impl RaftInternal for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(&request.into_inner().payload).map_err(bad_message)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc: VoteRequest<NodeId> =
            decode(&request.into_inner().payload).map_err(bad_message)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftBytes>, Status> {
        let mut chunks = request.into_inner();
        let (vote, meta): (Vote, SnapshotMeta) = match chunks.message().await? {
            Some(SnapshotChunk {
                part: Some(snapshot_chunk::Part::Header(header)),
            }) => decode(&header).map_err(bad_message)?,
            _ => {
                return Err(NodeError::MalformedSnapshotStream(
                    "a snapshot stream starts with its header",
                )
                .into())
            }
        };
        let mut data = self
            .raft
            .begin_receiving_snapshot()
            .await
            .map_err(|e| NodeError::RaftBusy(e.to_string()))?;
        while let Some(chunk) = chunks.message().await? {
            match chunk.part {
                Some(snapshot_chunk::Part::Data(bytes)) => data
                    .write_all(&bytes)
                    .await
                    .map_err(|e| NodeError::SpoolingSnapshot(e.to_string()))?,
                _ => {
                    return Err(NodeError::MalformedSnapshotStream(
                        "only data may follow the snapshot header",
                    )
                    .into())
                }
            }
        }
        data.flush()
            .await
            .map_err(|e| NodeError::SpoolingSnapshot(e.to_string()))?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            last_log_id = ?meta.last_log_id,
            "installing a snapshot received from the leader"
        );
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = self
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: data,
                },
            )
            .await;
        reply(&result)
    }

    /// Stands for election at once, if the sender is the leader this node follows in the term
    /// it knows and this node has all of the leader's log: a stray or stale request (the port
    /// is shared with clients) cannot unseat a leader.
    async fn timeout_now(
        &self,
        request: Request<TimeoutNowRequest>,
    ) -> Result<Response<TimeoutNowResponse>, Status> {
        let request = request.into_inner();
        let refused = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let last_log_index = m.last_log_index.unwrap_or(0);
            if m.state != ServerState::Follower {
                Some(format!("node {} is a {:?}, not a follower", m.id, m.state))
            } else if m.current_leader != Some(request.leader_id) || m.current_term != request.term
            {
                Some(format!(
                    "node {} follows {:?} in term {}, not node {} in term {}",
                    m.id, m.current_leader, m.current_term, request.leader_id, request.term
                ))
            } else if last_log_index < request.leader_last_log_index {
                Some(format!(
                    "node {} has log up to {last_log_index}, the leader up to {}",
                    m.id, request.leader_last_log_index
                ))
            } else {
                None
            }
        };
        if let Some(refused) = refused {
            tracing::info!(%refused, "TimeoutNow refused");
            return Ok(Response::new(TimeoutNowResponse {
                started: false,
                refused,
            }));
        }
        tracing::info!(
            from = request.leader_id,
            term = request.term,
            "the leader hands over: standing for election"
        );
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| NodeError::RaftBusy(e.to_string()))?;
        Ok(Response::new(TimeoutNowResponse {
            started: true,
            refused: String::new(),
        }))
    }
}
