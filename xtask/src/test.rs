//! `cargo xtask test`: unit tests (no root), then the end-to-end tests that
//! load the probes and drive a real sshd (root). Ends with one line of
//! totals that CI counts.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap, build, is_root, show, workspace_root};

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

pub fn all(unit_only: bool, fuzz_seconds: u64) -> Result<()> {
    let started = Instant::now();
    bootstrap::build_tools()?;
    build::ebpf()?;
    let mut unit = Totals::default();
    let lib_ok = cargo_test(
        Command::new("cargo").args(["test", "--workspace", "--exclude", "sshlogin-ebpf", "--lib", "--bins"]),
        &mut unit,
    )?;
    // The binary's flags and config errors: no root needed.
    let cli_ok = cargo_test(
        Command::new("cargo").args(["test", "--package", "sshlogin-userspace", "--test", "cli"]),
        &mut unit,
    )?;
    let unit_ok = lib_ok && cli_ok;
    let mut e2e = Totals::default();
    let e2e_ok = if unit_only {
        true
    } else {
        if is_root() {
            bootstrap::test_tools()?;
        } else {
            println!("xtask: not root: the end-to-end tests will fail unless SSHLOGIN_SKIP_PRIVILEGED=1");
        }
        cargo_test(
            Command::new("cargo").args([
                "test",
                "--package",
                "sshlogin-userspace",
                "--test",
                "e2e",
                "--",
                "--test-threads=2",
            ]),
            &mut e2e,
        )?
    };
    // The package: built, installed, checked, removed; each step counted.
    let mut package = Totals::default();
    if !unit_only && is_root() {
        match crate::package::test() {
            Ok((passed, failed)) => {
                package.passed = passed;
                package.failed = failed.len() as u64;
            }
            Err(e) => {
                println!("xtask: the package could not be built: {e:#}");
                package.failed = 1;
            }
        }
    }
    // Debian 12's own kernel under QEMU: the PAM and no-PAM halves of the
    // guest's scenario, each counted.
    let mut vm = Totals::default();
    if !unit_only && is_root() {
        if std::env::var("SSHLOGIN_SKIP_VM").as_deref() == Ok("1") {
            println!("xtask: the QEMU guest skipped (SSHLOGIN_SKIP_VM=1)");
        } else {
            match crate::vm::ci() {
                Ok((passed, failed)) => {
                    vm.passed = passed;
                    vm.failed = failed;
                }
                Err(e) => {
                    println!("xtask: the QEMU guest could not run: {e:#}");
                    vm.failed = 2;
                }
            }
        }
    }
    // The benchmark's smoke run (no targets judged): one counted test.
    let mut bench = Totals::default();
    if !unit_only && is_root() {
        match crate::bench::run(true, None) {
            Ok(()) => bench.passed = 1,
            Err(e) => {
                println!("xtask: the benchmark smoke run failed: {e:#}");
                bench.failed = 1;
            }
        }
    }
    // Fuzzing last; each target counts as one test, a crash as a failure.
    let mut fuzz = Totals::default();
    if unit_only || fuzz_seconds == 0 {
        println!("xtask: fuzzing skipped");
    } else {
        let (clean, failed) = crate::fuzz::run(fuzz_seconds)?;
        fuzz.passed = clean;
        fuzz.failed = failed.len() as u64;
    }
    let others_ok = fuzz.failed == 0 && bench.failed == 0 && package.failed == 0 && vm.failed == 0;
    println!(
        "{} passed, {} failed, {} ignored (unit {}, end-to-end {}, package {}, QEMU guest {}, bench smoke {}, fuzz targets {}) in {:.0?}",
        unit.passed + e2e.passed + package.passed + vm.passed + bench.passed + fuzz.passed,
        unit.failed + e2e.failed + package.failed + vm.failed + bench.failed + fuzz.failed,
        unit.ignored + e2e.ignored,
        unit.passed,
        e2e.passed,
        package.passed,
        vm.passed,
        bench.passed,
        fuzz.passed,
        started.elapsed()
    );
    if !unit_ok || !e2e_ok || !others_ok {
        bail!("tests failed");
    }
    Ok(())
}

/// Runs one `cargo test`, streaming its output and adding up its
/// `test result:` lines. Returns whether it succeeded.
fn cargo_test(cmd: &mut Command, totals: &mut Totals) -> Result<bool> {
    cmd.current_dir(workspace_root()).env("SSHLOGIN_EBPF_OBJECT", build::ebpf_object()).stdout(Stdio::piped());
    println!("xtask: $ {}", show(cmd));
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{}`", show(cmd)))?;
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            totals.passed += count("passed");
            totals.failed += count("failed");
            totals.ignored += count("ignored");
        }
    }
    Ok(child.wait()?.success())
}
