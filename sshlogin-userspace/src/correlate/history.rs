//! What came before a login from the same client address: the failed
//! attempts of the last while, which the open then reports
//! (`ssh.auth.prior_failures`): a password guessed after failures, or a
//! user who mistyped twice. Bounded whatever an attacker does.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use crate::event::{Event, Kind};

/// Failures this long before an open still count for it.
pub const WINDOW_NS: u64 = 600_000_000_000;
/// Client addresses followed at once; beyond this the stalest goes.
const MAX_ADDRESSES: usize = 16_384;
/// User names kept per address (the count goes on past it).
const MAX_USERS: usize = 8;

struct Window {
    first_ns: u64,
    last_ns: u64,
    count: u32,
    users: BTreeSet<String>,
}

#[derive(Default)]
pub struct History {
    by_address: HashMap<IpAddr, Window>,
}

impl History {
    /// A failure event is about to go out: count it for its address.
    pub fn failed(&mut self, e: &Event) {
        let Some(addr) = e.client_address else { return };
        let now = e.ktime_ns;
        if !self.by_address.contains_key(&addr) && self.by_address.len() >= MAX_ADDRESSES {
            self.by_address.retain(|_, w| now.saturating_sub(w.last_ns) < WINDOW_NS);
            if self.by_address.len() >= MAX_ADDRESSES
                && let Some(stalest) = self.by_address.iter().min_by_key(|(_, w)| w.last_ns).map(|(a, _)| *a)
            {
                self.by_address.remove(&stalest);
            }
        }
        let w = self.by_address.entry(addr).or_insert(Window {
            first_ns: now,
            last_ns: now,
            count: 0,
            users: BTreeSet::new(),
        });
        if now.saturating_sub(w.first_ns) >= WINDOW_NS {
            *w = Window { first_ns: now, last_ns: now, count: 0, users: BTreeSet::new() };
        }
        w.count = w.count.saturating_add(1);
        w.last_ns = now;
        if let Some(user) = &e.user
            && w.users.len() < MAX_USERS
        {
            w.users.insert(user.clone());
        }
    }

    /// An open is about to go out: it carries the failures from its
    /// address within the window, which it then ends.
    pub fn opened(&mut self, e: &mut Event) {
        if e.kind != Kind::SessionOpen {
            return;
        }
        let Some(addr) = e.client_address else { return };
        let Some(w) = self.by_address.remove(&addr) else { return };
        if e.ktime_ns.saturating_sub(w.last_ns) < WINDOW_NS {
            e.before.failures = Some(w.count);
            e.before.failure_users = w.users.into_iter().collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FailureReason;

    fn failure(user: &str, at: u64) -> Event {
        let mut e = Event::new(Kind::AuthFailure { reason: FailureReason::WrongPassword }, at);
        e.user = Some(user.into());
        e.client_address = Some("192.0.2.7".parse().unwrap());
        e
    }

    fn open(at: u64) -> Event {
        let mut e = Event::new(Kind::SessionOpen, at);
        e.client_address = Some("192.0.2.7".parse().unwrap());
        e
    }

    #[test]
    fn an_open_carries_the_failures_before_it_once() {
        let mut h = History::default();
        for (i, u) in ["root", "admin", "alice"].iter().enumerate() {
            h.failed(&failure(u, i as u64));
        }
        let mut e = open(10);
        h.opened(&mut e);
        assert_eq!(e.before.failures, Some(3));
        assert_eq!(e.before.failure_users, ["admin", "alice", "root"]);
        let mut again = open(20);
        h.opened(&mut again);
        assert_eq!(again.before.failures, None, "counted once");
        h.failed(&failure("alice", 30));
        let mut late = open(30 + WINDOW_NS);
        h.opened(&mut late);
        assert_eq!(late.before.failures, None, "too long ago");
    }

    #[test]
    fn bounded_whatever_the_addresses() {
        let mut h = History::default();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            let mut e = failure("x", u64::from(i));
            e.client_address = Some(IpAddr::from(i.to_be_bytes()));
            h.failed(&e);
        }
        assert!(h.by_address.len() <= MAX_ADDRESSES);
        let mut e = failure("x", 0);
        for i in 0..100 {
            e.user = Some(format!("u{i}"));
            h.failed(&e);
        }
        assert!(h.by_address.values().all(|w| w.users.len() <= MAX_USERS));
    }
}
