//! Applying consumer-group commands (`consumer_group` has the layout and the rules): each
//! writes one event to the group's stream (or, for a park, events to its parked stream),
//! after the same idempotency check as an append, so a retried command is answered as
//! already written.

use std::collections::HashSet;

use uuid::Uuid;

use super::Applier;
use crate::consumer_group::{
    self, forgotten, group_stream, parked_stream, validate_cursor, validate_filter, validate_name,
    validate_settings, GroupState, ParkedRecord, Source, MAX_PARKED_PER_COMMAND,
};
use crate::error::StoreError;
use crate::types::{
    AppendRejection, AppendResult, ContentType, ExpectedRevision, GroupCheckpoint, GroupCommand,
    GroupCursor, GroupResult, GroupSettings, GroupStart, InvalidInput, NewEvent, ParkedEvent,
    SourceFilter,
};

fn rejected(invalid: InvalidInput) -> GroupResult {
    GroupResult::Rejected(invalid)
}

impl Applier<'_> {
    pub fn consumer_group(&mut self, command: GroupCommand) -> Result<GroupResult, StoreError> {
        if let Err(invalid) = validate_name(command.group()) {
            return Ok(rejected(invalid));
        }
        match command {
            GroupCommand::Create {
                group,
                settings,
                filter,
                id,
                created_unix_ms,
            } => self.create_group(group, settings, filter, id, created_unix_ms),
            GroupCommand::CreateUnfiltered {
                group,
                settings,
                id,
                created_unix_ms,
            } => self.create_group(group, settings, None, id, created_unix_ms),
            GroupCommand::Update {
                group,
                change,
                id,
                created_unix_ms,
            } => {
                if change.is_empty() {
                    return Ok(rejected(InvalidInput::BadGroupSetting {
                        field: "settings".into(),
                        why: "an update names no setting to change".into(),
                    }));
                }
                if let Some(result) = self.retry(&group, id)? {
                    return Ok(result);
                }
                let Some(current) = self.live_group(&group, None)? else {
                    return self.retry_or(&group, id, GroupResult::NotFound);
                };
                let settings = change.applied_to(&current.settings);
                if let Err(invalid) = validate_settings(&settings) {
                    return Ok(rejected(invalid));
                }
                let mut next = GroupState {
                    settings,
                    ..current
                };
                if crate::faults::active().update_forgets_checkpoint {
                    if let GroupStart::At(start) = next.settings.start {
                        next.checkpoint.source = GroupCursor {
                            next: start,
                            done: Vec::new(),
                        };
                    }
                }
                self.record_group(
                    &group,
                    next,
                    consumer_group::UPDATED_EVENT_TYPE,
                    id,
                    created_unix_ms,
                )
            }
            GroupCommand::UpdateWhole {
                group,
                settings,
                id,
                created_unix_ms,
            } => {
                if let Err(invalid) = validate_settings(&settings) {
                    return Ok(rejected(invalid));
                }
                let Some(current) = self.live_group(&group, None)? else {
                    return self.retry_or(&group, id, GroupResult::NotFound);
                };
                if settings.source != current.settings.source {
                    return Ok(rejected(InvalidInput::BadGroupSetting {
                        field: "source".into(),
                        why: format!(
                            "the group reads {:?}; a group's source cannot change (delete it and \
                             create it again)",
                            current.settings.source
                        ),
                    }));
                }
                let next = GroupState {
                    settings: GroupSettings {
                        start: current.settings.start,
                        ..settings
                    },
                    ..current
                };
                self.record_group(
                    &group,
                    next,
                    consumer_group::UPDATED_EVENT_TYPE,
                    id,
                    created_unix_ms,
                )
            }
            GroupCommand::Delete {
                group,
                id,
                created_unix_ms,
            } => {
                let Some(current) = self.live_group(&group, None)? else {
                    return self.retry_or(&group, id, GroupResult::NotFound);
                };
                let next = GroupState {
                    deleted: true,
                    ..current
                };
                self.record_group(
                    &group,
                    next,
                    consumer_group::DELETED_EVENT_TYPE,
                    id,
                    created_unix_ms,
                )
            }
            GroupCommand::Checkpoint {
                group,
                incarnation,
                checkpoint,
                id,
                created_unix_ms,
            } => {
                let Some(current) = self.live_group(&group, Some(incarnation))? else {
                    return self.retry_or(&group, id, GroupResult::NotFound);
                };
                let end = self.source_end(&current.settings.source)?;
                if let Err(invalid) = validate_cursor("source", &checkpoint.source, end)
                    .and_then(|()| validate_cursor("parked", &checkpoint.parked, current.replay_to))
                {
                    return Ok(rejected(invalid));
                }
                if let Some(result) = self.retry(&group, id)? {
                    return Ok(result);
                }
                let forgets = forgotten(&current.checkpoint.source, &checkpoint.source)
                    .map(|key| format!("source key {key}"))
                    .or_else(|| {
                        forgotten(&current.checkpoint.parked, &checkpoint.parked)
                            .map(|key| format!("parked revision {key}"))
                    });
                if let Some(what) = forgets {
                    return Ok(GroupResult::Stale {
                        why: format!(
                            "the stored checkpoint has {what} done, and this one does not"
                        ),
                    });
                }
                let mut checkpoint = checkpoint;
                if crate::faults::active().checkpoint_off_by_one {
                    off_by_one(&mut checkpoint.source, end);
                }
                let next = GroupState {
                    checkpoint,
                    ..current
                };
                self.record_group(
                    &group,
                    next,
                    consumer_group::CHECKPOINT_EVENT_TYPE,
                    id,
                    created_unix_ms,
                )
            }
            GroupCommand::Park {
                group,
                incarnation,
                events,
                created_unix_ms,
            } => self.park(group, incarnation, events, created_unix_ms),
            GroupCommand::ReplayParked {
                group,
                id,
                created_unix_ms,
            } => {
                let Some(current) = self.live_group(&group, None)? else {
                    return self.retry_or(&group, id, GroupResult::NotFound);
                };
                let replay_to = self.head(&parked_stream(&group))?.map_or(0, |h| h + 1);
                let next = GroupState {
                    replay_to: replay_to.max(current.replay_to),
                    ..current
                };
                self.record_group(
                    &group,
                    next,
                    consumer_group::REPLAY_EVENT_TYPE,
                    id,
                    created_unix_ms,
                )
            }
        }
    }

    fn create_group(
        &mut self,
        group: String,
        settings: GroupSettings,
        filter: Option<SourceFilter>,
        id: Uuid,
        created_unix_ms: u64,
    ) -> Result<GroupResult, StoreError> {
        if let Err(invalid) = validate_settings(&settings)
            .and_then(|()| validate_filter(&settings.source, filter.as_ref()))
        {
            return Ok(rejected(invalid));
        }
        // An empty filter is stored as none: one way to say "every event".
        let filter = filter.as_ref().and_then(crate::filter::normalized);
        let filter = filter.filter(|_| !crate::faults::active().group_filter_dropped);
        if let Some(result) = self.retry(&group, id)? {
            return Ok(result);
        }
        if self.live_group(&group, None)?.is_some() {
            return Ok(GroupResult::AlreadyExists);
        }
        let max = self.limits.max_groups;
        if self.live_groups(max)? >= max && !crate::faults::active().group_limit_ignored {
            return Ok(rejected(InvalidInput::TooManyGroups { max }));
        }
        let end = self.source_end(&settings.source)?;
        let next = match settings.start {
            GroupStart::Start => 0,
            GroupStart::End => end,
            GroupStart::At(key) if key <= end => key,
            GroupStart::At(key) => {
                return Ok(rejected(InvalidInput::BadGroupSetting {
                    field: "start".into(),
                    why: format!("{key} is past the source's end ({end})"),
                }))
            }
        };
        let incarnation = self.head(&group_stream(&group))?.map_or(0, |h| h + 1);
        // A group created again starts after what its predecessor parked.
        let parked_end = self.head(&parked_stream(&group))?.map_or(0, |h| h + 1);
        let state = GroupState {
            settings: GroupSettings {
                start: GroupStart::At(next),
                ..settings
            },
            filter,
            incarnation,
            deleted: false,
            checkpoint: GroupCheckpoint {
                source: GroupCursor {
                    next,
                    done: Vec::new(),
                },
                parked: GroupCursor {
                    next: parked_end,
                    done: Vec::new(),
                },
            },
            replay_to: parked_end,
        };
        self.record_group(
            &group,
            state,
            consumer_group::CREATED_EVENT_TYPE,
            id,
            created_unix_ms,
        )
    }

    fn park(
        &mut self,
        group: String,
        incarnation: u64,
        events: Vec<ParkedEvent>,
        created_unix_ms: u64,
    ) -> Result<GroupResult, StoreError> {
        if events.is_empty() || events.len() > MAX_PARKED_PER_COMMAND {
            return Ok(rejected(InvalidInput::BadGroupCheckpoint {
                why: format!(
                    "a park records 1 to {MAX_PARKED_PER_COMMAND} events, not {}",
                    events.len()
                ),
            }));
        }
        let stream = parked_stream(&group);
        let mut new_events = Vec::with_capacity(events.len());
        for event in &events {
            new_events.push(NewEvent {
                id: event.id,
                event_type: consumer_group::PARKED_EVENT_TYPE.to_owned(),
                content_type: ContentType::Json,
                data: ParkedRecord::of(event).encode()?,
                metadata: Vec::new(),
                tags: Vec::new(),
            });
        }
        if let Some(verdict) =
            self.check_idempotency(&stream, ExpectedRevision::Any, &new_events, 0)?
        {
            return Ok(group_result(verdict));
        }
        if self.live_group(&group, Some(incarnation))?.is_none() {
            return Ok(GroupResult::NotFound);
        }
        let head = self.head(&stream)?;
        let written = self.write_group(stream, head, created_unix_ms, new_events)?;
        Ok(GroupResult::Written {
            revision: written.last_revision,
        })
    }

    /// The group's state if it exists, is not deleted, and (if asked) is that incarnation.
    fn live_group(
        &mut self,
        group: &str,
        incarnation: Option<u64>,
    ) -> Result<Option<GroupState>, StoreError> {
        let state = match self.group_states.get(group) {
            Some(state) => Some(state.clone()),
            None => consumer_group::load(self.disk, self.groups, group)?.map(|(state, _)| state),
        };
        Ok(state.filter(|s| !s.deleted && incarnation.is_none_or(|i| i == s.incarnation)))
    }

    /// How many groups are live (not deleted), counting at most `max` of those stored, with
    /// this batch's changes (not yet in the keyspace) over them. A create reads the newest
    /// event of each group stream in name order until `max` live ones: deleted groups'
    /// streams are read too (creates are rare; the cost is in raft-store/DESIGN.md).
    fn live_groups(&mut self, max: usize) -> Result<usize, StoreError> {
        let pending = self.group_states.len();
        let mut live: HashSet<String> =
            consumer_group::list(self.disk, self.groups, max + pending)?
                .into_iter()
                .map(|(name, _)| name)
                .collect();
        for (name, state) in &self.group_states {
            if state.deleted {
                live.remove(name);
            } else {
                live.insert(name.clone());
            }
        }
        Ok(live.len())
    }

    /// Where the source ends: the key its next event will get.
    fn source_end(&mut self, source: &str) -> Result<u64, StoreError> {
        Ok(match Source::parse(source) {
            Ok(Source::Stream(stream)) => self.head(&stream)?.map_or(0, |h| h + 1),
            _ => self.applied.next_position,
        })
    }

    /// The answer to a command whose event id is stored: a retry (found by its id alone; its
    /// content is the state, which a retry recomputes and may find different).
    fn retry(&mut self, group: &str, id: Uuid) -> Result<Option<GroupResult>, StoreError> {
        let stored = match self.ids.get(&id) {
            Some(&position) => Some(position),
            None => self.id_index.position(&id)?,
        };
        if stored.is_none() {
            return Ok(None);
        }
        let revision = self.head(&group_stream(group))?.unwrap_or(0);
        Ok(Some(GroupResult::AlreadyWritten { revision }))
    }

    fn retry_or(
        &mut self,
        group: &str,
        id: Uuid,
        otherwise: GroupResult,
    ) -> Result<GroupResult, StoreError> {
        Ok(self.retry(group, id)?.unwrap_or(otherwise))
    }

    /// Writes `state` as the newest event of the group's stream.
    fn record_group(
        &mut self,
        group: &str,
        state: GroupState,
        event_type: &str,
        id: Uuid,
        created_unix_ms: u64,
    ) -> Result<GroupResult, StoreError> {
        if let Some(result) = self.retry(group, id)? {
            return Ok(result);
        }
        let stream = group_stream(group);
        let event = NewEvent {
            id,
            event_type: event_type.to_owned(),
            content_type: ContentType::Json,
            data: state.encode()?,
            metadata: Vec::new(),
            tags: Vec::new(),
        };
        let head = self.head(&stream)?;
        let written = self.write_group(stream, head, created_unix_ms, vec![event])?;
        self.group_states.insert(group.to_owned(), state);
        Ok(GroupResult::Written {
            revision: written.last_revision,
        })
    }
}

/// The `checkpoint_off_by_one` bug: each done range one key longer, where that keeps the
/// ranges apart and within the source.
fn off_by_one(cursor: &mut GroupCursor, end: u64) {
    let starts: Vec<u64> = cursor.done.iter().skip(1).map(|&(from, _)| from).collect();
    for (i, range) in cursor.done.iter_mut().enumerate() {
        let limit = starts.get(i).copied().unwrap_or(end);
        if range.1 + 1 < limit {
            range.1 += 1;
        }
    }
}

fn group_result(verdict: AppendResult) -> GroupResult {
    match verdict {
        AppendResult::Written(p) | AppendResult::AlreadyWritten(p) => GroupResult::AlreadyWritten {
            revision: p.last_revision,
        },
        AppendResult::Rejected(AppendRejection::Invalid(invalid)) => GroupResult::Rejected(invalid),
        other => GroupResult::Stale {
            why: format!("the command's event id is stored elsewhere: {other:?}"),
        },
    }
}
