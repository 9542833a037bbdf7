//! What the monitor says: PAM's and sshd's audit records and sshd's log
//! lines, into the connection's facts, its failed attempts and its session.

use std::borrow::Cow;

use super::{
    Correlator,
    attempt::{Attempt, Fact, Source},
    conn::Session,
};
use crate::{
    decode::{
        Meta,
        audit::{AuditMessage, types},
        syslog::{SshdMessage, UserState},
    },
    event::{Event, FailureReason},
};

impl Correlator {
    pub(super) fn on_audit(&mut self, meta: &Meta, audit: &AuditMessage, out: &mut Vec<Event>) {
        let Some(m) = self.procs.monitor_of(meta.pid) else { return };
        let from_monitor = meta.pid == m;
        let conn = if from_monitor { self.conn_speaking(m, meta.ktime_ns) } else { self.conn(m, meta.ktime_ns) };
        let f = audit.summary();
        if conn.exe.is_none() {
            conn.exe = f.exe.map(Cow::into_owned);
        }
        if conn.addr.is_none() {
            conn.addr = f.addr.and_then(|a| a.parse().ok());
        }
        let acct = f.acct.map(Cow::into_owned);
        let terminal = f.terminal.map(Cow::into_owned);
        let op = f.op.unwrap_or_default();
        if op.starts_with("PAM:") {
            conn.pam = true;
        }
        let ok = f.res;
        match audit.msg_type {
            types::USER_ACCT if ok == Some(true) => {
                conn.user = acct;
                // PAM's account check runs once a method has succeeded.
                if from_monitor {
                    conn.auth_ns.get_or_insert(meta.ktime_ns);
                }
            }
            types::USER_START if ok == Some(true) && op == "PAM:session_open" && from_monitor => {
                conn.auth_ns.get_or_insert(meta.ktime_ns);
                if matches!(conn.session, Session::None | Session::Candidate { .. }) {
                    conn.session = Session::Pending { ktime_ns: meta.ktime_ns, terminal };
                    if acct.is_some() {
                        conn.user = acct;
                    }
                }
            }
            types::USER_END if op == "PAM:session_close" && from_monitor => {
                if let Session::None = conn.session {
                    // Opened before sshlogin was watching (a restart): report
                    // the close, without a duration it cannot know.
                    if acct.is_some() {
                        conn.user = acct;
                    }
                    conn.session = Session::Open { ktime_ns: None, child: None, pam: Some(true), terminal: None };
                }
                if let Session::Pending { .. } = conn.session {
                    self.open(m, None, None, out);
                }
                let pam_open = matches!(
                    self.conns.get(&m).map(|c| &c.session),
                    Some(Session::Open { pam: Some(true) | None, .. })
                );
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

    pub(super) fn on_syslog(&mut self, meta: &Meta, message: SshdMessage, out: &mut Vec<Event>) {
        let Some(m) = self.procs.monitor_of(meta.pid) else { return };
        let from_monitor = meta.pid == m;
        let conn = if from_monitor { self.conn_speaking(m, meta.ktime_ns) } else { self.conn(m, meta.ktime_ns) };
        match message {
            SshdMessage::Accepted { method, user, peer, key } => {
                conn.peer = Some(peer);
                conn.user = Some(user);
                conn.method = Some(method);
                conn.key = key;
                if from_monitor {
                    conn.auth_ns.get_or_insert(meta.ktime_ns);
                }
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

    pub(super) fn attempt(&mut self, m: u32, source: Source, fact: Fact, out: &mut Vec<Event>) {
        let belongs = self.conns.get(&m).and_then(|c| c.attempt.as_ref()).is_none_or(|a| a.accepts(source, &fact));
        if !belongs {
            self.flush_attempt(m, out);
        }
        let conn = self.conns.get_mut(&m).expect("callers create the connection");
        conn.attempt.get_or_insert_with(Attempt::default).merge(source, fact);
    }

    pub(super) fn flush_attempt(&mut self, m: u32, out: &mut Vec<Event>) {
        let Some(attempt) = self.conns.get_mut(&m).and_then(|c| c.attempt.take()) else { return };
        let e = self.failure_event(m, &attempt.fact, attempt.reason());
        self.history.failed(&e);
        if let Some(conn) = self.conns.get_mut(&m) {
            conn.failures += 1;
        }
        out.push(e);
    }

    /// A client that named a user and left before any attempt failed (e.g.
    /// it offered nothing the server accepts).
    pub(super) fn left_before_trying(&mut self, m: u32, ktime_ns: u64, out: &mut Vec<Event>) {
        let Some(conn) = self.conns.get(&m) else { return };
        if conn.failures > 0 {
            return;
        }
        let Some(user) = conn.named_user.clone() else { return };
        let fact = Fact { ktime_ns, user: Some(user), invalid: conn.invalid_user.is_some(), ..Fact::default() };
        let e = self.failure_event(m, &fact, FailureReason::PreauthDisconnect);
        self.history.failed(&e);
        out.push(e);
    }
}
