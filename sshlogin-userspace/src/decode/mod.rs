//! Bytes from the ring buffer to typed records. Pure and total: every input,
//! however short or garbled, gives a record or a [`DecodeError`], never a
//! panic. The kernel half's layouts are not trusted; every length is checked.

pub mod activity;
pub mod audit;
pub mod syslog;

pub use activity::{SessionExec, SessionMeta};

use sshlogin_common::{COMM_LEN, MessageError, SOCKADDR_CAP, TEXT_CAP, exec, kind, layout, u32_at};

/// `bytes` as text, invalid UTF-8 replaced. The standard library's lossy
/// conversion walks valid text byte by byte (7.6 % of the pipeline bench);
/// checking it whole first takes its word-at-a-time path.
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Who sent a record and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Process id (thread group id).
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// CLOCK_BOOTTIME, nanoseconds.
    pub ktime_ns: u64,
    pub comm: Comm,
    /// The sshd process tree the sender belonged to when the record was made.
    pub tree: TreeId,
}

/// An sshd process tree: the pid of the process whose exec (or the
/// daemon's scan at start) made it, and when (CLOCK_BOOTTIME ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeId {
    pub root: u32,
    pub ns: u64,
}

/// What an exec did to a member (`sshlogin_common::exec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exec {
    /// A root process that was no member exec'd an sshd name: a new tree.
    NewTree,
    /// A member exec'd an sshd name and stays in its tree.
    Stayed,
    /// A member exec'd something else and left its tree.
    Left,
}

/// A task's `comm` as the kernel stores it: at most 15 bytes, NUL padded.
/// Kept inline: a record is decoded per syscall of interest, and a String
/// here would be an allocation each.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Comm([u8; COMM_LEN]);

impl Comm {
    pub fn new(raw: &[u8]) -> Comm {
        let mut c = [0u8; COMM_LEN];
        let n = raw.len().min(COMM_LEN);
        c[..n].copy_from_slice(&raw[..n]);
        Comm(c)
    }

    /// The bytes up to the first NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.0[..end]
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// One record from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An audit message sent to the kernel over NETLINK_AUDIT.
    Audit { meta: Meta, audit: audit::AuditMessage },
    /// A syslog line sent to /dev/log.
    Syslog { meta: Meta, line: Box<syslog::SyslogLine> },
    /// A permanent drop from root to `uid` (`setresuid(uid, uid, uid)`).
    Setresuid { meta: Meta, uid: u32 },
    /// `meta.pid` forked `child`.
    Fork { meta: Meta, child: u32 },
    /// `meta.pid` exited.
    Exit { meta: Meta },
    /// A member that dropped root connected socket `fd` to `addr`.
    Connect { meta: Meta, fd: u32, addr: std::net::SocketAddr },
    /// `meta.pid` exec'd a binary now called `meta.comm`.
    Exec { meta: Meta, how: Exec },
    /// A session process exec'd.
    SessionExec(Box<SessionExec>),
    /// A privileged session process (sudo, su) sent an audit message.
    SessionAudit { who: SessionMeta, audit: audit::AuditMessage },
}

impl Record {
    pub fn meta(&self) -> &Meta {
        match self {
            Record::Audit { meta, .. }
            | Record::Syslog { meta, .. }
            | Record::Setresuid { meta, .. }
            | Record::Fork { meta, .. }
            | Record::Exit { meta }
            | Record::Connect { meta, .. }
            | Record::Exec { meta, .. } => meta,
            Record::SessionExec(e) => &e.who.meta,
            Record::SessionAudit { who, .. } => &who.meta,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need} its kind {kind} needs")]
    Short { kind: u32, len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("message record claims {copied} copied bytes, more than the {cap} it can hold")]
    BadLength { copied: usize, cap: usize },
    #[error("audit message: {0}")]
    Audit(#[from] audit::AuditError),
    #[error("connect record without an IPv4 or IPv6 address")]
    BadAddress,
    #[error("exec record of unknown kind {0}")]
    BadExec(u32),
}

/// `sockaddr_in` or `sockaddr_in6` (family in host order, port and address
/// in network order).
fn sockaddr(raw: &[u8]) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    let family = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    match family {
        2 => Some(SocketAddr::from((Ipv4Addr::from(<[u8; 4]>::try_from(raw.get(4..8)?).ok()?), port))),
        10 => Some(SocketAddr::from((Ipv6Addr::from(<[u8; 16]>::try_from(raw.get(8..24)?).ok()?), port))),
        _ => None,
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn need(bytes: &[u8], kind: u32, size: usize) -> Result<(), DecodeError> {
    if bytes.len() < size {
        return Err(DecodeError::Short { kind, len: bytes.len(), need: size });
    }
    Ok(())
}

fn meta(bytes: &[u8]) -> Meta {
    // Callers have checked the header length; the unwraps cannot fail, but
    // defaulting keeps this function total without relying on that.
    Meta {
        pid: u32_at(bytes, 4).unwrap_or_default(),
        tid: u32_at(bytes, 8).unwrap_or_default(),
        uid: u32_at(bytes, 12).unwrap_or_default(),
        gid: u32_at(bytes, 16).unwrap_or_default(),
        ktime_ns: u64_at(bytes, 24).unwrap_or_default(),
        comm: Comm::new(bytes.get(32..32 + COMM_LEN).unwrap_or_default()),
        tree: TreeId { root: u32_at(bytes, 20).unwrap_or_default(), ns: u64_at(bytes, 48).unwrap_or_default() },
    }
}

/// The message bytes of an audit or syslog record.
fn message(bytes: &[u8], kind: u32) -> Result<&[u8], DecodeError> {
    sshlogin_common::message_data(bytes).map_err(|e| match e {
        MessageError::Short { need } => DecodeError::Short { kind, len: bytes.len(), need },
        MessageError::BadLength { copied } => DecodeError::BadLength { copied, cap: TEXT_CAP },
    })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let kind = u32_at(bytes, 0).ok_or(DecodeError::Short { kind: 0, len: bytes.len(), need: 4 })?;
    need(bytes, kind, layout::HEADER_SIZE)?;
    let meta = meta(bytes);
    match kind {
        kind::AUDIT => {
            let full_len = u32_at(bytes, layout::MESSAGE_LEN).unwrap_or_default() as usize;
            let data = message(bytes, kind)?;
            let audit = audit::parse_netlink(data, full_len > data.len())?;
            Ok(Record::Audit { meta, audit })
        }
        kind::SYSLOG => {
            let full_len = u32_at(bytes, layout::MESSAGE_LEN).unwrap_or_default() as usize;
            let data = message(bytes, kind)?;
            Ok(Record::Syslog { meta, line: Box::new(syslog::parse(data, full_len > data.len())) })
        }
        kind::SETRESUID => {
            need(bytes, kind, layout::SETRESUID_SIZE)?;
            let uid = u32_at(bytes, layout::HEADER_SIZE).unwrap_or(u32::MAX);
            Ok(Record::Setresuid { meta, uid })
        }
        kind::FORK => {
            need(bytes, kind, layout::FORK_SIZE)?;
            let child = u32_at(bytes, layout::HEADER_SIZE).unwrap_or_default();
            Ok(Record::Fork { meta, child })
        }
        kind::EXIT => Ok(Record::Exit { meta }),
        kind::CONNECT => {
            need(bytes, kind, layout::CONNECT_SIZE)?;
            let fd = u32_at(bytes, layout::CONNECT_FD).unwrap_or_default();
            let raw = bytes.get(layout::CONNECT_ADDR..layout::CONNECT_ADDR + SOCKADDR_CAP).unwrap_or_default();
            let addr = sockaddr(raw).ok_or(DecodeError::BadAddress)?;
            Ok(Record::Connect { meta, fd, addr })
        }
        kind::EXEC => {
            need(bytes, kind, layout::EXEC_SIZE)?;
            let how = match u32_at(bytes, layout::HEADER_SIZE).unwrap_or_default() {
                exec::NEW_TREE => Exec::NewTree,
                exec::STAYED => Exec::Stayed,
                exec::LEFT => Exec::Left,
                other => return Err(DecodeError::BadExec(other)),
            };
            Ok(Record::Exec { meta, how })
        }
        kind::SESSION_EXEC => activity::decode_exec(bytes),
        kind::SESSION_AUDIT => activity::decode_audit(bytes),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::fixture;

    #[test]
    fn text_is_borrowed_when_valid_and_replaced_when_not() {
        assert!(matches!(text(b"op=login acct=\"alice\""), std::borrow::Cow::Borrowed("op=login acct=\"alice\"")));
        assert_eq!(text(b"a\xffb\xc3"), "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn every_kind_from_a_real_capture() {
        let records: Vec<Record> = fixture("pam-key-login").iter().map(|r| decode(r).unwrap()).collect();
        let has = |f: fn(&Record) -> bool| records.iter().any(f);
        assert!(has(|r| matches!(r, Record::Fork { .. })));
        assert!(has(|r| matches!(r, Record::Exit { .. })));
        assert!(has(|r| matches!(r, Record::Setresuid { uid: 1001, .. })));
        assert!(has(|r| matches!(r, Record::Setresuid { uid: 102, .. })));
        assert!(has(|r| matches!(r, Record::Syslog { .. })));
        let Some(Record::Audit { meta, audit }) = records
            .iter()
            .find(|r| matches!(r, Record::Audit { audit, .. } if audit.msg_type == audit::types::USER_START))
        else {
            panic!("no USER_START")
        };
        assert_eq!(meta.comm, "sshd");
        assert_eq!(meta.uid, 0);
        assert_eq!(audit.acct().as_deref(), Some("sl-alice"));
        assert_eq!(audit.success(), Some(true));
        assert!(!audit.truncated);
    }

    #[test]
    fn every_prefix_and_every_bit_flip_is_handled() {
        for record in fixture("pam-password-fail-then-ok") {
            for len in 0..=record.len() {
                let _ = decode(&record[..len]);
            }
            for i in (0..record.len()).step_by(7) {
                let mut bad = record.clone();
                bad[i] ^= 0xff;
                let _ = decode(&bad);
            }
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(decode(&[]), Err(DecodeError::Short { kind: 0, len: 0, need: 4 }));
        let mut r = vec![0u8; layout::HEADER_SIZE];
        r[0] = 99;
        assert_eq!(decode(&r), Err(DecodeError::UnknownKind(99)));
        let mut m = vec![0u8; layout::MESSAGE_SIZE];
        m[..4].copy_from_slice(&kind::AUDIT.to_ne_bytes());
        m[layout::MESSAGE_COPIED..layout::MESSAGE_COPIED + 4].copy_from_slice(&5000u32.to_ne_bytes());
        assert_eq!(decode(&m), Err(DecodeError::BadLength { copied: 5000, cap: TEXT_CAP }));
        m[layout::MESSAGE_COPIED..layout::MESSAGE_COPIED + 4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(matches!(decode(&m), Err(DecodeError::Audit(_))));
        let short_fork = [kind::FORK.to_ne_bytes().as_slice(), &[0u8; 56]].concat();
        assert!(matches!(decode(&short_fork), Err(DecodeError::Short { kind: kind::FORK, .. })));
    }

    #[test]
    fn connect_addresses() {
        let mut r = vec![0u8; layout::CONNECT_SIZE];
        r[..4].copy_from_slice(&kind::CONNECT.to_ne_bytes());
        let a = layout::CONNECT_ADDR;
        r[a..a + 2].copy_from_slice(&2u16.to_ne_bytes());
        r[a + 2..a + 4].copy_from_slice(&22u16.to_be_bytes());
        r[a + 4..a + 8].copy_from_slice(&[10, 200, 2, 2]);
        let Ok(Record::Connect { addr, .. }) = decode(&r) else { panic!() };
        assert_eq!(addr, "10.200.2.2:22".parse().unwrap());
        r[a..a + 2].copy_from_slice(&10u16.to_ne_bytes());
        r[a + 8..a + 24].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        let Ok(Record::Connect { addr, .. }) = decode(&r) else { panic!() };
        assert_eq!(addr, "[::1]:22".parse().unwrap());
        r[a..a + 2].copy_from_slice(&1u16.to_ne_bytes());
        assert_eq!(decode(&r), Err(DecodeError::BadAddress));
    }

    #[test]
    fn truncated_messages_are_marked() {
        let mut m = vec![0u8; layout::MESSAGE_SIZE];
        m[..4].copy_from_slice(&kind::SYSLOG.to_ne_bytes());
        let text = b"<38>Nov 26 17:24:40 sshd[1]: Invalid user x from 1.2.3.4 port 5";
        m[layout::MESSAGE_LEN..layout::MESSAGE_LEN + 4].copy_from_slice(&4000u32.to_ne_bytes());
        m[layout::MESSAGE_COPIED..layout::MESSAGE_COPIED + 4].copy_from_slice(&(text.len() as u32).to_ne_bytes());
        m[layout::MESSAGE_DATA..layout::MESSAGE_DATA + text.len()].copy_from_slice(text);
        let Ok(Record::Syslog { line, .. }) = decode(&m) else { panic!() };
        assert!(line.truncated);
    }
}
