//! What happens inside a session (issue 15): every program it runs, its
//! sudo and su, its file transfers, each tied to the connection's open; a
//! session running thousands of programs costs no login its records; and
//! nothing outside a session, or forged from inside one, becomes an event.

use std::{
    collections::HashSet,
    os::unix::fs::PermissionsExt,
    process::{Command, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::harness::{
    Daemon, SFTP_SERVER, SUDO_USER, Sshd, User, cleared, key_client, privileged, privileged_alone, root_refuses_su,
    root_script, scene, scratch_dir, sftp_batch, ssh_key, sudoers, uid_of, user,
};

use super::{CLOSE, OPEN};

const EXEC: &str = "ssh.session.exec";
const ESCALATION: &str = "ssh.session.escalation";
const ACTIVITY: &str = "ssh.session.activity.summary";

/// The documented defaults of `[session]`: execs per second per session,
/// and the bucket they refill.
const RATE: u64 = 50;
const BURST: u64 = 500;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `client` (a login of `user`, whose logins in this test are this
/// test's alone and one at a time) and waits for its open; returns what the
/// client said and the open's `ssh.connection.id`.
fn connection(daemon: &mut Daemon, user: &str, client: impl FnOnce() -> Output) -> (Output, Value) {
    let before = daemon.events_for(OPEN, user).len();
    let out = client();
    assert_ne!(out.status.code(), Some(255), "{user} could not log in: {}", stderr(&out));
    daemon.eventually(&format!("the open of {user}'s login"), 20, |d| d.events_for(OPEN, user).len() > before);
    let id = daemon.events_for(OPEN, user)[before]["attributes"]["ssh.connection.id"].clone();
    assert!(!id.is_null(), "an open without ssh.connection.id");
    (out, id)
}

/// A key login of `user` running `command`, as [`connection`].
fn session(daemon: &mut Daemon, port: u16, user: &User, command: &str) -> (Output, Value) {
    connection(daemon, user.name, || ssh_key(port, user.name, &user.key, command))
}

/// Whether `e` is an event `name` of the connection `id`.
fn of(e: &Value, name: &str, id: &Value) -> bool {
    e["event_name"] == name && e["attributes"]["ssh.connection.id"] == *id
}

/// Whether `e`'s executable is `program`: that path, or a path ending in
/// `/program`.
fn runs(e: &Value, program: &str) -> bool {
    e["attributes"]["process.executable.path"]
        .as_str()
        .is_some_and(|p| p == program || p.ends_with(&format!("/{program}")))
}

/// The exec events of `program` in the connection `id`.
fn execs(daemon: &Daemon, id: &Value, program: &str) -> Vec<Value> {
    daemon.seen().iter().filter(|e| of(e, EXEC, id) && runs(e, program)).cloned().collect()
}

/// Every event `name` of the connection `id`.
fn all_of(daemon: &Daemon, name: &str, id: &Value) -> Vec<Value> {
    daemon.seen().iter().filter(|e| of(e, name, id)).cloned().collect()
}

/// Waits for the escalation of the connection `id` by `method` with `result`.
fn escalation(daemon: &mut Daemon, id: &Value, method: &str, result: &str) -> Value {
    daemon.wait_for(&format!("a {method} escalation {result} in connection {id}"), |e| {
        of(e, ESCALATION, id)
            && e["attributes"]["ssh.escalation.method"] == method
            && e["attributes"]["ssh.escalation.result"] == result
    })
}

/// The issue's first test: `ls` and `id` run by a command are exec events
/// of the connection whose open came first, as its user, with their argv;
/// the shell sshd started for the command is one too, and their parent.
#[test]
fn the_programs_a_session_runs_are_exec_events_of_its_connection() {
    let _guard = privileged();
    let (pia, sshd, mut daemon) = scene("sl-pia", "", &[]);
    let uid = uid_of(pia.name);
    let (out, id) = session(&mut daemon, sshd.port, &pia, "ls /; id");
    assert!(out.status.success(), "{}", stderr(&out));
    daemon.eventually("exec events of ls and id", 20, |d| {
        !execs(d, &id, "ls").is_empty() && !execs(d, &id, "id").is_empty()
    });
    daemon.wait_event(CLOSE, pia.name);
    daemon.settle(Duration::from_millis(500));
    let open = daemon.events_for(OPEN, pia.name).remove(0);
    let (ls, id_exec) = (execs(&daemon, &id, "ls"), execs(&daemon, &id, "id"));
    assert_eq!((ls.len(), id_exec.len()), (1, 1), "one exec event each: {ls:?} {id_exec:?}");
    let (ls, id_exec) = (&ls[0], &id_exec[0]);
    for (e, argv) in [(ls, json!(["ls", "/"])), (id_exec, json!(["id"]))] {
        let a = &e["attributes"];
        assert_eq!(a["process.command_args"], argv, "{e}");
        assert_eq!(a["process.user.id"], uid, "the effective uid: {e}");
        assert_eq!(a["process.real_user.id"], uid, "{e}");
        assert_eq!(a["user.name"], pia.name, "{e}");
        assert_eq!(a["client.address"], "127.0.0.1", "{e}");
        assert_eq!(a["client.port"], open["attributes"]["client.port"], "{e}");
        assert!(a["process.pid"].as_i64().is_some_and(|p| p > 1), "{e}");
        assert!(a["process.parent_pid"].as_i64().is_some_and(|p| p > 1), "{e}");
        assert!(a.get("ssh.exec.args_truncated").is_none(), "{e}");
        assert!(a.get("ssh.subsystem").is_none(), "{e}");
    }
    // sshd runs the command as `bash -c 'ls /; id'`: ls is its child, id
    // its child or (bash's last command) itself.
    let shell = execs(&daemon, &id, "bash")
        .into_iter()
        .find(|e| e["attributes"]["process.command_args"] == json!(["bash", "-c", "ls /; id"]))
        .unwrap_or_else(|| panic!("no exec event of the command's shell: {:?}", all_of(&daemon, EXEC, &id)));
    let shell_pid = &shell["attributes"]["process.pid"];
    assert_eq!(ls["attributes"]["process.parent_pid"], *shell_pid, "ls {ls} shell {shell}");
    let ia = &id_exec["attributes"];
    assert!(ia["process.pid"] == *shell_pid || ia["process.parent_pid"] == *shell_pid, "id {id_exec} shell {shell}");
    daemon.stop();
}

/// The issue's second test. sudo with the NOPASSWD rule succeeds; sudo
/// with a wrong password, sudo for a command no rule allows, and su to root
/// with a wrong password fail; each is an escalation of its own connection
/// naming root as the target.
///
/// What the programs send on Debian 12 (sudo 1.9.13, util-linux su):
/// `sudo -n true` USER_ACCT acct="sl-oli", USER_CMD cmd="true" res=success,
/// CRED_REFR and USER_START acct="root"; a wrong password two USER_AUTH
/// acct="sl-oli" res=failed (the password, then the end of stdin) and a
/// USER_CMD res=failed: no record names root, the target is sudo's
/// default. `sudo -n whoami` only a USER_CMD res=failed and a USER_ERR
/// acct="?". su's wrong password one USER_AUTH acct="root" res=failed,
/// from a process whose real uid is the user's and effective uid root.
#[test]
fn sudo_and_su_in_a_session_are_escalations_that_succeed_or_fail() {
    let _guard = privileged();
    sudoers();
    root_refuses_su();
    let (oli, sshd, mut daemon) = scene(SUDO_USER, "", &[]);
    let uid = uid_of(oli.name);

    let (out, ok) = session(&mut daemon, sshd.port, &oli, "sudo -n true");
    assert!(out.status.success(), "sudo -n true: {}", stderr(&out));
    let e = escalation(&mut daemon, &ok, "sudo", "success");
    let a = &e["attributes"];
    assert_eq!(a["ssh.escalation.user.name"], "root", "{e}");
    if let Some(target) = a.get("ssh.escalation.user.id") {
        assert_eq!(*target, 0, "{e}");
    }
    assert!(a["ssh.escalation.program"].as_str().is_some_and(|p| p.ends_with("/sudo")), "{e}");
    if let Some(command) = a.get("ssh.escalation.command") {
        // sudo's USER_CMD says cmd="true": the command as it was typed.
        assert!(*command == "true" || *command == "/usr/bin/true", "{e}");
    }
    assert_eq!(a["user.name"], oli.name, "{e}");
    assert_eq!(a["client.address"], "127.0.0.1", "{e}");
    assert!(a["process.pid"].as_i64().is_some_and(|p| p > 1), "{e}");

    // The rule for id asks for sl-oli's password.
    let (out, wrong) = session(&mut daemon, sshd.port, &oli, "echo wrong | sudo -S id");
    assert!(!out.status.success(), "sudo took a wrong password: {}", String::from_utf8_lossy(&out.stdout));
    let e = escalation(&mut daemon, &wrong, "sudo", "failure");
    assert_eq!(e["attributes"]["ssh.escalation.user.name"], "root", "{e}");
    assert!(e["attributes"]["ssh.escalation.program"].as_str().is_some_and(|p| p.ends_with("/sudo")), "{e}");

    // No rule allows whoami: sudo -n refuses it without asking for a
    // password (its only records: USER_CMD res=failed and a USER_ERR).
    let (out, refused) = session(&mut daemon, sshd.port, &oli, "sudo -n whoami");
    assert!(!out.status.success(), "sudo ran whoami: {}", String::from_utf8_lossy(&out.stdout));
    let e = escalation(&mut daemon, &refused, "sudo", "failure");
    assert_eq!(e["attributes"]["ssh.escalation.user.name"], "root", "{e}");

    // root has no password `wrong` could be.
    let (out, su) = session(&mut daemon, sshd.port, &oli, "echo wrong | su -c true root");
    assert!(!out.status.success(), "su took a wrong password");
    let e = escalation(&mut daemon, &su, "su", "failure");
    assert_eq!(e["attributes"]["ssh.escalation.user.name"], "root", "{e}");
    assert!(e["attributes"]["ssh.escalation.program"].as_str().is_some_and(|p| p.ends_with("/su")), "{e}");
    assert_eq!(e["attributes"]["user.name"], oli.name, "{e}");

    // The four sessions end; nothing says otherwise about any of them.
    daemon.eventually("four closes", 20, |d| d.events_for(CLOSE, oli.name).len() >= 4);
    daemon.settle(Duration::from_secs(1));
    let said = |id: &Value, method: &str, result: &str| {
        all_of(&daemon, ESCALATION, id)
            .into_iter()
            .filter(|e| {
                e["attributes"]["ssh.escalation.method"] == method && e["attributes"]["ssh.escalation.result"] == result
            })
            .collect::<Vec<_>>()
    };
    assert!(said(&ok, "sudo", "failure").is_empty(), "sudo -n true failed too: {:?}", said(&ok, "sudo", "failure"));
    assert!(
        said(&wrong, "sudo", "success").is_empty(),
        "a wrong password succeeded: {:?}",
        said(&wrong, "sudo", "success")
    );
    assert!(
        said(&refused, "sudo", "success").is_empty(),
        "a refused rule succeeded: {:?}",
        said(&refused, "sudo", "success")
    );
    assert!(
        said(&su, "su", "success").is_empty(),
        "su with a wrong password succeeded: {:?}",
        said(&su, "su", "success")
    );
    // Whatever ran as root for the successful sudo is still the session's.
    let truth = execs(&daemon, &ok, "true");
    assert!(truth.iter().any(|e| e["attributes"]["process.user.id"] == 0), "true, run by sudo as root: {truth:?}");
    assert!(
        truth
            .iter()
            .all(|e| e["attributes"]["process.real_user.id"] == 0 || e["attributes"]["process.real_user.id"] == uid),
        "{truth:?}"
    );
    daemon.stop();
}

/// The issue's third test: a file fetched with `sftp -b` from an sshd that
/// runs sftp-server (not internal-sftp, which runs no program) is an exec
/// event of sftp-server marked `ssh.subsystem` = sftp.
#[test]
fn an_sftp_transfer_is_an_exec_marked_sftp() {
    let _guard = privileged();
    let (rex, sshd, mut daemon) = scene("sl-rex", SFTP_SERVER, &[]);
    let dir = scratch_dir("sftp");
    let remote = dir.join("remote.txt");
    std::fs::write(&remote, "fetched by sftp\n").unwrap();
    std::fs::set_permissions(&remote, std::fs::Permissions::from_mode(0o644)).unwrap();
    let local = cleared(dir.join("local.txt"));
    let batch = format!("get {} {}\n", remote.display(), local.display());
    let (out, id) = connection(&mut daemon, rex.name, || sftp_batch(sshd.port, &rex, &batch));
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "fetched by sftp\n");
    let e = daemon.wait_for("sftp-server's exec", |e| of(e, EXEC, &id) && e["attributes"]["ssh.subsystem"] == "sftp");
    let a = &e["attributes"];
    assert!(runs(&e, "sftp-server"), "{e}");
    assert_eq!(a["process.user.id"], uid_of(rex.name), "{e}");
    assert_eq!(a["user.name"], rex.name, "{e}");
    daemon.wait_event(CLOSE, rex.name);
    daemon.settle(Duration::from_millis(500));
    let marked: Vec<Value> =
        all_of(&daemon, EXEC, &id).into_iter().filter(|e| e["attributes"].get("ssh.subsystem").is_some()).collect();
    assert_eq!(marked.len(), 1, "only sftp-server is marked: {marked:?}");
    daemon.stop();
}

/// scp in its legacy protocol (`-O`) runs `scp -f` on the server: an exec
/// marked scp. Without `-O` (OpenSSH 9's default) it is an sftp transfer.
#[test]
fn an_scp_transfer_is_an_exec_marked_scp_or_sftp_by_its_protocol() {
    let _guard = privileged();
    let (roy, sshd, mut daemon) = scene("sl-roy", SFTP_SERVER, &[]);
    let dir = scratch_dir("scp");
    let remote = dir.join("remote.txt");
    std::fs::write(&remote, "fetched by scp\n").unwrap();
    std::fs::set_permissions(&remote, std::fs::Permissions::from_mode(0o644)).unwrap();
    let scp = |legacy: bool, local: &std::path::Path| {
        let mut cmd = Command::new("scp");
        if legacy {
            cmd.arg("-O");
        }
        cmd.args(crate::harness::CLIENT_OPTS)
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(&roy.key)
            .args(["-P", &sshd.port.to_string()])
            .arg(format!("{}@127.0.0.1:{}", roy.name, remote.display()))
            .arg(local)
            .stdin(Stdio::null())
            .output()
            .expect("run scp")
    };
    for (legacy, subsystem, program) in [(true, "scp", "scp"), (false, "sftp", "sftp-server")] {
        let local = cleared(dir.join(format!("local-{subsystem}.txt")));
        let (out, id) = connection(&mut daemon, roy.name, || scp(legacy, &local));
        assert!(out.status.success(), "scp (legacy {legacy}): {}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&local).unwrap(), "fetched by scp\n");
        let e = daemon.wait_for(&format!("the {subsystem} exec"), |e| {
            of(e, EXEC, &id) && e["attributes"]["ssh.subsystem"] == subsystem
        });
        assert!(runs(&e, program), "{e}");
        if legacy {
            let argv = e["attributes"]["process.command_args"].as_array().cloned().unwrap_or_default();
            assert!(argv.first() == Some(&json!("scp")) && argv.contains(&json!("-f")), "scp -f: {e}");
        }
    }
    daemon.stop();
}

/// The issue's fourth test. One session runs 10 000 programs while another
/// user logs in ten times: every open and close of the ten arrives, each
/// with its own exec (the rate limit is per session); the busy session's
/// execs are limited to the burst and the rate, and its summary counts
/// the rest; the kernel dropped no login record.
#[test]
fn ten_thousand_programs_in_one_session_cost_no_other_login_a_record() {
    // Alone: the kernel's drop counters are the host's.
    let _guard = privileged_alone();
    let (sue, ted) = (user("sl-sue"), user("sl-ted"));
    let sshd = Sshd::start(true, "MaxStartups 100\n");
    let mut daemon = Daemon::start(&[]);
    let mut busy = key_client(&sue.key)
        .args(["-p", &sshd.port.to_string(), "-l", sue.name, "127.0.0.1"])
        .arg("for i in $(seq 10000); do /bin/true; done")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    let id = daemon.wait_event(OPEN, sue.name)["attributes"]["ssh.connection.id"].clone();
    daemon.wait_for("the busy session's first /bin/true", |e| of(e, EXEC, &id) && runs(e, "/bin/true"));
    let failed = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..10 {
            s.spawn(|| {
                // A path: bash runs a bare `true` as its builtin, no exec.
                let out = ssh_key(sshd.port, ted.name, &ted.key, "/bin/true");
                if !out.status.success() {
                    failed.lock().unwrap().push(stderr(&out));
                }
            });
        }
    });
    assert!(failed.lock().unwrap().is_empty(), "logins of sl-ted failed: {:?}", failed.lock().unwrap());
    assert!(
        busy.try_wait().unwrap().is_none(),
        "the busy session ended before the ten logins did: they did not happen during it (a faster machine needs a \
         longer loop)"
    );
    let out = busy.wait_with_output().unwrap();
    assert!(out.status.success(), "the busy session: {}", stderr(&out));

    daemon.eventually("ten opens and ten closes of sl-ted", 60, |d| {
        d.events_for(OPEN, ted.name).len() >= 10 && d.events_for(CLOSE, ted.name).len() >= 10
    });
    let summary = daemon.wait_for("the busy session's summary", |e| of(e, ACTIVITY, &id));
    daemon.settle(Duration::from_secs(1));
    let (opens, closes) = (daemon.events_for(OPEN, ted.name), daemon.events_for(CLOSE, ted.name));
    assert_eq!((opens.len(), closes.len()), (10, 10), "each of the ten once");
    for open in &opens {
        let other = &open["attributes"]["ssh.connection.id"];
        assert_ne!(*other, id);
        assert_eq!(execs(&daemon, other, "true").len(), 1, "each login's own `true`, not limited by the busy one");
    }
    let a = &summary["attributes"];
    assert_eq!(a["user.name"], sue.name, "{summary}");
    let reported = a["ssh.activity.reported"].as_u64().unwrap_or_else(|| panic!("no ssh.activity.reported: {summary}"));
    let suppressed =
        a["ssh.activity.suppressed"].as_u64().unwrap_or_else(|| panic!("no ssh.activity.suppressed: {summary}"));
    assert!(suppressed > 0, "{summary}");
    assert!(reported + suppressed >= 10_000, "10 000 programs and the shell: {summary}");
    let close = daemon.seen().iter().find(|e| of(e, CLOSE, &id)).cloned().expect("the busy session's close");
    let secs = close["attributes"]["ssh.session.duration_ms"].as_u64().expect("duration") / 1000 + 2;
    assert!(reported <= BURST + RATE * secs, "more than the burst ({BURST}) and {RATE}/s over {secs} s: {summary}");
    assert_eq!(daemon.metric("sshlogin_stdout_dropped_total"), 0, "every event printed");
    let printed = all_of(&daemon, EXEC, &id).len() as u64;
    assert_eq!(printed, reported, "as many exec events as the summary says were reported: {summary}");
    daemon.assert_no_kernel_drops(&["ringbuf_full", "read_failed", "pending_full", "members_full", "forward_shed"]);
    daemon.stop();
}

/// Sets its flag when dropped, a panic's unwinding included.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The issue's fifth test: a root job outside any session (a loop of
/// /bin/true, directly and from a shell, the way cron runs one) while a
/// login happens is no session event; the login's own program is.
#[test]
fn programs_outside_any_session_are_no_session_events() {
    let _guard = privileged();
    let (ula, sshd, mut daemon) = scene("sl-ula", "", &[]);
    let stop = AtomicBool::new(false);
    let (pids, id) = thread::scope(|s| {
        let outside = s.spawn(|| {
            let mut job = Command::new("/bin/sh")
                .args(["-c", "for i in $(seq 200); do /bin/true; done"])
                .spawn()
                .expect("run the job's shell");
            let mut pids = HashSet::from([job.id()]);
            // Until the login's program was seen (or the test failed), and
            // 200 times at least; a minute at most.
            let deadline = Instant::now() + Duration::from_secs(60);
            while (pids.len() < 200 || !stop.load(Ordering::Relaxed)) && Instant::now() < deadline {
                let mut child = Command::new("/bin/true").spawn().expect("run /bin/true");
                pids.insert(child.id());
                assert!(child.wait().unwrap().success());
            }
            assert!(job.wait().unwrap().success());
            pids
        });
        // Stops the loop however this ends: a panic here must not leave
        // the scope waiting for it.
        let _stop = Stop(&stop);
        let (out, id) = session(&mut daemon, sshd.port, &ula, "sleep 1");
        assert!(out.status.success(), "{}", stderr(&out));
        daemon.wait_for("the login's sleep", |e| of(e, EXEC, &id) && runs(e, "sleep"));
        stop.store(true, Ordering::Relaxed);
        (outside.join().unwrap(), id)
    });
    daemon.wait_event(CLOSE, ula.name);
    daemon.settle(Duration::from_secs(1));
    let session_events = [EXEC, ESCALATION, ACTIVITY];
    let stray: Vec<&Value> = daemon
        .seen()
        .iter()
        .filter(|e| session_events.iter().any(|n| e["event_name"] == *n))
        .filter(|e| {
            let a = &e["attributes"];
            a["ssh.connection.id"].is_null()
                || a["user.name"].is_null()
                || a["process.executable.path"] == "/bin/true"
                || a["process.pid"].as_u64().is_some_and(|p| pids.contains(&(p as u32)))
        })
        .collect();
    assert!(stray.is_empty(), "events of processes outside any session: {stray:?}");
    assert!(all_of(&daemon, EXEC, &id).iter().all(|e| e["attributes"]["user.name"] == ula.name));
    daemon.stop();
}

/// What the forger in a session sends: records that would be a root login
/// and a root escalation if sshd, su or sudo had sent them.
const FORGER: &str = r#"import ctypes, socket, struct
ctypes.CDLL(None).prctl(15, b"sshd", 0, 0, 0)  # PR_SET_NAME: comm is now sshd
SSHD = 'exe="/usr/sbin/sshd" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=success'
records = [
    (1100, 'op=PAM:authentication grantors=pam_unix acct="root" ' + SSHD),
    (1101, 'op=PAM:accounting grantors=pam_unix acct="root" ' + SSHD),
    (1105, 'op=PAM:session_open grantors=pam_unix acct="root" ' + SSHD),
    (1105, 'op=PAM:session_open grantors=pam_unix acct="sl-forged-inside" ' + SSHD),
    (1112, 'op=login id=0 ' + SSHD),
    (1100, 'op=PAM:authentication grantors=pam_unix acct="root" exe="/usr/bin/su" hostname=? addr=? terminal=? res=success'),
    (1105, 'op=PAM:session_open grantors=pam_unix acct="root" exe="/usr/bin/su" hostname=? addr=? terminal=? res=success'),
    (1123, 'cwd="/" cmd=2F7573722F62696E2F74727565 exe="/usr/bin/sudo" terminal=? res=success'),
    (1105, 'op=PAM:session_open grantors=pam_unix acct="root" exe="/usr/bin/sudo" hostname=? addr=? terminal=? res=success'),
]
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)  # NETLINK_AUDIT
s.settimeout(1)
for ty, text in records:
    body = text.encode() + b"\0"
    try:
        s.sendto(struct.pack("=IHHII", 16 + len(body), ty, 5, 0, 0) + body, (0, 0))  # NLM_F_REQUEST|NLM_F_ACK
        ack = s.recv(8192)
        print(ty, "kernel answered", struct.unpack_from("=i", ack, 16)[0])
    except OSError as e:
        print(ty, e)
"#;

/// A process in a session calls itself sshd (its comm, through a symlink
/// and prctl, and an argv[0] through `exec -a`) and sends audit records
/// of a root login and of root escalations over NETLINK_AUDIT. The user is
/// not root, so the kernel refuses them; sshlogin reports none of them:
/// no open but the real one, no escalation at all. Its programs are still
/// the session's exec events, under the paths the kernel ran.
#[test]
fn a_process_in_a_session_calling_itself_sshd_forges_no_login_or_escalation() {
    let _guard = privileged();
    let (val, sshd, mut daemon) = scene("sl-val", "", &[]);
    let script = root_script("forge-in-session.py", FORGER);
    // A name anyone can exec, so that comm is sshd from the exec on.
    let named = cleared(scratch_dir("in-session").join("sshd"));
    std::os::unix::fs::symlink("/usr/bin/python3", &named).unwrap();
    let command = format!("{} {}; exec -a sshd /bin/sleep 1", named.display(), script.display());
    let (out, id) = session(&mut daemon, sshd.port, &val, &command);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("e2e: the forger in the session: {said}");
    assert_eq!(said.lines().count(), 9, "the forger sent its nine records: {said}");
    assert!(!said.contains("answered 0"), "the kernel took a record from an unprivileged process: {said}");
    let forger = daemon.wait_for("the forger's exec", |e| of(e, EXEC, &id) && runs(e, &named.display().to_string()));
    assert_eq!(forger["attributes"]["process.user.id"], uid_of(val.name), "{forger}");
    let sleep = daemon.wait_for("sleep exec'd as sshd", |e| of(e, EXEC, &id) && runs(e, "/bin/sleep"));
    assert_eq!(sleep["attributes"]["process.command_args"], json!(["sshd", "1"]), "argv is the user's: {sleep}");
    daemon.wait_event(CLOSE, val.name);
    daemon.settle(Duration::from_secs(1));
    assert_eq!(daemon.events_for(OPEN, val.name).len(), 1, "only the real open");
    let forged: Vec<&Value> = daemon
        .seen()
        .iter()
        .filter(|e| {
            let a = &e["attributes"];
            a["user.name"] == "root"
                || a["user.name"] == "sl-forged-inside"
                || (e["event_name"] == ESCALATION && (a["ssh.connection.id"] == id || a["user.name"] == val.name))
        })
        .collect();
    assert!(forged.is_empty(), "forged records became events: {forged:?}");
    daemon.stop();
}

/// A session's program that the kernel runs on in a thread: its leader
/// thread exits first while another thread runs `id` (a process of the
/// session all the same), and a thread that is not the leader execs `id`
/// (the exec takes the process over). Both are exec events of the session.
#[test]
fn threads_do_not_take_a_program_out_of_its_session() {
    let _guard = privileged();
    let (wyn, sshd, mut daemon) = scene("sl-wyn", "", &[]);
    // SYS_exit ends only the calling thread (exit(3) would end them all).
    let sys_exit = if std::env::consts::ARCH == "aarch64" { 93 } else { 60 };
    let script = format!(
        "import ctypes, os, subprocess, threading, time\n\
         def leader_first():\n    time.sleep(0.5)\n    subprocess.run(['/usr/bin/id', '-u'])\n    os._exit(0)\n\
         def exec_from_thread():\n    time.sleep(0.2)\n    os.execv('/usr/bin/id', ['id', '-g'])\n\
         if os.fork() == 0:\n    threading.Thread(target=exec_from_thread).start()\n    time.sleep(5)\n\
         else:\n    threading.Thread(target=leader_first).start()\n    ctypes.CDLL(None).syscall({sys_exit}, 0)\n"
    );
    let file = scratch_dir("threads").join("threads.py");
    std::fs::write(&file, script).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let command = format!("python3 {}; sleep 1.5", file.display());
    let (out, id) = session(&mut daemon, sshd.port, &wyn, &command);
    assert!(out.status.success(), "{}", stderr(&out));
    daemon.eventually("exec events of both ids", 20, |d| {
        let args: Vec<Value> =
            execs(d, &id, "id").iter().map(|e| e["attributes"]["process.command_args"].clone()).collect();
        args.contains(&json!(["/usr/bin/id", "-u"])) && args.contains(&json!(["id", "-g"]))
    });
    daemon.stop();
}
