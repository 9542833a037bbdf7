//! The activity stage against a capture of a real session
//! (`pam-session-activity`: sl-bob runs ls, id, sudo and su), and its parts.

use sshlogin_common::layout;
use uuid::Uuid;

use super::{escalation::FileId, *};
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

/// The files the capture's sudo and su ran from (its host's).
fn pam_programs(records: &[Vec<u8>]) -> Vec<FileId> {
    records
        .iter()
        .filter_map(|r| match crate::decode::decode(r) {
            Ok(Record::SessionExec(e)) if e.path.ends_with("/sudo") || e.path.ends_with("/su") => Some(e.exe),
            _ => None,
        })
        .collect()
}

fn run(records: Vec<Vec<u8>>, mut activity: Settings) -> (Vec<Event>, std::sync::Arc<Metrics>) {
    activity.pam_programs = Some(pam_programs(&capture::fixture("pam-session-activity")));
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
fn file_transfers_are_named() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(subsystem("/usr/lib/openssh/sftp-server", &[]), Some("sftp"));
    assert_eq!(subsystem("/usr/bin/scp", &args(&["scp", "-f", "/etc/motd"])), Some("scp"));
    assert_eq!(subsystem("/usr/bin/scp", &args(&["scp", "a", "host:b"])), None, "a client, not a server");
    assert_eq!(subsystem("/usr/bin/ls", &args(&["ls", "-t"])), None);
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

#[test]
fn what_a_session_left_running_after_the_logout_is_still_its_connection_s() {
    // The last sudo's records moved after the connection's end, as a
    // process left running (`nohup`, a double fork) would send them.
    let records = capture::fixture("pam-session-activity");
    let last_sudo = records
        .iter()
        .rev()
        .find_map(|r| match crate::decode::decode(r) {
            Ok(Record::SessionExec(e)) if e.path.ends_with("/sudo") => Some(e.who.meta.pid),
            _ => None,
        })
        .expect("a sudo in the capture");
    let (late, mut rest): (Vec<Vec<u8>>, Vec<Vec<u8>>) = records.into_iter().partition(|r| {
        matches!(r.first().copied(), Some(8 | 9)) && crate::decode::decode(r).is_ok_and(|d| d.meta().pid == last_sudo)
    });
    assert!(!late.is_empty());
    let end = rest.iter().map(|r| crate::decode::decode(r).map_or(0, |d| d.meta().ktime_ns)).max().unwrap();
    for mut r in late {
        // After the end, still made by the session before it.
        r[24..32].copy_from_slice(&(end + 1_000_000).to_ne_bytes());
        rest.push(r);
    }
    let (events, _) = run(rest, Settings::default());
    let id = named(&events, EventName::SessionOpen)[0].connection_id;
    let close = events.iter().position(|e| EventName::of(&e.kind) == EventName::SessionClose).unwrap();
    let after: Vec<&Event> = events[close + 1..].iter().collect();
    assert_eq!(after.len(), 2, "the exec and the refusal, after the close: {after:?}");
    assert!(after.iter().all(|e| e.connection_id == id && e.user.as_deref() == Some("sl-bob")));
    assert_eq!(escalations(&events).len(), 4);
}

#[test]
fn a_set_user_id_program_named_sudo_is_an_escalation_of_its_own() {
    // The first sudo's exec, as if `~/sudo` were a link to another
    // set-user-id program (mount): not the file sudo runs from.
    let mut records = capture::fixture("pam-session-activity");
    let first = records
        .iter()
        .position(|r| matches!(crate::decode::decode(r), Ok(Record::SessionExec(e)) if e.path.ends_with("/sudo")))
        .unwrap();
    records[first][layout::SEXEC_EXE_INO..layout::SEXEC_EXE_INO + 8].copy_from_slice(&4242u64.to_ne_bytes());
    let (events, _) = run(records, Settings::default());
    let setuid: Vec<_> = escalations(&events).into_iter().filter(|(_, m, _)| m == "setuid").collect();
    assert_eq!(setuid.len(), 1, "{:?}", escalations(&events));
    assert!(setuid[0].0, "it ran");
}
