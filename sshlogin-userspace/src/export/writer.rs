//! The spool writer of one network exporter: commits each batch from the
//! pipeline to the spool (one fsync for all that is queued) and wakes the
//! exporter. Under load it commits at most once per [`COMMIT_WINDOW`]:
//! what arrives within the window after a commit waits for the next one,
//! all in one transaction. An event is in the exporter's hands only once
//! committed, so this delays events by at most the window and weakens
//! nothing. A write that fails (a full disk) is retried, the spool file
//! opened again first, with the events held in memory meanwhile, bounded;
//! after [`GIVE_UP`] of nothing but failures the daemon exits non-zero so
//! that the service manager restarts it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{Notify, mpsc};

use crate::{config::SinkKind, metrics::Metrics, otel::LogRecord, spool::Spool};

/// Events held in memory while the spool cannot be written; beyond this
/// the oldest are dropped, counted and logged.
pub const HELD_MAX: usize = 16_384;
/// How long the spool may fail without one good write before the daemon
/// gives up (exits non-zero).
pub const GIVE_UP: Duration = Duration::from_secs(600);
/// After a commit, what arrives within this waits to go into the next one
/// together. The first batch after a quiet spell is committed at once.
pub const COMMIT_WINDOW: Duration = Duration::from_millis(10);
const FIRST_WAIT: Duration = Duration::from_millis(500);
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Why the daemon must stop, set by a writer that gave up.
pub type Fatal = Arc<Mutex<Option<String>>>;

pub struct Writer {
    pub spool: Arc<Spool>,
    pub arrived: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub sink: SinkKind,
    pub fatal: Fatal,
}

impl Writer {
    pub async fn run(self, mut rx: mpsc::Receiver<Vec<LogRecord>>) {
        let mut held: Vec<LogRecord> = Vec::new();
        let mut closed = false;
        let mut failing_since: Option<Instant> = None;
        let mut wait = FIRST_WAIT;
        let mut committed: Option<Instant> = None;
        loop {
            if held.is_empty() && !closed {
                match rx.recv().await {
                    Some(batch) => held = batch,
                    None => closed = true,
                }
                if let Some(due) = committed.map(|at| at + COMMIT_WINDOW).filter(|due| *due > Instant::now())
                    && !closed
                {
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            // Take what else is queued: one commit (one fsync) for all of it.
            loop {
                match rx.try_recv() {
                    Ok(more) => held.extend(more),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    // Shutdown: the loop below must not retry for ever.
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if held.is_empty() {
                return;
            }
            if held.len() > HELD_MAX {
                let excess = held.len() - HELD_MAX;
                held.drain(..excess);
                self.metrics.queue_dropped.inc_by(excess as u64);
                tracing::error!(lost = excess, "the spool cannot be written; dropped the oldest events held in memory");
            }
            let s = self.spool.clone();
            let started = Instant::now();
            let (written, batch) = match tokio::task::spawn_blocking(move || (s.append(&held), held)).await {
                Ok(done) => done,
                Err(e) => {
                    let why = format!("the spool writer failed: {e}");
                    tracing::error!("{why}");
                    *self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
                    return;
                }
            };
            match written {
                Ok(dropped) => {
                    if dropped > 0 {
                        self.metrics.spool_dropped.inc_by(dropped);
                        tracing::warn!(
                            dropped,
                            "the spool is full: dropped the oldest events (sshlogin_spool_dropped_total)"
                        );
                    }
                    if let Some(since) = failing_since.take() {
                        tracing::info!("the spool is written again after {:.0?}", since.elapsed());
                    }
                    wait = FIRST_WAIT;
                    committed = Some(started);
                    held = Vec::new();
                    self.metrics.set_spool(self.sink, self.spool.depth());
                    self.arrived.notify_one();
                }
                Err(e) => {
                    held = batch;
                    self.metrics.spool_errors.inc();
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if closed {
                        self.metrics.queue_dropped.inc_by(held.len() as u64);
                        tracing::error!(lost = held.len(), "stopping with the spool unwritable: {e:#}");
                        return;
                    }
                    if since.elapsed() >= GIVE_UP {
                        self.metrics.queue_dropped.inc_by(held.len() as u64);
                        let why = format!("the spool could not be written for {:.0?}: {e:#}", since.elapsed());
                        tracing::error!(held = held.len(), "{why}; exiting so the service manager restarts sshlogin");
                        *self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
                        return;
                    }
                    tracing::error!(
                        held = held.len(),
                        "cannot write to the spool ({e:#}); the events are held in memory, retried in {wait:.1?}"
                    );
                    // At most MAX_WAIT: a shutdown meanwhile is seen at the
                    // next try, well within the unit's stop timeout.
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_WAIT);
                    let s = self.spool.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.reopen()).await {
                        tracing::warn!("{e:#}");
                    }
                }
            }
        }
    }
}
