//! A node repairing its store from the others (raft-store's `repair`, and its DESIGN.md,
//! "Corruption and repair").
//!
//! When the store finds at open that the log lost entries it had acknowledged (or had to be
//! cleared with a damaged state machine), it records the last index the node may have
//! acknowledged. Until the node's log holds that index again, sent by the leader, the node
//! neither votes (a vote request gets UNAVAILABLE: no vote) nor stands for election (openraft's
//! elections are switched off, and `TimeoutNow` is refused): with its vote, a candidate lacking
//! an entry this node helped commit could win, and the entry would be lost. It still takes
//! entries and snapshots from a leader, which is how it is repaired. A cleared node also refuses
//! reads until the leader's snapshot gives it its configuration back (`standing`: not a
//! member of its own, empty, configuration).
//!
//! If most nodes are damaged at once, no leader can be elected without them: the cluster stops
//! rather than elect one that lacks acknowledged events, and each repairing node says so every
//! `REPAIR_WAITING_LOG_INTERVAL_MS`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_raft_store::disk::Disk;
use cairn_raft_store::repair::{self, Damage};
use cairn_raft_store::{NodeId, Raft};
use openraft::async_runtime::WatchReceiver;

use crate::metrics::NodeMetrics;

/// How often a node still repairing says what it waits for.
pub const REPAIR_WAITING_LOG_INTERVAL_MS: u64 = 10_000;

/// Whether this node is repairing its store. Shared with the Raft service, which refuses votes
/// while it is.
pub struct Repair {
    id: NodeId,
    metrics: Arc<NodeMetrics>,
    /// The log index the node waits for; meaningful while `active`.
    until: u64,
    active: AtomicBool,
}

impl Repair {
    /// A node with nothing to repair.
    pub fn none(id: NodeId, metrics: Arc<NodeMetrics>) -> Arc<Repair> {
        Arc::new(Repair {
            id,
            metrics,
            until: 0,
            active: AtomicBool::new(false),
        })
    }

    /// Counts and logs the `damage` the store's open found; if a repair is under way (`until`),
    /// switches elections off and starts the task that ends the repair once this node's log
    /// holds `until` (and it follows a leader other than itself).
    pub fn start(
        id: NodeId,
        raft: &Raft,
        disk: Arc<dyn Disk>,
        damage: &[Damage],
        until: Option<u64>,
        metrics: Arc<NodeMetrics>,
    ) -> Arc<Repair> {
        for d in damage {
            metrics.corruption_detected(d.file);
            tracing::error!(node = id, file = d.file, found = %d.found, action = d.action, "store damage found at start");
        }
        let Some(until) = until else {
            return Repair::none(id, metrics);
        };
        raft.runtime_config().elect(false);
        metrics.repair_started();
        tracing::warn!(
            node = id,
            repair_until = until,
            "repairing the store from the leader: not voting or standing for election until the log holds entry {until}"
        );
        let repair = Arc::new(Repair {
            id,
            metrics,
            until,
            active: AtomicBool::new(true),
        });
        let task = repair.clone();
        let raft = raft.clone();
        tokio::spawn(async move { task.run(raft, disk).await });
        repair
    }

    async fn run(&self, raft: Raft, disk: Arc<dyn Disk>) {
        let started = Instant::now();
        let (id, until) = (self.id, self.until);
        let mut watch = raft.metrics();
        loop {
            let waited = tokio::time::timeout(
                Duration::from_millis(REPAIR_WAITING_LOG_INTERVAL_MS),
                // The borrow it returns is a read lock on the metrics: let it go at once.
                async {
                    watch
                        .wait_until(|m| {
                            m.last_log_index >= Some(until)
                                && m.current_leader.is_some_and(|leader| leader != id)
                        })
                        .await
                        .is_ok()
                },
            )
            .await;
            match waited {
                Ok(true) => break,
                Ok(false) => return, // Raft shut down
                Err(_) => {
                    let (leader, last) = {
                        let m = raft.metrics();
                        let m = m.borrow_watched();
                        (m.current_leader, m.last_log_index)
                    };
                    tracing::error!(
                        node = id,
                        ?leader,
                        last_log_index = ?last,
                        repair_until = until,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "still repairing the store: waiting for a leader to send the log up to {until}; with no leader, most nodes may be damaged at once, and the cluster stops rather than elect a leader that lacks acknowledged events"
                    );
                }
            }
        }
        if let Err(e) = repair::finish(disk.as_ref()) {
            tracing::error!(node = id, error = %e, "could not record the end of the repair; still not voting");
            return;
        }
        self.active.store(false, Ordering::Release);
        raft.runtime_config().elect(true);
        self.metrics.repair_finished();
        tracing::info!(
            node = id,
            repair_until = until,
            ms = started.elapsed().as_millis() as u64,
            "store repaired from the leader: voting and standing for election again"
        );
    }

    /// Counts and logs a snapshot received damaged (refused before Raft sees it).
    pub fn snapshot_damaged(&self, detail: &str) {
        self.metrics.corruption_detected("snapshot");
        tracing::error!(
            node = self.id,
            file = "snapshot",
            found = detail,
            action = "refused; the leader sends it again",
            "corruption detected"
        );
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Why this node does not vote now, if it does not.
    pub fn refusal(&self) -> Option<String> {
        self.is_active().then(|| {
            format!(
                "node {} is repairing its store and does not vote until its log holds entry {}",
                self.id, self.until
            )
        })
    }
}
