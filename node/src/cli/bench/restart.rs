//! `cairn bench --spawn --scenario restart`: load the store, SIGKILL a follower, start it again
//! and time how long it takes to serve reads and to catch up (the "a node holding 10M events
//! restarts and serves within 5 s" target). Prints one JSON line.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn_client::{Client, ReadFrom, ReadOptions};
use cairn_node::local::LocalCluster;
use tokio_stream::StreamExt;

use super::catchup::load;
use super::BenchArgs;
use crate::cli::EXIT_FAILURE;

/// Longest wait for the restarted node to serve and then to catch up.
pub const RESTART_WAIT: Duration = Duration::from_secs(300);
/// Pause between probes of the restarted node.
const PROBE_PAUSE: Duration = Duration::from_millis(10);
/// Longest wait for a leader after the load.
const LEADER_WAIT: Duration = Duration::from_secs(30);

pub async fn run_restart(args: &BenchArgs, cluster: &mut LocalCluster, client: Client) -> ExitCode {
    eprintln!("restart: loading {} events", args.restart_events);
    let loading = Instant::now();
    let last = match load(
        &client,
        &format!("cb{}-restart", std::process::id()),
        args.restart_events,
    )
    .await
    {
        Ok(last) => last,
        Err(e) => {
            eprintln!("error: loading: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    eprintln!(
        "restart: loaded in {:.1} s (last position {last})",
        loading.elapsed().as_secs_f64()
    );
    let Some(leader) = cluster.wait_for_leader(LEADER_WAIT).await else {
        eprintln!("error: no leader after the load");
        return ExitCode::from(EXIT_FAILURE);
    };
    let victim = (1..=cluster.size()).find(|&id| id != leader).unwrap_or(1);
    // Caught up first, so the restart measures opening a full store, not catching up a gap.
    if let Err(code) = wait_applied(cluster, victim, last, Instant::now()).await {
        return code;
    }
    let bytes = dir_bytes(&cluster.data_dir(victim));
    eprintln!(
        "restart: SIGKILL node {victim} ({:.0} MiB on disk) and start it again",
        bytes as f64 / (1 << 20) as f64
    );
    cluster.kill(victim);
    let started = Instant::now();
    if let Err(e) = cluster.start_node(victim) {
        eprintln!("error: cannot start node {victim}: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let serving = match first_read(cluster, victim, last, started).await {
        Ok(elapsed) => elapsed,
        Err(code) => return code,
    };
    let caught_up = match wait_applied(cluster, victim, last, started).await {
        Ok(elapsed) => elapsed,
        Err(code) => return code,
    };
    println!(
        "{{\"target\":{},\"scenario\":\"restart\",\"events\":{},\"disk_bytes\":{bytes},\"node\":{victim},\"serves_ms\":{:.1},\"caught_up_ms\":{:.1}}}",
        serde_json::Value::String(args.label.clone()),
        last + 1,
        serving.as_secs_f64() * 1000.0,
        caught_up.as_secs_f64() * 1000.0,
    );
    ExitCode::SUCCESS
}

/// Time from `started` until node `id` answers a local read of the last event with that event.
async fn first_read(
    cluster: &LocalCluster,
    id: u64,
    last: u64,
    started: Instant,
) -> Result<Duration, ExitCode> {
    while started.elapsed() < RESTART_WAIT {
        if let Ok(client) = cluster.node_client(id) {
            let options = ReadOptions::backwards()
                .from(ReadFrom::At(last))
                .max_count(1);
            if let Ok(mut events) = client.read_all(options).await {
                if let Some(Ok(event)) = events.next().await {
                    if event.position == last {
                        return Ok(started.elapsed());
                    }
                }
            }
        }
        tokio::time::sleep(PROBE_PAUSE).await;
    }
    eprintln!("error: node {id} did not serve position {last} within {RESTART_WAIT:?}");
    Err(ExitCode::from(EXIT_FAILURE))
}

/// Time from `started` until node `id` reports `last` applied.
async fn wait_applied(
    cluster: &LocalCluster,
    id: u64,
    last: u64,
    started: Instant,
) -> Result<Duration, ExitCode> {
    while started.elapsed() < RESTART_WAIT {
        if let Ok(client) = cluster.node_client(id) {
            if let Ok(status) = client.status().await {
                let applied = status
                    .members
                    .iter()
                    .find(|m| m.id == id)
                    .map(|m| m.applied_position);
                if applied.is_some_and(|p| p > last) {
                    return Ok(started.elapsed());
                }
            }
        }
        tokio::time::sleep(PROBE_PAUSE).await;
    }
    eprintln!("error: node {id} did not apply position {last} within {RESTART_WAIT:?}");
    Err(ExitCode::from(EXIT_FAILURE))
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
