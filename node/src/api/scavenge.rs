//! Scavenge on the API, and each node's reclaimer.
//!
//! A step (`cairn.v1.Cluster/Scavenge`) is one `Command::ScavengeWithin` proposed by the leader (a
//! bounded stretch: `SCAVENGE_EVENT_BYTES_PER_COMMAND` of examined events at most): every
//! member forgets the same hidden groups at the same log point (`cairn_raft_store::scavenge`).
//! The caller (`cairn scavenge`) drives the steps from position 0 until one reaches the end,
//! pausing between them. Each node's reclaimer, started with the node, then gives the
//! forgotten groups' bytes back to the file system a bounded step at a time.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::proto;
use cairn_raft_store::scavenge::{Reclaimer, SCAVENGE_EVENT_BYTES_PER_COMMAND};
use cairn_raft_store::{Command, Response, Scavenge};
use openraft::async_runtime::WatchReceiver;
use tonic::Status;

use super::group_commit::GroupError;
use super::lifecycle::{now_unix_ms, propose};
use super::status;
use super::{not_leader, NodeContext};
use crate::metrics::NodeMetrics;

/// Pause between reclaimer steps while there is work: the throttle that keeps reclaiming
/// from taking the disk from appends (each step discards at most
/// `scavenge::RECLAIM_GROUPS_PER_STEP` groups and syncs twice).
pub const RECLAIM_PAUSE_MS: u64 = 20;
/// How often an idle reclaimer looks for work.
pub const RECLAIM_IDLE_POLL_MS: u64 = 500;
/// Most noted groups counted for the dead-bytes figures (status, metrics): bounds the scan;
/// a larger backlog shows as this many.
pub const MAX_COUNTED_DEAD_GROUPS: usize = 100_000;

/// One scavenge step, on the leader.
pub async fn step(
    ctx: &NodeContext,
    request: proto::ScavengeRequest,
) -> Result<proto::ScavengeResponse, Status> {
    ctx.refuse_unless_member()?;
    if ctx.raft.metrics().borrow_watched().current_leader != Some(ctx.id) {
        return Err(not_leader(ctx));
    }
    let command = Command::ScavengeWithin {
        scavenge: Scavenge {
            from_position: request.from_position,
            created_unix_ms: now_unix_ms(),
        },
        max_event_bytes: SCAVENGE_EVENT_BYTES_PER_COMMAND,
    };
    let (log_index, response) = propose(ctx, command).await?;
    let Response::Scavenged(result) = response else {
        return Err(status::status(&GroupError::NoResult));
    };
    let end_position = ctx.reader.next_position().map_err(|e| status::status(&e))?;
    Ok(proto::ScavengeResponse {
        next_position: result.next_position,
        examined_groups: result.examined_groups,
        removed_groups: result.removed_groups,
        removed_events: result.removed_events,
        removed_bytes: result.removed_bytes,
        log_index,
        end_position,
    })
}

/// Runs this node's reclaimer until the runtime stops. A step runs on the runtime's thread
/// (the simulation's runtime has one; a step is bounded), a failed one is logged and tried
/// again after the idle pause.
pub fn start_reclaimer(reclaimer: Reclaimer, metrics: Arc<NodeMetrics>) {
    tokio::spawn(async move {
        loop {
            let pause = match reclaimer.step() {
                Ok(step) => {
                    let dead = reclaimer
                        .pending(MAX_COUNTED_DEAD_GROUPS)
                        .unwrap_or_default();
                    metrics.reclaimed(step.groups, step.bytes, dead.groups, dead.bytes);
                    if step.groups > 0 {
                        tracing::debug!(groups = step.groups, bytes = step.bytes, "reclaimed");
                        RECLAIM_PAUSE_MS
                    } else {
                        RECLAIM_IDLE_POLL_MS
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reclaiming scavenged bytes failed; will retry");
                    RECLAIM_IDLE_POLL_MS
                }
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    });
}

/// This node's dead bytes, for the status call's `with_space`.
pub fn dead(reclaimer: &Reclaimer) -> Result<(u64, u64), Status> {
    let pending = reclaimer
        .pending(MAX_COUNTED_DEAD_GROUPS)
        .map_err(|e| status::status(&e))?;
    Ok((pending.groups, pending.bytes))
}
