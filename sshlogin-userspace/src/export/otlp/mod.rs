//! The OTLP/HTTP exporter: batches events by count and age, sends each batch
//! as one request and retries as the specification says.

pub mod encode;
pub mod response;
pub mod retry;

use std::{
    fs,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime},
};

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use tokio::sync::mpsc;

use crate::{
    config::{ConfigError, Otlp},
    event::Event,
    resource::Resource,
};
use retry::Decision;

/// Counters an operator reads in the shutdown summary (and, later, metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests_ok: AtomicU64,
    pub requests_dropped: AtomicU64,
    pub retries: AtomicU64,
    pub events_sent: AtomicU64,
    pub events_dropped: AtomicU64,
    pub events_rejected: AtomicU64,
}

impl Stats {
    pub fn summary(&self) -> String {
        format!(
            "otlp: {} events sent in {} requests, {} retries, {} events dropped in {} requests, {} rejected by the receiver",
            self.events_sent.load(Relaxed),
            self.requests_ok.load(Relaxed),
            self.retries.load(Relaxed),
            self.events_dropped.load(Relaxed),
            self.requests_dropped.load(Relaxed),
            self.events_rejected.load(Relaxed),
        )
    }
}

/// How one batch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; `rejected` of its records were refused (partial success).
    Delivered { rejected: i64 },
    /// Refused for good, or retries ran out of time.
    Dropped { reason: String },
}

pub struct Exporter {
    client: reqwest::Client,
    headers: HeaderMap,
    config: Otlp,
    resource: Resource,
    pub stats: Arc<Stats>,
}

fn read(key: &str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    fs::read(path).map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

impl Exporter {
    /// Builds the HTTP client: TLS roots, client certificate, headers, token.
    pub fn new(config: &Otlp, resource: Resource) -> Result<Exporter, ConfigError> {
        // reqwest is built without a default crypto provider; use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(ca) = &config.certificate {
            let certs = reqwest::Certificate::from_pem_bundle(&read("otlp.certificate", ca)?).map_err(|e| {
                ConfigError::new("otlp.certificate", format!("{}: not PEM certificates: {e}", ca.display()))
            })?;
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&config.client_certificate, &config.client_key) {
            let mut pem = read("otlp.client_certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read("otlp.client_key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ConfigError::new("otlp.client_certificate", format!("{} with {}: {e}", cert.display(), key.display()))
            })?;
            builder = builder.identity(identity);
        }
        let client =
            builder.build().map_err(|e| ConfigError::new("otlp", format!("cannot build the HTTP client: {e}")))?;

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
        if let Some(path) = &config.bearer_token_file {
            let token = String::from_utf8(read("otlp.bearer_token_file", path)?)
                .map_err(|_| ConfigError::new("otlp.bearer_token_file", "the token is not UTF-8"))?;
            let token = token.trim();
            if token.is_empty() {
                return Err(ConfigError::new("otlp.bearer_token_file", format!("{} is empty", path.display())));
            }
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ConfigError::new("otlp.bearer_token_file", "the token has characters a header cannot carry")
            })?;
            value.set_sensitive(true);
            if headers.insert(AUTHORIZATION, value).is_some() {
                tracing::warn!("the bearer token file replaces the Authorization header given in the headers");
            }
        }
        Ok(Exporter { client, headers, config: config.clone(), resource, stats: Arc::default() })
    }

    /// Sends batches until the sending side closes, then flushes what is
    /// left, retrying until `drain_deadline` after the close at most.
    pub async fn run(self, mut rx: mpsc::Receiver<Event>, drain_deadline: Duration) {
        let max = self.config.batch_max_events;
        let mut batch = Vec::with_capacity(max);
        let mut closed_at: Option<Instant> = None;
        while closed_at.is_none() {
            match rx.recv().await {
                Some(e) => batch.push(e),
                None => break,
            }
            let flush_at = tokio::time::Instant::now() + self.config.batch_max_delay;
            while batch.len() < max {
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => batch.push(e),
                        None => { closed_at = Some(Instant::now()); break; }
                    },
                    _ = tokio::time::sleep_until(flush_at) => break,
                }
            }
            let deadline = closed_at.map(|t| t + drain_deadline);
            self.export(&batch, deadline).await;
            batch.clear();
        }
        // The channel closed while idle: nothing left.
    }

    /// Sends one batch, retrying; gives up at `deadline` if one is given.
    pub async fn export(&self, events: &[Event], deadline: Option<Instant>) -> Outcome {
        let n = events.len() as u64;
        let outcome = self.try_export(events, deadline).await;
        match &outcome {
            Outcome::Delivered { rejected } => {
                self.stats.requests_ok.fetch_add(1, Relaxed);
                self.stats.events_sent.fetch_add(n, Relaxed);
                self.stats.events_rejected.fetch_add((*rejected).max(0) as u64, Relaxed);
            }
            Outcome::Dropped { reason } => {
                self.stats.requests_dropped.fetch_add(1, Relaxed);
                self.stats.events_dropped.fetch_add(n, Relaxed);
                tracing::warn!(events = n, url = %self.config.url, "export dropped: {reason}");
            }
        }
        outcome
    }

    async fn try_export(&self, events: &[Event], deadline: Option<Instant>) -> Outcome {
        let request = encode::request(&self.resource, events);
        let body = match encode::body(&request, self.config.protocol, self.config.compression) {
            Ok(b) => b,
            Err(e) => return Outcome::Dropped { reason: format!("cannot encode the request: {e}") },
        };
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
        if let Some(enc) = body.content_encoding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        let started = Instant::now();
        let budget_end = started + self.config.retry.max_elapsed;
        let give_up_at = deadline.map_or(budget_end, |d| d.min(budget_end));
        let mut attempt = 0u32;
        loop {
            let sent =
                self.client.post(&self.config.url).headers(headers.clone()).body(body.bytes.clone()).send().await;
            let (wait, why) = match sent {
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
                    match retry::decide(status, retry_after.as_deref(), SystemTime::now()) {
                        Decision::Success => {
                            let rejected = match response::partial_success(&body, content_type.as_deref()) {
                                Some((rejected, message)) => {
                                    tracing::warn!(rejected, "the receiver accepted the batch in part: {message}");
                                    rejected
                                }
                                None => 0,
                            };
                            return Outcome::Delivered { rejected };
                        }
                        Decision::Drop => {
                            return Outcome::Dropped {
                                reason: format!(
                                    "HTTP {status}: {}",
                                    response::error_message(&body, content_type.as_deref())
                                ),
                            };
                        }
                        Decision::Retry { after } => (after, format!("HTTP {status}")),
                    }
                }
                Err(e) => (None, transport_error(&e)),
            };
            let wait = wait.unwrap_or_else(|| retry::backoff(&self.config.retry, attempt, rand::random::<f64>()));
            if Instant::now() + wait > give_up_at {
                return Outcome::Dropped { reason: format!("{why}; gave up retrying after {:.1?}", started.elapsed()) };
            }
            self.stats.retries.fetch_add(1, Relaxed);
            tracing::info!(attempt = attempt + 1, "export failed ({why}); retrying in {wait:.1?}");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// The chain of causes, which is where reqwest says what really failed.
fn transport_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
