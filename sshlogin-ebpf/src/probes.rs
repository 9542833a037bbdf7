//! The tracepoint programs. Field offsets of `syscalls:*` events are the
//! syscall ABI (8-byte argument slots after a 16-byte common header); the one
//! `sched:*` offset that differs between kernels comes from the daemon.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_probe_read_user as read_user_raw},
    macros::tracepoint,
    programs::TracePointContext,
};
use sshlogin_common::{
    COMM_LEN, ConnectRecord, ExitRecord, ForkRecord, MessageRecord, SOCKADDR_CAP, SetresuidRecord, TEXT_CAP, kind, stat,
};

use crate::filter::{EVENTS, PENDING_SETRESUID, count, current_uid, family_comm, header, offsets};

const AF_NETLINK: u16 = 16;
const SOCKADDR_NL_LEN: u64 = 12;

// sys_enter_* argument slots.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG4: usize = 48;
const ARG5: usize = 56;
// sys_exit_* return value.
const RET: usize = 16;

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
/// connected `/dev/log`, so no address). Only root's count: anyone can name
/// a process `sshd`, but only root's records are the real thing; the others
/// are counted.
#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    let Some(comm) = family_comm() else { return 0 };
    let _ = try_sendto(&ctx, comm);
    0
}

#[inline(always)]
fn try_sendto(ctx: &TracePointContext, comm: [u8; COMM_LEN]) -> Result<(), i64> {
    // SAFETY (all reads below): bounded reads of the tracepoint record and of
    // user memory through the probe-read helpers, which fail instead of fault.
    let buf = unsafe { ctx.read_at::<u64>(ARG1) }? as *const u8;
    let len = unsafe { ctx.read_at::<u64>(ARG2) }?;
    let addr = unsafe { ctx.read_at::<u64>(ARG4) }?;
    let record_kind = if addr == 0 {
        let first: u8 = unsafe { bpf_probe_read_user(buf) }.map_err(i64::from)?;
        if first != b'<' {
            return Ok(());
        }
        kind::SYSLOG
    } else {
        let addr_len = unsafe { ctx.read_at::<u64>(ARG5) }?;
        if addr_len < SOCKADDR_NL_LEN || len < 16 {
            return Ok(());
        }
        let sa: SockaddrNl = unsafe { bpf_probe_read_user(addr as *const SockaddrNl) }.map_err(i64::from)?;
        if sa.family != AF_NETLINK || sa.pid != 0 {
            return Ok(());
        }
        let nl: NlMsgHdr = unsafe { bpf_probe_read_user(buf as *const NlMsgHdr) }.map_err(i64::from)?;
        if !is_user_audit_type(nl.ty) {
            return Ok(());
        }
        kind::AUDIT
    };
    if current_uid() != 0 {
        count(if record_kind == kind::AUDIT { stat::AUDIT_NOT_ROOT } else { stat::SYSLOG_NOT_ROOT });
        return Ok(());
    }
    emit_message(record_kind, comm, buf, len);
    Ok(())
}

#[inline(always)]
fn emit_message(record_kind: u32, comm: [u8; COMM_LEN], buf: *const u8, len: u64) {
    let Some(mut entry) = EVENTS.reserve::<MessageRecord>(0) else {
        count(stat::RINGBUF_FULL);
        return;
    };
    let copied = if len > TEXT_CAP as u64 { TEXT_CAP as u32 } else { len as u32 };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reserved, exclusively owned slot of the
    // ring buffer; `copied` is at most TEXT_CAP, the size of `data`.
    let ok = unsafe {
        (*record).header = header(record_kind, comm);
        (*record).len = len as u32;
        (*record).copied = copied;
        read_user_raw((*record).data.as_mut_ptr().cast(), copied, buf.cast()) == 0
    };
    if ok {
        entry.submit(0);
    } else {
        count(stat::READ_FAILED);
        entry.discard(0);
    }
}

/// `setresuid(r, e, s)` entry: remember a root caller's permanent drop to one
/// uid (all three ids equal). Temporary switches (`seteuid`, which glibc
/// implements as `setresuid(-1, e, -1)`) are not session starts.
#[tracepoint]
pub fn sys_enter_setresuid(ctx: TracePointContext) -> u32 {
    if family_comm().is_none() || current_uid() != 0 {
        return 0;
    }
    // SAFETY: reads of the tracepoint record.
    let args = unsafe { (ctx.read_at::<u64>(ARG0), ctx.read_at::<u64>(ARG1), ctx.read_at::<u64>(ARG2)) };
    let (Ok(r), Ok(e), Ok(s)) = args else {
        return 0;
    };
    let (r, e, s) = (r as u32, e as u32, s as u32);
    if r != e || e != s || r == 0 || r == u32::MAX {
        return 0;
    }
    if PENDING_SETRESUID.insert(&bpf_get_current_pid_tgid(), &[r, e, s, 0], 0).is_err() {
        count(stat::PENDING_FULL);
    }
    0
}

/// `setresuid` exit: report the drop if it succeeded.
#[tracepoint]
pub fn sys_exit_setresuid(ctx: TracePointContext) -> u32 {
    let Some(comm) = family_comm() else { return 0 };
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(ids) = (unsafe { PENDING_SETRESUID.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING_SETRESUID.remove(&key);
    // SAFETY: read of the tracepoint record.
    if unsafe { ctx.read_at::<i64>(RET) } != Ok(0) {
        return 0;
    }
    let record =
        SetresuidRecord { header: header(kind::SETRESUID, comm), ruid: ids[0], euid: ids[1], suid: ids[2], _pad: 0 };
    if EVENTS.output(record, 0).is_err() {
        count(stat::RINGBUF_FULL);
    }
    0
}

/// `sched_process_fork`, run in the parent: gives user space the sshd
/// process tree (listener -> monitor -> pre-auth and session children).
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let Some(comm) = family_comm() else { return 0 };
    let offset = offsets().fork_child_pid as usize;
    // SAFETY: read of the tracepoint record at an offset taken from tracefs.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(offset) }) else {
        return 0;
    };
    let record = ForkRecord { header: header(kind::FORK, comm), child_pid: child as u32, _pad: 0 };
    if EVENTS.output(record, 0).is_err() {
        count(stat::RINGBUF_FULL);
    }
    0
}

/// `sched_process_exit`, run in the exiting task: the end of a monitor, a
/// pre-auth child or a session child. Threads other than the leader are
/// skipped so one process gives one record.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let Some(comm) = family_comm() else { return 0 };
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return 0;
    }
    let record = ExitRecord { header: header(kind::EXIT, comm) };
    if EVENTS.output(record, 0).is_err() {
        count(stat::RINGBUF_FULL);
    }
    0
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// `connect(fd, addr, addrlen)` by a non-root process of the family to an
/// IPv4 or IPv6 address: the session child opening a forwarded connection
/// (ProxyJump, `-W`, `-L`). User space tells TCP from DNS look-ups.
#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let Some(comm) = family_comm() else { return 0 };
    if current_uid() == 0 {
        return 0;
    }
    let _ = try_connect(&ctx, comm);
    0
}

#[inline(always)]
fn try_connect(ctx: &TracePointContext, comm: [u8; COMM_LEN]) -> Result<(), i64> {
    // SAFETY: reads of the tracepoint record and, through the probe-read
    // helper, of the caller's sockaddr.
    let fd = unsafe { ctx.read_at::<u64>(ARG0) }?;
    let addr = unsafe { ctx.read_at::<u64>(ARG1) }? as *const u8;
    let addr_len = unsafe { ctx.read_at::<u64>(ARG2) }?;
    let family: u16 = unsafe { bpf_probe_read_user(addr as *const u16) }.map_err(i64::from)?;
    if family != AF_INET && family != AF_INET6 {
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
        (*record).header = header(kind::CONNECT, comm);
        (*record).fd = fd as u32;
        (*record).addr_len = addr_len as u32;
        (*record).addr = [0; SOCKADDR_CAP];
        (*record)._pad = 0;
        read_user_raw((*record).addr.as_mut_ptr().cast(), len, addr.cast()) == 0
    };
    if ok {
        entry.submit(0);
    } else {
        count(stat::READ_FAILED);
        entry.discard(0);
    }
    Ok(())
}
