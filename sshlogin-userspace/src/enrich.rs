//! Facts the kernel records do not carry: the other half of user name/uid
//! from the user database, wall-clock time, the body sentence and the id.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::event::{Event, attr};

/// Looks users up. NSS (`getpwnam_r`) in the daemon so LDAP/SSSD users
/// resolve like local ones.
pub trait UserDb {
    fn uid_of(&self, name: &str) -> Option<u32>;
    fn name_of(&self, uid: u32) -> Option<String>;
}

pub struct Nss;

impl UserDb for Nss {
    fn uid_of(&self, name: &str) -> Option<u32> {
        nix::unistd::User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
    }
    fn name_of(&self, uid: u32) -> Option<String> {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
    }
}

/// Accounts change rarely; a login storm must not become an NSS storm.
const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 4096;

pub struct Enricher<U: UserDb> {
    users: U,
    by_name: HashMap<String, (Option<u32>, Instant)>,
    by_uid: HashMap<u32, (Option<String>, Instant)>,
    boot_id: Uuid,
}

impl<U: UserDb> Enricher<U> {
    pub fn new(users: U, boot_id: Uuid) -> Self {
        Enricher { users, by_name: HashMap::new(), by_uid: HashMap::new(), boot_id }
    }

    /// Completes `e`. `boot_to_unix_ns` maps CLOCK_BOOTTIME to Unix time;
    /// `now_unix_ns` is the observation time.
    pub fn enrich(&mut self, e: &mut Event, boot_to_unix_ns: i128, now_unix_ns: u64) {
        match (e.str(attr::USER_NAME), e.str(attr::USER_ID).is_some()) {
            (Some(name), false) => {
                if let Some(uid) = self.uid_of(name) {
                    e.set(attr::USER_ID, uid.to_string());
                }
            }
            (None, true) => {
                let uid = e.str(attr::USER_ID).and_then(|u| u.parse().ok());
                if let Some(name) = uid.and_then(|u| self.name_of(u)) {
                    e.set(attr::USER_NAME, name);
                }
            }
            _ => {}
        }
        e.time_unix_nano = u64::try_from(i128::from(e.ktime_ns) + boot_to_unix_ns).unwrap_or(now_unix_ns);
        e.observed_time_unix_nano = now_unix_ns;
        e.body = e.describe();
        let conn = e.str(attr::CONNECTION_ID).unwrap_or("-");
        let name = format!("{conn}/{}/{}", e.name.as_str(), e.ktime_ns);
        e.set(attr::RECORD_UID, Uuid::new_v5(&self.boot_id, name.as_bytes()).to_string());
    }

    fn uid_of(&mut self, name: &str) -> Option<u32> {
        if let Some((uid, at)) = self.by_name.get(name)
            && at.elapsed() < CACHE_TTL
        {
            return *uid;
        }
        let uid = self.users.uid_of(name);
        if self.by_name.len() >= CACHE_MAX {
            self.by_name.clear();
        }
        self.by_name.insert(name.to_string(), (uid, Instant::now()));
        uid
    }

    fn name_of(&mut self, uid: u32) -> Option<String> {
        if let Some((name, at)) = self.by_uid.get(&uid)
            && at.elapsed() < CACHE_TTL
        {
            return name.clone();
        }
        let name = self.users.name_of(uid);
        if self.by_uid.len() >= CACHE_MAX {
            self.by_uid.clear();
        }
        self.by_uid.insert(uid, (name.clone(), Instant::now()));
        name
    }
}

/// CLOCK_BOOTTIME to Unix time offset, in nanoseconds, right now.
pub fn boot_to_unix_ns() -> i128 {
    use nix::time::{ClockId, clock_gettime};
    let ns =
        |c| clock_gettime(c).map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())).unwrap_or(0);
    ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_BOOTTIME)
}

/// CLOCK_BOOTTIME now, nanoseconds.
pub fn boot_now_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_BOOTTIME).map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64).unwrap_or(0)
}

pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventName;
    use std::cell::Cell;

    struct Db(Cell<u32>);
    impl UserDb for Db {
        fn uid_of(&self, name: &str) -> Option<u32> {
            self.0.set(self.0.get() + 1);
            (name == "alice").then_some(1001)
        }
        fn name_of(&self, uid: u32) -> Option<String> {
            self.0.set(self.0.get() + 1);
            (uid == 1001).then(|| "alice".to_string())
        }
    }

    #[test]
    fn fills_the_missing_half_and_caches() {
        let mut en = Enricher::new(Db(Cell::new(0)), Uuid::nil());
        let mut a = Event::new(EventName::SessionOpen, 5_000);
        a.set(attr::USER_NAME, "alice");
        en.enrich(&mut a, 1_000_000, 2_000_000);
        assert_eq!(a.str(attr::USER_ID), Some("1001"));
        assert_eq!(a.time_unix_nano, 1_005_000);
        assert_eq!(a.observed_time_unix_nano, 2_000_000);
        assert_eq!(a.body, "alice opened a session");
        let mut b = Event::new(EventName::SessionClose, 6_000);
        b.set(attr::USER_ID, "1001");
        en.enrich(&mut b, 0, 0);
        assert_eq!(b.str(attr::USER_NAME), Some("alice"));
        let mut c = Event::new(EventName::SessionOpen, 7_000);
        c.set(attr::USER_NAME, "alice");
        en.enrich(&mut c, 0, 0);
        assert_eq!(en.users.0.get(), 2, "second lookup of alice came from the cache");
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let mut en = Enricher::new(Db(Cell::new(0)), Uuid::nil());
        let make = |k| {
            let mut e = Event::new(EventName::AuthFailure, k);
            e.set(attr::CONNECTION_ID, "c1");
            e
        };
        let (mut a, mut b, mut c) = (make(1), make(1), make(2));
        en.enrich(&mut a, 0, 1);
        en.enrich(&mut b, 0, 99);
        en.enrich(&mut c, 0, 1);
        assert_eq!(a.str(attr::RECORD_UID), b.str(attr::RECORD_UID));
        assert_ne!(a.str(attr::RECORD_UID), c.str(attr::RECORD_UID));
    }
}
