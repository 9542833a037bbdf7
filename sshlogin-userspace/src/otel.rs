//! Events as OpenTelemetry log records: the event name, severity, body and
//! attributes (semantic conventions where one exists). The one place that
//! knows these names; the spool and every exporter carry [`LogRecord`]s.

mod activity;

use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};

use crate::event::{Agent, Counts, Event, FailureReason, FailureSummary, KeyInfo, Kind};

/// Attribute names (OpenTelemetry semantic conventions where one exists).
pub mod attr {
    pub use super::activity::attr::*;
    pub const USER_NAME: &str = "user.name";
    pub const USER_ID: &str = "user.id";
    pub const CLIENT_ADDRESS: &str = "client.address";
    pub const CLIENT_PORT: &str = "client.port";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const SERVER_PORT: &str = "server.port";
    pub const AUTH_METHOD: &str = "ssh.auth.method";
    pub const KEY_TYPE: &str = "ssh.key.type";
    pub const KEY_FINGERPRINT: &str = "ssh.key.fingerprint";
    pub const CERT_ID: &str = "ssh.cert.id";
    pub const CERT_SERIAL: &str = "ssh.cert.serial";
    pub const CERT_CA_TYPE: &str = "ssh.cert.ca.type";
    pub const CERT_CA_FINGERPRINT: &str = "ssh.cert.ca.fingerprint";
    pub const AUDIT_LOGIN_UID: &str = "linux.audit.login_uid";
    pub const AUDIT_SESSION_ID: &str = "linux.audit.session_id";
    pub const FORWARD_ADDRESS: &str = "ssh.forward.address";
    pub const FORWARD_PORT: &str = "ssh.forward.port";
    /// The forwarded connection's own end (semantic conventions' names).
    pub const NETWORK_LOCAL_ADDRESS: &str = "network.local.address";
    pub const NETWORK_LOCAL_PORT: &str = "network.local.port";
    pub const TERMINAL: &str = "ssh.terminal";
    /// The session's pseudo-terminal, once sshd has allocated one.
    pub const TTY: &str = "ssh.tty";
    pub const PROCESS_PID: &str = "process.pid";
    pub const PROCESS_PARENT_PID: &str = "process.parent_pid";
    pub const PROCESS_EXE: &str = "process.executable.path";
    pub const SESSION_DURATION_MS: &str = "ssh.session.duration_ms";
    pub const FAILURE_REASON: &str = "ssh.failure.reason";
    pub const CONNECTION_ID: &str = "ssh.connection.id";
    /// The connection whose forward (ProxyJump hop) this one came from.
    pub const JUMP_CONNECTION_ID: &str = "ssh.jump.connection.id";
    pub const PRIOR_FAILURES: &str = "ssh.auth.prior_failures";
    pub const PRIOR_FAILURE_USERS: &str = "ssh.auth.prior_failure_users";
    pub const FIRST_SEEN_CLIENT: &str = "ssh.first_seen.client";
    pub const FIRST_SEEN_KEY: &str = "ssh.first_seen.key";
    pub const FIRST_SEEN_LEARNING: &str = "ssh.first_seen.learning";
    /// Semantic conventions' id for de-duplicating log records.
    pub const RECORD_UID: &str = "log.record.uid";

    // ssh.auth.failure.summary
    pub const FAILURE_COUNT: &str = "ssh.failure.count";
    pub const FAILURE_FIRST_TIME: &str = "ssh.failure.first_time";
    pub const FAILURE_LAST_TIME: &str = "ssh.failure.last_time";
    pub const FAILURE_BY_USER: &str = "ssh.failure.by_user";
    pub const FAILURE_OTHER_USERS: &str = "ssh.failure.other_users";
    pub const FAILURE_DISTINCT_USERS: &str = "ssh.failure.distinct_users";
    pub const FAILURE_BY_REASON: &str = "ssh.failure.by_reason";

    // sshlogin.start, .heartbeat, .stop
    pub const AGENT_VERSION: &str = "sshlogin.version";
    pub const AGENT_BACKEND: &str = "sshlogin.probes";
    pub const AGENT_KERNEL: &str = "sshlogin.kernel";
    pub const AGENT_LAYOUT: &str = "sshlogin.sshd.layout";
    pub const AGENT_BINARIES: &str = "sshlogin.sshd.binaries";
    pub const AGENT_CONFIG: &str = "sshlogin.config";
    pub const HEARTBEAT_SEQ: &str = "sshlogin.heartbeat.seq";
    pub const HEARTBEAT_INTERVAL_MS: &str = "sshlogin.heartbeat.interval_ms";
    pub const HEARTBEAT_ELAPSED_MS: &str = "sshlogin.heartbeat.elapsed_ms";
    pub const STOP_REASON: &str = "sshlogin.stop.reason";
    pub const COUNT_EVENTS: &str = "sshlogin.events";
    pub const COUNT_KERNEL_DROPPED: &str = "sshlogin.kernel_dropped";
    pub const COUNT_REFUSED: &str = "sshlogin.refused";
    pub const COUNT_DECODE_ERRORS: &str = "sshlogin.decode_errors";
    pub const COUNT_FAILURES_FOLDED: &str = "sshlogin.failures_folded";
    pub const COUNT_EXPORT_FAILURES: &str = "sshlogin.export.failures";
    pub const COUNT_EVENTS_DROPPED: &str = "sshlogin.events_dropped";
    pub const COUNT_SPOOL_EVENTS: &str = "sshlogin.spool.events";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventName {
    #[serde(rename = "ssh.session.open")]
    SessionOpen,
    #[serde(rename = "ssh.session.close")]
    SessionClose,
    #[serde(rename = "ssh.auth.failure")]
    AuthFailure,
    #[serde(rename = "ssh.forward")]
    Forward,
    #[serde(rename = "ssh.auth.failure.summary")]
    FailureSummary,
    #[serde(rename = "sshlogin.start")]
    Start,
    #[serde(rename = "sshlogin.heartbeat")]
    Heartbeat,
    #[serde(rename = "sshlogin.stop")]
    Stop,
    #[serde(rename = "ssh.session.exec")]
    SessionExec,
    #[serde(rename = "ssh.session.escalation")]
    Escalation,
    #[serde(rename = "ssh.session.activity.summary")]
    ActivitySummary,
}

impl EventName {
    pub fn of(kind: &Kind) -> EventName {
        match kind {
            Kind::SessionOpen => EventName::SessionOpen,
            Kind::SessionClose { .. } => EventName::SessionClose,
            Kind::AuthFailure { .. } => EventName::AuthFailure,
            Kind::Forward { .. } => EventName::Forward,
            Kind::FailureSummary(_) => EventName::FailureSummary,
            Kind::Agent(a) => match **a {
                Agent::Start(_) => EventName::Start,
                Agent::Heartbeat { .. } => EventName::Heartbeat,
                Agent::Stop { .. } => EventName::Stop,
            },
            Kind::SessionExec(_) => EventName::SessionExec,
            Kind::Escalation(_) => EventName::Escalation,
            Kind::ActivitySummary { .. } => EventName::ActivitySummary,
        }
    }

    pub const ALL: &[EventName] = &[
        EventName::SessionOpen,
        EventName::SessionClose,
        EventName::AuthFailure,
        EventName::Forward,
        EventName::FailureSummary,
        EventName::Start,
        EventName::Heartbeat,
        EventName::Stop,
        EventName::SessionExec,
        EventName::Escalation,
        EventName::ActivitySummary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventName::SessionOpen => "ssh.session.open",
            EventName::SessionClose => "ssh.session.close",
            EventName::AuthFailure => "ssh.auth.failure",
            EventName::Forward => "ssh.forward",
            EventName::FailureSummary => "ssh.auth.failure.summary",
            EventName::Start => "sshlogin.start",
            EventName::Heartbeat => "sshlogin.heartbeat",
            EventName::Stop => "sshlogin.stop",
            EventName::SessionExec => "ssh.session.exec",
            EventName::Escalation => "ssh.session.escalation",
            EventName::ActivitySummary => "ssh.session.activity.summary",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            EventName::SessionOpen
            | EventName::SessionClose
            | EventName::Forward
            | EventName::Start
            | EventName::Heartbeat
            | EventName::Stop
            | EventName::SessionExec => Severity::Info,
            EventName::AuthFailure | EventName::FailureSummary | EventName::Escalation | EventName::ActivitySummary => {
                Severity::Warn
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warn,
}

impl Severity {
    /// OpenTelemetry SeverityNumber.
    pub fn number(self) -> i32 {
        match self {
            Severity::Info => 9,
            Severity::Warn => 13,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    /// A list of strings (an OTLP array value).
    List(Vec<String>),
    /// Named values (an OTLP key-value list): counts by name.
    Map(BTreeMap<String, Value>),
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<u64> for Value {
    /// Counters past i64 (never in practice) saturate.
    fn from(i: u64) -> Self {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<u16> for Value {
    fn from(i: u16) -> Self {
        Value::Int(i64::from(i))
    }
}

/// Keys are the `attr` constants (borrowed, no allocation per event), or
/// owned when read back from the spool.
pub type Attributes = BTreeMap<Cow<'static, str>, Value>;

/// One event as a log record. Serialized as is into the spool: its JSON
/// form is the spool's format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub name: EventName,
    /// When it happened, CLOCK_BOOTTIME nanoseconds.
    pub ktime_ns: u64,
    /// When it happened, Unix nanoseconds.
    pub time_unix_nano: u64,
    /// When sshlogin produced it, Unix nanoseconds.
    pub observed_time_unix_nano: u64,
    pub body: String,
    pub attributes: Attributes,
}

impl LogRecord {
    pub fn new(name: EventName, ktime_ns: u64) -> Self {
        LogRecord {
            name,
            ktime_ns,
            time_unix_nano: 0,
            observed_time_unix_nano: 0,
            body: String::new(),
            attributes: Attributes::new(),
        }
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.attributes.insert(Cow::Borrowed(key), value.into());
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key)? {
            Value::Str(s) => Some(s),
            Value::Int(_) | Value::Bool(_) | Value::List(_) | Value::Map(_) => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            Value::Int(i) => Some(*i),
            Value::Str(_) | Value::Bool(_) | Value::List(_) | Value::Map(_) => None,
        }
    }
}

impl FailureReason {
    /// `ssh.failure.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::WrongPassword => "wrong_password",
            FailureReason::PublickeyRejected => "publickey_rejected",
            FailureReason::InvalidUser => "invalid_user",
            FailureReason::MaxAuthTries => "max_auth_tries",
            FailureReason::PreauthDisconnect => "preauth_disconnect",
            FailureReason::AuthFailed => "auth_failed",
        }
    }
}

/// The record of `e`: its attributes and the sentence that is its body.
pub fn log_record(e: &Event) -> LogRecord {
    let mut a = Attributes::new();
    let mut set = |key: &'static str, value: Value| {
        a.insert(Cow::Borrowed(key), value);
    };
    let text = |s: &Option<String>| s.as_deref().map(Value::from);
    // user.id and the audit ids are strings in the semantic conventions.
    let id = |n: Option<u32>| n.map(|n| Value::Str(n.to_string()));
    let int = |n: Option<u64>| n.and_then(|n| i64::try_from(n).ok()).map(Value::Int);
    let fields = [
        (attr::USER_NAME, text(&e.user)),
        (attr::USER_ID, id(e.uid)),
        (attr::CLIENT_ADDRESS, e.client_address.map(|a| Value::Str(a.to_string()))),
        (attr::CLIENT_PORT, int(e.client_port.map(u64::from))),
        (attr::SERVER_ADDRESS, e.server.map(|s| Value::Str(s.ip().to_canonical().to_string()))),
        (attr::SERVER_PORT, int(e.server.map(|s| u64::from(s.port())))),
        (attr::AUTH_METHOD, text(&e.auth_method)),
        (attr::TERMINAL, text(&e.terminal)),
        (attr::TTY, text(&e.tty)),
        (attr::AUDIT_LOGIN_UID, id(e.audit_login_uid)),
        (attr::AUDIT_SESSION_ID, id(e.audit_session_id)),
        // 0: no process (a summary of many connections).
        (attr::PROCESS_PID, int(Some(u64::from(e.process.pid)).filter(|&p| p != 0))),
        (attr::PROCESS_PARENT_PID, int(e.process.parent_pid.map(u64::from))),
        (attr::PROCESS_EXE, text(&e.process.exe)),
        (attr::CONNECTION_ID, e.connection_id.map(|u| Value::Str(u.to_string()))),
        (attr::JUMP_CONNECTION_ID, e.before.jump_connection_id.map(|u| Value::Str(u.to_string()))),
        (attr::PRIOR_FAILURES, int(e.before.failures.map(u64::from))),
        (
            attr::PRIOR_FAILURE_USERS,
            (!e.before.failure_users.is_empty()).then(|| Value::List(e.before.failure_users.clone())),
        ),
        (attr::FIRST_SEEN_CLIENT, e.first_seen.client.map(Value::Bool)),
        (attr::FIRST_SEEN_KEY, e.first_seen.key.map(Value::Bool)),
        (attr::FIRST_SEEN_LEARNING, e.first_seen.learning.then_some(Value::Bool(true))),
        (attr::RECORD_UID, e.record_uid.map(|u| Value::Str(u.to_string()))),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            set(key, v);
        }
    }
    if let Some(k) = &e.key {
        set_key(&mut set, k);
    }
    match &e.kind {
        Kind::SessionOpen => {}
        Kind::SessionClose { duration_ms } => {
            if let Some(v) = int(*duration_ms) {
                set(attr::SESSION_DURATION_MS, v);
            }
        }
        Kind::AuthFailure { reason } => set(attr::FAILURE_REASON, reason.as_str().into()),
        Kind::Forward { to, from } => {
            set(attr::FORWARD_ADDRESS, Value::Str(to.ip().to_canonical().to_string()));
            set(attr::FORWARD_PORT, to.port().into());
            if let Some(from) = from {
                set(attr::NETWORK_LOCAL_ADDRESS, Value::Str(from.ip().to_canonical().to_string()));
                set(attr::NETWORK_LOCAL_PORT, from.port().into());
            }
        }
        Kind::FailureSummary(sum) => summary_attributes(&mut set, e, sum),
        Kind::Agent(agent) => agent_attributes(&mut set, agent),
        Kind::SessionExec(x) => activity::exec_attributes(&mut set, x),
        Kind::Escalation(x) => activity::escalation_attributes(&mut set, x),
        Kind::ActivitySummary { reported, suppressed } => {
            activity::summary_attributes(&mut set, *reported, *suppressed)
        }
    }
    LogRecord {
        name: EventName::of(&e.kind),
        ktime_ns: e.ktime_ns,
        time_unix_nano: e.time_unix_nano,
        observed_time_unix_nano: e.observed_time_unix_nano,
        body: describe(e),
        attributes: a,
    }
}

fn summary_attributes(set: &mut impl FnMut(&'static str, Value), e: &Event, sum: &FailureSummary) {
    set(attr::FAILURE_COUNT, sum.count.into());
    // The event's time is the last failure's; the first is that much earlier.
    let first = e.time_unix_nano.saturating_sub(e.ktime_ns.saturating_sub(sum.first_ns));
    set(attr::FAILURE_FIRST_TIME, rfc3339(first).into());
    set(attr::FAILURE_LAST_TIME, rfc3339(e.time_unix_nano).into());
    set(attr::FAILURE_BY_USER, counts(sum.by_user.iter().map(|(u, n)| (u.as_str(), u64::from(*n)))));
    set(attr::FAILURE_DISTINCT_USERS, sum.distinct_users.into());
    if sum.other_users > 0 {
        set(attr::FAILURE_OTHER_USERS, sum.other_users.into());
    }
    set(attr::FAILURE_BY_REASON, counts(sum.by_reason.iter().map(|(r, n)| (r.as_str(), u64::from(*n)))));
}

fn agent_attributes(set: &mut impl FnMut(&'static str, Value), agent: &Agent) {
    set(attr::AGENT_VERSION, env!("CARGO_PKG_VERSION").into());
    match agent {
        Agent::Start(s) => {
            set(attr::AGENT_BACKEND, s.backend.as_str().into());
            set(attr::AGENT_KERNEL, s.kernel.as_str().into());
            set(attr::AGENT_LAYOUT, s.layout.as_str().into());
            set(attr::AGENT_BINARIES, Value::List(s.binaries.clone()));
            set(
                attr::AGENT_CONFIG,
                Value::Map(s.config.iter().map(|(k, v)| (k.clone(), Value::Str(v.clone()))).collect()),
            );
        }
        Agent::Heartbeat { seq, interval_ms, elapsed_ms, counts } => {
            set(attr::HEARTBEAT_SEQ, (*seq).into());
            set(attr::HEARTBEAT_INTERVAL_MS, (*interval_ms).into());
            set(attr::HEARTBEAT_ELAPSED_MS, (*elapsed_ms).into());
            count_attributes(set, counts);
        }
        Agent::Stop { reason, counts } => {
            set(attr::STOP_REASON, reason.as_str().into());
            count_attributes(set, counts);
        }
    }
}

fn count_attributes(set: &mut impl FnMut(&'static str, Value), c: &Counts) {
    let pairs = |v: &[(String, u64)]| counts(v.iter().map(|(k, n)| (k.as_str(), *n)));
    set(attr::COUNT_EVENTS, pairs(&c.events));
    set(attr::COUNT_KERNEL_DROPPED, pairs(&c.kernel_dropped));
    set(attr::COUNT_REFUSED, pairs(&c.refused));
    set(attr::COUNT_DECODE_ERRORS, c.decode_errors.into());
    set(attr::COUNT_FAILURES_FOLDED, c.failures_folded.into());
    set(attr::COUNT_EXPORT_FAILURES, c.export_failures.into());
    set(attr::COUNT_EVENTS_DROPPED, c.events_dropped.into());
    set(attr::COUNT_SPOOL_EVENTS, Value::Int(c.spool_events));
}

fn counts<'a>(pairs: impl Iterator<Item = (&'a str, u64)>) -> Value {
    Value::Map(pairs.map(|(k, n)| (k.to_string(), Value::from(n))).collect())
}

fn rfc3339(unix_ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns);
    humantime::format_rfc3339_millis(t).to_string()
}

fn set_key(set: &mut impl FnMut(&'static str, Value), k: &KeyInfo) {
    set(attr::KEY_TYPE, k.key_type.as_str().into());
    set(attr::KEY_FINGERPRINT, k.fingerprint.as_str().into());
    let Some(c) = &k.cert else { return };
    set(attr::CERT_ID, c.id.as_str().into());
    if let Some(serial) = c.serial.and_then(|s| i64::try_from(s).ok()) {
        set(attr::CERT_SERIAL, serial.into());
    }
    if let Some(t) = &c.ca_type {
        set(attr::CERT_CA_TYPE, t.as_str().into());
    }
    if let Some(fp) = &c.ca_fingerprint {
        set(attr::CERT_CA_FINGERPRINT, fp.as_str().into());
    }
}

/// The human-readable sentence, e.g. "alice opened a session from
/// 192.0.2.7 port 51234 (publickey)".
pub fn describe(e: &Event) -> String {
    let user = e.user.as_deref().unwrap_or("an unknown user");
    let from = match (e.client_address, e.client_port) {
        (Some(a), Some(p)) => format!(" from {a} port {p}"),
        (Some(a), None) => format!(" from {a}"),
        _ => String::new(),
    };
    match &e.kind {
        Kind::SessionOpen => {
            let method = e.auth_method.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
            format!("{user} opened a session{from}{method}")
        }
        Kind::SessionClose { duration_ms } => {
            let took = duration_ms.map(|ms| format!(" after {}", human_duration(ms))).unwrap_or_default();
            format!("{user} closed a session{from}{took}")
        }
        Kind::AuthFailure { reason } => {
            format!("failed login for {user}{from}: {}", reason.as_str().replace('_', " "))
        }
        Kind::Forward { to, .. } => {
            format!("{user} forwarded a connection to {} port {} (session{from})", to.ip().to_canonical(), to.port())
        }
        Kind::FailureSummary(sum) => {
            let mut users: Vec<&(String, u32)> = sum.by_user.iter().collect();
            users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let named: Vec<String> = users.iter().take(3).map(|(u, n)| format!("{u} {n}")).collect();
            let more = if users.len() > 3 || sum.other_users > 0 { ", …" } else { "" };
            format!(
                "{} more failed logins{from} over {}: {}{more}",
                sum.count,
                human_duration(e.ktime_ns.saturating_sub(sum.first_ns) / 1_000_000),
                named.join(", ")
            )
        }
        Kind::Agent(agent) => match &**agent {
            Agent::Start(s) => {
                format!("sshlogin {} started: {} probes on {}", env!("CARGO_PKG_VERSION"), s.backend, s.kernel)
            }
            Agent::Heartbeat { elapsed_ms, counts, .. } => {
                let n: u64 = counts.events.iter().filter(|(name, _)| name.starts_with("ssh.")).map(|(_, n)| n).sum();
                format!("sshlogin is watching: {n} SSH events in the last {}", human_duration(*elapsed_ms))
            }
            Agent::Stop { reason, .. } => format!("sshlogin stopped: {reason}"),
        },
        Kind::SessionExec(_) => activity::describe_exec(e, user),
        Kind::Escalation(x) => activity::describe_escalation(x, user),
        Kind::ActivitySummary { reported, suppressed } => {
            format!(
                "{user}'s session{from}: {suppressed} execs or escalations left out by the rate limit, {reported} reported"
            )
        }
    }
}

fn human_duration(ms: u64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        ms => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Process;
    use uuid::Uuid;

    #[test]
    fn bodies_read_like_sentences() {
        let mut e = Event::new(Kind::SessionOpen, 1);
        e.user = Some("alice".into());
        e.client_address = Some("192.0.2.7".parse().unwrap());
        e.client_port = Some(51234);
        e.auth_method = Some("publickey".into());
        assert_eq!(describe(&e), "alice opened a session from 192.0.2.7 port 51234 (publickey)");
        e.kind = Kind::SessionClose { duration_ms: Some(61_500) };
        assert_eq!(describe(&e), "alice closed a session from 192.0.2.7 port 51234 after 1m01s");
        let f = Event::new(Kind::AuthFailure { reason: FailureReason::InvalidUser }, 1);
        assert_eq!(describe(&f), "failed login for an unknown user: invalid user");
        let mut g = e.clone();
        g.kind = Kind::Forward { to: "[::ffff:10.0.0.9]:22".parse().unwrap(), from: None };
        assert_eq!(
            describe(&g),
            "alice forwarded a connection to 10.0.0.9 port 22 (session from 192.0.2.7 port 51234)"
        );
    }

    #[test]
    fn a_list_attribute_survives_the_spool_format() {
        let mut e = Event::new(Kind::SessionOpen, 1);
        e.before.failures = Some(3);
        e.before.failure_users = vec!["admin".into(), "root".into()];
        let r = log_record(&e);
        assert_eq!(r.int(attr::PRIOR_FAILURES), Some(3));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""ssh.auth.prior_failure_users":["admin","root"]"#), "{json}");
        assert_eq!(serde_json::from_str::<LogRecord>(&json).unwrap(), r);
    }

    #[test]
    fn attributes_keep_their_wire_types() {
        let mut e = Event::new(Kind::SessionClose { duration_ms: Some(1500) }, 7);
        e.user = Some("alice".into());
        e.uid = Some(1001);
        e.client_address = Some("::1".parse().unwrap());
        e.client_port = Some(40000);
        e.server = Some("[::ffff:127.0.0.1]:22".parse().unwrap());
        e.audit_session_id = Some(12);
        e.process = Process { pid: 42, parent_pid: Some(41), exe: Some("/usr/sbin/sshd".into()) };
        e.connection_id = Some(Uuid::from_u128(1));
        let r = log_record(&e);
        assert_eq!(r.name, EventName::SessionClose);
        assert_eq!(r.str(attr::USER_ID), Some("1001"), "user.id is a string");
        assert_eq!(r.str(attr::AUDIT_SESSION_ID), Some("12"));
        assert_eq!(r.str(attr::CLIENT_ADDRESS), Some("::1"));
        assert_eq!(r.int(attr::CLIENT_PORT), Some(40000));
        assert_eq!(r.str(attr::SERVER_ADDRESS), Some("127.0.0.1"));
        assert_eq!(r.int(attr::SERVER_PORT), Some(22));
        assert_eq!(r.int(attr::SESSION_DURATION_MS), Some(1500));
        assert_eq!(r.int(attr::PROCESS_PID), Some(42));
        assert_eq!(r.int(attr::PROCESS_PARENT_PID), Some(41));
        assert_eq!(r.str(attr::CONNECTION_ID), Some("00000000-0000-0000-0000-000000000001"));
        assert_eq!(r.attributes.get(attr::AUDIT_LOGIN_UID), None, "what is not known is left out");
        assert_eq!(r.ktime_ns, 7);
    }
}
