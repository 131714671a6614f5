//! Group commit: appends that arrive together share one Raft entry.
//!
//! On the leader, each append request queues here instead of being proposed on its own. One task
//! takes whatever has queued up (bounded in count and bytes) and proposes it as one
//! [`Command::Appends`] entry, so a burst of concurrent appends costs one log write, one place
//! in each replication message, one apply step and a share of one fdatasync per node, instead of
//! one each. Nothing waits for company: a lone append is proposed at once. At most
//! [`MAX_GROUPS_IN_FLIGHT`] entries are proposed and not yet applied; while they are out, the
//! next group gathers in the queue. The state machine gives every append of a group the verdict
//! it would have had as an entry of its own (expected revision, idempotency), in queue order.

use std::sync::Arc;

use cairn_raft_store::{
    Append, AppendResult, Command, MultiAppend, MultiAppendResult, NodeId, Raft, Response,
    TypeConfig, Write, WriteResult,
};
use openraft::error::{ChangeMembershipError, ClientWriteError, Fatal};
use openraft::impls::ProgressResponder;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::deadlines::APPEND_TIMEOUT_MS;

/// Appends waiting to be proposed. At the limit a new request waits for room (its own
/// deadline, `APPEND_TIMEOUT_MS`, bounds the wait): backpressure reaches the client through
/// gRPC rather than through memory.
pub const MAX_QUEUED_APPENDS: usize = 4_096;
/// Most appends in one entry.
pub const MAX_GROUP_APPENDS: usize = 512;
/// Most event bytes (data, metadata, type) in one entry; an append bigger than this on its own
/// is proposed alone. Keeps replication messages of `MAX_ENTRIES_PER_REPLICATION` entries sane.
pub const MAX_GROUP_BYTES: usize = 1024 * 1024;
/// Entries proposed and not yet applied. Measured on S2 (64 clients, 3 nodes on 2 cores),
/// with the log in sled: 1 or 2 in flight gave 6,000–6,600 appends/s, 4 gave 4,500–5,000 and
/// 16 gave 2,600–3,900, because smaller, more frequent entries cost more CPU per append. With
/// the log in segment files (2026-11-24, two runs each): 1 gave 9,382 / 9,401 appends/s (p99
/// 10.4 / 10.1 ms), 2 gave 8,286 / 8,291 (13.2 / 12.3 ms), 4 gave 7,896 / 7,984; S3 1: 62.9k /
/// 65.6k events/s, 2: 62.0k / 61.8k; S1 the same. Again with openraft 0.10's pipelined
/// replication (2026-12-07, S2, 3 rounds alternating): 1 gave 8,474 / 8,762 / 8,820, 2 gave
/// 8,579 / 8,150 / 7,333, 3 gave 7,660 / 8,129 / 8,063; and giving the slot back at commit
/// instead of at apply was within the noise (-18 to +20 %). One group per commit round trip
/// still allows `MAX_GROUP_APPENDS` appends per round trip where network latency dominates.
pub const MAX_GROUPS_IN_FLIGHT: usize = 1;
/// Longest a proposed group waits for openraft's answer before its slot is given back and its
/// appends are told the outcome is unknown (they retry with the same event ids, which is
/// safe). openraft 0.9 never answers a write whose entry a snapshot install covered (a leader
/// that lost office by receiving the new leader's snapshot): without this bound that group
/// held the only slot for ever, and the node never accepted an append again (the simulation
/// found it, 5 nodes, seed 501, once snapshots were frequent). Longer than the handler's own
/// wait, so a slow commit is still answered.
pub const MAX_GROUP_ANSWER_WAIT_MS: u64 = 2 * APPEND_TIMEOUT_MS;

/// Why an append got no verdict. Its gRPC code is chosen in `api/status.rs`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    /// Leadership moved before the entry committed; the caller retries with the same event ids.
    #[error("leadership moved before the append's entry committed")]
    NotLeader,
    /// This node's Raft has stopped; nothing was proposed.
    #[error("raft has stopped: {0}")]
    RaftStopped(Fatal<TypeConfig>),
    /// The proposing task has ended (Raft stopped before): nothing was proposed.
    #[error("the proposing task has ended")]
    ProposerGone,
    /// Raft stopped after the entry was proposed and before it was applied.
    #[error("raft stopped before the entry was applied")]
    StoppedBeforeApply,
    /// openraft gave no answer within `MAX_GROUP_ANSWER_WAIT_MS`: committed or not, unknown.
    #[error("the append's entry got no answer; retrying with the same event ids is safe")]
    Unanswered,
    /// The proposing task dropped the append without a verdict (a bug).
    #[error("the proposal was dropped unanswered")]
    DroppedUnanswered,
    /// The state machine answered the entry with no append result (a bug).
    #[error("append produced no result")]
    NoResult,
    /// openraft answered an append with a membership error (a bug: appends change no members).
    #[error("{0}")]
    Membership(ChangeMembershipError<cairn_raft_store::CommittedLeaderId, NodeId>),
    /// openraft answered an append with an error appends cannot cause (a bug).
    #[error("unexpected answer to an append: {0}")]
    Unexpected(String),
    /// The state machine returned a different number of verdicts than the entry had appends.
    #[error("{verdicts} verdicts for {appends} appends in one entry")]
    VerdictCount { verdicts: usize, appends: usize },
}

struct Queued {
    write: Write,
    verdict: oneshot::Sender<Result<WriteResult, GroupError>>,
}

/// The queue into the proposing task; cloned into every append handler.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Queued>,
}

impl GroupCommit {
    /// Starts the proposing task on the current runtime; it ends when every handle is dropped.
    pub fn start(raft: Raft) -> GroupCommit {
        let (queue, requests) = mpsc::channel(MAX_QUEUED_APPENDS);
        tokio::spawn(propose_groups(raft, requests));
        GroupCommit { queue }
    }

    /// Queues an append (already validated) and waits until its entry is applied.
    pub async fn append(&self, append: Append) -> Result<AppendResult, GroupError> {
        match self.write(Write::Append(append)).await? {
            WriteResult::Append(result) => Ok(result),
            WriteResult::Multi(_) => Err(GroupError::NoResult),
        }
    }

    /// Queues a multi-stream append (already validated) and waits until it is applied.
    pub async fn multi_append(&self, multi: MultiAppend) -> Result<MultiAppendResult, GroupError> {
        match self.write(Write::Multi(multi)).await? {
            WriteResult::Multi(result) => Ok(result),
            WriteResult::Append(_) => Err(GroupError::NoResult),
        }
    }

    async fn write(&self, write: Write) -> Result<WriteResult, GroupError> {
        let (verdict, answer) = oneshot::channel();
        self.queue
            .send(Queued { write, verdict })
            .await
            .map_err(|_| GroupError::ProposerGone)?;
        answer.await.map_err(|_| GroupError::DroppedUnanswered)?
    }
}

fn event_bytes(write: &Write) -> usize {
    let bytes = |events: &[cairn_raft_store::NewEvent]| -> usize {
        events
            .iter()
            .map(|e| e.data.len() + e.metadata.len() + e.event_type.len())
            .sum()
    };
    match write {
        Write::Append(append) => bytes(&append.events),
        Write::Multi(multi) => multi.streams.iter().map(|p| bytes(&p.events)).sum(),
    }
}

async fn propose_groups(raft: Raft, mut requests: mpsc::Receiver<Queued>) {
    let slots = Arc::new(Semaphore::new(MAX_GROUPS_IN_FLIGHT));
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(queued) => queued,
            None => match requests.recv().await {
                Some(queued) => queued,
                None => return,
            },
        };
        // Wait for a slot before gathering: what arrives meanwhile joins this group.
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut bytes = event_bytes(&first.write);
        let mut group = vec![first];
        while group.len() < MAX_GROUP_APPENDS {
            let Ok(next) = requests.try_recv() else { break };
            let next_bytes = event_bytes(&next.write);
            if bytes + next_bytes > MAX_GROUP_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next_bytes;
            group.push(next);
        }
        propose(&raft, group, slot).await;
    }
}

/// The entry for a group: single-stream appends keep the commands they always had (the same
/// log bytes); a group with a multi-stream append is a `Command::Writes`.
fn command_for(mut writes: Vec<Write>) -> Command {
    if writes.iter().any(|w| matches!(w, Write::Multi(_))) {
        return Command::Writes(writes);
    }
    let mut appends: Vec<Append> = writes
        .drain(..)
        .filter_map(|w| match w {
            Write::Append(append) => Some(append),
            Write::Multi(_) => None,
        })
        .collect();
    match appends.pop() {
        Some(append) if appends.is_empty() => Command::Append(append),
        Some(last) => {
            appends.push(last);
            Command::Appends(appends)
        }
        None => Command::Appends(appends),
    }
}

/// Proposes one group and hands its verdicts out when the entry is applied (on its own task,
/// so the next group can gather meanwhile).
async fn propose(raft: &Raft, group: Vec<Queued>, slot: OwnedSemaphorePermit) {
    let (writes, verdicts): (Vec<Write>, Vec<_>) =
        group.into_iter().map(|q| (q.write, q.verdict)).unzip();
    let command = command_for(writes);
    let (responder, applied) = ProgressResponder::complete_only();
    match raft.client_write_ff(command, Some(responder)).await {
        Ok(()) => {}
        Err(fatal) => {
            for verdict in verdicts {
                let _ = verdict.send(Err(GroupError::RaftStopped(fatal.clone())));
            }
            return;
        }
    }
    tokio::spawn(async move {
        let wait = std::time::Duration::from_millis(MAX_GROUP_ANSWER_WAIT_MS);
        let outcome = tokio::time::timeout(wait, applied).await;
        drop(slot);
        let results: Result<Vec<WriteResult>, GroupError> = match outcome {
            Err(_) => {
                tracing::warn!(
                    appends = verdicts.len(),
                    "a proposed group got no answer within {MAX_GROUP_ANSWER_WAIT_MS} ms; \
                     giving its slot back"
                );
                Err(GroupError::Unanswered)
            }
            Ok(Ok(Ok(written))) => match written.data {
                Response::Append(result) => Ok(vec![WriteResult::Append(result)]),
                Response::Appends(results) => {
                    Ok(results.into_iter().map(WriteResult::Append).collect())
                }
                Response::Writes(results) => Ok(results),
                Response::Empty
                | Response::Scavenged(_)
                | Response::ConsumerGroup(_)
                | Response::Auth(_) => Err(GroupError::NoResult),
                Response::Erased(_) => Err(GroupError::NoResult),
            },
            Ok(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => Err(GroupError::NotLeader),
            // The entry was proposed, then truncated or purged by a new leader: committed or
            // not, unknown; the caller's retry with the same event ids settles it.
            Ok(Ok(Err(ClientWriteError::LogEntryDiscarded(_)))) => Err(GroupError::Unanswered),
            // Appends carry no precondition.
            Ok(Ok(Err(ClientWriteError::PreconditionFailed(e)))) => {
                Err(GroupError::Unexpected(e.to_string()))
            }
            Ok(Ok(Err(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(GroupError::Membership(e))
            }
            Ok(Err(_)) => Err(GroupError::StoppedBeforeApply),
        };
        match results {
            Ok(results) if results.len() == verdicts.len() => {
                for (verdict, result) in verdicts.into_iter().zip(results) {
                    let _ = verdict.send(Ok(result));
                }
            }
            Ok(results) => {
                let error = GroupError::VerdictCount {
                    verdicts: results.len(),
                    appends: verdicts.len(),
                };
                for verdict in verdicts {
                    let _ = verdict.send(Err(error.clone()));
                }
            }
            Err(error) => {
                for verdict in verdicts {
                    let _ = verdict.send(Err(error.clone()));
                }
            }
        }
    });
}
