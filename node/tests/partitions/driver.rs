//! Runs one partition scenario: a cluster of `cairn node` processes, each in its own network
//! namespace; clients that record a history from the harness's namespace; the scenario's
//! faults, applied and healed; then the proof: every node converges to the same `$all`, and
//! the simulation's checker finds no violation in the history. The time from the (final) heal
//! to the first acknowledged append is measured and printed, never asserted.

use std::path::PathBuf;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use cairn_node::local::LocalCluster;
use cairn_simulation::checker;
use cairn_simulation::history::{write_jsonl, Record};

use crate::netns::{self, Net};
use cairn_client::{Client, Membership};

use crate::recorder::{client_for, first_ack_after_heal, node_log, Recording, Workload};

/// Clients writing and reading throughout.
const CLIENTS: u32 = 3;
/// Load before the first fault.
const LOAD_BEFORE_FAULT: Duration = Duration::from_millis(1_000);
/// Load after the final heal, once an append was acknowledged again.
const LOAD_AFTER_HEAL: Duration = Duration::from_millis(1_000);
/// Bound on waiting for a leader, for the first acknowledged append after the heal, and for
/// every node to converge.
const CLUSTER_WAIT: Duration = Duration::from_secs(30);

/// Pause between attempts of a membership change.
const MEMBERSHIP_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Pause between status polls while waiting for convergence.
const CONVERGE_POLL: Duration = Duration::from_millis(100);

/// Where the scenario's faults hit, learnt when the fault begins.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub leader: u64,
    /// The lowest-numbered node that is not the leader.
    pub follower: u64,
    /// The highest-numbered node that is not the leader.
    pub other_follower: u64,
}

/// A membership change made while the (first) faults hold, retried until it is made.
#[derive(Debug, Clone, Copy)]
pub enum MembershipChange {
    /// Remove the node `Roles::other_follower` names (the faults usually cut it off).
    RemoveOtherFollower,
    /// Add the scenario's last node, started as a joiner that waits to be added.
    AddLastNode,
}

/// One scenario: `cycles` times, the faults [`Scenario::apply`] makes, held for
/// [`Scenario::fault`], then healed (and, between cycles, [`Scenario::healed`] of calm).
pub struct Scenario {
    pub name: &'static str,
    pub nodes: u64,
    pub cycles: u32,
    pub fault: Duration,
    pub healed: Duration,
    /// Applies the faults; their description for the history. `Err` means this machine
    /// cannot make this fault (said loudly, and the scenario is skipped).
    pub apply: fn(&Net, Roles) -> Result<Vec<String>, String>,
    /// The clients talk to the leader of the time the first fault begins, and to no other
    /// node (to prove that a cut-off leader acknowledges nothing it could lose).
    pub clients_pinned_to_leader: bool,
    pub membership: Option<MembershipChange>,
}

impl Scenario {
    /// The nodes that form the cluster at the start.
    fn initial_members(&self) -> u64 {
        match self.membership {
            Some(MembershipChange::AddLastNode) => self.nodes - 1,
            _ => self.nodes,
        }
    }
}

/// Heal-to-first-ack times of every scenario run so far in this process.
static HEAL_TO_ACK: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
/// One scenario at a time: the machine has two cores, and timeouts are real.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Says something on the test's real stderr, past libtest's capture: skips must be seen.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

pub fn run(scenario: Scenario) {
    if let Some(reason) = netns::unavailable_reason() {
        // CI runs as root, with ./test.sh installing the tools: there they must run.
        assert!(
            std::env::var_os("CI").is_none(),
            "partition scenario {} cannot run in CI: {reason}",
            scenario.name
        );
        say(&format!(
            "SKIPPED partition scenario {}: {reason}",
            scenario.name
        ));
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    static SWEEP: Once = Once::new();
    SWEEP.call_once(netns::sweep_leftovers);
    // A thread of its own: it enters the harness's namespace, and so does every thread it
    // starts (the runtime's), while the test's thread stays where it was.
    let outcome = std::thread::spawn(move || run_inside(scenario)).join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn run_inside(scenario: Scenario) {
    let net = Net::new(scenario.nodes);
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs = (1..=scenario.nodes).map(|id| net.addr(id)).collect();
    let launchers = (1..=scenario.nodes).map(|id| net.launcher(id)).collect();
    // Dropped before `net` (declared after it): the nodes die, then their namespaces go.
    let mut cluster = LocalCluster::new(env!("CARGO_BIN_EXE_cairn"), dir.path(), addrs)
        .with_launchers(launchers)
        .with_initial(scenario.initial_members() as usize)
        .die_with_parent();
    net.enter_harness();
    cluster.start_all().expect("start nodes");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let history_path = history_path(scenario.name);
    let Some(records) = runtime.block_on(drive(&scenario, &net, &cluster)) else {
        return;
    };
    let mut file = std::fs::File::create(&history_path).expect("history file");
    write_jsonl(&records, &mut file).expect("write history");
    let report = checker::check(&records);
    assert!(
        report.is_ok(),
        "scenario {}: the checker found violations (history: {}, node logs: {}):\n{report}",
        scenario.name,
        history_path.display(),
        dir.keep().display()
    );
    say(&format!(
        "partition scenario {}: {report} (history: {})",
        scenario.name,
        history_path.display()
    ));
}

/// `target/tmp/partitions/NAME.jsonl`: kept after the test, for `cairn-sim --check`.
fn history_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("partitions");
    std::fs::create_dir_all(&dir).expect("history dir");
    dir.join(format!("{name}.jsonl"))
}

async fn leader(cluster: &LocalCluster) -> u64 {
    cluster
        .wait_for_leader(CLUSTER_WAIT)
        .await
        .unwrap_or_else(|| panic!("no leader within {CLUSTER_WAIT:?}"))
}

fn roles(leader: u64, nodes: u64) -> Roles {
    let followers: Vec<u64> = (1..=nodes).filter(|&n| n != leader).collect();
    Roles {
        leader,
        follower: followers[0],
        other_follower: followers[followers.len() - 1],
    }
}

/// Makes the change, retrying (the leader may change under it) until it is made or
/// [`CLUSTER_WAIT`] passes.
async fn change_membership(
    client: Client,
    kind: MembershipChange,
    id: u64,
    addr: String,
) -> Membership {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        let result = match kind {
            MembershipChange::RemoveOtherFollower => client.remove_node(id).await,
            MembershipChange::AddLastNode => client.add_node(id, &addr).await,
        };
        match result {
            Ok(membership) => return membership,
            Err(e) if Instant::now() < deadline => {
                say(&format!("membership change of node {id}: {e}; retrying"));
                tokio::time::sleep(MEMBERSHIP_RETRY_PAUSE).await;
            }
            Err(e) => {
                panic!("membership change of node {id} not made within {CLUSTER_WAIT:?}: {e}")
            }
        }
    }
}

/// Waits until every node in `members` has applied the same position.
async fn converge(cluster: &LocalCluster, members: &[u64]) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last.clear();
        for &id in members {
            let client = cluster.node_client(id).expect("client");
            let applied = match client.status().await {
                Ok(status) => status
                    .members
                    .iter()
                    .find(|m| m.id == id)
                    .map(|m| m.applied_position),
                Err(_) => None,
            };
            last.push(applied);
        }
        if last[0].is_some() && last.iter().all(|p| *p == last[0]) {
            return;
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
    panic!("nodes {members:?} did not converge within {CLUSTER_WAIT:?} of the heal (applied: {last:?})");
}

/// The history, or `None` if the scenario's faults cannot be made here (said loudly).
async fn drive(scenario: &Scenario, net: &Net, cluster: &LocalCluster) -> Option<Vec<Record>> {
    let recording = Recording::new(0, scenario.nodes as u32, CLIENTS);
    let first_leader = leader(cluster).await;
    let initial = scenario.initial_members();
    let members: Vec<String> = (1..=initial).map(|id| cluster.endpoint(id)).collect();
    let endpoints = if scenario.clients_pinned_to_leader {
        vec![cluster.endpoint(first_leader)]
    } else {
        members.clone()
    };
    let mut change = None;
    let mut members_after: Vec<u64> = (1..=initial).collect();
    let workload = Workload::start(&endpoints, CLIENTS, 21, &recording);
    tokio::time::sleep(LOAD_BEFORE_FAULT).await;
    let mut healed_at = Instant::now();
    for cycle in 0..scenario.cycles {
        let roles = roles(
            if cycle == 0 {
                first_leader
            } else {
                leader(cluster).await
            },
            initial,
        );
        let faults = match (scenario.apply)(net, roles) {
            Ok(faults) => faults,
            Err(reason) => {
                say(&format!(
                    "SKIPPED partition scenario {}: {reason}",
                    scenario.name
                ));
                workload.stop().await;
                return None;
            }
        };
        for fault in faults {
            recording.push(Record::Fault {
                at_ms: recording.now_ms(),
                fault,
            });
        }
        if let (0, Some(kind)) = (cycle, scenario.membership) {
            let (id, what) = match kind {
                MembershipChange::RemoveOtherFollower => {
                    members_after.retain(|&m| m != roles.other_follower);
                    (roles.other_follower, "remove")
                }
                MembershipChange::AddLastNode => {
                    members_after.push(scenario.nodes);
                    (scenario.nodes, "add")
                }
            };
            recording.push(Record::Fault {
                at_ms: recording.now_ms(),
                fault: format!("{what} node {id}"),
            });
            let client = client_for(members.clone());
            let addr = net.addr(id);
            change = Some(tokio::spawn(async move {
                change_membership(client, kind, id, addr).await
            }));
        }
        tokio::time::sleep(scenario.fault).await;
        net.heal();
        healed_at = Instant::now();
        if cycle + 1 < scenario.cycles {
            recording.push(Record::Fault {
                at_ms: recording.now_ms(),
                fault: "heal".into(),
            });
            tokio::time::sleep(scenario.healed).await;
        }
    }
    recording.push(Record::Healed {
        at_ms: recording.now_ms(),
    });
    let took = first_ack_after_heal(&members, &recording, healed_at, CLUSTER_WAIT)
        .await
        .unwrap_or_else(|| panic!("no append acknowledged within {CLUSTER_WAIT:?} of the heal"));
    if let Some(change) = change {
        let membership = change.await.expect("membership task");
        recording.push(Record::Fault {
            at_ms: recording.now_ms(),
            fault: format!("membership now: voters {:?}", membership.voters),
        });
        assert_eq!(
            membership.voters, members_after,
            "the membership change did not end as asked"
        );
    }
    tokio::time::sleep(LOAD_AFTER_HEAL).await;
    workload.stop().await;
    converge(cluster, &members_after).await;
    for &id in &members_after {
        recording.push(Record::NodeLog {
            node: id,
            events: node_log(cluster.endpoint(id)).await,
        });
    }
    let median = {
        let mut times = HEAL_TO_ACK.lock().unwrap_or_else(|p| p.into_inner());
        times.push(took);
        times.sort();
        (times[times.len() / 2], times.len())
    };
    say(&format!(
        "partition scenario {}: heal to first acknowledged append {} ms; median over the {} scenarios run so far: {} ms",
        scenario.name,
        took.as_millis(),
        median.1,
        median.0.as_millis()
    ));
    Some(recording.records())
}
