//! Consumer groups on the leader: one dispatcher per group with consumers, started by the
//! first consumer and stopped when this node stops leading (or the group is changed or
//! deleted). Group definitions and checkpoints are Raft data (`cairn_raft_store::consumer_group`);
//! what is in flight lives only here, so only the leader serves consumers: a follower
//! answers FAILED_PRECONDITION with the leader's address, as for every leader-only call.
//!
//! After a leader change the new leader's dispatcher starts from the last committed
//! checkpoint (read after `ensure_linearizable`, so every committed checkpoint is applied):
//! what it had done is never delivered again, everything else is (at least once). How much
//! that is, is bounded by the windows: see `dispatcher`.

mod cursor;
mod dispatcher;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use cairn_client::proto;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::{mpsc, oneshot, Mutex};
use tonic::Status;

use crate::api::{not_leader, NodeContext};
use crate::error::NodeError;

pub use dispatcher::{propose_group, GroupStats, CONTROL_QUEUE_MESSAGES};

/// A message to a running dispatcher.
pub enum Control {
    Join {
        peer: String,
        reply: oneshot::Sender<Result<Admitted, Status>>,
    },
    Ack {
        consumer: u64,
        ids: Vec<String>,
    },
    Nack {
        consumer: u64,
        ids: Vec<String>,
        action: proto::NackAction,
        reason: String,
    },
    /// Answers each id with `rejected` (bad input from the consumer), changing nothing.
    Reject {
        consumer: u64,
        ids: Vec<String>,
        reason: String,
    },
    Leave {
        consumer: u64,
    },
    Info {
        reply: oneshot::Sender<GroupStats>,
    },
    /// A replay of parked events was committed: deliver those below this parked revision.
    ReplayTo(u64),
    /// End every consumer's call with this status and stop.
    Stop(Status),
    /// The group's settings changed (committed): take them from the applied state.
    Reload,
}

/// What a dispatcher gives a consumer it admits: its id, and where its messages come from.
pub type Admitted = (u64, mpsc::Receiver<Result<proto::ConsumeResponse, Status>>);

/// A consumer admitted to a group.
pub struct Joined {
    pub consumer: u64,
    /// Where the consumer's messages go: `started`, then events and rejections.
    pub out: mpsc::Receiver<Result<proto::ConsumeResponse, Status>>,
    /// Where its acks and nacks go.
    pub control: mpsc::Sender<Control>,
}

/// The dispatchers running on this node.
pub struct Groups {
    ctx: Arc<NodeContext>,
    me: Weak<Groups>,
    watching: AtomicBool,
    running: Mutex<HashMap<String, mpsc::Sender<Control>>>,
}

impl Groups {
    /// The registry. The watcher that stops every dispatcher when this node stops leading
    /// starts with the first dispatcher: a node that never serves a consumer runs no task
    /// for groups (and the simulation's seeds without consumers run as before groups).
    pub fn start(ctx: Arc<NodeContext>) -> Arc<Groups> {
        Arc::new_cyclic(|me| Groups {
            ctx,
            me: me.clone(),
            watching: AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
        })
    }

    fn watch_leadership(&self) {
        if self.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = self.me.clone();
        let ctx = self.ctx.clone();
        let mut metrics = ctx.raft.metrics();
        tokio::spawn(async move {
            loop {
                let leads = metrics.borrow_watched().current_leader == Some(ctx.id);
                if !leads {
                    let Some(groups) = weak.upgrade() else { return };
                    groups.stop_all(not_leader(&ctx)).await;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Admits a consumer to `group`, starting its dispatcher if none runs.
    pub async fn join(&self, group: &str, peer: String) -> Result<Joined, Status> {
        // A dispatcher that stopped between the lookup and the join: start another, once.
        for _ in 0..2 {
            let control = self.dispatcher(group).await?;
            let (reply, answer) = oneshot::channel();
            let join = Control::Join {
                peer: peer.clone(),
                reply,
            };
            if control.send(join).await.is_err() {
                self.running.lock().await.remove(group);
                continue;
            }
            match answer.await {
                Ok(admitted) => {
                    let (consumer, out) = admitted?;
                    return Ok(Joined {
                        consumer,
                        out,
                        control,
                    });
                }
                Err(_) => {
                    self.running.lock().await.remove(group);
                }
            }
        }
        Err(NodeError::LeadershipChanging.into())
    }

    /// The running dispatcher's figures, `None` when none runs.
    pub async fn stats(&self, group: &str) -> Option<GroupStats> {
        let control = self.running.lock().await.get(group).cloned()?;
        let (reply, answer) = oneshot::channel();
        control.send(Control::Info { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Every running dispatcher's figures (for the metrics).
    pub async fn all_stats(&self) -> Vec<GroupStats> {
        let names: Vec<String> = self.running.lock().await.keys().cloned().collect();
        let mut stats = Vec::with_capacity(names.len());
        for name in names {
            if let Some(s) = self.stats(&name).await {
                stats.push(s);
            }
        }
        stats
    }

    /// Tells a running dispatcher something (a replay, a stop); nothing if none runs.
    pub async fn tell(&self, group: &str, message: Control) {
        let stop = matches!(message, Control::Stop(_));
        let mut running = self.running.lock().await;
        if let Some(control) = running.get(group) {
            let _ = control.send(message).await;
        }
        if stop {
            running.remove(group);
        }
    }

    async fn stop_all(&self, status: Status) {
        let mut running = self.running.lock().await;
        for (_, control) in running.drain() {
            let _ = control.try_send(Control::Stop(status.clone()));
        }
    }

    async fn dispatcher(&self, group: &str) -> Result<mpsc::Sender<Control>, Status> {
        let mut running = self.running.lock().await;
        if let Some(control) = running.get(group) {
            if !control.is_closed() {
                return Ok(control.clone());
            }
        }
        self.watch_leadership();
        let control = dispatcher::start(self.ctx.clone(), group).await?;
        running.insert(group.to_owned(), control.clone());
        Ok(control)
    }
}
