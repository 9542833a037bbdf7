//! Facts the kernel records do not carry: the other half of user name/uid
//! from the user database, wall-clock time and the record id.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::{
    event::{Event, Kind},
    otel,
};

/// Looks users up. NSS (`getpwnam_r`) in the daemon so LDAP/SSSD users
/// resolve like local ones.
pub trait UserDb {
    fn uid_of(&self, name: &str) -> Option<u32>;
    fn name_of(&self, uid: u32) -> Option<String>;
}

/// The clocks an event's times come from.
pub trait Clock {
    /// CLOCK_BOOTTIME to Unix time, nanoseconds, now.
    fn boot_to_unix_ns(&self) -> i128;
    /// Unix time now, nanoseconds.
    fn unix_now_ns(&self) -> u64;
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
        match (&e.user, e.uid) {
            (Some(name), None) => e.uid = self.uid_of(&name.clone()),
            (None, Some(uid)) => e.user = self.name_of(uid),
            _ => {}
        }
        e.time_unix_nano = u64::try_from(i128::from(e.ktime_ns) + boot_to_unix_ns).unwrap_or(now_unix_ns);
        e.observed_time_unix_nano = now_unix_ns;
        let conn = match (e.connection_id, &e.kind, e.client_address) {
            (Some(u), ..) => u.to_string(),
            // A summary is the one event of its address at its time.
            (None, crate::event::Kind::FailureSummary(_), Some(a)) => a.to_string(),
            (None, ..) => "-".to_string(),
        };
        let event = otel::EventName::of(&e.kind).as_str();
        let name = match &mut e.kind {
            // Many processes of one session may act in the same nanosecond.
            Kind::SessionExec(_) | Kind::Escalation(_) => format!("{conn}/{event}/{}/{}", e.ktime_ns, e.process.pid),
            _ => format!("{conn}/{event}/{}", e.ktime_ns),
        };
        if let Kind::Escalation(x) = &mut e.kind {
            match (&x.target_user, x.target_uid) {
                (Some(name), None) => x.target_uid = self.uid_of(&name.clone()),
                (None, Some(uid)) => x.target_user = self.name_of(uid),
                _ => {}
            }
        }
        e.record_uid = Some(Uuid::new_v5(&self.boot_id, name.as_bytes()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FailureReason, Kind};
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
        let mut a = Event::new(Kind::SessionOpen, 5_000);
        a.user = Some("alice".into());
        en.enrich(&mut a, 1_000_000, 2_000_000);
        assert_eq!(a.uid, Some(1001));
        assert_eq!(a.time_unix_nano, 1_005_000);
        assert_eq!(a.observed_time_unix_nano, 2_000_000);
        let mut b = Event::new(Kind::SessionClose { duration_ms: None }, 6_000);
        b.uid = Some(1001);
        en.enrich(&mut b, 0, 0);
        assert_eq!(b.user.as_deref(), Some("alice"));
        let mut c = Event::new(Kind::SessionOpen, 7_000);
        c.user = Some("alice".into());
        en.enrich(&mut c, 0, 0);
        assert_eq!(en.users.0.get(), 2, "second lookup of alice came from the cache");
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let mut en = Enricher::new(Db(Cell::new(0)), Uuid::nil());
        let make = |k| {
            let mut e = Event::new(Kind::AuthFailure { reason: FailureReason::WrongPassword }, k);
            e.connection_id = Some(Uuid::from_u128(1));
            e
        };
        let (mut a, mut b, mut c) = (make(1), make(1), make(2));
        en.enrich(&mut a, 0, 1);
        en.enrich(&mut b, 0, 99);
        en.enrich(&mut c, 0, 1);
        assert_eq!(a.record_uid, b.record_uid);
        assert_ne!(a.record_uid, c.record_uid);
    }
}
