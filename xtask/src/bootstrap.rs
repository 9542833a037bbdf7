//! Installs the toolchain pieces, each only when missing. A step that fails
//! stops with its name and the command to run by hand.

use std::process::Command;

use anyhow::{Result, anyhow};

use crate::{is_root, sh, sh_net};

/// LLVM of the installed rustc (nightly and stable are both on LLVM 22).
pub const LLVM: &str = "22";
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The nightly the eBPF crate is built with, by its commit date
/// (`rustc +nightly -vV`): `nightly` must be this one. rustup installs it
/// as `nightly-<the next day>`, which it names by its publication date.
pub const NIGHTLY_DATE: &str = "2026-05-19";

pub fn build_tools() -> Result<()> {
    apt(&[&format!("llvm-{LLVM}-dev")])?;
    nightly_pinned()?;
    rust_src()?;
    bpf_linker()
}

/// The OpenTelemetry project's Python package the OTLP receiver of the
/// end-to-end tests decodes with.
pub const OTEL_PROTO_PY: &str = "1.45.2";

/// What the end-to-end tests run: a real sshd, real clients, sshpass, and
/// the conformance receiver's Python package.
pub fn test_tools() -> Result<()> {
    apt(&[
        "openssh-server",
        "openssh-client",
        "sshpass",
        "iproute2",
        "procps",
        "openssl",
        "debootstrap",
        "systemd",
        "sudo",
        "gcc",
    ])?;
    python_package("opentelemetry-proto", OTEL_PROTO_PY)
}

/// What `cargo xtask vm-test` boots guests with; for arm64 also the
/// emulator, the cross compiler, the Rust target and qemu-user (debootstrap
/// runs the arm64 root's maintainer scripts through binfmt).
pub fn vm_tools(arm64: bool) -> Result<()> {
    apt(&["qemu-system-x86", "debootstrap", "e2fsprogs", "tar"])?;
    if arm64 {
        // Mounted first, so that installing qemu-user-static registers it.
        binfmt_misc()?;
        apt(&[
            "qemu-system-arm",
            "qemu-user-static",
            "binfmt-support",
            "gcc-aarch64-linux-gnu",
            "libc6-dev-arm64-cross",
        ])?;
        if !std::path::Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
            sh(Command::new("update-binfmts").args(["--enable", "qemu-aarch64"]))
                .map_err(|e| step_failed("binfmt for qemu-aarch64", "update-binfmts --enable qemu-aarch64", e))?;
        }
        rust_target("aarch64-unknown-linux-gnu")?;
    }
    Ok(())
}

/// debootstrap of an arm64 root runs its maintainer scripts through
/// qemu-user, which needs binfmt_misc (not mounted where systemd is not
/// PID 1).
fn binfmt_misc() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("binfmt_misc")) {
        return Ok(());
    }
    let manual = "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc";
    sh(Command::new("mount").args(["-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"]))
        .map_err(|e| step_failed("mount binfmt_misc", manual, e))
}

fn rust_target(target: &str) -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == target)) {
        return Ok(());
    }
    println!("xtask: adding the Rust target {target}");
    sh(Command::new("rustup").args(["target", "add", target]))
        .map_err(|e| step_failed(&format!("rust target {target}"), &format!("rustup target add {target}"), e))
}

/// What the benchmark compares against.
pub fn bench_tools() -> Result<()> {
    apt(&["auditd"])
}

fn python_package(name: &str, version: &str) -> Result<()> {
    let probe = format!("import importlib.metadata as m; print(m.version('{name}'))");
    let have = Command::new("python3").args(["-c", &probe]).output();
    if have.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == version) {
        return Ok(());
    }
    let spec = format!("{name}=={version}");
    println!("xtask: installing {spec} from PyPI for the OTLP conformance receiver");
    sh(Command::new("python3").args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", &spec]))
        .map_err(|e| step_failed(&format!("pip: {spec}"), &format!("python3 -m pip install {spec}"), e))
}

fn step_failed(step: &str, manual: &str, err: anyhow::Error) -> anyhow::Error {
    anyhow!("bootstrap step `{step}` failed: {err:#}\nrun it by hand: {manual}")
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let manual = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    let step = format!("apt: {}", missing.join(" "));
    if !is_root() {
        return Err(step_failed(&step, &format!("sudo {manual}"), anyhow!("installing packages needs root")));
    }
    println!("xtask: installing {} from apt", missing.join(" "));
    let run = || -> Result<()> {
        sh_net(Command::new("apt-get").args(["update", "-qq"]), || ())?;
        sh_net(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            || (),
        )
    };
    run().map_err(|e| step_failed(&step, &manual, e))
}

pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz, for `cargo xtask fuzz` and the fuzz step of the tests.
pub fn cargo_fuzz() -> Result<()> {
    cargo_tool("cargo-fuzz", CARGO_FUZZ_VERSION, &["fuzz", "--version"])
}

/// A cargo subcommand at a pinned version, installed when `cargo ARGS`
/// does not print that version.
pub fn cargo_tool(krate: &str, version: &str, probe: &[&str]) -> Result<()> {
    let out = Command::new("cargo").args(probe).output();
    if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version)) {
        return Ok(());
    }
    let manual = format!("cargo install {krate} --version {version} --locked");
    println!("xtask: installing {krate} {version}");
    sh(Command::new("cargo").args(["install", krate, "--version", version, "--locked"]))
        .map_err(|e| step_failed(krate, &manual, e))
}

/// Fails unless the `nightly` toolchain is the pinned one, naming both dates
/// and how to install the pinned one.
pub fn nightly_pinned() -> Result<()> {
    let out = Command::new("rustc").args(["+nightly", "-vV"]).output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => String::new(),
    };
    let date = text.lines().find_map(|l| l.strip_prefix("commit-date: ")).map(str::trim);
    if date == Some(NIGHTLY_DATE) {
        return Ok(());
    }
    let found = date.map_or("none (no working `nightly` toolchain)".to_string(), |d| format!("commit date {d}"));
    let dist = next_day(NIGHTLY_DATE);
    Err(anyhow!(
        "the eBPF crate is built with the nightly of {NIGHTLY_DATE} (NIGHTLY_DATE in xtask/src/bootstrap.rs), \
         but `rustc +nightly -vV` says: {found}.\n\
         Install the pinned one (rustup names a nightly by the day after its commit) and make it `nightly`:\n  \
         rustup toolchain install nightly-{dist} --component rust-src\n  \
         rustup toolchain link nightly \"$(rustc +nightly-{dist} --print sysroot)\"\n\
         or, moving the pin on purpose, change NIGHTLY_DATE and the README's toolchain table together"
    ))
}

/// `YYYY-MM-DD` plus one day.
fn next_day(date: &str) -> String {
    let mut p = date.split('-').map(|n| n.parse::<u32>().unwrap_or(1));
    let (y, m, d) = (p.next().unwrap_or(2000), p.next().unwrap_or(1), p.next().unwrap_or(1));
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][(m.clamp(1, 12) - 1) as usize];
    let (y, m, d) = if d < days {
        (y, m, d + 1)
    } else if m < 12 {
        (y, m + 1, 1)
    } else {
        (y + 1, 1, 1)
    };
    format!("{y:04}-{m:02}-{d:02}")
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]).output();
    if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("rust-src"))) {
        return Ok(());
    }
    let manual = "rustup component add rust-src --toolchain nightly";
    println!("xtask: adding rust-src to the nightly toolchain (eBPF builds core from source)");
    sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .map_err(|e| step_failed("rust-src for nightly", manual, e))
}

/// bpf-linker at the pinned version, linked against LLVM 22.
fn bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    let prefix = format!("/usr/lib/llvm-{LLVM}");
    let manual = format!(
        "LLVM_PREFIX={prefix} cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked --no-default-features --features llvm-{LLVM}"
    );
    println!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM} (about 90 s, once per machine)");
    // LLVM_PREFIX: Debian's default llvm-config can be an older LLVM.
    sh(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--force"])
        .args(["--no-default-features", "--features", &format!("llvm-{LLVM}")])
        .env("LLVM_PREFIX", &prefix))
    .map_err(|e| step_failed("bpf-linker", &manual, e))?;
    if !bpf_linker_ok() {
        return Err(step_failed(
            "bpf-linker",
            &manual,
            anyhow!("installed, but it is not {BPF_LINKER_VERSION} on LLVM {LLVM}"),
        ));
    }
    Ok(())
}

fn bpf_linker_ok() -> bool {
    let Ok(path) = which("bpf-linker") else { return false };
    let version = Command::new(&path).arg("--version").output();
    let version_ok =
        version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == format!("bpf-linker {BPF_LINKER_VERSION}"));
    let ldd = Command::new("ldd").arg(&path).output();
    let llvm_ok = ldd.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("libLLVM.so.{LLVM}")));
    version_ok && llvm_ok
}

fn which(name: &str) -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home_bin = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin"));
    std::env::split_paths(&path)
        .chain(home_bin)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} is not on PATH"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_day_after() {
        assert_eq!(super::next_day("2026-05-19"), "2026-05-20");
        assert_eq!(super::next_day("2026-05-31"), "2026-06-01");
        assert_eq!(super::next_day("2024-02-28"), "2024-02-29");
        assert_eq!(super::next_day("2026-12-31"), "2027-01-01");
    }
}
