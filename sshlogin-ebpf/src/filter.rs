//! Maps, load-time settings and the admission every probe starts with: the
//! caller must be a member of an sshd process tree (the `MEMBERS` map).
//! In front of that hash lookup sits the membership hint: per slot of pids
//! (`hint_entries`), how many members the kernel made there and whether the
//! daemon added any. It never says none where there is one, so a slot that
//! says none rules the caller out with array loads from one cache line,
//! which the verifier inlines (no call, no hashing): what almost every
//! process on the host pays.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_comm as raw_get_current_comm, bpf_ktime_get_boot_ns},
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use sshlogin_common::{
    COMM_LEN, Family, HINT_SLOTS, Header, MAX_FAMILY, MAX_MEMBERS, MAX_SESSION_PROCS, MAX_SESSION_UIDS, Member,
    RawSyscalls, SESSION_PROCS_PER_UID, SessionProc, TaskOffsets, TraceOffsets, hint_entries, member, stat, task,
};

/// Names of the sshd binaries (as `comm`); written by the daemon at load
/// time. Only a root exec of one of these names can start a tree, and a
/// member that execs anything else leaves its tree.
#[unsafe(no_mangle)]
static FAMILY: Family = Family::EMPTY;

/// Tracepoint field offsets read from tracefs by the daemon at load time.
#[unsafe(no_mangle)]
static OFFSETS: TraceOffsets =
    TraceOffsets { fork_child_pid: 20, exec_old_pid: 16, exec_filename: 8, newtask_pid: 8, newtask_flags: 32, _pad: 0 };

/// Kernel structure offsets from the running kernel's BTF; all zero (not
/// known) turns the session probes off.
#[unsafe(no_mangle)]
static TASK: TaskOffsets = TaskOffsets {
    task_cred: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_mm: 0,
    cred_euid: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    task_signal: 0,
    signal_live: 0,
    mm_exe_file: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    known: 0,
};

/// Whether session processes are followed (the offsets are known).
#[inline(always)]
pub fn follows_sessions() -> bool {
    task_offsets().known & task::FOLLOW != 0
}

/// Whether session processes' execs are recorded.
#[inline(always)]
pub fn records_execs() -> bool {
    task_offsets().known & task::EXECS != 0
}

#[inline(always)]
pub fn task_offsets() -> TaskOffsets {
    // SAFETY: a plain read of a load-time constant.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(TASK)) }
}

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

/// What happens inside sessions (execs, escalations): a channel of its own,
/// so that a session running thousands of processes can fill only this one
/// and never costs a login record. Its size is a load-time setting.
#[map]
pub static ACTIVITY: RingBuf = RingBuf::with_byte_size(1 << 19, 0);

/// Per-CPU counters, indexed by `sshlogin_common::stat`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// The sshd process trees, by tgid. A plain hash, not an LRU: an entry
/// leaves only when its process exits or execs something that is not sshd,
/// never to make room (a full map is counted as `MEMBERS_FULL`).
#[map]
pub static MEMBERS: HashMap<u32, Member> = HashMap::with_max_entries(MAX_MEMBERS, 0);

/// The session processes, by tgid: a second class, bounded apart from
/// `MEMBERS` (a session forking without end cannot crowd out sshd) and per
/// login uid (`SESSION_QUOTA`: one user cannot crowd out another's).
#[map]
pub static SESSIONS: HashMap<u32, SessionProc> = HashMap::with_max_entries(MAX_SESSION_PROCS, 0);

/// Session processes followed per quota uid. LRU: uids that no longer
/// have any make room for new ones (a count pushed out while in use only
/// restarts from zero).
#[map]
pub static SESSION_QUOTA: LruHashMap<u32, u32> = LruHashMap::with_max_entries(MAX_SESSION_UIDS, 0);

/// The membership hint, two entries per slot of pids (`hint_entries`):
/// - the kernel's count of the `MEMBERS` and `SESSIONS` entries it made in
///   the slot,
///   counted up before an entry is made and down after one is removed
///   (atomic adds), so never below the number of its entries there.
///   Entries the daemon removes are not counted down: the slot stays
///   "maybe", which only costs a lookup;
/// - set by the daemon, for good, before it adds an entry in the slot (the
///   sshd processes that ran before it started). The kernel may count such
///   an entry down when it removes it, leaving the count short: this keeps
///   the slot "maybe".
#[map]
pub static MEMBER_HINT: Array<u64> = Array::with_max_entries(2 * HINT_SLOTS, 0);

/// `setresuid` arguments between syscall entry and exit, keyed by pid_tgid.
/// LRU so that an entry orphaned by a missed exit cannot fill the map.
#[map]
pub static PENDING_SETRESUID: LruHashMap<u64, [u32; 4]> = LruHashMap::with_max_entries(1024, 0);

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Whether `pid` may have a `MEMBERS` entry: false only when it has none.
#[inline(always)]
pub fn may_be_member(pid: u32) -> bool {
    let (counted, seeded) = hint_entries(pid);
    // A failed lookup (impossible: the entries are in range) answers "maybe".
    MEMBER_HINT.get(counted) != Some(&0) || MEMBER_HINT.get(seeded) != Some(&0)
}

/// The caller's membership, whatever its tree's verdict.
#[inline(always)]
pub fn membership() -> Option<Member> {
    membership_of(current_tgid())
}

/// `tgid`'s membership, for a probe that already asked for the caller's ids.
#[inline(always)]
pub fn membership_of(tgid: u32) -> Option<Member> {
    if !may_be_member(tgid) {
        return None;
    }
    member_entry(tgid)
}

/// `tgid`'s `MEMBERS` entry, for a probe whose hint said "maybe" already
/// (one hint question per program: it is all most processes pay).
#[inline(always)]
pub fn member_entry(tgid: u32) -> Option<Member> {
    // SAFETY: the value is copied out at once; entries are plain integers.
    unsafe { MEMBERS.get(tgid) }.copied()
}

/// Adds `pid` to the map (an entry from an earlier life of the pid is
/// replaced), counted in its hint slot before it is visible.
#[inline(always)]
pub fn add_member(pid: u32, m: &Member) -> Result<(), i64> {
    // SAFETY: only whether there is an entry is read.
    let existed = unsafe { MEMBERS.get(pid) }.is_some();
    if !existed {
        count_slot(pid, 1);
    }
    let added = MEMBERS.insert(pid, m, 0);
    if added.is_err() && !existed {
        count_slot(pid, u64::MAX);
    }
    added.map_err(i64::from)
}

/// Removes `pid` from the map, and from its slot's count if it was there.
#[inline(always)]
pub fn remove_member(pid: u32) {
    if may_be_member(pid) && MEMBERS.remove(pid).is_ok() {
        count_slot(pid, u64::MAX);
    }
}

/// Adds `delta` (`u64::MAX` to take one away) to `pid`'s slot count.
#[inline(always)]
fn count_slot(pid: u32, delta: u64) {
    if let Some(n) = MEMBER_HINT.get_ptr_mut(hint_entries(pid).0) {
        // SAFETY: a map value, 8-aligned and alive while the program runs.
        // Every CPU updates it with one atomic add (BPF_XADD, since the
        // result is unused; the BPF target has no compare-and-swap, so
        // `AtomicU64::fetch_add` is not offered).
        unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(n, delta) };
    }
}

/// `tgid`'s `SESSIONS` entry, for a probe whose hint said "maybe" (the
/// hint counts both maps).
#[inline(always)]
pub fn session_entry(tgid: u32) -> Option<SessionProc> {
    // SAFETY: the value is copied out at once; entries are plain integers.
    unsafe { SESSIONS.get(tgid) }.copied()
}

/// Adds `pid` to the session map within its uid's quota, counted in its
/// hint slot before it is visible. An entry from an earlier life of the pid
/// is replaced (and its quota handed back first).
#[inline(always)]
pub fn add_session(pid: u32, s: &SessionProc) {
    remove_session(pid);
    let quota = match SESSION_QUOTA.get_ptr_mut(s.quota_uid) {
        Some(n) => n,
        None => {
            if SESSION_QUOTA.insert(s.quota_uid, 0, 1 /* BPF_NOEXIST */).is_err()
                && SESSION_QUOTA.get_ptr_mut(s.quota_uid).is_none()
            {
                count(stat::SESSIONS_FULL);
                return;
            }
            match SESSION_QUOTA.get_ptr_mut(s.quota_uid) {
                Some(n) => n,
                None => return,
            }
        }
    };
    // SAFETY: a map value, 4-aligned and alive while the program runs. A
    // race between CPUs may let a uid go a few entries over: harmless.
    if unsafe { core::ptr::read_volatile(quota) } >= SESSION_PROCS_PER_UID {
        count(stat::SESSION_QUOTA);
        return;
    }
    count_slot(pid, 1);
    if SESSIONS.insert(pid, s, 0).is_err() {
        count_slot(pid, u64::MAX);
        count(stat::SESSIONS_FULL);
        return;
    }
    // SAFETY: as above.
    unsafe { core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(quota, 1) };
}

/// Removes `pid` from the session map, its slot's count and its quota.
#[inline(always)]
pub fn remove_session(pid: u32) {
    if !may_be_member(pid) {
        return;
    }
    // SAFETY: the value is copied out before the entry is removed.
    let Some(s) = (unsafe { SESSIONS.get(pid) }).copied() else { return };
    if SESSIONS.remove(pid).is_err() {
        return;
    }
    count_slot(pid, u64::MAX);
    if let Some(n) = SESSION_QUOTA.get_ptr_mut(s.quota_uid)
        // SAFETY: as in `add_session`. Never below zero: a count that
        // restarted from zero would wrap and block the uid.
        && unsafe { core::ptr::read_volatile(n) } > 0
    {
        // SAFETY: as in `add_session`; adding u32::MAX takes one away.
        unsafe {
            core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(n, u32::MAX)
        };
    }
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
