//! What can be proven without a server: parsing, wire conversions, configuration checks,
//! and how every kind of failure is classified.

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::endpoints::{Endpoints, Node};
use crate::error::{classify, Failure};
use crate::policy::backoff;
use crate::*;

#[test]
fn expected_revision_round_trips_through_its_cli_spelling() {
    let cases = [
        (ExpectedRevision::Any, "any"),
        (ExpectedRevision::NoStream, "no-stream"),
        (ExpectedRevision::StreamExists, "exists"),
        (ExpectedRevision::Exact(0), "0"),
        (ExpectedRevision::Exact(41), "41"),
        (ExpectedRevision::Exact(u64::MAX), "18446744073709551615"),
    ];
    for (expected, text) in cases {
        assert_eq!(expected.to_string(), text);
        assert_eq!(text.parse::<ExpectedRevision>(), Ok(expected));
    }
}

#[test]
fn expected_revision_rejects_anything_but_the_cli_spellings() {
    for text in [
        "",
        "Any",
        "ANY",
        "no_stream",
        "nostream",
        "stream-exists",
        "exist",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1.0",
        "0x10",
        "18446744073709551616",
    ] {
        let parsed = text.parse::<ExpectedRevision>();
        assert!(
            matches!(parsed, Err(Error::InvalidArgument(_))),
            "{text:?} parsed as {parsed:?}"
        );
    }
}

#[test]
fn expected_revision_survives_the_wire_format() {
    for expected in [
        ExpectedRevision::Any,
        ExpectedRevision::NoStream,
        ExpectedRevision::StreamExists,
        ExpectedRevision::Exact(7),
    ] {
        let wire = proto::ExpectedRevision::from(expected);
        assert_eq!(ExpectedRevision::try_from(wire), Ok(expected));
    }
    let exact = proto::ExpectedRevision::from(ExpectedRevision::Exact(7));
    assert_eq!(exact.kind, proto::expected_revision::Kind::Exact as i32);
    assert_eq!(exact.revision, 7);
}

#[test]
fn expected_revision_with_unknown_kind_is_an_invalid_argument() {
    let wire = proto::ExpectedRevision {
        kind: 99,
        revision: 0,
    };
    assert!(matches!(
        ExpectedRevision::try_from(wire),
        Err(Error::InvalidArgument(message)) if message.contains("expected.kind")
    ));
}

#[test]
fn json_event_holds_the_serialized_value_and_a_time_ordered_id() {
    let value = serde_json::json!({ "order": "order-42", "total_cents": 1999 });
    let event = EventData::json("OrderPlaced", &value).unwrap();
    assert_eq!(event.event_type, "OrderPlaced");
    assert_eq!(event.content_type, ContentType::Json);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&event.data).unwrap(),
        value
    );
    assert!(event.metadata.is_empty());
    assert_eq!(event.id.get_version_num(), 7);
    let later = EventData::json("OrderPlaced", &value).unwrap();
    assert_ne!(event.id, later.id);
}

#[test]
fn json_event_of_an_unserializable_value_is_a_serialization_error() {
    let mut bad = std::collections::HashMap::new();
    bad.insert((1, 2), "tuple keys are not JSON object keys");
    assert!(matches!(
        EventData::json("Bad", &bad),
        Err(Error::Serialization(_))
    ));
}

#[test]
fn event_builders_set_id_and_metadata() {
    let id = Uuid::new_v4();
    let event = EventData::binary("Blob", vec![1, 2, 3])
        .with_id(id)
        .with_metadata(b"{\"by\":\"test\"}".to_vec());
    assert_eq!(event.id, id);
    assert_eq!(event.content_type, ContentType::Binary);
    assert_eq!(event.data, vec![1, 2, 3]);
    assert_eq!(event.metadata, b"{\"by\":\"test\"}");
}

#[test]
fn new_event_goes_on_the_wire_with_a_hyphenated_id_and_comes_back_equal() {
    let event = EventData::binary("Blob", b"x".to_vec()).with_metadata(b"m".to_vec());
    let wire = proto::NewEvent::from(event.clone());
    assert_eq!(wire.id, event.id.hyphenated().to_string());
    assert_eq!(wire.id.len(), 36);
    assert_eq!(wire.r#type, "Blob");
    assert_eq!(wire.content_type, proto::ContentType::Binary as i32);
    assert_eq!(EventData::try_from(wire), Ok(event));
}

#[test]
fn new_event_with_a_non_hyphenated_id_is_an_invalid_argument() {
    let mut wire = proto::NewEvent::from(EventData::binary("Blob", Vec::new()));
    wire.id = Uuid::new_v4().simple().to_string();
    assert!(matches!(
        EventData::try_from(wire),
        Err(Error::InvalidArgument(_))
    ));
}

fn recorded_wire() -> proto::RecordedEvent {
    proto::RecordedEvent {
        stream: "order-42".to_owned(),
        revision: 3,
        position: 1000,
        id: Uuid::now_v7().to_string(),
        r#type: "OrderPlaced".to_owned(),
        content_type: proto::ContentType::Json as i32,
        data: br#"{"total_cents":1999}"#.to_vec().into(),
        metadata: Default::default(),
        created_unix_ms: 1_800_000_000_000,
        tags: vec!["customer:7".into()],
    }
}

#[test]
fn recorded_event_maps_every_field_and_decodes_its_json() {
    let wire = recorded_wire();
    let event = RecordedEvent::try_from(wire.clone()).unwrap();
    assert_eq!(event.stream, "order-42");
    assert_eq!(event.revision, 3);
    assert_eq!(event.position, 1000);
    assert_eq!(event.id.to_string(), wire.id);
    assert_eq!(event.event_type, "OrderPlaced");
    assert_eq!(event.created_unix_ms, 1_800_000_000_000);
    assert_eq!(event.tags, ["customer:7"]);
    assert_eq!(event.created_unix_ms, 1_800_000_000_000);
    let body: serde_json::Value = event.json().unwrap();
    assert_eq!(body["total_cents"], 1999);
    assert_eq!(proto::RecordedEvent::from(event), wire);
}

#[test]
fn recorded_event_with_a_bad_id_or_content_type_is_internal() {
    let mut wire = recorded_wire();
    wire.id = "not-a-uuid".to_owned();
    assert!(matches!(
        RecordedEvent::try_from(wire),
        Err(Error::Internal(_))
    ));
    let mut wire = recorded_wire();
    wire.content_type = 7;
    assert!(matches!(
        RecordedEvent::try_from(wire),
        Err(Error::Internal(_))
    ));
}

#[test]
fn recorded_event_with_non_json_data_is_a_serialization_error() {
    let mut wire = recorded_wire();
    wire.data = b"\xff not json".to_vec().into();
    let event = RecordedEvent::try_from(wire).unwrap();
    assert!(matches!(
        event.json::<serde_json::Value>(),
        Err(Error::Serialization(_))
    ));
}

#[test]
fn read_options_become_the_documented_request() {
    let request = ReadOptions::default().to_request("order-42");
    assert_eq!(
        request,
        proto::ReadRequest {
            stream: "order-42".to_owned(),
            direction: proto::Direction::Forwards as i32,
            from: 0,
            from_end: false,
            count: 0,
            consistency: proto::ReadConsistency::Local as i32,
            min_position: None,
        }
    );
    assert_eq!(ReadOptions::forwards(), ReadOptions::default());

    let request = ReadOptions::backwards()
        .max_count(10)
        .linearizable()
        .to_request(ALL_STREAM);
    assert_eq!(request.stream, "$all");
    assert_eq!(request.direction, proto::Direction::Backwards as i32);
    assert!(request.from_end);
    assert_eq!(request.count, 10);
    assert_eq!(
        request.consistency,
        proto::ReadConsistency::Linearizable as i32
    );

    let request = ReadOptions::forwards()
        .from(ReadFrom::At(5))
        .min_position(99)
        .to_request("s");
    assert_eq!((request.from, request.from_end), (5, false));
    assert_eq!(request.min_position, Some(99));
}

#[test]
fn default_config_points_at_cairn_dev() {
    let config = ClientConfig::default();
    assert_eq!(config.endpoints, vec!["http://127.0.0.1:2113".to_owned()]);
    assert_eq!(config.request_timeout, Duration::from_secs(5));
    assert_eq!(config.max_append_attempts, 20);
    assert!(config.leader_only);
}

#[test]
fn connect_needs_no_runtime_and_no_running_node() {
    let client = Client::connect(["http://127.0.0.1:1", "127.0.0.1:2/"]).unwrap();
    assert_eq!(client.last_position(), None);
    let shown = format!("{client:?}");
    assert!(shown.contains("http://127.0.0.1:2\""), "{shown}");
}

#[test]
fn connect_rejects_an_empty_list_and_bad_urls() {
    assert!(matches!(
        Client::connect(Vec::<String>::new()),
        Err(Error::InvalidArgument(_))
    ));
    for bad in [
        "http://",
        "http:///",
        "http://127.0.0.1:2113/api",
        "http://127.0.0.1:2113?x=1",
        "http://exa mple:2113",
        "ftp://127.0.0.1:2113",
        "https://127.0.0.1:2113",
        "",
    ] {
        assert!(
            matches!(
                Client::connect(["http://127.0.0.1:2113", bad]),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn config_rejects_zero_attempts_and_zero_timeout() {
    let config = ClientConfig {
        max_append_attempts: 0,
        ..ClientConfig::default()
    };
    assert!(matches!(
        Client::with_config(config),
        Err(Error::InvalidArgument(_))
    ));
    let config = ClientConfig {
        request_timeout: Duration::ZERO,
        ..ClientConfig::default()
    };
    assert!(matches!(
        Client::with_config(config),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn config_rejects_more_endpoints_than_the_limit() {
    let config = ClientConfig {
        endpoints: (0..=MAX_ENDPOINTS)
            .map(|port| format!("http://127.0.0.1:{}", 3000 + port))
            .collect(),
        ..ClientConfig::default()
    };
    assert!(matches!(
        Client::with_config(config),
        Err(Error::InvalidArgument(_))
    ));
}

fn not_leader(leader: &str) -> Status {
    let mut status = Status::failed_precondition("not the leader");
    status.metadata_mut().insert(
        LEADER_METADATA_KEY,
        MetadataValue::try_from(leader).unwrap(),
    );
    status
}

#[test]
fn not_leader_with_a_hint_is_retried_at_the_hinted_leader() {
    match classify(&not_leader("http://127.0.0.1:2114"), "s") {
        Failure::Retry { leader, .. } => {
            assert_eq!(leader.as_deref(), Some("http://127.0.0.1:2114"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn failures_without_a_hint_are_retried_elsewhere() {
    let transport = Status::from_error(Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset",
    )));
    assert_eq!(transport.code(), Code::Unknown);
    for status in [
        Status::failed_precondition("no known leader"),
        not_leader(""),
        Status::unavailable("node is shutting down"),
        Status::deadline_exceeded("too slow"),
        Status::cancelled("cancelled"),
        transport,
    ] {
        assert!(
            matches!(classify(&status, "s"), Failure::Retry { leader: None, .. }),
            "{status:?}"
        );
    }
}

#[test]
fn final_failures_map_to_their_typed_errors() {
    let cases = [
        (
            Status::invalid_argument("stream: empty name"),
            Error::InvalidArgument("stream: empty name".to_owned()),
        ),
        (
            Status::already_exists("event id already written elsewhere"),
            Error::IdempotencyConflict("event id already written elsewhere".to_owned()),
        ),
        (
            Status::not_found("no events"),
            Error::StreamNotFound {
                stream: "order-42".to_owned(),
            },
        ),
    ];
    for (status, expected) in cases {
        assert_eq!(classify(&status, "order-42"), Failure::Fatal(expected));
    }
    // An id reused with other content: typed, with the id, when the metadata says so.
    let id = uuid::Uuid::from_u128(42);
    let mut reused = Status::already_exists("event id ... is already stored with other content");
    reused.metadata_mut().insert(
        crate::CONFLICT_KIND_METADATA_KEY,
        crate::CONFLICT_OTHER_CONTENT.parse().unwrap(),
    );
    reused.metadata_mut().insert(
        crate::CONFLICT_EVENT_ID_METADATA_KEY,
        id.to_string().parse().unwrap(),
    );
    assert_eq!(
        classify(&reused, "order-42"),
        Failure::Fatal(Error::EventIdReused { id })
    );
    let message = Error::EventIdReused { id }.to_string();
    assert!(
        message.contains(&id.to_string()) && !message.contains('\n'),
        "{message}"
    );
    assert_eq!(
        classify(&Status::permission_denied("no grant"), "s"),
        Failure::Fatal(Error::PermissionDenied("no grant".to_owned()))
    );
    for status in [
        Status::internal("bug"),
        Status::unimplemented("old server"),
        Status::resource_exhausted("busy"),
    ] {
        assert!(
            matches!(classify(&status, "s"), Failure::Fatal(Error::Internal(_))),
            "{status:?}"
        );
    }
    // A TLS node's answer to a plain-text client: said as is, never retried.
    assert_eq!(
        classify(&Status::unauthenticated("use TLS"), "s"),
        Failure::Fatal(Error::Unauthenticated("use TLS".to_owned()))
    );
}

#[test]
fn wrong_expected_version_message_says_what_was_found() {
    let err = Error::WrongExpectedVersion {
        stream: "order-42".to_owned(),
        expected: ExpectedRevision::NoStream,
        actual: Some(3),
    };
    assert_eq!(
        err.to_string(),
        "wrong expected version on stream \"order-42\": expected no-stream, actual 3"
    );
    let err = Error::WrongExpectedVersion {
        stream: "s".to_owned(),
        expected: ExpectedRevision::Exact(0),
        actual: None,
    };
    assert!(err.to_string().ends_with("expected 0, actual no stream"));
}

#[test]
fn backoff_doubles_from_the_initial_pause_and_stops_at_the_cap() {
    assert_eq!(backoff(0), Duration::from_millis(RETRY_BACKOFF_INITIAL_MS));
    assert_eq!(
        backoff(1),
        Duration::from_millis(2 * RETRY_BACKOFF_INITIAL_MS)
    );
    assert_eq!(backoff(10), Duration::from_millis(RETRY_BACKOFF_MAX_MS));
    assert_eq!(
        backoff(u32::MAX),
        Duration::from_millis(RETRY_BACKOFF_MAX_MS)
    );
}

#[test]
fn read_options_default_to_any_node_and_take_a_preference() {
    assert_eq!(ReadOptions::default().node_preference, NodePreference::Any);
    let options = ReadOptions::forwards().prefer(NodePreference::Follower);
    assert_eq!(options.node_preference, NodePreference::Follower);
}

#[test]
fn subscribe_options_default_to_the_start_with_resubscription() {
    let options = SubscribeOptions::default();
    assert_eq!(options.from, ReadFrom::Start);
    assert!(options.resubscribe);
    assert_eq!(options.node_preference, NodePreference::Any);
    assert_eq!(
        options.to_request("order-42"),
        proto::SubscribeRequest {
            stream: "order-42".to_owned(),
            from: 0,
            from_end: false,
            filter: None,
            checkpoint_interval: 0,
            consistency: proto::ReadConsistency::Local as i32,
            min_position: None,
        }
    );
}

#[test]
fn subscribe_options_become_the_documented_request() {
    let options = SubscribeOptions::default()
        .from(ReadFrom::End)
        .filter(
            SubscriptionFilter::default()
                .stream_prefix("order-")
                .event_type_regex("Order(Placed|Paid)"),
        )
        .checkpoint_interval(50)
        .linearizable()
        .min_position(7)
        .no_resubscribe()
        .prefer(NodePreference::Follower);
    assert!(!options.resubscribe);
    assert_eq!(options.node_preference, NodePreference::Follower);
    let request = options.to_request(ALL_STREAM);
    assert_eq!(request.stream, "$all");
    assert!(request.from_end);
    assert_eq!(
        request.filter,
        Some(proto::SubscriptionFilter {
            stream_prefix: "order-".to_owned(),
            event_type_prefix: String::new(),
            event_type_regex: "Order(Placed|Paid)".to_owned(),
        })
    );
    assert_eq!(request.checkpoint_interval, 50);
    assert_eq!(
        request.consistency,
        proto::ReadConsistency::Linearizable as i32
    );
    assert_eq!(request.min_position, Some(7));

    let request = SubscribeOptions::default()
        .from(ReadFrom::At(12))
        .to_request("s");
    assert_eq!((request.from, request.from_end), (12, false));
}

fn three_nodes() -> (Endpoints, Vec<Arc<Node>>) {
    let urls: Vec<String> = (1..=3)
        .map(|n| format!("http://127.0.0.1:{}", 2112 + n))
        .collect();
    let endpoints = Endpoints::new(
        &urls,
        Duration::from_secs(1),
        None,
        None,
        Arc::new(Endpoint::connect_lazy),
    )
    .unwrap();
    let nodes = endpoints.all();
    (endpoints, nodes)
}

#[test]
fn pick_follows_the_preference_and_avoids_failed_nodes() {
    let (endpoints, nodes) = three_nodes();
    let same = |a: &Arc<Node>, b: &Arc<Node>| Arc::ptr_eq(a, b);

    // No leader known: every preference is "any", which starts at the first endpoint.
    for preference in [
        NodePreference::Leader,
        NodePreference::Follower,
        NodePreference::Any,
    ] {
        assert!(same(&endpoints.pick(preference, &[]), &nodes[0]));
    }

    endpoints.set_leader(&nodes[0]);
    assert!(same(
        &endpoints.pick(NodePreference::Leader, &[]),
        &nodes[0]
    ));
    assert!(same(
        &endpoints.pick(NodePreference::Follower, &[]),
        &nodes[1]
    ));
    assert!(same(&endpoints.pick(NodePreference::Any, &[]), &nodes[0]));

    let failed = [Arc::clone(&nodes[1])];
    assert!(same(
        &endpoints.pick(NodePreference::Follower, &failed),
        &nodes[2]
    ));
    // Every follower failed: fall back to the leader rather than a node known to be down.
    let failed = [Arc::clone(&nodes[1]), Arc::clone(&nodes[2])];
    assert!(same(
        &endpoints.pick(NodePreference::Follower, &failed),
        &nodes[0]
    ));
    // The leader failed: another node rather than the same one again.
    let failed = [Arc::clone(&nodes[0])];
    assert!(same(
        &endpoints.pick(NodePreference::Leader, &failed),
        &nodes[1]
    ));
}

#[test]
fn a_hint_back_to_a_node_that_failed_this_round_is_not_followed() {
    let (endpoints, nodes) = three_nodes();
    let mut retries = crate::policy::Retries::new(5);
    // The leader (node 1) is cut off: the attempt there times out...
    endpoints.set_leader(&nodes[0]);
    retries.failed(&endpoints, &nodes[0], "timed out".into(), None, true);
    // ...and node 2, on its side of the partition, still names it.
    let stale = Some(nodes[0].url.clone());
    retries.failed(&endpoints, &nodes[1], "not the leader".into(), stale, true);
    assert!(
        retries.take_hinted().is_none(),
        "the stale hint was followed"
    );
    assert!(
        endpoints.leader().is_none(),
        "the cut-off node is still taken as leader"
    );
    let next = endpoints.pick(NodePreference::Leader, retries.tried());
    assert!(Arc::ptr_eq(&next, &nodes[2]), "the untried node is next");
}

#[test]
fn avoid_moves_past_the_failed_node_and_starts_over_once_all_failed() {
    let (endpoints, nodes) = three_nodes();
    let mut tried = Vec::new();
    for node in &nodes {
        endpoints.avoid(node, &mut tried);
    }
    // All three failed: only the last stays avoided, and the next round starts after it.
    assert_eq!(tried.len(), 1);
    assert!(Arc::ptr_eq(&tried[0], &nodes[2]));
    assert!(Arc::ptr_eq(
        &endpoints.pick(NodePreference::Any, &tried),
        &nodes[0]
    ));
}
