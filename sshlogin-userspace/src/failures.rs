//! Failed logins, one event each or folded per client address
//! (`[failures] mode = "summary"`): after the first few failures of an
//! address within a window, the rest of that window becomes one
//! `ssh.auth.failure.summary`, sent when the window ends, when the address
//! opens a session, or when the daemon stops. An internet-facing bastion
//! then sends a few events per attacker per window instead of thousands.
//!
//! Memory is bounded whatever an attacker does: addresses, user names per
//! address and the length of a name kept are capped. An address pushed out
//! to make room sends its summary early. What is folded lives in memory
//! until its summary goes: each heartbeat sends every summary so far, so a
//! crash loses at most one heartbeat interval (or window) of folded failures.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::event::{Event, FailureReason, FailureSummary, Kind};

pub use crate::config::FailureMode as Mode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// Failures of an address sent alone in each window.
    pub alone: u32,
    pub window: Duration,
}

pub const DEFAULT_ALONE: u32 = 5;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

impl Default for Settings {
    fn default() -> Self {
        Settings { mode: Mode::Each, alone: DEFAULT_ALONE, window: DEFAULT_WINDOW }
    }
}

/// Windows (client address and server end) followed at once; the least
/// recently failing one is pushed out (its summary sent) to make room.
const MAX_ADDRESSES: usize = 4096;
/// User names counted by name per summary (the most tried ones, whatever
/// order they come in); the rest are counted together.
const MAX_USERS: usize = 16;
/// Distinct user names counted exactly up to this many per summary.
const MAX_DISTINCT: usize = 64;
/// Bytes of a user name kept: an invalid user's name is the attacker's.
const MAX_NAME: usize = 64;

/// Failures from one client address to one server end.
type Key = (IpAddr, Option<SocketAddr>);

struct Window {
    start_ns: u64,
    last_ns: u64,
    alone: u32,
    /// What was folded since the last summary.
    folded: Option<Folded>,
}

/// One name's count in the Space-Saving sketch: `error` of `count` may
/// belong to the names it replaced.
struct Slot {
    name: String,
    count: u32,
    error: u32,
}

struct Folded {
    first_ns: u64,
    last_ns: u64,
    count: u32,
    /// Space-Saving (Metwally et al.): a new name takes the smallest slot
    /// and inherits its count as error, so a name tried more than
    /// count / MAX_USERS times is always listed, however many others come
    /// first. An attacker cannot push the targeted account out with
    /// throwaway names.
    users: Vec<Slot>,
    /// Hashes of the names seen, up to MAX_DISTINCT.
    distinct: Vec<u64>,
    by_reason: Vec<(FailureReason, u32)>,
}

pub struct Failures {
    settings: Settings,
    windows: HashMap<Key, Window>,
    /// Keys the distinct-name hashes, per daemon, so that names cannot be
    /// chosen to collide.
    hasher: RandomState,
    folded_total: u64,
}

impl Failures {
    pub fn new(settings: Settings) -> Self {
        Failures { settings, windows: HashMap::new(), hasher: RandomState::new(), folded_total: 0 }
    }

    fn window_ns(&self) -> u64 {
        u64::try_from(self.settings.window.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Failures folded since the last call (for the metrics).
    pub fn take_folded(&mut self) -> u64 {
        std::mem::take(&mut self.folded_total)
    }

    /// Folds the failures of `events[first..]` that are past their address's
    /// first few; an open first sends its address's summary.
    pub fn pass(&mut self, events: &mut Vec<Event>, first: usize) {
        if self.settings.mode == Mode::Each {
            return;
        }
        let taken: Vec<Event> = events.drain(first..).collect();
        for e in taken {
            match (&e.kind, e.client_address) {
                (Kind::AuthFailure { reason }, Some(addr)) => {
                    let reason = *reason;
                    if let Some(e) = self.failure((addr, e.server), reason, e, events) {
                        events.push(e);
                    }
                }
                (Kind::SessionOpen, Some(addr)) => {
                    let key = (addr, e.server);
                    if let Some(w) = self.windows.remove(&key) {
                        events.extend(summary(key, w.folded));
                    }
                    events.push(e);
                }
                _ => events.push(e),
            }
        }
    }

    /// The failure back when it goes out alone, `None` when folded.
    fn failure(&mut self, key: Key, reason: FailureReason, e: Event, out: &mut Vec<Event>) -> Option<Event> {
        let now = e.ktime_ns;
        let window_ns = self.window_ns();
        if let Some(w) = self.windows.get(&key)
            && now.saturating_sub(w.start_ns) >= window_ns
        {
            let w = self.windows.remove(&key).expect("just seen");
            out.extend(summary(key, w.folded));
        }
        if !self.windows.contains_key(&key) && self.windows.len() >= MAX_ADDRESSES {
            self.make_room(now, out);
        }
        let alone = self.settings.alone;
        let w = self.windows.entry(key).or_insert(Window { start_ns: now, last_ns: now, alone: 0, folded: None });
        w.last_ns = now;
        if w.alone < alone {
            w.alone += 1;
            return Some(e);
        }
        let f = w.folded.get_or_insert_with(|| Folded {
            first_ns: now,
            last_ns: now,
            count: 0,
            users: Vec::new(),
            distinct: Vec::new(),
            by_reason: Vec::new(),
        });
        f.count = f.count.saturating_add(1);
        f.last_ns = now;
        if let Some(user) = e.user.as_deref() {
            let user = truncated(user);
            let hash = self.hasher.hash_one(user);
            if f.distinct.len() < MAX_DISTINCT && !f.distinct.contains(&hash) {
                f.distinct.push(hash);
            }
            count_name(&mut f.users, user);
        }
        match f.by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => f.by_reason.push((reason, 1)),
        }
        self.folded_total += 1;
        None
    }

    /// Ends the windows that are over and, if that is not enough, the one
    /// whose last failure is oldest.
    fn make_room(&mut self, now: u64, out: &mut Vec<Event>) {
        let window_ns = self.window_ns();
        let over: Vec<Key> =
            self.windows.iter().filter(|(_, w)| now.saturating_sub(w.start_ns) >= window_ns).map(|(k, _)| *k).collect();
        for key in over {
            out.extend(self.windows.remove(&key).and_then(|w| summary(key, w.folded)));
        }
        if self.windows.len() >= MAX_ADDRESSES
            && let Some(stalest) = self.windows.iter().min_by_key(|(_, w)| w.last_ns).map(|(k, _)| *k)
        {
            out.extend(self.windows.remove(&stalest).and_then(|w| summary(stalest, w.folded)));
        }
    }

    /// Sends the summaries of the windows that have ended by `now_ns`.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let window_ns = self.window_ns();
        let mut ended: Vec<(u64, Key)> = self
            .windows
            .iter()
            .filter(|(_, w)| now_ns.saturating_sub(w.start_ns) >= window_ns)
            .map(|(k, w)| (w.start_ns, *k))
            .collect();
        ended.sort();
        for (_, key) in ended {
            out.extend(self.windows.remove(&key).and_then(|w| summary(key, w.folded)));
        }
    }

    /// Sends what every window has folded so far; the windows go on (their
    /// first few already went out). With the heartbeat, this bounds what a
    /// crash can lose to one heartbeat interval.
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        let mut held: Vec<(u64, Key, Folded)> =
            self.windows.iter_mut().filter_map(|(k, w)| Some((w.start_ns, *k, w.folded.take()?))).collect();
        held.sort_by_key(|(start, key, _)| (*start, *key));
        out.extend(held.into_iter().filter_map(|(_, key, f)| summary(key, Some(f))));
    }

    /// When the next window with something folded ends.
    pub fn next_due(&self) -> Option<u64> {
        let window_ns = self.window_ns();
        self.windows.values().filter(|w| w.folded.is_some()).map(|w| w.start_ns.saturating_add(window_ns)).min()
    }

    /// Every summary still held.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.tick(u64::MAX, out);
    }
}

/// Space-Saving's update: the name's slot, a free one, or the smallest.
fn count_name(users: &mut Vec<Slot>, user: &str) {
    if let Some(slot) = users.iter_mut().find(|s| s.name == user) {
        slot.count = slot.count.saturating_add(1);
    } else if users.len() < MAX_USERS {
        users.push(Slot { name: user.to_string(), count: 1, error: 0 });
    } else if let Some(min) = users.iter_mut().min_by_key(|s| s.count) {
        *min = Slot { name: user.to_string(), count: min.count.saturating_add(1), error: min.count };
    }
}

fn truncated(name: &str) -> &str {
    if name.len() <= MAX_NAME {
        return name;
    }
    let mut end = MAX_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The summary event of what a window folded, if anything: at the last
/// failure's time. Names are listed with the failures certainly theirs;
/// the rest (names beyond the sketch, failures without a name, counts a
/// name inherited) are `other_users`.
fn summary((client, server): Key, folded: Option<Folded>) -> Option<Event> {
    let f = folded?;
    let mut by_user: Vec<(String, u32)> =
        f.users.into_iter().filter(|s| s.count > s.error).map(|s| (s.name, s.count - s.error)).collect();
    by_user.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let named: u32 = by_user.iter().map(|(_, n)| n).sum();
    let sum = FailureSummary {
        count: f.count,
        first_ns: f.first_ns,
        other_users: f.count.saturating_sub(named),
        by_user,
        distinct_users: f.distinct.len() as u32,
        by_reason: f.by_reason,
    };
    let mut e = Event::new(Kind::FailureSummary(Box::new(sum)), f.last_ns);
    e.client_address = Some(client);
    e.server = server;
    Some(e)
}

#[cfg(test)]
mod tests;
