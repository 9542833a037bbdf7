//! Failed logins, one event each or folded per client address
//! (`[failures] mode = "summary"`): after the first few failures of an
//! address within a window, the rest of that window becomes one
//! `ssh.auth.failure.summary`, sent when the window ends, when the address
//! opens a session, or when the daemon stops. An internet-facing bastion
//! then sends a few events per attacker per window instead of thousands.
//!
//! Memory is bounded whatever an attacker does: addresses, user names per
//! address and the length of a name kept are capped. An address pushed out
//! to make room sends its summary early; nothing folded is lost.

use std::{collections::HashMap, net::IpAddr, time::Duration};

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

/// Addresses followed at once; the least recently failing one is pushed out
/// (its summary sent) to make room.
const MAX_ADDRESSES: usize = 4096;
/// User names counted by name per summary; the others are counted together.
const MAX_USERS: usize = 16;
/// Bytes of a user name kept: an invalid user's name is the attacker's.
const MAX_NAME: usize = 64;

struct Window {
    start_ns: u64,
    last_ns: u64,
    alone: u32,
    /// The first failure folded in (its client and server are the
    /// summary's), with the time of the latest.
    folded: Option<Event>,
    sum: FailureSummary,
}

pub struct Failures {
    settings: Settings,
    by_address: HashMap<IpAddr, Window>,
}

impl Failures {
    pub fn new(settings: Settings) -> Self {
        Failures { settings, by_address: HashMap::new() }
    }

    fn window_ns(&self) -> u64 {
        u64::try_from(self.settings.window.as_nanos()).unwrap_or(u64::MAX)
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
                    if let Some(e) = self.failure(addr, reason, e, events) {
                        events.push(e);
                    }
                }
                (Kind::SessionOpen, Some(addr)) => {
                    if let Some(w) = self.by_address.remove(&addr) {
                        events.extend(summary(w));
                    }
                    events.push(e);
                }
                _ => events.push(e),
            }
        }
    }

    /// The failure back when it goes out alone, `None` when folded.
    fn failure(&mut self, addr: IpAddr, reason: FailureReason, e: Event, out: &mut Vec<Event>) -> Option<Event> {
        let now = e.ktime_ns;
        let window_ns = self.window_ns();
        if let Some(w) = self.by_address.get(&addr)
            && now.saturating_sub(w.start_ns) >= window_ns
        {
            let w = self.by_address.remove(&addr).expect("just seen");
            out.extend(summary(w));
        }
        if !self.by_address.contains_key(&addr) && self.by_address.len() >= MAX_ADDRESSES {
            self.make_room(now, out);
        }
        let alone = self.settings.alone;
        let w = self.by_address.entry(addr).or_insert(Window {
            start_ns: now,
            last_ns: now,
            alone: 0,
            folded: None,
            sum: FailureSummary::default(),
        });
        w.last_ns = now;
        if w.alone < alone {
            w.alone += 1;
            return Some(e);
        }
        let sum = &mut w.sum;
        sum.count = sum.count.saturating_add(1);
        if sum.count == 1 {
            sum.first_ns = now;
        }
        match e.user.as_deref() {
            Some(user) => {
                let user = truncated(user);
                match sum.by_user.iter().position(|(u, _)| u == user) {
                    Some(i) => sum.by_user[i].1 = sum.by_user[i].1.saturating_add(1),
                    None if sum.by_user.len() < MAX_USERS => sum.by_user.push((user.to_string(), 1)),
                    None => sum.other_users = sum.other_users.saturating_add(1),
                }
            }
            None => sum.other_users = sum.other_users.saturating_add(1),
        }
        match sum.by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => sum.by_reason.push((reason, 1)),
        }
        match &mut w.folded {
            Some(latest) => latest.ktime_ns = now,
            None => w.folded = Some(e),
        }
        None
    }

    /// Ends the windows that are over and, if that is not enough, the one
    /// whose last failure is oldest.
    fn make_room(&mut self, now: u64, out: &mut Vec<Event>) {
        let window_ns = self.window_ns();
        let over: Vec<IpAddr> = self
            .by_address
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.start_ns) >= window_ns)
            .map(|(a, _)| *a)
            .collect();
        for addr in over {
            out.extend(self.by_address.remove(&addr).and_then(summary));
        }
        if self.by_address.len() >= MAX_ADDRESSES
            && let Some(stalest) = self.by_address.iter().min_by_key(|(_, w)| w.last_ns).map(|(a, _)| *a)
        {
            out.extend(self.by_address.remove(&stalest).and_then(summary));
        }
    }

    /// Sends the summaries of the windows that have ended by `now_ns`.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let window_ns = self.window_ns();
        let mut ended: Vec<(u64, IpAddr)> = self
            .by_address
            .iter()
            .filter(|(_, w)| now_ns.saturating_sub(w.start_ns) >= window_ns)
            .map(|(a, w)| (w.start_ns, *a))
            .collect();
        ended.sort();
        for (_, addr) in ended {
            out.extend(self.by_address.remove(&addr).and_then(summary));
        }
    }

    /// When the next window with something folded ends.
    pub fn next_due(&self) -> Option<u64> {
        let window_ns = self.window_ns();
        self.by_address.values().filter(|w| w.folded.is_some()).map(|w| w.start_ns.saturating_add(window_ns)).min()
    }

    /// Every summary still held.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.tick(u64::MAX, out);
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

/// The window's summary event, if anything was folded into it: the
/// client and server of the failures, at the last one's time.
fn summary(w: Window) -> Option<Event> {
    let held = w.folded?;
    let mut e = Event::new(Kind::FailureSummary(Box::new(w.sum)), held.ktime_ns);
    e.client_address = held.client_address;
    e.server = held.server;
    Some(e)
}

#[cfg(test)]
mod tests;
