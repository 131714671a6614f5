//! Membership changes with real processes: scaling 3 -> 5 -> 3 under load (the new nodes start
//! empty and catch up by snapshot; the leader is one of the nodes removed), and bad input to
//! `cairn cluster add-node` / `remove-node`, refused with a one-line error and nothing changed.

use std::process::Output;
use std::time::{Duration, Instant};

use cairn_client::{Client, ClientConfig, EventData, ExpectedRevision, ReadOptions, RecordedEvent};
use cairn_node::app::SNAPSHOT_EVERY_LOG_ENTRIES;
use tokio_stream::StreamExt;

use crate::harness::{cairn_exe, free_port, runtime, TestCluster, CLUSTER_WAIT};
use crate::load::{check_history, read_all, Load};
use crate::observability::scrape;

const WRITERS: usize = 4;
/// Appends (log entries) written before the first node joins: past the first snapshot, so the
/// leader purges the log that an empty node would need and has to send it the snapshot.
/// One round of filling. Group commit packs concurrent appends into fewer log entries, so the
/// fill goes on round by round until the leader has snapshotted and purged.
const FILL_ROUND_APPENDS: u64 = SNAPSHOT_EVERY_LOG_ENTRIES;
/// Most fill rounds (each entry holds at most `FILL_WRITERS` appends, so a few suffice).
const MAX_FILL_ROUNDS: u64 = 2 * FILL_WRITERS;
/// Concurrent appenders while filling.
const FILL_WRITERS: u64 = 16;
const RUN_AFTER: Duration = Duration::from_millis(1000);
const POLL: Duration = Duration::from_millis(100);
/// How long a removed node's applied position must stand still to count as settled.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a removed node may take to exit after SIGTERM.
const EXIT_WAIT: Duration = Duration::from_secs(20);
/// What a joining node logs when it installs the leader's snapshot (`network::raft_server`).
const SNAPSHOT_INSTALLED: &str = "installing a snapshot received from the leader";

/// Runs `cairn ARGS` against `endpoints` off the async workers (it blocks until it exits).
async fn cairn(endpoints: &str, args: &[&str]) -> Output {
    let endpoints = endpoints.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(cairn_exe())
            .args(&args)
            .env("CAIRN_ENDPOINTS", endpoints)
            .output()
            .expect("run cairn")
    })
    .await
    .expect("cairn task")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON: {stdout:?}: {e}"))
}

fn voters(output: &Output) -> Vec<u64> {
    let value = json(output);
    value["voters"]
        .as_array()
        .expect("voters")
        .iter()
        .map(|v| v.as_u64().expect("an id"))
        .collect()
}

/// `FILL_ROUND_APPENDS` one-event appends, from `FILL_WRITERS` tasks.
async fn fill(client: &Client, round: u64) {
    let per_writer = FILL_ROUND_APPENDS.div_ceil(FILL_WRITERS);
    let tasks: Vec<_> = (0..FILL_WRITERS)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let event =
                        EventData::json("Filled", &serde_json::json!({ "round": round, "i": i }))
                            .expect("json")
                            .with_tags([format!("writer:{}", n % 4)]);
                    client
                        .append(&format!("fill-{n}"), ExpectedRevision::Any, vec![event])
                        .await
                        .expect("fill append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("fill task");
    }
}

/// Whether an event is in an index, as the test sees it.
type InIndex = fn(&RecordedEvent) -> bool;

/// An index's events up to and including `position`, once node `client` has applied it.
async fn read_index_upto(client: &Client, index: &str, position: u64) -> Vec<RecordedEvent> {
    let options = ReadOptions::forwards().min_position(position);
    let mut events = client
        .read_stream(index, options)
        .await
        .expect("read index");
    let mut read = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.expect("event");
        if event.position > position {
            break;
        }
        read.push(event);
    }
    read
}

/// `$all` up to and including `position`, as node `client` serves it once it has applied it.
async fn read_upto(client: &Client, position: u64) -> Vec<RecordedEvent> {
    let options = ReadOptions::forwards()
        .max_count(position + 1)
        .min_position(position);
    let mut events = client.read_all(options).await.expect("read $all");
    let mut all = Vec::new();
    while let Some(event) = events.next().await {
        all.push(event.expect("event"));
    }
    all
}

#[test]
fn scaling_from_three_to_five_and_back_under_load_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let client = cluster.client();
        // The leader builds the snapshot and purges the log behind it by itself, a moment
        // after enough entries; fill until it has, so that the joining nodes need the snapshot.
        let filling = Instant::now();
        let mut rounds = 0;
        loop {
            let leader = cluster.wait_for_leader().await;
            if scrape(&cluster, leader).value("cairn_raft_purged_index", &[]) >= 0.0 {
                break;
            }
            assert!(
                rounds < MAX_FILL_ROUNDS,
                "node {leader} purged nothing of its log after {rounds} rounds of {FILL_ROUND_APPENDS} appends"
            );
            fill(&client, rounds).await;
            rounds += 1;
            let settle = Instant::now() + Duration::from_secs(2);
            while Instant::now() < settle
                && scrape(&cluster, leader).value("cairn_raft_purged_index", &[]) < 0.0
            {
                tokio::time::sleep(POLL).await;
            }
        }
        eprintln!(
            "scaling: {} appends written in {} ms until the leader purged its log",
            rounds * FILL_ROUND_APPENDS,
            filling.elapsed().as_millis()
        );
        let load = Load::start(&client, "scaling", WRITERS);
        let load_started = load.started;

        // 3 -> 5: two nodes with empty data directories join, one through the command line,
        // one through the client library.
        let four = cluster.add_joiner().expect("a slot for node 4");
        let five = cluster.add_joiner().expect("a slot for node 5");
        cluster.start_node(four).expect("start node 4");
        cluster.start_node(five).expect("start node 5");
        wait_listening(&cluster, four).await;
        wait_listening(&cluster, five).await;
        let endpoints = cluster.endpoints()[..3].join(",");
        let adding = Instant::now();
        let added = cairn(
            &endpoints,
            &["cluster", "add-node", "4", cluster.addr(four), "--json"],
        )
        .await;
        assert_eq!(added.status.code(), Some(0), "{}", stderr(&added));
        assert_eq!(voters(&added), vec![1, 2, 3, 4]);
        let added_four = adding.elapsed();
        let adding = Instant::now();
        let membership = client
            .add_node(five, cluster.addr(five))
            .await
            .expect("add node 5");
        assert_eq!(membership.voters, vec![1, 2, 3, 4, 5]);
        assert!(membership.learners.is_empty() && !membership.unchanged);
        let added_five = adding.elapsed();
        for id in [four, five] {
            let log = std::fs::read_to_string(cluster.log_path(id)).expect("node log");
            assert!(
                log.contains(SNAPSHOT_INSTALLED),
                "node {id} started empty after the log was purged, so it must have caught up by snapshot"
            );
        }

        // Both caught up: what they serve from their own state is the leader's $all.
        let upto = load.last_position().expect("writes were acknowledged");
        let leader = cluster.wait_for_leader().await;
        let reference = read_upto(&cluster.node_client(leader), upto).await;
        assert_eq!(reference.len() as u64, upto + 1);
        for id in [four, five] {
            let theirs = read_upto(&cluster.node_client(id), upto).await;
            assert_eq!(theirs, reference, "node {id}'s $all differs from the leader's");
            // Its indexes, rebuilt from the snapshot, are its $all filtered.
            let indexes: [(&str, InIndex); 3] = [
                ("$ce-fill", |e| e.stream.starts_with("fill-")),
                ("$et-Filled", |e| e.event_type == "Filled"),
                ("$tag-writer:3", |e| e.tags == ["writer:3"]),
            ];
            for (index, wanted) in indexes {
                let read = read_index_upto(&cluster.node_client(id), index, upto).await;
                let filtered: Vec<_> = reference.iter().filter(|e| wanted(e)).cloned().collect();
                assert!(!filtered.is_empty(), "{index}");
                assert_eq!(read, filtered, "node {id}'s {index} after a snapshot");
            }
            // Its status reaches every member at its membership address (an unreachable one
            // shows as "unknown"), and every one is a voter.
            let seen = cluster.members_seen_by(id).await;
            let ids: Vec<u64> = seen.iter().map(|m| m.0).collect();
            assert_eq!(ids, vec![1, 2, 3, 4, 5], "node {id}'s status: {seen:?}");
            assert!(
                seen.iter().all(|m| m.1 == "leader" || m.1 == "follower"),
                "node {id}'s status: {seen:?}"
            );
            // It forwards an append to the leader it learnt from the membership.
            let forwarding = Client::with_config(ClientConfig {
                endpoints: vec![cluster.endpoint(id)],
                leader_only: false,
                ..ClientConfig::default()
            })
            .expect("client");
            let event = EventData::json("Forwarded", &serde_json::json!({ "via": id }))
                .expect("json");
            forwarding
                .append(&format!("via-{id}"), ExpectedRevision::NoStream, vec![event])
                .await
                .unwrap_or_else(|e| panic!("append forwarded by node {id}: {e}"));
        }

        // 5 -> 3: the leader first (it hands leadership over, the new leader removes it), then
        // one of the new nodes. Each removed node is then stopped.
        let leader = cluster.wait_for_leader().await;
        let removing = Instant::now();
        let removed = cairn(
            &endpoints,
            &["cluster", "remove-node", &leader.to_string(), "--json"],
        )
        .await;
        assert_eq!(removed.status.code(), Some(0), "{}", stderr(&removed));
        assert!(!voters(&removed).contains(&leader), "{}", json(&removed));
        assert_eq!(voters(&removed).len(), 4);
        let removed_leader = removing.elapsed();
        cluster.terminate(leader);
        assert!(cluster.wait_exit(leader, EXIT_WAIT).await.is_some());
        let second = if leader == four { five } else { four };
        let removing = Instant::now();
        let membership = client.remove_node(second).await.expect("remove a node");
        let removed_second = removing.elapsed();
        let remaining: Vec<u64> = (1..=5).filter(|id| ![leader, second].contains(id)).collect();
        assert_eq!(membership.voters, remaining);
        // Removed, it is no longer replicated to: once it has applied what was committed while
        // it was a member (it may still be applying that when the removal returns), what it has
        // applied stands still while the others go on.
        let frozen = settled_applied_position(&cluster, second).await;
        let acked_before = load.acked();
        tokio::time::sleep(RUN_AFTER).await;
        assert!(load.acked() > acked_before, "writes stopped");
        assert_eq!(
            applied_position(&cluster, second).await,
            frozen,
            "node {second} still receives the log after its removal"
        );
        cluster.terminate(second);
        assert!(cluster.wait_exit(second, EXIT_WAIT).await.is_some());
        let shrunk = Instant::now();
        tokio::time::sleep(RUN_AFTER).await;
        let history = load.stop().await;
        assert!(
            history.acked_after(shrunk) > 0,
            "no write succeeded after the cluster shrank back to three"
        );

        // The survivors agree on the members (the removed ones are gone) and on $all, which
        // holds every acknowledged write once.
        let new_leader = cluster.wait_for_leader().await;
        let seen = cluster.members_seen_by(new_leader).await;
        assert_eq!(
            seen.iter().map(|m| m.0).collect::<Vec<_>>(),
            remaining,
            "{seen:?}"
        );
        let mut reference = None;
        for &id in &remaining {
            cluster.wait_caught_up(id, load_position(&history)).await;
            let all = read_all(&cluster.node_client(id)).await;
            check_history(id, &all, &history);
            let ids: Vec<_> = all.iter().map(|e| e.id).collect();
            match &reference {
                None => reference = Some(ids),
                Some(reference) => assert_eq!(&ids, reference, "node {id} has a different $all"),
            }
        }
        let (gap, _) = history.longest_gap(load_started, shrunk);
        eprintln!(
            "scaling: add node 4 {} ms (CLI), add node 5 {} ms, remove leader {leader} {} ms (CLI), remove node {second} {} ms; longest write gap {} ms; acked {}, unknown {}",
            added_four.as_millis(),
            added_five.as_millis(),
            removed_leader.as_millis(),
            removed_second.as_millis(),
            gap.as_millis(),
            history.acked.len(),
            history.unknown.len()
        );
    });
}

/// What node `id` has applied, by its own account.
async fn applied_position(cluster: &TestCluster, id: u64) -> u64 {
    let status = cluster.node_client(id).status().await.expect("status");
    status
        .members
        .iter()
        .find(|m| m.id == id)
        .map_or(0, |m| m.applied_position)
}

/// What node `id` has applied once it stops changing for `SETTLE` (bounded by `EXIT_WAIT`).
async fn settled_applied_position(cluster: &TestCluster, id: u64) -> u64 {
    let deadline = Instant::now() + EXIT_WAIT;
    let mut last = applied_position(cluster, id).await;
    loop {
        tokio::time::sleep(SETTLE).await;
        let now = applied_position(cluster, id).await;
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} still applies new entries {EXIT_WAIT:?} after its removal"
        );
        last = now;
    }
}

/// The highest acknowledged position.
fn load_position(history: &crate::load::History) -> Option<u64> {
    history.acked.iter().map(|a| a.position).max()
}

/// Runs `cairn cluster ARGS`; asserts the exit code and a one-line error on stderr.
async fn refused(endpoints: &str, args: &[&str], code: i32, mentions: &str) {
    let mut full = vec!["cluster"];
    full.extend_from_slice(args);
    let output = cairn(endpoints, &full).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
    assert!(err.starts_with("error: "), "{args:?}: {err:?}");
    assert!(
        err.contains(mentions),
        "{args:?}: {err:?} should mention {mentions:?}"
    );
}

/// A node cannot be added before it listens (the leader checks it answers with its id); on a
/// loaded machine a just-started process takes a moment to get there.
async fn wait_listening(cluster: &TestCluster, node: u64) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    while tokio::net::TcpStream::connect(cluster.addr(node))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "node {node} did not listen within {CLUSTER_WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[test]
fn membership_changes_with_bad_input_are_refused_and_change_nothing() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let endpoints = cluster.endpoints().join(",");
        // A node that was started but never added: it must wait, not bootstrap.
        let four = cluster.add_joiner().expect("a slot for node 4");
        cluster.start_node(four).expect("start node 4");
        wait_listening(&cluster, four).await;
        let addr4 = cluster.addr(four).to_owned();
        let addr1 = cluster.addr(1).to_owned();
        let nobody = format!("127.0.0.1:{}", free_port());
        let before = cluster.members_seen_by(leader).await;
        assert_eq!(before.len(), 3);

        refused(&endpoints, &["add-node", "4", "127.0.0.1"], 2, "HOST:PORT").await;
        refused(&endpoints, &["add-node", "4", "http://h:1"], 2, "HOST:PORT").await;
        refused(&endpoints, &["add-node", "x", &addr4], 2, "not a node id").await;
        refused(&endpoints, &["add-node", "2", &addr4], 2, "already a voter").await;
        refused(&endpoints, &["add-node", "5", &addr4], 2, "not node 5").await;
        refused(
            &endpoints,
            &["add-node", "4", &addr1],
            2,
            "address of node 1",
        )
        .await;
        refused(&endpoints, &["add-node", "6", &nobody], 1, "did not answer").await;
        refused(&endpoints, &["remove-node", "9"], 2, "not a member").await;
        refused(&endpoints, &["remove-node", "2"], 2, "would leave 2").await;
        let missing = cairn(&endpoints, &["cluster", "remove-node"]).await;
        assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));

        assert_eq!(
            cluster.members_seen_by(leader).await,
            before,
            "membership changed"
        );
        let joiner = cluster.node_client(four).status().await.expect("status");
        assert!(
            joiner.members.is_empty() && joiner.leader_id.is_none(),
            "node 4 must wait to be added, not form a cluster: {joiner:?}"
        );
        // Still a working cluster.
        cluster
            .client()
            .append(
                "after-bad-input",
                ExpectedRevision::NoStream,
                vec![EventData::json("Ok", &serde_json::json!({})).expect("json")],
            )
            .await
            .expect("append");
    });

    // The last voter, even with --force.
    let single = TestCluster::start(1);
    runtime().block_on(async {
        single.wait_for_leader().await;
        let endpoints = single.endpoints().join(",");
        refused(
            &endpoints,
            &["remove-node", "1", "--force"],
            2,
            "last voter",
        )
        .await;
        assert_eq!(single.members_seen_by(1).await, vec![(1, "leader")]);
    });
}

/// How long a removed node may take to find out (one membership check, 0.5 s, and a call).
const REMOVAL_NOTICE_WAIT: Duration = Duration::from_secs(10);

/// The next event a subscription delivers, skipping the other messages; panics after
/// [`REMOVAL_NOTICE_WAIT`].
async fn next_event(subscription: &mut cairn_client::Subscription) -> RecordedEvent {
    let wait = tokio::time::timeout(REMOVAL_NOTICE_WAIT, async {
        while let Some(message) = subscription.next().await {
            if let cairn_client::SubscriptionMessage::Event(event) = message.expect("message") {
                return event;
            }
        }
        panic!("the subscription ended");
    });
    wait.await.expect("an event within the wait")
}

#[test]
fn a_removed_node_refuses_reads_naming_the_members_and_is_not_ready() {
    let cluster = TestCluster::start(4);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let removed = (1..=4).find(|id| *id != leader).expect("a follower");
        let client = cluster.client();
        let before = EventData::json("Ordered", &serde_json::json!({ "n": 1 })).expect("json");
        let written = client
            .append("orders-1", ExpectedRevision::NoStream, vec![before])
            .await
            .expect("append before the removal");
        cluster
            .wait_caught_up(removed, Some(written.last_position))
            .await;
        // Two subscriptions on the node to be removed: one that follows the cluster, one
        // that must not move.
        let via_removed = cluster.node_client(removed);
        let mut moving = via_removed
            .subscribe("orders-1", cairn_client::SubscribeOptions::default())
            .await
            .expect("subscribe");
        assert_eq!(next_event(&mut moving).await.revision, 0);
        assert_eq!(moving.served_by(), Some(removed));
        let mut staying = via_removed
            .subscribe(
                "orders-1",
                cairn_client::SubscribeOptions::default().no_resubscribe(),
            )
            .await
            .expect("subscribe");
        assert_eq!(next_event(&mut staying).await.revision, 0);

        let endpoints = cluster.endpoints().join(",");
        let output = cairn(
            &endpoints,
            &["cluster", "remove-node", &removed.to_string(), "--json"],
        )
        .await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let members: Vec<u64> = (1..=4).filter(|id| *id != removed).collect();
        assert_eq!(voters(&output), members);
        let after = EventData::json("Ordered", &serde_json::json!({ "n": 2 })).expect("json");
        client
            .append("orders-1", ExpectedRevision::Exact(0), vec![after])
            .await
            .expect("append after the removal");

        // It finds out and says so in its status.
        let deadline = Instant::now() + REMOVAL_NOTICE_WAIT;
        loop {
            let seen = cluster.members_seen_by(removed).await;
            if seen.contains(&(removed, "removed")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {removed} does not call itself removed {REMOVAL_NOTICE_WAIT:?} after its removal: {seen:?}"
            );
            tokio::time::sleep(POLL).await;
        }

        // A read from it is refused, naming the members and pointing at the leader.
        let mut raw = cairn_client::proto::streams_client::StreamsClient::connect(
            cluster.endpoint(removed),
        )
        .await
        .expect("connect");
        let refused = raw
            .read(cairn_client::proto::ReadRequest {
                stream: "orders-1".into(),
                ..Default::default()
            })
            .await
            .expect_err("a removed node must not serve a read");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
        let message = refused.message();
        assert!(
            message.contains(&format!("node {removed} was removed from the cluster")),
            "{message}"
        );
        for member in &members {
            assert!(
                message.contains(&format!("node {member} at {}", cluster.endpoint(*member))),
                "{message} should name node {member}"
            );
        }
        assert!(
            refused
                .metadata()
                .get(cairn_client::LEADER_METADATA_KEY)
                .is_some(),
            "{refused:?} should carry the leader's endpoint"
        );

        // A client that knows only the removed node is sent on to a member and reads the
        // event written after the removal.
        let mut events = via_removed
            .read_stream("orders-1", ReadOptions::forwards())
            .await
            .expect("read through the removed node");
        let mut revisions = Vec::new();
        while let Some(event) = events.next().await {
            revisions.push(event.expect("event").revision);
        }
        assert_eq!(revisions, vec![0, 1]);

        // Not ready, saying why.
        let http = cluster.http_endpoint(removed).expect("nodes have --http");
        let (code, body) =
            crate::observability::http_get(&http, "/health/ready").expect("GET /health/ready");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("was removed from the cluster"), "{body}");

        // Its subscriptions end: the one that may move goes on at a member with the new event,
        // the other ends with the refusal.
        let moved = next_event(&mut moving).await;
        assert_eq!(moved.revision, 1);
        assert_ne!(moving.served_by(), Some(removed));
        let ended = tokio::time::timeout(REMOVAL_NOTICE_WAIT, async {
            loop {
                match staying.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Some(e),
                    None => return None,
                }
            }
        })
        .await
        .expect("the subscription on the removed node ends");
        let ended = ended.expect("with an error");
        assert!(ended.to_string().contains("was removed"), "{ended}");

        // Its log says what it is.
        let log = std::fs::read_to_string(cluster.log_path(removed)).expect("node log");
        assert!(log.contains("was removed from the cluster"), "{log}");
    });
}
