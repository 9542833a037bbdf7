//! The correlator against captures of real sshd runs
//! (tests/fixtures/captures, recorded by record.sh there), and against
//! those captures edited the way lost records and reused pids would leave
//! them.

use sshlogin_common::{kind, layout};
use uuid::Uuid;

use crate::{
    admit::TrustCapture,
    capture,
    correlate::{
        Settings,
        process::{NoProc, ProcView},
    },
    decode::{Record, decode},
    enrich::UserDb,
    event::{Event, FailureReason, Kind},
    host::SystemClock,
    metrics::Metrics,
    otel::EventName,
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
    Settings {
        boot_id: Uuid::nil(),
        family: vec!["sshd".into(), "sshd-session".into(), "sshd-auth".into()],
        activity: Default::default(),
    }
}

fn pipeline(view: Box<dyn ProcView + Send>, metrics: std::sync::Arc<Metrics>) -> Pipeline<FixtureUsers> {
    Pipeline::new(
        settings(),
        Default::default(),
        view,
        Box::new(TrustCapture),
        FixtureUsers,
        Box::new(SystemClock),
        metrics,
    )
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
    run(capture::fixture(fixture))
}

fn names(events: &[Event]) -> Vec<EventName> {
    events.iter().map(|e| EventName::of(&e.kind)).collect()
}

fn duration(e: &Event) -> Option<u64> {
    match e.kind {
        Kind::SessionClose { duration_ms } => duration_ms,
        _ => None,
    }
}

fn reason(e: &Event) -> Option<FailureReason> {
    match e.kind {
        Kind::AuthFailure { reason } => Some(reason),
        _ => None,
    }
}

fn forward_to(e: &Event) -> Option<std::net::SocketAddr> {
    match e.kind {
        Kind::Forward { to, .. } => Some(to),
        _ => None,
    }
}

use EventName::{AuthFailure, Forward, SessionClose, SessionOpen};

#[test]
fn key_login_and_logout() {
    let ev = replay("pam-key-login");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    let (open, close) = (&ev[0], &ev[1]);
    assert_eq!(open.user.as_deref(), Some("sl-alice"));
    assert_eq!(open.uid, Some(1001));
    assert_eq!(open.client_address.map(|a| a.to_string()).as_deref(), Some("127.0.0.1"));
    assert!(open.client_port.is_some());
    assert_eq!(open.auth_method.as_deref(), Some("publickey"));
    assert_eq!(open.key.as_ref().map(|k| k.key_type.as_str()), Some("ED25519"));
    assert!(open.key.as_ref().map(|k| k.fingerprint.as_str()).unwrap().starts_with("SHA256:"));
    assert_eq!(open.terminal.as_deref(), Some("ssh"));
    assert_eq!(open.process.exe.as_deref(), Some("/usr/sbin/sshd"));
    // The session child (the one that dropped to 1001), under the monitor.
    let records = capture::fixture("pam-key-login");
    let drop = &records[position(&records, |r| matches!(r, Record::Setresuid { uid: 1001, .. }))];
    let child = decode(drop).unwrap().meta().pid;
    assert_eq!(Some(open.process.pid), Some(child));
    assert_ne!(open.process.parent_pid, Some(open.process.pid));
    assert_eq!(Some(close.process.pid), Some(child));
    assert_eq!(close.connection_id, open.connection_id);
    let ms = duration(close).unwrap();
    assert!((1_000..1_500).contains(&ms), "{ms}");
    assert_ne!(open.record_uid, close.record_uid);
    assert!(
        crate::otel::describe(open).starts_with("sl-alice opened a session from 127.0.0.1 port "),
        "{}",
        crate::otel::describe(open)
    );
}

#[test]
fn pty_session_names_its_tty_at_close() {
    let ev = replay("pam-pty-session");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    assert!(ev[1].tty.as_deref().is_some_and(|t| t.starts_with("/dev/pts/")), "{:?}", ev[1].tty.as_deref());
    assert_eq!(ev[1].terminal.as_deref(), Some("ssh"));
}

#[test]
fn without_pam_the_session_child_opens_and_closes() {
    let ev = replay("nopam-key-login");
    assert_eq!(names(&ev), [SessionOpen, SessionClose]);
    assert_eq!(ev[0].uid, Some(1003));
    assert_eq!(ev[0].user.as_deref(), Some("sl-carol"));
    assert_eq!(ev[0].terminal.as_deref(), None);
    assert!(duration(&ev[1]).unwrap() >= 500);
}

/// One rejected attempt is one failure, whatever records describe it.
#[test]
fn each_rejected_attempt_is_one_failure() {
    let cases = [
        ("pam-wrong-key", "sl-alice", Some(1001), None, FailureReason::AuthFailed),
        ("pam-invalid-user", "sl-nosuch", None, None, FailureReason::InvalidUser),
        ("pam-invalid-user-password", "sl-nosuch", None, Some("password"), FailureReason::InvalidUser),
    ];
    for (fixture, user, uid, method, why) in cases {
        let ev = replay(fixture);
        assert_eq!(names(&ev), [AuthFailure], "{fixture}");
        assert_eq!((ev[0].user.as_deref(), ev[0].uid), (Some(user), uid), "{fixture}");
        if method.is_some() {
            assert_eq!(ev[0].auth_method.as_deref(), method, "{fixture}");
        }
        assert_eq!(reason(&ev[0]), Some(why), "{fixture}");
    }
}

#[test]
fn wrong_password_then_a_good_one() {
    let ev = replay("pam-password-fail-then-ok");
    assert_eq!(names(&ev), [AuthFailure, SessionOpen, SessionClose]);
    assert_eq!(reason(&ev[0]), Some(FailureReason::WrongPassword));
    assert_eq!(ev[0].terminal.as_deref(), Some("ssh"), "PAM's terminal wins over sshd's label");
    assert_ne!(ev[0].connection_id, ev[1].connection_id);
    assert_eq!(ev[1].auth_method.as_deref(), Some("password"));
    assert_eq!(ev[1].before.failures, Some(1), "the open says a failure from its address came first");
    assert_eq!(ev[1].before.failure_users, [ev[0].user.clone().unwrap()]);
    assert_eq!(ev[2].before.failures, None, "only the open carries it");
}

#[test]
fn keyboard_interactive_failure_from_the_pam_child() {
    let records = capture::fixture("pam-kbdint-fail");
    let ev = run(records.clone());
    assert_eq!(names(&ev), [AuthFailure]);
    assert_eq!(ev[0].auth_method.as_deref(), Some("keyboard-interactive"));
    assert_eq!(ev[0].user.as_deref(), Some("sl-bob"));
    // Reported against the monitor, not the PAM child that sent USER_AUTH.
    let auth =
        decode(&records[position(&records, |r| matches!(r, Record::Audit { audit, .. } if audit.msg_type == 1100))])
            .unwrap();
    assert_ne!(Some(ev[0].process.pid), Some(auth.meta().pid));
    let monitor = decode(&records[0]).unwrap();
    let Record::Fork { child, .. } = monitor else { panic!("the capture starts with the listener's fork") };
    assert_eq!(Some(ev[0].process.pid), Some(child));
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
            assert_eq!(e.user.as_deref(), Some("sl-alice"), "{fixture}: {e:?}");
            assert_eq!(e.uid, Some(1001), "{fixture}: {e:?}");
        }
        let records = capture::fixture(fixture);
        let drop = &records[position(&records, |r| matches!(r, Record::Setresuid { uid: 1001, .. }))];
        assert_eq!(Some(ev[1].process.pid), Some(decode(drop).unwrap().meta().pid), "{fixture}");
    }
}

/// Without PAM, a child forked after authentication that drops and then
/// execs something else is a helper too.
#[test]
fn a_drop_followed_by_an_exec_is_no_session() {
    let mut records = capture::fixture("nopam-key-login");
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
    assert_eq!(ev[0].user.as_deref(), Some("sl-alice"));
    assert_eq!(ev[0].uid, Some(1001));
}

#[test]
fn replays_are_deterministic() {
    let a = replay("pam-key-login");
    let b = replay("pam-key-login");
    assert_eq!(a[0].record_uid, b[0].record_uid);
}

#[test]
fn a_truncated_capture_still_reports_what_it_can() {
    // Cut right after USER_START: the session child, the close and the
    // monitor's exit were never seen. Finishing still reports the open.
    let records = capture::fixture("pam-key-login");
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
    let records = capture::fixture("pam-key-login");
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
    assert_eq!(events[0].user.as_deref(), Some("sl-alice"));
    assert_eq!(events[0].client_address.map(|a| a.to_string()).as_deref(), Some("127.0.0.1"));
    assert_eq!(duration(&events[0]), None, "the daemon cannot know how long it lasted");
}

#[test]
fn openssh_10_layout_from_real_captures() {
    // sshd (listener) -> sshd-session (monitor) -> sshd-auth (pre-auth, drops
    // to its own uid, 997 in that root) and the session child.
    for fixture in ["openssh10-key-login", "openssh10-nopam-key-login"] {
        let ev = replay(fixture);
        assert_eq!(names(&ev), [SessionOpen, SessionClose], "{fixture}");
        assert_eq!(ev[0].user.as_deref(), Some("sl-alice"));
        assert_eq!(ev[0].uid, Some(1001));
        assert_eq!(ev[0].auth_method.as_deref(), Some("publickey"));
        assert!(duration(&ev[1]).unwrap() >= 500);
    }
    assert_eq!(replay("openssh10-key-login")[0].process.exe.as_deref(), Some("/usr/lib/openssh/sshd-session"));
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
    let first = capture::fixture("pam-key-login");
    let m = monitor_of_capture(&first);
    let lost: Vec<Vec<u8>> = first
        .iter()
        .filter(|r| {
            !is_exit_of(r, m) && !matches!(decode(r), Ok(Record::Audit { audit, .. }) if audit.msg_type == 1106)
        })
        .cloned()
        .collect();
    let second = capture::fixture("pam-password-fail-then-ok");
    // Its second connection (the good password) takes the first's pids.
    let second_at = position(&second, |r| matches!(r, Record::Audit { audit, .. } if audit.msg_type == 1101));
    let m2 = decode(&second[second_at]).unwrap().meta().pid;
    let start = second.iter().position(|r| matches!(decode(r), Ok(Record::Fork { child, .. }) if child == m2)).unwrap();
    let second = edit(&second[start..], 10_000_000_000_000, &[(m2, m)]);
    let ev = run(lost.into_iter().chain(second));
    assert_eq!(names(&ev), [SessionOpen, SessionClose, SessionOpen, SessionClose]);
    assert_eq!(ev[1].user.as_deref(), Some("sl-alice"), "the lost connection ended when its pid came back");
    assert_eq!(ev[1].connection_id, ev[0].connection_id);
    assert_eq!(ev[2].user.as_deref(), Some("sl-bob"));
    assert_eq!(ev[3].user.as_deref(), Some("sl-bob"));
    assert_ne!(ev[2].connection_id, ev[0].connection_id, "a new connection, a new id");
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

/// A key login replayed up to its session child's drop to sl-alice: the
/// pipeline, the events so far, the drop record and the child's pid.
fn up_to_the_session_child(view: Box<dyn ProcView + Send>) -> (Pipeline<FixtureUsers>, Vec<Event>, Vec<u8>, u32) {
    let records = capture::fixture("pam-key-login");
    let drop_at = position(&records, |r| matches!(r, Record::Setresuid { uid: 1001, .. }));
    let child = decode(&records[drop_at]).unwrap().meta().pid;
    let mut pipeline = pipeline(view, Metrics::new());
    let mut events = Vec::new();
    pipeline.records(records.iter().take(drop_at + 1).cloned(), &mut events);
    (pipeline, events, records[drop_at].clone(), child)
}

#[test]
fn a_session_child_connecting_onward_is_a_forward_but_dns_is_not() {
    let (mut pipeline, mut events, like, child) = up_to_the_session_child(Box::new(NoProc));
    let like = &like;
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
    assert_eq!(forward_to(f).map(|a| a.ip().to_string()).as_deref(), Some("10.213.2.2"));
    assert_eq!(forward_to(f).map(|a| a.port()), Some(22));
    assert_eq!(f.user.as_deref(), Some("sl-alice"));
    assert_eq!(f.connection_id, events[0].connection_id);
    assert_eq!(Some(f.process.pid), Some(child));
    assert!(
        crate::otel::describe(f).starts_with("sl-alice forwarded a connection to 10.213.2.2 port 22"),
        "{}",
        crate::otel::describe(f)
    );
}

/// What /proc says of sockets: this one is TCP.
struct TcpSockets;

impl ProcView for TcpSockets {
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
    let (mut pipeline, mut events, like, child) = up_to_the_session_child(Box::new(TcpSockets));
    pipeline.records([connect(&like, child, 5, "192.0.2.53:53".parse().unwrap())], &mut events);
    assert_eq!(names(&events), [SessionOpen, Forward]);
    assert_eq!(forward_to(&events[1]).map(|a| a.port()), Some(53));
}

#[test]
fn a_stale_child_pid_reused_by_another_session_is_that_session_s() {
    // sl-alice's session child's exit was lost; its pid comes back as the
    // session child of sl-bob's login, which then forwards.
    let alice = capture::fixture("pam-key-login");
    let alice_child =
        decode(&alice[position(&alice, |r| matches!(r, Record::Setresuid { uid: 1001, .. }))]).unwrap().meta().pid;
    let alice: Vec<Vec<u8>> = alice.into_iter().filter(|r| !is_exit_of(r, alice_child)).collect();
    let bob = capture::fixture("pam-password-fail-then-ok");
    let bob_drop = position(&bob, |r| matches!(r, Record::Setresuid { uid: 1002, .. }));
    let bob_child = decode(&bob[bob_drop]).unwrap().meta().pid;
    let bob = edit(&bob[..=bob_drop], 10_000_000_000_000, &[(bob_child, alice_child)]);
    let forward = connect(bob.last().unwrap(), alice_child, 5, "10.213.2.2:22".parse().unwrap());
    let ev = run(alice.into_iter().chain(bob).chain([forward]));
    let forwards: Vec<&Event> = ev.iter().filter(|e| matches!(e.kind, Kind::Forward { .. })).collect();
    assert_eq!(forwards.len(), 1, "{:?}", names(&ev));
    assert_eq!(forwards[0].user.as_deref(), Some("sl-bob"));
    let bob_open = ev.iter().find(|e| e.kind == Kind::SessionOpen && e.user.as_deref() == Some("sl-bob")).unwrap();
    assert_eq!(forwards[0].connection_id, bob_open.connection_id);
}

#[test]
fn a_preauth_flood_evicts_the_oldest_attempts_never_an_open_session() {
    use super::conn::MAX_CONNS;
    let records = capture::fixture("pam-key-login");
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
    assert!(duration(&events[1]).is_some());
    assert!(metrics.evicted_count(crate::metrics::Table::Connections) >= (MAX_CONNS / 8) as u64);
}
