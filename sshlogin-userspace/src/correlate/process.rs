//! The sshd process trees as user space follows them: from the fork, exec
//! and exit records of members (the kernel sends no others), seeded with
//! what ran before the daemon started.
//!
//! A tree's root is a listener; the listener's children are monitors, one
//! per connection; everything below a monitor belongs to its connection.
//! `sshd` without `-D` forks once and its first process exits: that child,
//! having done nothing yet, becomes the listener.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use std::net::SocketAddr;

/// What sshlogin may ask the host about a process. `/proc` in the daemon,
/// nothing at all when replaying a capture.
pub trait ProcView {
    /// Parent pid and the parent's comm.
    fn parent(&self, pid: u32) -> Option<(u32, String)>;
    /// Process start, CLOCK_BOOTTIME nanoseconds.
    fn start_ns(&self, pid: u32) -> Option<u64>;
    /// Whether `pid` is alive and started at `start_ns` (as [`Self::start_ns`]
    /// or the fork record said, to the clock tick); `None`: cannot tell.
    fn alive(&self, _pid: u32, _start_ns: u64) -> Option<bool> {
        None
    }
    /// (local, remote) of the process's established TCP connection: for an
    /// sshd monitor, the server and client ends of the SSH connection.
    fn tcp_connection(&self, _pid: u32) -> Option<(SocketAddr, SocketAddr)> {
        None
    }
    /// Whether `fd` of `pid` is a UDP socket (`None`: cannot tell).
    fn is_udp(&self, _pid: u32, _fd: u32) -> Option<bool> {
        None
    }
    /// The local end of socket `fd` of `pid` (a forward's source address
    /// and port, which the next hop sees as its client), once bound.
    fn local_end(&self, _pid: u32, _fd: u32) -> Option<SocketAddr> {
        None
    }
    /// The audit login uid and session id (`/proc/PID/loginuid`,
    /// `sessionid`), when set.
    fn audit_ids(&self, _pid: u32) -> (Option<u32>, Option<u32>) {
        (None, None)
    }
}

/// Knows nothing: replayed captures come from another host or another time.
pub struct NoProc;

impl ProcView for NoProc {
    fn parent(&self, _pid: u32) -> Option<(u32, String)> {
        None
    }
    fn start_ns(&self, _pid: u32) -> Option<u64> {
        None
    }
}

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

/// A member's place in its tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepts connections and forks a monitor for each.
    Listener,
    /// One connection: sends its audit records and log lines.
    Monitor,
    /// Below a monitor: the pre-authentication child, a PAM or
    /// AuthorizedKeysCommand helper, the session child.
    Child,
}

#[derive(Clone, Debug)]
struct Proc {
    parent: Option<u32>,
    role: Role,
    start_ns: Option<u64>,
    children: u32,
    /// Its first child, when its fork was seen (so the first child seen is
    /// the first it forked).
    first_child: Option<u32>,
    whole_life: bool,
    /// Did anything after its fork: exec'd, forked, sent a record.
    active: bool,
    /// Forked by its monitor after authentication had succeeded.
    after_auth: bool,
    /// Exec'd something that is not sshd: a helper, out of the tree.
    left: bool,
    exited_ns: Option<u64>,
}

impl Proc {
    fn new(parent: Option<u32>, role: Role, start_ns: Option<u64>) -> Proc {
        Proc {
            parent,
            role,
            start_ns,
            children: 0,
            first_child: None,
            whole_life: true,
            active: false,
            after_auth: false,
            left: false,
            exited_ns: None,
        }
    }
}

/// How long an exited process stays in the table, so that records of its
/// children still find their connection.
const EXITED_GRACE_NS: u64 = 60_000_000_000;
/// Processes tracked; beyond this the exited go first (oldest first), then
/// children whose connection has ended. Listeners and monitors never.
pub const MAX_PROCS: usize = 1 << 16;

pub struct ProcessTable {
    procs: PidMap<Proc>,
    /// The sshd names: for processes learnt from /proc (a lost fork record).
    family: Vec<String>,
    view: Box<dyn ProcView + Send>,
    /// Entries dropped to stay within [`MAX_PROCS`]; taken by the caller.
    pub evicted: u64,
}

impl ProcessTable {
    pub fn new(family: Vec<String>, view: Box<dyn ProcView + Send>) -> Self {
        ProcessTable { procs: PidMap::default(), family, view, evicted: 0 }
    }

    /// A tree's root: a listener, whatever its pid held before.
    pub fn root(&mut self, pid: u32, start_ns: u64) {
        self.procs.insert(pid, Proc::new(None, Role::Listener, Some(start_ns)));
    }

    /// A process found running at start. Which of its children came first
    /// is not known, unless the caller says ([`Self::set_first_child`]).
    pub fn seed(&mut self, pid: u32, parent: Option<u32>, role: Role, start_ns: u64) {
        self.procs.insert(pid, Proc { active: true, whole_life: false, ..Proc::new(parent, role, Some(start_ns)) });
        if let Some(p) = parent.and_then(|p| self.procs.get_mut(&p)) {
            p.children += 1;
        }
    }

    /// `child` is known to be `pid`'s first (its pre-authentication child,
    /// by its title).
    pub fn set_first_child(&mut self, pid: u32, child: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.first_child = Some(child);
        }
    }

    /// `parent` forked `child`; returns the child's role. A fork always
    /// starts a new life: nothing the pid held before carries over.
    pub fn on_fork(&mut self, parent: u32, child: u32, ktime_ns: u64) -> Role {
        self.ensure(parent);
        let role = match self.procs.get_mut(&parent) {
            Some(p) => {
                p.children += 1;
                if p.whole_life {
                    p.first_child.get_or_insert(child);
                }
                p.active = true;
                if p.role == Role::Listener { Role::Monitor } else { Role::Child }
            }
            None => Role::Monitor,
        };
        self.procs.insert(child, Proc::new(Some(parent), role, Some(ktime_ns)));
        role
    }

    /// `pid` exec'd something that is not sshd and left its tree; nothing
    /// more will be heard of it.
    pub fn on_left(&mut self, pid: u32, ktime_ns: u64) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.left = true;
            p.exited_ns = Some(ktime_ns);
        }
    }

    /// `pid` did something of its own.
    pub fn touch(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.active = true;
        }
    }

    /// `pid` exited. Returns the child that takes over as listener, when
    /// `pid` was a listener that forked once and left (`sshd` without `-D`
    /// daemonizing).
    pub fn on_exit(&mut self, pid: u32, ktime_ns: u64) -> Option<u32> {
        let p = self.procs.get_mut(&pid)?;
        p.exited_ns = Some(ktime_ns);
        let (role, children, first) = (p.role, p.children, p.first_child);
        let heir = first.filter(|_| role == Role::Listener && children == 1)?;
        let c = self.procs.get_mut(&heir)?;
        if c.role != Role::Monitor || c.active || c.exited_ns.is_some() {
            return None;
        }
        c.role = Role::Listener;
        c.parent = None;
        Some(heir)
    }

    /// Forgets processes that exited more than a minute before `now_ns`;
    /// beyond [`MAX_PROCS`], the exited and then the children of ended
    /// connections (`open(monitor)` says which are still going), oldest
    /// first.
    pub fn gc(&mut self, now_ns: u64, open: impl Fn(u32) -> bool) {
        self.procs.retain(|_, p| p.exited_ns.is_none_or(|t| now_ns.saturating_sub(t) < EXITED_GRACE_NS));
        if self.procs.len() <= MAX_PROCS {
            return;
        }
        let mut victims: Vec<(bool, u64, u32)> = Vec::new();
        for (&pid, p) in &self.procs {
            if p.exited_ns.is_some() {
                victims.push((false, p.exited_ns.unwrap_or(0), pid));
            } else if p.role == Role::Child {
                let monitor = self.monitor_above(pid);
                if monitor.is_none_or(|m| !open(m)) {
                    victims.push((true, p.start_ns.unwrap_or(0), pid));
                }
            }
        }
        victims.sort_unstable();
        let extra = self.procs.len() - MAX_PROCS / 2;
        for (_, _, pid) in victims.into_iter().take(extra) {
            self.procs.remove(&pid);
            self.evicted += 1;
        }
    }

    /// Learns a process from the host once, when its fork was not seen (it
    /// predates a restart, or the record was lost): its parent if that is
    /// an sshd, else it is taken for a listener.
    fn ensure(&mut self, pid: u32) {
        self.ensure_depth(pid, 0);
    }

    fn ensure_depth(&mut self, pid: u32, depth: u32) {
        if self.procs.contains_key(&pid) {
            return;
        }
        let parent = match self.view.parent(pid) {
            Some((ppid, comm)) if depth < 8 && self.family.contains(&comm) => Some(ppid),
            _ => None,
        };
        if let Some(ppid) = parent {
            self.ensure_depth(ppid, depth + 1);
        }
        let role = match parent.and_then(|p| self.procs.get(&p)) {
            Some(p) if p.role == Role::Listener => Role::Monitor,
            Some(_) => Role::Child,
            None => Role::Listener,
        };
        let start_ns = self.view.start_ns(pid);
        self.procs.insert(pid, Proc { active: true, whole_life: false, ..Proc::new(parent, role, start_ns) });
    }

    fn monitor_above(&self, pid: u32) -> Option<u32> {
        let mut current = pid;
        // Bounded: sshd trees are three or four deep; a cycle from pid reuse
        // must not hang the daemon.
        for _ in 0..16 {
            let p = self.procs.get(&current)?;
            match p.role {
                Role::Monitor => return Some(current),
                Role::Listener => return None,
                Role::Child => current = p.parent?,
            }
        }
        None
    }

    /// The monitor (connection) `pid` belongs to: itself or the monitor
    /// above it. `None` for a listener.
    pub fn monitor_of(&mut self, pid: u32) -> Option<u32> {
        self.ensure(pid);
        self.monitor_above(pid)
    }

    pub fn role(&self, pid: u32) -> Option<Role> {
        Some(self.procs.get(&pid)?.role)
    }

    /// (local, remote) of `pid`'s established TCP connection, from the host.
    pub fn tcp_connection(&self, pid: u32) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        self.view.tcp_connection(pid)
    }

    pub fn is_udp(&self, pid: u32, fd: u32) -> Option<bool> {
        self.view.is_udp(pid, fd)
    }

    pub fn local_end(&self, pid: u32, fd: u32) -> Option<std::net::SocketAddr> {
        self.view.local_end(pid, fd).filter(|a| a.port() != 0)
    }

    pub fn audit_ids(&self, pid: u32) -> (Option<u32>, Option<u32>) {
        self.view.audit_ids(pid)
    }

    /// Whether `pid` is alive and still the process that started at
    /// `start_ns` (`None`: the host cannot say).
    pub fn alive(&self, pid: u32) -> Option<bool> {
        let start = self.procs.get(&pid)?.start_ns?;
        self.view.alive(pid, start)
    }

    pub fn start_ns(&self, pid: u32) -> Option<u64> {
        self.procs.get(&pid)?.start_ns
    }

    pub fn parent(&self, pid: u32) -> Option<u32> {
        self.procs.get(&pid)?.parent
    }

    /// `pid`'s first child, if sshlogin saw `pid` fork it first (or, for a
    /// process found running at start, knows it from its title).
    pub fn first_child(&self, pid: u32) -> Option<u32> {
        self.procs.get(&pid)?.first_child
    }

    pub fn set_after_auth(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.after_auth = true;
        }
    }

    pub fn after_auth(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.after_auth)
    }

    pub fn has_left(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.left)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
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
        t.root(100, 0);
        assert_eq!(t.on_fork(100, 200, 1), Role::Monitor);
        assert_eq!(t.on_fork(200, 201, 2), Role::Child); // pre-auth child
        assert_eq!(t.on_fork(200, 202, 3), Role::Child); // session child
        assert_eq!(t.monitor_of(100), None);
        assert_eq!(t.monitor_of(200), Some(200));
        assert_eq!(t.monitor_of(201), Some(200));
        assert_eq!(t.first_child(200), Some(201));
        assert_eq!(t.parent(202), Some(200));
    }

    #[test]
    fn a_daemonizing_listener_hands_over_to_its_child() {
        let mut t = table();
        t.root(100, 0);
        t.on_fork(100, 101, 1); // daemon(): fork ...
        assert_eq!(t.on_exit(100, 2), Some(101)); // ... and the parent leaves
        assert_eq!(t.role(101), Some(Role::Listener));
        assert_eq!(t.on_fork(101, 300, 3), Role::Monitor);
        assert_eq!(t.monitor_of(300), Some(300));
    }

    #[test]
    fn a_listener_restarted_keeps_its_connections() {
        let mut t = table();
        t.root(100, 0);
        t.on_fork(100, 200, 1);
        t.touch(200); // the monitor re-exec'd
        assert_eq!(t.on_exit(100, 2), None, "a monitor that did something stays a monitor");
        assert_eq!(t.monitor_of(200), Some(200));
        let mut t = table();
        t.root(100, 0);
        t.on_fork(100, 200, 1);
        t.on_fork(100, 201, 1);
        assert_eq!(t.on_exit(100, 2), None, "a listener with two connections was no daemonizing parent");
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
    }

    #[test]
    fn a_process_whose_fork_was_not_seen_has_no_first_child() {
        let mut t = table();
        t.seed(100, None, Role::Listener, 0);
        t.seed(200, Some(100), Role::Monitor, 1);
        // Its pre-authentication child may be running already: the next
        // fork seen is not known to be the first.
        t.on_fork(200, 300, 2);
        assert_eq!(t.first_child(200), None);
        t.set_first_child(200, 250);
        assert_eq!(t.first_child(200), Some(250));
    }

    #[test]
    fn processes_whose_fork_was_not_seen_come_from_the_view() {
        let mut t = ProcessTable::new(vec!["sshd".into()], Box::new(Fake));
        assert_eq!(t.monitor_of(200), Some(200));
        assert_eq!(t.monitor_of(100), None);
        assert_eq!(t.start_ns(200), Some(2000));
        assert_eq!(t.first_child(200), None);
    }

    #[test]
    fn exited_processes_are_forgotten_after_the_grace() {
        let mut t = table();
        t.root(100, 0);
        t.on_fork(100, 200, 1);
        t.on_exit(200, 10);
        t.gc(20, |_| true);
        assert_eq!(t.parent(200), Some(100));
        t.gc(10 + EXITED_GRACE_NS, |_| true);
        assert_eq!(t.parent(200), None);
    }

    #[test]
    fn a_full_table_drops_the_exited_then_children_of_ended_connections_never_monitors() {
        let mut t = table();
        t.root(1, 0);
        // Connection 2 is open, connection 3 has ended (its exit was lost).
        t.on_fork(1, 2, 1);
        t.on_fork(1, 3, 1);
        let mut pid = 10;
        while t.len() <= MAX_PROCS {
            t.on_fork(if pid % 2 == 0 { 2 } else { 3 }, pid, u64::from(pid));
            pid += 1;
        }
        t.on_exit(11, 5);
        t.gc(6, |m| m == 2);
        assert!(t.len() < MAX_PROCS, "{}", t.len());
        assert_eq!(t.role(13), None, "a child of the ended connection went");
        assert_eq!(t.role(1), Some(Role::Listener));
        assert_eq!(t.role(2), Some(Role::Monitor));
        assert_eq!(t.role(3), Some(Role::Monitor));
        assert_eq!(t.role(11), None, "the exited went first");
        assert_eq!(t.role(12), Some(Role::Child), "an open connection's child stays");
        assert!(t.evicted > 0);
    }

    #[test]
    fn pid_reuse_cycles_do_not_hang() {
        let mut t = table();
        t.root(1, 0);
        t.on_fork(1, 2, 1);
        t.on_fork(2, 3, 2);
        t.on_fork(3, 2, 3);
        assert_eq!(t.monitor_of(3), None);
    }
}
