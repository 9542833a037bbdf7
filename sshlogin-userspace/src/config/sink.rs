//! The network exporters' settings: `[otlp]` (with the OpenTelemetry SDK
//! environment variables) and `[webhook]`.

use std::{collections::BTreeMap, path::PathBuf};

use super::{
    Compression, ConfigError, DEFAULT_BATCH_MAX_DELAY, DEFAULT_BATCH_MAX_EVENTS, DEFAULT_DRAIN, DEFAULT_RETRY,
    DEFAULT_TIMEOUT, Flags, Format, Protocol, Retry, Sink, SinkKind, check_header, choice, duration, endpoint, env,
    file, opt_duration, url,
};

/// Values given by a higher layer (flags, environment) for the common
/// settings; `(where, value)`.
#[derive(Default)]
struct Overrides {
    compression: Option<Compression>,
    timeout: Option<(String, std::time::Duration)>,
    headers: Vec<(String, String)>,
    bearer_token_file: Option<PathBuf>,
    certificate: Option<PathBuf>,
    client_certificate: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

pub(super) fn otlp(
    flags: &Flags,
    get: &dyn Fn(&str) -> Option<String>,
    f: &file::Otlp,
) -> Result<Option<Sink>, ConfigError> {
    let Some(url) = endpoint(flags, get, f)? else { return Ok(None) };
    let protocol = flags
        .otlp_protocol
        .map(|p| Ok(Some(p)))
        .unwrap_or_else(|| env_choice(get, "PROTOCOL"))?
        .or(f.protocol)
        .unwrap_or(Protocol::HttpProtobuf);
    let timeout = match (flags.otlp_timeout, env::otlp(get, "TIMEOUT")) {
        (Some(t), _) => Some(("--otlp-timeout".to_string(), t)),
        (None, Some((key, ms))) => Some((
            key.clone(),
            std::time::Duration::from_millis(
                ms.parse().map_err(|_| ConfigError::new(key, "not a number of milliseconds"))?,
            ),
        )),
        (None, None) => None,
    };
    let mut headers = Vec::new();
    if let Some((key, text)) = env::otlp(get, "HEADERS") {
        headers.extend(env::key_values(&key, &text)?);
    }
    headers.extend(flags.otlp_headers.iter().cloned());
    let path = |setting: &str| env::otlp(get, setting).map(|(_, v)| PathBuf::from(v));
    let overrides = Overrides {
        compression: flags.otlp_compression.map(|c| Ok(Some(c))).unwrap_or_else(|| env_choice(get, "COMPRESSION"))?,
        timeout,
        headers,
        bearer_token_file: flags.bearer_token_file.clone(),
        certificate: path("CERTIFICATE"),
        client_certificate: path("CLIENT_CERTIFICATE"),
        client_key: path("CLIENT_KEY"),
    };
    sink(SinkKind::Otlp, url, Format::Otlp(protocol), Compression::Gzip, f.shared(), overrides).map(Some)
}

/// An enum setting from its `OTEL_EXPORTER_OTLP_[LOGS_]...` variable.
fn env_choice<T: clap::ValueEnum>(
    get: &dyn Fn(&str) -> Option<String>,
    setting: &str,
) -> Result<Option<T>, ConfigError> {
    env::otlp(get, setting).map(|(key, v)| choice(&v).map_err(|e| ConfigError::new(key, e))).transpose()
}

pub(super) fn webhook(flags: &Flags, f: &file::Webhook) -> Result<Option<Sink>, ConfigError> {
    let url = match (&flags.webhook_url, &f.url) {
        (Some(u), _) => url("--webhook-url", u)?,
        (None, Some(u)) => url("webhook.url", u)?,
        (None, None) => return Ok(None),
    };
    let batch = flags.webhook_batch || f.batch.unwrap_or(false);
    let overrides = Overrides {
        headers: flags.webhook_headers.clone(),
        bearer_token_file: flags.bearer_token_file.clone(),
        ..Overrides::default()
    };
    sink(SinkKind::Webhook, url, Format::Webhook { batch }, Compression::None, f.shared(), overrides).map(Some)
}

/// The common settings: overrides over the file's section over defaults.
fn sink(
    kind: SinkKind,
    url: String,
    format: Format,
    default_compression: Compression,
    c: file::Shared,
    o: Overrides,
) -> Result<Sink, ConfigError> {
    let key = |name: &str| format!("{}.{name}", kind.name());
    let compression = o.compression.or(c.compression).unwrap_or(default_compression);
    // A zero timeout is named where it was given: flag, variable or key.
    let (timeout_key, timeout) = match (o.timeout, &c.timeout) {
        (Some((k, t)), _) => (k, t),
        (None, Some(t)) => (key("timeout"), duration(&key("timeout"), t)?),
        (None, None) => (key("timeout"), DEFAULT_TIMEOUT),
    };
    if timeout.is_zero() {
        return Err(ConfigError::new(timeout_key, "must be more than zero"));
    }
    // Headers merge by name; the overrides (env, then flags) win.
    let mut headers: BTreeMap<String, String> =
        c.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    for (k, v) in o.headers {
        headers.insert(k.to_ascii_lowercase(), v);
    }
    for (k, v) in &headers {
        check_header(k, v)?;
    }
    let retry = Retry {
        initial_backoff: opt_duration(&key("retry_initial_backoff"), &c.retry_initial_backoff)?
            .unwrap_or(DEFAULT_RETRY.initial_backoff),
        max_backoff: opt_duration(&key("retry_max_backoff"), &c.retry_max_backoff)?
            .unwrap_or(DEFAULT_RETRY.max_backoff),
        max_elapsed: opt_duration(&key("retry_max_elapsed"), &c.retry_max_elapsed)?
            .unwrap_or(DEFAULT_RETRY.max_elapsed),
    };
    if retry.max_elapsed < std::time::Duration::from_secs(1) {
        // A cycle shorter than a round trip would only log: retries never end anyway.
        return Err(ConfigError::new(key("retry_max_elapsed"), "at least 1s (retries go on after it in any case)"));
    }
    if retry.initial_backoff.is_zero() || retry.max_backoff < retry.initial_backoff {
        return Err(ConfigError::new(
            key("retry_max_backoff"),
            "backoffs must be above zero and the maximum at least the initial one",
        ));
    }
    let batch_max_events = c.batch_max_events.unwrap_or(DEFAULT_BATCH_MAX_EVENTS);
    if batch_max_events == 0 {
        return Err(ConfigError::new(key("batch_max_events"), "must be at least 1"));
    }
    let sink = Sink {
        kind,
        url,
        format,
        compression,
        timeout,
        headers: headers.into_iter().collect(),
        bearer_token_file: o.bearer_token_file.or(c.bearer_token_file),
        certificate: o.certificate.or(c.certificate),
        client_certificate: o.client_certificate.or(c.client_certificate),
        client_key: o.client_key.or(c.client_key),
        batch_max_events,
        batch_max_delay: opt_duration(&key("batch_max_delay"), &c.batch_max_delay)?.unwrap_or(DEFAULT_BATCH_MAX_DELAY),
        retry,
        failure_policy: c.failure_policy.unwrap_or_default(),
        drain_timeout: opt_duration(&key("drain_timeout"), &c.drain_timeout)?.unwrap_or(DEFAULT_DRAIN),
    };
    if sink.client_certificate.is_some() != sink.client_key.is_some() {
        return Err(ConfigError::new(
            key("client_certificate"),
            "a client certificate and a client key go together (mTLS): set both or neither",
        ));
    }
    Ok(sink)
}
