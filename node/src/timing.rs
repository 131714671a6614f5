//! Raft timings that several modules share: `app` configures openraft with them, `leadership`
//! waits out the leader lease they imply, `health` and `leadership` bound their questions to
//! the Raft core. Kept apart so none of those modules has to import another for a number.

/// Leader heartbeat period; openraft also uses it as the AppendEntries deadline (in 0.10, the
/// deadline of each answer on a replication stream, counted from its request's sending).
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Election timeout range. openraft 0.9 makes a follower that has seen a committed leader wait
/// the leader lease (= the maximum) *plus* a random timeout, checked on a tick every 1.5
/// heartbeats: 200..400 ms gives 600..800 ms (+ up to 150 ms) of silence before it stands,
/// six heartbeats at least, and a measured failover median under a second (300..600 ms
/// measured 1.12 s).
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 200;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 400;
/// A restarted node stays out of elections until it hears from a leader, or for this long.
/// It comes back with its vote uncommitted, so its election timer is short (200..400 ms); if it
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
