//! Raft timings that several modules share: `app` configures openraft with them, `leadership`
//! waits out the leader lease they imply, `health` and `leadership` bound their questions to
//! the Raft core. Kept apart so none of those modules has to import another for a number.

/// Leader heartbeat period; openraft also uses it as the AppendEntries deadline (in 0.10, the
/// deadline of each answer on a replication stream, counted from its request's sending).
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Election timeout range. In openraft 0.10 a follower stands (a pre-vote) once it has heard
/// nothing for a timeout drawn from this range, and the other followers grant it only once
/// their leader lease (= the maximum) has run out too; a refused pre-vote is tried again a
/// timeout later. So a failover takes about two timeouts: with 200..400 ms the median
/// SIGKILL-to-next-append was 769 ms (10 trials, 619-803), with 150..300 531 ms, with
/// 150..250 452 ms (419-496; issue 15's target is 500 ms), all in one sitting
/// (BENCHMARKS.md). The lease, 250 ms, is still two and a half heartbeats: a leader change
/// needs every follower to miss two in a row.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 150;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 250;
/// A restarted node stays out of elections until it hears from a leader, or for this long.
/// It comes back with its vote uncommitted, so its election timer is short (150..250 ms); if it
/// stood before the leader reached it, it would win (an idle cluster, where its log is as long:
/// the leader grants the vote, its own lease being long expired) or its higher term would make
/// the leader step down. Either way a healthy leader goes, and a rolling restart pays an
/// election per node (seen: 3 of 10 restarts of a just-handed-over leader took the leadership
/// back). The leader retries an unreachable peer every `UNREACHABLE_RETRY_MS` (100 ms) and
/// sends a heartbeat every 100 ms, so it reaches a restarted node well within this. A whole
/// cluster that restarts elects this much later.
pub const RESTART_ELECTION_GRACE_MS: u64 = 500;
/// Longest a question to the Raft core (its commit index, its vote) may take; past it a health
/// check reports the node not ready and a handoff goes on without the answer.
pub const RAFT_STATE_TIMEOUT_MS: u64 = 1_000;
