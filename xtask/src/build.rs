//! The two builds: the eBPF object on nightly, the daemon on stable with the
//! object embedded.

use std::process::Command;

use anyhow::Result;

use crate::{sh, workspace_root};

pub const EBPF_TARGET: &str = "bpfel-unknown-none";

pub fn ebpf_object() -> std::path::PathBuf {
    workspace_root().join("target").join(EBPF_TARGET).join("release/sshlogin")
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
