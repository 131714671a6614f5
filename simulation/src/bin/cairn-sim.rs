//! `cairn-sim`: runs many seeds of the simulation (long soaks) and prints a summary.
//!
//! ```text
//! cargo run -p cairn-simulation --bin cairn-sim -- --seeds 1000
//! cargo run -p cairn-simulation --bin cairn-sim -- --seed 42 --history /tmp/h.jsonl
//! cargo run -p cairn-simulation --bin cairn-sim -- --check recorded.jsonl
//! ```

use std::process::ExitCode;

use cairn_raft_store::faults::Bugs;
use cairn_simulation::sim::{bug_named, reproduction, run, SimConfig};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Runs Cairn's deterministic simulation over many seeds")]
struct Args {
    /// How many seeds to run, starting at --first.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Run only this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes per cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Simulated clients.
    #[arg(long, default_value_t = 3)]
    clients: u32,
    /// Simulated milliseconds of faults per seed.
    #[arg(long, default_value_t = 8_000)]
    fault_ms: u64,
    /// Write the (last) seed's history here as JSON lines.
    #[arg(long)]
    history: Option<std::path::PathBuf>,
    /// Stop at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
    /// Judge a recorded history (JSON lines, e.g. from real processes) instead of running.
    #[arg(long, value_name = "FILE")]
    check: Option<std::path::PathBuf>,
    /// Plant a bug (to see the checker catch it): ack-before-durable, skip-expected-version,
    /// apply-out-of-order, forget-event-ids, ignore-retry-content, index-skips-tag, skip-dcb-check,
    /// forget-repair, checkpoint-off-by-one, update-forgets-checkpoint, group-filter-dropped
    /// (with --groups, the last two with --group-update and --group-filter),
    /// group-history-keeps-too-few (with --groups), group-limit-ignored (with --group-limit),
    /// grant-wrong-prefix, auth-cache-not-invalidated, role-removal-keeps-members (with --auth),
    /// show-hidden-events, scavenge-drops-partly-hidden, append-to-tombstoned and
    /// snapshot-ignores-forgetting (with --lifecycle).
    #[arg(long)]
    bug: Option<String>,
    /// Consumer-group consumers in the workload (an ordered group on $all; they crash
    /// mid-event and park some events).
    #[arg(long)]
    groups: bool,
    /// The simulated admin in the workload: users, tokens, grants and their revocations,
    /// every node's security state judged after the run.
    #[arg(long)]
    auth: bool,
    /// With --groups: one consumer updates the group's settings mid-run (the checker then
    /// requires the update to keep the checkpoint).
    #[arg(long)]
    group_update: bool,
    /// With --groups: the group delivers only the hot streams (a stream-prefix filter; the
    /// checker then requires every delivery to pass it).
    #[arg(long)]
    group_filter: bool,
    /// A client that creates and deletes consumer groups against a limit of 2 live groups
    /// (the checker then requires that no committed point holds more).
    #[arg(long)]
    group_limit: bool,
    /// The stream-lifecycle client in the workload (metadata changes, soft deletes,
    /// tombstones, an erase and scavenges of streams `life-0`..`life-3`).
    #[arg(long)]
    lifecycle: bool,
}

/// Logs to stderr when `RUST_LOG` is set, stamped with simulated time.
fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    struct SimTime;
    impl tracing_subscriber::fmt::time::FormatTime for SimTime {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            let elapsed = turmoil::sim_elapsed().unwrap_or_default();
            write!(w, "{:>8.3}s", elapsed.as_secs_f64())
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(SimTime)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `--check FILE`: prints the report of a recorded history; exit 0 only if it is clean.
fn check_file(path: &std::path::Path) -> ExitCode {
    let history = match std::fs::File::open(path)
        .and_then(|f| cairn_simulation::history::read_jsonl(std::io::BufReader::new(f)))
    {
        Ok(history) => history,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let report = cairn_simulation::checker::check(&history);
    println!("{report}");
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    if let Some(path) = &args.check {
        return check_file(path);
    }
    if args.nodes < 1 || args.clients < 1 {
        eprintln!("error: --nodes and --clients must be at least 1");
        return ExitCode::from(2);
    }
    let bugs = match args.bug.as_deref().map(bug_named) {
        None => Bugs::default(),
        Some(Some(bugs)) => bugs,
        Some(None) => {
            eprintln!(
                "error: --bug: unknown bug {:?}",
                args.bug.unwrap_or_default()
            );
            return ExitCode::from(2);
        }
    };
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first..args.first.saturating_add(args.seeds)).collect(),
    };
    let started = std::time::Instant::now();
    let (mut failed, mut faults, mut operations, mut violations, mut events) = (0u64, 0, 0, 0, 0);
    let mut heal_to_write: Vec<u64> = Vec::new();
    for &seed in &seeds {
        let config = SimConfig {
            nodes: args.nodes,
            clients: args.clients,
            fault_ms: args.fault_ms,
            bugs,
            groups: args.groups,
            auth: args.auth,
            group_update: args.group_update,
            group_filter: args.group_filter,
            group_limit: args.group_limit,
            lifecycle: args.lifecycle,
            ..SimConfig::new(seed)
        };
        let outcome = match run(&config) {
            Ok(outcome) => outcome,
            Err(e) => {
                failed += 1;
                eprintln!("seed {seed}: run failed: {e:#}\n  {}", reproduction(seed));
                if args.fail_fast {
                    break;
                }
                continue;
            }
        };
        let stats = &outcome.report.stats;
        faults += stats.faults;
        operations += stats.appends + stats.reads;
        events += stats.events_committed;
        violations += outcome.report.violations.len() as u64;
        heal_to_write.extend(stats.heal_to_write_ms);
        if let Some(path) = &args.history {
            if let Err(e) = std::fs::write(path, outcome.history_bytes()) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        if !outcome.report.is_ok() {
            failed += 1;
            eprintln!(
                "seed {seed}: {} violations",
                outcome.report.violations.len()
            );
            for violation in outcome.report.violations.iter().take(10) {
                eprintln!("  {violation}");
            }
            eprintln!("  {}", reproduction(seed));
            if args.fail_fast {
                break;
            }
        }
    }
    println!(
        "seeds run: {}, failed: {failed}, faults injected: {faults}, operations: {operations}, events committed: {events}, violations: {violations}, in {:.1?}",
        seeds.len(),
        started.elapsed()
    );
    heal_to_write.sort_unstable();
    if let (Some(max), false) = (heal_to_write.last(), heal_to_write.is_empty()) {
        println!(
            "first acknowledged write after the heal: median {} ms, p90 {} ms, max {max} ms (simulated)",
            heal_to_write[heal_to_write.len() / 2],
            heal_to_write[heal_to_write.len() * 9 / 10],
        );
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
