//! `cairn stream erase` against real processes: after it returns, a marker written into the
//! stream's events (data, metadata, id, type, tag) and into its custom metadata is in no
//! file of any member's data directory (the Raft log, the event groups, sled's keyspace),
//! also after every member restarts; every other stream still reads back whole.

use std::path::Path;
use std::process::{Command, Output};

use cairn_client::{EventData, ExpectedRevision as E, ReadOptions, StreamMetadata};
use uuid::Uuid;

use crate::harness::{cairn_exe, runtime, TestCluster};

/// In the erased stream's event data, metadata, type and tag, and its custom metadata.
const MARKER: &str = "zq-erase-marker-5e1f0c";
/// The 16 bytes of one erased event's id.
const MARKER_ID: &[u8; 16] = b"zqERASEidMARKER!";
const ERASED: &str = "person-42";
const KEPT_STREAMS: usize = 5;
const KEPT_APPENDS: usize = 4;

fn cairn(endpoints: &[String], args: &[&str]) -> Output {
    Command::new(cairn_exe())
        .args(args)
        .env("CAIRN_ENDPOINTS", endpoints.join(","))
        .output()
        .expect("run cairn")
}

/// Every file under `dir` that holds one of `needles`, with the needle found.
fn files_holding(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // A file sled or the log removes between the listing and the read is gone.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for needle in needles {
                if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    found.push(format!(
                        "{} holds {:?}",
                        path.display(),
                        String::from_utf8_lossy(needle)
                    ));
                }
            }
        }
    }
    found
}

fn needles() -> Vec<Vec<u8>> {
    let id = Uuid::from_bytes(*MARKER_ID);
    vec![
        MARKER.as_bytes().to_vec(),
        MARKER_ID.to_vec(),
        id.hyphenated().to_string().into_bytes(),
    ]
}

async fn count(client: &cairn_client::Client, stream: &str) -> usize {
    use tokio_stream::StreamExt;
    let mut events = client
        .read_stream(stream, ReadOptions::forwards().max_count(u64::MAX))
        .await
        .unwrap_or_else(|e| panic!("read {stream}: {e}"));
    let mut n = 0;
    while let Some(event) = events.next().await {
        event.unwrap_or_else(|e| panic!("read {stream}: {e}"));
        n += 1;
    }
    n
}

fn secret_events(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| {
            EventData::json(
                format!("Profile-{MARKER}"),
                &serde_json::json!({ "note": format!("{MARKER} {i}") }),
            )
            .expect("event")
            .with_metadata(format!("{{\"by\":\"{MARKER}\"}}").into_bytes())
            .with_tags([MARKER])
        })
        .collect()
}

fn kept_events() -> Vec<EventData> {
    (0..3)
        .map(|i| {
            EventData::json(
                "Kept",
                &serde_json::json!({ "i": i, "pad": "k".repeat(500) }),
            )
            .expect("event")
        })
        .collect()
}

#[test]
fn erase_leaves_no_byte_of_the_stream_on_any_member_also_after_restarts() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    rt.block_on(cluster.wait_for_leader());
    let client = cluster.client();
    let endpoints = cluster.endpoints();
    rt.block_on(async {
        for round in 0..KEPT_APPENDS {
            for stream in 0..KEPT_STREAMS {
                client
                    .append(&format!("kept-{stream}"), E::Any, kept_events())
                    .await
                    .expect("append kept");
            }
            let mut secret = secret_events(3);
            if round == 1 {
                secret[0] = secret[0].clone().with_id(Uuid::from_bytes(*MARKER_ID));
            }
            client
                .append(ERASED, E::Any, secret)
                .await
                .expect("append secret");
        }
        let custom = StreamMetadata {
            custom: Some(serde_json::json!({ "owner": MARKER })),
            ..Default::default()
        };
        client
            .set_stream_metadata(ERASED, E::Any, custom)
            .await
            .expect("metadata");
    });
    rt.block_on(cluster.wait_until_converged());
    for id in 1..=3 {
        let found = files_holding(&cluster.data_dir(id), &needles());
        assert!(
            found.len() >= 3,
            "node {id}: the marker, the id and its text should be on disk before: {found:?}"
        );
    }

    // Appends go on during the erase, so the log segment that held the erased entries also
    // holds later ones and is kept: its purged entries must be zeroed, not only deleted.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        rt.spawn(async move {
            let mut written = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .append("during", E::Any, kept_events())
                    .await
                    .expect("append during the erase");
                written += 1;
            }
            written
        })
    };
    let erase = cairn(&endpoints, &["stream", "erase", ERASED]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = rt.block_on(writer).expect("writer");
    let stderr = String::from_utf8_lossy(&erase.stderr);
    assert!(erase.status.success(), "{erase:?}");
    // The stream's 12 events and its metadata's one earlier event.
    assert!(
        stderr.contains("erase: person-42"),
        "progress on stderr: {stderr}"
    );
    assert!(
        String::from_utf8_lossy(&erase.stdout).contains("erased person-42: 13 events"),
        "{erase:?}"
    );

    for id in 1..=3 {
        let found = files_holding(&cluster.data_dir(id), &needles());
        assert!(found.is_empty(), "node {id} after the erase: {found:?}");
    }
    let check_reads = |cluster: &TestCluster| {
        rt.block_on(async {
            for id in 1..=3 {
                let node = cluster.node_client(id);
                for stream in 0..KEPT_STREAMS {
                    assert_eq!(
                        count(&node, &format!("kept-{stream}")).await,
                        KEPT_APPENDS * 3,
                        "node {id}"
                    );
                }
                assert_eq!(count(&node, "during").await, during * 3, "node {id}");
                match node
                    .read_stream(ERASED, ReadOptions::forwards())
                    .await
                    .map(|_| ())
                {
                    Err(cairn_client::Error::StreamDeleted { .. }) => {}
                    other => panic!("node {id}: the erased stream reads as {other:?}"),
                }
            }
        })
    };
    rt.block_on(cluster.wait_until_converged());
    check_reads(&cluster);
    // Tombstoned: the name is never written again.
    let append = cairn(&endpoints, &["append", ERASED, "--data", "{}"]);
    assert_eq!(append.status.code(), Some(5), "{append:?}");

    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    rt.block_on(cluster.wait_for_leader());
    rt.block_on(cluster.wait_until_converged());
    for id in 1..=3 {
        let found = files_holding(&cluster.data_dir(id), &needles());
        assert!(found.is_empty(), "node {id} after restarting: {found:?}");
    }
    check_reads(&cluster);

    // Idempotent: erasing again succeeds and removes nothing more.
    let again = cairn(&endpoints, &["stream", "erase", ERASED]);
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("erased person-42: 0 events"),
        "{again:?}"
    );
    // A `$` stream is refused, and nothing changes.
    let system = cairn(&endpoints, &["stream", "erase", "$$kept-1"]);
    assert_eq!(system.status.code(), Some(2), "{system:?}");
    assert!(
        String::from_utf8_lossy(&system.stderr).contains("reserved"),
        "{system:?}"
    );
    check_reads(&cluster);
}

/// Appends to `during` until `stop`; the number of appends acknowledged.
fn start_writer(
    rt: &tokio::runtime::Runtime,
    client: &cairn_client::Client,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let (client, stop) = (client.clone(), stop.clone());
    rt.spawn(async move {
        let mut acknowledged = 0usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // A leader killed under an append may leave it unanswered; the client's own
            // retries settle most, and only acknowledged appends are counted.
            if client.append("during", E::Any, kept_events()).await.is_ok() {
                acknowledged += 1;
            }
        }
        acknowledged
    })
}

#[test]
fn members_sigkilled_during_an_erase_and_a_scavenge_lose_no_live_event_and_keep_no_erased_one() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    let leader = rt.block_on(cluster.wait_for_leader());
    let client = cluster.client();
    let endpoints = cluster.endpoints();
    rt.block_on(async {
        for round in 0..KEPT_APPENDS {
            for stream in 0..KEPT_STREAMS {
                client
                    .append(&format!("kept-{stream}"), E::Any, kept_events())
                    .await
                    .expect("append kept");
                client
                    .append(&format!("old-{stream}"), E::Any, kept_events())
                    .await
                    .expect("append old");
            }
            client
                .append(ERASED, E::Any, secret_events(3))
                .await
                .expect("append secret");
            let _ = round;
        }
        for stream in 0..KEPT_STREAMS {
            let last_append = StreamMetadata {
                max_count: Some(3),
                ..Default::default()
            };
            client
                .set_stream_metadata(&format!("old-{stream}"), E::Any, last_append)
                .await
                .expect("max count");
        }
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = start_writer(&rt, &client, &stop);

    // A follower SIGKILLed while the members scrub, then started again: it resumes from its
    // notes, and the erase returns once its disk is clean too.
    let erase = Command::new(cairn_exe())
        .args(["stream", "erase", ERASED])
        .env("CAIRN_ENDPOINTS", endpoints.join(","))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cairn stream erase");
    let follower = (1..=3u64).find(|&id| id != leader).expect("a follower");
    std::thread::sleep(std::time::Duration::from_millis(100));
    cluster.kill(follower);
    std::thread::sleep(std::time::Duration::from_millis(300));
    cluster.restart(follower);
    let erased = erase.wait_with_output().expect("cairn stream erase ends");
    assert!(erased.status.success(), "{erased:?}");
    for id in 1..=3 {
        let found = files_holding(&cluster.data_dir(id), &needles());
        assert!(found.is_empty(), "node {id} after the erase: {found:?}");
    }

    // The leader SIGKILLed during a scavenge: run again if it gave up, as a user would.
    let scavenge = Command::new(cairn_exe())
        .args(["scavenge", "--wait"])
        .env("CAIRN_ENDPOINTS", endpoints.join(","))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cairn scavenge");
    std::thread::sleep(std::time::Duration::from_millis(50));
    cluster.kill(leader);
    std::thread::sleep(std::time::Duration::from_millis(300));
    cluster.restart(leader);
    let first = scavenge.wait_with_output().expect("cairn scavenge ends");
    if !first.status.success() {
        let again = cairn(&endpoints, &["scavenge", "--wait"]);
        assert!(again.status.success(), "{first:?}\n{again:?}");
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = rt.block_on(writer).expect("writer");
    rt.block_on(cluster.wait_for_leader());
    rt.block_on(cluster.wait_until_converged());
    rt.block_on(async {
        for id in 1..=3 {
            let node = cluster.node_client(id);
            for stream in 0..KEPT_STREAMS {
                assert_eq!(
                    count(&node, &format!("kept-{stream}")).await,
                    KEPT_APPENDS * 3,
                    "node {id}"
                );
                assert_eq!(count(&node, &format!("old-{stream}")).await, 3, "node {id}");
            }
            // Every acknowledged append is there (an unanswered one may be too).
            assert!(
                count(&node, "during").await >= acknowledged * 3,
                "node {id}"
            );
            assert!(matches!(
                node.read_stream(ERASED, ReadOptions::forwards())
                    .await
                    .map(|_| ()),
                Err(cairn_client::Error::StreamDeleted { .. })
            ));
        }
    });
    for id in 1..=3 {
        let found = files_holding(&cluster.data_dir(id), &needles());
        assert!(found.is_empty(), "node {id} at the end: {found:?}");
    }
}
