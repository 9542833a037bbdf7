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
}

const NLMSG_HDRLEN: usize = 16;

/// Fields libaudit hex-encodes when their value is not printable as is.
/// (`id=1001` is a number and must stay one.)
const ENCODED_FIELDS: &[&str] = &["acct", "exe", "comm", "cwd", "cmd"];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("{0} bytes cannot hold a netlink header")]
    NoHeader(usize),
}

/// One audit message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditMessage {
    pub msg_type: u16,
    /// The text after the netlink header, NULs stripped, invalid UTF-8 replaced.
    pub text: String,
    /// `key=value` pairs in order, values unquoted and hex-decoded.
    pub fields: Vec<(String, String)>,
    /// The sender's message was longer than what the probe copied.
    pub truncated: bool,
}

impl AuditMessage {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `res=success` → `Some(true)`, `res=failed` → `Some(false)`.
    pub fn success(&self) -> Option<bool> {
        match self.get("res")? {
            "success" | "yes" | "1" => Some(true),
            "failed" | "no" | "0" => Some(false),
            _ => None,
        }
    }

    /// The account: `None` when absent or unknown (`?`).
    pub fn acct(&self) -> Option<&str> {
        self.get("acct").filter(|a| !a.is_empty() && *a != "?")
    }

    /// `hostname`/`addr` value, `None` when unknown (`?`).
    pub fn addr(&self) -> Option<&str> {
        self.get("addr").filter(|a| !a.is_empty() && *a != "?")
    }

    pub fn terminal(&self) -> Option<&str> {
        self.get("terminal").filter(|a| !a.is_empty() && *a != "?")
    }

    pub fn op(&self) -> Option<&str> {
        self.get("op")
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
    let text = String::from_utf8_lossy(body).trim_end().to_string();
    let fields = parse_fields(&text);
    Ok(AuditMessage { msg_type, text, fields, truncated: truncated || nlmsg_len > data.len() })
}

/// Splits audit text into `key=value` pairs. Words without `=` are skipped.
pub fn parse_fields(text: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let word_end = rest.find(' ').unwrap_or(rest.len());
        let Some(eq) = rest[..word_end].find('=') else {
            rest = rest[word_end..].trim_start();
            continue;
        };
        let key = &rest[..eq];
        let after = &rest[eq + 1..];
        let (value, consumed) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(close) => (quoted[..close].to_string(), eq + 1 + close + 2),
                // An unterminated quote (a truncated message): take the rest.
                None => (quoted.to_string(), rest.len()),
            }
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let raw = &after[..end];
            let value = if ENCODED_FIELDS.contains(&key) {
                decode_hex(raw).unwrap_or_else(|| raw.to_string())
            } else {
                raw.to_string()
            };
            (value, eq + 1 + end)
        };
        fields.push((key.to_string(), value));
        rest = rest.get(consumed..).unwrap_or("").trim_start();
    }
    fields
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
        assert_eq!(m.acct(), Some("(invalid user)"));
        assert_eq!(m.get("exe"), Some("/usr/sbin/sshd"));
        assert_eq!(m.get("hostname"), Some("?"));
        assert_eq!(m.addr(), Some("127.0.0.1"));
        assert_eq!(m.success(), Some(false));
        assert!(!m.truncated);
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
        assert_eq!(m.acct(), Some("al"));
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
