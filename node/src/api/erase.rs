//! Erase on the API, and each node's scrub.
//!
//! A step (`cairn.v1.Cluster/Erase`) is one `Command::EraseStream` proposed by the leader:
//! every member tombstones the stream and forgets the same groups at the same log point, and
//! notes the step for its own scrub (`cairn_raft_store::erase`). The caller
//! (`cairn stream erase`) repeats steps while one says `more`, then waits until every member
//! reports nothing pending.
//!
//! Each node's eraser, started with the node, scrubs what the notes cover, in order, each
//! step only once the one before it holds (a crash anywhere leaves the notes, and the next
//! pass starts again): the forgotten frames zeroed (the reclaimer's step), a snapshot that
//! covers the note (so the log below it may go), the Raft log purged up to it (the entries
//! that carried the events), the purged entries left in a kept log segment zeroed, and the
//! keyspace rewritten into fresh files (it keeps old versions of removed keys). Then the
//! notes are deleted. What it is doing or waiting for is in the status call
//! (`Member.erase_progress`), so `cairn stream erase` can say which node has not finished and
//! why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::proto;
use cairn_raft_store::erase::Erasures;
use cairn_raft_store::scavenge::Reclaimer;
use cairn_raft_store::{disk::Disk, Command, EraseStream, LogStore, Raft, Response};
use openraft::async_runtime::WatchReceiver;
use tonic::Status;
use uuid::Uuid;

use super::group_commit::GroupError;
use super::lifecycle::{now_unix_ms, propose};
use super::status::{self, invalid_input};
use super::{not_leader, NodeContext};

/// How often an idle eraser looks for notes.
pub const ERASE_IDLE_POLL_MS: u64 = 500;
/// How often an eraser waiting for a snapshot, a purge or the reclaimer looks again.
pub const ERASE_WAIT_POLL_MS: u64 = 100;
/// Most reclaimer steps one eraser pass runs itself before it looks again (each step
/// discards at most `scavenge::RECLAIM_GROUPS_PER_STEP` groups).
pub const MAX_RECLAIM_STEPS_PER_PASS: usize = 64;

/// What this node's eraser is doing, for the status call ("" when idle).
#[derive(Clone, Default)]
pub struct EraseProgress(Arc<Mutex<String>>);

impl EraseProgress {
    fn set(&self, what: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = what.into();
    }

    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One erase step, on the leader.
pub async fn step(
    ctx: &NodeContext,
    request: proto::EraseRequest,
) -> Result<proto::EraseResponse, Status> {
    ctx.refuse_unless_member()?;
    cairn_raft_store::lifecycle::validate_target(&request.stream).map_err(|e| invalid_input(&e))?;
    if ctx.raft.metrics().borrow_watched().current_leader != Some(ctx.id) {
        return Err(not_leader(ctx));
    }
    let command = Command::EraseStream(EraseStream {
        stream: request.stream,
        id: Uuid::now_v7(),
        created_unix_ms: now_unix_ms(),
    });
    let (log_index, response) = propose(ctx, command).await?;
    let Response::Erased(result) = response else {
        return Err(status::status(&GroupError::NoResult));
    };
    if let Some(invalid) = result.rejected {
        return Err(invalid_input(&invalid));
    }
    Ok(proto::EraseResponse {
        removed_groups: result.removed_groups,
        removed_events: result.removed_events,
        more: result.more,
        log_index,
    })
}

/// This node's pending erase notes, for the status call.
pub fn pending(erasures: &Erasures) -> Result<u64, Status> {
    Ok(erasures.pending().map_err(|e| status::status(&e))?.len() as u64)
}

/// What the eraser needs of the node.
pub struct Eraser {
    pub raft: Raft,
    pub log: LogStore,
    pub erasures: Erasures,
    pub reclaimer: Reclaimer,
    pub disk: Arc<dyn Disk>,
    pub progress: EraseProgress,
}

/// The outcome of one pass.
enum Pass {
    Idle,
    Waiting(String),
    Scrubbed(u64),
}

/// Runs `work` where blocking is allowed: a blocking thread on a multi-threaded runtime (a
/// keyspace rewrite takes a while), in place on the simulation's single thread (its disk
/// model answers at once).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| format!("the scrub's thread failed: {e}"))?,
        _ => work(),
    }
}

impl Eraser {
    /// Runs this node's eraser until the runtime stops.
    pub fn start(self) {
        tokio::spawn(async move {
            loop {
                let pause = match self.pass().await {
                    Ok(Pass::Idle) => {
                        self.progress.set("");
                        ERASE_IDLE_POLL_MS
                    }
                    Ok(Pass::Waiting(why)) => {
                        self.progress.set(why);
                        ERASE_WAIT_POLL_MS
                    }
                    Ok(Pass::Scrubbed(upto)) => {
                        tracing::info!(
                            upto,
                            "erased: the disk holds nothing removed up to this log index"
                        );
                        self.progress.set("");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "scrubbing an erase failed; will retry");
                        self.progress
                            .set(format!("scrubbing failed ({e}); retrying"));
                        ERASE_IDLE_POLL_MS
                    }
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        });
    }

    async fn pass(&self) -> Result<Pass, String> {
        let pending = self.erasures.pending().map_err(|e| e.to_string())?;
        let (Some(&lowest), Some(&highest)) = (pending.first(), pending.last()) else {
            return Ok(Pass::Idle);
        };
        let metrics = self.raft.metrics().borrow_watched().clone();
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        // A note past the applied index (a rollback to the snapshot at open) waits for the
        // log to be applied again. Only then: a pass over notes all past it would scrub
        // nothing, delete no note and start again at once, for ever (simulation seed 695
        // spun so, the keyspace rewritten in a loop).
        if lowest > applied {
            return Ok(Pass::Waiting(format!(
                "waiting for the log to be applied up to index {lowest}"
            )));
        }
        let target = highest.min(applied);
        for _ in 0..MAX_RECLAIM_STEPS_PER_PASS {
            let step = self.reclaimer.step().map_err(|e| e.to_string())?;
            if step.groups == 0 {
                break;
            }
        }
        let left = self.reclaimer.pending(1).map_err(|e| e.to_string())?;
        if left.groups > 0 {
            return Ok(Pass::Waiting(
                "zeroing the removed groups' frames in the event-group files".to_owned(),
            ));
        }
        if metrics.snapshot.map_or(0, |id| id.index) < target {
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Pass::Waiting(format!(
                "building a snapshot that covers log index {target}"
            )));
        }
        if metrics.purged.map_or(0, |id| id.index) < target {
            self.raft
                .trigger()
                .purge_log(target)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Pass::Waiting(format!(
                "purging the Raft log up to index {target} (a replication in flight may hold it)"
            )));
        }
        self.progress
            .set(format!("zeroing purged log entries up to index {target}"));
        let log = self.log.clone();
        blocking(move || log.scrub_purged().map_err(|e| e.to_string())).await?;
        self.progress
            .set("rewriting the keyspace into fresh files".to_owned());
        let disk = self.disk.clone();
        blocking(move || disk.rewrite_keyspace().map_err(|e| e.to_string())).await?;
        let erasures = self.erasures.clone();
        blocking(move || erasures.finished(target).map_err(|e| e.to_string())).await?;
        Ok(Pass::Scrubbed(target))
    }
}
