//! Where events go: stdout and/or an OTLP/HTTP endpoint through the spool.
//!
//! The pipeline never waits on the network: events for OTLP go into a
//! bounded queue to the spool writer (a full queue drops and counts), the
//! writer commits them to disk, and the exporter sends from the spool.

pub mod otlp;
pub mod stdout;

use std::{io::BufWriter, sync::Arc};

use anyhow::{Context, Result};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};

use crate::{config::Config, event::Event, metrics::Metrics, resource::Resource, spool::Spool};

/// Batches of events that may wait for the spool writer; beyond this they
/// are dropped and counted rather than stall the ring-buffer reader.
const SPOOL_QUEUE: usize = 4096;

struct Network {
    queue: mpsc::Sender<Vec<Event>>,
    writer: JoinHandle<()>,
    exporter: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

pub struct Exporters {
    stdout: Option<stdout::StdoutSink<BufWriter<std::io::Stdout>>>,
    network: Option<Network>,
    metrics: Arc<Metrics>,
}

impl Exporters {
    /// Starts the configured exporters. Bad settings are configuration
    /// errors; a spool that cannot be opened is an error naming its path.
    pub async fn start(config: &Config, resource: Resource, metrics: Arc<Metrics>) -> Result<Exporters> {
        let network = match &config.otlp {
            Some(o) => {
                let exporter = otlp::Exporter::new(o, resource.clone(), metrics.clone())?;
                let dir = config.spool.dir.clone();
                let max = config.spool.max_bytes;
                let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, max))
                    .await?
                    .with_context(|| format!("the spool in {}", config.spool.dir.display()))?;
                let spool = Arc::new(spool);
                metrics.set_spool(spool.depth());
                let arrived = Arc::new(Notify::new());
                let (queue, rx) = mpsc::channel(SPOOL_QUEUE);
                let (stop, stop_rx) = watch::channel(false);
                tracing::info!(
                    url = %o.url, protocol = ?o.protocol, compression = ?o.compression,
                    spool = %spool.path().display(), "exporting over OTLP/HTTP"
                );
                if spool.depth().events > 0 {
                    arrived.notify_one();
                }
                let writer = tokio::spawn(write_spool(rx, spool.clone(), arrived.clone(), metrics.clone()));
                let exporter = tokio::spawn(exporter.run(spool, arrived, stop_rx, o.drain_timeout));
                Some(Network { queue, writer, exporter, stop })
            }
            None => None,
        };
        let stdout = config.stdout.then(|| {
            tracing::info!("printing events as JSON lines on stdout");
            stdout::StdoutSink::new(BufWriter::new(std::io::stdout()), resource)
        });
        Ok(Exporters { stdout, network, metrics })
    }

    pub fn send(&mut self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(out) = &mut self.stdout {
            out.write(events).context("writing events to stdout")?;
        }
        if let Some(n) = &self.network
            && n.queue.try_send(events.to_vec()).is_err()
        {
            let before = self.metrics.queue_dropped.inc_by(events.len() as u64);
            if before == 0 || (before + events.len() as u64).is_power_of_two() {
                tracing::warn!("the spool writer is behind; events dropped (sshlogin_queue_dropped_total)");
            }
        }
        Ok(())
    }

    /// Commits what is queued to the spool, lets the exporter send for its
    /// drain time, and returns. What is left stays spooled for next start.
    pub async fn finish(self) {
        if let Some(n) = self.network {
            drop(n.queue);
            let _ = n.writer.await;
            let _ = n.stop.send(true);
            let _ = n.exporter.await;
        }
    }
}

/// Commits each batch from the pipeline to the spool and wakes the exporter.
async fn write_spool(
    mut rx: mpsc::Receiver<Vec<Event>>,
    spool: Arc<Spool>,
    arrived: Arc<Notify>,
    metrics: Arc<Metrics>,
) {
    while let Some(mut batch) = rx.recv().await {
        // Take what else is queued: one commit (one fsync) for all of it.
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let n = batch.len() as u64;
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.append(&batch)).await {
            Ok(Ok(dropped)) => {
                if dropped > 0 {
                    metrics.spool_dropped.inc_by(dropped);
                    tracing::warn!(
                        dropped,
                        "the spool is full: dropped the oldest events (sshlogin_spool_dropped_total)"
                    );
                }
            }
            Ok(Err(e)) => {
                metrics.queue_dropped.inc_by(n);
                tracing::error!(events = n, "cannot write to the spool, events lost: {e:#}");
            }
            Err(e) => tracing::error!("the spool writer failed: {e}"),
        }
        metrics.set_spool(spool.depth());
        arrived.notify_one();
    }
}
