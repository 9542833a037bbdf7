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

    let auto = Pass::read(dir, "", &mut problems);
    facts.insert("backend", auto.backend.clone());
    check_check(cell, dir, &facts, &mut problems);
    if let Some(want) = cell.backend
        && auto.backend != want
    {
        problems.push(format!("--syscall-probes auto got {:?}, want {want}:\n{}", auto.backend, auto.log));
    }

    let fingerprint = read(dir, "good-fingerprint");
    let mut rows =
        vec![half(true, &auto.steps, &auto.events, &fingerprint), half(false, &auto.steps, &auto.events, &fingerprint)];
    // Where auto got fentry the guest ran the clients again with the
    // tracepoints: the same logins must make the same events.
    if auto.backend == "fentry" {
        let tp = Pass::read(dir, "-tracepoints", &mut problems);
        if tp.backend != "tracepoints" {
            problems.push(format!("the second pass ran {:?}, not the tracepoints:\n{}", tp.backend, tp.log));
        }
        for row in &mut rows {
            let again = half(row.pam, &tp.steps, &tp.events, &fingerprint);
            row.problems.extend(again.problems.into_iter().map(|p| format!("tracepoints: {p}")));
            let port = if row.pam { 2201 } else { 2202 };
            let (a, b) = (comparable(&auto.events, port), comparable(&tp.events, port));
            if a != b {
                row.problems.push(format!(
                    "fentry and tracepoints made different events:\n  fentry only: {:?}\n  tracepoints only: {:?}",
                    a.iter().filter(|e| !b.contains(e)).collect::<Vec<_>>(),
                    b.iter().filter(|e| !a.contains(e)).collect::<Vec<_>>()
                ));
            }
        }
    }
    Outcome { cell: *cell, facts, problems, rows }
}

/// One run of the clients with one daemon (`events{suffix}.jsonl`, …).
struct Pass {
    steps: BTreeMap<String, i32>,
    events: Vec<Value>,
    log: String,
    /// The syscall probes the daemon said it attached.
    backend: String,
}

impl Pass {
    fn read(dir: &Path, suffix: &str, problems: &mut Vec<String>) -> Pass {
        let steps = read(dir, &format!("steps{suffix}"))
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(-1)))
            .collect();
        let text = read(dir, &format!("events{suffix}.jsonl"));
        let events: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let lines = text.lines().count();
        if lines != events.len() {
            problems.push(format!("{} of {lines} stdout lines are not JSON events", lines - events.len()));
        }
        let log = read(dir, &format!("daemon{suffix}.log"));
        let rc = read(dir, &format!("daemon{suffix}.rc"));
        if rc != "0" {
            problems.push(format!("the daemon{suffix} exited with {rc:?}; its log:\n{log}"));
        }
        if !log.contains("decode_errors=0") {
            problems.push(format!("the daemon{suffix}'s summary shows decode errors or is missing:\n{log}"));
        }
        if log.contains(" ERROR ") {
            problems.push(format!("the daemon{suffix} logged errors:\n{log}"));
        }
        let backend = backend(&log).unwrap_or("?").to_string();
        Pass { steps, events, log, backend }
    }
}

/// `syscall_probes=NAME` of the daemon's "probes attached" line.
fn backend(log: &str) -> Option<&str> {
    let line = log.lines().find(|l| l.contains("probes attached"))?;
    let rest = &line[line.find("syscall_probes=")? + "syscall_probes=".len()..];
    rest.split_whitespace().next()
}

/// The events of one sshd (by port) without what differs between two runs
/// of the same logins (times, pids, client ports, ids, durations, the audit
/// session number, the body that repeats them), sorted.
fn comparable(events: &[Value], port: u16) -> Vec<String> {
    const VARYING: &[&str] = &[
        "client.port",
        "log.record.uid",
        "process.pid",
        "process.parent_pid",
        "ssh.connection.id",
        "ssh.session.duration_ms",
        "linux.audit.session_id",
    ];
    let mut out: Vec<String> = events
        .iter()
        .filter(|e| attr(e, "server.port") == port)
        .map(|e| {
            let mut attributes = e["attributes"].clone();
            if let Some(map) = attributes.as_object_mut() {
                map.retain(|k, _| !VARYING.contains(&k.as_str()));
            }
            format!("{} {} {attributes}", e["event_name"], e["severity_text"])
        })
        .collect();
    out.sort();
    out
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
    for item in ["tracefs", "tracepoints", "pam-audit", "syslog"] {
        if !text.lines().any(|l| l.starts_with("ok") && l.split_whitespace().nth(1) == Some(item)) {
            problems.push(format!("sshlogin check: {item} is not ok:\n{text}"));
        }
    }
    // ok with fentry; a warning (with the kernel's reason) when auto fell
    // back to the tracepoints. Either way the backend the daemon got.
    let backend = &facts["backend"];
    let said = format!("syscall probes: {backend}");
    let ebpf = text.lines().find(|l| l.split_whitespace().nth(1) == Some("ebpf")).unwrap_or("");
    let fine = if backend == "fentry" { ebpf.starts_with("ok") } else { !ebpf.starts_with("FAIL") };
    if !fine || !ebpf.contains(&said) {
        problems.push(format!("sshlogin check's ebpf item does not say ok with {said:?}:\n{text}"));
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
        // Each login runs `sleep 0.3`: the session's exec of it, tied to
        // the login, with the user's own uids from the kernel.
        let slept = named(events, "ssh.session.exec", user, port).into_iter().any(|e| {
            attr(e, "process.executable.path").as_str().is_some_and(|p| p.ends_with("/sleep"))
                && attr(e, "ssh.connection.id") == attr(open, "ssh.connection.id")
                && attr(e, "process.user.id").as_u64().map(|uid| uid.to_string()).as_deref()
                    == attr(open, "user.id").as_str()
        });
        if !slept {
            p.push(format!("{user}: no ssh.session.exec of sleep in the session, with its connection id and uid"));
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_backend_is_read_from_the_probes_attached_line() {
        let log = "x INFO sshlogin::probes::backend: the kernel refused fentry; syscall probes: tracepoints reason=...\n\
                   x INFO sshlogin::probes: probes attached programs=7 syscall_probes=tracepoints family=[\"sshd\"]";
        assert_eq!(backend(log), Some("tracepoints"));
        assert_eq!(backend("x INFO probes attached programs=7 syscall_probes=fentry"), Some("fentry"));
        assert_eq!(backend("nothing attached"), None);
    }

    #[test]
    fn comparable_events_differ_only_in_what_the_logins_make() {
        let event = |port: u16, pid: u32, method: &str| {
            json!({"event_name": "ssh.session.open", "severity_text": "INFO",
                   "attributes": {"server.port": port, "process.pid": pid, "client.port": pid + 1,
                                  "ssh.auth.method": method, "user.name": "u"}})
        };
        let a = [event(2201, 10, "publickey"), event(2202, 11, "password")];
        let b = [event(2202, 20, "password"), event(2201, 30, "publickey")];
        assert_eq!(comparable(&a, 2201), comparable(&b, 2201));
        assert_eq!(comparable(&a, 2202), comparable(&b, 2202));
        let c = [event(2201, 30, "password")];
        assert_ne!(comparable(&a, 2201), comparable(&c, 2201));
        assert_ne!(comparable(&a, 2201), comparable(&[], 2201));
    }
}
