//! Subscriptions served by any node, under node failures and slow consumers, and
//! read-your-writes on a follower.

use std::time::{Duration, Instant};

use cairn_client::{
    Client, EventData, ExpectedRevision, NodePreference, ReadOptions, SubscribeOptions,
    Subscription, SubscriptionMessage,
};
use tokio_stream::StreamExt;

use crate::harness::{runtime, TestCluster};

/// Longest a test waits for one subscription message.
const MESSAGE_WAIT: Duration = Duration::from_secs(20);

fn event(n: u64) -> EventData {
    EventData::json("Tested", &serde_json::json!({ "n": n })).expect("json")
}

async fn append_batch(client: &Client, stream: &str, count: u64) {
    let events = (0..count).map(event).collect();
    client
        .append(stream, ExpectedRevision::Any, events)
        .await
        .expect("append");
}

/// Collects events until `count` have arrived; returns their positions, and how many times the
/// subscription caught up.
async fn take_events(sub: &mut Subscription, count: usize) -> (Vec<u64>, usize) {
    let mut positions = Vec::with_capacity(count);
    let mut caught_up = 0;
    while positions.len() < count {
        let message = tokio::time::timeout(MESSAGE_WAIT, sub.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no message within {MESSAGE_WAIT:?} after {} events",
                    positions.len()
                )
            })
            .expect("the subscription ended")
            .expect("subscription error");
        match message {
            SubscriptionMessage::Event(e) => positions.push(e.position),
            SubscriptionMessage::CaughtUp { .. } => caught_up += 1,
            _ => {}
        }
    }
    (positions, caught_up)
}

fn assert_exactly(positions: &[u64], from: u64, what: &str) {
    let expected: Vec<u64> = (from..from + positions.len() as u64).collect();
    assert_eq!(
        positions,
        expected.as_slice(),
        "{what}: a gap or a duplicate"
    );
}

fn follower_of(leader: u64) -> u64 {
    if leader == 1 {
        2
    } else {
        1
    }
}

#[test]
fn a_subscription_served_by_a_follower_keeps_delivering_across_sigkill_of_the_leader() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let follower = follower_of(leader);
        let writer = cluster.client();
        append_batch(&writer, "before", 50).await;
        // One node only, no resubscription: the follower itself must keep serving.
        let mut sub = cluster
            .node_client(follower)
            .subscribe_all(SubscribeOptions::default().no_resubscribe())
            .await
            .expect("subscribe");
        let (first, _) = take_events(&mut sub, 50).await;
        assert_eq!(sub.served_by(), Some(follower));
        cluster.kill(leader);
        for _ in 0..10 {
            append_batch(&writer, "after", 5).await;
        }
        let (rest, _) = take_events(&mut sub, 50).await;
        let all: Vec<u64> = first.into_iter().chain(rest).collect();
        assert_exactly(&all, 0, "follower subscription across a leader kill");
    });
}

#[test]
fn a_subscriber_whose_node_is_killed_resubscribes_elsewhere_without_gap_or_duplicate() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let writer = cluster.client();
        let mut sub = cluster
            .client()
            .subscribe_all(SubscribeOptions::default().prefer(NodePreference::Follower))
            .await
            .expect("subscribe");
        append_batch(&writer, "s", 40).await;
        let (first, _) = take_events(&mut sub, 40).await;
        let serving = sub.served_by().expect("served by a node");
        assert_ne!(serving, leader, "the follower preference was not honoured");
        cluster.kill(serving);
        for _ in 0..20 {
            append_batch(&writer, "s", 3).await;
        }
        let (rest, mut caught_up) = take_events(&mut sub, 60).await;
        assert_ne!(
            sub.served_by(),
            Some(serving),
            "still served by the killed node?"
        );
        if caught_up == 0 {
            // Everything came as history: the switch to live follows the last event.
            let next = tokio::time::timeout(MESSAGE_WAIT, sub.next())
                .await
                .expect("a message");
            caught_up += usize::from(matches!(
                next,
                Some(Ok(SubscriptionMessage::CaughtUp { .. }))
            ));
        }
        assert_eq!(
            caught_up, 1,
            "the resubscription announces its switch to live once"
        );
        let all: Vec<u64> = first.into_iter().chain(rest).collect();
        assert_exactly(&all, 0, "subscription across the death of its node");
    });
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Idle subscribers held by one node (over several connections, as separate clients would).
const IDLE_SUBSCRIBERS: usize = 1_000;
const IDLE_CLIENTS: usize = 10;
/// A generous ceiling on a node's resident memory in these tests; the note records the
/// measured figures.
const NODE_RSS_CEILING_KIB: u64 = 512 * 1024;

#[test]
fn a_node_holds_1000_idle_subscribers_and_each_gets_the_next_event() {
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let node = follower_of(leader);
        let pid = cluster.pid(node).expect("pid");
        let before = rss_kib(pid);
        let clients: Vec<Client> = (0..IDLE_CLIENTS)
            .map(|_| cluster.node_client(node))
            .collect();
        let mut subs = Vec::with_capacity(IDLE_SUBSCRIBERS);
        for i in 0..IDLE_SUBSCRIBERS {
            let options = SubscribeOptions::default()
                .from(cairn_client::ReadFrom::End)
                .no_resubscribe();
            subs.push(
                clients[i % IDLE_CLIENTS]
                    .subscribe_all(options)
                    .await
                    .expect("subscribe"),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = rss_kib(pid);
        cluster
            .client()
            .append("wake", ExpectedRevision::Any, vec![event(1)])
            .await
            .expect("append");
        for sub in &mut subs {
            let (positions, _) = take_events(sub, 1).await;
            assert_eq!(positions, vec![0]);
        }
        eprintln!(
            "node rss: {before} KiB before, {held} KiB with {IDLE_SUBSCRIBERS} idle subscribers"
        );
        assert!(
            held < NODE_RSS_CEILING_KIB,
            "node RSS {held} KiB with idle subscribers"
        );
    });
}

const SLOW_EVENTS: u64 = 100_000;
const SLOW_BATCH: u64 = 100;
const SLOW_PAUSE: Duration = Duration::from_secs(10);

#[test]
fn a_subscriber_that_stops_reading_while_100k_events_arrive_gets_them_all_and_the_node_stays_bounded(
) {
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let node = follower_of(leader);
        let pid = cluster.pid(node).expect("pid");
        let mut sub = cluster
            .node_client(node)
            .subscribe_all(SubscribeOptions::default().no_resubscribe())
            .await
            .expect("subscribe");
        // It reads nothing from here on, while the events are appended.
        let writer = cluster.client();
        let started = Instant::now();
        let mut peak = 0;
        for _ in 0..SLOW_EVENTS / SLOW_BATCH {
            append_batch(&writer, "firehose", SLOW_BATCH).await;
            peak = peak.max(rss_kib(pid));
        }
        if let Some(rest) = SLOW_PAUSE.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        peak = peak.max(rss_kib(pid));
        let (positions, _) = take_events(&mut sub, SLOW_EVENTS as usize).await;
        assert_exactly(&positions, 0, "slow subscriber");
        eprintln!("serving node peak rss while the subscriber stalled: {peak} KiB");
        assert!(
            peak < NODE_RSS_CEILING_KIB,
            "node RSS {peak} KiB with a stalled subscriber"
        );
    });
}

#[test]
fn a_read_from_a_follower_with_the_writers_minimum_position_always_sees_the_write() {
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let follower = follower_of(leader);
        let writer = cluster.client();
        let reader = cluster.node_client(follower);
        for n in 0..50u64 {
            let written = writer
                .append("ryw", ExpectedRevision::Any, vec![event(n)])
                .await
                .expect("append");
            assert_eq!(writer.last_position(), Some(written.last_position));
            let options = ReadOptions::backwards()
                .max_count(1)
                .min_position(written.last_position);
            let mut events = reader
                .read_stream("ryw", options)
                .await
                .expect("read on the follower");
            let last = events.next().await.expect("an event").expect("event");
            assert_eq!(
                last.revision, written.last_revision,
                "the follower missed the caller's own write"
            );
        }
    });
}
