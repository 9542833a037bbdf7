//! `cargo xtask vm-test`: the login scenario on the kernels fleets run,
//! each booted under QEMU with a Debian root built by debootstrap.
//!
//! image (debootstrap + that kernel's .deb, cached) → qemu (boot, the
//! scenario in guest.sh as PID 1) → judge (the events the guest recorded)
//! → docs/portability.md (with --record).

pub mod bench;
mod image;
mod judge;
mod qemu;
mod record;

use std::{fs, path::PathBuf, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{bootstrap, build, workspace_root};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }
}

/// One cell of the matrix: a kernel from one Debian suite booted with the
/// userland (and so the OpenSSH) of another.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    pub name: &'static str,
    pub arch: Arch,
    /// The suite whose `linux-image-ARCH` is booted.
    pub kernel_suite: &'static str,
    /// The root filesystem's suite; bookworm unless the cell is about a
    /// newer OpenSSH (the daemon is built against bookworm's glibc, so an
    /// older userland cannot run it).
    pub userland: &'static str,
    /// What `sshlogin check` must say about sshd's layout there.
    pub layout: &'static str,
    /// The syscall probes `auto` must get there, if the cell is about
    /// them: Debian's amd64 kernels allow fentry; arm64 gets what it gets.
    pub backend: Option<&'static str>,
}

pub const CELLS: &[Cell] = &[
    Cell {
        name: "debian12",
        arch: Arch::Amd64,
        kernel_suite: "bookworm",
        userland: "bookworm",
        layout: "one sshd binary",
        backend: Some("fentry"),
    },
    Cell {
        name: "debian11",
        arch: Arch::Amd64,
        kernel_suite: "bullseye",
        userland: "bookworm",
        layout: "one sshd binary",
        backend: Some("fentry"),
    },
    Cell {
        name: "debian13",
        arch: Arch::Amd64,
        kernel_suite: "trixie",
        userland: "trixie",
        layout: "OpenSSH 10",
        backend: Some("fentry"),
    },
    Cell {
        name: "debian12-arm64",
        arch: Arch::Arm64,
        kernel_suite: "bookworm",
        userland: "bookworm",
        layout: "one sshd binary",
        backend: None,
    },
];

/// The cell CI runs on every run.
pub const CI_CELL: &str = "debian12";

pub fn cell(name: &str) -> Result<Cell> {
    CELLS.iter().copied().find(|c| c.name == name).with_context(|| {
        let names: Vec<&str> = CELLS.iter().map(|c| c.name).collect();
        format!("no kernel named {name:?}; the cells are {}", names.join(", "))
    })
}

/// Runs `cells`; with `record`, writes their results into
/// docs/portability.md. Fails if any cell failed.
pub fn run(cells: &[Cell], record: bool) -> Result<()> {
    let outcomes = outcomes(cells)?;
    if record {
        record::write(&workspace_root().join("docs/portability.md"), &outcomes)?;
    }
    let (passed, failed): (Vec<_>, Vec<_>) = outcomes.iter().partition(|o| o.passed());
    println!("vm-test: {} passed, {} failed", passed.len(), failed.len());
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|o| o.cell.name).collect();
        bail!("vm-test failed: {}", names.join(", "));
    }
    Ok(())
}

fn outcomes(cells: &[Cell]) -> Result<Vec<judge::Outcome>> {
    if !crate::is_root() {
        bail!("vm-test needs root: debootstrap, chroot and mkfs build the guest images");
    }
    bootstrap::build_tools()?;
    bootstrap::vm_tools(cells.iter().any(|c| c.arch == Arch::Arm64))?;
    build::ebpf()?;
    let mut outcomes = Vec::new();
    for cell in cells {
        let started = Instant::now();
        let outcome = run_cell(cell).unwrap_or_else(|e| judge::Outcome::broken(cell, format!("{e:#}")));
        println!("vm-test: {} in {:.0?}", outcome.summary(), started.elapsed());
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The CI cell for `cargo xtask test`: (halves passed, halves failed), each
/// half (PAM, no PAM) counted as one test.
pub fn ci() -> Result<(u64, Vec<String>)> {
    let outcomes = outcomes(&[cell(CI_CELL)?])?;
    let o = &outcomes[0];
    if o.rows.is_empty() {
        anyhow::bail!("{CI_CELL}: no scenario ran: {}", o.problems.join("; "));
    }
    let mut passed = 0;
    let mut failed = Vec::new();
    for r in &o.rows {
        let problems: Vec<&String> = o.problems.iter().chain(&r.problems).collect();
        if problems.is_empty() {
            passed += 1;
        } else {
            let half = if r.pam { "PAM" } else { "no PAM" };
            failed.push(format!(
                "{CI_CELL} ({half}): {}",
                problems.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("; ")
            ));
        }
    }
    Ok((passed, failed))
}

fn run_cell(cell: &Cell) -> Result<judge::Outcome> {
    let dir = workspace_root().join("target/vm");
    let binary = build::userspace_for(cell.arch.rust_target())?;
    let guest = image::prepare(&dir, cell)?;
    let work = dir.join("runs").join(cell.name);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let payload = payload(&work, &binary)?;
    let results = qemu::boot(cell, &guest, &payload, &work)?;
    println!(
        "vm-test: the guest's records are in {}, its console in {}",
        results.dir.display(),
        results.console.display()
    );
    let mut outcome = judge::judge(cell, &results);
    outcome.facts.insert("kernel package", guest.kernel_package.clone());
    Ok(outcome)
}

/// The second disk: a tar archive of the daemon and the scenario, which
/// the guest's init unpacks to /payload.
fn payload(work: &std::path::Path, binary: &std::path::Path) -> Result<PathBuf> {
    let dir = work.join("payload");
    fs::create_dir_all(&dir)?;
    fs::copy(binary, dir.join("sshlogin")).with_context(|| format!("copying {}", binary.display()))?;
    fs::write(dir.join("guest.sh"), include_str!("guest.sh"))?;
    fs::write(dir.join("guest-init.sh"), include_str!("guest-init.sh"))?;
    crate::sh(std::process::Command::new("chmod").args(["0755"]).arg(dir.join("guest.sh")).arg(dir.join("sshlogin")))?;
    let tar = work.join("payload.tar");
    crate::sh(std::process::Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&dir).arg("."))?;
    Ok(tar)
}
