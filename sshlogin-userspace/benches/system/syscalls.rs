//! Cost of hooked and unhooked syscalls for callers that are not sshd:
//! nothing attached, sshlogin attached, auditd with rules for the same
//! facts; and each program's own run time from BPF statistics.

use std::{
    collections::BTreeMap,
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    Sendto,
    Setresuid,
    ForkExit,
    Getpid,
}

impl Call {
    pub const ALL: [Call; 4] = [Call::Sendto, Call::Setresuid, Call::ForkExit, Call::Getpid];

    /// One word, for the guest's output (`guest.rs`).
    pub fn key(self) -> &'static str {
        match self {
            Call::Sendto => "sendto",
            Call::Setresuid => "setresuid",
            Call::ForkExit => "fork",
            Call::Getpid => "getpid",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Call::Sendto => "sendto (bad fd)",
            Call::Setresuid => "setresuid(-1,-1,-1)",
            Call::ForkExit => "fork + exit + wait",
            Call::Getpid => "getpid (unhooked)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    Nothing,
    /// `--syscall-probes tracepoints`
    Sshlogin,
    /// `--syscall-probes raw`
    SshloginRaw,
    Auditd,
}

impl Condition {
    pub const ALL: [Condition; 4] =
        [Condition::Nothing, Condition::Sshlogin, Condition::SshloginRaw, Condition::Auditd];
}

/// Runs on one CPU so the loop is not migrated between measurements.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// `ns_per_call` of each of `calls`, measured in a child process forked now:
/// audit decides whether to follow a process when it is forked, so only a
/// process forked after the rules were loaded pays what audit costs.
pub fn measure_in_child(calls: &[(Call, u64)], cpu: usize) -> Vec<f64> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe, fork, and in the child only syscalls and _exit (no
    // allocation, no locks), as is required after fork in a threaded program.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe");
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            libc::close(fds[0]);
            pin_to_cpu(cpu);
            for &(call, n) in calls {
                let ns = ns_per_call(call, n);
                libc::write(fds[1], (&ns as *const f64).cast(), 8);
            }
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut out = Vec::new();
        let mut ns = 0f64;
        while libc::read(fds[0], (&mut ns as *mut f64).cast(), 8) == 8 {
            out.push(ns);
        }
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert_eq!(out.len(), calls.len(), "the measuring child died");
        out
    }
}

/// Nanoseconds per call of `call`, over `n` calls.
pub fn ns_per_call(call: Call, n: u64) -> f64 {
    let buf = [0u8; 1];
    let started = Instant::now();
    // SAFETY: each call is made with arguments the kernel rejects or ignores:
    // sendto on fd -1, setresuid leaving every id unchanged, getpid, and a
    // child that exits at once.
    unsafe {
        match call {
            Call::Sendto => {
                for _ in 0..n {
                    libc::sendto(-1, buf.as_ptr().cast(), 1, 0, std::ptr::null(), 0);
                }
            }
            Call::Setresuid => {
                for _ in 0..n {
                    libc::syscall(libc::SYS_setresuid, -1i32, -1i32, -1i32);
                }
            }
            Call::Getpid => {
                for _ in 0..n {
                    libc::syscall(libc::SYS_getpid);
                }
            }
            Call::ForkExit => {
                for _ in 0..n {
                    let pid = libc::fork();
                    if pid == 0 {
                        libc::_exit(0);
                    }
                    let mut status = 0;
                    libc::waitpid(pid, &mut status, 0);
                }
            }
        }
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

/// What is attached while a condition is measured; undone on drop.
pub enum Setup {
    Nothing,
    Sshlogin(Child),
    Auditd(Child),
}

impl Setup {
    pub fn start(c: Condition, sshlogin: &str) -> Setup {
        Self::start_with(c, sshlogin, &[])
    }

    /// As [`Setup::start`], with more flags for the daemon.
    pub fn start_with(c: Condition, sshlogin: &str, extra: &[&str]) -> Setup {
        let with = |mode: &'static str| -> Vec<&str> { [&["--syscall-probes", mode][..], extra].concat() };
        match c {
            Condition::Nothing => Setup::Nothing,
            Condition::Sshlogin => Setup::Sshlogin(start_sshlogin(sshlogin, &with("tracepoints"))),
            Condition::SshloginRaw => Setup::Sshlogin(start_sshlogin(sshlogin, &with("raw"))),
            Condition::Auditd => Setup::Auditd(start_auditd()),
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        match self {
            Setup::Nothing => {}
            Setup::Sshlogin(child) => {
                // SAFETY: a signal to a child we own.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let _ = child.wait();
            }
            Setup::Auditd(child) => {
                let _ = Command::new("auditctl").arg("-D").output();
                let _ = Command::new("auditctl").args(["-e", "0"]).output();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The daemon, printing events to nowhere; waits until its probes are in.
pub fn start_sshlogin(binary: &str, extra: &[&str]) -> Child {
    let state = std::env::temp_dir().join(format!("sshlogin-bench-state-{}", std::process::id()));
    let (child, _log) = sshlogin_e2e::harness::spawn_attached(
        Command::new(binary)
            .args(["run", "--state-dir", state.to_str().unwrap()])
            .args(extra)
            .env("SSHLOGIN_LOG", "info")
            .stdout(Stdio::null()),
    );
    child
}

/// auditd in the foreground with rules that capture what sshlogin's probes
/// do, each as narrow as audit allows: sendto and setresuid by sshd only.
fn start_auditd() -> Child {
    let _ = Command::new("auditctl").arg("-D").output();
    let child =
        Command::new("auditd").arg("-n").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start auditd");
    thread::sleep(Duration::from_millis(800));
    for rule in [
        "-a always,exit -F arch=b64 -S sendto -F exe=/usr/sbin/sshd -k sshlogin",
        "-a always,exit -F arch=b64 -S setresuid -F exe=/usr/sbin/sshd -k sshlogin",
    ] {
        let out = Command::new("auditctl").args(rule.split_whitespace()).output().expect("auditctl");
        assert!(out.status.success(), "auditctl {rule}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = Command::new("auditctl").args(["-e", "1"]).output();
    child
}

/// Per-program (runs, ns) from BPF statistics, by program name: the name
/// the kernel keeps (15 bytes), except for the sched programs, named in
/// full. `sched_process_exec` and `sched_process_exit` are both cut to
/// `sched_process_e`; exec's is told apart as the larger program (it
/// records session execs, exit only forgets processes).
pub fn program_stats() -> BTreeMap<String, (u64, u64)> {
    let mut cut_e: Vec<(u32, (u64, u64))> = Vec::new();
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in aya::programs::loaded_programs().filter_map(Result::ok) {
        let Some(name) = p.name_as_str() else { continue };
        let stats = (p.run_count(), p.run_time().as_nanos() as u64);
        match name {
            "sched_process_e" => cut_e.push((p.size_translated().unwrap_or(0), stats)),
            "sched_process_f" => {
                out.insert("sched_process_fork".into(), stats);
            }
            _ => {
                out.insert(name.to_string(), stats);
            }
        }
    }
    cut_e.sort_by_key(|(size, _)| *size);
    match cut_e[..] {
        [(_, exit), (_, exec)] => {
            out.insert("sched_process_exit".into(), exit);
            out.insert("sched_process_exec".into(), exec);
        }
        // Not one daemon's pair: name them as the kernel does.
        _ => {
            if let Some((_, stats)) = cut_e.last() {
                out.insert("sched_process_e".into(), *stats);
            }
        }
    }
    out
}

/// ns per run of each program between two snapshots.
pub fn per_run(before: &BTreeMap<String, (u64, u64)>, after: &BTreeMap<String, (u64, u64)>) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(name, (cnt, ns))| {
            let (c0, n0) = before.get(name).copied().unwrap_or((0, 0));
            let runs = cnt.checked_sub(c0)?;
            (runs > 0).then(|| (name.clone(), (ns - n0) as f64 / runs as f64))
        })
        .collect()
}

/// Where [`emit_path`] runs from: a copy of this benchmark named `sshd`,
/// which the daemon is told is an sshd binary (`--sshd-path`).
pub fn emitter() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("sshlogin-bench-emitter");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("sshd");
    let _ = std::fs::remove_file(&exe);
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    exe
}

/// The path on which sys_enter_sendto copies a record into the ring
/// buffer: `n` syslog-shaped datagrams sent by a root process exec'd as
/// `sshd` from [`emitter`], a member of an admitted sshd tree.
pub fn emit_path(n: u64) {
    let out = Command::new(emitter()).args(["--emit", &n.to_string()]).output().expect("run the emitter");
    assert!(out.status.success(), "the emitter failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The emitter's body (`--emit N`): `n` datagrams to itself.
pub fn send_lines(n: u64) {
    let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let line = b"<38>Jan  1 00:00:00 sshd[1]: benchmark line";
    let mut buf = [0u8; 128];
    for i in 0..n {
        // SAFETY: send on a socket we own, from a buffer that outlives it.
        unsafe { libc::send(a.as_raw_fd(), line.as_ptr().cast(), line.len(), 0) };
        if i % 64 == 63 {
            while b.recv(&mut buf).is_ok() {}
        }
    }
}
