//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const DEFAULT_FAMILY: &[&str] = &["sshd", "sshd-session", "sshd-auth"];

/// See every SSH login on this host through eBPF and report it as an
/// OpenTelemetry-shaped event.
///
/// sshlogin attaches tracepoints that watch what sshd and PAM tell the kernel
/// (audit records, syslog lines, privilege drops, process forks and exits),
/// turns them into one event per session opened, session closed and failed
/// authentication, and prints each as a JSON line. Needs root and Linux 5.8+.
#[derive(Debug, Parser)]
#[command(name = "sshlogin", version, propagate_version = true)]
pub struct Cli {
    /// Log filter for sshlogin's own messages on stderr, in RUST_LOG syntax
    /// (e.g. `info`, `debug`, `sshlogin=debug,aya=warn`).
    #[arg(long, global = true, env = "SSHLOGIN_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load the probes and report SSH logins until SIGINT or
    /// SIGTERM.
    Run(RunArgs),
    /// Write the raw records the probes see to a file, one hex-encoded record
    /// per line, until SIGINT/SIGTERM or --duration. For test fixtures and bug
    /// reports; `sshlogin replay` turns such a file into events.
    Capture(CaptureArgs),
    /// Turn a capture file into events without loading any probe (no root
    /// needed). Host facts (user names, /proc) are read from this machine.
    Replay(ReplayArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Process name (comm) of an sshd binary whose records count; repeat for
    /// each. OpenSSH <= 9.7 runs as `sshd`, 9.8+ adds `sshd-session`, 10.x
    /// adds `sshd-auth`. At most 4, each at most 15 bytes.
    #[arg(long = "sshd-comm", value_name = "NAME", default_values_t = ProbeArgs::default_family())]
    pub family: Vec<String>,

    /// Size of the kernel ring buffer in bytes: a power of two. Larger
    /// absorbs bigger login storms if the daemon falls behind.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub ring_buffer_size: u32,
}

impl ProbeArgs {
    pub fn default_family() -> Vec<String> {
        DEFAULT_FAMILY.iter().map(|s| s.to_string()).collect()
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub probes: ProbeArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Print events to stdout as JSON lines. This is also what happens when
    /// no endpoint is configured.
    #[arg(long)]
    pub stdout: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PipelineArgs {
    /// The unprivileged user sshd's pre-authentication child switches to
    /// (`SSH_PRIVSEP_USER`). Its privilege drop is not a login.
    #[arg(long, value_name = "USER", default_value = "sshd")]
    pub privsep_user: String,
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
