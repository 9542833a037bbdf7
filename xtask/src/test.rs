//! `cargo xtask test`: unit tests (no root), then the end-to-end tests that
//! load the probes and drive a real sshd (root). Ends with one line of
//! totals that CI counts.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result};

use crate::{bootstrap, build, is_root, show, workspace_root};

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// What each failure said, repeated after the totals: CI keeps only
    /// the tail of a long run, and the fuzzers' output used to bury it.
    failures: Vec<String>,
}

impl Totals {
    /// A part counted in steps: how many passed and what each failure was;
    /// a part that could not run at all counts `not_run` failures.
    fn part(name: &str, ran: Result<(u64, Vec<String>)>, not_run: u64) -> Totals {
        match ran {
            Ok((passed, failed)) => Totals {
                passed,
                failed: failed.len() as u64,
                failures: failed.iter().map(|f| format!("{name}: {f}")).collect(),
                ..Totals::default()
            },
            Err(e) => {
                println!("xtask: {name} could not run: {e:#}");
                Totals { failed: not_run, failures: vec![format!("{name}: could not run: {e:#}")], ..Totals::default() }
            }
        }
    }
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
        // The OpenSSH 10 tests first and alone: on a fresh machine they
        // debootstrap a trixie chroot, and dpkg sharing the two cores with
        // the other tests delays the daemon enough to lose short-lived
        // connections' sockets (a fresh-clone run failed the IPv6 test so).
        let e2e_test = |filter: &[&str]| {
            let mut cmd = Command::new("cargo");
            cmd.args(["test", "--package", "sshlogin-userspace", "--test", "e2e", "--", "--test-threads=2"])
                .args(filter);
            cmd
        };
        let layouts_ok = cargo_test(&mut e2e_test(&["layouts::"]), &mut e2e)?;
        cargo_test(&mut e2e_test(&["--skip", "layouts::"]), &mut e2e)? && layouts_ok
    };
    let later = !unit_only && is_root();
    // The package: built, installed, checked, removed; each step counted.
    let package = if later { Totals::part("package", crate::package::test(), 1) } else { Totals::default() };
    // Debian 12's own kernel under QEMU: the PAM and no-PAM halves of the
    // guest's scenario, each counted.
    let vm = if !later {
        Totals::default()
    } else if std::env::var("SSHLOGIN_SKIP_VM").as_deref() == Ok("1") {
        println!("xtask: the QEMU guest skipped (SSHLOGIN_SKIP_VM=1)");
        Totals::default()
    } else {
        Totals::part("QEMU guest", crate::vm::ci(), 2)
    };
    // The benchmark's smoke run (no targets judged): one counted test.
    let bench = if later {
        Totals::part("bench smoke", crate::bench::run(true, None).map(|()| (1, Vec::new())), 1)
    } else {
        Totals::default()
    };
    // Fuzzing last; each target counts as one test, a crash as a failure.
    let fuzz = if unit_only || fuzz_seconds == 0 {
        println!("xtask: fuzzing skipped");
        Totals::default()
    } else {
        let ran = crate::fuzz::run(fuzz_seconds).map(|(clean, failed)| {
            (clean, failed.iter().map(|t| format!("{t}: crash input under fuzz/artifacts/{t}")).collect())
        });
        Totals::part("fuzz target", ran, crate::fuzz::TARGETS.len() as u64)
    };
    let failures: Vec<&String> =
        [&unit, &e2e, &package, &vm, &bench, &fuzz].iter().flat_map(|t| t.failures.iter()).collect();
    if !failures.is_empty() {
        println!("xtask: what failed:");
        for f in failures {
            println!("{f}");
        }
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
        // The totals stay the last line: no error report (with its
        // backtrace under RUST_BACKTRACE) after them, only the exit code.
        std::process::exit(1);
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
    let mut scan = Scan { totals, block: None };
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        scan.feed(&line);
    }
    Ok(child.wait()?.success())
}

/// Reads libtest's output a line at a time: adds up the `test result:`
/// lines and keeps each failed test's captured output, which libtest
/// prints as a block opened by `---- NAME stdout ----`.
struct Scan<'a> {
    totals: &'a mut Totals,
    block: Option<(String, Vec<String>)>,
}

impl Scan<'_> {
    fn feed(&mut self, line: &str) {
        if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            self.close();
            self.block = Some((name.to_string(), Vec::new()));
            return;
        }
        if line == "failures:" || line.starts_with("test result: ") {
            self.close();
        }
        if let Some((_, lines)) = self.block.as_mut() {
            lines.push(line.to_string());
        }
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            self.totals.passed += count("passed");
            self.totals.failed += count("failed");
            self.totals.ignored += count("ignored");
        }
    }

    fn close(&mut self) {
        if let Some(done) = self.block.take() {
            self.totals.failures.push(summarize(done));
        }
    }
}

/// A failed test in a few lines: the last lines it printed before it
/// failed, then where it panicked and why (without the backtrace).
fn summarize((name, lines): (String, Vec<String>)) -> String {
    const BEFORE: usize = 12;
    const MESSAGE: usize = 10;
    let panic = lines.iter().position(|l| l.contains("panicked at")).unwrap_or(lines.len());
    let mut out = vec![format!("---- {name}")];
    out.extend(lines[panic.saturating_sub(BEFORE)..panic].iter().filter(|l| !l.is_empty()).cloned());
    out.extend(
        lines[panic..]
            .iter()
            .take_while(|l| !l.starts_with("stack backtrace:") && !l.starts_with("note: run with"))
            .take(MESSAGE)
            .cloned(),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libtest's own output for one passing and one failing test.
    const OUTPUT: &str = "running 2 tests
test fine ... ok
test flaky ... FAILED

failures:

---- flaky stdout ----
e2e: sshd on port 2222
thread 'flaky' panicked at tests/e2e/main.rs:10:5:
no ssh.session.open for sl-alice within 20 s
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    flaky

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s
";

    #[test]
    fn a_failed_test_is_counted_and_its_panic_kept() {
        let mut totals = Totals::default();
        let mut scan = Scan { totals: &mut totals, block: None };
        OUTPUT.lines().for_each(|l| scan.feed(l));
        assert_eq!((totals.passed, totals.failed, totals.ignored), (1, 1, 0));
        assert_eq!(totals.failures.len(), 1);
        let kept = &totals.failures[0];
        assert!(kept.starts_with("---- flaky\n"), "{kept}");
        assert!(kept.contains("no ssh.session.open for sl-alice within 20 s"), "{kept}");
        assert!(kept.contains("e2e: sshd on port 2222"), "{kept}");
        assert!(!kept.contains("test result"), "{kept}");
    }
}
