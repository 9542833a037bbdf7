//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// See every SSH login on this host through eBPF and report it as an
/// OpenTelemetry-shaped event.
///
/// sshlogin attaches tracepoints that watch what sshd and PAM tell the kernel
/// (audit records, syslog lines, privilege drops, process forks and exits),
/// turns them into one event per session opened, session closed, failed
/// authentication and forwarded connection, and prints each as a JSON line or
/// sends it as an OTLP/HTTP log record (or to a webhook), spooled on disk
/// until delivered. Needs root and Linux 5.8+. `sshlogin check` says whether
/// this host can run it.
#[derive(Debug, Parser)]
#[command(name = "sshlogin", version, propagate_version = true)]
pub struct Cli {
    /// Log filter for sshlogin's own messages on stderr, in RUST_LOG syntax
    /// (e.g. `info`, `debug`, `sshlogin=debug,aya=warn`). Without it,
    /// SSHLOGIN_LOG, then RUST_LOG, then `info`.
    #[arg(long, global = true, env = "SSHLOGIN_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// `human` (default) or `json`: one JSON object per log line, for log
    /// collectors. Either way, never a secret (tokens, header values).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,

    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// Cross-flag checks clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Command::Run(a) => a.probes.validate(),
            Command::Capture(a) => a.probes.validate(),
            Command::Replay(_) => Ok(()),
            Command::Check(a) => a.run.probes.validate(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load the probes and report SSH logins until SIGINT or
    /// SIGTERM.
    Run(Box<RunArgs>),
    /// Write the raw records the probes see to a file, one hex-encoded record
    /// per line, until SIGINT/SIGTERM or --duration. For test fixtures and bug
    /// reports; `sshlogin replay` turns such a file into events.
    Capture(CaptureArgs),
    /// Turn a capture file into events without loading any probe (no root
    /// needed). Host facts (user names, /proc) are read from this machine.
    Replay(ReplayArgs),
    /// Check that this host can run sshlogin with this configuration (the
    /// same flags and file as `run`): kernel, privileges, tracefs (mounted
    /// if missing), tracepoints, the eBPF programs loading for real, sshd's
    /// binaries and layout, PAM audit, syslog, the state directory, each
    /// endpoint. One line per item; exits 0 only if none failed.
    Check(Box<CheckArgs>),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Do not try to reach the configured endpoints.
    #[arg(long)]
    pub no_network: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ProbeArgs {
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

    /// How syscall entries are seen: `tracepoints` (one tracepoint per
    /// syscall sshlogin follows) or `raw` (one raw sys_enter tracepoint for
    /// all: a little cheaper on sendto, dearer on every syscall sshlogin does
    /// not follow). See docs/performance.md. [default: tracepoints]
    #[arg(long, value_name = "MODE")]
    pub syscall_probes: Option<String>,
}

impl ProbeArgs {
    /// Checks what a value parser cannot see alone; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.family.as_ref().map_or(0, Vec::len);
        if n > sshlogin_common::MAX_FAMILY {
            return Err(format!("--sshd-comm: at most {} names, got {n}", sshlogin_common::MAX_FAMILY));
        }
        Ok(())
    }
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
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        _ => return Err(format!("unknown unit {unit:?} (use K, M or G)")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let bytes = n.checked_shl(shift).filter(|b| *b <= 1 << 30).ok_or("at most 1G")?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!("{bytes} bytes: must be a power of two of at least 4K"));
    }
    Ok(bytes as u32)
}

/// `NAME=VALUE` for --otlp-header.
fn header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    if k.trim().is_empty() {
        return Err("the header name is empty".into());
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 500ms, 10s)"))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file. Flags override `OTEL_*` environment variables, which
    /// override the file, which overrides the defaults. See
    /// packaging/config.example.toml.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub probes: ProbeArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

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

    /// `http/protobuf` or `http/json`. [default: http/protobuf]
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,

    /// `gzip` or `none`. [default: gzip]
    #[arg(long, value_name = "COMPRESSION")]
    pub otlp_compression: Option<String>,

    /// Timeout of one export request, e.g. 10s. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub otlp_timeout: Option<std::time::Duration>,

    /// Extra request header, NAME=VALUE; repeat for each.
    #[arg(long = "otlp-header", value_name = "NAME=VALUE", value_parser = header)]
    pub otlp_headers: Vec<(String, String)>,

    /// File holding a bearer token, sent as `Authorization: Bearer TOKEN` to
    /// the OTLP endpoint and the webhook. The token is never logged or
    /// printed.
    #[arg(long, value_name = "PATH")]
    pub bearer_token_file: Option<PathBuf>,

    /// Send events to a plain HTTPS service too (or instead): one POST per
    /// event with the JSON object stdout prints. Spooled and retried like
    /// OTLP, in its own spool table; --bearer-token-file applies to it too.
    /// See [webhook] in the config.
    #[arg(long, value_name = "URL")]
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
    #[arg(long, value_name = "SIZE", value_parser = spool_size)]
    pub spool_max_size: Option<u64>,

    /// Serve OpenMetrics/Prometheus counters at http://ADDR/metrics, e.g.
    /// 127.0.0.1:9464. [default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

fn spool_size(s: &str) -> Result<u64, String> {
    crate::config::size(s)
}

impl RunArgs {
    pub fn flags(&self) -> crate::config::Flags {
        crate::config::Flags {
            config: self.config.clone(),
            stdout: self.stdout,
            family: self.probes.family.clone(),
            ring_buffer_size: self.probes.ring_buffer_size,
            privsep_user: self.pipeline.privsep_user.clone(),
            otlp_endpoint: self.otlp_endpoint.clone(),
            otlp_logs_endpoint: self.otlp_logs_endpoint.clone(),
            otlp_protocol: self.otlp_protocol.clone(),
            otlp_compression: self.otlp_compression.clone(),
            otlp_timeout: self.otlp_timeout,
            otlp_headers: self.otlp_headers.clone(),
            bearer_token_file: self.bearer_token_file.clone(),
            sshd_paths: self.probes.sshd_paths.clone(),
            syscall_probes: self.probes.syscall_probes.clone(),
            state_dir: self.state_dir.clone(),
            spool_max_size: self.spool_max_size,
            metrics_listen: self.metrics_listen,
            webhook_url: self.webhook_url.clone(),
            webhook_batch: self.webhook_batch,
            webhook_headers: self.webhook_headers.clone(),
        }
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct PipelineArgs {
    /// No longer used: sshd's pre-authentication child is told apart by
    /// its place in the process tree, not by its user. Accepted (with a
    /// warning) so that older command lines still start.
    #[arg(long, value_name = "USER", hide = true)]
    pub privsep_user: Option<String>,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub probes: ProbeArgs,

    /// File to write (`-` for stdout).
    #[arg(long, short, value_name = "PATH")]
    pub output: PathBuf,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A file written by `sshlogin capture`.
    pub input: PathBuf,

    /// Print the decoded records instead of events.
    #[arg(long)]
    pub records: bool,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

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

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        let err = Cli::try_parse_from(["sshlogin", "run", "--sshd-comm", "a-very-long-process-name"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--sshd-comm"), "{err}");
        let err = Cli::try_parse_from(["sshlogin", "run", "--ring-buffer-size", "3M"]).unwrap_err();
        assert!(err.to_string().contains("--ring-buffer-size"), "{err}");
        let cli = Cli::try_parse_from([
            "sshlogin",
            "run",
            "--sshd-comm",
            "a",
            "--sshd-comm",
            "b",
            "--sshd-comm",
            "c",
            "--sshd-comm",
            "d",
            "--sshd-comm",
            "e",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else { panic!() };
        assert!(run.probes.validate().unwrap_err().contains("--sshd-comm"));
    }
}
