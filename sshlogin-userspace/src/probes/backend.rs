//! Which programs see sendto, setresuid and connect: fentry/fexit on the
//! kernel functions behind them where the kernel accepts those, the
//! syscall tracepoints where it does not, or one raw `sys_enter`.

use anyhow::{Context, Result};
use aya::{
    Btf, Ebpf,
    programs::{FEntry, FExit},
};

use super::{At, SyscallProbes, attach};

/// What a host got: the mode asked for, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Fentry,
    Tracepoints,
    Raw,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Tracepoints => "tracepoints",
            Backend::Raw => "raw",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fentry/fexit programs: (program, kernel function, on its exit).
/// The functions take the syscalls' arguments as ints and user pointers
/// (`net/socket.c`, `kernel/sys.c`) and exist from 4.17 on.
pub const FENTRY: &[(&str, &str, bool)] = &[
    ("fentry_sendto", "__sys_sendto", false),
    ("fentry_setresuid", "__sys_setresuid", false),
    ("fexit_setresuid", "__sys_setresuid", true),
    ("fentry_connect", "__sys_connect", false),
];

/// The per-syscall tracepoint programs: (program, category, name).
pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sys_enter_sendto", "syscalls", "sys_enter_sendto"),
    ("sys_enter_setresuid", "syscalls", "sys_enter_setresuid"),
    ("sys_exit_setresuid", "syscalls", "sys_exit_setresuid"),
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
];

/// The syscall programs attached.
pub struct Attached {
    pub backend: Backend,
    pub programs: usize,
    /// Why `auto` did not get fentry.
    pub refusal: Option<String>,
}

/// Attaches the syscall programs for `mode`. `auto` tries fentry and, if
/// the kernel refuses any of its programs, detaches the ones it took and
/// attaches the tracepoints, saying why in one line.
pub fn attach_syscalls(ebpf: &mut Ebpf, mode: SyscallProbes) -> Result<Attached> {
    let got = |backend, programs| Attached { backend, programs, refusal: None };
    match mode {
        SyscallProbes::Fentry => {
            attach_fentry(ebpf).context("--syscall-probes fentry: the kernel refused it")?;
            Ok(got(Backend::Fentry, FENTRY.len()))
        }
        SyscallProbes::Auto => match attach_fentry(ebpf) {
            Ok(()) => Ok(got(Backend::Fentry, FENTRY.len())),
            Err(refused) => {
                unload_fentry(ebpf);
                let reason = format!("{refused:#}");
                tracing::info!(
                    %reason,
                    "the kernel refused fentry; syscall probes: tracepoints (docs/performance.md compares their cost)"
                );
                attach_tracepoints(ebpf)?;
                Ok(Attached { refusal: Some(reason), ..got(Backend::Tracepoints, TRACEPOINTS.len()) })
            }
        },
        SyscallProbes::Tracepoints => {
            attach_tracepoints(ebpf)?;
            Ok(got(Backend::Tracepoints, TRACEPOINTS.len()))
        }
        SyscallProbes::Raw => {
            attach(ebpf, "raw_sys_enter", At::Raw("sys_enter"))?;
            // The raw program sees entries only: setresuid's exit stays a tracepoint.
            let (program, category, name) = TRACEPOINTS[2];
            attach(ebpf, program, At::Tracepoint(category, name))?;
            Ok(got(Backend::Raw, 2))
        }
    }
}

fn attach_tracepoints(ebpf: &mut Ebpf) -> Result<()> {
    for (program, category, name) in TRACEPOINTS {
        attach(ebpf, program, At::Tracepoint(category, name))?;
    }
    Ok(())
}

/// All four or an error naming the program and function that failed.
fn attach_fentry(ebpf: &mut Ebpf) -> Result<()> {
    // Parsed here and dropped on return: the kernel's BTF is megabytes the
    // daemon has no use for once the programs are loaded.
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux) for fentry")?;
    for &(program, function, exit) in FENTRY {
        attach(ebpf, program, if exit { At::FExit(function, &btf) } else { At::FEntry(function, &btf) })?;
    }
    Ok(())
}

/// Detaches and unloads whatever `attach_fentry` got done before it failed,
/// so that no call is seen twice once the tracepoints are on.
fn unload_fentry(ebpf: &mut Ebpf) {
    for &(program, function, exit) in FENTRY {
        let Some(prog) = ebpf.program_mut(program) else { continue };
        let result = if exit {
            <&mut FExit>::try_from(prog).map(|p| p.unload())
        } else {
            <&mut FEntry>::try_from(prog).map(|p| p.unload())
        };
        // Not loaded is the usual case (the first load failed); anything
        // else would leave a program attached.
        if let Ok(Err(e)) = result
            && !matches!(e, aya::programs::ProgramError::NotLoaded)
        {
            tracing::warn!(error = %e, "unloading program {program} at {} {function}", if exit { "fexit" } else { "fentry" });
        }
    }
}
