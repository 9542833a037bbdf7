//! What the probes do with a syscall's arguments, however they were read:
//! from a per-syscall tracepoint's record, from the registers the raw
//! `sys_enter` tracepoint passes or from an fentry program's BTF context.
//! Every backend calls these, so they all make the same records. `int`
//! arguments arrive as `u32`: the callers truncate them as the kernel does.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_probe_read_user as read_user_raw},
    maps::ring_buf::RingBufEntry,
};
use sshlogin_common::{
    ConnectRecord, Member, MessageRecord, SOCKADDR_CAP, SetresuidRecord, TEXT_CAP, kind, member, stat,
};

use crate::{
    filter::{
        EVENTS, PENDING_SETRESUID, admitted, count, current_tgid, current_uid, header, may_be_member, member_entry,
        session_entry,
    },
    session,
};

/// `bpf_ringbuf_query` flags.
pub const BPF_RB_AVAIL_DATA: u64 = 0;
pub const BPF_RB_RING_SIZE: u64 = 1;

const AF_NETLINK: u16 = 16;
const SOCKADDR_NL_LEN: u32 = 12;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[repr(C)]
struct SockaddrNl {
    family: u16,
    _pad: u16,
    pid: u32,
    groups: u32,
}

#[repr(C)]
struct NlMsgHdr {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// Audit user-message ranges (AUDIT_FIRST_USER_MSG..LAST, and ..._MSG2).
#[inline(always)]
fn is_user_audit_type(ty: u16) -> bool {
    (1100..=1199).contains(&ty) || (2100..=2999).contains(&ty)
}

/// `sendto(fd, buf, len, flags, addr, addr_len)`: PAM's and sshd's audit
/// records (to the kernel over NETLINK_AUDIT) and sshd's syslog lines (to a
/// connected `/dev/log`, so no address), from members of an sshd tree. Only
/// root's count: a member that dropped root is a session child, run for the
/// user; what it sends is counted, not recorded. From a session process,
/// only privileged audit messages (sudo's, su's) are recorded.
#[inline(always)]
pub fn sendto(buf: *const u8, len: u64, addr: u64, addr_len: u32) {
    let tgid = current_tgid();
    if !may_be_member(tgid) {
        return;
    }
    match member_entry(tgid) {
        Some(m) if m.flags & member::REFUSED != 0 => count(stat::REFUSED_TREE),
        Some(m) => {
            let _ = sendto_by(&m, buf, len, addr, addr_len);
        }
        None => {
            if let Some(s) = session_entry(tgid) {
                let _ = session::sendto(&s, buf, len, addr, addr_len);
            }
        }
    }
}

/// Whether a `sendto` carries an audit user message to the kernel.
#[inline(always)]
pub fn is_audit_message(buf: *const u8, len: u64, addr: u64, addr_len: u32) -> Result<bool, i64> {
    if addr == 0 || addr_len < SOCKADDR_NL_LEN || len < 16 {
        return Ok(false);
    }
    // SAFETY: reads of user memory through the probe-read helper, which
    // fails instead of faulting.
    let sa: SockaddrNl = unsafe { bpf_probe_read_user(addr as *const SockaddrNl) }.map_err(i64::from)?;
    if sa.family != AF_NETLINK || sa.pid != 0 {
        return Ok(false);
    }
    // SAFETY: as above.
    let nl: NlMsgHdr = unsafe { bpf_probe_read_user(buf as *const NlMsgHdr) }.map_err(i64::from)?;
    Ok(is_user_audit_type(nl.ty))
}

/// `sendto` for a caller already admitted (the raw probe looks the caller
/// up before it reads any register).
#[inline(always)]
pub fn sendto_by(m: &Member, buf: *const u8, len: u64, addr: u64, addr_len: u32) -> Result<(), i64> {
    let record_kind = if addr == 0 {
        // SAFETY: a read of user memory through the probe-read helper.
        let first: u8 = unsafe { bpf_probe_read_user(buf) }.map_err(i64::from)?;
        if first != b'<' {
            return Ok(());
        }
        kind::SYSLOG
    } else if is_audit_message(buf, len, addr, addr_len)? {
        kind::AUDIT
    } else {
        return Ok(());
    };
    if current_uid() != 0 {
        count(if record_kind == kind::AUDIT { stat::AUDIT_NOT_ROOT } else { stat::SYSLOG_NOT_ROOT });
        return Ok(());
    }
    emit_message(record_kind, m, buf, len);
    Ok(())
}

#[inline(always)]
fn emit_message(record_kind: u32, m: &Member, buf: *const u8, len: u64) {
    let Some(mut entry) = EVENTS.reserve::<MessageRecord>(0) else {
        count(stat::RINGBUF_FULL);
        return;
    };
    let copied = if len > TEXT_CAP as u64 { TEXT_CAP as u32 } else { len as u32 };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reserved, exclusively owned slot of the
    // ring buffer; `copied` is at most TEXT_CAP, the size of `data`.
    let ok = unsafe {
        (*record).header = header(record_kind, m);
        (*record).len = len as u32;
        (*record).copied = copied;
        read_user_raw((*record).data.as_mut_ptr().cast(), copied, buf.cast()) == 0
    };
    submit_if(entry, ok);
}

/// Submits a filled ring-buffer slot, or gives it back and counts a read
/// of user memory that failed.
#[inline(always)]
pub fn submit_if<T: 'static>(entry: RingBufEntry<T>, filled: bool) {
    if filled {
        entry.submit(0);
    } else {
        count(stat::READ_FAILED);
        entry.discard(0);
    }
}

/// `setresuid(r, e, s)` entry: remember a root caller's permanent drop to one
/// uid (all three ids equal) for the exit probe. Temporary switches
/// (`seteuid`, which glibc implements as `setresuid(-1, e, -1)`) are not
/// session starts.
#[inline(always)]
pub fn setresuid_enter(r: u32, e: u32, s: u32) {
    // The arguments first: cheaper than the lookup, and they rule out almost
    // every call (a permanent drop is rare).
    if is_permanent_drop(r, e, s) && admitted().is_some() {
        setresuid_enter_by(r, e, s);
    }
}

#[inline(always)]
pub fn is_permanent_drop(r: u32, e: u32, s: u32) -> bool {
    r == e && e == s && r != 0 && r != u32::MAX
}

/// `setresuid` entry for a permanent drop by an admitted caller.
#[inline(always)]
pub fn setresuid_enter_by(r: u32, e: u32, s: u32) {
    if current_uid() != 0 {
        return;
    }
    if PENDING_SETRESUID.insert(bpf_get_current_pid_tgid(), [r, e, s, 0], 0).is_err() {
        count(stat::PENDING_FULL);
    }
}

/// `setresuid` exit (`ret`, the syscall's return value): report the drop
/// the entry kept, if it succeeded.
#[inline(always)]
pub fn setresuid_exit(ret: i64) {
    // Only members' calls can have been kept: the hint rules out every
    // other process before the lookup (an entry it leaves behind, kept
    // for a process that stopped being a member during the call, is
    // pushed out of the LRU map in time).
    let key = bpf_get_current_pid_tgid();
    if !may_be_member((key >> 32) as u32) {
        return;
    }
    // SAFETY: the value is copied out before the entry is removed.
    let Some(ids) = (unsafe { PENDING_SETRESUID.get(key) }).copied() else {
        return;
    };
    let _ = PENDING_SETRESUID.remove(key);
    let Some(m) = admitted() else { return };
    if ret != 0 {
        return;
    }
    let record =
        SetresuidRecord { header: header(kind::SETRESUID, &m), ruid: ids[0], euid: ids[1], suid: ids[2], _pad: 0 };
    if EVENTS.output(record, 0).is_err() {
        count(stat::RINGBUF_FULL);
    }
}

/// `connect(fd, addr, addrlen)` by a member that dropped root to an IPv4 or
/// IPv6 address: the session child opening a forwarded connection
/// (ProxyJump, `-W`, `-L`). User space tells TCP from DNS look-ups.
#[inline(always)]
pub fn connect(fd: u32, addr: *const u8, addr_len: u32) {
    let Some(m) = admitted() else { return };
    let _ = connect_by(&m, fd, addr, addr_len);
}

/// `connect` by a caller already admitted.
#[inline(always)]
pub fn connect_by(m: &Member, fd: u32, addr: *const u8, addr_len: u32) -> Result<(), i64> {
    if current_uid() == 0 {
        return Ok(());
    }
    // SAFETY: a read of the caller's sockaddr through the probe-read helper.
    let family: u16 = unsafe { bpf_probe_read_user(addr as *const u16) }.map_err(i64::from)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    // A logged-in user decides how many connections their session opens
    // (`ssh -D` and a busy SOCKS client): forwards may use only the first
    // half of the ring buffer, so that they can never crowd out the
    // records of other users' logins.
    if EVENTS.query(BPF_RB_AVAIL_DATA) > EVENTS.query(BPF_RB_RING_SIZE) / 2 {
        count(stat::SHED);
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<ConnectRecord>(0) else {
        count(stat::RINGBUF_FULL);
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    let len = if family == AF_INET6 { SOCKADDR_CAP as u32 } else { 16 };
    // SAFETY: `record` is a reserved, exclusively owned ring-buffer slot;
    // `len` is at most the size of `addr`.
    let ok = unsafe {
        (*record).header = header(kind::CONNECT, m);
        (*record).fd = fd;
        (*record).addr_len = addr_len;
        (*record).addr = [0; SOCKADDR_CAP];
        (*record)._pad = 0;
        read_user_raw((*record).addr.as_mut_ptr().cast(), len, addr.cast()) == 0
    };
    submit_if(entry, ok);
    Ok(())
}
