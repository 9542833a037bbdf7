//! Tracepoint programs. Field offsets of `syscalls:*` events are the syscall
//! ABI (8-byte argument slots after a 16-byte common header); the one
//! `sched:*` offset that differs between kernels comes from the daemon.
//!
//! The `sched:*` programs keep the membership map: a root member's child
//! joins its tree at fork, an exec either keeps a member (an sshd name),
//! drops it (anything else) or, for a root process that was no member and
//! execs an sshd name, starts a tree; an exit ends membership.

use aya_ebpf::{EbpfContext, helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext};
use sshlogin_common::{
    CLONE_THREAD, ExecRecord, ExitRecord, ForkRecord, Member, SessionProc, exec, kind, member, stat,
};

use crate::{
    filter::{
        EVENTS, add_member, add_session, count, current_comm, current_tgid, current_uid, follows_sessions, header,
        in_family, may_be_member, member_entry, membership_of, now_ns, offsets, remove_member, remove_session,
        session_entry, task_offsets,
    },
    session::{self, group_dead},
    syscalls,
};

/// Offset of a `sys_enter_*` record's argument `n`: a 16-byte common
/// header (with the syscall number), then one 8-byte slot per argument.
const fn arg_slot(n: usize) -> usize {
    16 + 8 * n
}
const ARG0: usize = arg_slot(0);
const ARG1: usize = arg_slot(1);
const ARG2: usize = arg_slot(2);
const ARG4: usize = arg_slot(4);
const ARG5: usize = arg_slot(5);
/// A `sys_exit_*` record's return value, where `sys_enter_*` has argument 0.
const RET: usize = arg_slot(0);

/// A syscall argument slot read straight from the tracepoint record: the
/// verifier allows constant-offset loads from a tracepoint's context, and
/// they cost a load instead of a probe-read helper call.
#[inline(always)]
fn arg<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: `offset` is a constant inside the syscall tracepoint record
    // (16-byte header, then 8-byte argument slots) and 8-aligned.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    syscalls::sendto(
        arg::<u64>(&ctx, ARG1) as *const u8,
        arg(&ctx, ARG2),
        arg(&ctx, ARG4),
        arg::<u64>(&ctx, ARG5) as u32,
    );
    0
}

#[tracepoint]
pub fn sys_enter_setresuid(ctx: TracePointContext) -> u32 {
    syscalls::setresuid_enter(
        arg::<u64>(&ctx, ARG0) as u32,
        arg::<u64>(&ctx, ARG1) as u32,
        arg::<u64>(&ctx, ARG2) as u32,
    );
    0
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    syscalls::connect(
        arg::<u64>(&ctx, ARG0) as u32,
        arg::<u64>(&ctx, ARG1) as *const u8,
        arg::<u64>(&ctx, ARG2) as u32,
    );
    0
}

/// `setresuid` exit: report the drop if it succeeded.
#[tracepoint]
pub fn sys_exit_setresuid(ctx: TracePointContext) -> u32 {
    syscalls::setresuid_exit(arg(&ctx, RET));
    0
}

/// `sched_process_fork`, run in the parent. A child of a root member joins
/// the parent's tree; a child forked after its parent dropped root (the
/// user's shell and everything below it) does not: it is a session process
/// (`task_newtask`).
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let Some(m) = membership_of(current_tgid()) else { return 0 };
    if m.flags & member::REFUSED != 0 || current_uid() != 0 {
        return 0;
    }
    let Some(child) = child_pid(&ctx) else { return 0 };
    // Any entry under this pid is from an earlier life: this one starts now.
    if add_member(child, &m).is_err() {
        count(stat::MEMBERS_FULL);
        return 0;
    }
    let record = ForkRecord { header: header(kind::FORK, &m), child_pid: child, _pad: 0 };
    if EVENTS.output(record, 0).is_err() {
        count(stat::RINGBUF_FULL);
    }
    0
}

/// `task:task_newtask`, run in the parent at the end of a successful
/// `copy_process`, before the child runs: a new process (not a thread) of
/// a member that dropped root, or of a session process, is a session
/// process. Threads take no entry: every probe asks by thread group.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let tgid = current_tgid();
    if !may_be_member(tgid) {
        return 0;
    }
    let session = match member_entry(tgid) {
        None => session_entry(tgid),
        Some(m) if m.flags & member::REFUSED == 0 && current_uid() != 0 && follows_sessions() => Some(SessionProc {
            tree: m.tree,
            session: tgid,
            tree_ns: m.tree_ns,
            session_ns: now_ns(),
            quota_uid: current_uid(),
            _pad: 0,
        }),
        Some(_) => None,
    };
    let Some(s) = session else { return 0 };
    let o = offsets();
    // SAFETY: reads of the tracepoint record at offsets taken from tracefs.
    let (Ok(flags), Ok(child)) = (unsafe { ctx.read_at::<u64>(o.newtask_flags as usize) }, unsafe {
        ctx.read_at::<i32>(o.newtask_pid as usize)
    }) else {
        return 0;
    };
    if flags & CLONE_THREAD == 0 {
        add_session(child as u32, &s);
    }
    0
}

#[inline(always)]
fn child_pid(ctx: &TracePointContext) -> Option<u32> {
    // SAFETY: read of the tracepoint record at an offset taken from tracefs.
    unsafe { ctx.read_at::<i32>(offsets().fork_child_pid as usize) }.ok().map(|pid| pid as u32)
}

/// `sched_process_exec`, run in the task that exec'd, with its new name.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let tgid = current_tgid();
    // A thread other than the leader exec'd and took the leader's pid: an
    // entry the fork probe made under its thread id must not outlive it.
    // SAFETY: read of the tracepoint record at an offset taken from tracefs.
    if let Ok(old) = unsafe { ctx.read_at::<i32>(offsets().exec_old_pid as usize) }
        && old as u32 != tgid
    {
        remove_member(old as u32);
    }
    // The lookup, then the uid, before the name: most execs on a host are
    // by processes that are neither members nor root.
    let mut joined = None;
    let maybe = may_be_member(tgid);
    let (m, how) = match if maybe { member_entry(tgid) } else { None } {
        Some(m) if in_family(&current_comm()) => (m, exec::STAYED),
        Some(m) => {
            remove_member(tgid);
            // It runs something for someone: a root login's shell, or a
            // helper (user space tells them apart by the parent).
            if m.flags & member::REFUSED == 0 && follows_sessions() {
                let s = SessionProc {
                    tree: m.tree,
                    session: session::parent_tgid(session::current_task(), &task_offsets()),
                    tree_ns: m.tree_ns,
                    session_ns: now_ns(),
                    quota_uid: current_uid(),
                    _pad: 0,
                };
                add_session(tgid, &s);
                joined = Some(s);
            }
            (m, exec::LEFT)
        }
        // Only root can start a tree: a setuid binary run through a symlink
        // named sshd keeps its caller's real uid.
        None if current_uid() == 0 && in_family(&current_comm()) => {
            let m = Member { tree: tgid, flags: 0, tree_ns: now_ns() };
            if add_member(tgid, &m).is_err() {
                count(stat::MEMBERS_FULL);
                return 0;
            }
            (m, exec::NEW_TREE)
        }
        None => {
            if maybe && let Some(s) = session_entry(tgid) {
                session::exec(&ctx, &s);
            }
            return 0;
        }
    };
    if m.flags & member::REFUSED != 0 {
        count(stat::REFUSED_TREE);
        return 0;
    }
    let record = ExecRecord { header: header(kind::EXEC, &m), how, _pad: 0 };
    if EVENTS.output(record, 0).is_err() {
        count(stat::RINGBUF_FULL);
    }
    if let Some(s) = joined {
        session::exec(&ctx, &s);
    }
    0
}

/// `sched_process_exit`, run in the exiting task: a member's exit ends its
/// membership, the last thread of a session process its entry (a leader
/// may exit before its other threads, which stay in the session).
/// Threads other than the leader make no record, but an entry the fork
/// probe made under a thread's id goes with it.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tgid != tid {
        remove_member(tid);
        if may_be_member(tgid) {
            end_session(tgid);
        }
        return 0;
    }
    if !may_be_member(tgid) {
        return 0;
    }
    // A session process that became root and exec'd sshd is a member now;
    // its session entry goes with it too.
    end_session(tgid);
    let Some(m) = member_entry(tgid) else { return 0 };
    remove_member(tgid);
    if m.flags & member::REFUSED != 0 {
        count(stat::REFUSED_TREE);
        return 0;
    }
    let record = ExitRecord { header: header(kind::EXIT, &m) };
    if EVENTS.output(record, 0).is_err() {
        count(stat::RINGBUF_FULL);
    }
    0
}

/// Ends `tgid`'s session entry if the exiting thread was its group's
/// last. The entry is looked up first: the group's liveness costs two
/// reads of kernel memory, which only session processes need.
#[inline(always)]
fn end_session(tgid: u32) {
    if session_entry(tgid).is_some() && group_dead() {
        remove_session(tgid);
    }
}

/// Does nothing. Not attached by the daemon: `cargo xtask bench` attaches it
/// to a syscall nothing else uses to measure what BPF run-time statistics
/// add to every program run, and subtracts that from the others.
#[tracepoint]
pub fn calibrate(_ctx: TracePointContext) -> u32 {
    0
}

/// Asks for the caller's ids and nothing more: what the helper call that
/// each program's membership question starts with costs on the host
/// (`cargo xtask bench`, which attaches it as it does `calibrate`).
#[tracepoint]
pub fn calibrate_pid(_ctx: TracePointContext) -> u32 {
    // Used, so that the call stays; a pid_tgid is never all ones.
    u32::from(bpf_get_current_pid_tgid() == u64::MAX)
}
