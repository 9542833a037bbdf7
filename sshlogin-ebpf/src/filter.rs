//! Maps, load-time settings and the per-call filter shared by every probe.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_comm as raw_get_current_comm, bpf_ktime_get_boot_ns},
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use sshlogin_common::{COMM_LEN, Family, Header, MAX_FAMILY, RawSyscalls, TraceOffsets, stat};

/// Process names whose calls are recorded; written by the daemon at load time.
#[unsafe(no_mangle)]
static FAMILY: Family = Family::EMPTY;

/// Tracepoint field offsets read from tracefs by the daemon at load time.
#[unsafe(no_mangle)]
static OFFSETS: TraceOffsets = TraceOffsets { fork_child_pid: 20, _pad: 0 };

/// Syscall numbers and register offsets for the raw `sys_enter` program.
#[unsafe(no_mangle)]
static RAW_SYSCALLS: RawSyscalls = RawSyscalls::NONE;

#[inline(always)]
pub fn raw_syscalls() -> RawSyscalls {
    // SAFETY: a plain read of a load-time constant.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(RAW_SYSCALLS)) }
}

/// The one channel to user space. Its size is a load-time setting.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 21, 0);

/// Per-CPU counters, indexed by `sshlogin_common::stat`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// `setresuid` arguments between syscall entry and exit, keyed by pid_tgid.
/// LRU so that an entry orphaned by a missed exit cannot fill the map.
#[map]
pub static PENDING_SETRESUID: LruHashMap<u64, [u32; 4]> = LruHashMap::with_max_entries(1024, 0);

/// The caller's comm when it belongs to the sshd family, `None` otherwise.
/// This is the whole cost of a probe for every other process.
#[inline(always)]
pub fn family_comm() -> Option<[u8; COMM_LEN]> {
    // Into two zeroed u64s (two stores, no memset call), compared as words.
    // Zeroed because some kernels copy the name without padding the rest of
    // the buffer (Debian 12's 6.1 does; 6.18 pads): the bytes after the NUL
    // would be stack garbage and a name would match only by luck. Found by
    // `cargo xtask vm-test`, where most records went missing.
    let mut words = [0u64; 2];
    // SAFETY: the helper writes at most 16 bytes, NUL terminated.
    if unsafe { raw_get_current_comm(words.as_mut_ptr().cast(), COMM_LEN as u32) } != 0 {
        return None;
    }
    let mut i = 0;
    while i < MAX_FAMILY {
        // SAFETY: FAMILY is 8-aligned and made of u64-sized name halves; the
        // volatile read keeps the compiler from folding the all-zero default.
        let name = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(FAMILY.names[i]).cast::<[u64; 2]>()) };
        if name[0] == words[0] && name[1] == words[1] {
            // SAFETY: same size, every bit pattern is valid for both.
            return Some(unsafe { core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(words) });
        }
        i += 1;
    }
    None
}

#[inline(always)]
pub fn offsets() -> TraceOffsets {
    // SAFETY: a plain read of a load-time constant.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(OFFSETS)) }
}

#[inline(always)]
pub fn current_uid() -> u32 {
    bpf_get_current_uid_gid() as u32
}

#[inline(always)]
pub fn header(kind: u32, comm: [u8; COMM_LEN]) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    Header {
        kind,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        _pad: 0,
        // SAFETY: no arguments, always available from 5.8.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        comm,
    }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
    }
}
