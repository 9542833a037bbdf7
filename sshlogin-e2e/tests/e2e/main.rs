//! End-to-end: the daemon loaded for real, a real sshd, real clients.
//! Needs root; fails (does not skip) where that or eBPF is missing. With
//! SSHLOGIN_SKIP_PRIVILEGED=1 `cargo xtask test` does not run them and
//! counts each as ignored; run by hand with it, each fails saying so. The
//! daemon is the binary `SSHLOGIN_BIN` names, which `cargo xtask test`
//! builds and sets.

mod admission;
mod check;
mod durability;
mod facts;
mod fleet;
mod forgery;
mod layouts;
mod otlp;
mod proxyjump;
mod session;

use std::time::Duration;

use sshlogin_e2e::harness::{
    self, Daemon, Sshd, logged, login, privileged, scene, send_audit, ssh_key, ssh_password, user, wrong_key,
};

const OPEN: &str = "ssh.session.open";
const CLOSE: &str = "ssh.session.close";
const FAILURE: &str = "ssh.auth.failure";

#[test]
fn key_login_opens_one_session_and_logout_closes_it() {
    let _guard = privileged();
    let (alice, sshd, mut daemon) = scene("sl-alice", "", &["--stdout"]);
    login(sshd.port, &alice, "sleep 1.2");

    let open = daemon.wait_event(OPEN, alice.name);
    let close = daemon.wait_event(CLOSE, alice.name);
    let a = &open["attributes"];
    assert_eq!(a["client.address"], "127.0.0.1");
    assert_eq!(a["ssh.auth.method"], "publickey");
    assert_eq!(a["ssh.terminal"], "ssh");
    let uid = std::process::Command::new("id").args(["-u", alice.name]).output().unwrap();
    assert_eq!(a["user.id"], String::from_utf8_lossy(&uid.stdout).trim());
    assert!(a["process.pid"].as_i64().unwrap() > 1);
    assert!(a["log.record.uid"].as_str().is_some_and(|s| s.len() == 36));
    assert_eq!(open["severity_text"], "INFO");
    assert!(open["body"].as_str().unwrap().starts_with("sl-alice opened a session from 127.0.0.1"));
    assert_eq!(open["resource"]["service.name"], "sshlogin");
    // The port sshd itself logged for this login.
    let port = a["client.port"].as_i64().expect("client.port");
    let accepted = logged(&format!("Accepted publickey for {} from 127.0.0.1 port {port} ", alice.name));
    assert!(!accepted.is_empty() || logged("").is_empty(), "sshd logged no login from port {port}");

    let c = &close["attributes"];
    assert_eq!(c["ssh.connection.id"], a["ssh.connection.id"]);
    assert_eq!(c["process.pid"], a["process.pid"]);
    let ms = c["ssh.session.duration_ms"].as_i64().expect("duration");
    assert!((1_100..20_000).contains(&ms), "implausible session duration {ms} ms");
    assert!(close["time_unix_nano"].as_u64() > open["time_unix_nano"].as_u64());

    daemon.settle(Duration::from_millis(500));
    assert_eq!(daemon.events_for(OPEN, alice.name).len(), 1, "exactly one open");
    assert_eq!(daemon.events_for(CLOSE, alice.name).len(), 1, "exactly one close");
    assert!(daemon.events_for(FAILURE, alice.name).is_empty(), "a good key is no failure");
    daemon.stop();
}

#[test]
fn wrong_key_is_an_authentication_failure() {
    let _guard = privileged();
    let (dave, sshd, mut daemon) = scene("sl-dave", "", &[]);
    let out = ssh_key(sshd.port, dave.name, &wrong_key(), "true");
    assert!(!out.status.success(), "the wrong key was accepted");
    let e = daemon.wait_event(FAILURE, dave.name);
    assert_eq!(e["severity_text"], "WARN");
    assert_eq!(e["attributes"]["client.address"], "127.0.0.1");
    assert!(e["attributes"]["ssh.failure.reason"].is_string());
    daemon.settle(Duration::from_millis(500));
    assert!(daemon.events_for(OPEN, dave.name).is_empty());
    daemon.stop();
}

#[test]
fn invalid_user_is_a_failure_naming_the_user() {
    let _guard = privileged();
    let name = format!("sl-nobody{}", std::process::id() % 10_000);
    let sshd = Sshd::start(true, "");
    let mut daemon = Daemon::start(&[]);
    let out = ssh_key(sshd.port, &name, &wrong_key(), "true");
    assert!(!out.status.success());
    let e = daemon.wait_event(FAILURE, &name);
    assert_eq!(e["attributes"]["ssh.failure.reason"], "invalid_user");
    assert!(e["attributes"].get("user.id").is_none(), "an invalid user has no uid");
    daemon.settle(Duration::from_millis(1500));
    assert_eq!(daemon.events_for(FAILURE, &name).len(), 1, "one key offered by an invalid user is one failure");
    daemon.stop();
}

#[test]
fn wrong_password_is_an_authentication_failure() {
    let _guard = privileged();
    let (bob, sshd, mut daemon) = scene("sl-bob", "", &[]);
    let out = ssh_password(sshd.port, bob.name, "not-the-password", "true");
    assert!(!out.status.success());
    let e = daemon.wait_event(FAILURE, bob.name);
    let a = &e["attributes"];
    assert_eq!(a["ssh.auth.method"], "password");
    assert_eq!(a["ssh.failure.reason"], "wrong_password");
    assert_eq!(a["client.address"], "127.0.0.1");
    assert!(a["client.port"].as_i64().is_some());
    // The right password then opens a session.
    let out = ssh_password(sshd.port, bob.name, bob.password, "true");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let open = daemon.wait_event(OPEN, bob.name);
    assert_eq!(open["attributes"]["ssh.auth.method"], "password");
    daemon.settle(Duration::from_millis(500));
    assert_eq!(daemon.events_for(FAILURE, bob.name).len(), 1, "one wrong password is one failure");
    daemon.stop();
}

#[test]
fn without_pam_the_privilege_drop_opens_the_session() {
    let _guard = privileged();
    let carol = user("sl-carol");
    let sshd = Sshd::start(false, "");
    let mut daemon = Daemon::start(&[]);
    login(sshd.port, &carol, "sleep 0.3");
    let open = daemon.wait_event(OPEN, carol.name);
    let a = &open["attributes"];
    assert!(a.get("ssh.terminal").is_none(), "no PAM, so no PAM terminal: {a}");
    assert_eq!(a["client.address"], "127.0.0.1");
    assert!(a["user.id"].is_string());
    let close = daemon.wait_event(CLOSE, carol.name);
    assert!(close["attributes"]["ssh.session.duration_ms"].as_i64().unwrap() >= 300);
    daemon.settle(Duration::from_millis(500));
    assert_eq!(daemon.events_for(OPEN, carol.name).len(), 1);
    daemon.stop();
}

#[test]
fn audit_records_from_other_programs_are_ignored() {
    let _guard = privileged();
    let (erin, sshd, mut daemon) = scene("sl-erin", "", &[]);
    // This test binary is root but not sshd: what it sends must not count.
    let forged = "sl-forged";
    for (ty, op) in [(1105u16, "PAM:session_open"), (1106, "PAM:session_close")] {
        send_audit(
            ty,
            &format!(
                "op={op} grantors=pam_unix acct=\"{forged}\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=success"
            ),
        );
    }
    send_audit(
        1112,
        &format!(
            "op=login acct=\"{forged}\" exe=\"/usr/sbin/sshd\" hostname=? addr=127.0.0.1 terminal=sshd res=failed"
        ),
    );
    // A real login afterwards proves the daemon was watching.
    login(sshd.port, &erin, "true");
    daemon.wait_event(OPEN, erin.name);
    daemon.settle(Duration::from_millis(500));
    let leaked: Vec<_> =
        daemon.settle(Duration::ZERO).iter().filter(|e| e["attributes"]["user.name"] == forged).collect();
    assert!(leaked.is_empty(), "forged records became events: {leaked:?}");
    daemon.stop();
}

/// systemd's Type=notify: READY=1 only once the probes are attached, so
/// sshd (ordered after sshlogin) never takes a login the probes miss;
/// STOPPING=1 when it stops.
#[test]
fn the_service_manager_hears_ready_once_the_probes_are_attached() {
    let _guard = privileged();
    let path = harness::scratch_dir("notify").join("socket");
    let _ = std::fs::remove_file(&path);
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let daemon = Daemon::start_with_env(&[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0; 64];
    let n = sock.recv(&mut buf).expect("READY=1 within 60 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(daemon.log().contains("probes attached"), "ready before the probes: {}", daemon.log());
    daemon.stop();
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
}

/// Three wrong passwords, then the right one, from one client address: the
/// open says so (`ssh.auth.prior_failures`), and names the users tried.
#[test]
fn a_login_after_failures_says_how_many_came_first() {
    let _guard = privileged();
    let (jon, sshd, mut daemon) = scene("sl-jon", "", &[]);
    // An address of its own: other tests fail logins from 127.0.0.1.
    let from = ["-b", "127.0.0.77"];
    for _ in 0..3 {
        let out = harness::ssh_password_with(&from, sshd.port, jon.name, "not-the-password", "true");
        assert!(!out.status.success());
    }
    daemon.eventually("three failures", 20, |d| d.events_for(FAILURE, jon.name).len() >= 3);
    let out = harness::ssh_password_with(&from, sshd.port, jon.name, jon.password, "true");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let open = daemon.wait_event(OPEN, jon.name);
    let a = &open["attributes"];
    assert_eq!(a["client.address"], "127.0.0.77");
    assert_eq!(a["ssh.auth.prior_failures"], 3, "{open}");
    assert_eq!(a["ssh.auth.prior_failure_users"], serde_json::json!(["sl-jon"]));
    daemon.stop();
}
