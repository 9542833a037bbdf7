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

use crate::{
    filter::{admitted, current_tgid, may_be_member, raw_syscalls},
    syscalls,
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
    // The hint rules out every process that is neither sshd's nor a
    // session's before any register is read.
    if !may_be_member(current_tgid()) {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    if id == u64::from(cfg.sendto) {
        // Members' and session processes' alike, as the other backends.
        syscalls::sendto(
            reg(regs, cfg.args[1]) as *const u8,
            reg(regs, cfg.args[2]),
            reg(regs, cfg.args[4]),
            reg(regs, cfg.args[5]) as u32,
        );
        return 0;
    }
    // One membership lookup rules out every process but sshd's; the `_by`
    // halves do not look again.
    let Some(m) = admitted() else { return 0 };
    if id == u64::from(cfg.setresuid) {
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
