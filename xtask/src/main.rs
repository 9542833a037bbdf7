//! Developer tasks: `cargo xtask <command>`. Each builds what it needs and
//! installs the toolchain pieces that are missing, saying what it does.

mod bench;
mod bootstrap;
mod build;
mod fuzz;
mod package;
mod test;
mod vm;

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test sshlogin")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (apt packages, bpf-linker,
    /// rust-src for nightly). Idempotent; the other tasks run it themselves.
    Bootstrap,
    /// Build the eBPF object (nightly, bpfel-unknown-none).
    BuildEbpf,
    /// Build the eBPF object and the daemon (release):
    /// target/release/sshlogin.
    Build,
    /// Build, then run the daemon as root. Arguments after `--` go to
    /// `sshlogin run` (default: print events to stdout).
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Everything: clippy and rustfmt, unit tests, then the privileged
    /// end-to-end tests (package sshlogin-e2e; root: they fail where eBPF
    /// cannot load; SSHLOGIN_SKIP_PRIVILEGED=1 lists them as ignored), the
    /// package, the QEMU guest, the bench smoke run (root) and fuzzing.
    Test {
        /// Only the unit tests.
        #[arg(long)]
        unit_only: bool,
        /// Seconds to run each fuzz target (0 skips fuzzing). [default: 60,
        /// or SSHLOGIN_FUZZ_SECONDS]
        #[arg(long, env = "SSHLOGIN_FUZZ_SECONDS", default_value_t = 60)]
        fuzz_seconds: u64,
    },
    /// Measure what sshlogin costs against nothing and against auditd, and
    /// write docs/performance.md (root; about 10 minutes).
    Bench {
        /// One short repetition of everything (the CI smoke run); the report
        /// goes to target/performance-smoke.md unless --out says otherwise.
        #[arg(long)]
        quick: bool,
        /// Where to write the report.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Instead: the syscall table inside the Debian 12 QEMU guest
        /// (nothing / tracepoints / fentry, alternating), written into
        /// docs/performance.md's guest section (root).
        #[arg(long, conflicts_with_all = ["quick", "out"])]
        guest: bool,
    },
    /// Build the Debian package (target/debian/sshlogin_*.deb): the daemon,
    /// the systemd unit, the example config as /etc/sshlogin/config.toml.
    Deb,
    /// Boot kernels under QEMU (KVM when /dev/kvm works) with a Debian root
    /// built by debootstrap and run the login scenario in each guest: key
    /// login, wrong key, invalid user, wrong password, password login,
    /// logout, `UsePAM no`. Images are cached under target/vm (root).
    VmTest {
        /// A cell: debian12 (6.1), debian11 (5.10), debian13 (6.12, OpenSSH
        /// 10), debian12-arm64. Repeat for several. [default: debian12]
        #[arg(long = "kernel", value_name = "CELL")]
        kernels: Vec<String>,
        /// Every cell.
        #[arg(long, conflicts_with = "kernels")]
        all: bool,
        /// Write the results into docs/portability.md's matrix.
        #[arg(long)]
        record: bool,
    },
    /// Run the cargo-fuzz targets (decoder, audit text, sshd log lines),
    /// corpus seeded from the captured fixtures.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Bootstrap => {
            bootstrap::build_tools()?;
            bootstrap::test_tools()
        }
        Task::BuildEbpf => {
            bootstrap::build_tools()?;
            build::ebpf()
        }
        Task::Build => {
            bootstrap::build_tools()?;
            build::ebpf()?;
            build::userspace()
        }
        Task::Run { args } => {
            bootstrap::build_tools()?;
            build::ebpf()?;
            build::userspace()?;
            run(&args)
        }
        Task::Test { unit_only, fuzz_seconds } => test::all(unit_only, fuzz_seconds),
        Task::Bench { guest: true, .. } => vm::bench::run(),
        Task::Bench { quick, out, .. } => bench::run(quick, out),
        Task::Deb => package::run_deb(),
        Task::VmTest { kernels, all, record } => {
            let cells = if all {
                vm::CELLS.to_vec()
            } else if kernels.is_empty() {
                vec![vm::cell(vm::CI_CELL)?]
            } else {
                kernels.iter().map(|k| vm::cell(k)).collect::<Result<Vec<_>>>()?
            };
            vm::run(&cells, record)
        }
        Task::Fuzz { seconds } => {
            bootstrap::build_tools()?;
            let (_, failed) = fuzz::run(seconds)?;
            anyhow::ensure!(failed.is_empty(), "fuzz targets failed: {}", failed.join(", "));
            Ok(())
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let binary = workspace_root().join("target/release/sshlogin");
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else {
        println!("xtask: sshlogin needs root; running it with sudo");
        let mut c = Command::new("sudo");
        c.arg(&binary);
        c
    };
    if args.is_empty() || args[0].starts_with('-') {
        cmd.arg("run");
    }
    cmd.args(args);
    // SIGINT reaches the daemon too (same process group); it exits 0.
    let status = cmd.status().with_context(|| format!("starting {}", binary.display()))?;
    if !status.success() {
        bail!("sshlogin exited with {status}");
    }
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// Runs a command, printing it first; fails naming it.
pub fn sh(cmd: &mut Command) -> Result<()> {
    println!("xtask: $ {}", show(cmd));
    let status = cmd.status().with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", show(cmd));
    }
    Ok(())
}

/// `sh` for steps that download from the Debian registry (apt,
/// debootstrap), which now and then drops a connection: three tries, ten
/// seconds apart, `before_retry` cleaning up what a failed try left.
pub fn sh_net(cmd: &mut Command, before_retry: impl Fn()) -> Result<()> {
    const TRIES: u32 = 3;
    for tried in 1.. {
        match sh(cmd) {
            Err(e) if tried < TRIES => {
                println!("xtask: {e:#}; trying again in 10 s ({tried} of {TRIES} tries failed)");
                std::thread::sleep(std::time::Duration::from_secs(10));
                before_retry();
            }
            done => return done,
        }
    }
    unreachable!("the loop returns")
}

pub fn show(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
