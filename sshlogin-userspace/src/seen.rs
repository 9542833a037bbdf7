//! First seen, on this host: does a user open a session from a client
//! address, or with a key, that this host has not seen them use before
//! (`ssh.first_seen.client`, `ssh.first_seen.key` on `ssh.session.open`)?
//!
//! A redb file beside the spool (`first-seen.redb`) keeps, per user and
//! address and per user and key fingerprint, when it was last used. It
//! survives restarts and upgrades; entries unused for the retention are
//! forgotten, each user's entries are capped (their own least recently
//! used go first, so one user cannot push out the others') and so is each
//! table. For the
//! learning time after the file is created the marks are left out and the
//! open says `ssh.first_seen.learning`: on a fresh install everything is new,
//! and that is not news. Only opens write here, so only authenticated users
//! reach it.
//!
//! The store failing (a full disk, a file it cannot open) never holds an
//! event back: the opens go out without marks, the error is logged and
//! counted (`sshlogin_first_seen_errors_total`), and the file is opened
//! again later. Marks are committed at once but synced to disk at most once
//! a minute: a crash may forget the last minute's, which then count as new.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::{
    config::FirstSeen,
    event::{Event, FirstSeenMarks, Kind},
    metrics::Metrics,
};

/// `user \0 address` or `user \0 fingerprint` → last used, Unix seconds.
const CLIENTS: TableDefinition<&str, u64> = TableDefinition::new("clients");
const KEYS: TableDefinition<&str, u64> = TableDefinition::new("keys");
/// `created` (Unix seconds), `version`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VERSION: u64 = 1;
/// Entries per table; past it the least recently used tenth goes.
pub const MAX_ENTRIES: u64 = 100_000;
/// Entries per user and table (addresses, keys).
pub const MAX_PER_USER: usize = 256;
/// How long after a failed open it is tried again, seconds.
const RETRY_OPEN: u64 = 60;
/// How often committed marks are synced to disk, seconds.
const SYNC_EVERY: u64 = 60;
/// How often entries past the retention are looked for.
const PRUNE_EVERY: u64 = 86_400;

pub struct Seen {
    dir: PathBuf,
    path: PathBuf,
    settings: FirstSeen,
    /// `None` while it cannot be opened (or after an I/O error, until it is
    /// opened again): opens then go out without marks.
    db: Option<Database>,
    retry_at: u64,
    learning_until: u64,
    next_prune: u64,
    /// Marks are committed without a sync, and synced at most this often
    /// (and at stop): a crash forgets a minute of last-used times at most,
    /// and the event loop does not wait on the disk for every open.
    synced_at: u64,
    errors: u64,
    max_entries: u64,
    metrics: Arc<Metrics>,
}

impl Seen {
    /// Opens (creating) the store in `dir`. `now`: Unix seconds. A store
    /// that cannot be opened is logged and tried again later; sshlogin runs
    /// on without marks meanwhile.
    pub fn open(dir: &Path, settings: FirstSeen, now: u64, metrics: Arc<Metrics>) -> Seen {
        let path = dir.join("first-seen.redb");
        let mut seen = Seen {
            dir: dir.to_path_buf(),
            path,
            settings,
            db: None,
            retry_at: now,
            learning_until: u64::MAX,
            next_prune: now,
            synced_at: now,
            errors: 0,
            max_entries: MAX_ENTRIES,
            metrics,
        };
        seen.ensure_open(now);
        seen
    }

    fn ensure_open(&mut self, now: u64) -> bool {
        if self.db.is_some() {
            return true;
        }
        if now < self.retry_at {
            return false;
        }
        match self.try_open(now) {
            Ok(()) => true,
            Err(e) => {
                self.retry_at = now + RETRY_OPEN;
                self.failed("cannot open the first-seen store; opens go out without ssh.first_seen marks", &e);
                false
            }
        }
    }

    fn try_open(&mut self, now: u64) -> Result<()> {
        crate::spool::state_dir(&self.dir)?;
        let db = Database::builder()
            .set_cache_size(1 << 20)
            .create(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let created = init(&db, now).with_context(|| format!("first-seen store {}", self.path.display()))?;
        self.learning_until = created.saturating_add(self.settings.learning.as_secs());
        if now < self.learning_until {
            tracing::info!(
                path = %self.path.display(),
                left = %humantime::format_duration(Duration::from_secs(self.learning_until - now)),
                "first-seen store learning: opens carry ssh.first_seen.learning instead of marks until then"
            );
        }
        self.db = Some(db);
        Ok(())
    }

    fn failed(&mut self, what: &str, e: &anyhow::Error) {
        self.errors += 1;
        self.metrics.first_seen_errors.inc();
        // One line per failure would flood a log on a full disk.
        if self.errors.is_power_of_two() {
            tracing::warn!(path = %self.path.display(), failures = self.errors, "{what}: {e:#}");
        }
    }

    /// Marks the opens among `events` and remembers them. `now`: Unix seconds.
    pub fn mark(&mut self, events: &mut [Event], now: u64) {
        if !events.iter().any(|e| e.kind == Kind::SessionOpen && e.user.is_some()) || !self.ensure_open(now) {
            return;
        }
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_EVERY;
            if let Err(e) = self.prune(now) {
                tracing::warn!(path = %self.path.display(), "pruning the first-seen store failed: {e:#}");
            }
        }
        match self.remember(events, now) {
            // Only what is committed is said: a mark that was not stored
            // would be said again at the next open.
            Ok(marks) => {
                for (i, m) in marks {
                    events[i].first_seen = m;
                }
            }
            Err(e) => {
                // redb refuses everything after a failed write until the
                // file is opened again.
                self.db = None;
                self.retry_at = now;
                self.failed("the first-seen store failed; these opens go out without ssh.first_seen marks", &e);
            }
        }
    }

    /// Syncs what was committed since the last sync (at stop).
    pub fn sync(&mut self) {
        let Some(db) = &self.db else { return };
        let synced = db.begin_write().map_err(anyhow::Error::from).and_then(|txn| Ok(txn.commit()?));
        if let Err(e) = synced {
            self.db = None;
            self.failed("syncing the first-seen store failed", &e);
        }
    }

    /// The marks of the opens in `events`, by index, once committed.
    fn remember(&mut self, events: &[Event], now: u64) -> Result<Vec<(usize, FirstSeenMarks)>> {
        let learning = now < self.learning_until;
        let retention_s = self.settings.retention.as_secs();
        let fresh = |last: Option<u64>, at: u64| last.is_none_or(|t| at.saturating_sub(t) >= retention_s);
        let Some(db) = &self.db else { anyhow::bail!("not open") };
        let mut txn = db.begin_write()?;
        let sync = now >= self.synced_at + SYNC_EVERY;
        if !sync {
            txn.set_durability(Durability::None)?;
        }
        let mut marks = Vec::new();
        {
            let mut clients = txn.open_table(CLIENTS)?;
            let mut keys = txn.open_table(KEYS)?;
            for (i, e) in events.iter().enumerate().filter(|(_, e)| e.kind == Kind::SessionOpen) {
                let Some(user) = e.user.as_deref() else { continue };
                let at = match e.time_unix_nano / 1_000_000_000 {
                    0 => now,
                    t => t,
                };
                let mut m = FirstSeenMarks { learning, ..FirstSeenMarks::default() };
                if let Some(addr) = e.client_address {
                    m.client = Some(fresh(touch(&mut clients, user, &addr.to_string(), at)?, at));
                }
                if let Some(key) = &e.key {
                    m.key = Some(fresh(touch(&mut keys, user, &key.fingerprint, at)?, at));
                }
                if learning {
                    (m.client, m.key) = (None, None);
                }
                marks.push((i, m));
            }
            for table in [&mut clients, &mut keys] {
                if table.len()? > self.max_entries {
                    evict_oldest(table, self.max_entries / 10)?;
                }
            }
        }
        txn.commit()?;
        if sync {
            self.synced_at = now;
        }
        Ok(marks)
    }

    /// Forgets what was not used for the retention.
    fn prune(&mut self, now: u64) -> Result<()> {
        let cutoff = now.saturating_sub(self.settings.retention.as_secs());
        let Some(db) = &self.db else { return Ok(()) };
        let txn = db.begin_write()?;
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

/// The creation time, written on first open (a store that exists is not
/// written to here: a full disk does not stop it from opening).
fn init(db: &Database, now: u64) -> Result<u64> {
    {
        let txn = db.begin_read()?;
        if let Ok(meta) = txn.open_table(META) {
            let get = |k: &str| -> Result<Option<u64>> { Ok(meta.get(k)?.map(|v| v.value())) };
            if let (Some(version), Some(created)) = (get("version")?, get("created")?) {
                if version > VERSION {
                    anyhow::bail!("written by a newer sshlogin (format {version}); move it away to start afresh");
                }
                return Ok(created);
            }
        }
    }
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        txn.open_table(CLIENTS)?;
        txn.open_table(KEYS)?;
        meta.insert("version", VERSION)?;
        meta.insert("created", now)?;
    }
    txn.commit()?;
    Ok(now)
}

/// Records that `user` used `what` at `at`; returns when they last did
/// before. A user's entries are capped: past [`MAX_PER_USER`] their own
/// least recently used goes, so one user cannot push out everyone else's.
fn touch(table: &mut redb::Table<&str, u64>, user: &str, what: &str, at: u64) -> Result<Option<u64>> {
    let key = format!("{user}\0{what}");
    let last = table.get(key.as_str())?.map(|v| v.value());
    table.insert(key.as_str(), at.max(last.unwrap_or(0)))?;
    if last.is_none() {
        // User names hold no NUL: "user\0" .. "user\x01" is exactly theirs.
        let (lo, hi) = (format!("{user}\0"), format!("{user}\u{1}"));
        let mut oldest: Option<(u64, String)> = None;
        let mut n = 0;
        for row in table.range(lo.as_str()..hi.as_str())? {
            let (k, v) = row?;
            n += 1;
            if oldest.as_ref().is_none_or(|(t, _)| v.value() < *t) {
                oldest = Some((v.value(), k.value().to_string()));
            }
        }
        if n > MAX_PER_USER
            && let Some((_, k)) = oldest
        {
            table.remove(k.as_str())?;
        }
    }
    Ok(last)
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
