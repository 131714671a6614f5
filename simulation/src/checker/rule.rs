//! The promises ([`Rule`]) and what records a broken one ([`Violation`], [`Sink`]).

use std::collections::BTreeMap;
use std::fmt;

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
    /// An ordered consumer group delivered a stream's event before the one before it was
    /// answered (acknowledged, parked or skipped): two of a stream in flight, or out of order.
    GroupOrder,
    /// A consumer group's committed checkpoint counts an event as done that no consumer
    /// answered and that is not parked: it will never be delivered.
    GroupLost,
    /// A committed point of a node's log holds more live consumer groups than the cluster's
    /// limit: a create past it was not refused.
    GroupLimit,
    /// A node's `$group-` stream does not show exactly its newest `Limits::group_history`
    /// events (a contiguous run ending at its head), or the positions `$all` misses are not
    /// exactly those of the group events it no longer shows.
    GroupHistory,
    /// A consumer group delivered an event its filter (the one its create asked for) does
    /// not pass: the filter was not stored, or not applied.
    GroupFilter,
    /// A consumer group's checkpoint forgot an event an earlier one had done: after a leader
    /// change it would be delivered again although acknowledged before its checkpoint.
    GroupCheckpointForgot,
    /// A node's users, tokens or grants are not the committed changes applied in order: a
    /// stored state other than its change makes (a grant on another prefix, a revoked token
    /// kept), a change stored that the state before must refuse, nodes holding different
    /// sequences, an acknowledged change missing or a refused one stored.
    AuthState,
    /// Right after an acknowledged token change, a node that had applied it judged the token
    /// otherwise: a revoked token let in, or a created one refused (its gate's cache of the
    /// security state not what it applied).
    AuthVerdict,
    /// An event a stream's lifecycle hides (retention, a soft delete, a tombstone, an erase)
    /// is in a node's log after the run, or was returned by a read whose committed state
    /// already hid it (issue 18).
    RemovedVisible,
    /// An acknowledged event of a managed stream that no lifecycle change hides is not in
    /// the log where its ack said: retention, a scavenge or a crash lost a live event.
    LiveLost,
    /// An append to a tombstoned (or erased) stream was acknowledged.
    TombstoneWritten,
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
            Rule::GroupOrder => "group-order",
            Rule::GroupLost => "group-lost",
            Rule::GroupCheckpointForgot => "group-checkpoint-forgot",
            Rule::GroupFilter => "group-filter",
            Rule::GroupLimit => "group-limit",
            Rule::GroupHistory => "group-history",
            Rule::AuthState => "auth-state",
            Rule::AuthVerdict => "auth-verdict",
            Rule::RemovedVisible => "removed-visible",
            Rule::LiveLost => "live-lost",
            Rule::TombstoneWritten => "tombstone-written",
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

/// Collects violations, keeping at most [`MAX_VIOLATIONS_PER_RULE`] per rule. Details are
/// built lazily so a run with 100k violations does not format 100k strings.
#[derive(Default)]
pub(super) struct Sink {
    kept: Vec<Violation>,
    found: BTreeMap<Rule, usize>,
}

impl Sink {
    pub(super) fn push(&mut self, rule: Rule, detail: impl FnOnce() -> String) {
        let found = self.found.entry(rule).or_default();
        *found += 1;
        if *found <= MAX_VIOLATIONS_PER_RULE {
            self.kept.push(Violation {
                rule,
                detail: detail(),
            });
        }
    }

    pub(super) fn finish(mut self) -> Vec<Violation> {
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
