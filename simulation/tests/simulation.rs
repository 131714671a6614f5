//! The simulation's tests: fixed seeds that must pass, determinism, and the planted bugs the
//! checker must catch.

use cairn_simulation::sim::{reproduction, run, SimConfig};

fn run_seed(config: &SimConfig) -> cairn_simulation::sim::RunOutcome {
    let started = std::time::Instant::now();
    let outcome = run(config).unwrap_or_else(|e| panic!("{e:#}\n{}", reproduction(config.seed)));
    eprintln!(
        "seed {}: {:?} in {:.1?}",
        config.seed,
        outcome.report.stats,
        started.elapsed()
    );
    outcome
}

/// Replays `CAIRN_SIM_SEED` (does nothing without it).
#[test]
fn seed_from_env() {
    let Ok(seed) = std::env::var("CAIRN_SIM_SEED") else {
        return;
    };
    let seed: u64 = seed.parse().expect("CAIRN_SIM_SEED is a number");
    let outcome = run_seed(&SimConfig::new(seed));
    for violation in &outcome.report.violations {
        eprintln!("{violation}");
    }
    assert!(outcome.report.is_ok(), "{}", reproduction(seed));
}
