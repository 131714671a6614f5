//! `cairn scavenge --wait` against real processes: every member gives the space of deleted
//! and truncated streams back while appends, reads and a subscription go on, a follower
//! SIGKILLed during it loses nothing, and every shown event is still read on every node.

use std::process::Command;
use std::time::Duration;

use cairn_client::{
    EventData, ExpectedRevision as E, ReadOptions, RecordedEvent, StreamMetadata, SubscribeOptions,
};

use crate::harness::{cairn_exe, runtime, TestCluster};

/// Streams written; the even ones are deleted (half soft, half tombstoned), the odd ones
/// keep their last append only (max count).
const STREAMS: usize = 24;
const APPENDS_PER_STREAM: usize = 6;
const EVENTS_PER_APPEND: usize = 4;
/// Bytes of one event's data: an append's frame spans several 4 KiB blocks, which a hole
/// frees.
const EVENT_DATA_BYTES: usize = 3_000;

fn batch() -> Vec<EventData> {
    let filler = "x".repeat(EVENT_DATA_BYTES);
    (0..EVENTS_PER_APPEND)
        .map(|_| EventData::json("Filled", &serde_json::json!({ "filler": filler })).unwrap())
        .collect()
}

async fn read_all(client: &cairn_client::Client) -> Vec<RecordedEvent> {
    use tokio_stream::StreamExt;
    let mut events = client
        .read_all(ReadOptions::forwards().max_count(u64::MAX))
        .await
        .expect("read $all");
    let mut out = Vec::new();
    while let Some(event) = events.next().await {
        out.push(event.expect("an event"));
    }
    out
}

/// Where each event is: stream, revision, position (what a failure prints).
fn places(events: &[RecordedEvent]) -> Vec<(String, u64, u64)> {
    events
        .iter()
        .map(|e| (e.stream.clone(), e.revision, e.position))
        .collect()
}

/// Bytes allocated (blocks, holes excluded) to a node's event-group files.
fn allocated_bytes(data_dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let groups = data_dir
        .join("store")
        .join(cairn_raft_store::disk::GROUP_DIR);
    std::fs::read_dir(&groups)
        .unwrap_or_else(|e| panic!("{groups:?}: {e}"))
        .map(|entry| entry.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn scavenge_gives_space_back_on_every_node_while_writes_reads_and_a_subscription_go_on() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    let leader = rt.block_on(cluster.wait_for_leader());
    let client = cluster.client();
    let shown_before = rt.block_on(async {
        for stream in 0..STREAMS {
            for _ in 0..APPENDS_PER_STREAM {
                client
                    .append(&format!("fill-{stream}"), E::Any, batch())
                    .await
                    .expect("append");
            }
        }
        for stream in 0..STREAMS {
            let name = format!("fill-{stream}");
            match stream % 4 {
                0 => drop(client.delete_stream(&name, E::Any).await.expect("delete")),
                2 => drop(
                    client
                        .tombstone_stream(&name, E::Any)
                        .await
                        .expect("tombstone"),
                ),
                _ => {
                    let last_append = StreamMetadata {
                        max_count: Some(EVENTS_PER_APPEND as u64),
                        ..Default::default()
                    };
                    client
                        .set_stream_metadata(&name, E::Any, last_append)
                        .await
                        .expect("metadata");
                }
            }
        }
        read_all(&client).await
    });
    let subscription = {
        let client = client.clone();
        rt.spawn(async move {
            use tokio_stream::StreamExt;
            let mut sub = client
                .subscribe_all(SubscribeOptions::default().no_resubscribe())
                .await
                .expect("subscribe");
            let mut seen: Vec<RecordedEvent> = Vec::new();
            while let Some(message) = sub.next().await {
                match message.expect("no error, no false gap alarm") {
                    cairn_client::SubscriptionMessage::Event(event) => {
                        let done = event.stream == "after-scavenge";
                        seen.push(event);
                        if done {
                            break;
                        }
                    }
                    _ => continue,
                }
            }
            seen
        })
    };
    let writer = {
        let client = client.clone();
        rt.spawn(async move {
            let mut written = 0u64;
            for n in 0..40 {
                let small =
                    vec![EventData::json("During", &serde_json::json!({ "n": n })).unwrap()];
                client
                    .append("during", E::Any, small)
                    .await
                    .expect("append during");
                written += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            written
        })
    };

    let groups_before: std::collections::HashMap<u64, u64> = (1..=3u64)
        .map(|id| (id, allocated_bytes(&cluster.data_dir(id))))
        .collect();
    let scavenge = Command::new(cairn_exe())
        .args(["scavenge", "--wait", "--json"])
        .env("CAIRN_ENDPOINTS", cluster.endpoints().join(","))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cairn scavenge");
    // A follower killed while the members reclaim, and started again: it finishes after.
    let follower = (1..=3u64).find(|&id| id != leader).expect("a follower");
    std::thread::sleep(Duration::from_millis(150));
    cluster.kill(follower);
    cluster.restart(follower);
    let out = scavenge.wait_with_output().expect("cairn scavenge ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("scavenge: position"),
        "progress on stderr: {stderr}"
    );

    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "one line per node: {lines:?}");
    // The even streams' 6 appends and the odd streams' first 5: 132 of 144 groups.
    let removed_events = lines[0]["removed_events"].as_u64().unwrap();
    assert_eq!(
        removed_events,
        (STREAMS / 2 * APPENDS_PER_STREAM + STREAMS / 2 * (APPENDS_PER_STREAM - 1)) as u64
            * EVENTS_PER_APPEND as u64
    );
    let removed_bytes = lines[0]["removed_bytes"].as_u64().unwrap();
    for line in &lines {
        let id = line["node"].as_u64().unwrap();
        let before = line["bytes_before"].as_u64().unwrap();
        let after = line["bytes_after"].as_u64().unwrap();
        assert_eq!(line["dead_bytes_left"], 0, "{line}");
        // The killed node's sled grows with its crash recovery; the others shrink as a whole.
        if id != follower {
            assert!(after < before, "node {id}: {before} -> {after} bytes");
        }
        // Whole blocks of each removed frame are freed (the Raft log keeps its own copy until
        // a snapshot lets it be purged).
        let groups_after = allocated_bytes(&cluster.data_dir(id));
        let groups_before = groups_before[&id];
        assert!(
            groups_after + removed_bytes / 2 <= groups_before,
            "node {id}: event groups {groups_before} -> {groups_after} bytes; {removed_bytes} removed"
        );
    }

    rt.block_on(async {
        let written = writer.await.expect("writer");
        client
            .append("after-scavenge", E::Any, batch().split_off(EVENTS_PER_APPEND - 1))
            .await
            .expect("append after");
        let seen = subscription.await.expect("subscription");
        let position = cluster.wait_until_converged().await;
        let leader_view = read_all(&client).await;
        // Every event shown before is shown after, in order; the new ones follow.
        assert_eq!(
            places(&leader_view[..shown_before.len()]),
            places(&shown_before)
        );
        assert!(leader_view[..shown_before.len()] == shown_before[..]);
        let during = leader_view.iter().filter(|e| e.stream == "during").count() as u64;
        assert_eq!(during, written, "every append during the scavenge is there");
        let (seen, shown) = (places(&seen), places(&leader_view));
        let differ = seen.iter().zip(&shown).position(|(a, b)| a != b);
        assert!(
            seen == shown,
            "the subscription saw {} events, $all shows {} (ending {:?}); first difference at {differ:?}: {:?} / {:?}",
            seen.len(),
            shown.len(),
            &shown[shown.len().saturating_sub(5)..],
            differ.map(|i| &seen[i]),
            differ.map(|i| &shown[i]),
        );
        for id in 1..=3u64 {
            cluster.wait_caught_up(id, position.checked_sub(1)).await;
            let node = cluster.node_client(id);
            let view = read_all(&node).await;
            assert_eq!(places(&view), places(&leader_view), "node {id}");
            assert!(view == leader_view, "node {id} reads the same events");
        }
    });
}
