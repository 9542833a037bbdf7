//! Where events go: stdout, an OTLP/HTTP endpoint and a webhook, the last
//! two through their own spools.
//!
//! The pipeline never waits on the network: events for a network exporter
//! go into a bounded queue to its spool writer (a full queue drops and
//! counts), the writer commits them to disk, and the exporter sends from the
//! spool.

pub mod http;
pub mod otlp;
pub mod retry;
pub mod stdout;
mod writer;

use std::{io::BufWriter, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};

use crate::{
    config::{Config, Sink},
    event::Event,
    metrics::Metrics,
    otel::{self, LogRecord},
    resource::Resource,
    spool::Store,
};
use writer::{Fatal, Writer};

/// Batches of events that may wait for the spool writer; beyond this they
/// are dropped and counted rather than stall the ring-buffer reader.
const SPOOL_QUEUE: usize = 4096;

struct Network {
    queue: mpsc::Sender<Vec<LogRecord>>,
    writer: JoinHandle<()>,
    exporter: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

pub struct Exporters {
    stdout: Option<stdout::StdoutThread>,
    network: Vec<Network>,
    metrics: Arc<Metrics>,
    /// Set by a spool writer that gave up: `run` ends with it.
    fatal: Fatal,
}

impl Exporters {
    /// Starts the configured exporters. Bad settings are configuration
    /// errors; a spool that cannot be opened is an error naming its path.
    pub async fn start(config: &Config, resource: Resource, metrics: Arc<Metrics>) -> Result<Exporters> {
        let sinks: Vec<&Sink> = config.otlp.iter().chain(config.webhook.iter()).collect();
        // Every setting (token, certificates) is checked before anything is
        // opened: a bad one is a configuration error, whatever the disk says.
        let mut exporters = Vec::new();
        for sink in &sinks {
            exporters.push(http::Exporter::new(sink, resource.clone(), metrics.clone())?);
        }
        let mut network = Vec::new();
        let fatal = Fatal::default();
        if !sinks.is_empty() {
            let dir = config.spool.dir.clone();
            let store = tokio::task::spawn_blocking(move || Store::open(&dir))
                .await?
                .with_context(|| format!("the spool in {}", config.spool.dir.display()))?;
            for (sink, exporter) in sinks.into_iter().zip(exporters) {
                network.push(start_sink(
                    sink,
                    exporter,
                    &store,
                    config.spool.max_bytes,
                    metrics.clone(),
                    fatal.clone(),
                )?);
            }
        }
        let stdout = match config.stdout {
            true => {
                tracing::info!("printing events as JSON lines on stdout");
                Some(stdout::StdoutThread::start(BufWriter::new(std::io::stdout()), resource)?)
            }
            false => None,
        };
        Ok(Exporters { stdout, network, metrics, fatal })
    }

    /// Maps `events` to log records, once, and hands them to every exporter:
    /// the spools first, so that stdout can neither stop nor delay them. A
    /// stdout that fails (a closed pipe) is given up with an error line when
    /// a network exporter carries the events; it ends `run` only when stdout
    /// is the one place they go.
    pub fn send(&mut self, events: &[Event]) -> Result<()> {
        if let Some(why) = self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            anyhow::bail!(why);
        }
        if events.is_empty() {
            return Ok(());
        }
        let records: Vec<LogRecord> = events.iter().map(otel::log_record).collect();
        for n in &self.network {
            if n.queue.try_send(records.clone()).is_err() {
                let before = self.metrics.queue_dropped.inc_by(events.len() as u64);
                if before == 0 || (before + events.len() as u64).is_power_of_two() {
                    tracing::warn!("the spool writer is behind; events dropped (sshlogin_queue_dropped_total)");
                }
            }
        }
        if let Some(out) = &self.stdout {
            // Waits only when stdout is where every event goes.
            match out.send(records, self.network.is_empty()) {
                Ok(true) => {}
                Ok(false) => {
                    let before = self.metrics.stdout_dropped.inc_by(events.len() as u64);
                    if before == 0 || (before + events.len() as u64).is_power_of_two() {
                        tracing::warn!(
                            "stdout is not read fast enough; events not printed (sshlogin_stdout_dropped_total)"
                        );
                    }
                }
                Err(e) if self.network.is_empty() => anyhow::bail!("writing events to stdout: {e}"),
                Err(e) => {
                    tracing::error!(
                        "cannot write events to stdout ({e}); no longer printing them, the network exporters go on"
                    );
                    self.stdout = None;
                }
            }
        }
        Ok(())
    }

    /// Commits what is queued to the spool, lets the exporter send for its
    /// drain time, and returns. What is left stays spooled for next start.
    pub async fn finish(mut self) {
        // Everything into the spools first (the writers batch their
        // commits), then the exporters drain: an exporter told to stop
        // while the last events (sshlogin.stop) were still on their way to
        // its spool would find it empty and leave them for the next start.
        let network = std::mem::take(&mut self.network);
        let mut exporters = Vec::new();
        for n in network {
            drop(n.queue);
            let _ = n.writer.await;
            exporters.push((n.stop, n.exporter));
        }
        for (stop, _) in &exporters {
            let _ = stop.send(true);
        }
        for (_, exporter) in exporters {
            let _ = exporter.await;
        }
        // Last: a stdout nobody reads must not hold up the spools' drain.
        if let Some(out) = self.stdout.take() {
            let flushed = tokio::task::spawn_blocking(move || out.finish());
            if tokio::time::timeout(Duration::from_secs(5), flushed).await.is_err() {
                tracing::warn!("stdout is not being read; not waiting for the last lines");
            }
        }
    }
}

/// A spool (its own table), its writer and its exporter for one sink.
fn start_sink(
    sink: &Sink,
    exporter: http::Exporter,
    store: &Store,
    max_bytes: u64,
    metrics: Arc<Metrics>,
    fatal: Fatal,
) -> Result<Network> {
    let table = match sink.kind {
        crate::config::SinkKind::Otlp => "otlp_events",
        crate::config::SinkKind::Webhook => "webhook_events",
    };
    let spool = Arc::new(store.spool(table, max_bytes).with_context(|| format!("the {} spool", sink.kind.name()))?);
    metrics.set_spool(sink.kind, spool.depth());
    let arrived = Arc::new(Notify::new());
    let (queue, rx) = mpsc::channel(SPOOL_QUEUE);
    let (stop, stop_rx) = watch::channel(false);
    tracing::info!(
        sink = sink.kind.name(), url = %crate::config::redact_url(&sink.url), format = ?sink.format, compression = ?sink.compression,
        spool = %spool.path().display(), "exporting"
    );
    if spool.depth().events > 0 {
        arrived.notify_one();
    }
    let writer = Writer { spool: spool.clone(), arrived: arrived.clone(), metrics, sink: sink.kind, fatal };
    let writer = tokio::spawn(writer.run(rx));
    let exporter = tokio::spawn(exporter.run(spool, arrived, stop_rx, sink.drain_timeout));
    Ok(Network { queue, writer, exporter, stop })
}
