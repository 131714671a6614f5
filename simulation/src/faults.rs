//! The fault schedule: what goes wrong, when, and for how long, all drawn from the seed before
//! the run starts (except which node leads, which the schedule asks of the cluster when the
//! fault fires).

use crate::rng::SimRng;

/// Which kinds of fault a run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultMix {
    pub partitions: bool,
    pub crashes: bool,
    pub latency: bool,
    pub disk: bool,
    pub membership: bool,
}

impl FaultMix {
    pub const ALL: FaultMix = FaultMix {
        partitions: true,
        crashes: true,
        latency: true,
        disk: true,
        membership: true,
    };
    pub const NONE: FaultMix = FaultMix {
        partitions: false,
        crashes: false,
        latency: false,
        disk: false,
        membership: false,
    };
}

/// One fault, from when it starts until `for_ms` later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Nodes `a` and `b` cannot reach each other.
    Partition { a: u64, b: u64 },
    /// Messages from `from` to `to` are lost; the other way works.
    PartitionOneway { from: u64, to: u64 },
    /// Whoever leads when this fires is cut off from every other node.
    IsolateLeader,
    /// The node loses power: unflushed writes are lost except a prefix chosen from the seed.
    Crash { node: u64 },
    /// The node is stopped the way an operator stops it (SIGTERM: a leader hands leadership
    /// over first) and started again when the fault ends.
    GracefulRestart { node: u64 },
    /// Every node loses power at once (a data centre outage): each keeps only what it synced,
    /// plus a prefix of the rest chosen from the seed.
    PowerLoss,
    /// Messages take up to this long.
    Latency { max_ms: u64 },
    /// Links fail at random (messages lost) with this chance per step, in thousandths.
    Lossy { per_mille: u64 },
    /// Every sync of this node's disk takes this long.
    SlowDisk { node: u64, delay_ms: u64 },
    /// This node's disk fails every write and sync; its Raft stops, and it is restarted when
    /// the fault ends.
    FailingDisk { node: u64 },
    /// The node is stopped, one of its files damaged (a byte flipped, or the file cut short;
    /// which file and where come from `damage`), and it is started again when the fault ends:
    /// it must find the damage, never serve it, and repair itself from the others. At most one
    /// per run: most nodes damaged at once stop the cluster, by design.
    CorruptDisk { node: u64, damage: u64 },
    /// The operator removes the node from the cluster (forced, so three voters may become
    /// two) and adds it back when the fault ends (`operator`). The node keeps running: it must
    /// refuse reads and writes while it is out, and catch up once it is back.
    RemoveNode { node: u64 },
}

/// A fault at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub at_ms: u64,
    pub for_ms: u64,
    pub fault: Fault,
}

/// Faults between `start_ms` and `end_ms` (each lasts at most until `end_ms`, the heal).
pub fn schedule(
    rng: &mut SimRng,
    nodes: u64,
    mix: FaultMix,
    start_ms: u64,
    end_ms: u64,
) -> Vec<Scheduled> {
    let mut kinds: Vec<u64> = Vec::new();
    if mix.partitions {
        kinds.extend([0, 1, 2]);
    }
    if mix.crashes {
        kinds.extend([3, 3, 8, 9]);
    }
    if mix.latency {
        kinds.extend([4, 5]);
    }
    if mix.disk {
        kinds.extend([6, 7, 10]);
    }
    let mut faults = Vec::new();
    if kinds.is_empty() {
        return faults;
    }
    let mut corrupted = false;
    let mut at_ms = start_ms + rng.below(1_000);
    while at_ms < end_ms {
        let node = 1 + rng.below(nodes);
        let other = 1 + (node + rng.below(nodes - 1)) % nodes;
        let fault = match kinds[rng.below(kinds.len() as u64) as usize] {
            0 => Fault::Partition { a: node, b: other },
            1 => Fault::PartitionOneway {
                from: node,
                to: other,
            },
            2 => Fault::IsolateLeader,
            3 => Fault::Crash { node },
            4 => Fault::Latency {
                max_ms: rng.between(20, 300),
            },
            5 => Fault::Lossy {
                per_mille: rng.between(1, 20),
            },
            6 => Fault::SlowDisk {
                node,
                delay_ms: rng.between(1, 50),
            },
            7 => Fault::FailingDisk { node },
            8 => Fault::PowerLoss,
            10 if !corrupted => {
                corrupted = true;
                Fault::CorruptDisk {
                    node,
                    damage: rng.next_u64(),
                }
            }
            10 => Fault::Crash { node },
            _ => Fault::GracefulRestart { node },
        };
        let for_ms = rng.between(200, 3_000).min(end_ms - at_ms);
        faults.push(Scheduled {
            at_ms,
            for_ms,
            fault,
        });
        at_ms += rng.between(100, 1_500);
    }
    faults
}

/// Chance, in percent, that a run changes membership at all.
pub const MEMBERSHIP_RUN_PERCENT: u64 = 50;
/// Most removals in one run (one at a time: a removal is skipped while another node is out).
pub const MAX_REMOVALS_PER_RUN: u64 = 2;

/// Membership changes between `start_ms` and `end_ms`, drawn from a generator of their own so
/// that adding them left every seed's other faults as they were.
pub fn membership_schedule(
    rng: &mut SimRng,
    nodes: u64,
    start_ms: u64,
    end_ms: u64,
) -> Vec<Scheduled> {
    if !rng.percent(MEMBERSHIP_RUN_PERCENT) || end_ms <= start_ms {
        return Vec::new();
    }
    let removals = 1 + rng.below(MAX_REMOVALS_PER_RUN);
    let mut faults: Vec<Scheduled> = (0..removals)
        .map(|_| {
            let at_ms = start_ms + rng.below(end_ms - start_ms);
            Scheduled {
                at_ms,
                for_ms: rng.between(500, 3_000).min(end_ms - at_ms),
                fault: Fault::RemoveNode {
                    node: 1 + rng.below(nodes),
                },
            }
        })
        .collect();
    faults.sort_by_key(|s| s.at_ms);
    faults
}
