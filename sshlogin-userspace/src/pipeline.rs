//! decode → correlate → enrich, for batches of raw records. Synchronous and
//! free of I/O except the user-database and /proc look-ups behind traits, so
//! the daemon, `sshlogin replay` and the tests run the same code.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::{
    correlate::{self, Correlator, process::ProcView},
    decode,
    enrich::{self, Enricher, UserDb},
    event::{Event, EventName},
};

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub records: u64,
    pub decode_errors: u64,
    pub events: BTreeMap<&'static str, u64>,
}

pub struct Pipeline<U: UserDb> {
    correlator: Correlator,
    enricher: Enricher<U>,
    pub stats: Stats,
}

impl<U: UserDb> Pipeline<U> {
    pub fn new(settings: correlate::Settings, view: Box<dyn ProcView + Send>, users: U) -> Self {
        let boot_id = settings.boot_id;
        Pipeline {
            correlator: Correlator::new(settings, view),
            enricher: Enricher::new(users, boot_id),
            stats: Stats::default(),
        }
    }

    /// Takes raw records; appends the finished events to `out`.
    pub fn records<I: IntoIterator<Item = Vec<u8>>>(&mut self, batch: I, out: &mut Vec<Event>) {
        let first = out.len();
        for raw in batch {
            self.stats.records += 1;
            match decode::decode(&raw) {
                Ok(record) => self.correlator.handle(record, out),
                Err(e) => {
                    self.stats.decode_errors += 1;
                    if self.stats.decode_errors <= 10 {
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

    /// Everything still pending.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let first = out.len();
        self.correlator.finish(out);
        self.finish_events(first, out);
    }

    fn finish_events(&mut self, first: usize, out: &mut [Event]) {
        if first == out.len() {
            return;
        }
        let offset = enrich::boot_to_unix_ns();
        let now = enrich::unix_now_ns();
        for e in &mut out[first..] {
            self.enricher.enrich(e, offset, now);
            *self.stats.events.entry(e.name.as_str()).or_default() += 1;
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

/// The count of each event name, for summaries.
pub fn count_line(stats: &Stats) -> String {
    let names = [EventName::SessionOpen, EventName::SessionClose, EventName::AuthFailure];
    names
        .iter()
        .map(|n| format!("{}={}", n.as_str(), stats.events.get(n.as_str()).unwrap_or(&0)))
        .collect::<Vec<_>>()
        .join(" ")
}
