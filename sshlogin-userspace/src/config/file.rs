//! The TOML config file (`--config`). Every key is optional; an unknown key
//! is an error that names it, so a typo never silently falls back to a
//! default.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub capture: Capture,
    #[serde(default)]
    pub resource: Resource,
    #[serde(default)]
    pub stdout: Stdout,
    #[serde(default)]
    pub otlp: Otlp,
    #[serde(default)]
    pub webhook: Webhook,
    #[serde(default)]
    pub spool: Spool,
    #[serde(default)]
    pub metrics: Metrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spool {
    pub dir: Option<PathBuf>,
    pub max_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    pub sshd_comm: Option<Vec<String>>,
    pub sshd_paths: Option<Vec<String>>,
    pub syscall_probes: Option<String>,
    pub ring_buffer_size: Option<String>,
    /// No longer used; accepted with a warning.
    pub privsep_user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub service_name: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stdout {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    pub endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    pub protocol: Option<String>,
    pub compression: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub bearer_token_file: Option<PathBuf>,
    pub certificate: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub batch_max_events: Option<usize>,
    pub batch_max_delay: Option<String>,
    pub retry_initial_backoff: Option<String>,
    pub retry_max_backoff: Option<String>,
    pub retry_max_elapsed: Option<String>,
    pub drain_timeout: Option<String>,
}

/// Repeats most of [`Otlp`]'s keys rather than flattening a shared struct:
/// serde cannot combine `flatten` with `deny_unknown_fields`, and a typo
/// must stay an error. [`Common`] is the shared view.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: Option<String>,
    pub batch: Option<bool>,
    pub compression: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub bearer_token_file: Option<PathBuf>,
    pub certificate: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub batch_max_events: Option<usize>,
    pub batch_max_delay: Option<String>,
    pub retry_initial_backoff: Option<String>,
    pub retry_max_backoff: Option<String>,
    pub retry_max_elapsed: Option<String>,
    pub drain_timeout: Option<String>,
}

/// The settings both network exporters share, borrowed from either section.
pub struct Common<'a> {
    pub section: &'static str,
    pub compression: &'a Option<String>,
    pub timeout: &'a Option<String>,
    pub headers: &'a BTreeMap<String, String>,
    pub bearer_token_file: &'a Option<PathBuf>,
    pub certificate: &'a Option<PathBuf>,
    pub client_certificate: &'a Option<PathBuf>,
    pub client_key: &'a Option<PathBuf>,
    pub batch_max_events: &'a Option<usize>,
    pub batch_max_delay: &'a Option<String>,
    pub retry_initial_backoff: &'a Option<String>,
    pub retry_max_backoff: &'a Option<String>,
    pub retry_max_elapsed: &'a Option<String>,
    pub drain_timeout: &'a Option<String>,
}

macro_rules! common {
    ($name:literal, $s:expr) => {
        Common {
            section: $name,
            compression: &$s.compression,
            timeout: &$s.timeout,
            headers: &$s.headers,
            bearer_token_file: &$s.bearer_token_file,
            certificate: &$s.certificate,
            client_certificate: &$s.client_certificate,
            client_key: &$s.client_key,
            batch_max_events: &$s.batch_max_events,
            batch_max_delay: &$s.batch_max_delay,
            retry_initial_backoff: &$s.retry_initial_backoff,
            retry_max_backoff: &$s.retry_max_backoff,
            retry_max_elapsed: &$s.retry_max_elapsed,
            drain_timeout: &$s.drain_timeout,
        }
    };
}

impl Otlp {
    pub fn common(&self) -> Common<'_> {
        common!("otlp", self)
    }
}

impl Webhook {
    pub fn common(&self) -> Common<'_> {
        common!("webhook", self)
    }
}

/// Parses the text of a config file; the error names the key and line.
pub fn parse(text: &str) -> Result<File, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../../packaging/config.example.toml");
        let f = parse(text).unwrap();
        assert_eq!(f.capture.privsep_user, None, "the example no longer sets privsep_user");
        let paths = f.capture.sshd_paths.unwrap();
        for p in crate::config::DEFAULT_SSHD_PATHS {
            assert!(paths.iter().any(|x| x == p), "the example's sshd_paths lack the default {p}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[otlp]\nendpont = \"http://x\"\n").unwrap_err();
        assert!(err.contains("endpont"), "{err}");
        let err = parse("[otlpp]\n").unwrap_err();
        assert!(err.contains("otlpp"), "{err}");
        let err = parse("[otlp]\nbatch_max_events = \"many\"\n").unwrap_err();
        assert!(err.contains("batch_max_events"), "{err}");
    }
}
