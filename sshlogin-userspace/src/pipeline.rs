//! decode → correlate → enrich, for batches of raw records. Synchronous and
//! free of I/O except the user-database and /proc look-ups behind traits, so
//! the daemon, `sshlogin replay` and the tests run the same code.

use std::sync::Arc;

use uuid::Uuid;

use crate::{
    correlate::{self, Correlator, process::ProcView},
    decode,
    enrich::{self, Enricher, UserDb},
    event::Event,
    metrics::Metrics,
};

pub struct Pipeline<U: UserDb> {
    correlator: Correlator,
    enricher: Enricher<U>,
    pub metrics: Arc<Metrics>,
}

impl<U: UserDb> Pipeline<U> {
    pub fn new(settings: correlate::Settings, view: Box<dyn ProcView + Send>, users: U, metrics: Arc<Metrics>) -> Self {
        let boot_id = settings.boot_id;
        Pipeline { correlator: Correlator::new(settings, view), enricher: Enricher::new(users, boot_id), metrics }
    }

    /// Takes raw records; appends the finished events to `out`.
    pub fn records<R: AsRef<[u8]>, I: IntoIterator<Item = R>>(&mut self, batch: I, out: &mut Vec<Event>) {
        let first = out.len();
        for raw in batch {
            let raw = raw.as_ref();
            self.metrics.records.inc();
            match decode::decode(raw) {
                Ok(record) => self.correlator.handle(record, out),
                Err(e) => {
                    if self.metrics.decode_errors.inc() < 10 {
                        tracing::warn!(error = %e, len = raw.len(), "undecodable record dropped");
                    }
                }
            }
        }
        self.finish_events(first, out);
    }

    /// Timers: events that waited long enough. `now_ns` is CLOCK_BOOTTIME.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let first = out.len();
        self.correlator.tick(now_ns, out);
        self.finish_events(first, out);
    }

    /// When the next timer is due (CLOCK_BOOTTIME ns), if one is pending.
    pub fn next_due(&self) -> Option<u64> {
        self.correlator.next_due()
    }

    /// Everything still pending.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let first = out.len();
        self.correlator.finish(out);
        self.finish_events(first, out);
    }

    fn finish_events(&mut self, first: usize, out: &mut [Event]) {
        let refused = std::mem::take(&mut self.correlator.refused);
        if refused > 0 {
            self.metrics.refused("exe", refused);
        }
        if first == out.len() {
            return;
        }
        let offset = enrich::boot_to_unix_ns();
        let now = enrich::unix_now_ns();
        for e in &mut out[first..] {
            self.enricher.enrich(e, offset, now);
            self.metrics.event(e.name.as_str());
        }
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), the namespace of
/// connection and event ids; a random one if the kernel does not say.
pub fn boot_id() -> Uuid {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .unwrap_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_OID, enrich::unix_now_ns().to_string().as_bytes()))
}
