//! The bearer token file, read again whenever it changes (a stat per
//! request), so a rotated token is used without a restart. Errors name the
//! file, never the token.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use reqwest::header::HeaderValue;

/// What tells one version of the file from another.
type Stamp = (u64, u64, Option<SystemTime>, u64);

pub struct TokenFile {
    path: PathBuf,
    stamp: Option<Stamp>,
    value: HeaderValue,
}

impl TokenFile {
    pub fn open(path: &Path) -> Result<TokenFile, String> {
        let stamp = stamp(path);
        Ok(TokenFile { path: path.to_path_buf(), stamp, value: read(path)? })
    }

    /// The `Authorization` value, from the file as it is now. A file that
    /// became unreadable or empty keeps the last good token, with a warning.
    pub fn current(&mut self) -> HeaderValue {
        let now = stamp(&self.path);
        if now != self.stamp {
            self.stamp = now;
            match read(&self.path) {
                Ok(v) => {
                    tracing::info!(file = %self.path.display(), "the bearer token file changed; using the new token");
                    self.value = v;
                }
                Err(e) => tracing::warn!("{e}; keeping the previous token"),
            }
        }
        self.value.clone()
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.modified().ok(), m.len()))
}

fn read(path: &Path) -> Result<HeaderValue, String> {
    let text = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| format!("{}: the token is not UTF-8", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| format!("{}: the token has characters a header cannot carry", path.display()))?;
    value.set_sensitive(true);
    Ok(value)
}
