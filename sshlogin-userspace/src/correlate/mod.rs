//! Records to events, per sshd connection. The connection is named by its
//! monitor process, which sends the audit records and log lines of that
//! connection; its session child drops to the user; its exit ends it.
//!
//! A session opens on PAM's USER_START `op=PAM:session_open res=success` and
//! is reported once the session child has dropped privileges (so the event
//! names that child); without PAM the child's privilege drop alone opens it.
//! It closes on USER_END or, without PAM, when the session child exits; the
//! monitor's exit closes whatever is still open.

mod attempt;
pub mod process;
pub mod procfs;
mod socket;
#[cfg(test)]
mod tests;

use std::{borrow::Cow, net::SocketAddr};

use attempt::{Attempt, Fact, Source};
use process::{PidMap, ProcView, ProcessTable};
use uuid::Uuid;

use crate::{
    decode::{
        Meta, Record,
        audit::{AuditMessage, types},
        syslog::{KeyInfo, Peer, SshdMessage, UserState},
    },
    event::{Event, EventName, attr},
};

/// A session opened by PAM waits this long for its session child before it
/// is reported without one.
const OPEN_WAIT_NS: u64 = 1_000_000_000;
/// An attempt not completed by sshd's USER_LOGIN (sshd built without audit
/// support) is reported after this much quiet, if neither the next attempt
/// nor the end of the connection reported it first. Far longer than PAM's
/// 2 s delay between USER_AUTH and sshd's "Failed password" line, which a
/// login storm on a busy host stretches.
const ATTEMPT_WAIT_NS: u64 = 30_000_000_000;
const MAX_CONNS: usize = 1 << 16;

pub struct Settings {
    /// sshd's privilege-separation user's uid: its privilege drop is not a login.
    pub privsep_uid: Option<u32>,
    /// Namespace of connection ids: this boot.
    pub boot_id: Uuid,
    /// The sshd family's process names.
    pub family: Vec<String>,
    /// The sshd binaries; a record from any other executable is refused.
    pub sshd_paths: Vec<String>,
}

#[derive(Clone, Debug, Default)]
enum Session {
    #[default]
    None,
    /// PAM opened it; the session child has not dropped privileges yet.
    Pending {
        ktime_ns: u64,
        terminal: Option<String>,
    },
    Open {
        ktime_ns: u64,
        child: Option<u32>,
        pam: bool,
        terminal: Option<String>,
    },
    Closed,
}

#[derive(Default)]
struct Conn {
    monitor: u32,
    id: String,
    peer: Option<Peer>,
    /// Client address from audit records (no port there).
    addr: Option<String>,
    user: Option<String>,
    uid: Option<u32>,
    method: Option<String>,
    key: Option<KeyInfo>,
    exe: Option<String>,
    /// A user name the client gave, valid or not, as the close line names it.
    named_user: Option<String>,
    invalid_user: Option<String>,
    /// The pseudo-terminal sshd allocated (its USER_LOGIN `res=success`).
    tty: Option<String>,
    /// (server, client) ends of the connection, from the monitor's socket.
    socket: Option<(SocketAddr, SocketAddr)>,
    /// The session's audit login uid and session id.
    audit_ids: (Option<u32>, Option<u32>),
    attempt: Option<Attempt>,
    failures: u32,
    session: Session,
}

pub struct Correlator {
    procs: ProcessTable,
    conns: PidMap<Conn>,
    settings: Settings,
    /// Records refused because their process, or its listener, is not an
    /// sshd binary; taken by the caller for its metrics.
    pub refused: u64,
}

impl Correlator {
    pub fn new(settings: Settings, view: Box<dyn ProcView + Send>) -> Self {
        Correlator {
            procs: ProcessTable::new(settings.family.clone(), view),
            conns: PidMap::default(),
            settings,
            refused: 0,
        }
    }

    /// Takes one record; pushes the events it completes.
    pub fn handle(&mut self, record: Record, out: &mut Vec<Event>) {
        if let Record::Audit { meta, .. } | Record::Syslog { meta, .. } | Record::Setresuid { meta, .. } = &record
            && !self.runs_sshd(meta.pid)
        {
            self.refused += 1;
            tracing::warn!(pid = meta.pid, comm = %meta.comm, "refused a record from a process that is not sshd");
            return;
        }
        match record {
            Record::Fork { meta, child } => {
                self.procs.on_fork(meta.pid, child, meta.ktime_ns);
                // A listener forked a monitor: note the connection now, while
                // its socket surely exists (a rejected client may be gone by
                // the time its first audit record is read).
                if self.procs.monitor_of(child) == Some(child) {
                    self.conn(child, meta.ktime_ns);
                }
            }
            Record::Exit { meta } => self.on_exit(&meta, out),
            Record::Setresuid { meta, uid } => self.on_setresuid(&meta, uid, out),
            Record::Audit { meta, audit } => self.on_audit(&meta, &audit, out),
            Record::Syslog { meta, line } => self.on_syslog(&meta, line.parsed, out),
            Record::Connect { meta, fd, addr } => self.on_connect(&meta, fd, addr, out),
        }
    }

    /// Reports what has waited long enough; `now_ns` is CLOCK_BOOTTIME.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let monitors: Vec<u32> = self.conns.keys().copied().collect();
        for m in monitors {
            let Some(conn) = self.conns.get_mut(&m) else { continue };
            if conn.attempt.as_ref().is_some_and(|a| now_ns.saturating_sub(a.last_ns) >= ATTEMPT_WAIT_NS) {
                self.flush_attempt(m, out);
            }
            if let Some(Session::Pending { ktime_ns, .. }) = self.conns.get(&m).map(|c| &c.session)
                && now_ns.saturating_sub(*ktime_ns) >= OPEN_WAIT_NS
            {
                self.open(m, None, None, out);
            }
        }
        self.procs.gc(now_ns);
        if self.conns.len() > MAX_CONNS {
            // Only if monitor exits were lost: forget connections at random
            // rather than grow without bound.
            let extra: Vec<u32> = self.conns.keys().copied().take(self.conns.len() - MAX_CONNS / 2).collect();
            tracing::warn!(forgotten = extra.len(), "too many open connections tracked; forgetting some");
            for m in extra {
                self.conns.remove(&m);
            }
        }
    }

    /// When (CLOCK_BOOTTIME ns) the next timer of [`Correlator::tick`] is due,
    /// if any is pending.
    pub fn next_due(&self) -> Option<u64> {
        self.conns
            .values()
            .flat_map(|c| {
                let attempt = c.attempt.as_ref().map(|a| a.last_ns.saturating_add(ATTEMPT_WAIT_NS));
                let open = match c.session {
                    Session::Pending { ktime_ns, .. } => Some(ktime_ns.saturating_add(OPEN_WAIT_NS)),
                    _ => None,
                };
                [attempt, open]
            })
            .flatten()
            .min()
    }

    /// Reports everything still pending (at shutdown or the end of a replay).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.tick(u64::MAX, out);
    }

    /// Whether `pid` and its listener run sshd binaries, as far as /proc
    /// can still tell (a process that is gone is not held against it: only
    /// root gets this far, and root is trusted).
    fn runs_sshd(&mut self, pid: u32) -> bool {
        let allowed = |exe: &str| self.settings.sshd_paths.iter().any(|p| p == exe);
        if !self.procs.exe(pid).is_none_or(|exe| allowed(&exe)) {
            return false;
        }
        match self.procs.listener_of(pid) {
            Some(l) if l != pid => self.procs.exe(l).is_none_or(|exe| allowed(&exe)),
            _ => true,
        }
    }

    fn conn(&mut self, monitor: u32, ktime_ns: u64) -> &mut Conn {
        if !self.conns.contains_key(&monitor) {
            let start = self.procs.start_ns(monitor).unwrap_or(ktime_ns);
            let id = Uuid::new_v5(&self.settings.boot_id, format!("conn/{monitor}/{start}").as_bytes()).to_string();
            // While the monitor lives, its socket names both ends.
            let socket = self.procs.tcp_connection(monitor);
            self.conns.insert(monitor, Conn { monitor, id, socket, ..Conn::default() });
        }
        self.conns.get_mut(&monitor).expect("inserted above")
    }

    /// A session's process connected somewhere: a forward, unless it is a
    /// name look-up (UDP, port 53) or glibc probing a source address
    /// (a UDP connect to port 0).
    fn on_connect(&mut self, meta: &Meta, fd: u32, addr: SocketAddr, out: &mut Vec<Event>) {
        if addr.port() == 0 || addr.port() == 53 || self.procs.is_udp(meta.pid, fd) == Some(true) {
            return;
        }
        if !self.runs_sshd(meta.pid) {
            self.refused += 1;
            return;
        }
        let Some(m) = self.procs.monitor_of(meta.pid) else { return };
        let Some(conn) = self.conns.get(&m) else { return };
        let child = match conn.session {
            Session::Open { child, .. } => child,
            _ => return,
        };
        let mut e = Event::new(EventName::Forward, meta.ktime_ns);
        self.set_session(&mut e, conn, child.or(Some(meta.pid)), None);
        e.set(attr::PROCESS_PID, meta.pid);
        e.set(attr::FORWARD_ADDRESS, client_address(&addr.ip()));
        e.set(attr::FORWARD_PORT, addr.port());
        out.push(e);
    }

    fn on_exit(&mut self, meta: &Meta, out: &mut Vec<Event>) {
        let monitor = self.procs.monitor_of(meta.pid);
        self.procs.on_exit(meta.pid, meta.ktime_ns);
        let Some(m) = monitor else { return };
        if meta.pid == m {
            self.end(m, meta.ktime_ns, out);
            return;
        }
        let closes = matches!(
            self.conns.get(&m).map(|c| &c.session),
            Some(Session::Open { child: Some(c), pam: false, .. }) if *c == meta.pid
        );
        if closes {
            self.close(m, meta.ktime_ns, None, out);
        }
    }

    /// The monitor exited: the connection is over.
    fn end(&mut self, m: u32, ktime_ns: u64, out: &mut Vec<Event>) {
        self.conn(m, ktime_ns);
        self.flush_attempt(m, out);
        match self.conns.get(&m).map(|c| c.session.clone()) {
            Some(Session::Pending { .. }) => {
                self.open(m, None, None, out);
                self.close(m, ktime_ns, None, out);
            }
            Some(Session::Open { .. }) => self.close(m, ktime_ns, None, out),
            Some(Session::None) => {
                // A client that named a user and left before any attempt
                // failed (e.g. it offered nothing the server accepts).
                let conn = self.conns.get_mut(&m).expect("created above");
                if conn.failures == 0
                    && let Some(user) = conn.named_user.clone()
                {
                    let attempt = Attempt {
                        ktime_ns,
                        user: Some(user),
                        invalid: conn.invalid_user.is_some(),
                        ..Attempt::default()
                    };
                    let mut e = self.failure_event(m, &attempt);
                    e.set(attr::FAILURE_REASON, "preauth_disconnect");
                    out.push(e);
                }
            }
            _ => {}
        }
        self.conns.remove(&m);
    }

    fn on_setresuid(&mut self, meta: &Meta, uid: u32, out: &mut Vec<Event>) {
        let Some(m) = self.procs.monitor_of(meta.pid) else { return };
        if meta.pid == m || Some(uid) == self.settings.privsep_uid || meta.comm == "sshd-auth" {
            return;
        }
        // The monitor's first child is the pre-authentication child.
        if self.procs.first_child(m) == Some(meta.pid) {
            return;
        }
        let conn = self.conn(m, meta.ktime_ns);
        match conn.session {
            Session::Pending { .. } => self.open(m, Some(meta.pid), Some(uid), out),
            Session::None => {
                conn.session =
                    Session::Open { ktime_ns: meta.ktime_ns, child: Some(meta.pid), pam: false, terminal: None };
                conn.uid = Some(uid);
                self.emit_open(m, out);
            }
            Session::Open { .. } | Session::Closed => {}
        }
    }

    fn on_audit(&mut self, meta: &Meta, audit: &AuditMessage, out: &mut Vec<Event>) {
        let Some(m) = self.procs.monitor_of(meta.pid) else { return };
        let conn = self.conn(m, meta.ktime_ns);
        let f = audit.summary();
        if conn.exe.is_none() {
            conn.exe = f.exe.map(Cow::into_owned);
        }
        if conn.addr.is_none() {
            conn.addr = f.addr.map(Cow::into_owned);
        }
        let acct = f.acct.map(Cow::into_owned);
        let terminal = f.terminal.map(Cow::into_owned);
        let op = f.op.unwrap_or_default();
        let ok = f.res;
        match audit.msg_type {
            types::USER_ACCT if ok == Some(true) => conn.user = acct,
            types::USER_START if ok == Some(true) && op == "PAM:session_open" => {
                if matches!(conn.session, Session::None) {
                    conn.session = Session::Pending { ktime_ns: meta.ktime_ns, terminal };
                    if acct.is_some() {
                        conn.user = acct;
                    }
                }
            }
            types::USER_END if op == "PAM:session_close" => {
                if let Session::None = conn.session {
                    // Opened before sshlogin was watching (a restart): report
                    // the close, without a duration it cannot know.
                    if acct.is_some() {
                        conn.user = acct;
                    }
                    let mut e = Event::new(EventName::SessionClose, meta.ktime_ns);
                    let conn = &self.conns[&m];
                    self.set_session(&mut e, conn, None, terminal.as_deref());
                    out.push(e);
                    if let Some(c) = self.conns.get_mut(&m) {
                        c.session = Session::Closed;
                    }
                    return;
                }
                if let Session::Pending { .. } = conn.session {
                    self.open(m, None, None, out);
                }
                let pam_open = matches!(self.conns.get(&m).map(|c| &c.session), Some(Session::Open { pam: true, .. }));
                if pam_open {
                    self.close(m, meta.ktime_ns, terminal, out);
                }
            }
            types::USER_AUTH if ok == Some(false) => {
                let fact = Fact { ktime_ns: meta.ktime_ns, user: acct, terminal, ..Fact::default() };
                self.attempt(m, Source::AuditAuth, fact, out);
            }
            types::USER_LOGIN if ok == Some(false) => {
                let invalid = acct.as_deref() == Some("(invalid user)");
                let user = if invalid { None } else { acct };
                let fact = Fact { ktime_ns: meta.ktime_ns, user, invalid, terminal, ..Fact::default() };
                let is_try = conn.attempt.as_ref().is_some_and(Attempt::has_try);
                if invalid && !is_try {
                    self.attempt(m, Source::InvalidMarker, fact, out);
                } else {
                    self.attempt(m, Source::AuditLogin, fact, out);
                    self.flush_attempt(m, out);
                }
            }
            // sshd's own login record, once the session has a terminal.
            types::USER_LOGIN if ok == Some(true) => {
                if terminal.as_deref().is_some_and(|t| t.starts_with("/dev/")) {
                    conn.tty = terminal;
                }
                if conn.uid.is_none() {
                    conn.uid = f.id;
                }
            }
            _ => {}
        }
    }

    fn on_syslog(&mut self, meta: &Meta, message: SshdMessage, out: &mut Vec<Event>) {
        let Some(m) = self.procs.monitor_of(meta.pid) else { return };
        let conn = self.conn(m, meta.ktime_ns);
        match message {
            SshdMessage::Accepted { method, user, peer, key } => {
                conn.peer = Some(peer);
                conn.user = Some(user);
                conn.method = Some(method);
                conn.key = key;
                self.flush_attempt(m, out);
            }
            SshdMessage::Failed { method, user, invalid, peer, key } => {
                conn.peer.get_or_insert(peer.clone());
                let fact = Fact {
                    ktime_ns: meta.ktime_ns,
                    user: Some(user),
                    invalid,
                    method: Some(method),
                    key,
                    peer: Some(peer),
                    terminal: None,
                };
                self.attempt(m, Source::SyslogFailed, fact, out);
            }
            SshdMessage::InvalidUser { user, peer } => {
                conn.peer.get_or_insert(peer.clone());
                conn.invalid_user = Some(user.clone());
                conn.named_user = Some(user.clone());
                let fact = Fact {
                    ktime_ns: meta.ktime_ns,
                    user: Some(user),
                    invalid: true,
                    peer: Some(peer),
                    ..Fact::default()
                };
                self.attempt(m, Source::SyslogInvalid, fact, out);
            }
            SshdMessage::MaxAuthTries { peer, .. } => {
                conn.peer.get_or_insert(peer);
                if let Some(a) = conn.attempt.as_mut() {
                    a.max_tries = true;
                }
            }
            SshdMessage::Closed { user, peer, .. } => {
                conn.peer.get_or_insert(peer);
                if let Some((state, name)) = user
                    && state != UserState::LoggedIn
                {
                    conn.named_user.get_or_insert(name);
                }
            }
            SshdMessage::PamAuthFailure { user, invalid, .. } => {
                let fact = Fact {
                    ktime_ns: meta.ktime_ns,
                    user: Some(user),
                    invalid,
                    method: Some("keyboard-interactive".into()),
                    ..Fact::default()
                };
                self.attempt(m, Source::SyslogFailed, fact, out);
            }
            SshdMessage::PamSessionOpened { user, uid } => {
                if conn.user.as_deref().is_none_or(|u| u == user) {
                    conn.uid = uid.or(conn.uid);
                }
            }
            SshdMessage::Other => {}
        }
    }

    fn attempt(&mut self, m: u32, source: Source, fact: Fact, out: &mut Vec<Event>) {
        let belongs = self.conns.get(&m).and_then(|c| c.attempt.as_ref()).is_none_or(|a| a.accepts(source, &fact));
        if !belongs {
            self.flush_attempt(m, out);
        }
        let conn = self.conns.get_mut(&m).expect("callers create the connection");
        conn.attempt.get_or_insert_with(Attempt::default).merge(source, fact);
    }

    fn flush_attempt(&mut self, m: u32, out: &mut Vec<Event>) {
        let Some(attempt) = self.conns.get_mut(&m).and_then(|c| c.attempt.take()) else { return };
        let e = self.failure_event(m, &attempt);
        if let Some(conn) = self.conns.get_mut(&m) {
            conn.failures += 1;
        }
        out.push(e);
    }

    fn failure_event(&self, m: u32, a: &Attempt) -> Event {
        let conn = &self.conns[&m];
        let mut e = Event::new(EventName::AuthFailure, a.ktime_ns);
        let user = a.user.clone().or_else(|| if a.invalid { conn.invalid_user.clone() } else { None });
        if let Some(user) = user {
            e.set(attr::USER_NAME, user);
        }
        self.set_client(&mut e, conn, a.peer.as_ref());
        if let Some(method) = &a.method {
            e.set(attr::AUTH_METHOD, method.as_str());
        }
        set_key(&mut e, a.key.as_ref());
        if let Some(t) = &a.terminal {
            e.set(attr::TERMINAL, t.as_str());
        }
        e.set(attr::FAILURE_REASON, a.reason());
        self.set_process(&mut e, conn, None);
        e
    }

    /// PAM's session becomes an open session (with its child, if known).
    fn open(&mut self, m: u32, child: Option<u32>, uid: Option<u32>, out: &mut Vec<Event>) {
        let Some(conn) = self.conns.get_mut(&m) else { return };
        let Session::Pending { ktime_ns, terminal } = std::mem::take(&mut conn.session) else { return };
        conn.session = Session::Open { ktime_ns, child, pam: true, terminal };
        if conn.uid.is_none() {
            conn.uid = uid;
        }
        self.emit_open(m, out);
    }

    fn emit_open(&mut self, m: u32, out: &mut Vec<Event>) {
        // pam_loginuid set them in the monitor; the child inherited them.
        let ids = match self.conns[&m].session {
            Session::Open { child: Some(c), .. } => self.procs.audit_ids(c),
            _ => (None, None),
        };
        let ids = if ids.0.is_some() { ids } else { self.procs.audit_ids(m) };
        if let Some(conn) = self.conns.get_mut(&m) {
            conn.audit_ids = ids;
        }
        let conn = &self.conns[&m];
        let Session::Open { ktime_ns, child, ref terminal, .. } = conn.session else { return };
        let mut e = Event::new(EventName::SessionOpen, ktime_ns);
        self.set_session(&mut e, conn, child, terminal.as_deref());
        out.push(e);
    }

    fn close(&mut self, m: u32, ktime_ns: u64, end_terminal: Option<String>, out: &mut Vec<Event>) {
        let Some(conn) = self.conns.get_mut(&m) else { return };
        let Session::Open { ktime_ns: opened, child, terminal, .. } =
            std::mem::replace(&mut conn.session, Session::Closed)
        else {
            return;
        };
        let conn = &self.conns[&m];
        let mut e = Event::new(EventName::SessionClose, ktime_ns);
        self.set_session(&mut e, conn, child, terminal.or(end_terminal).as_deref());
        e.set(attr::SESSION_DURATION_MS, (ktime_ns.saturating_sub(opened) / 1_000_000) as i64);
        out.push(e);
    }

    fn set_session(&self, e: &mut Event, conn: &Conn, child: Option<u32>, terminal: Option<&str>) {
        if let Some(user) = &conn.user {
            e.set(attr::USER_NAME, user.as_str());
        }
        if let Some(uid) = conn.uid {
            e.set(attr::USER_ID, uid.to_string());
        }
        self.set_client(e, conn, None);
        if let Some(method) = &conn.method {
            e.set(attr::AUTH_METHOD, method.as_str());
        }
        set_key(e, conn.key.as_ref());
        if let Some(t) = terminal {
            e.set(attr::TERMINAL, t);
        }
        if let Some(tty) = &conn.tty {
            e.set(attr::TTY, tty.as_str());
        }
        if let Some(uid) = conn.audit_ids.0 {
            e.set(attr::AUDIT_LOGIN_UID, uid.to_string());
        }
        if let Some(id) = conn.audit_ids.1 {
            e.set(attr::AUDIT_SESSION_ID, id.to_string());
        }
        self.set_process(e, conn, child);
    }

    /// The client from sshd's own words, else from the monitor's socket,
    /// else the audit record's address; the server end from the socket.
    fn set_client(&self, e: &mut Event, conn: &Conn, peer: Option<&Peer>) {
        match (peer.or(conn.peer.as_ref()), conn.socket) {
            (Some(peer), _) => {
                e.set(attr::CLIENT_ADDRESS, client_address(&peer.addr));
                e.set(attr::CLIENT_PORT, peer.port);
            }
            (None, Some((_, client))) => {
                e.set(attr::CLIENT_ADDRESS, client_address(&client.ip()));
                e.set(attr::CLIENT_PORT, client.port());
            }
            (None, None) => {
                if let Some(addr) = &conn.addr {
                    e.set(attr::CLIENT_ADDRESS, addr.as_str());
                }
            }
        }
        if let Some((server, _)) = conn.socket {
            e.set(attr::SERVER_ADDRESS, client_address(&server.ip()));
            e.set(attr::SERVER_PORT, server.port());
        }
    }

    /// The session child as the process when there is one, the monitor
    /// otherwise; the parent is the one above.
    fn set_process(&self, e: &mut Event, conn: &Conn, child: Option<u32>) {
        let (pid, parent) = match child {
            Some(c) => (c, Some(conn.monitor)),
            None => (conn.monitor, self.procs.parent(conn.monitor)),
        };
        e.set(attr::PROCESS_PID, pid);
        if let Some(p) = parent {
            e.set(attr::PROCESS_PARENT_PID, p);
        }
        if let Some(exe) = &conn.exe {
            e.set(attr::PROCESS_EXE, exe.as_str());
        }
        e.set(attr::CONNECTION_ID, conn.id.as_str());
    }
}

fn set_key(e: &mut Event, key: Option<&KeyInfo>) {
    let Some(k) = key else { return };
    e.set(attr::KEY_TYPE, k.key_type.as_str());
    e.set(attr::KEY_FINGERPRINT, k.fingerprint.as_str());
    if let Some(c) = &k.cert {
        e.set(attr::CERT_ID, c.id.as_str());
        if let Some(serial) = c.serial.and_then(|s| i64::try_from(s).ok()) {
            e.set(attr::CERT_SERIAL, serial);
        }
        if let Some(t) = &c.ca_type {
            e.set(attr::CERT_CA_TYPE, t.as_str());
        }
        if let Some(fp) = &c.ca_fingerprint {
            e.set(attr::CERT_CA_FINGERPRINT, fp.as_str());
        }
    }
}

/// IPv4-mapped IPv6 addresses are shown as the IPv4 address they carry.
fn client_address(addr: &std::net::IpAddr) -> String {
    match addr {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    }
}
