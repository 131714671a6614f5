//! `cairn-sim`: runs many seeds of the simulation (long soaks) and prints a summary.
//!
//! ```text
//! cargo run -p cairn-simulation --bin cairn-sim -- --seeds 1000
//! cargo run -p cairn-simulation --bin cairn-sim -- --seed 42 --history /tmp/h.jsonl
//! ```

use std::process::ExitCode;

use cairn_simulation::sim::{reproduction, run, SimConfig};
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.nodes < 1 || args.clients < 1 {
        eprintln!("error: --nodes and --clients must be at least 1");
        return ExitCode::from(2);
    }
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first..args.first.saturating_add(args.seeds)).collect(),
    };
    let started = std::time::Instant::now();
    let (mut failed, mut faults, mut operations, mut violations, mut events) = (0u64, 0, 0, 0, 0);
    for &seed in &seeds {
        let config = SimConfig {
            nodes: args.nodes,
            clients: args.clients,
            fault_ms: args.fault_ms,
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
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
