//! Session activity into events: each exec in a session's process tree,
//! escalations (sudo, su, set-user-id programs), and at the connection's
//! end how much the rate limit left out.
//!
//! A record names the sshd process its session descends from; it belongs
//! to the connection whose monitor forked that process, once the session
//! is open. Anything else (an AuthorizedKeysCommand's processes, a PAM
//! helper's) belongs to no session and is only counted. A record that comes
//! before its session has opened (the session child's drop or PAM's
//! USER_START still on its way) waits for it a little.
//!
//! What the session decides (how many processes it runs) is rate limited
//! per session, with a separate and smaller allowance for escalations, so
//! that an exec flood can neither cost logins (the kernel keeps them on
//! another ring buffer) nor hide an escalation attempt.

use std::collections::{HashMap, VecDeque};

use super::{Correlator, conn::Session};
use crate::{
    decode::{Record, SessionExec, SessionMeta, audit::AuditMessage, audit::types},
    event::{self, Escalation, Event, Kind, Process},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Report execs (escalations are reported either way).
    pub execs: bool,
    /// Execs per second per session, sustained.
    pub rate: u32,
    /// Execs a session may run at once before the rate applies.
    pub burst: u32,
    /// Exec paths left out: exact, or a prefix when ending in `/`.
    pub exclude: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::from(&crate::config::SessionActivity::default())
    }
}

impl From<&crate::config::SessionActivity> for Settings {
    fn from(c: &crate::config::SessionActivity) -> Settings {
        Settings {
            execs: c.exec == crate::config::SessionExec::All,
            rate: c.rate,
            burst: c.burst,
            exclude: c.exclude.clone(),
        }
    }
}

/// Escalations per second per session, and at once: far above what a
/// person does, low enough that a loop of `sudo -n false` cannot flood.
const ESCALATION_RATE: f64 = 5.0;
const ESCALATION_BURST: f64 = 100.0;
/// How long a record waits for its session to open, and how many wait.
const HOLD_NS: u64 = 2_000_000_000;
const MAX_HELD: usize = 1024;
/// Privileged programs remembered for the audit records they send later.
const MAX_PRIVILEGED: usize = 4096;
/// Programs that report their decision through PAM's audit records: their
/// set-user-id exec is not yet an escalation.
const SPEAKS_PAM: &[&str] = &["sudo", "sudoedit", "su", "doas", "pkexec"];

/// A token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last_ns: u64,
}

impl Bucket {
    fn full(size: f64, now_ns: u64) -> Bucket {
        Bucket { tokens: size, last_ns: now_ns }
    }

    fn take(&mut self, now_ns: u64, rate: f64, size: f64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * rate).min(size);
        self.last_ns = self.last_ns.max(now_ns);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }
}

/// One connection's activity so far.
#[derive(Clone, Copy, Debug)]
struct Tally {
    execs: Bucket,
    escalations: Bucket,
    reported: u64,
    suppressed: u64,
}

/// A privileged process of a session: what it was started as, and what
/// it has said.
#[derive(Clone, Debug, Default)]
struct Privileged {
    program: Option<String>,
    args: Vec<String>,
    succeeded: bool,
    failed: bool,
}

/// What became of activity records, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Of no opened session (a helper's processes, a session whose
    /// connection was forgotten).
    pub unattributed: u64,
    /// Left out by the rate limit.
    pub suppressed: u64,
    /// Left out by `exclude`.
    pub excluded: u64,
}

#[derive(Default)]
pub struct Activity {
    settings: Settings,
    tallies: HashMap<u32, Tally>,
    privileged: HashMap<u32, Privileged>,
    held: VecDeque<Record>,
    pub counted: Counted,
}

/// Whose a record is.
enum Owner {
    /// The connection of this monitor.
    Session(u32),
    /// Its session is on its way.
    NotYet,
    Nobody,
}

fn who(record: &Record) -> Option<&SessionMeta> {
    match record {
        Record::SessionExec(e) => Some(&e.who),
        Record::SessionAudit { who, .. } => Some(who),
        _ => None,
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `sftp` or `scp` when the exec serves a file transfer.
fn subsystem(path: &str, args: &[String]) -> Option<&'static str> {
    match basename(path) {
        "sftp-server" => Some("sftp"),
        "scp" if args.iter().skip(1).any(|a| a == "-t" || a == "-f") => Some("scp"),
        _ => None,
    }
}

/// The account `sudo` was asked for (`-u NAME`, `--user=NAME`), root if none.
fn sudo_target(args: &[String]) -> String {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => break,
            "-u" | "--user" => return it.next().cloned().unwrap_or_else(|| "root".into()),
            _ if a.starts_with("--user=") => return a["--user=".len()..].to_string(),
            _ if a.starts_with("-u") && !a.starts_with("--") => return a[2..].to_string(),
            _ if !a.starts_with('-') => break,
            _ => {}
        }
    }
    "root".into()
}

impl Activity {
    pub fn new(settings: Settings) -> Activity {
        Activity { settings, ..Activity::default() }
    }

    fn excluded(&self, path: &str) -> bool {
        self.settings.exclude.iter().any(|x| if x.ends_with('/') { path.starts_with(x.as_str()) } else { path == x })
    }

    fn tally(&mut self, m: u32, now_ns: u64) -> &mut Tally {
        let burst = f64::from(self.settings.burst);
        self.tallies.entry(m).or_insert_with(|| Tally {
            execs: Bucket::full(burst, now_ns),
            escalations: Bucket::full(ESCALATION_BURST, now_ns),
            reported: 0,
            suppressed: 0,
        })
    }

    /// Whether the session may report one more exec now.
    fn allow_exec(&mut self, m: u32, now_ns: u64) -> bool {
        let (rate, burst) = (f64::from(self.settings.rate), f64::from(self.settings.burst));
        let t = self.tally(m, now_ns);
        let ok = t.execs.take(now_ns, rate, burst);
        self.count(m, ok);
        ok
    }

    fn allow_escalation(&mut self, m: u32, now_ns: u64) -> bool {
        let ok = self.tally(m, now_ns).escalations.take(now_ns, ESCALATION_RATE, ESCALATION_BURST);
        self.count(m, ok);
        ok
    }

    fn count(&mut self, m: u32, reported: bool) {
        let t = self.tallies.get_mut(&m).expect("made by tally");
        if reported {
            t.reported += 1;
        } else {
            t.suppressed += 1;
            self.counted.suppressed += 1;
        }
    }

    fn remember(&mut self, pid: u32, p: Privileged) {
        if self.privileged.len() >= MAX_PRIVILEGED && !self.privileged.contains_key(&pid) {
            // Rare (thousands of live sudo processes): forget them all
            // rather than scan for the oldest.
            self.privileged.clear();
        }
        self.privileged.insert(pid, p);
    }

    /// When the oldest held record gives up waiting.
    pub fn next_due(&self) -> Option<u64> {
        self.held.front().map(|r| r.meta().ktime_ns.saturating_add(HOLD_NS))
    }
}

impl Correlator {
    fn owner(&self, session: u32, session_ns: u64) -> Owner {
        // The pid's life now began after the session's first process was
        // made: it is another process that got the pid of a session child
        // gone (with its connection) since; the record is a leftover's.
        if self.procs.start_ns(session).is_some_and(|start| start > session_ns) {
            return Owner::Nobody;
        }
        // A process whose fork has not been taken yet may still be a
        // session child: its record waits (and gives up after HOLD_NS).
        let Some(m) = self.procs.parent(session) else { return Owner::NotYet };
        let Some(conn) = self.conns.get(&m) else { return Owner::Nobody };
        if self.procs.first_child(m) == Some(session) {
            return Owner::Nobody;
        }
        match conn.session {
            Session::Open { .. } | Session::Closed => Owner::Session(m),
            Session::Pending { .. } | Session::None => Owner::NotYet,
            Session::Candidate { child, .. } if child == session => Owner::NotYet,
            Session::Candidate { .. } => Owner::Nobody,
        }
    }

    /// Takes a session record: reports it, holds it for its session, or
    /// counts it as nobody's.
    pub(super) fn on_activity(&mut self, record: Record, out: &mut Vec<Event>) {
        let Some(who) = who(&record) else { return };
        match self.owner(who.session, who.session_ns) {
            Owner::Session(m) => match record {
                Record::SessionExec(e) => self.session_exec(m, *e, out),
                Record::SessionAudit { who, audit } => self.session_audit(m, &who, &audit, out),
                _ => {}
            },
            Owner::NotYet => {
                if self.activity.held.len() >= MAX_HELD {
                    self.activity.held.pop_front();
                    self.activity.counted.unattributed += 1;
                }
                self.activity.held.push_back(record);
            }
            Owner::Nobody => self.activity.counted.unattributed += 1,
        }
    }

    /// Held records whose session has opened, or that waited too long.
    pub(super) fn release_held(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        for record in std::mem::take(&mut self.activity.held) {
            let expired = now_ns.saturating_sub(record.meta().ktime_ns) >= HOLD_NS;
            let Some(who) = who(&record) else { continue };
            match self.owner(who.session, who.session_ns) {
                Owner::NotYet if !expired => self.activity.held.push_back(record),
                Owner::Session(_) => self.on_activity(record, out),
                _ => self.activity.counted.unattributed += 1,
            }
        }
    }

    /// The connection's end: how much its sessions' rate limit left out.
    pub(super) fn activity_summary(&mut self, m: u32, ktime_ns: u64, out: &mut Vec<Event>) {
        let Some(t) = self.activity.tallies.remove(&m) else { return };
        if t.suppressed == 0 {
            return;
        }
        let kind = Kind::ActivitySummary { reported: t.reported, suppressed: t.suppressed };
        let e = self.activity_event(m, kind, ktime_ns, Process { pid: m, parent_pid: None, exe: None });
        out.extend(e);
    }

    fn activity_event(&self, m: u32, kind: Kind, ktime_ns: u64, process: Process) -> Option<Event> {
        let conn = self.conns.get(&m)?;
        let mut e = Event::new(kind, ktime_ns);
        e.user = conn.user.clone();
        e.uid = conn.uid;
        self.set_client(&mut e, conn, None);
        e.auth_method = conn.method.clone();
        e.tty = conn.tty.clone();
        (e.audit_login_uid, e.audit_session_id) = conn.audit_ids;
        e.process = process;
        e.connection_id = Some(conn.id);
        Some(e)
    }

    fn session_exec(&mut self, m: u32, x: SessionExec, out: &mut Vec<Event>) {
        let now = x.who.meta.ktime_ns;
        let pid = x.who.meta.pid;
        let process = Process { pid, parent_pid: Some(x.ppid), exe: Some(x.path.clone()) };
        // A set-user-id exec that changed the effective user.
        if let Some(euid) = x.who.euid.filter(|&e| e != x.who.meta.uid) {
            if SPEAKS_PAM.contains(&basename(&x.path)) {
                let p = Privileged { program: Some(x.path.clone()), args: x.args.clone(), ..Privileged::default() };
                self.activity.remember(pid, p);
            } else if self.activity.allow_escalation(m, now) {
                let esc = Escalation {
                    success: true,
                    method: "setuid".into(),
                    program: Some(x.path.clone()),
                    target_uid: Some(euid),
                    ..Escalation::default()
                };
                out.extend(self.activity_event(m, Kind::Escalation(Box::new(esc)), now, process.clone()));
            }
        } else {
            self.activity.privileged.remove(&pid);
        }
        if !self.activity.settings.execs {
            return;
        }
        if self.activity.excluded(&x.path) {
            self.activity.counted.excluded += 1;
            return;
        }
        if !self.activity.allow_exec(m, now) {
            return;
        }
        let exec = event::SessionExec {
            subsystem: subsystem(&x.path, &x.args),
            args: x.args,
            args_cut: x.args_cut,
            euid: x.who.euid,
            real_uid: x.who.meta.uid,
        };
        out.extend(self.activity_event(m, Kind::SessionExec(Box::new(exec)), now, process));
    }

    /// sudo's and su's PAM and command records: one escalation per
    /// decision (each failed password, the command run or refused).
    fn session_audit(&mut self, m: u32, who: &SessionMeta, audit: &AuditMessage, out: &mut Vec<Event>) {
        let pid = who.meta.pid;
        let known = self.activity.privileged.get(&pid).cloned().unwrap_or_default();
        let program = audit.get("exe").map(|p| p.into_owned()).or(known.program.clone());
        let name = program.as_deref().map(basename).unwrap_or_default().to_string();
        let method = match name.as_str() {
            "sudo" | "sudoedit" => "sudo".to_string(),
            "" => "pam".to_string(),
            other => other.to_string(),
        };
        let acct = audit.acct().map(|a| a.into_owned());
        let requested = || if method == "sudo" { Some(sudo_target(&known.args)) } else { acct.clone() };
        // sudo decides in its USER_CMD record (PAM's USER_AUTH before it
        // may come more than once for one wrong password); su and the
        // others in PAM's records.
        let sudo = method == "sudo";
        let (success, target, command) = match (audit.msg_type, audit.success()) {
            (types::USER_AUTH | types::USER_ACCT, Some(false)) if !sudo => (false, requested(), None),
            (types::USER_CMD, Some(true)) if !known.succeeded => (true, requested(), audit.get("cmd")),
            (types::USER_CMD, Some(false)) if !known.failed => (false, requested(), audit.get("cmd")),
            (types::USER_START, Some(true)) if !known.succeeded => (true, acct.clone(), None),
            _ => return,
        };
        let command = command.map(|c| c.into_owned());
        let mut state = known;
        if success {
            state.succeeded = true;
        } else {
            state.failed = true;
        }
        state.program = program.clone();
        self.activity.remember(pid, state);
        if !self.activity.allow_escalation(m, who.meta.ktime_ns) {
            return;
        }
        let esc = Escalation {
            success,
            method,
            program: program.clone(),
            target_user: target,
            command,
            ..Escalation::default()
        };
        let process = Process { pid, parent_pid: None, exe: program };
        out.extend(self.activity_event(m, Kind::Escalation(Box::new(esc)), who.meta.ktime_ns, process));
    }
}

#[cfg(test)]
mod tests;
