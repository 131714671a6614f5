//! Appends go on across SIGKILL of the leader, and nothing acknowledged is lost or doubled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{Client, Error, EventData, ExpectedRevision, ReadOptions, RecordedEvent};
use tokio_stream::StreamExt;
use uuid::Uuid;

use crate::harness::{runtime, TestCluster};

const OWN_STREAM_WRITERS: usize = 4;
const HOT_STREAM_WRITERS: usize = 3;
const HOT_STREAM: &str = "hot";
const RUN_BEFORE_KILL: Duration = Duration::from_millis(1500);
const RUN_AFTER_KILL: Duration = Duration::from_millis(3000);
const RUN_AFTER_RESTART: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone)]
struct Acked {
    stream: String,
    id: Uuid,
    revision: u64,
    position: u64,
    at: Instant,
}

#[derive(Default)]
struct History {
    acked: Vec<Acked>,
    /// Appends whose outcome the client could not learn (it gave up retrying).
    unknown: Vec<Uuid>,
    /// Hot-stream successes: (expected revision, id).
    hot_successes: Vec<(ExpectedRevision, Uuid)>,
    conflicts: usize,
    unexpected: Vec<String>,
}

async fn last_revision(client: &Client, stream: &str) -> Result<Option<u64>, Error> {
    let options = ReadOptions::backwards().max_count(1).linearizable();
    match client.read_stream(stream, options).await {
        Ok(mut events) => match events.next().await {
            Some(Ok(event)) => Ok(Some(event.revision)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        },
        Err(Error::StreamNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn expected_after(last: Option<u64>) -> ExpectedRevision {
    last.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact)
}

async fn own_stream_writer(
    client: Client,
    writer: usize,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let stream = format!("own-{writer}");
    let mut last: Option<u64> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let event = EventData::json("Tested", &serde_json::json!({ "writer": writer, "n": n }))
            .expect("json");
        let id = event.id;
        match client
            .append(&stream, expected_after(last), vec![event])
            .await
        {
            Ok(result) => {
                let expected_revision = last.map_or(0, |r| r + 1);
                let mut h = history.lock().unwrap();
                if result.last_revision != expected_revision {
                    h.unexpected.push(format!(
                        "{stream}: acked revision {} but expected {expected_revision}",
                        result.last_revision
                    ));
                }
                h.acked.push(Acked {
                    stream: stream.clone(),
                    id,
                    revision: result.last_revision,
                    position: result.last_position,
                    at: Instant::now(),
                });
                last = Some(result.last_revision);
            }
            Err(Error::Unavailable(_)) => {
                history.lock().unwrap().unknown.push(id);
                // The append may or may not have landed: learn where the stream is.
                loop {
                    match last_revision(&client, &stream).await {
                        Ok(revision) => {
                            last = revision;
                            break;
                        }
                        Err(_) if !stop.load(Ordering::Relaxed) => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(_) => return,
                    }
                }
            }
            Err(e) => history
                .lock()
                .unwrap()
                .unexpected
                .push(format!("{stream}: {e}")),
        }
    }
}

async fn hot_stream_writer(
    client: Client,
    writer: usize,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(last) = last_revision(&client, HOT_STREAM).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        n += 1;
        let event = EventData::json(
            "Contended",
            &serde_json::json!({ "writer": writer, "n": n }),
        )
        .expect("json");
        let id = event.id;
        let expected = expected_after(last);
        match client.append(HOT_STREAM, expected, vec![event]).await {
            Ok(result) => {
                let mut h = history.lock().unwrap();
                h.hot_successes.push((expected, id));
                h.acked.push(Acked {
                    stream: HOT_STREAM.into(),
                    id,
                    revision: result.last_revision,
                    position: result.last_position,
                    at: Instant::now(),
                });
            }
            Err(Error::WrongExpectedVersion { .. }) => history.lock().unwrap().conflicts += 1,
            Err(Error::Unavailable(_)) => history.lock().unwrap().unknown.push(id),
            Err(e) => history
                .lock()
                .unwrap()
                .unexpected
                .push(format!("{HOT_STREAM}: {e}")),
        }
    }
}

async fn read_all(client: &Client) -> Vec<RecordedEvent> {
    let mut events = client
        .read_all(ReadOptions::forwards())
        .await
        .expect("read $all");
    let mut all = Vec::new();
    while let Some(event) = events.next().await {
        all.push(event.expect("event"));
    }
    all
}

#[test]
fn acknowledged_appends_survive_sigkill_of_the_leader_on_every_node() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(History::default()));
        let mut tasks = Vec::new();
        for writer in 0..OWN_STREAM_WRITERS {
            tasks.push(tokio::spawn(own_stream_writer(
                cluster.client(),
                writer,
                stop.clone(),
                history.clone(),
            )));
        }
        for writer in 0..HOT_STREAM_WRITERS {
            tasks.push(tokio::spawn(hot_stream_writer(
                cluster.client(),
                writer,
                stop.clone(),
                history.clone(),
            )));
        }
        tokio::time::sleep(RUN_BEFORE_KILL).await;
        cluster.kill(leader);
        let killed_at = Instant::now();
        tokio::time::sleep(RUN_AFTER_KILL).await;
        cluster.restart(leader);
        tokio::time::sleep(RUN_AFTER_RESTART).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("writer task");
        }
        let total = cluster.wait_until_converged().await;

        // Every writer has finished: take the history out of its lock.
        let history = std::mem::take(&mut *history.lock().unwrap());
        assert!(
            history.unexpected.is_empty(),
            "unexpected errors: {:?}",
            history.unexpected
        );
        assert!(
            history.acked.iter().any(|a| a.at > killed_at),
            "no append succeeded after the leader was killed"
        );
        assert!(
            history.conflicts > 0,
            "the hot-stream writers never conflicted, so conflicts were not tested"
        );

        let mut reference: Option<Vec<Uuid>> = None;
        for id in 1..=3 {
            let all = read_all(&cluster.node_client(id)).await;
            assert_eq!(all.len() as u64, total, "node {id} has every event");
            // Gapless positions, gapless revisions per stream, no id twice.
            let mut next_revision: HashMap<&str, u64> = HashMap::new();
            let mut seen = HashSet::new();
            for (position, event) in all.iter().enumerate() {
                assert_eq!(event.position, position as u64, "node {id}: gap in $all");
                let next = next_revision.entry(event.stream.as_str()).or_insert(0);
                assert_eq!(event.revision, *next, "node {id}: gap in {}", event.stream);
                *next += 1;
                assert!(
                    seen.insert(event.id),
                    "node {id}: event id {} twice",
                    event.id
                );
            }
            // Every acknowledged append exactly where it was acknowledged.
            for acked in &history.acked {
                let event = all
                    .get(acked.position as usize)
                    .unwrap_or_else(|| panic!("node {id}: acknowledged {acked:?} missing"));
                assert_eq!(
                    (event.id, event.revision, event.stream.as_str()),
                    (acked.id, acked.revision, acked.stream.as_str()),
                    "node {id}"
                );
            }
            let ids: Vec<Uuid> = all.iter().map(|e| e.id).collect();
            match &reference {
                None => reference = Some(ids),
                Some(reference) => assert_eq!(&ids, reference, "node {id} has a different $all"),
            }
        }
        // Never two successes for one expected revision on the hot stream.
        let mut by_expected: BTreeMap<String, usize> = BTreeMap::new();
        for (expected, _) in &history.hot_successes {
            *by_expected.entry(expected.to_string()).or_default() += 1;
        }
        assert!(
            by_expected.values().all(|&n| n == 1),
            "two successes for one expected revision: {by_expected:?}"
        );
        eprintln!(
            "acked {}, unknown {}, hot successes {}, conflicts {}, events {total}",
            history.acked.len(),
            history.unknown.len(),
            history.hot_successes.len(),
            history.conflicts
        );
    });
}
