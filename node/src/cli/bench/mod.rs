//! `cairn bench`: the workload of BENCHMARKS.md, "The workload" (S1, S2, S3) against Cairn,
//! printing the same JSON lines, plus failover and handoff scenarios the peers lack.
//! One file per scenario: `workload.rs` (S1, S2, S3), `failover.rs` (failover and handoff),
//! `catchup.rs`, `lag.rs`, `restart.rs`, `groups.rs`; this file holds the flags, the limits and the
//! dispatch, and the pieces several scenarios share.
//!
//! S1/S2/S3: C clients, each appending N pseudo-random 256-byte events at a time to its own
//! stream with the expected revision it last wrote; warmup, then a measured window; only
//! attempts started inside the window count. Failover (needs `--spawn`): kill the leader with
//! SIGKILL, time until the next append succeeds, restart it, repeat.

mod catchup;
mod failover;
mod groups;
mod lag;
mod restart;
mod scavenge;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use cairn_client::Error;
use cairn_node::local::LocalCluster;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;

use super::{EXIT_FAILURE, EXIT_USAGE};

/// Bytes of pseudo-random payload per event (BENCHMARKS.md, "The workload").
pub const EVENT_BYTES: usize = 256;
/// How long failover waits for the cluster (a leader, convergence, the first append).
pub const FAILOVER_WAIT_MS: u64 = 30_000;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    S1,
    S2,
    S3,
    Failover,
    /// Like failover, with SIGTERM instead of SIGKILL: the leader hands leadership over.
    Handoff,
    /// Catch-up read: one subscriber on a follower from the start of a loaded store.
    Catchup,
    /// Live lag: subscribers on a follower while writers hold a steady rate.
    Lag,
    /// Restart: load the store, SIGKILL a follower, time until it serves and catches up.
    Restart,
    /// DCB: 64 clients, each appending with a condition on its own tag.
    Dcb,
    /// Multi-stream: 64 clients, each appending to two streams of its own at once.
    MultiStream,
    /// Consumer groups: 4 consumers share a group while writers keep 100 streams busy;
    /// events delivered and acknowledged per second, delivery latency.
    Groups,
    /// Scavenge: load, delete half the streams, max count on the rest, scavenge; store bytes
    /// per node before and after, append latency during it.
    Scavenge,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "s1")]
    pub scenario: Scenario,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Warmup before the window, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Concurrent clients (default: 1 for S1, 64 for S2, dcb and multi-stream, 8 for S3).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Events per append (per stream for multi-stream; default: 100 for S3, else 1).
    #[arg(long)]
    pub events_per_append: Option<usize>,
    /// Most counted appends per client.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_appends: u64,
    /// Failover trials.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Catch-up: events to load and read back.
    #[arg(long, default_value_t = 1_000_000)]
    pub catchup_events: u64,
    /// Restart: events to load before the follower is killed and started again.
    #[arg(long, default_value_t = 10_000_000)]
    pub restart_events: u64,
    /// Scavenge: MiB to load.
    #[arg(long, default_value_t = 1024)]
    pub load_mib: u64,
    /// Scavenge: streams to load them across.
    #[arg(long, default_value_t = 10_000)]
    pub streams: u64,
    /// Lag: live subscribers.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Lag: events per second the writers hold.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Start a fresh three-node cluster for the run (required for failover and handoff).
    #[arg(long)]
    pub spawn: bool,
    /// With --spawn: the nodes run with TLS (a throwaway CA, mutual TLS between nodes), to
    /// measure what TLS costs; without it they run --insecure.
    #[arg(long)]
    pub tls: bool,
    /// The `target` label in the output.
    #[arg(long, default_value = "cairn")]
    pub label: String,
    /// Where a running cluster is and what the bench presents to it: the same flags, env
    /// and profile as every client command (`--endpoints`, `--profile`, `--tls-ca`,
    /// `--token`, `--username`/`--password`); not used with --spawn. (`--json` changes
    /// nothing: the bench prints JSON lines.)
    #[command(flatten)]
    pub client: super::ClientOptions,
}

/// SplitMix64, as the peer load generator uses for payloads.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn payload(&mut self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(EVENT_BYTES);
        while bytes.len() < EVENT_BYTES {
            bytes.extend_from_slice(&self.next().to_le_bytes());
        }
        bytes.truncate(EVENT_BYTES);
        bytes
    }
}

pub async fn run(args: BenchArgs) -> ExitCode {
    if matches!(
        args.scenario,
        Scenario::Failover | Scenario::Handoff | Scenario::Restart
    ) && !args.spawn
    {
        eprintln!(
            "error: the failover, handoff and restart scenarios stop nodes, so they need --spawn"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if args.tls && !args.spawn {
        eprintln!(
            "error: --tls is for --spawn (a running cluster's endpoints say https:// themselves)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let mut spawned = None;
    let client = if args.spawn {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                eprintln!("error: cannot find the cairn executable: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let dir = std::env::temp_dir().join(format!("cairn-bench-{}", std::process::id()));
        let cluster = LocalCluster::on_free_ports(exe, &dir, 3);
        let cluster = match (cluster, args.tls) {
            (Ok(cluster), true) => cluster.with_tls(),
            (cluster, _) => cluster,
        };
        let mut cluster = match cluster {
            Ok(cluster) => cluster,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        if let Err(e) = cluster.start_all() {
            eprintln!("error: cannot start nodes: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        eprintln!(
            "spawned 3 nodes under {} ({})",
            dir.display(),
            cluster.endpoints().join(",")
        );
        if cluster
            .wait_for_leader(Duration::from_millis(FAILOVER_WAIT_MS))
            .await
            .is_none()
        {
            eprintln!("error: the spawned cluster elected no leader");
            return ExitCode::from(EXIT_FAILURE);
        }
        let client = cluster.client();
        spawned = Some((cluster, dir));
        client
    } else {
        let client = match super::connect(&args.client).await {
            Ok(client) => client,
            Err(code) => return code,
        };
        // Credentials the cluster refuses would make every append of the run an error:
        // say so at once, with the exit status of every other command (6).
        if let Err(e @ (Error::Unauthenticated(_) | Error::PermissionDenied(_))) =
            client.status().await
        {
            return super::output::fail(&e);
        }
        Ok(client)
    };
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = match (&mut spawned, args.scenario) {
        (Some((cluster, _)), Scenario::Failover | Scenario::Handoff) => {
            failover::run_failover(&args, cluster).await
        }
        (Some((cluster, _)), Scenario::Restart) => {
            restart::run_restart(&args, cluster, client).await
        }
        (_, Scenario::Catchup) => catchup::run_catchup(&args, client).await,
        (_, Scenario::Lag) => lag::run_lag(&args, client).await,
        (_, Scenario::Scavenge) => scavenge::run_scavenge(&args, client).await,
        (_, Scenario::Groups) => groups::run_groups(&args, client).await,
        _ => workload::run_workload(&args, client).await,
    };
    if let Some((mut cluster, dir)) = spawned {
        report_peak_rss(&cluster);
        cluster.stop_all(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }
    code
}

/// Prints each spawned node's peak resident memory (Linux `VmHWM`) on stderr: the memory
/// target holds through every scenario, so every run shows it.
fn report_peak_rss(cluster: &LocalCluster) {
    let peaks: Vec<String> = (1..=cluster.size())
        .map(|id| {
            let peak = cluster.pid(id).and_then(peak_rss_kib);
            match peak {
                Some(kib) => format!("node {id} {:.1} MiB", kib as f64 / 1024.0),
                None => format!("node {id} unknown"),
            }
        })
        .collect();
    eprintln!("peak RSS: {}", peaks.join(", "));
}

/// `VmHWM` of a process, in KiB, from /proc (None elsewhere or if it has exited).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> String {
    if histogram.is_empty() {
        "null".into()
    } else {
        format!(
            "{:.3}",
            histogram.value_at_quantile(quantile) as f64 / 1000.0
        )
    }
}
