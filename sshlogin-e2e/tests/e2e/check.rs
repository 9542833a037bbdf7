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
