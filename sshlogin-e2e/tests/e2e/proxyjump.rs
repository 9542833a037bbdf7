//! ProxyJump across two network namespaces, each with its own sshd: the
//! bastion's forward is attributed to the user who made it, and the target
//! sees the bastion as the client.

use std::{fs, process::Command, time::Duration};

use serde_json::Value;

use crate::harness::{Daemon, Sshd, fixture_dir, is, must, privileged, sshd_config, user};

const BASTION_NS: &str = "sljb";
const TARGET_NS: &str = "sljt";
const HOST_IF: &str = "sljh";
const BASTION_OUTSIDE: &str = "10.213.1.2";
const BASTION_INSIDE: &str = "10.213.2.1";
const TARGET: &str = "10.213.2.2";

/// host (10.213.1.1) -- bastion (10.213.1.2 | 10.213.2.1) -- target (10.213.2.2)
struct Net;

impl Net {
    fn up() -> Net {
        Net::down();
        let ip = |args: &str| must(Command::new("ip").args(args.split_whitespace()));
        ip(&format!("netns add {BASTION_NS}"));
        ip(&format!("netns add {TARGET_NS}"));
        ip(&format!("link add {HOST_IF} type veth peer name sljb0 netns {BASTION_NS}"));
        ip(&format!("addr add 10.213.1.1/24 dev {HOST_IF}"));
        ip(&format!("link set {HOST_IF} up"));
        ip(&format!("-n {BASTION_NS} addr add {BASTION_OUTSIDE}/24 dev sljb0"));
        ip(&format!("-n {BASTION_NS} link set sljb0 up"));
        ip(&format!("-n {BASTION_NS} link set lo up"));
        ip(&format!("-n {BASTION_NS} link add sljb1 type veth peer name sljt0 netns {TARGET_NS}"));
        ip(&format!("-n {BASTION_NS} addr add {BASTION_INSIDE}/24 dev sljb1"));
        ip(&format!("-n {BASTION_NS} link set sljb1 up"));
        ip(&format!("-n {TARGET_NS} addr add {TARGET}/24 dev sljt0"));
        ip(&format!("-n {TARGET_NS} link set sljt0 up"));
        ip(&format!("-n {TARGET_NS} link set lo up"));
        // Name look-ups from the bastion go to a resolver that is not there.
        let etc = format!("/etc/netns/{BASTION_NS}");
        fs::create_dir_all(&etc).unwrap();
        fs::write(format!("{etc}/resolv.conf"), "nameserver 10.213.1.1\noptions timeout:1 attempts:1\n").unwrap();
        Net
    }

    fn down() {
        for args in [format!("netns del {BASTION_NS}"), format!("netns del {TARGET_NS}"), format!("link del {HOST_IF}")]
        {
            let _ = Command::new("ip").args(args.split_whitespace()).stderr(std::process::Stdio::null()).status();
        }
        let _ = fs::remove_dir_all(format!("/etc/netns/{BASTION_NS}"));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Net::down();
    }
}

fn sshd_in(ns: &str, listen: &str) -> Sshd {
    let config = fixture_dir().join(format!("sshd_config_{ns}"));
    let host_key = fixture_dir().join("hostkey").display().to_string();
    fs::write(&config, sshd_config(listen, 22, &host_key, true, "AllowTcpForwarding yes")).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "/usr/sbin/sshd", "-D", "-f"]).arg(&config);
    let ns = ns.to_string();
    Sshd::launch(cmd, 22, config, move || {
        let out = Command::new("ip").args(["netns", "exec", &ns, "ss", "-Hltn", "sport = :22"]).output();
        out.is_ok_and(|o| !o.stdout.is_empty())
    })
}

fn is_forward(e: &Value, user: &str) -> bool {
    e["event_name"] == "ssh.forward" && e["attributes"]["user.name"] == user
}

#[test]
fn a_proxyjump_hop_is_attributed_to_its_user() {
    let _guard = privileged();
    let quinn = user("sl-quinn");
    let _net = Net::up();
    let _bastion = sshd_in(BASTION_NS, BASTION_OUTSIDE);
    let _target = sshd_in(TARGET_NS, TARGET);
    let client_config = fixture_dir().join("ssh_config_proxyjump");
    fs::write(
        &client_config,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
             BatchMode yes\n  LogLevel ERROR\n  ConnectTimeout 10\n",
            quinn.key.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&[]);

    let out = Command::new("ssh")
        .arg("-F")
        .arg(&client_config)
        .args(["-J", &format!("{}@{BASTION_OUTSIDE}", quinn.name), &format!("{}@{TARGET}", quinn.name), "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh -J failed: {}", String::from_utf8_lossy(&out.stderr));

    let on = |server: &'static str| {
        move |e: &Value| is(e, "ssh.session.open", "sl-quinn") && e["attributes"]["server.address"] == server
    };
    let bastion_open = daemon.wait_for("the session on the bastion", on(BASTION_OUTSIDE));
    assert_eq!(bastion_open["attributes"]["client.address"], "10.213.1.1");
    let forward = daemon.wait_for("the bastion's forward", |e| is_forward(e, quinn.name));
    let f = &forward["attributes"];
    assert_eq!(f["ssh.forward.address"], TARGET);
    assert_eq!(f["ssh.forward.port"], 22);
    assert_eq!(
        f["ssh.connection.id"], bastion_open["attributes"]["ssh.connection.id"],
        "the hop belongs to the bastion session"
    );
    assert_eq!(f["client.address"], "10.213.1.1");
    assert_eq!(forward["severity_text"], "INFO");
    let target_open = daemon.wait_for("the session on the target", on(TARGET));
    assert_eq!(target_open["attributes"]["client.address"], BASTION_INSIDE, "the target sees the bastion");
    // The hop's own end is the target's client: a backend joins the two.
    assert_eq!(f["network.local.address"], BASTION_INSIDE, "{forward}");
    assert_eq!(f["network.local.port"], target_open["attributes"]["client.port"], "{forward}\n{target_open}");
    // Both hops on hosts this daemon watches: the target names the hop.
    assert_eq!(
        target_open["attributes"]["ssh.jump.connection.id"], bastion_open["attributes"]["ssh.connection.id"],
        "{target_open}"
    );
    assert!(bastion_open["attributes"].get("ssh.jump.connection.id").is_none(), "the first hop came from no forward");

    // A name the bastion cannot resolve: a DNS look-up, never a forward.
    let out = Command::new("ssh")
        .arg("-F")
        .arg(&client_config)
        .args(["-W", "no-such-host.invalid:22", &format!("{}@{BASTION_OUTSIDE}", quinn.name)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    daemon.settle(Duration::from_secs(2));
    let forwards: Vec<Value> =
        daemon.settle(Duration::ZERO).iter().filter(|e| is_forward(e, quinn.name)).cloned().collect();
    assert_eq!(forwards.len(), 1, "only the ProxyJump hop is a forward: {forwards:?}");
    daemon.stop();
}
