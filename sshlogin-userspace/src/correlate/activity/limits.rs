//! How much of a session's activity is reported: token buckets per
//! connection, one for execs (the settings), one for set-user-id execs and
//! one for sudo's and su's decisions, so that neither an exec flood nor a
//! loop of set-user-id programs can hide a failed `su`.

/// Set-user-id execs per second per connection, and at once.
const SETUID_RATE: f64 = 5.0;
const SETUID_BURST: f64 = 100.0;
/// sudo's and su's decisions per second per connection, and at once: far
/// above what a person does, low enough that a loop of `sudo -n false`
/// cannot flood.
const DECISION_RATE: f64 = 5.0;
const DECISION_BURST: f64 = 100.0;

/// A token bucket.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    last_ns: u64,
}

impl Bucket {
    pub fn full(size: f64, now_ns: u64) -> Bucket {
        Bucket { tokens: size, last_ns: now_ns }
    }

    pub fn take(&mut self, now_ns: u64, rate: f64, size: f64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * rate).min(size);
        self.last_ns = self.last_ns.max(now_ns);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }
}

/// What a connection's sessions may still report, and what they did.
#[derive(Clone, Copy, Debug)]
pub struct Tally {
    execs: Bucket,
    setuid: Bucket,
    decisions: Bucket,
    pub reported: u64,
    pub suppressed: u64,
}

/// Which allowance an event draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowance {
    Exec,
    Setuid,
    Decision,
}

impl Tally {
    pub fn new(burst: u32, now_ns: u64) -> Tally {
        Tally {
            execs: Bucket::full(f64::from(burst), now_ns),
            setuid: Bucket::full(SETUID_BURST, now_ns),
            decisions: Bucket::full(DECISION_BURST, now_ns),
            reported: 0,
            suppressed: 0,
        }
    }

    /// Whether one more event of `kind` may go out now; counts it either way.
    pub fn allow(&mut self, kind: Allowance, now_ns: u64, rate: u32, burst: u32) -> bool {
        let ok = match kind {
            Allowance::Exec => self.execs.take(now_ns, f64::from(rate), f64::from(burst)),
            Allowance::Setuid => self.setuid.take(now_ns, SETUID_RATE, SETUID_BURST),
            Allowance::Decision => self.decisions.take(now_ns, DECISION_RATE, DECISION_BURST),
        };
        if ok {
            self.reported += 1;
        } else {
            self.suppressed += 1;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::full(3.0, 0);
        assert!((0..3).all(|_| b.take(0, 10.0, 3.0)));
        assert!(!b.take(0, 10.0, 3.0));
        assert!(b.take(100_000_000, 10.0, 3.0), "one token back after 100 ms at 10/s");
        assert!(!b.take(100_000_000, 10.0, 3.0));
        assert!(!b.take(50_000_000, 10.0, 3.0), "time does not run backwards");
    }

    #[test]
    fn a_setuid_loop_leaves_decisions_their_allowance() {
        let mut t = Tally::new(10, 0);
        while t.allow(Allowance::Setuid, 0, 1, 10) {}
        while t.allow(Allowance::Exec, 0, 1, 10) {}
        assert!(t.allow(Allowance::Decision, 0, 1, 10), "a failed su still goes out");
        assert_eq!(t.reported, 100 + 10 + 1);
        assert_eq!(t.suppressed, 2);
    }
}
