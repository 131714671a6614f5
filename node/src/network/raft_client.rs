//! Sending Raft messages to peers: openraft's `RaftNetwork` over the `RaftInternal` service.
//!
//! Every call is bounded by openraft's deadline for it (`RPCOption::hard_ttl`). Snapshots are
//! streamed from the (lazy) snapshot data in chunks, without asking for its length.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_raft_store::{NodeId, Snapshot, TypeConfig, Vote};
use futures_util::stream;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use super::proto::raft_internal_client::RaftInternalClient;
use super::proto::{snapshot_chunk, RaftBytes, SnapshotChunk};
use super::{decode, encode, Connector, MAX_RAFT_MESSAGE_BYTES};

/// How long the leader waits before retrying a peer it could not reach (openraft's default is
/// 500 ms). A peer that restarts is then reached within about a heartbeat of coming back, before
/// its own election timeout runs out (see `app::RESTART_ELECTION_GRACE_MS`). A down peer costs a
/// refused connection attempt this often.
pub const UNREACHABLE_RETRY_MS: u64 = 100;
/// Bytes of snapshot data per streamed message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Longest a whole snapshot may take to stream. Generous: a snapshot is the whole store.
pub const SNAPSHOT_SEND_TIMEOUT_MS: u64 = 10 * 60 * 1000;

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// Makes one [`RaftPeer`] per target node.
pub struct NetworkFactory {
    connector: Arc<dyn Connector>,
}

impl NetworkFactory {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        NetworkFactory { connector }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> RaftPeer {
        let client = self
            .connector
            .channel(&node.addr)
            .map(|channel| {
                RaftInternalClient::new(channel)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            })
            .map_err(|e| {
                format!(
                    "cannot make a channel to node {target} at {}: {e}",
                    node.addr
                )
            });
        RaftPeer { target, client }
    }
}

/// The connection to one peer.
pub struct RaftPeer {
    target: NodeId,
    client: Result<RaftInternalClient<Channel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

fn network<E: std::error::Error>(e: impl ToString) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&Message(e.to_string())))
}

/// A connection failure (peer down) is `Unreachable`, which makes openraft back off; anything
/// else is a plain network error.
fn from_status<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, BasicNode, E> {
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&Message(status.to_string())))
    } else {
        network(status)
    }
}

impl RaftPeer {
    fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftInternalClient<Channel>, RPCError<NodeId, BasicNode, E>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&Message(e))))
    }

    /// Sends one encoded request with a deadline, decodes the peer's `Result`.
    async fn unary<Resp, E, F, Fut>(
        &self,
        payload: Vec<u8>,
        ttl: Duration,
        send: F,
    ) -> Result<Resp, RpcError<E>>
    where
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
        F: FnOnce(RaftInternalClient<Channel>, RaftBytes) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftBytes>, tonic::Status>>,
    {
        let client = self.client()?;
        let reply = tokio::time::timeout(ttl, send(client, RaftBytes { payload }))
            .await
            .map_err(|_| {
                network(format!(
                    "no answer from node {} within {ttl:?}",
                    self.target
                ))
            })?
            .map_err(from_status)?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.into_inner().payload).map_err(network)?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(
            UNREACHABLE_RETRY_MS,
        )))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let payload = encode(&rpc).map_err(network)?;
        self.unary(payload, option.hard_ttl(), |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let payload = encode(&rpc).map_err(network)?;
        self.unary(payload, option.hard_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    /// Not used: `full_snapshot` below streams whole snapshots instead of openraft's chunks.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        Err(network(
            "chunked snapshots are not used; snapshots are streamed whole",
        ))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let mut client = self.client::<Fatal<NodeId>>().map_err(into_streaming)?;
        let header =
            encode(&(vote, snapshot.meta.clone())).map_err(|e| into_streaming(network(e)))?;
        let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::new(Mutex::new(None));
        let chunks = snapshot_chunks(header, snapshot.snapshot, read_error.clone());
        let send = async {
            tokio::time::timeout(
                Duration::from_millis(SNAPSHOT_SEND_TIMEOUT_MS),
                client.install_snapshot(chunks),
            )
            .await
        };
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply,
        };
        if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(into_streaming(network(format!(
                "reading the snapshot: {e}"
            ))));
        }
        let reply = reply
            .map_err(|_| into_streaming(network("snapshot send timed out")))?
            .map_err(|s| into_streaming(from_status(s)))?;
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            decode(&reply.into_inner().payload).map_err(|e| into_streaming(network(e)))?;
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn into_streaming(
    e: RPCError<NodeId, BasicNode, Fatal<NodeId>>,
) -> StreamingError<TypeConfig, Fatal<NodeId>> {
    match e {
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::RemoteError(r) => StreamingError::RemoteError(r),
        RPCError::PayloadTooLarge(p) => StreamingError::Network(NetworkError::new(&p)),
    }
}

/// The header, then the snapshot data in chunks read as the stream is consumed (so at most
/// one chunk is in memory). A read error ends the stream early and is left in `error`; the
/// receiver rejects the truncated snapshot.
fn snapshot_chunks(
    header: Vec<u8>,
    data: Box<cairn_raft_store::SnapshotData>,
    error: Arc<Mutex<Option<std::io::Error>>>,
) -> impl futures_util::Stream<Item = SnapshotChunk> + Send + 'static {
    let first = SnapshotChunk {
        part: Some(snapshot_chunk::Part::Header(header)),
    };
    let rest = stream::unfold(Some(data), move |data| {
        let error = error.clone();
        async move {
            let mut data = data?;
            let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
            let mut filled = 0;
            while filled < buf.len() {
                match data.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return None;
                    }
                }
            }
            if filled == 0 {
                return None;
            }
            buf.truncate(filled);
            let chunk = SnapshotChunk {
                part: Some(snapshot_chunk::Part::Data(buf)),
            };
            Some((chunk, Some(data)))
        }
    });
    futures_util::StreamExt::chain(stream::iter([first]), rest)
}
