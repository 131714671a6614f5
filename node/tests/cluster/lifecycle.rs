//! Stream lifecycle end to end through the CLI against real processes: metadata, soft delete
//! and recreation, tombstone (exit 5), retention on reads, every node agreeing, bad input.

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
            "append", stream, "--data", "{}", "--expected", expected, "--json",
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
            "stream", "meta", "orders-1", "--max-count", "2", "--custom",
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
    let stale = cairn(
        &endpoints,
        &["stream", "meta", "orders-1", "--truncate-before", "4", "--expected", "no-stream"],
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
    assert_eq!(json_lines(&after)[0]["revision"], 0, "bad input changed nothing");
    assert_eq!(json_lines(&after)[0]["max_count"], 2);

    // Soft delete: not found (exit 4); recreated after the old revisions.
    let wrong = cairn(&endpoints, &["stream", "delete", "orders-2", "--expected", "7"]);
    assert_eq!(code(&wrong), Some(3), "{wrong:?}");
    let deleted = cairn(&endpoints, &["stream", "delete", "orders-2", "--expected", "0"]);
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
