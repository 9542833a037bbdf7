//! The settings the command line gives, as clap arguments. `None` means
//! "not given": the environment, the file or the default decides. The value
//! parsers here are the only check of a value's form; the file's keys go
//! through the same functions.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{Compression, FailureMode, Protocol, SessionExec, SyscallProbes};

/// `run`'s and `check`'s flags.
#[derive(Clone, Debug, Default, Args)]
pub struct Flags {
    /// TOML config file. Flags override `OTEL_*` environment variables, which
    /// override the file, which overrides the defaults. See
    /// packaging/config.example.toml.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub probes: ProbeFlags,

    #[command(flatten)]
    pub pipeline: PipelineFlags,

    /// Print events to stdout as JSON lines, also when an OTLP endpoint is
    /// configured. Without an endpoint they go to stdout anyway.
    #[arg(long)]
    pub stdout: bool,

    /// OTLP/HTTP base URL; `/v1/logs` is appended (as
    /// OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP/HTTP logs URL, used as is (as OTEL_EXPORTER_OTLP_LOGS_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_logs_endpoint: Option<String>,

    /// Body encoding. [default: http/protobuf]
    #[arg(long, value_name = "PROTOCOL", value_enum)]
    pub otlp_protocol: Option<Protocol>,

    /// Body compression. [default: gzip]
    #[arg(long, value_name = "COMPRESSION", value_enum)]
    pub otlp_compression: Option<Compression>,

    /// Timeout of one export request, e.g. 10s. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub otlp_timeout: Option<Duration>,

    /// Extra request header, NAME=VALUE; repeat for each.
    #[arg(long = "otlp-header", value_name = "NAME=VALUE", value_parser = header)]
    pub otlp_headers: Vec<(String, String)>,

    /// File holding a bearer token, sent as `Authorization: Bearer TOKEN` to
    /// the OTLP endpoint and the webhook. The token is never logged or
    /// printed.
    #[arg(long, value_name = "PATH")]
    pub bearer_token_file: Option<PathBuf>,

    /// Send events to a plain HTTPS service too (or instead): one POST per
    /// event with the JSON object stdout prints, several in flight at once
    /// (so not necessarily in order). Spooled and retried like
    /// OTLP, in its own spool table; --bearer-token-file applies to it too.
    /// See `[webhook]` in the config. A URL that carries a token belongs in
    /// the config file or SSHLOGIN_WEBHOOK_URL, not on the command line.
    #[arg(long, value_name = "URL", env = "SSHLOGIN_WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,

    /// With --webhook-url: POST a JSON array per batch, not one per event.
    #[arg(long)]
    pub webhook_batch: bool,

    /// Extra webhook request header, NAME=VALUE; repeat for each.
    #[arg(long = "webhook-header", value_name = "NAME=VALUE", value_parser = header)]
    pub webhook_headers: Vec<(String, String)>,

    /// Directory of the durable spool of events not yet exported (created
    /// 0700). [default: /var/lib/sshlogin]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Most the spool may hold (K, M or G); when full, the oldest events are
    /// dropped and counted. [default: 256M]
    #[arg(long, value_name = "SIZE", value_parser = super::size)]
    pub spool_max_size: Option<u64>,

    /// Serve OpenMetrics/Prometheus counters at http://ADDR/metrics, e.g.
    /// 127.0.0.1:9464. [default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,

    /// How often to send sshlogin.heartbeat with the counters since the
    /// last one; 0 for none. [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub heartbeat_interval: Option<Duration>,

    /// Do not mark opens with ssh.first_seen.client and ssh.first_seen.key
    /// (the store under --state-dir is then neither read nor written).
    #[arg(long)]
    pub no_first_seen: bool,

    /// For this long after the first-seen store is created its marks are
    /// left out (everything is new then). [default: 1d]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub first_seen_learning: Option<Duration>,

    /// Client addresses and keys not used for this long are forgotten.
    /// [default: 90d]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub first_seen_retention: Option<Duration>,

    /// Commands run in an SSH session: `all` sends one ssh.session.exec
    /// per exec in the session's process tree (within
    /// --session-exec-rate); `off` sends none. [default: all]
    #[arg(long, value_name = "MODE", value_enum, hide_possible_values = true)]
    pub session_exec: Option<SessionExec>,

    /// Exec events one session may send per second, sustained; what is held
    /// back is counted in an ssh.session.activity.summary at its close. At
    /// least 1 (`--session-exec off` for none). [default: 50]
    #[arg(long, value_name = "N")]
    pub session_exec_rate: Option<u32>,

    /// Exec events one session may send at once before
    /// --session-exec-rate applies (a shell's start-up, a short script).
    /// At least 1. [default: 500]
    #[arg(long, value_name = "N")]
    pub session_exec_burst: Option<u32>,

    /// Executable to leave out of the session's exec events: an absolute
    /// path, or a prefix when it ends in '/' (e.g. /usr/lib/git-core/);
    /// repeat for each. Replaces the file's session.exclude. [default: none]
    #[arg(long = "session-exclude", value_name = "PATH")]
    pub session_exclude: Option<Vec<String>>,
}

/// The flags of what the probes capture (`run`, `check`, `capture`).
#[derive(Debug, Args, Clone, Default)]
pub struct ProbeFlags {
    /// Name (comm) of an sshd binary; repeat for each. Only a root exec of
    /// one of these names starts an sshd process tree (its binary is then
    /// checked against --sshd-path), and an sshd process that execs any
    /// other name leaves its tree. OpenSSH <= 9.7 runs as `sshd`, 9.8+ adds
    /// `sshd-session`, 10.x adds `sshd-auth`. At most 4, each at most 15
    /// bytes. [default: sshd sshd-session sshd-auth]
    #[arg(long = "sshd-comm", value_name = "NAME", value_parser = comm)]
    pub family: Option<Vec<String>>,

    /// Size of the kernel ring buffer: a power of two from 4K to 1G (suffix
    /// K, M or G allowed). Larger absorbs bigger login storms if the daemon
    /// falls behind. [default: 4M]
    #[arg(long, value_name = "BYTES", value_parser = ring_size)]
    pub ring_buffer_size: Option<u32>,

    /// Path of an sshd binary; repeat for each. A process tree whose root
    /// runs any other file (compared by device and inode) is refused and
    /// counted, with one log line naming it. The binaries of the host's own
    /// sshd listeners running at start, and the sshd-session/sshd-auth they
    /// name, are admitted as well. [default: /usr/sbin/sshd, /usr/bin/sshd
    /// and sshd-session/sshd-auth under /usr/lib/openssh, /usr/lib/ssh,
    /// /usr/libexec/openssh, /usr/libexec, /usr/local]
    #[arg(long = "sshd-path", value_name = "PATH")]
    pub sshd_paths: Option<Vec<String>>,

    /// How sendto, setresuid and connect are seen: `fentry` (fentry/fexit on
    /// the kernel functions behind them: other processes pay next to
    /// nothing; refused by hardened kernels), `tracepoints` (one tracepoint
    /// per syscall; every syscall of every task pays), `raw` (one raw
    /// sys_enter tracepoint for all) or `auto` (fentry if the kernel takes
    /// it, else tracepoints). See docs/performance.md. [default: auto]
    #[arg(long, value_name = "MODE", value_enum, hide_possible_values = true)]
    pub syscall_probes: Option<SyscallProbes>,
}

/// The flags of how records become events (`run`, `check`, `replay`).
#[derive(Debug, Args, Clone, Default)]
pub struct PipelineFlags {
    /// No longer used: sshd's pre-authentication child is told apart by
    /// its place in the process tree, not by its user. Accepted (with a
    /// warning) so that older command lines still start.
    #[arg(long, value_name = "USER", hide = true)]
    pub privsep_user: Option<String>,

    /// Failed logins: `each` sends one ssh.auth.failure per attempt;
    /// `summary` sends the first --failures-alone of a client address in a
    /// window alone and folds the rest into one ssh.auth.failure.summary.
    /// [default: each]
    #[arg(long, value_name = "MODE", value_enum)]
    pub failures: Option<FailureMode>,

    /// In summary mode, the failures of an address sent alone per window.
    /// [default: 5]
    #[arg(long, value_name = "N")]
    pub failures_alone: Option<u32>,

    /// In summary mode, how long a window lasts; its summary is sent when
    /// it ends. [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub failures_window: Option<Duration>,
}

/// A kernel `comm`: 1 to 15 bytes.
pub fn comm(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() >= sshlogin_common::COMM_LEN || s.contains('\0') {
        return Err(format!("a process name is 1 to {} bytes (the kernel's comm)", sshlogin_common::COMM_LEN - 1));
    }
    Ok(s.to_string())
}

/// A power of two from 4 KiB to 1 GiB, with an optional K/M/G suffix.
pub fn ring_size(s: &str) -> Result<u32, String> {
    let bytes = super::size(s)?;
    if bytes > 1 << 30 {
        return Err("at most 1G".into());
    }
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!("{bytes} bytes: must be a power of two of at least 4K"));
    }
    Ok(bytes as u32)
}

/// `NAME=VALUE` for --otlp-header and --webhook-header.
/// Never fails here: clap's error would repeat the whole argument, value
/// (a token) and all. Something that is not NAME=VALUE becomes an empty
/// name, which resolving rejects without the value.
fn header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').unwrap_or(("", ""));
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 500ms, 10s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes() {
        assert_eq!(ring_size("4M"), Ok(4 << 20));
        assert_eq!(ring_size("4096"), Ok(4096));
        assert!(ring_size("3M").is_err());
        assert!(ring_size("2K").is_err());
        assert!(ring_size("2G").is_err());
        assert!(ring_size("1T").is_err());
        assert!(ring_size("x").is_err());
    }
}
