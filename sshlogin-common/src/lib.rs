//! The records the eBPF programs write into the ring buffer and the settings
//! the daemon writes into the programs at load time.
//!
//! Both halves compile this file: the kernel half (`no_std`, bpfel) writes the
//! structs, the daemon reads them back as bytes through `sshlogin`'s decoder,
//! which checks every length itself instead of trusting these layouts. The
//! layouts are `#[repr(C)]` without implicit padding so the byte offsets
//! below are the same on both sides; tests in this crate pin them.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

/// Length of a task's `comm`, NUL padded (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// How many process names the in-kernel filter can hold.
pub const MAX_FAMILY: usize = 4;

/// Capacity of the kernel's membership map: sshd processes (listeners,
/// one monitor per connection and its children) tracked at once; a logged-in
/// connection holds two. About 72 bytes of kernel memory each (2.3 MiB).
pub const MAX_MEMBERS: u32 = 32768;

/// Slots of the membership hint (`MEMBER_HINT`): a pid's slot is
/// `pid % HINT_SLOTS`. A slot that holds no member rules a process out with
/// one array load instead of a hash lookup; more slots, fewer processes
/// that share one with a member.
pub const HINT_SLOTS: u32 = 8192;

/// The two `MEMBER_HINT` entries of `pid`'s slot, side by side in one
/// cache line: how many members the kernel made there, and whether the
/// daemon added one there.
pub const fn hint_entries(pid: u32) -> (u32, u32) {
    let slot = pid % HINT_SLOTS;
    (2 * slot, 2 * slot + 1)
}

/// How many bytes of an audit message or syslog line are copied. sshd's and
/// PAM's longest records are about 400 bytes; the rest is headroom for long
/// user names, certificate ids and PAM module lists.
pub const TEXT_CAP: usize = 1024;

/// Record kinds: the first `u32` of every record.
pub mod kind {
    /// An audit netlink message (`nlmsghdr` + text) sent by PAM or sshd.
    pub const AUDIT: u32 = 1;
    /// A syslog datagram sent by sshd (`<PRI>...`).
    pub const SYSLOG: u32 = 2;
    /// A successful `setresuid` that dropped root for another uid.
    pub const SETRESUID: u32 = 3;
    /// A process of the family forked a child.
    pub const FORK: u32 = 4;
    /// A process (thread group leader) of the family exited.
    pub const EXIT: u32 = 5;
    /// A non-root process of the family connected a socket to an IPv4 or
    /// IPv6 address: a session's forwarding (ProxyJump, `-W`, `-L`).
    pub const CONNECT: u32 = 6;
    /// A process exec'd: a root process started an sshd-named binary (a
    /// new tree, for user space to check), or a member exec'd (see [`exec`]).
    pub const EXEC: u32 = 7;
    /// A session process exec'd ([`SessionExecRecord`], on the activity ring).
    pub const SESSION_EXEC: u32 = 8;
    /// A privileged session process (sudo, su) sent an audit user message
    /// ([`SessionMessageRecord`], on the activity ring).
    pub const SESSION_AUDIT: u32 = 9;
}

/// What an exec did to the caller's membership (`ExecRecord::how`).
pub mod exec {
    /// A root process that was not a member exec'd a binary named like
    /// sshd: it is the root of a new tree, admitted until user space has
    /// checked its executable.
    pub const NEW_TREE: u32 = 1;
    /// A member exec'd a binary named like sshd (OpenSSH's re-exec,
    /// `sshd-session`, `sshd-auth`): it stays in its tree.
    pub const STAYED: u32 = 2;
    /// A member exec'd anything else (an AuthorizedKeysCommand, a PAM
    /// helper): it left the tree and records nothing more.
    pub const LEFT: u32 = 3;
}

/// One entry of the kernel's membership map (`MEMBERS`, keyed by tgid):
/// the process descends from an sshd listener. Entries are made by the
/// kernel (at fork from a root member, at a root exec of an sshd-named
/// binary) and by the daemon (the processes that ran before it started).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Pid of the tree's root: the process whose exec (or the daemon's scan
    /// at start) made the tree.
    pub tree: u32,
    /// [`member`] flags.
    pub flags: u32,
    /// When the tree was made (CLOCK_BOOTTIME ns); with `tree`, the tree's id.
    pub tree_ns: u64,
}

/// `Member::flags`.
pub mod member {
    /// User space found the tree's executable is not one of the host's
    /// sshd binaries: its members record nothing and make no new members.
    pub const REFUSED: u32 = 1;
}

/// Capacity of the kernel's session map (`SESSIONS`): processes of SSH
/// sessions (the session child's descendants) followed at once, apart from
/// the sshd trees so that a session that forks a lot never costs a login.
/// About 80 bytes of kernel memory each (5 MiB).
pub const MAX_SESSION_PROCS: u32 = 65536;

/// Session processes one login uid may have followed at once: a user who
/// forks without end blinds only their own sessions, never another user's.
pub const SESSION_PROCS_PER_UID: u32 = 4096;

/// Login uids with session processes followed at once (`SESSION_QUOTA`).
pub const MAX_SESSION_UIDS: u32 = 16384;

/// Bytes of an exec'd file's name kept (`PATH_MAX` is 4096; paths longer
/// than this are cut, and marked).
pub const PATH_CAP: usize = 256;

/// Bytes of an exec's arguments kept (NUL separated, as on the new stack).
pub const ARGS_CAP: usize = 1024;

/// One entry of the kernel's session map (`SESSIONS`, keyed by tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionProc {
    /// The sshd tree the session belongs to ([`Member::tree`]).
    pub tree: u32,
    /// The sshd process the session's processes descend from: the session
    /// child that forked the first of them (user space ties it to the
    /// connection, and ignores processes of anything that is not one).
    pub session: u32,
    /// [`Member::tree_ns`] of the tree.
    pub tree_ns: u64,
    /// When the session's first process was made (CLOCK_BOOTTIME ns): after
    /// `session` was, so that user space can tell a later process that got
    /// the same pid (a leftover process's records never go to it).
    pub session_ns: u64,
    /// Real uid when the session's first process was made: its quota.
    pub quota_uid: u32,
    pub _pad: u32,
}

/// Bytes of a `sockaddr_in6`, the largest address a CONNECT carries.
pub const SOCKADDR_CAP: usize = 28;

/// Indices of the per-CPU counters in the `STATS` map.
pub mod stat {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full, a record was lost.
    pub const RINGBUF_FULL: u32 = 0;
    /// Copying a message from the caller's memory failed; the record was lost.
    pub const READ_FAILED: u32 = 1;
    /// The map that carries `setresuid` arguments from enter to exit was full.
    pub const PENDING_FULL: u32 = 2;
    /// A non-root process of the family sent an audit user message: never
    /// sshd or PAM (they send as root), so a forgery; not recorded.
    pub const AUDIT_NOT_ROOT: u32 = 3;
    /// A non-root member sent a syslog line: sshd's session children do
    /// (about two lines per session); not recorded.
    pub const SYSLOG_NOT_ROOT: u32 = 4;
    /// The membership map was full: a new sshd process is not followed.
    pub const MEMBERS_FULL: u32 = 5;
    /// A session's forward was not recorded because the ring buffer was
    /// more than half full: the other half is kept for logins.
    pub const SHED: u32 = 6;
    /// Records not made because their tree was refused.
    pub const REFUSED_TREE: u32 = 7;
    /// The session map was full: a new session process is not followed.
    pub const SESSIONS_FULL: u32 = 8;
    /// A login uid had [`SESSION_PROCS_PER_UID`](crate::SESSION_PROCS_PER_UID)
    /// processes followed: a new one of theirs is not.
    pub const SESSION_QUOTA: u32 = 9;
    /// The activity ring buffer was full: an exec or escalation record was lost.
    pub const ACTIVITY_FULL: u32 = 10;
    /// An exec was not recorded because the activity ring buffer was more
    /// than three quarters full: the rest is kept for escalation records.
    pub const ACTIVITY_SHED: u32 = 11;
    /// An unprivileged session process sent an audit user message: the
    /// kernel refuses those (CAP_AUDIT_WRITE), so a forgery; not recorded.
    pub const SESSION_AUDIT_UNPRIVILEGED: u32 = 12;
    /// Number of counters.
    pub const COUNT: u32 = 13;
}

/// Fields every record starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u32,
    /// Thread group id (the process id user space sees).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid of the caller when the probe ran.
    pub uid: u32,
    /// Real gid of the caller when the probe ran.
    pub gid: u32,
    /// The caller's tree when the probe ran: [`Member::tree`].
    pub tree: u32,
    /// `CLOCK_BOOTTIME` in nanoseconds (`bpf_ktime_get_boot_ns`).
    pub ktime_ns: u64,
    /// The caller's `comm`, NUL padded.
    pub comm: [u8; COMM_LEN],
    /// [`Member::tree_ns`] of the caller's tree.
    pub tree_ns: u64,
}

/// An audit message or a syslog line, copied from the `sendto` buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MessageRecord {
    pub header: Header,
    /// The `len` argument of `sendto`: the message's full length.
    pub len: u32,
    /// How many bytes of `data` hold the message (`min(len, TEXT_CAP)`).
    pub copied: u32,
    pub data: [u8; TEXT_CAP],
}

/// A successful `setresuid(ruid, euid, suid)` by a caller that was root.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SetresuidRecord {
    pub header: Header,
    /// Arguments as passed; `u32::MAX` (-1) means "unchanged".
    pub ruid: u32,
    pub euid: u32,
    pub suid: u32,
    pub _pad: u32,
}

/// `header.pid` forked `child_pid`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: Header,
    pub child_pid: u32,
    pub _pad: u32,
}

/// `header.pid` exec'd; `header.comm` is the new name.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub header: Header,
    /// One of [`exec`].
    pub how: u32,
    pub _pad: u32,
}

/// `header.pid` exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: Header,
}

/// `connect(fd, addr, addr_len)` by a non-root process of the family.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectRecord {
    pub header: Header,
    pub fd: u32,
    /// The `addrlen` argument.
    pub addr_len: u32,
    /// The first `min(addr_len, SOCKADDR_CAP)` bytes of the address.
    pub addr: [u8; SOCKADDR_CAP],
    pub _pad: u32,
}

/// What every activity record starts with: the common header (its `tree`
/// and `tree_ns` are the session's), then the session and the effective uid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionHeader {
    pub header: Header,
    /// [`SessionProc::session`].
    pub session: u32,
    /// The caller's effective uid, from its credentials (`u32::MAX` when
    /// the kernel's layout was not known at load).
    pub euid: u32,
    /// [`SessionProc::session_ns`].
    pub session_ns: u64,
}

/// `clone(2)`'s flag for a thread of the caller's thread group.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// `SessionExecRecord::flags`.
pub mod session_exec {
    /// The arguments were longer than [`ARGS_CAP`](crate::ARGS_CAP).
    pub const ARGS_CUT: u32 = 1;
    /// The file name was longer than [`PATH_CAP`](crate::PATH_CAP).
    pub const PATH_CUT: u32 = 2;
    /// Reading the arguments failed: `args` is empty.
    pub const ARGS_UNREAD: u32 = 4;
}

/// A session process exec'd. The file name is the kernel's (the exec's
/// name as resolved for it); the arguments are the new program's, read from
/// its stack before it ran.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SessionExecRecord {
    pub sh: SessionHeader,
    /// The parent's tgid.
    pub ppid: u32,
    /// [`session_exec`] flags.
    pub flags: u32,
    /// Bytes of `args` that hold arguments (NUL separated).
    pub args_copied: u32,
    /// Bytes of `path` before its NUL.
    pub path_copied: u32,
    /// The executable's device (the kernel's `dev_t`: major << 20 | minor)
    /// and inode: which file runs, whatever name the exec used. 0 if unread.
    pub exe_dev: u32,
    pub _pad: u32,
    pub exe_ino: u64,
    pub path: [u8; PATH_CAP],
    pub args: [u8; ARGS_CAP],
}

/// An audit user message from a privileged session process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SessionMessageRecord {
    pub sh: SessionHeader,
    /// The `len` argument of `sendto`.
    pub len: u32,
    /// Bytes of `data` that hold the message.
    pub copied: u32,
    pub data: [u8; TEXT_CAP],
}

/// Where kernel structures keep what the session probes read, found in the
/// running kernel's BTF by the daemon at load (Rust eBPF has no CO-RE).
/// All zero: not known, and the session probes read nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.cred`, `.real_parent`, `.tgid`, `.mm`.
    pub task_cred: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_mm: u32,
    /// `cred.euid`.
    pub cred_euid: u32,
    /// `mm_struct.arg_start`, `.arg_end`.
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `task_struct.signal`, `signal_struct.live` (threads alive).
    pub task_signal: u32,
    pub signal_live: u32,
    /// `mm_struct.exe_file`, `file.f_inode`, `inode.i_ino`, `inode.i_sb`,
    /// `super_block.s_dev`: the executable's identity.
    pub mm_exe_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    /// [`task`] flags: whether the rest is filled in, and what to record.
    pub known: u32,
}

/// `TaskOffsets::known`.
pub mod task {
    /// The offsets are filled in: session processes are followed and
    /// privileged audit messages from them recorded.
    pub const FOLLOW: u32 = 1;
    /// Their execs are recorded too.
    pub const EXECS: u32 = 2;
}

/// Byte offsets and sizes the decoder relies on.
pub mod layout {
    use super::*;
    pub const HEADER_SIZE: usize = core::mem::size_of::<Header>();
    pub const MESSAGE_LEN: usize = HEADER_SIZE;
    pub const MESSAGE_COPIED: usize = HEADER_SIZE + 4;
    pub const MESSAGE_DATA: usize = HEADER_SIZE + 8;
    pub const MESSAGE_SIZE: usize = core::mem::size_of::<MessageRecord>();
    pub const SETRESUID_SIZE: usize = core::mem::size_of::<SetresuidRecord>();
    pub const FORK_SIZE: usize = core::mem::size_of::<ForkRecord>();
    pub const EXIT_SIZE: usize = core::mem::size_of::<ExitRecord>();
    pub const EXEC_SIZE: usize = core::mem::size_of::<ExecRecord>();
    pub const CONNECT_FD: usize = HEADER_SIZE;
    pub const CONNECT_ADDR_LEN: usize = HEADER_SIZE + 4;
    pub const CONNECT_ADDR: usize = HEADER_SIZE + 8;
    pub const CONNECT_SIZE: usize = core::mem::size_of::<ConnectRecord>();
    pub const SESSION_HEADER_SIZE: usize = core::mem::size_of::<SessionHeader>();
    pub const SESSION_SESSION: usize = HEADER_SIZE;
    pub const SESSION_EUID: usize = HEADER_SIZE + 4;
    pub const SESSION_NS: usize = HEADER_SIZE + 8;
    pub const SEXEC_PPID: usize = SESSION_HEADER_SIZE;
    pub const SEXEC_FLAGS: usize = SESSION_HEADER_SIZE + 4;
    pub const SEXEC_ARGS_COPIED: usize = SESSION_HEADER_SIZE + 8;
    pub const SEXEC_PATH_COPIED: usize = SESSION_HEADER_SIZE + 12;
    pub const SEXEC_EXE_DEV: usize = SESSION_HEADER_SIZE + 16;
    pub const SEXEC_EXE_INO: usize = SESSION_HEADER_SIZE + 24;
    pub const SEXEC_PATH: usize = SESSION_HEADER_SIZE + 32;
    pub const SEXEC_ARGS: usize = SEXEC_PATH + super::PATH_CAP;
    pub const SEXEC_SIZE: usize = core::mem::size_of::<SessionExecRecord>();
    pub const SMESSAGE_COPIED: usize = SESSION_HEADER_SIZE + 4;
    pub const SMESSAGE_DATA: usize = SESSION_HEADER_SIZE + 8;
    pub const SMESSAGE_SIZE: usize = core::mem::size_of::<SessionMessageRecord>();
}

/// The `u32` at byte `at` of a record, in native byte order.
pub fn u32_at(record: &[u8], at: usize) -> Option<u32> {
    let b = record.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// A record's [`kind`]: its first `u32`.
pub fn record_kind(record: &[u8]) -> Option<u32> {
    u32_at(record, 0)
}

/// Why [`message_data`] found no message in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// The record ends before byte `need`.
    Short { need: usize },
    /// `copied` is more than [`TEXT_CAP`]: not a record the kernel half wrote.
    BadLength { copied: usize },
}

/// The copied bytes of an audit or syslog record ([`MessageRecord`]): the
/// first `copied` bytes of `data`. The one place that slices them; the
/// record's kind is the caller's to check.
pub fn message_data(record: &[u8]) -> Result<&[u8], MessageError> {
    copied_bytes(record, layout::MESSAGE_COPIED, layout::MESSAGE_DATA, TEXT_CAP)
}

/// The message of a [`SessionMessageRecord`].
pub fn session_message_data(record: &[u8]) -> Result<&[u8], MessageError> {
    copied_bytes(record, layout::SMESSAGE_COPIED, layout::SMESSAGE_DATA, TEXT_CAP)
}

/// The arguments of a [`SessionExecRecord`] (NUL separated).
pub fn session_exec_args(record: &[u8]) -> Result<&[u8], MessageError> {
    copied_bytes(record, layout::SEXEC_ARGS_COPIED, layout::SEXEC_ARGS, ARGS_CAP)
}

/// The file name of a [`SessionExecRecord`].
pub fn session_exec_path(record: &[u8]) -> Result<&[u8], MessageError> {
    copied_bytes(record, layout::SEXEC_PATH_COPIED, layout::SEXEC_PATH, PATH_CAP)
}

/// The `u32` count at `count_at` of bytes that follow from `data_at`, at
/// most `cap`.
fn copied_bytes(record: &[u8], count_at: usize, data_at: usize, cap: usize) -> Result<&[u8], MessageError> {
    let copied = u32_at(record, count_at).ok_or(MessageError::Short { need: data_at })? as usize;
    if copied > cap {
        return Err(MessageError::BadLength { copied });
    }
    let end = data_at + copied;
    record.get(data_at..end).ok_or(MessageError::Short { need: end })
}

/// Capture files: one record a line, lowercase hex; `#` starts a comment line.
#[cfg(feature = "alloc")]
pub mod capture {
    use alloc::vec::Vec;

    /// What is wrong with a capture line.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum HexError {
        OddLength,
        /// The two characters at this byte offset are not a hex byte.
        NotHex {
            at: usize,
        },
    }

    impl core::fmt::Display for HexError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                HexError::OddLength => f.write_str("odd number of hex digits"),
                HexError::NotHex { at } => write!(f, "not hex at column {}", at + 1),
            }
        }
    }

    /// The record on one line of a capture file; `None` for a blank or
    /// comment line. Strict: any character that is not hex is an error.
    pub fn parse_line(line: &str) -> Result<Option<Vec<u8>>, HexError> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(None);
        }
        if !line.len().is_multiple_of(2) {
            return Err(HexError::OddLength);
        }
        (0..line.len())
            .step_by(2)
            .map(|at| {
                line.get(at..at + 2)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(HexError::NotHex { at })
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
    }
}

/// The process names the in-kernel filter accepts, written into the object
/// at load time (global `FAMILY`). Unused slots are all zero and never match
/// because a real `comm` is never empty. Aligned to 8 so the kernel half can
/// compare names as two `u64`s.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub names: [[u8; COMM_LEN]; MAX_FAMILY],
}

impl Family {
    pub const EMPTY: Family = Family { names: [[0; COMM_LEN]; MAX_FAMILY] };
}

/// Load-time settings that come from the running kernel rather than the
/// user: the offset of `child_pid` in `sched_process_fork`'s record, which
/// moved in Linux 6.x when the comm fields became `__data_loc` strings, and
/// of `old_pid` in `sched_process_exec`'s.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceOffsets {
    pub fork_child_pid: u32,
    pub exec_old_pid: u32,
    /// `sched_process_exec`'s `__data_loc char[] filename`.
    pub exec_filename: u32,
    /// `task:task_newtask`'s `pid` and `clone_flags`.
    pub newtask_pid: u32,
    pub newtask_flags: u32,
    pub _pad: u32,
}

/// For the raw `sys_enter` tracepoint, which fires for every syscall and
/// passes the syscall number and the caller's registers: the numbers of the
/// syscalls sshlogin follows and where each argument sits in `struct
/// pt_regs` (the architecture's ABI, `asm/ptrace.h`). Written by the daemon,
/// which knows its architecture; the object itself is the same for all.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawSyscalls {
    pub sendto: u32,
    pub setresuid: u32,
    pub connect: u32,
    pub _pad: u32,
    /// Byte offsets of arguments 0..6 in `struct pt_regs`.
    pub args: [u32; 6],
}

impl RawSyscalls {
    /// Matches no syscall: the raw program does nothing until configured.
    pub const NONE: RawSyscalls =
        RawSyscalls { sendto: u32::MAX, setresuid: u32::MAX, connect: u32::MAX, _pad: 0, args: [0; 6] };
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays without padding.
    unsafe impl aya::Pod for super::Family {}
    unsafe impl aya::Pod for super::TraceOffsets {}
    unsafe impl aya::Pod for super::RawSyscalls {}
    unsafe impl aya::Pod for super::Member {}
    unsafe impl aya::Pod for super::SessionProc {}
    unsafe impl aya::Pod for super::TaskOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_have_no_holes() {
        assert_eq!(size_of::<Header>(), 56);
        assert_eq!(offset_of!(Header, tree), 20);
        assert_eq!(offset_of!(Header, ktime_ns), 24);
        assert_eq!(offset_of!(Header, comm), 32);
        assert_eq!(offset_of!(Header, tree_ns), 48);
        assert_eq!(offset_of!(MessageRecord, len), layout::MESSAGE_LEN);
        assert_eq!(offset_of!(MessageRecord, copied), layout::MESSAGE_COPIED);
        assert_eq!(offset_of!(MessageRecord, data), layout::MESSAGE_DATA);
        assert_eq!(layout::MESSAGE_SIZE, 56 + 8 + TEXT_CAP);
        assert_eq!(offset_of!(SetresuidRecord, ruid), 56);
        assert_eq!(layout::SETRESUID_SIZE, 72);
        assert_eq!(offset_of!(ForkRecord, child_pid), 56);
        assert_eq!(layout::FORK_SIZE, 64);
        assert_eq!(layout::EXIT_SIZE, 56);
        assert_eq!(offset_of!(ExecRecord, how), 56);
        assert_eq!(layout::EXEC_SIZE, 64);
        assert_eq!(offset_of!(ConnectRecord, addr), layout::CONNECT_ADDR);
        assert_eq!(layout::CONNECT_SIZE, 56 + 8 + SOCKADDR_CAP + 4);
        assert_eq!(size_of::<Member>(), 16);
        assert_eq!(size_of::<SessionProc>(), 32);
        assert_eq!(layout::SESSION_HEADER_SIZE, 72);
        assert_eq!(offset_of!(SessionHeader, session_ns), layout::SESSION_NS);
        assert_eq!(offset_of!(SessionExecRecord, path), layout::SEXEC_PATH);
        assert_eq!(offset_of!(SessionExecRecord, args), layout::SEXEC_ARGS);
        assert_eq!(offset_of!(SessionExecRecord, exe_dev), layout::SEXEC_EXE_DEV);
        assert_eq!(offset_of!(SessionExecRecord, exe_ino), layout::SEXEC_EXE_INO);
        assert_eq!(layout::SEXEC_SIZE, 72 + 32 + PATH_CAP + ARGS_CAP);
        assert_eq!(offset_of!(SessionMessageRecord, copied), layout::SMESSAGE_COPIED);
        assert_eq!(offset_of!(SessionMessageRecord, data), layout::SMESSAGE_DATA);
        assert_eq!(layout::SMESSAGE_SIZE, 72 + 8 + TEXT_CAP);
        assert_eq!(size_of::<Family>(), COMM_LEN * MAX_FAMILY);
    }

    #[test]
    fn message_data_is_the_copied_bytes() {
        let mut m = [0u8; layout::MESSAGE_DATA + 8];
        m[layout::MESSAGE_COPIED..layout::MESSAGE_COPIED + 4].copy_from_slice(&3u32.to_ne_bytes());
        m[layout::MESSAGE_DATA..layout::MESSAGE_DATA + 3].copy_from_slice(b"abc");
        assert_eq!(message_data(&m), Ok(&b"abc"[..]));
        m[layout::MESSAGE_COPIED..layout::MESSAGE_COPIED + 4].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(message_data(&m), Err(MessageError::Short { need: layout::MESSAGE_DATA + 9 }));
        m[layout::MESSAGE_COPIED..layout::MESSAGE_COPIED + 4].copy_from_slice(&5000u32.to_ne_bytes());
        assert_eq!(message_data(&m), Err(MessageError::BadLength { copied: 5000 }));
        assert_eq!(message_data(&m[..10]), Err(MessageError::Short { need: layout::MESSAGE_DATA }));
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn capture_lines_are_strict_hex() {
        use capture::{HexError, parse_line};
        assert_eq!(parse_line(" 00ff10 "), Ok(Some(alloc::vec![0, 255, 16])));
        assert_eq!(parse_line("# comment"), Ok(None));
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("abc"), Err(HexError::OddLength));
        assert_eq!(parse_line("00zz"), Err(HexError::NotHex { at: 2 }));
        assert_eq!(parse_line("0+1f"), Err(HexError::NotHex { at: 0 }));
        assert_eq!(parse_line("0é0"), Err(HexError::NotHex { at: 0 }));
    }
}
