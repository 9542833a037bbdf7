//! decode → admit → correlate → failures → enrich, for batches of raw records.
//! Synchronous and free of I/O except the user-database and /proc look-ups
//! behind traits, so the daemon, `sshlogin replay` and the tests run the
//! same code.

use std::sync::Arc;

use crate::{
    admit::{Admission, TreeCheck, scan::Scan},
    correlate::{self, Correlator, process::ProcView},
    decode::{self, Record},
    enrich::{Clock, Enricher, UserDb},
    event::Event,
    failures::{self, Failures},
    metrics::{Metrics, Refused, SessionDropped, Table},
    otel::EventName,
};

pub struct Pipeline<U: UserDb> {
    admission: Admission,
    correlator: Correlator,
    failures: Failures,
    enricher: Enricher<U>,
    clock: Box<dyn Clock + Send>,
    admitted: Vec<Record>,
    /// The latest kernel time of a record taken: how far the pipeline has
    /// got, which is behind the clock when records wait to be read.
    clock_ns: u64,
    pub metrics: Arc<Metrics>,
}

impl<U: UserDb> Pipeline<U> {
    pub fn new(
        settings: correlate::Settings,
        failures: failures::Settings,
        view: Box<dyn ProcView + Send>,
        check: Box<dyn TreeCheck>,
        users: U,
        clock: Box<dyn Clock + Send>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let boot_id = settings.boot_id;
        Pipeline {
            admission: Admission::new(check),
            correlator: Correlator::new(settings, view),
            failures: Failures::new(failures),
            enricher: Enricher::new(users, boot_id),
            clock,
            admitted: Vec::new(),
            clock_ns: 0,
            metrics,
        }
    }

    /// What the scan at start found running.
    pub fn seed(&mut self, scan: &Scan) {
        for tree in &scan.trees {
            self.admission.seed(*tree);
        }
        for (_, exe) in &scan.refused {
            self.admission.refused_at_start(exe);
        }
        self.correlator.seed(&scan.seeds);
        if !scan.refused.is_empty() {
            self.metrics.refused(Refused::Exe, scan.refused.len() as u64);
        }
    }

    /// Takes raw records; appends the finished events to `out`.
    pub fn records<R: AsRef<[u8]>, I: IntoIterator<Item = R>>(&mut self, batch: I, out: &mut Vec<Event>) {
        let first = out.len();
        for raw in batch {
            let raw = raw.as_ref();
            self.metrics.records.inc();
            match decode::decode(raw) {
                Ok(record) => {
                    self.clock_ns = self.clock_ns.max(record.meta().ktime_ns);
                    self.admission.admit(record, &mut self.admitted);
                    for record in self.admitted.drain(..) {
                        self.correlator.handle(record, out);
                    }
                }
                Err(e) => {
                    if self.metrics.decode_errors.inc() < 10 {
                        tracing::warn!(error = %e, len = raw.len(), "undecodable record dropped");
                    }
                }
            }
        }
        self.finish_events(first, out);
    }

    /// Timers: events that waited long enough. `now_ns` is CLOCK_BOOTTIME;
    /// `caught_up` says whether every record made so far has been taken.
    /// Until then time is what the records say: a record still waiting in
    /// a queue (the exec that shows a drop was a helper's) must not find its
    /// timer already fired.
    pub fn tick(&mut self, now_ns: u64, caught_up: bool, out: &mut Vec<Event>) {
        let now_ns = if caught_up { now_ns.max(self.clock_ns) } else { self.clock_ns };
        let first = out.len();
        self.admission.tick(now_ns);
        self.correlator.tick(now_ns, out);
        self.failures.tick(now_ns, out);
        if self.correlator.connections() > correlate::MAX_CONNS / 2 {
            self.correlator.reap(now_ns, out);
        }
        self.finish_events(first, out);
    }

    /// The kernel lost records: a monitor's exit may be among them, so the
    /// host is asked which connections are still there.
    pub fn records_lost(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let first = out.len();
        self.correlator.reap(now_ns, out);
        self.finish_events(first, out);
    }

    /// When the next timer is due (CLOCK_BOOTTIME ns), if one is pending.
    pub fn next_due(&self) -> Option<u64> {
        [self.admission.next_due(), self.correlator.next_due(), self.failures.next_due()].into_iter().flatten().min()
    }

    /// Sends every failure summary folded so far (before a heartbeat).
    pub fn flush_summaries(&mut self, out: &mut Vec<Event>) {
        let first = out.len();
        self.failures.flush(out);
        self.finish_events_folded(first, out);
    }

    /// One of sshlogin's own events, at `now_ns` (CLOCK_BOOTTIME).
    pub fn agent(&mut self, agent: crate::event::Agent, now_ns: u64, out: &mut Vec<Event>) {
        let first = out.len();
        let mut e = Event::new(crate::event::Kind::Agent(Box::new(agent)), now_ns);
        e.process.pid = std::process::id();
        out.push(e);
        self.finish_events_folded(first, out);
    }

    /// Everything still pending.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let first = out.len();
        self.admission.finish();
        self.correlator.finish(out);
        // Before the summaries of what the finish above let out.
        self.failures.pass(out, first);
        self.failures.finish(out);
        self.finish_events_folded(first, out);
    }

    fn finish_events(&mut self, first: usize, out: &mut Vec<Event>) {
        self.failures.pass(out, first);
        self.finish_events_folded(first, out);
    }

    /// Counts and enriches `out[first..]`, already through `failures`.
    fn finish_events_folded(&mut self, first: usize, out: &mut [Event]) {
        let refused = std::mem::take(&mut self.admission.refused);
        if refused.exe > 0 {
            self.metrics.refused(Refused::Exe, refused.exe);
        }
        if refused.vanished > 0 {
            self.metrics.refused(Refused::Vanished, refused.vanished);
        }
        let folded = self.failures.take_folded();
        if folded > 0 {
            self.metrics.failures_folded.inc_by(folded);
        }
        let activity = self.correlator.take_activity_counts();
        self.metrics.session_dropped(SessionDropped::RateLimited, activity.suppressed);
        self.metrics.session_dropped(SessionDropped::Unattributed, activity.unattributed);
        self.metrics.session_dropped(SessionDropped::Excluded, activity.excluded);
        let evicted = self.correlator.take_evictions();
        if evicted.connections > 0 {
            self.metrics.evicted(Table::Connections, evicted.connections);
        }
        if evicted.processes > 0 {
            self.metrics.evicted(Table::Processes, evicted.processes);
            tracing::warn!(n = evicted.processes, "too many sshd processes tracked; forgot the oldest of ended ones");
        }
        if first == out.len() {
            return;
        }
        let offset = self.clock.boot_to_unix_ns();
        let now = self.clock.unix_now_ns();
        for e in &mut out[first..] {
            self.enricher.enrich(e, offset, now);
            self.metrics.event(EventName::of(&e.kind).as_str());
        }
    }
}
