//! What a run did, as the clients and the nodes saw it: one [`Record`] per line of JSON.
//!
//! The simulation writes it; the checker judges it. A history recorded from real processes in
//! the same format is judged the same way. Times are milliseconds since the run began (simulated
//! time inside the simulation), so a seed gives the same bytes every time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an append asked the stream to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    Any,
    NoStream,
    StreamExists,
    /// The stream's last revision is exactly this.
    Exact(u64),
}

/// One event as a reader, a subscriber or a node's `$all` saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventRef {
    pub id: Uuid,
    pub stream: String,
    /// 0-based, gapless within the stream.
    pub revision: u64,
    /// Position in `$all`, gapless across the log.
    pub position: u64,
    /// [`content_digest`] of the event's type, content type, data and metadata (absent in
    /// histories recorded without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
    /// The event's type and tags, for judging index reads (absent in histories recorded
    /// without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A digest of an event's content, to tell in a history whether the event stored under an id
/// is the one an append sent: FNV-1a (64-bit) over the type, the content type (`binary`),
/// the data and the metadata, each length-prefixed. Written out here, five lines, because the
/// value is part of the history format: it must not change with a Rust release (std's
/// hasher may) and is not a security boundary (the workload writes it, the checker reads it).
pub fn content_digest(event_type: &str, binary: bool, data: &[u8], metadata: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &byte in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    };
    feed(event_type.as_bytes());
    feed(&[u8::from(binary)]);
    feed(data);
    feed(metadata);
    hash
}

/// How an append ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AppendOutcome {
    /// Acknowledged: the events are committed, the last one at this revision and position.
    Ok {
        last_revision: u64,
        last_position: u64,
    },
    /// Definitely not written: the expected revision did not hold.
    WrongExpectedVersion { actual: Option<u64> },
    /// Definitely not written: the server refused it (bad input, idempotency conflict).
    Rejected { reason: String },
    /// Unknown: timed out or the node went away; it may or may not have been written.
    Unknown { error: String },
}

/// Which guarantee a read asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Through the leader: sees every append acknowledged before the read began.
    Linearizable,
    /// Any node's applied state: some prefix of the log.
    Local,
    /// Any node, but at least this `$all` position applied.
    LocalMinPosition(u64),
}

/// How a read ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReadOutcome {
    Ok { events: Vec<EventRef> },
    Failed { error: String },
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// First line: what ran.
    Run { seed: u64, nodes: u32, clients: u32 },
    /// A fault the schedule injected (or lifted), for the summary and for reading a failure.
    Fault { at_ms: u64, fault: String },
    /// Every fault is lifted from here on; the cluster must converge and accept writes.
    Healed { at_ms: u64 },
    /// One append, from the client's first try to its final answer (client-side retries with
    /// the same ids included). A later `Append` with the same `ids` is a deliberate re-send.
    Append {
        op: u64,
        client: u32,
        start_ms: u64,
        end_ms: u64,
        stream: String,
        expected: Expected,
        ids: Vec<Uuid>,
        /// [`content_digest`] of each event, in the order of `ids` (absent in histories
        /// recorded without it). A later `Append` with the same ids and other digests reuses
        /// the ids for other events: it must not be acknowledged.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        digests: Vec<u64>,
        #[serde(flatten)]
        outcome: AppendOutcome,
    },
    /// A forwards read of a whole stream (`stream` = `Some`) or of `$all` from `from_position`
    /// (`stream` = `None`), up to `max_count` events.
    Read {
        op: u64,
        client: u32,
        start_ms: u64,
        end_ms: u64,
        stream: Option<String>,
        from_position: u64,
        max_count: u64,
        consistency: Consistency,
        #[serde(flatten)]
        outcome: ReadOutcome,
    },
    /// Everything one subscription delivered, in delivery order, across the client library's
    /// resubscriptions. `stream` = `None` is `$all` from `from` (a position, included);
    /// `Some` is that stream from revision `from`, included.
    Subscription {
        sub: u32,
        client: u32,
        stream: Option<String>,
        from: u64,
        events: Vec<EventRef>,
        /// How many times it reported "caught up".
        caught_up: u32,
    },
    /// Node code panicked (the simulation catches panics of Raft's tasks and records them).
    Panic { at_ms: u64, message: String },
    /// A node's whole `$all` once the run ended, in position order.
    NodeLog { node: u64, events: Vec<EventRef> },
    /// A forwards read of an index (`$ce-<category>`, `$et-<type>`, `$tag-<tag>`) from
    /// `from_position`, up to `max_count` events.
    IndexRead {
        op: u64,
        client: u32,
        start_ms: u64,
        end_ms: u64,
        index: String,
        from_position: u64,
        max_count: u64,
        consistency: Consistency,
        #[serde(flatten)]
        outcome: ReadOutcome,
    },
    /// A node's whole index once the run ended: it must be that node's `NodeLog` filtered.
    NodeIndex {
        node: u64,
        index: String,
        events: Vec<EventRef>,
    },
    /// A consumer of a consumer group received an event (records are in simulated time order
    /// across hosts).
    GroupDelivery {
        consumer: u32,
        at_ms: u64,
        group: String,
        event: EventRef,
        retry_count: u32,
    },
    /// A consumer sent an ack (`action` "ack") or a nack ("park", "skip", "retry").
    GroupAck {
        consumer: u32,
        at_ms: u64,
        group: String,
        id: Uuid,
        stream: String,
        revision: u64,
        position: u64,
        action: String,
    },
    /// A consumer is about to create its group with this stream-prefix filter (`None`: the
    /// whole of `$all`). Every create of a group in a run carries the same definition, so
    /// whichever is applied, the group must deliver only the events the filter passes.
    GroupCreate {
        consumer: u32,
        group: String,
        stream_prefix: Option<String>,
    },
    /// The cluster's limit of live consumer groups, when the run churns groups against it.
    GroupLimit { max: u64 },
    /// How many newest events of each `$group-` stream reads show (`Limits::group_history`),
    /// when it is not unbounded: the older ones are hidden, and a scavenge removes them.
    GroupHistory { events: u64 },
    /// The group churn client created (`create`) or deleted a group; `outcome` is "ok",
    /// "full" (refused at the limit), "exists", "not-found" or "unknown: ...".
    GroupChurn {
        at_ms: u64,
        group: String,
        create: bool,
        outcome: String,
    },
    /// A consumer crashed mid-event: it dropped its connection without answering.
    GroupCrash {
        consumer: u32,
        at_ms: u64,
        group: String,
    },
    /// A node's consumer group after the run: every state its group stream recorded, in
    /// order, and the source positions its parked stream holds.
    NodeGroup {
        node: u64,
        group: String,
        states: Vec<GroupStateRef>,
        parked: Vec<u64>,
    },
    /// One change of users, tokens or grants, proposed by the simulated admin.
    AuthChange {
        op: u64,
        start_ms: u64,
        end_ms: u64,
        id: Uuid,
        #[serde(flatten)]
        change: AuthChangeRef,
        #[serde(flatten)]
        outcome: AuthOutcome,
    },
    /// Right after an acknowledged token change (op `op`: a create or a revoke), a node that
    /// had applied it judged the token with its gate's authentication: `accepted` whether it
    /// let the token in.
    AuthProbe {
        op: u64,
        at_ms: u64,
        node: u64,
        token_id: String,
        accepted: bool,
    },
    /// A node's security states after the run: every event of its `$auth` stream, in order
    /// (reads of `$all` never show them, so `NodeLog` has a gap at each position).
    NodeAuth {
        node: u64,
        states: Vec<AuthStateRef>,
    },
    /// One multi-stream or DCB append (all its parts land contiguously, in order, or none),
    /// from the first try to the final answer; a later one with the same ids is a re-send.
    MultiAppend {
        op: u64,
        client: u32,
        start_ms: u64,
        end_ms: u64,
        parts: Vec<MultiPart>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<ConditionRef>,
        #[serde(flatten)]
        outcome: MultiOutcome,
    },
    /// A change of a stream's lifecycle (issue 18), from the first try to the final answer:
    /// its metadata replaced, a soft delete, a tombstone, an erase (every step), or a
    /// scavenge of the whole of `$all` (`stream` empty). The streams it names are written by
    /// one client, one operation at a time, so the checker knows the order of every change
    /// and append of theirs (`checker/lifecycle.rs`).
    Lifecycle {
        op: u64,
        client: u32,
        start_ms: u64,
        end_ms: u64,
        stream: String,
        change: LifecycleChange,
        /// The id of the metastream event the change writes (none for erase and scavenge).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Uuid>,
        #[serde(flatten)]
        outcome: ChangeOutcome,
    },
}

/// What a [`Record::Lifecycle`] changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum LifecycleChange {
    /// The metadata replaced by these limits (`None`: no limit).
    Metadata {
        max_count: Option<u64>,
        truncate_before: Option<u64>,
    },
    SoftDelete,
    Tombstone,
    Erase,
    Scavenge,
}

/// How a lifecycle change ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Done; a metadata change or delete wrote its metastream event at this revision and
    /// position.
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meta_revision: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meta_position: Option<u64>,
    },
    /// Definitely not done (the stream not found, tombstoned, bad input).
    Rejected { reason: String },
    /// Unknown: it may or may not have been done.
    Unknown { error: String },
}

/// One change of users, tokens or grants (`auth_admin`), from the first try to the answer; a
/// retry carries the same `id`, so the change lands at most once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AuthChangeRef {
    /// The first admin (`admin`, with `admin` on `*`, and the token `bootstrap`).
    Bootstrap,
    AddUser {
        user: String,
    },
    CreateToken {
        token_id: String,
        user: String,
    },
    RevokeToken {
        token_id: String,
    },
    Grant {
        user: String,
        action: String,
        prefix: String,
    },
    Revoke {
        user: String,
        action: String,
        prefix: String,
    },
    AddRole {
        role: String,
    },
    RemoveRole {
        role: String,
    },
    GrantRole {
        role: String,
        action: String,
        prefix: String,
    },
    RevokeRole {
        role: String,
        action: String,
        prefix: String,
    },
    AssignRole {
        user: String,
        role: String,
    },
    UnassignRole {
        user: String,
        role: String,
    },
}

/// How a change of the security state ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AuthOutcome {
    /// Applied (or found applied by its id): the state event's `$all` position.
    Ok { position: u64 },
    /// The state machine refused it (nothing written).
    Refused { reason: String },
    /// No answer: it may or may not have landed.
    Unknown { error: String },
}

/// One stored security state: the `$auth` event at `position` (written by the change `id`),
/// as tokens (id to user) and each user's grants (`action:prefix`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStateRef {
    pub position: u64,
    pub id: Uuid,
    pub tokens: BTreeMap<String, String>,
    pub grants: BTreeMap<String, BTreeSet<String>>,
    /// Each role's grants (`action:prefix`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, BTreeSet<String>>,
    /// Each user's roles (users with none left out).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_roles: BTreeMap<String, BTreeSet<String>>,
}

/// One recorded state of a consumer group: its incarnation, strategy and source checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStateRef {
    pub incarnation: u64,
    pub ordered: bool,
    pub deleted: bool,
    /// Every source key below this is done...
    pub next: u64,
    /// ...and every key in these half-open ranges.
    pub done: Vec<(u64, u64)>,
}

/// One stream's part of a multi-stream append (DCB events: the stream `$dcb`, `Any`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiPart {
    pub stream: String,
    pub expected: Expected,
    pub ids: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digests: Vec<u64>,
}

/// One alternative of a DCB query: any of `types` (none: any type), all of `tags`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueryItemRef {
    pub types: Vec<String>,
    pub tags: Vec<String>,
}

/// A DCB append condition: fail if an event matching any item is after `after`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConditionRef {
    pub items: Vec<QueryItemRef>,
    pub after: Option<u64>,
}

impl ConditionRef {
    /// Whether an event matches the condition's query, by the dcb.events rules written here
    /// apart from the store's code: items OR'd, types OR'd, tags AND'ed, no items: all.
    pub fn matches(&self, event: &EventRef) -> bool {
        self.items.is_empty()
            || self.items.iter().any(|item| {
                (item.types.is_empty()
                    || item
                        .types
                        .iter()
                        .any(|t| event.event_type.as_deref() == Some(t.as_str())))
                    && item.tags.iter().all(|t| event.tags.contains(t))
            })
    }
}

/// How a multi-stream (or DCB) append ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MultiOutcome {
    /// Acknowledged: each part's last revision, in order, and the last position.
    Ok {
        last_revisions: Vec<u64>,
        last_position: u64,
    },
    /// Definitely not written: this stream's expected revision did not hold.
    WrongExpectedVersion {
        stream: String,
        actual: Option<u64>,
    },
    /// Definitely not written: an event matching the condition is at `position`.
    ConditionFailed {
        position: u64,
    },
    Rejected {
        reason: String,
    },
    Unknown {
        error: String,
    },
}

/// Whether an event is in an index (`$ce-<category>`, `$et-<type>`, `$tag-<tag>`), by the
/// rules of the data model, written here apart from the store's own code so that the checker
/// does not judge the store by the store: a category is the stream name before its first
/// `-`, and a name without one (or starting with one) is its own category. `None` for a name
/// that is not an index.
pub fn in_index(index: &str, event: &EventRef) -> Option<bool> {
    if let Some(category) = index.strip_prefix("$ce-") {
        let own = match event.stream.find('-') {
            Some(end) if end > 0 => &event.stream[..end],
            _ => event.stream.as_str(),
        };
        return Some(own == category);
    }
    if let Some(event_type) = index.strip_prefix("$et-") {
        return Some(event.event_type.as_deref() == Some(event_type));
    }
    let tag = index.strip_prefix("$tag-")?;
    Some(event.tags.iter().any(|t| t == tag))
}

/// Writes a history as JSON lines.
pub fn write_jsonl(records: &[Record], out: &mut impl Write) -> io::Result<()> {
    for record in records {
        serde_json::to_writer(&mut *out, record)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a history written by [`write_jsonl`] (or by a recorder of real processes).
pub fn read_jsonl(input: impl BufRead) -> io::Result<Vec<Record>> {
    let mut records = Vec::new();
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("history line {}: {e}", number + 1),
            )
        })?;
        records.push(record);
    }
    Ok(records)
}
