//! What operators see: `/health/live`, `/health/ready`, `/metrics` (`--http`), the gRPC health
//! service, and JSON logs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::{
    AppendCondition, Error, EventData, ExpectedRevision, Query, QueryItem, StreamAppend,
    SubscribeOptions, SubscriptionMessage,
};
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{cairn_exe, free_port, runtime, TestCluster, CLUSTER_WAIT};
use crate::prometheus_text::{self, Exposition};

/// Longest one HTTP request to a node may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);
const APPENDS: u64 = 40;
const EVENTS_PER_APPEND: u64 = 3;

/// `GET path` from an `http://HOST:PORT` endpoint: status code and body.
pub(crate) fn http_get(endpoint: &str, path: &str) -> std::io::Result<(u16, String)> {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {response:?}")))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((code, body.to_owned()))
}

pub(crate) fn scrape(cluster: &TestCluster, id: u64) -> Exposition {
    let endpoint = cluster.http_endpoint(id).expect("nodes have --http");
    let (code, body) = http_get(&endpoint, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "node {id} /metrics: {body}");
    prometheus_text::parse(&body)
        .unwrap_or_else(|e| panic!("node {id} /metrics is not Prometheus text: {e}\n{body}"))
}

/// Polls `GET /health/ready` until it answers 200; the body.
fn wait_ready(endpoint: &str) -> String {
    let deadline = Instant::now() + CLUSTER_WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        match http_get(endpoint, "/health/ready") {
            Ok((200, body)) => return body,
            other => last = Some(other),
        }
        std::thread::sleep(POLL);
    }
    panic!("{endpoint}/health/ready never answered 200 within {CLUSTER_WAIT:?}: last {last:?}");
}

fn total(exposition: &[Exposition], name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition.iter().map(|e| e.value(name, labels)).sum()
}

#[test]
fn a_formed_cluster_is_ready_and_its_metrics_count_appends() {
    let cluster = TestCluster::start(3);
    let rt = runtime();
    let leader = rt.block_on(cluster.wait_for_leader());
    for id in 1..=3 {
        let endpoint = cluster.http_endpoint(id).expect("http");
        let (code, body) = http_get(&endpoint, "/health/live").expect("live");
        assert_eq!((code, body.as_str()), (200, "live\n"), "node {id}");
        let ready = wait_ready(&endpoint);
        assert!(ready.contains("is ready"), "node {id}: {ready}");
    }
    // The gRPC health service agrees, for the server and for the Streams service.
    rt.block_on(async {
        for id in 1..=3 {
            for service in ["", "cairn.v1.Streams"] {
                wait_serving(&cluster.endpoint(id), service).await;
            }
        }
    });

    let before: Vec<Exposition> = (1..=3).map(|id| scrape(&cluster, id)).collect();
    let client = cluster.client();
    rt.block_on(async {
        for i in 0..APPENDS {
            let events = (0..EVENTS_PER_APPEND)
                .map(|n| EventData::json("Counted", &serde_json::json!({ "i": i, "n": n })))
                .collect::<Result<Vec<_>, _>>()
                .expect("json");
            client
                .append(&format!("metrics-{}", i % 4), ExpectedRevision::Any, events)
                .await
                .expect("append");
        }
        // One conflict, counted as such.
        let conflict = client
            .append(
                "metrics-0",
                ExpectedRevision::NoStream,
                vec![EventData::json("Counted", &serde_json::json!({})).expect("json")],
            )
            .await;
        assert!(conflict.is_err(), "metrics-0 exists: {conflict:?}");
        // Multi-stream and DCB appends count as appends too: one over two streams, one DCB
        // claim, and a second claim whose condition fails.
        let one = || vec![EventData::json("Counted", &serde_json::json!({})).expect("json")];
        let parts = ["metrics-multi-a", "metrics-multi-b"].map(|stream| StreamAppend {
            stream: stream.to_string(),
            expected: ExpectedRevision::NoStream,
            events: one(),
        });
        client
            .append_multi(parts.to_vec(), Vec::new(), None)
            .await
            .expect("multi-stream append");
        let claim = || {
            let condition = AppendCondition {
                fail_if_events_match: Query::of(vec![
                    QueryItem::types(["Counted"]).with_tags(["seat:1"])
                ]),
                after: None,
            };
            let event = EventData::json("Counted", &serde_json::json!({}))
                .expect("json")
                .with_tags(["seat:1"]);
            client.append_multi(Vec::new(), vec![event], Some(condition))
        };
        claim().await.expect("the first claim");
        let refused = claim().await;
        assert!(
            matches!(refused, Err(Error::ConditionFailed { .. })),
            "{refused:?}"
        );
    });
    const MULTI_EVENTS: u64 = 3;
    let events = rt.block_on(cluster.wait_until_converged());
    assert_eq!(events, APPENDS * EVENTS_PER_APPEND + MULTI_EVENTS);
    let after: Vec<Exposition> = (1..=3).map(|id| scrape(&cluster, id)).collect();

    let delta = |name: &str, labels: &[(&str, &str)]| {
        total(&after, name, labels) - total(&before, name, labels)
    };
    // The client goes to the leader directly, so each append is answered (and counted) once;
    // a forwarded or retried one would count again, hence "at least".
    let written = delta("cairn_appends_total", &[("result", "written")]);
    assert!(
        written >= (APPENDS + 2) as f64,
        "written appends moved by {written}"
    );
    let appended = delta("cairn_appended_events_total", &[]);
    assert!(
        appended >= (APPENDS * EVENTS_PER_APPEND + MULTI_EVENTS) as f64,
        "appended events moved by {appended}"
    );
    let conflicts = delta(
        "cairn_appends_total",
        &[("result", "wrong_expected_version")],
    );
    assert!(conflicts >= 1.0, "conflicts moved by {conflicts}");
    let failed = delta("cairn_appends_total", &[("result", "condition_failed")]);
    assert!(failed >= 1.0, "failed conditions moved by {failed}");
    let timed = delta("cairn_append_duration_seconds_count", &[]);
    assert!(
        timed >= (APPENDS + 4) as f64,
        "latency histogram counted {timed}"
    );
    assert!(delta("cairn_append_duration_seconds_sum", &[]) > 0.0);

    for (i, metrics) in after.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(
            metrics.value("cairn_store_events", &[]),
            events as f64,
            "node {id}"
        );
        assert!(metrics.value("cairn_storage_bytes", &[]) > 0.0, "node {id}");
        assert!(metrics.value("cairn_raft_term", &[]) >= 1.0, "node {id}");
        assert_eq!(metrics.value("cairn_ready", &[]), 1.0, "node {id}");
        let applied = metrics.value("cairn_raft_applied_index", &[]);
        let committed = metrics.value("cairn_raft_committed_index", &[]);
        assert!(applied >= APPENDS as f64, "node {id} applied {applied}");
        assert!(
            applied <= committed,
            "node {id}: applied {applied} > committed {committed}"
        );
        let leader_now = metrics.value("cairn_raft_leader_id", &[]) as u64;
        let lags = metrics.samples("cairn_raft_replication_lag_entries");
        if leader_now == id {
            assert_eq!(metrics.value("cairn_raft_is_leader", &[]), 1.0);
            let mut followers: Vec<String> =
                lags.iter().map(|s| s.labels["follower"].clone()).collect();
            followers.sort();
            let expected: Vec<String> = (1..=3u64)
                .filter(|f| *f != id)
                .map(|f| f.to_string())
                .collect();
            assert_eq!(followers, expected, "node {id}: replication lag series");
        } else {
            assert!(lags.is_empty(), "follower {id} reports replication lag");
        }
    }
    let leaders: Vec<f64> = after
        .iter()
        .map(|m| m.value("cairn_raft_leader_id", &[]))
        .collect();
    assert!(
        leaders.iter().all(|l| *l == leaders[0]) && leaders[0] >= 1.0,
        "nodes disagree on the leader ({leader} before): {leaders:?}"
    );

    // A subscription counts while it runs on the node serving it.
    let node = 1;
    let subscriber = cluster.node_client(node);
    rt.block_on(async {
        let mut sub = subscriber
            .subscribe_all(SubscribeOptions::default().no_resubscribe())
            .await
            .expect("subscribe");
        loop {
            let message = tokio::time::timeout(CLUSTER_WAIT, sub.next())
                .await
                .expect("a message in time")
                .expect("the subscription runs")
                .expect("no error");
            if matches!(message, SubscriptionMessage::CaughtUp { .. }) {
                break;
            }
        }
        let running = scrape(&cluster, node).value("cairn_subscriptions", &[]);
        assert!(running >= 1.0, "node {node} counts {running} subscriptions");
        drop(sub);
        // The server notices a vanished subscriber when it next has something to send it.
        client
            .append(
                "metrics-after",
                ExpectedRevision::Any,
                vec![EventData::json("Counted", &serde_json::json!({})).expect("json")],
            )
            .await
            .expect("append");
    });
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        let running = scrape(&cluster, node).value("cairn_subscriptions", &[]);
        if running == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} still counts {running} subscriptions"
        );
        std::thread::sleep(POLL);
    }
}

async fn wait_serving(endpoint: &str, service: &str) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        let status = async {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map(|r| r.into_inner().status)
                .map_err(|e| e.to_string())
        }
        .await;
        if status == Ok(ServingStatus::Serving as i32) {
            return;
        }
        last = Some(status);
        tokio::time::sleep(POLL).await;
    }
    panic!("{endpoint} gRPC health of {service:?} never SERVING: last {last:?}");
}

#[test]
fn a_lone_node_logs_json_lines_and_goes_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut node = Command::new(cairn_exe())
        .args(["node", "--id", "7", "--peers"])
        .arg(format!("7={listen}"))
        .env_clear()
        .env("CAIRN_LISTEN", &listen)
        .env("CAIRN_HTTP", &http)
        .env("CAIRN_DATA_DIR", dir.path())
        .env("CAIRN_LOG_FORMAT", "json")
        .env("CAIRN_INSECURE", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn node");
    let ready = wait_ready(&format!("http://{http}"));
    assert!(ready.contains("node 7 is ready: leader node 7"), "{ready}");
    let _ = node.kill();
    let _ = node.wait();
    let stderr = node.stderr.take().expect("stderr");
    let lines: Vec<String> = BufReader::new(stderr)
        .lines()
        .map(|l| l.expect("utf-8"))
        .collect();
    assert!(!lines.is_empty(), "the node logged nothing");
    for line in &lines {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line: {line:?}: {e}"));
        for field in ["timestamp", "level", "message"] {
            assert!(entry[field].is_string(), "{field} missing in {line}");
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("\"message\":\"serving\"")),
        "{lines:?}"
    );
}
