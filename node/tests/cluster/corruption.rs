//! Damaged files on one stopped node (a follower, then the former leader): found at start,
//! never served, repaired from the others, with writes going on and no acknowledged event
//! lost. Prints how long each repair took (no timing assert: the figure is 30 s).
//! And damage on a majority at once: the cluster stops with a clear error instead.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_client::{Client, ReadOptions, RecordedEvent};
use tokio_stream::StreamExt;

use crate::harness::{runtime, TestCluster, CLUSTER_WAIT};
use crate::load::{check_history, read_all, Load};
use crate::observability::scrape;

/// Snapshots every this many log entries, so that the store has snapshots (and a purged log)
/// within the test's few thousand appends (the log keeps the production 1,000 entries behind
/// each: a damaged follower cleared for a snapshot then needs one install, not a chase).
const SNAPSHOT_EVERY: u64 = 100;
/// Writers appending all along (each to its own stream).
const WRITERS: usize = 2;
/// Acknowledged appends before the first damage.
const APPENDS_BEFORE: usize = 300;
/// The log's synced mark reaches the disk within `LOG_SYNCED_MARK_SYNC_DELAY_MS` (1 s) of an
/// append; a node stopped sooner could lose the record of its last entries.
const MARK_SETTLE: Duration = Duration::from_millis(1500);
/// How long a repair may take before the test fails (the issue asks for 30 s; printed).
const REPAIR_WAIT: Duration = Duration::from_secs(90);
/// Lines of a node's log shown when it fails to repair.
const LOG_LINES_SHOWN: usize = 60;
/// Bytes overwritten by a flip.
const FLIPPED_BYTES: usize = 8;

#[derive(Debug, Clone, Copy)]
enum Harm {
    /// Bytes flipped in the middle of the Raft log's last segment.
    FlipLog,
    /// The Raft log's last segment cut to half its length.
    TruncateLog,
    /// Bytes flipped a third of the way into the first event group file.
    FlipGroups,
    /// The first event group file cut to half its length.
    TruncateGroups,
}

impl Harm {
    fn dir(self) -> &'static str {
        match self {
            Harm::FlipLog | Harm::TruncateLog => "raft-log",
            Harm::FlipGroups | Harm::TruncateGroups => "event-groups",
        }
    }
}

/// The segment files of `dir`, by name (their first index or offset).
fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .expect("list segments")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let id = path.file_stem()?.to_str()?.parse().ok()?;
            (path.extension()? == "seg").then_some((id, path))
        })
        .collect();
    files.sort();
    files
}

/// Does `harm` to the store of a stopped node; says what it did.
fn harm_store(store: &Path, harm: Harm) -> String {
    let files = segments(&store.join(harm.dir()));
    let (_, path) = match harm {
        Harm::FlipLog | Harm::TruncateLog => files.last(),
        Harm::FlipGroups | Harm::TruncateGroups => files.first(),
    }
    .unwrap_or_else(|| panic!("no segment in {}", harm.dir()))
    .clone();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open segment");
    let len = file.metadata().expect("metadata").len();
    assert!(len > 64, "{path:?} holds {len} bytes: too few to damage");
    match harm {
        Harm::FlipLog | Harm::FlipGroups => {
            let at = if matches!(harm, Harm::FlipLog) {
                len / 2
            } else {
                len / 3
            };
            let mut bytes = [0u8; FLIPPED_BYTES];
            file.read_exact_at(&mut bytes, at).expect("read");
            for b in &mut bytes {
                *b ^= 0xA5;
            }
            file.write_all_at(&bytes, at).expect("write");
            format!("flipped {FLIPPED_BYTES} bytes at {at} of {path:?} ({len} bytes)")
        }
        Harm::TruncateLog | Harm::TruncateGroups => {
            file.set_len(len / 2).expect("truncate");
            format!("cut {path:?} from {len} to {} bytes", len / 2)
        }
    }
}

/// `$all` as `client` serves it with `options`, or the error that stopped the read.
async fn try_read_all(client: &Client, options: ReadOptions) -> Result<Vec<RecordedEvent>, String> {
    let mut events = client.read_all(options).await.map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    while let Some(event) = events.next().await {
        all.push(event.map_err(|e| e.to_string())?);
    }
    Ok(all)
}

/// Waits until node `victim` serves the same `$all` as the leader, checking meanwhile that
/// whatever it serves is what the leader holds at those positions. Returns how long it took.
async fn wait_whole(cluster: &TestCluster, victim: u64, restarted: Instant) -> Duration {
    let node = cluster.node_client(victim);
    let leader_client = cluster.client();
    // The leader's `$all` as committed (a local read could come from a lagging node).
    let linearizable = ReadOptions::forwards().linearizable();
    let mut last = String::new();
    while restarted.elapsed() < REPAIR_WAIT {
        let before = try_read_all(&leader_client, linearizable)
            .await
            .map(|a| a.len());
        let served = try_read_all(&node, ReadOptions::forwards()).await;
        let after = try_read_all(&leader_client, linearizable).await;
        match (before, served, after) {
            (Ok(before), Ok(served), Ok(after)) => {
                assert!(
                    served.len() <= after.len() && served[..] == after[..served.len()],
                    "node {victim} served events that differ from the leader's"
                );
                if served.len() >= before {
                    return restarted.elapsed();
                }
                last = format!("{} of {} events", served.len(), before);
            }
            (_, Err(e), _) => last = e,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(cluster.log_path(victim)).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(LOG_LINES_SHOWN).collect();
    panic!(
        "node {victim} was not whole again within {REPAIR_WAIT:?} (last: {last}); the end of its log:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn damaged_files_on_one_node_are_found_never_served_and_repaired_from_the_others() {
    runtime().block_on(async {
        let mut cluster = TestCluster::start_with(3, |c| {
            let env = format!("CAIRN_SNAPSHOT_EVERY={SNAPSHOT_EVERY}");
            c.with_launchers(vec![vec!["env".into(), env]; 3])
        });
        cluster.wait_for_leader().await;
        let load = Load::start(&cluster.client(), "corruption", WRITERS);
        while load.acked() < APPENDS_BEFORE {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rounds = [
            (Harm::FlipLog, false),
            (Harm::FlipGroups, false),
            (Harm::TruncateGroups, true),
            (Harm::TruncateLog, true),
        ];
        for (harm, former_leader) in rounds {
            let leader = cluster.wait_for_leader().await;
            let victim = if former_leader {
                leader
            } else {
                (1..=3).find(|&id| id != leader).expect("a follower")
            };
            let acked_before = load.acked();
            tokio::time::sleep(MARK_SETTLE).await;
            cluster.terminate(victim);
            if cluster.wait_exit(victim, CLUSTER_WAIT).await.is_none() {
                cluster.kill(victim);
            }
            let done = harm_store(&cluster.data_dir(victim).join("store"), harm);
            cluster.restart(victim);
            let restarted = Instant::now();
            let took = wait_whole(&cluster, victim, restarted).await;
            let metrics = scrape(&cluster, victim);
            let found: Vec<String> = ["raft-log", "event-groups", "snapshot"]
                .iter()
                .map(|f| {
                    let n = metrics.value("cairn_corruption_detected_total", &[("file", f)]);
                    format!("{f}={n}")
                })
                .collect();
            println!(
                "{harm:?} on node {victim} ({}): {done}; whole again {} ms after the restart; \
                 corruption detected: {}; repairs: {}; acknowledged appends meanwhile: {}",
                if former_leader {
                    "former leader"
                } else {
                    "follower"
                },
                took.as_millis(),
                found.join(" "),
                metrics.value("cairn_repairs_total", &[]),
                load.acked() - acked_before,
            );
            if matches!(harm, Harm::FlipLog | Harm::FlipGroups) {
                assert!(
                    metrics.value("cairn_corruption_detected_total", &[("file", harm.dir())])
                        >= 1.0,
                    "node {victim} did not count the damage to {}",
                    harm.dir()
                );
            }
        }
        let history = load.stop().await;
        cluster.wait_until_converged().await;
        for id in 1..=3 {
            check_history(id, &read_all(&cluster.node_client(id)).await, &history);
        }
    });
}

/// How long a cluster with a damaged majority is watched for a leader (there must be none):
/// several election timeouts.
const STOPPED_WATCH: Duration = Duration::from_secs(10);
/// What a damaged node logs at start: it neither votes nor stands until repaired.
const NOT_VOTING_LINE: &str = "not voting or standing for election";
/// What it logs while no leader repairs it.
const STOPS_LINE: &str = "the cluster stops rather than elect";

/// A majority damaged at once (the whole cluster stopped, two of three logs flipped, all
/// restarted): the cluster stops with a clear error instead of electing a leader that may
/// lack acknowledged events. No node has a leader, an append gets an error, the damaged
/// nodes say why, and every node serves only events that are right (the healthy one all of
/// them).
#[test]
fn damage_on_a_majority_at_once_stops_the_cluster_and_nothing_wrong_is_served() {
    runtime().block_on(async {
        let mut cluster = TestCluster::start_with(3, |c| {
            let env = format!("CAIRN_SNAPSHOT_EVERY={SNAPSHOT_EVERY}");
            c.with_launchers(vec![vec!["env".into(), env]; 3])
        });
        cluster.wait_for_leader().await;
        let load = Load::start(&cluster.client(), "majority", WRITERS);
        while load.acked() < APPENDS_BEFORE {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let history = load.stop().await;
        tokio::time::sleep(MARK_SETTLE).await;
        let leader = cluster.wait_for_leader().await;
        let healthy = (1..=3).find(|&id| id != leader).expect("a follower");
        for id in 1..=3 {
            cluster.terminate(id);
            if cluster.wait_exit(id, CLUSTER_WAIT).await.is_none() {
                cluster.kill(id);
            }
        }
        let damaged: Vec<u64> = (1..=3).filter(|&id| id != healthy).collect();
        for &id in &damaged {
            let done = harm_store(&cluster.data_dir(id).join("store"), Harm::FlipLog);
            println!("node {id}: {done}");
        }
        for id in 1..=3 {
            cluster.restart(id);
        }
        let restarted = Instant::now();
        let mut append_error = None;
        while restarted.elapsed() < STOPPED_WATCH {
            for id in 1..=3 {
                if let Ok(status) = cluster.node_client(id).status().await {
                    assert_eq!(
                        status.leader_id, None,
                        "node {id} knows a leader with two of three logs damaged"
                    );
                }
            }
            if append_error.is_none() && restarted.elapsed() > Duration::from_secs(3) {
                let event =
                    cairn_client::EventData::json("Probe", &serde_json::json!({})).expect("json");
                // One attempt, so the answer is the node's own, not the client's retries.
                let client = cairn_client::Client::with_config(cairn_client::ClientConfig {
                    endpoints: cluster.endpoints(),
                    max_append_attempts: 1,
                    ..cairn_client::ClientConfig::default()
                })
                .expect("client");
                let append = client.append(
                    "majority-probe",
                    cairn_client::ExpectedRevision::Any,
                    vec![event],
                );
                append_error = Some(match tokio::time::timeout(CLUSTER_WAIT, append).await {
                    Ok(Ok(result)) => panic!("an append was acknowledged: {result:?}"),
                    Ok(Err(e @ cairn_client::Error::Unavailable(_))) => e.to_string(),
                    Ok(Err(e)) => panic!("an append got {e:?}, not Unavailable"),
                    Err(_) => panic!("an append got no answer within {CLUSTER_WAIT:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("an append while stopped: {append_error:?}");
        for &id in &damaged {
            // The second line comes every 10 s of waiting, from the node's own start.
            let mut log = String::new();
            let deadline = Instant::now() + CLUSTER_WAIT;
            while Instant::now() < deadline {
                log = std::fs::read_to_string(cluster.log_path(id)).unwrap_or_default();
                if log.contains(STOPS_LINE) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            for line in [NOT_VOTING_LINE, STOPS_LINE] {
                assert!(
                    log.contains(line),
                    "node {id} (damaged) did not log \"{line}\"; its log:\n{log}"
                );
            }
            let metrics = scrape(&cluster, id);
            assert!(
                metrics.value("cairn_corruption_detected_total", &[("file", "raft-log")]) >= 1.0,
                "node {id} did not count the damage to its log"
            );
        }
        let whole = read_all(&cluster.node_client(healthy)).await;
        check_history(healthy, &whole, &history);
        for &id in &damaged {
            match try_read_all(&cluster.node_client(id), ReadOptions::forwards()).await {
                Ok(served) => assert!(
                    served.len() <= whole.len() && served[..] == whole[..served.len()],
                    "node {id} (damaged) served events that differ from the healthy node's"
                ),
                Err(e) => println!("node {id} (damaged) refuses reads: {e}"),
            }
        }
    });
}
