//! What to do with a response, and how long to wait before the next
//! request to an endpoint that failed.
//!
//! 2xx is success (possibly partial). 429, 502, 503, 504 and no answer at
//! all are the endpoint being busy or down: retried with exponential
//! backoff and full jitter, waiting at least what `Retry-After` says. 400
//! and 413 say this batch can never be taken: dropped. Every other answer
//! (401, 403, 404, a redirect, 500...) says the endpoint refuses everything
//! for now, which is its configuration's fault, not the batch's: for an
//! audit trail the batch is kept and retried at the maximum backoff, unless
//! the failure policy says drop.
//!
//! The wait belongs to the endpoint, not to a batch: it survives the end of
//! a batch's try and the next cycle, so nothing sends to a failing endpoint
//! faster than its backoff.

use std::time::{Duration, Instant, SystemTime};

use crate::config::{FailurePolicy, Retry};

/// `Retry-After` is honoured up to this long (quota resets an hour away are
/// common), and never below [`RETRY_AFTER_FLOOR`].
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);
/// `Retry-After: 0` or a date in the past still waits this long.
pub const RETRY_AFTER_FLOOR: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Success,
    /// Busy or down: try again after the backoff, or after `after` when the
    /// server said so and that is longer.
    Retry {
        after: Option<Duration>,
    },
    /// The endpoint refuses everything for now: keep the batch and try
    /// again at the maximum backoff.
    Refused,
    /// This batch can never be taken.
    Drop,
}

pub fn decide(status: u16, retry_after: Option<&str>, now: SystemTime, policy: FailurePolicy) -> Decision {
    match status {
        200..=299 => Decision::Success,
        429 | 502 | 503 | 504 => Decision::Retry { after: retry_after.and_then(|v| parse_retry_after(v, now)) },
        400 | 413 => Decision::Drop,
        _ => match policy {
            FailurePolicy::Keep => Decision::Refused,
            FailurePolicy::Drop => Decision::Drop,
        },
    }
}

/// The backoff of one endpoint: how many failures in a row, and the
/// earliest time the next request may go.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: Retry,
    failures: u32,
    not_before: Option<Instant>,
    /// When the current run of failures began.
    pub failing_since: Option<Instant>,
    /// When the latest failure was answered.
    last_failure: Option<Instant>,
}

impl Backoff {
    pub fn new(policy: Retry) -> Self {
        Backoff { policy, failures: 0, not_before: None, failing_since: None, last_failure: None }
    }

    /// When the next request may go; `None`: now.
    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    /// A request sent at `sent_at` was answered with something other than
    /// "busy": start over, unless a failure came after it was sent (several
    /// requests are in flight at once, and a `Retry-After` must stand).
    pub fn answered(&mut self, sent_at: Instant) {
        if self.last_failure.is_none_or(|f| sent_at >= f) {
            *self = Backoff::new(self.policy);
        }
    }

    /// A failure at `now`: returns the wait before the next request. The
    /// earliest next request only moves later: a short wait never cuts a
    /// longer one (a server's `Retry-After`) short. `unit` is a random
    /// number in [0, 1).
    pub fn failed(&mut self, decision: &Decision, now: Instant, unit: f64) -> Duration {
        let wait = match decision {
            Decision::Refused => self.policy.max_backoff,
            Decision::Retry { after } => {
                let after = after.map(|a| a.clamp(RETRY_AFTER_FLOOR, RETRY_AFTER_MAX)).unwrap_or_default();
                backoff(&self.policy, self.failures, unit).max(after)
            }
            Decision::Success | Decision::Drop => Duration::ZERO,
        };
        self.failures = self.failures.saturating_add(1);
        self.failing_since.get_or_insert(now);
        self.last_failure = Some(now);
        let at = self.not_before.map_or(now + wait, |t| t.max(now + wait));
        self.not_before = Some(at);
        at - now
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before retry number `attempt` (0 for the first retry): a random
/// duration up to `initial * 2^attempt`, capped at `max` ("full jitter").
/// `unit` is a random number in [0, 1).
pub fn backoff(policy: &Retry, attempt: u32, unit: f64) -> Duration {
    let ceiling = policy.initial_backoff.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(policy.max_backoff);
    // Never retry in a tight loop: at least a tenth of the initial wait.
    ceiling.mul_f64(unit.clamp(0.0, 1.0)).max(policy.initial_backoff / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let now = SystemTime::UNIX_EPOCH;
        let keep = FailurePolicy::Keep;
        for s in [200, 202, 204] {
            assert_eq!(decide(s, None, now, keep), Decision::Success, "{s}");
        }
        for s in [429, 502, 503, 504] {
            assert_eq!(decide(s, None, now, keep), Decision::Retry { after: None }, "{s}");
        }
        for s in [400, 413] {
            assert_eq!(decide(s, Some("1"), now, keep), Decision::Drop, "{s}");
        }
        for s in [401, 403, 404, 405, 415, 500, 501, 505, 301] {
            assert_eq!(decide(s, Some("1"), now, keep), Decision::Refused, "{s}: an audit trail keeps it");
            assert_eq!(decide(s, Some("1"), now, FailurePolicy::Drop), Decision::Drop, "{s}");
        }
        assert_eq!(decide(503, Some("7"), now, keep), Decision::Retry { after: Some(Duration::from_secs(7)) });
    }

    fn policy() -> Retry {
        Retry {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }

    #[test]
    fn retry_after_is_floored_capped_and_never_shortens_the_backoff() {
        let now = Instant::now();
        let mut b = Backoff::new(policy());
        let after = |s| Decision::Retry { after: Some(Duration::from_secs(s)) };
        assert_eq!(b.failed(&after(7200), now, 0.5), RETRY_AFTER_MAX, "capped");
        assert_eq!(b.failed(&after(1), now, 0.5), RETRY_AFTER_MAX, "a shorter wait does not cut it short");
        let mut b = Backoff::new(policy());
        assert_eq!(b.failed(&after(0), now, 0.0), RETRY_AFTER_FLOOR, "0 still waits a second");
        let grown = b.failed(&after(1), now, 0.999);
        assert!(grown > Duration::from_millis(1900), "the backoff kept growing: {grown:?}");
        assert_eq!(b.not_before(), Some(now + grown));
    }

    #[test]
    fn the_backoff_outlives_a_batch_until_the_endpoint_answers() {
        let now = Instant::now();
        let mut b = Backoff::new(policy());
        for _ in 0..6 {
            b.failed(&Decision::Retry { after: None }, now, 0.999);
        }
        assert!(b.failed(&Decision::Retry { after: None }, now, 0.999) > Duration::from_secs(29));
        assert_eq!(b.failed(&Decision::Refused, now, 0.0), Duration::from_secs(30), "refused: the maximum");
        assert_eq!(b.failing_since, Some(now));
        b.answered(now - Duration::from_secs(1));
        assert!(b.not_before().is_some(), "sent before the failure: the failure stands");
        b.answered(now);
        assert_eq!((b.not_before(), b.failing_since), (None, None));
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "past dates mean now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p = Retry {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        };
        assert_eq!(backoff(&p, 0, 0.999_999), Duration::from_secs(1).mul_f64(0.999_999));
        assert_eq!(backoff(&p, 3, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(&p, 10, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(&p, 60, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(&p, 2, 0.0), Duration::from_millis(100));
    }
}
