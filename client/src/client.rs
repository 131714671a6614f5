//! The client: appends that follow the leader and retry safely, reads, cluster status.
//!
//! About 600 lines: every public call of `Client` and the one loop that runs them; the retry
//! rules themselves are in `policy.rs`, the node choice in `endpoints.rs`.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::credentials::{AuthChannel, Credentials};
use crate::endpoints::{ChannelFactory, Endpoints, Node, MEMBERSHIP_REQUEST_TIMEOUT_MS};
use crate::error::{classify, Error, Failure};
use crate::event::{EventData, ExpectedRevision};
use crate::policy::Retries;
use crate::proto;
use crate::proto::cluster_client::ClusterClient;
use crate::proto::streams_client::StreamsClient;
mod auth;
mod groups;
mod lifecycle;

pub use groups::{
    Consumer, ConsumerMessage, GroupEvent, GroupSettings, GroupStart, GroupStrategy, GroupUpdate,
    NackAction, CONSUMER_CLOSE_TIMEOUT_MS, CONSUMER_OUTBOUND_MESSAGES, CONSUMER_RECONNECT_ATTEMPTS,
};
pub use lifecycle::{StreamMetadata, StreamMetadataState};

use crate::read::{
    event_stream, EventStream, NodePreference, ReadConsistency, ReadOptions, ALL_STREAM,
};

/// Where a default client connects: the first node of `cairn dev`.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2113";
/// Default bound on each attempt of a call (and on each wait for the next event of a read).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Default number of attempts of an append; with the backoff (`policy.rs`), about 8 s of trying,
/// enough to ride out a leader election.
pub const DEFAULT_MAX_APPEND_ATTEMPTS: u32 = 20;
/// Largest gRPC message either way, the same as the server's limit: an append beyond it is
/// refused here (`InvalidArgument`) without a round trip, and a read can carry any event the
/// server accepted (tonic's default of 4 MiB would not).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// How a [`Client`] connects and how hard it tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Node URLs (`http://host:port`, or `https://host:port` for a cluster with TLS); reads and
    /// status try them in this order.
    pub endpoints: Vec<String>,
    /// Bound on each attempt; also the connect timeout when below [`crate::CONNECT_TIMEOUT_MS`].
    pub request_timeout: Duration,
    /// Attempts of an append (and of opening a read) before giving up with `Unavailable`.
    pub max_append_attempts: u32,
    /// Ask followers to answer "not the leader, it is there" instead of forwarding appends:
    /// the client then talks to the leader directly, saving a hop on every later append.
    pub leader_only: bool,
    /// PEM of the CA that signed the nodes' certificates, for `https://` endpoints (endpoints
    /// without a scheme are then `https://`). `None`: `https://` endpoints are checked against
    /// the system's roots.
    pub tls_ca: Option<Vec<u8>>,
    /// Sent on every call; `None` for a cluster run `--insecure` (which checks no one).
    pub credentials: Option<Credentials>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: vec![DEFAULT_ENDPOINT.to_owned()],
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
            max_append_attempts: DEFAULT_MAX_APPEND_ATTEMPTS,
            leader_only: true,
            tls_ca: None,
            credentials: None,
        }
    }
}

/// The outcome of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendResult {
    /// Revision of the last event written: the expected revision of the next append.
    pub last_revision: u64,
    /// `$all` position of the last event written: the minimum position for read-your-writes.
    pub last_position: u64,
    /// This was a retry of an append that had already landed; nothing new was written.
    pub already_written: bool,
}

/// The cluster's membership after [`Client::add_node`] or [`Client::remove_node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Voter ids, ascending.
    pub voters: Vec<u64>,
    /// Learner ids (members that replicate but do not vote), ascending.
    pub learners: Vec<u64>,
    /// Nothing had to change: a retry found the change already made.
    pub unchanged: bool,
    /// The leader that made (or found) the change.
    pub leader_id: u64,
}

impl From<proto::MembershipResponse> for Membership {
    fn from(m: proto::MembershipResponse) -> Self {
        let (mut voters, mut learners) = (m.voters, m.learners);
        voters.sort_unstable();
        learners.sort_unstable();
        Membership {
            voters,
            learners,
            unchanged: m.unchanged,
            leader_id: m.leader_id,
        }
    }
}

/// Which channel and which per-attempt bound a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// The request timeout.
    Request,
    /// [`MEMBERSHIP_REQUEST_TIMEOUT_MS`], on a channel of its own.
    Membership,
}

/// A handle on a Cairn cluster. Cheap to clone; clones share channels and the known leader.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Endpoints,
    request_timeout: Duration,
    max_attempts: u32,
    leader_only: bool,
    /// Highest `$all` position this client has written; shared by clones.
    last_position: Mutex<Option<u64>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<String> = self
            .inner
            .endpoints
            .all()
            .iter()
            .map(|node| node.url.clone())
            .collect();
        f.debug_struct("Client")
            .field("endpoints", &endpoints)
            .field(
                "leader",
                &self.inner.endpoints.leader().map(|node| node.url.clone()),
            )
            .field("request_timeout", &self.inner.request_timeout)
            .field("max_append_attempts", &self.inner.max_attempts)
            .field("leader_only", &self.inner.leader_only)
            .finish()
    }
}

pub(crate) fn streams(channel: AuthChannel) -> StreamsClient<AuthChannel> {
    StreamsClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl Client {
    /// A client with default settings for these endpoints. Not async: nothing connects until
    /// the first call, and a node that is down now may be up by then.
    pub fn connect<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Client::with_config(ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..ClientConfig::default()
        })
    }

    pub fn with_config(config: ClientConfig) -> Result<Client, Error> {
        Client::with_channel_factory(config, Endpoint::connect_lazy)
    }

    /// Like [`Client::with_config`], with the caller building each channel (the simulation
    /// connects over its own network this way). Called once per endpoint, on first use.
    pub fn with_channel_factory<F>(config: ClientConfig, factory: F) -> Result<Client, Error>
    where
        F: Fn(&Endpoint) -> Channel + Send + Sync + 'static,
    {
        if config.request_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "request_timeout: must be above zero".to_owned(),
            ));
        }
        if config.max_append_attempts == 0 {
            return Err(Error::InvalidArgument(
                "max_append_attempts: must be at least 1".to_owned(),
            ));
        }
        let factory: Arc<ChannelFactory> = Arc::new(factory);
        let endpoints = Endpoints::new(
            &config.endpoints,
            config.request_timeout,
            config.tls_ca.as_deref(),
            config
                .credentials
                .as_ref()
                .map(Credentials::header)
                .transpose()?,
            factory,
        )?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                request_timeout: config.request_timeout,
                max_attempts: config.max_append_attempts,
                leader_only: config.leader_only,
                last_position: Mutex::new(None),
            }),
        })
    }

    /// Appends `events` atomically if `expected` holds.
    ///
    /// Retries the very same request (same event ids, so the server deduplicates it) on
    /// transport errors, timeouts and "not the leader", following the leader's address when a
    /// follower gives it. A wrong expected version is returned at once, never retried.
    #[tracing::instrument(level = "debug", skip(self, events), fields(events = events.len()))]
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult, Error> {
        let request = proto::AppendRequest {
            stream: stream.to_owned(),
            expected: Some(expected.into()),
            events: events.into_iter().map(Into::into).collect(),
            leader_only: self.inner.leader_only,
        };
        let response = self
            .send_append(stream, request, |mut streams, request| async move {
                streams.append(request).await
            })
            .await?;
        self.append_answer(response, stream, expected)
    }

    /// An `AppendResponse` (of an append or a lifecycle change) as the caller's result.
    fn append_answer(
        &self,
        response: proto::AppendResponse,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, Error> {
        match response.result {
            Some(proto::append_response::Result::Success(success)) => {
                self.record_position(success.last_position);
                Ok(AppendResult {
                    last_revision: success.last_revision,
                    last_position: success.last_position,
                    already_written: success.already_written,
                })
            }
            Some(proto::append_response::Result::WrongExpectedVersion(wrong)) => {
                Err(Error::WrongExpectedVersion {
                    stream: stream.to_owned(),
                    expected,
                    actual: wrong.actual_revision,
                })
            }
            None => Err(Error::Internal(format!(
                "append to {stream:?}: answered without a result"
            ))),
        }
    }

    /// Sends an append request (`call` is the RPC) to the leader with the append's retry
    /// rules: the very same request each time, so the server deduplicates it by event ids.
    /// `label` names what is appended to in errors.
    pub(crate) async fn send_append<R, T, F, Fut>(
        &self,
        label: &str,
        request: R,
        call: F,
    ) -> Result<T, Error>
    where
        R: prost::Message + Clone,
        F: Fn(StreamsClient<AuthChannel>, Request<R>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let size = request.encoded_len();
        if size > MAX_MESSAGE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "events: the append is {size} bytes, at most {MAX_MESSAGE_BYTES}"
            )));
        }
        let timeout = self.inner.request_timeout;
        let start = self.inner.endpoints.leader_or_first();
        let (response, node) = self
            .with_retries(
                "append",
                label,
                start,
                NodePreference::Leader,
                CallKind::Request,
                |channel| {
                    let mut request = Request::new(request.clone());
                    // Lets the server give up too, instead of working for a caller who left.
                    request.set_timeout(timeout);
                    let sent = call(streams(channel), request);
                    async move { Ok(sent.await?.into_inner()) }
                },
            )
            .await?;
        if self.inner.leader_only {
            // Only the leader answers a leader-only append.
            self.inner.endpoints.set_leader(&node);
        }
        Ok(response)
    }

    pub(crate) fn leader_only(&self) -> bool {
        self.inner.leader_only
    }

    /// Reads one stream. An empty stream is `Error::StreamNotFound`.
    pub async fn read_stream(
        &self,
        stream: &str,
        options: ReadOptions,
    ) -> Result<EventStream, Error> {
        self.read(stream, options).await
    }

    /// Reads the global log, `$all`; `ReadFrom::At` takes a position.
    pub async fn read_all(&self, options: ReadOptions) -> Result<EventStream, Error> {
        self.read(ALL_STREAM, options).await
    }

    /// Opens a read, retrying until the first answer (an event, the end, or a final error);
    /// after that nothing is retried, since the caller may already hold events.
    #[tracing::instrument(level = "debug", skip(self))]
    async fn read(&self, stream: &str, options: ReadOptions) -> Result<EventStream, Error> {
        let request = options.to_request(stream);
        self.open_read(stream, &options, move |mut streams| {
            let request = request.clone();
            async move { streams.read(request).await }
        })
        .await
    }

    /// Opens any read RPC (`call`) like [`Client::read`]; `label` names what is read in errors
    /// and in the order check of the events that come back.
    pub(crate) async fn open_read<F, Fut>(
        &self,
        label: &str,
        options: &ReadOptions,
        call: F,
    ) -> Result<EventStream, Error>
    where
        F: Fn(StreamsClient<AuthChannel>) -> Fut,
        Fut: Future<
            Output = Result<tonic::Response<tonic::codec::Streaming<proto::ReadResponse>>, Status>,
        >,
    {
        let linearizable = options.consistency == ReadConsistency::Linearizable;
        // A linearizable read starts at the known leader without asking for it first: a
        // follower's answer names the leader, which costs less than a status round.
        let (start, preference) = if linearizable {
            (
                self.inner.endpoints.leader_or_first(),
                NodePreference::Leader,
            )
        } else {
            let preference = options.node_preference;
            (self.choose(preference, &[]).await, preference)
        };
        let ((messages, first), node) = self
            .with_retries(
                "read",
                label,
                start,
                preference,
                CallKind::Request,
                |channel| {
                    let opened = call(streams(channel));
                    async move {
                        let mut messages = opened.await?.into_inner();
                        let first = messages.message().await?;
                        Ok((messages, first))
                    }
                },
            )
            .await?;
        if linearizable {
            self.inner.endpoints.set_leader(&node);
        }
        Ok(event_stream(
            messages,
            first,
            label,
            options.direction,
            self.inner.request_timeout,
        ))
    }

    /// Adds node `id`, reachable by the other members at `address` (`HOST:PORT`, as in
    /// `--peers`): it joins as a learner, catches up (by snapshot if it starts empty and the
    /// log it needs is gone), then becomes a voter. The node must be running already.
    ///
    /// Goes to the leader and follows leader changes like an append. Each attempt may take up
    /// to [`MEMBERSHIP_REQUEST_TIMEOUT_MS`]; a learner still catching up when the server's
    /// bound runs out is resumed by the next attempt. Bad input (malformed address, an id that
    /// is already a voter, an address taken, another node at `address`) is
    /// `Error::InvalidArgument` and changes nothing; a node that does not answer is
    /// `Error::Unavailable`, not retried. A retry after an attempt whose outcome is unknown
    /// accepts the node already being a voter at `address` (`unchanged`).
    pub async fn add_node(&self, id: u64, address: &str) -> Result<Membership, Error> {
        let request = proto::AddNodeRequest {
            id,
            address: address.trim().to_owned(),
            retry: false,
        };
        self.change_membership(
            "add-node",
            request,
            |r, retry| r.retry = retry,
            |mut c, r| async move { c.add_node(r).await },
        )
        .await
    }

    /// Removes node `id` (a voter or a learner). A leader asked to remove itself first hands
    /// leadership to another voter; the client then asks the new leader, which removes it.
    /// Refuses (`Error::InvalidArgument`, nothing changed) an id that is not a member, the last
    /// voter, or a removal that would leave fewer than three voters (see
    /// [`Client::force_remove_node`]). Retried like [`Client::add_node`]; a retry after an
    /// attempt whose outcome is unknown accepts the node being gone already (`unchanged`).
    pub async fn remove_node(&self, id: u64) -> Result<Membership, Error> {
        self.remove(id, false).await
    }

    /// [`Client::remove_node`], allowing fewer than three voters to remain (never none): a
    /// cluster of two voters stops if either fails.
    pub async fn force_remove_node(&self, id: u64) -> Result<Membership, Error> {
        self.remove(id, true).await
    }

    async fn remove(&self, id: u64, force: bool) -> Result<Membership, Error> {
        let request = proto::RemoveNodeRequest {
            id,
            force,
            retry: false,
        };
        self.change_membership(
            "remove-node",
            request,
            |r, retry| r.retry = retry,
            |mut c, r| async move { c.remove_node(r).await },
        )
        .await
    }

    /// A membership change at the leader, with the append's retry rules. Once an attempt may
    /// have acted (anything but a clean "not the leader"), later attempts are marked as
    /// retries, so the server accepts finding the change made. ABORTED (the server could not
    /// reach the node to add) is final.
    async fn change_membership<R, F, Fut>(
        &self,
        what: &'static str,
        request: R,
        mark_retry: fn(&mut R, bool),
        send: F,
    ) -> Result<Membership, Error>
    where
        R: Clone + Send + 'static,
        F: Fn(ClusterClient<AuthChannel>, Request<R>) -> Fut + Copy,
        Fut: Future<Output = Result<tonic::Response<proto::MembershipResponse>, Status>>,
    {
        let may_have_acted = Arc::new(AtomicBool::new(false));
        let timeout = Duration::from_millis(MEMBERSHIP_REQUEST_TIMEOUT_MS);
        let start = self.inner.endpoints.leader_or_first();
        let (answer, node) = self
            .with_retries(
                what,
                "",
                start,
                NodePreference::Leader,
                CallKind::Membership,
                |channel| {
                    let mut request = request.clone();
                    let retry = may_have_acted.swap(true, Ordering::SeqCst);
                    mark_retry(&mut request, retry);
                    let mut request = Request::new(request);
                    request.set_timeout(timeout);
                    let may_have_acted = may_have_acted.clone();
                    async move {
                        match send(ClusterClient::new(channel), request).await {
                            Ok(response) => Ok(Ok(response.into_inner())),
                            Err(status) if status.code() == Code::Aborted => {
                                Ok(Err(Error::Unavailable(status.message().to_owned())))
                            }
                            Err(status) => {
                                if status.code() == Code::FailedPrecondition {
                                    // Not the leader: nothing happened; this attempt did not act.
                                    may_have_acted.store(retry, Ordering::SeqCst);
                                }
                                Err(status)
                            }
                        }
                    }
                },
            )
            .await?;
        let answer = answer?;
        self.inner.endpoints.set_leader(&node);
        Ok(answer.into())
    }

    /// The cluster as the first node that answers sees it. Also teaches the client the leader.
    pub async fn status(&self) -> Result<proto::StatusResponse, Error> {
        self.status_of(false).await
    }

    /// [`Client::status`] with each member's store measured (`Member.store_bytes`, and the
    /// scavenged bytes it has not given back yet): walks every data directory.
    pub async fn status_with_space(&self) -> Result<proto::StatusResponse, Error> {
        self.status_of(true).await
    }

    /// One scavenge step from `from_position` (the first: 0), on the leader: every member
    /// forgets the groups retention hides in the stretch examined, and gives their bytes back
    /// in the background. Call again from the answer's `next_position` until it is `None`.
    /// Safe to retry: a step again from the same position removes nothing twice.
    pub async fn scavenge_step(
        &self,
        from_position: u64,
    ) -> Result<proto::ScavengeResponse, Error> {
        let request = proto::ScavengeRequest { from_position };
        let start = self.inner.endpoints.leader_or_first();
        let (response, _) = self
            .with_retries(
                "scavenge",
                "$all",
                start,
                NodePreference::Leader,
                CallKind::Request,
                |channel| async move {
                    Ok(ClusterClient::new(channel)
                        .scavenge(request)
                        .await?
                        .into_inner())
                },
            )
            .await?;
        Ok(response)
    }

    /// One erase step (`cairn.v1.Cluster/Erase`) of `stream`, on the leader: call again
    /// while the answer's `more` is set, then wait for every member's
    /// `erase_pending_steps` to be 0 (`cairn stream erase` does both). A retry after a lost
    /// answer is harmless: a step on an erased stream removes nothing more.
    pub async fn erase_step(&self, stream: &str) -> Result<proto::EraseResponse, Error> {
        let request = proto::EraseRequest {
            stream: stream.to_owned(),
        };
        let start = self.inner.endpoints.leader_or_first();
        let (response, _) = self
            .with_retries(
                "erase",
                stream,
                start,
                NodePreference::Leader,
                CallKind::Request,
                |channel| {
                    let request = request.clone();
                    async move {
                        Ok(ClusterClient::new(channel)
                            .erase(request)
                            .await?
                            .into_inner())
                    }
                },
            )
            .await?;
        Ok(response)
    }

    async fn status_of(&self, with_space: bool) -> Result<proto::StatusResponse, Error> {
        let nodes = self.inner.endpoints.all();
        let mut retries = Retries::new(nodes.len() as u32);
        for node in nodes {
            let mut request = Request::new(proto::StatusRequest {
                local_only: false,
                with_space,
            });
            request.set_timeout(self.inner.request_timeout);
            let channel = self.inner.endpoints.channel(&node);
            let mut cluster = ClusterClient::new(channel);
            match tokio::time::timeout(self.inner.request_timeout, cluster.status(request)).await {
                Ok(Ok(response)) => {
                    let status = response.into_inner();
                    if !status.leader_endpoint.is_empty() {
                        self.inner.endpoints.follow_hint(&status.leader_endpoint);
                    }
                    return Ok(status);
                }
                Ok(Err(status)) => match classify(&status, "") {
                    Failure::Fatal(err) => return Err(err),
                    Failure::Retry { cause, .. } => retries.noted(&node, cause),
                },
                Err(_elapsed) => retries.noted(&node, self.timeout_cause()),
            }
            tracing::debug!(endpoint = %node.url, cause = %retries.last_cause(), "status: trying the next endpoint");
        }
        Err(Error::Unavailable(format!(
            "status: no endpoint answered; last: {}",
            retries.last_cause()
        )))
    }

    /// The `$all` position of this client's (or a clone's) latest successful append: pass it
    /// as `ReadOptions::min_position` to read your own writes from any node.
    pub fn last_position(&self) -> Option<u64> {
        *self
            .inner
            .last_position
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record_position(&self, position: u64) {
        let mut last = self
            .inner
            .last_position
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Concurrent appends from clones may finish out of order; keep the highest.
        *last = Some(last.map_or(position, |known| known.max(position)));
    }

    /// Where a call with `preference` goes, avoiding the nodes in `avoid` if another qualifies.
    /// Leader and Follower need the leader: if none is known, a status call learns it (when no
    /// node answers, the choice falls back to any node).
    pub(crate) async fn choose(
        &self,
        preference: NodePreference,
        avoid: &[Arc<Node>],
    ) -> Arc<Node> {
        let endpoints = &self.inner.endpoints;
        if preference != NodePreference::Any && endpoints.leader().is_none() {
            if let Err(err) = self.status().await {
                tracing::debug!(%err, ?preference, "no leader known; any node will do");
            }
        }
        endpoints.pick(preference, avoid)
    }

    pub(crate) fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    fn timeout_cause(&self) -> String {
        format!(
            "no answer within {} ms",
            self.inner.request_timeout.as_millis()
        )
    }

    /// Runs `call` against `start`, then against wherever the failures point, at most
    /// `max_append_attempts` times, each bounded by the request timeout. The rules (leader
    /// hints, pauses, avoided nodes, the last cause) are the call policy's (`policy.rs`); here
    /// the next node without a hint is the next one `preference` allows that has not failed
    /// this round. Returns the value and the node that gave it.
    #[allow(clippy::too_many_arguments)]
    async fn with_retries<T, F, Fut>(
        &self,
        what: &str,
        stream: &str,
        start: Arc<Node>,
        preference: NodePreference,
        kind: CallKind,
        mut call: F,
    ) -> Result<(T, Arc<Node>), Error>
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let endpoints = &self.inner.endpoints;
        let mut retries = Retries::new(self.inner.max_attempts);
        let mut node = start;
        let attempt_timeout = match kind {
            CallKind::Request => self.inner.request_timeout,
            CallKind::Membership => Duration::from_millis(MEMBERSHIP_REQUEST_TIMEOUT_MS),
        };
        for attempt in 1.. {
            let channel = match kind {
                CallKind::Request => endpoints.channel(&node),
                CallKind::Membership => endpoints.membership_channel(&node),
            };
            let outcome = tokio::time::timeout(attempt_timeout, call(channel)).await;
            let (leader, cause) = match outcome {
                Ok(Ok(value)) => return Ok((value, node)),
                Ok(Err(status)) => match classify(&status, stream) {
                    Failure::Fatal(err) => return Err(err),
                    Failure::Retry { leader, cause } => (leader, cause),
                },
                Err(_elapsed) => (
                    None,
                    format!("no answer within {} ms", attempt_timeout.as_millis()),
                ),
            };
            retries.failed(endpoints, &node, cause, leader, true);
            let next = retries
                .take_hinted()
                .unwrap_or_else(|| endpoints.pick(preference, retries.tried()));
            tracing::debug!(what, stream, attempt, cause = %retries.last_cause(), next = %next.url, "retrying");
            if retries.exhausted() {
                break;
            }
            retries.pause().await;
            node = next;
        }
        let of = if stream.is_empty() {
            String::new()
        } else {
            format!(" of {stream:?}")
        };
        Err(retries.give_up(&format!("{what}{of}")))
    }
}
