//! Keeps tokio's task numbers a function of the seed.
//!
//! tokio numbers every task from one process-wide counter, and a runtime that is dropped (a node
//! that crashes or restarts) drops the tasks it still holds in an order that depends on those
//! numbers: its task list is sharded by id. A crashed node's sockets send their last segments in
//! that order, and each segment draws its latency from the seeded generator, so two runs of one
//! seed would part whenever the numbers differ. Two things made them differ: another simulation
//! running on another thread of the same process (the test harness runs tests in parallel), and
//! how many tasks earlier runs had used. So simulations in one process take turns, and each turn
//! starts the numbering at a multiple of [`TASK_ID_ALIGNMENT`].

use std::sync::{Mutex, MutexGuard};

/// Task numbers at the start of a run are rounded up to a multiple of this. tokio shards a
/// single-threaded runtime's task list 4 ways; 64 leaves room for it to shard more finely.
pub const TASK_ID_ALIGNMENT: u64 = 64;

/// Held for the whole of one simulated run.
pub struct Turn {
    _guard: MutexGuard<'static, ()>,
}

/// Waits until no other simulation runs in this process, then aligns the task numbering.
pub fn take_turn() -> Turn {
    static TURNS: Mutex<()> = Mutex::new(());
    let guard = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    align_task_ids();
    Turn { _guard: guard }
}

/// Spawns (and never runs) empty tasks until the next task number is a multiple of the alignment.
fn align_task_ids() {
    let scratch = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a scratch runtime");
    loop {
        let id = scratch.spawn(async {}).id();
        let number: u64 = id
            .to_string()
            .parse()
            .expect("tokio prints a task id as its number");
        if (number + 1).is_multiple_of(TASK_ID_ALIGNMENT) {
            break;
        }
    }
}
