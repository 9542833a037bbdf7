//! `cargo xtask bench`: the Criterion pipeline bench, then the system bench
//! (root), which writes the report.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{bootstrap, build, sh, workspace_root};

pub fn run(quick: bool, out: Option<PathBuf>) -> Result<()> {
    bootstrap::build_tools()?;
    bootstrap::test_tools()?;
    bootstrap::bench_tools()?;
    build::ebpf()?;
    let root = workspace_root();
    let criterion: &[&str] =
        if quick { &["--warm-up-time", "1", "--measurement-time", "2", "--sample-size", "10"] } else { &[] };
    sh(Command::new("cargo")
        .current_dir(&root)
        .args(["bench", "--package", "sshlogin-userspace", "--bench", "pipeline", "--"])
        .args(criterion)
        .env("SSHLOGIN_EBPF_OBJECT", build::ebpf_object()))?;
    let out = out.unwrap_or_else(|| {
        if quick { root.join("target/performance-smoke.md") } else { root.join("docs/performance.md") }
    });
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .args(["bench", "--package", "sshlogin-userspace", "--bench", "system", "--"])
        .arg("--out")
        .arg(&out)
        .arg("--pipeline")
        .arg(root.join("target/criterion/pipeline/replay"))
        .env("SSHLOGIN_EBPF_OBJECT", build::ebpf_object())
        // The opt-out is the end-to-end tests'; the bench never skips.
        .env_remove(crate::test::SKIP_PRIVILEGED);
    if quick {
        cmd.arg("--quick");
    }
    sh(&mut cmd)?;
    println!("xtask: report in {}", out.display());
    Ok(())
}
