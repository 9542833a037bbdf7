//! `sshlogin check` on this host, for real.

use std::process::Command;

use crate::harness::{privileged, privileged_alone, sshlogin_bin, state_dir};

fn check(args: &[&str]) -> (bool, String) {
    let state = state_dir("check").display().to_string();
    let out = Command::new(sshlogin_bin())
        .args(["check", "--no-network", "--state-dir", &state])
        .args(args)
        .output()
        .expect("run sshlogin check");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_mounts_tracefs_when_it_is_missing() {
    // Alone: no other test may load probes while tracefs is away.
    let _guard = privileged_alone();
    let _ = Command::new("umount").arg("/sys/kernel/tracing").status();
    assert!(!std::path::Path::new("/sys/kernel/tracing/events").exists(), "tracefs is still mounted");
    let (ok, text) = check(&[]);
    assert!(ok, "check failed:\n{text}");
    assert!(text.contains("was not mounted; mounted it at /sys/kernel/tracing"), "{text}");
    assert!(std::path::Path::new("/sys/kernel/tracing/events").exists());
    assert!(text.contains("this host can run sshlogin"));
}

#[test]
fn check_names_the_setting_for_a_missing_sshd() {
    let _guard = privileged();
    let (ok, text) = check(&["--sshd-path", "/nonexistent/sbin/sshd"]);
    assert!(!ok, "check passed without an sshd:\n{text}");
    assert!(text.contains("FAIL sshd"), "{text}");
    assert!(text.contains("capture.sshd_paths") && text.contains("--sshd-path"), "{text}");
}

/// `auto` gets fentry where the kernel takes it and the tracepoints where
/// it refuses (this build machine: EPERM); either way `check` and the log
/// say which, a refusal in exactly one log line with its reason, and
/// `fentry` asked for explicitly fails on a refusing kernel naming the
/// program and the kernel function.
#[test]
fn check_says_which_syscall_probes_the_host_got() {
    let _guard = privileged();
    let (ok, text) = check(&["--syscall-probes", "auto"]);
    assert!(ok, "check failed:\n{text}");
    let refusals: Vec<&str> = text.lines().filter(|l| l.contains("the kernel refused fentry;")).collect();
    let (fentry_ok, fentry_text) = check(&["--syscall-probes", "fentry"]);
    if text.contains("syscall probes: fentry") {
        assert!(refusals.is_empty(), "{text}");
        assert!(text.contains("probes attached") && text.contains("syscall_probes=fentry"), "{text}");
        assert!(fentry_ok, "auto got fentry, fentry alone failed:\n{fentry_text}");
    } else {
        assert!(text.contains("syscall probes: tracepoints, because the kernel refused fentry"), "{text}");
        assert_eq!(refusals.len(), 1, "{text}");
        assert!(refusals[0].contains("reason=") && refusals[0].contains("syscall probes: tracepoints"), "{text}");
        assert!(refusals[0].contains("program fentry_") && refusals[0].contains(" at fentry __sys_"), "{text}");
        assert!(text.contains("syscall_probes=tracepoints"), "{text}");
        assert!(!fentry_ok, "auto fell back, fentry alone passed:\n{fentry_text}");
        assert!(fentry_text.contains("FAIL ebpf"), "{fentry_text}");
        assert!(
            fentry_text.contains("--syscall-probes fentry: the kernel refused it")
                && fentry_text.contains("program fentry_")
                && fentry_text.contains(" at fentry __sys_"),
            "{fentry_text}"
        );
    }
}
