//! Sending Raft messages to peers: openraft's `RaftNetworkV2` over the `RaftInternal` service.
//!
//! Replication is pipelined (`stream_append`): one bidirectional gRPC stream per replication
//! session, on which the leader sends the next AppendEntries while earlier ones are still being
//! made durable on the follower, at most [`MAX_APPENDS_IN_FLIGHT`] unanswered. Every answer is
//! bounded by openraft's deadline (`RPCOption::hard_ttl`), counted from when its request was
//! sent; so is every unary call. Snapshots are streamed from the (lazy) snapshot data in
//! chunks, without asking for its length.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_raft_store::{NodeId, Snapshot, TypeConfig, Vote};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetworkV2};
use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
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
/// AppendEntries requests sent to one follower and not yet answered. At the limit the leader's
/// next request waits for an answer; meanwhile new entries gather and go in that next request
/// (openraft reads the log when the transport asks for a request), so the limit costs no
/// entries, only batching. Two already overlap the follower's fdatasync of one request with
/// the sending of the next; a request is at most `MAX_LOG_BYTES_PER_READ` (4 MiB), so a
/// follower's stream holds at most 16 MiB on the leader.
pub const MAX_APPENDS_IN_FLIGHT: usize = 4;

type RpcError = RPCError<TypeConfig>;

/// Makes one [`RaftPeer`] per target node (openraft asks for one per replication stream and
/// one per snapshot transfer).
pub struct NetworkFactory {
    connector: Arc<dyn Connector>,
    /// Per target: counts the snapshots this node started sending it (see [`SnapshotsStarted`]).
    snapshots_started: HashMap<NodeId, SnapshotsStarted>,
}

impl NetworkFactory {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        NetworkFactory {
            connector,
            snapshots_started: HashMap::new(),
        }
    }
}

/// Counts the snapshots sent to one target, so that starting one ends the log replication
/// stream to that target. openraft 0.10.0-alpha.37 sends a snapshot from a task of its own
/// and keeps the pipelined log stream to the same follower running: that stream, made
/// obsolete by the snapshot, goes on reading the log after the follower's old match while the
/// leader purges it (the purge waits only for the replication openraft believes in flight,
/// the snapshot). Ended with an error, openraft drops the stream and replicates again from
/// what the snapshot leaves. The log reader also never hands out entries after a hole
/// (`LogStore::limited_get_log_entries`), for the moments before the stream ends.
type SnapshotsStarted = Arc<watch::Sender<u64>>;

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
        let snapshots_started = self
            .snapshots_started
            .entry(target)
            .or_insert_with(|| Arc::new(watch::Sender::new(0)))
            .clone();
        RaftPeer {
            target,
            client,
            snapshots_started,
        }
    }
}

/// The connection to one peer.
pub struct RaftPeer {
    target: NodeId,
    client: Result<RaftInternalClient<Channel>, String>,
    snapshots_started: SnapshotsStarted,
}

fn network(e: impl ToString) -> RpcError {
    RPCError::Network(NetworkError::from_string(e.to_string()))
}

/// A connection failure (peer down) is `Unreachable`, which makes openraft back off; anything
/// else is a plain network error.
fn from_status(status: tonic::Status) -> RpcError {
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::from_string(status.to_string()))
    } else {
        network(status)
    }
}

/// The peer's Raft has stopped: to this node it is as good as down.
fn peer_stopped(target: NodeId, fatal: Fatal<TypeConfig>) -> RpcError {
    RPCError::Unreachable(Unreachable::from_string(format!(
        "node {target}'s raft has stopped: {fatal}"
    )))
}

impl RaftPeer {
    fn client(&self) -> Result<RaftInternalClient<Channel>, RpcError> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    fn timeout(&self, action: RPCTypes, ttl: Duration) -> RpcError {
        RPCError::Timeout(Timeout {
            action,
            id: self.target,
            target: self.target,
            timeout: ttl,
        })
    }

    /// Sends one encoded request with a deadline, decodes the peer's `Result`.
    async fn unary<Resp, F, Fut>(
        &self,
        action: RPCTypes,
        payload: Vec<u8>,
        ttl: Duration,
        send: F,
    ) -> Result<Resp, RpcError>
    where
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftInternalClient<Channel>, RaftBytes) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftBytes>, tonic::Status>>,
    {
        let client = self.client()?;
        let reply = tokio::time::timeout(ttl, send(client, RaftBytes { payload }))
            .await
            .map_err(|_| self.timeout(action, ttl))?
            .map_err(from_status)?;
        let result: Result<Resp, RaftError<TypeConfig>> =
            decode(&reply.into_inner().payload).map_err(network)?;
        result.map_err(|e| match e {
            RaftError::Fatal(fatal) => peer_stopped(self.target, fatal),
            RaftError::APIError(never) => match never {},
        })
    }
}

/// What the sending half of a replication stream shares with the answering half.
struct InFlight {
    /// Free slots: a request is taken from openraft only with one in hand.
    slots: Semaphore,
    /// When each unanswered request was sent, oldest first: the answer deadline runs from it.
    sent_at: Mutex<VecDeque<Instant>>,
    /// Woken when a request is sent, so a wait for answers starts its deadline.
    sent: Notify,
    /// Why the sending half stopped early (a request that would not encode).
    failed: Mutex<Option<String>>,
}

impl InFlight {
    fn oldest(&self) -> Option<Instant> {
        self.sent_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .copied()
    }

    fn answered(&self) {
        self.sent_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        self.slots.add_permits(1);
    }
}

/// openraft's requests, encoded, each taken only when a slot is free (see
/// [`MAX_APPENDS_IN_FLIGHT`]).
fn outgoing<S>(input: S, in_flight: Arc<InFlight>) -> impl Stream<Item = RaftBytes> + Send
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    stream::unfold(input, move |mut input| {
        let in_flight = in_flight.clone();
        async move {
            // A slot is given back by `answered`, so the permit itself is not kept.
            in_flight.slots.acquire().await.ok()?.forget();
            let request = input.next().await?;
            match encode(&request) {
                Ok(payload) => {
                    in_flight
                        .sent_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(Instant::now());
                    in_flight.sent.notify_one();
                    Some((RaftBytes { payload }, input))
                }
                Err(e) => {
                    *in_flight.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("encoding an AppendEntries request: {e}"));
                    in_flight.sent.notify_one();
                    None
                }
            }
        }
    })
}

/// The follower's answers, in order. Ends after the first error (openraft then starts a new
/// stream), fails with a timeout when the oldest unanswered request waited longer than `ttl`,
/// and with an error when a snapshot to the same peer starts (see [`SnapshotsStarted`]).
fn answers(
    peer: NodeId,
    replies: tonic::Streaming<RaftBytes>,
    in_flight: Arc<InFlight>,
    snapshots_started: watch::Receiver<u64>,
    ttl: Duration,
) -> impl Stream<Item = Result<StreamAppendResult<TypeConfig>, RpcError>> + Send {
    let timeout = move || {
        RPCError::Timeout(Timeout {
            action: RPCTypes::AppendEntries,
            id: peer,
            target: peer,
            timeout: ttl,
        })
    };
    stream::unfold(Some((replies, snapshots_started)), move |state| {
        let in_flight = in_flight.clone();
        async move {
            let (mut replies, mut snapshots_started) = state?;
            let reply = loop {
                if let Some(failed) = in_flight
                    .failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                {
                    return Some((Err(network(failed)), None));
                }
                let deadline = in_flight.oldest().map(|sent| sent + ttl);
                tokio::select! {
                    reply = replies.message() => break reply,
                    _ = in_flight.sent.notified() => continue,
                    Ok(()) = snapshots_started.changed() => {
                        return Some((Err(network(format!(
                            "a snapshot is being sent to node {peer}: this log stream is obsolete"
                        ))), None));
                    }
                    _ = async {
                        match deadline {
                            Some(deadline) => tokio::time::sleep_until(deadline).await,
                            None => std::future::pending().await,
                        }
                    } => return Some((Err(timeout()), None)),
                }
            };
            let item = match reply {
                Ok(Some(reply)) => {
                    in_flight.answered();
                    match decode::<Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>>>(
                        &reply.payload,
                    ) {
                        Ok(Ok(result)) => Ok(result),
                        Ok(Err(fatal)) => Err(peer_stopped(peer, fatal)),
                        Err(e) => Err(network(format!("undecodable answer: {e}"))),
                    }
                }
                // The follower closed the stream: whatever is unanswered is sent again.
                Ok(None) => return None,
                Err(status) => Err(from_status(status)),
            };
            let go_on = matches!(item, Ok(Ok(_)));
            Some((item, go_on.then_some((replies, snapshots_started))))
        }
    })
}

impl RaftNetworkV2<TypeConfig> for RaftPeer {
    type SnapshotData = cairn_raft_store::SnapshotData;

    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new(std::iter::repeat(Duration::from_millis(
            UNREACHABLE_RETRY_MS,
        ))))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        let payload = encode(&rpc).map_err(network)?;
        self.unary(
            RPCTypes::AppendEntries,
            payload,
            option.hard_ttl(),
            |mut c, r| async move { c.append_entries(r).await },
        )
        .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcError>>, RpcError>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let mut input = input;
            let mut client = self.client()?;
            let mut snapshots_started = self.snapshots_started.subscribe();
            snapshots_started.borrow_and_update();
            // Wait for the first request before connecting: openraft sleeps its backoff in
            // producing a request, so a peer that refuses connections is retried at that pace
            // rather than in a tight loop.
            let Some(first) = input.next().await else {
                return Ok(stream::empty().boxed());
            };
            let input = stream::iter([first]).chain(input);
            let ttl = option.hard_ttl();
            let in_flight = Arc::new(InFlight {
                slots: Semaphore::new(MAX_APPENDS_IN_FLIGHT),
                sent_at: Mutex::new(VecDeque::with_capacity(MAX_APPENDS_IN_FLIGHT)),
                sent: Notify::new(),
                failed: Mutex::new(None),
            });
            let requests = outgoing(input, in_flight.clone());
            let replies = tokio::time::timeout(ttl, client.stream_append(requests))
                .await
                .map_err(|_| self.timeout(RPCTypes::AppendEntries, ttl))?
                .map_err(from_status)?
                .into_inner();
            Ok(answers(self.target, replies, in_flight, snapshots_started, ttl).boxed())
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let payload = encode(&rpc).map_err(network)?;
        self.unary(
            RPCTypes::Vote,
            payload,
            option.hard_ttl(),
            |mut c, r| async move { c.vote(r).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client().map_err(into_streaming)?;
        self.snapshots_started.send_modify(|started| *started += 1);
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
        let result: Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>> =
            decode(&reply.into_inner().payload).map_err(|e| into_streaming(network(e)))?;
        result.map_err(|fatal| into_streaming(peer_stopped(self.target, fatal)))
    }
}

fn into_streaming(e: RpcError) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::RemoteError(r) => match r.source {},
    }
}

/// The header, then the snapshot data in chunks read as the stream is consumed (so at most
/// one chunk is in memory). A read error ends the stream early and is left in `error`; the
/// receiver rejects the truncated snapshot.
fn snapshot_chunks(
    header: Vec<u8>,
    data: cairn_raft_store::SnapshotData,
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
    stream::iter([first]).chain(rest)
}
