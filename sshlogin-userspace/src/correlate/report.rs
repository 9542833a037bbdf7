//! Connection facts into events: who, from where, with what, which process.

use super::{Correlator, attempt::Fact, conn::Conn, conn::Session};
use crate::{
    decode::syslog::Peer,
    event::{Event, FailureReason, Kind, Process},
};

impl Correlator {
    pub(super) fn failure_event(&self, m: u32, a: &Fact, reason: FailureReason) -> Event {
        let conn = self.conns.get(&m).expect("callers hold the connection");
        let mut e = Event::new(Kind::AuthFailure { reason }, a.ktime_ns);
        e.user = a.user.clone().or_else(|| if a.invalid { conn.invalid_user.clone() } else { None });
        self.set_client(&mut e, conn, a.peer.as_ref());
        e.auth_method = a.method.clone();
        e.key = a.key.clone();
        e.terminal = a.terminal.clone();
        self.set_process(&mut e, conn, None);
        e
    }

    /// PAM's session becomes an open session (with its child, if known).
    pub(super) fn open(&mut self, m: u32, child: Option<u32>, uid: Option<u32>, out: &mut Vec<Event>) {
        let Some(conn) = self.conns.get_mut(&m) else { return };
        let Session::Pending { ktime_ns, terminal } = std::mem::take(&mut conn.session) else { return };
        conn.session = Session::Open { ktime_ns: Some(ktime_ns), child, pam: Some(true), terminal };
        if conn.uid.is_none() {
            conn.uid = uid;
        }
        self.emit_open(m, out);
    }

    /// A privilege drop without PAM becomes an open session.
    pub(super) fn confirm(&mut self, m: u32, out: &mut Vec<Event>) {
        let Some(conn) = self.conns.get_mut(&m) else { return };
        let Session::Candidate { ktime_ns, child, uid } = conn.session else { return };
        conn.session = Session::Open { ktime_ns: Some(ktime_ns), child: Some(child), pam: Some(false), terminal: None };
        conn.uid = Some(uid);
        self.emit_open(m, out);
    }

    fn emit_open(&mut self, m: u32, out: &mut Vec<Event>) {
        // pam_loginuid set them in the monitor; the child inherited them.
        let ids = match self.conns.get(&m).map(|c| &c.session) {
            Some(Session::Open { child: Some(c), .. }) => self.procs.audit_ids(*c),
            _ => (None, None),
        };
        let ids = if ids.0.is_some() { ids } else { self.procs.audit_ids(m) };
        let Some(conn) = self.conns.get_mut(&m) else { return };
        conn.audit_ids = ids;
        let conn = self.conns.get(&m).expect("present above");
        let Session::Open { ktime_ns: Some(ktime_ns), child, ref terminal, .. } = conn.session else { return };
        let mut e = Event::new(Kind::SessionOpen, ktime_ns);
        self.set_session(&mut e, conn, child, terminal.clone());
        if let Some(c) = child {
            self.note_session_child(m, c);
        }
        self.history.opened(&mut e);
        out.push(e);
        // Session records that came before the open.
        self.release_held(ktime_ns, out);
    }

    pub(super) fn close(&mut self, m: u32, ktime_ns: u64, end_terminal: Option<String>, out: &mut Vec<Event>) {
        let Some(conn) = self.conns.get_mut(&m) else { return };
        let Session::Open { ktime_ns: opened, child, terminal, .. } =
            std::mem::replace(&mut conn.session, Session::Closed)
        else {
            return;
        };
        let conn = self.conns.get(&m).expect("present above");
        let duration_ms = opened.map(|opened| ktime_ns.saturating_sub(opened) / 1_000_000);
        let mut e = Event::new(Kind::SessionClose { duration_ms }, ktime_ns);
        self.set_session(&mut e, conn, child, terminal.or(end_terminal));
        out.push(e);
    }

    pub(super) fn set_session(&self, e: &mut Event, conn: &Conn, child: Option<u32>, terminal: Option<String>) {
        e.user = conn.user.clone();
        e.uid = conn.uid;
        self.set_client(e, conn, None);
        e.auth_method = conn.method.clone();
        e.key = conn.key.clone();
        e.terminal = terminal;
        e.tty = conn.tty.clone();
        (e.audit_login_uid, e.audit_session_id) = conn.audit_ids;
        self.set_process(e, conn, child);
    }

    /// The client from sshd's own words, else from the monitor's socket,
    /// else the audit record's address; the server end from the socket.
    pub(super) fn set_client(&self, e: &mut Event, conn: &Conn, peer: Option<&Peer>) {
        let (address, port) = match (peer.or(conn.peer.as_ref()), conn.socket) {
            (Some(peer), _) => (Some(peer.addr), Some(peer.port)),
            (None, Some((_, client))) => (Some(client.ip()), Some(client.port())),
            (None, None) => (conn.addr, None),
        };
        e.client_address = address.map(|a| a.to_canonical());
        e.client_port = port;
        // The connection came from a forward this daemon saw: a ProxyJump hop.
        if let (Some(a), Some(p)) = (address, port) {
            e.before.jump_connection_id = self.hops.from(std::net::SocketAddr::new(a, p), conn.created_ns);
        }
        e.server = conn.socket.map(|(server, _)| server);
    }

    /// The session child as the process when there is one, the monitor
    /// otherwise; the parent is the one above.
    fn set_process(&self, e: &mut Event, conn: &Conn, child: Option<u32>) {
        let (pid, parent_pid) = match child {
            Some(c) => (c, Some(conn.monitor)),
            None => (conn.monitor, self.procs.parent(conn.monitor)),
        };
        e.process = Process { pid, parent_pid, exe: conn.exe.clone() };
        e.connection_id = Some(conn.id);
    }
}
