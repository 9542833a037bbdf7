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

impl Command {
    /// Cross-flag checks clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Command::Run(a) => a.probes.validate(),
            Command::Capture(a) => a.probes.validate(),
            Command::Replay(_) => Ok(()),
        }
    }
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
    #[arg(long = "sshd-comm", value_name = "NAME", default_values_t = ProbeArgs::default_family(), value_parser = comm)]
    pub family: Vec<String>,

    /// Size of the kernel ring buffer: a power of two from 4K to 1G (suffix
    /// K, M or G allowed). Larger absorbs bigger login storms if the daemon
    /// falls behind.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20, value_parser = ring_size)]
    pub ring_buffer_size: u32,
}

impl ProbeArgs {
    pub fn default_family() -> Vec<String> {
        DEFAULT_FAMILY.iter().map(|s| s.to_string()).collect()
    }

    /// Checks what a value parser cannot see alone; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.family.len() > sshlogin_common::MAX_FAMILY {
            return Err(format!(
                "--sshd-comm: at most {} names, got {}",
                sshlogin_common::MAX_FAMILY,
                self.family.len()
            ));
        }
        Ok(())
    }
}

/// A kernel `comm`: 1 to 15 bytes.
fn comm(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() >= sshlogin_common::COMM_LEN || s.contains('\0') {
        return Err(format!("a process name is 1 to {} bytes (the kernel's comm)", sshlogin_common::COMM_LEN - 1));
    }
    Ok(s.to_string())
}

/// A power of two from 4 KiB to 1 GiB, with an optional K/M/G suffix.
fn ring_size(s: &str) -> Result<u32, String> {
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
