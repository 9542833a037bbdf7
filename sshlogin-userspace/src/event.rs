//! The events sshlogin reports, typed: what the correlator found about a
//! connection and what `enrich` added. Nothing here is OpenTelemetry's
//! vocabulary; `otel` is the one place that maps an event to a log record.

use std::net::{IpAddr, SocketAddr};

use uuid::Uuid;

pub use crate::decode::syslog::{CertInfo, KeyInfo};

/// What happened, with the facts only that kind has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    SessionOpen,
    SessionClose {
        /// `None`: the session opened before sshlogin started.
        duration_ms: Option<u64>,
    },
    AuthFailure {
        reason: FailureReason,
    },
    /// A process of the session connected somewhere (`ssh -J`, `-L`, `-D`).
    Forward {
        to: SocketAddr,
        /// Its local end, when the daemon could still ask the socket: the
        /// next hop's `client.address` and `client.port`, to join them.
        from: Option<SocketAddr>,
    },
    /// The failures from one client address folded together after the
    /// first few of a window (`[failures] mode = "summary"`).
    FailureSummary(Box<FailureSummary>),
    /// sshlogin itself: started, still watching, stopped.
    Agent(Box<Agent>),
    /// A process of the session exec'd (the program is `process.exe`).
    SessionExec(Box<SessionExec>),
    /// Someone in the session tried to become another user.
    Escalation(Box<Escalation>),
    /// At the connection's end: session activity left out by the rate limit.
    ActivitySummary {
        reported: u64,
        suppressed: u64,
    },
}

/// An exec inside a session. Path, uids and parent are the kernel's; the
/// arguments are whatever the session passed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionExec {
    pub args: Vec<String>,
    pub args_cut: bool,
    /// Effective uid after the exec (`None`: not read).
    pub euid: Option<u32>,
    pub real_uid: u32,
    /// `sftp` or `scp`: the exec serves a file transfer.
    pub subsystem: Option<&'static str>,
}

/// sudo, su or a set-user-id program, and how it went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Escalation {
    pub success: bool,
    /// `sudo`, `su`, `setuid`, or the name of another program that said
    /// so through PAM (pkexec, doas).
    pub method: String,
    pub program: Option<String>,
    /// The account asked for, when known.
    pub target_user: Option<String>,
    pub target_uid: Option<u32>,
    /// sudo's command.
    pub command: Option<String>,
}

/// Failures from one client address within a window, beyond the ones sent
/// alone. The event's own time is the last one's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailureSummary {
    pub count: u32,
    /// CLOCK_BOOTTIME of the first failure folded in.
    pub first_ns: u64,
    /// Failures certainly by each user name tried, most first, at most 16
    /// names; the rest are counted in `other_users`.
    pub by_user: Vec<(String, u32)>,
    pub other_users: u32,
    /// Distinct names tried, counted exactly up to 64.
    pub distinct_users: u32,
    pub by_reason: Vec<(FailureReason, u32)>,
}

/// What the daemon says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agent {
    Start(Start),
    /// Every interval, with the counters since the one before.
    Heartbeat {
        seq: u64,
        interval_ms: u64,
        /// The time the counts cover: the interval, unless late.
        elapsed_ms: u64,
        counts: Counts,
    },
    Stop {
        reason: String,
        counts: Counts,
    },
}

/// What an operator needs to know the daemon watches what it should.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Start {
    pub version: String,
    /// The probes the kernel accepted (`tracepoints`, `raw`, `fentry`).
    pub backend: String,
    pub kernel: String,
    /// sshd's layout as found: `sshd-session` (OpenSSH 9.8+) or `single`.
    pub layout: String,
    /// The sshd binaries a process tree must run to be followed.
    pub binaries: Vec<String>,
    /// Settings that say what is watched and where it goes; no secrets.
    pub config: Vec<(String, String)>,
}

/// sshlogin's counters over a stretch of time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub events: Vec<(String, u64)>,
    pub kernel_dropped: Vec<(String, u64)>,
    pub refused: Vec<(String, u64)>,
    pub decode_errors: u64,
    /// Failed logins folded into summaries.
    pub failures_folded: u64,
    /// Export requests that failed, whatever then became of their events.
    pub export_failures: u64,
    /// Events given up on: dropped by a full spool or refused by an endpoint.
    pub events_dropped: u64,
    /// Events waiting in the spools now (a gauge, not a difference).
    pub spool_events: i64,
}

/// Why an authentication failed, as far as sshd's and PAM's records tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    WrongPassword,
    PublickeyRejected,
    InvalidUser,
    MaxAuthTries,
    /// The client named a user and left before any method failed.
    PreauthDisconnect,
    /// A method other than password or public key failed.
    AuthFailed,
}

/// The process an event is about: the session child when there is one,
/// the connection's monitor otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub parent_pid: Option<u32>,
    pub exe: Option<String>,
}

/// What came before a connection, as far as this daemon saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Before {
    /// The connection whose forward this one is (a ProxyJump hop).
    pub jump_connection_id: Option<Uuid>,
    /// On an open: the failed attempts from the same client address in the
    /// last ten minutes, and the user names they tried (at most 8).
    pub failures: Option<u32>,
    pub failure_users: Vec<String>,
}

/// Set by the first-seen store; `None` where it does not know (no address
/// or key, the store off or failing, or learning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirstSeenMarks {
    pub client: Option<bool>,
    pub key: Option<bool>,
    /// The store is new: marks are left out.
    pub learning: bool,
}

/// One event. `correlate` fills the kind, the time and the facts; `enrich`
/// fills the other half of user name and uid, the wall-clock times and the
/// record id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    /// When it happened, CLOCK_BOOTTIME nanoseconds.
    pub ktime_ns: u64,
    pub user: Option<String>,
    pub uid: Option<u32>,
    /// IPv4 clients as IPv4, even when sshd listens on an IPv6 socket.
    pub client_address: Option<IpAddr>,
    pub client_port: Option<u16>,
    /// The end of the connection on this host.
    pub server: Option<SocketAddr>,
    /// sshd's name for it: `password`, `publickey`, `keyboard-interactive/pam`...
    pub auth_method: Option<String>,
    pub key: Option<KeyInfo>,
    /// PAM's or sshd's terminal label (`ssh`, `sshd`).
    pub terminal: Option<String>,
    /// The session's pseudo-terminal, once sshd has allocated one.
    pub tty: Option<String>,
    pub audit_login_uid: Option<u32>,
    pub audit_session_id: Option<u32>,
    pub process: Process,
    /// Names the SSH connection in every event of it.
    pub connection_id: Option<Uuid>,
    /// What came before the connection.
    pub before: Before,
    /// On an open: whether its client address and key are new for its user.
    pub first_seen: FirstSeenMarks,
    /// When it happened, Unix nanoseconds.
    pub time_unix_nano: u64,
    /// When sshlogin produced it, Unix nanoseconds.
    pub observed_time_unix_nano: u64,
    /// Stable across replays of the same records: for de-duplication.
    pub record_uid: Option<Uuid>,
}

impl Event {
    pub fn new(kind: Kind, ktime_ns: u64) -> Self {
        Event {
            kind,
            ktime_ns,
            user: None,
            uid: None,
            client_address: None,
            client_port: None,
            server: None,
            auth_method: None,
            key: None,
            terminal: None,
            tty: None,
            audit_login_uid: None,
            audit_session_id: None,
            process: Process::default(),
            connection_id: None,
            before: Before::default(),
            first_seen: FirstSeenMarks::default(),
            time_unix_nano: 0,
            observed_time_unix_nano: 0,
            record_uid: None,
        }
    }
}

impl Counts {
    /// What these counted since `before` (the spool depth is this one's).
    pub fn since(&self, before: &Counts) -> Counts {
        let each = |now: &[(String, u64)], then: &[(String, u64)]| -> Vec<(String, u64)> {
            now.iter()
                .map(|(k, n)| {
                    let was = then.iter().find(|(b, _)| b == k).map_or(0, |(_, b)| *b);
                    (k.clone(), n.saturating_sub(was))
                })
                .collect()
        };
        Counts {
            events: each(&self.events, &before.events),
            kernel_dropped: each(&self.kernel_dropped, &before.kernel_dropped),
            refused: each(&self.refused, &before.refused),
            decode_errors: self.decode_errors.saturating_sub(before.decode_errors),
            failures_folded: self.failures_folded.saturating_sub(before.failures_folded),
            export_failures: self.export_failures.saturating_sub(before.export_failures),
            events_dropped: self.events_dropped.saturating_sub(before.events_dropped),
            spool_events: self.spool_events,
        }
    }
}

/// An address as a person reads it: an IPv4-mapped IPv6 address is the IPv4
/// address it carries.
pub fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}
