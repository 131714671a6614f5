//! The category, type and tag indexes on real processes: every node's index reads equal its
//! `$all` filtered, also after a SIGKILL and restart; a `$ce-` subscription sees history,
//! then `caught_up`, then live events; bad tags and unknown `$` names are refused, writing
//! nothing.

use std::process::Command;
use std::time::Duration;

use cairn_client::{
    Client, Error, EventData, ExpectedRevision, ReadFrom, ReadOptions, RecordedEvent,
    SubscribeOptions, SubscriptionMessage,
};
use tokio_stream::StreamExt;

use crate::harness::{cairn_exe, runtime, TestCluster};

/// Longest a test waits for one subscription message.
const MESSAGE_WAIT: Duration = Duration::from_secs(20);

fn tagged(event_type: &str, n: u64, tags: &[&str]) -> EventData {
    EventData::json(event_type, &serde_json::json!({ "n": n }))
        .expect("json")
        .with_tags(tags.iter().copied())
}

/// Appends a mix: several streams of two categories, types changing inside an append, tags
/// on some events. Returns the last position written.
async fn write_mix(client: &Client, round: u64) -> u64 {
    let mut last = 0;
    let appends: Vec<(String, Vec<EventData>)> = vec![
        (
            format!("order-{round}"),
            vec![
                tagged(
                    "OrderPlaced",
                    round,
                    &["customer:7", &format!("order:{round}")],
                ),
                tagged("OrderPaid", round, &[&format!("order:{round}")]),
                tagged("OrderPaid", round, &[]),
            ],
        ),
        (
            "customer-7".to_owned(),
            vec![tagged("Registered", round, &["customer:7"])],
        ),
        (
            format!("order-{}", round + 100),
            vec![tagged("OrderPlaced", round, &["customer:9"])],
        ),
    ];
    for (stream, events) in appends {
        let written = client
            .append(&stream, ExpectedRevision::Any, events)
            .await
            .expect("append");
        last = written.last_position;
    }
    last
}

async fn collect(client: &Client, name: &str, options: ReadOptions) -> Vec<RecordedEvent> {
    let mut events = client.read_stream(name, options).await.expect("read");
    let mut all = Vec::new();
    while let Some(event) = events.next().await {
        all.push(event.expect("event"));
    }
    all
}

fn in_index(name: &str, e: &RecordedEvent) -> bool {
    if let Some(category) = name.strip_prefix("$ce-") {
        return e.stream.split('-').next() == Some(category);
    }
    if let Some(event_type) = name.strip_prefix("$et-") {
        return e.event_type == event_type;
    }
    let tag = name.strip_prefix("$tag-").expect("an index name");
    e.tags.iter().any(|t| t == tag)
}

const INDEXES: [&str; 9] = [
    "$ce-order",
    "$ce-customer",
    "$et-OrderPlaced",
    "$et-OrderPaid",
    "$et-Registered",
    "$tag-customer:7",
    "$tag-customer:9",
    "$tag-order:1",
    "$tag-order:2",
];

/// On every node: each index, forwards from the start and backwards from the end, is the
/// node's own `$all` (read once it has applied `upto`) filtered by it.
async fn assert_indexes_equal_filtered_all(cluster: &TestCluster, upto: u64, when: &str) {
    for id in 1..=cluster.size() {
        let node = cluster.node_client(id);
        let at_least = || ReadOptions::forwards().min_position(upto);
        let all = collect(&node, "$all", at_least()).await;
        assert!(
            all.len() as u64 > upto,
            "{when}: node {id} has {}",
            all.len()
        );
        for name in INDEXES {
            let wanted: Vec<RecordedEvent> =
                all.iter().filter(|e| in_index(name, e)).cloned().collect();
            assert!(!wanted.is_empty(), "{when}: {name} is empty");
            let forwards = collect(&node, name, at_least()).await;
            assert_eq!(forwards, wanted, "{when}: node {id}, {name}");
            let backwards = collect(&node, name, ReadOptions::backwards().min_position(upto)).await;
            let mut reversed = wanted.clone();
            reversed.reverse();
            assert_eq!(backwards, reversed, "{when}: node {id}, {name} backwards");
            // From a position in the middle: the events at or after it.
            let middle = wanted[wanted.len() / 2].position;
            let from_middle = collect(&node, name, at_least().from(ReadFrom::At(middle))).await;
            assert_eq!(
                from_middle,
                wanted[wanted.len() / 2..],
                "{when}: node {id}, {name}"
            );
        }
    }
}

#[test]
fn index_reads_equal_filtered_all_on_every_node_also_after_a_sigkill_and_restart() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let client = cluster.client();
        let mut upto = 0;
        for round in 1..=2 {
            upto = write_mix(&client, round).await;
        }
        assert_indexes_equal_filtered_all(&cluster, upto, "before the kill").await;

        let victim = if leader == 1 { 2 } else { 1 };
        cluster.kill(victim);
        for round in 3..=4 {
            upto = write_mix(&client, round).await;
        }
        cluster.restart(victim);
        cluster.wait_caught_up(victim, Some(upto)).await;
        assert_indexes_equal_filtered_all(&cluster, upto, "after SIGKILL and restart").await;
    });
}

#[test]
fn a_category_subscription_sees_history_then_caught_up_then_live_events_only_of_its_category() {
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let client = cluster.client();
        let upto = write_mix(&client, 1).await;
        let history: Vec<u64> = collect(
            &client,
            "$ce-order",
            ReadOptions::forwards().min_position(upto),
        )
        .await
        .iter()
        .map(|e| e.position)
        .collect();
        assert_eq!(history.len(), 4);
        // Served by a follower, like any subscription.
        let follower = if leader == 1 { 2 } else { 1 };
        let mut sub = cluster
            .node_client(follower)
            .subscribe(
                "$ce-order",
                SubscribeOptions::default()
                    .from(ReadFrom::At(0))
                    .min_position(upto),
            )
            .await
            .expect("subscribe");
        let mut seen = Vec::new();
        let mut caught_up_after = None;
        let mut live_written = Vec::new();
        while seen.len() < history.len() + 2 {
            let message = tokio::time::timeout(MESSAGE_WAIT, sub.next())
                .await
                .expect("a message in time")
                .expect("the subscription goes on")
                .expect("no error");
            match message {
                SubscriptionMessage::Event(e) => {
                    assert!(e.stream.starts_with("order-"), "{e:?}");
                    seen.push(e.position);
                }
                SubscriptionMessage::CaughtUp { .. } if caught_up_after.is_none() => {
                    caught_up_after = Some(seen.len());
                    // Live: one event of another category, then two of this one.
                    for (stream, event_type) in [
                        ("customer-1", "Registered"),
                        ("order-50", "OrderPlaced"),
                        ("order-51", "OrderPlaced"),
                    ] {
                        let written = client
                            .append(
                                stream,
                                ExpectedRevision::Any,
                                vec![tagged(event_type, 50, &[])],
                            )
                            .await
                            .expect("append");
                        if stream.starts_with("order-") {
                            live_written.push(written.last_position);
                        }
                    }
                }
                _ => {}
            }
        }
        assert_eq!(
            caught_up_after,
            Some(history.len()),
            "history first, then caught_up"
        );
        assert_eq!(seen[..history.len()], history[..]);
        assert_eq!(
            seen[history.len()..],
            live_written[..],
            "then live, in $all order"
        );
    });
}

#[test]
fn bad_tags_and_unknown_index_names_are_refused_with_a_clear_error_and_write_nothing() {
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let client = cluster.client();
        let upto = write_mix(&client, 1).await;
        let before = collect(&client, "$all", ReadOptions::forwards().min_position(upto)).await;

        let many: Vec<String> = (0..17).map(|t| format!("t{t}")).collect();
        let too_many = tagged("T", 1, &[]).with_tags(many);
        let blank = tagged("T", 1, &["ok", "  "]);
        let long = tagged("T", 1, &[&"x".repeat(256)]);
        for (what, event, field) in [
            ("too many tags", too_many, "events[0].tags"),
            ("a blank tag", blank, "events[0].tags[1]"),
            ("a tag over 255 bytes", long, "events[0].tags[0]"),
        ] {
            match client.append("order-9", ExpectedRevision::Any, vec![event]).await {
                Err(Error::InvalidArgument(message)) => {
                    assert!(message.contains(field), "{what}: {message}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        for name in ["$xx-order", "$ce-", "$tags-a"] {
            match client.read_stream(name, ReadOptions::forwards()).await {
                Err(Error::InvalidArgument(message)) => assert!(
                    message.contains("$ce-<category>") && message.contains("$tag-<tag>"),
                    "{name}: {message}"
                ),
                Err(other) => panic!("{name}: {other:?}"),
                Ok(mut events) => match events.next().await {
                    Some(Err(Error::InvalidArgument(message))) => assert!(
                        message.contains("$ce-<category>"),
                        "{name}: {message}"
                    ),
                    other => panic!("{name}: {other:?}"),
                },
            }
            let refused = client
                .subscribe(name, SubscribeOptions::default())
                .await
                .err();
            assert!(
                matches!(&refused, Some(Error::InvalidArgument(m)) if m.contains("$et-<event type>")),
                "{name}: {refused:?}"
            );
        }
        // Appending to an index name stays refused.
        let to_index = client
            .append("$ce-order", ExpectedRevision::Any, vec![tagged("T", 1, &[])])
            .await;
        assert!(matches!(to_index, Err(Error::InvalidArgument(_))), "{to_index:?}");

        // The command line: exit 2, one line naming the field.
        let endpoints = cluster.endpoints().join(",");
        let cli = Command::new(cairn_exe())
            .args(["append", "order-9", "--data", "{}", "--tag", "a", "--tag", ""])
            .env("CAIRN_ENDPOINTS", &endpoints)
            .output()
            .expect("run cairn");
        assert_eq!(cli.status.code(), Some(2), "{cli:?}");
        let stderr = String::from_utf8_lossy(&cli.stderr);
        assert!(stderr.contains("events[0].tags[1]"), "{stderr}");

        let after = collect(&client, "$all", ReadOptions::forwards()).await;
        assert_eq!(after, before, "nothing was written");
    });
}

#[test]
fn the_command_line_appends_tags_and_reads_an_index_with_them() {
    let cluster = TestCluster::start(3);
    runtime().block_on(cluster.wait_for_leader());
    let endpoints = cluster.endpoints().join(",");
    let cairn = |args: &[&str]| {
        Command::new(cairn_exe())
            .args(args)
            .env("CAIRN_ENDPOINTS", &endpoints)
            .output()
            .expect("run cairn")
    };
    let appended = cairn(&[
        "append",
        "order-1",
        "--type",
        "OrderPlaced",
        "--data",
        r#"{"total":5}"#,
        "--tag",
        "customer:7",
        "--tag",
        "order:1",
    ]);
    assert_eq!(appended.status.code(), Some(0), "{appended:?}");
    let other = cairn(&[
        "append",
        "customer-7",
        "--data",
        "{}",
        "--tag",
        "customer:7",
    ]);
    assert_eq!(other.status.code(), Some(0), "{other:?}");

    let text = cairn(&["read", "$tag-customer:7"]);
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&text.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("order-1@0  position 0  OrderPlaced  tags customer:7,order:1  "),
        "{lines:?}"
    );
    let json = cairn(&["read", "$ce-order", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{json:?}");
    let event: serde_json::Value =
        serde_json::from_slice(json.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(event["stream"], "order-1");
    assert_eq!(event["tags"], serde_json::json!(["customer:7", "order:1"]));
    let unknown = cairn(&["read", "$nope"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
}
