//! Maps, load-time settings and the admission every probe starts with: the
//! caller must be a member of an sshd process tree (the `MEMBERS` map).
//! For every other process a probe costs that one hash lookup.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_comm as raw_get_current_comm, bpf_ktime_get_boot_ns},
    },
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use sshlogin_common::{
    COMM_LEN, Family, Header, MAX_FAMILY, MAX_MEMBERS, Member, RawSyscalls, TraceOffsets, member, stat,
};

/// Names of the sshd binaries (as `comm`); written by the daemon at load
/// time. Only a root exec of one of these names can start a tree, and a
/// member that execs anything else leaves its tree.
#[unsafe(no_mangle)]
static FAMILY: Family = Family::EMPTY;

/// Tracepoint field offsets read from tracefs by the daemon at load time.
#[unsafe(no_mangle)]
static OFFSETS: TraceOffsets = TraceOffsets { fork_child_pid: 20, exec_old_pid: 16 };

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

/// The sshd process trees, by tgid. A plain hash, not an LRU: an entry
/// leaves only when its process exits or execs something that is not sshd,
/// never to make room (a full map is counted as `MEMBERS_FULL`).
#[map]
pub static MEMBERS: HashMap<u32, Member> = HashMap::with_max_entries(MAX_MEMBERS, 0);

/// `setresuid` arguments between syscall entry and exit, keyed by pid_tgid.
/// LRU so that an entry orphaned by a missed exit cannot fill the map.
#[map]
pub static PENDING_SETRESUID: LruHashMap<u64, [u32; 4]> = LruHashMap::with_max_entries(1024, 0);

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The caller's membership, whatever its tree's verdict.
#[inline(always)]
pub fn membership() -> Option<Member> {
    // SAFETY: the value is copied out at once; entries are plain integers.
    unsafe { MEMBERS.get(current_tgid()) }.copied()
}

/// The caller's membership if its tree may record: the first (and, for
/// every process that is not sshd, the only) thing each probe does.
#[inline(always)]
pub fn admitted() -> Option<Member> {
    let m = membership()?;
    if m.flags & member::REFUSED != 0 {
        count(stat::REFUSED_TREE);
        return None;
    }
    Some(m)
}

/// The caller's `comm`, NUL padded.
#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    // Into two zeroed u64s (two stores, no memset call). Zeroed because some
    // kernels copy the name without padding the rest of the buffer (Debian
    // 12's 6.1 does; 6.18 pads): the bytes after the NUL would be stack
    // garbage. Found by `cargo xtask vm-test`.
    let mut words = [0u64; 2];
    // SAFETY: the helper writes at most 16 bytes, NUL terminated; on error
    // the buffer is zeroed, which matches no name.
    unsafe { raw_get_current_comm(words.as_mut_ptr().cast(), COMM_LEN as u32) };
    // SAFETY: same size, every bit pattern is valid for both.
    unsafe { core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(words) }
}

/// Whether `comm` is one of the sshd names.
#[inline(always)]
pub fn in_family(comm: &[u8; COMM_LEN]) -> bool {
    // SAFETY: same size, every bit pattern is valid for both.
    let words = unsafe { core::mem::transmute::<[u8; COMM_LEN], [u64; 2]>(*comm) };
    let mut i = 0;
    while i < MAX_FAMILY {
        // SAFETY: FAMILY is 8-aligned and made of u64-sized name halves; the
        // volatile read keeps the compiler from folding the all-zero default.
        let name = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(FAMILY.names[i]).cast::<[u64; 2]>()) };
        if name[0] == words[0] && name[1] == words[1] {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
pub fn offsets() -> TraceOffsets {
    // SAFETY: a plain read of a load-time constant.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(OFFSETS)) }
}

/// The caller's real uid.
#[inline(always)]
pub fn current_uid() -> u32 {
    bpf_get_current_uid_gid() as u32
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: no arguments, always available from 5.8.
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
pub fn header(kind: u32, m: &Member) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    Header {
        kind,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        tree: m.tree,
        ktime_ns: now_ns(),
        comm: current_comm(),
        tree_ns: m.tree_ns,
    }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
    }
}
