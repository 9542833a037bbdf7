//! Session activity records (the activity ring buffer): a session
//! process's exec, and a privileged session process's audit message.

use sshlogin_common::{
    ARGS_CAP, MessageError, PATH_CAP, TEXT_CAP, kind, layout, session_exec, session_exec_args, session_exec_path,
    session_message_data, u32_at,
};

use super::{DecodeError, Meta, Record, audit, meta, need, text};

/// Arguments kept of one exec; the rest are counted as cut.
pub const MAX_ARGS: usize = 64;

/// Who in a session sent an activity record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionMeta {
    /// `meta.tree` is the session's sshd tree; `meta.uid` the real uid.
    pub meta: Meta,
    /// The sshd process the session's processes descend from.
    pub session: u32,
    /// Effective uid, from the kernel's credentials; `None` if unread.
    pub euid: Option<u32>,
    /// When the session's first process was made (CLOCK_BOOTTIME ns).
    pub session_ns: u64,
}

/// A session process exec'd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionExec {
    pub who: SessionMeta,
    pub ppid: u32,
    /// The file the kernel exec'd, as named to it.
    pub path: String,
    /// The file that runs: device (the kernel's `dev_t`) and inode; (0, 0)
    /// if the kernel could not read them.
    pub exe: (u32, u64),
    pub args: Vec<String>,
    /// Arguments were left out (more than `ARGS_CAP` bytes or `MAX_ARGS`).
    pub args_cut: bool,
    pub path_cut: bool,
    /// The kernel could not read the arguments.
    pub args_unread: bool,
}

fn session_meta(bytes: &[u8]) -> SessionMeta {
    let euid = u32_at(bytes, layout::SESSION_EUID).unwrap_or(u32::MAX);
    SessionMeta {
        meta: meta(bytes),
        session: u32_at(bytes, layout::SESSION_SESSION).unwrap_or_default(),
        euid: (euid != u32::MAX).then_some(euid),
        session_ns: super::u64_at(bytes, layout::SESSION_NS).unwrap_or_default(),
    }
}

fn bytes_of(
    bytes: &[u8],
    kind: u32,
    cap: usize,
    part: fn(&[u8]) -> Result<&[u8], MessageError>,
) -> Result<&[u8], DecodeError> {
    part(bytes).map_err(|e| match e {
        MessageError::Short { need } => DecodeError::Short { kind, len: bytes.len(), need },
        MessageError::BadLength { copied } => DecodeError::BadLength { copied, cap },
    })
}

/// Splits the NUL-separated argument area, at most [`MAX_ARGS`].
fn split_args(raw: &[u8]) -> (Vec<String>, bool) {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return (Vec::new(), false);
    }
    let mut parts = raw.split(|&b| b == 0);
    let args: Vec<String> = parts.by_ref().take(MAX_ARGS).map(|a| text(a).into_owned()).collect();
    (args, parts.next().is_some())
}

pub(super) fn decode_exec(bytes: &[u8]) -> Result<Record, DecodeError> {
    let k = kind::SESSION_EXEC;
    need(bytes, k, layout::SEXEC_ARGS)?;
    let flags = u32_at(bytes, layout::SEXEC_FLAGS).unwrap_or_default();
    let path = text(bytes_of(bytes, k, PATH_CAP, session_exec_path)?).into_owned();
    let (args, more) = split_args(bytes_of(bytes, k, ARGS_CAP, session_exec_args)?);
    Ok(Record::SessionExec(Box::new(SessionExec {
        who: session_meta(bytes),
        ppid: u32_at(bytes, layout::SEXEC_PPID).unwrap_or_default(),
        path,
        exe: (
            u32_at(bytes, layout::SEXEC_EXE_DEV).unwrap_or_default(),
            super::u64_at(bytes, layout::SEXEC_EXE_INO).unwrap_or_default(),
        ),
        args,
        args_cut: more || flags & session_exec::ARGS_CUT != 0,
        path_cut: flags & session_exec::PATH_CUT != 0,
        args_unread: flags & session_exec::ARGS_UNREAD != 0,
    })))
}

pub(super) fn decode_audit(bytes: &[u8]) -> Result<Record, DecodeError> {
    let k = kind::SESSION_AUDIT;
    need(bytes, k, layout::SMESSAGE_DATA)?;
    let full_len = u32_at(bytes, layout::SESSION_HEADER_SIZE).unwrap_or_default() as usize;
    let data = bytes_of(bytes, k, TEXT_CAP, session_message_data)?;
    let audit = audit::parse_netlink(data, full_len > data.len())?;
    Ok(Record::SessionAudit { who: session_meta(bytes), audit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;

    fn exec_record(path: &[u8], args: &[u8], flags: u32) -> Vec<u8> {
        let mut r = vec![0u8; layout::SEXEC_SIZE];
        r[..4].copy_from_slice(&kind::SESSION_EXEC.to_ne_bytes());
        r[4..8].copy_from_slice(&4242u32.to_ne_bytes());
        r[layout::SESSION_SESSION..][..4].copy_from_slice(&77u32.to_ne_bytes());
        r[layout::SESSION_EUID..][..4].copy_from_slice(&0u32.to_ne_bytes());
        r[layout::SEXEC_PPID..][..4].copy_from_slice(&4241u32.to_ne_bytes());
        r[layout::SEXEC_FLAGS..][..4].copy_from_slice(&flags.to_ne_bytes());
        r[layout::SEXEC_ARGS_COPIED..][..4].copy_from_slice(&(args.len() as u32).to_ne_bytes());
        r[layout::SEXEC_PATH_COPIED..][..4].copy_from_slice(&(path.len() as u32).to_ne_bytes());
        r[layout::SEXEC_PATH..][..path.len()].copy_from_slice(path);
        r[layout::SEXEC_ARGS..][..args.len()].copy_from_slice(args);
        r.truncate(layout::SEXEC_ARGS + args.len());
        r
    }

    #[test]
    fn an_exec_with_its_arguments() {
        let Ok(Record::SessionExec(e)) = decode(&exec_record(b"/usr/bin/ls", b"ls\0-l\0/\0", 0)) else { panic!() };
        assert_eq!(e.path, "/usr/bin/ls");
        assert_eq!(e.args, ["ls", "-l", "/"]);
        assert!(!e.args_cut);
        assert_eq!((e.who.meta.pid, e.who.session, e.who.euid, e.ppid), (4242, 77, Some(0), 4241));
    }

    #[test]
    fn cut_and_unread_arguments_are_marked() {
        let Ok(Record::SessionExec(e)) = decode(&exec_record(b"/bin/echo", b"echo\0abc", session_exec::ARGS_CUT))
        else {
            panic!()
        };
        assert_eq!(e.args, ["echo", "abc"]);
        assert!(e.args_cut);
        let many: Vec<u8> = (0..100).flat_map(|_| b"x\0".iter().copied()).collect();
        let Ok(Record::SessionExec(e)) = decode(&exec_record(b"/bin/x", &many, 0)) else { panic!() };
        assert_eq!(e.args.len(), MAX_ARGS);
        assert!(e.args_cut);
        let Ok(Record::SessionExec(e)) = decode(&exec_record(b"/bin/x", b"", session_exec::ARGS_UNREAD)) else {
            panic!()
        };
        assert!(e.args.is_empty() && e.args_unread);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut r = exec_record(b"/bin/x", b"x\0", 0);
        r[layout::SEXEC_ARGS_COPIED..][..4].copy_from_slice(&5000u32.to_ne_bytes());
        assert_eq!(decode(&r), Err(DecodeError::BadLength { copied: 5000, cap: ARGS_CAP }));
        let r = exec_record(b"/bin/x", b"x\0", 0);
        for len in 0..r.len() {
            let _ = decode(&r[..len]);
        }
        let mut m = vec![0u8; layout::SMESSAGE_DATA + 4];
        m[..4].copy_from_slice(&kind::SESSION_AUDIT.to_ne_bytes());
        m[layout::SMESSAGE_COPIED..][..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(matches!(decode(&m), Err(DecodeError::Audit(_))));
    }
}
