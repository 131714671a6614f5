//! The event-store state machine, as openraft's `RaftStateMachine`.
//!
//! Its state is append-only (groups in their own files, their locations by position, the
//! stream index, the event-id index) plus one record of progress (`AppliedState`) written in
//! the same batch as the changes it describes. `apply` does not fdatasync: the Raft log is
//! durable, and after a crash openraft re-applies from the last applied id that survived
//! (`recover` makes the files agree with it). A snapshot makes the state durable before it is
//! recorded, because recording it lets the log below it be purged.
//!
//! A forgetting step (scavenge, erase) is the one change below the applied end. It bumps the
//! generation before it writes, so lazy snapshot readers of the earlier state stop, and then
//! records a snapshot at its own point: the recorded snapshot is always an exact image of
//! its point (`snapshot`), and a rollback to it (`recover`) never undoes a forgetting.

mod apply;
mod install;
mod recover;
mod stream_cache;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{OptionalSend, RaftSnapshotBuilder};

pub use apply::{MAX_APPLY_BATCH_BYTES, MAX_UNFLUSHED_CONDITION_EVENTS};
pub use install::verify_snapshot;

use crate::auth_view::AuthView;
use crate::codec::encode;
use crate::disk::{sync_async, Disk, WriteBatch};
use crate::error::StoreError;
use crate::format;
use crate::group_files::GroupFiles;
use crate::keys;
use crate::limits::Limits;
use crate::raft_types::{
    Entry, EntryPayload, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::read::EventReader;
use crate::records::{read_snapshot_record, AppliedState, SnapshotRecord};
use crate::repair::Damage;
use crate::scavenge::Reclaimer;
use crate::snapshot::{SnapshotData, SnapshotSource};
use crate::storage_error::{Failed, OrStorage};
use crate::types::{Command, Response, Write, WriteResult};

struct Shared {
    disk: Arc<dyn Disk>,
    groups: Arc<GroupFiles>,
    limits: Limits,
    /// Bumped when a snapshot replaces the state or a forgetting step changes it below the
    /// applied end: lazy readers of the old state stop.
    generation: Arc<AtomicU64>,
    /// Serializes writers of the snapshot record (builds run beside `apply`), and keeps the
    /// reclaimer (`scavenge::Reclaimer`, which only tries it) off the files an install
    /// replaces.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    /// The `$all` position this store opened at (only the `forget_event_ids` bug reads it).
    opened_at_position: u64,
    /// Whether event ids may be stored under keys of their own (`id_index`).
    own_id_keys: AtomicBool,
    /// Bumped whenever the security state may have changed (an `$auth` event applied, a
    /// snapshot installed): the nodes' caches of it compare (`auth::AuthView`).
    auth_generation: Arc<AtomicU64>,
}

impl Shared {
    fn snapshot_record(&self) -> Result<Option<SnapshotRecord>, StoreError> {
        read_snapshot_record(self.disk.as_ref())
    }

    /// Makes what a snapshot at `applied` covers durable (the groups' frames, then the
    /// keyspace that points at them) and records it. The caller holds the snapshot lock.
    async fn record_snapshot(&self, applied: &AppliedState) -> Result<SnapshotRecord, StoreError> {
        self.groups.sync_async().await?;
        sync_async(self.disk.as_ref()).await?;
        let record = SnapshotRecord {
            meta: SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            },
            end_position: applied.next_position,
        };
        let mut batch = WriteBatch::default();
        batch.put(keys::SNAPSHOT, encode(&record)?);
        self.disk.write(batch)?;
        sync_async(self.disk.as_ref()).await?;
        tracing::info!(last_log_id = ?applied.last_applied, end_position = applied.next_position, "recorded snapshot");
        Ok(record)
    }

    fn snapshot_from(&self, record: SnapshotRecord) -> Snapshot {
        let source = SnapshotSource {
            disk: self.disk.clone(),
            groups: self.groups.clone(),
            generation: self.generation.clone(),
            expected_generation: self.generation.load(Ordering::Acquire),
            end_position: record.end_position,
            kept_heads: !crate::faults::active().snapshot_ignores_forgetting,
        };
        Snapshot {
            meta: record.meta,
            snapshot: SnapshotData::lazy(source),
        }
    }
}

/// Clears the state machine: every table, the group files, the applied state, the snapshot
/// record and an install marker; synced.
fn clear_all(disk: &dyn Disk, groups: &GroupFiles) -> Result<(), StoreError> {
    install::clear_state_machine(disk, groups)?;
    let mut batch = WriteBatch::default();
    batch.delete(keys::APPLIED);
    batch.delete(keys::SNAPSHOT);
    batch.delete(keys::INSTALLING);
    disk.write(batch)?;
    disk.sync()?;
    Ok(())
}

/// The state machine. `apply` takes `&mut self`; reads go through [`crate::EventReader`].
pub struct StateMachineStore {
    shared: Arc<Shared>,
    applied: AppliedState,
    /// The committed log's clock (`lifecycle`), read at the first append after open or install.
    clock: Option<u64>,
    /// Streams' heads and lifecycle states as apply last read or wrote them (`stream_cache`).
    streams: stream_cache::StreamCache,
}

impl StateMachineStore {
    /// Opens the state machine, first undoing a snapshot install that a crash interrupted,
    /// then making the keyspace and the group files agree and the applied state no further
    /// than `log_end`, the index of the log's last entry (`recover`).
    pub fn open(
        disk: Arc<dyn Disk>,
        limits: Limits,
        log_end: Option<u64>,
    ) -> Result<Self, StoreError> {
        Ok(Self::open_checked(disk, limits, log_end, || Ok(()))?.0)
    }

    /// `open`, after checking every group frame the keyspace points at. Damage past the last
    /// snapshot's groups rolls the state machine back to that snapshot (the log still holds
    /// what follows it); damage below it, or an interrupted install, clears the state machine
    /// after `clear_log` (which records the repair and clears the Raft log), so that the
    /// leader sends a snapshot.
    /// Returns the damage found, if any.
    pub fn open_checked(
        disk: Arc<dyn Disk>,
        limits: Limits,
        log_end: Option<u64>,
        clear_log: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(Self, Option<Damage>), StoreError> {
        format::upgrade(disk.as_ref())?;
        let groups = Arc::new(GroupFiles::open(disk.group_files())?);
        let mut clear_log = Some(clear_log);
        if disk.get(keys::INSTALLING)?.is_some() {
            // The log goes too: openraft refuses a log purged past a state machine that has
            // no snapshot (found by the soak, seed 46), and the leader sends the snapshot
            // again to a node that has nothing. What the log held may have been acknowledged,
            // so `clear_log` records a repair first.
            tracing::warn!(
                "a snapshot install was interrupted; clearing the state machine and the log"
            );
            if let Some(clear_log) = clear_log.take() {
                clear_log()?;
            }
            clear_all(disk.as_ref(), &groups)?;
        }
        let damage = match recover::check_groups(disk.as_ref(), &groups)? {
            None => None,
            Some(bad) => {
                let found = format!(
                    "event group frame at stream offset {}: {}",
                    bad.offset, bad.detail
                );
                let action = if bad.below_snapshot {
                    if let Some(clear_log) = clear_log.take() {
                        clear_log()?;
                    }
                    clear_all(disk.as_ref(), &groups)?;
                    "state machine and log cleared; the leader sends a snapshot"
                } else {
                    let applied = recover::read_applied(disk.as_ref())?;
                    recover::roll_back_to_snapshot(
                        disk.as_ref(),
                        &groups,
                        applied,
                        "a damaged event group frame past the last snapshot",
                    )?;
                    "rolled back to the last snapshot; the log is applied again"
                };
                tracing::error!(file = "event-groups", %found, action, "corruption detected");
                Some(Damage {
                    file: "event-groups",
                    found,
                    action,
                })
            }
        };
        let applied = recover::recover(disk.as_ref(), &groups, log_end)?;
        let own_id_keys = AtomicBool::new(crate::id_index::any_own_keys(disk.as_ref())?);
        Ok((
            StateMachineStore {
                shared: Arc::new(Shared {
                    disk,
                    groups,
                    limits,
                    generation: Arc::new(AtomicU64::new(0)),
                    snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
                    opened_at_position: applied.next_position,
                    own_id_keys,
                    auth_generation: Arc::new(AtomicU64::new(0)),
                }),
                applied,
                clock: None,
                streams: Default::default(),
            },
            damage,
        ))
    }

    /// Reads the applied state beside `apply`.
    pub fn reader(&self) -> EventReader {
        EventReader::new(
            self.shared.disk.clone(),
            self.shared.groups.clone(),
            self.shared.limits.group_history,
        )
    }

    /// The security state as applied here, cached until it changes.
    pub fn auth_view(&self) -> AuthView {
        AuthView::new(
            self.shared.disk.clone(),
            self.shared.groups.clone(),
            self.shared.auth_generation.clone(),
        )
    }

    /// This node's erase notes, beside `apply`.
    pub fn erasures(&self) -> crate::erase::Erasures {
        crate::erase::Erasures::new(self.shared.disk.clone())
    }

    /// Gives scavenged groups' bytes back, beside `apply`.
    pub fn reclaimer(&self) -> Reclaimer {
        Reclaimer::new(
            self.shared.disk.clone(),
            self.shared.groups.clone(),
            self.shared.snapshot_lock.clone(),
        )
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.applied.last_applied
    }

    /// The `$all` position the next event will get.
    pub fn next_position(&self) -> u64 {
        self.applied.next_position
    }

    async fn install(
        &mut self,
        meta: &SnapshotMeta,
        data: &mut SnapshotData,
    ) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let disk = shared.disk.as_ref();
        let _guard = shared.snapshot_lock.lock().await;
        shared.generation.fetch_add(1, Ordering::AcqRel);
        self.streams.clear();

        let mut mark = WriteBatch::default();
        mark.put(keys::INSTALLING, Vec::new());
        mark.delete(keys::SNAPSHOT);
        mark.delete(keys::APPLIED);
        disk.write(mark)?;
        sync_async(disk).await?;

        install::clear_state_machine(disk, &shared.groups)?;
        shared.own_id_keys.store(false, Ordering::Release);
        let end_position = install::load_snapshot(
            disk,
            &shared.groups,
            &shared.limits,
            &shared.own_id_keys,
            data,
        )
        .await?;
        // The record below is what a rollback returns to (`recover`): the groups first.
        shared.groups.sync_async().await?;

        let applied = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            next_position: end_position,
        };
        let record = SnapshotRecord {
            meta: meta.clone(),
            end_position,
        };
        let mut done = WriteBatch::default();
        done.put(keys::APPLIED, encode(&applied)?);
        done.put(keys::SNAPSHOT, encode(&record)?);
        done.delete(keys::INSTALLING);
        // What the keyspace held before may include what an erase has since removed from
        // the leader's: the keyspace keeps old versions of the cleared keys, so this node scrubs its
        // disk as after an erase step (`erase`).
        crate::erase::note(&mut done, meta.last_log_id.map_or(0, |id| id.index));
        disk.write(done)?;
        sync_async(disk).await?;
        tracing::info!(last_log_id = ?meta.last_log_id, end_position, "installed snapshot");
        self.applied = applied;
        self.clock = None;
        shared.auth_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Applies `entries` and returns each one's verdict: what openraft's `apply` does, for
    /// callers without openraft's responders (tests, benchmarks).
    pub async fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Response>, io::Error> {
        let mut responses = Vec::new();
        let entries: Vec<Entry> = entries.into_iter().collect();
        let entries = futures_util::stream::iter(entries.into_iter().map(|e| Ok((e, ()))));
        self.apply_stream(entries, |(), response| responses.push(response))
            .await?;
        Ok(responses)
    }

    /// The one apply loop. `answer` hears each entry's verdict once the write that holds it is
    /// done (visible to readers, not synced: see the module's doc), so verdicts wait for the
    /// next flush, at most `MAX_APPLY_BATCH_BYTES` of writes away.
    async fn apply_stream<S, R>(
        &mut self,
        entries: S,
        answer: impl FnMut(R, Response),
    ) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<(Entry, R), io::Error>> + Unpin + Send,
        R: Send,
    {
        let applied = self.apply_stream_cached(entries, answer).await;
        if applied.is_err() {
            // The stream cache may hold what the failed call never wrote.
            self.streams.clear();
        }
        applied
    }

    async fn apply_stream_cached<S, R>(
        &mut self,
        entries: S,
        mut answer: impl FnMut(R, Response),
    ) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<(Entry, R), io::Error>> + Unpin + Send,
        R: Send,
    {
        let shared = self.shared.clone();
        let mut applier = apply::Applier::new(
            shared.disk.as_ref(),
            &shared.groups,
            &shared.limits,
            &shared.own_id_keys,
            &mut self.applied,
            &mut self.clock,
            &mut self.streams,
        );
        let bugs = crate::faults::active();
        if bugs.forget_event_ids {
            applier.forget_ids_below = shared.opened_at_position;
        }
        applier.auth_generation = Some(&shared.auth_generation);
        // Only builds with the planted bugs pay for collecting the batch.
        #[cfg(feature = "fault-injection")]
        let mut entries = crate::faults::maybe_reverse_payloads(entries, bugs).await;
        #[cfg(not(feature = "fault-injection"))]
        let mut entries = entries;
        let mut answers = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, waiter) = item?;
            let log_id = entry.log_id;
            if let Some(last) = applier.applied.last_applied {
                if log_id.index <= last.index {
                    return Err(StoreError::corrupt(
                        "apply order",
                        format!("entry {log_id} applied after {last}"),
                    ))
                    .or_storage(Failed::WriteStateMachine);
                }
            }
            let response = match entry.payload {
                EntryPayload::Blank => Response::Empty,
                EntryPayload::Normal(Command::Append(append)) => Response::Append(
                    applier
                        .append(append)
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::Format1Append(append)) => Response::Append(
                    applier
                        .append(append.into())
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::Appends(appends)) => Response::Appends(
                    appends
                        .into_iter()
                        .map(|append| applier.append(append))
                        .collect::<Result<_, _>>()
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::Writes(writes)) => Response::Writes(
                    writes
                        .into_iter()
                        .map(|write| match write {
                            Write::Append(append) => {
                                applier.append(append).map(WriteResult::Append)
                            }
                            Write::Multi(multi) => {
                                applier.multi_append(multi).map(WriteResult::Multi)
                            }
                        })
                        .collect::<Result<_, _>>()
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::Format1Appends(appends)) => Response::Appends(
                    appends
                        .into_iter()
                        .map(|append| applier.append(append.into()))
                        .collect::<Result<_, _>>()
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::SetStreamMetadata(command)) => Response::Append(
                    applier
                        .set_metadata(command)
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::DeleteStream(command)) => Response::Append(
                    applier
                        .delete(command)
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::Scavenge(command)) => Response::Scavenged(
                    applier
                        .scavenge(command, None)
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::ScavengeWithin {
                    scavenge,
                    max_event_bytes,
                }) => Response::Scavenged(
                    applier
                        .scavenge(scavenge, Some(max_event_bytes))
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::ConsumerGroup(command)) => Response::ConsumerGroup(
                    applier
                        .consumer_group(command)
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::Auth(command)) => Response::Auth(
                    applier
                        .auth(command)
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Normal(Command::EraseStream(command)) => Response::Erased(
                    applier
                        .erase(command, log_id.index)
                        .or_storage(Failed::WriteStateMachine)?,
                ),
                EntryPayload::Membership(membership) => {
                    applier.applied.membership = StoredMembership::new(Some(log_id), membership);
                    Response::Empty
                }
            };
            applier.applied.last_applied = Some(log_id);
            let forgot = match &response {
                Response::Scavenged(result) => result.removed_groups > 0,
                Response::Erased(result) => result.removed_groups > 0,
                _ => false,
            };
            answers.push((waiter, response));
            if forgot && !bugs.snapshot_ignores_forgetting {
                // Readers of a snapshot from before this step must stop before it writes,
                // and the snapshot recorded from now on is this point's (module doc).
                let _guard = shared.snapshot_lock.lock().await;
                shared.generation.fetch_add(1, Ordering::AcqRel);
                applier.flush().or_storage(Failed::WriteStateMachine)?;
                shared
                    .record_snapshot(applier.applied)
                    .await
                    .or_storage(Failed::WriteSnapshot)?;
                for (waiter, response) in answers.drain(..) {
                    answer(waiter, response);
                }
            } else if applier.pending_bytes() >= MAX_APPLY_BATCH_BYTES {
                applier.flush().or_storage(Failed::WriteStateMachine)?;
                for (waiter, response) in answers.drain(..) {
                    answer(waiter, response);
                }
            }
        }
        applier.flush().or_storage(Failed::WriteStateMachine)?;
        for (waiter, response) in answers {
            answer(waiter, response);
        }
        Ok(())
    }
}

/// Builds snapshots beside `apply`: it captures the applied state and the generation when
/// created. Appends since then leave that prefix as it was; a forgetting step or an install
/// since then has recorded a later snapshot, which the build returns instead.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    applied: AppliedState,
    generation: u64,
}

impl SnapshotBuilder {
    async fn build(&mut self) -> Result<Snapshot, StoreError> {
        let _guard = self.shared.snapshot_lock.lock().await;
        let existing = self.shared.snapshot_record()?;
        if let Some(existing) = existing {
            let changed = self.shared.generation.load(Ordering::Acquire) != self.generation;
            if changed || existing.meta.last_log_id >= self.applied.last_applied {
                return Ok(self.shared.snapshot_from(existing));
            }
        } else if self.shared.generation.load(Ordering::Acquire) != self.generation {
            // Every change that bumps the generation records a snapshot, so this is a
            // broken invariant, not a race.
            return Err(StoreError::SnapshotSourceChanged);
        }
        let record = self.shared.record_snapshot(&self.applied).await?;
        Ok(self.shared.snapshot_from(record))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        self.build().await.or_storage(Failed::WriteSnapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    /// Applies the committed entries as openraft streams them. Each waiting client hears its
    /// verdict once the write that holds it is done.
    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        self.apply_stream(entries, |responder, response| {
            if let Some(responder) = responder {
                responder.send(response);
            }
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            applied: self.applied.clone(),
            generation: self.shared.generation.load(Ordering::Acquire),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        self.install(meta, &mut snapshot)
            .await
            .or_storage(Failed::WriteSnapshot)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        // The record and the generation its reader expects, read together.
        let _guard = self.shared.snapshot_lock.lock().await;
        let record = self
            .shared
            .snapshot_record()
            .or_storage(Failed::ReadSnapshot)?;
        Ok(record.map(|r| self.shared.snapshot_from(r)))
    }
}
