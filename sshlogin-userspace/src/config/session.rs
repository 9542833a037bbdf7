//! What sshlogin reports of the commands run inside an SSH session
//! (`[session]`): whether each exec becomes an `ssh.session.exec` event, how
//! many a session may send, and which programs are left out.
//!
//! The limit is a token bucket per session: `burst` events at once, refilled
//! at `rate` a second; what it holds back is counted and reported in one
//! `ssh.session.activity.summary` when the session closes. The defaults:
//! someone typing runs well under one command a second, while a script or a
//! build can run hundreds a second. A burst of 500 covers a login's shell
//! start-up and a short script whole; 50 a second sustained keeps one busy
//! session to roughly 15 KB/s of OTLP at worst.

use super::{ConfigError, Flags, file};

/// Whether the commands run in a session are reported (`session.exec`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SessionExec {
    /// One ssh.session.exec per exec in a session's process tree, within
    /// the rate limit.
    #[default]
    All,
    /// No ssh.session.exec events.
    Off,
}

/// The `[session]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionActivity {
    pub exec: SessionExec,
    /// Exec events a session may send per second, sustained (the bucket's
    /// refill rate). At least 1.
    pub rate: u32,
    /// Exec events a session may send at once (the bucket's size). At
    /// least 1.
    pub burst: u32,
    /// Executable paths left out: an entry ending in '/' is a prefix, any
    /// other an exact path. Every entry is absolute.
    pub exclude: Vec<String>,
}

pub const DEFAULT_EXEC_RATE: u32 = 50;
pub const DEFAULT_EXEC_BURST: u32 = 500;

impl Default for SessionActivity {
    fn default() -> Self {
        SessionActivity {
            exec: SessionExec::All,
            rate: DEFAULT_EXEC_RATE,
            burst: DEFAULT_EXEC_BURST,
            exclude: Vec::new(),
        }
    }
}

/// The flag, else the file's key, else the default; a bad value names the
/// one it came from.
pub(super) fn session(flags: &Flags, f: &file::Session) -> Result<SessionActivity, ConfigError> {
    let d = SessionActivity::default();
    let exec = flags.session_exec.or(f.exec).unwrap_or(d.exec);
    let (key, rate) = match (flags.session_exec_rate, f.rate) {
        (Some(n), _) => ("--session-exec-rate", n),
        (None, Some(n)) => ("session.rate", n),
        (None, None) => ("session.rate", d.rate),
    };
    if rate == 0 {
        let off = if key.starts_with("--") { "--session-exec off" } else { "exec = \"off\"" };
        return Err(ConfigError::new(key, format!("at least 1 (to report no commands, use {off})")));
    }
    let (key, burst) = match (flags.session_exec_burst, f.burst) {
        (Some(n), _) => ("--session-exec-burst", n),
        (None, Some(n)) => ("session.burst", n),
        (None, None) => ("session.burst", d.burst),
    };
    if burst == 0 {
        return Err(ConfigError::new(key, "at least 1"));
    }
    let (key, exclude) = match (&flags.session_exclude, &f.exclude) {
        (Some(v), _) => ("--session-exclude", v.clone()),
        (None, Some(v)) => ("session.exclude", v.clone()),
        (None, None) => ("session.exclude", d.exclude),
    };
    if let Some(n) = exclude.iter().position(|p| !p.starts_with('/') || p.contains('\0')) {
        return Err(ConfigError::new(
            key,
            format!("entry {}: not an absolute path (an exact path, or a prefix ending in '/')", n + 1),
        ));
    }
    Ok(SessionActivity { exec, rate, burst, exclude })
}
