//! The command line's exit codes and JSON output, as DESIGN.md's contract says.

use std::process::{Command, Output};

use crate::harness::{cairn_exe, runtime, TestCluster};

/// Times `status` is asked for a leader before the test gives up.
const STATUS_ATTEMPTS: usize = 20;

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

fn one_line_error(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "stderr should be one line: {stderr:?}"
    );
    assert!(stderr.starts_with("error: "), "{stderr:?}");
}

#[test]
fn cli_exit_codes_and_json_output_follow_the_contract() {
    let cluster = TestCluster::start(3);
    runtime().block_on(cluster.wait_for_leader());
    let endpoints = cluster.endpoints().join(",");

    let first = cairn(
        &endpoints,
        &[
            "append",
            "orders-1",
            "--data",
            r#"{"total":10}"#,
            "--type",
            "OrderPlaced",
            "--expected",
            "no-stream",
            "--json",
        ],
    );
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let written = &json_lines(&first)[0];
    assert_eq!(written["revision"], 0);
    assert_eq!(written["position"], 0);

    let id = uuid::Uuid::now_v7().to_string();
    let second = cairn(
        &endpoints,
        &[
            "append",
            "orders-1",
            "--data",
            r#"{"total":11}"#,
            "--expected",
            "0",
            "--id",
            &id,
            "--json",
        ],
    );
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert_eq!(json_lines(&second)[0]["revision"], 1);
    // The same id again is a retry: it writes nothing and reports the original place.
    let retry = cairn(
        &endpoints,
        &[
            "append",
            "orders-1",
            "--data",
            r#"{"total":11}"#,
            "--expected",
            "0",
            "--id",
            &id,
            "--json",
        ],
    );
    assert_eq!(retry.status.code(), Some(0), "{retry:?}");
    assert_eq!(json_lines(&retry)[0]["already_written"], true);

    let conflict = cairn(
        &endpoints,
        &[
            "append",
            "orders-1",
            "--data",
            "{}",
            "--expected",
            "no-stream",
        ],
    );
    assert_eq!(conflict.status.code(), Some(3), "{conflict:?}");
    one_line_error(&conflict);

    let read = cairn(&endpoints, &["read", "orders-1", "--json"]);
    assert_eq!(read.status.code(), Some(0), "{read:?}");
    let events = json_lines(&read);
    assert_eq!(events.len(), 2);
    for (revision, event) in events.iter().enumerate() {
        for field in ["stream", "revision", "position", "id", "type", "data"] {
            assert!(!event[field].is_null(), "{field} missing in {event}");
        }
        assert_eq!(event["revision"], revision);
    }
    assert_eq!(events[0]["type"], "OrderPlaced");
    assert_eq!(events[0]["data"]["total"], 10);
    assert_eq!(events[1]["id"], id.as_str());

    let backwards = cairn(
        &endpoints,
        &["read", "orders-1", "--backwards", "--count", "1", "--json"],
    );
    assert_eq!(json_lines(&backwards)[0]["revision"], 1);
    let all = cairn(&endpoints, &["read-all", "--from", "1", "--json"]);
    assert_eq!(all.status.code(), Some(0));
    assert_eq!(json_lines(&all).len(), 1);

    let missing = cairn(&endpoints, &["read", "no-such-stream"]);
    assert_eq!(missing.status.code(), Some(4), "{missing:?}");
    one_line_error(&missing);

    // A loaded machine can be mid-election for a moment: ask again (boundedly) for a leader.
    let mut status = serde_json::Value::Null;
    for _ in 0..STATUS_ATTEMPTS {
        let output = cairn(&endpoints, &["status", "--json"]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        status = json_lines(&output).remove(0);
        if status["leader_id"].is_u64() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let status = &status;
    assert!(status["leader_id"].is_u64(), "{status}");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));

    for bad_usage in [
        vec!["append"],
        vec!["append", "s", "--data", "not json"],
        vec!["append", "s", "--data", "{}", "--expected", "sometimes"],
        vec!["read"],
        vec!["frobnicate"],
    ] {
        let output = cairn(&endpoints, &bad_usage);
        assert_eq!(output.status.code(), Some(2), "{bad_usage:?}: {output:?}");
    }
    let invalid = cairn(&endpoints, &["append", "$reserved", "--data", "{}"]);
    assert_eq!(invalid.status.code(), Some(2), "{invalid:?}");
    one_line_error(&invalid);

    let nobody = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let unreachable = cairn(&nobody, &["read", "orders-1"]);
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
    one_line_error(&unreachable);
}
