//! sshlogin's own events: `sshlogin.start`, `sshlogin.heartbeat` every
//! interval and `sshlogin.stop`. A backend that hears nothing from a host
//! can then tell "nobody logged in" (heartbeats keep coming, with zero
//! events) from "sshlogin is not watching" (they stop, or a stop says why).
//! They travel like every event: spooled, retried, exported.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    config::{Config, redact_url},
    event::{Agent, Counts, Start},
    metrics::Metrics,
};

pub struct Lifecycle {
    every: Option<Duration>,
    next: Instant,
    seq: u64,
    /// The counters at the last heartbeat (or the start), and when.
    last: Counts,
    last_at: Instant,
    metrics: Arc<Metrics>,
}

impl Lifecycle {
    /// `every`: the heartbeat interval, `None` for none.
    pub fn new(every: Option<Duration>, metrics: Arc<Metrics>) -> Self {
        let last = metrics.counts();
        let now = Instant::now();
        Lifecycle { every, next: now + every.unwrap_or_default(), seq: 0, last, last_at: now, metrics }
    }

    /// How long until the next heartbeat is due, if there are heartbeats.
    pub fn due_in(&self) -> Option<Duration> {
        self.every.map(|_| self.next.saturating_duration_since(Instant::now()))
    }

    /// The heartbeat, when one is due: the counters since the last.
    pub fn heartbeat(&mut self) -> Option<Agent> {
        let every = self.every?;
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        // A stalled loop sends one heartbeat late, not a burst of them.
        self.next = if now >= self.next + every { now + every } else { self.next + every };
        self.seq += 1;
        let counts = self.metrics.counts();
        let since = counts.since(&self.last);
        self.last = counts;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let elapsed_ms = ms(now - self.last_at);
        self.last_at = now;
        Some(Agent::Heartbeat { seq: self.seq, interval_ms: ms(every), elapsed_ms, counts: since })
    }

    /// The stop, with the counters since start.
    pub fn stop(&self, reason: &str) -> Agent {
        Agent::Stop { reason: reason.to_string(), counts: self.metrics.counts() }
    }
}

/// What `sshlogin.start` says: what is watched and where it goes.
pub fn start(config: &Config, backend: &str, binaries: Vec<String>) -> Start {
    Start {
        version: env!("CARGO_PKG_VERSION").to_string(),
        backend: backend.to_string(),
        kernel: crate::host::kernel_release().unwrap_or_default(),
        layout: crate::check::sshd_layout(&binaries).to_string(),
        binaries,
        config: summary(config),
    }
}

/// The settings an operator checks a fleet by. Endpoints as logs show them
/// (no userinfo, query or secret path); no header, token or key.
fn summary(c: &Config) -> Vec<(String, String)> {
    let mut out = vec![
        ("capture.sshd_comm".to_string(), c.capture.family.join(",")),
        ("capture.ring_buffer_size".to_string(), c.capture.ring_buffer_bytes.to_string()),
        ("capture.syscall_probes".to_string(), word(c.capture.syscall_probes)),
        ("spool.dir".to_string(), c.spool.dir.display().to_string()),
        ("spool.max_size".to_string(), c.spool.max_bytes.to_string()),
        ("stdout.enabled".to_string(), c.stdout.to_string()),
        ("failures.mode".to_string(), word(c.failures.mode)),
        (
            "heartbeat.interval".to_string(),
            c.heartbeat.map_or("off".into(), |d| humantime::format_duration(d).to_string()),
        ),
        ("first_seen.enabled".to_string(), c.first_seen.is_some().to_string()),
        ("session.exec".to_string(), word(c.session.exec)),
        ("session.rate".to_string(), c.session.rate.to_string()),
        ("session.burst".to_string(), c.session.burst.to_string()),
    ];
    for sink in [&c.otlp, &c.webhook].into_iter().flatten() {
        out.push((format!("{}.url", sink.kind.name()), redact_url(&sink.url)));
    }
    out.sort();
    out
}

/// An enum setting as its flag spells it.
pub fn word<T: clap::ValueEnum>(v: T) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_carry_the_counts_since_the_last() {
        let metrics = Metrics::new();
        let mut l = Lifecycle::new(Some(Duration::from_millis(1)), metrics.clone());
        metrics.event("ssh.session.open");
        metrics.decode_errors.inc();
        std::thread::sleep(Duration::from_millis(2));
        let Some(Agent::Heartbeat { seq: 1, interval_ms: 1, elapsed_ms, counts }) = l.heartbeat() else { panic!() };
        assert!(elapsed_ms >= 2, "the time it covers: {elapsed_ms}");
        assert!(counts.events.contains(&("ssh.session.open".into(), 1)));
        assert_eq!(counts.decode_errors, 1);
        assert_eq!(l.heartbeat(), None, "a late heartbeat is not followed by another at once");
        std::thread::sleep(Duration::from_millis(2));
        let Some(Agent::Heartbeat { seq: 2, counts, .. }) = l.heartbeat() else { panic!() };
        assert_eq!((counts.decode_errors, counts.events.iter().map(|(_, n)| n).sum::<u64>()), (0, 0));
        let Agent::Stop { counts, .. } = l.stop("SIGTERM") else { panic!() };
        assert_eq!(counts.decode_errors, 1, "a stop counts since start");
        let mut off = Lifecycle::new(None, metrics);
        assert_eq!((off.due_in(), off.heartbeat()), (None, None));
    }

    #[test]
    fn the_start_summary_keeps_no_secret() {
        let flags = crate::config::Flags {
            webhook_url: Some("https://user:pass@hooks.example/services/T000/SECRET?token=x".into()),
            ..Default::default()
        };
        let config = crate::config::resolve(&flags, &|_| None, Default::default()).unwrap();
        let s = start(&config, "tracepoints", vec!["/usr/sbin/sshd".into()]);
        let text = format!("{:?}", s.config);
        assert!(!text.contains("SECRET") && !text.contains("pass") && !text.contains("token"), "{text}");
        assert!(text.contains("webhook.url"), "{text}");
        for (key, value) in [("session.exec", "all"), ("session.rate", "50"), ("session.burst", "500")] {
            assert!(s.config.contains(&(key.to_string(), value.to_string())), "{text}");
        }
    }
}
