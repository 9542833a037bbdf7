//! Session activity: what fork + exec + wait of `/bin/true` costs outside
//! any SSH session and inside one, with and without the daemon, the
//! set-ups alternating; the sched programs' own run time from BPF
//! statistics; and what the daemon made of the session's execs (reported,
//! held back by the rate limit).
//!
//! The loop runs in a copy of this benchmark (`--fork-exec N`), the same
//! program in both places: started directly by root outside any session,
//! and as the command of a key login to a loopback sshd inside one. It
//! says when it is ready and waits for a line on stdin before it starts,
//! so the login itself is neither timed nor counted.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use sshlogin_e2e::harness;

use crate::syscalls::{self, pin_to_cpu, program_stats};

/// The flag that makes this benchmark the loop.
pub const LOOP_FLAG: &str = "--fork-exec";

/// The user whose session runs the loop.
const USER: &str = "sl-tess";

/// The programs a process's life runs, in the order of a loop iteration
/// (`task_newtask` makes session processes, in the parent).
pub const PROGRAMS: [&str; 4] = ["task_newtask", "sched_process_fork", "sched_process_exec", "sched_process_exit"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// A root process outside any session (a cron-like loop).
    Outside,
    /// The command of an SSH session.
    Inside,
}

/// One timed loop.
#[derive(Default, Clone)]
pub struct Run {
    /// µs per iteration, wall time.
    pub wall_us: f64,
    /// µs per iteration, CPU time of the loop and its children: what the
    /// iteration itself cost, without the time other processes of the host
    /// had the CPU.
    pub cpu_us: f64,
    /// By program: (runs, ns per run, uncorrected) while the loop ran.
    pub programs: BTreeMap<String, (u64, f64)>,
}

/// What the daemon made of one session's loop.
#[derive(Default, Clone)]
pub struct Counted {
    /// ssh.session.exec events.
    pub reported: u64,
    /// `sshlogin_session_dropped_total` by reason (only those above zero).
    pub dropped: BTreeMap<String, u64>,
    /// The daemon's CPU time (ns, its threads' run time) from the loop's
    /// start until it had counted every exec.
    pub cpu_ns: u64,
    /// The daemon's context switches over the same time: each is a
    /// wake-up.
    pub wakeups: u64,
    /// Seconds the loop ran.
    pub loop_secs: f64,
}

#[derive(Default)]
pub struct Results {
    pub iterations: u64,
    /// (place, with sshlogin) → one run per repetition.
    pub runs: BTreeMap<(Place, bool), Vec<Run>>,
    /// One per repetition: the session's loop with the daemon.
    pub counted: Vec<Counted>,
    pub user: &'static str,
}

/// `--fork-exec N`: says "ready", waits for a line on stdin, runs `n`
/// fork + exec + wait of /bin/true on one CPU and prints µs per iteration:
/// wall time, and CPU time of the loop and its children.
pub fn loop_child(n: u64) {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    pin_to_cpu(cpus - 1);
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    let cpu0 = cpu_us();
    let started = Instant::now();
    // SAFETY: a single-threaded process; the child only execs or exits.
    unsafe {
        for _ in 0..n {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(status == 0, "/bin/true failed: status {status}");
        }
    }
    let wall = started.elapsed().as_nanos() as f64 / 1000.0;
    println!("{:.3} {:.3}", wall / n as f64, (cpu_us() - cpu0) / n as f64);
}

/// CPU time (user + system) of this process and of its children waited
/// for, µs.
fn cpu_us() -> f64 {
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        total += us(ru.ru_utime) + us(ru.ru_stime);
    }
    total
}

/// A copy of this benchmark every user may run (the session's user
/// cannot reach the build tree).
fn loop_binary() -> PathBuf {
    let dir = std::env::temp_dir().join("sshlogin-bench-session");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("fork-exec");
    let _ = std::fs::remove_file(&exe);
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// A started loop, waiting for its go.
struct Waiting {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Waiting {
    fn start(mut cmd: Command) -> Waiting {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("start the loop");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the loop did not start ({cmd:?})");
        Waiting { child, stdin, stdout }
    }

    /// Runs the loop; BPF statistics of the programs over it.
    fn go(mut self) -> Run {
        let before = program_stats();
        writeln!(self.stdin, "go").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let after = program_stats();
        let parsed: Vec<f64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        let [wall_us, cpu_us] = parsed[..] else { panic!("the loop printed {line:?}") };
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the loop ended with {status}");
        let programs = after
            .iter()
            .filter(|(name, _)| PROGRAMS.contains(&name.as_str()))
            .filter_map(|(name, &(cnt, ns))| {
                let (c0, n0) = before.get(name).copied().unwrap_or((0, 0));
                let runs = cnt.checked_sub(c0).filter(|&r| r > 0)?;
                Some((name.clone(), (runs, (ns - n0) as f64 / runs as f64)))
            })
            .collect();
        Run { wall_us, cpu_us, programs }
    }
}

/// Run time of `pid`'s threads (`/proc/PID/task/*/schedstat`, ns): unlike
/// `/proc/PID/stat`, not counted in 10 ms ticks. A thread that ended takes
/// its time with it.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the daemon just started is idle (its start-up reads /proc
/// and loads the kernel side): less than 2 ms of CPU in 200 ms, for up to
/// 5 s.
fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = cpu_ns(pid);
    loop {
        thread::sleep(Duration::from_millis(200));
        let now = cpu_ns(pid);
        if now.saturating_sub(last) < 2_000_000 || Instant::now() > deadline {
            return;
        }
        last = now;
    }
}

/// `sshlogin_session_dropped_total` by reason and the ssh.session.exec
/// events, from the metrics endpoint.
fn counts(port: u16) -> (u64, BTreeMap<String, u64>) {
    let text = harness::metrics_text(port);
    let reported = text
        .lines()
        .find_map(|l| l.strip_prefix("sshlogin_events_total{event=\"ssh.session.exec\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let dropped = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("sshlogin_session_dropped_total{reason=\"")?;
            let (reason, value) = rest.split_once("\"} ")?;
            let n: u64 = value.trim().parse().ok()?;
            (n > 0).then(|| (reason.to_string(), n))
        })
        .collect();
    (reported, dropped)
}

/// The alternating runs: each repetition measures both set-ups, starting
/// with the other one than the repetition before.
pub fn measure(reps: usize, iterations: u64, bin: &str) -> Results {
    let exe = loop_binary();
    let user = harness::user(USER);
    let sshd = harness::Sshd::start(true, "");
    let n = iterations.to_string();
    let outside = || {
        let mut cmd = Command::new(&exe);
        cmd.args([LOOP_FLAG, &n]);
        Waiting::start(cmd).go()
    };
    let command = format!("{} {LOOP_FLAG} {n}", exe.display());
    let inside = || {
        let mut cmd = harness::key_client(&user.key);
        cmd.args(["-p", &sshd.port.to_string(), "-l", user.name, "127.0.0.1", &command]);
        Waiting::start(cmd)
    };
    let mut out = Results { iterations, user: USER, ..Results::default() };
    for rep in 0..reps {
        let order = if rep % 2 == 0 { [false, true] } else { [true, false] };
        for with in order {
            let metrics_port = harness::free_port();
            let listen = format!("127.0.0.1:{metrics_port}");
            let setup = if with {
                syscalls::Setup::Sshlogin(syscalls::start_sshlogin(bin, &["--metrics-listen", &listen]))
            } else {
                syscalls::Setup::Nothing
            };
            match &setup {
                syscalls::Setup::Sshlogin(daemon) => settle(daemon.id()),
                _ => {
                    assert!(
                        !program_stats().contains_key("sched_process_fork"),
                        "another sshlogin's programs are loaded: the figures with nothing attached would not be"
                    );
                    thread::sleep(Duration::from_millis(300));
                }
            }
            out.runs.entry((Place::Outside, with)).or_default().push(outside());
            let waiting = inside();
            let syscalls::Setup::Sshlogin(daemon) = &setup else {
                out.runs.entry((Place::Inside, false)).or_default().push(waiting.go());
                continue;
            };
            let pid = daemon.id();
            let (cpu0, ctx0) = (cpu_ns(pid), crate::report::context_switches(pid));
            let started = Instant::now();
            let run = waiting.go();
            let loop_secs = run.wall_us * iterations as f64 / 1e6;
            // Until every exec of the loop is accounted for and the counts
            // stand still (the daemon reads the ring and counts as it goes).
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut last = (0, BTreeMap::new());
            loop {
                thread::sleep(Duration::from_millis(300));
                let now = counts(metrics_port);
                let total = now.0 + now.1.values().sum::<u64>();
                let done = total >= iterations && now == last;
                last = now;
                if done || Instant::now() > deadline {
                    break;
                }
            }
            let cpu_ns = cpu_ns(pid).saturating_sub(cpu0);
            let wakeups = crate::report::wakeups(&ctx0, &crate::report::context_switches(pid));
            eprintln!(
                "bench: the session's loop with sshlogin: {} ssh.session.exec, dropped {:?}, counted {:.1} s after the loop started",
                last.0,
                last.1,
                started.elapsed().as_secs_f64()
            );
            out.counted.push(Counted { reported: last.0, dropped: last.1, cpu_ns, wakeups, loop_secs });
            out.runs.entry((Place::Inside, true)).or_default().push(run);
            drop(setup);
        }
    }
    drop(sshd);
    let _ = std::fs::remove_file(&exe);
    out
}
