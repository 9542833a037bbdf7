//! What to do with a response: the OTLP/HTTP specification's rules. 2xx is
//! success (possibly partial); 429, 502, 503 and 504 are retried, honouring
//! `Retry-After`; every other status is a permanent failure. Waits grow
//! exponentially with full jitter, capped, until a total budget is spent.

use std::time::{Duration, SystemTime};

use crate::config::Retry;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Success,
    /// Try again; the server may have said when.
    Retry {
        after: Option<Duration>,
    },
    /// Do not try again.
    Drop,
}

pub fn decide(status: u16, retry_after: Option<&str>, now: SystemTime) -> Decision {
    match status {
        200..=299 => Decision::Success,
        429 | 502 | 503 | 504 => Decision::Retry { after: retry_after.and_then(|v| parse_retry_after(v, now)) },
        _ => Decision::Drop,
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
        for s in [200, 202, 204] {
            assert_eq!(decide(s, None, now), Decision::Success, "{s}");
        }
        for s in [429, 502, 503, 504] {
            assert_eq!(decide(s, None, now), Decision::Retry { after: None }, "{s}");
        }
        for s in [400, 401, 403, 404, 405, 413, 415, 500, 501, 505, 301] {
            assert_eq!(decide(s, Some("1"), now), Decision::Drop, "{s}");
        }
        assert_eq!(decide(503, Some("7"), now), Decision::Retry { after: Some(Duration::from_secs(7)) });
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
