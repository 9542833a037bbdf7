//! What a fleet needs beyond each login: heartbeats, failure summaries,
//! first-seen marks.

use std::{path::Path, process::Command, thread, time::Duration};

use serde_json::Value;

use sshlogin_e2e::harness::{
    CLIENT_OPTS, Daemon, Receiver, Sshd, eventually, fixture_dir, free_port, key_client, login, must, privileged,
    privileged_alone, root_script, scratch_file, ssh_password, ssh_password_with, state_dir, user,
};

use super::{FAILURE, OPEN};

const SUMMARY: &str = "ssh.auth.failure.summary";

/// The records of `name` the receiver took (answered 200), each once: a
/// batch sent again (at-least-once) counts once.
fn records(receiver: &mut Receiver, name: &str) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    receiver
        .settle(Duration::ZERO)
        .iter()
        .filter(|req| req["status"] == 200)
        .flat_map(|req| req["records"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["event_name"] == name)
        .filter(|r| seen.insert(r["attributes"]["log.record.uid"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// A count in a heartbeat's or stop's `sshlogin.events`.
fn counted(e: &Value, name: &str) -> u64 {
    e["attributes"]["sshlogin.events"][name].as_u64().unwrap_or(0)
}

/// Heartbeats every 2 s while the receiver is down: once it is up they all
/// arrive from the spool, numbered without a gap, and together they count
/// exactly what the test did. The stop says why and counts since start.
#[test]
fn heartbeats_count_what_happened_and_wait_in_the_spool_for_the_receiver() {
    // Alone: the counts are of every login on the host.
    let _guard = privileged_alone();
    let kim = user("sl-kim");
    let sshd = Sshd::start(true, "");
    let port = free_port();
    let quick =
        scratch_file("heartbeat.toml", "[otlp]\nretry_initial_backoff = \"200ms\"\nretry_max_backoff = \"1s\"\n");
    let endpoint = format!("http://127.0.0.1:{port}");
    let daemon = Daemon::start(&[
        "--config",
        quick.to_str().unwrap(),
        "--otlp-endpoint",
        &endpoint,
        "--heartbeat-interval",
        "2s",
    ]);
    login(sshd.port, &kim, "true");
    login(sshd.port, &kim, "true");
    assert!(!ssh_password(sshd.port, kim.name, "not-the-password", "true").status.success());
    // Two heartbeats or more go to the spool while nothing listens.
    thread::sleep(Duration::from_secs(5));
    let mut receiver = Receiver::start_on(port, &[]);
    let sums = |receiver: &mut Receiver| {
        let beats = records(receiver, "sshlogin.heartbeat");
        let sum = |name| beats.iter().map(|b| counted(b, name)).sum::<u64>();
        (sum(OPEN), sum("ssh.session.close"), sum(FAILURE))
    };
    eventually("the heartbeats to count 2 opens, 2 closes and 1 failure", 40, || sums(&mut receiver) == (2, 2, 1));
    receiver.settle(Duration::from_secs(3));
    assert_eq!(sums(&mut receiver), (2, 2, 1), "counted once each");
    let mut seqs: Vec<u64> = records(&mut receiver, "sshlogin.heartbeat")
        .iter()
        .map(|b| b["attributes"]["sshlogin.heartbeat.seq"].as_u64().unwrap())
        .collect();
    seqs.sort();
    seqs.dedup();
    assert!(seqs.len() >= 3 && seqs.iter().enumerate().all(|(i, s)| *s == i as u64 + 1), "a heartbeat lost: {seqs:?}");
    let start = records(&mut receiver, "sshlogin.start").pop().expect("sshlogin.start delivered");
    let a = &start["attributes"];
    let probes = a["sshlogin.probes"].as_str().unwrap_or_default();
    assert!(["fentry", "tracepoints"].contains(&probes), "what auto became: {start}");
    assert!(daemon.log().contains(&format!("syscall_probes={probes}")), "the start-up log says the same: {start}");
    assert!(a["sshlogin.kernel"].is_string(), "{start}");
    assert_eq!(a["sshlogin.config"]["heartbeat.interval"], "2s", "{start}");
    assert!(a["sshlogin.sshd.binaries"].as_array().is_some_and(|b| b.iter().any(|p| p == "/usr/sbin/sshd")), "{start}");
    daemon.stop();
    let (_, stop) = receiver.wait_for("sshlogin.stop", |r| r["event_name"] == "sshlogin.stop");
    assert_eq!(stop["attributes"]["sshlogin.stop.reason"], "SIGTERM");
    assert_eq!(counted(&stop, OPEN), 2, "since start: {stop}");
}

/// A client that tries `tries` wrong passwords on one connection from `from`.
fn wrong_passwords(askpass: &Path, from: &str, port: u16, user: &str, tries: u32) {
    let out = Command::new("ssh")
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .args(["-b", from])
        .args(CLIENT_OPTS)
        .args(["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"])
        .args(["-o", &format!("NumberOfPasswordPrompts={tries}")])
        .args(["-p", &port.to_string(), &format!("{user}@127.0.0.1"), "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ssh");
    assert!(!out.status.success(), "a wrong password let {user} in");
}

/// 200 wrong passwords from one address in summary mode: 5 go out alone,
/// the other 195 in one summary, sent just before that address's
/// successful open (which counts all 200). Another address's two failures
/// go out alone.
#[test]
fn two_hundred_failures_from_one_address_become_a_few_events() {
    let _guard = privileged();
    let lou = user("sl-lou");
    // Without PAM no failure waits 2 s; 10 tries per connection.
    let sshd = Sshd::start(false, "MaxAuthTries 30\nMaxStartups 100\n");
    let mut daemon = Daemon::start(&["--failures", "summary", "--failures-alone", "5"]);
    let askpass = root_script("wrong-password", "#!/bin/sh\necho not-the-password\n");
    let (attacker, other) = ("127.0.0.88", "127.0.0.89");
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5 {
                    wrong_passwords(&askpass, attacker, sshd.port, lou.name, 10);
                }
            });
        }
    });
    wrong_passwords(&askpass, other, sshd.port, lou.name, 2);
    let from_other = |d: &Daemon| {
        d.seen().iter().filter(|e| e["event_name"] == FAILURE && e["attributes"]["client.address"] == other).count()
    };
    daemon.eventually("the other address's two failures", 30, |d| from_other(d) >= 2);
    let out = ssh_password_with(&["-b", attacker], sshd.port, lou.name, lou.password, "true");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let open = daemon.wait_event(OPEN, lou.name);
    daemon.settle(Duration::from_millis(500));
    let from = |e: &&Value| e["attributes"]["client.address"] == attacker;
    let alone = daemon.seen().iter().filter(|e| e["event_name"] == FAILURE).filter(from).count() as u64;
    let summaries: Vec<&Value> = daemon.seen().iter().filter(|e| e["event_name"] == SUMMARY).filter(from).collect();
    assert_eq!(alone, 5, "the first five alone");
    assert_eq!(summaries.len(), 1, "one summary for the window: {summaries:?}");
    let s = &summaries[0]["attributes"];
    let count = s["ssh.failure.count"].as_u64().unwrap();
    assert_eq!(open["attributes"]["ssh.auth.prior_failures"], 200, "every failure counted before the open: {open}");
    assert_eq!(alone + count, 200, "alone and folded: {s}");
    assert_eq!(s["ssh.failure.by_user"], serde_json::json!({ lou.name: count }));
    assert_eq!(s["ssh.failure.by_reason"], serde_json::json!({ "wrong_password": count }));
    assert_eq!(s["ssh.failure.distinct_users"], 1);
    let last = s["ssh.failure.last_time"].as_str();
    assert!(s["ssh.failure.first_time"].as_str().is_some_and(|first| Some(first) < last), "{s}");
    assert!(s["ssh.failure.last_time"].as_str().is_some_and(|t| t.ends_with('Z')), "{s}");
    let order: Vec<&str> = daemon
        .seen()
        .iter()
        .filter(|e| e["attributes"]["client.address"] == attacker && e["event_name"] != FAILURE)
        .map(|e| e["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(&order[..2], [SUMMARY, OPEN], "the summary goes just before the open");
    assert_eq!(from_other(&daemon), 2, "the other address is unaffected");
    daemon.stop();
}

/// Without an open to send it, a summary goes out when its window ends.
#[test]
fn a_summary_goes_out_when_its_window_ends() {
    let _guard = privileged();
    let nia = user("sl-nia");
    let sshd = Sshd::start(false, "MaxAuthTries 30\n");
    let mut daemon = Daemon::start(&["--failures", "summary", "--failures-alone", "2", "--failures-window", "5s"]);
    let askpass = root_script("wrong-password", "#!/bin/sh\necho not-the-password\n");
    let from = "127.0.0.87";
    wrong_passwords(&askpass, from, sshd.port, nia.name, 6);
    let summary = daemon.wait_for("the summary at the window's end", |e| {
        e["event_name"] == SUMMARY && e["attributes"]["client.address"] == from
    });
    assert_eq!(summary["attributes"]["ssh.failure.count"], 4, "{summary}");
    assert_eq!(summary["attributes"]["ssh.failure.by_user"], serde_json::json!({ nia.name: 4 }));
    let alone = daemon.events_for(FAILURE, nia.name);
    assert_eq!(alone.len(), 2, "the first two alone: {alone:?}");
    daemon.stop();
}

/// Opens of `user` printed so far.
fn opens(daemon: &Daemon, user: &str) -> Vec<Value> {
    daemon.events_for(OPEN, user)
}

/// A key login of `user` with `key` from `from`; returns the open's
/// (client, key, learning) marks.
fn marks(daemon: &mut Daemon, port: u16, user: &str, key: &Path, from: &str) -> (Value, Value, Value) {
    let before = opens(daemon, user).len();
    let out =
        key_client(key).args(["-b", from, "-p", &port.to_string(), "-l", user, "127.0.0.1", "true"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    daemon.eventually("the open", 20, |d| opens(d, user).len() > before);
    let open = opens(daemon, user).remove(before);
    let a = &open["attributes"];
    assert_eq!(a["client.address"], from);
    (a["ssh.first_seen.client"].clone(), a["ssh.first_seen.key"].clone(), a["ssh.first_seen.learning"].clone())
}

/// A user's new address and new key are first seen once, then known, also
/// after the daemon restarts; a fresh store learns instead of marking.
#[test]
fn a_new_address_or_key_is_first_seen_once_and_remembered_across_restarts() {
    let _guard = privileged();
    let max = user("sl-max");
    let sshd = Sshd::start(true, "");
    let second = fixture_dir().join("id_sl-max-second");
    must(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&second));
    let authorized = format!("/home/{}/.ssh/authorized_keys", max.name);
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&std::fs::read_to_string(second.with_extension("pub")).unwrap());
    std::fs::write(&authorized, keys).unwrap();
    let state = state_dir("first-seen");
    let args = ["--state-dir", state.to_str().unwrap(), "--first-seen-learning", "0s"];
    let (yes, no, none) = (Value::Bool(true), Value::Bool(false), Value::Null);
    let (a, b) = ("127.0.0.91", "127.0.0.92");
    let mut daemon = Daemon::start(&args);
    assert_eq!(marks(&mut daemon, sshd.port, max.name, &max.key, a), (yes.clone(), yes.clone(), none.clone()));
    assert_eq!(marks(&mut daemon, sshd.port, max.name, &max.key, a), (no.clone(), no.clone(), none.clone()));
    assert_eq!(marks(&mut daemon, sshd.port, max.name, &max.key, b), (yes.clone(), no.clone(), none.clone()));
    assert_eq!(marks(&mut daemon, sshd.port, max.name, &second, a), (no.clone(), yes.clone(), none.clone()));
    daemon.stop();
    let mut daemon = Daemon::start(&args);
    assert_eq!(
        marks(&mut daemon, sshd.port, max.name, &second, b),
        (no.clone(), no.clone(), none.clone()),
        "after a restart"
    );
    daemon.stop();
    // A store created now, with the default learning day.
    let mut fresh = Daemon::start(&["--state-dir", state_dir("first-seen-fresh").to_str().unwrap()]);
    assert_eq!(marks(&mut fresh, sshd.port, max.name, &max.key, "127.0.0.93"), (none.clone(), none, yes));
    fresh.stop();
}
