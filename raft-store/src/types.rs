//! The domain types (ground floor: no imports from the crate): events as written and as
//! recorded, appends and their expected revision, the commands the state machine applies,
//! their verdicts, and why an input is invalid. openraft's type configuration is
//! `raft_types`'s. Imports only `auth` (the security records, ground floor too).

use std::fmt;

use crate::auth::{AuthCommand, AuthResult};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Media type of an event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ContentType {
    #[default]
    Json,
    Binary,
}

impl ContentType {
    pub fn as_mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Binary => "application/octet-stream",
        }
    }
}

/// An event as the client writes it.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewEvent {
    /// Chosen by the client; the key of idempotency.
    pub id: Uuid,
    pub event_type: String,
    pub content_type: ContentType,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub metadata: Vec<u8>,
    /// What the event is about (`customer:7`), indexed as `$tag-<tag>`; limits in `limits`.
    pub tags: Vec<String>,
}

impl fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEvent")
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("data_bytes", &self.data.len())
            .field("metadata_bytes", &self.metadata.len())
            .field("tags", &self.tags)
            .finish()
    }
}

/// An event as the store recorded it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub stream: String,
    /// 0-based, gapless within the stream.
    pub revision: u64,
    /// 0-based, gapless across the store: the order of `$all`.
    pub position: u64,
    pub id: Uuid,
    pub event_type: String,
    pub content_type: ContentType,
    /// Shares the buffer its group was read into (`records::SharedGroup`).
    pub data: Bytes,
    pub metadata: Bytes,
    /// Milliseconds since the Unix epoch, assigned by the leader when it proposed the append.
    pub created_unix_ms: u64,
    pub tags: Vec<String>,
}

impl RecordedEvent {
    /// Gives the data and metadata buffers of their own. As read they are slices of the
    /// buffer their whole append group was read into (`records::SharedGroup`), which they
    /// keep alive: an event held long apart from the rest of its group (a live feed's ring, a
    /// filtered subscription's queue) is detached first, so what is held is its own size.
    pub fn detach(&mut self) {
        self.data = Bytes::copy_from_slice(&self.data);
        self.metadata = Bytes::copy_from_slice(&self.metadata);
    }
}

impl fmt::Debug for RecordedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedEvent")
            .field("stream", &self.stream)
            .field("revision", &self.revision)
            .field("position", &self.position)
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("data_bytes", &self.data.len())
            .field("tags", &self.tags)
            .finish()
    }
}

/// An event as format 1 encoded it, before tags: what the Raft log entries of that format
/// hold (`Command::Format1Append`), and the body of every stored event (`records`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Format1Event {
    pub id: Uuid,
    pub event_type: String,
    pub content_type: ContentType,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub metadata: Vec<u8>,
}

impl Format1Event {
    pub fn with_tags(self, tags: Vec<String>) -> NewEvent {
        NewEvent {
            id: self.id,
            event_type: self.event_type,
            content_type: self.content_type,
            data: self.data,
            metadata: self.metadata,
            tags,
        }
    }
}

/// An append as format 1 encoded it (events without tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format1Append {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub events: Vec<Format1Event>,
    pub created_unix_ms: u64,
}

impl From<Format1Append> for Append {
    fn from(old: Format1Append) -> Append {
        Append {
            stream: old.stream,
            expected: old.expected,
            events: old
                .events
                .into_iter()
                .map(|e| e.with_tags(Vec::new()))
                .collect(),
            created_unix_ms: old.created_unix_ms,
        }
    }
}

/// The optimistic-concurrency condition of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedRevision {
    /// No condition.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this revision.
    Exact(u64),
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no-stream"),
            ExpectedRevision::StreamExists => f.write_str("exists"),
            ExpectedRevision::Exact(r) => write!(f, "{r}"),
        }
    }
}

/// Append events to one stream, atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub events: Vec<NewEvent>,
    /// Set once by the leader when it proposes; every replica records this value, so created
    /// times never come from a follower's clock.
    pub created_unix_ms: u64,
}

/// A command carried by the Raft log and applied by the state machine.
///
/// Postcard encodes the variant by its index: new commands (stream metadata, deletes,
/// multi-stream appends) are added at the end, never reordered, so old logs stay readable.
/// The first two are what format 1 wrote (events without tags): still applied, never
/// proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Format1Append(Format1Append),
    Format1Appends(Vec<Format1Append>),
    Append(Append),
    /// Appends from concurrent requests that the leader proposed as one entry (group commit).
    /// Applied in order, each with its own verdict, exactly as if each were an entry of its own.
    Appends(Vec<Append>),
    /// Like `Appends`, for a group holding at least one multi-stream or conditional append.
    Writes(Vec<Write>),
    /// Replace a stream's metadata (kept in its metastream, `lifecycle`).
    SetStreamMetadata(SetStreamMetadata),
    /// Soft-delete or tombstone a stream.
    DeleteStream(DeleteStream),
    /// Remove what retention hides from one stretch of `$all` (`scavenge`).
    Scavenge(Scavenge),
    /// Define, change, checkpoint or delete a consumer group, park its events or replay its
    /// parked ones (`consumer_group`).
    ConsumerGroup(GroupCommand),
    /// Change users, tokens or grants (`auth`).
    Auth(AuthCommand),
    /// Tombstone a stream and forget its events and its metadata's history (`erase`).
    EraseStream(EraseStream),
    /// A `Scavenge` that also stops once the groups it examined hold `max_event_bytes` of
    /// events (`scavenge`). A new variant, so a `Scavenge` older builds logged is applied as
    /// it was, and every replica takes the budget from the entry, not from its own code.
    ScavengeWithin {
        scavenge: Scavenge,
        max_event_bytes: u64,
    },
}

/// One step of an erase: tombstones `stream` (a fresh tombstone that keeps no metadata, if
/// it has none yet) and forgets at most `erase::ERASE_GROUPS_PER_COMMAND` of its groups and
/// its metastream's older groups. Committed through the log, so every replica forgets the
/// same groups at the same point of it; each node then scrubs them from its disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseStream {
    pub stream: String,
    /// The id of the tombstone event the first step writes in the metastream.
    pub id: Uuid,
    pub created_unix_ms: u64,
}

/// What one `EraseStream` step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseResult {
    /// Why nothing was done (a name that is not a client stream's).
    pub rejected: Option<InvalidInput>,
    pub removed_groups: u64,
    pub removed_events: u64,
    /// Groups are left for the next step (the step's limit was reached).
    pub more: bool,
}

/// How a consumer group hands its events to its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupStrategy {
    /// Any consumer gets any event.
    #[default]
    RoundRobin,
    /// Never two events of one stream in flight at once, each stream's events in revision
    /// order; streams spread over the consumers.
    Ordered,
}

/// Where a new consumer group starts in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupStart {
    /// The source's first event.
    #[default]
    Start,
    /// After the source's last event when the group is created (resolved at apply, so every
    /// replica stores the same place).
    End,
    /// This revision (a stream) or position (`$all` or an index).
    At(u64),
}

/// Which events of `$all` a subscription or a consumer group wants: those that match every
/// part given (`filter::EventFilter` compiles and applies it; limits there). In the Raft log
/// (postcard) every field is written; in a group's JSON state an absent one is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceFilter {
    /// The event's stream name starts with this. Starting with `$`, it also asks a consumer
    /// group for system streams, which it leaves out otherwise.
    pub stream_prefix: Option<String>,
    pub event_type_prefix: Option<String>,
    /// A regular expression (Rust `regex` syntax) the whole event type must match.
    pub event_type_regex: Option<String>,
}

/// A consumer group's settings. Limits: `consumer_group::validate_settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSettings {
    /// A stream, `$all` (events of `$` streams left out), or an index (`$ce-`, `$et-`, `$tag-`).
    pub source: String,
    /// Used when the group is created; an update keeps the group's place.
    pub start: GroupStart,
    /// An event not acknowledged this long after delivery is delivered again.
    pub message_timeout_ms: u64,
    /// Deliveries after the first before an event is parked.
    pub max_retries: u32,
    /// Events in flight per consumer.
    pub max_in_flight: u32,
    /// Consumers connected at once; one more is refused.
    pub max_consumers: u32,
    /// How often the leader proposes a checkpoint while acknowledgements arrive.
    pub checkpoint_interval_ms: u64,
    pub strategy: GroupStrategy,
}

/// Progress through a sequence of keys (a source's revisions or positions, or a parked
/// stream's revisions): every key below `next` is done, and so is every key in `done`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCursor {
    pub next: u64,
    /// Half-open ranges `[from, to)` above `next`, ascending, apart.
    pub done: Vec<(u64, u64)>,
}

/// What a consumer group has finished: its source, and the replay of its parked events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCheckpoint {
    pub source: GroupCursor,
    pub parked: GroupCursor,
}

/// An event a group gave up on (nacked with park, or past its retries), recorded in the
/// group's parked stream by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// The id of the parked-stream event that records it (a retry is recognised by it).
    pub id: Uuid,
    pub stream: String,
    pub revision: u64,
    pub position: u64,
    pub event_id: Uuid,
    pub reason: String,
}

/// A change to a consumer group. `group` is the group's name; `id` the id of the event that
/// records the change in the group's stream (a retried command is recognised by it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// A create as proposed before groups had filters (variant 0 of the log's encoding):
    /// still applied, as a `Create` without a filter, never proposed.
    CreateUnfiltered {
        group: String,
        settings: GroupSettings,
        id: Uuid,
        created_unix_ms: u64,
    },
    /// New settings, whole, as older builds proposed an update (variant 1 of the log's
    /// encoding): still applied (the source must stay, the place is kept), never proposed.
    UpdateWhole {
        group: String,
        settings: GroupSettings,
        id: Uuid,
        created_unix_ms: u64,
    },
    Delete {
        group: String,
        id: Uuid,
        created_unix_ms: u64,
    },
    /// What the leader's dispatcher has finished. `incarnation` names the group it loaded (a
    /// group deleted and created again is another one). Refused if it would forget anything
    /// the stored checkpoint has done.
    Checkpoint {
        group: String,
        incarnation: u64,
        checkpoint: GroupCheckpoint,
        id: Uuid,
        created_unix_ms: u64,
    },
    /// Records events in the group's parked stream.
    Park {
        group: String,
        incarnation: u64,
        events: Vec<ParkedEvent>,
        created_unix_ms: u64,
    },
    /// Delivers every event parked so far again, once.
    ReplayParked {
        group: String,
        id: Uuid,
        created_unix_ms: u64,
    },
    /// Defines a group. A new variant at the end (the log's older ones keep their numbers):
    /// `filter` is kept beside the settings, which the older variants carry as they were.
    Create {
        group: String,
        settings: GroupSettings,
        /// `$all` only: which events the group delivers (`filter`).
        filter: Option<SourceFilter>,
        id: Uuid,
        created_unix_ms: u64,
    },
    /// Changes the settings `change` names, merged at apply into the committed ones (so two
    /// updates of different settings both hold); the source, filter, place and strategy stay.
    Update {
        group: String,
        change: GroupSettingsChange,
        id: Uuid,
        created_unix_ms: u64,
    },
}

/// The settings an update changes (`None`: as it is). The ones a live dispatcher can take
/// at once; the strategy, the source, its filter and the place cannot change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSettingsChange {
    pub message_timeout_ms: Option<u64>,
    pub max_retries: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub max_consumers: Option<u32>,
    pub checkpoint_interval_ms: Option<u64>,
}

impl GroupSettingsChange {
    pub fn is_empty(&self) -> bool {
        *self == GroupSettingsChange::default()
    }

    /// `settings` with the change made.
    pub fn applied_to(&self, settings: &GroupSettings) -> GroupSettings {
        GroupSettings {
            message_timeout_ms: self
                .message_timeout_ms
                .unwrap_or(settings.message_timeout_ms),
            max_retries: self.max_retries.unwrap_or(settings.max_retries),
            max_in_flight: self.max_in_flight.unwrap_or(settings.max_in_flight),
            max_consumers: self.max_consumers.unwrap_or(settings.max_consumers),
            checkpoint_interval_ms: self
                .checkpoint_interval_ms
                .unwrap_or(settings.checkpoint_interval_ms),
            ..settings.clone()
        }
    }
}

impl GroupCommand {
    pub fn group(&self) -> &str {
        match self {
            GroupCommand::Create { group, .. }
            | GroupCommand::CreateUnfiltered { group, .. }
            | GroupCommand::Update { group, .. }
            | GroupCommand::UpdateWhole { group, .. }
            | GroupCommand::Delete { group, .. }
            | GroupCommand::Checkpoint { group, .. }
            | GroupCommand::Park { group, .. }
            | GroupCommand::ReplayParked { group, .. } => group,
        }
    }
}

/// The verdict of a [`GroupCommand`], reached identically on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupResult {
    /// Done; `revision` is the group stream's (or, for a park, the parked stream's) last.
    Written {
        revision: u64,
    },
    /// A retry of a command already applied: nothing new was written.
    AlreadyWritten {
        revision: u64,
    },
    /// A create of a group that exists.
    AlreadyExists,
    /// The group does not exist (never created, deleted, or not the incarnation named).
    NotFound,
    /// A checkpoint that would forget progress the stored one has.
    Stale {
        why: String,
    },
    Rejected(InvalidInput),
}

/// Remove the append groups retention hides wholly, examining at most
/// `scavenge::SCAVENGE_GROUPS_PER_COMMAND` groups from `from_position` on. Committed through
/// the log, so every replica removes the same groups at the same point of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scavenge {
    pub from_position: u64,
    /// The leader's time at proposal (kept for the log's record; max age uses the log's clock).
    pub created_unix_ms: u64,
}

/// What one `Scavenge` command removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScavengeResult {
    /// Where the next command should start; `None`: it reached the end of `$all`.
    pub next_position: Option<u64>,
    pub examined_groups: u64,
    pub removed_groups: u64,
    pub removed_events: u64,
    /// Frame bytes of the removed groups, given back to the file system by each node's
    /// reclaimer.
    pub removed_bytes: u64,
}

/// A stream's retention settings and the application's own metadata. Every limit is
/// optional; `None` keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMetadata {
    /// Keep only the last this many events.
    pub max_count: Option<u64>,
    /// Hide events older than this, judged against the committed log's clock (`lifecycle`).
    pub max_age_secs: Option<u64>,
    /// Hide revisions below this one.
    pub truncate_before: Option<u64>,
    /// The application's own metadata: the text of a JSON object.
    pub custom: Option<String>,
}

/// Set a stream's metadata. `expected` is checked against the metadata's own revision (its
/// metastream's), so metadata is versioned like a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStreamMetadata {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub metadata: StreamMetadata,
    /// The id of the metastream event that records the change: a retry is recognised by it.
    pub id: Uuid,
    pub created_unix_ms: u64,
}

/// How a stream is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteKind {
    /// Reads as not found; appending again recreates it, revisions continuing after the old.
    Soft,
    /// The name can never be written again.
    Tombstone,
}

/// Delete a stream. `expected` is checked against the stream's own last revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteStream {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub kind: DeleteKind,
    /// The id of the metastream event that records the delete: a retry is recognised by it.
    pub id: Uuid,
    pub created_unix_ms: u64,
}

/// One request of a group: a single-stream append, or a multi-stream one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    Append(Append),
    Multi(MultiAppend),
}

/// The verdict of one [`Write`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    Append(AppendResult),
    Multi(MultiAppendResult),
}

/// The events of one stream in a multi-stream append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAppend {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub events: Vec<NewEvent>,
}

/// One alternative of a [`Query`]: an event matches if its type is one of `types` (or `types`
/// is empty) and it carries every tag of `tags`. At least one of the two is non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueryItem {
    pub types: Vec<String>,
    pub tags: Vec<String>,
}

/// A DCB query (dcb.events): its items OR'd. No items matches every event (`Query.all()`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Query {
    pub items: Vec<QueryItem>,
}

/// A DCB append condition: fail if an event matching the query exists after `after` (or at
/// all, with no `after`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendCondition {
    pub fail_if_events_match: Query,
    pub after: Option<u64>,
}

/// Appends to several streams (and DCB events, in the stream [`DCB_STREAM`]) atomically: each
/// stream's expected revision and the condition hold and all events land contiguously in
/// `$all`, in the order given, or nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiAppend {
    pub streams: Vec<StreamAppend>,
    pub condition: Option<AppendCondition>,
    pub created_unix_ms: u64,
}

/// The stream DCB events are recorded in: DCB users name no streams (raft-store/DESIGN.md,
/// "DCB events"). Clients cannot append to it by name.
pub const DCB_STREAM: &str = "$dcb";

/// Where a multi-stream append's events landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiPosition {
    /// Each stream's last revision, in the request's order.
    pub last_revisions: Vec<(String, u64)>,
    /// `$all` position of the last event written.
    pub last_position: u64,
}

/// The verdict of a multi-stream append, reached identically on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiAppendResult {
    Written(MultiPosition),
    /// An exact retry of a multi-stream append already written: nothing new was written.
    AlreadyWritten(MultiPosition),
    /// The first stream (in the request's order) whose expected revision did not hold.
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedRevision,
        actual: Option<u64>,
    },
    /// An event matching the condition's query is stored after its `after`: the first such.
    ConditionFailed {
        position: u64,
    },
    Rejected(AppendRejection),
    /// This stream (of the request) is tombstoned: it can never be written again.
    StreamDeleted {
        stream: String,
    },
}

/// A one-line summary for openraft's logs (it shows entries by `Display`): never the events'
/// data.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Append(append) => write!(
                f,
                "append of {} events to {}",
                append.events.len(),
                append.stream
            ),
            Command::Format1Append(append) => write!(
                f,
                "append of {} events to {} (format 1)",
                append.events.len(),
                append.stream
            ),
            Command::Appends(appends) => write!(f, "{} appends", appends.len()),
            Command::Format1Appends(appends) => write!(f, "{} appends (format 1)", appends.len()),
            Command::Writes(writes) => write!(f, "{} writes", writes.len()),
            Command::SetStreamMetadata(set) => write!(f, "metadata of {}", set.stream),
            Command::DeleteStream(delete) => {
                write!(f, "delete ({:?}) of {}", delete.kind, delete.stream)
            }
            Command::Scavenge(scavenge) => {
                write!(f, "scavenge from position {}", scavenge.from_position)
            }
            Command::ScavengeWithin {
                scavenge,
                max_event_bytes,
            } => write!(
                f,
                "scavenge from position {} within {max_event_bytes} bytes",
                scavenge.from_position
            ),
            Command::ConsumerGroup(command) => {
                write!(f, "consumer group {}", command.group())
            }
            Command::Auth(auth) => write!(f, "{}", auth.change),
            Command::EraseStream(erase) => write!(f, "erase of {}", erase.stream),
        }
    }
}

/// Where the last event of a successful append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendPosition {
    /// Revision of the last event written: what to pass as the next expected revision.
    pub last_revision: u64,
    /// `$all` position of the last event written: the minimum position for read-your-writes.
    pub last_position: u64,
}

/// Why a well-formed append was refused by the state machine (other than a version conflict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppendRejection {
    #[error("invalid append: {0}")]
    Invalid(InvalidInput),
    /// Some of the event ids are already stored, but the request is not an exact retry of the
    /// append that stored them (different ids, order, stream, or place).
    #[error("event id {id} is already stored at position {position}, and this append is not an exact retry of the append that stored it")]
    IdempotencyConflict { id: Uuid, position: u64 },
    /// The event ids are stored, as one append at this place, but an event's content (type,
    /// content type, data or metadata) differs from what is stored under its id: the id was
    /// reused for another event. Not a retry; nothing is written.
    #[error("event id {id} is already stored at position {position} with other content (type, content type, data or metadata): not a retry of the append that stored it, so nothing was written; a retry must resend the same events, and a new event needs a new id")]
    ContentConflict { id: Uuid, position: u64 },
}

/// The verdict of an append, reached identically on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    Written(AppendPosition),
    /// An exact retry of an append that was already written: nothing new was written.
    AlreadyWritten(AppendPosition),
    /// The condition did not hold. `actual` is the stream's last revision (`None`: no stream).
    WrongExpectedVersion {
        expected: ExpectedRevision,
        actual: Option<u64>,
    },
    Rejected(AppendRejection),
    /// The stream is tombstoned: it can never be written again.
    StreamDeleted,
    /// A delete of a stream that has no events (or is already soft-deleted).
    StreamNotFound,
}

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry: nothing for a client.
    Empty,
    Append(AppendResult),
    /// The verdicts of a [`Command::Appends`], in its order.
    Appends(Vec<AppendResult>),
    /// The verdicts of a [`Command::Writes`], in its order.
    Writes(Vec<WriteResult>),
    Scavenged(ScavengeResult),
    ConsumerGroup(GroupResult),
    Auth(AuthResult),
    Erased(EraseResult),
}

/// Why an append was refused before anything was written. Each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InvalidInput {
    #[error("stream name is empty")]
    EmptyStreamName,
    #[error("stream name is {bytes} bytes; the limit is {max}")]
    StreamNameTooLong { bytes: usize, max: usize },
    #[error("stream name contains a NUL character")]
    StreamNameHasNul,
    #[error("stream name {name:?} starts with '$', which is reserved for the system")]
    ReservedStreamName { name: String },
    #[error("append has no events")]
    NoEvents,
    #[error("append has {count} events; the limit is {max}")]
    TooManyEvents { count: usize, max: usize },
    #[error("event {index}: type is empty")]
    EmptyEventType { index: usize },
    #[error("event {index}: type is {bytes} bytes; the limit is {max}")]
    EventTypeTooLong {
        index: usize,
        bytes: usize,
        max: usize,
    },
    #[error("event {index}: {bytes} bytes; the limit is {max}")]
    EventTooLarge {
        index: usize,
        bytes: usize,
        max: usize,
    },
    #[error("append is {bytes} bytes; the limit is {max}")]
    AppendTooLarge { bytes: usize, max: usize },
    #[error("event {index}: id {id} appears twice in the same append")]
    DuplicateEventIdInAppend { index: usize, id: uuid::Uuid },
    // Last, so the encoding of the variants before it does not change.
    #[error("stream name is only whitespace")]
    BlankStreamName,
    #[error("event {index}: {count} tags; the limit is {max}")]
    TooManyTags {
        index: usize,
        count: usize,
        max: usize,
    },
    #[error("event {index}: tag {tag} is empty or only whitespace")]
    BlankTag { index: usize, tag: usize },
    #[error("event {index}: tag {tag} is {bytes} bytes; the limit is {max}")]
    TagTooLong {
        index: usize,
        tag: usize,
        bytes: usize,
        max: usize,
    },
    #[error("event {index}: tag {tag:?} appears twice")]
    DuplicateTag { index: usize, tag: String },
    #[error("stream {stream:?} appears twice in one append; put its events together")]
    DuplicateStreamInAppend { stream: String },
    #[error("query item {item} names no type and no tag; an item must name at least one")]
    EmptyQueryItem { item: usize },
    #[error("query has {count} items; the limit is {max}")]
    TooManyQueryItems { count: usize, max: usize },
    #[error("query item {item}: {count} types; the limit is {max}")]
    TooManyQueryTypes {
        item: usize,
        count: usize,
        max: usize,
    },
    #[error("query item {item}: {count} tags; the limit is {max} (an event carries no more)")]
    TooManyQueryTags {
        item: usize,
        count: usize,
        max: usize,
    },
    #[error("query item {item}: a type or tag is empty or longer than {max} bytes")]
    BadQueryName { item: usize, max: usize },
    #[error("metadata {field} is {value}; it must be between {min} and {max}")]
    MetadataOutOfRange {
        field: String,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("custom metadata is {bytes} bytes; the limit is {max}")]
    CustomMetadataTooLarge { bytes: usize, max: usize },
    #[error("custom metadata must be a JSON object: {why}")]
    CustomMetadataNotAnObject { why: String },
    #[error("consumer group name: {why}")]
    BadGroupName { why: String },
    #[error("consumer group setting {field}: {why}")]
    BadGroupSetting { field: String, why: String },
    #[error("consumer group checkpoint: {why}")]
    BadGroupCheckpoint { why: String },
    #[error("{max} consumer groups exist, the most there may be; delete one first")]
    TooManyGroups { max: usize },
}
