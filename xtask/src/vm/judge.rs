//! Judges what a guest recorded: every expected event with the facts the
//! scenario knows (user, method, key, port, reason), nothing unexpected,
//! `sshlogin check` right about the guest, a clean stop.

use std::{collections::BTreeMap, fs, path::Path};

use serde_json::Value;

use super::{Cell, qemu::Results};

/// One row of the matrix: a cell's PAM or no-PAM half.
pub struct Row {
    pub pam: bool,
    pub problems: Vec<String>,
    pub events: usize,
}

pub struct Outcome {
    pub cell: Cell,
    /// Facts of the run: kernel, OS, OpenSSH, accelerator, …
    pub facts: BTreeMap<&'static str, String>,
    /// Problems of the run as a whole (boot, check, daemon).
    pub problems: Vec<String>,
    pub rows: Vec<Row>,
}

impl Outcome {
    pub fn broken(cell: &Cell, why: String) -> Outcome {
        Outcome { cell: *cell, facts: BTreeMap::new(), problems: vec![why], rows: Vec::new() }
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty() && !self.rows.is_empty() && self.rows.iter().all(|r| r.problems.is_empty())
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} ({}, kernel {}): {}",
            self.cell.name,
            self.cell.arch.debian(),
            self.facts.get("kernel").map_or("?", String::as_str),
            if self.passed() { "passed" } else { "FAILED" }
        );
        for p in self.problems.iter().chain(self.rows.iter().flat_map(|r| r.problems.iter())) {
            s.push_str("\n  - ");
            s.push_str(p);
        }
        s
    }
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default().trim().to_string()
}

pub fn judge(cell: &Cell, results: &Results) -> Outcome {
    let dir = &results.dir;
    let mut facts = BTreeMap::new();
    facts.insert("kernel", read(dir, "uname"));
    facts.insert("os", read(dir, "os"));
    facts.insert("openssh", read(dir, "openssh").split(',').next().unwrap_or("").to_string());
    facts.insert("accel", results.accel.to_string());
    facts.insert("machine", read(dir, "arch"));
    let mut problems = Vec::new();

    let steps: BTreeMap<String, i32> = read(dir, "steps")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(-1)))
        .collect();
    let events: Vec<Value> = read(dir, "events.jsonl").lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let lines = read(dir, "events.jsonl").lines().count();
    if lines != events.len() {
        problems.push(format!("{} of {lines} stdout lines are not JSON events", lines - events.len()));
    }

    check_check(cell, dir, &facts, &mut problems);
    let log = read(dir, "daemon.log");
    if read(dir, "daemon.rc") != "0" {
        problems.push(format!("the daemon exited with {:?}; its log:\n{log}", read(dir, "daemon.rc")));
    }
    if !log.contains("decode_errors=0") {
        problems.push(format!("the daemon's summary shows decode errors or is missing:\n{log}"));
    }
    if log.contains(" ERROR ") {
        problems.push(format!("the daemon logged errors:\n{log}"));
    }

    let fingerprint = read(dir, "good-fingerprint");
    let pam = half(true, &steps, &events, &fingerprint);
    let nopam = half(false, &steps, &events, &fingerprint);
    Outcome { cell: *cell, facts, problems, rows: vec![pam, nopam] }
}

/// `sshlogin check --no-network` in the guest: exit 0, the guest's kernel,
/// the layout the userland has.
fn check_check(cell: &Cell, dir: &Path, facts: &BTreeMap<&str, String>, problems: &mut Vec<String>) {
    let text = read(dir, "check.txt");
    if read(dir, "check.rc") != "0" {
        problems.push(format!("sshlogin check exited {}:\n{text}\n{}", read(dir, "check.rc"), read(dir, "check.log")));
    }
    let kernel = &facts["kernel"];
    if !text.lines().any(|l| l.starts_with("ok   kernel") && l.contains(kernel.as_str())) {
        problems.push(format!("sshlogin check did not report kernel {kernel} as fine:\n{text}"));
    }
    if !text.lines().any(|l| l.starts_with("ok   sshd") && l.contains(cell.layout)) {
        problems.push(format!("sshlogin check did not report the {:?} layout:\n{text}", cell.layout));
    }
    for item in ["tracefs", "tracepoints", "ebpf", "pam-audit", "syslog"] {
        if !text.lines().any(|l| l.starts_with("ok") && l.split_whitespace().nth(1) == Some(item)) {
            problems.push(format!("sshlogin check: {item} is not ok:\n{text}"));
        }
    }
}

fn attr<'a>(e: &'a Value, key: &str) -> &'a Value {
    &e["attributes"][key]
}

fn named<'a>(events: &'a [Value], name: &str, user: &str, port: u16) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event_name"] == name && attr(e, "user.name") == user && attr(e, "server.port") == port)
        .collect()
}

/// The PAM (port 2201) or no-PAM (port 2202) half of the scenario.
fn half(pam: bool, steps: &BTreeMap<String, i32>, events: &[Value], fingerprint: &str) -> Row {
    let port = if pam { 2201 } else { 2202 };
    let mut p = Vec::new();
    let step = |name: &str, succeeds: bool, p: &mut Vec<String>| match steps.get(name) {
        None => p.push(format!("step {name} did not run")),
        Some(0) if !succeeds => p.push(format!("step {name}: the client got in")),
        Some(rc) if succeeds && *rc != 0 => p.push(format!("step {name}: the client failed ({rc})")),
        Some(_) => {}
    };
    let login = |user: &str, method: &str, p: &mut Vec<String>| {
        let opens = named(events, "ssh.session.open", user, port);
        let closes = named(events, "ssh.session.close", user, port);
        if opens.len() != 1 || closes.len() != 1 {
            p.push(format!("{user}: {} opens and {} closes, want 1 and 1", opens.len(), closes.len()));
            return;
        }
        let (open, close) = (opens[0], closes[0]);
        for (what, e) in [("open", open), ("close", close)] {
            if attr(e, "ssh.auth.method") != method {
                p.push(format!("{user} {what}: ssh.auth.method {}, want {method}", attr(e, "ssh.auth.method")));
            }
            if attr(e, "client.address") != "127.0.0.1" || !attr(e, "client.port").is_u64() {
                p.push(format!("{user} {what}: client {} port {}", attr(e, "client.address"), attr(e, "client.port")));
            }
            if !attr(e, "user.id").is_string() {
                p.push(format!("{user} {what}: no user.id"));
            }
        }
        if method == "publickey" && attr(open, "ssh.key.fingerprint") != fingerprint {
            p.push(format!("{user}: key {} , want {fingerprint}", attr(open, "ssh.key.fingerprint")));
        }
        if attr(open, "ssh.connection.id") != attr(close, "ssh.connection.id") {
            p.push(format!("{user}: the open and the close have different connection ids"));
        }
    };
    let failure = |user: &str, reason: Option<&str>, p: &mut Vec<String>| {
        let failures = named(events, "ssh.auth.failure", user, port);
        if failures.is_empty() {
            p.push(format!("{user}: no ssh.auth.failure"));
        }
        if let Some(reason) = reason
            && !failures.iter().any(|e| attr(e, "ssh.failure.reason") == reason)
        {
            let seen: Vec<String> = failures.iter().map(|e| attr(e, "ssh.failure.reason").to_string()).collect();
            p.push(format!("{user}: no failure with reason {reason} (saw {})", seen.join(", ")));
        }
        if !named(events, "ssh.session.open", user, port).is_empty() {
            p.push(format!("{user}: a session opened for a failed login"));
        }
    };
    if pam {
        step("key-login", true, &mut p);
        login("sl-vm-alice", "publickey", &mut p);
        step("wrong-key", false, &mut p);
        failure("sl-vm-bob", None, &mut p);
        step("invalid-user", false, &mut p);
        failure("sl-vm-nosuch", Some("invalid_user"), &mut p);
        step("wrong-password", false, &mut p);
        failure("sl-vm-carol", Some("wrong_password"), &mut p);
        step("password-login", true, &mut p);
        login("sl-vm-erin", "password", &mut p);
    } else {
        step("nopam-key-login", true, &mut p);
        login("sl-vm-dave", "publickey", &mut p);
        step("nopam-wrong-key", false, &mut p);
        failure("sl-vm-bob", None, &mut p);
    }
    let expected_users: &[&str] = if pam {
        &["sl-vm-alice", "sl-vm-bob", "sl-vm-nosuch", "sl-vm-carol", "sl-vm-erin"]
    } else {
        &["sl-vm-dave", "sl-vm-bob"]
    };
    let mine: Vec<&Value> = events.iter().filter(|e| attr(e, "server.port") == port).collect();
    for e in &mine {
        if !expected_users.iter().any(|u| attr(e, "user.name") == *u) {
            p.push(format!("an event nobody caused: {e}"));
        }
    }
    Row { pam, problems: p, events: mine.len() }
}
