//! Issue 14: an append that reuses a stored event id with other content was answered "already
//! written: a retry" (exit 0) and stored nothing. It must be refused, name the id, exit 1, and
//! write nothing; a true retry still gets the original answer.

use std::process::{Command, Output};

use cairn_client::{Error, EventData, ExpectedRevision};

use crate::harness::{cairn_exe, runtime, TestCluster};

fn cairn(endpoints: &str, args: &[&str]) -> Output {
    Command::new(cairn_exe())
        .args(args)
        .env("CAIRN_ENDPOINTS", endpoints)
        .output()
        .expect("run cairn")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_event_id_reused_with_other_content_is_refused_by_the_cli_and_the_client_and_writes_nothing() {
    let cluster = TestCluster::start(3);
    runtime().block_on(cluster.wait_for_leader());
    let endpoints = cluster.endpoints().join(",");
    let id = uuid::Uuid::now_v7().to_string();
    let append = |event_type: &str, data: &str, expected: &str| {
        cairn(
            &endpoints,
            &[
                "append",
                "orders-1",
                "--type",
                event_type,
                "--data",
                data,
                "--id",
                &id,
                "--expected",
                expected,
            ],
        )
    };
    let first = append("OrderPlaced", r#"{"total":10}"#, "no-stream");
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let retry = append("OrderPlaced", r#"{"total":10}"#, "no-stream");
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
    assert!(
        String::from_utf8_lossy(&retry.stdout).contains("already written: a retry"),
        "{retry:?}"
    );

    // The issue's case: the same id, another type and data, --expected no-stream; and at a
    // place the original could not have had (`exists`: it was the stream's first event),
    // which was already a conflict.
    for (event_type, data, expected, why) in [
        (
            "OrderShipped",
            r#"{"carrier":"ups"}"#,
            "no-stream",
            "other content",
        ),
        ("OrderPlaced", r#"{"total":11}"#, "any", "other content"),
        ("OrderCancelled", r#"{"total":10}"#, "any", "other content"),
        (
            "OrderCancelled",
            r#"{"total":10}"#,
            "exists",
            "not an exact retry",
        ),
    ] {
        let reused = append(event_type, data, expected);
        let err = stderr(&reused);
        assert_eq!(reused.status.code(), Some(1), "{reused:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
        assert!(err.starts_with("error: "), "{err:?}");
        assert!(err.contains(&id), "{err:?} should name the id");
        assert!(err.contains(why), "{err:?} should say {why:?}");
        assert!(reused.stdout.is_empty(), "{reused:?}");
    }

    runtime().block_on(async {
        // The client library: a typed error naming the id, not retried, nothing written.
        let client = cluster.client();
        let uuid: uuid::Uuid = id.parse().expect("uuid");
        let other = EventData::json("OrderShipped", &serde_json::json!({ "n": 1 }))
            .expect("json")
            .with_id(uuid);
        let refused = client
            .append("orders-1", ExpectedRevision::Any, vec![other])
            .await;
        assert_eq!(refused, Err(Error::EventIdReused { id: uuid }));

        let events = crate::load::read_all(&client).await;
        assert_eq!(events.len(), 1, "only the first append is stored");
        assert_eq!(events[0].event_type, "OrderPlaced");
        assert_eq!(events[0].data, br#"{"total":10}"#.to_vec());
    });
}
