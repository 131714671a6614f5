//! Receiving Raft messages from peers and handing them to the local openraft instance.
//!
//! A replication stream (`StreamAppend`) is handed to openraft's `Raft::stream_append` as it
//! arrives: openraft submits each request as soon as it is read and answers each, in order,
//! once its entries are durable, so the next request is already being written while the
//! previous one syncs. A request that does not decode ends the stream (the leader opens a new
//! one); what reached openraft before it stands.

use std::pin::Pin;
use std::sync::Arc;

use cairn_raft_store::disk::Disk;
use cairn_raft_store::{
    verify_snapshot, Raft, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote,
};
use futures_util::stream::{self, Stream, StreamExt};
use openraft::async_runtime::WatchReceiver;
use openraft::error::Fatal;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest};
use openraft::ServerState;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::proto::raft_internal_server::RaftInternal;
use super::proto::{
    snapshot_chunk, RaftBytes, SnapshotChunk, TimeoutNowRequest, TimeoutNowResponse,
};
use super::{decode, encode};
use crate::error::NodeError;
use crate::repair::Repair;

/// The `RaftInternal` gRPC service.
pub struct RaftService {
    raft: Raft,
    /// The store's disk: a received snapshot is spooled in its scratch space.
    disk: Arc<dyn Disk>,
    /// Turns true when the node stops: replication streams end then (the leader opens new
    /// ones elsewhere or later), since the server waits for every open call to end.
    stopping: watch::Receiver<bool>,
    /// While the node repairs its store it does not vote or take a handoff (`repair`).
    repair: Arc<Repair>,
}

impl RaftService {
    pub fn new(
        raft: Raft,
        disk: Arc<dyn Disk>,
        stopping: watch::Receiver<bool>,
        repair: Arc<Repair>,
    ) -> Self {
        RaftService {
            raft,
            disk,
            stopping,
            repair,
        }
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
    type StreamAppendStream = Pin<Box<dyn Stream<Item = Result<RaftBytes, Status>> + Send>>;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftBytes>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let requests = stream::unfold(request.into_inner(), |mut incoming| async move {
            let message = match incoming.message().await {
                Ok(Some(message)) => message,
                Ok(None) => return None,
                Err(status) => {
                    tracing::debug!(%status, "replication stream broke");
                    return None;
                }
            };
            match decode::<AppendEntriesRequest<TypeConfig>>(&message.payload) {
                Ok(request) => Some((request, incoming)),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable request ends a replication stream");
                    None
                }
            }
        });
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|&stopping| stopping).await;
        };
        let answers = self
            .raft
            .stream_append(requests)
            .take_until(stopped)
            .map(|answer| {
                encode(&answer)
                    .map(|payload| RaftBytes { payload })
                    .map_err(|e| Status::from(NodeError::EncodingReply(e.to_string())))
            });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn append_entries(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(&request.into_inner().payload).map_err(bad_message)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc: VoteRequest<TypeConfig> =
            decode(&request.into_inner().payload).map_err(bad_message)?;
        if let Some(refused) = self.repair.refusal() {
            // No answer is no vote: the candidate needs a majority without this node.
            return Err(NodeError::Repairing(refused).into());
        }
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
        let mut data = SnapshotData::receiving(self.disk.as_ref())
            .map_err(|e| NodeError::SpoolingSnapshot(e.to_string()))?;
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
        if let Err(e) = verify_snapshot(&mut data).await {
            self.repair.snapshot_damaged(&e.to_string());
            return Err(NodeError::DamagedSnapshot(e.to_string()).into());
        }
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            "installing a snapshot received from the leader"
        );
        let result: Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>> = self
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
            let m = metrics.borrow_watched();
            let last_log_index = m.last_log_index.unwrap_or(0);
            if let Some(refused) = self.repair.refusal() {
                Some(refused)
            } else if m.state != ServerState::Follower {
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
            .elect(false)
            .await
            .map_err(|e| NodeError::RaftBusy(e.to_string()))?;
        Ok(Response::new(TimeoutNowResponse {
            started: true,
            refused: String::new(),
        }))
    }
}
