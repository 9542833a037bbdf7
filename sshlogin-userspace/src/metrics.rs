//! sshlogin's own counters: what it saw, refused, dropped and delivered.
//! Served as OpenMetrics text (`--metrics-listen`) and summed up in one
//! log line at shutdown. docs in README ("Metrics").

use std::{net::SocketAddr, sync::Arc};

use crate::{config::SinkKind, event::Counts, otel::EventName};
use anyhow::{Context, Result};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// A label's values as an enum, so that a misspelt label cannot compile;
/// the strings are the ones the README's metrics table documents.
macro_rules! label_values {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$v,)*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_values! {
    /// Why the kernel half could not deliver records.
    KernelDropped {
        RingbufFull = "ringbuf_full",
        ReadFailed = "read_failed",
        PendingFull = "pending_full",
        MembersFull = "members_full",
        ForwardShed = "forward_shed",
    }
}

label_values! {
    /// Why session activity (execs, escalations) was not reported. Never
    /// a login record: those travel apart.
    SessionDropped {
        /// The kernel's session map was full.
        SessionsFull = "sessions_full",
        /// The login uid had its quota of followed processes.
        SessionQuota = "session_quota",
        /// The activity ring buffer was full.
        ActivityFull = "activity_full",
        /// Execs not recorded to keep the ring's last quarter for escalations.
        ActivityShed = "activity_shed",
        /// The per-session rate limit.
        RateLimited = "rate_limited",
        /// Of no opened session (a helper's processes).
        Unattributed = "unattributed",
        /// `[session] exclude`.
        Excluded = "excluded",
    }
}

label_values! {
    /// Why records were refused as not from the host's sshd.
    Refused {
        /// The tree's binary is not one of the host's sshd binaries.
        Exe = "exe",
        /// No process of the tree could be checked.
        Vanished = "vanished",
        AuditNotRoot = "audit_not_root",
        SyslogNotRoot = "syslog_not_root",
        /// Records the kernel did not make for a refused tree.
        Tree = "tree",
        /// Audit messages from unprivileged session processes (forgeries).
        SessionAuditUnprivileged = "session_audit_unprivileged",
    }
}

label_values! {
    /// A bounded table that drops entries when full.
    Table {
        Connections = "connections",
        Processes = "processes",
    }
}

label_values! {
    /// What became of one export request.
    Request {
        Ok = "ok",
        Partial = "partial",
        FailedRetryable = "failed_retryable",
        /// Refused with an answer not about the batch (401, 404...): kept.
        Refused = "refused",
        Dropped = "dropped",
    }
}

label_values! {
    /// What became of exported events.
    Delivery {
        Sent = "sent",
        Rejected = "rejected",
        Dropped = "dropped",
    }
}

const SINKS: [SinkKind; 2] = [SinkKind::Otlp, SinkKind::Webhook];

impl EncodeLabelValue for SinkKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KernelLabel {
    reason: KernelDropped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabel {
    reason: SessionDropped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabel {
    reason: Refused,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: Table,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: SinkKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    sink: SinkKind,
    outcome: Request,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    sink: SinkKind,
    outcome: Delivery,
}

/// Every counter and gauge; [`Metrics::new`] says what each counts.
#[derive(Default)]
pub struct Metrics {
    registry: Registry,
    // What the ring buffer delivered and what became of it.
    pub records: Counter,
    pub decode_errors: Counter,
    pub spool_dropped: Counter,
    pub queue_dropped: Counter,
    pub spool_errors: Counter,
    pub stdout_dropped: Counter,
    pub failures_folded: Counter,
    pub first_seen_errors: Counter,
    kernel_dropped: Family<KernelLabel, Counter>,
    session_dropped: Family<SessionLabel, Counter>,
    refused: Family<RefusedLabel, Counter>,
    evicted: Family<TableLabel, Counter>,
    events: Family<EventLabel, Counter>,
    // By exporter.
    spool_events: Family<SinkLabel, Gauge>,
    spool_bytes: Family<SinkLabel, Gauge>,
    export_requests: Family<RequestLabels, Counter>,
    export_events: Family<DeliveryLabels, Counter>,
    export_retries: Family<SinkLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut m = Metrics::default();
        let r = &mut m.registry;
        // (name, help, metric)
        macro_rules! register {
            ($(($name:literal, $help:literal, $metric:ident),)*) => {
                $(r.register($name, $help, m.$metric.clone());)*
            };
        }
        register! {
            ("sshlogin_events", "Events produced, by event name", events),
            ("sshlogin_records_decoded", "Records read from the kernel ring buffer", records),
            ("sshlogin_decode_errors", "Records that could not be decoded", decode_errors),
            ("sshlogin_kernel_dropped", "Records the kernel half could not deliver (ringbuf_full, read_failed, \
              pending_full, members_full, forward_shed)", kernel_dropped),
            ("sshlogin_session_dropped", "Session activity not reported (sessions_full, session_quota, \
              activity_full, activity_shed, rate_limited, unattributed, excluded); never a login", session_dropped),
            ("sshlogin_refused", "Records refused as not from the host's sshd (exe, vanished, audit_not_root, \
              syslog_not_root, tree, session_audit_unprivileged)", refused),
            ("sshlogin_evicted", "Entries dropped to keep a table bounded (connections, processes)", evicted),
            ("sshlogin_spool_events", "Events waiting in a network exporter's spool", spool_events),
            ("sshlogin_spool_bytes", "Bytes of events waiting in a network exporter's spool", spool_bytes),
            ("sshlogin_spool_dropped", "Oldest events dropped because the spool was full", spool_dropped),
            ("sshlogin_queue_dropped", "Events dropped because the spool writer could not keep up", queue_dropped),
            ("sshlogin_stdout_dropped", "Events not printed because stdout was not read fast enough (with a \
              network exporter, which still got them)", stdout_dropped),
            ("sshlogin_failures_folded", "Failed logins folded into ssh.auth.failure.summary events \
              ([failures] mode = \"summary\")", failures_folded),
            ("sshlogin_first_seen_errors", "First-seen store operations that failed (opens went out without \
              ssh.first_seen marks; the store is opened again)", first_seen_errors),
            ("sshlogin_spool_errors", "Spool reads or writes that failed (the file is opened again and the \
              operation retried)", spool_errors),
            ("sshlogin_export_requests", "Export requests by exporter (otlp, webhook) and outcome (ok, partial, \
              failed_retryable, dropped)", export_requests),
            ("sshlogin_export_events", "Events by exporter and outcome (sent, rejected, dropped)", export_events),
            ("sshlogin_export_retries", "Export requests retried, by exporter", export_retries),
        }
        Arc::new(m)
    }

    pub fn event(&self, name: &str) {
        self.events.get_or_create(&EventLabel { event: name.to_string() }).inc();
    }

    pub fn events(&self, name: &str) -> u64 {
        self.events.get_or_create(&EventLabel { event: name.to_string() }).get()
    }

    pub fn kernel_dropped(&self, reason: KernelDropped, n: u64) {
        self.kernel_dropped.get_or_create(&KernelLabel { reason }).inc_by(n);
    }

    pub fn session_dropped(&self, reason: SessionDropped, n: u64) {
        if n > 0 {
            self.session_dropped.get_or_create(&SessionLabel { reason }).inc_by(n);
        }
    }

    pub fn session_dropped_count(&self, reason: SessionDropped) -> u64 {
        self.session_dropped.get_or_create(&SessionLabel { reason }).get()
    }

    pub fn refused(&self, reason: Refused, n: u64) {
        self.refused.get_or_create(&RefusedLabel { reason }).inc_by(n);
    }

    pub fn evicted(&self, table: Table, n: u64) {
        self.evicted.get_or_create(&TableLabel { table }).inc_by(n);
    }

    pub fn evicted_count(&self, table: Table) -> u64 {
        self.evicted.get_or_create(&TableLabel { table }).get()
    }

    pub fn refused_count(&self, reason: Refused) -> u64 {
        self.refused.get_or_create(&RefusedLabel { reason }).get()
    }

    pub fn export_request(&self, sink: SinkKind, outcome: Request) {
        self.export_requests.get_or_create(&RequestLabels { sink, outcome }).inc();
    }

    pub fn export_events(&self, sink: SinkKind, outcome: Delivery, n: u64) {
        self.export_events.get_or_create(&DeliveryLabels { sink, outcome }).inc_by(n);
    }

    pub fn export_retry(&self, sink: SinkKind) {
        self.export_retries.get_or_create(&SinkLabel { sink }).inc();
    }

    /// Events of `outcome`, all exporters together.
    pub fn exported(&self, outcome: Delivery) -> u64 {
        SINKS.iter().map(|&sink| self.export_events.get_or_create(&DeliveryLabels { sink, outcome }).get()).sum()
    }

    pub fn retries(&self) -> u64 {
        SINKS.iter().map(|&sink| self.export_retries.get_or_create(&SinkLabel { sink }).get()).sum()
    }

    pub fn set_spool(&self, sink: SinkKind, depth: crate::spool::Depth) {
        self.spool_events.get_or_create(&SinkLabel { sink }).set(depth.events as i64);
        self.spool_bytes.get_or_create(&SinkLabel { sink }).set(depth.bytes as i64);
    }

    /// Events waiting in every spool.
    pub fn spooled(&self) -> i64 {
        SINKS.iter().map(|&sink| self.spool_events.get_or_create(&SinkLabel { sink }).get()).sum()
    }

    /// Requests of `outcome`, all exporters together.
    pub fn requests(&self, outcome: Request) -> u64 {
        SINKS.iter().map(|&sink| self.export_requests.get_or_create(&RequestLabels { sink, outcome }).get()).sum()
    }

    /// Every counter since start (the spool depth as it is now), for the
    /// lifecycle events.
    pub fn counts(&self) -> Counts {
        let kernel = |r: KernelDropped| self.kernel_dropped.get_or_create(&KernelLabel { reason: r }).get();
        Counts {
            events: EventName::ALL.iter().map(|n| (n.as_str().to_string(), self.events(n.as_str()))).collect(),
            kernel_dropped: KernelDropped::ALL.iter().map(|&r| (r.as_str().to_string(), kernel(r))).collect(),
            refused: Refused::ALL.iter().map(|&r| (r.as_str().to_string(), self.refused_count(r))).collect(),
            decode_errors: self.decode_errors.get(),
            failures_folded: self.failures_folded.get(),
            export_failures: [Request::FailedRetryable, Request::Refused, Request::Dropped]
                .into_iter()
                .map(|o| self.requests(o))
                .sum(),
            events_dropped: self.spool_dropped.get()
                + self.queue_dropped.get()
                + self.exported(Delivery::Dropped)
                + self.exported(Delivery::Rejected),
            spool_events: self.spooled(),
        }
    }

    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// The shutdown summary.
    pub fn summary(&self) -> String {
        let refused: u64 = Refused::ALL.iter().map(|&r| self.refused_count(r)).sum();
        format!(
            "events: open={} close={} failure={}; records={} decode_errors={} refused={}; \
             exported: sent={} rejected={} dropped={} retries={}; spool: {} waiting, {} dropped; queue dropped={}",
            self.events("ssh.session.open"),
            self.events("ssh.session.close"),
            self.events("ssh.auth.failure"),
            self.records.get(),
            self.decode_errors.get(),
            refused,
            self.exported(Delivery::Sent),
            self.exported(Delivery::Rejected),
            self.exported(Delivery::Dropped),
            self.retries(),
            self.spooled(),
            self.spool_dropped.get(),
            self.queue_dropped.get(),
        )
    }
}

/// Serves `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("--metrics-listen {addr}: cannot listen"))?;
    tracing::info!(%addr, "serving metrics at /metrics");
    Ok(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if head.starts_with("GET ") && (path == "/metrics" || path == "/") {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "only GET /metrics here\n".to_string())
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_with_labels() {
        let m = Metrics::new();
        m.event("ssh.session.open");
        m.kernel_dropped(KernelDropped::RingbufFull, 3);
        m.refused(Refused::Exe, 1);
        m.export_events(SinkKind::Otlp, Delivery::Sent, 5);
        let text = m.render();
        assert!(text.contains("sshlogin_events_total{event=\"ssh.session.open\"} 1"), "{text}");
        assert!(text.contains("sshlogin_kernel_dropped_total{reason=\"ringbuf_full\"} 3"), "{text}");
        assert!(text.contains("sshlogin_refused_total{reason=\"exe\"} 1"), "{text}");
        assert!(text.contains("sshlogin_export_events_total{sink=\"otlp\",outcome=\"sent\"} 5"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert!(m.summary().contains("open=1"));
        let c = m.counts();
        assert!(c.events.contains(&("ssh.session.open".into(), 1)), "{c:?}");
        assert!(c.kernel_dropped.contains(&("ringbuf_full".into(), 3)), "{c:?}");
        assert!(c.refused.contains(&("exe".into(), 1)), "{c:?}");
        m.export_request(SinkKind::Webhook, Request::Refused);
        m.export_request(SinkKind::Otlp, Request::Ok);
        m.spool_dropped.inc();
        let d = m.counts().since(&c);
        assert_eq!((d.export_failures, d.events_dropped), (1, 1));
        assert!(d.events.iter().all(|(_, n)| *n == 0), "{d:?}");
    }

    #[tokio::test]
    async fn serves_over_http() {
        let m = Metrics::new();
        m.records.inc_by(7);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let _server = serve(([127, 0, 0, 1], port).into(), m).await.unwrap();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("sshlogin_records_decoded_total 7"), "{out}");
    }
}
