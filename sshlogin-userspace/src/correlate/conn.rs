//! One SSH connection (a monitor process) and what is known of it, and the
//! bounded table that holds them.

use std::net::{IpAddr, SocketAddr};

use uuid::Uuid;

use super::{attempt::Attempt, process::PidMap};
use crate::decode::syslog::{KeyInfo, Peer};

/// The session of a connection.
#[derive(Clone, Debug, Default)]
pub enum Session {
    #[default]
    None,
    /// No PAM: a child forked after authentication dropped to the user. It
    /// opens once it has not exec'd something else at once (as a helper
    /// would) or does something a session child does.
    Candidate {
        ktime_ns: u64,
        child: u32,
        uid: u32,
    },
    /// PAM opened it; the session child has not dropped privileges yet.
    Pending {
        ktime_ns: u64,
        terminal: Option<String>,
    },
    Open {
        /// `None`: it opened before sshlogin started.
        ktime_ns: Option<u64>,
        child: Option<u32>,
        /// Whether PAM opened it (so PAM closes it); `None`: not known.
        pam: Option<bool>,
        terminal: Option<String>,
    },
    Closed,
}

impl Session {
    /// Whether a user got in: such a connection is never evicted.
    pub fn is_live(&self) -> bool {
        matches!(self, Session::Candidate { .. } | Session::Pending { .. } | Session::Open { .. })
    }
}

#[derive(Default)]
pub struct Conn {
    pub monitor: u32,
    pub id: Uuid,
    /// When the monitor was forked (or found), CLOCK_BOOTTIME.
    pub created_ns: u64,
    pub peer: Option<Peer>,
    /// Client address from audit records (no port there).
    pub addr: Option<IpAddr>,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub method: Option<String>,
    pub key: Option<KeyInfo>,
    pub exe: Option<String>,
    /// A user name the client gave, valid or not, as the close line names it.
    pub named_user: Option<String>,
    pub invalid_user: Option<String>,
    /// The pseudo-terminal sshd allocated (its USER_LOGIN `res=success`).
    pub tty: Option<String>,
    /// (server, client) ends of the connection, from the monitor's socket.
    pub socket: Option<(SocketAddr, SocketAddr)>,
    /// The socket was asked for again, at the monitor's first word.
    pub socket_asked_again: bool,
    /// The session's audit login uid and session id.
    pub audit_ids: (Option<u32>, Option<u32>),
    /// When authentication succeeded: the pre-authentication child exited,
    /// or sshd or PAM said so.
    pub auth_ns: Option<u64>,
    /// PAM runs for this connection (it sent a PAM record): its session
    /// opens on USER_START, never on a privilege drop.
    pub pam: bool,
    pub attempt: Option<Attempt>,
    pub failures: u32,
    pub session: Session,
}

/// Connections tracked; beyond this the oldest that have no session are
/// evicted (a pre-authentication flood), never one a user got into.
pub const MAX_CONNS: usize = 1 << 14;

#[derive(Default)]
pub struct Conns {
    map: PidMap<Conn>,
    /// Connections evicted to stay within [`MAX_CONNS`]; taken by the caller.
    pub evicted: u64,
}

impl Conns {
    pub fn get(&self, m: &u32) -> Option<&Conn> {
        self.map.get(m)
    }

    pub fn get_mut(&mut self, m: &u32) -> Option<&mut Conn> {
        self.map.get_mut(m)
    }

    pub fn contains(&self, m: &u32) -> bool {
        self.map.contains_key(m)
    }

    pub fn remove(&mut self, m: &u32) -> Option<Conn> {
        self.map.remove(m)
    }

    pub fn monitors(&self) -> Vec<u32> {
        self.map.keys().copied().collect()
    }

    pub fn values(&self) -> impl Iterator<Item = &Conn> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds `conn`, first evicting, when full, the oldest eighth of the
    /// connections without a session. Returns the monitors evicted.
    pub fn insert(&mut self, conn: Conn) -> Vec<u32> {
        let mut evicted = Vec::new();
        if self.map.len() >= MAX_CONNS {
            let mut idle: Vec<(u64, u32)> =
                self.map.values().filter(|c| !c.session.is_live()).map(|c| (c.created_ns, c.monitor)).collect();
            idle.sort_unstable();
            for (_, m) in idle.into_iter().take(MAX_CONNS / 8) {
                self.map.remove(&m);
                evicted.push(m);
            }
            self.evicted += evicted.len() as u64;
        }
        self.map.insert(conn.monitor, conn);
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(monitor: u32, created_ns: u64, session: Session) -> Conn {
        Conn { monitor, created_ns, session, ..Conn::default() }
    }

    #[test]
    fn a_full_table_evicts_the_oldest_unauthenticated_never_a_session() {
        let mut c = Conns::default();
        let open = || Session::Open { ktime_ns: Some(1), child: None, pam: Some(true), terminal: None };
        // The oldest connections have sessions; then a pre-auth flood.
        for m in 0..100 {
            c.insert(conn(m, u64::from(m), open()));
        }
        for m in 100..MAX_CONNS as u32 {
            c.insert(conn(m, u64::from(m), Session::None));
        }
        let evicted = c.insert(conn(999_999, u64::MAX, Session::None));
        assert_eq!(evicted.len(), MAX_CONNS / 8);
        assert_eq!(evicted.iter().min(), Some(&100), "the oldest pre-auth connection went first");
        assert!(evicted.iter().all(|&m| m >= 100));
        assert!((0..100).all(|m| c.contains(&m)), "no session was evicted");
        assert!(c.contains(&999_999));
        assert_eq!(c.evicted, (MAX_CONNS / 8) as u64);
    }
}
