//! `cargo xtask test`: unit tests (no root), then the end-to-end tests that
//! load the probes and drive a real sshd (root).

use std::{process::Command, time::Instant};

use anyhow::Result;

use crate::{bootstrap, build, is_root, sh, workspace_root};

pub fn all(unit_only: bool) -> Result<()> {
    let started = Instant::now();
    bootstrap::build_tools()?;
    build::ebpf()?;
    sh(Command::new("cargo")
        .current_dir(workspace_root())
        .args(["test", "--workspace", "--exclude", "sshlogin-ebpf", "--lib", "--bins"])
        .env("SSHLOGIN_EBPF_OBJECT", build::ebpf_object()))?;
    if unit_only {
        return Ok(());
    }
    if is_root() {
        bootstrap::test_tools()?;
    } else {
        println!("xtask: not root: the end-to-end tests will fail unless SSHLOGIN_SKIP_PRIVILEGED=1");
    }
    sh(Command::new("cargo")
        .current_dir(workspace_root())
        .args(["test", "--package", "sshlogin-userspace", "--test", "e2e", "--", "--test-threads=2"])
        .env("SSHLOGIN_EBPF_OBJECT", build::ebpf_object()))?;
    println!("xtask: all tests passed in {:.0?}", started.elapsed());
    Ok(())
}
