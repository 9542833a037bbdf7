//! The correlator against captures of real sshd runs
//! (tests/fixtures/captures, recorded by record.sh there).

use uuid::Uuid;

use crate::{
    capture,
    correlate::{Settings, process::NoProc},
    enrich::UserDb,
    event::{Event, EventName, attr},
    metrics::Metrics,
    pipeline::Pipeline,
};

/// The accounts of the machine the fixtures were recorded on.
struct FixtureUsers;

impl UserDb for FixtureUsers {
    fn uid_of(&self, name: &str) -> Option<u32> {
        match name {
            "sl-alice" => Some(1001),
            "sl-bob" => Some(1002),
            "sl-carol" => Some(1003),
            "sshd" => Some(102),
            _ => None,
        }
    }
    fn name_of(&self, uid: u32) -> Option<String> {
        ["sl-alice", "sl-bob", "sl-carol", "sshd"].into_iter().find(|n| self.uid_of(n) == Some(uid)).map(str::to_string)
    }
}

fn settings() -> Settings {
    Settings {
        privsep_uid: Some(102),
        boot_id: Uuid::nil(),
        family: vec!["sshd".into()],
        sshd_paths: vec!["/usr/sbin/sshd".into()],
    }
}

/// The raw records of a capture in tests/fixtures/captures.
fn fixture_records(fixture: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/captures/{fixture}.hex", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    capture::read_records(std::io::BufReader::new(file)).unwrap()
}

/// Index of the first record that decodes to something `pred` accepts.
fn position(records: &[Vec<u8>], pred: impl Fn(&crate::decode::Record) -> bool) -> usize {
    records.iter().position(|r| crate::decode::decode(r).is_ok_and(|d| pred(&d))).expect("no such record")
}

fn replay(fixture: &str) -> Vec<Event> {
    let records = fixture_records(fixture);
    let mut pipeline = Pipeline::new(settings(), Box::new(NoProc), FixtureUsers, Metrics::new());
    let mut events = Vec::new();
    pipeline.records(records, &mut events);
    pipeline.finish(&mut events);
    assert_eq!(pipeline.metrics.decode_errors.get(), 0);
    events
}

fn names(events: &[Event]) -> Vec<EventName> {
    events.iter().map(|e| e.name).collect()
}

use EventName::{AuthFailure, SessionClose, SessionOpen};

#[test]
fn key_login_and_logout() {
    let ev = replay("pam-key-login");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    let (open, close) = (&ev[0], &ev[1]);
    assert_eq!(open.str(attr::USER_NAME), Some("sl-alice"));
    assert_eq!(open.str(attr::USER_ID), Some("1001"));
    assert_eq!(open.str(attr::CLIENT_ADDRESS), Some("127.0.0.1"));
    assert_eq!(open.int(attr::CLIENT_PORT), Some(57284));
    assert_eq!(open.str(attr::AUTH_METHOD), Some("publickey"));
    assert_eq!(open.str(attr::KEY_TYPE), Some("ED25519"));
    assert!(open.str(attr::KEY_FINGERPRINT).unwrap().starts_with("SHA256:"));
    assert_eq!(open.str(attr::TERMINAL), Some("ssh"));
    assert_eq!(open.str(attr::PROCESS_EXE), Some("/usr/sbin/sshd"));
    // The session child, under the monitor.
    let child = open.int(attr::PROCESS_PID).unwrap();
    let monitor = open.int(attr::PROCESS_PARENT_PID).unwrap();
    assert_ne!(child, monitor);
    assert_eq!(close.int(attr::PROCESS_PID), Some(child));
    assert_eq!(close.str(attr::CONNECTION_ID), open.str(attr::CONNECTION_ID));
    let ms = close.int(attr::SESSION_DURATION_MS).unwrap();
    assert!((1_000..1_500).contains(&ms), "{ms}");
    assert_ne!(open.str(attr::RECORD_UID), close.str(attr::RECORD_UID));
    assert_eq!(open.body, "sl-alice opened a session from 127.0.0.1 port 57284 (publickey)");
}

#[test]
fn pty_session_names_its_tty_at_close() {
    let ev = replay("pam-pty-session");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    assert_eq!(ev[1].str(attr::TTY), Some("/dev/pts/0"));
    assert_eq!(ev[1].str(attr::TERMINAL), Some("ssh"));
}

#[test]
fn without_pam_the_session_child_opens_and_closes() {
    let ev = replay("nopam-key-login");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    assert_eq!(ev[0].str(attr::USER_ID), Some("1003"));
    assert_eq!(ev[0].str(attr::USER_NAME), Some("sl-carol"));
    assert_eq!(ev[0].str(attr::TERMINAL), None);
    assert!(ev[1].int(attr::SESSION_DURATION_MS).unwrap() >= 500);
}

#[test]
fn wrong_key_is_one_failure() {
    let ev = replay("pam-wrong-key");
    assert_eq!(names(&ev), [AuthFailure]);
    assert_eq!(ev[0].str(attr::USER_NAME), Some("sl-alice"));
    assert_eq!(ev[0].str(attr::FAILURE_REASON), Some("auth_failed"));
}

#[test]
fn invalid_user_offering_a_key_is_one_failure() {
    let ev = replay("pam-invalid-user");
    assert_eq!(names(&ev), [AuthFailure]);
    assert_eq!(ev[0].str(attr::USER_NAME), Some("sl-nosuch"));
    assert_eq!(ev[0].str(attr::USER_ID), None);
    assert_eq!(ev[0].str(attr::FAILURE_REASON), Some("invalid_user"));
}

#[test]
fn invalid_user_trying_a_password_is_one_failure() {
    let ev = replay("pam-invalid-user-password");
    assert_eq!(names(&ev), [AuthFailure]);
    assert_eq!(ev[0].str(attr::USER_NAME), Some("sl-nosuch"));
    assert_eq!(ev[0].str(attr::AUTH_METHOD), Some("password"));
    assert_eq!(ev[0].str(attr::FAILURE_REASON), Some("invalid_user"));
}

#[test]
fn wrong_password_then_a_good_one() {
    let ev = replay("pam-password-fail-then-ok");
    assert_eq!(names(&ev), [AuthFailure, SessionOpen, SessionClose]);
    assert_eq!(ev[0].str(attr::FAILURE_REASON), Some("wrong_password"));
    assert_eq!(ev[0].str(attr::TERMINAL), Some("ssh"), "PAM's terminal wins over sshd's label");
    assert_ne!(ev[0].str(attr::CONNECTION_ID), ev[1].str(attr::CONNECTION_ID));
    assert_eq!(ev[1].str(attr::AUTH_METHOD), Some("password"));
}

#[test]
fn keyboard_interactive_failure_from_the_pam_child() {
    let ev = replay("pam-kbdint-fail");
    assert_eq!(names(&ev), [AuthFailure]);
    assert_eq!(ev[0].str(attr::AUTH_METHOD), Some("keyboard-interactive"));
    assert_eq!(ev[0].str(attr::USER_NAME), Some("sl-bob"));
    // Reported against the monitor (14044 in this capture), not the PAM
    // child (14046) that sent USER_AUTH.
    assert_eq!(ev[0].int(attr::PROCESS_PID), Some(14044));
}

#[test]
fn replays_are_deterministic() {
    let a = replay("pam-key-login");
    let b = replay("pam-key-login");
    assert_eq!(a[0].str(attr::RECORD_UID), b[0].str(attr::RECORD_UID));
}

#[test]
fn a_truncated_capture_still_reports_what_it_can() {
    // Cut right after USER_START: the session child, the close and the
    // monitor's exit were never seen. Finishing still reports the open.
    let records = fixture_records("pam-key-login");
    let mut pipeline = Pipeline::new(settings(), Box::new(NoProc), FixtureUsers, Metrics::new());
    let mut events = Vec::new();
    let user_start =
        position(&records, |r| matches!(r, crate::decode::Record::Audit { audit, .. } if audit.msg_type == 1105));
    pipeline.records(records.into_iter().take(user_start + 1), &mut events);
    pipeline.finish(&mut events);
    assert_eq!(names(&events), [SessionOpen]);
}

/// /proc as a forger would leave it: the fixture's sshd listener (8193 in
/// pam-wrong-key's parent chain) runs some other binary.
struct ForgedExe;

impl crate::correlate::process::ProcView for ForgedExe {
    fn parent(&self, _pid: u32) -> Option<(u32, String)> {
        None
    }
    fn start_ns(&self, _pid: u32) -> Option<u64> {
        None
    }
    fn exe(&self, _pid: u32) -> Option<String> {
        Some("/tmp/evil/sshd".into())
    }
}

#[test]
fn records_from_other_executables_are_refused_and_counted() {
    let records = fixture_records("pam-key-login");
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::new(settings(), Box::new(ForgedExe), FixtureUsers, metrics.clone());
    let mut events = Vec::new();
    pipeline.records(records, &mut events);
    pipeline.finish(&mut events);
    assert!(events.is_empty(), "{:?}", names(&events));
    assert!(metrics.refused_count("exe") > 5);
}

/// The sshd tree of pam-key-login.hex as /proc shows it to a daemon that
/// starts in the middle of the session: listener 13924, monitor 13929.
struct MidSession;

impl crate::correlate::process::ProcView for MidSession {
    fn parent(&self, pid: u32) -> Option<(u32, String)> {
        match pid {
            13929 => Some((13924, "sshd".into())),
            13935 => Some((13929, "sshd".into())),
            13924 => Some((1, "init".into())),
            _ => None,
        }
    }
    fn start_ns(&self, _pid: u32) -> Option<u64> {
        None
    }
    fn exe(&self, _pid: u32) -> Option<String> {
        Some("/usr/sbin/sshd".into())
    }
}

#[test]
fn a_session_opened_before_the_daemon_started_still_closes() {
    let records = fixture_records("pam-key-login");
    // Everything up to and including the session child's privilege drop
    // happened before the (re)start.
    let drop_at = position(&records, |r| matches!(r, crate::decode::Record::Setresuid { uid: 1001, .. }));
    let mut pipeline = Pipeline::new(settings(), Box::new(MidSession), FixtureUsers, Metrics::new());
    let mut events = Vec::new();
    pipeline.records(records.into_iter().skip(drop_at + 1), &mut events);
    pipeline.finish(&mut events);
    assert_eq!(names(&events), [SessionClose]);
    assert_eq!(events[0].str(attr::USER_NAME), Some("sl-alice"));
    assert_eq!(events[0].str(attr::CLIENT_ADDRESS), Some("127.0.0.1"));
    assert_eq!(events[0].int(attr::SESSION_DURATION_MS), None, "the daemon cannot know how long it lasted");
}

#[test]
fn openssh_10_layout_from_a_real_capture() {
    // sshd (listener) -> sshd-session (monitor) -> sshd-auth (pre-auth, drops
    // to its own uid 997 in that root, not the host's 102) and the session child.
    let ev = replay("openssh10-key-login");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    assert_eq!(ev[0].str(attr::USER_NAME), Some("sl-alice"));
    assert_eq!(ev[0].str(attr::AUTH_METHOD), Some("publickey"));
    assert_eq!(ev[0].str(attr::PROCESS_EXE), Some("/usr/lib/openssh/sshd-session"));
    assert!(ev[1].int(attr::SESSION_DURATION_MS).unwrap() >= 500);
}

/// A connect record as the kernel half writes it.
fn connect(pid: u32, fd: u32, addr: std::net::SocketAddr) -> Vec<u8> {
    use sshlogin_common::{kind, layout};
    let mut r = vec![0u8; layout::CONNECT_SIZE];
    r[..4].copy_from_slice(&kind::CONNECT.to_ne_bytes());
    r[4..8].copy_from_slice(&pid.to_ne_bytes());
    r[8..12].copy_from_slice(&pid.to_ne_bytes());
    r[12..16].copy_from_slice(&1001u32.to_ne_bytes());
    r[24..32].copy_from_slice(&u64::MAX.to_ne_bytes());
    r[32..36].copy_from_slice(b"sshd");
    r[layout::CONNECT_FD..layout::CONNECT_FD + 4].copy_from_slice(&fd.to_ne_bytes());
    let a = layout::CONNECT_ADDR;
    let std::net::SocketAddr::V4(v4) = addr else { panic!("v4 only here") };
    r[a..a + 2].copy_from_slice(&2u16.to_ne_bytes());
    r[a + 2..a + 4].copy_from_slice(&v4.port().to_be_bytes());
    r[a + 4..a + 8].copy_from_slice(&v4.ip().octets());
    r
}

#[test]
fn a_session_child_connecting_onward_is_a_forward_but_dns_is_not() {
    let records = fixture_records("pam-key-login");
    // Stop right after the session child (13935) dropped to sl-alice.
    let drop_at = position(&records, |r| matches!(r, crate::decode::Record::Setresuid { uid: 1001, .. }));
    let mut pipeline = Pipeline::new(settings(), Box::new(NoProc), FixtureUsers, Metrics::new());
    let mut events = Vec::new();
    pipeline.records(records.into_iter().take(drop_at + 1), &mut events);
    let session = |n: &str| n.parse().unwrap();
    pipeline.records(
        [
            connect(13935, 5, session("10.0.0.53:53")),
            connect(13935, 5, session("10.0.0.9:0")),
            connect(13935, 6, session("10.213.2.2:22")),
        ],
        &mut events,
    );
    assert_eq!(names(&events), [SessionOpen, EventName::Forward]);
    let f = &events[1];
    assert_eq!(f.str(attr::FORWARD_ADDRESS), Some("10.213.2.2"));
    assert_eq!(f.int(attr::FORWARD_PORT), Some(22));
    assert_eq!(f.str(attr::USER_NAME), Some("sl-alice"));
    assert_eq!(f.str(attr::CONNECTION_ID), events[0].str(attr::CONNECTION_ID));
    assert_eq!(f.int(attr::PROCESS_PID), Some(13935));
    assert_eq!(f.body, "sl-alice forwarded a connection to 10.213.2.2 port 22 (session from 127.0.0.1 port 57284)");
}
