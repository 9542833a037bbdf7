//! A network exporter (OTLP/HTTP or webhook): takes the oldest events from
//! its spool in batches, sends each as one request, retries as the OTLP
//! specification says, and removes a batch from the spool once it was
//! delivered or refused for good. While the endpoint is unreachable the
//! events wait in the spool.

mod token;

use std::{
    fs,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use tokio::sync::{Notify, watch};

use super::{
    otlp::{encode, response},
    retry::{self, Backoff, Decision},
    stdout,
};
use token::TokenFile;

use crate::{
    config::{ConfigError, Format, Sink, redact_url},
    metrics::{Delivery, Metrics, Request},
    otel::LogRecord,
    resource::Resource,
    spool::Spool,
};

/// Requests in flight at once for a webhook that takes one event per
/// request: enough to drain a backlog at thousands of events a second on a
/// nearby receiver without opening a connection storm.
pub const IN_FLIGHT: usize = 16;

/// Waits between tries after a spool read or removal failed.
const SPOOL_FIRST_WAIT: Duration = Duration::from_millis(500);
const SPOOL_MAX_WAIT: Duration = Duration::from_secs(30);

/// How one batch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; `rejected` of its records were refused (partial success).
    Delivered { rejected: i64 },
    /// Refused for good (a status that must not be retried).
    Dropped { reason: String },
    /// Not delivered yet: retries ran out of time or shutdown began. The
    /// batch stays in the spool.
    Retryable { reason: String },
}

pub struct Exporter {
    client: reqwest::Client,
    headers: HeaderMap,
    token: Option<Mutex<TokenFile>>,
    /// The endpoint's: it outlives each batch's try.
    backoff: Mutex<Backoff>,
    config: Sink,
    resource: Resource,
    metrics: Arc<Metrics>,
}

fn read(key: &str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    // `key` is the setting's name under the exporter's section.
    fs::read(path).map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

impl Exporter {
    /// Builds the HTTP client: TLS roots, client certificate, headers, token.
    pub fn new(config: &Sink, resource: Resource, metrics: Arc<Metrics>) -> Result<Exporter, ConfigError> {
        let key = |name: &str| format!("{}.{name}", config.kind.name());
        // reqwest is built without a default crypto provider; use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            // A redirect would carry the custom headers (credentials) to
            // wherever it points: it is an answer, kept and logged instead.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.certificate {
            let certs = reqwest::Certificate::from_pem_bundle(&read(&key("certificate"), ca)?).map_err(|e| {
                ConfigError::new(key("certificate"), format!("{}: not PEM certificates: {e}", ca.display()))
            })?;
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key_file)) = (&config.client_certificate, &config.client_key) {
            let mut pem = read(&key("client_certificate"), cert)?;
            pem.push(b'\n');
            pem.extend(read(&key("client_key"), key_file)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ConfigError::new(
                    key("client_certificate"),
                    format!("{} with {}: {e}", cert.display(), key_file.display()),
                )
            })?;
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|e| ConfigError::new(config.kind.name(), format!("cannot build the HTTP client: {e}")))?;

        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("sshlogin/", env!("CARGO_PKG_VERSION"))));
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| ConfigError::new(format!("header {k:?}"), "bad name"))?;
            let mut value =
                HeaderValue::from_str(v).map_err(|_| ConfigError::new(format!("header {k:?}"), "bad value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let token = match &config.bearer_token_file {
            Some(path) => {
                let token = TokenFile::open(path).map_err(|e| ConfigError::new(key("bearer_token_file"), e))?;
                if headers.remove(AUTHORIZATION).is_some() {
                    tracing::warn!("the bearer token file replaces the Authorization header given in the headers");
                }
                Some(Mutex::new(token))
            }
            None => None,
        };
        let backoff = Mutex::new(Backoff::new(config.retry));
        Ok(Exporter { client, headers, token, backoff, config: config.clone(), resource, metrics })
    }

    /// Sends what the spool holds, oldest first, as it arrives (`arrived`
    /// is notified on each append) until `stop` turns true; then keeps
    /// sending for at most `drain` and returns, leaving the rest spooled.
    pub async fn run(self, spool: Arc<Spool>, arrived: Arc<Notify>, mut stop: watch::Receiver<bool>, drain: Duration) {
        let max = self.config.batch_max_events;
        let mut deadline: Option<Instant> = None;
        // What could not be delivered is tried again as it was: the spool
        // keeps exactly it from eviction, so that a full spool drops its
        // oldest other events, not whatever arrived since.
        let mut held: Vec<(u64, LogRecord)> = Vec::new();
        // Delivered or dropped, not yet removed from the spool (a removal
        // failed): removed before anything else is read, never sent again.
        let mut done: Vec<u64> = Vec::new();
        let mut spool_wait = SPOOL_FIRST_WAIT;
        loop {
            // Marks the change seen, so that waits on `changed()` (ours and
            // the clones') wait for the next one.
            if deadline.is_none() && *stop.borrow_and_update() {
                deadline = Some(Instant::now() + drain);
            }
            let stopping = deadline.is_some();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            if !done.is_empty() {
                let (spool2, ids) = (spool.clone(), done.clone());
                match tokio::task::spawn_blocking(move || spool2.remove(&ids)).await {
                    Ok(Ok(())) => {
                        done.clear();
                        spool_wait = SPOOL_FIRST_WAIT;
                        self.metrics.set_spool(self.config.kind, spool.depth());
                    }
                    Ok(Err(e)) => {
                        let why = format!("cannot remove delivered events from the spool: {e:#}");
                        self.spool_failed(&spool, &why, &mut spool_wait, &mut stop, stopping).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!("the spool removal task failed: {e}");
                        continue;
                    }
                }
            }
            let batch = if held.is_empty() {
                // Nothing spooled (its count is kept with every commit and
                // removal): wait for the writer's next commit rather than
                // ask the file, a trip to a blocking thread per batch.
                let batch = if spool.is_empty() { Ok(Vec::new()) } else { read_spool(&spool, max).await };
                let batch = match batch {
                    Ok(b) => {
                        spool_wait = SPOOL_FIRST_WAIT;
                        b
                    }
                    Err(e) => {
                        if stopping {
                            return;
                        }
                        let why = format!("cannot read the spool: {e:#}");
                        self.spool_failed(&spool, &why, &mut spool_wait, &mut stop, stopping).await;
                        continue;
                    }
                };
                if batch.is_empty() {
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        _ = arrived.notified() => {}
                        _ = stop.changed() => {}
                    }
                    // Let a batch fill before sending, if a delay is set.
                    if !*stop.borrow() && !self.config.batch_max_delay.is_zero() {
                        tokio::time::sleep(self.config.batch_max_delay).await;
                    }
                    continue;
                }
                self.readable(batch, &mut done)
            } else {
                std::mem::take(&mut held)
            };
            let give_up_at = deadline.unwrap_or_else(|| Instant::now() + self.config.retry.max_elapsed);
            // A batch of nothing but unreadable entries is removed unsent.
            let outcomes =
                if batch.is_empty() { Vec::new() } else { self.export_parts(&batch, give_up_at, &stop).await };
            if let Some(reason) = sort_out(&batch, outcomes, &mut held, &mut done) {
                if stopping {
                    // Take out what was delivered; the rest stays spooled
                    // for the next start.
                    if !done.is_empty() {
                        let spool2 = spool.clone();
                        let _ = tokio::task::spawn_blocking(move || spool2.remove(&done)).await;
                    }
                    return;
                }
                if *stop.borrow() {
                    continue;
                }
                let failing = self.lock_backoff().failing_since.map(|t| t.elapsed()).unwrap_or_default();
                tracing::warn!(
                    waiting = spool.depth().events,
                    "the endpoint has failed for {:.0?} ({reason}); events stay in the spool and are retried",
                    failing
                );
            }
        }
    }

    /// Sends `batch` as this exporter's requests go: one request for all of
    /// it, or (a webhook without `batch`) one per event, [`IN_FLIGHT`] at a
    /// time, so a backlog does not drain at one round trip per event. Each
    /// part with what became of it.
    async fn export_parts(
        &self,
        batch: &[(u64, LogRecord)],
        give_up_at: Instant,
        stop: &watch::Receiver<bool>,
    ) -> Vec<(std::ops::Range<usize>, Outcome)> {
        use futures_util::StreamExt;
        // Ranges, not slices: a stream closure over borrowed slices is not
        // `Send` for every lifetime, which tokio::spawn needs.
        let parts: Vec<std::ops::Range<usize>> = match self.config.format {
            Format::Webhook { batch: false } => (0..batch.len()).map(|i| i..i + 1).collect(),
            _ => std::iter::once(0..batch.len()).collect(),
        };
        // An endpoint that is failing gets one request at a time: the first
        // answer says whether the others should go.
        let in_flight = if self.lock_backoff().failing_since.is_some() { 1 } else { IN_FLIGHT };
        futures_util::stream::iter(parts)
            .map(|part| {
                let mut stop = stop.clone();
                let records: Vec<LogRecord> = batch[part.clone()].iter().map(|(_, r)| r.clone()).collect();
                async move {
                    let outcome = self.export(&records, give_up_at, &mut stop).await;
                    (part, outcome)
                }
            })
            .buffer_unordered(in_flight)
            .collect()
            .await
    }

    /// Sends one batch, retrying until it is delivered or dropped, until
    /// `give_up_at` or until `stop` turns. Waits as the endpoint's backoff
    /// says, which the next batch inherits.
    pub async fn export(&self, events: &[LogRecord], give_up_at: Instant, stop: &mut watch::Receiver<bool>) -> Outcome {
        let n = events.len() as u64;
        let sink = self.config.kind;
        let outcome = self.try_export(events, give_up_at, stop).await;
        match &outcome {
            Outcome::Delivered { rejected } => {
                self.metrics.export_request(sink, if *rejected > 0 { Request::Partial } else { Request::Ok });
                let rejected = (*rejected).clamp(0, n as i64) as u64;
                self.metrics.export_events(sink, Delivery::Sent, n - rejected);
                self.metrics.export_events(sink, Delivery::Rejected, rejected);
            }
            Outcome::Dropped { reason } => {
                self.metrics.export_request(sink, Request::Dropped);
                self.metrics.export_events(sink, Delivery::Dropped, n);
                tracing::warn!(events = n, url = %redact_url(&self.config.url), "export dropped: {reason}");
            }
            Outcome::Retryable { .. } => {}
        }
        outcome
    }

    /// Asks the endpoint once, as a request would go: OTLP gets an empty
    /// export request (which receivers accept and store nothing of), a
    /// webhook a GET (a POST could set off whatever it does). Returns the
    /// HTTP status.
    pub async fn probe(&self) -> Result<u16, String> {
        let mut headers = self.headers.clone();
        if let Some(token) = &self.token {
            headers.insert(AUTHORIZATION, token.lock().unwrap_or_else(std::sync::PoisonError::into_inner).current());
        }
        let request = match self.config.format {
            Format::Otlp(_) => {
                let body = self.body(&[]).map_err(|e| e.to_string())?;
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
                if let Some(enc) = body.content_encoding {
                    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(enc));
                }
                self.client.post(&self.config.url).body(body.bytes)
            }
            Format::Webhook { .. } => self.client.get(&self.config.url),
        };
        let resp = request.headers(headers).send().await.map_err(|e| crate::error_chain(&e.without_url()))?;
        Ok(resp.status().as_u16())
    }

    /// The endpoint as logs may show it.
    pub fn shown_url(&self) -> String {
        redact_url(&self.config.url)
    }

    /// The entries of `batch` that parse; the others go to `done` (removed
    /// unsent) and are counted as dropped.
    fn readable(&self, batch: Vec<(u64, Option<LogRecord>)>, done: &mut Vec<u64>) -> Vec<(u64, LogRecord)> {
        let mut readable = Vec::with_capacity(batch.len());
        let mut unreadable = 0;
        for (id, record) in batch {
            match record {
                Some(r) => readable.push((id, r)),
                None => {
                    done.push(id);
                    unreadable += 1;
                }
            }
        }
        if unreadable > 0 {
            tracing::warn!(entries = unreadable, "dropping spool entries that do not parse");
            self.metrics.export_events(self.config.kind, Delivery::Dropped, unreadable);
        }
        readable
    }

    /// A spool read or removal failed: count and log it, wait (longer each
    /// time in a row), and open the spool file again (what redb needs after
    /// an I/O error).
    async fn spool_failed(
        &self,
        spool: &Arc<Spool>,
        why: &str,
        wait: &mut Duration,
        stop: &mut watch::Receiver<bool>,
        stopping: bool,
    ) {
        self.metrics.spool_errors.inc();
        tracing::error!("{why}; opening the spool again in {wait:.1?}");
        if stopping {
            tokio::time::sleep(*wait).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(*wait) => {}
                _ = stop.changed() => {}
            }
        }
        *wait = (*wait * 2).min(SPOOL_MAX_WAIT);
        let s = spool.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.reopen()).await {
            tracing::warn!("{e:#}");
        }
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The request body for `events` in this exporter's format.
    fn body(&self, events: &[LogRecord]) -> std::io::Result<encode::Body> {
        match self.config.format {
            Format::Otlp(protocol) => {
                encode::body(&encode::request(&self.resource, events), protocol, self.config.compression)
            }
            Format::Webhook { batch } => {
                let lines: Vec<String> = events.iter().map(|e| stdout::to_line(e, &self.resource)).collect();
                // Each line is one JSON object already.
                let json = if batch || lines.len() != 1 { format!("[{}]", lines.join(",")) } else { lines[0].clone() };
                encode::compress(json.into_bytes(), "application/json", self.config.compression)
            }
        }
    }

    async fn try_export(&self, events: &[LogRecord], give_up_at: Instant, stop: &mut watch::Receiver<bool>) -> Outcome {
        let body = match self.body(events) {
            Ok(b) => b,
            Err(e) => return Outcome::Dropped { reason: format!("cannot encode the request: {e}") },
        };
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
        if let Some(enc) = body.content_encoding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        let started = Instant::now();
        loop {
            // Never sooner than the endpoint's backoff, whichever batch failed.
            let not_before = self.lock_backoff().not_before();
            if let Some(at) = not_before.filter(|at| *at > Instant::now()) {
                let until = at.min(give_up_at);
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = stop.changed() => return Outcome::Retryable { reason: "shutting down".into() },
                }
                if at > give_up_at {
                    return Outcome::Retryable { reason: format!("next try in {:.0?}", at - Instant::now()) };
                }
            }
            // Nothing goes out after the batch's time is up (the drain's
            // deadline at shutdown).
            if Instant::now() >= give_up_at {
                return Outcome::Retryable { reason: "out of time".into() };
            }
            let sent_at = Instant::now();
            if let Some(token) = &self.token {
                let value = token.lock().unwrap_or_else(std::sync::PoisonError::into_inner).current();
                headers.insert(AUTHORIZATION, value);
            }
            let sent =
                self.client.post(&self.config.url).headers(headers.clone()).body(body.bytes.clone()).send().await;
            let (decision, why) = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let content_type =
                        resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
                    let body = read_capped(resp).await;
                    let decision =
                        retry::decide(status, retry_after.as_deref(), SystemTime::now(), self.config.failure_policy);
                    let message = || response::error_message(&body, content_type.as_deref());
                    match decision {
                        Decision::Success => {
                            self.lock_backoff().answered(sent_at);
                            let partial = match self.config.format {
                                Format::Otlp(_) => response::partial_success(&body, content_type.as_deref()),
                                Format::Webhook { .. } => None,
                            };
                            let rejected = match partial {
                                Some((rejected, message)) => {
                                    tracing::warn!(rejected, "the receiver accepted the batch in part: {message}");
                                    rejected
                                }
                                None => 0,
                            };
                            return Outcome::Delivered { rejected };
                        }
                        Decision::Drop => {
                            self.lock_backoff().answered(sent_at);
                            return Outcome::Dropped { reason: format!("HTTP {status}: {}", message()) };
                        }
                        Decision::Refused => (decision, format!("HTTP {status}: {}", message())),
                        Decision::Retry { .. } => (decision, format!("HTTP {status}")),
                    }
                }
                Err(e) => (Decision::Retry { after: None }, crate::error_chain(&e.without_url())),
            };
            let wait = self.lock_backoff().failed(&decision, Instant::now(), rand::random::<f64>());
            if decision == Decision::Refused {
                self.metrics.export_request(self.config.kind, Request::Refused);
                tracing::error!(
                    url = %redact_url(&self.config.url),
                    "the endpoint refused the batch ({why}); it stays in the spool, retried in {wait:.0?}"
                );
            } else {
                self.metrics.export_request(self.config.kind, Request::FailedRetryable);
                tracing::info!("export failed ({why}); retrying in {wait:.1?}");
            }
            self.metrics.export_retry(self.config.kind);
            if Instant::now() + wait > give_up_at {
                return Outcome::Retryable { reason: format!("{why}; retried for {:.1?}", started.elapsed()) };
            }
        }
    }
}

/// Puts each part of `batch` where its outcome says: delivered or dropped
/// into `done`, retryable into `held` (in spool order, for the next try).
/// The reason of a retryable failure, if there was one.
fn sort_out(
    batch: &[(u64, LogRecord)],
    outcomes: Vec<(std::ops::Range<usize>, Outcome)>,
    held: &mut Vec<(u64, LogRecord)>,
    done: &mut Vec<u64>,
) -> Option<String> {
    let mut retry_reason = None;
    for (part, outcome) in outcomes {
        let part = &batch[part];
        match outcome {
            Outcome::Retryable { reason } => {
                held.extend_from_slice(part);
                retry_reason = Some(reason);
            }
            Outcome::Delivered { .. } | Outcome::Dropped { .. } => done.extend(part.iter().map(|(id, _)| *id)),
        }
    }
    held.sort_unstable_by_key(|(id, _)| *id);
    retry_reason
}

async fn read_spool(spool: &Arc<Spool>, max: usize) -> anyhow::Result<Vec<(u64, Option<LogRecord>)>> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || spool.oldest(max)).await?
}

async fn read_capped(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = response::BODY_CAP.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= response::BODY_CAP {
            break;
        }
    }
    body
}

#[cfg(test)]
mod tests;
