use super::*;
use crate::{event::KeyInfo, metrics::Metrics};
use redb::{ReadableDatabase, ReadableTableMetadata};

const DAY: u64 = 86_400;
const T0: u64 = 1_800_000_000;

fn settings(learning_days: u64) -> FirstSeen {
    FirstSeen { retention: Duration::from_secs(90 * DAY), learning: Duration::from_secs(learning_days * DAY) }
}

fn open_event(user: &str, addr: &str, fingerprint: &str, at: u64) -> Event {
    let mut e = Event::new(Kind::SessionOpen, 1);
    e.user = Some(user.into());
    e.client_address = Some(addr.parse().unwrap());
    e.key = Some(KeyInfo { key_type: "ED25519".into(), fingerprint: fingerprint.into(), cert: None });
    e.time_unix_nano = at * 1_000_000_000;
    e
}

fn marks(seen: &mut Seen, e: Event) -> FirstSeenMarks {
    let mut events = [e];
    seen.mark(&mut events, T0);
    events[0].first_seen
}

#[test]
fn new_then_known_then_known_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::open(dir.path(), settings(0), T0, Metrics::new());
    let m = marks(&mut seen, open_event("alice", "192.0.2.1", "SHA256:a", T0));
    assert_eq!((m.client, m.key, m.learning), (Some(true), Some(true), false));
    let m = marks(&mut seen, open_event("alice", "192.0.2.1", "SHA256:a", T0 + 10));
    assert_eq!((m.client, m.key), (Some(false), Some(false)));
    let m = marks(&mut seen, open_event("alice", "192.0.2.2", "SHA256:a", T0 + 20));
    assert_eq!((m.client, m.key), (Some(true), Some(false)), "a new address, a known key");
    let m = marks(&mut seen, open_event("bob", "192.0.2.2", "SHA256:a", T0 + 30));
    assert_eq!((m.client, m.key), (Some(true), Some(true)), "per user");
    drop(seen);
    let mut seen = Seen::open(dir.path(), settings(0), T0 + 40, Metrics::new());
    let m = marks(&mut seen, open_event("alice", "192.0.2.1", "SHA256:a", T0 + 50));
    assert_eq!((m.client, m.key), (Some(false), Some(false)), "remembered across a restart");
}

#[test]
fn forgotten_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::open(dir.path(), settings(0), T0, Metrics::new());
    marks(&mut seen, open_event("alice", "192.0.2.1", "SHA256:a", T0));
    let later = T0 + 91 * DAY;
    let m = marks(&mut seen, open_event("alice", "192.0.2.1", "SHA256:a", later));
    assert_eq!(m.client, Some(true), "unused for longer than the retention");
    // Pruning removes it from the file too.
    seen.prune(later + 91 * DAY).unwrap();
    let txn = seen.db.as_ref().unwrap().begin_read().unwrap();
    assert_eq!(txn.open_table(CLIENTS).unwrap().len().unwrap(), 0);
}

#[test]
fn a_new_store_learns_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::open(dir.path(), settings(1), T0, Metrics::new());
    let m = marks(&mut seen, open_event("alice", "192.0.2.1", "SHA256:a", T0));
    assert_eq!((m.client, m.key, m.learning), (None, None, true));
    drop(seen);
    // Learning counts from the store's creation, not from the last start.
    let mut seen = Seen::open(dir.path(), settings(1), T0 + DAY + 1, Metrics::new());
    let mut events = [open_event("alice", "192.0.2.1", "SHA256:a", T0 + DAY + 1)];
    seen.mark(&mut events, T0 + DAY + 1);
    let m = events[0].first_seen;
    assert_eq!((m.client, m.key, m.learning), (Some(false), Some(false), false), "learned while learning");
}

#[test]
fn bounded_whatever_one_user_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::open(dir.path(), settings(0), T0, Metrics::new());
    seen.max_entries = 100;
    for i in 0..250u64 {
        let addr = std::net::IpAddr::from((0x0a00_0000u32 + i as u32).to_be_bytes()).to_string();
        marks(&mut seen, open_event("mallory", &addr, "SHA256:m", T0 + i));
    }
    let txn = seen.db.as_ref().unwrap().begin_read().unwrap();
    assert!(txn.open_table(CLIENTS).unwrap().len().unwrap() <= 101);
    drop(txn);
    let m = marks(&mut seen, open_event("mallory", "10.0.0.249", "SHA256:m", T0 + 300));
    assert_eq!(m.client, Some(false), "the most recent stay");
}

#[test]
fn only_opens_are_marked_and_a_newer_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::open(dir.path(), settings(0), T0, Metrics::new());
    let mut close = open_event("alice", "192.0.2.1", "SHA256:a", T0);
    close.kind = Kind::SessionClose { duration_ms: None };
    let mut events = [close];
    seen.mark(&mut events, T0);
    assert_eq!(events[0].first_seen, FirstSeenMarks::default());
    {
        let txn = seen.db.as_ref().unwrap().begin_write().unwrap();
        txn.open_table(META).unwrap().insert("version", VERSION + 1).unwrap();
        txn.commit().unwrap();
    }
    drop(seen);
    let metrics = Metrics::new();
    let mut newer = Seen::open(dir.path(), settings(0), T0, metrics.clone());
    assert!(newer.db.is_none(), "a newer format is not read");
    assert_eq!(marks(&mut newer, open_event("alice", "192.0.2.1", "SHA256:a", T0)), FirstSeenMarks::default());
    assert_eq!(metrics.first_seen_errors.get(), 1, "counted; tried again only later");
}

#[test]
fn a_store_that_cannot_open_leaves_opens_unmarked_and_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, b"not a directory").unwrap();
    let metrics = Metrics::new();
    let mut seen = Seen::open(&state, settings(0), T0, metrics.clone());
    let mut events = [open_event("alice", "192.0.2.1", "SHA256:a", T0)];
    seen.mark(&mut events, T0);
    assert_eq!(events[0].first_seen, FirstSeenMarks::default(), "the open goes out, unmarked");
    assert_eq!(metrics.first_seen_errors.get(), 1);
    std::fs::remove_file(&state).unwrap();
    seen.mark(&mut events, T0 + 1);
    assert_eq!(events[0].first_seen.client, None, "not before the retry time");
    seen.mark(&mut events, T0 + RETRY_OPEN);
    assert_eq!(events[0].first_seen.client, Some(true), "opened again");
}

#[test]
fn one_user_cannot_push_out_another_users_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::open(dir.path(), settings(0), T0, Metrics::new());
    marks(&mut seen, open_event("alice", "192.0.2.1", "SHA256:a", T0));
    for i in 0..(MAX_PER_USER as u64 + 50) {
        let addr = std::net::IpAddr::from((0x0a00_0000u32 + i as u32).to_be_bytes()).to_string();
        marks(&mut seen, open_event("mallory", &addr, &format!("SHA256:m{i}"), T0 + 1 + i));
    }
    let m = marks(&mut seen, open_event("alice", "192.0.2.1", "SHA256:a", T0 + 1000));
    assert_eq!((m.client, m.key), (Some(false), Some(false)), "alice's history survives mallory's flood");
    let txn = seen.db.as_ref().unwrap().begin_read().unwrap();
    assert_eq!(txn.open_table(CLIENTS).unwrap().len().unwrap(), MAX_PER_USER as u64 + 1);
    drop(txn);
    let m = marks(&mut seen, open_event("mallory", "10.0.1.49", "SHA256:m305", T0 + 1001));
    assert_eq!(m.client, Some(false), "mallory's most recent stay");
}
