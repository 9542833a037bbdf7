//! First seen, on this host: does a user open a session from a client
//! address, or with a key, that this host has not seen them use before
//! (`ssh.first_seen.client`, `ssh.first_seen.key` on `ssh.session.open`)?
//!
//! A redb file beside the spool (`first-seen.redb`) keeps, per user and
//! address and per user and key fingerprint, when it was last used. It
//! survives restarts and upgrades; entries unused for the retention are
//! forgotten, and each table is capped (the least recently used go first),
//! so a user with many addresses cannot grow it without bound. For the
//! learning time after the file is created the marks are left out and the
//! open says `ssh.first_seen.learning`: on a fresh install everything is new,
//! and that is not news. Only opens write here, so only authenticated users
//! reach it.
//!
//! The store failing (a full disk) never holds an event back: the opens go
//! out without marks and the error is logged.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::{
    config::FirstSeen,
    event::{Event, FirstSeenMarks, Kind},
};

/// `user \0 address` or `user \0 fingerprint` → last used, Unix seconds.
const CLIENTS: TableDefinition<&str, u64> = TableDefinition::new("clients");
const KEYS: TableDefinition<&str, u64> = TableDefinition::new("keys");
/// `created` (Unix seconds), `version`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VERSION: u64 = 1;
/// Entries per table; past it the least recently used tenth goes.
pub const MAX_ENTRIES: u64 = 100_000;
/// How often entries past the retention are looked for.
const PRUNE_EVERY: u64 = 86_400;

pub struct Seen {
    db: Database,
    path: PathBuf,
    retention_s: u64,
    learning_until: u64,
    next_prune: u64,
    errors: u64,
    max_entries: u64,
}

impl Seen {
    /// Opens (creating) the store in `dir`. `now`: Unix seconds.
    pub fn open(dir: &Path, settings: FirstSeen, now: u64) -> Result<Seen> {
        crate::spool::state_dir(dir)?;
        let path = dir.join("first-seen.redb");
        let db = Database::builder().set_cache_size(1 << 20).create(&path).with_context(|| {
            format!("opening the first-seen store {} (first_seen.enabled = false turns it off)", path.display())
        })?;
        let created = init(&db, now).with_context(|| format!("first-seen store {}", path.display()))?;
        let learning_until = created.saturating_add(settings.learning.as_secs());
        if now < learning_until {
            tracing::info!(
                path = %path.display(),
                left = %humantime::format_duration(Duration::from_secs(learning_until - now)),
                "first-seen store learning: opens carry ssh.first_seen.learning instead of marks until then"
            );
        }
        Ok(Seen {
            db,
            path,
            retention_s: settings.retention.as_secs(),
            learning_until,
            next_prune: now,
            errors: 0,
            max_entries: MAX_ENTRIES,
        })
    }

    /// Marks the opens among `events` and remembers them. `now`: Unix seconds.
    pub fn mark(&mut self, events: &mut [Event], now: u64) {
        if !events.iter().any(|e| e.kind == Kind::SessionOpen && e.user.is_some()) {
            return;
        }
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_EVERY;
            if let Err(e) = self.prune(now) {
                tracing::warn!(path = %self.path.display(), "pruning the first-seen store failed: {e:#}");
            }
        }
        if let Err(e) = self.mark_opens(events, now) {
            self.errors += 1;
            // One line per failure would flood a log on a full disk.
            if self.errors.is_power_of_two() {
                tracing::warn!(
                    path = %self.path.display(),
                    failures = self.errors,
                    "the first-seen store failed; opens go out without ssh.first_seen marks: {e:#}"
                );
            }
        }
    }

    fn mark_opens(&mut self, events: &mut [Event], now: u64) -> Result<()> {
        let learning = now < self.learning_until;
        let fresh = |last: Option<u64>, at: u64| last.is_none_or(|t| at.saturating_sub(t) >= self.retention_s);
        let txn = self.db.begin_write()?;
        {
            let mut clients = txn.open_table(CLIENTS)?;
            let mut keys = txn.open_table(KEYS)?;
            for e in events.iter_mut().filter(|e| e.kind == Kind::SessionOpen) {
                let Some(user) = e.user.clone() else { continue };
                let at = e.time_unix_nano / 1_000_000_000;
                let at = if at == 0 { now } else { at };
                let mut marks = FirstSeenMarks { learning, ..FirstSeenMarks::default() };
                if let Some(addr) = e.client_address {
                    let k = format!("{user}\0{addr}");
                    let last = clients.get(k.as_str())?.map(|v| v.value());
                    marks.client = Some(fresh(last, at));
                    clients.insert(k.as_str(), at.max(last.unwrap_or(0)))?;
                }
                if let Some(key) = &e.key {
                    let k = format!("{user}\0{}", key.fingerprint);
                    let last = keys.get(k.as_str())?.map(|v| v.value());
                    marks.key = Some(fresh(last, at));
                    keys.insert(k.as_str(), at.max(last.unwrap_or(0)))?;
                }
                if learning {
                    marks.client = None;
                    marks.key = None;
                }
                e.first_seen = marks;
            }
            for table in [&mut clients, &mut keys] {
                if table.len()? > self.max_entries {
                    evict_oldest(table, self.max_entries / 10)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Forgets what was not used for the retention.
    fn prune(&mut self, now: u64) -> Result<()> {
        let cutoff = now.saturating_sub(self.retention_s);
        let txn = self.db.begin_write()?;
        let mut forgot = 0;
        for def in [CLIENTS, KEYS] {
            let mut table = txn.open_table(def)?;
            let before = table.len()?;
            table.retain(|_, last| last >= cutoff)?;
            forgot += before - table.len()?;
        }
        txn.commit()?;
        if forgot > 0 {
            tracing::info!(entries = forgot, "first-seen store: forgot what was unused for the retention");
        }
        Ok(())
    }
}

/// The creation time, written on first open.
fn init(db: &Database, now: u64) -> Result<u64> {
    let txn = db.begin_write()?;
    let created = {
        let mut meta = txn.open_table(META)?;
        txn.open_table(CLIENTS)?;
        txn.open_table(KEYS)?;
        let version = meta.get("version")?.map(|v| v.value());
        if version.is_some_and(|v| v > VERSION) {
            anyhow::bail!(
                "written by a newer sshlogin (version {}); move it away to start afresh",
                version.unwrap_or(0)
            );
        }
        meta.insert("version", VERSION)?;
        let created = meta.get("created")?.map(|v| v.value());
        match created {
            Some(c) => c,
            None => {
                meta.insert("created", now)?;
                now
            }
        }
    };
    txn.commit()?;
    Ok(created)
}

/// Removes the `n` least recently used entries.
fn evict_oldest(table: &mut redb::Table<&str, u64>, n: u64) -> Result<()> {
    let mut all: Vec<(u64, String)> = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        all.push((v.value(), k.value().to_string()));
    }
    all.sort_unstable();
    for (_, k) in all.into_iter().take(usize::try_from(n).unwrap_or(usize::MAX)) {
        table.remove(k.as_str())?;
    }
    tracing::warn!(entries = n, "first-seen store full: forgot the least recently used");
    Ok(())
}

#[cfg(test)]
mod tests;
