//! The raw `sys_enter` tracepoint: one program for every syscall of every
//! process, which picks the three sshlogin follows by number and reads their
//! arguments from the saved registers. It skips the per-syscall tracepoints'
//! work of copying every call's arguments into a record; the daemon loads it
//! instead of `sys_enter_sendto`, `sys_enter_setresuid` and
//! `sys_enter_connect` when `capture.syscall_probes = "raw"`.
//!
//! `struct pt_regs` is the architecture's user register frame (uapi
//! `asm/ptrace.h`), not a kernel-internal struct: its layout does not change
//! between kernels, and the daemon supplies the offsets for its architecture.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext};

use sshlogin_common::{member, stat};

use crate::{
    filter::{count, current_tgid, membership_of, raw_syscalls, session_of},
    session, syscalls,
};

#[inline(always)]
fn reg(regs: u64, offset: u32) -> u64 {
    // SAFETY: a probe read of the caller's saved registers, which fails
    // instead of faulting.
    unsafe { bpf_probe_read_kernel((regs + u64::from(offset)) as *const u64) }.unwrap_or(0)
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    let cfg = raw_syscalls();
    if id != u64::from(cfg.sendto) && id != u64::from(cfg.setresuid) && id != u64::from(cfg.connect) {
        return 0;
    }
    // One membership lookup rules out every process but sshd's (and the
    // sessions', for sendto); the `_by` halves do not look again.
    let regs: u64 = ctx.arg(0);
    let tgid = current_tgid();
    let Some(m) = membership_of(tgid) else {
        if id == u64::from(cfg.sendto)
            && let Some(s) = session_of(tgid)
        {
            let _ = session::sendto(
                &s,
                reg(regs, cfg.args[1]) as *const u8,
                reg(regs, cfg.args[2]),
                reg(regs, cfg.args[4]),
                reg(regs, cfg.args[5]) as u32,
            );
        }
        return 0;
    };
    if m.flags & member::REFUSED != 0 {
        count(stat::REFUSED_TREE);
        return 0;
    }
    if id == u64::from(cfg.sendto) {
        let _ = syscalls::sendto_by(
            &m,
            reg(regs, cfg.args[1]) as *const u8,
            reg(regs, cfg.args[2]),
            reg(regs, cfg.args[4]),
            reg(regs, cfg.args[5]) as u32,
        );
    } else if id == u64::from(cfg.setresuid) {
        let (r, e, s) = (reg(regs, cfg.args[0]) as u32, reg(regs, cfg.args[1]) as u32, reg(regs, cfg.args[2]) as u32);
        if syscalls::is_permanent_drop(r, e, s) {
            syscalls::setresuid_enter_by(r, e, s);
        }
    } else {
        let _ = syscalls::connect_by(
            &m,
            reg(regs, cfg.args[0]) as u32,
            reg(regs, cfg.args[1]) as *const u8,
            reg(regs, cfg.args[2]) as u32,
        );
    }
    0
}
