//! Nothing lost: receiver outages, 503s, kill -9, a full spool, a burst.

use std::{
    collections::HashMap,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::harness::{
    self, Daemon, PATIENT, Receiver, Sshd, eventually, eventually_or, free_port, is, logged, logged_settled, login,
    metric, privileged, privileged_alone, reads_sshd_log, scene, scratch_file, ssh_password_with, state_dir, user,
};

/// Fast retries so tests do not wait out production backoffs.
fn quick_retries(name: &str) -> String {
    scratch_file(
        &format!("{name}.toml"),
        "[otlp]\nretry_initial_backoff = \"200ms\"\nretry_max_backoff = \"1s\"\nretry_max_elapsed = \"3s\"\n",
    )
    .display()
    .to_string()
}

/// What a spool test starts with: an sshd to log in to, and for its
/// daemons an OTLP port where nothing listens yet, a state directory of
/// their own, quick retries and a metrics port.
struct Spooling {
    sshd: Sshd,
    port: u16,
    endpoint: String,
    state: String,
    config: String,
    metrics: u16,
}

impl Spooling {
    fn new(name: &str) -> Spooling {
        let port = free_port();
        Spooling {
            sshd: Sshd::start(true, ""),
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            state: state_dir(name).display().to_string(),
            config: quick_retries(name),
            metrics: free_port(),
        }
    }

    /// A daemon exporting to the port, with `extra` flags.
    fn daemon(&self, extra: &[&str]) -> Daemon {
        let mut args = vec!["--config", &self.config, "--otlp-endpoint", &self.endpoint, "--state-dir", &self.state];
        args.extend_from_slice(extra);
        Daemon::start(&args)
    }

    /// The same, serving its metrics (one daemon at a time can).
    fn daemon_with_metrics(&self, extra: &[&str]) -> Daemon {
        let listen = format!("127.0.0.1:{}", self.metrics);
        let mut args = vec!["--metrics-listen", &listen];
        args.extend_from_slice(extra);
        self.daemon(&args)
    }

    fn metric(&self, series: &str) -> u64 {
        metric(self.metrics, series)
    }

    /// `n` key logins of `name`.
    fn logins(&self, name: &str, n: usize) {
        logins(&self.sshd, name, n);
    }

    /// Events waiting in the OTLP spool.
    fn spooled(&self) -> u64 {
        self.metric("sshlogin_spool_events{sink=\"otlp\"}")
    }
}

/// Opens and closes of `user` the daemon has printed so far.
fn sessions_printed(daemon: &mut Daemon, user: &str) -> usize {
    daemon.settle(Duration::from_millis(100));
    daemon.events_for("ssh.session.open", user).len() + daemon.events_for("ssh.session.close", user).len()
}

/// log.record.uid -> how many requests answered 200 carried it, for
/// `user`'s opens and closes (the counts below are two per login; the
/// session's exec of its shell travels the same way).
fn delivered(receiver: &mut Receiver, user: &str) -> HashMap<String, usize> {
    delivered_if(receiver, |rec| {
        rec["attributes"]["user.name"] == user
            && (rec["event_name"] == "ssh.session.open" || rec["event_name"] == "ssh.session.close")
    })
}

/// log.record.uid -> how many requests answered 200 carried it, for the
/// records `pick` takes.
fn delivered_if(receiver: &mut Receiver, pick: impl Fn(&Value) -> bool) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for req in receiver.settle(Duration::ZERO) {
        if req["status"] != 200 {
            continue;
        }
        for rec in req["records"].as_array().into_iter().flatten() {
            if pick(rec) {
                let id = rec["attributes"]["log.record.uid"].as_str().unwrap().to_string();
                *ids.entry(id).or_default() += 1;
            }
        }
    }
    ids
}

fn logins(sshd: &Sshd, name: &str, n: usize) {
    let u = user(Box::leak(name.to_string().into_boxed_str()));
    for _ in 0..n {
        login(sshd.port, &u, "true");
    }
}

/// The daemon restarted on a spool (`second`) delivers `user`'s `n` events
/// to the receiver, each once. `earlier`: what to add to a failure.
fn delivered_after_restart(receiver: &mut Receiver, second: Daemon, user: &str, n: usize, earlier: &str) {
    eventually_or(
        &format!("{n} events of {user} delivered after the restart"),
        30,
        || delivered(receiver, user).len() >= n,
        || format!("{earlier}\nrestarted daemon's log:\n{}", second.log()),
    );
    receiver.settle(Duration::from_secs(1));
    assert_each_once(&delivered(receiver, user), n);
    second.stop();
}

fn assert_each_once(ids: &HashMap<String, usize>, want: usize) {
    assert_eq!(ids.len(), want, "distinct events delivered");
    let dup: Vec<_> = ids.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dup.is_empty(), "delivered more than once: {dup:?}");
}

#[test]
fn a_30_second_outage_loses_nothing() {
    let _guard = privileged();
    let s = Spooling::new("outage");
    let daemon = s.daemon(&[]);
    let down = Instant::now();
    s.logins("sl-judy", 20);
    thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    let mut receiver = Receiver::start_on(s.port, &[]);
    eventually("40 events of sl-judy delivered", 60, || delivered(&mut receiver, "sl-judy").len() >= 40);
    receiver.settle(Duration::from_secs(2));
    assert_each_once(&delivered(&mut receiver, "sl-judy"), 40);
    daemon.stop();
}

#[test]
fn answers_of_503_then_200_lose_nothing() {
    let _guard = privileged();
    let sshd = Sshd::start(true, "");
    let mut receiver = Receiver::start(&["503", "503", "503"]);
    let endpoint = receiver.endpoint();
    let config = quick_retries("503");
    let daemon = Daemon::start(&["--config", &config, "--otlp-endpoint", &endpoint]);
    logins(&sshd, "sl-kate", 5);
    eventually("10 events of sl-kate delivered", 30, || delivered(&mut receiver, "sl-kate").len() >= 10);
    receiver.settle(Duration::from_secs(1));
    assert_each_once(&delivered(&mut receiver, "sl-kate"), 10);
    assert!(receiver.seen.iter().any(|r| r["status"] == 503));
    daemon.stop();
}

#[test]
fn kill_9_while_the_receiver_is_down_then_a_restart_delivers_everything() {
    let _guard = privileged();
    let s = Spooling::new("kill9");
    let mut first = s.daemon_with_metrics(&["--stdout"]);
    s.logins("sl-leo", 5);
    // sl-leo's ten seen leaving the pipeline, and as many events in the
    // spool as the daemon printed in all (nothing is sent: the receiver is
    // down): only then is every one of sl-leo's committed.
    eventually("sl-leo's 10 events produced and all produced spooled", 20, || {
        sessions_printed(&mut first, "sl-leo") >= 10 && s.spooled() >= first.settle(Duration::ZERO).len() as u64
    });
    first.kill9();
    let second = s.daemon(&[]);
    let mut receiver = Receiver::start_on(s.port, &[]);
    delivered_after_restart(&mut receiver, second, "sl-leo", 10, "");
}

#[test]
fn a_full_spool_drops_the_oldest_and_counts_them() {
    let _guard = privileged_alone();
    let s = Spooling::new("full");
    // No heartbeat: one could come after `produced` is taken.
    let mut daemon = s.daemon_with_metrics(&["--stdout", "--spool-max-size", "8K", "--heartbeat-interval", "0"]);
    s.logins("sl-mia", 10);
    // sl-mia's and the daemon's own (sshlogin.start): what this daemon
    // spools, oldest first.
    let mine = |e: &Value| {
        e["attributes"]["user.name"] == "sl-mia" || e["event_name"].as_str().is_some_and(|n| n.starts_with("sshlogin."))
    };
    daemon.eventually("20 events of sl-mia produced", 20, |daemon| {
        daemon.seen().iter().filter(|e| e["attributes"]["user.name"] == "sl-mia").count() >= 20
    });
    let produced: Vec<String> = daemon
        .settle(Duration::from_millis(500))
        .iter()
        .filter(|e| mine(e))
        .map(|e| e["attributes"]["log.record.uid"].as_str().unwrap().to_string())
        .collect();
    // Alone on the host, every event is sl-mia's or the daemon's: all are spooled or dropped.
    eventually("every event spooled or dropped (an SSH login from outside the tests would break this)", 10, || {
        s.spooled() + s.metric("sshlogin_spool_dropped_total") == produced.len() as u64
    });
    let dropped = s.metric("sshlogin_spool_dropped_total");
    let waiting = s.spooled();
    assert!(dropped > 0, "8K cannot hold 20 events");
    let mut receiver = Receiver::start_on(s.port, &[]);
    eventually("the spool drained", 30, || s.spooled() == 0);
    receiver.settle(Duration::from_secs(1));
    let got = delivered_if(&mut receiver, mine);
    assert_eq!(got.len() as u64, waiting, "everything that stayed in the spool arrived");
    assert_eq!(produced.len() as u64 - got.len() as u64, dropped, "the counter equals what was lost");
    // The oldest went, except the batch the exporter held in flight: the
    // dropped ones are one run in the order produced, and the newest arrived.
    let lost: Vec<usize> = (0..produced.len()).filter(|i| !got.contains_key(&produced[*i])).collect();
    assert!(lost.windows(2).all(|w| w[1] == w[0] + 1), "dropped out of order: {lost:?}");
    assert!(got.contains_key(produced.last().unwrap()), "the newest event survived");
    daemon.stop();
}

#[test]
fn a_burst_of_200_failed_logins_is_reported_whole() {
    let _guard = privileged_alone();
    let (ned, sshd, mut daemon) = scene("sl-ned", "MaxStartups 400\nMaxAuthTries 6\n", &[]);
    let before = logged(&format!("Failed password for {} from", ned.name)).len();
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let port = sshd.port;
            thread::spawn(move || ssh_password_with(PATIENT, port, "sl-ned", "wrong-password", "true"))
        })
        .collect();
    let mut said: HashMap<String, usize> = HashMap::new();
    for c in clients {
        let out = c.join().unwrap();
        assert!(!out.status.success());
        *said.entry(String::from_utf8_lossy(&out.stderr).trim().to_string()).or_default() += 1;
    }
    // What sshd logged, or (when the host's syslog owns /dev/log) what the
    // clients were told: one refusal each.
    let sshd_logged = if reads_sshd_log() {
        logged_settled(&format!("Failed password for {} from", ned.name)).len() - before
    } else {
        said.iter().filter(|(s, _)| s.contains("Permission denied")).map(|(_, n)| n).sum()
    };
    assert!(
        sshd_logged >= 150,
        "sshd logged only {sshd_logged} failures: the burst did not happen; the clients said {said:?}"
    );
    daemon.eventually("as many failures as sshd logged", 60, |daemon| {
        daemon.events_for("ssh.auth.failure", ned.name).len() >= sshd_logged
    });
    daemon.settle(Duration::from_secs(2));
    let failures = daemon.events_for("ssh.auth.failure", ned.name);
    let mut per_connection: HashMap<String, Vec<String>> = HashMap::new();
    for f in &failures {
        let a = &f["attributes"];
        per_connection
            .entry(a["ssh.connection.id"].to_string())
            .or_default()
            .push(format!("{}/{}", a["ssh.failure.reason"], a["ssh.auth.method"]));
    }
    let split: Vec<_> = per_connection.values().filter(|v| v.len() > 1).take(5).collect();
    assert!(split.is_empty(), "connections with more than one failure: {split:?}");
    assert_eq!(failures.len(), sshd_logged);
    assert!(daemon.events_for("ssh.session.open", ned.name).is_empty());
    daemon.assert_no_kernel_drops(&["ringbuf_full", "read_failed", "pending_full"]);
    assert!(daemon.settle(Duration::ZERO).iter().all(|e| !is(e, "ssh.session.open", ned.name)));
    daemon.stop();
}

#[test]
fn sigterm_with_the_receiver_down_keeps_the_spool_for_the_next_start() {
    let _guard = privileged();
    let s = Spooling::new("sigterm");
    let mut first = s.daemon_with_metrics(&["--stdout"]);
    s.logins("sl-pat", 3);
    // sl-pat's own six, seen leaving the pipeline (a test beside this one
    // could fill the spool to six first); SIGTERM commits what is queued.
    eventually("6 events of sl-pat produced", 20, || sessions_printed(&mut first, "sl-pat") >= 6);
    eventually("6 events spooled", 20, || s.spooled() >= 6);
    let asked = Instant::now();
    let log = first.stop();
    assert!(asked.elapsed() < Duration::from_secs(15), "shutdown took {:?} (drain is 5 s)", asked.elapsed());
    assert!(log.iter().any(|l| l.contains("spool:") && l.contains("waiting")), "summary logged: {log:?}");
    let mut receiver = Receiver::start_on(s.port, &[]);
    let second = s.daemon(&[]);
    delivered_after_restart(&mut receiver, second, "sl-pat", 6, &format!("first daemon's log:\n{}", log.join("\n")));
}

/// The disk under the spool fills while 20 logins happen, then frees:
/// redb refuses every write after the first failed one until its file is
/// opened again. Nothing is lost silently: every event arrives once, or
/// each lost one is counted (`sshlogin_queue_dropped_total`) and logged.
#[test]
fn a_full_disk_under_the_spool_then_freed_loses_nothing_silently() {
    let _guard = privileged();
    let s = Spooling::new("fulldisk");
    // A small filesystem of its own for the state directory.
    let mnt = harness::scratch_dir("fulldisk-fs");
    let _ = Command::new("umount").arg(&mnt).status();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"]).arg(&mnt).status().unwrap();
    assert!(mounted.success(), "mounting a tmpfs at {}", mnt.display());
    let _unmount = Unmount(mnt.clone());
    let state = mnt.join("state").display().to_string();
    let listen = format!("127.0.0.1:{}", s.metrics);
    let args =
        ["--config", &s.config, "--otlp-endpoint", &s.endpoint, "--state-dir", &state, "--metrics-listen", &listen];
    let daemon = Daemon::start(&args);
    // Fill what is left of it.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    s.logins("sl-hal", 20);
    eventually("a spool write failed", 30, || s.metric("sshlogin_spool_errors_total") > 0);
    std::fs::remove_file(&filler).unwrap();
    let mut receiver = Receiver::start_on(s.port, &[]);
    eventually_or(
        "40 events of sl-hal delivered, or the missing ones counted",
        90,
        || delivered(&mut receiver, "sl-hal").len() as u64 + s.metric("sshlogin_queue_dropped_total") >= 40,
        || daemon.log(),
    );
    receiver.settle(Duration::from_secs(2));
    let got = delivered(&mut receiver, "sl-hal");
    let lost = s.metric("sshlogin_queue_dropped_total");
    assert!(got.values().all(|n| *n == 1), "each delivered once: {got:?}");
    assert_eq!(got.len() as u64 + lost, 40, "delivered {} + counted lost {lost}", got.len());
    if lost > 0 {
        assert!(daemon.log().contains("lost"), "the loss was logged: {}", daemon.log());
    }
    assert_eq!(lost, 0, "held in memory and written once the disk had room: nothing lost");
    assert!(daemon.log().contains("cannot write to the spool"), "{}", daemon.log());
    daemon.stop();
}

/// Unmounts its directory when the test ends, passed or not.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
