//! The client against scripted in-process nodes: leader following, safe retries, reads,
//! subscriptions (resubscribing, guarding against duplicates and gaps, node preference).
//! The real server is tested elsewhere; these pin down what the client does with each answer.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::proto::cluster_server::{Cluster, ClusterServer};
use cairn_client::proto::streams_server::{Streams, StreamsServer};
use cairn_client::proto::{self, append_response, subscribe_response};
use cairn_client::{
    Client, ClientConfig, Error, EventData, ExpectedRevision, NodePreference, ReadFrom,
    ReadOptions, SubscribeOptions, Subscription, SubscriptionFilter, SubscriptionMessage,
    LEADER_METADATA_KEY, MAX_RESUBSCRIBE_ATTEMPTS,
};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

type AppendScript = Box<dyn Fn(usize) -> Result<proto::AppendResponse, Status> + Send + Sync>;
type ReadScript =
    Box<dyn Fn(usize) -> Result<Vec<Result<proto::ReadResponse, Status>>, Status> + Send + Sync>;
type SubscribeItem = Result<proto::SubscribeResponse, Status>;
type SubscribeScript =
    Box<dyn Fn(usize, &proto::SubscribeRequest) -> Result<Served, Status> + Send + Sync>;
type SubscribeStream = Pin<Box<dyn tokio_stream::Stream<Item = SubscribeItem> + Send>>;
type MembershipScript =
    Box<dyn Fn(usize) -> Result<proto::MembershipResponse, Status> + Send + Sync>;

/// A membership call as a fake node received it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MembershipCall {
    Add {
        id: u64,
        address: String,
        retry: bool,
    },
    Remove {
        id: u64,
        force: bool,
        retry: bool,
    },
}

/// What a fake node sends on a subscription: these items, then it either stays open (live and
/// idle, as a real node waits for the next event) or ends the stream.
struct Served {
    items: Vec<SubscribeItem>,
    stay_open: bool,
}

/// Sends `items` and stays open.
fn live(items: Vec<SubscribeItem>) -> Result<Served, Status> {
    Ok(Served {
        items,
        stay_open: true,
    })
}

/// Sends `items` and ends the stream (an error item ends it with that status).
fn ends(items: Vec<SubscribeItem>) -> Result<Served, Status> {
    Ok(Served {
        items,
        stay_open: false,
    })
}

/// A node whose answer to the n-th call (0-based) is scripted.
struct Fake {
    append: AppendScript,
    read: ReadScript,
    subscribe: SubscribeScript,
    membership: MembershipScript,
    membership_calls: Mutex<Vec<MembershipCall>>,
    appends: Mutex<Vec<proto::AppendRequest>>,
    /// Deletes are answered by the append script too (they share its answer type).
    deletes: Mutex<Vec<proto::DeleteStreamRequest>>,
    reads: AtomicUsize,
    subscribes: Mutex<Vec<proto::SubscribeRequest>>,
    statuses: AtomicUsize,
    /// What status reports as the leader's endpoint (empty: none known).
    leader_endpoint: Mutex<String>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            append: Box::new(|_| Err(Status::unimplemented("no append script"))),
            read: Box::new(|_| Err(Status::unimplemented("no read script"))),
            subscribe: Box::new(|_, _| Err(Status::unimplemented("no subscribe script"))),
            membership: Box::new(|_| Err(Status::unimplemented("no membership script"))),
            membership_calls: Mutex::new(Vec::new()),
            appends: Mutex::new(Vec::new()),
            deletes: Mutex::new(Vec::new()),
            reads: AtomicUsize::new(0),
            subscribes: Mutex::new(Vec::new()),
            statuses: AtomicUsize::new(0),
            leader_endpoint: Mutex::new(String::new()),
        }
    }

    fn on_subscribe(
        self,
        script: impl Fn(usize, &proto::SubscribeRequest) -> Result<Served, Status>
            + Send
            + Sync
            + 'static,
    ) -> Fake {
        Fake {
            subscribe: Box::new(script),
            ..self
        }
    }

    fn subscribes(&self) -> Vec<proto::SubscribeRequest> {
        self.subscribes.lock().unwrap().clone()
    }

    fn report_leader(&self, url: &str) {
        *self.leader_endpoint.lock().unwrap() = url.to_owned();
    }

    fn on_append(
        self,
        script: impl Fn(usize) -> Result<proto::AppendResponse, Status> + Send + Sync + 'static,
    ) -> Fake {
        Fake {
            append: Box::new(script),
            ..self
        }
    }

    fn on_read(
        self,
        script: impl Fn(usize) -> Result<Vec<Result<proto::ReadResponse, Status>>, Status>
            + Send
            + Sync
            + 'static,
    ) -> Fake {
        Fake {
            read: Box::new(script),
            ..self
        }
    }

    fn appends(&self) -> Vec<proto::AppendRequest> {
        self.appends.lock().unwrap().clone()
    }

    fn on_membership(
        self,
        script: impl Fn(usize) -> Result<proto::MembershipResponse, Status> + Send + Sync + 'static,
    ) -> Fake {
        Fake {
            membership: Box::new(script),
            ..self
        }
    }

    fn membership_calls(&self) -> Vec<MembershipCall> {
        self.membership_calls.lock().unwrap().clone()
    }

    fn membership_call(
        &self,
        call: MembershipCall,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        let n = {
            let mut calls = self.membership_calls.lock().unwrap();
            calls.push(call);
            calls.len() - 1
        };
        (self.membership)(n).map(Response::new)
    }
}

#[tonic::async_trait]
impl Streams for Fake {
    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let n = {
            let mut appends = self.appends.lock().unwrap();
            appends.push(request.into_inner());
            appends.len() - 1
        };
        (self.append)(n).map(Response::new)
    }

    async fn delete_stream(
        &self,
        request: Request<proto::DeleteStreamRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let n = {
            let mut deletes = self.deletes.lock().unwrap();
            deletes.push(request.into_inner());
            deletes.len() - 1
        };
        (self.append)(n).map(Response::new)
    }

    async fn set_stream_metadata(
        &self,
        _request: Request<proto::SetStreamMetadataRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn get_stream_metadata(
        &self,
        _request: Request<proto::GetStreamMetadataRequest>,
    ) -> Result<Response<proto::GetStreamMetadataResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    type ReadStream = tokio_stream::Iter<std::vec::IntoIter<Result<proto::ReadResponse, Status>>>;

    async fn read(
        &self,
        _request: Request<proto::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        (self.read)(n).map(|items| Response::new(tokio_stream::iter(items)))
    }

    /// Not scripted: these tests are about the retry loop, which multi-stream appends share
    /// with `append` (`send_append`).
    async fn append_multi(
        &self,
        _request: Request<proto::MultiAppendRequest>,
    ) -> Result<Response<proto::MultiAppendResponse>, Status> {
        Err(Status::unimplemented("the fake nodes script Append only"))
    }

    type ReadQueryStream = Self::ReadStream;

    /// Answered by the read script: query reads share the read's opening and retries.
    async fn read_query(
        &self,
        _request: Request<proto::QueryReadRequest>,
    ) -> Result<Response<Self::ReadQueryStream>, Status> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        (self.read)(n).map(|items| Response::new(tokio_stream::iter(items)))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let n = {
            let mut subscribes = self.subscribes.lock().unwrap();
            subscribes.push(request.clone());
            subscribes.len() - 1
        };
        let served = (self.subscribe)(n, &request)?;
        let tail: SubscribeStream = if served.stay_open {
            Box::pin(tokio_stream::pending())
        } else {
            Box::pin(tokio_stream::empty())
        };
        let stream: SubscribeStream = Box::pin(tokio_stream::iter(served.items).chain(tail));
        Ok(Response::new(stream))
    }
}

#[tonic::async_trait]
impl Cluster for Fake {
    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        self.statuses.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(proto::StatusResponse {
            node_id: 1,
            leader_endpoint: self.leader_endpoint.lock().unwrap().clone(),
            ..Default::default()
        }))
    }

    async fn add_node(
        &self,
        request: Request<proto::AddNodeRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        let r = request.into_inner();
        self.membership_call(MembershipCall::Add {
            id: r.id,
            address: r.address,
            retry: r.retry,
        })
    }

    async fn remove_node(
        &self,
        request: Request<proto::RemoveNodeRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        let r = request.into_inner();
        self.membership_call(MembershipCall::Remove {
            id: r.id,
            force: r.force,
            retry: r.retry,
        })
    }

    async fn scavenge(
        &self,
        _request: Request<proto::ScavengeRequest>,
    ) -> Result<Response<proto::ScavengeResponse>, Status> {
        Err(Status::unimplemented("the fake nodes do not scavenge"))
    }

    async fn erase(
        &self,
        _request: Request<proto::EraseRequest>,
    ) -> Result<Response<proto::EraseResponse>, Status> {
        Err(Status::unimplemented("the fake nodes do not erase"))
    }
}

/// Serves `fake` on a free loopback port; returns its URL.
async fn serve(fake: Arc<Fake>) -> String {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let router = Server::builder()
        .add_service(StreamsServer::from_arc(Arc::clone(&fake)))
        .add_service(ClusterServer::from_arc(fake));
    tokio::spawn(router.serve_with_incoming(incoming));
    format!("http://{addr}")
}

/// A URL where nothing listens.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn client(endpoints: &[&str], attempts: u32) -> Client {
    Client::with_config(ClientConfig {
        endpoints: endpoints.iter().map(|url| url.to_string()).collect(),
        request_timeout: Duration::from_secs(2),
        max_append_attempts: attempts,
        leader_only: true,
        tls_ca: None,
        credentials: None,
    })
    .unwrap()
}

fn success(last_revision: u64, last_position: u64, already_written: bool) -> proto::AppendResponse {
    proto::AppendResponse {
        result: Some(append_response::Result::Success(proto::AppendSuccess {
            last_revision,
            last_position,
            already_written,
        })),
    }
}

fn not_leader(leader: &str) -> Status {
    let mut status = Status::failed_precondition("not the leader");
    status.metadata_mut().insert(
        LEADER_METADATA_KEY,
        MetadataValue::try_from(leader).unwrap(),
    );
    status
}

fn recorded(stream: &str, revision: u64, position: u64) -> proto::RecordedEvent {
    proto::RecordedEvent {
        stream: stream.to_owned(),
        revision,
        position,
        id: uuid::Uuid::now_v7().to_string(),
        r#type: "T".to_owned(),
        content_type: proto::ContentType::Json as i32,
        data: b"{}".to_vec().into(),
        metadata: Default::default(),
        created_unix_ms: 1,
        tags: Vec::new(),
    }
}

fn event(stream: &str, revision: u64, position: u64) -> Result<proto::ReadResponse, Status> {
    Ok(proto::ReadResponse {
        event: Some(recorded(stream, revision, position)),
    })
}

fn one_event() -> Vec<EventData> {
    vec![EventData::json("OrderPlaced", &serde_json::json!({ "n": 1 })).unwrap()]
}

#[tokio::test]
async fn append_follows_the_leader_hint_and_goes_straight_there_next_time() {
    let leader = Arc::new(Fake::new().on_append(|n| Ok(success(n as u64, 10 + n as u64, false))));
    let leader_url = serve(Arc::clone(&leader)).await;
    let hint = leader_url.clone();
    let follower = Arc::new(Fake::new().on_append(move |_| Err(not_leader(&hint))));
    let follower_url = serve(Arc::clone(&follower)).await;
    let client = client(&[&follower_url, &leader_url], 5);

    let written = client
        .append("s", ExpectedRevision::NoStream, one_event())
        .await
        .unwrap();
    assert_eq!((written.last_revision, written.last_position), (0, 10));
    let written = client
        .append("s", ExpectedRevision::Exact(0), one_event())
        .await
        .unwrap();
    assert_eq!(written.last_position, 11);

    assert_eq!(
        follower.appends().len(),
        1,
        "the second append skipped the follower"
    );
    assert_eq!(leader.appends().len(), 2);
    assert!(follower.appends()[0].leader_only);
    assert_eq!(client.last_position(), Some(11));
}

#[tokio::test]
async fn append_follows_a_hint_to_an_endpoint_it_was_not_configured_with() {
    let leader = Arc::new(Fake::new().on_append(|_| Ok(success(0, 0, false))));
    let leader_url = serve(Arc::clone(&leader)).await;
    let hint = format!("{leader_url}/");
    let follower = Arc::new(Fake::new().on_append(move |_| Err(not_leader(&hint))));
    let follower_url = serve(Arc::clone(&follower)).await;
    let client = client(&[&follower_url], 5);

    client
        .append("s", ExpectedRevision::Any, one_event())
        .await
        .unwrap();
    assert_eq!(leader.appends().len(), 1);
    assert_eq!(client.last_position(), Some(0));
}

#[tokio::test]
async fn append_retries_the_same_event_ids_and_reports_already_written() {
    let node = Arc::new(Fake::new().on_append(|n| match n {
        0 => Err(Status::unavailable("lost the answer")),
        1 => Err(Status::failed_precondition("election in progress")),
        _ => Ok(success(4, 40, true)),
    }));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 5);

    let written = client
        .append("s", ExpectedRevision::Exact(3), one_event())
        .await
        .unwrap();
    assert!(written.already_written);
    let appends = node.appends();
    assert_eq!(appends.len(), 3);
    assert!(appends.iter().all(|request| request == &appends[0]));
}

#[tokio::test]
async fn a_delete_is_retried_with_the_same_id_and_a_tombstone_is_a_typed_error() {
    let fake = Arc::new(Fake::new().on_append(|n| match n {
        0 => Err(Status::unavailable("restarting")),
        1 => Ok(success(3, 9, true)),
        _ => {
            let mut status = Status::not_found("stream \"s\" is deleted (tombstoned)");
            status.metadata_mut().insert(
                cairn_client::STREAM_DELETED_METADATA_KEY,
                cairn_client::STREAM_DELETED_TOMBSTONED.parse().unwrap(),
            );
            Err(status)
        }
    }));
    let url = serve(fake.clone()).await;
    let client = client(&[&url], 3);
    let result = client
        .delete_stream("s", ExpectedRevision::Any)
        .await
        .unwrap();
    assert!(result.already_written);
    let deletes = fake.deletes.lock().unwrap().clone();
    assert_eq!(deletes.len(), 2);
    assert_eq!(deletes[0].id, deletes[1].id, "a retry resends the same id");
    assert!(!deletes[0].tombstone);
    let err = client
        .tombstone_stream("s", ExpectedRevision::Any)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::StreamDeleted {
            stream: "s".to_owned()
        }
    );
    assert!(fake.deletes.lock().unwrap()[2].tombstone);
}

#[tokio::test]
async fn append_skips_a_dead_endpoint() {
    let node = Arc::new(Fake::new().on_append(|_| Ok(success(0, 0, false))));
    let url = serve(Arc::clone(&node)).await;
    let dead = dead_url().await;
    let client = client(&[&dead, &url], 3);

    client
        .append("s", ExpectedRevision::Any, one_event())
        .await
        .unwrap();
    assert_eq!(node.appends().len(), 1);
}

#[tokio::test]
async fn wrong_expected_version_is_returned_at_once() {
    let node = Arc::new(Fake::new().on_append(|_| {
        Ok(proto::AppendResponse {
            result: Some(append_response::Result::WrongExpectedVersion(
                proto::WrongExpectedVersion {
                    expected: Some(ExpectedRevision::NoStream.into()),
                    actual_revision: Some(2),
                },
            )),
        })
    }));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 5);

    let err = client
        .append("s", ExpectedRevision::NoStream, one_event())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::WrongExpectedVersion {
            stream: "s".to_owned(),
            expected: ExpectedRevision::NoStream,
            actual: Some(2),
        }
    );
    assert_eq!(node.appends().len(), 1);
    assert_eq!(client.last_position(), None);
}

#[tokio::test]
async fn final_statuses_are_not_retried() {
    let node = Arc::new(Fake::new().on_append(|n| match n {
        0 => Err(Status::already_exists("id written by another append")),
        _ => Err(Status::invalid_argument("stream: empty")),
    }));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 5);

    let err = client.append("s", ExpectedRevision::Any, one_event()).await;
    assert!(matches!(err, Err(Error::IdempotencyConflict(_))), "{err:?}");
    let err = client.append("", ExpectedRevision::Any, one_event()).await;
    assert!(matches!(err, Err(Error::InvalidArgument(_))), "{err:?}");
    assert_eq!(node.appends().len(), 2);
}

#[tokio::test]
async fn append_gives_up_after_the_configured_attempts() {
    let node = Arc::new(Fake::new().on_append(|_| Err(Status::unavailable("no quorum"))));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 3);

    let err = client.append("s", ExpectedRevision::Any, one_event()).await;
    assert!(
        matches!(&err, Err(Error::Unavailable(cause)) if cause.contains("no quorum")),
        "{err:?}"
    );
    assert_eq!(node.appends().len(), 3);
}

#[tokio::test]
async fn read_yields_the_events_in_order_then_ends() {
    let node = Arc::new(
        Fake::new().on_read(|_| Ok(vec![event("s", 0, 5), event("s", 1, 9), event("s", 2, 12)])),
    );
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 3);

    let events: Vec<_> = client
        .read_stream("s", ReadOptions::forwards())
        .await
        .unwrap()
        .collect()
        .await;
    let revisions: Vec<u64> = events.into_iter().map(|e| e.unwrap().revision).collect();
    assert_eq!(revisions, vec![0, 1, 2]);
}

#[tokio::test]
async fn read_of_a_missing_stream_is_stream_not_found_whether_refused_or_streamed() {
    let node = Arc::new(Fake::new().on_read(|n| match n {
        0 => Err(Status::not_found("no events")),
        _ => Ok(vec![Err(Status::not_found("no events"))]),
    }));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 3);

    for _ in 0..2 {
        let err = client
            .read_stream("gone", ReadOptions::forwards())
            .await
            .err();
        assert_eq!(
            err,
            Some(Error::StreamNotFound {
                stream: "gone".to_owned()
            })
        );
    }
}

#[tokio::test]
async fn read_retries_until_the_first_answer_then_never() {
    let node = Arc::new(Fake::new().on_read(|n| match n {
        0 => Err(Status::unavailable("starting")),
        1 => Ok(vec![Err(Status::unavailable("still starting"))]),
        _ => Ok(vec![
            event("s", 0, 0),
            Err(Status::unavailable("went away")),
        ]),
    }));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 5);

    let items: Vec<_> = client
        .read_stream("s", ReadOptions::forwards())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(matches!(items[1], Err(Error::Unavailable(_))));
    assert_eq!(node.reads.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn read_reports_events_out_of_order_and_stops() {
    let node = Arc::new(
        Fake::new().on_read(|_| Ok(vec![event("s", 0, 5), event("s", 2, 9), event("s", 3, 12)])),
    );
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 3);

    let items: Vec<_> = client
        .read_stream("s", ReadOptions::forwards())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 2);
    assert!(matches!(items[1], Err(Error::Internal(_))));
}

#[tokio::test]
async fn read_all_accepts_gaps_in_revisions_across_streams() {
    let node = Arc::new(
        Fake::new().on_read(|_| Ok(vec![event("a", 4, 9), event("b", 0, 8), event("a", 3, 2)])),
    );
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 3);

    let items: Vec<_> = client
        .read_all(ReadOptions::backwards())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(items.iter().all(Result::is_ok), "{items:?}");
    assert_eq!(items.len(), 3);
}

#[tokio::test]
async fn status_asks_the_next_endpoint_when_one_is_down() {
    let node = Arc::new(Fake::new());
    let url = serve(Arc::clone(&node)).await;
    let dead = dead_url().await;
    let client = client(&[&dead, &url], 3);

    assert_eq!(client.status().await.unwrap().node_id, 1);
    assert_eq!(node.statuses.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn status_with_every_endpoint_down_is_unavailable() {
    let client = client(&[&dead_url().await, &dead_url().await], 3);
    assert!(matches!(client.status().await, Err(Error::Unavailable(_))));
}

#[tokio::test]
async fn an_append_over_the_message_limit_is_refused_without_a_round_trip() {
    let node = Arc::new(Fake::new().on_append(|_| Ok(success(0, 0, false))));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 3);

    let huge = EventData::binary("Blob", vec![0u8; cairn_client::MAX_MESSAGE_BYTES]);
    let err = client.append("s", ExpectedRevision::Any, vec![huge]).await;
    assert!(matches!(err, Err(Error::InvalidArgument(_))), "{err:?}");
    assert!(node.appends().is_empty());
}

#[tokio::test]
async fn a_read_can_carry_an_event_larger_than_tonics_default_limit() {
    let node = Arc::new(Fake::new().on_read(|_| {
        let mut big = event("s", 0, 0);
        if let Ok(response) = &mut big {
            if let Some(event) = response.event.as_mut() {
                event.data = vec![b' '; 8 * 1024 * 1024].into();
            }
        }
        Ok(vec![big])
    }));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 3);

    let items: Vec<_> = client
        .read_stream("s", ReadOptions::forwards())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap().data.len(), 8 * 1024 * 1024);
}

// Subscriptions.

/// Bound on any wait for a subscription in these tests, so a bug fails instead of hanging.
const TEST_WAIT_MS: u64 = 30_000;

fn message(message: subscribe_response::Message) -> SubscribeItem {
    Ok(proto::SubscribeResponse {
        message: Some(message),
    })
}

fn confirmed(node_id: u64) -> SubscribeItem {
    message(subscribe_response::Message::Confirmation(
        proto::SubscriptionConfirmation { node_id },
    ))
}

fn sub_event(stream: &str, revision: u64, position: u64) -> SubscribeItem {
    message(subscribe_response::Message::Event(recorded(
        stream, revision, position,
    )))
}

fn caught_up(next: u64) -> SubscribeItem {
    message(subscribe_response::Message::CaughtUp(proto::CaughtUp {
        next,
    }))
}

fn checkpoint(next_position: u64) -> SubscribeItem {
    message(subscribe_response::Message::Checkpoint(proto::Checkpoint {
        next_position,
    }))
}

/// A node that serves stream `s` (revision r at position 10 + r) up to revision `last` from
/// whatever `from` it is asked, then catches up and waits for more.
fn serves_stream_s(
    node_id: u64,
    last: u64,
) -> impl Fn(usize, &proto::SubscribeRequest) -> Result<Served, Status> + Send + Sync + 'static {
    move |_, request| {
        let mut items = vec![confirmed(node_id)];
        items.extend((request.from..=last).map(|revision| sub_event("s", revision, 10 + revision)));
        items.push(caught_up(last + 1));
        live(items)
    }
}

/// A node that confirms, catches up at once and waits.
fn idle(
    node_id: u64,
) -> impl Fn(usize, &proto::SubscribeRequest) -> Result<Served, Status> + Send + Sync + 'static {
    move |_, request| live(vec![confirmed(node_id), caught_up(request.from)])
}

/// The messages up to and including the first `CaughtUp`; panics on an error or the end.
async fn until_caught_up(subscription: &mut Subscription) -> Vec<SubscriptionMessage> {
    let mut messages = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(TEST_WAIT_MS), subscription.next())
            .await
            .expect("the subscription went quiet");
        match next {
            Some(Ok(message)) => {
                let done = matches!(message, SubscriptionMessage::CaughtUp { .. });
                messages.push(message);
                if done {
                    return messages;
                }
            }
            Some(Err(err)) => panic!("error after {messages:?}: {err}"),
            None => panic!("ended after {messages:?}"),
        }
    }
}

/// Everything the subscription yields until it ends.
async fn until_the_end(subscription: Subscription) -> Vec<Result<SubscriptionMessage, Error>> {
    tokio::time::timeout(
        Duration::from_millis(TEST_WAIT_MS),
        subscription.collect::<Vec<_>>(),
    )
    .await
    .expect("the subscription did not end")
}

/// The (revision, position) of each event, in delivery order.
fn events(messages: &[SubscriptionMessage]) -> Vec<(u64, u64)> {
    messages
        .iter()
        .filter_map(|message| match message {
            SubscriptionMessage::Event(event) => Some((event.revision, event.position)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn subscription_resumes_on_another_node_after_a_drop_with_no_duplicate_and_no_gap() {
    let first = Arc::new(Fake::new().on_subscribe(|n, _| match n {
        0 => ends(vec![
            confirmed(1),
            sub_event("s", 0, 10),
            sub_event("s", 1, 11),
            sub_event("s", 2, 12),
            Err(Status::unavailable("shutting down")),
        ]),
        _ => Err(Status::unavailable("shut down")),
    }));
    let first_url = serve(Arc::clone(&first)).await;
    let second = Arc::new(Fake::new().on_subscribe(serves_stream_s(2, 5)));
    let second_url = serve(Arc::clone(&second)).await;
    let client = client(&[&first_url, &second_url], 3);

    let mut subscription = client
        .subscribe("s", SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(subscription.served_by(), Some(1));
    let messages = until_caught_up(&mut subscription).await;

    let revisions: Vec<u64> = events(&messages).iter().map(|(r, _)| *r).collect();
    assert_eq!(revisions, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        messages.last(),
        Some(&SubscriptionMessage::CaughtUp { next: 6 })
    );
    assert_eq!(subscription.served_by(), Some(2));
    assert_eq!(first.subscribes().len(), 1, "the failed node was skipped");
    let resumed = &second.subscribes()[0];
    assert_eq!((resumed.from, resumed.from_end), (3, false));
    assert_eq!(
        resumed.min_position,
        Some(12),
        "the new node must have applied what was already delivered"
    );
}

#[tokio::test]
async fn subscription_drops_duplicates_and_resubscribes_over_a_gap() {
    let first = Arc::new(Fake::new().on_subscribe(|_, _| {
        live(vec![
            confirmed(1),
            sub_event("s", 0, 10),
            sub_event("s", 1, 11),
            sub_event("s", 1, 11),
            sub_event("s", 0, 10),
            sub_event("s", 3, 13),
            sub_event("s", 4, 14),
        ])
    }));
    let first_url = serve(Arc::clone(&first)).await;
    let second = Arc::new(Fake::new().on_subscribe(serves_stream_s(2, 4)));
    let second_url = serve(Arc::clone(&second)).await;
    let client = client(&[&first_url, &second_url], 3);

    let mut subscription = client
        .subscribe("s", SubscribeOptions::default())
        .await
        .unwrap();
    let messages = until_caught_up(&mut subscription).await;

    assert_eq!(
        events(&messages),
        vec![(0, 10), (1, 11), (2, 12), (3, 13), (4, 14)]
    );
    assert_eq!(second.subscribes()[0].from, 2);
}

#[tokio::test]
async fn filtered_all_subscription_resumes_from_the_last_checkpoint() {
    let first = Arc::new(Fake::new().on_subscribe(|n, _| match n {
        0 => ends(vec![
            confirmed(1),
            sub_event("a-1", 0, 3),
            checkpoint(10),
            caught_up(10),
        ]),
        _ => Err(Status::unavailable("gone")),
    }));
    let first_url = serve(Arc::clone(&first)).await;
    let second = Arc::new(Fake::new().on_subscribe(|_, request| {
        live(vec![
            confirmed(2),
            checkpoint(request.from),
            sub_event("a-1", 1, request.from + 2),
            caught_up(request.from + 3),
        ])
    }));
    let second_url = serve(Arc::clone(&second)).await;
    let client = client(&[&first_url, &second_url], 3);

    let filter = SubscriptionFilter::default().stream_prefix("a-");
    let mut subscription = client
        .subscribe_all(
            SubscribeOptions::default()
                .filter(filter)
                .checkpoint_interval(5),
        )
        .await
        .unwrap();
    let mut messages = until_caught_up(&mut subscription).await;
    messages.extend(until_caught_up(&mut subscription).await);

    assert_eq!(events(&messages), vec![(0, 3), (1, 12)]);
    assert!(messages.contains(&SubscriptionMessage::Checkpoint { next_position: 10 }));
    assert_eq!(
        messages.last(),
        Some(&SubscriptionMessage::CaughtUp { next: 13 })
    );
    let resumed = &second.subscribes()[0];
    assert_eq!(resumed.stream, "$all");
    assert_eq!((resumed.from, resumed.from_end), (10, false));
    assert_eq!(resumed.checkpoint_interval, 5);
    assert_eq!(
        resumed.filter.as_ref().map(|f| f.stream_prefix.as_str()),
        Some("a-")
    );
    assert_eq!(resumed.min_position, Some(9));
}

#[tokio::test]
async fn subscription_from_the_end_resumes_at_the_end_it_learnt() {
    let first = Arc::new(Fake::new().on_subscribe(|n, _| match n {
        0 => ends(vec![
            confirmed(1),
            caught_up(7),
            Err(Status::unavailable("gone")),
        ]),
        _ => Err(Status::unavailable("gone")),
    }));
    let first_url = serve(Arc::clone(&first)).await;
    let second = Arc::new(Fake::new().on_subscribe(idle(2)));
    let second_url = serve(Arc::clone(&second)).await;
    let client = client(&[&first_url, &second_url], 3);

    let mut subscription = client
        .subscribe("s", SubscribeOptions::default().from(ReadFrom::End))
        .await
        .unwrap();
    assert_eq!(
        until_caught_up(&mut subscription).await,
        vec![SubscriptionMessage::CaughtUp { next: 7 }]
    );
    assert_eq!(
        until_caught_up(&mut subscription).await,
        vec![SubscriptionMessage::CaughtUp { next: 7 }],
        "the consumer sees the switch to live again"
    );
    assert!(first.subscribes()[0].from_end);
    let resumed = &second.subscribes()[0];
    assert_eq!((resumed.from, resumed.from_end), (7, false));
}

#[tokio::test]
async fn invalid_argument_ends_a_subscription_whether_refused_or_streamed() {
    let node = Arc::new(Fake::new().on_subscribe(|n, _| match n {
        0 => Err(Status::invalid_argument("stream: must not be empty")),
        _ => ends(vec![
            confirmed(1),
            sub_event("s", 0, 0),
            Err(Status::invalid_argument(
                "filter.event_type_regex: unclosed group",
            )),
        ]),
    }));
    let url = serve(Arc::clone(&node)).await;
    let other = Arc::new(Fake::new().on_subscribe(serves_stream_s(2, 3)));
    let other_url = serve(Arc::clone(&other)).await;
    let client = client(&[&url, &other_url], 3);

    let refused = client.subscribe("s", SubscribeOptions::default()).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );

    let subscription = client
        .subscribe("s", SubscribeOptions::default())
        .await
        .unwrap();
    let items = until_the_end(subscription).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(matches!(items[0], Ok(SubscriptionMessage::Event(_))));
    assert!(matches!(&items[1], Err(Error::InvalidArgument(m)) if m.contains("regex")));
    assert_eq!(node.subscribes().len(), 2);
    assert!(
        other.subscribes().is_empty(),
        "a final error is not retried"
    );
}

#[tokio::test]
async fn no_resubscribe_ends_the_subscription_with_the_error() {
    let node = Arc::new(Fake::new().on_subscribe(|_, _| {
        ends(vec![
            confirmed(1),
            sub_event("s", 0, 0),
            Err(Status::unavailable("leaving the cluster")),
        ])
    }));
    let url = serve(Arc::clone(&node)).await;
    let other = Arc::new(Fake::new().on_subscribe(serves_stream_s(2, 3)));
    let other_url = serve(Arc::clone(&other)).await;
    let client = client(&[&url, &other_url], 3);

    let subscription = client
        .subscribe("s", SubscribeOptions::default().no_resubscribe())
        .await
        .unwrap();
    let items = until_the_end(subscription).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(matches!(&items[1], Err(Error::Unavailable(m)) if m.contains("leaving")));
    assert!(other.subscribes().is_empty());
}

#[tokio::test]
async fn subscription_gives_up_after_the_resubscribe_limit() {
    let node = Arc::new(Fake::new().on_subscribe(|n, _| match n {
        0 => ends(vec![confirmed(1), sub_event("s", 0, 0)]),
        _ => Err(Status::unavailable("no quorum")),
    }));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 3);

    let subscription = client
        .subscribe("s", SubscribeOptions::default())
        .await
        .unwrap();
    let items = until_the_end(subscription).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        matches!(&items[1], Err(Error::Unavailable(m)) if m.contains("no quorum")),
        "{items:?}"
    );
    let attempts = usize::try_from(MAX_RESUBSCRIBE_ATTEMPTS).unwrap();
    assert_eq!(node.subscribes().len(), 1 + attempts);
    // The attempts after the event resumed right after it.
    assert!(node.subscribes()[1..]
        .iter()
        .all(|request| request.from == 1));
}

#[tokio::test]
async fn linearizable_subscription_follows_the_leader_hint() {
    let leader = Arc::new(Fake::new().on_subscribe(idle(1)));
    let leader_url = serve(Arc::clone(&leader)).await;
    let hint = leader_url.clone();
    let follower = Arc::new(Fake::new().on_subscribe(move |_, _| Err(not_leader(&hint))));
    let follower_url = serve(Arc::clone(&follower)).await;
    let client = client(&[&follower_url, &leader_url], 3);

    let subscription = client
        .subscribe("s", SubscribeOptions::default().linearizable())
        .await
        .unwrap();
    assert_eq!(subscription.served_by(), Some(1));
    assert_eq!(
        leader.subscribes()[0].consistency,
        proto::ReadConsistency::Linearizable as i32
    );
    assert_eq!(follower.subscribes().len(), 1);
}

#[tokio::test]
async fn follower_preference_avoids_the_known_leader() {
    let leader = Arc::new(
        Fake::new()
            .on_subscribe(idle(1))
            .on_read(|_| Ok(vec![event("s", 0, 0)])),
    );
    let leader_url = serve(Arc::clone(&leader)).await;
    leader.report_leader(&leader_url);
    let follower = Arc::new(
        Fake::new()
            .on_subscribe(idle(2))
            .on_read(|_| Ok(vec![event("s", 0, 0)])),
    );
    let follower_url = serve(Arc::clone(&follower)).await;
    follower.report_leader(&leader_url);
    let client = client(&[&leader_url, &follower_url], 3);

    let subscription = client
        .subscribe(
            "s",
            SubscribeOptions::default().prefer(NodePreference::Follower),
        )
        .await
        .unwrap();
    assert_eq!(subscription.served_by(), Some(2));
    assert!(leader.subscribes().is_empty());
    assert_eq!(
        leader.statuses.load(Ordering::SeqCst),
        1,
        "the leader was learnt once, from status"
    );

    let read: Vec<_> = client
        .read_stream(
            "s",
            ReadOptions::forwards().prefer(NodePreference::Follower),
        )
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(read.len(), 1);
    assert_eq!(follower.reads.load(Ordering::SeqCst), 1);
    assert_eq!(leader.reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn leader_preference_goes_to_the_leader_status_names() {
    let leader = Arc::new(Fake::new().on_subscribe(idle(1)));
    let leader_url = serve(Arc::clone(&leader)).await;
    let follower = Arc::new(Fake::new().on_subscribe(idle(2)));
    let follower_url = serve(Arc::clone(&follower)).await;
    follower.report_leader(&leader_url);
    let client = client(&[&follower_url, &leader_url], 3);

    let subscription = client
        .subscribe(
            "s",
            SubscribeOptions::default().prefer(NodePreference::Leader),
        )
        .await
        .unwrap();
    assert_eq!(subscription.served_by(), Some(1));
    assert!(follower.subscribes().is_empty());
}

#[tokio::test]
async fn follower_preference_falls_back_to_the_leader_when_followers_are_down() {
    let leader = Arc::new(Fake::new().on_subscribe(idle(1)));
    let leader_url = serve(Arc::clone(&leader)).await;
    leader.report_leader(&leader_url);
    let dead = dead_url().await;
    let client = client(&[&leader_url, &dead], 3);

    let subscription = client
        .subscribe(
            "s",
            SubscribeOptions::default().prefer(NodePreference::Follower),
        )
        .await
        .unwrap();
    assert_eq!(subscription.served_by(), Some(1));
}

#[tokio::test]
async fn a_filter_on_a_stream_subscription_is_refused_without_a_round_trip() {
    let node = Arc::new(Fake::new().on_subscribe(idle(1)));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 3);

    let refused = client
        .subscribe(
            "s",
            SubscribeOptions::default().filter(SubscriptionFilter::default().stream_prefix("s")),
        )
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert!(node.subscribes().is_empty());
}

fn membership(voters: &[u64], unchanged: bool) -> proto::MembershipResponse {
    proto::MembershipResponse {
        voters: voters.to_vec(),
        learners: Vec::new(),
        unchanged,
        leader_id: 2,
    }
}

#[tokio::test]
async fn add_node_goes_to_the_leader_and_a_redirect_is_not_a_retry() {
    let leader = Arc::new(Fake::new().on_membership(|_| Ok(membership(&[4, 1, 2, 3], false))));
    let leader_url = serve(Arc::clone(&leader)).await;
    let hint = leader_url.clone();
    let follower = Arc::new(Fake::new().on_membership(move |_| Err(not_leader(&hint))));
    let follower_url = serve(Arc::clone(&follower)).await;
    let client = client(&[&follower_url], 5);

    let added = client.add_node(4, " 10.0.0.4:2113 ").await.unwrap();
    assert_eq!(added.voters, vec![1, 2, 3, 4], "sorted");
    assert!(!added.unchanged);
    let call = MembershipCall::Add {
        id: 4,
        address: "10.0.0.4:2113".into(),
        retry: false,
    };
    assert_eq!(follower.membership_calls(), vec![call.clone()]);
    assert_eq!(
        leader.membership_calls(),
        vec![call],
        "a refusal by a follower did nothing, so the leader's call is a first attempt"
    );
}

#[tokio::test]
async fn a_membership_call_after_an_unknown_outcome_is_marked_as_a_retry() {
    let node = Arc::new(Fake::new().on_membership(|n| match n {
        0 => Err(Status::unavailable("did not commit in time")),
        1 => Err(Status::failed_precondition("election in progress")),
        _ => Ok(membership(&[1, 2], true)),
    }));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 5);

    let removed = client.force_remove_node(3).await.unwrap();
    assert!(removed.unchanged);
    let retries: Vec<bool> = node
        .membership_calls()
        .iter()
        .map(|call| match call {
            MembershipCall::Remove { force, retry, .. } => {
                assert!(force);
                *retry
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        retries,
        vec![false, true, true],
        "once an attempt may have acted, every later one is a retry"
    );
}

#[tokio::test]
async fn membership_refusals_and_an_unreachable_new_node_are_final() {
    let node = Arc::new(Fake::new().on_membership(|n| match n {
        0 => Err(Status::invalid_argument("node 9 is not a member")),
        _ => Err(Status::aborted("node 4 at 10.0.0.4:2113 did not answer")),
    }));
    let url = serve(Arc::clone(&node)).await;
    let client = client(&[&url], 5);

    assert_eq!(
        client.remove_node(9).await,
        Err(Error::InvalidArgument("node 9 is not a member".into()))
    );
    assert_eq!(
        client.add_node(4, "10.0.0.4:2113").await,
        Err(Error::Unavailable(
            "node 4 at 10.0.0.4:2113 did not answer".into()
        ))
    );
    assert_eq!(node.membership_calls().len(), 2, "neither was retried");
}
