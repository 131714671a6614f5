//! The client's one call policy: after a failed attempt, where the next one goes, whether it
//! pauses first, what the last cause was, and when to give up. Appends, reads and membership
//! changes (`Client::with_retries`) and subscriptions (`subscribe::Follow`) keep one
//! [`Retries`] each and ask it; they differ only in what counts as an attempt (a subscription
//! forgives a failure after it delivered something) and in how they choose a node when no
//! leader was hinted (`Endpoints::pick`, or `Client::choose`, which may ask for status).
//! `Client::status` keeps one too, but sweeps every endpoint once, in order, without pauses
//! or steering ([`Retries::noted`]): it is how the client learns where to go, so it does not
//! wait on that knowledge.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::sleep;

use crate::endpoints::{Endpoints, Node};
use crate::error::Error;

/// First pause between attempts; doubles on each retry up to [`RETRY_BACKOFF_MAX_MS`].
pub const RETRY_BACKOFF_INITIAL_MS: u64 = 20;
/// Longest pause between attempts.
pub const RETRY_BACKOFF_MAX_MS: u64 = 500;

/// The pause before retry number `retry` (0-based): exponential, capped. No jitter on
/// purpose: the simulation replays a run from its seed, and OS randomness would break that.
pub(crate) fn backoff(retry: u32) -> Duration {
    let factor = 1u64.checked_shl(retry).unwrap_or(u64::MAX);
    Duration::from_millis(
        RETRY_BACKOFF_INITIAL_MS
            .saturating_mul(factor)
            .min(RETRY_BACKOFF_MAX_MS),
    )
}

/// The state of one call's attempts.
pub(crate) struct Retries {
    /// Attempts allowed before giving up (consecutive ones, for a subscription).
    max_attempts: u32,
    /// Failed attempts so far.
    failures: u32,
    /// Pauses taken so far: the backoff exponent.
    pauses: u32,
    /// The next attempt follows a leader hint that just came in: no pause.
    redirected: bool,
    /// The leader a failure pointed to, for the next attempt.
    hinted: Option<Arc<Node>>,
    /// Nodes that failed this round: the next choice avoids them.
    tried: Vec<Arc<Node>>,
    last_cause: String,
}

impl Retries {
    pub(crate) fn new(max_attempts: u32) -> Retries {
        Retries {
            max_attempts,
            failures: 0,
            pauses: 0,
            redirected: false,
            hinted: None,
            tried: Vec::new(),
            last_cause: String::from("no attempt yet"),
        }
    }

    /// Records a failed attempt at `node`. A leader hint that names a node the endpoints know
    /// (or can add) is where the next attempt goes, at once if it is fresh news (not a hint
    /// that bounced, and not the node that just failed); anything else forgets `node` as
    /// leader and avoids it. `counts`: whether the attempt counts against the bound.
    pub(crate) fn failed(
        &mut self,
        endpoints: &Endpoints,
        node: &Arc<Node>,
        cause: String,
        leader: Option<String>,
        counts: bool,
    ) {
        if counts {
            self.failures = self.failures.saturating_add(1);
        }
        self.last_cause = format!("{}: {cause}", node.url);
        match leader.and_then(|hint| endpoints.follow_hint(&hint)) {
            // A hint back to a node that failed this round is stale news, typically from a
            // node on the cut-off leader's side of a partition: following it spent every
            // attempt between the two while the majority had elected another leader (the
            // partition tests' 2|3 split). Forget it as leader and try a node not yet tried.
            Some(leader)
                if !Arc::ptr_eq(&leader, node)
                    && self.tried.iter().any(|t| Arc::ptr_eq(t, &leader)) =>
            {
                endpoints.forget_leader(&leader);
                self.redirected = false;
                self.hinted = None;
                endpoints.avoid(node, &mut self.tried);
            }
            Some(leader) => {
                self.redirected = !self.redirected && !Arc::ptr_eq(&leader, node);
                self.hinted = Some(leader);
            }
            None => {
                self.redirected = false;
                self.hinted = None;
                endpoints.avoid(node, &mut self.tried);
            }
        }
    }

    /// Records a failed attempt that steers nothing: a sweep over every endpoint in order
    /// (`Client::status`) neither follows hints nor marks nodes as failed.
    pub(crate) fn noted(&mut self, node: &Node, cause: String) {
        self.failures = self.failures.saturating_add(1);
        self.last_cause = format!("{}: {cause}", node.url);
    }

    /// Out of attempts: the caller gives up with [`Retries::give_up`].
    pub(crate) fn exhausted(&self) -> bool {
        self.failures >= self.max_attempts
    }

    /// Waits before the next attempt, unless it follows a fresh leader hint.
    pub(crate) async fn pause(&mut self) {
        if !self.redirected {
            sleep(backoff(self.pauses)).await;
            self.pauses = self.pauses.saturating_add(1);
        }
    }

    /// The hinted leader, if the last failure named one; else the caller picks a node
    /// avoiding [`Retries::tried`].
    pub(crate) fn take_hinted(&mut self) -> Option<Arc<Node>> {
        self.hinted.take()
    }

    pub(crate) fn tried(&self) -> &[Arc<Node>] {
        &self.tried
    }

    pub(crate) fn last_cause(&self) -> &str {
        &self.last_cause
    }

    /// Something got through: the count, the backoff and the avoided nodes start again.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.pauses = 0;
        self.redirected = false;
        self.hinted = None;
        self.tried.clear();
    }

    /// `Error::Unavailable` saying what gave up after how many attempts, with the last cause.
    pub(crate) fn give_up(&self, what: &str) -> Error {
        Error::Unavailable(format!(
            "{what} gave up after {} attempts; last: {}",
            self.max_attempts, self.last_cause
        ))
    }
}
