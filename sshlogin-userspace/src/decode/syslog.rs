//! sshd's syslog lines: `<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE`, as glibc's
//! syslog(3) sends them to /dev/log, and the few MESSAGE forms that carry
//! facts the audit records lack (port, method, key).
//!
//! User names in these lines come from the client and may contain spaces or
//! even " from ": the address part is therefore matched from the end of the
//! line, where sshd itself wrote it, and must be an IP address.

use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogLine {
    /// `TAG` before `[PID]:`, e.g. `sshd` or `sshd-session`.
    pub tag: String,
    pub pid: Option<u32>,
    /// The text after `TAG[PID]: `.
    pub message: String,
    pub parsed: SshdMessage,
    /// The sender's line was longer than what the probe copied.
    pub truncated: bool,
}

/// Where a client came from, as sshd logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr: IpAddr,
    pub port: u16,
}

/// The public key or certificate sshd names after `ssh2: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// e.g. `ED25519`, `RSA`, `ED25519-CERT`.
    pub key_type: String,
    /// `SHA256:...`
    pub fingerprint: String,
    pub cert: Option<CertInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub id: String,
    pub serial: Option<u64>,
    pub ca_type: Option<String>,
    pub ca_fingerprint: Option<String>,
}

/// How sshd described the user of a closing connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserState {
    /// `authenticating user X`: a valid user that had not logged in.
    Authenticating,
    /// `invalid user X`.
    Invalid,
    /// `user X`: logged in.
    LoggedIn,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshdMessage {
    /// `Accepted METHOD for USER from ADDR port PORT ssh2[: KEY]`
    Accepted { method: String, user: String, peer: Peer, key: Option<KeyInfo> },
    /// `Failed METHOD for [invalid user ]USER from ADDR port PORT ssh2[: KEY]`
    Failed { method: String, user: String, invalid: bool, peer: Peer, key: Option<KeyInfo> },
    /// `Invalid user USER from ADDR port PORT`
    InvalidUser { user: String, peer: Peer },
    /// `maximum authentication attempts exceeded for [invalid user ]USER from ADDR port PORT ssh2`
    MaxAuthTries { user: String, invalid: bool, peer: Peer },
    /// `Connection closed by|Connection reset by|Disconnected from [STATE USER ]ADDR port PORT`
    Closed { user: Option<(UserState, String)>, peer: Peer, preauth: bool },
    /// `pam_unix(sshd:session): session opened for user USER(uid=N) by ...`
    PamSessionOpened { user: String, uid: Option<u32> },
    /// `error: PAM: Authentication failure for [illegal user ]USER from HOST`:
    /// a keyboard-interactive failure (no port in this line).
    PamAuthFailure { user: String, invalid: bool, host: String },
    /// Anything else.
    Other,
}

/// Parses one datagram. Never fails: what cannot be understood is `Other`.
pub fn parse(data: &[u8], truncated: bool) -> SyslogLine {
    let text = super::text(data);
    let text = text.trim_end_matches(['\0', '\n', '\r']);
    let after_pri = match text.strip_prefix('<').and_then(|t| t.split_once('>')) {
        Some((pri, rest)) if pri.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => text,
    };
    // glibc writes a fixed-width "Mmm dd hh:mm:ss " timestamp.
    let after_time = match after_pri.get(..16) {
        Some(ts) if ts.as_bytes()[3] == b' ' && ts.as_bytes()[15] == b' ' && ts.as_bytes()[9] == b':' => {
            &after_pri[16..]
        }
        _ => after_pri,
    };
    let (tag, pid, message) = match after_time.split_once(": ") {
        Some((head, msg)) if !head.contains(' ') => {
            let (tag, pid) = match head.strip_suffix(']').and_then(|h| h.split_once('[')) {
                Some((tag, pid)) => (tag, pid.parse().ok()),
                None => (head, None),
            };
            (tag.to_string(), pid, msg)
        }
        _ => (String::new(), None, after_time),
    };
    SyslogLine { tag, pid, message: message.to_string(), parsed: parse_message(message), truncated }
}

/// Parses the MESSAGE part.
pub fn parse_message(msg: &str) -> SshdMessage {
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    let (msg, preauth) = match msg.strip_suffix(" [preauth]") {
        Some(m) => (m, true),
        None => (msg, false),
    };
    if let Some(rest) = msg.strip_prefix("Accepted ") {
        if let Some((method, rest)) = rest.split_once(" for ")
            && let Some((user, peer, key)) = user_from_peer(rest)
        {
            return SshdMessage::Accepted { method: method.to_string(), user, peer, key };
        }
    } else if let Some(rest) = msg.strip_prefix("Failed ") {
        if let Some((method, rest)) = rest.split_once(" for ") {
            let (invalid, rest) = strip_invalid(rest);
            if let Some((user, peer, key)) = user_from_peer(rest) {
                return SshdMessage::Failed { method: method.to_string(), user, invalid, peer, key };
            }
        }
    } else if let Some(rest) = msg.strip_prefix("Invalid user ") {
        if let Some((user, peer)) = split_peer(rest, " from ") {
            return SshdMessage::InvalidUser { user: user.to_string(), peer };
        }
    } else if let Some(rest) = msg.strip_prefix("maximum authentication attempts exceeded for ") {
        let (invalid, rest) = strip_invalid(rest);
        let rest = rest.strip_suffix(" ssh2").unwrap_or(rest);
        if let Some((user, peer)) = split_peer(rest, " from ") {
            return SshdMessage::MaxAuthTries { user: user.to_string(), invalid, peer };
        }
    } else if let Some(rest) =
        ["Connection closed by ", "Connection reset by ", "Disconnected from "].iter().find_map(|p| msg.strip_prefix(p))
    {
        return closed(rest, preauth);
    } else if let Some(rest) = msg.strip_prefix("PAM: Authentication failure for ") {
        let (invalid, rest) = match rest.strip_prefix("illegal user ") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if let Some((user, host)) = rest.rsplit_once(" from ") {
            return SshdMessage::PamAuthFailure { user: user.to_string(), invalid, host: host.to_string() };
        }
    } else if let Some(rest) = msg.strip_prefix("pam_unix(")
        && let Some(rest) = rest.split_once("): session opened for user ").map(|(_, r)| r)
    {
        let name = rest.split(" by ").next().unwrap_or(rest);
        let (user, uid) = match name.strip_suffix(')').and_then(|n| n.rsplit_once("(uid=")) {
            Some((user, uid)) => (user, uid.parse().ok()),
            None => (name, None),
        };
        return SshdMessage::PamSessionOpened { user: user.to_string(), uid };
    }
    SshdMessage::Other
}

fn strip_invalid(rest: &str) -> (bool, &str) {
    match rest.strip_prefix("invalid user ") {
        Some(r) => (true, r),
        None => (false, rest),
    }
}

fn closed(rest: &str, preauth: bool) -> SshdMessage {
    let (state, rest) = if let Some(r) = rest.strip_prefix("authenticating user ") {
        (Some(UserState::Authenticating), r)
    } else if let Some(r) = rest.strip_prefix("invalid user ") {
        (Some(UserState::Invalid), r)
    } else if let Some(r) = rest.strip_prefix("user ") {
        (Some(UserState::LoggedIn), r)
    } else {
        (None, rest)
    };
    match state {
        Some(state) => match split_peer(rest, " ") {
            Some((user, peer)) => SshdMessage::Closed { user: Some((state, user.to_string())), peer, preauth },
            None => SshdMessage::Other,
        },
        None => match peer(rest) {
            Some(peer) => SshdMessage::Closed { user: None, peer, preauth },
            None => SshdMessage::Other,
        },
    }
}

/// `ADDR port PORT`, nothing before or after.
fn peer(s: &str) -> Option<Peer> {
    let (addr, port) = s.split_once(" port ")?;
    Some(Peer { addr: addr.parse().ok()?, port: port.parse().ok()? })
}

/// `HEAD{sep}ADDR port PORT` split at the last `sep` after which a valid
/// peer follows: the address sshd appended, whatever the user name holds.
fn split_peer<'a>(s: &'a str, sep: &str) -> Option<(&'a str, Peer)> {
    let mut end = s.len();
    while let Some(at) = s[..end].rfind(sep) {
        if let Some(p) = peer(&s[at + sep.len()..]) {
            return Some((&s[..at], p));
        }
        end = at;
    }
    None
}

/// `USER from ADDR port PORT ssh2[: KEY]`. Without key information the peer
/// is the last one (the user name is the client's text); with it, the first
/// `from` whose peer ends in ` ssh2: ` (key text can be a certificate id,
/// which is also the client's text).
fn user_from_peer(rest: &str) -> Option<(String, Peer, Option<KeyInfo>)> {
    if let Some(head) = rest.strip_suffix(" ssh2") {
        let (user, peer) = split_peer(head, " from ")?;
        return Some((user.to_string(), peer, None));
    }
    let mut from = 0;
    while let Some(at) = rest[from..].find(" from ").map(|i| i + from) {
        let tail = &rest[at + 6..];
        if let Some((peer_text, key_text)) = tail.split_once(" ssh2: ")
            && let Some(peer) = peer(peer_text)
        {
            return Some((rest[..at].to_string(), peer, key_info(key_text)));
        }
        from = at + 6;
    }
    None
}

/// `TYPE SHA256:FP` or `TYPE-CERT SHA256:FP ID KEYID (serial N) CA CATYPE SHA256:CAFP`.
fn key_info(s: &str) -> Option<KeyInfo> {
    let (key_type, rest) = s.split_once(' ')?;
    let (fingerprint, rest) = match rest.split_once(' ') {
        Some((fp, rest)) => (fp, rest),
        None => (rest, ""),
    };
    if !fingerprint.contains(':') {
        return None;
    }
    let cert = rest.strip_prefix("ID ").map(|rest| {
        // The id is free text: split at the last " (serial " sshd wrote.
        let (id, after) = rest.rsplit_once(" (serial ").unwrap_or((rest, ""));
        let (serial, ca) = after.split_once(") CA ").unwrap_or((after.trim_end_matches(')'), ""));
        let (ca_type, ca_fp) = match ca.split_once(' ') {
            Some((t, f)) => (Some(t.to_string()), Some(f.to_string())),
            None => (None, None),
        };
        CertInfo { id: id.to_string(), serial: serial.parse().ok(), ca_type, ca_fingerprint: ca_fp }
    });
    Some(KeyInfo { key_type: key_type.to_string(), fingerprint: fingerprint.to_string(), cert })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> SshdMessage {
        parse_message(s)
    }

    fn peer(addr: &str, port: u16) -> Peer {
        Peer { addr: addr.parse().unwrap(), port }
    }

    #[test]
    fn frame_as_glibc_sends_it() {
        // Captured from sshd 9.2 on Debian 12 (pam-key-login.hex).
        let raw = b"<38>Nov 26 17:24:40 sshd[13935]: Accepted publickey for sl-alice from 127.0.0.1 port 57284 ssh2: ED25519 SHA256:dWWFKSdPytRfWOHACwJ3vZZ6VfRSLDnE/82Wg4uwQfg";
        let line = parse(raw, false);
        assert_eq!(line.tag, "sshd");
        assert_eq!(line.pid, Some(13935));
        let SshdMessage::Accepted { method, user, peer: p, key } = line.parsed else { panic!("{:?}", line.parsed) };
        assert_eq!((method.as_str(), user.as_str(), p), ("publickey", "sl-alice", peer("127.0.0.1", 57284)));
        let key = key.unwrap();
        assert_eq!(key.key_type, "ED25519");
        assert_eq!(key.fingerprint, "SHA256:dWWFKSdPytRfWOHACwJ3vZZ6VfRSLDnE/82Wg4uwQfg");
        assert!(key.cert.is_none());
        // sshd-session tags its lines with its own name.
        assert_eq!(parse(b"<38>Jan  2 03:04:05 sshd-session[7]: x", false).tag, "sshd-session");
    }

    #[test]
    fn real_failure_lines() {
        assert_eq!(
            msg("Failed password for sl-bob from 127.0.0.1 port 47872 ssh2"),
            SshdMessage::Failed {
                method: "password".into(),
                user: "sl-bob".into(),
                invalid: false,
                peer: peer("127.0.0.1", 47872),
                key: None
            }
        );
        assert_eq!(
            msg("Failed password for invalid user sl-nosuch from 127.0.0.1 port 52830 ssh2"),
            SshdMessage::Failed {
                method: "password".into(),
                user: "sl-nosuch".into(),
                invalid: true,
                peer: peer("127.0.0.1", 52830),
                key: None
            }
        );
        assert_eq!(
            msg("Invalid user sl-nosuch from 127.0.0.1 port 52828"),
            SshdMessage::InvalidUser { user: "sl-nosuch".into(), peer: peer("127.0.0.1", 52828) }
        );
        assert_eq!(
            msg("Connection closed by authenticating user sl-alice 127.0.0.1 port 38250 [preauth]"),
            SshdMessage::Closed {
                user: Some((UserState::Authenticating, "sl-alice".into())),
                peer: peer("127.0.0.1", 38250),
                preauth: true
            }
        );
        assert_eq!(
            msg("Disconnected from user sl-alice 127.0.0.1 port 38238"),
            SshdMessage::Closed {
                user: Some((UserState::LoggedIn, "sl-alice".into())),
                peer: peer("127.0.0.1", 38238),
                preauth: false
            }
        );
        assert_eq!(
            msg("Connection closed by 10.0.0.9 port 4242 [preauth]"),
            SshdMessage::Closed { user: None, peer: peer("10.0.0.9", 4242), preauth: true }
        );
        assert_eq!(
            msg("error: PAM: Authentication failure for sl-bob from 127.0.0.1"),
            SshdMessage::PamAuthFailure { user: "sl-bob".into(), invalid: false, host: "127.0.0.1".into() }
        );
        assert_eq!(
            msg("pam_unix(sshd:session): session opened for user sl-alice(uid=1001) by (uid=0)"),
            SshdMessage::PamSessionOpened { user: "sl-alice".into(), uid: Some(1001) }
        );
        assert_eq!(
            msg("error: maximum authentication attempts exceeded for invalid user x from ::1 port 22 ssh2 [preauth]"),
            SshdMessage::MaxAuthTries { user: "x".into(), invalid: true, peer: peer("::1", 22) }
        );
    }

    #[test]
    fn certificates() {
        let m = msg(
            "Accepted publickey for alice from 2001:db8::7 port 51234 ssh2: ED25519-CERT SHA256:abc ID alice@corp (serial 42) CA ED25519 SHA256:caf",
        );
        let SshdMessage::Accepted { key: Some(key), peer: p, .. } = m else { panic!("{m:?}") };
        assert_eq!(p, peer("2001:db8::7", 51234));
        let cert = key.cert.unwrap();
        assert_eq!(cert.id, "alice@corp");
        assert_eq!(cert.serial, Some(42));
        assert_eq!(cert.ca_type.as_deref(), Some("ED25519"));
        assert_eq!(cert.ca_fingerprint.as_deref(), Some("SHA256:caf"));
    }

    #[test]
    fn user_names_cannot_move_the_address() {
        // The client chose this user name to look like an address.
        let m = msg("Invalid user x from 6.6.6.6 port 1 from 127.0.0.1 port 5555");
        assert_eq!(m, SshdMessage::InvalidUser { user: "x from 6.6.6.6 port 1".into(), peer: peer("127.0.0.1", 5555) });
        let m = msg("Failed password for invalid user a from 6.6.6.6 port 1 ssh2 from 127.0.0.1 port 7 ssh2");
        let SshdMessage::Failed { user, peer: p, .. } = m else { panic!("{m:?}") };
        assert_eq!((user.as_str(), p), ("a from 6.6.6.6 port 1 ssh2", peer("127.0.0.1", 7)));
        let m = msg("Connection closed by invalid user b 1.1.1.1 port 2 127.0.0.1 port 9 [preauth]");
        assert_eq!(
            m,
            SshdMessage::Closed {
                user: Some((UserState::Invalid, "b 1.1.1.1 port 2".into())),
                peer: peer("127.0.0.1", 9),
                preauth: true
            }
        );
    }

    #[test]
    fn anything_else_is_other_and_nothing_panics() {
        for s in [
            "",
            "<",
            "<>",
            "<38>",
            "<38>Nov 26 17:24:40 ",
            "<999999999999>Nov 26 17:24:40 sshd[x]: Accepted",
            "Accepted ",
            "Accepted publickey for",
            "Accepted publickey for a from b port c ssh2",
            "Failed none for  from  port  ssh2: ",
            "Invalid user  from 1.2.3.4 port 99999",
            "Connection closed by user ",
            "PAM: Authentication failure for ",
            "pam_unix(sshd:session): session opened for user (uid=",
            "Accepted publickey for a from 1.2.3.4 port 5 ssh2: X",
            "Accepted publickey for a from 1.2.3.4 port 5 ssh2: X SHA256:y ID",
            "Accepted publickey for a from 1.2.3.4 port 5 ssh2: X SHA256:y ID (serial ) CA",
            "\u{fffd}\u{0}\u{7f}",
        ] {
            let _ = parse(s.as_bytes(), false);
            let _ = parse_message(s);
        }
        assert_eq!(msg("Server listening on 0.0.0.0 port 22."), SshdMessage::Other);
        assert_eq!(parse(&[0xff, 0xfe, b'<', b'3'], true).parsed, SshdMessage::Other);
    }
}
