//! `cargo xtask test`: unit tests (no root), then the end-to-end tests that
//! load the probes and drive a real sshd (root). Ends with one line of
//! totals that CI counts.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, anyhow};

use crate::{bootstrap, build, is_root, sh, show, workspace_root};

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

/// The opt-out of the end-to-end tests (never set by CI): they are not run,
/// and each counts as ignored.
pub const SKIP_PRIVILEGED: &str = "SSHLOGIN_SKIP_PRIVILEGED";

/// The package of the privileged end-to-end tests, outside the default
/// members so that a plain `cargo test` never runs them.
const E2E_PACKAGE: &str = "sshlogin-e2e";

pub fn all(unit_only: bool, fuzz_seconds: u64) -> Result<()> {
    let started = Instant::now();
    bootstrap::build_tools()?;
    build::ebpf()?;
    // The lint gate: each check one counted step.
    let lint = Totals::part("lint", lint(), 1);
    let mut unit = Totals::default();
    cargo_test(
        Command::new("cargo").args(["test", "--workspace", "--exclude", "sshlogin-ebpf", "--lib", "--bins"]),
        &mut unit,
    )?;
    // The binary's flags and config errors: no root needed.
    cargo_test(Command::new("cargo").args(["test", "--package", "sshlogin-userspace", "--test", "cli"]), &mut unit)?;
    let mut e2e = Totals::default();
    if unit_only {
        println!("xtask: --unit-only: the end-to-end, package, QEMU guest and bench steps left out");
    } else if std::env::var(SKIP_PRIVILEGED).as_deref() == Ok("1") {
        skip_e2e(&mut e2e)?;
    } else {
        if is_root() {
            bootstrap::test_tools()?;
        } else {
            println!("xtask: not root: the end-to-end tests will fail (they need root), unless {SKIP_PRIVILEGED}=1");
        }
        run_e2e(&mut e2e)?;
    }
    // The steps after need root; not root, each fails saying so.
    let privileged = |name: &str, not_run: u64, step: &dyn Fn() -> Result<(u64, Vec<String>)>| {
        if unit_only {
            Totals::default()
        } else if !is_root() {
            Totals::part(name, Err(anyhow!("needs root: run `cargo xtask test` as root (or --unit-only)")), not_run)
        } else {
            Totals::part(name, step(), not_run)
        }
    };
    // The package: built, installed, checked, removed; each step counted.
    let package = privileged("package", 1, &crate::package::test);
    // Debian 12's own kernel under QEMU: the PAM and no-PAM halves of the
    // guest's scenario, each counted.
    let vm = if !unit_only && std::env::var("SSHLOGIN_SKIP_VM").as_deref() == Ok("1") {
        println!("xtask: the QEMU guest skipped (SSHLOGIN_SKIP_VM=1): its 2 halves count as ignored");
        Totals { ignored: 2, ..Totals::default() }
    } else {
        privileged("QEMU guest", 2, &crate::vm::ci)
    };
    // The benchmark's smoke run (no targets judged): one counted test.
    let bench = privileged("bench smoke", 1, &|| crate::bench::run(true, None).map(|()| (1, Vec::new())));
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
    let parts = [&lint, &unit, &e2e, &package, &vm, &bench, &fuzz];
    let failures: Vec<&String> = parts.iter().flat_map(|t| t.failures.iter()).collect();
    if !failures.is_empty() {
        println!("xtask: what failed:");
        for f in failures {
            println!("{f}");
        }
    }
    let sum = |f: fn(&Totals) -> u64| parts.iter().map(|t| f(t)).sum::<u64>();
    let failed = sum(|t| t.failed);
    println!(
        "{} passed, {failed} failed, {} ignored (lint {}, unit {}, end-to-end {}, package {}, QEMU guest {}, bench smoke {}, fuzz targets {}) in {:.0?}",
        sum(|t| t.passed),
        sum(|t| t.ignored),
        lint.passed,
        unit.passed,
        e2e.passed,
        package.passed,
        vm.passed,
        bench.passed,
        fuzz.passed,
        started.elapsed()
    );
    if failed > 0 {
        // The totals stay the last line: no error report (with its
        // backtrace under RUST_BACKTRACE) after them, only the exit code.
        std::process::exit(1);
    }
    Ok(())
}

/// `cargo clippy` (stable, every member but the eBPF crate; then the eBPF
/// crate on nightly for its target) and `cargo fmt --check`, warnings
/// denied: one counted step each.
fn lint() -> Result<(u64, Vec<String>)> {
    let root = workspace_root();
    let checks: [(&str, Command); 3] = [
        ("clippy", {
            let mut c = Command::new("cargo");
            c.args(["clippy", "--workspace", "--exclude", "sshlogin-ebpf", "--all-targets", "--", "-D", "warnings"])
                .env("SSHLOGIN_EBPF_OBJECT", build::ebpf_object());
            c
        }),
        ("clippy (eBPF, nightly)", {
            let mut c = Command::new("cargo");
            c.args(["+nightly", "clippy", "--package", "sshlogin-ebpf", "--release"]).args([
                "--target",
                build::EBPF_TARGET,
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]);
            c
        }),
        ("rustfmt", {
            let mut c = Command::new("cargo");
            c.args(["fmt", "--all", "--check"]);
            c
        }),
    ];
    let mut passed = 0;
    let mut failed = Vec::new();
    for (name, mut cmd) in checks {
        match sh(cmd.current_dir(&root)) {
            Ok(()) => passed += 1,
            Err(e) => failed.push(format!("{name}: {e:#} (its output is above)")),
        }
    }
    Ok((passed, failed))
}

/// The end-to-end tests against the debug daemon, which is built first and
/// named to them by `SSHLOGIN_BIN`.
fn run_e2e(e2e: &mut Totals) -> Result<()> {
    let daemon = build::debug_daemon();
    if let Err(e) = sh(Command::new("cargo")
        .current_dir(workspace_root())
        .args(["build", "--package", "sshlogin-userspace", "--bin", "sshlogin"])
        .env("SSHLOGIN_EBPF_OBJECT", build::ebpf_object()))
    {
        println!("xtask: the end-to-end tests could not run: {e:#}");
        e2e.failed += 1;
        e2e.failures.push(format!("end-to-end: the daemon did not build: {e:#}"));
        return Ok(());
    }
    // The OpenSSH 10 tests first and alone: on a fresh machine they
    // debootstrap a trixie chroot, and dpkg sharing the two cores with
    // the other tests delays the daemon enough to lose short-lived
    // connections' sockets (a fresh-clone run failed the IPv6 test so).
    let e2e_test = |filter: &[&str]| {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--package", E2E_PACKAGE, "--test", "e2e", "--", "--test-threads=2"])
            .args(filter)
            .env("SSHLOGIN_BIN", &daemon);
        cmd
    };
    cargo_test(&mut e2e_test(&["layouts::"]), e2e)?;
    cargo_test(&mut e2e_test(&["--skip", "layouts::"]), e2e)?;
    Ok(())
}

/// With the opt-out, the end-to-end tests are listed, not run, and each is
/// counted as ignored: a test skipped is no test passed.
fn skip_e2e(e2e: &mut Totals) -> Result<()> {
    println!("xtask: {SKIP_PRIVILEGED}=1: the end-to-end tests are not run; each counts as ignored");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root()).args(["test", "--package", E2E_PACKAGE, "--test", "e2e", "--", "--list"]);
    println!("xtask: $ {}", show(&cmd));
    let out = cmd.output().with_context(|| format!("cannot start `{}`", show(&cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let names = listed(&stdout);
    if !out.status.success() {
        print!("{}", String::from_utf8_lossy(&out.stderr));
        e2e.failed += 1;
        e2e.failures.push(format!("end-to-end: `{}` failed with {}", show(&cmd), out.status));
        return Ok(());
    }
    for name in &names {
        println!("test {name} ... ignored, {SKIP_PRIVILEGED}=1");
    }
    println!("test result: ok. 0 passed; 0 failed; {} ignored ({SKIP_PRIVILEGED}=1)", names.len());
    e2e.ignored += names.len() as u64;
    Ok(())
}

/// The test names in libtest's `--list` output (`NAME: test` lines).
fn listed(out: &str) -> Vec<&str> {
    out.lines().filter_map(|l| l.strip_suffix(": test")).collect()
}

/// Runs one `cargo test`, streaming its output and adding up its
/// `test result:` lines. A run that fails with no test failed (a test
/// binary that did not build, or that aborted before its summary) adds a
/// failure of its own. Returns whether it succeeded.
fn cargo_test(cmd: &mut Command, totals: &mut Totals) -> Result<bool> {
    cmd.current_dir(workspace_root()).env("SSHLOGIN_EBPF_OBJECT", build::ebpf_object()).stdout(Stdio::piped());
    println!("xtask: $ {}", show(cmd));
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{}`", show(cmd)))?;
    let stdout = child.stdout.take().expect("piped");
    let failed_before = totals.failed;
    let mut scan = Scan { totals, block: None, open: 0 };
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        scan.feed(&line);
    }
    let status = child.wait()?;
    scan.finish(&show(cmd), status.success(), failed_before);
    Ok(status.success())
}

/// Reads libtest's output a line at a time: adds up the `test result:`
/// lines and keeps each failed test's captured output, which libtest
/// prints as a block opened by `---- NAME stdout ----`.
struct Scan<'a> {
    totals: &'a mut Totals,
    block: Option<(String, Vec<String>)>,
    /// Test binaries that said `running N tests` and have not yet printed
    /// their `test result:` line.
    open: u64,
}

impl Scan<'_> {
    fn feed(&mut self, line: &str) {
        if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            self.close();
            self.block = Some((name.to_string(), Vec::new()));
            return;
        }
        if line.starts_with("running ") && (line.ends_with(" tests") || line.ends_with(" test")) {
            self.open += 1;
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
            self.open = self.open.saturating_sub(1);
            self.totals.passed += count("passed");
            self.totals.failed += count("failed");
            self.totals.ignored += count("ignored");
        }
    }

    /// After the run: a test binary that never printed its summary aborted
    /// (a crash, an abort, a test that killed its own process); a run that
    /// failed with no test failed did not build or could not start a test
    /// binary. Each adds a failure.
    fn finish(&mut self, what: &str, success: bool, failed_before: u64) {
        self.close();
        if self.open > 0 {
            self.totals.failed += self.open;
            self.totals.failures.push(format!("`{what}`: {} test binary(ies) aborted before their summary", self.open));
            self.open = 0;
        }
        if !success && self.totals.failed == failed_before {
            self.totals.failed += 1;
            self.totals.failures.push(format!("`{what}` failed with no test failed: a test binary did not build or did not start (its output is above)"));
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
        let mut scan = Scan { totals: &mut totals, block: None, open: 0 };
        OUTPUT.lines().for_each(|l| scan.feed(l));
        scan.finish("cargo test", false, 0);
        assert_eq!((totals.passed, totals.failed, totals.ignored), (1, 1, 0));
        assert_eq!(totals.failures.len(), 1);
        let kept = &totals.failures[0];
        assert!(kept.starts_with("---- flaky\n"), "{kept}");
        assert!(kept.contains("no ssh.session.open for sl-alice within 20 s"), "{kept}");
        assert!(kept.contains("e2e: sshd on port 2222"), "{kept}");
        assert!(!kept.contains("test result"), "{kept}");
    }

    #[test]
    fn a_test_binary_that_aborts_or_does_not_build_is_a_failure() {
        let mut totals = Totals::default();
        let mut scan = Scan { totals: &mut totals, block: None, open: 0 };
        // One binary passes; the next dies (SIGABRT) before its summary.
        let aborted = "running 1 test\ntest fine ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\nrunning 2 tests\ntest dies ... ";
        aborted.lines().for_each(|l| scan.feed(l));
        scan.finish("cargo test", false, 0);
        assert_eq!((totals.passed, totals.failed), (1, 1));
        assert!(totals.failures[0].contains("aborted"), "{:?}", totals.failures);

        // A compile error: cargo fails, libtest never ran.
        let mut totals = Totals::default();
        let mut scan = Scan { totals: &mut totals, block: None, open: 0 };
        scan.finish("cargo test", false, 0);
        assert_eq!(totals.failed, 1);
        assert!(totals.failures[0].contains("did not build"), "{:?}", totals.failures);

        // A clean run adds nothing.
        let mut totals = Totals::default();
        Scan { totals: &mut totals, block: None, open: 0 }.finish("cargo test", true, 0);
        assert_eq!(totals.failed, 0);
    }

    #[test]
    fn listed_tests_are_named() {
        let out = "admission::a_burst: test\nkey_login: test\n\n2 tests, 0 benchmarks\n";
        assert_eq!(listed(out), ["admission::a_burst", "key_login"]);
    }
}
