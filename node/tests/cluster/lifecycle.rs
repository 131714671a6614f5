//! Stream lifecycle end to end through the CLI against real processes: metadata, soft delete
//! and recreation, tombstone (exit 5), retention on stream, `$all`, index and DCB reads, every
//! node agreeing, bad input.

use std::process::{Command, Output};

use crate::harness::{cairn_exe, runtime, TestCluster};

fn cairn(endpoints: &str, args: &[&str]) -> Output {
    Command::new(cairn_exe())
        .args(args)
        .env("CAIRN_ENDPOINTS", endpoints)
        .output()
        .expect("run cairn")
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

/// Revisions of `stream` as `read` prints them (`None`: the exit code, if not 0).
fn revisions(endpoints: &str, stream: &str) -> Result<Vec<u64>, Option<i32>> {
    let out = cairn(endpoints, &["read", stream, "--json"]);
    if code(&out) != Some(0) {
        return Err(code(&out));
    }
    Ok(json_lines(&out)
        .iter()
        .map(|e| e["revision"].as_u64().expect("revision"))
        .collect())
}

/// `(stream, revision)` of every event `read-all` prints.
fn all(endpoints: &str) -> Vec<(String, u64)> {
    let out = cairn(endpoints, &["read-all", "--json"]);
    assert_eq!(code(&out), Some(0), "{out:?}");
    json_lines(&out)
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().expect("stream").to_owned(),
                e["revision"].as_u64().expect("revision"),
            )
        })
        .collect()
}

fn append(endpoints: &str, stream: &str, expected: &str) -> Output {
    cairn(
        endpoints,
        &[
            "append",
            stream,
            "--data",
            "{}",
            "--expected",
            expected,
            "--json",
        ],
    )
}

#[test]
fn stream_meta_delete_and_tombstone_through_the_cli_agree_on_every_node() {
    let cluster = TestCluster::start(3);
    // Reads are local: asked of the leader, they see every acknowledged change at once.
    let leader = runtime().block_on(cluster.wait_for_leader());
    let endpoints = cluster.endpoint(leader);
    for _ in 0..5 {
        assert_eq!(code(&append(&endpoints, "orders-1", "any")), Some(0));
    }
    assert_eq!(code(&append(&endpoints, "orders-2", "any")), Some(0));

    // Metadata: none yet, then set, versioned.
    let none = cairn(&endpoints, &["stream", "meta", "orders-1"]);
    assert_eq!(code(&none), Some(0), "{none:?}");
    assert_eq!(json_lines(&none)[0]["revision"], serde_json::Value::Null);
    let set = cairn(
        &endpoints,
        &[
            "stream",
            "meta",
            "orders-1",
            "--max-count",
            "2",
            "--custom",
            r#"{"owner":"billing"}"#,
        ],
    );
    assert_eq!(code(&set), Some(0), "{set:?}");
    let shown = &json_lines(&set)[0];
    assert_eq!(shown["revision"], 0);
    assert_eq!(shown["max_count"], 2);
    assert_eq!(shown["custom"]["owner"], "billing");
    assert_eq!(revisions(&endpoints, "orders-1"), Ok(vec![3, 4]));
    let of_orders_1: Vec<u64> = all(&endpoints)
        .into_iter()
        .filter(|(s, _)| s == "orders-1")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(of_orders_1, vec![3, 4], "$all hides what max count hides");
    // So do the index reads and DCB queries, through one mechanism (one check each).
    let orders_in = |args: &[&str]| -> Vec<(String, u64)> {
        let out = cairn(&endpoints, args);
        assert_eq!(code(&out), Some(0), "{args:?}: {out:?}");
        json_lines(&out)
            .iter()
            .map(|e| {
                let stream = e["stream"].as_str().expect("stream").to_owned();
                (stream, e["revision"].as_u64().expect("revision"))
            })
            .filter(|(stream, _)| stream.starts_with("orders-"))
            .collect()
    };
    let shown = vec![
        ("orders-1".to_owned(), 3),
        ("orders-1".to_owned(), 4),
        ("orders-2".to_owned(), 0),
    ];
    for args in [
        &["read", "$ce-orders", "--json"][..],
        &["read", "$et-event", "--json"],
        &["dcb", "read", "--type", "event", "--json"],
    ] {
        assert_eq!(
            orders_in(args),
            shown,
            "{args:?} hides what max count hides"
        );
    }
    let stale = cairn(
        &endpoints,
        &[
            "stream",
            "meta",
            "orders-1",
            "--truncate-before",
            "4",
            "--expected",
            "no-stream",
        ],
    );
    assert_eq!(code(&stale), Some(3), "{stale:?}");

    // Bad input: a clear one-line error, exit 2, nothing changed.
    for args in [
        &["stream", "meta", "orders-1", "--max-count", "-1"][..],
        &["stream", "meta", "orders-1", "--max-count", "0"],
        &["stream", "meta", "orders-1", "--max-age", "99999999999"],
        &["stream", "meta", "orders-1", "--custom", "[1,2]"],
        &["stream", "meta", "orders-1", "--custom", "{oops"],
        &["stream", "meta", "$all", "--max-count", "1"],
    ] {
        let out = cairn(&endpoints, args);
        assert_eq!(code(&out), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }
    let after = cairn(&endpoints, &["stream", "meta", "orders-1"]);
    assert_eq!(
        json_lines(&after)[0]["revision"],
        0,
        "bad input changed nothing"
    );
    assert_eq!(json_lines(&after)[0]["max_count"], 2);

    // Soft delete: not found (exit 4); recreated after the old revisions.
    let wrong = cairn(
        &endpoints,
        &["stream", "delete", "orders-2", "--expected", "7"],
    );
    assert_eq!(code(&wrong), Some(3), "{wrong:?}");
    let deleted = cairn(
        &endpoints,
        &["stream", "delete", "orders-2", "--expected", "0"],
    );
    assert_eq!(code(&deleted), Some(0), "{deleted:?}");
    assert_eq!(revisions(&endpoints, "orders-2"), Err(Some(4)));
    let again = cairn(&endpoints, &["stream", "delete", "orders-2"]);
    assert_eq!(code(&again), Some(4), "{again:?}");
    let recreated = append(&endpoints, "orders-2", "no-stream");
    assert_eq!(code(&recreated), Some(0), "{recreated:?}");
    assert_eq!(json_lines(&recreated)[0]["revision"], 1);
    assert_eq!(revisions(&endpoints, "orders-2"), Ok(vec![1]));

    // Tombstone: exit 5 for reads, appends, and a second tombstone.
    let tombstoned = cairn(&endpoints, &["stream", "tombstone", "orders-1"]);
    assert_eq!(code(&tombstoned), Some(0), "{tombstoned:?}");
    assert_eq!(revisions(&endpoints, "orders-1"), Err(Some(5)));
    assert_eq!(code(&append(&endpoints, "orders-1", "any")), Some(5));
    assert_eq!(code(&append(&endpoints, "orders-1", "no-stream")), Some(5));
    let twice = cairn(&endpoints, &["stream", "tombstone", "orders-1"]);
    assert_eq!(code(&twice), Some(5), "{twice:?}");
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert!(stderr.contains("tombstoned"), "{stderr}");

    // Every node, read on its own, shows the same.
    let position = runtime().block_on(cluster.wait_until_converged());
    let expected = all(&endpoints);
    for id in 1..=3u64 {
        runtime().block_on(cluster.wait_caught_up(id, position.checked_sub(1)));
        let node = cluster.endpoint(id);
        assert_eq!(all(&node), expected, "node {id}");
        assert_eq!(revisions(&node, "orders-2"), Ok(vec![1]), "node {id}");
        assert_eq!(revisions(&node, "orders-1"), Err(Some(5)), "node {id}");
    }
}

/// The next event of a subscription (markers passed over), failing on an error: with
/// resubscription off, a false gap alarm would be one.
async fn next_event(sub: &mut cairn_client::Subscription) -> cairn_client::RecordedEvent {
    use tokio_stream::StreamExt;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(20), sub.next())
            .await
            .expect("an event within 20 s")
            .expect("the subscription goes on")
            .expect("no error (a gap alarm would be one)");
        if let cairn_client::SubscriptionMessage::Event(event) = message {
            return event;
        }
    }
}

#[test]
fn subscribers_pass_over_hidden_events_and_across_a_delete_without_a_gap_alarm() {
    use cairn_client::{EventData, ExpectedRevision as E, StreamMetadata, SubscribeOptions};
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let client = cluster.client();
        let one = || vec![EventData::json("Tested", &serde_json::json!({})).unwrap()];
        for _ in 0..5 {
            client.append("sub-1", E::Any, one()).await.unwrap();
        }
        let keep_two = StreamMetadata {
            max_count: Some(2),
            ..Default::default()
        };
        client
            .set_stream_metadata("sub-1", E::NoStream, keep_two)
            .await
            .unwrap();
        let mut stream_sub = client
            .subscribe("sub-1", SubscribeOptions::default().no_resubscribe())
            .await
            .unwrap();
        let mut all_sub = client
            .subscribe_all(SubscribeOptions::default().no_resubscribe())
            .await
            .unwrap();
        // History: revisions 0..=2 are hidden, on purpose.
        assert_eq!(next_event(&mut stream_sub).await.revision, 3);
        assert_eq!(next_event(&mut stream_sub).await.revision, 4);
        let first_all = next_event(&mut all_sub).await;
        assert_eq!(
            (first_all.stream.as_str(), first_all.revision),
            ("sub-1", 3)
        );

        // Live, across a soft delete and the recreation.
        client.delete_stream("sub-1", E::Exact(4)).await.unwrap();
        let recreated = client.append("sub-1", E::NoStream, one()).await.unwrap();
        assert_eq!(recreated.last_revision, 5);
        assert_eq!(next_event(&mut stream_sub).await.revision, 5);

        // Live events hidden by truncate-before as they are written, then one shown.
        let hide_up_to_7 = StreamMetadata {
            truncate_before: Some(7),
            ..Default::default()
        };
        let meta = client.stream_metadata("sub-1").await.unwrap();
        client
            .set_stream_metadata("sub-1", E::Exact(meta.revision.unwrap()), hide_up_to_7)
            .await
            .unwrap();
        client.append("sub-1", E::Any, one()).await.unwrap();
        client.append("sub-1", E::Any, one()).await.unwrap();
        assert_eq!(next_event(&mut stream_sub).await.revision, 7);

        // $all saw every shown event of sub-1 once, in order, and its metastream's changes.
        let mut revisions = vec![4];
        assert_eq!(next_event(&mut all_sub).await.revision, 4);
        loop {
            let event = next_event(&mut all_sub).await;
            if event.stream == "sub-1" {
                revisions.push(event.revision);
                if event.revision == 7 {
                    break;
                }
            } else {
                assert_eq!(event.stream, "$$sub-1");
            }
        }
        assert_eq!(revisions, vec![4, 5, 7]);
    });
}

/// `cairn stream meta --clear SETTING` removes a setting: what it hid is shown again, the
/// other settings stay; clearing and setting one setting at once is refused (exit 2).
#[test]
fn a_cleared_metadata_setting_shows_its_events_again() {
    let cluster = TestCluster::start(3);
    let leader = runtime().block_on(cluster.wait_for_leader());
    let endpoints = cluster.endpoint(leader);
    for _ in 0..4 {
        assert_eq!(code(&append(&endpoints, "orders-9", "any")), Some(0));
    }
    let meta = |args: &[&str]| {
        let mut all = vec!["stream", "meta", "orders-9"];
        all.extend_from_slice(args);
        cairn(&endpoints, &all)
    };
    let set = meta(&["--max-count", "1", "--custom", r#"{"owner":"billing"}"#]);
    assert_eq!(code(&set), Some(0), "{set:?}");
    assert_eq!(revisions(&endpoints, "orders-9"), Ok(vec![3]));
    let both = meta(&["--max-count", "2", "--clear", "max-count"]);
    assert_eq!(code(&both), Some(2), "{both:?}");
    let cleared = meta(&["--clear", "max-count"]);
    assert_eq!(code(&cleared), Some(0), "{cleared:?}");
    let shown = &json_lines(&cleared)[0];
    assert_eq!(shown["max_count"], serde_json::Value::Null, "{shown}");
    assert_eq!(shown["custom"]["owner"], "billing", "{shown}");
    assert_eq!(revisions(&endpoints, "orders-9"), Ok(vec![0, 1, 2, 3]));
    let cleared = meta(&["--clear", "custom"]);
    assert_eq!(json_lines(&cleared)[0]["custom"], serde_json::Value::Null);
}
