//! Every fact an auditor asks for: ports, method, key and certificate,
//! audit ids, IPv6, every kind of session, every binary name.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::harness::{
    Daemon, Sshd, cleared, key_client, logged, login, must, privileged, scene, scratch_dir, sftp_batch, ssh_key,
    ssh_key_to, user, wrong_key,
};

const OPEN: &str = "ssh.session.open";
const CLOSE: &str = "ssh.session.close";
const FAILURE: &str = "ssh.auth.failure";

/// `ssh-keygen -lf`'s fingerprint (second field) of a public key file.
fn fingerprint(pub_key: &std::path::Path) -> String {
    let out = must(Command::new("ssh-keygen").arg("-lf").arg(pub_key));
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_string()
}

fn uid(name: &str) -> String {
    String::from_utf8_lossy(&must(Command::new("id").args(["-u", name])).stdout).trim().to_string()
}

#[test]
fn a_key_login_names_its_key_ports_and_audit_session() {
    let _guard = privileged();
    let (rita, sshd, mut daemon) = scene("sl-rita", "", &[]);
    login(sshd.port, &rita, "sleep 0.3");
    let open = daemon.wait_event(OPEN, rita.name);
    let a = &open["attributes"];
    assert_eq!(a["ssh.auth.method"], "publickey");
    assert_eq!(a["ssh.key.type"], "ED25519");
    assert_eq!(a["ssh.key.fingerprint"], fingerprint(&rita.key.with_extension("pub")));
    let port = a["client.port"].as_i64().unwrap();
    if !logged("").is_empty() {
        assert_eq!(
            logged(&format!("for {} from 127.0.0.1 port {port} ssh2", rita.name)).len(),
            1,
            "the port sshd logged"
        );
    }
    assert_eq!(a["server.address"], "127.0.0.1");
    assert_eq!(a["server.port"], sshd.port);
    assert_eq!(a["linux.audit.login_uid"], uid(rita.name));
    assert!(a["linux.audit.session_id"].as_str().unwrap().parse::<u32>().is_ok(), "{a}");
    assert!(a["process.parent_pid"].as_i64().unwrap() > 1);
    assert_eq!(a["process.executable.path"], "/usr/sbin/sshd");
    let close = daemon.wait_event(CLOSE, rita.name);
    for key in ["ssh.connection.id", "linux.audit.session_id", "client.port", "server.port"] {
        assert_eq!(close["attributes"][key], a[key], "{key} is the same at close");
    }
    daemon.stop();
}

#[test]
fn a_certificate_login_names_the_certificate_and_its_ca() {
    let _guard = privileged();
    let sam = user("sl-sam");
    let dir = scratch_dir("userca");
    let ca = cleared(dir.join("ca"));
    must(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "test user CA", "-f"]).arg(&ca));
    let key = cleared(dir.join("id_sam"));
    must(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
    must(
        Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca)
            .args(["-I", "sam@test", "-n", sam.name, "-z", "4242"])
            .arg(key.with_extension("pub")),
    );
    let sshd = Sshd::start(true, &format!("TrustedUserCAKeys {}", ca.with_extension("pub").display()));
    let mut daemon = Daemon::start(&[]);
    let out = key_client(&key)
        .args(["-o", &format!("CertificateFile={}-cert.pub", key.display())])
        .args(["-p", &sshd.port.to_string(), "-l", sam.name, "127.0.0.1", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let open = daemon.wait_event(OPEN, sam.name);
    let a = &open["attributes"];
    assert_eq!(a["ssh.key.type"], "ED25519-CERT");
    assert_eq!(a["ssh.key.fingerprint"], fingerprint(&key.with_extension("pub")));
    assert_eq!(a["ssh.cert.id"], "sam@test");
    assert_eq!(a["ssh.cert.serial"], 4242);
    assert_eq!(a["ssh.cert.ca.type"], "ED25519");
    assert_eq!(a["ssh.cert.ca.fingerprint"], fingerprint(&ca.with_extension("pub")));
    daemon.stop();
}

#[test]
fn an_ipv6_login_over_loopback() {
    let _guard = privileged();
    let tess = user("sl-tess");
    let sshd = Sshd::start_on("::1", "/usr/sbin/sshd", true, "");
    let mut daemon = Daemon::start(&[]);
    let out = ssh_key_to("::1", sshd.port, tess.name, &tess.key, "true");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let open = daemon.wait_event(OPEN, tess.name);
    assert_eq!(open["attributes"]["client.address"], "::1");
    assert_eq!(open["attributes"]["server.address"], "::1");
    assert!(open["body"].as_str().unwrap().contains("from ::1 port"));
    let out = ssh_key_to("::1", sshd.port, tess.name, &wrong_key(), "true");
    assert!(!out.status.success());
    let failure = daemon.wait_event(FAILURE, tess.name);
    assert_eq!(failure["attributes"]["client.address"], "::1");
    assert!(
        failure["attributes"]["client.port"].as_i64().is_some(),
        "the port of a rejected key comes from the socket"
    );
    daemon.stop();
}

#[test]
fn commands_sftp_and_forward_only_sessions_open_and_close() {
    let _guard = privileged();
    let (uma, sshd, mut daemon) = scene("sl-uma", "", &[]);
    let count = |daemon: &Daemon, name: &str| daemon.events_for(name, uma.name).len();

    login(sshd.port, &uma, "true");
    daemon.wait_event(CLOSE, uma.name);

    let out = sftp_batch(sshd.port, &uma, "pwd\nls\n");
    assert!(out.status.success(), "sftp: {}", String::from_utf8_lossy(&out.stderr));
    daemon.eventually("sftp's open and close", 20, |daemon| count(daemon, CLOSE) >= 2);

    let mut forward_only = key_client(&uma.key)
        .args(["-N", "-p", &sshd.port.to_string(), "-l", uma.name, "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    daemon.eventually("ssh -N's open", 20, |daemon| count(daemon, OPEN) >= 3);
    forward_only.kill().unwrap();
    forward_only.wait().unwrap();
    daemon.eventually("ssh -N's close", 20, |daemon| count(daemon, CLOSE) >= 3);
    daemon.settle(Duration::from_millis(500));
    assert_eq!((count(&daemon, OPEN), count(&daemon, CLOSE)), (3, 3));
    let ids: std::collections::HashSet<&Value> =
        daemon.settle(Duration::ZERO).iter().map(|e| &e["attributes"]["ssh.connection.id"]).collect();
    assert!(ids.len() >= 3, "three connections, three ids");
    daemon.stop();
}

#[test]
fn sshd_installed_as_sshd_session_is_reported_the_same() {
    let _guard = privileged();
    let vic = user("sl-vic");
    let copy = cleared(scratch_dir("bin").join("sshd-session"));
    std::fs::copy("/usr/sbin/sshd", &copy).unwrap();
    let sshd = Sshd::start_on("127.0.0.1", copy.to_str().unwrap(), true, "");
    let mut daemon = Daemon::start(&["--sshd-path", copy.to_str().unwrap(), "--sshd-path", "/usr/sbin/sshd"]);
    login(sshd.port, &vic, "true");
    let open = daemon.wait_event(OPEN, vic.name);
    assert_eq!(open["attributes"]["ssh.auth.method"], "publickey");
    daemon.wait_event(CLOSE, vic.name);
    let out = ssh_key(sshd.port, vic.name, &wrong_key(), "true");
    assert!(!out.status.success());
    daemon.wait_event(FAILURE, vic.name);
    daemon.stop();
}

#[test]
fn raw_syscall_probes_see_the_same_logins() {
    let _guard = privileged();
    let (xena, sshd, mut daemon) = scene("sl-xena", "", &["--syscall-probes", "raw"]);
    login(sshd.port, &xena, "true");
    let open = daemon.wait_event(OPEN, xena.name);
    assert_eq!(open["attributes"]["ssh.auth.method"], "publickey");
    daemon.wait_event(CLOSE, xena.name);
    let out = crate::harness::ssh_password(sshd.port, xena.name, "not-it", "true");
    assert!(!out.status.success());
    let failure = daemon.wait_event(FAILURE, xena.name);
    assert_eq!(failure["attributes"]["ssh.failure.reason"], "wrong_password");
    // The raw probe was the one attached.
    daemon.stop_saying("syscall_probes=raw");
}
