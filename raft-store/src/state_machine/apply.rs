//! Applying commands: validation, idempotency, the expected-revision check, and the writes.
//!
//! Everything here is deterministic: the verdict depends only on the command and the stored
//! state, so every replica reaches the same one. All writes of one `apply` call go into one
//! atomic batch together with the new applied state, after the groups' frames it points at;
//! what has not been written yet lives in small overlays (event ids, and the stream cache that
//! outlives the call: `stream_cache`) so later entries of the same call see it.

mod consumer_groups;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use uuid::Uuid;

use super::stream_cache::StreamCache;
use crate::auth::{
    AuthChange, AuthCommand, AuthRefusal, AuthResult, AuthState, AUTH_EVENT_TYPE, AUTH_STREAM,
};
use crate::codec::encode;
use crate::disk::{Disk, WriteBatch};
use crate::erase::{self, ERASE_GROUPS_PER_COMMAND};
use crate::error::StoreError;
use crate::group_files::{GroupFiles, GroupWriter};
use crate::id_index::IdIndexBatch;
use crate::keys;
use crate::lifecycle::{self, Lifecycle};
use crate::limits::Limits;
use crate::query::{first_match_after, query_matches};
use crate::read::Retention;
use crate::read::{log_clock, stream_head};
use crate::records::{read_group, write_group, AppliedState, StoredGroup};
use crate::scavenge::forget_hidden;
use crate::types::{
    Append, AppendCondition, AppendPosition, AppendRejection, AppendResult, ContentType,
    DeleteKind, DeleteStream, EraseResult, EraseStream, ExpectedRevision, MultiAppend,
    MultiAppendResult, MultiPosition, NewEvent, Scavenge, ScavengeResult, SetStreamMetadata,
};

/// Bytes of pending writes (frames and keyspace batch) after which an `apply` call writes what
/// it has so far (with the applied state up to the last finished entry) before going on.
/// Bounds its memory; writing the frames sooner costs nothing, since they are not synced.
pub const MAX_APPLY_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Accumulates the effects of one `apply` call.
pub(crate) struct Applier<'a> {
    disk: &'a dyn Disk,
    groups: &'a GroupFiles,
    frames: GroupWriter,
    limits: &'a Limits,
    pub applied: &'a mut AppliedState,
    batch: WriteBatch,
    id_index: IdIndexBatch<'a>,
    /// Streams' heads and lifecycle states, read or written; kept across calls.
    streams: &'a mut StreamCache,
    ids: HashMap<Uuid, u64>,
    /// Consumer-group states changed by this call and not yet flushed, by group.
    group_states: HashMap<String, crate::consumer_group::GroupState>,
    /// The committed log's clock: the created time of the newest event (`None`: not read yet).
    /// Kept across calls by the state machine; apply never lets it go back.
    clock: &'a mut Option<u64>,
    /// Stored ids below this position go unseen: the `forget_event_ids` bug (0 = none).
    pub forget_ids_below: u64,
    /// Bumped after a flush that wrote a new security state, so that the nodes' caches of it
    /// (`auth::AuthView`) read it again; `None` in tests that do not care.
    pub auth_generation: Option<&'a AtomicU64>,
    /// The security state as this call left it, not flushed yet (`None`: read it from disk).
    auth: Option<AuthState>,
    /// Events written since the last flush, for DCB conditions (their index entries are not
    /// on disk yet): kept only once a condition has been checked in this call, so appends
    /// without conditions pay nothing. At most `MAX_UNFLUSHED_CONDITION_EVENTS`.
    unflushed: Option<Vec<UnflushedEvent>>,
}

/// Events a DCB condition check looks at beside the indexes before the applier writes what it
/// has instead (then the indexes answer for them): bounds the scan per conditional append.
pub const MAX_UNFLUSHED_CONDITION_EVENTS: usize = 4_096;

/// What a DCB condition needs of an event not yet in the indexes.
struct UnflushedEvent {
    position: u64,
    event_type: String,
    tags: Vec<String>,
}

fn expected_holds(expected: ExpectedRevision, head: Option<u64>) -> bool {
    match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => head.is_none(),
        ExpectedRevision::StreamExists => head.is_some(),
        ExpectedRevision::Exact(revision) => head == Some(revision),
    }
}

/// Whether an earlier append whose first event got `first_revision` could have been made with
/// `expected`: a retry must ask for the same place. `recreated_at` is where a soft-deleted
/// stream starts again (0 if never deleted): a `no_stream` append lands there.
fn same_place(expected: ExpectedRevision, first_revision: u64, recreated_at: u64) -> bool {
    match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => first_revision == 0 || first_revision == recreated_at,
        ExpectedRevision::StreamExists => first_revision > 0,
        ExpectedRevision::Exact(revision) => revision.checked_add(1) == Some(first_revision),
    }
}

impl<'a> Applier<'a> {
    /// `own_id_keys`: see `IdIndexBatch::new`.
    pub fn new(
        disk: &'a dyn Disk,
        groups: &'a GroupFiles,
        limits: &'a Limits,
        own_id_keys: &'a AtomicBool,
        applied: &'a mut AppliedState,
        clock: &'a mut Option<u64>,
        streams: &'a mut StreamCache,
    ) -> Self {
        Applier {
            disk,
            groups,
            frames: groups.writer(),
            limits,
            applied,
            batch: WriteBatch::default(),
            id_index: IdIndexBatch::new(disk, own_id_keys),
            streams,
            ids: HashMap::new(),
            group_states: HashMap::new(),
            clock,
            forget_ids_below: 0,
            auth_generation: None,
            auth: None,
            unflushed: None,
        }
    }

    pub fn pending_bytes(&self) -> usize {
        self.batch.bytes + self.id_index.pending_bytes() + self.frames.pending_bytes()
    }

    /// Writes the pending groups' frames, then the changes that point at them and the applied
    /// state atomically, then forgets the overlays (the disk now answers for them; the stream
    /// cache stays, equal to it: `stream_cache`).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.groups.write(&mut self.frames)?;
        let mut batch = std::mem::take(&mut self.batch);
        self.id_index.write_into(&mut batch);
        batch.put(keys::APPLIED, encode(&*self.applied)?);
        self.disk.write(batch)?;
        self.streams.flushed();
        self.ids.clear();
        self.group_states.clear();
        if let Some(unflushed) = self.unflushed.as_mut() {
            unflushed.clear();
        }
        if self.auth.take().is_some() && !crate::faults::active().auth_cache_not_invalidated {
            if let Some(generation) = self.auth_generation {
                generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    fn lifecycle(&mut self, stream: &str) -> Result<Lifecycle, StoreError> {
        if let Some(state) = self.streams.lifecycle(stream) {
            return Ok(state.clone());
        }
        let state = lifecycle::load(self.disk, self.groups, stream)?
            .map(|(state, _)| state)
            .unwrap_or_default();
        self.streams.set_lifecycle(stream, state.clone());
        Ok(state)
    }

    /// The committed log's clock, read from the newest event the first time it is needed.
    fn clock(&mut self) -> Result<u64, StoreError> {
        if let Some(clock) = *self.clock {
            return Ok(clock);
        }
        let clock = log_clock(self.disk, self.groups, self.applied.next_position)?;
        *self.clock = Some(clock);
        Ok(clock)
    }

    fn head(&mut self, stream: &str) -> Result<Option<u64>, StoreError> {
        if let Some(head) = self.streams.head(stream) {
            return Ok(head);
        }
        let head = stream_head(self.disk, stream)?;
        self.streams.set_head(stream, head);
        Ok(head)
    }

    pub fn append(&mut self, append: Append) -> Result<AppendResult, StoreError> {
        if let Err(invalid) = self.limits.validate_append(&append) {
            return Ok(AppendResult::Rejected(AppendRejection::Invalid(invalid)));
        }
        let lifecycle = self.lifecycle(&append.stream)?;
        let recreated_at = lifecycle.deleted_before.unwrap_or(0);
        if let Some(verdict) = self.check_idempotency(
            &append.stream,
            append.expected,
            &append.events,
            recreated_at,
        )? {
            return Ok(verdict);
        }
        if lifecycle.tombstoned && !crate::faults::active().append_to_tombstoned {
            return Ok(AppendResult::StreamDeleted);
        }
        let stored_head = self.head(&append.stream)?;
        let head = lifecycle.effective_head(stored_head);
        if !expected_holds(append.expected, head) && !crate::faults::active().skip_expected_version
        {
            return Ok(AppendResult::WrongExpectedVersion {
                expected: append.expected,
                actual: head,
            });
        }
        let written = self.write_group(
            append.stream,
            stored_head,
            append.created_unix_ms,
            append.events,
        )?;
        Ok(AppendResult::Written(written))
    }

    /// Changes users, tokens or grants: the whole new state as the next event of
    /// `AUTH_STREAM` (`auth`). A retry (its event id stored) changes nothing; a refused
    /// change writes nothing.
    pub fn auth(&mut self, command: AuthCommand) -> Result<AuthResult, StoreError> {
        let stored = match self.ids.get(&command.id) {
            Some(&position) => Some(position),
            None => self.id_index.position(&command.id)?,
        };
        if let Some(position) = stored {
            return Ok(AuthResult::AlreadyDone { position });
        }
        let current = match &self.auth {
            Some(state) => state.clone(),
            None => crate::auth_view::auth_state(self.disk, self.groups)?
                .map(|(state, _)| state)
                .unwrap_or_default(),
        };
        let mut change = command.change;
        if let AuthChange::Grant { grant, .. } = &mut change {
            if crate::faults::active().grant_wrong_prefix && grant.prefix.chars().count() > 1 {
                grant.prefix.pop();
            }
        }
        let mut next = match current.changed(&change, command.created_unix_ms) {
            Ok(next) => next,
            Err(refusal) => return Ok(AuthResult::Refused(refusal)),
        };
        if let AuthChange::RemoveRole { role } = &change {
            if crate::faults::active().role_removal_keeps_members {
                for (name, user) in &mut next.users {
                    if current
                        .users
                        .get(name)
                        .is_some_and(|u| u.roles.contains(role))
                    {
                        user.roles.insert(role.clone());
                    }
                }
            }
        }
        let data = next.encode();
        if data.len() > self.limits.max_event_bytes {
            // The counts' limits keep a state far below an event's; a cluster run with a tiny
            // event limit meets this instead of writing an event no replica could read back.
            return Ok(AuthResult::Refused(AuthRefusal::TooMany {
                what: "bytes of security state (the event size limit)".into(),
                max: self.limits.max_event_bytes,
            }));
        }
        let head = self.head(AUTH_STREAM)?;
        let written = self.write_group(
            AUTH_STREAM.to_owned(),
            head,
            command.created_unix_ms,
            vec![NewEvent {
                id: command.id,
                event_type: AUTH_EVENT_TYPE.to_owned(),
                content_type: ContentType::Json,
                data,
                metadata: Vec::new(),
                tags: Vec::new(),
            }],
        )?;
        self.auth = Some(next);
        Ok(AuthResult::Done {
            position: written.last_position,
        })
    }

    /// Removes what retention hides from one stretch of `$all` (`scavenge`), stopping after
    /// `max_event_bytes` of examined events when given. What came before in this call is
    /// written first, so the removals are judged on the disk alone.
    pub fn scavenge(
        &mut self,
        command: Scavenge,
        max_event_bytes: Option<u64>,
    ) -> Result<ScavengeResult, StoreError> {
        self.flush()?;
        self.streams.forgetting();
        forget_hidden(
            self.disk,
            self.groups,
            &mut self.batch,
            &mut self.id_index,
            command.from_position..self.applied.next_position,
            max_event_bytes,
            Retention::new(self.limits.group_history),
        )
    }

    /// One erase step (`erase`), the entry at `log_index`: the stream tombstoned by a
    /// metastream event that keeps no metadata (written once), then at most
    /// `ERASE_GROUPS_PER_COMMAND` groups of the metastream's history and of the stream
    /// forgotten, and the step noted for this node's scrub. Judged on the disk alone, like a
    /// scavenge: what came before in this call is written first.
    pub fn erase(
        &mut self,
        command: EraseStream,
        log_index: u64,
    ) -> Result<EraseResult, StoreError> {
        if let Err(invalid) = lifecycle::validate_target(&command.stream) {
            return Ok(EraseResult {
                rejected: Some(invalid),
                ..EraseResult::default()
            });
        }
        self.flush()?;
        self.streams.forgetting();
        let current = self.lifecycle(&command.stream)?;
        let meta = lifecycle::metastream(&command.stream);
        let meta_head = self.head(&meta)?;
        let history = erase::forget_metastream(
            self.disk,
            self.groups,
            &mut self.batch,
            &mut self.id_index,
            &command.stream,
            current.erased,
            ERASE_GROUPS_PER_COMMAND,
        )?;
        if !current.erased {
            let erased = Lifecycle {
                tombstoned: true,
                erased: true,
                ..Lifecycle::default()
            };
            let event = NewEvent {
                id: command.id,
                event_type: lifecycle::ERASED_EVENT_TYPE.to_owned(),
                content_type: ContentType::Json,
                data: erased.encode()?,
                metadata: Vec::new(),
                tags: Vec::new(),
            };
            self.write_group(meta, meta_head, command.created_unix_ms, vec![event])?;
            self.streams.set_lifecycle(&command.stream, erased);
        }
        let budget = ERASE_GROUPS_PER_COMMAND.saturating_sub(history.groups as usize);
        let events = erase::forget_stream(
            self.disk,
            self.groups,
            &mut self.batch,
            &mut self.id_index,
            &command.stream,
            budget,
        )?;
        erase::note(&mut self.batch, log_index);
        Ok(EraseResult {
            rejected: None,
            removed_groups: history.groups + events.groups,
            removed_events: history.events + events.events,
            more: history.more || events.more,
        })
    }

    /// Replaces a stream's metadata: a new event in its metastream, checked against the
    /// metastream's revision.
    pub fn set_metadata(&mut self, command: SetStreamMetadata) -> Result<AppendResult, StoreError> {
        if let Err(invalid) = lifecycle::validate_target(&command.stream) {
            return Ok(AppendResult::Rejected(AppendRejection::Invalid(invalid)));
        }
        let current = self.lifecycle(&command.stream)?;
        let next = match current.with_metadata(&command.metadata) {
            Ok(next) => next,
            Err(invalid) => return Ok(AppendResult::Rejected(AppendRejection::Invalid(invalid))),
        };
        self.record_lifecycle(
            &command.stream,
            command.expected,
            None,
            current,
            next,
            lifecycle::METADATA_EVENT_TYPE,
            command.id,
            command.created_unix_ms,
        )
    }

    /// Soft-deletes or tombstones a stream, checked against the stream's own revision.
    pub fn delete(&mut self, command: DeleteStream) -> Result<AppendResult, StoreError> {
        if let Err(invalid) = lifecycle::validate_target(&command.stream) {
            return Ok(AppendResult::Rejected(AppendRejection::Invalid(invalid)));
        }
        let current = self.lifecycle(&command.stream)?;
        let stored_head = self.head(&command.stream)?;
        let (next, event_type) = match command.kind {
            DeleteKind::Soft => (
                Lifecycle {
                    deleted_before: stored_head.map(|h| h + 1).or(current.deleted_before),
                    ..current.clone()
                },
                lifecycle::DELETED_EVENT_TYPE,
            ),
            DeleteKind::Tombstone => (
                Lifecycle {
                    tombstoned: true,
                    ..current.clone()
                },
                lifecycle::TOMBSTONE_EVENT_TYPE,
            ),
        };
        let check = Some((command.expected, stored_head, command.kind));
        self.record_lifecycle(
            &command.stream,
            ExpectedRevision::Any,
            check,
            current,
            next,
            event_type,
            command.id,
            command.created_unix_ms,
        )
    }

    /// Writes `next` as the newest event of `stream`'s metastream. The order of the checks:
    /// a retry (by event id) first, so it gets its original answer; then a tombstone; then
    /// the expected revision: the metastream's (`meta_expected`), or for a delete the
    /// stream's (`delete_check`: expected, stored head, kind).
    #[allow(clippy::too_many_arguments)]
    fn record_lifecycle(
        &mut self,
        stream: &str,
        meta_expected: ExpectedRevision,
        delete_check: Option<(ExpectedRevision, Option<u64>, DeleteKind)>,
        current: Lifecycle,
        next: Lifecycle,
        event_type: &str,
        id: Uuid,
        created_unix_ms: u64,
    ) -> Result<AppendResult, StoreError> {
        let meta = lifecycle::metastream(stream);
        let append = Append {
            stream: meta.clone(),
            expected: meta_expected,
            events: vec![NewEvent {
                id,
                event_type: event_type.to_owned(),
                content_type: ContentType::Json,
                data: next.encode()?,
                metadata: Vec::new(),
                tags: Vec::new(),
            }],
            created_unix_ms,
        };
        if let Some(verdict) =
            self.check_idempotency(&append.stream, append.expected, &append.events, 0)?
        {
            return Ok(verdict);
        }
        if current.tombstoned {
            return Ok(AppendResult::StreamDeleted);
        }
        let meta_head = self.head(&meta)?;
        if let Some((expected, stored_head, kind)) = delete_check {
            let head = current.effective_head(stored_head);
            if !expected_holds(expected, head) {
                return Ok(AppendResult::WrongExpectedVersion {
                    expected,
                    actual: head,
                });
            }
            if kind == DeleteKind::Soft && head.is_none() {
                return Ok(AppendResult::StreamNotFound);
            }
        } else if !expected_holds(meta_expected, meta_head) {
            return Ok(AppendResult::WrongExpectedVersion {
                expected: meta_expected,
                actual: meta_head,
            });
        }
        let written = self.write_group(append.stream, meta_head, created_unix_ms, append.events)?;
        self.streams.set_lifecycle(stream, next);
        Ok(AppendResult::Written(written))
    }

    /// Writes one stream's events as one group at the next position, after `head`, its
    /// created time raised to the log's clock if a leader's clock went back (so the clock,
    /// and what max age hides, never goes back).
    fn write_group(
        &mut self,
        stream: String,
        head: Option<u64>,
        created_unix_ms: u64,
        events: Vec<NewEvent>,
    ) -> Result<AppendPosition, StoreError> {
        let count = events.len() as u64;
        let first_revision = head.map_or(0, |h| h + 1);
        let first_position = self.applied.next_position;
        let created_unix_ms = created_unix_ms.max(self.clock()?);
        let group = StoredGroup {
            stream,
            first_revision,
            created_unix_ms,
            events,
        };
        let location = self.frames.push(first_position, &group)?;
        write_group(
            &mut self.batch,
            &mut self.id_index,
            first_position,
            &group,
            location,
        )?;
        for (offset, event) in group.events.iter().enumerate() {
            self.ids.insert(event.id, first_position + offset as u64);
        }
        if let Some(unflushed) = self.unflushed.as_mut() {
            unflushed.extend(
                group
                    .events
                    .iter()
                    .enumerate()
                    .map(|(offset, e)| UnflushedEvent {
                        position: first_position + offset as u64,
                        event_type: e.event_type.clone(),
                        tags: e.tags.clone(),
                    }),
            );
        }
        let last_revision = first_revision + count - 1;
        let last_position = first_position + count - 1;
        self.streams.set_head(&group.stream, Some(last_revision));
        self.applied.next_position = last_position + 1;
        *self.clock = Some(created_unix_ms);
        Ok(AppendPosition {
            last_revision,
            last_position,
        })
    }

    /// A multi-stream append: validation, idempotency (each stream's part must be an exact
    /// retry, and the parts contiguous, for the whole to be one), every stream's expected
    /// revision in the request's order, then the DCB condition; all hold, or nothing is
    /// written.
    pub fn multi_append(&mut self, multi: MultiAppend) -> Result<MultiAppendResult, StoreError> {
        if let Err(invalid) = self.limits.validate_multi_append(&multi) {
            return Ok(MultiAppendResult::Rejected(AppendRejection::Invalid(
                invalid,
            )));
        }
        if let Some(verdict) = self.check_multi_idempotency(&multi)? {
            return Ok(verdict);
        }
        let mut heads = Vec::with_capacity(multi.streams.len());
        for part in &multi.streams {
            let lifecycle = self.lifecycle(&part.stream)?;
            if lifecycle.tombstoned {
                return Ok(MultiAppendResult::StreamDeleted {
                    stream: part.stream.clone(),
                });
            }
            let stored_head = self.head(&part.stream)?;
            let head = lifecycle.effective_head(stored_head);
            if !expected_holds(part.expected, head)
                && !crate::faults::active().skip_expected_version
            {
                return Ok(MultiAppendResult::WrongExpectedVersion {
                    stream: part.stream.clone(),
                    expected: part.expected,
                    actual: head,
                });
            }
            heads.push(stored_head);
        }
        if let Some(condition) = &multi.condition {
            if !crate::faults::active().skip_dcb_check {
                let found = self.first_condition_match(condition)?;
                if let Some(position) = found {
                    return Ok(MultiAppendResult::ConditionFailed { position });
                }
            }
        }
        let mut last_revisions = Vec::with_capacity(multi.streams.len());
        let mut last_position = 0;
        for (part, head) in multi.streams.into_iter().zip(heads) {
            let written = self.write_group(
                part.stream.clone(),
                head,
                multi.created_unix_ms,
                part.events,
            )?;
            last_revisions.push((part.stream, written.last_revision));
            last_position = written.last_position;
        }
        Ok(MultiAppendResult::Written(MultiPosition {
            last_revisions,
            last_position,
        }))
    }

    /// The first event matching a DCB condition after its `after`: from the indexes for what
    /// is written, then from `unflushed` for what this call has pending (all after it). The first check of a call
    /// writes what is pending (unsynced, as every flush here) and starts keeping `unflushed`;
    /// past `MAX_UNFLUSHED_CONDITION_EVENTS` it writes again instead of scanning more.
    fn first_condition_match(
        &mut self,
        condition: &AppendCondition,
    ) -> Result<Option<u64>, StoreError> {
        let tracked = self.unflushed.as_ref().map(Vec::len);
        if tracked.is_none_or(|n| n >= MAX_UNFLUSHED_CONDITION_EVENTS) {
            if self.pending_bytes() > 0 {
                self.flush()?;
            }
            self.unflushed.get_or_insert_with(Vec::new).clear();
        }
        let query = &condition.fail_if_events_match;
        let written = first_match_after(
            self.disk,
            query,
            condition.after,
            self.applied.next_position,
        )?;
        if written.is_some() {
            return Ok(written);
        }
        Ok(self.unflushed.as_ref().and_then(|events| {
            events
                .iter()
                .filter(|e| condition.after.is_none_or(|after| e.position > after))
                .find(|e| query_matches(query, &e.event_type, &e.tags))
                .map(|e| e.position)
        }))
    }

    /// `None` when no event id of the request is stored. A retry of the whole request (every
    /// part an exact retry, the parts contiguous in `$all`) gets the original result; any other
    /// overlap is a conflict, as for single appends.
    fn check_multi_idempotency(
        &mut self,
        multi: &MultiAppend,
    ) -> Result<Option<MultiAppendResult>, StoreError> {
        let mut verdicts = Vec::with_capacity(multi.streams.len());
        for part in &multi.streams {
            let recreated_at = self.lifecycle(&part.stream)?.deleted_before.unwrap_or(0);
            let verdict =
                self.check_idempotency(&part.stream, part.expected, &part.events, recreated_at)?;
            verdicts.push(verdict);
        }
        if verdicts.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut last_revisions = Vec::with_capacity(verdicts.len());
        let mut retry_of: Option<(uuid::Uuid, u64)> = None;
        let mut last_position = 0;
        for (verdict, part) in verdicts.into_iter().zip(&multi.streams) {
            let at = match verdict {
                Some(AppendResult::AlreadyWritten(at)) => at,
                Some(AppendResult::Rejected(rejection)) => {
                    return Ok(Some(MultiAppendResult::Rejected(rejection)))
                }
                _ => {
                    // This part is new (or not a retry) while another part's ids are stored:
                    // the request is not the one that stored them.
                    let (id, position) = self.first_stored_id(multi)?;
                    return Ok(Some(MultiAppendResult::Rejected(
                        AppendRejection::IdempotencyConflict { id, position },
                    )));
                }
            };
            let first = at.last_position + 1 - part.events.len() as u64;
            if retry_of.is_some() && first != last_position + 1 {
                return Ok(Some(MultiAppendResult::Rejected(
                    AppendRejection::IdempotencyConflict {
                        id: part.events[0].id,
                        position: first,
                    },
                )));
            }
            retry_of.get_or_insert((part.events[0].id, first));
            last_position = at.last_position;
            last_revisions.push((part.stream.clone(), at.last_revision));
        }
        Ok(Some(MultiAppendResult::AlreadyWritten(MultiPosition {
            last_revisions,
            last_position,
        })))
    }

    /// The first event id of the request that is stored, and where.
    fn first_stored_id(&mut self, multi: &MultiAppend) -> Result<(uuid::Uuid, u64), StoreError> {
        for event in multi.streams.iter().flat_map(|p| &p.events) {
            if let Some(&position) = self.ids.get(&event.id) {
                return Ok((event.id, position));
            }
            if let Some(position) = self.id_index.position(&event.id)? {
                return Ok((event.id, position));
            }
        }
        Err(StoreError::corrupt(
            "event id index",
            "an id found stored a moment ago is gone",
        ))
    }

    /// `None` when no event id is stored yet (a new append). Otherwise the verdict: an exact
    /// retry returns the original result and writes nothing; anything else is a conflict.
    fn check_idempotency(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        events: &[NewEvent],
        recreated_at: u64,
    ) -> Result<Option<AppendResult>, StoreError> {
        let mut found: Vec<(usize, u64)> = Vec::new();
        let mut in_overlay = false;
        for (index, event) in events.iter().enumerate() {
            if let Some(&position) = self.ids.get(&event.id) {
                in_overlay = true;
                found.push((index, position));
            } else if let Some(position) = self.id_index.position(&event.id)? {
                if position >= self.forget_ids_below {
                    found.push((index, position));
                }
            }
        }
        let Some(&(first_index, first_found)) = found.first() else {
            return Ok(None);
        };
        if in_overlay {
            // Rare (a retry committed in the same batch as its original): write what is pending
            // so the stored group can be read back below.
            self.flush()?;
        }
        let count = events.len();
        let start = first_found.wrapping_sub(first_index as u64);
        let contiguous = found.len() == count
            && found
                .iter()
                .all(|&(index, position)| position == start.wrapping_add(index as u64));
        if contiguous {
            if let Some(location) = self.disk.get(&keys::event_key(start))? {
                let group = read_group(self.groups, start, &location)?;
                if group.stream == stream
                    && group.events.len() == count
                    && same_place(expected, group.first_revision, recreated_at)
                {
                    // The same ids at the same place are a retry only if every event is the
                    // one stored under its id. The stored group is at hand, so the events are
                    // compared whole: exact, and it covers every id ever stored (no digest
                    // that older stores would lack, no collisions).
                    let other = group
                        .events
                        .iter()
                        .zip(events)
                        .position(|(stored, sent)| stored != sent);
                    if let (Some(index), false) =
                        (other, crate::faults::active().ignore_retry_content)
                    {
                        return Ok(Some(AppendResult::Rejected(
                            AppendRejection::ContentConflict {
                                id: events[index].id,
                                position: start + index as u64,
                            },
                        )));
                    }
                    return Ok(Some(AppendResult::AlreadyWritten(AppendPosition {
                        last_revision: group.first_revision + count as u64 - 1,
                        last_position: start + count as u64 - 1,
                    })));
                }
            }
        }
        Ok(Some(AppendResult::Rejected(
            AppendRejection::IdempotencyConflict {
                id: events[first_index].id,
                position: first_found,
            },
        )))
    }
}
