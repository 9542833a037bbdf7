//! A local user cannot make sshlogin report a login it did not see sshd make.

use std::{os::unix::process::CommandExt, process::Command, time::Duration};

use crate::harness::{Daemon, Sshd, eventually, free_port, is, login, metric, privileged, send_audit, user};

const FORGE_VAR: &str = "SSHLOGIN_E2E_FORGE_AS";

/// Not a test: the body of the forger, run by `a_fake_sshd_cannot_report_logins`
/// in a copy of this test binary. It calls itself sshd and sends what sshd
/// and PAM send for a login, for a user that never logged in.
#[test]
fn forger() {
    let Ok(user) = std::env::var(FORGE_VAR) else { return };
    // SAFETY: prctl with a NUL-terminated name; renames this thread, whose
    // comm the probes see.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"sshd".as_ptr()) };
    let pid = std::process::id();
    for (ty, op) in [(1101u16, "PAM:accounting"), (1105, "PAM:session_open")] {
        send_audit(
            ty,
            &format!(
                "op={op} grantors=pam_unix acct=\"{user}\" exe=\"/usr/sbin/sshd\" hostname=10.9.8.7 addr=10.9.8.7 terminal=ssh res=success"
            ),
        );
    }
    let line = format!(
        "<38>Nov 26 17:00:00 sshd[{pid}]: Accepted publickey for {user} from 10.9.8.7 port 4242 ssh2: ED25519 SHA256:forged"
    );
    let log = std::os::unix::net::UnixDatagram::unbound().unwrap();
    if log.connect("/dev/log").is_ok() {
        // send(2), as glibc's syslog(3) does (std's send is a write(2)).
        // SAFETY: a connected socket and a buffer that outlives the call.
        unsafe { libc::send(std::os::fd::AsRawFd::as_raw_fd(&log), line.as_ptr().cast(), line.len(), 0) };
    }
    // Stay alive so /proc still shows what this process really is.
    std::thread::sleep(Duration::from_secs(2));
}

fn forge(as_root: bool, forged_user: &str) {
    // A copy anyone can run, named sshd, outside the sshd paths.
    let dir = std::env::temp_dir().join("sshlogin-e2e-forger");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exe = dir.join("sshd");
    let _ = std::fs::remove_file(&exe);
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.args(["--exact", "forgery::forger", "--nocapture"]).env(FORGE_VAR, forged_user);
    if !as_root {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().expect("run the forger");
    assert!(out.status.success(), "forger: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_fake_sshd_cannot_report_logins() {
    let Some(_guard) = privileged() else { return };
    let olga = user("sl-olga");
    let sshd = Sshd::start(true, "");
    let metrics = free_port();
    let listen = format!("127.0.0.1:{metrics}");
    let mut daemon = Daemon::start(&["--metrics-listen", &listen]);

    // Not root: not a member of any sshd tree, so the kernel records
    // nothing of it at all.
    forge(false, "sl-forged-nobody");
    // Root, exec'ing a binary called sshd: a tree, whose executable the
    // daemon checks and refuses, naming it once with the flag that would
    // admit it.
    forge(true, "sl-forged-root");
    eventually("the wrong-executable forgery counted", 20, || {
        metric(metrics, "sshlogin_refused_total{reason=\"exe\"}") >= 1
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
    let named: Vec<&String> =
        log.iter().filter(|l| l.contains("sshlogin-e2e-forger/sshd") && l.contains("--sshd-path")).collect();
    assert_eq!(named.len(), 1, "the refused executable is named once, with the flag that admits it: {log:?}");
}
