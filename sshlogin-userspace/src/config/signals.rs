//! The settings of what sshlogin says beyond each login: failure summaries,
//! its heartbeat, first-seen marks.

use std::time::Duration;

use super::{ConfigError, Flags, PipelineFlags, duration, file, opt_duration};
use crate::failures;

/// The first-seen store's settings (`[first_seen]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstSeen {
    /// Entries unused this long are forgotten.
    pub retention: Duration,
    /// For this long after the store is created, marks are left out.
    pub learning: Duration,
}

pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
pub const DEFAULT_LEARNING: Duration = Duration::from_secs(86_400);

pub(super) fn failures(flags: &PipelineFlags, f: &file::Failures) -> Result<failures::Settings, ConfigError> {
    let d = failures::Settings::default();
    let mode = flags.failures.or(f.mode).unwrap_or(d.mode);
    let alone = flags.failures_alone.or(f.alone).unwrap_or(d.alone);
    if alone == 0 {
        let key = if flags.failures_alone.is_some() { "--failures-alone" } else { "failures.alone" };
        return Err(ConfigError::new(key, "at least 1: an address's first failure always goes out alone"));
    }
    let (key, window) = match (flags.failures_window, opt_duration("failures.window", &f.window)?) {
        (Some(w), _) => ("--failures-window", w),
        (None, Some(w)) => ("failures.window", w),
        (None, None) => ("failures.window", d.window),
    };
    if window < Duration::from_secs(1) {
        return Err(ConfigError::new(key, "at least 1s"));
    }
    Ok(failures::Settings { mode, alone, window })
}

pub(super) fn heartbeat(flags: &Flags, f: &file::Heartbeat) -> Result<Option<Duration>, ConfigError> {
    let (key, every) = match (flags.heartbeat_interval, f.interval.as_deref().map(str::trim)) {
        (Some(d), _) => ("--heartbeat-interval", d),
        (None, Some("off")) => return Ok(None),
        (None, Some(text)) => ("heartbeat.interval", duration("heartbeat.interval", text)?),
        (None, None) => return Ok(Some(DEFAULT_HEARTBEAT)),
    };
    if every.is_zero() {
        return Ok(None);
    }
    if every < Duration::from_secs(1) {
        return Err(ConfigError::new(key, "at least 1s, or 0 (off) for none"));
    }
    Ok(Some(every))
}

pub(super) fn first_seen(flags: &Flags, f: &file::FirstSeen) -> Result<Option<FirstSeen>, ConfigError> {
    if flags.no_first_seen || f.enabled == Some(false) {
        return Ok(None);
    }
    let retention =
        flags.first_seen_retention.or(opt_duration("first_seen.retention", &f.retention)?).unwrap_or(DEFAULT_RETENTION);
    if retention < Duration::from_secs(86_400) {
        return Err(ConfigError::new("first_seen.retention", "at least 1d"));
    }
    let learning =
        flags.first_seen_learning.or(opt_duration("first_seen.learning", &f.learning)?).unwrap_or(DEFAULT_LEARNING);
    Ok(Some(FirstSeen { retention, learning }))
}
