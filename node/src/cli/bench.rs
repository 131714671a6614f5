//! `cairn bench`: the workload of `shared/peerbench/WORKLOAD.md` (S1, S2, S3) against Cairn,
//! printing the same JSON lines, plus failover and handoff scenarios the peers lack.
//!
//! S1/S2/S3: C clients, each appending N pseudo-random 256-byte events at a time to its own
//! stream with the expected revision it last wrote; warmup, then a measured window; only
//! attempts started inside the window count. Failover (needs `--spawn`): kill the leader with
//! SIGKILL, time until the next append succeeds, restart it, repeat.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::{
    Client, ClientConfig, Error, EventData, ExpectedRevision, NodePreference, ReadFrom,
    ReadOptions, SubscribeOptions, SubscriptionMessage,
};
use cairn_node::local::LocalCluster;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use tokio_stream::StreamExt;

use super::{EXIT_FAILURE, EXIT_USAGE};

/// Bytes of pseudo-random payload per event (WORKLOAD.md).
pub const EVENT_BYTES: usize = 256;
/// An append or re-read with no answer in this long counts as an error (WORKLOAD.md).
pub const OPERATION_TIMEOUT_MS: u64 = 10_000;
/// Pause after an error before re-reading the stream (WORKLOAD.md).
pub const ERROR_PAUSE_MS: u64 = 50;
/// Extra time after the window before the scenario is stopped whatever happens.
pub const HARD_STOP_EXTRA_S: u64 = 120;
/// How long failover waits for the cluster (a leader, convergence, the first append).
pub const FAILOVER_WAIT_MS: u64 = 30_000;
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
/// Events per append while loading the store for catch-up.
pub const CATCHUP_LOAD_BATCH: u64 = 1_000;
/// Concurrent writers loading the store for catch-up.
pub const CATCHUP_LOAD_WRITERS: u64 = 4;
/// Lag: concurrent writers, and events per append (the rate is split between writers).
pub const LAG_WRITERS: u64 = 4;
pub const LAG_EVENTS_PER_APPEND: u64 = 50;
/// Lag: longest the subscribers may take to receive the last event once writing stops.
pub const LAG_DRAIN_MS: u64 = 30_000;

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
    /// Concurrent clients (default: 1 for S1, 64 for S2, 8 for S3).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Events per append (default: 1 for S1 and S2, 100 for S3).
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
    /// Lag: live subscribers.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Lag: events per second the writers hold.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Start a fresh three-node cluster for the run (required for failover and handoff).
    #[arg(long)]
    pub spawn: bool,
    /// The `target` label in the output.
    #[arg(long, default_value = "cairn")]
    pub label: String,
    #[command(flatten)]
    pub nodes: super::Endpoints,
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

struct Window {
    start: Instant,
    end: Instant,
    hard_stop: Instant,
}

struct ClientStats {
    histogram: Histogram<u64>,
    appends: u64,
    errors: u64,
    conflicts: u64,
    last_completion: Option<Instant>,
    consistent: bool,
}

async fn stream_head(client: &Client, stream: &str) -> Result<ExpectedRevision, Error> {
    let read = client.read_stream(stream, ReadOptions::backwards().max_count(1).linearizable());
    let head = match tokio::time::timeout(Duration::from_millis(OPERATION_TIMEOUT_MS), read).await {
        Err(_) => return Err(Error::Unavailable("re-read timed out".into())),
        Ok(Err(Error::StreamNotFound { .. })) => return Ok(ExpectedRevision::NoStream),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(mut events)) => events.next().await,
    };
    match head {
        Some(Ok(event)) => Ok(ExpectedRevision::Exact(event.revision)),
        Some(Err(e)) => Err(e),
        None => Ok(ExpectedRevision::NoStream),
    }
}

async fn run_client(
    client: Client,
    stream: String,
    seed: u64,
    events_per_append: usize,
    max_appends: u64,
    window: Arc<Window>,
    progress: Arc<AtomicU64>,
) -> ClientStats {
    let mut stats = ClientStats {
        histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
        appends: 0,
        errors: 0,
        conflicts: 0,
        last_completion: None,
        consistent: false,
    };
    let mut rng = SplitMix64(seed);
    let mut expected = ExpectedRevision::NoStream;
    loop {
        let now = Instant::now();
        if now >= window.end || now >= window.hard_stop || stats.appends >= max_appends {
            break;
        }
        let events: Vec<EventData> = (0..events_per_append)
            .map(|_| EventData::binary("BenchEvent", rng.payload()))
            .collect();
        let counted = Instant::now() >= window.start;
        let started = Instant::now();
        let append = client.append(&stream, expected, events);
        let outcome =
            tokio::time::timeout(Duration::from_millis(OPERATION_TIMEOUT_MS), append).await;
        let finished = Instant::now();
        match outcome {
            Ok(Ok(result)) => {
                expected = ExpectedRevision::Exact(result.last_revision);
                if counted {
                    let micros = finished.duration_since(started).as_micros().max(1) as u64;
                    let _ = stats.histogram.record(micros.min(600_000_000));
                    stats.appends += 1;
                    stats.last_completion = Some(finished);
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err(Error::WrongExpectedVersion { actual, .. })) => {
                if counted {
                    stats.conflicts += 1;
                    stats.last_completion = Some(finished);
                }
                expected = actual.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
            }
            _ => {
                if counted {
                    stats.errors += 1;
                    stats.last_completion = Some(finished);
                }
                tokio::time::sleep(Duration::from_millis(ERROR_PAUSE_MS)).await;
                if let Ok(head) = stream_head(&client, &stream).await {
                    expected = head;
                }
            }
        }
    }
    stats.consistent = matches!(stream_head(&client, &stream).await, Ok(head) if head == expected);
    stats
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

async fn run_workload(args: &BenchArgs, client: Client) -> ExitCode {
    let (name, default_clients, default_events) = match args.scenario {
        Scenario::S1 => ("S1", 1, 1),
        Scenario::S2 => ("S2", 64, 1),
        Scenario::S3 => ("S3", 8, 100),
        Scenario::Failover
        | Scenario::Handoff
        | Scenario::Catchup
        | Scenario::Lag
        | Scenario::Restart => {
            unreachable!("this scenario has its own runner")
        }
    };
    let clients = args.clients.unwrap_or(default_clients);
    let events_per_append = args.events_per_append.unwrap_or(default_events);
    if clients == 0 || events_per_append == 0 || args.seconds <= 0.0 || args.warmup < 0.0 {
        eprintln!("error: --clients, --events-per-append and --seconds must be positive");
        return ExitCode::from(EXIT_USAGE);
    }
    let run_id = format!("cb{}", std::process::id());
    let begin = Instant::now();
    let start = begin + Duration::from_secs_f64(args.warmup);
    let window = Arc::new(Window {
        start,
        end: start + Duration::from_secs_f64(args.seconds),
        hard_stop: start
            + Duration::from_secs_f64(args.seconds)
            + Duration::from_secs(HARD_STOP_EXTRA_S),
    });
    let progress = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let stream = format!("{run_id}-{}-{i}", name.to_lowercase());
            tokio::spawn(run_client(
                client.clone(),
                stream,
                0x5EED_0000 + i as u64,
                events_per_append,
                args.max_appends,
                window.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let reporter = {
        let progress = progress.clone();
        let window = window.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let elapsed = begin.elapsed().as_secs_f64();
                let phase = if Instant::now() < window.start {
                    "warmup"
                } else {
                    "measuring"
                };
                eprintln!(
                    "{name}: {elapsed:.0} s ({phase}), {} appends counted",
                    progress.load(Ordering::Relaxed)
                );
            }
        })
    };
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    let (mut appends, mut errors, mut conflicts, mut consistent) = (0u64, 0u64, 0u64, true);
    let mut last: Option<Instant> = None;
    for task in tasks {
        match task.await {
            Ok(stats) => {
                let _ = histogram.add(&stats.histogram);
                appends += stats.appends;
                errors += stats.errors;
                conflicts += stats.conflicts;
                consistent &= stats.consistent;
                last = last.max(stats.last_completion);
            }
            Err(e) => {
                eprintln!("error: a client task failed: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    reporter.abort();
    let duration = last.map_or(0.0, |l| l.duration_since(window.start).as_secs_f64());
    let rate = |n: u64| {
        if duration > 0.0 {
            n as f64 / duration
        } else {
            0.0
        }
    };
    eprintln!("{name}: streams consistent: {consistent}");
    let events = appends * events_per_append as u64;
    println!(
        "{{\"target\":{},\"scenario\":\"{name}\",\"clients\":{clients},\"events_per_append\":{events_per_append},\
         \"duration_s\":{duration:.3},\"appends\":{appends},\"events\":{events},\"events_per_s\":{:.1},\
         \"appends_per_s\":{:.1},\"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"errors\":{errors},\"conflicts\":{conflicts}}}",
        serde_json::Value::String(args.label.clone()),
        rate(events),
        rate(appends),
        ms(&histogram, 0.5),
        ms(&histogram, 0.99),
        ms(&histogram, 0.999),
    );
    if consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// Stops the leader `trials` times; each sample is the signal -> first successful append.
/// SIGKILL (failover: the others notice the silence and elect) or SIGTERM (handoff: the leader
/// hands over before it exits).
async fn run_failover(args: &BenchArgs, cluster: &mut LocalCluster) -> ExitCode {
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
        let mut cluster = match LocalCluster::on_free_ports(exe, &dir, 3) {
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
        Client::connect(args.nodes.endpoints.clone())
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
            run_failover(&args, cluster).await
        }
        (Some((cluster, _)), Scenario::Restart) => {
            super::bench_restart::run_restart(&args, cluster, client).await
        }
        (_, Scenario::Catchup) => run_catchup(&args, client).await,
        (_, Scenario::Lag) => run_lag(&args, client).await,
        _ => run_workload(&args, client).await,
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

/// Appends `total` events from several writers in large batches; returns the last position.
pub(super) async fn load(client: &Client, prefix: &str, total: u64) -> Result<u64, Error> {
    let per_writer = total.div_ceil(CATCHUP_LOAD_WRITERS);
    let writers: Vec<_> = (0..CATCHUP_LOAD_WRITERS)
        .map(|w| {
            let client = client.clone();
            let stream = format!("{prefix}-{w}");
            tokio::spawn(async move {
                let mut rng = SplitMix64(w);
                let mut written = 0;
                let mut last = 0;
                while written < per_writer {
                    let n = CATCHUP_LOAD_BATCH.min(per_writer - written);
                    let events = (0..n)
                        .map(|_| EventData::binary("Loaded", rng.payload()))
                        .collect();
                    last = client
                        .append(&stream, ExpectedRevision::Any, events)
                        .await?
                        .last_position;
                    written += n;
                }
                Ok::<u64, Error>(last)
            })
        })
        .collect();
    let mut last = 0;
    for writer in writers {
        last = last.max(writer.await.map_err(|e| Error::Internal(e.to_string()))??);
    }
    Ok(last)
}

/// The store's size now: the highest applied position any member reports.
async fn highest_applied(client: &Client) -> Result<u64, ExitCode> {
    match client.status().await {
        Ok(status) => Ok(status
            .members
            .iter()
            .map(|m| m.applied_position)
            .max()
            .unwrap_or(0)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(EXIT_FAILURE))
        }
    }
}

async fn run_catchup(args: &BenchArgs, client: Client) -> ExitCode {
    let first = match highest_applied(&client).await {
        Ok(position) => position,
        Err(code) => return code,
    };
    eprintln!("catchup: loading {} events", args.catchup_events);
    let loading = Instant::now();
    let last = match load(
        &client,
        &format!("cb{}-catchup", std::process::id()),
        args.catchup_events,
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
        "catchup: loaded in {:.1} s; subscribing on a follower",
        loading.elapsed().as_secs_f64()
    );
    let options = SubscribeOptions::default()
        .from(ReadFrom::At(first))
        .prefer(NodePreference::Follower)
        .min_position(last)
        .no_resubscribe();
    let started = Instant::now();
    let mut sub = match client.subscribe_all(options).await {
        Ok(sub) => sub,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut received = 0u64;
    let mut expected = first;
    while let Some(message) = sub.next().await {
        match message {
            Ok(SubscriptionMessage::Event(event)) => {
                if event.position != expected {
                    eprintln!(
                        "error: expected position {expected}, got {}",
                        event.position
                    );
                    return ExitCode::from(EXIT_FAILURE);
                }
                expected += 1;
                received += 1;
                if event.position >= last {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"target\":{},\"scenario\":\"catchup\",\"events\":{received},\"seconds\":{seconds:.3},\"events_per_s\":{:.1},\"served_by\":{}}}",
        serde_json::Value::String(args.label.clone()),
        received as f64 / seconds,
        sub.served_by().unwrap_or(0)
    );
    ExitCode::SUCCESS
}

/// Lag: most positions a run may cover (acknowledgement times are kept per position).
pub const LAG_MAX_EVENTS: usize = 4_000_000;

async fn run_lag(args: &BenchArgs, client: Client) -> ExitCode {
    if args.subscribers == 0 || args.rate == 0 {
        eprintln!("error: --subscribers and --rate must be positive");
        return ExitCode::from(EXIT_USAGE);
    }
    let expected_events = (args.rate as f64 * (args.seconds + args.warmup) * 2.0) as usize;
    if expected_events > LAG_MAX_EVENTS {
        eprintln!("error: --rate x --seconds asks for more than {LAG_MAX_EVENTS} events");
        return ExitCode::from(EXIT_USAGE);
    }
    let base = match highest_applied(&client).await {
        Ok(position) => position,
        Err(code) => return code,
    };
    // When each event's append was acknowledged (commit + apply on the leader), in
    // nanoseconds since `clock`, plus one (0: not yet).
    let clock = Instant::now();
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..expected_events).map(|_| AtomicU64::new(0)).collect());
    let mut subs = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let options = SubscribeOptions::default()
            .from(ReadFrom::End)
            .prefer(NodePreference::Follower)
            .no_resubscribe();
        match client.subscribe_all(options).await {
            Ok(sub) => subs.push(sub),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(args.seconds);
    let last_position = Arc::new(AtomicU64::new(0));
    let new_histogram =
        || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    let collectors: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            let last_position = last_position.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                // Commit (acknowledgement) to delivery, and proposal to delivery, in µs.
                let (mut from_commit, mut from_proposal) = (new_histogram(), new_histogram());
                let deadline = stop_at + Duration::from_millis(LAG_DRAIN_MS);
                while Instant::now() < deadline {
                    let message = match tokio::time::timeout_at(deadline.into(), sub.next()).await {
                        Ok(Some(Ok(message))) => message,
                        _ => break,
                    };
                    if let SubscriptionMessage::Event(event) = message {
                        let received = clock.elapsed().as_nanos() as u64 + 1;
                        if Instant::now() >= measure_from {
                            let slot = event
                                .position
                                .checked_sub(base)
                                .and_then(|i| acked.get(i as usize));
                            let ack = slot.map_or(0, |a| a.load(Ordering::Acquire));
                            // Delivered before the writer heard its acknowledgement: no lag.
                            let lag_us = if ack == 0 {
                                0
                            } else {
                                received.saturating_sub(ack) / 1000
                            };
                            let _ = from_commit.record(lag_us.clamp(1, 600_000_000));
                            let proposal_us =
                                now_unix_ms().saturating_sub(event.created_unix_ms) * 1000;
                            let _ = from_proposal.record(proposal_us.clamp(1, 600_000_000));
                        }
                        let done = last_position.load(Ordering::Acquire);
                        if done > 0 && event.position >= done {
                            break;
                        }
                    }
                }
                (from_commit, from_proposal)
            })
        })
        .collect();
    let per_writer_interval = Duration::from_secs_f64(
        LAG_WRITERS as f64 * LAG_EVENTS_PER_APPEND as f64 / args.rate as f64,
    );
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..LAG_WRITERS)
        .map(|w| {
            let client = client.clone();
            let written = written.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let stream = format!("cb{}-lag-{w}", std::process::id());
                let mut rng = SplitMix64(w);
                let mut tick = tokio::time::interval(per_writer_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last = 0;
                while Instant::now() < stop_at {
                    tick.tick().await;
                    let events = (0..LAG_EVENTS_PER_APPEND)
                        .map(|_| EventData::binary("Live", rng.payload()))
                        .collect();
                    if let Ok(result) = client.append(&stream, ExpectedRevision::Any, events).await
                    {
                        let at = clock.elapsed().as_nanos() as u64 + 1;
                        let first = result.last_position + 1 - LAG_EVENTS_PER_APPEND;
                        for position in first..=result.last_position {
                            if let Some(slot) = position
                                .checked_sub(base)
                                .and_then(|i| acked.get(i as usize))
                            {
                                slot.store(at, Ordering::Release);
                            }
                        }
                        last = last.max(result.last_position);
                        written.fetch_add(LAG_EVENTS_PER_APPEND, Ordering::Relaxed);
                    }
                }
                last
            })
        })
        .collect();
    let started = Instant::now();
    let mut last = 0;
    for writer in writers {
        last = last.max(writer.await.unwrap_or(0));
    }
    let elapsed = started.elapsed().as_secs_f64();
    last_position.store(last.max(1), Ordering::Release);
    let (mut from_commit, mut from_proposal) = (new_histogram(), new_histogram());
    for collector in collectors {
        if let Ok((c, p)) = collector.await {
            let _ = from_commit.add(&c);
            let _ = from_proposal.add(&p);
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| format!("{:.3}", h.value_at_quantile(q) as f64 / 1000.0);
    println!(
        "{{\"target\":{},\"scenario\":\"lag\",\"subscribers\":{},\"events_per_s\":{:.1},\"events_per_append\":{LAG_EVENTS_PER_APPEND},\"deliveries\":{},\
         \"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{},\"from_proposal_p50_ms\":{},\"from_proposal_p99_ms\":{}}}",
        serde_json::Value::String(args.label.clone()),
        args.subscribers,
        written.load(Ordering::Relaxed) as f64 / elapsed,
        from_commit.len(),
        ms(&from_commit, 0.5),
        ms(&from_commit, 0.99),
        ms(&from_commit, 0.999),
        ms(&from_commit, 1.0),
        ms(&from_proposal, 0.5),
        ms(&from_proposal, 0.99),
    );
    ExitCode::SUCCESS
}
