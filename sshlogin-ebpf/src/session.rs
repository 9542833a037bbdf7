//! Session activity: what the processes of an SSH session exec, and the
//! audit records sudo and su send from inside one. Records go to their own
//! ring buffer (`ACTIVITY`), never to the one logins use.
//!
//! A session process is made at fork (a child of a member that dropped
//! root, or of a session process) or at exec (a member that leaves its tree
//! for something that is not sshd, as a root login's shell does); user
//! space ties each to its connection through the sshd process it descends
//! from, and drops what belongs to no opened session (a helper's).
//!
//! The kernel structures read here (the caller's credentials, parent and
//! argument area) are found at load in the running kernel's BTF; without
//! them the session probes record nothing.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_task, bpf_probe_read_kernel,
        generated::{bpf_probe_read_kernel_str as read_kernel_str_raw, bpf_probe_read_user as read_user_raw},
    },
    programs::TracePointContext,
};
use sshlogin_common::{
    ARGS_CAP, Member, PATH_CAP, SessionExecRecord, SessionHeader, SessionMessageRecord, SessionProc, TEXT_CAP,
    TaskOffsets, kind, session_exec, stat, task,
};

use crate::{
    filter::{ACTIVITY, count, current_uid, header, offsets, records_execs, task_offsets},
    syscalls::{BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE, is_audit_message, submit_if},
};

/// Says "not known" for an id the probe could not read.
const UNKNOWN: u32 = u32::MAX;

#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    // SAFETY: a probe read of kernel memory, which fails instead of faulting.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// The current task's effective uid, from its credentials.
#[inline(always)]
fn euid(task: u64, t: &TaskOffsets) -> u32 {
    let Some(cred) = read::<u64>(task + u64::from(t.task_cred)) else { return UNKNOWN };
    read::<u32>(cred + u64::from(t.cred_euid)).unwrap_or(UNKNOWN)
}

/// The tgid of the current task's parent.
#[inline(always)]
pub fn parent_tgid(task: u64, t: &TaskOffsets) -> u32 {
    let Some(parent) = read::<u64>(task + u64::from(t.task_real_parent)) else { return 0 };
    read::<u32>(parent + u64::from(t.task_tgid)).unwrap_or(0)
}

/// The device and inode of the file the task runs (its mm's `exe_file`):
/// the kernel's, whatever name the exec was given. (0, 0) if unread.
#[inline(always)]
fn exe_identity(task: u64, t: &TaskOffsets) -> (u32, u64) {
    let inode = read::<u64>(task + u64::from(t.task_mm))
        .filter(|&mm| mm != 0)
        .and_then(|mm| read::<u64>(mm + u64::from(t.mm_exe_file)))
        .filter(|&file| file != 0)
        .and_then(|file| read::<u64>(file + u64::from(t.file_inode)))
        .filter(|&inode| inode != 0);
    let Some(inode) = inode else { return (0, 0) };
    let ino = read::<u64>(inode + u64::from(t.inode_ino)).unwrap_or(0);
    let dev = read::<u64>(inode + u64::from(t.inode_sb))
        .filter(|&sb| sb != 0)
        .and_then(|sb| read::<u32>(sb + u64::from(t.sb_dev)))
        .unwrap_or(0);
    (dev, ino)
}

/// Whether the current task's thread group is dead: its last thread is
/// exiting (`signal->live`, counted down before `sched_process_exit`).
/// Unknown counts as dead, as an exit always did.
#[inline(always)]
pub fn group_dead() -> bool {
    let t = task_offsets();
    if t.known & task::FOLLOW == 0 {
        return true;
    }
    let Some(signal) = read::<u64>(current_task() + u64::from(t.task_signal)) else { return true };
    read::<i32>(signal + u64::from(t.signal_live)).is_none_or(|live| live <= 0)
}

/// The current task (`bpf_get_current_task`, available since 4.8).
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: no arguments; the result is only used as an address to
    // probe-read from.
    unsafe { bpf_get_current_task() }
}

#[inline(always)]
fn session_header(record_kind: u32, s: &SessionProc, euid: u32) -> SessionHeader {
    let m = Member { tree: s.tree, flags: 0, tree_ns: s.tree_ns };
    SessionHeader { header: header(record_kind, &m), session: s.session, euid, session_ns: s.session_ns }
}

/// `sched_process_exec` of a session process: the file name the kernel
/// exec'd, the new program's arguments and whose they are. With execs not
/// wanted, only set-user-id ones (an effective uid that is not the real
/// one): they are escalations.
#[inline(always)]
pub fn exec(ctx: &TracePointContext, s: &SessionProc) {
    let t = task_offsets();
    if t.known & task::FOLLOW == 0 {
        return;
    }
    let task = current_task();
    let effective = euid(task, &t);
    if !records_execs() && effective == current_uid() {
        return;
    }
    // Plain execs may fill three quarters of the ring; the last quarter is
    // kept for escalation records (set-user-id execs, sudo's and su's
    // audit messages), which an exec flood must not crowd out.
    if effective == current_uid() && ACTIVITY.query(BPF_RB_AVAIL_DATA) > ACTIVITY.query(BPF_RB_RING_SIZE) / 4 * 3 {
        count(stat::ACTIVITY_SHED);
        return;
    }
    let Some(mut entry) = ACTIVITY.reserve::<SessionExecRecord>(0) else {
        count(stat::ACTIVITY_FULL);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` is a reserved, exclusively owned ring-buffer slot.
    // Field by field: the record is larger than the BPF stack.
    unsafe {
        (*record).sh = session_header(kind::SESSION_EXEC, s, effective);
        (*record).ppid = parent_tgid(task, &t);
        (*record).flags = 0;
        (*record).path_copied = 0;
        (*record).args_copied = 0;
        (*record)._pad = 0;
    }
    let (exe_dev, exe_ino) = exe_identity(task, &t);
    // SAFETY: as above.
    unsafe {
        (*record).exe_dev = exe_dev;
        (*record).exe_ino = exe_ino;
    }
    // The file name: a `__data_loc` field (offset in the low half, length
    // with its NUL in the high half) of the tracepoint's record.
    // SAFETY: a read of the tracepoint record at an offset from tracefs.
    if let Ok(loc) = unsafe { ctx.read_at::<u32>(offsets().exec_filename as usize) } {
        let name = ctx.as_ptr() as u64 + u64::from(loc & 0xffff);
        // SAFETY: the helper writes at most PATH_CAP bytes, NUL terminated,
        // into the record's `path`; it fails instead of faulting.
        let n = unsafe { read_kernel_str_raw((*record).path.as_mut_ptr().cast(), PATH_CAP as u32, name as *const _) };
        // SAFETY: as above.
        unsafe {
            if n > 0 {
                (*record).path_copied = (n - 1) as u32;
            }
            if (loc >> 16) as usize > PATH_CAP {
                (*record).flags |= session_exec::PATH_CUT;
            }
        }
    }
    // The arguments: the new program's argument area, which the kernel
    // copied onto its stack; it has not run yet, so this is what it was
    // given.
    let (start, end) = match read::<u64>(task + u64::from(t.task_mm)) {
        Some(mm) if mm != 0 => (
            read::<u64>(mm + u64::from(t.mm_arg_start)).unwrap_or(0),
            read::<u64>(mm + u64::from(t.mm_arg_end)).unwrap_or(0),
        ),
        _ => (0, 0),
    };
    let len = end.wrapping_sub(start);
    let ok = if start == 0 || end < start {
        false
    } else {
        let copied = if len > ARGS_CAP as u64 { ARGS_CAP as u32 } else { len as u32 };
        // SAFETY: at most ARGS_CAP bytes into the record's `args`, through
        // the probe-read helper.
        unsafe {
            if len > ARGS_CAP as u64 {
                (*record).flags |= session_exec::ARGS_CUT;
            }
            let read_ok = read_user_raw((*record).args.as_mut_ptr().cast(), copied, start as *const _) == 0;
            if read_ok {
                (*record).args_copied = copied;
            }
            read_ok
        }
    };
    if !ok {
        // SAFETY: as above.
        unsafe { (*record).flags |= session_exec::ARGS_UNREAD };
    }
    entry.submit(0);
}

/// `sendto` by a session process: an audit user message is recorded when
/// the sender is privileged (real or effective uid 0: sudo once it has set
/// its real uid, su while it authenticates), since the kernel refuses
/// others (CAP_AUDIT_WRITE) and an unprivileged one is a forgery.
#[inline(always)]
pub fn sendto(s: &SessionProc, buf: *const u8, len: u64, addr: u64, addr_len: u32) -> Result<(), i64> {
    let t = task_offsets();
    if t.known & task::FOLLOW == 0 || !is_audit_message(buf, len, addr, addr_len)? {
        return Ok(());
    }
    let effective = euid(current_task(), &t);
    if current_uid() != 0 && effective != 0 {
        count(stat::SESSION_AUDIT_UNPRIVILEGED);
        return Ok(());
    }
    let Some(mut entry) = ACTIVITY.reserve::<SessionMessageRecord>(0) else {
        count(stat::ACTIVITY_FULL);
        return Ok(());
    };
    let copied = if len > TEXT_CAP as u64 { TEXT_CAP as u32 } else { len as u32 };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` is a reserved, exclusively owned ring-buffer slot;
    // `copied` is at most TEXT_CAP, the size of `data`.
    let ok = unsafe {
        (*record).sh = session_header(kind::SESSION_AUDIT, s, effective);
        (*record).len = len as u32;
        (*record).copied = copied;
        read_user_raw((*record).data.as_mut_ptr().cast(), copied, buf.cast()) == 0
    };
    submit_if(entry, ok);
    Ok(())
}
