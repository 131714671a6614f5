//! `cairn.v1.Streams`: appends through Raft, reads from the applied state.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_client::proto::streams_client::StreamsClient;
use cairn_client::proto::streams_server::Streams;
use cairn_client::{proto, ALL_STREAM};
use cairn_raft_store::consumer_group::{
    validate_name as validate_group_name, GROUP_STREAM_PREFIX, PARKED_STREAM_PREFIX,
};
use cairn_raft_store::limits::validate_query;
use cairn_raft_store::limits::validate_stream_name;
use cairn_raft_store::{
    AppendResult, Direction, IndexName, InvalidInput, MultiAppendResult, NodeId, RecordedEvent,
    StoreError, StreamStatus, DCB_STREAM, READABLE_RESERVED_NAMES,
};
use openraft::async_runtime::WatchReceiver;
use openraft::error::RaftError;
use openraft::ReadPolicy;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert;
use super::deadlines::{APPEND_TIMEOUT_MS, LINEARIZABLE_READ_TIMEOUT_MS, MIN_POSITION_WAIT_MS};
use super::group_commit::GroupError;
use super::lifecycle::{self, Change};
use super::status::{self, invalid, invalid_input};
use super::subscribe::{self, Subscription, Target, DEFAULT_CHECKPOINT_INTERVAL};
use super::{not_leader, NodeContext, MAX_CLIENT_MESSAGE_BYTES};
use crate::auth::{self, Action};
use crate::error::NodeError;

/// Events converted ahead of the gRPC stream per read; gRPC flow control does the rest.
pub const READ_BUFFER_EVENTS: usize = 256;

pub struct StreamsService {
    ctx: Arc<NodeContext>,
}

impl StreamsService {
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        StreamsService { ctx }
    }

    /// Sends the request on to the leader (`call` is the RPC), which will not forward it
    /// again: the caller has set its `leader_only`.
    async fn forward<R, T, F, Fut>(&self, request: R, call: F) -> Result<Response<T>, Status>
    where
        F: FnOnce(StreamsClient<tonic::transport::Channel>, R) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let Some((leader, addr)) = self.ctx.leader() else {
            return Err(NodeError::NoLeaderKnown.into());
        };
        if leader == self.ctx.id {
            return Err(NodeError::LeadershipChanging.into());
        }
        let client = StreamsClient::new(self.ctx.channel(&addr)?)
            .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES);
        let reply = tokio::time::timeout(
            Duration::from_millis(APPEND_TIMEOUT_MS),
            call(client, request),
        )
        .await
        .map_err(|_| NodeError::LeaderTimedOut { leader })??;
        Ok(Response::new(reply.into_inner()))
    }

    /// Waits (boundedly) for a write's verdict through group commit, behind the handoff gate.
    async fn commit<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, GroupError>>,
    ) -> Result<T, Status> {
        // While leadership is handed over nothing new may enter the log; the append waits,
        // then meets the new leader's hint (or, if the handoff failed, is proposed here).
        let _in_flight = self.ctx.gate.enter().await?;
        match tokio::time::timeout(Duration::from_millis(APPEND_TIMEOUT_MS), write).await {
            Ok(Ok(verdict)) => Ok(verdict),
            Err(_) => Err(NodeError::AppendTimedOut {
                timeout_ms: APPEND_TIMEOUT_MS,
            }
            .into()),
            // Leadership moved between the check and the commit: the caller retries (with the
            // same event ids, so safely) and finds the new leader.
            Ok(Err(GroupError::NotLeader)) => Err(not_leader(&self.ctx)),
            Ok(Err(e)) => Err(status::status_in(format_args!("node {}", self.ctx.id), &e)),
        }
    }

    /// The caller's grants cover `action` on every one of `names` (`auth::check`).
    fn allowed<'a, T>(
        &self,
        request: &Request<T>,
        action: Action,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Status> {
        auth::check(
            self.ctx.auth.as_deref(),
            request.extensions(),
            action,
            names,
        )
    }

    /// Whether this node is the leader now, and its term.
    fn leading(&self) -> (bool, u64) {
        let metrics = self.ctx.raft.metrics();
        let metrics = metrics.borrow_watched();
        (
            metrics.current_leader == Some(self.ctx.id),
            metrics.current_term,
        )
    }

    /// The AppendMulti RPC: validated on whichever node receives it (bad input never reaches
    /// another node), forwarded to the leader or proposed there.
    async fn answer_multi_append(
        &self,
        mut request: proto::MultiAppendRequest,
    ) -> Result<Response<proto::MultiAppendResponse>, Status> {
        self.ctx.refuse_unless_member()?;
        let (leading, term) = self.leading();
        if !leading {
            let check = convert::multi_from_proto(request.clone(), 0)?;
            self.ctx
                .limits
                .validate_multi_append(&check)
                .map_err(|e| invalid_input(&e))?;
            if request.leader_only {
                return Err(not_leader(&self.ctx));
            }
            request.leader_only = true;
            return self
                .forward(request, |mut c, r| async move { c.append_multi(r).await })
                .await;
        }
        let span = tracing::info_span!("multi_append", node = self.ctx.id, term);
        async move {
            let multi = convert::multi_from_proto(request, now_unix_ms())?;
            self.ctx
                .limits
                .validate_multi_append(&multi)
                .map_err(|e| invalid_input(&e))?;
            let verdict = self
                .commit(self.ctx.group_commit.multi_append(multi))
                .await?;
            match verdict {
                MultiAppendResult::Written(position) => {
                    Ok(Response::new(convert::multi_success(position, false)))
                }
                MultiAppendResult::AlreadyWritten(position) => {
                    Ok(Response::new(convert::multi_success(position, true)))
                }
                MultiAppendResult::WrongExpectedVersion {
                    stream,
                    expected,
                    actual,
                } => Ok(Response::new(convert::multi_wrong_expected_version(
                    stream, expected, actual,
                ))),
                MultiAppendResult::ConditionFailed { position } => {
                    Ok(Response::new(convert::condition_failed(position)))
                }
                MultiAppendResult::Rejected(rejected) => Err(status::rejection(&rejected)),
                MultiAppendResult::StreamDeleted { stream } => {
                    Err(NodeError::StreamDeleted { stream }.into())
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The leader's path: convert once (moving the event data), validate, propose, and turn
    /// the state machine's verdict into the response.
    async fn propose(
        &self,
        request: proto::AppendRequest,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let append = convert::append_from_proto(request, now_unix_ms())?;
        self.ctx
            .limits
            .validate_append(&append)
            .map_err(|e| invalid_input(&e))?;
        let expected = append.expected;
        let stream = append.stream.clone();
        match self.commit(self.ctx.group_commit.append(append)).await? {
            AppendResult::Written(position) => Ok(Response::new(convert::success(position, false))),
            AppendResult::AlreadyWritten(position) => {
                Ok(Response::new(convert::success(position, true)))
            }
            AppendResult::WrongExpectedVersion { actual, .. } => Ok(Response::new(
                convert::wrong_expected_version(expected, actual),
            )),
            result @ (AppendResult::Rejected(_)
            | AppendResult::StreamDeleted
            | AppendResult::StreamNotFound) => {
                lifecycle::answer_of(result, expected, stream).map(Response::new)
            }
        }
    }

    /// LINEARIZABLE: confirm leadership (and apply) first. A minimum position: wait for it.
    async fn ensure_consistency(
        &self,
        consistency: i32,
        min_position: Option<u64>,
    ) -> Result<(), Status> {
        match proto::ReadConsistency::try_from(consistency) {
            Ok(proto::ReadConsistency::Local) => {}
            Ok(proto::ReadConsistency::Linearizable) => {
                let check = self.ctx.raft.ensure_linearizable(ReadPolicy::ReadIndex);
                match tokio::time::timeout(
                    Duration::from_millis(LINEARIZABLE_READ_TIMEOUT_MS),
                    check,
                )
                .await
                {
                    Ok(Ok(read_log_id)) => {
                        tracing::debug!(
                            node = self.ctx.id,
                            ?read_log_id,
                            "leadership confirmed for a read"
                        );
                    }
                    Ok(Err(RaftError::APIError(_))) => return Err(not_leader(&self.ctx)),
                    Ok(Err(RaftError::Fatal(e))) => return Err(status::status(&e)),
                    Err(_) => return Err(NodeError::LeadershipUnconfirmed.into()),
                }
            }
            Err(_) => {
                return Err(invalid(
                    "consistency",
                    format!("unknown value {consistency}"),
                ))
            }
        }
        if let Some(position) = min_position {
            self.wait_for_position(position).await?;
        }
        Ok(())
    }

    /// Waits until this node has applied `position` (so a read sees the caller's own write).
    async fn wait_for_position(&self, position: u64) -> Result<(), Status> {
        let mut metrics = self.ctx.raft.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(MIN_POSITION_WAIT_MS);
        loop {
            let applied = self
                .ctx
                .reader
                .next_position()
                .map_err(|e| status::status(&e))?;
            if applied > position {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(NodeError::ShuttingDown.into()),
                Err(_) => {
                    return Err(NodeError::PositionNotApplied {
                        node: self.ctx.id,
                        position,
                        timeout_ms: MIN_POSITION_WAIT_MS,
                        applied,
                    }
                    .into())
                }
            }
        }
    }
}

/// What a read or a subscription names.
enum Readable {
    All,
    Index(IndexName),
    Stream,
}

/// A name to read or follow: `$all`, an index (`$ce-`, `$et-`, `$tag-`), or a stream by the
/// store's rules for names, except that blank names may be read (they have no events). Any
/// other `$` name is refused, naming the forms that read something.
fn readable(stream: &str) -> Result<Readable, Status> {
    if stream == ALL_STREAM {
        return Ok(Readable::All);
    }
    if let Some(index) = IndexName::parse(stream) {
        return Ok(Readable::Index(index));
    }
    // A consumer group's state and parked events are streams of their own, readable as such.
    for prefix in [GROUP_STREAM_PREFIX, PARKED_STREAM_PREFIX] {
        if let Some(group) = stream.strip_prefix(prefix) {
            validate_group_name(group).map_err(|e| invalid_input(&e))?;
            return Ok(Readable::Stream);
        }
    }
    match validate_stream_name(stream) {
        Ok(()) | Err(InvalidInput::BlankStreamName) => Ok(Readable::Stream),
        Err(InvalidInput::ReservedStreamName { .. }) => Err(invalid(
            "stream",
            format!(
                "{stream:?} names nothing to read: a name starting with '$' is {READABLE_RESERVED_NAMES}"
            ),
        )),
        Err(e) => Err(invalid_input(&e)),
    }
}

fn direction_from_proto(direction: i32) -> Result<Direction, Status> {
    match proto::Direction::try_from(direction) {
        Ok(proto::Direction::Forwards) => Ok(Direction::Forwards),
        Ok(proto::Direction::Backwards) => Ok(Direction::Backwards),
        Err(_) => Err(invalid("direction", format!("unknown value {direction}"))),
    }
}

/// Where a read starts and how many it returns: from the end is `u64::MAX`, a count of 0 none.
fn read_bounds(from: u64, from_end: bool, count: u64) -> (u64, u64) {
    let from = if from_end { u64::MAX } else { from };
    let count = if count == 0 { u64::MAX } else { count };
    (from, count)
}

type Events = Box<dyn Iterator<Item = Result<RecordedEvent, StoreError>> + Send>;

/// Streams a read's events to the caller, converting ahead by at most `READ_BUFFER_EVENTS`.
fn serve_events(events: Events, node: NodeId) -> Response<ReadStream> {
    let (tx, rx) = mpsc::channel(READ_BUFFER_EVENTS);
    tokio::spawn(async move {
        for item in events {
            let message = item
                .map(|event| proto::ReadResponse {
                    event: Some(convert::recorded_to_proto(event)),
                })
                .map_err(|e| {
                    tracing::error!(node, error = %e, "read failed");
                    status::status_in("reading", &e)
                });
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed {
                break; // the caller went away, or the read failed
            }
        }
    });
    Response::new(Box::pin(ReceiverStream::new(rx)))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type ReadStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::ReadResponse, Status>> + Send>>;
type SubscribeStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::SubscribeResponse, Status>> + Send>>;

impl StreamsService {
    /// The Append RPC, on the node that received it.
    async fn answer_append(
        &self,
        request: proto::AppendRequest,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        self.ctx.refuse_unless_member()?;
        let (leading, term) = self.leading();
        if !leading {
            // Not the leader: validate a copy (bad input never reaches another node), then hand
            // the request on untouched.
            let check = convert::append_from_proto(request.clone(), 0)?;
            self.ctx
                .limits
                .validate_append(&check)
                .map_err(|e| invalid_input(&e))?;
            if request.leader_only {
                return Err(not_leader(&self.ctx));
            }
            let mut request = request;
            request.leader_only = true;
            return self
                .forward(request, |mut c, r| async move { c.append(r).await })
                .await;
        }
        let span =
            tracing::info_span!("append", node = self.ctx.id, term, stream = %request.stream);
        self.propose(request).instrument(span).await
    }
}

#[tonic::async_trait]
impl Streams for StreamsService {
    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        self.allowed(&request, Action::Write, [request.get_ref().stream.as_str()])?;
        let started = tokio::time::Instant::now();
        let events = request.get_ref().events.len();
        let answer = self.answer_append(request.into_inner()).await;
        self.ctx
            .metrics
            .append_answered(events, &answer, started.elapsed());
        answer
    }

    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<proto::ReadRequest>,
    ) -> Result<Response<ReadStream>, Status> {
        self.allowed(&request, Action::Read, [request.get_ref().stream.as_str()])?;
        let request = request.into_inner();
        self.ctx.refuse_unless_member()?;
        let target = readable(&request.stream)?;
        let direction = direction_from_proto(request.direction)?;
        self.ensure_consistency(request.consistency, request.min_position)
            .await?;
        let (from, count) = read_bounds(request.from, request.from_end, request.count);
        let events: Events = if let Readable::All = target {
            Box::new(self.ctx.reader.read_all(from, direction, count))
        } else if let Readable::Index(index) = &target {
            Box::new(self.ctx.reader.read_index(index, from, direction, count))
        } else {
            match self
                .ctx
                .reader
                .stream_status(&request.stream)
                .map_err(|e| status::status(&e))?
            {
                StreamStatus::Exists(_) => {}
                StreamStatus::NotFound => {
                    return Err(NodeError::StreamNotFound {
                        stream: request.stream.clone(),
                    }
                    .into())
                }
                StreamStatus::Tombstoned => {
                    return Err(NodeError::StreamDeleted {
                        stream: request.stream.clone(),
                    }
                    .into())
                }
            }
            Box::new(
                self.ctx
                    .reader
                    .read_stream(&request.stream, from, direction, count),
            )
        };
        Ok(serve_events(events, self.ctx.id))
    }

    async fn append_multi(
        &self,
        request: Request<proto::MultiAppendRequest>,
    ) -> Result<Response<proto::MultiAppendResponse>, Status> {
        {
            let multi = request.get_ref();
            let dcb = (!multi.dcb_events.is_empty()).then_some(DCB_STREAM);
            let names = multi.streams.iter().map(|s| s.stream.as_str());
            self.allowed(&request, Action::Write, names.chain(dcb))?;
            if multi.condition.is_some() {
                // A condition looks at every event matching its query: DCB's whole view.
                self.allowed(&request, Action::Read, [DCB_STREAM])?;
            }
        }
        let started = tokio::time::Instant::now();
        let request = request.into_inner();
        let events = request.dcb_events.len()
            + request
                .streams
                .iter()
                .map(|s| s.events.len())
                .sum::<usize>();
        let answer = self.answer_multi_append(request).await;
        self.ctx
            .metrics
            .multi_append_answered(events, &answer, started.elapsed());
        answer
    }

    type ReadQueryStream = ReadStream;

    async fn read_query(
        &self,
        request: Request<proto::QueryReadRequest>,
    ) -> Result<Response<ReadStream>, Status> {
        // A query reads across every stream: DCB's whole view.
        self.allowed(&request, Action::Read, [DCB_STREAM])?;
        let request = request.into_inner();
        self.ctx.refuse_unless_member()?;
        let query = convert::query_from_proto(request.query);
        validate_query(&query).map_err(|e| invalid_input(&e))?;
        let direction = direction_from_proto(request.direction)?;
        self.ensure_consistency(request.consistency, request.min_position)
            .await?;
        let (from, count) = read_bounds(request.from, request.from_end, request.count);
        let events = self.ctx.reader.read_query(&query, from, direction, count);
        Ok(serve_events(Box::new(events), self.ctx.id))
    }

    type SubscribeStream = SubscribeStream;

    async fn get_stream_metadata(
        &self,
        request: Request<proto::GetStreamMetadataRequest>,
    ) -> Result<Response<proto::GetStreamMetadataResponse>, Status> {
        self.allowed(&request, Action::Read, [request.get_ref().stream.as_str()])?;
        let request = request.into_inner();
        self.ctx.refuse_unless_member()?;
        self.ensure_consistency(request.consistency, request.min_position)
            .await?;
        lifecycle::metadata(&self.ctx.reader, &request.stream).map(Response::new)
    }

    async fn set_stream_metadata(
        &self,
        request: Request<proto::SetStreamMetadataRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        self.allowed(
            &request,
            Action::Delete,
            [request.get_ref().stream.as_str()],
        )?;
        let request = request.into_inner();
        let span = tracing::info_span!("set_stream_metadata", node = self.ctx.id, stream = %request.stream);
        lifecycle::answer(&self.ctx, Change::SetMetadata(request))
            .instrument(span)
            .await
            .map(Response::new)
    }

    async fn delete_stream(
        &self,
        request: Request<proto::DeleteStreamRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        self.allowed(
            &request,
            Action::Delete,
            [request.get_ref().stream.as_str()],
        )?;
        let request = request.into_inner();
        let span = tracing::info_span!("delete_stream", node = self.ctx.id, stream = %request.stream, tombstone = request.tombstone);
        lifecycle::answer(&self.ctx, Change::Delete(request))
            .instrument(span)
            .await
            .map(Response::new)
    }

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        self.allowed(&request, Action::Read, [request.get_ref().stream.as_str()])?;
        let request = request.into_inner();
        self.ctx.refuse_unless_member()?;
        let filter = subscribe::filter_from_proto(request.filter.as_ref())?;
        let target = match (readable(&request.stream)?, filter) {
            (Readable::All, filter) => Target::All(filter),
            (_, Some(_)) => {
                return Err(invalid("filter", "only $all subscriptions take a filter"));
            }
            (Readable::Index(index), None) => Target::Index(index),
            (Readable::Stream, None) => {
                let status = self.ctx.reader.stream_status(&request.stream);
                if status.map_err(|e| status::status(&e))? == StreamStatus::Tombstoned {
                    return Err(NodeError::StreamDeleted {
                        stream: request.stream,
                    }
                    .into());
                }
                Target::Stream(request.stream)
            }
        };
        self.ensure_consistency(request.consistency, request.min_position)
            .await?;
        let checkpoint_interval = match request.checkpoint_interval {
            0 => DEFAULT_CHECKPOINT_INTERVAL,
            n => n,
        };
        let from = subscribe::start(
            &target,
            (!request.from_end).then_some(request.from),
            &self.ctx.reader,
        )?;
        let subscription = Subscription {
            target,
            from,
            checkpoint_interval,
            node_id: self.ctx.id,
        };
        let (tx, rx) = subscribe::channel();
        let active = self.ctx.metrics.clone().subscription_started();
        let (reader, feed) = (self.ctx.reader.clone(), self.ctx.feed.clone());
        tokio::spawn(async move {
            let _active = active;
            subscribe::run(subscription, reader, feed, tx).await
        });
        Ok(Response::new(until_not_member(rx, self.ctx.clone())))
    }
}

/// A subscription's messages until this node stops being a member (`standing`): then the
/// refusal a new subscription would get, and the end, so the client resubscribes on a member.
fn until_not_member(
    rx: mpsc::Receiver<Result<proto::SubscribeResponse, Status>>,
    ctx: Arc<NodeContext>,
) -> SubscribeStream {
    let standing = ctx.standing.clone();
    let messages = futures_util::stream::unfold(Some((rx, standing, ctx)), |state| async move {
        let (mut rx, mut standing, ctx) = state?;
        tokio::select! {
            biased;
            message = rx.recv() => message.map(|m| (m, Some((rx, standing, ctx)))),
            kept = async { standing.wait_for(|s| !s.is_member()).await.is_ok() } => {
                if !kept {
                    // The standing is no longer kept (Raft shut down): serve to the end.
                    let message = rx.recv().await?;
                    return Some((message, Some((rx, standing, ctx))));
                }
                let refusal = ctx
                    .refuse_unless_member()
                    .err()
                    .unwrap_or_else(|| NodeError::NoLongerMember.into());
                tracing::info!(node = ctx.id, "ending a subscription: not a member");
                Some((Err(refusal), None))
            }
        }
    });
    Box::pin(messages)
}
