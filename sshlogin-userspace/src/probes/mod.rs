//! Loading the embedded eBPF object and attaching its programs: the
//! `sched:*` tracepoints, and the syscall probes of the backend the kernel
//! takes (`backend`).
//!
//! Dropping [`Probes`] detaches every program and frees the maps.

mod backend;
pub mod kernel_btf;
pub mod members;
mod tracefs;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{FEntry, FExit, RawTracePoint, TracePoint},
};
pub use backend::Backend;
pub use members::{Members, Membership};
use sshlogin_common::{COMM_LEN, Family, MAX_FAMILY, RawSyscalls, TaskOffsets, TraceOffsets, stat, task};

/// The object built by `cargo xtask build-ebpf`, embedded by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sshlogin.bpf.o"));

pub use crate::config::SyscallProbes;

/// Programs attached with every backend: (program, tracepoint category,
/// name). They keep the membership map and go first, so that a process is
/// a member before any syscall probe asks.
const ALWAYS: &[(&str, &str, &str)] = &[
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("task_newtask", "task", "task_newtask"),
];

/// The oldest kernel with `BPF_MAP_TYPE_RINGBUF`.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

/// `major.minor` of a kernel release such as `6.1.0-13-amd64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Mounts tracefs if it is not, and says where it is.
pub fn ensure_tracefs() -> Result<std::path::PathBuf> {
    tracefs::ensure_mounted()
}

/// The tracepoints (category, name) a mode may attach to; the raw one is
/// `raw_syscalls:sys_enter`. `auto` lists the syscall tracepoints it falls
/// back to.
pub fn tracepoints(mode: SyscallProbes) -> Vec<(&'static str, &'static str)> {
    let syscalls = backend::TRACEPOINTS.iter().map(|(_, c, n)| (*c, *n));
    let entry: Vec<(&str, &str)> = match mode {
        SyscallProbes::Auto | SyscallProbes::Tracepoints => syscalls.collect(),
        SyscallProbes::Fentry => vec![],
        SyscallProbes::Raw => [("raw_syscalls", "sys_enter")].into_iter().chain(syscalls.skip(2).take(1)).collect(),
    };
    ALWAYS.iter().map(|(_, c, n)| (*c, *n)).chain(entry).collect()
}

/// A tracepoint's format file, if the kernel has the tracepoint.
pub fn tracepoint_format(category: &str, name: &str) -> Result<String> {
    tracefs::read_format(&tracefs::ensure_mounted()?, category, name)
}

/// Syscall numbers and `struct pt_regs` argument offsets of this
/// architecture (`asm/ptrace.h`), for the raw `sys_enter` program.
fn raw_syscalls() -> Option<RawSyscalls> {
    let args = if cfg!(target_arch = "x86_64") {
        // di, si, dx, r10, r8, r9
        [112, 104, 96, 56, 72, 64]
    } else if cfg!(target_arch = "aarch64") {
        // regs[0..6]
        [0, 8, 16, 24, 32, 40]
    } else {
        return None;
    };
    Some(RawSyscalls {
        sendto: libc::SYS_sendto as u32,
        setresuid: libc::SYS_setresuid as u32,
        connect: libc::SYS_connect as u32,
        _pad: 0,
        args,
    })
}

/// Load-time settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Names (`comm`) of the sshd binaries: a root exec of one of them
    /// starts a tree, a member that execs anything else leaves its tree.
    pub family: Vec<String>,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
    pub syscall_probes: SyscallProbes,
    /// Whether session processes' execs are recorded (escalations are
    /// whenever the kernel's layout is known).
    pub session_execs: bool,
}

impl From<&crate::config::Config> for Settings {
    fn from(config: &crate::config::Config) -> Settings {
        Settings {
            family: config.capture.family.clone(),
            ring_buffer_bytes: config.capture.ring_buffer_bytes,
            syscall_probes: config.capture.syscall_probes,
            session_execs: config.session.exec == crate::config::SessionExec::All,
        }
    }
}

/// Size of the activity ring buffer (session execs and escalations): about
/// 370 exec records, a tenth of a second of a session that runs nothing
/// but short processes, which the daemon drains every 10 ms. Kept small:
/// its pages count in the daemon's resident memory.
pub const ACTIVITY_RING_BYTES: u32 = 1 << 19;

/// The ring buffers records arrive in.
pub struct Rings {
    /// Logins: sshd's and PAM's records, forks, execs and exits of sshd.
    pub events: MapData,
    /// What happens inside sessions.
    pub activity: MapData,
}

/// The loaded, attached programs. Keep it alive as long as records are wanted.
pub struct Probes {
    _ebpf: Ebpf,
    backend: Backend,
    refusal: Option<String>,
    sessions: bool,
    stats: PerCpuArray<MapData, u64>,
    members: Arc<Members>,
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub ringbuf_full: u64,
    pub read_failed: u64,
    pub pending_full: u64,
    pub audit_not_root: u64,
    pub syslog_not_root: u64,
    pub members_full: u64,
    pub shed: u64,
    pub refused_tree: u64,
    pub sessions_full: u64,
    pub session_quota: u64,
    pub activity_full: u64,
    pub activity_shed: u64,
    pub session_audit_unprivileged: u64,
}

impl Probes {
    /// Loads and attaches everything; returns the probes and the ring buffer
    /// their records arrive in.
    pub fn load(settings: &Settings) -> Result<(Probes, Rings)> {
        // Before anything else, so an old kernel gets this sentence rather
        // than the verifier's or the map type's errno.
        let release = kernel_release();
        if kernel_version(&release).is_some_and(|v| v < MIN_KERNEL) {
            bail!(
                "Linux {release} is older than {}.{}: sshlogin needs the BPF ring buffer that kernel brought; \
                 nothing was loaded",
                MIN_KERNEL.0,
                MIN_KERNEL.1
            );
        }
        if OBJECT.is_empty() {
            bail!(
                "this sshlogin binary was built without its eBPF object; \
                 build it with `cargo xtask build` (needs the nightly toolchain and bpf-linker)"
            );
        }
        let tracefs = tracefs::ensure_mounted()?;
        raise_memlock();
        let family = family(&settings.family)?;
        let fork_format = tracefs::read_format(&tracefs, "sched", "sched_process_fork")?;
        let exec_format = tracefs::read_format(&tracefs, "sched", "sched_process_exec")?;
        let newtask_format = tracefs::read_format(&tracefs, "task", "task_newtask")?;
        let offsets = TraceOffsets {
            fork_child_pid: tracefs::field_offset(&fork_format, "child_pid")
                .context("sched:sched_process_fork has no child_pid field in its format")?,
            exec_old_pid: tracefs::field_offset(&exec_format, "old_pid")
                .context("sched:sched_process_exec has no old_pid field in its format")?,
            exec_filename: tracefs::field_offset(&exec_format, "filename")
                .context("sched:sched_process_exec has no filename field in its format")?,
            newtask_pid: tracefs::field_offset(&newtask_format, "pid")
                .context("task:task_newtask has no pid field in its format")?,
            newtask_flags: tracefs::field_offset(&newtask_format, "clone_flags")
                .context("task:task_newtask has no clone_flags field in its format")?,
            _pad: 0,
        };
        let task = session_offsets(settings.session_execs);
        check_ring_size(settings.ring_buffer_bytes)?;
        let raw = match (settings.syscall_probes, raw_syscalls()) {
            (SyscallProbes::Raw, None) => bail!(
                "capture.syscall_probes = \"raw\" is not supported on {}; use \"tracepoints\"",
                std::env::consts::ARCH
            ),
            (_, cfg) => cfg.unwrap_or(RawSyscalls::NONE),
        };

        let mut ebpf = EbpfLoader::new()
            .override_global("FAMILY", &family, true)
            .override_global("OFFSETS", &offsets, true)
            .override_global("RAW_SYSCALLS", &raw, true)
            .override_global("TASK", &task, true)
            .map_max_entries("EVENTS", settings.ring_buffer_bytes)
            .map_max_entries("ACTIVITY", ACTIVITY_RING_BYTES)
            .load(OBJECT)
            .context("loading the eBPF object into the kernel (maps and programs)")?;

        for (program, category, name) in ALWAYS {
            attach(&mut ebpf, program, At::Tracepoint(category, name))?;
        }
        let syscalls = backend::attach_syscalls(&mut ebpf, settings.syscall_probes)?;
        // Mapped by the reader (crate::ring), which maps its data pages once.
        let ring = |ebpf: &mut Ebpf, name: &str| -> Result<MapData> {
            let Map::RingBuf(ring) =
                ebpf.take_map(name).with_context(|| format!("map {name} missing from the object"))?
            else {
                bail!("map {name} is not a ring buffer");
            };
            Ok(ring)
        };
        let rings = Rings { events: ring(&mut ebpf, "EVENTS")?, activity: ring(&mut ebpf, "ACTIVITY")? };
        let stats = PerCpuArray::try_from(ebpf.take_map("STATS").context("map STATS missing from the object")?)
            .context("map STATS is not a per-CPU array of u64")?;
        let members = HashMap::try_from(ebpf.take_map("MEMBERS").context("map MEMBERS missing from the object")?)
            .context("map MEMBERS is not a hash of u32 to Member")?;
        let hint = Array::try_from(ebpf.take_map("MEMBER_HINT").context("map MEMBER_HINT missing from the object")?)
            .context("map MEMBER_HINT is not an array of u64")?;
        tracing::info!(
            programs = ALWAYS.len() + syscalls.programs,
            syscall_probes = %syscalls.backend,
            family = ?settings.family,
            ring_buffer_bytes = settings.ring_buffer_bytes,
            sessions = task.known & task::FOLLOW != 0,
            "probes attached"
        );
        Ok((
            Probes {
                _ebpf: ebpf,
                backend: syscalls.backend,
                refusal: syscalls.refusal,
                sessions: task.known & task::FOLLOW != 0,
                stats,
                members: Arc::new(Members::new(members, hint)),
            },
            rings,
        ))
    }

    /// The syscall probes this host got.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether session processes are followed (the kernel's BTF gave the
    /// offsets the session probes read).
    pub fn follows_sessions(&self) -> bool {
        self.sessions
    }

    /// Why the kernel refused fentry, when `auto` fell back to tracepoints.
    pub fn fentry_refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// The membership map, shared with admission.
    pub fn members(&self) -> Arc<Members> {
        self.members.clone()
    }

    /// Counters of records the kernel half could not deliver.
    pub fn counters(&self) -> Result<KernelCounters> {
        let sum = |index: u32| -> Result<u64> {
            let values = self.stats.get(&index, 0).with_context(|| format!("reading STATS[{index}]"))?;
            Ok(values.iter().sum())
        };
        Ok(KernelCounters {
            ringbuf_full: sum(stat::RINGBUF_FULL)?,
            read_failed: sum(stat::READ_FAILED)?,
            pending_full: sum(stat::PENDING_FULL)?,
            audit_not_root: sum(stat::AUDIT_NOT_ROOT)?,
            syslog_not_root: sum(stat::SYSLOG_NOT_ROOT)?,
            members_full: sum(stat::MEMBERS_FULL)?,
            shed: sum(stat::SHED)?,
            refused_tree: sum(stat::REFUSED_TREE)?,
            sessions_full: sum(stat::SESSIONS_FULL)?,
            session_quota: sum(stat::SESSION_QUOTA)?,
            activity_full: sum(stat::ACTIVITY_FULL)?,
            activity_shed: sum(stat::ACTIVITY_SHED)?,
            session_audit_unprivileged: sum(stat::SESSION_AUDIT_UNPRIVILEGED)?,
        })
    }
}

/// What the session probes need from the running kernel's layout. Without
/// its BTF they follow nothing, and logins are reported as ever.
fn session_offsets(execs: bool) -> TaskOffsets {
    match kernel_btf::task_offsets() {
        Ok(mut t) => {
            t.known = task::FOLLOW | if execs { task::EXECS } else { 0 };
            t
        }
        Err(e) => {
            tracing::warn!(
                "session activity (execs, escalations) is off: {e:#}; logins are reported as ever \
                 (the kernel needs CONFIG_DEBUG_INFO_BTF)"
            );
            TaskOffsets::default()
        }
    }
}

/// One of the object's calibration programs attached to one tracepoint,
/// for benchmarks that measure what BPF statistics add to each program run
/// and what the one helper call of a membership question costs. Detached on
/// drop.
pub struct Calibration {
    _ebpf: Ebpf,
}

impl Calibration {
    /// Attaches `program` (`calibrate`, empty, or `calibrate_pid`, which
    /// asks for the caller's ids) at tracepoint `category:name`.
    pub fn attach(program: &str, category: &str, name: &str) -> Result<Calibration> {
        if OBJECT.is_empty() {
            bail!("this build has no eBPF object; build with `cargo xtask build`");
        }
        tracefs::ensure_mounted()?;
        raise_memlock();
        let mut ebpf = EbpfLoader::new().load(OBJECT).context("loading the eBPF object")?;
        attach(&mut ebpf, program, At::Tracepoint(category, name))?;
        Ok(Calibration { _ebpf: ebpf })
    }
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug)]
enum At<'a> {
    /// A tracepoint, `category:name`.
    Tracepoint(&'a str, &'a str),
    /// A raw tracepoint, by name.
    Raw(&'a str),
    /// The entry of a kernel function, by name, found in the kernel's BTF.
    FEntry(&'a str, &'a Btf),
    /// The return of a kernel function, by name, found in the kernel's BTF.
    FExit(&'a str, &'a Btf),
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Tracepoint(category, name) => write!(f, "tracepoint {category}:{name}"),
            At::Raw(name) => write!(f, "raw tracepoint {name}"),
            At::FEntry(function, _) => write!(f, "fentry {function}"),
            At::FExit(function, _) => write!(f, "fexit {function}"),
        }
    }
}

/// Loads `program` and attaches it at `at`; every error names both.
fn attach(ebpf: &mut Ebpf, program: &str, at: At<'_>) -> Result<()> {
    let what = format!("program {program} at {at}");
    let prog = ebpf.program_mut(program).with_context(|| format!("{what} is missing from the eBPF object"))?;
    let wrong_kind = || format!("{what} is not a program of that kind");
    let loading = || format!("loading {what} (verifier, BTF or permissions)");
    let attaching = || format!("attaching {what}");
    match at {
        At::Tracepoint(category, name) => {
            let tp: &mut TracePoint = prog.try_into().with_context(wrong_kind)?;
            tp.load().with_context(loading)?;
            tp.attach(category, name).with_context(attaching)?;
        }
        At::Raw(name) => {
            let tp: &mut RawTracePoint = prog.try_into().with_context(wrong_kind)?;
            tp.load().with_context(loading)?;
            tp.attach(name).with_context(attaching)?;
        }
        At::FEntry(function, btf) => {
            let p: &mut FEntry = prog.try_into().with_context(wrong_kind)?;
            p.load(function, btf).with_context(loading)?;
            p.attach().with_context(attaching)?;
        }
        At::FExit(function, btf) => {
            let p: &mut FExit = prog.try_into().with_context(wrong_kind)?;
            p.load(function, btf).with_context(loading)?;
            p.attach().with_context(attaching)?;
        }
    }
    Ok(())
}

/// The names as the kernel stores `comm`: at most 15 bytes, NUL padded.
fn family(names: &[String]) -> Result<Family> {
    if names.is_empty() {
        bail!("the sshd process name list is empty");
    }
    if names.len() > MAX_FAMILY {
        bail!("at most {MAX_FAMILY} sshd process names are supported, got {}", names.len());
    }
    let mut family = Family::EMPTY;
    for (slot, name) in family.names.iter_mut().zip(names) {
        if name.is_empty() || name.len() >= COMM_LEN || name.contains('\0') {
            bail!("sshd process name {name:?} must be 1 to {} bytes (a kernel comm)", COMM_LEN - 1);
        }
        slot[..name.len()].copy_from_slice(name.as_bytes());
    }
    Ok(family)
}

fn check_ring_size(bytes: u32) -> Result<()> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u32;
    if !bytes.is_power_of_two() || bytes < page {
        bail!("the ring buffer size must be a power of two of at least {page} bytes, got {bytes}");
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones charge
/// the memory cgroup and ignore the limit, so failing to raise it is only a
/// problem on old kernels.
fn raise_memlock() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11, loading may fail on older ones"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_nul_padded() {
        let f = family(&["sshd".into(), "sshd-session".into()]).unwrap();
        assert_eq!(&f.names[0][..5], b"sshd\0");
        assert_eq!(&f.names[1][..12], b"sshd-session");
        assert_eq!(f.names[2], [0; COMM_LEN]);
    }

    #[test]
    fn family_rejects_bad_names() {
        assert!(family(&[]).is_err());
        assert!(family(&["a-name-that-is-too-long".into()]).is_err());
        assert!(family(&["".into()]).is_err());
        assert!(family(&vec!["s".to_string(); MAX_FAMILY + 1]).is_err());
    }

    #[test]
    fn ring_size_must_be_a_power_of_two() {
        assert!(check_ring_size(1 << 21).is_ok());
        assert!(check_ring_size(3 << 20).is_err());
        assert!(check_ring_size(64).is_err());
    }
}
