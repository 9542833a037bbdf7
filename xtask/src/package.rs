//! `cargo xtask deb`: the Debian package; and its test: install it, check
//! the host with it, verify its unit, remove it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap, build, sh, workspace_root};

pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Builds target/debian/sshlogin_VERSION_ARCH.deb; returns its path.
pub fn deb() -> Result<PathBuf> {
    bootstrap::build_tools()?;
    bootstrap::cargo_tool("cargo-deb", CARGO_DEB_VERSION, &["deb", "--version"])?;
    build::ebpf()?;
    build::userspace()?;
    let root = workspace_root();
    let out_dir = root.join("target/debian");
    sh(Command::new("cargo")
        .current_dir(&root)
        .args(["deb", "--no-build", "--no-strip", "--package", "sshlogin-userspace", "--output"])
        .arg(&out_dir))?;
    let deb = std::fs::read_dir(&out_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .context("cargo deb wrote no .deb")?;
    println!("xtask: package at {}", deb.display());
    Ok(deb)
}

fn ok(cmd: &mut Command) -> bool {
    sh(cmd).is_ok()
}

/// Installs the package, runs what the package test asks, removes it.
/// Returns (checks passed, checks failed with why).
pub fn test() -> Result<(u64, Vec<String>)> {
    let deb = deb()?;
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut step = |name: &str, result: bool| {
        if result {
            passed += 1;
            println!("xtask: package: {name}: ok");
        } else {
            println!("xtask: package: {name}: FAILED");
            failed.push(name.to_string());
        }
    };
    // A leftover from an earlier run must not hide anything.
    let _ = Command::new("dpkg").args(["--purge", "sshlogin"]).status();
    step("dpkg -i", ok(Command::new("dpkg").arg("-i").arg(&deb)));
    step("binary, unit and conffile installed", {
        let conf = std::fs::metadata("/etc/sshlogin/config.toml");
        Path::new("/usr/bin/sshlogin").is_file()
            && Path::new("/lib/systemd/system/sshlogin.service").is_file()
            && conf.is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777 == 0o600)
            && Path::new("/var/lib/sshlogin").is_dir()
    });
    step(
        "systemd-analyze verify",
        ok(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/sshlogin.service"]))
            && ok(Command::new("systemd-analyze")
                .arg("verify")
                .arg(workspace_root().join("packaging/sshlogin.service"))),
    );
    step("sshlogin check --no-network", ok(Command::new("/usr/bin/sshlogin").args(["check", "--no-network"])));
    step(
        "dpkg -r removes it",
        ok(Command::new("dpkg").args(["-r", "sshlogin"]))
            && !Path::new("/usr/bin/sshlogin").exists()
            && !Path::new("/lib/systemd/system/sshlogin.service").exists(),
    );
    step(
        "dpkg --purge removes the conffile and the spool",
        ok(Command::new("dpkg").args(["--purge", "sshlogin"]))
            && !Path::new("/etc/sshlogin/config.toml").exists()
            && !Path::new("/var/lib/sshlogin").exists(),
    );
    Ok((passed, failed))
}

pub fn run_deb() -> Result<()> {
    let deb = deb()?;
    if !deb.exists() {
        bail!("{} is missing", deb.display());
    }
    Ok(())
}
