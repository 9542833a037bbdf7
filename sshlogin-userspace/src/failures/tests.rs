use super::*;

const S: u64 = 1_000_000_000;

fn failure(addr: &str, user: &str, at: u64) -> Event {
    let mut e = Event::new(Kind::AuthFailure { reason: FailureReason::WrongPassword }, at);
    e.user = Some(user.into());
    e.client_address = Some(addr.parse().unwrap());
    e
}

fn summary_mode() -> Failures {
    Failures::new(Settings { mode: Mode::Summary, alone: 3, window: Duration::from_secs(60) })
}

fn summaries(events: &[Event]) -> Vec<&FailureSummary> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::FailureSummary(s) => Some(&**s),
            _ => None,
        })
        .collect()
}

fn failures(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e.kind, Kind::AuthFailure { .. })).count()
}

#[test]
fn each_mode_passes_everything() {
    let mut f = Failures::new(Settings::default());
    let mut out: Vec<Event> = (0..50).map(|i| failure("192.0.2.1", "root", i)).collect();
    f.pass(&mut out, 0);
    assert_eq!(failures(&out), 50);
    f.finish(&mut out);
    assert_eq!(out.len(), 50);
}

#[test]
fn after_the_first_few_an_address_is_summed_up_once_per_window() {
    let mut f = summary_mode();
    let mut out = Vec::new();
    for i in 0..200u64 {
        out.push(failure("192.0.2.1", if i % 4 == 0 { "admin" } else { "root" }, i * S / 10));
        // Another address, fewer failures: alone, unaffected.
        if i % 100 == 0 {
            out.push(failure("198.51.100.9", "alice", i * S / 10));
        }
        let first = out.len() - 1 - usize::from(i % 100 == 0);
        f.pass(&mut out, first);
    }
    assert_eq!(failures(&out), 3 + 2, "3 alone from the attacker, both of the other address");
    assert!(summaries(&out).is_empty(), "the window is still open");
    assert_eq!(f.next_due(), Some(60 * S));
    f.tick(60 * S, &mut out);
    let sums = summaries(&out);
    assert_eq!(sums.len(), 1);
    let s = sums[0];
    assert_eq!(s.count, 197);
    let by: HashMap<&str, u32> = s.by_user.iter().map(|(u, n)| (u.as_str(), *n)).collect();
    // i % 4 == 0 is admin: 50 of 200, of which i = 0 went alone.
    assert_eq!(by["admin"], 49);
    assert_eq!(by["root"], 148);
    assert_eq!(s.by_reason, [(FailureReason::WrongPassword, 197)]);
    assert_eq!(s.first_ns, 3 * S / 10);
    let e = out.last().unwrap();
    assert_eq!(e.ktime_ns, 199 * S / 10, "at the last failure's time");
    assert_eq!(e.client_address, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(f.next_due(), None);
}

#[test]
fn a_new_window_starts_alone_again() {
    let mut f = summary_mode();
    let mut out = Vec::new();
    for i in 0..5 {
        out.push(failure("192.0.2.1", "root", i));
        let at = out.len() - 1;
        f.pass(&mut out, at);
    }
    out.push(failure("192.0.2.1", "root", 61 * S));
    let at = out.len() - 1;
    f.pass(&mut out, at);
    assert_eq!(summaries(&out).len(), 1, "the old window's summary, sent as the next began");
    assert_eq!(summaries(&out)[0].count, 2);
    assert_eq!(failures(&out), 4, "3 alone, then the new window's first");
}

#[test]
fn an_open_sends_its_address_summary_first() {
    let mut f = summary_mode();
    let mut out = Vec::new();
    for i in 0..10 {
        out.push(failure("192.0.2.1", "root", i));
    }
    let mut open = Event::new(Kind::SessionOpen, 20);
    open.client_address = Some("192.0.2.1".parse().unwrap());
    out.push(open);
    f.pass(&mut out, 0);
    let names: Vec<&str> = out
        .iter()
        .map(|e| match e.kind {
            Kind::AuthFailure { .. } => "failure",
            Kind::FailureSummary(_) => "summary",
            _ => "open",
        })
        .collect();
    assert_eq!(names, ["failure", "failure", "failure", "summary", "open"]);
    assert_eq!(summaries(&out)[0].count, 7);
    assert_eq!(f.next_due(), None);
}

#[test]
fn bounded_whatever_the_attacker_sends() {
    let mut f = summary_mode();
    let mut out = Vec::new();
    let long = "x".repeat(10_000);
    // Many addresses, each past its first few, and many long names.
    for a in 0..(MAX_ADDRESSES as u32 + 500) {
        let addr = IpAddr::from((0x0a00_0000 + a).to_be_bytes()).to_string();
        for i in 0..5u32 {
            out.push(failure(&addr, &format!("{long}{i}"), u64::from(a)));
        }
        let at = out.len() - 5;
        f.pass(&mut out, at);
    }
    assert!(f.windows.len() <= MAX_ADDRESSES);
    let sums = summaries(&out);
    assert_eq!(sums.len(), 500, "the addresses pushed out sent their summaries early");
    assert!(sums.iter().all(|s| s.count == 2 && s.by_user.iter().all(|(u, _)| u.len() <= MAX_NAME)));
    f.finish(&mut out);
    let folded: u32 = summaries(&out).iter().map(|s| s.count).sum();
    assert_eq!(folded, 2 * (MAX_ADDRESSES as u32 + 500), "every folded failure is in a summary");
    let mut f = summary_mode();
    let mut one = Vec::new();
    for i in 0..1000 {
        one.push(failure("192.0.2.200", &format!("user{i}"), 1));
    }
    f.pass(&mut one, 0);
    f.finish(&mut one);
    let s = summaries(&one)[0];
    assert_eq!((s.by_user.len(), s.other_users, s.count), (MAX_USERS, 997 - MAX_USERS as u32, 997));
}

#[test]
fn throwaway_names_cannot_hide_the_account_under_attack() {
    let mut f = summary_mode();
    let mut out = Vec::new();
    for i in 0..3 {
        out.push(failure("192.0.2.1", "warmup", i));
    }
    for i in 0..(MAX_USERS as u64 * 4) {
        out.push(failure("192.0.2.1", &format!("junk{i}"), 10 + i));
    }
    for i in 0..100 {
        out.push(failure("192.0.2.1", "alice", 1000 + i));
    }
    f.pass(&mut out, 0);
    f.finish(&mut out);
    let s = summaries(&out)[0];
    let alice = s.by_user.iter().find(|(u, _)| u == "alice").map(|(_, n)| *n);
    assert!(alice.is_some_and(|n| n >= 99), "alice is listed with her failures: {:?}", s.by_user);
    assert_eq!(s.by_user[0].0, "alice", "most first");
    let named: u32 = s.by_user.iter().map(|(_, n)| n).sum();
    assert_eq!(named + s.other_users, s.count, "every failure counted once");
    assert_eq!(s.distinct_users, 64, "counted exactly up to 64");
}

#[test]
fn a_flush_sends_what_was_folded_and_the_window_goes_on() {
    let mut f = summary_mode();
    let mut out = Vec::new();
    for i in 0..6 {
        out.push(failure("192.0.2.1", "root", i));
    }
    f.pass(&mut out, 0);
    f.flush(&mut out);
    assert_eq!(summaries(&out).len(), 1);
    assert_eq!(summaries(&out)[0].count, 3);
    assert_eq!(f.next_due(), None, "nothing held");
    out.push(failure("192.0.2.1", "root", 10));
    let at = out.len() - 1;
    f.pass(&mut out, at);
    assert_eq!(failures(&out), 3, "still past the first few: folded");
    f.finish(&mut out);
    assert_eq!(summaries(&out).len(), 2);
    assert_eq!(f.take_folded(), 4);
}

#[test]
fn each_server_end_has_its_own_window() {
    let mut f = summary_mode();
    let mut out = Vec::new();
    for port in [22, 2222] {
        for i in 0..5 {
            let mut e = failure("192.0.2.1", "root", i);
            e.server = Some(std::net::SocketAddr::from(([10, 0, 0, 1], port)));
            out.push(e);
        }
    }
    f.pass(&mut out, 0);
    f.finish(&mut out);
    assert_eq!(failures(&out), 6, "three alone per server end");
    assert_eq!(summaries(&out).len(), 2);
}
