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
//! A connection that has ended stays known for the processes its sessions
//! left running (`nohup`, a double fork): a bounded number of the latest.
//! A session is named by its sshd process's pid and when its first process
//! was made, so a process that later gets that pid is never taken for it.
//!
//! What the session decides (how many processes it runs) is rate limited
//! per connection (`limits`), so that an exec flood can neither cost logins
//! (the kernel keeps them on another ring buffer) nor hide an escalation.

mod escalation;
mod limits;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

use escalation::{FileId, PamPrograms, Privileged, PrivilegedTable};
use limits::{Allowance, Tally};

use super::{Correlator, conn::Session};
use crate::{
    decode::{Record, SessionExec, SessionMeta, audit::AuditMessage},
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
    /// The files of sudo, su and the like; `None`: this host's.
    pub pam_programs: Option<Vec<FileId>>,
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
            pam_programs: None,
        }
    }
}

/// How long a record waits for its session to open, how many wait, and
/// how many of one session.
const HOLD_NS: u64 = 2_000_000_000;
const MAX_HELD: usize = 1024;
const MAX_HELD_PER_SESSION: u32 = 64;
/// Ended connections kept for their sessions' leftover processes.
const MAX_ENDED: usize = 1024;
/// Names of PAM-speaking programs, for an exec whose file the kernel could
/// not name (its identity unread).
const SPEAKS_PAM_NAMES: &[&str] = &["sudo", "sudoedit", "su", "doas", "pkexec"];

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

/// A connection that has ended, for its sessions' leftover processes.
struct Ended {
    /// Its facts, as its events carry them.
    template: Event,
    /// Its sessions' sshd processes: pid, and when it began if known.
    sessions: Vec<(u32, Option<u64>)>,
    ended_ns: u64,
    tally: Tally,
}

#[derive(Default)]
pub struct Activity {
    settings: Settings,
    tallies: HashMap<u32, Tally>,
    /// The sessions' sshd processes each live connection's records named.
    sessions: HashMap<u32, Vec<u32>>,
    privileged: PrivilegedTable,
    pam: PamPrograms,
    held: VecDeque<Record>,
    ended: VecDeque<Ended>,
    pub counted: Counted,
}

/// Whose a record is.
#[derive(Clone, Copy)]
enum Owner {
    /// The connection of this monitor.
    Live(u32),
    /// The ended connection at this index of `ended`.
    Ended(usize),
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

/// A name with no `.` or `..` component and no empty one: what an
/// exclusion may match (others could name an excluded file by a detour).
fn plain(path: &str) -> bool {
    path.starts_with('/') && path[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Activity {
    pub fn new(settings: Settings) -> Activity {
        let pam = match &settings.pam_programs {
            Some(ids) => PamPrograms::Fixed(ids.clone()),
            None => PamPrograms::default(),
        };
        Activity { settings, pam, ..Activity::default() }
    }

    fn excluded(&self, path: &str) -> bool {
        plain(path)
            && self
                .settings
                .exclude
                .iter()
                .any(|x| if x.ends_with('/') { path.starts_with(x.as_str()) } else { path == x })
    }

    /// Whether one more event of `kind` of this owner may go out now.
    fn allow(&mut self, owner: Owner, kind: Allowance, now_ns: u64) -> bool {
        let (rate, burst) = (self.settings.rate, self.settings.burst);
        let tally = match owner {
            Owner::Live(m) => self.tallies.entry(m).or_insert_with(|| Tally::new(burst, now_ns)),
            Owner::Ended(i) => &mut self.ended[i].tally,
            Owner::NotYet | Owner::Nobody => return false,
        };
        let ok = tally.allow(kind, now_ns, rate, burst);
        if !ok {
            self.counted.suppressed += 1;
        }
        ok
    }

    fn hold(&mut self, record: Record) {
        let session = who(&record).map(|w| w.session);
        let mine = self.held.iter().filter(|r| who(r).map(|w| w.session) == session).count();
        if mine >= MAX_HELD_PER_SESSION as usize {
            self.counted.unattributed += 1;
            return;
        }
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
            self.counted.unattributed += 1;
        }
        self.held.push_back(record);
    }

    /// When the oldest held record gives up waiting.
    pub fn next_due(&self) -> Option<u64> {
        self.held.front().map(|r| r.meta().ktime_ns.saturating_add(HOLD_NS))
    }
}

impl Correlator {
    fn owner(&self, session: u32, session_ns: u64) -> Owner {
        let live = self.live_owner(session, session_ns);
        if !matches!(live, Owner::Nobody) {
            return live;
        }
        // A process its ended connection's session left running.
        self.activity
            .ended
            .iter()
            .position(|e| {
                e.ended_ns > session_ns
                    && e.sessions.iter().any(|&(pid, start)| pid == session && start.is_none_or(|s| s <= session_ns))
            })
            .map_or(Owner::Nobody, Owner::Ended)
    }

    fn live_owner(&self, session: u32, session_ns: u64) -> Owner {
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
        match conn.session {
            Session::Open { child: Some(c), .. } if c == session => Owner::Live(m),
            _ if self.procs.first_child(m) == Some(session) => Owner::Nobody,
            Session::Open { .. } | Session::Closed => Owner::Live(m),
            Session::Pending { .. } | Session::None => Owner::NotYet,
            Session::Candidate { child, .. } if child == session => Owner::NotYet,
            Session::Candidate { .. } => Owner::Nobody,
        }
    }

    /// Takes a session record: reports it, holds it for its session, or
    /// counts it as nobody's.
    pub(super) fn on_activity(&mut self, record: Record, out: &mut Vec<Event>) {
        let Some(w) = who(&record) else { return };
        let (session, session_ns) = (w.session, w.session_ns);
        match self.owner(session, session_ns) {
            Owner::NotYet => self.activity.hold(record),
            Owner::Nobody => self.activity.counted.unattributed += 1,
            owner => {
                if let Owner::Live(m) = owner {
                    self.note_session_child(m, session);
                }
                match record {
                    Record::SessionExec(e) => self.session_exec(owner, *e, out),
                    Record::SessionAudit { who, audit } => self.session_audit(owner, &who, &audit, out),
                    _ => {}
                }
            }
        }
    }

    /// A session opened with this sshd process: its processes are the
    /// connection's, after its end too.
    pub(super) fn note_session_child(&mut self, m: u32, child: u32) {
        let seen = self.activity.sessions.entry(m).or_default();
        if !seen.contains(&child) && seen.len() < 16 {
            seen.push(child);
        }
    }

    /// Held records whose session has opened, or that waited too long.
    pub(super) fn release_held(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        for record in std::mem::take(&mut self.activity.held) {
            let expired = now_ns.saturating_sub(record.meta().ktime_ns) >= HOLD_NS;
            let Some(w) = who(&record) else { continue };
            match self.owner(w.session, w.session_ns) {
                Owner::NotYet if !expired => self.activity.held.push_back(record),
                Owner::NotYet | Owner::Nobody => self.activity.counted.unattributed += 1,
                _ => self.on_activity(record, out),
            }
        }
    }

    /// The connection's end: how much its sessions' rate limit left out;
    /// the connection stays known for its sessions' leftover processes.
    pub(super) fn activity_end(&mut self, m: u32, ktime_ns: u64, out: &mut Vec<Event>) {
        let tally = self.activity.tallies.remove(&m);
        let sessions: Vec<u32> = self.activity.sessions.remove(&m).unwrap_or_default();
        let template = self.template(m);
        if let (Some(t), Some(template)) = (tally, &template)
            && t.suppressed > 0
        {
            let kind = Kind::ActivitySummary { reported: t.reported, suppressed: t.suppressed };
            out.push(activity_event(template, kind, ktime_ns, Process { pid: m, parent_pid: None, exe: None }));
        }
        let (Some(template), false) = (template, sessions.is_empty()) else { return };
        if self.activity.ended.len() >= MAX_ENDED {
            self.activity.ended.pop_front();
        }
        let sessions = sessions.into_iter().map(|s| (s, self.procs.start_ns(s))).collect();
        let tally = tally.unwrap_or_else(|| Tally::new(self.activity.settings.burst, ktime_ns));
        self.activity.ended.push_back(Ended { template, sessions, ended_ns: ktime_ns, tally });
    }

    /// The connection's facts as its activity events carry them.
    fn template(&self, m: u32) -> Option<Event> {
        let conn = self.conns.get(&m)?;
        let mut e = Event::new(Kind::SessionOpen, 0);
        e.user = conn.user.clone();
        e.uid = conn.uid;
        self.set_client(&mut e, conn, None);
        e.auth_method = conn.method.clone();
        e.tty = conn.tty.clone();
        (e.audit_login_uid, e.audit_session_id) = conn.audit_ids;
        e.connection_id = Some(conn.id);
        Some(e)
    }

    fn emit(&self, owner: Owner, kind: Kind, ktime_ns: u64, process: Process, out: &mut Vec<Event>) {
        let template = match owner {
            Owner::Live(m) => self.template(m),
            Owner::Ended(i) => Some(self.activity.ended[i].template.clone()),
            Owner::NotYet | Owner::Nobody => None,
        };
        if let Some(t) = template {
            out.push(activity_event(&t, kind, ktime_ns, process));
        }
    }

    fn session_exec(&mut self, owner: Owner, x: SessionExec, out: &mut Vec<Event>) {
        let now = x.who.meta.ktime_ns;
        let pid = x.who.meta.pid;
        let process = Process { pid, parent_pid: Some(x.ppid), exe: Some(x.path.clone()) };
        // A set-user-id exec that changed the effective user.
        if let Some(euid) = x.who.euid.filter(|&e| e != x.who.meta.uid) {
            let speaks_pam = if x.exe != (0, 0) {
                self.activity.pam.speaks_pam(x.exe)
            } else {
                SPEAKS_PAM_NAMES.contains(&basename(&x.path))
            };
            if speaks_pam {
                let p = Privileged {
                    program: Some(x.path.clone()),
                    args: x.args.clone(),
                    at_ns: now,
                    ..Privileged::default()
                };
                self.activity.privileged.remember(pid, p);
            } else if self.activity.allow(owner, Allowance::Setuid, now) {
                let esc = Escalation {
                    success: true,
                    method: "setuid".into(),
                    program: Some(x.path.clone()),
                    target_uid: Some(euid),
                    ..Escalation::default()
                };
                self.emit(owner, Kind::Escalation(Box::new(esc)), now, process.clone(), out);
            }
        } else {
            self.activity.privileged.forget(pid);
        }
        if !self.activity.settings.execs {
            return;
        }
        if self.activity.excluded(&x.path) {
            self.activity.counted.excluded += 1;
            return;
        }
        if !self.activity.allow(owner, Allowance::Exec, now) {
            return;
        }
        let exec = event::SessionExec {
            subsystem: subsystem(&x.path, &x.args),
            args: x.args,
            args_cut: x.args_cut,
            euid: x.who.euid,
            real_uid: x.who.meta.uid,
        };
        self.emit(owner, Kind::SessionExec(Box::new(exec)), now, process, out);
    }

    /// sudo's and su's PAM and command records: one escalation per
    /// decision (a failed attempt, the command run or refused, the session
    /// su opened).
    fn session_audit(&mut self, owner: Owner, who: &SessionMeta, audit: &AuditMessage, out: &mut Vec<Event>) {
        let (pid, now) = (who.meta.pid, who.meta.ktime_ns);
        let mut known = self.activity.privileged.get(pid);
        // The privileged program's own word for its executable (libaudit
        // reads /proc/self/exe), else the exec's.
        let program = audit.get("exe").map(|p| p.into_owned()).or(known.program.clone());
        let name = program.as_deref().map(basename).unwrap_or_default().to_string();
        let method = match name.as_str() {
            "sudo" | "sudoedit" => "sudo".to_string(),
            "" => "pam".to_string(),
            other => other.to_string(),
        };
        let Some((success, target, command)) = escalation::decide(audit, method == "sudo", &mut known) else {
            return;
        };
        known.program.clone_from(&program);
        known.at_ns = now;
        self.activity.privileged.remember(pid, known);
        if !self.activity.allow(owner, Allowance::Decision, now) {
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
        self.emit(owner, Kind::Escalation(Box::new(esc)), now, process, out);
    }
}

fn activity_event(template: &Event, kind: Kind, ktime_ns: u64, process: Process) -> Event {
    let mut e = template.clone();
    e.kind = kind;
    e.ktime_ns = ktime_ns;
    e.process = process;
    e
}
