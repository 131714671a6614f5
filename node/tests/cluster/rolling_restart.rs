//! A rolling restart under load: each node in turn gets SIGTERM (a leader hands leadership over
//! first), exits, starts again with the same flags and catches up. Nothing acknowledged is lost
//! or doubled; the longest stretch without an acknowledged write is printed (the figure goes in
//! the notes, not in an assert).

use std::time::{Duration, Instant};

use crate::harness::{runtime, TestCluster};
use crate::load::{check_history, read_all, Load};

const WRITERS: usize = 4;
const WARMUP: Duration = Duration::from_millis(1000);
const RUN_AFTER: Duration = Duration::from_millis(1000);
/// How long a node may take to exit after SIGTERM (its handoff is bounded well below this).
const EXIT_WAIT: Duration = Duration::from_secs(20);
/// Liveness only: writes must come back well within this after each restart.
const MAX_UNAVAILABILITY: Duration = Duration::from_secs(10);

#[test]
fn rolling_restart_under_load_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let load = Load::start(&cluster.client(), "rolling", WRITERS);
        let load_started = load.started;
        tokio::time::sleep(WARMUP).await;

        // The leader first (so that a handoff certainly happens), then whoever is left,
        // preferring the leader of the moment each time.
        let mut restarted: Vec<u64> = Vec::new();
        let mut steps = Vec::new();
        while restarted.len() < 3 {
            let leader = cluster.wait_for_leader().await;
            let id = if restarted.contains(&leader) {
                (1..=3).find(|id| !restarted.contains(id)).expect("a node left")
            } else {
                leader
            };
            let began = Instant::now();
            cluster.terminate(id);
            let status = cluster
                .wait_exit(id, EXIT_WAIT)
                .await
                .unwrap_or_else(|| panic!("node {id} still runs {EXIT_WAIT:?} after SIGTERM"));
            assert!(status.success(), "node {id} exited with {status}");
            let exited = Instant::now();
            cluster.restart(id);
            cluster.wait_caught_up(id, load.last_position()).await;
            restarted.push(id);
            steps.push((id, id == leader, began, exited, Instant::now()));
        }
        tokio::time::sleep(RUN_AFTER).await;
        let history = load.stop().await;

        let mut longest = Duration::ZERO;
        for (id, was_leader, began, exited, caught_up) in &steps {
            let (gap, _) = history.longest_gap(*began, *caught_up);
            longest = longest.max(gap);
            eprintln!(
                "rolling restart: node {id}{} exited {} ms after SIGTERM, caught up {} ms later; longest write gap meanwhile {} ms",
                if *was_leader { " (leader)" } else { "" },
                (*exited - *began).as_millis(),
                (*caught_up - *exited).as_millis(),
                gap.as_millis()
            );
            assert!(
                history.acked_after(*caught_up) > 0,
                "no write succeeded after node {id} came back"
            );
        }
        let (baseline, _) = history.longest_gap(load_started, steps[0].2);
        eprintln!(
            "rolling restart: longest write unavailability {} ms (before the restarts: {} ms); acked {}, unknown {}",
            longest.as_millis(),
            baseline.as_millis(),
            history.acked.len(),
            history.unknown.len()
        );
        assert!(
            longest < MAX_UNAVAILABILITY,
            "writes stopped for {longest:?} during the rolling restart"
        );
        assert!(
            steps.iter().any(|step| step.1),
            "no restart hit the leader, so no handoff was tested"
        );

        let total = cluster.wait_until_converged().await;
        let mut reference = None;
        for id in 1..=3 {
            let all = read_all(&cluster.node_client(id)).await;
            assert_eq!(all.len() as u64, total, "node {id} has every event");
            check_history(id, &all, &history);
            let ids: Vec<_> = all.iter().map(|e| e.id).collect();
            match &reference {
                None => reference = Some(ids),
                Some(reference) => assert_eq!(&ids, reference, "node {id} has a different $all"),
            }
        }
    });
}
