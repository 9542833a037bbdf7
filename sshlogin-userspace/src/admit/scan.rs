//! The sshd processes that ran before the daemon started: found in /proc,
//! checked like a new tree (root, an sshd name, an sshd binary by device
//! and inode), and written into the kernel's membership map so that their
//! records count from now on.
//!
//! The probes are attached first, so a process forked meanwhile is either
//! seen here or made a member by the kernel at its fork; the descendants
//! are read twice for the same reason. An entry whose process exited while
//! it was written is taken out again: a stale entry would let a later
//! process with the same pid in.

use std::{collections::HashMap, fs};

use super::binaries::{Binaries, exe_of};
use crate::{
    correlate::process::Role,
    decode::TreeId,
    host::{procfs::parse_stat, socket},
    probes::Membership,
};

/// One process of /proc.
#[derive(Clone, Debug)]
struct Proc {
    pid: u32,
    ppid: u32,
    ruid: u32,
    comm: String,
    start_ns: u64,
}

/// An sshd process found running, for the correlator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub pid: u32,
    /// Its parent, when that is a member too.
    pub parent: Option<u32>,
    pub role: Role,
    pub start_ns: u64,
    /// Its real uid.
    pub uid: u32,
    /// Its title (`sshd: alice@pts/0`), which tells a session child
    /// (`user@tty` or `user@notty`) from a pre-authentication child.
    pub title: String,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub seeds: Vec<Seed>,
    pub trees: Vec<TreeId>,
    /// (pid, executable) of root sshd-named processes refused.
    pub refused: Vec<(u32, String)>,
    /// Binaries admitted because a listener of this host runs them.
    pub discovered: Vec<String>,
}

fn read_all() -> HashMap<u32, Proc> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64;
    let Ok(dir) = fs::read_dir("/proc") else { return HashMap::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (comm, ppid, ticks) = parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let ruid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()?;
            Some((pid, Proc { pid, ppid, ruid, comm, start_ns: ticks.saturating_mul(1_000_000_000 / hz) }))
        })
        .collect()
}

fn title(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_string()
}

/// A listener of this host: it runs from init's root in init's mount
/// namespace (not the daemon's own: systemd gives the unit a private one;
/// the daemon's where init's cannot be read) and listens on TCP. A
/// chroot's or container's sshd does not qualify and stays refused unless
/// configured.
fn is_host_listener(pid: u32) -> bool {
    let same = |what: &str| {
        let host =
            fs::read_link(format!("/proc/1/{what}")).or_else(|_| fs::read_link(format!("/proc/self/{what}"))).ok();
        host.is_some() && fs::read_link(format!("/proc/{pid}/{what}")).ok() == host
    };
    same("root") && same("ns/mnt") && socket::listens(pid) == Some(true)
}

/// A root process named like sshd whose parent is not: the top of a tree.
#[derive(Clone, Debug)]
pub struct Top {
    pub pid: u32,
    /// Its executable as the host sees it.
    pub exe: String,
    /// Whether that is one of the sshd binaries.
    pub admitted: bool,
    start_ns: u64,
    ruid: u32,
}

/// The tops of the sshd trees in `procs`; a host listener's binaries (and
/// the sshd-session/sshd-auth it names) join `binaries` first, and are
/// listed in `discovered`.
fn tops(
    procs: &HashMap<u32, Proc>,
    family: &[String],
    binaries: &mut Binaries,
    discovered: &mut Vec<String>,
) -> Vec<Top> {
    let named = |p: &Proc| p.ruid == 0 && family.contains(&p.comm);
    let mut found: Vec<&Proc> =
        procs.values().filter(|p| named(p) && !procs.get(&p.ppid).is_some_and(&named)).collect();
    found.sort_by_key(|p| p.pid);
    let mut out = Vec::new();
    for top in found {
        let Some(exe) = exe_of(top.pid) else { continue };
        if !binaries.contains(exe.id) {
            if exe.replaced && binaries.is_known_path(&exe.path) {
                // sshd upgraded under a listener or a session that still runs
                // the old file, exec'd from an sshd path.
                binaries.add_running(&exe);
            } else if is_host_listener(top.pid) {
                discovered.extend(binaries.add_listener(&exe));
            }
        }
        let admitted = binaries.contains(exe.id);
        out.push(Top { pid: top.pid, exe: exe.path, admitted, start_ns: top.start_ns, ruid: top.ruid });
    }
    out
}

/// The sshd trees running now, for `sshlogin check`: nothing is written.
pub fn running(family: &[String], binaries: &mut Binaries) -> (Vec<Top>, Vec<String>) {
    let mut discovered = Vec::new();
    let found = tops(&read_all(), family, binaries, &mut discovered);
    (found, discovered)
}

/// Finds the sshd trees running now and makes their processes members.
pub fn scan(family: &[String], binaries: &mut Binaries, members: &dyn Membership) -> Scan {
    let mut out = Scan::default();
    let mut admitted: HashMap<u32, (TreeId, Role)> = HashMap::new();
    for top in tops(&read_all(), family, binaries, &mut out.discovered) {
        if !top.admitted {
            out.refused.push((top.pid, top.exe));
            continue;
        }
        let tree = TreeId { root: top.pid, ns: top.start_ns };
        // A monitor whose listener has gone (sshd restarted, its sessions
        // kept) holds its client's connection.
        let role =
            if socket::tcp_connection(top.pid).is_some_and(|c| c.is_some()) { Role::Monitor } else { Role::Listener };
        if members.add(top.pid, tree).is_ok() {
            admitted.insert(top.pid, (tree, role));
            out.trees.push(tree);
            out.seeds.push(Seed {
                pid: top.pid,
                parent: None,
                role,
                start_ns: top.start_ns,
                uid: top.ruid,
                title: title(top.pid),
            });
        }
    }
    // Descendants: a child of a root member that still has an sshd name
    // (one that exec'd something else left its tree).
    for _pass in 0..2 {
        let procs = read_all();
        let mut children: HashMap<u32, Vec<&Proc>> = HashMap::new();
        for p in procs.values() {
            children.entry(p.ppid).or_default().push(p);
        }
        let mut queue: Vec<u32> = admitted.keys().copied().collect();
        while let Some(parent) = queue.pop() {
            let Some(p) = procs.get(&parent) else { continue };
            let (tree, role) = admitted[&parent];
            if p.ruid != 0 {
                continue;
            }
            for c in children.get(&parent).into_iter().flatten() {
                if admitted.contains_key(&c.pid) || !family.contains(&c.comm) {
                    continue;
                }
                let child_role = if role == Role::Listener { Role::Monitor } else { Role::Child };
                if members.add(c.pid, tree).is_err() {
                    continue;
                }
                admitted.insert(c.pid, (tree, child_role));
                out.seeds.push(Seed {
                    pid: c.pid,
                    parent: Some(parent),
                    role: child_role,
                    start_ns: c.start_ns,
                    uid: c.ruid,
                    title: title(c.pid),
                });
                queue.push(c.pid);
            }
        }
    }
    // Whatever exited while it was being added must not stay in the map.
    let now = read_all();
    out.seeds.retain(|s| {
        let alive = now.get(&s.pid).is_some_and(|p| p.start_ns == s.start_ns);
        if !alive && members.tree_of(s.pid) == admitted.get(&s.pid).map(|a| a.0) {
            members.remove(s.pid);
        }
        alive
    });
    out
}
