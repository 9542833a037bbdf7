//! The durable spool between the pipeline and the network exporter.
//!
//! An event is committed here (fsync'd) before the exporter may take it,
//! and removed only once the endpoint accepted it or refused it for good
//! (a removal is synced with the next commit, see [`Spool::remove`]).
//! So an endpoint outage or a daemon restart loses nothing; a crash between
//! a send and its removal sends that batch again (at-least-once, each event
//! keeping its `log.record.uid` for de-duplication). The spool is bounded
//! by bytes: when full, the oldest events go first and each is counted. The
//! batch the exporter is sending is never evicted (it may yet be delivered,
//! and then it was not lost), so the bound can be exceeded by one batch.
//!
//! Storage is redb: an embedded, crash-safe (copy-on-write B-tree with
//! checksummed commits), pure-Rust key-value store; sshlogin needs ordered
//! keys, atomic batches and durability, and nothing more. After a failed
//! write or sync (a full disk) redb refuses everything until the file is
//! closed and opened again: [`Spool::reopen`] does that, and the callers
//! retry what failed (a failed commit changed nothing).

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

use crate::otel::LogRecord;

/// One table per network exporter: sequence number → the event as JSON.
type Table = TableDefinition<'static, u64, &'static [u8]>;

/// Depth and size, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    pub events: u64,
    pub bytes: u64,
}

/// The spool file; each exporter has a [`Spool`] (a table) in it.
pub struct Store {
    db: Arc<Db>,
    path: PathBuf,
}

/// The open database the spools share, closed and opened again after an
/// I/O error. `None` while that failed.
struct Db {
    path: PathBuf,
    db: RwLock<Option<Database>>,
}

impl Db {
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let guard = self.db.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_ref() {
            Some(db) => f(db),
            None => anyhow::bail!("the spool {} is closed after an I/O error", self.path.display()),
        }
    }

    fn reopen(&self) -> Result<()> {
        let mut guard = self.db.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Close first: the file is locked while open.
        *guard = None;
        let db =
            Database::create(&self.path).with_context(|| format!("reopening the spool {}", self.path.display()))?;
        *guard = Some(db);
        Ok(())
    }
}

/// The state directory, created 0700 if needed (what it holds is private:
/// events, the first-seen store); made 0700 if others could read it.
pub fn state_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
    }
    let meta = fs::metadata(dir).with_context(|| format!("state directory {}", dir.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), "the state directory is readable by others; making it 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating it 0700 if needed) `dir` and the spool file in it.
    pub fn open(dir: &Path) -> Result<Store> {
        state_dir(dir)?;
        let path = dir.join("spool.redb");
        let db = Database::create(&path).with_context(|| format!("opening the spool {}", path.display()))?;
        Ok(Store { db: Arc::new(Db { path: path.clone(), db: RwLock::new(Some(db)) }), path })
    }

    /// The spool of one exporter, bounded by `max_bytes`.
    pub fn spool(&self, table: &'static str, max_bytes: u64) -> Result<Spool> {
        let table: Table = TableDefinition::new(table);
        let (next, depth) = self.db.with(|db| {
            let txn = db.begin_write()?;
            txn.open_table(table)?;
            txn.commit()?;
            count(db, table)
        })?;
        if depth.events > 0 {
            tracing::info!(
                table = table.name(),
                events = depth.events,
                bytes = depth.bytes,
                "the spool holds events from before; they go first"
            );
        }
        Ok(Spool {
            db: self.db.clone(),
            table,
            path: self.path.clone(),
            max_bytes,
            state: Mutex::new(State { next, depth, in_flight: HashSet::new() }),
            events: AtomicU64::new(depth.events),
        })
    }
}

/// The next sequence number and the depth of `table`, from the table.
fn count(db: &Database, table: Table) -> Result<(u64, Depth)> {
    let read = db.begin_read()?;
    let t = read.open_table(table)?;
    let next = t.last()?.map_or(0, |(k, _)| k.value() + 1);
    let mut depth = Depth { events: t.len()?, bytes: 0 };
    for item in t.iter()? {
        depth.bytes += item?.1.value().len() as u64;
    }
    Ok((next, depth))
}

pub struct Spool {
    db: Arc<Db>,
    table: Table,
    path: PathBuf,
    max_bytes: u64,
    /// Next sequence number, the current depth and the batch in flight,
    /// kept in step with the table under the one write transaction redb
    /// allows at a time.
    state: Mutex<State>,
    /// The depth's event count, set with it: read by the exporter on the
    /// runtime's thread, which must not wait for a commit's fsync.
    events: AtomicU64,
}

struct State {
    next: u64,
    depth: Depth,
    in_flight: HashSet<u64>,
}

impl Spool {
    /// A store in `dir` with the OTLP exporter's spool: for tests and tools.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool> {
        Store::open(dir)?.spool("otlp_events", max_bytes)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn depth(&self) -> Depth {
        self.state.lock().expect("spool state").depth
    }

    /// Whether the spool holds no event, without waiting for a commit in
    /// progress (it is counted once committed).
    pub fn is_empty(&self) -> bool {
        self.events.load(Ordering::Acquire) == 0
    }

    /// Sets the depth; the caller holds the state.
    fn set_depth(&self, state: &mut State, depth: Depth) {
        state.depth = depth;
        self.events.store(depth.events, Ordering::Release);
    }

    /// Closes and opens the spool file again: what a failed write or sync
    /// (a full disk) needs before redb takes anything more. Every spool in
    /// the file sees the new handle.
    pub fn reopen(&self) -> Result<()> {
        self.db.reopen()?;
        // A commit that reported an error may still have landed: count
        // again from the table, holding the state so that no commit lands
        // between the count and its use.
        let mut state = self.state.lock().expect("spool state");
        let (next, depth) = self.db.with(|db| count(db, self.table))?;
        state.next = state.next.max(next);
        self.set_depth(&mut state, depth);
        Ok(())
    }

    /// Commits `events` durably. Returns how many old events were dropped
    /// to stay within the size bound.
    pub fn append(&self, events: &[LogRecord]) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut state = self.state.lock().expect("spool state");
        let (mut next, mut depth) = (state.next, state.depth);
        let dropped = self.db.with(|db| {
            let txn = db.begin_write()?;
            let mut dropped = 0;
            {
                let mut table = txn.open_table(self.table)?;
                for e in events {
                    let json = serde_json::to_vec(e).context("serializing an event for the spool")?;
                    if table.insert(next, json.as_slice())?.is_some() {
                        // Never overwrite: a sequence number is used once.
                        anyhow::bail!("spool entry {next} exists already; counting the spool again");
                    }
                    next += 1;
                    depth.events += 1;
                    depth.bytes += json.len() as u64;
                }
                if depth.bytes > self.max_bytes {
                    let mut victims = Vec::new();
                    let mut freed = 0;
                    for item in table.iter()? {
                        let (k, v) = item?;
                        if state.in_flight.contains(&k.value()) {
                            continue;
                        }
                        victims.push(k.value());
                        freed += v.value().len() as u64;
                        if depth.bytes - freed <= self.max_bytes {
                            break;
                        }
                    }
                    for k in victims {
                        if let Some(v) = table.remove(k)? {
                            depth.bytes -= v.value().len() as u64;
                            depth.events -= 1;
                            dropped += 1;
                        }
                    }
                }
            }
            txn.commit().context("committing to the spool")?;
            Ok(dropped)
        })?;
        state.next = next;
        self.set_depth(&mut state, depth);
        Ok(dropped)
    }

    /// Up to `max` of the oldest events with their sequence numbers: the
    /// batch in flight, safe from eviction until [`Spool::remove`] or the
    /// next call. An entry that no longer parses (a format change) is
    /// returned as `None` so the caller can remove it rather than retry it
    /// forever.
    pub fn oldest(&self, max: usize) -> Result<Vec<(u64, Option<LogRecord>)>> {
        let mut state = self.state.lock().expect("spool state");
        let out = self.db.with(|db| {
            let read = db.begin_read()?;
            let table = read.open_table(self.table)?;
            let mut out = Vec::with_capacity(max.min(1024));
            for item in table.iter()?.take(max) {
                let (k, v) = item?;
                out.push((k.value(), serde_json::from_slice(v.value()).ok()));
            }
            Ok(out)
        })?;
        state.in_flight = out.iter().map(|(k, _)| *k).collect();
        Ok(out)
    }

    /// Removes what was delivered or refused for good. The removal is not
    /// synced on its own: it becomes durable with the next append or when
    /// the spool is closed, and a crash before that sends those events
    /// again (at-least-once, as a crash between a send and its removal
    /// always did). That halves the fsyncs per event.
    pub fn remove(&self, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().expect("spool state");
        // Applied to the state only once committed: a failed commit
        // removed nothing.
        let freed = self.db.with(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(redb::Durability::None)?;
            let mut freed = (0, 0);
            {
                let mut table = txn.open_table(self.table)?;
                for id in ids {
                    if let Some(v) = table.remove(id)? {
                        freed.0 += 1;
                        freed.1 += v.value().len() as u64;
                    }
                }
            }
            txn.commit().context("committing to the spool")?;
            Ok(freed)
        })?;
        for id in ids {
            state.in_flight.remove(id);
        }
        let depth = Depth {
            events: state.depth.events.saturating_sub(freed.0),
            bytes: state.depth.bytes.saturating_sub(freed.1),
        };
        self.set_depth(&mut state, depth);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otel::{EventName, attr};

    fn event(i: u64) -> LogRecord {
        let mut e = LogRecord::new(EventName::AuthFailure, i);
        e.set(attr::USER_NAME, format!("user{i}"));
        e
    }

    #[test]
    fn survives_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        {
            let s = Spool::open(&state, 1 << 20).unwrap();
            assert_eq!(s.append(&[event(1), event(2), event(3)]).unwrap(), 0);
            let first = s.oldest(1).unwrap();
            s.remove(&[first[0].0]).unwrap();
        }
        let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let s = Spool::open(&state, 1 << 20).unwrap();
        let left = s.oldest(10).unwrap();
        let names: Vec<u64> = left.iter().map(|(_, e)| e.as_ref().unwrap().ktime_ns).collect();
        assert_eq!(names, [2, 3]);
        assert_eq!(s.depth().events, 2);
        s.append(&[event(4)]).unwrap();
        let ids: Vec<u64> = s.oldest(10).unwrap().iter().map(|(k, _)| *k).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "new events sort after old ones: {ids:?}");
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&event(1)).unwrap().len() as u64;
        let s = Spool::open(dir.path(), one * 3 + one / 2).unwrap();
        let mut dropped = 0;
        for i in 0..10 {
            dropped += s.append(&[event(i)]).unwrap();
        }
        assert_eq!(dropped, 7);
        let kept: Vec<u64> = s.oldest(10).unwrap().iter().map(|(_, e)| e.as_ref().unwrap().ktime_ns).collect();
        assert_eq!(kept, [7, 8, 9]);
        let d = s.depth();
        assert_eq!(d.events, 3);
        assert!(d.bytes <= one * 3 + one / 2);
    }

    #[test]
    fn the_batch_in_flight_is_not_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&event(1)).unwrap().len() as u64;
        let s = Spool::open(dir.path(), one * 3 + one / 2).unwrap();
        s.append(&[event(0), event(1), event(2)]).unwrap();
        let batch = s.oldest(2).unwrap();
        assert_eq!(s.append(&[event(3), event(4)]).unwrap(), 2, "2 and then 3 go, not the batch");
        let left: Vec<u64> = s.oldest(10).unwrap().iter().map(|(_, e)| e.as_ref().unwrap().ktime_ns).collect();
        assert_eq!(left, [0, 1, 4]);
        s.remove(&batch.iter().map(|(k, _)| *k).collect::<Vec<_>>()).unwrap();
        assert_eq!(s.depth().events, 1);
    }

    #[test]
    fn depth_follows_removals() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(s.is_empty());
        s.append(&[event(1), event(2)]).unwrap();
        assert!(!s.is_empty());
        let ids: Vec<u64> = s.oldest(10).unwrap().iter().map(|(k, _)| *k).collect();
        s.remove(&ids).unwrap();
        s.remove(&ids).unwrap();
        assert_eq!(s.depth(), Depth::default());
        assert!(s.is_empty(), "the exporter waits for the next commit");
        // Counted from the table when opened and when opened again.
        s.append(&[event(3)]).unwrap();
        s.reopen().unwrap();
        assert!(!s.is_empty());
        drop(s);
        assert!(!Spool::open(dir.path(), 1 << 20).unwrap().is_empty(), "a spool left behind is sent first");
    }
}
