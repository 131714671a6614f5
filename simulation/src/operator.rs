//! The simulated operator: changes the cluster's membership while the other faults run, the way
//! a person would with `cairn cluster remove-node` / `add-node`, through the client library
//! against whichever node leads. The fault schedule sends it orders (a removal when a
//! `Fault::RemoveNode` starts, the node's return when it ends); after the heal it puts every
//! node it removed back, so the cluster can converge with all its members.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::history::Record;
use crate::workload::{client_for, now_ms, record, Recorder};

/// Pause between attempts at one membership change (no leader, the joiner down, another
/// change under way: each is worth waiting out).
pub const OPERATOR_RETRY_PAUSE_MS: u64 = 200;
/// Attempts at one removal before the operator gives up on it (the node then simply stays).
pub const MAX_REMOVE_ATTEMPTS: u32 = 10;

/// Longest the operator tries to add a node back while the faults run; the heal tries again
/// until the run's deadline.
pub const ADD_DURING_FAULTS_MS: u64 = 3_000;

/// The nodes the operator has tried to remove and not yet added back, shared with the fault
/// schedule: a removal may complete long after its order (retries, a lost answer), and the
/// schedule must not damage a disk while the membership may be reduced (`sim`).
pub type OutOfCluster = Arc<Mutex<BTreeSet<u64>>>;

fn lock(out: &OutOfCluster) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
    out.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the fault schedule asks of the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Take this node out of the cluster (forced: a three-node cluster may drop to two).
    Remove(u64),
    /// Bring this node (at this address) back as a voter.
    Add(u64, String),
    /// The heal: every node removed and not yet back comes back; then the operator stops.
    RestoreAll(Vec<(u64, String)>),
}

/// Runs the operator until its orders end (or `deadline_ms` passes); the run waits for it.
pub async fn run_operator(
    endpoints: Vec<String>,
    mut orders: UnboundedReceiver<Order>,
    deadline_ms: u64,
    recorder: Recorder,
    removed: OutOfCluster,
) -> turmoil::Result {
    let client = client_for(endpoints)?;
    // Every node the operator tried to remove, whether or not it heard the answer: a removal
    // whose answer was lost (a timeout, a leader change) may still complete, and a node left
    // out would never converge. Adding back a node that is still a voter is a no-op.
    while let Some(order) = orders.recv().await {
        match order {
            Order::Remove(node) => {
                lock(&removed).insert(node);
                for _ in 0..MAX_REMOVE_ATTEMPTS {
                    match client.force_remove_node(node).await {
                        Ok(_) => {
                            note(&recorder, format!("operator removed node {node}"));
                            break;
                        }
                        Err(e) if e.to_string().contains("is not a member") => break,
                        Err(_) => pause().await,
                    }
                }
            }
            Order::Add(node, address) => {
                // Bounded during the faults (the node may be down); the heal retries.
                let until_ms = deadline_ms.min(now_ms() + ADD_DURING_FAULTS_MS);
                let out = lock(&removed).contains(&node);
                if out && add(&client, &recorder, node, &address, until_ms).await {
                    lock(&removed).remove(&node);
                }
            }
            Order::RestoreAll(nodes) => {
                for (node, address) in nodes {
                    let out = lock(&removed).contains(&node);
                    if out && add(&client, &recorder, node, &address, deadline_ms).await {
                        lock(&removed).remove(&node);
                    }
                }
                break;
            }
        }
    }
    Ok(())
}

/// Adds `node` back, retrying until it is a voter again or `deadline_ms` passes; notes it
/// in the history when it was out (a removal whose answer was lost may never have happened).
async fn add(
    client: &cairn_client::Client,
    recorder: &Recorder,
    node: u64,
    address: &str,
    deadline_ms: u64,
) -> bool {
    while now_ms() < deadline_ms {
        match client.add_node(node, address).await {
            Ok(_) => {
                note(recorder, format!("operator added node {node} back"));
                return true;
            }
            Err(e) if e.to_string().contains("is already a voter") => return true,
            Err(_) => pause().await,
        }
    }
    false
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(OPERATOR_RETRY_PAUSE_MS)).await;
}

fn note(recorder: &Recorder, what: String) {
    record(
        recorder,
        Record::Fault {
            at_ms: now_ms(),
            fault: what,
        },
    );
}
