//! One simulated run: N real nodes (Raft, state machine, gRPC services) on turmoil with the
//! in-memory disk model, a seeded workload, a seeded fault schedule, a heal, and the history
//! that the checker judges. Everything comes from the seed, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_node::{NodeSetup, SnapshotSettings};
use cairn_raft_store::auth::{AuthState, AUTH_STREAM};
use cairn_raft_store::consumer_group;
use cairn_raft_store::disk::{MemDisk, MemFaults};
use cairn_raft_store::faults::Bugs;
use cairn_raft_store::{Direction, EventReader, IndexName, Limits, Raft, RecordedEvent};
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;

use crate::auth_admin::{run_auth_admin, Judges, LeaderFinder, Reach};
use crate::checker::{check, Report};
use crate::consumers::{run_group_consumer, GROUP, GROUP_CONSUMERS};
use crate::disk::SimDisk;
use crate::faults::{membership_schedule, schedule, Fault, FaultMix, Scheduled};
use crate::history::{content_digest, AuthStateRef, EventRef, GroupStateRef, Record};
use crate::lifecycle::run_lifecycle;
use crate::net::{SimConnector, NODE_PORT};
use crate::operator::{run_operator, Order, OutOfCluster};
use crate::rng::SimRng;
use crate::workload::{index_names, run_client, run_heal_probe, ClientPlan, Recorder};

/// Faults start after this much quiet (the cluster elects its first leader).
pub const FAULTS_START_MS: u64 = 1_000;
/// How long after the heal the cluster has to acknowledge a write.
pub const HEAL_DEADLINE_MS: u64 = 20_000;
/// After the run, how long the cluster gets to converge before its logs are compared.
pub const CONVERGE_MS: u64 = 20_000;
/// How long the simulated supervisor waits before starting a node that failed to start.
pub const RESTART_BACKOFF_MS: u64 = 500;
/// Simulated time per step.
pub const TICK_MS: u64 = 1;
/// Messages buffered per simulated host.
pub const TCP_CAPACITY: usize = 4_096;
/// Longest usual sync time a seed may give a node's disk.
pub const MAX_BASE_SYNC_DELAY_MS: u64 = 10;
/// Longest base message latency a seed may choose.
pub const MAX_BASE_LATENCY_MS: u64 = 10;
/// Snapshot every this many log entries, keeping this many behind (production: 5,000 and
/// 1,000): a seed commits a few hundred entries, and should build, install and roll back to
/// snapshots along the way.
pub const SIM_SNAPSHOT_EVERY_LOG_ENTRIES: u64 = 50;
pub const SIM_LOG_ENTRIES_KEPT_AFTER_SNAPSHOT: u64 = 20;
/// A crash keeps up to this many bytes of the first log write it loses (a torn write: less
/// than a frame header, or a frame cut in its payload).
pub const MAX_TORN_BYTES: u64 = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: u64,
    pub clients: u32,
    /// Length of the phase with faults.
    pub fault_ms: u64,
    /// How long the clients go on after the heal.
    pub heal_ms: u64,
    pub faults: FaultMix,
    /// Bugs planted on purpose (needs raft-store's `fault-injection` feature).
    pub bugs: Bugs,
    /// Consumer-group consumers in the workload (`consumers`). Off by default so that the
    /// seeds of the other tests (and the seeds their planted bugs are found at) stay as they
    /// were; the group tests and `cairn-sim --groups` turn it on.
    pub groups: bool,
    /// The simulated admin changing users, tokens and grants (`auth_admin`). Off by default
    /// for the same reason as `groups`; the auth tests and `cairn-sim --auth` turn it on.
    pub auth: bool,
    /// With `groups`: one consumer updates the group's settings mid-run (`consumers`). Off by
    /// default for the same reason (it changes the seeds' course).
    pub group_update: bool,
    /// With `groups`: the group is created with a stream-prefix filter (`consumers`), so it
    /// delivers only the hot streams' events. Off by default for the same reason.
    pub group_filter: bool,
    /// A client that creates and deletes groups against a limit of `SIM_MAX_GROUPS` live
    /// groups (`group_churn`). Off by default for the same reason.
    pub group_limit: bool,
    /// The stream-lifecycle client in the workload (`lifecycle`: metadata changes, deletes,
    /// tombstones, an erase, scavenges). Off by default for the same reason as `groups`; the
    /// lifecycle tests and `cairn-sim --lifecycle` turn it on.
    pub lifecycle: bool,
}

impl SimConfig {
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: 3,
            clients: 3,
            fault_ms: 8_000,
            heal_ms: 3_000,
            faults: FaultMix::ALL,
            bugs: Bugs::default(),
            groups: false,
            auth: false,
            group_update: false,
            group_filter: false,
            group_limit: false,
            lifecycle: false,
        }
    }
}

/// What a run produced.
pub struct RunOutcome {
    pub history: Vec<Record>,
    pub report: Report,
}

impl RunOutcome {
    /// The history as JSON lines: byte-identical for the same seed.
    pub fn history_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        crate::history::write_jsonl(&self.history, &mut bytes).expect("writing to memory");
        bytes
    }
}

/// The planted bug called `name` (as `cairn-sim --bug` spells it).
pub fn bug_named(name: &str) -> Option<Bugs> {
    let mut bugs = Bugs::default();
    match name {
        "ack-before-durable" => bugs.ack_before_durable = true,
        "skip-expected-version" => bugs.skip_expected_version = true,
        "apply-out-of-order" => bugs.apply_out_of_order = true,
        "forget-event-ids" => bugs.forget_event_ids = true,
        "ignore-retry-content" => bugs.ignore_retry_content = true,
        "index-skips-tag" => bugs.index_skips_tag = true,
        "skip-dcb-check" => bugs.skip_dcb_check = true,
        "forget-repair" => bugs.forget_repair = true,
        "checkpoint-off-by-one" => bugs.checkpoint_off_by_one = true,
        "grant-wrong-prefix" => bugs.grant_wrong_prefix = true,
        "auth-cache-not-invalidated" => bugs.auth_cache_not_invalidated = true,
        "update-forgets-checkpoint" => bugs.update_forgets_checkpoint = true,
        "group-filter-dropped" => bugs.group_filter_dropped = true,
        "role-removal-keeps-members" => bugs.role_removal_keeps_members = true,
        "group-limit-ignored" => bugs.group_limit_ignored = true,
        "group-history-keeps-too-few" => bugs.group_history_keeps_too_few = true,
        "show-hidden-events" => bugs.show_hidden_events = true,
        "scavenge-drops-partly-hidden" => bugs.scavenge_drops_partly_hidden = true,
        "append-to-tombstoned" => bugs.append_to_tombstoned = true,
        "snapshot-ignores-forgetting" => bugs.snapshot_ignores_forgetting = true,
        _ => return None,
    }
    Some(bugs)
}

/// A stored event as the history records it.
fn stored_ref(e: RecordedEvent) -> EventRef {
    EventRef {
        digest: Some(content_digest(
            &e.event_type,
            e.content_type == cairn_raft_store::ContentType::Binary,
            &e.data,
            &e.metadata,
        )),
        id: e.id,
        stream: e.stream,
        revision: e.revision,
        position: e.position,
        event_type: Some(e.event_type),
        tags: e.tags,
    }
}

/// A stored security state as the history records it (an undecodable one: empty, which the
/// checker's replay then finds wrong).
fn auth_state_ref(position: u64, id: uuid::Uuid, data: &[u8]) -> AuthStateRef {
    let state = AuthState::decode(data).unwrap_or_default();
    let grants = |grants: &BTreeSet<cairn_raft_store::auth::Grant>| {
        grants
            .iter()
            .map(|g| format!("{}:{}", g.action, g.prefix))
            .collect()
    };
    AuthStateRef {
        position,
        id,
        tokens: state
            .tokens
            .iter()
            .map(|(id, token)| (id.clone(), token.user.clone()))
            .collect(),
        grants: state
            .users
            .iter()
            .map(|(user, u)| (user.clone(), grants(&u.grants)))
            .collect(),
        roles: state
            .roles
            .iter()
            .map(|(role, r)| (role.clone(), grants(&r.grants)))
            .collect(),
        user_roles: state
            .users
            .iter()
            .filter(|(_, u)| !u.roles.is_empty())
            .map(|(user, u)| (user.clone(), u.roles.clone()))
            .collect(),
    }
}

/// The one line that replays a seed.
pub fn reproduction(seed: u64) -> String {
    format!("CAIRN_SIM_SEED={seed} cargo test -p cairn-simulation --test simulation -- seed_from_env --ignored --nocapture")
}

#[derive(Clone)]
struct NodeHandle {
    raft: Raft,
    reader: EventReader,
    /// Authentication as this node's gate does it, from its applied security state.
    auth: Arc<cairn_node::auth::Auth>,
}

type Registry = Arc<Mutex<BTreeMap<u64, NodeHandle>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn name(node: u64) -> String {
    format!("n{node}")
}

struct Cluster {
    nodes: u64,
    disks: BTreeMap<u64, Arc<MemDisk>>,
    sync_delays: BTreeMap<u64, Arc<AtomicU64>>,
    /// Each node's usual sync time, chosen from the seed (a disk is never instant).
    base_sync_delay_ms: BTreeMap<u64, u64>,
    registry: Registry,
    down: BTreeSet<u64>,
    base_latency: Duration,
    /// A Raft task panicked (we cannot tell on which node).
    panicked: bool,
    /// Per node: bumped to ask the running node to stop gracefully.
    stops: BTreeMap<u64, Arc<tokio::sync::watch::Sender<u64>>>,
    /// Each node's Raft address (what the operator adds a node back at).
    peers: BTreeMap<u64, String>,
    /// Where membership changes are ordered (`operator`).
    operator: tokio::sync::mpsc::UnboundedSender<Order>,
    /// Nodes the operator was told to remove and not yet to add back.
    removing: BTreeSet<u64>,
    /// Nodes the operator tried to remove and has not added back (its removal may complete
    /// after the order to add the node back was given).
    out_of_cluster: OutOfCluster,
    /// The node whose disk was damaged, and the last log index it held before: until its log
    /// is back there it repairs, and neither votes nor stands for election.
    damaged: Option<(u64, u64)>,
}

impl Cluster {
    fn leader(&self) -> Option<u64> {
        lock(&self.registry)
            .iter()
            .filter_map(|(&id, handle)| {
                let metrics = handle.raft.metrics().borrow_watched().clone();
                (metrics.state == ServerState::Leader).then_some((metrics.current_term, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    fn crash(&mut self, sim: &mut turmoil::Sim, node: u64, rng: &mut SimRng, keep_all: bool) {
        sim.crash(name(node));
        lock(&self.registry).remove(&node);
        let disk = &self.disks[&node];
        let unflushed = disk.unflushed_batches() as u64;
        let surviving = if keep_all {
            usize::MAX
        } else {
            rng.below(unflushed + 1) as usize
        };
        // The log's files and the event groups' files each lose their own suffix of unsynced
        // changes, possibly with the first bytes of the next write torn off (the log must cut
        // it at open; the state machine must notice groups its keyspace points at but lost).
        for files in [disk.log_model(), disk.group_model()] {
            let (files_surviving, torn_bytes) = if keep_all {
                (usize::MAX, 0)
            } else {
                let unflushed = files.unflushed_writes() as u64;
                (
                    rng.below(unflushed + 1) as usize,
                    rng.below(MAX_TORN_BYTES + 1) as usize,
                )
            };
            files.crash(files_surviving, torn_bytes);
        }
        disk.crash(surviving);
        self.down.insert(node);
    }

    /// Whether fewer nodes than all of them are voters now, or may be soon: the operator was
    /// told to remove a node and not yet to add it back, or tried to remove one and has not
    /// added it back, or a running node's membership is not every node as a voter in one
    /// config (a removal done, under way, or left joint). A damaged node's vote is then one
    /// that every majority needs.
    fn membership_reduced(&self) -> bool {
        if !self.removing.is_empty() || !lock(&self.out_of_cluster).is_empty() {
            return true;
        }
        let everyone: BTreeSet<u64> = (1..=self.nodes).collect();
        lock(&self.registry).values().any(|handle| {
            let metrics = handle.raft.metrics().borrow_watched().clone();
            metrics.membership_config.membership().get_joint_config() != &vec![everyone.clone()]
        })
    }

    /// Whether the damaged node (if any) is still repairing: down, or its log short of what
    /// it held before the damage.
    fn repairing(&mut self) -> bool {
        let Some((node, needed)) = self.damaged else {
            return false;
        };
        let repaired = lock(&self.registry).get(&node).is_some_and(|handle| {
            let metrics = handle.raft.metrics().borrow_watched().clone();
            metrics.last_log_index.unwrap_or(0) >= needed
        });
        if repaired {
            self.damaged = None;
        }
        !repaired
    }

    fn restart(&mut self, sim: &mut turmoil::Sim, node: u64) {
        if self.down.remove(&node) {
            sim.bounce(name(node));
        }
    }

    fn others(&self, node: u64) -> Vec<u64> {
        (1..=self.nodes).filter(|&n| n != node).collect()
    }

    /// Starts `fault`; returns what ends it.
    fn start(&mut self, sim: &mut turmoil::Sim, fault: &Fault, rng: &mut SimRng) -> Option<Ending> {
        match *fault {
            Fault::Partition { a, b } => {
                sim.partition(name(a), name(b));
                Some(Ending::Repair(vec![(a, b)]))
            }
            Fault::PartitionOneway { from, to } => {
                sim.partition_oneway(name(from), name(to));
                Some(Ending::RepairOneway(from, to))
            }
            Fault::IsolateLeader => {
                let leader = self.leader()?;
                let pairs: Vec<(u64, u64)> = self
                    .others(leader)
                    .into_iter()
                    .map(|o| (leader, o))
                    .collect();
                for &(a, b) in &pairs {
                    sim.partition(name(a), name(b));
                }
                Some(Ending::Repair(pairs))
            }
            Fault::Crash { node } => {
                if self.down.contains(&node) {
                    return None;
                }
                self.crash(sim, node, rng, false);
                Some(Ending::Restart(node))
            }
            Fault::GracefulRestart { node } => {
                if self.down.contains(&node) {
                    return None;
                }
                // The node's serve() sees the signal, hands leadership over if it leads,
                // stops, and its host finishes; the ending starts it again.
                self.stops[&node].send_modify(|generation| *generation += 1);
                lock(&self.registry).remove(&node);
                self.down.insert(node);
                Some(Ending::Restart(node))
            }
            Fault::PowerLoss => {
                let up: Vec<u64> = (1..=self.nodes)
                    .filter(|n| !self.down.contains(n))
                    .collect();
                if up.is_empty() {
                    return None;
                }
                for &node in &up {
                    self.crash(sim, node, rng, false);
                }
                Some(Ending::RestartAll(up))
            }
            Fault::Latency { max_ms } => {
                sim.set_max_message_latency(Duration::from_millis(max_ms));
                Some(Ending::Latency)
            }
            Fault::Lossy { per_mille } => {
                sim.set_fail_rate(per_mille as f64 / 1000.0);
                Some(Ending::Lossless)
            }
            Fault::SlowDisk { node, delay_ms } => {
                self.sync_delays[&node].store(delay_ms, Ordering::Relaxed);
                Some(Ending::FastDisk(node))
            }
            Fault::CorruptDisk { node, damage } => {
                // With the membership reduced, the damaged node's vote is one every majority
                // needs: a majority damaged at once, which stops the cluster by design
                // (DESIGN.md, "Membership and damaged disks").
                if self.down.contains(&node) || self.membership_reduced() {
                    return None;
                }
                let held = lock(&self.registry)
                    .get(&node)
                    .and_then(|h| h.raft.metrics().borrow_watched().last_log_index)
                    .unwrap_or(0);
                self.damaged = Some((node, held));
                // Stopped, not a power loss: what it wrote stays; then the damage.
                self.crash(sim, node, rng, true);
                crate::disk::damage(&self.disks[&node], damage);
                Some(Ending::Restart(node))
            }
            Fault::RemoveNode { node } => {
                // One node out at a time; and none while a damaged node repairs, for the
                // same reason as above.
                if !self.removing.is_empty() || self.repairing() {
                    return None;
                }
                self.removing.insert(node);
                self.operator.send(Order::Remove(node)).ok()?;
                Some(Ending::AddBack(node))
            }
            Fault::FailingDisk { node } => {
                self.disks[&node].set_faults(MemFaults {
                    fail_reads: false,
                    fail_writes: true,
                    fail_syncs: true,
                });
                Some(Ending::GoodDisk(node))
            }
        }
    }

    fn end(&mut self, sim: &mut turmoil::Sim, ending: &Ending, rng: &mut SimRng) {
        match *ending {
            Ending::Repair(ref pairs) => {
                for &(a, b) in pairs {
                    sim.repair(name(a), name(b));
                }
            }
            Ending::RepairOneway(from, to) => sim.repair_oneway(name(from), name(to)),
            Ending::Restart(node) => self.restart(sim, node),
            Ending::RestartAll(ref nodes) => {
                for &node in nodes {
                    self.restart(sim, node);
                }
            }
            Ending::Latency => sim.set_max_message_latency(self.base_latency),
            Ending::Lossless => sim.set_fail_rate(0.0),
            Ending::FastDisk(node) => {
                self.sync_delays[&node].store(self.base_sync_delay_ms[&node], Ordering::Relaxed)
            }
            Ending::AddBack(node) => {
                if self.removing.remove(&node) {
                    let _ = self
                        .operator
                        .send(Order::Add(node, self.peers[&node].clone()));
                }
            }
            Ending::GoodDisk(node) => {
                self.disks[&node].set_faults(MemFaults::default());
                if !self.down.contains(&node) {
                    // The process restarts; what it wrote is still in the page cache.
                    self.crash(sim, node, rng, true);
                    self.restart(sim, node);
                }
            }
        }
    }

    /// Records the panics of Raft tasks caught since the last call. The panicking node's Raft
    /// is stopped; the heal restarts every node once anything panicked.
    fn record_panics(&mut self, recorder: &Recorder, at_ms: u64) {
        for message in cairn_raft_store::runtime::take_caught_panics() {
            self.panicked = true;
            crate::workload::record(recorder, Record::Panic { at_ms, message });
        }
    }

    /// Lifts every fault: links, latency, loss, disks; restarts every node that is down or
    /// whose Raft stopped.
    fn heal(&mut self, sim: &mut turmoil::Sim, rng: &mut SimRng) {
        // Every node the operator may have removed comes back (it adds only those it did).
        self.removing.clear();
        let _ = self
            .operator
            .send(Order::RestoreAll(self.peers.clone().into_iter().collect()));
        for a in 1..=self.nodes {
            for b in 1..=self.nodes {
                if a != b {
                    sim.repair_oneway(name(a), name(b));
                }
            }
        }
        sim.set_max_message_latency(self.base_latency);
        sim.set_fail_rate(0.0);
        for node in 1..=self.nodes {
            self.sync_delays[&node].store(self.base_sync_delay_ms[&node], Ordering::Relaxed);
            self.disks[&node].set_faults(MemFaults::default());
            let stopped = lock(&self.registry)
                .get(&node)
                .is_some_and(|h| h.raft.metrics().borrow_watched().running_state.is_err());
            if stopped || self.panicked {
                self.crash(sim, node, rng, true);
            }
            self.restart(sim, node);
        }
    }

    /// Every node up, one leader, and every node has applied everything the leader has.
    fn converged(&self) -> bool {
        let registry = lock(&self.registry);
        if registry.len() as u64 != self.nodes {
            return false;
        }
        let metrics: Vec<_> = registry
            .values()
            .map(|h| h.raft.metrics().borrow_watched().clone())
            .collect();
        let Some(leader) = metrics.iter().find(|m| m.state == ServerState::Leader) else {
            return false;
        };
        metrics.iter().all(|m| {
            m.last_applied.map(|l| l.index) == leader.last_log_index
                && m.current_leader == Some(leader.id)
        })
    }

    /// Each node's `$all`, then each node's indexes (`index_names`), read from its store.
    fn logs(&self, clients: u32) -> Vec<Record> {
        let registry = lock(&self.registry);
        let logs = registry.iter().map(|(&node, handle)| Record::NodeLog {
            node,
            events: handle
                .reader
                .read_all(0, Direction::Forwards, u64::MAX)
                .map_while(Result::ok)
                .map(stored_ref)
                .collect(),
        });
        let indexes = registry.iter().flat_map(|(&node, handle)| {
            index_names(clients).into_iter().filter_map(move |index| {
                let name = IndexName::parse(&index)?;
                Some(Record::NodeIndex {
                    node,
                    events: handle
                        .reader
                        .read_index(&name, 0, Direction::Forwards, u64::MAX)
                        .map_while(Result::ok)
                        .map(stored_ref)
                        .collect(),
                    index,
                })
            })
        });
        let groups = registry.iter().map(|(&node, handle)| {
            // As stored: reads show only the newest `Limits::group_history` states, the
            // checker judges every one a scavenge left.
            let stream = consumer_group::group_stream(GROUP);
            let states = handle
                .reader
                .read_all_stored(0, Direction::Forwards, u64::MAX)
                .map_while(Result::ok)
                .filter(|e| e.stream == stream)
                .filter_map(|e| consumer_group::GroupState::decode(&e.data).ok())
                .map(|state| GroupStateRef {
                    incarnation: state.incarnation,
                    ordered: state.settings.strategy == cairn_raft_store::GroupStrategy::Ordered,
                    deleted: state.deleted,
                    next: state.checkpoint.source.next,
                    done: state.checkpoint.source.done,
                })
                .collect();
            let parked = handle
                .reader
                .read_stream(
                    &consumer_group::parked_stream(GROUP),
                    0,
                    Direction::Forwards,
                    u64::MAX,
                )
                .map_while(Result::ok)
                .filter_map(|e| consumer_group::ParkedRecord::decode(&e.data).ok())
                .map(|record| record.position)
                .collect();
            Record::NodeGroup {
                node,
                group: GROUP.into(),
                states,
                parked,
            }
        });
        let groups =
            groups.filter(|g| matches!(g, Record::NodeGroup { states, .. } if !states.is_empty()));
        // `$auth` as stored: reads of `$all` never show it (it holds password hashes).
        let auth = registry.iter().filter_map(|(&node, handle)| {
            let states: Vec<AuthStateRef> = handle
                .reader
                .read_all_stored(0, Direction::Forwards, u64::MAX)
                .map_while(Result::ok)
                .filter(|e| e.stream == AUTH_STREAM)
                .map(|e| auth_state_ref(e.position, e.id, &e.data))
                .collect();
            (!states.is_empty()).then_some(Record::NodeAuth { node, states })
        });
        logs.chain(indexes).chain(groups).chain(auth).collect()
    }
}

/// How a started fault is lifted.
enum Ending {
    Repair(Vec<(u64, u64)>),
    RepairOneway(u64, u64),
    Restart(u64),
    RestartAll(Vec<u64>),
    Latency,
    Lossless,
    FastDisk(u64),
    GoodDisk(u64),
    AddBack(u64),
}

fn host_error(e: anyhow::Error) -> Box<dyn std::error::Error> {
    e.into()
}

/// Runs one seed and checks its history.
pub fn run(config: &SimConfig) -> anyhow::Result<RunOutcome> {
    let _turn = crate::task_ids::take_turn();
    cairn_raft_store::runtime::seed_thread_rng(config.seed);
    cairn_raft_store::runtime::catch_task_panics();
    cairn_raft_store::faults::set(config.bugs);
    let root = SimRng::new(config.seed);
    let mut fault_rng = root.split(1);
    let base_latency = Duration::from_millis(fault_rng.between(1, MAX_BASE_LATENCY_MS));
    let mut sim = turmoil::Builder::new()
        .rng_seed(config.seed)
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tick_duration(Duration::from_millis(TICK_MS))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(base_latency)
        .tcp_capacity(TCP_CAPACITY)
        .build();

    let peers: BTreeMap<u64, String> = (1..=config.nodes)
        .map(|id| (id, format!("{}:{NODE_PORT}", name(id))))
        .collect();
    let base_sync_delay_ms: BTreeMap<u64, u64> = (1..=config.nodes)
        .map(|id| (id, fault_rng.below(MAX_BASE_SYNC_DELAY_MS + 1)))
        .collect();
    let (operator, orders) = tokio::sync::mpsc::unbounded_channel();
    let mut cluster = Cluster {
        nodes: config.nodes,
        disks: (1..=config.nodes).map(|id| (id, MemDisk::new())).collect(),
        sync_delays: base_sync_delay_ms
            .iter()
            .map(|(&id, &ms)| (id, Arc::new(AtomicU64::new(ms))))
            .collect(),
        base_sync_delay_ms,
        registry: Arc::new(Mutex::new(BTreeMap::new())),
        down: BTreeSet::new(),
        base_latency,
        panicked: false,
        stops: (1..=config.nodes)
            .map(|id| (id, Arc::new(tokio::sync::watch::channel(0u64).0)))
            .collect(),
        peers: peers.clone(),
        operator,
        removing: BTreeSet::new(),
        out_of_cluster: OutOfCluster::default(),
        damaged: None,
    };
    let limits = Limits {
        max_groups: if config.group_limit {
            crate::group_churn::SIM_MAX_GROUPS
        } else {
            Limits::default().max_groups
        },
        // `group-limit` judges every create and delete in the logs: the churned groups'
        // streams keep their whole history then.
        group_history: if config.group_limit {
            u64::MAX
        } else {
            Limits::default().group_history
        },
        ..Limits::default()
    };
    for id in 1..=config.nodes {
        let setup = NodeSetup {
            id,
            peers: peers.clone(),
            limits,
            snapshots: SnapshotSettings {
                every_log_entries: SIM_SNAPSHOT_EVERY_LOG_ENTRIES,
                log_entries_kept: SIM_LOG_ENTRIES_KEPT_AFTER_SNAPSHOT,
            },
            // turmoil's network has no TLS.
            peers_need_certificates: false,
            // Nor users: the simulation checks the state machine, not the gate.
            admin_secret: None,
        };
        let disk = cluster.disks[&id].clone();
        let delay = cluster.sync_delays[&id].clone();
        let registry = cluster.registry.clone();
        let stop = cluster.stops[&id].clone();
        sim.host(name(id), move || {
            let (setup, disk, delay, registry) =
                (setup.clone(), disk.clone(), delay.clone(), registry.clone());
            // Resolves when the schedule asks this boot of the node to stop.
            let mut stop = stop.subscribe();
            stop.borrow_and_update();
            let stopped = async move {
                let _ = stop.changed().await;
            };
            async move {
                // A node that cannot start (its disk fails) exits; its supervisor starts it
                // again a little later, as systemd or Kubernetes would.
                let node = loop {
                    let disk = SimDisk::new(disk.clone(), delay.clone());
                    match cairn_node::start(setup.clone(), disk, Arc::new(SimConnector)).await {
                        Ok(node) => break node,
                        Err(e) => {
                            tracing::warn!(node = id, error = %e, "node failed to start");
                            tokio::time::sleep(Duration::from_millis(RESTART_BACKOFF_MS)).await;
                        }
                    }
                };
                lock(&registry).insert(
                    id,
                    NodeHandle {
                        raft: node.raft.clone(),
                        reader: node.reader.clone(),
                        auth: cairn_node::auth::Auth::new(node.auth_view.clone()),
                    },
                );
                let incoming = crate::net::incoming().await?;
                node.serve(incoming, stopped).await.map_err(host_error)?;
                Ok(())
            }
        });
    }

    let mut records = vec![Record::Run {
        seed: config.seed,
        nodes: config.nodes as u32,
        clients: config.clients,
    }];
    if limits.group_history != u64::MAX {
        records.push(Record::GroupHistory {
            events: limits.group_history,
        });
    }
    let recorder: Recorder = Arc::new(Mutex::new(records));
    let heal_at = FAULTS_START_MS + config.fault_ms;
    let until_ms = heal_at + config.heal_ms;
    for client in 1..=config.clients {
        let mut rng = root.split(100 + u64::from(client));
        let mut endpoints: Vec<String> = peers.values().map(|a| format!("http://{a}")).collect();
        endpoints.rotate_left(rng.below(config.nodes) as usize);
        let plan = ClientPlan {
            client,
            rng,
            endpoints,
            until_ms,
            subscribe_all: client == 1,
            clients: config.clients,
        };
        sim.client(format!("c{client}"), run_client(plan, recorder.clone()));
    }

    let group_consumers = if config.groups { GROUP_CONSUMERS } else { 0 };
    for consumer in 1..=group_consumers {
        let rng = root.split(200 + u64::from(consumer));
        let mut endpoints: Vec<String> = peers.values().map(|a| format!("http://{a}")).collect();
        endpoints.rotate_left(root.split(300 + u64::from(consumer)).below(config.nodes) as usize);
        sim.client(
            format!("g{consumer}"),
            run_group_consumer(
                consumer,
                endpoints,
                rng,
                until_ms,
                config.group_update,
                config.group_filter,
                recorder.clone(),
            ),
        );
    }

    if config.group_limit {
        let rng = root.split(403);
        let endpoints: Vec<String> = peers.values().map(|a| format!("http://{a}")).collect();
        sim.client(
            "gchurn",
            crate::group_churn::run_group_churn(endpoints, rng, until_ms, recorder.clone()),
        );
    }

    if config.auth {
        let registry = cluster.registry.clone();
        let leader: LeaderFinder = Arc::new(move || {
            lock(&registry)
                .values()
                .filter_map(|handle| {
                    let metrics = handle.raft.metrics().borrow_watched().clone();
                    (metrics.state == ServerState::Leader)
                        .then(|| (metrics.current_term, handle.raft.clone()))
                })
                .max_by_key(|(term, _)| *term)
                .map(|(_, raft)| raft)
        });
        let registry = cluster.registry.clone();
        let judges: Judges = Arc::new(move || {
            lock(&registry)
                .iter()
                .map(|(&id, handle)| {
                    let metrics = handle.raft.metrics().borrow_watched().clone();
                    let applied = metrics.last_applied.map_or(0, |l| l.index);
                    (id, applied, handle.auth.clone())
                })
                .collect()
        });
        sim.client(
            "admin",
            run_auth_admin(
                Reach { leader, judges },
                // Not the lifecycle client's 400: the same generator made the same event ids,
                // and an auth change was taken for a retry of a metadata change.
                root.split(402),
                until_ms,
                recorder.clone(),
            ),
        );
    }

    if config.lifecycle {
        let mut endpoints: Vec<String> = peers.values().map(|a| format!("http://{a}")).collect();
        endpoints.rotate_left(root.split(401).below(config.nodes) as usize);
        sim.client(
            "life",
            run_lifecycle(
                endpoints,
                root.split(400),
                until_ms,
                heal_at + HEAL_DEADLINE_MS,
                recorder.clone(),
            ),
        );
    }

    let mut endpoints: Vec<String> = peers.values().map(|a| format!("http://{a}")).collect();
    endpoints.rotate_left(root.split(99).below(config.nodes) as usize);
    sim.client(
        "probe",
        run_heal_probe(
            endpoints,
            root.split(98),
            heal_at,
            heal_at + HEAL_DEADLINE_MS,
            recorder.clone(),
        ),
    );

    let mut endpoints: Vec<String> = peers.values().map(|a| format!("http://{a}")).collect();
    endpoints.rotate_left(root.split(97).below(config.nodes) as usize);
    sim.client(
        "operator",
        run_operator(
            endpoints,
            orders,
            heal_at + HEAL_DEADLINE_MS,
            recorder.clone(),
            cluster.out_of_cluster.clone(),
        ),
    );

    let mut pending: Vec<Scheduled> = schedule(
        &mut fault_rng,
        config.nodes,
        config.faults,
        FAULTS_START_MS,
        heal_at,
    );
    if config.faults.membership {
        pending.extend(membership_schedule(
            &mut root.split(3),
            config.nodes,
            FAULTS_START_MS,
            heal_at,
        ));
        pending.sort_by_key(|s| s.at_ms);
    }
    pending.reverse();
    let mut endings: Vec<(u64, u64, Ending)> = Vec::new();
    let mut sequence = 0u64;
    let mut healed = false;
    let now = |sim: &turmoil::Sim| sim.elapsed().as_millis() as u64;
    loop {
        let at = now(&sim);
        while pending.last().is_some_and(|s| s.at_ms <= at) {
            let scheduled = pending.pop().expect("checked");
            if let Some(ending) = cluster.start(&mut sim, &scheduled.fault, &mut fault_rng) {
                crate::workload::record(
                    &recorder,
                    Record::Fault {
                        at_ms: at,
                        fault: format!("{:?} for {} ms", scheduled.fault, scheduled.for_ms),
                    },
                );
                sequence += 1;
                endings.push((at + scheduled.for_ms, sequence, ending));
                endings.sort_by_key(|&(at, seq, _)| std::cmp::Reverse((at, seq)));
            }
        }
        while endings.last().is_some_and(|&(end, _, _)| end <= at) {
            let (_, _, ending) = endings.pop().expect("checked");
            cluster.end(&mut sim, &ending, &mut fault_rng);
        }
        if !healed && at >= heal_at {
            for (_, _, ending) in std::mem::take(&mut endings) {
                cluster.end(&mut sim, &ending, &mut fault_rng);
            }
            cluster.heal(&mut sim, &mut fault_rng);
            crate::workload::record(&recorder, Record::Healed { at_ms: at });
            healed = true;
        }
        let finished = sim
            .step()
            .map_err(|e| anyhow::anyhow!("seed {}: a host failed: {e}", config.seed))?;
        cluster.record_panics(&recorder, now(&sim));
        if finished && healed {
            break;
        }
    }
    let deadline = now(&sim) + CONVERGE_MS;
    while !cluster.converged() && now(&sim) < deadline {
        sim.step()
            .map_err(|e| anyhow::anyhow!("seed {}: a host failed: {e}", config.seed))?;
        cluster.record_panics(&recorder, now(&sim));
    }
    let mut history = std::mem::take(&mut *lock(&recorder));
    history.extend(cluster.logs(config.clients));
    let report = check(&history);
    Ok(RunOutcome { history, report })
}
