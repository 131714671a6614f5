//! The history checker: judges a [`Record`] history against what Cairn promises.
//!
//! It is a pure function of the history, so it judges a simulated run and a JSON-lines history
//! recorded from real processes alike. The yardstick is the *reference log*: the longest
//! `NodeLog` (the first one on ties). The harness dumps the logs only after the heal and
//! convergence, so every node must hold exactly that log, and every client observation (acks,
//! refusals, reads, subscriptions) must be explainable by it.
//!
//! Each [`Rule`] is one promise. Violations are grouped by rule, in rule order, and capped at
//! [`MAX_VIOLATIONS_PER_RULE`] per rule (plus one "N more" line), so a broken run gives a
//! readable report instead of megabytes.
//!
//! Everything is indexed once (ids, per-stream runs of the log, acknowledgements by end time),
//! so a history of ~100k events is checked in roughly linear time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use uuid::Uuid;

use crate::history::{
    in_index, AppendOutcome, ConditionRef, Consistency, EventRef, Expected, MultiOutcome,
    MultiPart, ReadOutcome, Record,
};

/// At most this many detailed violations are kept per rule; the rest are counted in one
/// closing "N more" line for that rule.
pub const MAX_VIOLATIONS_PER_RULE: usize = 20;

/// One promise the history must keep. The names ([`Rule::name`]) are what reports print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// An acknowledged append is missing from the log, or is not where its ack said.
    AcknowledgedLost,
    /// One event id appears twice in the log.
    DuplicateEventId,
    /// A stream's revisions are not 0, 1, 2, ... in position order.
    RevisionGap,
    /// `$all` positions do not go up by exactly 1.
    PositionOrder,
    /// Two nodes' logs differ at some index.
    DivergentLogs,
    /// Two different appends both succeeded on the same expected revision.
    ConflictingSuccess,
    /// A definitely-failed append's events are in the log.
    FailedVisible,
    /// A read returned something other than a fresh enough prefix of the log.
    StaleRead,
    /// A subscription skipped, repeated, reordered or invented events.
    SubscriptionGap,
    /// One node's log is a strict prefix of another's after the run.
    NotConverged,
    /// Nothing was acknowledged, or there is no node log to judge against.
    NothingCommitted,
    /// After the heal, no append was acknowledged.
    NoWriteAfterHeal,
    /// An acknowledged append's events do not sit at the revision its expectation demanded.
    WrongRevision,
    /// Node code panicked (an assertion of ours or of openraft's caught a broken invariant).
    NodePanicked,
    /// An acknowledged append's event is stored with other content than the append sent: an
    /// event id reused for another event was taken for a retry (issue 14). Such an append
    /// must be refused as an idempotency conflict and write nothing.
    ReusedIdAcknowledged,
    /// An index read (`$ce-`, `$et-`, `$tag-`) is not `$all` filtered by the index: on a
    /// client, not a prefix of the reference log's filtered scope; on a node after the run,
    /// not exactly that node's own log filtered.
    IndexMismatch,
    /// A multi-stream append is partly in the log, or its events are not contiguous in the
    /// request's order.
    MultiNotAtomic,
    /// A DCB condition was judged wrongly: an append that succeeded although an event matching
    /// its query sits after its `after` and before it in `$all`; two successes of one
    /// condition whose own events match it; or a refusal naming a position that holds no
    /// matching event after `after`.
    DcbCondition,
}

impl Rule {
    /// The kebab-case name reports print.
    pub fn name(self) -> &'static str {
        match self {
            Rule::AcknowledgedLost => "acknowledged-lost",
            Rule::DuplicateEventId => "duplicate-event-id",
            Rule::RevisionGap => "revision-gap",
            Rule::PositionOrder => "position-order",
            Rule::DivergentLogs => "divergent-logs",
            Rule::ConflictingSuccess => "conflicting-success",
            Rule::FailedVisible => "failed-visible",
            Rule::StaleRead => "stale-read",
            Rule::SubscriptionGap => "subscription-gap",
            Rule::NotConverged => "not-converged",
            Rule::NothingCommitted => "nothing-committed",
            Rule::NoWriteAfterHeal => "no-write-after-heal",
            Rule::WrongRevision => "wrong-revision",
            Rule::NodePanicked => "node-panicked",
            Rule::ReusedIdAcknowledged => "reused-id-acknowledged",
            Rule::IndexMismatch => "index-mismatch",
            Rule::MultiNotAtomic => "multi-not-atomic",
            Rule::DcbCondition => "dcb-condition",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken promise, with enough detail (op numbers, stream, ids) to find it in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

/// What the history contained, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `Append` records, whatever their outcome.
    pub appends: u64,
    /// Appends that ended `Ok`.
    pub acknowledged: u64,
    /// Appends that ended `Unknown`.
    pub unknown: u64,
    /// Appends that ended `WrongExpectedVersion` or `Rejected`.
    pub definite_failures: u64,
    /// `Read` records, whatever their outcome.
    pub reads: u64,
    pub subscriptions: u64,
    /// Events delivered, summed over all subscriptions.
    pub delivered: u64,
    /// `Fault` records.
    pub faults: u64,
    /// Length of the reference log.
    pub events_committed: u64,
    /// From the heal to the first acknowledgement of an append begun after it.
    pub heal_to_write_ms: Option<u64>,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "appends {} (acknowledged {}, unknown {}, failed {}), reads {}, subscriptions {} \
             (delivered {}), faults {}, events committed {}",
            self.appends,
            self.acknowledged,
            self.unknown,
            self.definite_failures,
            self.reads,
            self.subscriptions,
            self.delivered,
            self.faults,
            self.events_committed
        )
    }
}

/// The checker's verdict: the violations (grouped by rule) and the history's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

impl Report {
    /// No promise was broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    /// One summary line, then one line per violation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            write!(f, "ok: {}", self.stats)?;
        } else {
            write!(
                f,
                "FAILED ({} violations): {}",
                self.violations.len(),
                self.stats
            )?;
        }
        for violation in &self.violations {
            write!(f, "\n{violation}")?;
        }
        Ok(())
    }
}

/// Judges a history. See the module docs and [`Rule`] for what is checked.
pub fn check(history: &[Record]) -> Report {
    let mut sink = Sink::default();
    let node_logs: Vec<(u64, &[EventRef])> = history
        .iter()
        .filter_map(|record| match record {
            Record::NodeLog { node, events } => Some((*node, events.as_slice())),
            _ => None,
        })
        .collect();
    // The longest log, the first one on ties (so the choice does not depend on hashing).
    let reference = node_logs.iter().copied().reduce(|best, next| {
        if next.1.len() > best.1.len() {
            next
        } else {
            best
        }
    });
    let log = Log::new(reference.map_or(&[], |(_, events)| events));
    let mut stats = count(history);
    // Every rule of single appends holds for each stream's part of a multi-stream append.
    let expanded = with_multi_parts(history);
    let history = expanded.as_slice();
    stats.events_committed = log.events.len() as u64;
    stats.heal_to_write_ms = heal_to_write_ms(history);

    check_committed(history, !node_logs.is_empty(), &mut sink);
    if let Some(reference) = reference {
        check_convergence(reference, &node_logs, &mut sink);
        check_log_shape(&log, &mut sink);
    }
    // Without any node log there is nothing to compare client observations with: only the
    // rules that need no log run then (NothingCommitted already says why).
    check_appends(history, &log, reference.is_some(), &mut sink);
    if reference.is_some() {
        check_reads(history, &log, &mut sink);
        check_subscriptions(history, &log, &mut sink);
        check_index_reads(history, &log, &mut sink);
    }
    check_node_indexes(history, &node_logs, &mut sink);
    if reference.is_some() {
        check_multi_appends(history, &log, &mut sink);
    }
    check_heal(history, &mut sink);
    check_panics(history, &mut sink);

    Report {
        violations: sink.finish(),
        stats,
    }
}

/// Collects violations, keeping at most [`MAX_VIOLATIONS_PER_RULE`] per rule. Details are
/// built lazily so a run with 100k violations does not format 100k strings.
#[derive(Default)]
struct Sink {
    kept: Vec<Violation>,
    found: BTreeMap<Rule, usize>,
}

impl Sink {
    fn push(&mut self, rule: Rule, detail: impl FnOnce() -> String) {
        let found = self.found.entry(rule).or_default();
        *found += 1;
        if *found <= MAX_VIOLATIONS_PER_RULE {
            self.kept.push(Violation {
                rule,
                detail: detail(),
            });
        }
    }

    fn finish(mut self) -> Vec<Violation> {
        for (&rule, &found) in &self.found {
            if found > MAX_VIOLATIONS_PER_RULE {
                self.kept.push(Violation {
                    rule,
                    detail: format!("{} more not shown", found - MAX_VIOLATIONS_PER_RULE),
                });
            }
        }
        // Stable: within a rule, history order is kept.
        self.kept.sort_by_key(|violation| violation.rule);
        self.kept
    }
}

/// The reference log with the indexes every rule needs.
struct Log<'a> {
    events: &'a [EventRef],
    /// The whole log by reference, so `$all` and stream scopes are both `&[&EventRef]`.
    all: Vec<&'a EventRef>,
    /// Each id's first occurrence.
    by_id: HashMap<Uuid, &'a EventRef>,
    /// Each stream's events in position order.
    streams: HashMap<&'a str, Vec<&'a EventRef>>,
}

impl<'a> Log<'a> {
    fn new(events: &'a [EventRef]) -> Self {
        let mut by_id = HashMap::with_capacity(events.len());
        let mut streams: HashMap<&str, Vec<&EventRef>> = HashMap::new();
        for event in events {
            by_id.entry(event.id).or_insert(event);
            streams.entry(&event.stream).or_default().push(event);
        }
        Log {
            events,
            all: events.iter().collect(),
            by_id,
            streams,
        }
    }

    fn get(&self, id: &Uuid) -> Option<&'a EventRef> {
        self.by_id.get(id).copied()
    }

    /// `$all` from `position` (included). Binary search: positions are sorted in a good log,
    /// and a bad one is already reported by PositionOrder.
    fn all_from(&self, position: u64) -> &[&'a EventRef] {
        let start = self.all.partition_point(|e| e.position < position);
        &self.all[start..]
    }

    /// `stream` from `revision` (included); empty if the stream is not in the log.
    fn stream_from(&self, stream: &str, revision: u64) -> &[&'a EventRef] {
        match self.streams.get(stream) {
            Some(events) => &events[events.partition_point(|e| e.revision < revision)..],
            None => &[],
        }
    }
}

/// Formats an event as `id stream/revision @position`.
struct At<'a>(&'a EventRef);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "{} {}/{} @{}", e.id, e.stream, e.revision, e.position)
    }
}

/// Rule 11: the counts (all but `events_committed`, which needs the reference log).
fn count(history: &[Record]) -> Stats {
    let mut stats = Stats::default();
    for record in history {
        match record {
            Record::Append { outcome, .. } => {
                stats.appends += 1;
                match outcome {
                    AppendOutcome::Ok { .. } => stats.acknowledged += 1,
                    AppendOutcome::Unknown { .. } => stats.unknown += 1,
                    AppendOutcome::WrongExpectedVersion { .. } | AppendOutcome::Rejected { .. } => {
                        stats.definite_failures += 1
                    }
                }
            }
            Record::MultiAppend { outcome, .. } => {
                stats.appends += 1;
                match outcome {
                    MultiOutcome::Ok { .. } => stats.acknowledged += 1,
                    MultiOutcome::Unknown { .. } => stats.unknown += 1,
                    MultiOutcome::WrongExpectedVersion { .. }
                    | MultiOutcome::ConditionFailed { .. }
                    | MultiOutcome::Rejected { .. } => stats.definite_failures += 1,
                }
            }
            Record::Read { .. } | Record::IndexRead { .. } => stats.reads += 1,
            Record::Subscription { events, .. } => {
                stats.subscriptions += 1;
                stats.delivered += events.len() as u64;
            }
            Record::Fault { .. } => stats.faults += 1,
            Record::Run { .. }
            | Record::Healed { .. }
            | Record::NodeLog { .. }
            | Record::NodeIndex { .. }
            | Record::Panic { .. } => {}
        }
    }
    stats
}

/// The history with each multi-stream append followed by one `Append` per stream part, as a
/// single append of that part would have been recorded: its place (each part's last position
/// follows from the total, since parts are contiguous), its expectation, and its verdict (the
/// parts of a refused request are refused).
fn with_multi_parts(history: &[Record]) -> Vec<Record> {
    let mut expanded = Vec::with_capacity(history.len());
    for record in history {
        expanded.push(record.clone());
        let Record::MultiAppend {
            op,
            client,
            start_ms,
            end_ms,
            parts,
            outcome,
            ..
        } = record
        else {
            continue;
        };
        let after: Vec<u64> = parts
            .iter()
            .enumerate()
            .map(|(i, _)| parts[i + 1..].iter().map(|p| p.ids.len() as u64).sum())
            .collect();
        for (i, part) in parts.iter().enumerate() {
            let outcome = match outcome {
                MultiOutcome::Ok {
                    last_revisions,
                    last_position,
                } => match last_revisions.get(i) {
                    Some(&last_revision) => AppendOutcome::Ok {
                        last_revision,
                        last_position: last_position.saturating_sub(after[i]),
                    },
                    None => AppendOutcome::Rejected {
                        reason: "acknowledged without this stream's revision".into(),
                    },
                },
                MultiOutcome::WrongExpectedVersion { stream, actual } if *stream == part.stream => {
                    AppendOutcome::WrongExpectedVersion { actual: *actual }
                }
                MultiOutcome::WrongExpectedVersion { stream, .. } => AppendOutcome::Rejected {
                    reason: format!("stream {stream}'s expectation failed"),
                },
                MultiOutcome::ConditionFailed { position } => AppendOutcome::Rejected {
                    reason: format!("condition failed at {position}"),
                },
                MultiOutcome::Rejected { reason } => AppendOutcome::Rejected {
                    reason: reason.clone(),
                },
                MultiOutcome::Unknown { error } => AppendOutcome::Unknown {
                    error: error.clone(),
                },
            };
            expanded.push(Record::Append {
                op: *op,
                client: *client,
                start_ms: *start_ms,
                end_ms: *end_ms,
                stream: part.stream.clone(),
                expected: part.expected,
                ids: part.ids.clone(),
                digests: part.digests.clone(),
                outcome,
            });
        }
    }
    expanded
}

/// Multi-stream atomicity and DCB conditions, against the reference log.
fn check_multi_appends(history: &[Record], log: &Log, sink: &mut Sink) {
    // (condition, op's own events match it) -> the first successful id list and its op.
    let mut winners: HashMap<&ConditionRef, (Vec<Uuid>, u64)> = HashMap::new();
    for record in history {
        let Record::MultiAppend {
            op,
            parts,
            condition,
            outcome,
            ..
        } = record
        else {
            continue;
        };
        let op = *op;
        let ids: Vec<Uuid> = parts.iter().flat_map(|p| p.ids.iter().copied()).collect();
        let first = match all_or_nothing(log, parts) {
            Ok(first) => first,
            Err(detail) => {
                sink.push(Rule::MultiNotAtomic, || format!("op {op}: {detail}"));
                continue;
            }
        };
        let Some(condition) = condition else { continue };
        if let (Some(first), MultiOutcome::Ok { .. } | MultiOutcome::Unknown { .. }) =
            (first, outcome)
        {
            let from = condition.after.map_or(0, |a| a + 1);
            if let Some(violator) = log
                .all_from(from)
                .iter()
                .take_while(|e| e.position < first)
                .find(|e| condition.matches(e))
            {
                sink.push(Rule::DcbCondition, || {
                    format!(
                        "op {op} landed at @{first} although {} matches its condition {:?}                          after {:?}",
                        At(violator),
                        condition.items,
                        condition.after
                    )
                });
            }
        }
        if let MultiOutcome::Ok { .. } = outcome {
            let own_match = ids
                .iter()
                .filter_map(|id| log.get(id))
                .any(|e| condition.matches(e));
            if own_match {
                match winners.get(condition) {
                    Some((winner, winner_op)) if *winner != ids => {
                        let winner_op = *winner_op;
                        sink.push(Rule::DcbCondition, || {
                            format!(
                                "ops {winner_op} and {op} both succeeded on condition {:?}                                  after {:?}, each writing an event that matches it",
                                condition.items, condition.after
                            )
                        });
                    }
                    Some(_) => {}
                    None => {
                        winners.insert(condition, (ids.clone(), op));
                    }
                }
            }
        }
        if let MultiOutcome::ConditionFailed { position } = outcome {
            let named = log
                .all_from(*position)
                .first()
                .filter(|e| e.position == *position);
            let explained = named.is_some_and(|e| {
                condition.matches(e) && condition.after.is_none_or(|a| e.position > a)
            });
            if !explained {
                sink.push(Rule::DcbCondition, || {
                    format!(
                        "op {op} was refused naming @{position}, which holds no event matching                          {:?} after {:?}",
                        condition.items, condition.after
                    )
                });
            }
        }
    }
}

/// The first position of a multi-stream append wholly in the log (`None` if wholly absent),
/// or why it is partly there or out of order.
fn all_or_nothing(log: &Log, parts: &[MultiPart]) -> Result<Option<u64>, String> {
    let found: Vec<Option<&EventRef>> = parts
        .iter()
        .flat_map(|p| p.ids.iter().map(move |id| (id, p.stream.as_str())))
        .map(|(id, _)| log.get(id))
        .collect();
    let present = found.iter().filter(|e| e.is_some()).count();
    if present == 0 {
        return Ok(None);
    }
    if present < found.len() {
        return Err(format!(
            "{present} of its {} events are in the log",
            found.len()
        ));
    }
    let events: Vec<&EventRef> = found.into_iter().flatten().collect();
    let streams = parts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.stream.as_str(), p.ids.len()));
    for (i, (event, stream)) in events.iter().zip(streams).enumerate() {
        if event.stream != stream {
            return Err(format!("{} should be in {stream}", At(event)));
        }
        if i > 0 && events[i - 1].position + 1 != event.position {
            return Err(format!(
                "{} does not directly follow {}",
                At(event),
                At(events[i - 1])
            ));
        }
    }
    Ok(Some(events[0].position))
}

/// Rule 1: a run that committed nothing (or left no log) proves nothing, so it fails.
fn check_committed(history: &[Record], has_node_log: bool, sink: &mut Sink) {
    let acknowledged = history.iter().any(|record| {
        matches!(
            record,
            Record::Append {
                outcome: AppendOutcome::Ok { .. },
                ..
            }
        )
    });
    if !acknowledged {
        sink.push(Rule::NothingCommitted, || {
            "no append was acknowledged".to_string()
        });
    }
    if !has_node_log {
        sink.push(Rule::NothingCommitted, || {
            "the history has no node log".to_string()
        });
    }
}

/// Rule 2: after heal and convergence every node holds the reference log.
fn check_convergence(reference: (u64, &[EventRef]), logs: &[(u64, &[EventRef])], sink: &mut Sink) {
    let (reference_node, reference_log) = reference;
    for &(node, events) in logs {
        match events.iter().zip(reference_log).position(|(a, b)| a != b) {
            Some(index) => sink.push(Rule::DivergentLogs, || {
                format!(
                    "node {node} differs from node {reference_node} at index {index}: {} vs {}",
                    At(&events[index]),
                    At(&reference_log[index])
                )
            }),
            None if events.len() < reference_log.len() => sink.push(Rule::NotConverged, || {
                format!(
                    "node {node} has {} events, a strict prefix of node {reference_node}'s {}",
                    events.len(),
                    reference_log.len()
                )
            }),
            None => {}
        }
    }
}

/// Rule 3: the reference log itself is well formed. Each check resynchronises after a
/// violation so one bad event gives one violation, not one per event after it.
fn check_log_shape(log: &Log, sink: &mut Sink) {
    let mut next_revision: HashMap<&str, u64> = HashMap::new();
    let mut first_at: HashMap<Uuid, u64> = HashMap::with_capacity(log.events.len());
    let mut previous: Option<&EventRef> = None;
    for event in log.events {
        if let Some(previous) = previous {
            if previous.position.checked_add(1) != Some(event.position) {
                sink.push(Rule::PositionOrder, || {
                    format!("{} follows position {}", At(event), previous.position)
                });
            }
        }
        previous = Some(event);

        let next = next_revision.entry(&event.stream).or_insert(0);
        if event.revision != *next {
            let expected = *next;
            sink.push(Rule::RevisionGap, || {
                format!("{} should have revision {expected}", At(event))
            });
        }
        *next = event.revision.saturating_add(1);

        if let Some(&first) = first_at.get(&event.id) {
            sink.push(Rule::DuplicateEventId, || {
                format!("{} already at position {first}", At(event))
            });
        } else {
            first_at.insert(event.id, event.position);
        }
    }
}

/// Rules 4–7: acknowledgements and refusals against the log.
fn check_appends(history: &[Record], log: &Log, has_log: bool, sink: &mut Sink) {
    // Id lists that may legitimately be in the log: acknowledged or possibly written.
    let mut maybe_written: HashSet<&[Uuid]> = HashSet::new();
    // (stream, expectation) -> the first id list that succeeded on it, and its op.
    let mut winners: HashMap<(&str, Expected), (&[Uuid], u64)> = HashMap::new();

    for record in history {
        let Record::Append {
            op,
            stream,
            expected,
            ids,
            digests,
            outcome,
            ..
        } = record
        else {
            continue;
        };
        let op = *op;
        let (last_revision, last_position) = match outcome {
            AppendOutcome::Ok {
                last_revision,
                last_position,
            } => (*last_revision, *last_position),
            AppendOutcome::Unknown { .. } => {
                maybe_written.insert(ids.as_slice());
                continue;
            }
            _ => continue,
        };
        maybe_written.insert(ids.as_slice());
        if has_log && !ids.is_empty() {
            if let Some(detail) = misplaced(log, op, stream, ids, last_revision, last_position) {
                sink.push(Rule::AcknowledgedLost, || detail);
            }
            if let Some(detail) = other_content(log, op, ids, digests) {
                sink.push(Rule::ReusedIdAcknowledged, || detail);
            }
        }
        check_expected(log, op, stream, *expected, ids, last_revision, sink);

        if matches!(expected, Expected::Exact(_) | Expected::NoStream) {
            match winners.get(&(stream.as_str(), *expected)) {
                Some(&(winner, winner_op)) if winner != ids.as_slice() => {
                    sink.push(Rule::ConflictingSuccess, || {
                        format!(
                            "stream {stream} expecting {expected:?}: op {winner_op} ({}) and \
                             op {op} ({}) both succeeded",
                            first_id(winner),
                            first_id(ids)
                        )
                    })
                }
                Some(_) => {} // a re-send of the same append
                None => {
                    winners.insert((stream.as_str(), *expected), (ids.as_slice(), op));
                }
            }
        }
    }

    if !has_log {
        return;
    }
    for record in history {
        let Record::Append {
            op,
            stream,
            ids,
            outcome,
            ..
        } = record
        else {
            continue;
        };
        let what = match outcome {
            AppendOutcome::WrongExpectedVersion { .. } => "wrong_expected_version",
            // Refused as an idempotency conflict: the ids clash with a write that exists.
            AppendOutcome::Rejected { reason }
                if reason.to_ascii_lowercase().contains("idempotency") =>
            {
                continue
            }
            AppendOutcome::Rejected { .. } => "rejected",
            AppendOutcome::Ok { .. } | AppendOutcome::Unknown { .. } => continue,
        };
        // A re-send of an append that was (or may have been) written can be refused once the
        // server has forgotten the ids; then those ids are visible because of the other send.
        if maybe_written.contains(ids.as_slice()) {
            continue;
        }
        if let Some(event) = ids.iter().find_map(|id| log.get(id)) {
            sink.push(Rule::FailedVisible, || {
                format!(
                    "op {op} to {stream} ended {what}, yet {} is in the log",
                    At(event)
                )
            });
        }
    }
}

/// Why an acknowledged append's events are not the ones stored under its ids, if they are not.
/// Judged only where both sides carry a content digest.
fn other_content(log: &Log, op: u64, ids: &[Uuid], digests: &[u64]) -> Option<String> {
    ids.iter().zip(digests).find_map(|(id, &sent)| {
        let event = log.get(id)?;
        let stored = event.digest?;
        (stored != sent).then(|| {
            format!(
                "op {op} was acknowledged, but {} holds other content (digest {stored:016x}, \
                 the append sent {sent:016x}): an id reused for another event was taken for \
                 a retry",
                At(event)
            )
        })
    })
}

fn first_id(ids: &[Uuid]) -> String {
    match ids {
        [] => "no events".to_string(),
        [id] => id.to_string(),
        [id, ..] => format!("{id} and {} more", ids.len() - 1),
    }
}

/// Rule 4: why an acknowledged append is not where its ack says, if it is not.
fn misplaced(
    log: &Log,
    op: u64,
    stream: &str,
    ids: &[Uuid],
    last_revision: u64,
    last_position: u64,
) -> Option<String> {
    let mut previous: Option<&EventRef> = None;
    for (index, id) in ids.iter().enumerate() {
        let Some(event) = log.get(id) else {
            return Some(format!(
                "op {op} to {stream}: event {} of {} ({id}) is not in the log",
                index + 1,
                ids.len()
            ));
        };
        if event.stream != stream {
            return Some(format!(
                "op {op} to {stream}: {} is in another stream",
                At(event)
            ));
        }
        if let Some(previous) = previous {
            if previous.revision.checked_add(1) != Some(event.revision) {
                return Some(format!(
                    "op {op} to {stream}: {} does not directly follow {}",
                    At(event),
                    At(previous)
                ));
            }
        }
        previous = Some(event);
    }
    let last = previous?;
    (last.revision != last_revision || last.position != last_position).then(|| {
        format!(
            "op {op} acknowledged at {stream}/{last_revision} @{last_position}, \
             but the log has {}",
            At(last)
        )
    })
}

/// Rule 5: the first event sits where the expectation put it. Judged on the log when the first
/// event is there (in the right stream), else on the revision the ack implies.
fn check_expected(
    log: &Log,
    op: u64,
    stream: &str,
    expected: Expected,
    ids: &[Uuid],
    last_revision: u64,
    sink: &mut Sink,
) {
    let Some(first) = ids.first() else { return };
    let (first_revision, source) = match log.get(first) {
        Some(event) if event.stream == stream => (Some(event.revision), "in the log"),
        _ => (
            last_revision
                .checked_add(1)
                .and_then(|next| next.checked_sub(ids.len() as u64)),
            "per its ack",
        ),
    };
    let fits = match (expected, first_revision) {
        (Expected::Any, _) => true,
        (_, None) => false,
        (Expected::Exact(r), Some(first)) => r.checked_add(1) == Some(first),
        (Expected::NoStream, Some(first)) => first == 0,
        (Expected::StreamExists, Some(first)) => first >= 1,
    };
    if !fits {
        sink.push(Rule::WrongRevision, || {
            let at = first_revision.map_or("an impossible revision".to_string(), |r| {
                format!("revision {r}")
            });
            format!(
                "op {op} to {stream} expecting {expected:?} has its first event at {at} ({source})"
            )
        });
    }
}

/// Acknowledged appends sorted by end time, with the running maximum of their last position:
/// "the furthest append acknowledged before t" is then one binary search.
#[derive(Default)]
struct AckedBefore {
    /// (end_ms, max last_position up to here, op of that max).
    entries: Vec<(u64, u64, u64)>,
}

impl AckedBefore {
    fn add(&mut self, end_ms: u64, last_position: u64, op: u64) {
        self.entries.push((end_ms, last_position, op));
    }

    fn seal(&mut self) {
        self.entries.sort_unstable();
        let mut best: Option<(u64, u64)> = None;
        for entry in &mut self.entries {
            if best.is_none_or(|(position, _)| entry.1 > position) {
                best = Some((entry.1, entry.2));
            }
            (entry.1, entry.2) = best.expect("set above");
        }
    }

    /// (last_position, op) of the furthest append that ended strictly before `ms`.
    fn before(&self, ms: u64) -> Option<(u64, u64)> {
        let count = self.entries.partition_point(|entry| entry.0 < ms);
        count.checked_sub(1).map(|last| {
            let (_, position, op) = self.entries[last];
            (position, op)
        })
    }
}

/// Rule 8: every successful read is a prefix of its scope in the log, fresh enough for the
/// consistency it asked for.
fn check_reads(history: &[Record], log: &Log, sink: &mut Sink) {
    // Appends without events say nothing about what a read must see.
    let mut acked_all = AckedBefore::default();
    let mut acked_streams: HashMap<&str, AckedBefore> = HashMap::new();
    for record in history {
        if let Record::Append {
            op,
            end_ms,
            stream,
            ids,
            outcome: AppendOutcome::Ok { last_position, .. },
            ..
        } = record
        {
            if !ids.is_empty() {
                acked_all.add(*end_ms, *last_position, *op);
                acked_streams
                    .entry(stream)
                    .or_default()
                    .add(*end_ms, *last_position, *op);
            }
        }
    }
    acked_all.seal();
    acked_streams.values_mut().for_each(AckedBefore::seal);

    for record in history {
        let Record::Read {
            op,
            start_ms,
            stream,
            from_position,
            max_count,
            consistency,
            outcome: ReadOutcome::Ok { events },
            ..
        } = record
        else {
            continue;
        };
        let (op, from_position, max_count) = (*op, *from_position, *max_count);
        let (scope, name) = match stream {
            Some(stream) => (log.stream_from(stream, 0), format!("stream {stream}")),
            None => (
                log.all_from(from_position),
                format!("$all from {from_position}"),
            ),
        };
        let returned = events.len() as u64;
        if returned > max_count {
            sink.push(Rule::StaleRead, || {
                format!("op {op} ({name}): returned {returned} events, max_count {max_count}")
            });
            continue;
        }
        if let Some(index) = first_mismatch(events, scope) {
            sink.push(Rule::StaleRead, || {
                format!(
                    "op {op} ({name}): {}",
                    describe_mismatch(events, index, scope, log)
                )
            });
            continue;
        }
        if returned == max_count {
            continue; // cut by its count: it makes no claim about what comes after
        }
        let seen = events.last().map(|e| e.position);
        match *consistency {
            Consistency::Local => {}
            Consistency::Linearizable => {
                let required = match stream {
                    Some(stream) => acked_streams
                        .get(stream.as_str())
                        .and_then(|a| a.before(*start_ms)),
                    None => acked_all
                        .before(*start_ms)
                        .filter(|&(position, _)| position >= from_position),
                };
                if let Some((position, append)) = required {
                    if seen.is_none_or(|seen| seen < position) {
                        sink.push(Rule::StaleRead, || {
                            format!(
                                "op {op} (linearizable, {name}, began at {start_ms}ms) saw up \
                                 to position {}, but op {append}, acknowledged before it began, \
                                 ends at {position}",
                                seen.map_or("none".to_string(), |p| p.to_string())
                            )
                        });
                    }
                }
            }
            Consistency::LocalMinPosition(min) => {
                let required = scope.partition_point(|e| e.position <= min);
                if events.len() < required {
                    sink.push(Rule::StaleRead, || {
                        format!(
                            "op {op} (local_min_position {min}, {name}) returned {} events, but \
                             the log has {required} in scope at or below position {min}",
                            events.len()
                        )
                    });
                }
            }
        }
    }
}

/// Rule 9: each subscription delivered a prefix of its scope: no gap, duplicate, reordering
/// or invented event.
fn check_subscriptions(history: &[Record], log: &Log, sink: &mut Sink) {
    for record in history {
        let Record::Subscription {
            sub,
            client,
            stream,
            from,
            events,
            ..
        } = record
        else {
            continue;
        };
        let (scope, name) = match stream {
            Some(stream) => (log.stream_from(stream, *from), format!("stream {stream}")),
            None => (log.all_from(*from), "$all".to_string()),
        };
        if let Some(index) = first_mismatch(events, scope) {
            sink.push(Rule::SubscriptionGap, || {
                format!(
                    "sub {sub} (client {client}, {name} from {from}): {}",
                    describe_mismatch(events, index, scope, log)
                )
            });
        }
    }
}

/// An index's events in the scope given, in order: `$all` filtered by it.
fn filtered<'a>(index: &str, scope: &[&'a EventRef]) -> Vec<&'a EventRef> {
    scope
        .iter()
        .copied()
        .filter(|e| in_index(index, e) == Some(true))
        .collect()
}

/// Rule 16, on clients: an index read returned a prefix of the reference log filtered by the
/// index from its position (no gap, nothing foreign), no more than asked, and, at a minimum
/// position, everything of the index at or below it.
fn check_index_reads(history: &[Record], log: &Log, sink: &mut Sink) {
    for record in history {
        let Record::IndexRead {
            op,
            index,
            from_position,
            max_count,
            consistency,
            outcome: ReadOutcome::Ok { events },
            ..
        } = record
        else {
            continue;
        };
        let name = format!("{index} from {from_position}");
        if in_index(index, &EventRef::default()).is_none() {
            sink.push(Rule::IndexMismatch, || {
                format!("op {op}: {index} names no index")
            });
            continue;
        }
        let scope = filtered(index, log.all_from(*from_position));
        if events.len() as u64 > *max_count {
            sink.push(Rule::IndexMismatch, || {
                format!(
                    "op {op} ({name}): {} events, max_count {max_count}",
                    events.len()
                )
            });
            continue;
        }
        if let Some(at) = first_mismatch(events, &scope) {
            sink.push(Rule::IndexMismatch, || {
                format!(
                    "op {op} ({name}): {}",
                    describe_mismatch(events, at, &scope, log)
                )
            });
            continue;
        }
        if let Consistency::LocalMinPosition(min) = *consistency {
            let required = scope.partition_point(|e| e.position <= min);
            if (events.len() as u64) < *max_count && events.len() < required {
                sink.push(Rule::IndexMismatch, || {
                    format!(
                        "op {op} (local_min_position {min}, {name}) returned {} events, but the \
                         log has {required} in the index at or below position {min}",
                        events.len()
                    )
                });
            }
        }
    }
}

/// Rule 16, on nodes: each node's whole index after the run is exactly its own log filtered.
fn check_node_indexes(history: &[Record], node_logs: &[(u64, &[EventRef])], sink: &mut Sink) {
    for record in history {
        let Record::NodeIndex {
            node,
            index,
            events,
        } = record
        else {
            continue;
        };
        let Some((_, own)) = node_logs.iter().find(|(n, _)| n == node) else {
            continue;
        };
        let own_log = Log::new(own);
        let scope = filtered(index, &own_log.all);
        let at = first_mismatch(events, &scope)
            .or_else(|| (events.len() < scope.len()).then_some(events.len()));
        if let Some(at) = at {
            sink.push(Rule::IndexMismatch, || {
                let got = events
                    .get(at)
                    .map_or("nothing".to_string(), |e| At(e).to_string());
                let wanted = scope
                    .get(at)
                    .map_or("nothing".to_string(), |e| At(e).to_string());
                format!(
                    "node {node}: {index} has {} events, its log filtered {}; event {at} is \
                     {got}, the log has {wanted}",
                    events.len(),
                    scope.len()
                )
            });
        }
    }
}

/// Where `got` stops being a prefix of `scope`, if it does.
fn first_mismatch(got: &[EventRef], scope: &[&EventRef]) -> Option<usize> {
    got.iter()
        .enumerate()
        .position(|(index, event)| scope.get(index).copied() != Some(event))
}

/// Says what went wrong at `got[index]` (only called for kept violations: it scans).
fn describe_mismatch(got: &[EventRef], index: usize, scope: &[&EventRef], log: &Log) -> String {
    let event = &got[index];
    let wanted = scope
        .get(index)
        .map_or("the end of the log".to_string(), |e| At(e).to_string());
    let what = if got[..index].iter().any(|e| e.id == event.id) {
        "a duplicate"
    } else if scope.get(index).is_some_and(|e| e.id == event.id) {
        "misreported"
    } else {
        match scope.iter().position(|e| e.id == event.id) {
            Some(at) if at > index => "a gap",
            Some(_) => "out of order",
            None if log.get(&event.id).is_some() => "out of scope",
            None => "not in the log",
        }
    };
    format!(
        "event {index} is {}, {what}; the log has {wanted}",
        At(event)
    )
}

/// Rule 10: once every fault is lifted the cluster must accept writes again.
fn check_heal(history: &[Record], sink: &mut Sink) {
    let Some(healed) = history
        .iter()
        .filter_map(|record| match record {
            Record::Healed { at_ms } => Some(*at_ms),
            _ => None,
        })
        .max()
    else {
        return;
    };
    let written = history.iter().any(|record| {
        matches!(
            record,
            Record::Append {
                start_ms,
                outcome: AppendOutcome::Ok { .. },
                ..
            } if *start_ms >= healed
        )
    });
    if !written {
        sink.push(Rule::NoWriteAfterHeal, || {
            format!("healed at {healed}ms, but no append begun since was acknowledged")
        });
    }
}

/// How long after the (last) heal the first append begun since was acknowledged.
fn heal_to_write_ms(history: &[Record]) -> Option<u64> {
    let healed = history
        .iter()
        .filter_map(|record| match record {
            Record::Healed { at_ms } => Some(*at_ms),
            _ => None,
        })
        .max()?;
    history
        .iter()
        .filter_map(|record| match record {
            Record::Append {
                start_ms,
                end_ms,
                outcome: AppendOutcome::Ok { .. },
                ..
            } if *start_ms >= healed => Some(end_ms - healed),
            _ => None,
        })
        .min()
}

/// Rule 12: node code never panics, whatever the faults.
fn check_panics(history: &[Record], sink: &mut Sink) {
    for record in history {
        if let Record::Panic { at_ms, message } = record {
            sink.push(Rule::NodePanicked, || format!("at {at_ms}ms: {message}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::history::{read_jsonl, write_jsonl};

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn ev(n: u128, stream: &str, revision: u64, position: u64) -> EventRef {
        EventRef {
            event_type: None,
            tags: Vec::new(),
            id: id(n),
            stream: stream.to_string(),
            revision,
            position,
            digest: None,
        }
    }

    fn ok(last_revision: u64, last_position: u64) -> AppendOutcome {
        AppendOutcome::Ok {
            last_revision,
            last_position,
        }
    }

    /// An append of events `ids` (as numbers) that ran from `start_ms` to `end_ms`.
    fn append(
        op: u64,
        (start_ms, end_ms): (u64, u64),
        stream: &str,
        expected: Expected,
        ids: &[u128],
        outcome: AppendOutcome,
    ) -> Record {
        Record::Append {
            op,
            client: 0,
            start_ms,
            end_ms,
            stream: stream.to_string(),
            expected,
            ids: ids.iter().map(|&n| id(n)).collect(),
            digests: Vec::new(),
            outcome,
        }
    }

    fn read(
        op: u64,
        start_ms: u64,
        stream: Option<&str>,
        from_position: u64,
        max_count: u64,
        consistency: Consistency,
        events: Vec<EventRef>,
    ) -> Record {
        Record::Read {
            op,
            client: 1,
            start_ms,
            end_ms: start_ms + 5,
            stream: stream.map(str::to_string),
            from_position,
            max_count,
            consistency,
            outcome: ReadOutcome::Ok { events },
        }
    }

    fn subscription(sub: u32, stream: Option<&str>, from: u64, events: Vec<EventRef>) -> Record {
        Record::Subscription {
            sub,
            client: 2,
            stream: stream.map(str::to_string),
            from,
            events,
            caught_up: 1,
        }
    }

    /// The log every node holds in [`clean`].
    fn clean_log() -> Vec<EventRef> {
        vec![
            ev(1, "a", 0, 0),
            ev(2, "a", 1, 1),
            ev(3, "b", 0, 2),
            ev(4, "a", 2, 3),
            ev(6, "b", 1, 4),
            ev(7, "b", 2, 5),
        ]
    }

    fn node_logs(log: &[EventRef]) -> Vec<Record> {
        (1..=3)
            .map(|node| Record::NodeLog {
                node,
                events: log.to_vec(),
            })
            .collect()
    }

    /// A small run that keeps every promise, exercising each exception the rules allow.
    fn clean() -> Vec<Record> {
        use Consistency::*;
        use Expected::*;
        let mut history = vec![
            Record::Run {
                seed: 7,
                nodes: 3,
                clients: 2,
            },
            append(1, (0, 10), "a", NoStream, &[1, 2], ok(1, 1)),
            append(2, (5, 15), "b", Any, &[3], ok(0, 2)),
            Record::Fault {
                at_ms: 18,
                fault: "partition 1".into(),
            },
            append(3, (20, 30), "a", Exact(1), &[4], ok(2, 3)),
            // Lost the race with op 3: not written.
            append(
                4,
                (31, 35),
                "a",
                Exact(1),
                &[5],
                AppendOutcome::WrongExpectedVersion { actual: Some(2) },
            ),
            // Timed out but was written.
            append(
                5,
                (40, 50),
                "b",
                StreamExists,
                &[6],
                AppendOutcome::Unknown {
                    error: "timeout".into(),
                },
            ),
            // A re-send of op 3: the same place, not a conflict.
            append(6, (52, 55), "a", Exact(1), &[4], ok(2, 3)),
            // A re-send of op 5 refused once the id was forgotten: 6 may be visible.
            append(
                8,
                (56, 57),
                "b",
                StreamExists,
                &[6],
                AppendOutcome::WrongExpectedVersion { actual: Some(2) },
            ),
            // Its ids clash with op 1: refused, but 1 is visible because of op 1.
            append(
                9,
                (57, 58),
                "c",
                Any,
                &[1],
                AppendOutcome::Rejected {
                    reason: "idempotency conflict".into(),
                },
            ),
            Record::Fault {
                at_ms: 59,
                fault: "heal partition 1".into(),
            },
            Record::Healed { at_ms: 60 },
            append(7, (61, 70), "b", Exact(1), &[7], ok(2, 5)),
            read(
                10,
                40,
                Some("a"),
                0,
                10,
                Linearizable,
                vec![ev(1, "a", 0, 0), ev(2, "a", 1, 1), ev(4, "a", 2, 3)],
            ),
            // Cut by its count.
            read(
                11,
                45,
                None,
                2,
                2,
                Local,
                vec![ev(3, "b", 0, 2), ev(4, "a", 2, 3)],
            ),
            // Stale, but Local promises no freshness.
            read(12, 16, Some("b"), 0, 10, Local, vec![]),
            read(
                13,
                41,
                None,
                0,
                100,
                LocalMinPosition(3),
                clean_log()[..4].to_vec(),
            ),
            Record::Read {
                op: 14,
                client: 1,
                start_ms: 19,
                end_ms: 29,
                stream: None,
                from_position: 0,
                max_count: 10,
                consistency: Linearizable,
                outcome: ReadOutcome::Failed {
                    error: "no leader".into(),
                },
            },
            subscription(
                1,
                None,
                2,
                vec![ev(3, "b", 0, 2), ev(4, "a", 2, 3), ev(6, "b", 1, 4)],
            ),
            subscription(2, Some("b"), 1, vec![ev(6, "b", 1, 4), ev(7, "b", 2, 5)]),
        ];
        history.extend(node_logs(&clean_log()));
        history
    }

    /// The set of rules a history breaks.
    fn rules(history: &[Record]) -> BTreeSet<Rule> {
        check(history).violations.iter().map(|v| v.rule).collect()
    }

    fn only(rule: Rule) -> BTreeSet<Rule> {
        BTreeSet::from([rule])
    }

    /// Replaces every node's log with `log`.
    fn with_log(mut history: Vec<Record>, log: &[EventRef]) -> Vec<Record> {
        history.retain(|r| !matches!(r, Record::NodeLog { .. }));
        history.extend(node_logs(log));
        history
    }

    /// The record of `op` (an append or a read).
    fn op_mut(history: &mut [Record], wanted: u64) -> &mut Record {
        history
            .iter_mut()
            .find(|r| matches!(r, Record::Append { op, .. } | Record::Read { op, .. } if *op == wanted))
            .expect("no such op")
    }

    fn set_read_events(history: &mut [Record], wanted: u64, new: Vec<EventRef>) {
        match op_mut(history, wanted) {
            Record::Read {
                outcome: ReadOutcome::Ok { events },
                ..
            } => *events = new,
            other => panic!("not a successful read: {other:?}"),
        }
    }

    fn set_sub_events(history: &mut [Record], wanted: u32, new: Vec<EventRef>) {
        for record in history {
            if let Record::Subscription { sub, events, .. } = record {
                if *sub == wanted {
                    *events = new;
                    return;
                }
            }
        }
        panic!("no such subscription");
    }

    #[test]
    fn clean_history_passes_with_right_stats() {
        let report = check(&clean());
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            report.stats,
            Stats {
                appends: 9,
                acknowledged: 5,
                unknown: 1,
                definite_failures: 3,
                reads: 5,
                subscriptions: 2,
                delivered: 5,
                faults: 2,
                events_committed: 6,
                heal_to_write_ms: Some(10),
            }
        );
    }

    /// Gives every event in the logs and reads of `history` the digest `digest(id)`, and every
    /// append the digests of its ids.
    fn with_digests(mut history: Vec<Record>, digest: impl Fn(Uuid) -> u64) -> Vec<Record> {
        let mark = |events: &mut Vec<EventRef>| {
            for event in events {
                event.digest = Some(digest(event.id));
            }
        };
        for record in &mut history {
            match record {
                Record::Append { ids, digests, .. } => {
                    *digests = ids.iter().map(|id| digest(*id)).collect()
                }
                Record::NodeLog { events, .. } | Record::Subscription { events, .. } => {
                    mark(events)
                }
                Record::Read {
                    outcome: ReadOutcome::Ok { events },
                    ..
                } => mark(events),
                _ => {}
            }
        }
        history
    }

    #[test]
    fn an_id_reused_with_other_content_must_not_be_acknowledged() {
        let digest = |id: Uuid| id.as_u128() as u64 * 31;
        let history = with_digests(clean(), digest);
        assert!(check(&history).is_ok(), "{}", check(&history));
        // Op 1's ids again with other content for its second event: refused, fine.
        let reused = |outcome| {
            let mut record = append(30, (90, 95), "a", Expected::Any, &[1, 2], outcome);
            if let Record::Append { digests, .. } = &mut record {
                *digests = vec![digest(id(1)), 7];
            }
            record
        };
        let mut refused = history.clone();
        refused.push(reused(AppendOutcome::Rejected {
            reason: "idempotency conflict: event id ... is already stored with other content"
                .into(),
        }));
        assert!(check(&refused).is_ok(), "{}", check(&refused));
        // Acknowledged as a retry: the bug.
        let mut taken = history;
        taken.push(reused(ok(1, 1)));
        let report = check(&taken);
        assert_eq!(rules(&taken), only(Rule::ReusedIdAcknowledged));
        assert!(report.violations[0].detail.contains("op 30"), "{report}");
    }

    #[test]
    fn empty_history_committed_nothing() {
        assert_eq!(rules(&[]), only(Rule::NothingCommitted));
        assert_eq!(check(&[]).violations.len(), 2, "no ack and no node log");
    }

    #[test]
    fn lost_ack() {
        let mut history = clean();
        history.push(append(20, (80, 90), "c", Expected::Any, &[99], ok(0, 6)));
        let report = check(&history);
        assert_eq!(rules(&history), only(Rule::AcknowledgedLost));
        assert!(report.violations[0].detail.contains("op 20"), "{report}");
    }

    #[test]
    fn ack_at_the_wrong_place() {
        let mut history = clean();
        if let Record::Append { outcome, .. } = op_mut(&mut history, 6) {
            *outcome = ok(2, 4);
        }
        assert_eq!(rules(&history), only(Rule::AcknowledgedLost));
    }

    #[test]
    fn ack_not_contiguous() {
        // Op 1's events with another stream's event between their revisions.
        let mut log = clean_log();
        log.truncate(2);
        log[1] = ev(2, "a", 2, 1);
        log.insert(1, ev(9, "a", 1, 1));
        log[2].position = 2;
        let history = vec![
            append(1, (0, 10), "a", Expected::Any, &[1, 2], ok(2, 2)),
            Record::NodeLog {
                node: 1,
                events: log,
            },
        ];
        assert_eq!(rules(&history), only(Rule::AcknowledgedLost));
    }

    #[test]
    fn duplicate_id_in_log() {
        let mut log = clean_log();
        log.push(ev(1, "a", 3, 6));
        assert_eq!(
            rules(&with_log(clean(), &log)),
            only(Rule::DuplicateEventId)
        );
    }

    #[test]
    fn revision_gap() {
        let mut log = clean_log();
        log.push(ev(8, "b", 4, 6));
        assert_eq!(rules(&with_log(clean(), &log)), only(Rule::RevisionGap));
    }

    #[test]
    fn position_gap() {
        let mut log = clean_log();
        log.push(ev(8, "b", 3, 7));
        assert_eq!(rules(&with_log(clean(), &log)), only(Rule::PositionOrder));
    }

    #[test]
    fn divergent_node_logs() {
        let mut history = clean();
        let mut other = clean_log();
        other[5] = ev(8, "b", 2, 5);
        history.push(Record::NodeLog {
            node: 4,
            events: other,
        });
        let report = check(&history);
        assert_eq!(rules(&history), only(Rule::DivergentLogs));
        assert!(report.violations[0]
            .detail
            .starts_with("node 4 differs from node 1 at index 5"));
    }

    #[test]
    fn lagging_node_not_converged() {
        let mut history = clean();
        history.push(Record::NodeLog {
            node: 4,
            events: clean_log()[..3].to_vec(),
        });
        assert_eq!(rules(&history), only(Rule::NotConverged));
    }

    #[test]
    fn two_successes_for_the_same_exact_revision() {
        // Both claim to be the event after a/1; only one of them can be in the log there.
        let mut history = clean();
        history.push(append(
            20,
            (80, 90),
            "a",
            Expected::Exact(1),
            &[8],
            ok(2, 3),
        ));
        assert_eq!(
            rules(&history),
            BTreeSet::from([Rule::AcknowledgedLost, Rule::ConflictingSuccess])
        );
    }

    #[test]
    fn two_successes_for_no_stream() {
        let mut history = clean();
        history.push(append(
            20,
            (80, 90),
            "a",
            Expected::NoStream,
            &[8],
            ok(0, 6),
        ));
        assert!(rules(&history).contains(&Rule::ConflictingSuccess));
    }

    #[test]
    fn wrong_revision_for_exact() {
        let mut history = clean();
        if let Record::Append { expected, .. } = op_mut(&mut history, 3) {
            *expected = Expected::Exact(0);
        }
        assert_eq!(rules(&history), only(Rule::WrongRevision));
    }

    #[test]
    fn wrong_revision_for_stream_exists() {
        let mut history = clean();
        if let Record::Append { expected, .. } = op_mut(&mut history, 2) {
            *expected = Expected::StreamExists;
        }
        assert_eq!(rules(&history), only(Rule::WrongRevision));
    }

    #[test]
    fn wrong_expected_version_yet_visible() {
        let mut log = clean_log();
        log.push(ev(5, "a", 3, 6));
        let history = with_log(clean(), &log);
        let report = check(&history);
        assert_eq!(rules(&history), only(Rule::FailedVisible));
        assert!(report.violations[0].detail.contains("op 4"), "{report}");
    }

    #[test]
    fn rejected_yet_visible() {
        let mut log = clean_log();
        log.push(ev(5, "a", 3, 6));
        let mut history = with_log(clean(), &log);
        if let Record::Append { outcome, .. } = op_mut(&mut history, 4) {
            *outcome = AppendOutcome::Rejected {
                reason: "event too large".into(),
            };
        }
        assert_eq!(rules(&history), only(Rule::FailedVisible));
    }

    #[test]
    fn stale_linearizable_read() {
        // Began at 40, after op 3 (a/2 @3) was acknowledged at 30, yet misses it.
        let mut history = clean();
        set_read_events(&mut history, 10, vec![ev(1, "a", 0, 0), ev(2, "a", 1, 1)]);
        let report = check(&history);
        assert_eq!(rules(&history), only(Rule::StaleRead));
        assert!(report.violations[0].detail.contains("op 3"), "{report}");
    }

    #[test]
    fn empty_linearizable_read_after_an_ack() {
        let mut history = clean();
        history.push(read(
            20,
            16,
            Some("b"),
            0,
            10,
            Consistency::Linearizable,
            vec![],
        ));
        assert_eq!(rules(&history), only(Rule::StaleRead));
    }

    #[test]
    fn linearizable_read_cut_by_its_count_is_fine() {
        let mut history = clean();
        history.push(read(
            20,
            100,
            None,
            0,
            1,
            Consistency::Linearizable,
            vec![ev(1, "a", 0, 0)],
        ));
        assert!(check(&history).is_ok());
    }

    #[test]
    fn stale_local_min_position_read() {
        let mut history = clean();
        set_read_events(&mut history, 13, clean_log()[..3].to_vec());
        assert_eq!(rules(&history), only(Rule::StaleRead));
    }

    #[test]
    fn stale_local_read_is_fine() {
        let mut history = clean();
        history.push(read(
            20,
            100,
            Some("a"),
            0,
            10,
            Consistency::Local,
            vec![ev(1, "a", 0, 0)],
        ));
        history.push(read(21, 100, None, 3, 10, Consistency::Local, vec![]));
        assert!(check(&history).is_ok());
    }

    #[test]
    fn read_with_a_hole_or_too_many_events() {
        let mut history = clean();
        set_read_events(&mut history, 10, vec![ev(1, "a", 0, 0), ev(4, "a", 2, 3)]);
        assert_eq!(rules(&history), only(Rule::StaleRead));

        let mut history = clean();
        set_read_events(&mut history, 11, clean_log()[2..5].to_vec());
        assert_eq!(rules(&history), only(Rule::StaleRead));
    }

    #[test]
    fn subscription_with_a_gap() {
        let mut history = clean();
        set_sub_events(&mut history, 1, vec![ev(3, "b", 0, 2), ev(6, "b", 1, 4)]);
        let report = check(&history);
        assert_eq!(rules(&history), only(Rule::SubscriptionGap));
        assert!(report.violations[0].detail.contains("a gap"), "{report}");
    }

    #[test]
    fn subscription_with_a_duplicate() {
        let mut history = clean();
        let events = vec![ev(6, "b", 1, 4), ev(6, "b", 1, 4), ev(7, "b", 2, 5)];
        set_sub_events(&mut history, 2, events);
        let report = check(&history);
        assert_eq!(rules(&history), only(Rule::SubscriptionGap));
        assert!(
            report.violations[0].detail.contains("a duplicate"),
            "{report}"
        );
    }

    #[test]
    fn subscription_with_an_invented_event() {
        let mut history = clean();
        set_sub_events(&mut history, 2, vec![ev(6, "b", 1, 4), ev(99, "b", 2, 5)]);
        let report = check(&history);
        assert_eq!(rules(&history), only(Rule::SubscriptionGap));
        assert!(
            report.violations[0].detail.contains("not in the log"),
            "{report}"
        );
    }

    #[test]
    fn healed_but_no_write_after() {
        let mut history = clean();
        for record in &mut history {
            if let Record::Healed { at_ms } = record {
                *at_ms = 100;
            }
        }
        assert_eq!(rules(&history), only(Rule::NoWriteAfterHeal));
    }

    #[test]
    fn violations_are_capped_per_rule() {
        let mut history = clean();
        for n in 0..50 {
            history.push(append(
                100 + n,
                (80, 90),
                "c",
                Expected::Any,
                &[1000 + n as u128],
                ok(0, 6),
            ));
        }
        let report = check(&history);
        assert_eq!(report.violations.len(), MAX_VIOLATIONS_PER_RULE + 1);
        let last = report.violations.last().unwrap();
        assert_eq!(last.to_string(), "acknowledged-lost: 30 more not shown");
    }

    #[test]
    fn violation_display() {
        let violation = Violation {
            rule: Rule::StaleRead,
            detail: "op 3".into(),
        };
        assert_eq!(violation.to_string(), "stale-read: op 3");
    }

    #[test]
    fn jsonl_round_trip_gives_the_same_report() {
        let mut history = clean();
        set_sub_events(&mut history, 1, vec![ev(3, "b", 0, 2), ev(6, "b", 1, 4)]);
        let mut bytes = Vec::new();
        write_jsonl(&history, &mut bytes).unwrap();
        let back = read_jsonl(bytes.as_slice()).unwrap();
        assert_eq!(back, history);
        let report = check(&back);
        assert!(!report.is_ok());
        assert_eq!(report, check(&history));
    }

    /// `clean()` with types and tags on its events (in the log and every node's log), and
    /// each node's `$tag-x` and `$ce-a` indexes as the store must return them.
    fn indexed() -> Vec<Record> {
        let tag = |e: &mut EventRef| {
            let n = e.id.as_u128();
            e.event_type = Some(format!("T{}", n % 2));
            if n % 3 != 0 {
                e.tags = vec!["x".into()];
            }
        };
        let mut history = clean();
        for record in &mut history {
            match record {
                Record::NodeLog { events, .. }
                | Record::Subscription { events, .. }
                | Record::Read {
                    outcome: ReadOutcome::Ok { events },
                    ..
                } => events.iter_mut().for_each(tag),
                _ => {}
            }
        }
        let mut log = clean_log();
        log.iter_mut().for_each(tag);
        for node in 1..=3 {
            for index in ["$tag-x", "$ce-a", "$et-T1"] {
                history.push(Record::NodeIndex {
                    node,
                    index: index.into(),
                    events: filtered(index, &log.iter().collect::<Vec<_>>())
                        .into_iter()
                        .cloned()
                        .collect(),
                });
            }
        }
        let tagged: Vec<EventRef> = log.iter().filter(|e| !e.tags.is_empty()).cloned().collect();
        history.push(Record::IndexRead {
            op: 90,
            client: 2,
            start_ms: 100,
            end_ms: 101,
            index: "$tag-x".into(),
            from_position: 1,
            max_count: 10,
            consistency: Consistency::Local,
            outcome: ReadOutcome::Ok {
                events: tagged.into_iter().filter(|e| e.position >= 1).collect(),
            },
        });
        history
    }

    #[test]
    fn index_reads_that_equal_all_filtered_pass() {
        assert!(check(&indexed()).is_ok(), "{}", check(&indexed()));
    }

    #[test]
    fn a_node_index_missing_an_event_or_a_client_index_read_with_a_gap_is_found() {
        let mut history = indexed();
        let node_index = history
            .iter_mut()
            .find_map(|r| match r {
                Record::NodeIndex {
                    node: 2,
                    index,
                    events,
                } if index == "$tag-x" => Some(events),
                _ => None,
            })
            .expect("node 2's $tag-x");
        node_index.remove(1);
        assert_eq!(rules(&history), only(Rule::IndexMismatch));

        let mut history = indexed();
        if let Some(Record::IndexRead {
            outcome: ReadOutcome::Ok { events },
            ..
        }) = history.last_mut()
        {
            events.remove(0);
        }
        assert_eq!(rules(&history), only(Rule::IndexMismatch));
    }

    fn seat(n: u128, revision: u64, position: u64) -> EventRef {
        EventRef {
            event_type: Some("Seat".into()),
            tags: vec!["seat:1".into()],
            ..ev(n, "$dcb", revision, position)
        }
    }

    fn multi(
        op: u64,
        parts: &[(&str, &[u128])],
        after: Option<u64>,
        outcome: MultiOutcome,
    ) -> Record {
        Record::MultiAppend {
            op,
            client: 0,
            start_ms: op * 10,
            end_ms: op * 10 + 5,
            parts: parts
                .iter()
                .map(|(stream, ids)| MultiPart {
                    stream: stream.to_string(),
                    expected: Expected::Any,
                    ids: ids.iter().map(|&n| id(n)).collect(),
                    digests: Vec::new(),
                })
                .collect(),
            condition: after.map(|after| ConditionRef {
                items: vec![crate::history::QueryItemRef {
                    types: vec!["Seat".into()],
                    tags: vec!["seat:1".into()],
                }],
                after: (after != u64::MAX).then_some(after),
            }),
            outcome,
        }
    }

    fn multi_ok(last_revisions: &[u64], last_position: u64) -> MultiOutcome {
        MultiOutcome::Ok {
            last_revisions: last_revisions.to_vec(),
            last_position,
        }
    }

    /// Two claims of one seat, both acknowledged: the second landed after the first matched
    /// its condition. Refused with the first's position instead, the history is clean.
    #[test]
    fn a_dcb_success_despite_a_matching_event_before_it_is_found() {
        let log = vec![seat(1, 0, 0), seat(2, 1, 1)];
        let both = with_log(
            vec![
                multi(1, &[("$dcb", &[1])], Some(u64::MAX), multi_ok(&[0], 0)),
                multi(2, &[("$dcb", &[2])], Some(u64::MAX), multi_ok(&[1], 1)),
            ],
            &log,
        );
        assert_eq!(rules(&both), only(Rule::DcbCondition));
        let one = with_log(
            vec![
                multi(1, &[("$dcb", &[1])], Some(u64::MAX), multi_ok(&[0], 0)),
                multi(
                    2,
                    &[("$dcb", &[2])],
                    Some(u64::MAX),
                    MultiOutcome::ConditionFailed { position: 0 },
                ),
            ],
            &log[..1],
        );
        assert_eq!(rules(&one), BTreeSet::new());
        // A refusal must name a matching position after `after`.
        let wrong = with_log(
            vec![
                multi(1, &[("$dcb", &[1])], Some(u64::MAX), multi_ok(&[0], 0)),
                multi(
                    2,
                    &[("$dcb", &[2])],
                    Some(0),
                    MultiOutcome::ConditionFailed { position: 0 },
                ),
            ],
            &log[..1],
        );
        assert_eq!(rules(&wrong), only(Rule::DcbCondition));
    }

    #[test]
    fn a_multi_stream_append_partly_in_the_log_is_found() {
        let log = vec![ev(1, "a", 0, 0), ev(2, "b", 0, 1), ev(3, "a", 1, 2)];
        let history = vec![
            multi(1, &[("a", &[1]), ("b", &[2])], None, multi_ok(&[0, 0], 1)),
            multi(
                2,
                &[("a", &[3]), ("b", &[4])],
                None,
                MultiOutcome::Unknown {
                    error: "timed out".into(),
                },
            ),
        ];
        assert_eq!(
            rules(&with_log(history.clone(), &log)),
            only(Rule::MultiNotAtomic)
        );
        assert_eq!(rules(&with_log(history, &log[..2])), BTreeSet::new());
    }
}
