//! The correlator against captures of real sshd runs
//! (tests/fixtures/captures, recorded by record.sh there), and against
//! those captures edited the way lost records and reused pids would leave
//! them.

use sshlogin_common::{kind, layout};
use uuid::Uuid;

use crate::{
    admit::TrustCapture,
    capture,
    correlate::{Settings, process::NoProc},
    decode::{Record, decode},
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
            "nobody" => Some(65534),
            _ => None,
        }
    }
    fn name_of(&self, uid: u32) -> Option<String> {
        ["sl-alice", "sl-bob", "sl-carol", "sshd", "nobody"]
            .into_iter()
            .find(|n| self.uid_of(n) == Some(uid))
            .map(str::to_string)
    }
}

fn settings() -> Settings {
    Settings { boot_id: Uuid::nil(), family: vec!["sshd".into(), "sshd-session".into(), "sshd-auth".into()] }
}

fn pipeline(
    view: Box<dyn super::process::ProcView + Send>,
    metrics: std::sync::Arc<Metrics>,
) -> Pipeline<FixtureUsers> {
    Pipeline::new(settings(), view, Box::new(TrustCapture), FixtureUsers, metrics)
}

/// The raw records of a capture in tests/fixtures/captures.
fn fixture_records(fixture: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/captures/{fixture}.hex", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    capture::read_records(std::io::BufReader::new(file)).unwrap()
}

/// Index of the first record that decodes to something `pred` accepts.
fn position(records: &[Vec<u8>], pred: impl Fn(&Record) -> bool) -> usize {
    records.iter().position(|r| decode(r).is_ok_and(|d| pred(&d))).expect("no such record")
}

fn run(records: impl IntoIterator<Item = Vec<u8>>) -> Vec<Event> {
    let mut pipeline = pipeline(Box::new(NoProc), Metrics::new());
    let mut events = Vec::new();
    pipeline.records(records, &mut events);
    pipeline.finish(&mut events);
    assert_eq!(pipeline.metrics.decode_errors.get(), 0);
    events
}

fn replay(fixture: &str) -> Vec<Event> {
    run(fixture_records(fixture))
}

fn names(events: &[Event]) -> Vec<EventName> {
    events.iter().map(|e| e.name).collect()
}

use EventName::{AuthFailure, Forward, SessionClose, SessionOpen};

#[test]
fn key_login_and_logout() {
    let ev = replay("pam-key-login");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    let (open, close) = (&ev[0], &ev[1]);
    assert_eq!(open.str(attr::USER_NAME), Some("sl-alice"));
    assert_eq!(open.str(attr::USER_ID), Some("1001"));
    assert_eq!(open.str(attr::CLIENT_ADDRESS), Some("127.0.0.1"));
    assert!(open.int(attr::CLIENT_PORT).is_some());
    assert_eq!(open.str(attr::AUTH_METHOD), Some("publickey"));
    assert_eq!(open.str(attr::KEY_TYPE), Some("ED25519"));
    assert!(open.str(attr::KEY_FINGERPRINT).unwrap().starts_with("SHA256:"));
    assert_eq!(open.str(attr::TERMINAL), Some("ssh"));
    assert_eq!(open.str(attr::PROCESS_EXE), Some("/usr/sbin/sshd"));
    // The session child (the one that dropped to 1001), under the monitor.
    let records = fixture_records("pam-key-login");
    let drop = &records[position(&records, |r| matches!(r, Record::Setresuid { uid: 1001, .. }))];
    let child = decode(drop).unwrap().meta().pid;
    assert_eq!(open.int(attr::PROCESS_PID), Some(i64::from(child)));
    assert_ne!(open.int(attr::PROCESS_PARENT_PID), open.int(attr::PROCESS_PID));
    assert_eq!(close.int(attr::PROCESS_PID), Some(i64::from(child)));
    assert_eq!(close.str(attr::CONNECTION_ID), open.str(attr::CONNECTION_ID));
    let ms = close.int(attr::SESSION_DURATION_MS).unwrap();
    assert!((1_000..1_500).contains(&ms), "{ms}");
    assert_ne!(open.str(attr::RECORD_UID), close.str(attr::RECORD_UID));
    assert!(open.body.starts_with("sl-alice opened a session from 127.0.0.1 port "), "{}", open.body);
}

#[test]
fn pty_session_names_its_tty_at_close() {
    let ev = replay("pam-pty-session");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    assert!(ev[1].str(attr::TTY).is_some_and(|t| t.starts_with("/dev/pts/")), "{:?}", ev[1].str(attr::TTY));
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
    let records = fixture_records("pam-kbdint-fail");
    let ev = run(records.clone());
    assert_eq!(names(&ev), [AuthFailure]);
    assert_eq!(ev[0].str(attr::AUTH_METHOD), Some("keyboard-interactive"));
    assert_eq!(ev[0].str(attr::USER_NAME), Some("sl-bob"));
    // Reported against the monitor, not the PAM child that sent USER_AUTH.
    let auth =
        decode(&records[position(&records, |r| matches!(r, Record::Audit { audit, .. } if audit.msg_type == 1100))])
            .unwrap();
    assert_ne!(ev[0].int(attr::PROCESS_PID), Some(i64::from(auth.meta().pid)));
    let monitor = decode(&records[0]).unwrap();
    let Record::Fork { child, .. } = monitor else { panic!("the capture starts with the listener's fork") };
    assert_eq!(ev[0].int(attr::PROCESS_PID), Some(i64::from(child)));
}

/// The first report: with AuthorizedKeysCommandUser nobody, each
/// refused key forks a helper that drops to nobody and execs the command.
/// That drop is no session, with PAM or without.
#[test]
fn an_authorized_keys_command_helper_is_no_session() {
    for fixture in ["pam-akc-refused-then-login", "nopam-akc-refused-then-login"] {
        let ev = replay(fixture);
        assert_eq!(names(&ev), [AuthFailure, SessionOpen, SessionClose], "{fixture}");
        for e in &ev {
            assert_eq!(e.str(attr::USER_NAME), Some("sl-alice"), "{fixture}: {e:?}");
            assert_eq!(e.str(attr::USER_ID), Some("1001"), "{fixture}: {e:?}");
        }
        let records = fixture_records(fixture);
        let drop = &records[position(&records, |r| matches!(r, Record::Setresuid { uid: 1001, .. }))];
        assert_eq!(ev[1].int(attr::PROCESS_PID), Some(i64::from(decode(drop).unwrap().meta().pid)), "{fixture}");
    }
}

/// Without PAM, a child forked after authentication that drops and then
/// execs something else is a helper too.
#[test]
fn a_drop_followed_by_an_exec_is_no_session() {
    let mut records = fixture_records("nopam-key-login");
    let at = position(&records, |r| matches!(r, Record::Setresuid { uid: 1003, .. }));
    let mut exec = records[at].clone();
    exec.truncate(layout::HEADER_SIZE);
    exec[..4].copy_from_slice(&kind::EXEC.to_ne_bytes());
    exec.extend_from_slice(&sshlogin_common::exec::LEFT.to_ne_bytes());
    exec.extend_from_slice(&[0; 4]);
    records.insert(at + 1, exec);
    // The child's exit is not a member's any more.
    let child = decode(&records[at]).unwrap().meta().pid;
    records.retain(|r| !matches!(decode(r), Ok(Record::Exit { meta }) if meta.pid == child));
    assert_eq!(names(&run(records)), Vec::<EventName>::new());
}

#[test]
fn a_daemonizing_sshd_started_after_the_daemon() {
    // sshd without -D: exec, fork, the first process exits, the child
    // listens. Its first child is a listener, not a connection.
    let ev = replay("pam-daemonizing-sshd");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    assert_eq!(ev[0].str(attr::USER_NAME), Some("sl-alice"));
    assert_eq!(ev[0].str(attr::USER_ID), Some("1001"));
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
    let user_start = position(&records, |r| matches!(r, Record::Audit { audit, .. } if audit.msg_type == 1105));
    assert_eq!(names(&run(records.into_iter().take(user_start + 1))), [SessionOpen]);
}

/// The sshd tree of pam-key-login.hex as /proc shows it to a daemon that
/// starts in the middle of the session.
struct MidSession {
    listener: u32,
    monitor: u32,
    child: u32,
}

impl super::process::ProcView for MidSession {
    fn parent(&self, pid: u32) -> Option<(u32, String)> {
        if pid == self.monitor {
            Some((self.listener, "sshd".into()))
        } else if pid == self.child {
            Some((self.monitor, "sshd".into()))
        } else if pid == self.listener {
            Some((1, "init".into()))
        } else {
            None
        }
    }
    fn start_ns(&self, _pid: u32) -> Option<u64> {
        None
    }
}

#[test]
fn a_session_opened_before_the_daemon_started_still_closes() {
    let records = fixture_records("pam-key-login");
    // Everything up to and including the session child's privilege drop
    // happened before the (re)start.
    let drop_at = position(&records, |r| matches!(r, Record::Setresuid { uid: 1001, .. }));
    let Ok(Record::Fork { meta, child: monitor }) = decode(&records[0]) else { panic!() };
    let child = decode(&records[drop_at]).unwrap().meta().pid;
    let view = MidSession { listener: meta.pid, monitor, child };
    let mut pipeline = pipeline(Box::new(view), Metrics::new());
    let mut events = Vec::new();
    pipeline.records(records.into_iter().skip(drop_at + 1), &mut events);
    pipeline.finish(&mut events);
    assert_eq!(names(&events), [SessionClose]);
    assert_eq!(events[0].str(attr::USER_NAME), Some("sl-alice"));
    assert_eq!(events[0].str(attr::CLIENT_ADDRESS), Some("127.0.0.1"));
    assert_eq!(events[0].int(attr::SESSION_DURATION_MS), None, "the daemon cannot know how long it lasted");
}

#[test]
fn openssh_10_layout_from_real_captures() {
    // sshd (listener) -> sshd-session (monitor) -> sshd-auth (pre-auth, drops
    // to its own uid, 997 in that root) and the session child.
    for fixture in ["openssh10-key-login", "openssh10-nopam-key-login"] {
        let ev = replay(fixture);
        assert_eq!(names(&ev), [SessionOpen, SessionClose], "{fixture}");
        assert_eq!(ev[0].str(attr::USER_NAME), Some("sl-alice"));
        assert_eq!(ev[0].str(attr::USER_ID), Some("1001"));
        assert_eq!(ev[0].str(attr::AUTH_METHOD), Some("publickey"));
        assert!(ev[1].int(attr::SESSION_DURATION_MS).unwrap() >= 500);
    }
    assert_eq!(replay("openssh10-key-login")[0].str(attr::PROCESS_EXE), Some("/usr/lib/openssh/sshd-session"));
}

// Editing records as lost records and pid reuse would leave them.

fn u32_at(r: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(r[at..at + 4].try_into().unwrap())
}

fn put_u32(r: &mut [u8], at: usize, v: u32) {
    r[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// Moves a capture `by` nanoseconds later and renames `from` to `to`
/// wherever it is a sender or a forked child.
fn edit(records: &[Vec<u8>], by: u64, renames: &[(u32, u32)]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let t = u64::from_ne_bytes(r[24..32].try_into().unwrap()) + by;
            r[24..32].copy_from_slice(&t.to_ne_bytes());
            for &(from, to) in renames {
                if u32_at(&r, 4) == from {
                    put_u32(&mut r, 4, to);
                    put_u32(&mut r, 8, to);
                }
                if u32_at(&r, 0) == kind::FORK && u32_at(&r, layout::HEADER_SIZE) == from {
                    put_u32(&mut r, layout::HEADER_SIZE, to);
                }
            }
            r
        })
        .collect()
}

fn is_exit_of(r: &[u8], pid: u32) -> bool {
    matches!(decode(r), Ok(Record::Exit { meta }) if meta.pid == pid)
}

fn monitor_of_capture(records: &[Vec<u8>]) -> u32 {
    match decode(&records[0]) {
        Ok(Record::Fork { child, .. }) => child,
        other => panic!("a capture starts with the listener's fork, not {other:?}"),
    }
}

#[test]
fn a_reused_monitor_pid_starts_a_new_connection() {
    // The first login's monitor exit and PAM close were lost; the pid comes
    // back as the monitor of another login.
    let first = fixture_records("pam-key-login");
    let m = monitor_of_capture(&first);
    let lost: Vec<Vec<u8>> = first
        .iter()
        .filter(|r| {
            !is_exit_of(r, m) && !matches!(decode(r), Ok(Record::Audit { audit, .. }) if audit.msg_type == 1106)
        })
        .cloned()
        .collect();
    let second = fixture_records("pam-password-fail-then-ok");
    // Its second connection (the good password) takes the first's pids.
    let second_at = position(&second, |r| matches!(r, Record::Audit { audit, .. } if audit.msg_type == 1101));
    let m2 = decode(&second[second_at]).unwrap().meta().pid;
    let start = second.iter().position(|r| matches!(decode(r), Ok(Record::Fork { child, .. }) if child == m2)).unwrap();
    let second = edit(&second[start..], 10_000_000_000_000, &[(m2, m)]);
    let ev = run(lost.into_iter().chain(second));
    assert_eq!(names(&ev), [SessionOpen, SessionClose, SessionOpen, SessionClose]);
    assert_eq!(ev[1].str(attr::USER_NAME), Some("sl-alice"), "the lost connection ended when its pid came back");
    assert_eq!(ev[1].str(attr::CONNECTION_ID), ev[0].str(attr::CONNECTION_ID));
    assert_eq!(ev[2].str(attr::USER_NAME), Some("sl-bob"));
    assert_eq!(ev[3].str(attr::USER_NAME), Some("sl-bob"));
    assert_ne!(ev[2].str(attr::CONNECTION_ID), ev[0].str(attr::CONNECTION_ID), "a new connection, a new id");
}

/// A connect record as the kernel half writes it.
fn connect(like: &[u8], pid: u32, fd: u32, addr: std::net::SocketAddr) -> Vec<u8> {
    let mut r = vec![0u8; layout::CONNECT_SIZE];
    r[..layout::HEADER_SIZE].copy_from_slice(&like[..layout::HEADER_SIZE]);
    put_u32(&mut r, 0, kind::CONNECT);
    put_u32(&mut r, 4, pid);
    put_u32(&mut r, 8, pid);
    put_u32(&mut r, 12, 1001);
    r[24..32].copy_from_slice(&(u64::from_ne_bytes(like[24..32].try_into().unwrap()) + 1).to_ne_bytes());
    put_u32(&mut r, layout::CONNECT_FD, fd);
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
    // Stop right after the session child dropped to sl-alice.
    let drop_at = position(&records, |r| matches!(r, Record::Setresuid { uid: 1001, .. }));
    let child = decode(&records[drop_at]).unwrap().meta().pid;
    let mut pipeline = pipeline(Box::new(NoProc), Metrics::new());
    let mut events = Vec::new();
    pipeline.records(records.iter().take(drop_at + 1).cloned(), &mut events);
    let like = &records[drop_at];
    let at = |s: &str| s.parse().unwrap();
    pipeline.records(
        [
            connect(like, child, 5, at("10.0.0.9:0")),
            connect(like, child, 6, at("10.213.2.2:22")),
            // A socket whose type nobody can tell any more, to port 53: a
            // resolver's, far likelier than a forward.
            connect(like, child, 7, at("10.0.0.53:53")),
            // Not the session child: no process of this session.
            connect(like, child + 1000, 8, at("10.213.2.2:2222")),
        ],
        &mut events,
    );
    assert_eq!(names(&events), [SessionOpen, Forward], "only the session child forwards");
    let f = &events[1];
    assert_eq!(f.str(attr::FORWARD_ADDRESS), Some("10.213.2.2"));
    assert_eq!(f.int(attr::FORWARD_PORT), Some(22));
    assert_eq!(f.str(attr::USER_NAME), Some("sl-alice"));
    assert_eq!(f.str(attr::CONNECTION_ID), events[0].str(attr::CONNECTION_ID));
    assert_eq!(f.int(attr::PROCESS_PID), Some(i64::from(child)));
    assert!(f.body.starts_with("sl-alice forwarded a connection to 10.213.2.2 port 22"), "{}", f.body);
}

/// What /proc says of sockets: this one is TCP.
struct TcpSockets;

impl super::process::ProcView for TcpSockets {
    fn parent(&self, _pid: u32) -> Option<(u32, String)> {
        None
    }
    fn start_ns(&self, _pid: u32) -> Option<u64> {
        None
    }
    fn is_udp(&self, _pid: u32, _fd: u32) -> Option<bool> {
        Some(false)
    }
}

#[test]
fn a_tcp_forward_to_port_53_is_a_forward() {
    let records = fixture_records("pam-key-login");
    let drop_at = position(&records, |r| matches!(r, Record::Setresuid { uid: 1001, .. }));
    let child = decode(&records[drop_at]).unwrap().meta().pid;
    let mut pipeline = pipeline(Box::new(TcpSockets), Metrics::new());
    let mut events = Vec::new();
    pipeline.records(records.iter().take(drop_at + 1).cloned(), &mut events);
    pipeline.records([connect(&records[drop_at], child, 5, "192.0.2.53:53".parse().unwrap())], &mut events);
    assert_eq!(names(&events), [SessionOpen, Forward]);
    assert_eq!(events[1].int(attr::FORWARD_PORT), Some(53));
}

#[test]
fn a_stale_child_pid_reused_by_another_session_is_that_session_s() {
    // sl-alice's session child's exit was lost; its pid comes back as the
    // session child of sl-bob's login, which then forwards.
    let alice = fixture_records("pam-key-login");
    let alice_child =
        decode(&alice[position(&alice, |r| matches!(r, Record::Setresuid { uid: 1001, .. }))]).unwrap().meta().pid;
    let alice: Vec<Vec<u8>> = alice.into_iter().filter(|r| !is_exit_of(r, alice_child)).collect();
    let bob = fixture_records("pam-password-fail-then-ok");
    let bob_drop = position(&bob, |r| matches!(r, Record::Setresuid { uid: 1002, .. }));
    let bob_child = decode(&bob[bob_drop]).unwrap().meta().pid;
    let bob = edit(&bob[..=bob_drop], 10_000_000_000_000, &[(bob_child, alice_child)]);
    let forward = connect(bob.last().unwrap(), alice_child, 5, "10.213.2.2:22".parse().unwrap());
    let ev = run(alice.into_iter().chain(bob).chain([forward]));
    let forwards: Vec<&Event> = ev.iter().filter(|e| e.name == Forward).collect();
    assert_eq!(forwards.len(), 1, "{:?}", names(&ev));
    assert_eq!(forwards[0].str(attr::USER_NAME), Some("sl-bob"));
    let bob_open = ev.iter().find(|e| e.name == SessionOpen && e.str(attr::USER_NAME) == Some("sl-bob")).unwrap();
    assert_eq!(forwards[0].str(attr::CONNECTION_ID), bob_open.str(attr::CONNECTION_ID));
}

#[test]
fn a_preauth_flood_evicts_the_oldest_attempts_never_an_open_session() {
    use super::conn::MAX_CONNS;
    let records = fixture_records("pam-key-login");
    let drop_at = position(&records, |r| matches!(r, Record::Setresuid { uid: 1001, .. }));
    let listener_fork = &records[0];
    // Connections that never get anywhere: the listener forks a monitor for
    // each (unauthenticated clients holding their connections open).
    let flood = (0..MAX_CONNS as u32 + 100).map(|i| {
        let mut r = listener_fork.clone();
        put_u32(&mut r, layout::HEADER_SIZE, 100_000 + i);
        let t = u64::from_ne_bytes(r[24..32].try_into().unwrap()) + 1_000_000 + u64::from(i);
        r[24..32].copy_from_slice(&t.to_ne_bytes());
        r
    });
    let metrics = Metrics::new();
    let mut pipeline = pipeline(Box::new(NoProc), metrics.clone());
    let mut events = Vec::new();
    pipeline.records(records.iter().take(drop_at + 1).cloned(), &mut events);
    pipeline.records(flood, &mut events);
    pipeline.records(records.iter().skip(drop_at + 1).cloned(), &mut events);
    pipeline.finish(&mut events);
    assert_eq!(names(&events), [SessionOpen, SessionClose], "the open session was kept whole");
    assert!(events[1].int(attr::SESSION_DURATION_MS).is_some());
    assert!(metrics.evicted_count(crate::metrics::Table::Connections) >= (MAX_CONNS / 8) as u64);
}
