//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Flags, LogFormat, PipelineFlags, ProbeFlags};

/// `run`'s flags: every setting that has one (see [`Flags`]).
pub type RunArgs = Flags;

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

    /// `human` or `json`: one JSON object per log line, for log
    /// collectors. Either way, never a secret (tokens, header values).
    #[arg(long, global = true, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Human, hide_possible_values = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
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
    pub run: Flags,

    /// Do not try to reach the configured endpoints.
    #[arg(long)]
    pub no_network: bool,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub probes: ProbeFlags,

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
    pub pipeline: PipelineFlags,
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
    fn bad_flags_are_usage_errors_naming_the_flag() {
        let err = Cli::try_parse_from(["sshlogin", "run", "--sshd-comm", "a-very-long-process-name"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--sshd-comm"), "{err}");
        let err = Cli::try_parse_from(["sshlogin", "run", "--ring-buffer-size", "3M"]).unwrap_err();
        assert!(err.to_string().contains("--ring-buffer-size"), "{err}");
        let err = Cli::try_parse_from(["sshlogin", "run", "--otlp-compression", "zstd"]).unwrap_err();
        assert!(err.to_string().contains("--otlp-compression"), "{err}");
        let five = ["a", "b", "c", "d", "e"].iter().flat_map(|n| ["--sshd-comm", n]);
        let cli = Cli::try_parse_from(["sshlogin", "run"].into_iter().chain(five)).unwrap();
        let Command::Run(run) = cli.command else { panic!() };
        let err = crate::config::resolve_without_env(&run).unwrap_err();
        assert_eq!(err.key, "--sshd-comm", "{err}");
    }
}
