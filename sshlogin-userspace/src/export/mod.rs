//! Where events go: stdout and/or an OTLP/HTTP endpoint, as configured.

pub mod otlp;
pub mod stdout;

use std::{io::BufWriter, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{config::Config, event::Event, resource::Resource};

/// Events that can wait for the OTLP exporter; beyond this they are dropped
/// and counted rather than stall the ring-buffer reader.
const OTLP_QUEUE: usize = 16 * 1024;
/// How long the exporter may keep retrying after shutdown began.
const DRAIN: Duration = Duration::from_secs(5);

pub struct Exporters {
    stdout: Option<stdout::StdoutSink<BufWriter<std::io::Stdout>>>,
    otlp: Option<(mpsc::Sender<Event>, JoinHandle<()>, Arc<otlp::Stats>)>,
    queue_full_drops: u64,
}

impl Exporters {
    /// Starts the configured exporters. Errors are configuration errors.
    pub fn start(config: &Config, resource: Resource) -> Result<Exporters, crate::config::ConfigError> {
        let otlp = match &config.otlp {
            Some(o) => {
                let exporter = otlp::Exporter::new(o, resource.clone())?;
                let stats = exporter.stats.clone();
                let (tx, rx) = mpsc::channel(OTLP_QUEUE);
                tracing::info!(url = %o.url, protocol = ?o.protocol, compression = ?o.compression, "exporting over OTLP/HTTP");
                Some((tx, tokio::spawn(exporter.run(rx, DRAIN)), stats))
            }
            None => None,
        };
        let stdout = config.stdout.then(|| {
            tracing::info!("printing events as JSON lines on stdout");
            stdout::StdoutSink::new(BufWriter::new(std::io::stdout()), resource)
        });
        Ok(Exporters { stdout, otlp, queue_full_drops: 0 })
    }

    pub fn send(&mut self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(out) = &mut self.stdout {
            out.write(events).context("writing events to stdout")?;
        }
        if let Some((tx, _, _)) = &self.otlp {
            for e in events {
                if tx.try_send(e.clone()).is_err() {
                    self.queue_full_drops += 1;
                    if self.queue_full_drops.is_power_of_two() {
                        tracing::warn!(dropped = self.queue_full_drops, "the OTLP queue is full; events dropped");
                    }
                }
            }
        }
        Ok(())
    }

    /// Closes the queues and waits for the exporters to flush.
    pub async fn finish(self) -> Vec<String> {
        let mut summary = Vec::new();
        if let Some((tx, task, stats)) = self.otlp {
            drop(tx);
            let _ = task.await;
            summary.push(stats.summary());
        }
        if self.queue_full_drops > 0 {
            summary.push(format!("{} events dropped on a full OTLP queue", self.queue_full_drops));
        }
        summary
    }
}
