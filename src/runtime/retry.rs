//! One retry policy for every long-running part. Each error says whether
//! trying again can help ([`ErrorClass`], decided from SQLSTATE classes and
//! Kafka error codes, never from message text); the supervisor waits with
//! [`Backoff`] and reports through [`FailureLog`].
//!
//! ```text
//!  transient  (connection lost, server starting, lock, Kafka away) ─► retry 0.5 s, 1 s, 2 s … max
//!  permanent  (credentials, privilege, missing object, bad config) ─► retry at max, advice logged once
//! ```
//! A permanent error is still retried (an operator may fix it while the
//! bridge runs), only slowly and without flooding the log.

use std::fmt::Display;
use std::time::Duration;

use tracing::{debug, error, warn};

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// Goes away by itself: retry soon.
    Transient,
    /// Needs an operator: retry at the slowest pace.
    Permanent,
}

/// Errors that know their class.
pub(crate) trait Classify {
    fn class(&self) -> ErrorClass;
}

/// Exponential backoff between `min` and `max`; a permanent error waits
/// `max` at once.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// How long to wait after a failure of this class.
    pub(crate) fn after(&mut self, class: ErrorClass) -> Duration {
        let wait = match class {
            ErrorClass::Transient => self.next,
            ErrorClass::Permanent => self.max,
        };
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Back to the shortest wait (after a success, or a long healthy run).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Logs a failing task once per change of state: the first failure, a
/// different error, and the recovery are logged; the same error again is
/// only a debug line. Permanent errors are logged as errors (they need an
/// operator), transient ones as warnings.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    last: Option<String>,
}

impl FailureLog {
    /// Reports a failure of `what` (e.g. "reader of tenant_acme").
    pub(crate) fn failed(
        &mut self,
        what: &str,
        class: ErrorClass,
        error: &dyn Display,
        retry_in: Duration,
    ) {
        let text = error.to_string();
        if self.last.as_deref() == Some(text.as_str()) {
            debug!(%what, error = %text, ?retry_in, "still failing");
            return;
        }
        match class {
            ErrorClass::Permanent => {
                error!(%what, error = %text, ?retry_in, "failed; this needs an operator (retrying slowly)")
            }
            ErrorClass::Transient => warn!(%what, error = %text, ?retry_in, "failed; retrying"),
        }
        self.last = Some(text);
    }

    /// Reports that `what` works again (only if it was failing).
    pub(crate) fn recovered(&mut self, what: &str) {
        if self.last.take().is_some() {
            tracing::info!(%what, "recovered");
        }
    }

    /// Forgets the last failure without a log line (a long healthy run
    /// ended in a new failure: log it in full).
    pub(crate) fn forget(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let waits: Vec<u64> = (0..6)
            .map(|_| backoff.after(ErrorClass::Transient).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 4000, 4000]);
        backoff.reset();
        assert_eq!(
            backoff.after(ErrorClass::Transient),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_permanent_failure_waits_the_maximum_at_once() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(
            backoff.after(ErrorClass::Permanent),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn the_same_failure_is_logged_once_until_it_changes_or_recovers() {
        let mut log = FailureLog::default();
        log.failed("x", ErrorClass::Permanent, &"bad password", Duration::ZERO);
        assert_eq!(log.last.as_deref(), Some("bad password"));
        log.failed("x", ErrorClass::Permanent, &"bad password", Duration::ZERO);
        log.failed(
            "x",
            ErrorClass::Transient,
            &"connection reset",
            Duration::ZERO,
        );
        assert_eq!(log.last.as_deref(), Some("connection reset"));
        log.recovered("x");
        assert!(log.last.is_none());
    }
}
