//! The event sshlogin reports: one per session opened or closed and per
//! failed authentication, with OpenTelemetry-style attributes.

use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};

/// Attribute names (OpenTelemetry semantic conventions where one exists).
pub mod attr {
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
    pub const TERMINAL: &str = "ssh.terminal";
    /// The session's pseudo-terminal, once sshd has allocated one.
    pub const TTY: &str = "ssh.tty";
    pub const PROCESS_PID: &str = "process.pid";
    pub const PROCESS_PARENT_PID: &str = "process.parent_pid";
    pub const PROCESS_EXE: &str = "process.executable.path";
    pub const SESSION_DURATION_MS: &str = "ssh.session.duration_ms";
    pub const FAILURE_REASON: &str = "ssh.failure.reason";
    pub const CONNECTION_ID: &str = "ssh.connection.id";
    /// Semantic conventions' id for de-duplicating log records.
    pub const RECORD_UID: &str = "log.record.uid";
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
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::SessionOpen => "ssh.session.open",
            EventName::SessionClose => "ssh.session.close",
            EventName::AuthFailure => "ssh.auth.failure",
            EventName::Forward => "ssh.forward",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            EventName::SessionOpen | EventName::SessionClose | EventName::Forward => Severity::Info,
            EventName::AuthFailure => Severity::Warn,
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
impl From<u16> for Value {
    fn from(i: u16) -> Self {
        Value::Int(i64::from(i))
    }
}

/// Keys are the `attr` constants (borrowed, no allocation per event), or
/// owned when read back from the spool.
pub type Attributes = BTreeMap<Cow<'static, str>, Value>;

/// One event. `correlate` fills the name, the kernel time and the facts;
/// `enrich` adds wall-clock times, looked-up facts, the body and the id.
/// Serialized as is into the spool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
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

impl Event {
    pub fn new(name: EventName, ktime_ns: u64) -> Self {
        Event {
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
            Value::Int(_) => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            Value::Int(i) => Some(*i),
            Value::Str(_) => None,
        }
    }

    /// The human-readable sentence, e.g. "alice opened a session from
    /// 192.0.2.7 port 51234 (publickey)".
    pub fn describe(&self) -> String {
        let user = self.str(attr::USER_NAME).unwrap_or("an unknown user");
        let from = match (self.str(attr::CLIENT_ADDRESS), self.int(attr::CLIENT_PORT)) {
            (Some(a), Some(p)) => format!(" from {a} port {p}"),
            (Some(a), None) => format!(" from {a}"),
            _ => String::new(),
        };
        match self.name {
            EventName::SessionOpen => {
                let method = self.str(attr::AUTH_METHOD).map(|m| format!(" ({m})")).unwrap_or_default();
                format!("{user} opened a session{from}{method}")
            }
            EventName::SessionClose => {
                let took = self
                    .int(attr::SESSION_DURATION_MS)
                    .map(|ms| format!(" after {}", human_duration(ms)))
                    .unwrap_or_default();
                format!("{user} closed a session{from}{took}")
            }
            EventName::AuthFailure => {
                let why =
                    self.str(attr::FAILURE_REASON).map(|r| format!(": {}", r.replace('_', " "))).unwrap_or_default();
                format!("failed login for {user}{from}{why}")
            }
            EventName::Forward => {
                let to = match (self.str(attr::FORWARD_ADDRESS), self.int(attr::FORWARD_PORT)) {
                    (Some(a), Some(p)) => format!("{a} port {p}"),
                    _ => "somewhere".to_string(),
                };
                format!("{user} forwarded a connection to {to} (session{from})")
            }
        }
    }
}

fn human_duration(ms: i64) -> String {
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

    #[test]
    fn bodies_read_like_sentences() {
        let mut e = Event::new(EventName::SessionOpen, 1);
        e.set(attr::USER_NAME, "alice");
        e.set(attr::CLIENT_ADDRESS, "192.0.2.7");
        e.set(attr::CLIENT_PORT, 51234u16);
        e.set(attr::AUTH_METHOD, "publickey");
        assert_eq!(e.describe(), "alice opened a session from 192.0.2.7 port 51234 (publickey)");
        e.name = EventName::SessionClose;
        e.set(attr::SESSION_DURATION_MS, 61_500i64);
        assert_eq!(e.describe(), "alice closed a session from 192.0.2.7 port 51234 after 1m01s");
        let mut f = Event::new(EventName::AuthFailure, 1);
        f.set(attr::FAILURE_REASON, "invalid_user");
        assert_eq!(f.describe(), "failed login for an unknown user: invalid user");
    }
}
