//! Failed authentication attempts, assembled from the records that describe
//! the same attempt.
//!
//! One failed password, as Debian's OpenSSH 9.2 reports it, is three records
//! from the monitor in this order: PAM's USER_AUTH `res=failed`, sshd's
//! "Failed password for ..." line and sshd's USER_LOGIN `res=failed`. An
//! invalid user is "Invalid user ..." then USER_LOGIN with
//! `acct="(invalid user)"`; a rejected key is USER_LOGIN alone. So records
//! merge into the attempt being assembled until one of a kind it already
//! has arrives (the next attempt has begun) or USER_LOGIN completes it.
//!
//! An invalid user is different: sshd sends USER_LOGIN `acct="(invalid user)"`
//! when it looks the name up (twice, from both privilege-separation halves,
//! in 9.2) before any method was tried, and sends none for a rejected key.
//! Such a USER_LOGIN completes an attempt only when the attempt holds a real
//! try (PAM's verdict or a "Failed ..." line); otherwise it only marks the
//! user invalid. An invalid user who offers one key is one failure.

use crate::{
    decode::syslog::{KeyInfo, Peer},
    event::FailureReason,
};

/// Which kind of record contributed to an attempt (a bit each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// PAM's USER_AUTH `res=failed`.
    AuditAuth = 1,
    /// sshd's USER_LOGIN `res=failed`: always the last of an attempt.
    AuditLogin = 2,
    /// "Failed METHOD for ..."
    SyslogFailed = 4,
    /// "Invalid user ..."
    SyslogInvalid = 8,
    /// USER_LOGIN `acct="(invalid user)"` before any real try: a mark, not
    /// an attempt. Never collides, as there may be several.
    InvalidMarker = 0,
}

/// What one record says about a failed attempt.
#[derive(Clone, Debug, Default)]
pub struct Fact {
    pub ktime_ns: u64,
    pub user: Option<String>,
    pub invalid: bool,
    pub method: Option<String>,
    pub key: Option<KeyInfo>,
    pub peer: Option<Peer>,
    pub terminal: Option<String>,
}

/// An attempt being assembled.
#[derive(Clone, Debug, Default)]
pub struct Attempt {
    /// What its records said, merged; the time is its first record's.
    pub fact: Fact,
    /// Time of its latest record.
    pub last_ns: u64,
    pub(super) sources: u8,
    pub max_tries: bool,
}

impl Attempt {
    /// Whether `fact` from `source` describes this attempt rather than a new one.
    pub fn accepts(&self, source: Source, fact: &Fact) -> bool {
        if self.sources & source as u8 != 0 {
            return false;
        }
        match (&self.fact.user, &fact.user) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Whether the attempt holds a real try, not just the name look-up.
    pub fn has_try(&self) -> bool {
        self.sources & (Source::AuditAuth as u8 | Source::SyslogFailed as u8) != 0
    }

    pub fn merge(&mut self, source: Source, fact: Fact) {
        let mine = &mut self.fact;
        if mine.ktime_ns == 0 {
            mine.ktime_ns = fact.ktime_ns;
        }
        self.sources |= source as u8;
        self.last_ns = self.last_ns.max(fact.ktime_ns);
        mine.invalid |= fact.invalid;
        if mine.user.is_none() {
            mine.user = fact.user;
        }
        if fact.method.is_some() {
            mine.method = fact.method;
        }
        if fact.key.is_some() {
            mine.key = fact.key;
        }
        if fact.peer.is_some() {
            mine.peer = fact.peer;
        }
        // PAM's terminal (e.g. "ssh") says more than sshd's label "sshd".
        if mine.terminal.is_none() || source == Source::AuditAuth {
            mine.terminal = fact.terminal.or(mine.terminal.take());
        }
    }

    pub fn reason(&self) -> FailureReason {
        if self.max_tries {
            FailureReason::MaxAuthTries
        } else if self.fact.invalid {
            FailureReason::InvalidUser
        } else {
            match self.fact.method.as_deref() {
                Some("password") => FailureReason::WrongPassword,
                Some("publickey") => FailureReason::PublickeyRejected,
                Some(m) if m.starts_with("keyboard-interactive") => FailureReason::WrongPassword,
                _ => FailureReason::AuthFailed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(user: Option<&str>) -> Fact {
        Fact { user: user.map(str::to_string), ..Fact::default() }
    }

    #[test]
    fn one_attempt_per_kind_of_record() {
        let mut a = Attempt::default();
        assert!(a.accepts(Source::AuditAuth, &fact(Some("bob"))));
        a.merge(Source::AuditAuth, Fact { ktime_ns: 5, ..fact(Some("bob")) });
        assert!(a.accepts(Source::SyslogFailed, &fact(Some("bob"))));
        a.merge(Source::SyslogFailed, Fact { ktime_ns: 9, method: Some("password".into()), ..fact(Some("bob")) });
        assert!(!a.accepts(Source::AuditAuth, &fact(Some("bob"))), "a second USER_AUTH is a new attempt");
        assert!(!a.accepts(Source::AuditLogin, &fact(Some("alice"))), "another user is a new attempt");
        assert!(a.accepts(Source::AuditLogin, &fact(None)));
        assert_eq!((a.fact.ktime_ns, a.last_ns), (5, 9));
        assert_eq!(a.reason(), FailureReason::WrongPassword);
    }

    #[test]
    fn reasons() {
        let fact = Fact { invalid: true, method: Some("password".into()), ..Fact::default() };
        let mut a = Attempt { fact, ..Attempt::default() };
        assert_eq!(a.reason(), FailureReason::InvalidUser);
        a.max_tries = true;
        assert_eq!(a.reason(), FailureReason::MaxAuthTries);
        assert_eq!(Attempt::default().reason(), FailureReason::AuthFailed);
        let k = Attempt { fact: Fact { method: Some("publickey".into()), ..Fact::default() }, ..Attempt::default() };
        assert_eq!(k.reason(), FailureReason::PublickeyRejected);
    }
}
