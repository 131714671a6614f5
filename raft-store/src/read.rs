//! Reading the state machine: `$all` and single streams, forwards or backwards, as iterators
//! that hold at most one append group in memory at a time.
//!
//! Readers go straight to the disk, beside `apply`: every group's location is written in the
//! same atomic batch as its index entries and the applied state (its frame before that
//! batch), so a reader sees whole appends only.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::AUTH_STREAM;
use crate::codec::decode;
use crate::consumer_group;
use crate::disk::{Disk, KeyRange, Order};
use crate::error::StoreError;
use crate::group_files::GroupFiles;
use crate::index::{run_after, run_at_or_before, IndexName, Run};
use crate::keys;
use crate::lifecycle::{self, Lifecycle, Visibility};
use crate::query::{next_match, query_matches, Walk};
use crate::records::{read_shared_group, AppliedState, SharedGroup};
use crate::stream_run::StreamRun;
use crate::types::{Query, RecordedEvent};

/// Which way a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forwards,
    Backwards,
}

impl Direction {
    /// The position or revision after `n` in this direction (`None` past either end).
    fn beyond(self, n: u64) -> Option<u64> {
        match self {
            Direction::Forwards => n.checked_add(1),
            Direction::Backwards => n.checked_sub(1),
        }
    }
}

/// `Iterator` for a reader whose `$step` method yields its next event: an error ends it.
macro_rules! step_iterator {
    ($reader:ty, $step:ident) => {
        impl Iterator for $reader {
            type Item = Result<RecordedEvent, StoreError>;

            fn next(&mut self) -> Option<Self::Item> {
                match self.$step() {
                    Ok(Some(event)) => Some(Ok(event)),
                    Ok(None) => None,
                    Err(e) => {
                        self.next = None;
                        Some(Err(e))
                    }
                }
            }
        }
    };
}

/// The last revision of `stream`, or `None` if it has no events.
pub(crate) fn stream_head(disk: &dyn Disk, stream: &str) -> Result<Option<u64>, StoreError> {
    let last = disk.scan(&keys::stream_range(stream, 0, None), Order::Descending, 1)?;
    match last.first() {
        Some((key, value)) => {
            let first_revision = keys::stream_key_revision(key)
                .ok_or_else(|| StoreError::corrupt("stream key", "short key"))?;
            let run = StreamRun::decode(value)?;
            Ok(Some(first_revision + u64::from(run.count) - 1))
        }
        None => Ok(None),
    }
}

/// Distinct streams whose visibility one `$all` read remembers; past it the memory is
/// cleared and filled again (costing lookups, not correctness).
pub const MAX_CACHED_VISIBILITIES: usize = 1024;

/// The committed log's clock: the created time of the newest event below `next_position`
/// (0 in an empty store). Apply keeps created times non-decreasing, so it never goes back.
pub(crate) fn log_clock(
    disk: &dyn Disk,
    groups: &GroupFiles,
    next_position: u64,
) -> Result<u64, StoreError> {
    let Some(last) = next_position.checked_sub(1) else {
        return Ok(0);
    };
    Ok(group_at_or_before(disk, groups, last)?.map_or(0, |g| g.group.created_unix_ms))
}

/// Which events of `stream` are shown now. A consumer group's `$group-` stream shows its
/// newest `group_history` events (`Limits::group_history`); `$` streams have no lifecycle of
/// their own.
fn visibility(
    disk: &dyn Disk,
    groups: &GroupFiles,
    stream: &str,
    group_history: u64,
) -> Result<Visibility, StoreError> {
    if stream == AUTH_STREAM {
        // The security state (password hashes among it) is never shown by a read of `$all`,
        // an index or a subscription: only the nodes read it (`auth_view`).
        return Ok(Visibility {
            tombstoned: true,
            ..Visibility::ALL
        });
    }
    if stream.starts_with(consumer_group::GROUP_STREAM_PREFIX) {
        let kept = if crate::faults::active().group_history_keeps_too_few {
            group_history.saturating_sub(1)
        } else {
            group_history
        };
        let first_visible = match stream_head(disk, stream)? {
            Some(head) => (head + 1).saturating_sub(kept.max(1)),
            None => 0,
        };
        return Ok(Visibility {
            first_visible,
            ..Visibility::ALL
        });
    }
    let Some((state, _)) = lifecycle::load(disk, groups, stream)? else {
        return Ok(Visibility::ALL);
    };
    let head = stream_head(disk, stream)?;
    state.visibility(head, || log_clock(disk, groups, applied_end(disk)?))
}

/// What retention shows, judged event by event: the one mechanism every read of `$all`, of an
/// index (`$ce-`, `$et-`, `$tag-`) and of a DCB query, and every subscription's live feed,
/// passes its events through. It remembers each stream's visibility (at most
/// `MAX_CACHED_VISIBILITIES` streams; past it the memory is cleared and filled again, costing
/// lookups, not correctness) for as long as its owner says the answer holds: one read, or a
/// subscription until the stream's metastream changes (`forget`).
pub struct Retention {
    visibilities: HashMap<String, Visibility>,
    /// `Limits::group_history`.
    group_history: u64,
}

impl Retention {
    pub(crate) fn new(group_history: u64) -> Self {
        Retention {
            visibilities: HashMap::new(),
            group_history,
        }
    }

    /// Whether retention shows `stream`'s event at `revision`, created at `created_unix_ms`.
    pub(crate) fn shows(
        &mut self,
        disk: &dyn Disk,
        groups: &GroupFiles,
        stream: &str,
        revision: u64,
        created_unix_ms: u64,
    ) -> Result<bool, StoreError> {
        if crate::faults::active().show_hidden_events {
            return Ok(true);
        }
        let visibility = match self.visibilities.get(stream) {
            Some(v) => *v,
            None => {
                let v = visibility(disk, groups, stream, self.group_history)?;
                if self.visibilities.len() >= MAX_CACHED_VISIBILITIES {
                    self.visibilities.clear();
                }
                self.visibilities.insert(stream.to_owned(), v);
                v
            }
        };
        Ok(visibility.shows(revision, created_unix_ms))
    }

    /// Forgets what it knew of `stream` (its metadata or deletes changed).
    pub fn forget(&mut self, stream: &str) {
        self.visibilities.remove(stream);
    }
}

/// Where a stream stands, as reads and subscriptions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// No events, or soft-deleted and not written since.
    NotFound,
    /// Tombstoned: never to be written again.
    Tombstoned,
    /// Its last revision.
    Exists(u64),
}

/// One decoded append group; events are moved out as they are read.
struct LoadedGroup {
    first_position: u64,
    group: SharedGroup,
}

impl LoadedGroup {
    fn len(&self) -> u64 {
        self.group.events.len() as u64
    }

    fn contains_position(&self, position: u64) -> bool {
        position >= self.first_position && position - self.first_position < self.len()
    }

    fn last_position(&self) -> u64 {
        self.first_position + self.len() - 1
    }

    fn take(&mut self, position: u64) -> RecordedEvent {
        let offset = position - self.first_position;
        let event = std::mem::take(&mut self.group.events[offset as usize]);
        RecordedEvent {
            stream: self.group.stream.clone(),
            revision: self.group.first_revision + offset,
            position,
            id: event.id,
            event_type: event.event_type,
            content_type: event.content_type,
            data: event.data,
            metadata: event.metadata,
            created_unix_ms: self.group.created_unix_ms,
            tags: event.tags,
        }
    }
}

fn load_group(
    groups: &GroupFiles,
    first_position: u64,
    location: &[u8],
) -> Result<LoadedGroup, StoreError> {
    Ok(LoadedGroup {
        first_position,
        group: read_shared_group(groups, first_position, location)?,
    })
}

/// The group with the greatest first position at or below `position` (the one containing it,
/// or the last group if `position` lies beyond the end).
fn group_at_or_before(
    disk: &dyn Disk,
    groups: &GroupFiles,
    position: u64,
) -> Result<Option<LoadedGroup>, StoreError> {
    let range = keys::u64_range(keys::EVENTS, 0, position.saturating_add(1));
    let found = disk.scan(&range, Order::Descending, 1)?;
    match found.first() {
        Some((key, value)) => {
            let first =
                keys::key_u64(key).ok_or_else(|| StoreError::corrupt("event key", "short key"))?;
            Ok(Some(load_group(groups, first, value)?))
        }
        None => Ok(None),
    }
}

/// The group holding `position`, or else the first one after it (positions a scavenge
/// removed are skipped). The next group is looked up first: apply writes groups in position
/// order, so once it is seen every group below it is written too, and the group holding
/// `position`, if there is one, is then found (the other order could miss a group written
/// between the two lookups and skip it).
fn group_at_or_after(
    disk: &dyn Disk,
    groups: &GroupFiles,
    position: u64,
) -> Result<Option<LoadedGroup>, StoreError> {
    let range = keys::u64_range(keys::EVENTS, position, u64::MAX);
    let after = disk.scan(&range, Order::Ascending, 1)?;
    if let Some(group) = group_at_or_before(disk, groups, position)? {
        if group.contains_position(position) {
            return Ok(Some(group));
        }
    }
    match after.first() {
        Some((key, value)) => {
            let first =
                keys::key_u64(key).ok_or_else(|| StoreError::corrupt("event key", "short key"))?;
            Ok(Some(load_group(groups, first, value)?))
        }
        None => Ok(None),
    }
}

/// The `$all` position the next event will get.
fn applied_end(disk: &dyn Disk) -> Result<u64, StoreError> {
    match disk.get(keys::APPLIED)? {
        Some(bytes) => Ok(decode::<AppliedState>("applied state", &bytes)?.next_position),
        None => Ok(0),
    }
}

/// The event at `position`, from `current` if it holds it, else from the group that does
/// (then kept in `current`). `what` names the index or query that pointed there.
fn event_at(
    disk: &dyn Disk,
    groups: &GroupFiles,
    current: &mut Option<LoadedGroup>,
    position: u64,
    what: &dyn std::fmt::Display,
) -> Result<RecordedEvent, StoreError> {
    if !current
        .as_ref()
        .is_some_and(|g| g.contains_position(position))
    {
        let group = group_at_or_before(disk, groups, position)?
            .filter(|g| g.contains_position(position))
            .ok_or_else(|| {
                StoreError::corrupt(
                    "index",
                    format!("{what} points at {position}, which no group holds"),
                )
            })?;
        *current = Some(group);
    }
    match current.as_mut() {
        Some(group) => Ok(group.take(position)),
        None => Err(StoreError::corrupt("index", "no group loaded")),
    }
}

/// Read access to the event store. Cheap to clone.
#[derive(Clone)]
pub struct EventReader {
    disk: Arc<dyn Disk>,
    groups: Arc<GroupFiles>,
    /// `Limits::group_history`: what retention shows of `$group-` streams.
    group_history: u64,
}

impl EventReader {
    pub(crate) fn new(disk: Arc<dyn Disk>, groups: Arc<GroupFiles>, group_history: u64) -> Self {
        EventReader {
            disk,
            groups,
            group_history,
        }
    }

    /// A retention judge for this store's reads (a subscription keeps one).
    pub fn retention(&self) -> Retention {
        Retention::new(self.group_history)
    }

    /// The stream's last revision, or `None` if it has no events.
    pub fn stream_head(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        stream_head(self.disk.as_ref(), stream)
    }

    /// The `$all` position the next event will get: the number of events applied.
    pub fn next_position(&self) -> Result<u64, StoreError> {
        applied_end(self.disk.as_ref())
    }

    /// Where `stream` stands: not found (also while soft-deleted), tombstoned, or its head.
    pub fn stream_status(&self, stream: &str) -> Result<StreamStatus, StoreError> {
        let state = lifecycle::load(self.disk.as_ref(), &self.groups, stream)?;
        let state = state.map(|(s, _)| s).unwrap_or_default();
        if state.tombstoned {
            return Ok(StreamStatus::Tombstoned);
        }
        Ok(match state.effective_head(self.stream_head(stream)?) {
            Some(head) => StreamStatus::Exists(head),
            None => StreamStatus::NotFound,
        })
    }

    /// The stream's lifecycle state and its revision (the metastream's last revision), or
    /// `None` if it never had metadata.
    pub fn stream_lifecycle(&self, stream: &str) -> Result<Option<(Lifecycle, u64)>, StoreError> {
        lifecycle::load(self.disk.as_ref(), &self.groups, stream)
    }

    /// A consumer group's state and its stream's last revision, if it ever existed (deleted
    /// groups included: `deleted` says so).
    pub fn consumer_group(
        &self,
        group: &str,
    ) -> Result<Option<(consumer_group::GroupState, u64)>, StoreError> {
        consumer_group::load(self.disk.as_ref(), &self.groups, group)
    }

    /// The consumer groups that exist, by name, at most `max`.
    pub fn consumer_groups(
        &self,
        max: usize,
    ) -> Result<Vec<(String, consumer_group::GroupState)>, StoreError> {
        consumer_group::list(self.disk.as_ref(), &self.groups, max)
    }

    /// Which events of `stream` are shown now.
    pub fn visibility(&self, stream: &str) -> Result<Visibility, StoreError> {
        visibility(self.disk.as_ref(), &self.groups, stream, self.group_history)
    }

    /// Whether retention shows this event of `stream`; `retention` remembers what it looked up.
    pub fn shows(
        &self,
        retention: &mut Retention,
        stream: &str,
        revision: u64,
        created_unix_ms: u64,
    ) -> Result<bool, StoreError> {
        retention.shows(
            self.disk.as_ref(),
            &self.groups,
            stream,
            revision,
            created_unix_ms,
        )
    }

    /// The `$all` position of the event with this id, if stored.
    pub fn position_of_event(&self, id: &uuid::Uuid) -> Result<Option<u64>, StoreError> {
        crate::id_index::stored_position(self.disk.as_ref(), id)
    }

    /// `$all` from `from` (inclusive; backwards from `u64::MAX` means from the end), at most
    /// `max_count` events.
    pub fn read_all(&self, from: u64, direction: Direction, max_count: u64) -> AllEvents {
        let stored = AllStored {
            disk: self.disk.clone(),
            groups: self.groups.clone(),
            next: Some(from),
            direction,
            current: None,
        };
        self.retained(stored, max_count, false)
    }

    /// `stored` with retention applied, at most `max_count` shown events. `sparse`: the read
    /// takes some events of each group only (an index, a query), so every shown event is
    /// detached from its group's buffer (`Retained::detach`).
    fn retained<S>(&self, stored: S, max_count: u64, sparse: bool) -> Retained<S> {
        Retained {
            stored,
            retention: Some(self.retention()),
            disk: self.disk.clone(),
            groups: self.groups.clone(),
            remaining: max_count,
            to_group_end: false,
            detach: sparse,
        }
    }

    /// One page of `$all` forwards from `from`, retention applied: `min_count` shown events
    /// (fewer at the end), then the rest of the group the last one came from. A reader paging
    /// through `$all` so reads and decodes each group once: pages of a fixed count read a
    /// 1,000-event group four times over (BENCHMARKS.md). Holds no more than the group that
    /// was loaded anyway.
    pub fn read_all_page(&self, from: u64, min_count: u64) -> AllEvents {
        Retained {
            to_group_end: true,
            ..self.read_all(from, Direction::Forwards, min_count)
        }
    }

    /// `read_all_page` as stored: for the live feed (see `read_all_stored`).
    pub fn read_all_stored_page(&self, from: u64, min_count: u64) -> AllEvents {
        Retained {
            to_group_end: true,
            ..self.read_all_stored(from, Direction::Forwards, min_count)
        }
    }

    /// `$all` as stored, with the events retention hides: for the live feed, whose
    /// subscribers judge each event themselves (a position must never go missing from it).
    pub fn read_all_stored(&self, from: u64, direction: Direction, max_count: u64) -> AllEvents {
        Retained {
            retention: None,
            ..self.read_all(from, direction, max_count)
        }
    }

    /// The events of one index (`$ce-`, `$et-`, `$tag-`) in `$all` order from position `from`
    /// (inclusive; backwards from `u64::MAX` means from the end), at most `max_count`.
    pub fn read_index(
        &self,
        index: &IndexName,
        from: u64,
        direction: Direction,
        max_count: u64,
    ) -> IndexEvents {
        let stored = IndexStored {
            disk: self.disk.clone(),
            groups: self.groups.clone(),
            index: index.clone(),
            next: Some(from),
            direction,
            run: None,
            current: None,
        };
        self.retained(stored, max_count, true)
    }

    /// The `$all` position of the last event in an index, if it has any: one reverse seek,
    /// the question a DCB condition asks ("anything of this type or tag after P?").
    pub fn last_in_index(&self, index: &IndexName) -> Result<Option<u64>, StoreError> {
        Ok(run_at_or_before(self.disk.as_ref(), index, u64::MAX)?.map(Run::last))
    }

    /// The events matching a DCB query, in `$all` order from position `from` (inclusive;
    /// backwards from `u64::MAX` means from the end), at most `max_count`. A query without
    /// items reads `$all`. Positions are found in the indexes (`query`); only matching
    /// events are read.
    pub fn read_query(
        &self,
        query: &Query,
        from: u64,
        direction: Direction,
        max_count: u64,
    ) -> QueryEvents {
        let stored = QueryStored {
            disk: self.disk.clone(),
            groups: self.groups.clone(),
            query: query.clone(),
            next: Some(from),
            direction,
            current: None,
        };
        self.retained(stored, max_count, true)
    }

    /// One stream from revision `from` (inclusive; backwards from `u64::MAX` means from the
    /// end), at most `max_count` events. A stream that does not exist yields nothing.
    pub fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: u64,
    ) -> StreamEvents {
        StreamEvents {
            disk: self.disk.clone(),
            groups: self.groups.clone(),
            stream: stream.to_owned(),
            next: Some(from),
            direction,
            remaining: max_count,
            to_group_end: false,
            uncounted: false,
            current: None,
            visibility: None,
            group_history: self.group_history,
        }
    }

    /// One page of a stream forwards from `from`: `min_count` shown events (fewer at the end),
    /// then the rest of the group the last one came from (see `read_all_page`).
    pub fn read_stream_page(&self, stream: &str, from: u64, min_count: u64) -> StreamEvents {
        StreamEvents {
            to_group_end: true,
            ..self.read_stream(stream, from, Direction::Forwards, min_count)
        }
    }
}

/// A read with retention applied: the events its stored read yields that retention shows,
/// at most `remaining` of them (hidden ones do not count).
pub struct Retained<S> {
    stored: S,
    /// `None`: every stored event is shown (the live feed's read).
    retention: Option<Retention>,
    disk: Arc<dyn Disk>,
    groups: Arc<GroupFiles>,
    remaining: u64,
    /// Past `remaining`, go on to the end of the group being read (`read_all_page`).
    to_group_end: bool,
    /// Shown events get buffers of their own (`RecordedEvent::detach`) instead of slices of
    /// their group's: set for a sparse read, and once retention hid an event (the rest of a
    /// group it hid some of may be what is shown). A caller may hold the events a read
    /// returns for long (a subscriber's queue); a slice holds its whole group, so one shown
    /// event of each of many large groups would hold them all. A read that shows every
    /// event of its groups holds no more than it returns.
    detach: bool,
}

/// A stored read that knows whether its next event is in the group it has loaded.
pub trait GroupCursor {
    fn next_in_loaded_group(&self) -> bool {
        false
    }
}

impl<S> Retained<S> {
    /// Counted events left, or the rest of the loaded group once they are out.
    fn more(&self) -> bool
    where
        S: GroupCursor,
    {
        self.remaining > 0 || (self.to_group_end && self.stored.next_in_loaded_group())
    }
}

impl<S: Iterator<Item = Result<RecordedEvent, StoreError>> + GroupCursor> Iterator for Retained<S> {
    type Item = Result<RecordedEvent, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.more() {
            let event = match self.stored.next()? {
                Ok(event) => event,
                Err(e) => {
                    self.remaining = 0;
                    self.to_group_end = false;
                    return Some(Err(e));
                }
            };
            let shown = match self.retention.as_mut() {
                None => Ok(true),
                Some(retention) => retention.shows(
                    self.disk.as_ref(),
                    &self.groups,
                    &event.stream,
                    event.revision,
                    event.created_unix_ms,
                ),
            };
            match shown {
                Ok(true) => {
                    self.remaining = self.remaining.saturating_sub(1);
                    let mut event = event;
                    if self.detach {
                        event.detach();
                    }
                    return Some(Ok(event));
                }
                Ok(false) => self.detach = true,
                Err(e) => {
                    self.remaining = 0;
                    self.to_group_end = false;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// `$all` in position order (or reverse), retention applied.
pub type AllEvents = Retained<AllStored>;
/// One index in `$all` order (or reverse), retention applied.
pub type IndexEvents = Retained<IndexStored>;
/// The events matching a DCB query in `$all` order (or reverse), retention applied.
pub type QueryEvents = Retained<QueryStored>;

/// Events of `$all` in position order (or reverse), as stored.
pub struct AllStored {
    disk: Arc<dyn Disk>,
    groups: Arc<GroupFiles>,
    next: Option<u64>,
    direction: Direction,
    current: Option<LoadedGroup>,
}

impl AllStored {
    fn step_stored(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        let Some(mut position) = self.next else {
            return Ok(None);
        };
        if !self
            .current
            .as_ref()
            .is_some_and(|g| g.contains_position(position))
        {
            let disk = self.disk.as_ref();
            let group = match self.direction {
                Direction::Forwards => group_at_or_after(disk, &self.groups, position)?,
                Direction::Backwards => group_at_or_before(disk, &self.groups, position)?,
            };
            let Some(group) = group else {
                self.next = None;
                return Ok(None);
            };
            if !group.contains_position(position) {
                // `position` is in a scavenged range, or past the last event.
                position = match self.direction {
                    Direction::Forwards => group.first_position,
                    Direction::Backwards => group.last_position(),
                };
            }
            self.current = Some(group);
        }
        let Some(group) = self.current.as_mut() else {
            return Ok(None);
        };
        let event = group.take(position);
        self.next = self.direction.beyond(position);
        Ok(Some(event))
    }
}

step_iterator!(AllStored, step_stored);

impl GroupCursor for AllStored {
    fn next_in_loaded_group(&self) -> bool {
        match (self.next, &self.current) {
            (Some(position), Some(group)) => group.contains_position(position),
            _ => false,
        }
    }
}

/// Events of one stream in revision order (or reverse).
pub struct StreamEvents {
    disk: Arc<dyn Disk>,
    groups: Arc<GroupFiles>,
    stream: String,
    next: Option<u64>,
    direction: Direction,
    remaining: u64,
    /// Past `remaining`, go on to the end of the group being read (`read_stream_page`).
    to_group_end: bool,
    /// The last stored event was one past `remaining` (to the group's end): not counted.
    uncounted: bool,
    current: Option<LoadedGroup>,
    /// Computed at the first step.
    visibility: Option<Visibility>,
    /// `Limits::group_history`.
    group_history: u64,
}

impl StreamEvents {
    /// The next event that retention does not hide. Revisions below the first visible one
    /// are not read at all; events hidden by age are a prefix (created times never go back).
    fn step(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        let visibility = match self.visibility {
            Some(v) => v,
            None => {
                let v = visibility(
                    self.disk.as_ref(),
                    &self.groups,
                    &self.stream,
                    self.group_history,
                )?;
                self.visibility = Some(v);
                v
            }
        };
        if visibility.tombstoned {
            return Ok(None);
        }
        let ignore_truncate = crate::faults::active().show_hidden_events;
        if let Some(next) = self.next {
            if next < visibility.first_visible && !ignore_truncate {
                self.next = match self.direction {
                    Direction::Forwards => Some(visibility.first_visible),
                    Direction::Backwards => None,
                };
            }
        }
        while let Some(event) = self.step_stored()? {
            if event.created_unix_ms >= visibility.min_created_ms || ignore_truncate {
                if event.revision < visibility.first_visible && !ignore_truncate {
                    self.next = None;
                    return Ok(None);
                }
                return Ok(Some(event));
            }
            if self.direction == Direction::Backwards {
                self.next = None;
                return Ok(None);
            }
            if !self.uncounted {
                self.remaining += 1;
            }
        }
        Ok(None)
    }

    fn contains_revision(group: &LoadedGroup, revision: u64) -> bool {
        revision >= group.group.first_revision
            && revision - group.group.first_revision < group.len()
    }

    /// Loads the append group holding `revision` (or the stream's last group if `revision` is
    /// past the end); `None` if the stream has none at or below it.
    fn load(&self, revision: u64) -> Result<Option<LoadedGroup>, StoreError> {
        let range = keys::stream_range(&self.stream, 0, Some(revision.saturating_add(1)));
        self.load_first(&range, Order::Descending)
    }

    /// Forwards, past a gap: the first group at or after `revision`. Only an erased stream's
    /// metastream has one (its earlier events are forgotten, revisions go on), and its
    /// visibility does not say where it starts again.
    fn load_after(&self, revision: u64) -> Result<Option<LoadedGroup>, StoreError> {
        let range = keys::stream_range(&self.stream, revision, None);
        self.load_first(&range, Order::Ascending)
    }

    fn load_first(
        &self,
        range: &KeyRange,
        order: Order,
    ) -> Result<Option<LoadedGroup>, StoreError> {
        let found = self.disk.scan(range, order, 1)?;
        let Some((key, value)) = found.first() else {
            return Ok(None);
        };
        let first_revision = keys::stream_key_revision(key)
            .ok_or_else(|| StoreError::corrupt("stream key", "short key"))?;
        let run = StreamRun::decode(value)?;
        // Only a stream's last entry outlives its group (a scavenge keeps it as the head):
        // everything up to it is hidden, so the stream ends there for the reader.
        let Some(bytes) = self.disk.get(&keys::event_key(run.first_position))? else {
            return Ok(None);
        };
        let group = load_group(&self.groups, run.first_position, &bytes)?;
        if group.group.stream != self.stream
            || group.group.first_revision != first_revision
            || group.len() != u64::from(run.count)
        {
            return Err(StoreError::corrupt(
                "stream index",
                format!("{}@{first_revision} disagrees with its group", self.stream),
            ));
        }
        Ok(Some(group))
    }

    fn step_stored(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        let Some(mut revision) = self.next else {
            return Ok(None);
        };
        let in_loaded_group = self
            .current
            .as_ref()
            .is_some_and(|g| Self::contains_revision(g, revision));
        if self.remaining == 0 && !(self.to_group_end && in_loaded_group) {
            return Ok(None);
        }
        if !in_loaded_group {
            let found = match self.load(revision)? {
                Some(group) if Self::contains_revision(&group, revision) => Some(group),
                None if self.direction == Direction::Forwards => self.load_after(revision)?,
                Some(_) if self.direction == Direction::Forwards => self.load_after(revision)?,
                other => other,
            };
            let Some(group) = found else {
                self.next = None;
                return Ok(None);
            };
            if !Self::contains_revision(&group, revision) {
                match self.direction {
                    Direction::Forwards if group.group.first_revision > revision => {
                        revision = group.group.first_revision;
                    }
                    Direction::Forwards => {
                        self.next = None;
                        return Ok(None);
                    }
                    Direction::Backwards => revision = group.group.first_revision + group.len() - 1,
                }
            }
            self.current = Some(group);
        }
        let Some(group) = self.current.as_mut() else {
            return Ok(None);
        };
        let position = group.first_position + (revision - group.group.first_revision);
        let event = group.take(position);
        self.uncounted = self.remaining == 0;
        self.remaining = self.remaining.saturating_sub(1);
        self.next = self.direction.beyond(revision);
        Ok(Some(event))
    }
}

step_iterator!(StreamEvents, step);

/// Events of one index in `$all` order (or reverse), as stored, with their own stream,
/// revision and position. Walks the index's runs and reads each event from the group
/// holding it.
pub struct IndexStored {
    disk: Arc<dyn Disk>,
    groups: Arc<GroupFiles>,
    index: IndexName,
    next: Option<u64>,
    direction: Direction,
    run: Option<Run>,
    current: Option<LoadedGroup>,
}

impl IndexStored {
    /// The run to read next from `position`, and the position in it: forwards, the run holding
    /// `position` or the first after it; backwards, the last run at or before it.
    fn seek(&self, position: u64) -> Result<Option<(Run, u64)>, StoreError> {
        let disk = self.disk.as_ref();
        let before = run_at_or_before(disk, &self.index, position)?;
        Ok(match self.direction {
            Direction::Forwards => match before {
                Some(run) if run.contains(position) => Some((run, position)),
                _ => run_after(disk, &self.index, position)?.map(|run| (run, run.first)),
            },
            Direction::Backwards => before.map(|run| (run, position.min(run.last()))),
        })
    }

    fn step(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        let Some(mut position) = self.next else {
            return Ok(None);
        };
        if !self.run.is_some_and(|run| run.contains(position)) {
            let Some((run, at)) = self.seek(position)? else {
                self.next = None;
                return Ok(None);
            };
            self.run = Some(run);
            position = at;
        }
        let event = event_at(
            self.disk.as_ref(),
            &self.groups,
            &mut self.current,
            position,
            &self.index,
        )?;
        if !self
            .index
            .matches(&event.stream, &event.event_type, &event.tags)
        {
            return Err(StoreError::corrupt(
                "index",
                format!("{} points at {position}, which is not in it", self.index),
            ));
        }
        self.next = self.direction.beyond(position);
        Ok(Some(event))
    }
}

step_iterator!(IndexStored, step);

impl GroupCursor for IndexStored {}

/// Events matching a DCB query in `$all` order (or reverse), as stored.
pub struct QueryStored {
    disk: Arc<dyn Disk>,
    groups: Arc<GroupFiles>,
    query: Query,
    next: Option<u64>,
    direction: Direction,
    current: Option<LoadedGroup>,
}

impl QueryStored {
    fn step(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        let Some(from) = self.next else {
            return Ok(None);
        };
        let disk = self.disk.as_ref();
        let found = match (self.query.items.is_empty(), self.direction) {
            // Every event matches: the next stored position (a scavenge leaves gaps).
            (true, Direction::Forwards) => group_at_or_after(disk, &self.groups, from)?.map(|g| {
                if g.contains_position(from) {
                    from
                } else {
                    g.first_position
                }
            }),
            (true, Direction::Backwards) => {
                group_at_or_before(disk, &self.groups, from)?.map(|g| from.min(g.last_position()))
            }
            (false, Direction::Forwards) => {
                next_match(disk, &self.query, from, u64::MAX, Walk::Up)?
            }
            (false, Direction::Backwards) => next_match(disk, &self.query, from, 0, Walk::Down)?,
        };
        let Some(position) = found else {
            self.next = None;
            return Ok(None);
        };
        let what = QueryName(&self.query);
        let event = event_at(disk, &self.groups, &mut self.current, position, &what)?;
        if !query_matches(&self.query, &event.event_type, &event.tags) {
            return Err(StoreError::corrupt(
                "index",
                format!("the query's indexes point at {position}, which does not match it"),
            ));
        }
        self.next = self.direction.beyond(position);
        Ok(Some(event))
    }
}

struct QueryName<'a>(&'a Query);

impl std::fmt::Display for QueryName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the query {:?}", self.0.items)
    }
}

step_iterator!(QueryStored, step);

impl GroupCursor for QueryStored {}
