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

use std::fmt;

use crate::history::{AppendOutcome, EventRef, MultiOutcome, Record};

mod agreement;
mod appends;
mod auth;
mod groups;
mod lifecycle;
mod log;
mod reads;
mod rule;
#[cfg(test)]
mod tests;

pub use rule::{Rule, Violation, MAX_VIOLATIONS_PER_RULE};

use agreement::{
    check_committed, check_convergence, check_heal, check_log_shape, check_panics, heal_to_write_ms,
};
use appends::{check_appends, check_multi_appends, with_multi_parts};
use auth::{check_auth, check_probes, hidden_positions};
use groups::{check_group_history, check_groups, group_history};
use lifecycle::{check_lifecycles, Lifecycles};
use log::Log;
use reads::{check_index_reads, check_node_indexes, check_reads, check_subscriptions};
use rule::Sink;

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
    /// Events consumer-group consumers received (redeliveries included).
    pub group_deliveries: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "appends {} (acknowledged {}, unknown {}, failed {}), reads {}, subscriptions {} \
             (delivered {}), group deliveries {}, faults {}, events committed {}",
            self.appends,
            self.acknowledged,
            self.unknown,
            self.definite_failures,
            self.reads,
            self.subscriptions,
            self.delivered,
            self.group_deliveries,
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
    // What the streams' lifecycles hide: the other rules judge the log without it.
    let lifecycles = Lifecycles::new(history);
    let removed = &lifecycles.removed;
    stats.heal_to_write_ms = heal_to_write_ms(history);

    check_committed(history, !node_logs.is_empty(), &mut sink);
    if let Some(reference) = reference {
        check_convergence(reference, &node_logs, &mut sink);
        check_log_shape(
            &log,
            &hidden_positions(history),
            removed,
            group_history(history),
            &mut sink,
        );
    }
    // Without any node log there is nothing to compare client observations with: only the
    // rules that need no log run then (NothingCommitted already says why).
    check_appends(history, &log, reference.is_some(), removed, &mut sink);
    if reference.is_some() {
        check_reads(history, &log, removed, &mut sink);
        check_subscriptions(history, &log, removed, &mut sink);
        check_index_reads(history, &log, &mut sink);
    }
    check_node_indexes(history, &node_logs, &mut sink);
    if reference.is_some() {
        check_multi_appends(history, &log, &mut sink);
    }
    check_groups(history, &log, removed, &mut sink);
    if let Some(events) = group_history(history) {
        check_group_history(&node_logs, events, &mut sink);
    }
    check_auth(history, &mut sink);
    check_probes(history, &mut sink);
    check_lifecycles(
        history,
        &lifecycles,
        &node_logs,
        reference.is_some().then_some(&log),
        &mut sink,
    );
    check_heal(history, &mut sink);
    check_panics(history, &mut sink);

    Report {
        violations: sink.finish(),
        stats,
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
            Record::GroupDelivery { .. } => stats.group_deliveries += 1,
            Record::Run { .. }
            | Record::GroupAck { .. }
            | Record::GroupCrash { .. }
            | Record::GroupCreate { .. }
            | Record::GroupLimit { .. }
            | Record::GroupHistory { .. }
            | Record::GroupChurn { .. }
            | Record::NodeGroup { .. }
            | Record::Healed { .. }
            | Record::NodeLog { .. }
            | Record::NodeIndex { .. }
            | Record::AuthChange { .. }
            | Record::AuthProbe { .. }
            | Record::NodeAuth { .. }
            | Record::Panic { .. }
            | Record::Lifecycle { .. } => {}
        }
    }
    stats
}
