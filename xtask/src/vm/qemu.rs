//! Boots a guest and collects what its scenario recorded: KVM when
//! /dev/kvm can be opened, software emulation (TCG) otherwise.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{Arch, Cell, image::Guest};

/// What the guest handed back, unpacked, and how it was booted.
pub struct Results {
    pub dir: PathBuf,
    pub console: PathBuf,
    pub accel: &'static str,
}

/// KVM only when /dev/kvm opens and the CPU shows virtualisation
/// extensions: on the build machines /dev/kvm exists without them (a nested
/// guest without nested virtualisation) and a KVM guest hangs at its first
/// instruction, silently. `SSHLOGIN_VM_ACCEL=kvm|tcg` overrides.
fn kvm_usable() -> bool {
    match std::env::var("SSHLOGIN_VM_ACCEL").as_deref() {
        Ok("kvm") => return true,
        Ok("tcg") => return false,
        _ => {}
    }
    let opens = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let extensions = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    // arm64 shows no such flag; there /dev/kvm opening is the test.
    opens && (extensions || std::env::consts::ARCH == "aarch64")
}

pub fn boot(cell: &Cell, guest: &Guest, payload: &Path, work: &Path) -> Result<Results> {
    let results_img = work.join("results.img");
    // The guest writes a tar archive to it from the first byte; zeros after.
    fs::File::create(&results_img)?.set_len(64 << 20)?;
    let console = work.join("console.log");
    let native = matches!((cell.arch, std::env::consts::ARCH), (Arch::Amd64, "x86_64") | (Arch::Arm64, "aarch64"));
    let kvm = native && kvm_usable();
    let accel = if kvm { "kvm" } else { "tcg" };
    let mut cmd = match cell.arch {
        Arch::Amd64 => {
            let mut c = Command::new("qemu-system-x86_64");
            c.args(["-machine", &format!("q35,accel={accel}"), "-cpu", if kvm { "host" } else { "max" }]);
            c
        }
        Arch::Arm64 => {
            let mut c = Command::new("qemu-system-aarch64");
            c.args(["-machine", &format!("virt,accel={accel}"), "-cpu", if kvm { "host" } else { "max" }]);
            c
        }
    };
    let serial = match cell.arch {
        Arch::Amd64 => "ttyS0",
        Arch::Arm64 => "ttyAMA0",
    };
    cmd.args(["-smp", "2", "-m", "2048", "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initrd)
        .arg("-append")
        .arg(format!(
            "root=/dev/vda rootfstype=ext4 rw console={serial} panic=-1 init=/sbin/sshlogin-guest-init \
             systemd.unit=none net.ifnames=0"
        ))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw,snapshot=on", guest.root.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw,readonly=on", payload.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", results_img.display()))
        .stdin(Stdio::null());
    // Software emulation of a whole boot and a dozen logins is slow.
    let limit = if kvm { Duration::from_secs(300) } else { Duration::from_secs(1200) };
    println!("vm-test: booting {} ({accel}); console in {}", cell.name, console.display());
    println!("xtask: $ {}", crate::show(&cmd));
    let mut child = cmd.spawn().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the guest did not power off within {limit:?}; the console's last lines:\n{}", tail(&console, 30));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if !status.success() {
        bail!("qemu exited with {status}; the console's last lines:\n{}", tail(&console, 30));
    }
    let dir = work.join("results");
    fs::create_dir_all(&dir)?;
    let unpacked = Command::new("tar").arg("-xf").arg(&results_img).arg("-C").arg(&dir).status()?;
    if !unpacked.success() || !dir.join("uname").exists() {
        bail!("the guest handed back no results; the console's last lines:\n{}", tail(&console, 40));
    }
    Ok(Results { dir, console, accel })
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
