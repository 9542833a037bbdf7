//! The activity stage against a capture of a real session
//! (`pam-session-activity`: sl-bob runs ls, id, sudo and su), and its parts.

use sshlogin_common::layout;
use uuid::Uuid;

use super::*;
use crate::{
    admit::TrustCapture,
    capture,
    correlate::process::NoProc,
    enrich::UserDb,
    event::{Event, Kind},
    host::SystemClock,
    metrics::{Metrics, SessionDropped},
    otel::EventName,
    pipeline::Pipeline,
};

struct Users;

impl UserDb for Users {
    fn uid_of(&self, name: &str) -> Option<u32> {
        match name {
            "root" => Some(0),
            "sl-bob" => Some(1002),
            _ => None,
        }
    }
    fn name_of(&self, uid: u32) -> Option<String> {
        ["root", "sl-bob"].into_iter().find(|n| self.uid_of(n) == Some(uid)).map(str::to_string)
    }
}

fn run(records: Vec<Vec<u8>>, activity: Settings) -> (Vec<Event>, std::sync::Arc<Metrics>) {
    let settings = crate::correlate::Settings {
        boot_id: Uuid::nil(),
        family: vec!["sshd".into(), "sshd-session".into(), "sshd-auth".into()],
        activity,
    };
    let metrics = Metrics::new();
    let mut p = Pipeline::new(
        settings,
        Default::default(),
        Box::new(NoProc),
        Box::new(TrustCapture),
        Users,
        Box::new(SystemClock),
        metrics.clone(),
    );
    let mut events = Vec::new();
    p.records(records, &mut events);
    p.finish(&mut events);
    assert_eq!(metrics.decode_errors.get(), 0);
    (events, metrics)
}

fn named(events: &[Event], name: EventName) -> Vec<&Event> {
    events.iter().filter(|e| EventName::of(&e.kind) == name).collect()
}

fn escalations(events: &[Event]) -> Vec<(bool, String, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Escalation(x) => Some((x.success, x.method.clone(), x.target_user.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_session_s_execs_and_escalations_belong_to_its_connection() {
    let (events, metrics) = run(capture::fixture("pam-session-activity"), Settings::default());
    let open = named(&events, EventName::SessionOpen);
    assert_eq!(open.len(), 1);
    let id = open[0].connection_id;
    let execs = named(&events, EventName::SessionExec);
    let paths: Vec<&str> = execs.iter().filter_map(|e| e.process.exe.as_deref()).collect();
    assert_eq!(
        paths,
        [
            "/bin/bash",
            "/usr/bin/ls",
            "/usr/bin/id",
            "/usr/bin/sudo",
            "/usr/bin/true",
            "/usr/bin/sudo",
            "/usr/bin/su",
            "/usr/bin/sudo"
        ]
    );
    assert!(execs.iter().all(|e| e.connection_id == id && e.user.as_deref() == Some("sl-bob")));
    let Kind::SessionExec(ls) = &execs[1].kind else { panic!() };
    assert_eq!(ls.args, ["ls", "/"]);
    assert_eq!((ls.euid, ls.real_uid), (Some(1002), 1002));
    let Kind::SessionExec(sudo) = &execs[3].kind else { panic!() };
    assert_eq!((sudo.euid, sudo.real_uid), (Some(0), 1002), "a set-user-id exec");
    let root = Some("root".to_string());
    assert_eq!(
        escalations(&events),
        [
            (true, "sudo".into(), root.clone()),
            (false, "sudo".into(), root.clone()),
            (false, "su".into(), root.clone()),
            (false, "sudo".into(), root),
        ],
        "one per decision: sudo -n true, a wrong password to sudo -S, su's wrong password, a command no rule allows"
    );
    assert!(events.iter().filter(|e| matches!(e.kind, Kind::Escalation(_))).all(|e| e.connection_id == id));
    // pam_motd's run-parts, forked by the monitor before the session: nobody's.
    assert!(metrics.session_dropped_count(SessionDropped::Unattributed) > 0);
    assert!(named(&events, EventName::ActivitySummary).is_empty(), "nothing was suppressed");
}

#[test]
fn records_that_come_before_the_open_wait_for_it() {
    let mut records = capture::fixture("pam-session-activity");
    // The activity ring's records first, as a reader that drained it before
    // the login ring would hand them on.
    records.sort_by_key(|r| r.first() != Some(&(sshlogin_common::kind::SESSION_EXEC as u8)));
    let (events, _) = run(records, Settings::default());
    assert_eq!(named(&events, EventName::SessionExec).len(), 8);
    assert_eq!(escalations(&events).len(), 4);
}

#[test]
fn the_rate_limit_counts_what_it_leaves_out_in_a_summary() {
    let tight = Settings { burst: 3, rate: 1, ..Settings::default() };
    let (events, metrics) = run(capture::fixture("pam-session-activity"), tight);
    // The first five execs come within a second; the bucket refills one a
    // second over the session's five.
    let execs = named(&events, EventName::SessionExec).len() as u64;
    assert!((3..8).contains(&execs), "{execs}");
    assert_eq!(escalations(&events).len(), 4, "escalations have an allowance of their own");
    let summary = named(&events, EventName::ActivitySummary);
    assert_eq!(summary.len(), 1);
    let Kind::ActivitySummary { reported, suppressed } = summary[0].kind else { panic!() };
    assert_eq!((reported, suppressed), (execs + 4, 8 - execs));
    assert_eq!(metrics.session_dropped_count(SessionDropped::RateLimited), 8 - execs);
    assert_eq!(summary[0].connection_id, named(&events, EventName::SessionOpen)[0].connection_id);
}

#[test]
fn execs_off_keeps_escalations_and_exclusions_leave_execs_out() {
    let off = Settings { execs: false, ..Settings::default() };
    let (events, _) = run(capture::fixture("pam-session-activity"), off);
    assert!(named(&events, EventName::SessionExec).is_empty());
    assert_eq!(escalations(&events).len(), 4);
    let some = Settings { exclude: vec!["/usr/bin/".into()], ..Settings::default() };
    let (events, metrics) = run(capture::fixture("pam-session-activity"), some);
    assert_eq!(named(&events, EventName::SessionExec).len(), 1, "only /bin/bash");
    assert_eq!(metrics.session_dropped_count(SessionDropped::Excluded), 7);
}

#[test]
fn a_forged_record_from_nobody_s_session_is_counted_not_reported() {
    // The records of the session without the login's: no connection owns them.
    let records: Vec<Vec<u8>> = capture::fixture("pam-session-activity")
        .into_iter()
        .filter(|r| matches!(r.first().copied(), Some(8 | 9)))
        .collect();
    let n = records.len() as u64;
    let (events, metrics) = run(records, Settings::default());
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(metrics.session_dropped_count(SessionDropped::Unattributed), n);
}

#[test]
fn the_bucket_allows_a_burst_then_the_rate() {
    let mut b = Bucket::full(3.0, 0);
    assert!((0..3).all(|_| b.take(0, 10.0, 3.0)));
    assert!(!b.take(0, 10.0, 3.0));
    assert!(b.take(100_000_000, 10.0, 3.0), "one token back after 100 ms at 10/s");
    assert!(!b.take(100_000_000, 10.0, 3.0));
    assert!(!b.take(50_000_000, 10.0, 3.0), "time does not run backwards");
}

#[test]
fn file_transfers_are_named() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(subsystem("/usr/lib/openssh/sftp-server", &[]), Some("sftp"));
    assert_eq!(subsystem("/usr/bin/scp", &args(&["scp", "-f", "/etc/motd"])), Some("scp"));
    assert_eq!(subsystem("/usr/bin/scp", &args(&["scp", "a", "host:b"])), None, "a client, not a server");
    assert_eq!(subsystem("/usr/bin/ls", &args(&["ls", "-t"])), None);
}

#[test]
fn sudo_targets() {
    let t = |a: &[&str]| sudo_target(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(t(&["sudo", "-n", "true"]), "root");
    assert_eq!(t(&["sudo", "-u", "bob", "id"]), "bob");
    assert_eq!(t(&["sudo", "-ubob", "id"]), "bob");
    assert_eq!(t(&["sudo", "--user=bob", "id"]), "bob");
    assert_eq!(t(&["sudo", "id", "-u", "bob"]), "root", "the command's own options");
    assert_eq!(t(&[]), "root");
}

#[test]
fn exclusions_are_exact_or_prefixes() {
    let a = Activity::new(Settings {
        exclude: vec!["/usr/lib/git-core/".into(), "/bin/true".into()],
        ..Settings::default()
    });
    assert!(a.excluded("/usr/lib/git-core/git-remote-http"));
    assert!(a.excluded("/bin/true"));
    assert!(!a.excluded("/bin/truelove"));
    assert!(!a.excluded("/usr/lib/git-core"));
}

#[test]
fn a_leftover_process_is_not_the_session_of_a_new_process_with_its_pid() {
    // Records whose session's first process was made before the session
    // child's pid began its current life: a process left from an earlier
    // connection whose session child had that pid.
    let records: Vec<Vec<u8>> = capture::fixture("pam-session-activity")
        .into_iter()
        .map(|mut r| {
            if matches!(r.first().copied(), Some(8 | 9)) {
                r[layout::SESSION_NS..layout::SESSION_NS + 8].copy_from_slice(&1u64.to_ne_bytes());
            }
            r
        })
        .collect();
    let (events, metrics) = run(records, Settings::default());
    assert!(named(&events, EventName::SessionExec).is_empty());
    assert!(escalations(&events).is_empty());
    assert_eq!(named(&events, EventName::SessionOpen).len(), 1, "the login itself is as ever");
    assert!(metrics.session_dropped_count(SessionDropped::Unattributed) >= 12);
}
