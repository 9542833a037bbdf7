//! sshlogin's own counters: what it saw, refused, dropped and delivered.
//! Served as OpenMetrics text (`--metrics-listen`) and summed up in one
//! log line at shutdown. docs in README ("Metrics").

use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context, Result};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

type Labels = Vec<(String, String)>;

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

fn sink_label(sink: &str, outcome: &str) -> Labels {
    vec![("sink".to_string(), sink.to_string()), ("outcome".to_string(), outcome.to_string())]
}

#[derive(Default)]
pub struct Metrics {
    registry: Registry,
    events: Family<Labels, Counter>,
    pub records: Counter,
    pub decode_errors: Counter,
    kernel_dropped: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    evicted: Family<Labels, Counter>,
    spool_events: Family<Labels, Gauge>,
    spool_bytes: Family<Labels, Gauge>,
    pub spool_dropped: Counter,
    pub queue_dropped: Counter,
    export_requests: Family<Labels, Counter>,
    export_events: Family<Labels, Counter>,
    export_retries: Family<Labels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut m = Metrics::default();
        let r = &mut m.registry;
        r.register("sshlogin_events", "Events produced, by event name", m.events.clone());
        r.register("sshlogin_records_decoded", "Records read from the kernel ring buffer", m.records.clone());
        r.register("sshlogin_decode_errors", "Records that could not be decoded", m.decode_errors.clone());
        r.register(
            "sshlogin_kernel_dropped",
            "Records the kernel half could not deliver (ringbuf_full, read_failed, pending_full)",
            m.kernel_dropped.clone(),
        );
        r.register(
            "sshlogin_refused",
            "Records refused as not from the host's sshd (exe, vanished, audit_not_root, syslog_not_root, tree)",
            m.refused.clone(),
        );
        r.register(
            "sshlogin_evicted",
            "Entries dropped to keep a table bounded (connections, processes)",
            m.evicted.clone(),
        );
        r.register("sshlogin_spool_events", "Events waiting in a network exporter's spool", m.spool_events.clone());
        r.register(
            "sshlogin_spool_bytes",
            "Bytes of events waiting in a network exporter's spool",
            m.spool_bytes.clone(),
        );
        r.register(
            "sshlogin_spool_dropped",
            "Oldest events dropped because the spool was full",
            m.spool_dropped.clone(),
        );
        r.register(
            "sshlogin_queue_dropped",
            "Events dropped because the spool writer could not keep up",
            m.queue_dropped.clone(),
        );
        r.register(
            "sshlogin_export_requests",
            "Export requests by exporter (otlp, webhook) and outcome (ok, partial, failed_retryable, dropped)",
            m.export_requests.clone(),
        );
        r.register(
            "sshlogin_export_events",
            "Events by exporter and outcome (sent, rejected, dropped)",
            m.export_events.clone(),
        );
        r.register("sshlogin_export_retries", "Export requests retried, by exporter", m.export_retries.clone());
        Arc::new(m)
    }

    pub fn event(&self, name: &str) {
        self.events.get_or_create(&label("event", name)).inc();
    }

    pub fn events(&self, name: &str) -> u64 {
        self.events.get_or_create(&label("event", name)).get()
    }

    pub fn kernel_dropped(&self, reason: &str, n: u64) {
        self.kernel_dropped.get_or_create(&label("reason", reason)).inc_by(n);
    }

    pub fn refused(&self, reason: &str, n: u64) {
        self.refused.get_or_create(&label("reason", reason)).inc_by(n);
    }

    pub fn evicted(&self, table: &str, n: u64) {
        self.evicted.get_or_create(&label("table", table)).inc_by(n);
    }

    pub fn evicted_count(&self, table: &str) -> u64 {
        self.evicted.get_or_create(&label("table", table)).get()
    }

    pub fn refused_count(&self, reason: &str) -> u64 {
        self.refused.get_or_create(&label("reason", reason)).get()
    }

    pub fn export_request(&self, sink: &str, outcome: &str) {
        self.export_requests.get_or_create(&sink_label(sink, outcome)).inc();
    }

    pub fn export_events(&self, sink: &str, outcome: &str, n: u64) {
        self.export_events.get_or_create(&sink_label(sink, outcome)).inc_by(n);
    }

    pub fn export_retry(&self, sink: &str) {
        self.export_retries.get_or_create(&label("sink", sink)).inc();
    }

    /// Events of `outcome`, all exporters together.
    pub fn exported(&self, outcome: &str) -> u64 {
        ["otlp", "webhook"].iter().map(|s| self.export_events.get_or_create(&sink_label(s, outcome)).get()).sum()
    }

    pub fn retries(&self) -> u64 {
        ["otlp", "webhook"].iter().map(|s| self.export_retries.get_or_create(&label("sink", s)).get()).sum()
    }

    pub fn set_spool(&self, sink: &str, depth: crate::spool::Depth) {
        self.spool_events.get_or_create(&label("sink", sink)).set(depth.events as i64);
        self.spool_bytes.get_or_create(&label("sink", sink)).set(depth.bytes as i64);
    }

    /// Events waiting in every spool.
    pub fn spooled(&self) -> i64 {
        ["otlp", "webhook"].iter().map(|s| self.spool_events.get_or_create(&label("sink", s)).get()).sum()
    }

    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// The shutdown summary.
    pub fn summary(&self) -> String {
        let refused: u64 = ["audit_not_root", "syslog_not_root", "exe", "vanished", "tree"]
            .iter()
            .map(|r| self.refused_count(r))
            .sum();
        format!(
            "events: open={} close={} failure={}; records={} decode_errors={} refused={}; \
             exported: sent={} rejected={} dropped={} retries={}; spool: {} waiting, {} dropped; queue dropped={}",
            self.events("ssh.session.open"),
            self.events("ssh.session.close"),
            self.events("ssh.auth.failure"),
            self.records.get(),
            self.decode_errors.get(),
            refused,
            self.exported("sent"),
            self.exported("rejected"),
            self.exported("dropped"),
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
        m.kernel_dropped("ringbuf_full", 3);
        m.refused("exe", 1);
        m.export_events("otlp", "sent", 5);
        let text = m.render();
        assert!(text.contains("sshlogin_events_total{event=\"ssh.session.open\"} 1"), "{text}");
        assert!(text.contains("sshlogin_kernel_dropped_total{reason=\"ringbuf_full\"} 3"), "{text}");
        assert!(text.contains("sshlogin_refused_total{reason=\"exe\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert!(m.summary().contains("open=1"));
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
