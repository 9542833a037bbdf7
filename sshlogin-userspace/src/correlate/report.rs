//! Connection facts into events: who, from where, with what, which process.

use super::{Correlator, attempt::Attempt, conn::Conn, conn::Session};
use crate::{
    decode::syslog::{KeyInfo, Peer},
    event::{Event, EventName, attr},
};

impl Correlator {
    pub(super) fn failure_event(&self, m: u32, a: &Attempt) -> Event {
        let conn = self.conns.get(&m).expect("callers hold the connection");
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
        let mut e = Event::new(EventName::SessionOpen, ktime_ns);
        self.set_session(&mut e, conn, child, terminal.as_deref());
        out.push(e);
    }

    pub(super) fn close(&mut self, m: u32, ktime_ns: u64, end_terminal: Option<String>, out: &mut Vec<Event>) {
        let Some(conn) = self.conns.get_mut(&m) else { return };
        let Session::Open { ktime_ns: opened, child, terminal, .. } =
            std::mem::replace(&mut conn.session, Session::Closed)
        else {
            return;
        };
        let conn = self.conns.get(&m).expect("present above");
        let mut e = Event::new(EventName::SessionClose, ktime_ns);
        self.set_session(&mut e, conn, child, terminal.or(end_terminal).as_deref());
        if let Some(opened) = opened {
            e.set(attr::SESSION_DURATION_MS, (ktime_ns.saturating_sub(opened) / 1_000_000) as i64);
        }
        out.push(e);
    }

    pub(super) fn set_session(&self, e: &mut Event, conn: &Conn, child: Option<u32>, terminal: Option<&str>) {
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
pub(super) fn client_address(addr: &std::net::IpAddr) -> String {
    match addr {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    }
}
