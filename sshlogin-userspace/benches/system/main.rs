//! `cargo xtask bench`: what sshlogin costs, measured side by side in one
//! run against nothing and against auditd, on real syscalls, real logins and
//! a real burst. Needs root. Writes a Markdown report (`--out`).
//!
//! `--quick`: one short repetition of everything (CI's smoke run; no
//! targets are judged). `--footprint`: only the burst and the footprint,
//! a partial report (for work on the daemon's own memory and CPU).
//! `--session`: only fork + exec outside and inside SSH sessions, a partial
//! report (for work on session activity).

mod delivery;
mod footprint;
mod guest;
mod report;
mod session;
mod stats;
mod syscalls;

use std::{collections::BTreeMap, fs, path::PathBuf, process::Command, thread, time::Duration};

use sshlogin_e2e::harness;
use syscalls::{Call, Condition};

struct Plan {
    quick: bool,
    reps: usize,
    calls: u64,
    forks: u64,
    /// fork + exec + wait iterations per run of the session section.
    execs: u64,
    logins: usize,
    burst: usize,
    idle: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let pipeline = args.iter().position(|a| a == "--pipeline").and_then(|i| args.get(i + 1)).cloned();
    let footprint_only = args.iter().any(|a| a == "--footprint");
    if args.iter().any(|a| a == "--list") {
        return; // cargo bench asks the harness for its benchmarks
    }
    if let Some(daemon) = args.iter().position(|a| a == "--guest-syscalls").and_then(|i| args.get(i + 1)) {
        return guest::run(daemon); // inside the guest of `cargo xtask bench --guest`
    }
    if let Some(n) = args.iter().position(|a| a == "--emit").and_then(|i| args.get(i + 1)?.parse().ok()) {
        return syscalls::send_lines(n); // the emit path's sshd (syscalls::emit_path)
    }
    if let Some(n) = args.iter().position(|a| a == session::LOOP_FLAG).and_then(|i| args.get(i + 1)?.parse().ok()) {
        return session::loop_child(n); // the session section's loop (session::measure)
    }
    let _guard = harness::privileged_alone();
    let plan = if quick {
        Plan {
            quick,
            reps: 1,
            calls: 100_000,
            forks: 300,
            execs: 200,
            logins: 5,
            burst: 40,
            idle: Duration::from_secs(3),
        }
    } else {
        Plan {
            quick,
            reps: 5,
            calls: 2_000_000,
            forks: 4_000,
            execs: 1_000,
            logins: 100,
            burst: 300,
            idle: Duration::from_secs(10),
        }
    };
    let bin = env!("CARGO_BIN_EXE_sshlogin");
    harness::use_binary(bin);
    let mut r = report::Report::new(plan.quick);
    if footprint_only {
        return finish(footprint(&plan, bin, r, pipeline), out);
    }
    if args.iter().any(|a| a == "--session") {
        session(&plan, bin, &mut r, None);
        return finish(r, out);
    }

    eprintln!("bench: syscall costs ({} repetitions)", plan.reps);
    let auditd = Command::new("auditd").arg("-v").output().is_ok();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let mut costs: BTreeMap<(Condition, Call), Vec<f64>> = BTreeMap::new();
    for _ in 0..plan.reps {
        for cond in Condition::ALL {
            if cond == Condition::Auditd && !auditd {
                continue;
            }
            let setup = syscalls::Setup::start(cond, bin);
            thread::sleep(Duration::from_millis(300));
            let work: Vec<(Call, u64)> =
                Call::ALL.iter().map(|&c| (c, if c == Call::ForkExit { plan.forks } else { plan.calls })).collect();
            for (call, ns) in Call::ALL.iter().zip(syscalls::measure_in_child(&work, cpus - 1)) {
                costs.entry((cond, *call)).or_default().push(ns);
            }
            drop(setup);
        }
    }
    let default_raw = sshlogin::config::DEFAULT_SYSCALL_PROBES == sshlogin::probes::SyscallProbes::Raw;
    r.syscalls(&costs, auditd, default_raw);

    eprintln!("bench: in-kernel cost per program");
    let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF run-time statistics");
    let (floor, exit_floor) = floors(&plan);
    let pid_helper = pid_helper(&plan, floor);
    let mut programs: Vec<(String, BTreeMap<String, f64>)> = Vec::new();
    let emitter = syscalls::emitter().display().to_string();
    for (mode, cond) in [("tracepoints", Condition::Sshlogin), ("raw", Condition::SshloginRaw)] {
        let daemon =
            syscalls::Setup::start_with(cond, bin, &["--sshd-path", "/usr/sbin/sshd", "--sshd-path", &emitter]);
        for (label, work) in [
            (
                "filtered out: sendto",
                Box::new(|| {
                    syscalls::ns_per_call(Call::Sendto, plan.calls);
                }) as Box<dyn Fn()>,
            ),
            (
                "filtered out: setresuid",
                Box::new(|| {
                    syscalls::ns_per_call(Call::Setresuid, plan.calls);
                }),
            ),
            (
                "filtered out: getpid",
                Box::new(|| {
                    syscalls::ns_per_call(Call::Getpid, plan.calls);
                }),
            ),
            (
                "filtered out: fork + exit",
                Box::new(|| {
                    syscalls::ns_per_call(Call::ForkExit, plan.forks);
                }),
            ),
            ("emit path: sendto by sshd", Box::new(|| syscalls::emit_path(plan.calls / 10))),
        ] {
            let before = syscalls::program_stats();
            work();
            programs.push((format!("{mode}: {label}"), syscalls::per_run(&before, &syscalls::program_stats())));
        }
        drop(daemon);
    }
    drop(stats_fd);
    r.programs(floor, exit_floor, pid_helper, &programs);
    session(&plan, bin, &mut r, Some((floor, exit_floor)));

    eprintln!("bench: login to delivery ({} logins)", plan.logins);
    let rita = harness::user("sl-rita");
    let sshd = harness::Sshd::start(true, "");
    let (port, arrivals) = delivery::receiver();
    let endpoint = format!("http://127.0.0.1:{port}");
    let login = || {
        let out = harness::ssh_key(sshd.port, rita.name, &rita.key, "true");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    // As many logins with no daemon, in alternating blocks (each starting
    // with the other set-up than the one before): what sshlogin adds to a
    // login itself, with the machine's drift shared by both.
    let blocks = 5;
    let per_block = plan.logins.div_ceil(blocks);
    let (mut from_connect, mut from_kernel, mut with, mut without) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for block in 0..blocks {
        for with_daemon in [block % 2 == 0, block % 2 != 0] {
            if with_daemon {
                let daemon = syscalls::Setup::Sshlogin(syscalls::start_sshlogin(bin, &["--otlp-endpoint", &endpoint]));
                let (c, k, w) = delivery::logins(per_block, login, rita.name, &arrivals);
                drop(daemon);
                from_connect.extend(c);
                from_kernel.extend(k);
                with.extend(w);
            } else {
                without.extend(delivery::login_times(per_block, login));
            }
        }
    }
    drop(sshd);
    r.delivery(&from_connect, &from_kernel, &with, &without);

    let backlog = if plan.quick { 2_000 } else { 20_000 };
    eprintln!("bench: a webhook backlog of {backlog} events");
    r.webhook_backlog(backlog, delivery::webhook_backlog(backlog));

    finish(footprint(&plan, bin, r, pipeline), out);
}

/// What BPF statistics add to a program run: the empty `calibrate` program
/// on a syscall nothing else uses, and on `sched_process_exit` in a fork +
/// exit loop (what any program on that path pays in cache misses).
/// Statistics must be on.
fn floors(plan: &Plan) -> (f64, f64) {
    let floor = {
        let _cal = sshlogin::probes::Calibration::attach("calibrate", "syscalls", "sys_enter_getppid")
            .expect("attach calibrate");
        let before = syscalls::program_stats();
        for _ in 0..plan.calls {
            // SAFETY: getppid has no arguments.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        syscalls::per_run(&before, &syscalls::program_stats()).get("calibrate").copied().unwrap_or(0.0)
    };
    let exit_floor = {
        let _cal = sshlogin::probes::Calibration::attach("calibrate", "sched", "sched_process_exit")
            .expect("attach calibrate");
        let before = syscalls::program_stats();
        syscalls::ns_per_call(Call::ForkExit, plan.forks);
        syscalls::per_run(&before, &syscalls::program_stats()).get("calibrate").copied().unwrap_or(0.0)
    };
    (floor, exit_floor)
}

/// What the one helper call of a membership question costs per run
/// (`calibrate_pid` minus the empty program). Statistics must be on.
fn pid_helper(plan: &Plan, floor: f64) -> f64 {
    let _cal = sshlogin::probes::Calibration::attach("calibrate_pid", "syscalls", "sys_enter_getppid")
        .expect("attach calibrate_pid");
    let before = syscalls::program_stats();
    for _ in 0..plan.calls {
        // SAFETY: getppid has no arguments.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let ns = syscalls::per_run(&before, &syscalls::program_stats()).get("calibrate_pid").copied().unwrap_or(0.0);
    (ns - floor).max(0.0)
}

/// The session section: fork + exec outside and inside an SSH session.
fn session(plan: &Plan, bin: &str, r: &mut report::Report, floors: Option<(f64, f64)>) {
    eprintln!("bench: fork + exec outside and inside an SSH session ({} repetitions)", plan.reps);
    let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF run-time statistics");
    let (floor, exit_floor) = floors.unwrap_or_else(|| self::floors(plan));
    let results = session::measure(plan.reps, plan.execs, bin);
    drop(stats_fd);
    r.session(&results, floor, exit_floor);
}

/// Sections 5 to 7: a burst of failed logins against an idle daemon, its
/// memory and CPU.
fn footprint(plan: &Plan, bin: &str, mut r: report::Report, pipeline: Option<String>) -> report::Report {
    eprintln!("bench: footprint and a burst of {} failed logins", plan.burst);
    let metrics_port = harness::free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    // As deployed: the OTLP exporter behind its spool. stdout too, for
    // counting the events.
    let (otlp_port, _arrivals) = delivery::receiver();
    let endpoint = format!("http://127.0.0.1:{otlp_port}");
    let mut daemon = harness::Daemon::start(&["--metrics-listen", &listen, "--stdout", "--otlp-endpoint", &endpoint]);
    thread::sleep(Duration::from_secs(1));
    let pid = daemon.pid();
    let rss_idle = report::rss_kib(pid);
    let memory_idle = footprint::memory(pid, bin);
    let ctx0 = report::context_switches(pid);
    thread::sleep(plan.idle);
    let wakeups = report::wakeups(&ctx0, &report::context_switches(pid)) as f64 / plan.idle.as_secs_f64();
    let ned = harness::user("sl-ned");
    let sshd = harness::Sshd::start(true, "MaxStartups 2000\nMaxAuthTries 6\n");
    let logged_before = harness::logged(&format!("Failed password for {} from", ned.name)).len();
    let cpu0 = report::cpu_ticks(pid);
    let threads0 = footprint::threads(pid);
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..plan.burst)
        .map(|_| {
            let port = sshd.port;
            thread::spawn(move || harness::ssh_password(port, "sl-ned", "wrong-password", "true"))
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let elapsed = started.elapsed();
    let logged = harness::logged_settled(&format!("Failed password for {} from", ned.name)).len() - logged_before;
    harness::eventually("the burst's failures reported", 120, || {
        daemon.settle(Duration::from_millis(200));
        daemon.events_for("ssh.auth.failure", ned.name).len() >= logged
    });
    daemon.settle(Duration::from_secs(2));
    let events = daemon.events_for("ssh.auth.failure", ned.name).len();
    let cpu = report::cpu_ticks(pid) - cpu0;
    let threads = footprint::cpu_by_thread(&threads0, &footprint::threads(pid));
    let rss_after = report::rss_kib(pid);
    let memory_after = footprint::memory(pid, bin);
    let dropped: u64 = ["ringbuf_full", "read_failed", "pending_full"]
        .iter()
        .map(|reason| harness::metric(metrics_port, &format!("sshlogin_kernel_dropped_total{{reason=\"{reason}\"}}")))
        .sum();
    let records = harness::metric(metrics_port, "sshlogin_records_decoded_total");
    daemon.stop();
    drop(sshd);
    r.burst(plan.burst, logged, events, elapsed, dropped, records);
    // The report follows the numbering: 6 pipeline, 7 footprint.
    if let Some(path) = pipeline {
        r.pipeline(&path);
    }
    r.footprint(&report::Footprint {
        rss_idle,
        rss_after,
        wakeups,
        cpu_ticks: cpu,
        events,
        records,
        binary: fs::metadata(bin).map(|m| m.len()).unwrap_or(0),
        memory_idle,
        memory_after,
        threads,
    });
    r
}

fn finish(r: report::Report, out: Option<PathBuf>) {
    let text = r.finish();
    println!("{text}");
    if let Some(out) = out {
        // The guest's section is written by `cargo xtask bench --guest`,
        // not by this run: keep it.
        let kept = fs::read_to_string(&out).ok().and_then(|old| report::guest_section(&old).map(str::to_owned));
        let text = match kept {
            Some(section) => format!("{text}\n{section}\n"),
            None => text,
        };
        fs::write(&out, &text).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
        eprintln!("bench: wrote {}", out.display());
    }
}
