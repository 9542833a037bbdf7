//! The sshd process tree, from fork and exit records, with /proc filling in
//! processes that started before sshlogin did.
//!
//! OpenSSH runs a listener that forks one monitor per connection; the monitor
//! forks the pre-authentication child first and, once the user is in, the
//! session child. The listener is the sshd-family process whose parent is not
//! in the family; a connection is named by its monitor, the listener's child.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

pub use super::procfs::{NoProc, ProcFs, ProcView};

/// Pids are small integers the kernel hands out: a multiplicative hash is
/// enough, and far cheaper than SipHash on a path taken for every record.
#[derive(Default)]
pub struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by pid.
pub type PidMap<V> = HashMap<u32, V, BuildHasherDefault<PidHasher>>;

#[derive(Clone, Debug, Default)]
struct Proc {
    /// The parent when it is in the sshd family; `None` for a listener or a
    /// process whose parent is unknown.
    parent: Option<u32>,
    start_ns: Option<u64>,
    first_child: Option<u32>,
    exited_ns: Option<u64>,
    /// The executable, looked up once (`Some(None)`: it could not be read).
    exe: Option<Option<String>>,
}

/// How long an exited process stays in the table, so that records of its
/// children still find their connection.
const EXITED_GRACE_NS: u64 = 60_000_000_000;
const MAX_PROCS: usize = 1 << 16;

pub struct ProcessTable {
    procs: PidMap<Proc>,
    family: Vec<String>,
    view: Box<dyn ProcView + Send>,
}

impl ProcessTable {
    pub fn new(family: Vec<String>, view: Box<dyn ProcView + Send>) -> Self {
        ProcessTable { procs: PidMap::default(), family, view }
    }

    pub fn on_fork(&mut self, parent: u32, child: u32, ktime_ns: u64) {
        self.ensure(parent);
        if let Some(p) = self.procs.get_mut(&parent) {
            p.first_child.get_or_insert(child);
        }
        // A pid can be reused; a fork always starts a new life.
        self.procs.insert(child, Proc { parent: Some(parent), start_ns: Some(ktime_ns), ..Proc::default() });
    }

    pub fn on_exit(&mut self, pid: u32, ktime_ns: u64) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exited_ns = Some(ktime_ns);
        }
    }

    /// Drops processes that exited more than a minute before `now_ns`.
    pub fn gc(&mut self, now_ns: u64) {
        self.procs.retain(|_, p| p.exited_ns.is_none_or(|t| now_ns.saturating_sub(t) < EXITED_GRACE_NS));
        if self.procs.len() > MAX_PROCS {
            // Only under a flood of never-exiting pids: forget the oldest.
            let mut starts: Vec<(u64, u32)> =
                self.procs.iter().map(|(pid, p)| (p.start_ns.unwrap_or(0), *pid)).collect();
            starts.sort_unstable();
            for (_, pid) in starts.iter().take(self.procs.len() - MAX_PROCS / 2) {
                self.procs.remove(pid);
            }
        }
    }

    /// Learns an unknown process from the host, once.
    fn ensure(&mut self, pid: u32) {
        if self.procs.contains_key(&pid) {
            return;
        }
        let parent = match self.view.parent(pid) {
            Some((ppid, comm)) if self.family.contains(&comm) => Some(ppid),
            _ => None,
        };
        let start_ns = self.view.start_ns(pid);
        self.procs.insert(pid, Proc { parent, start_ns, ..Proc::default() });
        if let Some(ppid) = parent {
            self.ensure(ppid);
        }
    }

    /// `pid`'s chain up to its listener: (the listener, the monitor). The
    /// monitor is `None` when `pid` is the listener.
    fn chain(&mut self, pid: u32) -> Option<(u32, Option<u32>)> {
        self.ensure(pid);
        let mut below = None;
        let mut current = pid;
        // Bounded: sshd trees are three or four deep; a cycle from pid reuse
        // must not hang the daemon.
        for _ in 0..16 {
            match self.procs.get(&current).and_then(|p| p.parent) {
                Some(parent) => {
                    below = Some(current);
                    current = parent;
                    self.ensure(current);
                }
                None => return Some((current, below)),
            }
        }
        None
    }

    /// The monitor (connection) `pid` belongs to: itself or the ancestor
    /// just below the listener. `None` for a listener.
    pub fn monitor_of(&mut self, pid: u32) -> Option<u32> {
        self.chain(pid)?.1
    }

    /// The listener at the top of `pid`'s tree (`pid` itself for a listener).
    pub fn listener_of(&mut self, pid: u32) -> Option<u32> {
        Some(self.chain(pid)?.0)
    }

    /// (local, remote) of `pid`'s established TCP connection, from the host.
    pub fn tcp_connection(&self, pid: u32) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        self.view.tcp_connection(pid)
    }

    pub fn is_udp(&self, pid: u32, fd: u32) -> Option<bool> {
        self.view.is_udp(pid, fd)
    }

    pub fn audit_ids(&self, pid: u32) -> (Option<u32>, Option<u32>) {
        self.view.audit_ids(pid)
    }

    /// `pid`'s executable, read from the host the first time it is asked.
    pub fn exe(&mut self, pid: u32) -> Option<String> {
        self.ensure(pid);
        let view = &self.view;
        let p = self.procs.get_mut(&pid)?;
        p.exe.get_or_insert_with(|| view.exe(pid)).clone()
    }

    pub fn start_ns(&self, pid: u32) -> Option<u64> {
        self.procs.get(&pid)?.start_ns
    }

    pub fn parent(&self, pid: u32) -> Option<u32> {
        self.procs.get(&pid)?.parent
    }

    /// `pid`'s first child, if sshlogin saw it being forked.
    pub fn first_child(&self, pid: u32) -> Option<u32> {
        self.procs.get(&pid)?.first_child
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ProcessTable {
        ProcessTable::new(vec!["sshd".into()], Box::new(NoProc))
    }

    #[test]
    fn listener_monitor_children() {
        let mut t = table();
        t.on_fork(100, 200, 1); // listener -> monitor
        t.on_fork(200, 201, 2); // monitor -> pre-auth child
        t.on_fork(200, 202, 3); // monitor -> session child
        t.on_fork(202, 203, 4); // session child -> shell
        assert_eq!(t.monitor_of(100), None);
        assert_eq!(t.monitor_of(200), Some(200));
        assert_eq!(t.monitor_of(201), Some(200));
        assert_eq!(t.monitor_of(203), Some(200));
        assert_eq!(t.first_child(200), Some(201));
        assert_eq!(t.parent(202), Some(200));
    }

    struct Fake;
    impl ProcView for Fake {
        fn parent(&self, pid: u32) -> Option<(u32, String)> {
            match pid {
                200 => Some((100, "sshd".into())),
                100 => Some((1, "systemd".into())),
                _ => None,
            }
        }
        fn start_ns(&self, pid: u32) -> Option<u64> {
            Some(u64::from(pid) * 10)
        }
        fn exe(&self, pid: u32) -> Option<String> {
            (pid == 100).then(|| "/usr/sbin/sshd".to_string())
        }
    }

    #[test]
    fn processes_older_than_the_daemon_come_from_the_view() {
        let mut t = ProcessTable::new(vec!["sshd".into()], Box::new(Fake));
        assert_eq!(t.monitor_of(200), Some(200));
        assert_eq!(t.monitor_of(100), None);
        assert_eq!(t.start_ns(200), Some(2000));
        assert_eq!(t.listener_of(200), Some(100));
        assert_eq!(t.exe(100).as_deref(), Some("/usr/sbin/sshd"));
        assert_eq!(t.exe(200), None);
        assert_eq!(t.first_child(200), None);
    }

    #[test]
    fn exited_processes_are_forgotten_after_the_grace() {
        let mut t = table();
        t.on_fork(100, 200, 1);
        t.on_exit(200, 10);
        t.gc(20);
        assert_eq!(t.parent(200), Some(100));
        t.gc(10 + EXITED_GRACE_NS);
        assert_eq!(t.parent(200), None);
    }

    #[test]
    fn pid_reuse_cycles_do_not_hang() {
        let mut t = table();
        t.on_fork(1, 2, 1);
        t.on_fork(2, 1, 2);
        assert_eq!(t.monitor_of(1), None);
    }
}
