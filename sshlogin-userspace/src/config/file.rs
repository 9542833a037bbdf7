//! The TOML config file (`--config`). Every key is optional; an unknown key
//! is an error that names it, so a typo never silently falls back to a
//! default.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use super::{Compression, FailureMode, FailurePolicy, Protocol, SessionExec, SyscallProbes};

/// The file and its sections: every key optional (a missing one is its
/// type's default), an unknown one an error.
macro_rules! sections {
    ($($(#[$m:meta])* $name:ident { $($body:tt)* })*) => {$(
        $(#[$m])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name { $($body)* }
    )*};
}

sections! {
    File {
        pub capture: Capture,
        pub resource: Resource,
        pub stdout: Stdout,
        pub otlp: Otlp,
        pub webhook: Webhook,
        pub spool: Spool,
        pub metrics: Metrics,
        pub failures: Failures,
        pub heartbeat: Heartbeat,
        pub first_seen: FirstSeen,
        pub session: Session,
    }

    Failures {
        pub mode: Option<FailureMode>,
        pub alone: Option<u32>,
        pub window: Option<String>,
    }

    Heartbeat {
        /// A duration, or "off".
        pub interval: Option<String>,
    }

    FirstSeen {
        pub enabled: Option<bool>,
        pub retention: Option<String>,
        pub learning: Option<String>,
    }

    Session {
        pub exec: Option<SessionExec>,
        pub rate: Option<u32>,
        pub burst: Option<u32>,
        /// Absolute paths; one ending in '/' is a prefix.
        pub exclude: Option<Vec<String>>,
    }

    Spool {
        pub dir: Option<PathBuf>,
        pub max_size: Option<String>,
    }

    Metrics {
        pub listen: Option<String>,
    }

    Capture {
        pub sshd_comm: Option<Vec<String>>,
        pub sshd_paths: Option<Vec<String>>,
        pub syscall_probes: Option<SyscallProbes>,
        pub ring_buffer_size: Option<String>,
        /// No longer used; accepted with a warning.
        pub privsep_user: Option<String>,
    }

    Resource {
        pub service_name: Option<String>,
        pub attributes: BTreeMap<String, String>,
    }

    Stdout {
        pub enabled: Option<bool>,
    }
}

/// `[otlp]` and `[webhook]`, each with its own keys and the keys both
/// network exporters have, written once here. (Not a flattened struct:
/// serde cannot combine `flatten` with `deny_unknown_fields`, and a typo
/// must stay an error.) [`Shared`] is those common keys, taken from either.
macro_rules! exporter_sections {
    (
        shared { $($(#[$sa:meta])* $s:ident: $st:ty,)* }
        otlp { $($(#[$oa:meta])* $o:ident: $ot:ty,)* }
        webhook { $($(#[$wa:meta])* $w:ident: $wt:ty,)* }
    ) => {
        #[derive(Debug, Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Otlp { $($(#[$oa])* pub $o: $ot,)* $($(#[$sa])* pub $s: $st,)* }

        #[derive(Debug, Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Webhook { $($(#[$wa])* pub $w: $wt,)* $($(#[$sa])* pub $s: $st,)* }

        /// The keys both network exporters' sections have.
        #[derive(Debug, Default, Clone)]
        pub struct Shared { $(pub $s: $st,)* }

        impl Otlp {
            pub fn shared(&self) -> Shared {
                Shared { $($s: self.$s.clone(),)* }
            }
        }

        impl Webhook {
            pub fn shared(&self) -> Shared {
                Shared { $($s: self.$s.clone(),)* }
            }
        }
    };
}

exporter_sections! {
    shared {
        compression: Option<Compression>,
        timeout: Option<String>,
        headers: BTreeMap<String, String>,
        bearer_token_file: Option<PathBuf>,
        certificate: Option<PathBuf>,
        client_certificate: Option<PathBuf>,
        client_key: Option<PathBuf>,
        batch_max_events: Option<usize>,
        batch_max_delay: Option<String>,
        retry_initial_backoff: Option<String>,
        retry_max_backoff: Option<String>,
        retry_max_elapsed: Option<String>,
        drain_timeout: Option<String>,
        failure_policy: Option<FailurePolicy>,
    }
    otlp {
        endpoint: Option<String>,
        logs_endpoint: Option<String>,
        protocol: Option<Protocol>,
    }
    webhook {
        url: Option<String>,
        batch: Option<bool>,
    }
}

/// Parses the text of a config file. The error says which key (`section.key`)
/// when the error is on a `key = value` line, and the line.
pub fn parse(text: &str) -> Result<File, (Option<String>, String)> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let line = text[..at].matches('\n').count() + 1;
        (key_at(text, at), format!("{} (line {line})", without_quoted(e.message().trim_end())))
    })
}

/// The parser's message with every quoted value left out (`invalid type:
/// string "…", expected a boolean`): the value may be a misplaced secret.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in message.chars() {
        // `\"` inside a value does not end it.
        if quoted && (escaped || c == '\\') {
            escaped = !escaped && c == '\\';
            continue;
        }
        match (c, quoted) {
            ('"', false) => {
                out.push_str("\"…");
                quoted = true;
            }
            ('"', true) => {
                out.push('"');
                quoted = false;
            }
            (c, false) => out.push(c),
            (_, true) => {}
        }
    }
    out
}

/// The dotted key of the `key = value` line that holds byte `at`.
fn key_at(text: &str, at: usize) -> Option<String> {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('[') || key.contains(['"', '#', '\n']) {
        return None;
    }
    let section = text[..start].lines().rev().map(str::trim).find(|l| l.starts_with('['));
    Some(match section.map(|s| s.trim_matches(['[', ']']).trim()) {
        Some(section) => format!("{section}.{key}"),
        None => key.to_string(),
    })
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
    fn the_example_configs_commented_sections_hold_the_defaults() {
        let text = include_str!("../../../packaging/config.example.toml");
        let (_, commented) = text.split_once("# The sections below are commented out").unwrap();
        // `# [section]` and `# key = value` lines, not the prose or the examples.
        let uncommented: String = commented
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                let key = l.split_once(" = ").map_or("", |(k, _)| k);
                (l.starts_with('[') && l.ends_with(']'))
                    || (!key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !l.contains('#'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(uncommented.contains("[session]\nexec = "), "{uncommented}");
        let c =
            crate::config::resolve(&crate::config::Flags::default(), &|_| None, parse(&uncommented).unwrap()).unwrap();
        assert_eq!(c.session, crate::config::SessionActivity::default());
        assert_eq!(c.failures, crate::failures::Settings::default());
        let d = crate::config::resolve(&crate::config::Flags::default(), &|_| None, File::default()).unwrap();
        assert_eq!((c.heartbeat, c.first_seen), (d.heartbeat, d.first_seen));
    }

    #[test]
    fn unknown_keys_are_named() {
        let (key, err) = parse("[otlp]\nendpont = \"http://x\"\n").unwrap_err();
        assert_eq!(key.as_deref(), Some("otlp.endpont"), "{err}");
        let (_, err) = parse("[otlpp]\n").unwrap_err();
        assert!(err.contains("otlpp"), "{err}");
        let (key, err) = parse("[otlp]\nbatch_max_events = \"many\"\n").unwrap_err();
        assert_eq!(key.as_deref(), Some("otlp.batch_max_events"), "{err}");
        let (key, err) = parse("# c\n[webhook]\ncompression = \"zstd\"\n").unwrap_err();
        assert_eq!(key.as_deref(), Some("webhook.compression"), "{err}");
        assert!(err.contains("gzip or none") && err.contains("line 3"), "{err}");
    }
}
