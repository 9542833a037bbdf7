//! A local user cannot make sshlogin report a login it did not see sshd make.

use std::{os::unix::process::CommandExt, process::Command, time::Duration};

use crate::harness::{cleared, eventually, is, login, privileged, scene, scratch_dir};

fn forge(as_root: bool, forged_user: &str) {
    // A copy anyone can run, named sshd, outside the sshd paths.
    let exe = cleared(scratch_dir("forger").join("sshd"));
    // The forger is this package's binary, built with the tests.
    std::fs::copy(env!("CARGO_BIN_EXE_sshlogin-e2e-forger"), &exe).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.arg(forged_user);
    if !as_root {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().expect("run the forger");
    assert!(out.status.success(), "forger: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_fake_sshd_cannot_report_logins() {
    let _guard = privileged();
    let (olga, sshd, mut daemon) = scene("sl-olga", "", &[]);

    // Not root: not a member of any sshd tree, so the kernel records
    // nothing of it at all.
    forge(false, "sl-forged-nobody");
    // Root, exec'ing a binary called sshd: a tree, whose executable the
    // daemon checks and refuses, naming it once with the flag that would
    // admit it.
    forge(true, "sl-forged-root");
    eventually("the wrong-executable forgery counted", 20, || {
        daemon.metric("sshlogin_refused_total{reason=\"exe\"}") >= 1
    });
    forge(true, "sl-forged-root-again");

    // A real login right after proves the daemon was watching.
    login(sshd.port, &olga, "true");
    daemon.wait_for("the real login", |e| is(e, "ssh.session.open", olga.name));
    let seen = daemon.settle(Duration::from_millis(500));
    let forged: Vec<_> = seen
        .iter()
        .filter(|e| e["attributes"]["user.name"].as_str().is_some_and(|u| u.starts_with("sl-forged")))
        .collect();
    assert!(forged.is_empty(), "forged records became events: {forged:?}");
    let log = daemon.stop();
    let named: Vec<&String> = log.iter().filter(|l| l.contains("forger/sshd") && l.contains("--sshd-path")).collect();
    assert_eq!(named.len(), 1, "the refused executable is named once, with the flag that admits it: {log:?}");
}
