//! Configuration: command-line flags over `OTEL_*` environment variables
//! over the TOML file over defaults, resolved into one [`Config`]. Every
//! error names the flag, variable or key at fault; the binary exits 2 on one.
//!
//! A setting is declared once per layer it has: its flag is a field of
//! [`Flags`] (the CLI flattens it, it is not mirrored), its key a field of
//! [`file`]'s section structs, its `OTEL_*` variable (OTLP only) read in
//! `sink.rs`. Enum settings are [`clap::ValueEnum`]s here, read by the CLI,
//! the file and the environment through the same words ([`choice`]); every
//! other value has one parser, shared by the flag and the key. Adding a
//! setting: the field(s), its use in [`resolve`], a line in
//! packaging/config.example.toml and one in README's configuration table.

mod env;
mod file;
mod session;
mod signals;
mod sink;

pub use session::{SessionActivity, SessionExec};
pub use signals::FirstSeen;

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

/// A setting that could not be used: which one, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

mod flags;
pub use flags::{Flags, PipelineFlags, ProbeFlags};

/// How sshlogin's own log lines on stderr are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How sendto, setresuid and connect are seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SyscallProbes {
    /// fentry where the kernel accepts it, else tracepoints (one log line
    /// says why).
    Auto,
    /// fentry/fexit on the kernel functions behind the syscalls
    /// (`__sys_sendto`, `__sys_setresuid`, `__sys_connect`): no cost for
    /// any other syscall, none for these calls by other processes beyond
    /// the BPF trampoline. Refused by hardened kernels (lockdown): an error.
    Fentry,
    /// `syscalls:sys_enter_*` for each: only those calls run a program, but
    /// each pays for the kernel copying its arguments into a record, and
    /// every syscall of every task takes the kernel's slow path.
    Tracepoints,
    /// One raw `sys_enter` tracepoint: every syscall runs a program that
    /// returns at once unless the number matches; matching calls are
    /// cheaper. docs/performance.md compares them.
    Raw,
}

/// The OTLP encoding of a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    #[value(name = "http/json")]
    HttpJson,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Gzip,
    None,
}

/// What a network exporter does with a batch the endpoint refuses with an
/// answer that is not about the batch (401, 403, 404, a redirect, 500...).
/// 400 and 413 always drop it: it can never be taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicy {
    /// Keep it in the spool and retry at the maximum backoff, logging an
    /// error each time: an expired token loses nothing.
    #[default]
    Keep,
    /// Drop it and count it.
    Drop,
}

/// How failed logins are reported (`[failures] mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    /// One `ssh.auth.failure` per attempt.
    #[default]
    Each,
    /// The first failures of a client address in a window alone, the rest
    /// of the window folded into one `ssh.auth.failure.summary`.
    Summary,
}

/// The enum settings read from the file as the words their flags take, so
/// the flag, the variable and the key accept the same spellings.
macro_rules! deserialize_as_value_enum {
    ($($t:ty),*) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                choice(&String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_as_value_enum!(SyscallProbes, Protocol, Compression, FailurePolicy, FailureMode, SessionExec);

/// One of an enum setting's words, as its flag spells them.
pub fn choice<T: clap::ValueEnum>(text: &str) -> Result<T, String> {
    T::from_str(text.trim(), false).map_err(|_| {
        let words: Vec<String> =
            T::value_variants().iter().filter_map(|v| Some(v.to_possible_value()?.get_name().to_string())).collect();
        // OTEL_EXPORTER_OTLP_PROTOCOL is often set to grpc for other agents.
        let hint = if text.trim() == "grpc" { " (sshlogin speaks OTLP over HTTP only)" } else { "" };
        // Never the value itself: a misplaced secret must not reach a log.
        format!("not {}{hint}", words.join(" or "))
    })
}

/// Where OpenSSH's binaries live on the distributions sshlogin knows:
/// Debian/Ubuntu (`/usr/lib/openssh`), Fedora/RHEL/SUSE (`/usr/libexec`),
/// Arch (`/usr/bin/sshd`, `/usr/lib/ssh`), merged-/usr systems, source
/// builds (`/usr/local`).
pub const DEFAULT_SSHD_PATHS: &[&str] = &[
    "/usr/sbin/sshd",
    "/usr/bin/sshd",
    "/usr/lib/openssh/sshd-session",
    "/usr/lib/openssh/sshd-auth",
    "/usr/lib/ssh/sshd-session",
    "/usr/lib/ssh/sshd-auth",
    "/usr/libexec/openssh/sshd-session",
    "/usr/libexec/openssh/sshd-auth",
    "/usr/libexec/sshd-session",
    "/usr/libexec/sshd-auth",
    "/usr/local/sbin/sshd",
    "/usr/local/libexec/sshd-session",
    "/usr/local/libexec/sshd-auth",
];
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sshlogin";
pub const DEFAULT_SPOOL_MAX: u64 = 256 << 20;
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

pub const DEFAULT_FAMILY: &[&str] = &["sshd", "sshd-session", "sshd-auth"];
pub const DEFAULT_RING_BUFFER: u32 = 4 << 20;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub capture: Capture,
    pub spool: SpoolConfig,
    pub metrics_listen: Option<SocketAddr>,
    /// User-configured resource attributes (service.name included when set).
    pub resource: BTreeMap<String, String>,
    pub stdout: bool,
    pub otlp: Option<Sink>,
    pub webhook: Option<Sink>,
    pub failures: crate::failures::Settings,
    /// `None`: no heartbeat.
    pub heartbeat: Option<Duration>,
    /// `None`: first-seen marks off.
    pub first_seen: Option<FirstSeen>,
    /// What is reported of the commands run in a session (`[session]`).
    pub session: SessionActivity,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub family: Vec<String>,
    pub ring_buffer_bytes: u32,
    /// sshd binaries: a tree whose root runs any other file is refused.
    pub sshd_paths: Vec<String>,
    pub syscall_probes: SyscallProbes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// Which network exporter a [`Sink`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SinkKind {
    Otlp,
    Webhook,
}

impl SinkKind {
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Otlp => "otlp",
            SinkKind::Webhook => "webhook",
        }
    }
}

/// What a request body holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One OTLP `ExportLogsServiceRequest` per batch.
    Otlp(Protocol),
    /// The stdout JSON object: one per request, or an array per batch.
    Webhook { batch: bool },
}

/// A network exporter: where, in what form, and how to retry.
#[derive(Clone, Debug, PartialEq)]
pub struct Sink {
    pub kind: SinkKind,
    /// The full URL requests go to.
    pub url: String,
    pub format: Format,
    pub compression: Compression,
    pub timeout: Duration,
    /// Extra request headers (never logged: they often carry credentials).
    pub headers: Vec<(String, String)>,
    pub bearer_token_file: Option<PathBuf>,
    pub certificate: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub batch_max_events: usize,
    pub batch_max_delay: Duration,
    pub retry: Retry,
    pub failure_policy: FailurePolicy,
    /// How long shutdown may keep sending what the spool holds.
    pub drain_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// After failing this long, log that the endpoint is unreachable and
    /// how many events wait; retries go on.
    pub max_elapsed: Duration,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 512;
/// None: the spool writer already gathers what arrives within its commit
/// window (export/writer.rs), and what is committed while a request is in
/// flight goes out together in the next; waiting on top of that only added
/// latency and a timer per batch.
pub const DEFAULT_BATCH_MAX_DELAY: Duration = Duration::ZERO;
pub const DEFAULT_RETRY: Retry = Retry {
    initial_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(30),
    max_elapsed: Duration::from_secs(300),
};

/// Reads the config file (if any) and the environment, then resolves.
pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
    let file = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))?;
            Some(file::parse(&text).map_err(|(key, e)| {
                let key = key.unwrap_or_default();
                ConfigError::new(format!("{}{}{key}", path.display(), if key.is_empty() { "" } else { ": " }), e)
            })?)
        }
        None => None,
    };
    resolve(flags, &|k| std::env::var(k).ok(), file.unwrap_or_default())
}

pub(crate) fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|_| ConfigError::new(key, "not a duration like 500ms or 10s"))
}

/// Chosen by measurement: docs/performance.md.
pub const DEFAULT_SYSCALL_PROBES: SyscallProbes = SyscallProbes::Auto;

/// Every local user can read a process's command line (/proc/PID/cmdline):
/// a header value or a URL that carries a token belongs in the config file
/// (0600) or the environment. Names the flag, never the value.
fn warn_of_secrets_on_the_command_line(flags: &Flags) {
    let mut given = Vec::new();
    if !flags.otlp_headers.is_empty() {
        given.push("--otlp-header (use OTEL_EXPORTER_OTLP_HEADERS or otlp.headers)");
    }
    if !flags.webhook_headers.is_empty() {
        given.push("--webhook-header (use webhook.headers)");
    }
    let from_env = std::env::var("SSHLOGIN_WEBHOOK_URL").ok();
    if flags.webhook_url.as_deref().is_some_and(|u| redact_url(u) != u && from_env.as_deref() != Some(u)) {
        given.push("--webhook-url, which carries a token (use webhook.url or SSHLOGIN_WEBHOOK_URL)");
    }
    for flag in given {
        tracing::warn!("{flag}: the command line is readable by every local user");
    }
}

/// An endpoint URL. Errors never repeat it: a URL may carry a token.
pub(crate) fn url(key: &str, text: &str) -> Result<String, ConfigError> {
    let parsed = reqwest::Url::parse(text).map_err(|e| ConfigError::new(key, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::new(key, "only http:// and https:// endpoints are supported"));
    }
    Ok(text.to_string())
}

/// `url` as logs may show it: without user and password, query or
/// fragment, and with every path segment but a few API words (`v1`,
/// `logs`, `hooks`...) shown as `…`. Webhook services put their secret in
/// the path.
pub fn redact_url(url: &str) -> String {
    let Ok(u) = reqwest::Url::parse(url) else { return "(not a URL)".into() };
    let host = u.host_str().unwrap_or("");
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    // Only words that name an API, never one that could be a secret.
    const WORDS: &[&str] =
        &["v1", "v2", "logs", "otlp", "api", "ingest", "events", "hook", "hooks", "webhook", "webhooks", "services"];
    let word = |s: &str| WORDS.contains(&s);
    let path: Vec<&str> =
        u.path_segments().map(|p| p.map(|seg| if word(seg) { seg } else { "…" }).collect()).unwrap_or_default();
    let query = if u.query().is_some() { "?…" } else { "" };
    format!("{}://{host}{port}/{}{query}", u.scheme(), path.join("/"))
}

/// The logs URL from a base endpoint: `/v1/logs` appended to its path.
pub fn logs_url_from_base(base: &str) -> String {
    if base.ends_with('/') { format!("{base}v1/logs") } else { format!("{base}/v1/logs") }
}

/// The first layer (flags, env, file) that names an endpoint decides it; in
/// a layer the logs endpoint (used as is) wins over the base one.
pub(crate) fn endpoint(
    flags: &Flags,
    get: &dyn Fn(&str) -> Option<String>,
    f: &file::Otlp,
) -> Result<Option<String>, ConfigError> {
    // (where it came from, the value) of the logs endpoint and the base one.
    type Layer = (Option<(String, String)>, Option<(String, String)>);
    let layers: [Layer; 3] = [
        (
            flags.otlp_logs_endpoint.clone().map(|v| ("--otlp-logs-endpoint".into(), v)),
            flags.otlp_endpoint.clone().map(|v| ("--otlp-endpoint".into(), v)),
        ),
        (
            get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
                .filter(|v| !v.trim().is_empty())
                .map(|v| ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT".into(), v.trim().to_string())),
            get("OTEL_EXPORTER_OTLP_ENDPOINT")
                .filter(|v| !v.trim().is_empty())
                .map(|v| ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), v.trim().to_string())),
        ),
        (
            f.logs_endpoint.clone().map(|v| ("otlp.logs_endpoint".into(), v)),
            f.endpoint.clone().map(|v| ("otlp.endpoint".into(), v)),
        ),
    ];
    for (logs, base) in layers {
        if let Some((key, v)) = logs {
            return url(&key, &v).map(Some);
        }
        if let Some((key, v)) = base {
            return url(&key, &v).map(|b| Some(logs_url_from_base(&b)));
        }
    }
    Ok(None)
}

/// Flags over defaults, for the commands that read neither environment
/// nor file (capture, replay).
pub fn resolve_without_env(flags: &Flags) -> Result<Config, ConfigError> {
    resolve(flags, &|_| None, file::File::default())
}

/// Flags over environment over file over defaults.
pub fn resolve(flags: &Flags, get: &dyn Fn(&str) -> Option<String>, f: file::File) -> Result<Config, ConfigError> {
    let p = &flags.probes;
    let ring_buffer_bytes = match (p.ring_buffer_size, &f.capture.ring_buffer_size) {
        (Some(b), _) => b,
        (None, Some(text)) => flags::ring_size(text).map_err(|e| ConfigError::new("capture.ring_buffer_size", e))?,
        (None, None) => DEFAULT_RING_BUFFER,
    };
    let (family_key, family) = match (&p.family, &f.capture.sshd_comm) {
        (Some(v), _) => ("--sshd-comm", v.clone()),
        (None, Some(v)) => {
            for name in v {
                flags::comm(name).map_err(|e| ConfigError::new("capture.sshd_comm", e))?;
            }
            ("capture.sshd_comm", v.clone())
        }
        (None, None) => ("capture.sshd_comm", DEFAULT_FAMILY.iter().map(|s| s.to_string()).collect()),
    };
    if family.is_empty() || family.len() > sshlogin_common::MAX_FAMILY {
        return Err(ConfigError::new(
            family_key,
            format!("1 to {} process names, got {}", sshlogin_common::MAX_FAMILY, family.len()),
        ));
    }
    warn_of_secrets_on_the_command_line(flags);
    if flags.pipeline.privsep_user.is_some() || f.capture.privsep_user.is_some() {
        tracing::warn!(
            "--privsep-user / capture.privsep_user is no longer used and can be removed: sshd's \
             pre-authentication child is told apart by its place in the process tree"
        );
    }
    let sshd_paths = match (&p.sshd_paths, &f.capture.sshd_paths) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => DEFAULT_SSHD_PATHS.iter().map(|s| s.to_string()).collect(),
    };
    if sshd_paths.is_empty() || sshd_paths.iter().any(|p| !p.starts_with('/')) {
        return Err(ConfigError::new("capture.sshd_paths", "one or more absolute paths of sshd binaries"));
    }
    let syscall_probes = p.syscall_probes.or(f.capture.syscall_probes).unwrap_or(DEFAULT_SYSCALL_PROBES);
    let capture = Capture { family, ring_buffer_bytes, sshd_paths, syscall_probes };
    let spool = SpoolConfig {
        dir: flags.state_dir.clone().or(f.spool.dir.clone()).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        max_bytes: match (flags.spool_max_size, &f.spool.max_size) {
            (Some(b), _) => b,
            (None, Some(text)) => size(text).map_err(|e| ConfigError::new("spool.max_size", e))?,
            (None, None) => DEFAULT_SPOOL_MAX,
        },
    };
    if spool.max_bytes < 4096 {
        return Err(ConfigError::new("spool.max_size", "at least 4K"));
    }
    let metrics_listen = match (flags.metrics_listen, &f.metrics.listen) {
        (Some(a), _) => Some(a),
        (None, Some(text)) => Some(text.parse().map_err(|_| ConfigError::new("metrics.listen", "not ADDRESS:PORT"))?),
        (None, None) => None,
    };

    let mut resource: BTreeMap<String, String> = f.resource.attributes.clone();
    if let Some(name) = &f.resource.service_name {
        resource.insert("service.name".into(), name.clone());
    }
    if let Some(text) = get("OTEL_RESOURCE_ATTRIBUTES") {
        resource.extend(env::key_values("OTEL_RESOURCE_ATTRIBUTES", &text)?);
    }
    if let Some(name) = get("OTEL_SERVICE_NAME").filter(|n| !n.trim().is_empty()) {
        resource.insert("service.name".into(), name.trim().to_string());
    }

    let otlp = sink::otlp(flags, get, &f.otlp)?;
    let webhook = sink::webhook(flags, &f.webhook)?;
    // Events go to stdout when asked, or when they would go nowhere else.
    let stdout = flags.stdout || f.stdout.enabled.unwrap_or(false) || (otlp.is_none() && webhook.is_none());
    let failures = signals::failures(&flags.pipeline, &f.failures)?;
    let heartbeat = signals::heartbeat(flags, &f.heartbeat)?;
    let first_seen = signals::first_seen(flags, &f.first_seen)?;
    let session = session::session(flags, &f.session)?;
    Ok(Config {
        capture,
        spool,
        metrics_listen,
        resource,
        stdout,
        otlp,
        webhook,
        failures,
        heartbeat,
        first_seen,
        session,
    })
}

/// A byte size: a number with an optional K, M or G (powers of 1024).
pub fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        _ => return Err("an unknown unit (use K, M or G)".to_string()),
    };
    let n: u64 = digits.parse().map_err(|_| "not a size like 256M".to_string())?;
    n.checked_shl(shift).filter(|b| b >> shift == n).ok_or_else(|| "too large".to_string())
}

pub(crate) fn opt_duration(key: &str, text: &Option<String>) -> Result<Option<Duration>, ConfigError> {
    text.as_deref().map(|t| duration(key, t)).transpose()
}

pub(crate) fn check_header(name: &str, value: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new("header", "not NAME=VALUE, or the name is empty"));
    }
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::new(format!("header {name:?}"), "not a valid HTTP header name"))?;
    // The value is not echoed: headers often carry credentials.
    reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| ConfigError::new(format!("header {name:?}"), "its value is not a valid HTTP header value"))?;
    Ok(())
}

#[cfg(test)]
mod tests;
