//! Leadership handoff: the leader hands over to a caught-up follower before it stops (SIGTERM)
//! or is removed, so clients see one short election instead of a failure-detection timeout.
//!
//! openraft 0.9 had no transfer-leader API (0.10's is not used: this handoff was measured on
//! 0.9 and the cluster tests hold it on 0.10). What works: a follower told to stand
//! (`raft.trigger().elect()`) asks for votes in the next term. Followers refuse while their
//! leader lease (= `ELECTION_TIMEOUT_MAX_MS`) is fresh, but the old leader grants the vote
//! (a leader's vote time is not refreshed after its election) if the candidate's log is at
//! least as long as its own; it then steps down and stops sending heartbeats. In a three-node
//! cluster candidate and old leader are a majority at once; in a larger one the candidate
//! wins a later round, once the other followers' leases have run out (about one lease).
//!
//! So the leader here: closes the [`ProposalGate`] (new appends wait; nothing new enters its
//! log), holds its own elections back, lets the proposals in flight finish, waits out its own
//! lease if it was elected less than a lease ago, waits until the most caught-up voter has all
//! of its log, sends it `TimeoutNow` (the internal RPC, handled in `network::raft_server`), and
//! waits for a new leader. If that voter does not take over it tries one other. The gate opens
//! again at the end either way: appends that waited then meet the new leader's hint (or, if
//! the handoff failed, are proposed here as before).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cairn_raft_store::{NodeId, Raft, RaftMetrics};
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::NodeError;
use crate::network::proto::raft_internal_client::RaftInternalClient;
use crate::network::proto::TimeoutNowRequest;
use crate::network::Connector;
use crate::timing::{ELECTION_TIMEOUT_MAX_MS, RAFT_STATE_TIMEOUT_MS};

/// Longest the leader waits for appends already being proposed to finish (they are bounded by
/// `APPEND_TIMEOUT_MS`; past this the handoff goes on, and may cost a normal election).
pub const HANDOFF_DRAIN_TIMEOUT_MS: u64 = 2_000;
/// Longest the leader waits for the chosen voter to hold its whole log.
pub const HANDOFF_CATCH_UP_TIMEOUT_MS: u64 = 2_000;
/// Deadline of the `TimeoutNow` RPC.
pub const TIMEOUT_NOW_RPC_TIMEOUT_MS: u64 = 500;
/// Longest the leader waits, after `TimeoutNow`, to learn of a new leader. Three nodes elect at
/// once; more need about one leader lease (250 ms) and an election timeout.
pub const HANDOFF_ELECTION_WAIT_MS: u64 = 3_000;
/// Past the end of this leader's own lease before the candidate is told to stand (the lease
/// check is `now <= voted_at + lease`).
pub const LEASE_MARGIN_MS: u64 = 5;
/// Voters tried in turn: the most caught-up, then one other.
pub const HANDOFF_MAX_TARGETS: usize = 2;
/// Longest an append waits at a closed gate before it is refused (UNAVAILABLE, safe to retry);
/// below the client's 5 s request timeout. A handoff normally takes well under a second.
pub const GATE_WAIT_MS: u64 = 4_000;

/// Why leadership was not handed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("node {0} is not the leader")]
    NotLeader(NodeId),
    #[error("node {0} is the only voter: there is nobody to hand leadership to")]
    NoOtherVoter(NodeId),
    #[error("leadership was not handed over: {0}")]
    Failed(String),
}

/// Holds new proposals back while the leader hands over. Proposers [`ProposalGate::enter`]
/// and hold the guard while their entry is proposed and committed; the handoff closes the
/// gate, waits for the guards to go, and opens it again when it is done.
#[derive(Default)]
pub struct ProposalGate {
    closed: AtomicBool,
    in_flight: AtomicUsize,
    reopened: Notify,
    /// One handoff at a time (SIGTERM may come during a remove-node's handoff).
    handoff: tokio::sync::Mutex<()>,
}

/// A proposal in flight; the gate waits for it before handing over.
pub struct ProposalGuard<'a> {
    gate: &'a ProposalGate,
}

impl Drop for ProposalGuard<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens the gate when dropped, so that no path out of a handoff leaves it closed.
struct Closed<'a> {
    gate: &'a ProposalGate,
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.gate.closed.store(false, Ordering::SeqCst);
        self.gate.reopened.notify_waiters();
    }
}

impl ProposalGate {
    /// Waits (at most [`GATE_WAIT_MS`]) until no handoff is under way, then counts the caller
    /// in. UNAVAILABLE (retry shortly) when the gate stayed closed that long.
    pub async fn enter(&self) -> Result<ProposalGuard<'_>, NodeError> {
        self.enter_within(Duration::from_millis(GATE_WAIT_MS))
            .await
            .ok_or(NodeError::HandoverUnderway)
    }

    async fn enter_within(&self, max_wait: Duration) -> Option<ProposalGuard<'_>> {
        let deadline = Instant::now() + max_wait;
        loop {
            // SeqCst on both sides (here: count, then look; the handoff: close, then count):
            // either the handoff sees this proposal or this proposal sees the closed gate.
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if !self.closed.load(Ordering::SeqCst) {
                return Some(ProposalGuard { gate: self });
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let reopened = self.reopened.notified();
            tokio::pin!(reopened);
            // Registered before the second look, so an opening in between is not missed.
            reopened.as_mut().enable();
            if !self.closed.load(Ordering::SeqCst) {
                continue;
            }
            if tokio::time::timeout_at(deadline, reopened).await.is_err() {
                return None;
            }
        }
    }

    /// Whether a handoff holds the gate closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn close(&self) -> Closed<'_> {
        self.closed.store(true, Ordering::SeqCst);
        Closed { gate: self }
    }

    /// Waits until the proposals in flight are done; false at the deadline.
    async fn drained(&self, deadline: Instant) -> bool {
        const POLL_MS: u64 = 2;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
        true
    }
}

/// Holds this node's elections by timeout back while it hands over; allows them again when
/// dropped.
struct NoElections<'a> {
    raft: &'a Raft,
}

impl<'a> NoElections<'a> {
    fn hold(raft: &'a Raft) -> Self {
        raft.runtime_config().elect(false);
        NoElections { raft }
    }
}

impl Drop for NoElections<'_> {
    fn drop(&mut self) {
        self.raft.runtime_config().elect(true);
    }
}

type Metrics = RaftMetrics;

/// Waits until `done` holds for Raft's metrics, or the deadline; whether it held.
async fn wait_metrics(
    raft: &Raft,
    deadline: Instant,
    mut done: impl FnMut(&Metrics) -> bool,
) -> bool {
    let mut metrics = raft.metrics();
    loop {
        if done(&metrics.borrow_and_update()) {
            return true;
        }
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => continue,
            // Raft stopped, or the deadline passed.
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

/// Hands leadership to another voter: the most caught-up one, then one other if the first does
/// not take over. Returns the new leader. Bounded: the drain, and per target the catch-up, the
/// RPC and the election wait, each by its constant above. Does nothing unless this node leads.
pub async fn transfer_leadership(
    raft: &Raft,
    connector: &dyn Connector,
    gate: &ProposalGate,
) -> Result<NodeId, HandoffError> {
    let started = std::time::Instant::now();
    // Another handoff under way is bounded by the same constants; wait for it, then look again.
    let _one_at_a_time = gate.handoff.lock().await;
    let me = raft.metrics().borrow_watched().id;
    if !is_leader(&raft.metrics().borrow_watched()) {
        return Err(HandoffError::NotLeader(me));
    }
    let _closed = gate.close();
    // Once it has stepped down, this node must not stand itself: a leader elected less than a
    // lease ago refuses the candidate's first vote request (by lease), and steps down only when
    // the candidate's higher term comes back to it; standing then (its vote is no longer
    // committed, so its timer is short) would win the leadership straight back. Held back, it
    // grants the candidate's next round.
    let _no_elections = NoElections::hold(raft);
    let drain_deadline = Instant::now() + Duration::from_millis(HANDOFF_DRAIN_TIMEOUT_MS);
    if !gate.drained(drain_deadline).await {
        tracing::warn!(
            node = me,
            HANDOFF_DRAIN_TIMEOUT_MS,
            "appends still in flight; handing over anyway"
        );
    }
    wait_out_own_lease(raft, me).await;
    let mut tried: Vec<NodeId> = Vec::new();
    let mut last_failure = String::from("no voter was tried");
    for _ in 0..HANDOFF_MAX_TARGETS {
        let metrics = raft.metrics().borrow_watched().clone();
        if !is_leader(&metrics) {
            break;
        }
        let Some((target, addr)) = pick_target(&metrics, &tried) else {
            if tried.is_empty() {
                return Err(HandoffError::NoOtherVoter(me));
            }
            break;
        };
        tried.push(target);
        match hand_to(raft, connector, me, target, &addr).await {
            Ok(leader) => {
                tracing::info!(
                    node = me,
                    new_leader = leader,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "leadership handed over"
                );
                return Ok(leader);
            }
            Err(why) => {
                tracing::warn!(node = me, target, %why, "handoff to this voter failed");
                last_failure = why;
            }
        }
    }
    // The last target may have been elected after all, or be about to be: one more look.
    let deadline = Instant::now() + Duration::from_millis(HANDOFF_ELECTION_WAIT_MS);
    let mut leader = None;
    if !is_leader(&raft.metrics().borrow_watched()) {
        wait_metrics(raft, deadline, |m| {
            leader = m.current_leader.filter(|&l| l != me);
            leader.is_some()
        })
        .await;
    }
    match leader {
        Some(leader) => Ok(leader),
        None => Err(HandoffError::Failed(last_failure)),
    }
}

/// A leader refuses vote requests until its own lease, which starts at its election and is
/// never renewed, has run out (openraft's `handle_vote_req`). A leader elected less than a lease
/// ago waits that out (the gate is closed meanwhile), so that the candidate wins at its first
/// round instead of after a rejected round and an election timeout.
async fn wait_out_own_lease(raft: &Raft, me: NodeId) {
    let voted = bounded(
        RAFT_STATE_TIMEOUT_MS,
        raft.with_raft_state(|state| state.vote_last_modified()),
    )
    .await;
    let Some(Ok(Some(voted_at))) = voted else {
        return;
    };
    let lease = Duration::from_millis(ELECTION_TIMEOUT_MAX_MS + LEASE_MARGIN_MS);
    let since_vote = openraft::Instant::elapsed(&voted_at);
    if let Some(wait) = lease.checked_sub(since_vote).filter(|w| !w.is_zero()) {
        tracing::info!(
            node = me,
            wait_ms = wait.as_millis() as u64,
            "elected less than a lease ago: waiting it out before handing over"
        );
        tokio::time::sleep(wait).await;
    }
}

fn is_leader(metrics: &Metrics) -> bool {
    metrics.state == ServerState::Leader && metrics.current_leader == Some(metrics.id)
}

/// The voter (not this node, not yet tried) with the highest replicated log index, and its
/// address.
fn pick_target(metrics: &Metrics, tried: &[NodeId]) -> Option<(NodeId, String)> {
    let membership = metrics.membership_config.membership();
    let matched = |id: &NodeId| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
            .map(|log_id| log_id.index)
    };
    membership
        .voter_ids()
        .filter(|id| *id != metrics.id && !tried.contains(id))
        // Highest matched index first; among equals the lowest id, so the choice is stable.
        .max_by_key(|id| (matched(id), std::cmp::Reverse(*id)))
        .and_then(|id| Some((id, membership.get_node(&id)?.addr.clone())))
}

/// One attempt: wait for `target` to hold the whole log, tell it to stand, wait for a leader.
async fn hand_to(
    raft: &Raft,
    connector: &dyn Connector,
    me: NodeId,
    target: NodeId,
    addr: &str,
) -> Result<NodeId, String> {
    let (term, last_log_index) = {
        let m = raft.metrics().borrow_watched().clone();
        (m.current_term, m.last_log_index.unwrap_or(0))
    };
    let catch_up = Instant::now() + Duration::from_millis(HANDOFF_CATCH_UP_TIMEOUT_MS);
    let caught_up = wait_metrics(raft, catch_up, |m| {
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&target).cloned().flatten())
            .map(|log_id| log_id.index);
        matched >= Some(last_log_index)
    })
    .await;
    if !caught_up {
        return Err(format!(
            "node {target} did not reach log index {last_log_index} within {HANDOFF_CATCH_UP_TIMEOUT_MS} ms"
        ));
    }
    let channel = connector
        .channel(addr)
        .map_err(|e| format!("no channel to node {target} at {addr}: {e}"))?;
    let request = TimeoutNowRequest {
        leader_id: me,
        term,
        leader_last_log_index: last_log_index,
    };
    let call = async move { RaftInternalClient::new(channel).timeout_now(request).await };
    let reply = bounded(TIMEOUT_NOW_RPC_TIMEOUT_MS, call)
        .await
        .ok_or_else(|| {
            format!(
                "node {target} did not answer TimeoutNow within {TIMEOUT_NOW_RPC_TIMEOUT_MS} ms"
            )
        })?
        .map_err(|status| format!("TimeoutNow to node {target}: {status}"))?
        .into_inner();
    if !reply.started {
        return Err(format!("node {target} refused: {}", reply.refused));
    }
    let election = Instant::now() + Duration::from_millis(HANDOFF_ELECTION_WAIT_MS);
    let mut leader = None;
    wait_metrics(raft, election, |m| {
        leader = m.current_leader.filter(|&l| l != me);
        leader.is_some()
    })
    .await;
    leader.ok_or_else(|| {
        format!("no new leader within {HANDOFF_ELECTION_WAIT_MS} ms of asking node {target}")
    })
}

async fn bounded<T>(ms: u64, f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(Duration::from_millis(ms), f)
        .await
        .ok()
}
