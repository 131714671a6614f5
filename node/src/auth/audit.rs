//! Rate limit of the audit log's failure lines (unauthenticated calls, denials): a client
//! sending bad tokens as fast as it can must not flood the log (nor fill a disk through it).
//!
//! Per window of [`AUDIT_WINDOW_MS`], the first [`AUDIT_FAILURE_LINES_PER_WINDOW`] failures
//! are logged one line each; the rest are counted, and the count is logged as one line
//! (`failure lines suppressed`) with the first failure of a later window, before its own
//! line. Admin actions and changes are never limited: only admins make them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failure lines logged per window; beyond it they are counted, not logged.
pub const AUDIT_FAILURE_LINES_PER_WINDOW: u32 = 20;
/// Length of one window of the limit, in milliseconds.
pub const AUDIT_WINDOW_MS: u64 = 1_000;

/// What to log for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Log this failure's own line.
    pub log: bool,
    /// Failure lines suppressed since the last count was logged: log this count first
    /// (0: nothing to say).
    pub suppressed: u64,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// The limiter one node shares across its connections.
#[derive(Debug)]
pub struct FailureLines {
    window: Mutex<Option<Window>>,
}

impl Default for FailureLines {
    fn default() -> Self {
        FailureLines {
            window: Mutex::new(None),
        }
    }
}

impl FailureLines {
    /// The verdict for a failure at `now`.
    pub fn admit(&self, now: Instant) -> Verdict {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let length = Duration::from_millis(AUDIT_WINDOW_MS);
        let current = match window.as_mut() {
            Some(w) if now.saturating_duration_since(w.started) < length => w,
            _ => {
                // A new window: the count of the ones before goes out with this line.
                let suppressed = window.as_ref().map_or(0, |w| w.suppressed);
                *window = Some(Window {
                    started: now,
                    logged: 1,
                    suppressed: 0,
                });
                return Verdict {
                    log: true,
                    suppressed,
                };
            }
        };
        if current.logged < AUDIT_FAILURE_LINES_PER_WINDOW {
            current.logged += 1;
            Verdict {
                log: true,
                suppressed: 0,
            }
        } else {
            current.suppressed += 1;
            Verdict {
                log: false,
                suppressed: 0,
            }
        }
    }

    /// Logs the count `verdict` carries, if any; true if the failure's own line is to be
    /// logged.
    pub fn report(&self, verdict: Verdict) -> bool {
        if verdict.suppressed > 0 {
            tracing::warn!(
                target: "cairn::audit",
                suppressed = verdict.suppressed,
                per_window = AUDIT_FAILURE_LINES_PER_WINDOW,
                window_ms = AUDIT_WINDOW_MS,
                "failure lines suppressed"
            );
        }
        verdict.log
    }

    /// [`admit`](Self::admit) now and [`report`](Self::report): whether to log this failure.
    pub fn should_log(&self) -> bool {
        self.report(self.admit(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_up_to_the_limit_and_its_count_with_the_next_window() {
        let lines = FailureLines::default();
        let start = Instant::now();
        let verdicts: Vec<Verdict> = (0..1_000)
            .map(|i| lines.admit(start + Duration::from_micros(i)))
            .collect();
        let logged = verdicts.iter().filter(|v| v.log).count();
        assert_eq!(logged, AUDIT_FAILURE_LINES_PER_WINDOW as usize);
        assert!(verdicts.iter().all(|v| v.suppressed == 0));
        let later = lines.admit(start + Duration::from_millis(AUDIT_WINDOW_MS));
        assert_eq!(
            later,
            Verdict {
                log: true,
                suppressed: 1_000 - u64::from(AUDIT_FAILURE_LINES_PER_WINDOW),
            }
        );
        // The count went out once; the new window starts from nothing.
        let next = lines.admit(start + Duration::from_millis(AUDIT_WINDOW_MS + 1));
        assert_eq!(
            next,
            Verdict {
                log: true,
                suppressed: 0
            }
        );
    }
}
