//! Prometheus metrics of one node: counters kept as things happen (appends, subscriptions)
//! and gauges read from Raft and storage when `/metrics` is scraped.
//!
//! Each node's service context (`api::NodeContext`, made by `app::start`) holds one
//! [`NodeMetrics`], handed to the services that count
//! (`api/streams.rs` for appends and subscriptions) and to the HTTP endpoint (through `Node`):
//! one process runs one node in production, but the simulation runs several, and each keeps
//! its own numbers. The exposition format and the histogram come from the `prometheus` crate.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::proto;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::health::RaftStatus;

/// Upper bounds of the append latency histogram's buckets, in seconds: from one fdatasync on
/// an idle disk (~0.2 ms) to the append timeout (4 s).
pub const APPEND_LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `result` label of `cairn_appends_total`.
const RESULT_WRITTEN: &str = "written";
const RESULT_ALREADY_WRITTEN: &str = "already_written";
const RESULT_WRONG_EXPECTED_VERSION: &str = "wrong_expected_version";
/// A multi-stream or DCB append whose condition matched an event.
const RESULT_CONDITION_FAILED: &str = "condition_failed";
/// Refused because this node is not the leader and the caller asked for the leader only (what
/// the client library does: it then goes to the leader).
const RESULT_NOT_LEADER: &str = "not_leader";
const RESULT_ERROR: &str = "error";
/// The `side` label of `cairn_tls_handshake_failures_total`.
const TLS_SIDE_ACCEPTED: &str = "accepted";
const TLS_SIDE_OUTGOING: &str = "outgoing";

/// One node's metrics.
pub struct NodeMetrics {
    registry: Registry,
    appends: IntCounterVec,
    appended_events: IntCounter,
    append_seconds: Histogram,
    subscriptions: IntGauge,
    term: IntGauge,
    leader_id: IntGauge,
    is_leader: IntGauge,
    last_log_index: IntGauge,
    committed_index: IntGauge,
    applied_index: IntGauge,
    snapshot_index: IntGauge,
    purged_index: IntGauge,
    replication_lag: IntGaugeVec,
    ready: IntGauge,
    events: IntGauge,
    storage_bytes: IntGauge,
    reclaimed_bytes: IntCounter,
    reclaimed_groups: IntCounter,
    dead_bytes: IntGauge,
    dead_groups: IntGauge,
    corruption_detected: IntCounterVec,
    repairs: IntCounter,
    repairing: IntGauge,
    tls_handshake_failures: IntCounterVec,
    groups: GroupGauges,
}

/// Per consumer group, on the leader (where its dispatcher runs), labelled `group`.
struct GroupGauges {
    lag: IntGaugeVec,
    in_flight: IntGaugeVec,
    parked: IntGaugeVec,
    consumers: IntGaugeVec,
    redeliveries: IntCounterVec,
}

/// A consumer group's figures as its dispatcher last measured them.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupFigures {
    pub lag: u64,
    pub in_flight: u64,
    pub parked: u64,
    pub consumers: u64,
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `file` label of `cairn_corruption_detected_total`: the kinds of file a node checks.
pub const CORRUPTION_FILES: &[&str] = &["raft-log", "event-groups", "snapshot"];

/// What a scrape reads besides Raft: the store's event count and size, if they could be read.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreFigures {
    pub events: Option<u64>,
    pub bytes: Option<u64>,
}

/// Keeps `cairn_subscriptions` up while a subscription runs.
pub struct ActiveSubscription(Arc<NodeMetrics>);

impl Drop for ActiveSubscription {
    fn drop(&mut self) {
        self.0.subscriptions.dec();
    }
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("a valid metric name");
    registry
        .register(Box::new(gauge.clone()))
        .expect("each metric is registered once");
    gauge
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    // The names and options below are constants: a failure here is a bug found by any test
    // that creates a node, not something input can cause.
    pub fn new() -> NodeMetrics {
        let registry = Registry::new();
        let tls_handshake_failures = IntCounterVec::new(
            Opts::new(
                "cairn_tls_handshake_failures_total",
                "TLS handshakes that failed (bad or expired certificate, another CA, not TLS at all, timeout), by side: accepted (clients and peers connecting here) or outgoing (this node connecting to a peer)",
            ),
            &["side"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(tls_handshake_failures.clone()))
            .expect("registered once");
        for side in [TLS_SIDE_ACCEPTED, TLS_SIDE_OUTGOING] {
            tls_handshake_failures.with_label_values(&[side]);
        }
        let appends = IntCounterVec::new(
            Opts::new(
                "cairn_appends_total",
                "Append requests this node answered, by result (a forwarded append counts on the follower and on the leader)",
            ),
            &["result"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(appends.clone()))
            .expect("registered once");
        // Make every result visible from the start, so rates work from the first scrape.
        for result in [
            RESULT_WRITTEN,
            RESULT_ALREADY_WRITTEN,
            RESULT_WRONG_EXPECTED_VERSION,
            RESULT_CONDITION_FAILED,
            RESULT_NOT_LEADER,
            RESULT_ERROR,
        ] {
            appends.with_label_values(&[result]);
        }
        let appended_events = IntCounter::new(
            "cairn_appended_events_total",
            "Events written by appends this node answered (retries that wrote nothing excluded)",
        )
        .expect("a valid metric");
        registry
            .register(Box::new(appended_events.clone()))
            .expect("registered once");
        let append_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "cairn_append_duration_seconds",
                "Time from receiving an append request to answering it, on the node that received it",
            )
            .buckets(APPEND_LATENCY_BUCKETS_SECONDS.to_vec()),
        )
        .expect("a valid metric");
        registry
            .register(Box::new(append_seconds.clone()))
            .expect("registered once");
        let replication_lag = IntGaugeVec::new(
            Opts::new(
                "cairn_raft_replication_lag_entries",
                "On the leader: log entries each follower still lacks (last log index minus the follower's matched index)",
            ),
            &["follower"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(replication_lag.clone()))
            .expect("registered once");
        let group_gauge = |name: &str, help: &str| {
            let gauge =
                IntGaugeVec::new(Opts::new(name, help), &["group"]).expect("a valid metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("registered once");
            gauge
        };
        let redeliveries = IntCounterVec::new(
            Opts::new(
                "cairn_group_redeliveries_total",
                "Events a consumer group's dispatcher on this node delivered again (timeout, nack retry, a consumer gone)",
            ),
            &["group"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(redeliveries.clone()))
            .expect("registered once");
        let groups = GroupGauges {
            lag: group_gauge(
                "cairn_group_lag_events",
                "Keys of a consumer group's source after its checkpoint not yet done (on $all and indexes, positions)",
            ),
            in_flight: group_gauge(
                "cairn_group_in_flight_events",
                "Events delivered to a consumer group's consumers and not yet acknowledged",
            ),
            parked: group_gauge(
                "cairn_group_parked_events",
                "Events in a consumer group's parked stream",
            ),
            consumers: group_gauge(
                "cairn_group_consumers",
                "Consumers connected to a consumer group (on the leader)",
            ),
            redeliveries,
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("registered once");
            counter
        };
        let reclaimed_bytes = counter(
            "cairn_scavenge_reclaimed_bytes_total",
            "Bytes of scavenged event groups this node gave back to the file system (zeroed, whole blocks freed)",
        );
        let reclaimed_groups = counter(
            "cairn_scavenge_reclaimed_groups_total",
            "Scavenged event groups whose bytes this node gave back",
        );
        let corruption_detected = IntCounterVec::new(
            Opts::new(
                "cairn_corruption_detected_total",
                "Damage this node found in its files (at start) or in a snapshot it received, by kind of file",
            ),
            &["file"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(corruption_detected.clone()))
            .expect("registered once");
        for file in CORRUPTION_FILES {
            corruption_detected.with_label_values(&[file]);
        }
        let repairs = IntCounter::new(
            "cairn_repairs_total",
            "Repairs of this node's store from the leader that completed",
        )
        .expect("a valid metric");
        registry
            .register(Box::new(repairs.clone()))
            .expect("registered once");
        NodeMetrics {
            reclaimed_bytes,
            reclaimed_groups,
            dead_bytes: gauge(
                &registry,
                "cairn_scavenge_dead_bytes",
                "Bytes of event groups a scavenge removed that are still on this node's disk (the reclaimer's backlog; cairn_storage_bytes counts them too)",
            ),
            dead_groups: gauge(
                &registry,
                "cairn_scavenge_dead_groups",
                "Event groups a scavenge removed whose bytes are still on this node's disk",
            ),
            corruption_detected,
            repairs,
            repairing: gauge(
                &registry,
                "cairn_repairing",
                "1 while this node repairs its store from the leader (it does not vote meanwhile)",
            ),
            subscriptions: gauge(
                &registry,
                "cairn_subscriptions",
                "Subscriptions this node is serving",
            ),
            term: gauge(&registry, "cairn_raft_term", "Current Raft term"),
            leader_id: gauge(
                &registry,
                "cairn_raft_leader_id",
                "Id of the leader this node knows, -1 when it knows none",
            ),
            is_leader: gauge(
                &registry,
                "cairn_raft_is_leader",
                "1 when this node is the leader",
            ),
            last_log_index: gauge(
                &registry,
                "cairn_raft_last_log_index",
                "Index of the last entry in this node's Raft log (0 when empty)",
            ),
            committed_index: gauge(
                &registry,
                "cairn_raft_committed_index",
                "Highest log index this node knows to be committed (0 when none)",
            ),
            applied_index: gauge(
                &registry,
                "cairn_raft_applied_index",
                "Highest log index applied to this node's state machine (0 when none)",
            ),
            snapshot_index: gauge(
                &registry,
                "cairn_raft_snapshot_index",
                "Last log index in this node's latest snapshot (-1 when it has none)",
            ),
            purged_index: gauge(
                &registry,
                "cairn_raft_purged_index",
                "Last log index purged from this node's log (-1 when none); a member that needs an older entry is sent the snapshot",
            ),
            ready: gauge(
                &registry,
                "cairn_ready",
                "1 when the node is ready to serve (what /health/ready answers)",
            ),
            events: gauge(
                &registry,
                "cairn_store_events",
                "Events in this node's applied state (the next $all position); -1 when it could not be read",
            ),
            storage_bytes: gauge(
                &registry,
                "cairn_storage_bytes",
                "Bytes the store occupies on disk; -1 when they could not be counted",
            ),
            registry,
            groups,
            appends,
            tls_handshake_failures,
            appended_events,
            append_seconds,
            replication_lag,
        }
    }

    /// A consumer group's dispatcher measured itself.
    pub fn group_figures(&self, group: &str, figures: GroupFigures) {
        let g = &self.groups;
        g.lag.with_label_values(&[group]).set(clamp(figures.lag));
        g.in_flight
            .with_label_values(&[group])
            .set(clamp(figures.in_flight));
        g.parked
            .with_label_values(&[group])
            .set(clamp(figures.parked));
        g.consumers
            .with_label_values(&[group])
            .set(clamp(figures.consumers));
    }

    pub fn group_redelivered(&self, group: &str) {
        self.groups.redeliveries.with_label_values(&[group]).inc();
    }

    /// A group's dispatcher stopped here: its gauges go (another node may serve it now).
    pub fn group_stopped(&self, group: &str) {
        let g = &self.groups;
        for gauge in [&g.lag, &g.in_flight, &g.parked, &g.consumers] {
            let _ = gauge.remove_label_values(&[group]);
        }
    }

    /// Records one answered append request of `events` events.
    pub fn append_answered(
        &self,
        events: usize,
        result: &Result<tonic::Response<proto::AppendResponse>, tonic::Status>,
        elapsed: Duration,
    ) {
        use proto::append_response::Result as Outcome;
        let label = match result.as_ref().map(|r| r.get_ref().result.as_ref()) {
            Ok(Some(Outcome::Success(success))) if success.already_written => {
                RESULT_ALREADY_WRITTEN
            }
            Ok(Some(Outcome::Success(_))) => RESULT_WRITTEN,
            Ok(Some(Outcome::WrongExpectedVersion(_))) => RESULT_WRONG_EXPECTED_VERSION,
            Ok(None) => RESULT_ERROR,
            Err(status) => error_label(status),
        };
        self.count_append(events, label, elapsed);
    }

    /// Records one answered multi-stream or DCB append request of `events` events (all its
    /// parts' and DCB events): the same counters as single appends, one request each.
    pub fn multi_append_answered(
        &self,
        events: usize,
        result: &Result<tonic::Response<proto::MultiAppendResponse>, tonic::Status>,
        elapsed: Duration,
    ) {
        use proto::multi_append_response::Result as Outcome;
        let label = match result.as_ref().map(|r| r.get_ref().result.as_ref()) {
            Ok(Some(Outcome::Success(success))) if success.already_written => {
                RESULT_ALREADY_WRITTEN
            }
            Ok(Some(Outcome::Success(_))) => RESULT_WRITTEN,
            Ok(Some(Outcome::WrongExpectedVersion(_))) => RESULT_WRONG_EXPECTED_VERSION,
            Ok(Some(Outcome::ConditionFailed(_))) => RESULT_CONDITION_FAILED,
            Ok(None) => RESULT_ERROR,
            Err(status) => error_label(status),
        };
        self.count_append(events, label, elapsed);
    }

    fn count_append(&self, events: usize, label: &str, elapsed: Duration) {
        self.append_seconds.observe(elapsed.as_secs_f64());
        if label == RESULT_WRITTEN {
            self.appended_events.inc_by(events as u64);
        }
        self.appends.with_label_values(&[label]).inc();
    }

    /// Records one reclaimer step: what it gave back, and the backlog left.
    pub fn reclaimed(&self, groups: u64, bytes: u64, dead_groups: u64, dead_bytes: u64) {
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.reclaimed_groups.inc_by(groups);
        self.reclaimed_bytes.inc_by(bytes);
        self.dead_groups.set(as_gauge(dead_groups));
        self.dead_bytes.set(as_gauge(dead_bytes));
    }

    /// Counts damage found in a file of kind `file` (one of `CORRUPTION_FILES`).
    pub fn corruption_detected(&self, file: &str) {
        self.corruption_detected.with_label_values(&[file]).inc();
    }

    pub fn repair_started(&self) {
        self.repairing.set(1);
    }

    pub fn repair_finished(&self) {
        self.repairing.set(0);
        self.repairs.inc();
    }

    /// Counts a subscription until the returned guard is dropped.
    pub fn subscription_started(self: Arc<Self>) -> ActiveSubscription {
        self.subscriptions.inc();
        ActiveSubscription(self)
    }

    /// Subscriptions running now.
    pub fn subscriptions(&self) -> i64 {
        self.subscriptions.get()
    }

    /// Brings `cairn_tls_handshake_failures_total` up to the TLS layer's own counts
    /// ([`crate::tls::TlsFiles::handshake_failures`]), which only grow.
    pub fn record_tls_handshake_failures(&self, (accepted, outgoing): (u64, u64)) {
        for (side, total) in [(TLS_SIDE_ACCEPTED, accepted), (TLS_SIDE_OUTGOING, outgoing)] {
            let counter = self.tls_handshake_failures.with_label_values(&[side]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The Prometheus text exposition (format 0.0.4) with the gauges set from `raft` and
    /// `store`.
    pub fn render(&self, raft: &RaftStatus, store: StoreFigures) -> String {
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.term.set(as_gauge(raft.term));
        self.leader_id.set(raft.leader.map_or(-1, as_gauge));
        self.is_leader.set(i64::from(raft.leader == Some(raft.id)));
        self.last_log_index
            .set(as_gauge(raft.last_log_index.unwrap_or(0)));
        self.committed_index
            .set(as_gauge(raft.committed_index.unwrap_or(0)));
        self.applied_index
            .set(as_gauge(raft.applied_index.unwrap_or(0)));
        self.snapshot_index
            .set(raft.snapshot_index.map_or(-1, as_gauge));
        self.purged_index
            .set(raft.purged_index.map_or(-1, as_gauge));
        self.ready.set(i64::from(raft.readiness().is_ok()));
        // Followers come and go with leadership and membership: only the current ones show.
        self.replication_lag.reset();
        for (follower, lag) in raft.replication_lag() {
            self.replication_lag
                .with_label_values(&[&follower.to_string()])
                .set(as_gauge(lag));
        }
        self.events.set(store.events.map_or(-1, as_gauge));
        self.storage_bytes.set(store.bytes.map_or(-1, as_gauge));

        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The content type of [`NodeMetrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `result` label of an append answered with an error status: the append paths answer
/// FAILED_PRECONDITION for "not the leader" only.
fn error_label(status: &tonic::Status) -> &'static str {
    if status.code() == tonic::Code::FailedPrecondition {
        RESULT_NOT_LEADER
    } else {
        RESULT_ERROR
    }
}
