//! How long the public services wait for the cluster, shared by the handlers (`streams.rs`)
//! and the group commit that answers them (`group_commit.rs`).
//!
//! Server-side waits stay below the client's default request timeout (5 s), so a client gets
//! the server's typed answer rather than its own timeout.

/// Longest an append waits to be committed and applied. At the limit the caller gets
/// UNAVAILABLE; the append may still commit later, and a retry with the same event ids is safe.
pub const APPEND_TIMEOUT_MS: u64 = 4_000;
/// Longest a linearizable read waits for the leader to confirm its leadership.
pub const LINEARIZABLE_READ_TIMEOUT_MS: u64 = 4_000;
/// Longest a read waits for this node to apply the caller's minimum position.
pub const MIN_POSITION_WAIT_MS: u64 = 4_000;
