//! Audit user messages as libaudit sends them: a `nlmsghdr` followed by
//! `key=value` text. libaudit writes a value that is safe to print in double
//! quotes and hex-encodes one that is not (spaces, quotes, control or
//! non-ASCII bytes), without quotes: `acct="alice"` but
//! `acct=28696E76616C6964207573657229` for "(invalid user)".

/// Audit message types sshd and PAM send (linux/audit.h) that sshlogin uses.
pub mod types {
    pub const USER_AUTH: u16 = 1100;
    pub const USER_ACCT: u16 = 1101;
    pub const USER_START: u16 = 1105;
    pub const USER_END: u16 = 1106;
    pub const USER_LOGIN: u16 = 1112;
    /// sudo's record of a command it ran or refused.
    pub const USER_CMD: u16 = 1123;
}

use std::borrow::Cow;

const NLMSG_HDRLEN: usize = 16;

/// Fields libaudit hex-encodes when their value is not printable as is.
/// (`id=1001` is a number and must stay one.)
const ENCODED_FIELDS: &[&str] = &["acct", "exe", "comm", "cwd", "cmd"];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("{0} bytes cannot hold a netlink header")]
    NoHeader(usize),
}

/// One audit message. Fields are read from the text when asked for, without
/// copying it apart: most records are looked at for three or four keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditMessage {
    pub msg_type: u16,
    /// The text after the netlink header, NULs stripped, invalid UTF-8 replaced.
    pub text: String,
    /// The sender's message was longer than what the probe copied.
    pub truncated: bool,
}

fn known(v: Cow<'_, str>) -> Option<Cow<'_, str>> {
    (!v.is_empty() && v != "?").then_some(v)
}

impl AuditMessage {
    /// `key=value` pairs in order, values unquoted and hex-decoded.
    pub fn fields(&self) -> Fields<'_> {
        fields(&self.text)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        self.fields().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// `res=success` → `Some(true)`, `res=failed` → `Some(false)`.
    pub fn success(&self) -> Option<bool> {
        match self.get("res")?.as_ref() {
            "success" | "yes" | "1" => Some(true),
            "failed" | "no" | "0" => Some(false),
            _ => None,
        }
    }

    /// The account: `None` when absent or unknown (`?`).
    pub fn acct(&self) -> Option<Cow<'_, str>> {
        known(self.get("acct")?)
    }

    /// The client address, `None` when unknown (`?`).
    pub fn addr(&self) -> Option<Cow<'_, str>> {
        known(self.get("addr")?)
    }

    pub fn terminal(&self) -> Option<Cow<'_, str>> {
        known(self.get("terminal")?)
    }

    pub fn op(&self) -> Option<Cow<'_, str>> {
        self.get("op")
    }
}

/// The fields the correlator reads, picked in one pass over the text.
#[derive(Debug, Default)]
pub struct Summary<'a> {
    pub op: Option<Cow<'a, str>>,
    pub acct: Option<Cow<'a, str>>,
    pub exe: Option<Cow<'a, str>>,
    pub addr: Option<Cow<'a, str>>,
    pub terminal: Option<Cow<'a, str>>,
    pub res: Option<bool>,
    pub id: Option<u32>,
}

impl AuditMessage {
    /// [`Summary`] of this message; unknown values (`?`) are `None`.
    pub fn summary(&self) -> Summary<'_> {
        let mut s = Summary::default();
        for (k, v) in self.fields() {
            let slot = match k {
                "op" => &mut s.op,
                "acct" => &mut s.acct,
                "exe" => &mut s.exe,
                "addr" => &mut s.addr,
                "terminal" => &mut s.terminal,
                "res" => {
                    s.res = s.res.or(match v.as_ref() {
                        "success" | "yes" | "1" => Some(true),
                        "failed" | "no" | "0" => Some(false),
                        _ => None,
                    });
                    continue;
                }
                "id" => {
                    s.id = s.id.or(v.parse().ok());
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = if k == "op" { Some(v) } else { known(v) };
            }
        }
        s
    }
}

/// Parses `nlmsghdr` + text. `truncated` says the probe copied less than the
/// sender sent; the length in the netlink header is trusted only as far as
/// the bytes present.
pub fn parse_netlink(data: &[u8], truncated: bool) -> Result<AuditMessage, AuditError> {
    if data.len() < NLMSG_HDRLEN {
        return Err(AuditError::NoHeader(data.len()));
    }
    let nlmsg_len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let msg_type = u16::from_ne_bytes([data[4], data[5]]);
    let end = nlmsg_len.clamp(NLMSG_HDRLEN, data.len());
    let body = &data[NLMSG_HDRLEN..end];
    let body = match body.iter().position(|&b| b == 0) {
        Some(nul) => &body[..nul],
        None => body,
    };
    let text = super::text(body).trim_end().to_string();
    Ok(AuditMessage { msg_type, text, truncated: truncated || nlmsg_len > data.len() })
}

/// The `key=value` pairs of audit text. Words without `=` are skipped.
pub fn fields(text: &str) -> Fields<'_> {
    Fields { rest: text.trim_start() }
}

/// Owned pairs, for when the text does not stay around.
pub fn parse_fields(text: &str) -> Vec<(String, String)> {
    fields(text).map(|(k, v)| (k.to_string(), v.into_owned())).collect()
}

pub struct Fields<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        // Byte searches: every delimiter is ASCII, so slicing at one is
        // always at a char boundary.
        let find = |s: &str, b: u8| s.as_bytes().iter().position(|&c| c == b);
        loop {
            let rest = self.rest;
            if rest.is_empty() {
                return None;
            }
            let word_end = find(rest, b' ').unwrap_or(rest.len());
            let Some(eq) = find(&rest[..word_end], b'=') else {
                self.rest = rest[word_end..].trim_start();
                continue;
            };
            let key = &rest[..eq];
            let after = &rest[eq + 1..];
            let (value, consumed) = if let Some(quoted) = after.strip_prefix('"') {
                match find(quoted, b'"') {
                    Some(close) => (Cow::Borrowed(&quoted[..close]), eq + 1 + close + 2),
                    // An unterminated quote (a truncated message): take the rest.
                    None => (Cow::Borrowed(quoted), rest.len()),
                }
            } else {
                let end = find(after, b' ').unwrap_or(after.len());
                let raw = &after[..end];
                let value = match ENCODED_FIELDS.contains(&key).then(|| decode_hex(raw)).flatten() {
                    Some(decoded) => Cow::Owned(decoded),
                    None => Cow::Borrowed(raw),
                };
                (value, eq + 1 + end)
            };
            self.rest = rest.get(consumed..).unwrap_or("").trim_start();
            return Some((key, value));
        }
    }
}

/// Hex text (upper or lower case, even length) to a string; `None` if it is
/// not hex. Decoded bytes that are not UTF-8 are replaced.
fn decode_hex(s: &str) -> Option<String> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = s
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16).unwrap_or(0);
            let lo = (pair[1] as char).to_digit(16).unwrap_or(0);
            (hi * 16 + lo) as u8
        })
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netlink(msg_type: u16, text: &str) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + text.len() + 1) as u32).to_ne_bytes());
        v.extend_from_slice(&msg_type.to_ne_bytes());
        v.extend_from_slice(&5u16.to_ne_bytes());
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(text.as_bytes());
        v.push(0);
        v
    }

    #[test]
    fn quoted_plain_and_hex_values() {
        let m = parse_netlink(
            &netlink(
                types::USER_LOGIN,
                "op=login acct=28696E76616C6964207573657229 exe=\"/usr/sbin/sshd\" hostname=? addr=127.0.0.1 terminal=sshd res=failed",
            ),
            false,
        )
        .unwrap();
        assert_eq!(m.msg_type, types::USER_LOGIN);
        assert_eq!(m.acct().as_deref(), Some("(invalid user)"));
        assert_eq!(m.get("exe").as_deref(), Some("/usr/sbin/sshd"));
        assert_eq!(m.get("hostname").as_deref(), Some("?"));
        assert_eq!(m.addr().as_deref(), Some("127.0.0.1"));
        assert_eq!(m.success(), Some(false));
        assert!(!m.truncated);
    }

    #[test]
    fn summary_agrees_with_get() {
        let m = parse_netlink(
            &netlink(
                types::USER_LOGIN,
                "op=login id=1001 exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=? terminal=/dev/pts/0 res=success",
            ),
            false,
        )
        .unwrap();
        let s = m.summary();
        assert_eq!(s.op.as_deref(), m.op().as_deref());
        assert_eq!(s.exe.as_deref(), Some("/usr/sbin/sshd"));
        assert_eq!(s.addr, None, "? is unknown");
        assert_eq!(s.terminal.as_deref(), Some("/dev/pts/0"));
        assert_eq!(s.res, m.success());
        assert_eq!(s.id, Some(1001));
        assert_eq!(s.acct, None);
    }

    #[test]
    fn hex_only_for_encoded_fields() {
        let f = parse_fields("acct=ABCD addr=ABCD terminal=ssh");
        // 0xAB 0xCD is not UTF-8: decoded, then replaced.
        assert_eq!(f[0].1, "\u{fffd}\u{fffd}");
        assert_eq!(f[1].1, "ABCD");
        let f = parse_fields("acct=xyz");
        assert_eq!(f[0].1, "xyz");
    }

    #[test]
    fn garbage_and_truncation_do_not_panic() {
        assert_eq!(parse_netlink(&[1, 2, 3], false), Err(AuditError::NoHeader(3)));
        let mut long = netlink(types::USER_START, "op=PAM:session_open acct=\"al");
        long.truncate(long.len() - 1);
        let m = parse_netlink(&long, true).unwrap();
        assert_eq!(m.acct().as_deref(), Some("al"));
        assert!(m.truncated);
        // A header that claims more than is there.
        let mut lying = netlink(types::USER_START, "res=success");
        lying[0] = 0xff;
        let m = parse_netlink(&lying, false).unwrap();
        assert!(m.truncated);
        assert_eq!(m.success(), Some(true));
        for text in ["=", "==", "a=\"", "\"=\"", "k= v=", " = = "] {
            parse_fields(text);
        }
    }
}
