//! The client against scripted in-process nodes: leader following, safe retries, reads.
//! The real server is tested elsewhere; these pin down what the client does with each answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::proto::cluster_server::{Cluster, ClusterServer};
use cairn_client::proto::streams_server::{Streams, StreamsServer};
use cairn_client::proto::{self, append_response};
use cairn_client::{
    Client, ClientConfig, Error, EventData, ExpectedRevision, ReadOptions, LEADER_METADATA_KEY,
};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

type AppendScript = Box<dyn Fn(usize) -> Result<proto::AppendResponse, Status> + Send + Sync>;
type ReadScript =
    Box<dyn Fn(usize) -> Result<Vec<Result<proto::ReadResponse, Status>>, Status> + Send + Sync>;

/// A node whose answer to the n-th call (0-based) is scripted.
struct Fake {
    append: AppendScript,
    read: ReadScript,
    appends: Mutex<Vec<proto::AppendRequest>>,
    reads: AtomicUsize,
    statuses: AtomicUsize,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            append: Box::new(|_| Err(Status::unimplemented("no append script"))),
            read: Box::new(|_| Err(Status::unimplemented("no read script"))),
            appends: Mutex::new(Vec::new()),
            reads: AtomicUsize::new(0),
            statuses: AtomicUsize::new(0),
        }
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

    type ReadStream = tokio_stream::Iter<std::vec::IntoIter<Result<proto::ReadResponse, Status>>>;

    async fn read(
        &self,
        _request: Request<proto::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        (self.read)(n).map(|items| Response::new(tokio_stream::iter(items)))
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
            ..Default::default()
        }))
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

fn event(stream: &str, revision: u64, position: u64) -> Result<proto::ReadResponse, Status> {
    Ok(proto::ReadResponse {
        event: Some(proto::RecordedEvent {
            stream: stream.to_owned(),
            revision,
            position,
            id: uuid::Uuid::now_v7().to_string(),
            r#type: "T".to_owned(),
            content_type: proto::ContentType::Json as i32,
            data: b"{}".to_vec(),
            metadata: Vec::new(),
            created_unix_ms: 1,
        }),
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
                event.data = vec![b' '; 8 * 1024 * 1024];
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
