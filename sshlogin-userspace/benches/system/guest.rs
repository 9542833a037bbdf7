//! `--guest-syscalls DAEMON`: the syscall table alone, for a QEMU guest
//! whose kernel accepts fentry (`cargo xtask bench --guest`): nothing
//! attached, sshlogin with the syscall tracepoints, sshlogin with fentry and
//! auditd with the host bench's rules, alternating (each repetition
//! starting with the next), each measured in a process forked after it was
//! in place. Prints `condition call ns` lines; the host writes the report.

use std::{thread, time::Duration};

use crate::syscalls::{self, Call, Condition, Setup};

/// Under emulation a syscall costs microseconds: fewer calls than on the
/// host, the same alternation. More repetitions than the host's: a
/// measurement under emulation varies by two to three times between
/// repetitions (the min–max of the report), and the medians steady only
/// with more of them.
const REPS: usize = 21;
const CALLS: u64 = 100_000;
const FORKS: u64 = 300;

pub fn run(daemon: &str) {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let work: Vec<(Call, u64)> =
        Call::ALL.iter().map(|&c| (c, if c == Call::ForkExit { FORKS } else { CALLS })).collect();
    // `fentry` explicitly: if the kernel refuses it, the daemon fails to
    // start and so does this run, rather than measure the tracepoints twice.
    let fentry = || Setup::Sshlogin(syscalls::start_sshlogin(daemon, &["--syscall-probes", "fentry"]));
    let setups: [(&str, &dyn Fn() -> Setup); 4] = [
        ("nothing", &|| Setup::Nothing),
        ("tracepoints", &|| Setup::start(Condition::Sshlogin, daemon)),
        ("fentry", &fentry),
        ("auditd", &|| Setup::start(Condition::Auditd, daemon)),
    ];
    for rep in 0..REPS {
        // Each repetition starts with the next set-up: under emulation the
        // first measurement after a daemon stops runs slower, and no set-up
        // should always be the one that pays for it.
        for &(name, start) in setups.iter().cycle().skip(rep % setups.len()).take(setups.len()) {
            let setup = start();
            thread::sleep(Duration::from_millis(300));
            for (call, ns) in Call::ALL.iter().zip(syscalls::measure_in_child(&work, cpus - 1)) {
                println!("{name} {} {ns:.1}", call.key());
            }
            drop(setup);
        }
    }
}
