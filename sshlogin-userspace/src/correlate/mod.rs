//! Records to events, per sshd connection. The connection is named by its
//! monitor process, which sends the audit records and log lines of that
//! connection; its children are the pre-authentication child, helpers and
//! the session child; its exit ends it.
//!
//! A session opens only when one did (the rule, and the runs it was read
//! from, are in docs/capture-notes.md):
//! - with PAM, on USER_START `op=PAM:session_open res=success` from the
//!   monitor, reported once the session child has dropped privileges (so the
//!   event names that child);
//! - without PAM, on the privilege drop of a child the monitor forked after
//!   authentication succeeded (its pre-authentication child exited, or sshd
//!   or PAM said so), once that child has not exec'd something else.
//!
//! Never on the drop of the pre-authentication child or of a helper forked
//! during authentication (AuthorizedKeysCommand, AuthorizedPrincipalsCommand),
//! and nothing here depends on a user name looked up at start.
//!
//! It closes on USER_END or, without PAM, when the session child exits; the
//! monitor's exit closes whatever is still open.

pub mod activity;
mod attempt;
mod conn;
mod history;
mod hops;
pub use conn::MAX_CONNS;
mod messages;
pub mod process;
mod report;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use conn::{Conn, Conns, Session};
use process::{ProcView, ProcessTable, Role};
use uuid::Uuid;

use crate::{
    admit::scan::Seed,
    decode::{Exec, Meta, Record},
    event::{Event, Kind},
};

/// A session opened by PAM waits this long for its session child before it
/// is reported without one.
const OPEN_WAIT_NS: u64 = 1_000_000_000;
/// A drop without PAM is a session once the child has not exec'd within
/// this long (a helper execs right after it drops).
const CONFIRM_NS: u64 = 50_000_000;
/// An attempt not completed by sshd's USER_LOGIN (sshd built without audit
/// support) is reported after this much quiet, if neither the next attempt
/// nor the end of the connection reported it first. Far longer than PAM's
/// 2 s delay between USER_AUTH and sshd's "Failed password" line, which a
/// login storm on a busy host stretches.
const ATTEMPT_WAIT_NS: u64 = 30_000_000_000;

pub struct Settings {
    /// Namespace of connection ids: this boot.
    pub boot_id: Uuid,
    /// The sshd names, for processes whose fork was not seen.
    pub family: Vec<String>,
    pub activity: activity::Settings,
}

/// What the tables had to drop to stay bounded since the caller last took
/// it: (connections, processes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evictions {
    pub connections: u64,
    pub processes: u64,
}

pub struct Correlator {
    procs: ProcessTable,
    conns: Conns,
    hops: hops::Hops,
    history: history::History,
    activity: activity::Activity,
    settings: Settings,
}

impl Correlator {
    pub fn new(settings: Settings, view: Box<dyn ProcView + Send>) -> Self {
        Correlator {
            procs: ProcessTable::new(settings.family.clone(), view),
            conns: Conns::default(),
            hops: hops::Hops::default(),
            history: history::History::default(),
            activity: activity::Activity::new(settings.activity.clone()),
            settings,
        }
    }

    /// The sshd processes found running at start, parents before children.
    pub fn seed(&mut self, seeds: &[Seed]) {
        for s in seeds {
            self.procs.seed(s.pid, s.parent, s.role, s.start_ns);
            match s.role {
                Role::Monitor => {
                    self.new_conn(s.pid, s.start_ns, &mut Vec::new());
                }
                Role::Child if is_session_title(&s.title) => {
                    let Some(m) = s.parent.filter(|m| self.conns.contains(m)) else { continue };
                    let conn = self.conns.get_mut(&m).expect("checked");
                    conn.auth_ns = Some(s.start_ns);
                    conn.uid = Some(s.uid);
                    conn.session = Session::Open { ktime_ns: None, child: Some(s.pid), pam: None, terminal: None };
                }
                Role::Child if is_preauth_title(&s.title) => {
                    if let Some(m) = s.parent {
                        self.procs.set_first_child(m, s.pid);
                    }
                }
                _ => {}
            }
        }
    }

    /// Takes one record; pushes the events it completes.
    pub fn handle(&mut self, record: Record, out: &mut Vec<Event>) {
        match record {
            Record::Fork { meta, child } => self.on_fork(&meta, child, out),
            Record::Exec { meta, how } => self.on_exec(&meta, how, out),
            Record::Exit { meta } => self.on_exit(&meta, out),
            Record::Setresuid { meta, uid } => {
                self.procs.touch(meta.pid);
                self.on_setresuid(&meta, uid, out);
            }
            Record::Audit { meta, audit } => {
                self.procs.touch(meta.pid);
                self.on_audit(&meta, &audit, out);
            }
            Record::Syslog { meta, line } => {
                self.procs.touch(meta.pid);
                self.on_syslog(&meta, line.parsed, out);
            }
            Record::Connect { meta, fd, addr } => {
                self.procs.touch(meta.pid);
                self.on_connect(&meta, fd, addr, out);
            }
            record @ (Record::SessionExec(_) | Record::SessionAudit { .. }) => self.on_activity(record, out),
        }
    }

    /// What activity records came to since the last call.
    pub fn take_activity_counts(&mut self) -> activity::Counted {
        std::mem::take(&mut self.activity.counted)
    }

    /// Reports what has waited long enough; `now_ns` is CLOCK_BOOTTIME.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        for m in self.conns.monitors() {
            let Some(conn) = self.conns.get(&m) else { continue };
            if conn.attempt.as_ref().is_some_and(|a| now_ns.saturating_sub(a.last_ns) >= ATTEMPT_WAIT_NS) {
                self.flush_attempt(m, out);
            }
            match self.conns.get(&m).map(|c| &c.session) {
                Some(Session::Pending { ktime_ns, .. }) if now_ns.saturating_sub(*ktime_ns) >= OPEN_WAIT_NS => {
                    self.open(m, None, None, out);
                }
                Some(Session::Candidate { ktime_ns, .. }) if now_ns.saturating_sub(*ktime_ns) >= CONFIRM_NS => {
                    self.confirm(m, out);
                }
                _ => {}
            }
        }
        self.release_held(now_ns, out);
        let conns = &self.conns;
        self.procs.gc(now_ns, |m| conns.contains(&m));
    }

    /// Ends the connections whose monitor is no longer alive (its exit
    /// record was lost): the host is asked about each.
    pub fn reap(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        for m in self.conns.monitors() {
            if self.procs.alive(m) == Some(false) {
                tracing::info!(monitor = m, "a connection's monitor is gone without a record of its exit; ending it");
                self.end(m, now_ns, out);
            }
        }
    }

    /// What the tables evicted since the last call.
    pub fn take_evictions(&mut self) -> Evictions {
        Evictions {
            connections: std::mem::take(&mut self.conns.evicted),
            processes: std::mem::take(&mut self.procs.evicted),
        }
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// When (CLOCK_BOOTTIME ns) the next timer of [`Correlator::tick`] is due,
    /// if any is pending.
    pub fn next_due(&self) -> Option<u64> {
        self.conns
            .values()
            .flat_map(|c| {
                let attempt = c.attempt.as_ref().map(|a| a.last_ns.saturating_add(ATTEMPT_WAIT_NS));
                let session = match c.session {
                    Session::Pending { ktime_ns, .. } => Some(ktime_ns.saturating_add(OPEN_WAIT_NS)),
                    Session::Candidate { ktime_ns, .. } => Some(ktime_ns.saturating_add(CONFIRM_NS)),
                    _ => None,
                };
                [attempt, session]
            })
            .flatten()
            .chain(self.activity.next_due())
            .min()
    }

    /// Reports everything still pending (at shutdown or the end of a replay).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.tick(u64::MAX, out);
    }

    /// A new connection at `monitor`. Whatever the pid held before belongs
    /// to a monitor whose exit was not seen: that connection is over.
    fn new_conn(&mut self, monitor: u32, ktime_ns: u64, out: &mut Vec<Event>) {
        if self.conns.contains(&monitor) {
            self.end(monitor, ktime_ns, out);
        }
        let start = self.procs.start_ns(monitor).unwrap_or(ktime_ns);
        let id = Uuid::new_v5(&self.settings.boot_id, format!("conn/{monitor}/{start}").as_bytes());
        // While the monitor lives, its socket names both ends.
        let socket = self.procs.tcp_connection(monitor);
        let evicted = self.conns.insert(Conn { monitor, id, socket, created_ns: ktime_ns, ..Conn::default() });
        if !evicted.is_empty() {
            tracing::warn!(
                evicted = evicted.len(),
                tracked = self.conns.len(),
                "too many connections without a session: forgot the oldest (a flood of unauthenticated clients?)"
            );
        }
    }

    /// The connection of `monitor`, made now if its fork was not seen.
    fn conn(&mut self, monitor: u32, ktime_ns: u64) -> &mut Conn {
        if !self.conns.contains(&monitor) {
            self.new_conn(monitor, ktime_ns, &mut Vec::new());
        }
        self.conns.get_mut(&monitor).expect("inserted above")
    }

    /// As [`Self::conn`], for a record the monitor sent: it is alive, so its
    /// socket can be asked again if the look at its fork found none (a new
    /// monitor closes the sockets it inherited, and exec's, while the daemon
    /// looks).
    fn conn_speaking(&mut self, monitor: u32, ktime_ns: u64) -> &mut Conn {
        let conn = self.conn(monitor, ktime_ns);
        if conn.socket.is_none() && !conn.socket_asked_again {
            conn.socket_asked_again = true;
            let socket = self.procs.tcp_connection(monitor);
            let conn = self.conns.get_mut(&monitor).expect("made above");
            conn.socket = socket;
        }
        self.conns.get_mut(&monitor).expect("made above")
    }

    fn on_fork(&mut self, meta: &Meta, child: u32, out: &mut Vec<Event>) {
        if self.conns.contains(&child) {
            self.end(child, meta.ktime_ns, out);
        }
        match self.procs.on_fork(meta.pid, child, meta.ktime_ns) {
            // Noted now, while the client's socket surely exists (a rejected
            // client may be gone by the time its first audit record is read).
            Role::Monitor => self.new_conn(child, meta.ktime_ns, out),
            Role::Child => {
                let after_auth =
                    self.procs.monitor_of(child).and_then(|m| self.conns.get(&m)).is_some_and(|c| c.auth_ns.is_some());
                if after_auth {
                    self.procs.set_after_auth(child);
                }
            }
            Role::Listener => {}
        }
    }

    fn on_exec(&mut self, meta: &Meta, how: Exec, out: &mut Vec<Event>) {
        match how {
            Exec::NewTree => {
                if self.conns.contains(&meta.pid) {
                    self.end(meta.pid, meta.ktime_ns, out);
                }
                self.procs.root(meta.pid, meta.ktime_ns);
            }
            Exec::Stayed => self.procs.touch(meta.pid),
            Exec::Left => {
                let monitor = self.procs.monitor_of(meta.pid);
                self.procs.on_left(meta.pid, meta.ktime_ns);
                // It dropped, then exec'd: a helper, not a session child.
                if let Some(conn) = monitor.and_then(|m| self.conns.get_mut(&m))
                    && matches!(conn.session, Session::Candidate { child, .. } if child == meta.pid)
                {
                    conn.session = Session::None;
                }
            }
        }
    }

    fn on_exit(&mut self, meta: &Meta, out: &mut Vec<Event>) {
        let monitor = self.procs.monitor_of(meta.pid);
        if let Some(heir) = self.procs.on_exit(meta.pid, meta.ktime_ns) {
            // A daemonizing sshd's child, taken for a connection at its fork.
            self.conns.remove(&heir);
        }
        let Some(m) = monitor else { return };
        if meta.pid == m {
            self.end(m, meta.ktime_ns, out);
            return;
        }
        if self.procs.first_child(m) == Some(meta.pid)
            && let Some(conn) = self.conns.get_mut(&m)
        {
            // The pre-authentication child is done: the user is in, or the
            // connection is ending (and then the monitor forks nothing more).
            conn.auth_ns.get_or_insert(meta.ktime_ns);
        }
        let closes = match self.conns.get(&m).map(|c| &c.session) {
            Some(Session::Candidate { child, .. }) if *child == meta.pid => {
                self.confirm(m, out);
                true
            }
            Some(Session::Open { child: Some(c), pam: Some(false), .. }) => *c == meta.pid,
            _ => false,
        };
        if closes {
            self.close(m, meta.ktime_ns, None, out);
        }
    }

    /// The monitor exited: the connection is over.
    fn end(&mut self, m: u32, ktime_ns: u64, out: &mut Vec<Event>) {
        self.conn(m, ktime_ns);
        self.flush_attempt(m, out);
        match self.conns.get(&m).map(|c| c.session.clone()) {
            Some(Session::Candidate { .. }) => {
                self.confirm(m, out);
                self.close(m, ktime_ns, None, out);
            }
            Some(Session::Pending { .. }) => {
                self.open(m, None, None, out);
                self.close(m, ktime_ns, None, out);
            }
            Some(Session::Open { .. }) => self.close(m, ktime_ns, None, out),
            Some(Session::None) => self.left_before_trying(m, ktime_ns, out),
            _ => {}
        }
        self.activity_end(m, ktime_ns, out);
        self.conns.remove(&m);
    }

    fn on_setresuid(&mut self, meta: &Meta, uid: u32, out: &mut Vec<Event>) {
        let pid = meta.pid;
        let Some(m) = self.procs.monitor_of(pid) else { return };
        // Not the monitor, not its pre-authentication child, and not a
        // helper it forked while the user was still authenticating.
        if pid == m || self.procs.first_child(m) == Some(pid) || !self.procs.after_auth(pid) {
            return;
        }
        let conn = self.conn(m, meta.ktime_ns);
        match conn.session {
            Session::Pending { .. } => self.open(m, Some(pid), Some(uid), out),
            // With PAM the session opens on USER_START; a drop before it is
            // one of PAM's session modules running a helper.
            Session::None if !conn.pam => {
                conn.session = Session::Candidate { ktime_ns: meta.ktime_ns, child: pid, uid };
            }
            _ => {}
        }
    }

    /// A session's process connected somewhere: a forward, unless it is a
    /// name look-up (UDP) or glibc probing a source address (port 0).
    fn on_connect(&mut self, meta: &Meta, fd: u32, addr: SocketAddr, out: &mut Vec<Event>) {
        if addr.port() == 0 {
            return;
        }
        match self.procs.is_udp(meta.pid, fd) {
            Some(true) => return,
            // The socket is gone already: a resolver's, most likely.
            None if addr.port() == 53 => return,
            _ => {}
        }
        let Some(m) = self.procs.monitor_of(meta.pid) else { return };
        if matches!(self.conns.get(&m).map(|c| &c.session), Some(Session::Candidate { child, .. }) if *child == meta.pid)
        {
            self.confirm(m, out);
        }
        let Some(conn) = self.conns.get(&m) else { return };
        let child = match conn.session {
            Session::Open { child, .. } => child,
            _ => return,
        };
        let from_session = match child {
            Some(c) => c == meta.pid,
            None => {
                self.procs.after_auth(meta.pid)
                    && self.procs.first_child(m) != Some(meta.pid)
                    && !self.procs.has_left(meta.pid)
            }
        };
        if !from_session {
            return;
        }
        let from = self.procs.local_end(meta.pid, fd);
        if let Some(from) = from {
            self.hops.forwarded(from, conn.id, meta.ktime_ns);
        }
        let mut e = Event::new(Kind::Forward { to: addr, from }, meta.ktime_ns);
        self.set_session(&mut e, conn, child.or(Some(meta.pid)), None);
        e.process.pid = meta.pid;
        out.push(e);
    }
}

/// A session child's title as sshd sets it (`sshd: alice@pts/0`,
/// `sshd-session: alice@notty`): the user, then the terminal or `notty`.
/// A user name may hold an `@` (`alice@corp`); the terminal cannot.
fn is_session_title(title: &str) -> bool {
    title.rsplit_once('@').is_some_and(|(_, tty)| tty == "notty" || tty.starts_with("pts/") || tty.starts_with("tty"))
}

/// A pre-authentication child's title: `sshd: alice [net]`, `sshd-auth:
/// ...`; OpenSSH always forks it first.
fn is_preauth_title(title: &str) -> bool {
    title.ends_with("[net]") || title.starts_with("sshd-auth")
}

#[cfg(test)]
#[test]
fn titles_tell_a_session_child_from_a_pre_authentication_child() {
    assert!(is_session_title("sshd: alice@pts/0"));
    assert!(is_session_title("sshd-session: alice@notty"));
    assert!(is_session_title("sshd: alice@corp@notty"));
    assert!(!is_session_title("sshd: alice@corp [net]"));
    assert!(!is_session_title("sshd: alice@corp [priv]"));
    assert!(is_preauth_title("sshd: alice@corp [net]"));
    assert!(is_preauth_title("sshd-auth: alice [net]"));
    assert!(!is_preauth_title("sshd: alice [priv]"));
}
