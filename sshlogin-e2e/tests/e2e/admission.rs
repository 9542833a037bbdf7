//! Who can make sshlogin report what: a remote client that never
//! authenticates, a local user with no privilege, a process renamed sshd.
//! Each test attacks the daemon with a real sshd beside it and checks that
//! every real login is still reported, and nothing else.

use std::{
    collections::HashSet,
    io::Write,
    net::TcpStream,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::harness::{
    Daemon, DaemonizedSshd, PATIENT, Sshd, cleared, eventually, key_client, login, must, privileged, privileged_alone,
    root_script, scene, scratch_dir, ssh_key, ssh_password, user, wrong_key,
};

const OPEN: &str = "ssh.session.open";
const CLOSE: &str = "ssh.session.close";
const FAILURE: &str = "ssh.auth.failure";

fn uid_of(name: &str) -> String {
    String::from_utf8_lossy(&must(Command::new("id").args(["-u", name])).stdout).trim().to_string()
}

/// Events naming `user` or, when given, carrying `uid`.
fn naming<'a>(events: &'a [Value], user: &str, uid: Option<&str>) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            let a = &e["attributes"];
            a["user.name"] == user || uid.is_some_and(|u| a["user.id"] == u)
        })
        .collect()
}

/// Waits until `user` has `opens` opens and as many closes, then a little
/// longer for anything extra; returns (opens, closes).
fn sessions(daemon: &mut Daemon, user: &str, opens: usize) -> (Vec<Value>, Vec<Value>) {
    daemon.eventually(&format!("{opens} opens and closes of {user}"), 60, |daemon| {
        daemon.events_for(OPEN, user).len() >= opens && daemon.events_for(CLOSE, user).len() >= opens
    });
    daemon.settle(Duration::from_secs(1));
    (daemon.events_for(OPEN, user), daemon.events_for(CLOSE, user))
}

/// `n` key logins of `user` that must succeed, each as patient as an
/// overloaded sshd needs.
fn patient_logins(port: u16, user: &crate::harness::User, n: usize) {
    for _ in 0..n {
        let out = key_client(&user.key)
            .args(PATIENT)
            .args(["-p", &port.to_string(), "-l", user.name, "127.0.0.1", "true"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{} could not log in: {}", user.name, String::from_utf8_lossy(&out.stderr));
    }
}

/// The issue's first report. With AuthorizedKeysCommandUser nobody every
/// refused key made a helper that dropped to nobody, and each drop was
/// reported as a session of nobody's.
#[test]
fn authorized_keys_and_principals_commands_open_no_session() {
    let _guard = privileged();
    let zoe = user("sl-zoe");
    let dir = scratch_dir("akc");
    // What the command prints must be readable by its user, nobody.
    let published = crate::harness::root_only_dir().join("sl-zoe.pub");
    std::fs::copy(zoe.key.with_extension("pub"), &published).unwrap();
    std::fs::set_permissions(&published, std::fs::Permissions::from_mode(0o644)).unwrap();
    let akc = root_script(
        "akc",
        &format!(
            "#!/bin/sh\n# sl-zoe's key for sl-zoe, nothing for anyone else\n[ \"$1\" = sl-zoe ] && cat {}\nexit 0\n",
            published.display()
        ),
    );
    let apc = root_script("apc", "#!/bin/sh\n# no principal for anyone\nexit 0\n");
    // A user CA, and a certificate it signed for a principal nobody lists.
    let ca = dir.join("ca");
    let cert_key = dir.join("id_cert");
    for f in [&ca, &cert_key] {
        must(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(cleared(f.clone())));
    }
    must(
        Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca)
            .args(["-I", "zoe@test", "-n", "not-zoe"])
            .arg(cert_key.with_extension("pub")),
    );
    let sshd = Sshd::start(
        true,
        &format!(
            "AuthorizedKeysFile none\nAuthorizedKeysCommand {} %u\nAuthorizedKeysCommandUser nobody\n\
             TrustedUserCAKeys {}\nAuthorizedPrincipalsCommand {} %u\nAuthorizedPrincipalsCommandUser nobody\n",
            akc.display(),
            ca.with_extension("pub").display(),
            apc.display()
        ),
    );
    let mut daemon = Daemon::start(&[]);
    for i in 0..20 {
        let out = if i % 2 == 0 {
            ssh_key(sshd.port, zoe.name, &wrong_key(), "true")
        } else {
            // Only the certificate is offered, not the bare key beside it.
            key_client(&cert_key)
                .args(["-o", "PubkeyAcceptedAlgorithms=ssh-ed25519-cert-v01@openssh.com"])
                .args(["-p", &sshd.port.to_string(), "-l", zoe.name, "127.0.0.1", "true"])
                .output()
                .unwrap()
        };
        assert!(!out.status.success(), "attempt {i} got in: {}", String::from_utf8_lossy(&out.stderr));
    }
    eventually("20 failures of sl-zoe", 30, || {
        daemon.settle(Duration::from_millis(200));
        daemon.events_for(FAILURE, zoe.name).len() >= 20
    });
    login(sshd.port, &zoe, "sleep 0.3");
    let (opens, closes) = sessions(&mut daemon, zoe.name, 1);
    assert_eq!(opens.len(), 1, "exactly one open: {opens:?}");
    assert_eq!(closes.len(), 1, "exactly one close: {closes:?}");
    let uid = uid_of(zoe.name);
    assert_eq!(opens[0]["attributes"]["user.id"], uid.as_str());
    assert_eq!(closes[0]["attributes"]["user.id"], uid.as_str());
    assert_eq!(daemon.events_for(FAILURE, zoe.name).len(), 20, "one failure per refused attempt");
    let seen = daemon.settle(Duration::ZERO);
    let helpers = naming(seen, "nobody", Some("65534"));
    assert!(helpers.is_empty(), "the commands' helpers became events: {helpers:?}");
    daemon.stop();
}

/// A uid nobody uses.
fn free_uid() -> u32 {
    (2900..3900)
        .find(|u| !Command::new("getent").args(["passwd", &u.to_string()]).output().is_ok_and(|o| o.status.success()))
        .unwrap()
}

/// sshd's privilege-separation user gets another uid while the daemon
/// runs; the old one comes back on drop.
struct PrivsepMoved {
    old: String,
}

impl PrivsepMoved {
    fn to(uid: u32) -> PrivsepMoved {
        let old = uid_of("sshd");
        must(Command::new("usermod").args(["-u", &uid.to_string(), "sshd"]));
        PrivsepMoved { old }
    }
}

impl Drop for PrivsepMoved {
    fn drop(&mut self) {
        let _ = Command::new("usermod").args(["-u", &self.old, "sshd"]).status();
    }
}

/// The issue's second report: a daemon that looked up the privilege-
/// separation user's uid at start took the pre-auth child's drop for the
/// session when that uid changed (or the user did not exist yet).
#[test]
fn a_privsep_user_the_daemon_does_not_know_and_a_daemonizing_sshd() {
    let _guard = privileged_alone();
    let abe = user("sl-abe");
    let old_privsep = uid_of("sshd");
    let mut daemon = Daemon::start(&[]);
    let new_privsep = free_uid();
    let _moved = PrivsepMoved::to(new_privsep);
    // Started after the daemon, without -D.
    let sshd = DaemonizedSshd::start(true, "");
    login(sshd.port, &abe, "sleep 0.3");
    let out = ssh_password(sshd.port, abe.name, abe.password, "true");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (opens, closes) = sessions(&mut daemon, abe.name, 2);
    assert_eq!((opens.len(), closes.len()), (2, 2), "one open and one close per login: {opens:?} {closes:?}");
    let uid = uid_of(abe.name);
    for e in opens.iter().chain(&closes) {
        assert_eq!(e["attributes"]["user.id"], uid.as_str(), "{e}");
    }
    let seen = daemon.settle(Duration::ZERO);
    for privsep in [old_privsep.as_str(), &new_privsep.to_string()] {
        let wrong = naming(seen, "sshd", Some(privsep));
        assert!(wrong.is_empty(), "the privilege-separation user ({privsep}) became a session: {wrong:?}");
    }
    drop(sshd);
    daemon.stop();
}

/// A program that floods every probe, as the issue's third report did:
/// named by its first argument, for as many seconds as its second, it
/// loops connect(-1), a forged audit record, a forged syslog line,
/// setresuid to itself and fork + exit, then prints how many of each.
const FLOOD_C: &str = r#"
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    prctl(PR_SET_NAME, argv[1]);
    struct sockaddr_in discard = {.sin_family = AF_INET, .sin_port = htons(9)};
    discard.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int audit = socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    char msg[256] = {0};
    const char *text = "op=PAM:session_open acct=\"sl-forged\" exe=\"/usr/sbin/sshd\" addr=10.9.8.7 terminal=ssh res=success";
    struct nlmsghdr *h = (struct nlmsghdr *)msg;
    h->nlmsg_len = NLMSG_HDRLEN + strlen(text) + 1;
    h->nlmsg_type = 1105;
    h->nlmsg_flags = NLM_F_REQUEST;
    strcpy(msg + NLMSG_HDRLEN, text);
    int log = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un devlog = {.sun_family = AF_UNIX, .sun_path = "/dev/log"};
    connect(log, (struct sockaddr *)&devlog, sizeof devlog);
    const char *line = "<38>sshd[1]: Accepted publickey for sl-forged from 10.9.8.7 port 4242 ssh2";
    uid_t me = getuid();
    time_t end = time(NULL) + atoi(argv[2]);
    long connects = 0, forks = 0;
    while (time(NULL) < end) {
        for (int i = 0; i < 1000; i++, connects++)
            connect(-1, (struct sockaddr *)&discard, sizeof discard);
        sendto(audit, msg, h->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel);
        send(log, line, strlen(line), MSG_DONTWAIT);
        setresuid(me, me, me);
        pid_t child = fork();
        if (child == 0) _exit(0);
        if (child > 0) { waitpid(child, NULL, 0); forks++; }
    }
    printf("%ld %ld\n", connects, forks);
    return 0;
}
"#;

fn flood_binary() -> PathBuf {
    let dir = scratch_dir("flood");
    let source = dir.join("flood.c");
    std::fs::write(&source, FLOOD_C).unwrap();
    let bin = dir.join("flood");
    must(Command::new("cc").args(["-O2", "-o"]).arg(&bin).arg(&source));
    bin
}

/// The issue's third report: two unprivileged processes named sshd looping
/// connect(-1) hid every login for 15 s (20 million ring-buffer drops).
#[test]
fn unprivileged_processes_named_like_sshd_cannot_blind_it() {
    let _guard = privileged_alone();
    let bea = user("sl-bea");
    let flood = flood_binary();
    let sshd = Sshd::start(true, "");
    let mut daemon = Daemon::start(&[]);
    let cpu_before = daemon.cpu_time();
    let flooders: Vec<_> = ["sshd", "sshd-session", "sshd-auth"]
        .iter()
        .flat_map(|name| [name, name])
        .map(|name| {
            Command::new(&flood)
                .args([name, "15"])
                .uid(65534)
                .gid(65534)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the flood")
        })
        .collect();
    let started = Instant::now();
    patient_logins(sshd.port, &bea, 10);
    let logins_took = started.elapsed();
    let mut connects = 0u64;
    for f in flooders {
        let out = f.wait_with_output().unwrap();
        assert!(out.status.success(), "the flood failed");
        let text = String::from_utf8_lossy(&out.stdout);
        connects += text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    assert!(logins_took < Duration::from_secs(15), "the logins did not happen during the flood ({logins_took:?})");
    assert!(connects > 1_000_000, "the flood made only {connects} connects");
    let (opens, closes) = sessions(&mut daemon, bea.name, 10);
    assert_eq!((opens.len(), closes.len()), (10, 10), "every login seen through the flood");
    let cpu = daemon.cpu_time() - cpu_before;
    eprintln!("e2e: 6 flooders made {connects} connect calls; the daemon used {cpu:?} of CPU meanwhile");
    let forged = naming(daemon.settle(Duration::ZERO), "sl-forged", None).len();
    assert_eq!(forged, 0, "the flood's forged records became events");
    daemon.assert_no_kernel_drops(&["ringbuf_full", "read_failed", "members_full"]);
    let log = daemon.stop();
    let dropped: Vec<&String> = log.iter().filter(|l| l.contains("the kernel dropped records")).collect();
    assert!(dropped.is_empty(), "the kernel dropped records: {dropped:?}");
}

/// A setuid-root program run through a symlink named like sshd carries
/// that name and sends PAM's audit records, USER_START included.
#[test]
fn a_symlink_named_sshd_to_a_setuid_program_reports_nothing() {
    let _guard = privileged();
    let (cal, dot) = (user("sl-cal"), user("sl-dot"));
    let sshd = Sshd::start(true, "");
    let mut daemon = Daemon::start(&[]);
    let dir = scratch_dir("symlinks");
    let cal_uid: u32 = uid_of(cal.name).parse().unwrap();
    let as_cal = |program: &Path, args: &[&str], password: &str| {
        let mut child = Command::new(program)
            .args(args)
            .uid(cal_uid)
            .gid(cal_uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        let _ = writeln!(child.stdin.take().unwrap(), "{password}");
        child.wait().unwrap().success()
    };
    let mut ran = Vec::new();
    for (name, target) in [("sshd", "/usr/bin/su"), ("sshd-session", "/usr/bin/sudo")] {
        assert!(
            Path::new(target).exists(),
            "{target} is missing: apt-get install sudo (cargo xtask bootstrap does it)"
        );
        let link = cleared(dir.join(name));
        std::os::unix::fs::symlink(target, &link).unwrap();
        ran.push(link);
    }
    // su to sl-dot with sl-dot's password (a session opens, as su sees it)
    // and with a wrong one; sudo with sl-cal's own and a wrong one.
    assert!(as_cal(&ran[0], &[dot.name, "-c", "true"], dot.password), "su with the right password failed");
    assert!(!as_cal(&ran[0], &[dot.name, "-c", "true"], "wrong"));
    as_cal(&ran[1], &["-S", "-k", "true"], cal.password);
    assert!(!as_cal(&ran[1], &["-S", "-k", "true"], "wrong"));
    // A real login afterwards proves the daemon was watching.
    login(sshd.port, &cal, "true");
    let (opens, _) = sessions(&mut daemon, cal.name, 1);
    assert_eq!(opens.len(), 1, "only the real login: {opens:?}");
    let seen = daemon.settle(Duration::ZERO);
    let mut names: HashSet<&str> = HashSet::new();
    for e in naming(seen, dot.name, None).into_iter().chain(naming(seen, "root", Some("0"))) {
        names.insert(e["event_name"].as_str().unwrap_or("?"));
    }
    assert!(names.is_empty(), "su or sudo under an sshd name became events: {names:?}");
    let cal_events: Vec<&Value> = naming(seen, cal.name, None)
        .into_iter()
        .filter(|e| e["event_name"] != OPEN && e["event_name"] != CLOSE && e["event_name"] != "ssh.session.exec")
        .collect();
    assert!(cal_events.is_empty(), "sudo's records became events: {cal_events:?}");
    daemon.stop();
}

/// A remote client needs no account to hold connections open: 300 of them
/// wait in sshd's pre-authentication while real users log in.
#[test]
fn three_hundred_unauthenticated_connections_hide_no_login() {
    let _guard = privileged_alone();
    let (eve, sshd, mut daemon) = scene("sl-eve", "MaxStartups 1000\nLoginGraceTime 120\n", &[]);
    let held: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", sshd.port)).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            // The client's banner: sshd forks its pre-authentication child.
            s.write_all(b"SSH-2.0-held\r\n").unwrap();
            s
        })
        .collect();
    patient_logins(sshd.port, &eve, 10);
    let (opens, closes) = sessions(&mut daemon, eve.name, 10);
    assert_eq!((opens.len(), closes.len()), (10, 10), "every login seen beside 300 held connections");
    assert!(held.iter().all(|s| s.peer_addr().is_ok()), "the held connections were still open");
    drop(held);
    daemon.stop();
}

/// An sshd installed where no default path points (here, a copy under the
/// test directory): the daemon admits a listener of this host that runs
/// when it starts, and refuses, names and counts one started from another
/// unknown binary afterwards.
#[test]
fn a_running_listener_is_admitted_an_unknown_one_started_later_is_not() {
    let _guard = privileged();
    let (fay, gus) = (user("sl-fay"), user("sl-gus"));
    let copy = |name: &str| {
        let path = cleared(scratch_dir(&format!("elsewhere/{name}")).join("sshd"));
        std::fs::copy("/usr/sbin/sshd", &path).unwrap();
        path.display().to_string()
    };
    let (before, after) = (copy("before"), copy("after"));
    let running = Sshd::start_on("127.0.0.1", &before, true, "");
    let mut daemon = Daemon::start(&[]);
    assert!(
        daemon.log().contains("admitting the binary of a running sshd listener") && daemon.log().contains(&before),
        "the running listener's binary was not admitted:\n{}",
        daemon.log()
    );
    login(running.port, &fay, "true");
    let (opens, _) = sessions(&mut daemon, fay.name, 1);
    assert_eq!(opens.len(), 1);

    let later = Sshd::start_on("127.0.0.1", &after, true, "");
    login(later.port, &gus, "true");
    eventually("the later sshd refused", 20, || daemon.metric("sshlogin_refused_total{reason=\"exe\"}") >= 1);
    daemon.settle(Duration::from_secs(1));
    let reported = naming(daemon.settle(Duration::ZERO), gus.name, None).len();
    assert_eq!(reported, 0, "an sshd started later from an unknown binary was reported");
    let log = daemon.stop();
    let named: Vec<&String> = log.iter().filter(|l| l.contains(&after) && l.contains("--sshd-path")).collect();
    assert_eq!(named.len(), 1, "the refused binary is named once with the flag that admits it: {log:?}");
}
