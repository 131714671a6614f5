//! Failover (SIGKILL the leader) and handoff (SIGTERM it: it hands leadership over): time
//! until the next append succeeds, start the node again, repeat.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn_client::{Client, ClientConfig, EventData, ExpectedRevision};
use cairn_node::local::LocalCluster;

use super::{BenchArgs, Scenario, FAILOVER_WAIT_MS};
use crate::cli::{EXIT_FAILURE, EXIT_USAGE};

/// Pause between append attempts while waiting for a new leader.
pub const FAILOVER_POLL_MS: u64 = 5;
/// Deadline of one append attempt during failover (the dead leader may hold a connection).
pub const FAILOVER_ATTEMPT_TIMEOUT_MS: u64 = 300;
/// Pause after a trial's cluster has converged and before its leader is stopped: a leader
/// elected moments ago is not the steady state being measured (a handoff from a leader elected
/// less than a lease, 400 ms, ago first waits that lease out).
pub const TRIAL_SETTLE_MS: u64 = 1_000;
/// Most failover trials.
pub const MAX_FAILOVER_TRIALS: usize = 1_000;

/// Stops the leader `trials` times; each sample is the signal -> first successful append.
/// SIGKILL (failover: the others notice the silence and elect) or SIGTERM (handoff: the leader
/// hands over before it exits).
pub(super) async fn run_failover(args: &BenchArgs, cluster: &mut LocalCluster) -> ExitCode {
    let graceful = args.scenario == Scenario::Handoff;
    let name = if graceful { "handoff" } else { "failover" };
    if args.trials == 0 || args.trials > MAX_FAILOVER_TRIALS {
        eprintln!("error: --trials must be 1..={MAX_FAILOVER_TRIALS}");
        return ExitCode::from(EXIT_USAGE);
    }
    let wait = Duration::from_millis(FAILOVER_WAIT_MS);
    let client = match Client::with_config(ClientConfig {
        endpoints: cluster.endpoints(),
        request_timeout: Duration::from_millis(FAILOVER_ATTEMPT_TIMEOUT_MS),
        max_append_attempts: 1,
        tls_ca: cluster.client_tls_ca(),
        credentials: cluster.admin_credentials(),
        ..ClientConfig::default()
    }) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut samples_ms = Vec::new();
    for trial in 1..=args.trials {
        let Some(leader) = cluster.wait_for_leader(wait).await else {
            eprintln!("error: no leader before trial {trial}");
            return ExitCode::from(EXIT_FAILURE);
        };
        tokio::time::sleep(Duration::from_millis(TRIAL_SETTLE_MS)).await;
        // The client must know the leader, as a client in steady state does.
        let warm = Instant::now();
        while client
            .append(
                "failover",
                ExpectedRevision::Any,
                vec![EventData::binary("Tick", vec![0u8; 8])],
            )
            .await
            .is_err()
        {
            if warm.elapsed() > wait {
                eprintln!("error: no successful append before trial {trial}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
        if graceful {
            cluster.terminate(leader);
        } else {
            cluster.kill(leader);
        }
        let killed = Instant::now();
        loop {
            let event = EventData::binary("Tick", vec![1u8; 8]);
            if client
                .append("failover", ExpectedRevision::Any, vec![event])
                .await
                .is_ok()
            {
                break;
            }
            if killed.elapsed() > wait {
                eprintln!("error: trial {trial}: no successful append within {FAILOVER_WAIT_MS} ms of the kill");
                return ExitCode::from(EXIT_FAILURE);
            }
            tokio::time::sleep(Duration::from_millis(FAILOVER_POLL_MS)).await;
        }
        let sample = killed.elapsed().as_secs_f64() * 1000.0;
        let how = if graceful { "stopped" } else { "killed" };
        eprintln!("{name} trial {trial}: {how} node {leader}, next append after {sample:.0} ms");
        samples_ms.push(sample);
        if graceful && cluster.wait_exit(leader, wait).await.is_none() {
            eprintln!("error: trial {trial}: node {leader} did not exit within {FAILOVER_WAIT_MS} ms of SIGTERM");
            return ExitCode::from(EXIT_FAILURE);
        }
        if let Err(e) = cluster.start_node(leader) {
            eprintln!("error: cannot restart node {leader}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        if cluster.wait_until_converged(wait).await.is_none() {
            eprintln!("error: the cluster did not converge after trial {trial}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    let mut sorted = samples_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    let samples: Vec<String> = samples_ms.iter().map(|s| format!("{s:.1}")).collect();
    println!(
        "{{\"target\":{},\"scenario\":\"{name}\",\"trials\":{},\"median_ms\":{median:.1},\"min_ms\":{:.1},\"max_ms\":{:.1},\"samples_ms\":[{}]}}",
        serde_json::Value::String(args.label.clone()),
        samples_ms.len(),
        sorted[0],
        sorted[sorted.len() - 1],
        samples.join(",")
    );
    ExitCode::SUCCESS
}
