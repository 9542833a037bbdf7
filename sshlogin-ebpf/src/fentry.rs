//! fentry/fexit programs on the kernel functions the three syscalls call
//! (`__sys_sendto`, `__sys_setresuid`, `__sys_connect`). Unlike a syscall
//! tracepoint they do not put every task on the kernel's slow syscall path,
//! and nothing is copied into a record before the program runs: a call that
//! is not followed pays nothing at all, a followed one the BPF trampoline.
//!
//! The daemon finds the functions in the running kernel's BTF at load and
//! falls back to the tracepoints where the kernel refuses (lockdown, no
//! BTF, no trampoline support). Their arguments are integers and user
//! pointers, so nothing here reads a kernel struct; what is done with them
//! is `syscalls`, the same code the tracepoint programs run.
//!
//! BTF contexts hold every argument as a 64-bit slot, but only the low 32
//! bits of an `int` are defined (the caller may leave garbage above), so
//! `int` arguments are truncated here, as the kernel itself does.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use crate::syscalls;

/// `__sys_sendto(int fd, void __user *buff, size_t len, unsigned int flags,
/// struct sockaddr __user *addr, int addr_len)`.
#[fentry(function = "__sys_sendto")]
pub fn fentry_sendto(ctx: FEntryContext) -> u32 {
    syscalls::sendto(ctx.arg::<u64>(1) as *const u8, ctx.arg(2), ctx.arg(4), ctx.arg::<u64>(5) as u32);
    0
}

/// `__sys_setresuid(uid_t ruid, uid_t euid, uid_t suid)`.
#[fentry(function = "__sys_setresuid")]
pub fn fentry_setresuid(ctx: FEntryContext) -> u32 {
    syscalls::setresuid_enter(ctx.arg::<u64>(0) as u32, ctx.arg::<u64>(1) as u32, ctx.arg::<u64>(2) as u32);
    0
}

/// `__sys_setresuid` returns `long`: it is the slot after the three
/// arguments (read from the context rather than with `bpf_get_func_ret`,
/// which needs 5.17).
#[fexit(function = "__sys_setresuid")]
pub fn fexit_setresuid(ctx: FExitContext) -> u32 {
    syscalls::setresuid_exit(ctx.arg::<i64>(3));
    0
}

/// `__sys_connect(int fd, struct sockaddr __user *uservaddr, int addrlen)`.
#[fentry(function = "__sys_connect")]
pub fn fentry_connect(ctx: FEntryContext) -> u32 {
    syscalls::connect(ctx.arg::<u64>(0) as u32, ctx.arg::<u64>(1) as *const u8, ctx.arg::<u64>(2) as u32);
    0
}
