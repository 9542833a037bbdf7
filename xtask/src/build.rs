//! The two builds: the eBPF object on nightly, the daemon on stable with the
//! object embedded.

use std::process::Command;

use anyhow::Result;

use crate::{sh, workspace_root};

pub const EBPF_TARGET: &str = "bpfel-unknown-none";

pub fn ebpf_object() -> std::path::PathBuf {
    workspace_root().join("target").join(EBPF_TARGET).join("release/sshlogin")
}

/// The daemon `cargo build --package sshlogin-userspace` makes (debug), which
/// the end-to-end tests run.
pub fn debug_daemon() -> std::path::PathBuf {
    workspace_root().join("target/debug/sshlogin")
}

pub fn ebpf() -> Result<()> {
    sh(Command::new("cargo")
        .current_dir(workspace_root())
        .args(["+nightly", "build", "--package", "sshlogin-ebpf", "--release"])
        .args(["--target", EBPF_TARGET, "-Z", "build-std=core"])
        // The workspace may be built with a different CARGO_TARGET_DIR;
        // keep the object where build.rs looks for it.
        .env("CARGO_TARGET_DIR", workspace_root().join("target")))?;
    println!("xtask: eBPF object at {}", ebpf_object().display());
    Ok(())
}

pub fn userspace() -> Result<()> {
    sh(Command::new("cargo")
        .current_dir(workspace_root())
        .args(["build", "--package", "sshlogin-userspace", "--release"])
        .env("SSHLOGIN_EBPF_OBJECT", ebpf_object()))?;
    println!("xtask: daemon at {}", workspace_root().join("target/release/sshlogin").display());
    Ok(())
}

/// The daemon for a Rust target triple: the host's through [`userspace`],
/// another (aarch64) cross-built with Debian's cross gcc as the linker. The
/// eBPF object is the same for every architecture.
pub fn userspace_for(target: &str) -> Result<std::path::PathBuf> {
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    if target == host {
        userspace()?;
        return Ok(workspace_root().join("target/release/sshlogin"));
    }
    let gcc = format!("{}-linux-gnu-gcc", target.split('-').next().unwrap_or(target));
    let linker_var = format!("CARGO_TARGET_{}_LINKER", target.to_uppercase().replace('-', "_"));
    sh(Command::new("cargo")
        .current_dir(workspace_root())
        .args(["build", "--package", "sshlogin-userspace", "--release", "--target", target])
        .env("SSHLOGIN_EBPF_OBJECT", ebpf_object())
        .env(linker_var, &gcc))?;
    let binary = workspace_root().join("target").join(target).join("release/sshlogin");
    println!("xtask: daemon for {target} at {}", binary.display());
    Ok(binary)
}
