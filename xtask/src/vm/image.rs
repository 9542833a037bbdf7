//! The guest's disk and kernel: a Debian root built with debootstrap from
//! the Debian registry, the kernel of the cell's suite installed into it
//! from a private apt list (never the machine's own sources), turned into
//! an ext4 image. Cached under target/vm/images and rebuilt only when the
//! recipe changes.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::Cell;
use crate::{sh, sh_net};

const MIRROR: &str = "http://deb.debian.org/debian";

/// What the scenario needs in the guest besides the base system.
const PACKAGES: &[&str] = &[
    "openssh-server",
    "openssh-client",
    "sshpass",
    "iproute2",
    "rsyslog",
    "procps",
    "initramfs-tools",
    "udev",
    "kmod",
    // For `cargo xtask bench --guest`, which compares the probes with it.
    "auditd",
];

/// PID 1 of the guest: unpack the payload disk and hand over to its
/// scenario. Power off if that cannot be done, so the host never waits for
/// its timeout to learn that.
const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc 2>/dev/null
mkdir -p /payload
if tar -xf /dev/vdb -C /payload && [ -x /payload/guest.sh ]; then
    exec /payload/guest.sh
fi
echo "guest: no payload on /dev/vdb"
echo o > /proc/sysrq-trigger
"#;

/// A bootable guest: kernel, initrd, root image.
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub root: PathBuf,
    /// The kernel package, e.g. `linux-image-6.1.0-50-amd64 6.1.158-1`.
    pub kernel_package: String,
}

fn recipe(cell: &Cell) -> String {
    format!(
        "debootstrap --arch={} --include={} {} {MIRROR}; kernel linux-image-{} from {} main; init {:x}",
        cell.arch.debian(),
        PACKAGES.join(","),
        cell.userland,
        cell.arch.debian(),
        cell.kernel_suite,
        fnv(INIT.as_bytes()),
    )
}

/// A stable hash for the recipe stamp (std's hasher is not stable).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

pub fn prepare(vm_dir: &Path, cell: &Cell) -> Result<Guest> {
    let dir = vm_dir.join("images").join(format!("{}-{}-{}", cell.userland, cell.arch.debian(), cell.kernel_suite));
    let guest = Guest {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        root: dir.join("root.img"),
        kernel_package: fs::read_to_string(dir.join("kernel-package")).unwrap_or_default().trim().to_string(),
    };
    let stamp = dir.join("recipe");
    let recipe = recipe(cell);
    if fs::read_to_string(&stamp).is_ok_and(|s| s == recipe)
        && [&guest.kernel, &guest.initrd, &guest.root].iter().all(|p| p.exists())
    {
        println!("vm-test: image {} is cached", dir.display());
        return Ok(guest);
    }
    println!("vm-test: building the guest image in {} (a few minutes, once)", dir.display());
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let root = dir.join("root");
    let deb = kernel_deb(vm_dir, cell)?;
    sh_net(
        Command::new("debootstrap")
            .arg(format!("--arch={}", cell.arch.debian()))
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(cell.userland)
            .arg(&root)
            .arg(MIRROR),
        || {
            let _ = fs::remove_dir_all(&root);
        },
    )
    .with_context(|| format!("debootstrap of {} for {}", cell.userland, cell.arch.debian()))?;
    install_kernel(&root, &deb.path)?;
    fs::write(root.join("sbin/sshlogin-guest-init"), INIT)?;
    sh(Command::new("chmod").arg("0755").arg(root.join("sbin/sshlogin-guest-init")))?;
    let release = deb.release();
    fs::copy(root.join(format!("boot/vmlinuz-{release}")), &guest.kernel)
        .with_context(|| format!("the kernel vmlinuz-{release} is not in the root's /boot"))?;
    fs::copy(root.join(format!("boot/initrd.img-{release}")), &guest.initrd)
        .with_context(|| format!("no initrd.img-{release}: did initramfs-tools run?"))?;
    make_ext4(&root, &guest.root)?;
    fs::remove_dir_all(&root)?;
    fs::write(dir.join("kernel-package"), format!("{} {}", deb.package, deb.version))?;
    fs::write(&stamp, recipe)?;
    Ok(Guest { kernel_package: format!("{} {}", deb.package, deb.version), ..guest })
}

struct KernelDeb {
    package: String,
    version: String,
    path: PathBuf,
}

impl KernelDeb {
    /// `linux-image-6.1.0-50-amd64` → `6.1.0-50-amd64`.
    fn release(&self) -> &str {
        self.package.trim_start_matches("linux-image-")
    }
}

/// Downloads the kernel package `linux-image-ARCH` depends on in `suite`,
/// through an apt configuration of its own under target/vm/apt.
fn kernel_deb(vm_dir: &Path, cell: &Cell) -> Result<KernelDeb> {
    let apt_dir = vm_dir.join("apt").join(format!("{}-{}", cell.kernel_suite, cell.arch.debian()));
    for sub in ["lists/partial", "cache/archives/partial", "debs"] {
        fs::create_dir_all(apt_dir.join(sub))?;
    }
    let sources = apt_dir.join("sources.list");
    fs::write(&sources, format!("deb {MIRROR} {} main\n", cell.kernel_suite))?;
    let opts = |cmd: &mut Command| {
        cmd.arg(format!("-oDir::Etc::SourceList={}", sources.display()))
            .arg("-oDir::Etc::SourceParts=/nonexistent")
            .arg(format!("-oDir::State::Lists={}", apt_dir.join("lists").display()))
            .arg(format!("-oDir::Cache={}", apt_dir.join("cache").display()))
            .arg("-oDir::State::Status=/dev/null")
            .arg(format!("-oAPT::Architecture={}", cell.arch.debian()))
            .arg(format!("-oAPT::Architectures={}", cell.arch.debian()))
            .arg("-oAPT::Sandbox::User=root");
    };
    let mut update = Command::new("apt-get");
    opts(&mut update);
    sh_net(update.args(["-qq", "update"]), || ())
        .with_context(|| format!("apt-get update of {} main", cell.kernel_suite))?;
    let meta = format!("linux-image-{}", cell.arch.debian());
    let mut show = Command::new("apt-cache");
    opts(&mut show);
    let out = show.args(["depends", &meta]).output().context("apt-cache depends")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let package = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("{meta} in {} names no kernel package:\n{text}", cell.kernel_suite))?
        .to_string();
    let mut policy = Command::new("apt-cache");
    opts(&mut policy);
    let out = policy.args(["show", "--no-all-versions", &package]).output().context("apt-cache show")?;
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .with_context(|| format!("no version of {package}"))?
        .to_string();
    let debs = apt_dir.join("debs");
    let mut download = Command::new("apt-get");
    opts(&mut download);
    sh_net(download.args(["-qq", "download", &package]).current_dir(&debs), || ())
        .with_context(|| format!("downloading {package} from {}", cell.kernel_suite))?;
    let path = fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_"))))
        .with_context(|| format!("{package} was not downloaded to {}", debs.display()))?;
    println!("vm-test: kernel {package} {version} from {}", cell.kernel_suite);
    Ok(KernelDeb { package, version, path })
}

/// `dpkg -i` in the chroot: its maintainer scripts build the initrd with
/// the root's own initramfs-tools.
fn install_kernel(root: &Path, deb: &Path) -> Result<()> {
    let inside = Path::new("/tmp").join(deb.file_name().context("kernel .deb name")?);
    fs::copy(deb, root.join(inside.strip_prefix("/")?))?;
    let proc_dir = root.join("proc");
    sh(Command::new("mount").args(["-t", "proc", "proc"]).arg(&proc_dir))?;
    let installed =
        sh(Command::new("chroot").arg(root).args(["dpkg", "-i"]).arg(&inside).env("DEBIAN_FRONTEND", "noninteractive"));
    let _ = Command::new("umount").arg("-l").arg(&proc_dir).status();
    installed.context("installing the kernel in the guest root")?;
    fs::remove_file(root.join(inside.strip_prefix("/")?))?;
    Ok(())
}

fn make_ext4(root: &Path, image: &Path) -> Result<()> {
    let out = Command::new("du").args(["-sm"]).arg(root).output().context("du")?;
    let used: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du printed no size")?;
    // Room for the scenario's users, logs and spool.
    let size = format!("{}M", used + used / 3 + 512);
    sh(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "sshlogin-root", "-d"]).arg(root).arg(image).arg(size))
        .context("mkfs.ext4 -d (e2fsprogs)")?;
    if !image.exists() {
        bail!("mkfs.ext4 made no {}", image.display());
    }
    Ok(())
}
