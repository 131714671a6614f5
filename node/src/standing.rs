//! Whether this node is still a member of the cluster, and what it does when it is not.
//!
//! openraft tells a node nothing when it is removed: remove-node demotes a voter to a learner,
//! waits (boundedly) for it to hold that configuration, then drops it, and from then on the
//! leader sends it nothing, not even the configuration that removed it. Left alone, the removed
//! node would go on answering reads from a store that never moves again, call itself a learner,
//! and report ready. So a node that may have been removed asks: every
//! [`MEMBERSHIP_CHECK_INTERVAL_MS`], a node that is a learner in its own configuration, or
//! knows no leader, asks the leader it knows (knowing none: every other member of its
//! configuration) for its status, and believes an answer only from a node that leads by its own
//! account, in a term no older than the one this node knows. If that leader's configuration
//! lacks this node, this node is [`Standing::Removed`]. A voter that knows a leader is a member
//! without asking. A node whose own configuration lacks it (a node waiting for add-node, or one
//! that did receive the configuration that dropped it) is [`Standing::NotMember`] at once.
//!
//! A node that is not a member refuses reads, appends and subscriptions with
//! FAILED_PRECONDITION naming the members (the leader in `x-cairn-leader`, so a client moves
//! there in one hop), ends the subscriptions it serves the same way, reports not ready, says
//! `removed` as its role in status, and logs the change once. It keeps running: under a
//! supervisor (systemd, Kubernetes) an exit would be restarted into the same removed node, a
//! crash loop that hides the reason; and running, it can be added again (`cairn cluster
//! add-node` probes it) without a restart, after which the next check finds it a member again.
//! Stopping it is the operator's step. The checks go on in every standing, so a wrong verdict
//! (a leader that loses office right after the change) is corrected at the next one.
//!
//! Between the removal and the first check that sees it (at most one interval plus one RPC)
//! the node still serves local reads: as stale as a lagging follower's, which local reads
//! allow; linearizable reads never came from it.

use std::collections::HashMap;
use std::time::Duration;

use cairn_client::proto;
use cairn_client::proto::cluster_client::ClusterClient;
use cairn_raft_store::{NodeId, Raft};
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::error::NodeError;
use crate::network::Connector;

/// How often a node that may have been removed (a learner in its own configuration, or one
/// that knows no leader) asks the leader whether it is still a member. A removed node refuses
/// reads within about this long (plus one status call) after its removal.
pub const MEMBERSHIP_CHECK_INTERVAL_MS: u64 = 500;
/// Longest a membership check waits for a member's status; past it that member gives no
/// verdict (the standing stays as it was).
pub const MEMBERSHIP_CHECK_TIMEOUT_MS: u64 = 500;

/// This node's place in the cluster, as far as it can tell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Standing {
    /// In the configuration, as far as it knows (and, for a learner, as its leader says).
    #[default]
    Member,
    /// Its own configuration lacks it: it waits to be added, or it received the configuration
    /// that removed it.
    NotMember,
    /// The leader's configuration lacks it.
    Removed(Removal),
}

/// What the leader said when it answered that this node is no longer a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub leader: NodeId,
    /// `http://HOST:PORT`.
    pub leader_endpoint: String,
    pub term: u64,
    /// Every member of the leader's configuration (voters and learners), with its endpoint.
    pub members: Vec<(NodeId, String)>,
}

impl Standing {
    pub fn is_member(&self) -> bool {
        matches!(self, Standing::Member)
    }

    /// Why node `id` is not a member, in one line; `None` for a member.
    pub fn reason(&self, id: NodeId) -> Option<String> {
        match self {
            Standing::Member => None,
            Standing::NotMember => Some(format!(
                "node {id} is not a member of the cluster (not added yet, or removed)"
            )),
            Standing::Removed(removal) => {
                let members: Vec<String> = removal
                    .members
                    .iter()
                    .map(|(member, endpoint)| {
                        let leads = if *member == removal.leader {
                            " (leader)"
                        } else {
                            ""
                        };
                        format!("node {member} at {endpoint}{leads}")
                    })
                    .collect();
                Some(format!(
                    "node {id} was removed from the cluster; the members are {}",
                    members.join(", ")
                ))
            }
        }
    }

    /// The answer to a read, append or subscription on node `id`: FAILED_PRECONDITION with the
    /// reason and, when a leader is known, its endpoint in `x-cairn-leader`. `None` for a member.
    pub fn refusal(&self, id: NodeId, known_leader: Option<String>) -> Option<NodeError> {
        let reason = self.reason(id)?;
        let leader_endpoint = match self {
            Standing::Removed(removal) => Some(removal.leader_endpoint.clone()),
            _ => known_leader,
        };
        Some(NodeError::NotServing {
            reason,
            leader_endpoint,
        })
    }
}

/// Starts the check (a task that ends when Raft shuts down) and returns its verdicts.
pub fn watch(
    id: NodeId,
    raft: Raft,
    connector: std::sync::Arc<dyn Connector>,
) -> watch::Receiver<Standing> {
    let (tx, rx) = watch::channel(Standing::Member);
    tokio::spawn(async move {
        let mut channels = HashMap::new();
        let mut metrics = raft.metrics();
        loop {
            // What the check is about to see: a change during it wakes the next one at once.
            let seen = observed(&metrics.borrow_and_update());
            if let Some(standing) = check(id, &raft, connector.as_ref(), &mut channels).await {
                let changed = tx.send_if_modified(|current| {
                    let changed = *current != standing;
                    *current = standing.clone();
                    changed
                });
                if changed {
                    match standing.reason(id) {
                        Some(reason) => tracing::warn!(
                            node = id,
                            "{reason}: refusing reads, appends and subscriptions, and not ready; stop this node, or add it again with `cairn cluster add-node`"
                        ),
                        None => tracing::info!(node = id, "a member of the cluster"),
                    }
                }
            }
            if !next_check(&mut metrics, seen).await {
                break; // Raft shut down
            }
        }
    });
    rx
}

type Metrics = cairn_raft_store::RaftMetrics;
type Observed = (Option<cairn_raft_store::LogId>, Option<NodeId>);

/// What a check depends on locally: the configuration's log id and the leader.
fn observed(m: &Metrics) -> Observed {
    (*m.membership_config.log_id(), m.current_leader)
}

/// Waits [`MEMBERSHIP_CHECK_INTERVAL_MS`], or less if the configuration or the leader this
/// node knows differs from `before` (what the last check saw); false when Raft shut down.
async fn next_check(metrics: &mut cairn_raft_store::MetricsWatch, before: Observed) -> bool {
    if observed(&metrics.borrow_and_update()) != before {
        return true;
    }
    let interval = tokio::time::sleep(Duration::from_millis(MEMBERSHIP_CHECK_INTERVAL_MS));
    tokio::pin!(interval);
    loop {
        tokio::select! {
            _ = &mut interval => return true,
            changed = metrics.changed() => {
                if changed.is_err() {
                    return false;
                }
                if observed(&metrics.borrow_and_update()) != before {
                    return true;
                }
            }
        }
    }
}

/// One check; `None` when nobody gave a verdict (the standing stays as it was).
async fn check(
    id: NodeId,
    raft: &Raft,
    connector: &dyn Connector,
    channels: &mut HashMap<String, Channel>,
) -> Option<Standing> {
    let (term, leader, voter, others) = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Some(Standing::NotMember);
        }
        let voter = membership.voter_ids().any(|v| v == id);
        let others: Vec<(NodeId, String)> = membership
            .nodes()
            .filter(|(member, _)| **member != id)
            .map(|(member, node)| (*member, node.addr.clone()))
            .collect();
        (metrics.current_term, metrics.current_leader, voter, others)
    };
    if voter && leader.is_some() {
        return Some(Standing::Member);
    }
    // Ask the leader this node knows, or, knowing none, every other member.
    let asked: Vec<(NodeId, String)> = others
        .into_iter()
        .filter(|(member, _)| leader.is_none() || leader == Some(*member))
        .collect();
    let calls = asked.iter().map(|(member, addr)| {
        let channel = match channels.get(addr) {
            Some(channel) => Some(channel.clone()),
            None => connector.channel(addr).ok().inspect(|channel| {
                channels.insert(addr.clone(), channel.clone());
            }),
        };
        ask(*member, channel)
    });
    let mut answers: Vec<proto::StatusResponse> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    // The leader this node knows may have lost office since: follow the leader its answer
    // names, once.
    let hinted = answers
        .iter()
        .filter(|a| a.leader_id.is_some_and(|l| l != a.node_id))
        .filter_map(|a| Some((a.leader_id?, a.leader_endpoint.clone())))
        .find(|(l, _)| !asked.iter().any(|(member, _)| member == l));
    if let Some((hinted, endpoint)) = hinted {
        let addr = endpoint
            .split_once("://")
            .map_or(endpoint.as_str(), |(_, addr)| addr);
        if let Some(answer) = ask(hinted, connector.channel(addr).ok()).await {
            answers.push(answer);
        }
    }
    // Keep the channels of the members just asked only.
    channels.retain(|addr, _| asked.iter().any(|(_, a)| a == addr));
    // The answer of a leader (by its own account), the newest term first. A stale leader cut
    // off from the cluster has an older term (and an older configuration) than the one this
    // node learnt from its current leader, and is ignored when this node knows a leader.
    let least_term = if leader.is_some() { term } else { 0 };
    let answer = answers
        .iter()
        .filter(|a| a.leader_id == Some(a.node_id) && a.term >= least_term)
        .max_by_key(|a| a.term)?;
    if answer.members.iter().any(|m| m.id == id) {
        return Some(Standing::Member);
    }
    Some(Standing::Removed(Removal {
        leader: answer.node_id,
        leader_endpoint: answer.leader_endpoint.clone(),
        term: answer.term,
        members: answer
            .members
            .iter()
            .map(|m| (m.id, m.endpoint.clone()))
            .collect(),
    }))
}

/// Member `member`'s own status, if it answers in time as the node it should be.
async fn ask(member: NodeId, channel: Option<Channel>) -> Option<proto::StatusResponse> {
    let mut client = ClusterClient::new(channel?);
    let call = client.status(proto::StatusRequest {
        local_only: true,
        ..Default::default()
    });
    let answer = tokio::time::timeout(Duration::from_millis(MEMBERSHIP_CHECK_TIMEOUT_MS), call)
        .await
        .ok()?
        .ok()?
        .into_inner();
    (answer.node_id == member).then_some(answer)
}
