//! OpenSSH 10's layout (listener sshd, monitor sshd-session, pre-auth child
//! sshd-auth), from Debian 13 in a chroot: the same events as Debian 12's
//! OpenSSH 9.2 for the same logins.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{ChrootSshd, Daemon, Sshd, login, privileged, ssh_key, trixie_root, user, wrong_key};

/// What must match between layouts: (event, user, method, reason, has a
/// client port, executable's file name).
type Fact = (String, String, String, String, bool);

fn scenario(daemon: &mut Daemon, port: u16, name: &'static str, invalid: &str) -> Vec<Fact> {
    let u = user(name);
    login(port, &u, "sleep 0.2");
    daemon.wait_for("close", |e| e["event_name"] == "ssh.session.close" && e["attributes"]["user.name"] == name);
    assert!(!ssh_key(port, u.name, &wrong_key(), "true").status.success());
    assert!(!ssh_key(port, invalid, &wrong_key(), "true").status.success());
    daemon.wait_for("invalid user's failure", |e| {
        e["event_name"] == "ssh.auth.failure" && e["attributes"]["user.name"] == invalid
    });
    daemon.settle(Duration::from_millis(700));
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    daemon
        .settle(Duration::ZERO)
        .iter()
        .filter(|e| e["attributes"]["user.name"] == name || e["attributes"]["user.name"] == invalid)
        .map(|e| {
            let a = &e["attributes"];
            let user = if a["user.name"] == invalid { "<invalid>".to_string() } else { s(&a["user.name"]) };
            (
                s(&e["event_name"]),
                user,
                s(&a["ssh.auth.method"]),
                s(&a["ssh.failure.reason"]),
                a["client.port"].is_i64(),
            )
        })
        .collect()
}

#[test]
fn openssh_10_in_a_trixie_chroot_reports_like_openssh_9() {
    let _guard = privileged();
    let root = trixie_root();
    let chroot = ChrootSshd::start(&root, &["sl-wes"]);

    // Its binaries are not the host's: without --sshd-path it is refused,
    // counted and named once.
    let mut daemon = Daemon::start(&[]);
    login(chroot.port(), &user("sl-wes"), "true");
    assert!(!ssh_key(chroot.port(), "sl-wes", &wrong_key(), "true").status.success());
    daemon.settle(Duration::from_secs(1));
    let reported: Vec<_> =
        daemon.settle(Duration::ZERO).iter().filter(|e| e["attributes"]["user.name"] == "sl-wes").cloned().collect();
    assert!(reported.is_empty(), "the chroot's sshd was reported without being admitted: {reported:?}");
    assert!(daemon.metric("sshlogin_refused_total{reason=\"exe\"}") >= 1, "the refusal is counted");
    let log = daemon.stop();
    let sshd_in_root = root.join("usr/sbin/sshd").display().to_string();
    let named: Vec<&String> = log.iter().filter(|l| l.contains(&sshd_in_root) && l.contains("--sshd-path")).collect();
    assert_eq!(named.len(), 1, "the chroot's sshd is named once, with the flag that admits it: {log:?}");

    let mut args = vec!["--sshd-path".to_string(), "/usr/sbin/sshd".to_string()];
    for p in chroot.sshd_paths() {
        args.extend(["--sshd-path".to_string(), p]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start(&args);
    let trixie = scenario(&mut daemon, chroot.port(), "sl-wes", "sl-nosuch-wes");
    daemon.stop();

    let bookworm = Sshd::start(true, "");
    let mut daemon = Daemon::start(&[]);
    let debian12 = scenario(&mut daemon, bookworm.port, "sl-wes", "sl-nosuch-wes");
    daemon.stop();

    assert_eq!(trixie, debian12, "OpenSSH 10 (left) and 9.2 (right) give the same events");
    let names: Vec<&str> = trixie.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "ssh.session.open",
            "ssh.session.exec",
            "ssh.session.exec",
            "ssh.session.close",
            "ssh.auth.failure",
            "ssh.auth.failure"
        ],
        "the login, its shell and the program the shell runs, then the failures"
    );
}
