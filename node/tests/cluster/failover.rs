//! Appends go on across SIGKILL of the leader, and nothing acknowledged is lost or doubled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{Client, Error, EventData, ExpectedRevision};
use uuid::Uuid;

use crate::harness::{runtime, TestCluster};
use crate::load::{check_history, last_revision, read_all, Acked, Load};

const OWN_STREAM_WRITERS: usize = 4;
const HOT_STREAM_WRITERS: usize = 3;
const HOT_STREAM: &str = "hot";
const RUN_BEFORE_KILL: Duration = Duration::from_millis(1500);
const RUN_AFTER_KILL: Duration = Duration::from_millis(3000);
const RUN_AFTER_RESTART: Duration = Duration::from_millis(1000);

/// What the hot-stream writers saw, beside the own-stream writers' [`History`].
#[derive(Default)]
struct Hot {
    acked: Vec<Acked>,
    unknown: Vec<Uuid>,
    /// Successes: (expected revision, id).
    successes: Vec<(ExpectedRevision, Uuid)>,
    conflicts: usize,
    unexpected: Vec<String>,
}

fn expected_after(last: Option<u64>) -> ExpectedRevision {
    last.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact)
}

async fn hot_stream_writer(
    client: Client,
    writer: usize,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Hot>>,
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
                h.successes.push((expected, id));
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

#[test]
fn acknowledged_appends_survive_sigkill_of_the_leader_on_every_node() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let own = Load::start(&cluster.client(), "own", OWN_STREAM_WRITERS);
        let stop = Arc::new(AtomicBool::new(false));
        let hot = Arc::new(Mutex::new(Hot::default()));
        let mut tasks = Vec::new();
        for writer in 0..HOT_STREAM_WRITERS {
            tasks.push(tokio::spawn(hot_stream_writer(
                cluster.client(),
                writer,
                stop.clone(),
                hot.clone(),
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
        let mut history = own.stop().await;
        let total = cluster.wait_until_converged().await;

        // Every writer has finished: one history of both kinds of writer.
        let hot = std::mem::take(&mut *hot.lock().unwrap());
        history.acked.extend(hot.acked);
        history.unknown.extend(hot.unknown);
        history.unexpected.extend(hot.unexpected);
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
            hot.conflicts > 0,
            "the hot-stream writers never conflicted, so conflicts were not tested"
        );

        let mut reference: Option<Vec<Uuid>> = None;
        for id in 1..=3 {
            let all = read_all(&cluster.node_client(id)).await;
            assert_eq!(all.len() as u64, total, "node {id} has every event");
            // Gapless positions and revisions, no id twice, every acknowledged append exactly
            // where it was acknowledged.
            check_history(id, &all, &history);
            let ids: Vec<Uuid> = all.iter().map(|e| e.id).collect();
            match &reference {
                None => reference = Some(ids),
                Some(reference) => assert_eq!(&ids, reference, "node {id} has a different $all"),
            }
        }
        // Never two successes for one expected revision on the hot stream.
        let mut by_expected: BTreeMap<String, usize> = BTreeMap::new();
        for (expected, _) in &hot.successes {
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
            hot.successes.len(),
            hot.conflicts
        );
    });
}
