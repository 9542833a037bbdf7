//! Admission: which records come from the host's real sshd. Between decode
//! and correlate.
//!
//! The kernel decides membership (a record is made only by a descendant of
//! a root exec of an sshd-named binary, or of a process the daemon found at
//! start) and stamps each record with its tree. What the kernel cannot see
//! is which file a tree's root exec'd; that is checked here, once per tree,
//! by device and inode (`/proc/PID/exe`), while a process of the tree is
//! alive and still in it. A tree nobody could check is refused: a record is
//! never admitted because its process has gone.

pub mod binaries;
pub mod scan;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use binaries::{Binaries, exe_of};

use crate::{
    decode::{Record, TreeId},
    probes::Membership,
};

/// What a look at one process of a tree said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// It runs one of the sshd binaries and is still in the tree.
    Admitted,
    /// It runs `exe`, which is not an sshd binary.
    Refused { exe: String },
    /// It has gone, or left the tree: it says nothing about the tree.
    Vanished,
}

/// How a tree is checked: against the host in the daemon, not at all when
/// replaying a capture (which was admitted when it was recorded).
pub trait TreeCheck: Send {
    fn check(&mut self, pid: u32, tree: TreeId) -> Check;
    /// Stops the kernel recording for `pid` of a refused tree.
    fn refuse(&mut self, _pid: u32, _tree: TreeId) {}
}

/// The daemon's check: `/proc/PID/exe` against the sshd binaries, then the
/// kernel's membership map, in that order, so that the file seen is the one
/// the tree's member runs (a pid reused in between is not in the tree).
pub struct HostCheck {
    pub binaries: Binaries,
    members: Arc<dyn Membership + Sync>,
}

impl HostCheck {
    pub fn new(binaries: Binaries, members: Arc<dyn Membership + Sync>) -> HostCheck {
        HostCheck { binaries, members }
    }
}

impl TreeCheck for HostCheck {
    fn check(&mut self, pid: u32, tree: TreeId) -> Check {
        let Some(exe) = exe_of(pid) else { return Check::Vanished };
        if self.members.tree_of(pid) != Some(tree) {
            return Check::Vanished;
        }
        if self.binaries.contains(exe.id) { Check::Admitted } else { Check::Refused { exe: exe.path } }
    }

    fn refuse(&mut self, pid: u32, tree: TreeId) {
        self.members.refuse(pid, tree);
    }
}

/// Admits everything: `sshlogin replay` of a capture.
pub struct TrustCapture;

impl TreeCheck for TrustCapture {
    fn check(&mut self, _pid: u32, _tree: TreeId) -> Check {
        Check::Admitted
    }
}

/// A tree's records wait this long (CLOCK_BOOTTIME) for one of its
/// processes to be checked before the tree is refused.
const PENDING_NS: u64 = 2_000_000_000;
/// Records one unchecked tree may hold.
const HELD_MAX: usize = 4096;
/// Verdicts kept; beyond this the least recently seen are forgotten (a
/// later record of a forgotten tree has it checked again).
const TREES_MAX: usize = 4096;

enum Verdict {
    Admitted,
    Refused,
    Pending { since_ns: u64, held: VecDeque<Record> },
}

struct Tree {
    verdict: Verdict,
    seen_ns: u64,
    /// Something of the tree forked: it is more than a one-off `sshd -t`.
    forked: bool,
}

/// Records refused since the caller last took them: by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// From a tree whose executable is not an sshd binary.
    pub exe: u64,
    /// From a tree none of whose processes could be checked.
    pub vanished: u64,
}

pub struct Admission {
    trees: HashMap<TreeId, Tree>,
    check: Box<dyn TreeCheck>,
    /// Executables already named in a log line.
    logged: HashSet<String>,
    vanished_trees: u64,
    pub refused: Refusals,
}

impl Admission {
    pub fn new(check: Box<dyn TreeCheck>) -> Admission {
        Admission {
            trees: HashMap::new(),
            check,
            logged: HashSet::new(),
            vanished_trees: 0,
            refused: Refusals::default(),
        }
    }

    /// A tree checked by the scan at start.
    pub fn seed(&mut self, tree: TreeId) {
        self.trees.insert(tree, Tree { verdict: Verdict::Admitted, seen_ns: tree.ns, forked: true });
    }

    /// An executable the scan at start refused (and named in the log).
    pub fn refused_at_start(&mut self, exe: &str) {
        self.logged.insert(exe.to_string());
    }

    /// Takes one record; pushes onto `out` what is admitted now (records a
    /// tree held while it waited for its check included, in order).
    pub fn admit(&mut self, record: Record, out: &mut Vec<Record>) {
        let meta = record.meta();
        let (id, pid, ktime) = (meta.tree, meta.pid, meta.ktime_ns);
        let child = match &record {
            Record::Fork { child, .. } => Some(*child),
            _ => None,
        };
        let ends_root = matches!(record, Record::Exit { .. }) && pid == id.root;
        let tree = self.trees.entry(id).or_insert_with(|| Tree {
            verdict: Verdict::Pending { since_ns: ktime, held: VecDeque::new() },
            seen_ns: ktime,
            forked: false,
        });
        tree.seen_ns = tree.seen_ns.max(ktime);
        tree.forked |= child.is_some();
        match &mut tree.verdict {
            Verdict::Admitted => {
                // `sshd -t`, `sshd -T`: a tree that ends as it began needs no
                // verdict kept.
                if ends_root && !tree.forked {
                    self.trees.remove(&id);
                }
                out.push(record);
            }
            Verdict::Refused => {
                self.refused.exe += 1;
                // Children forked before the kernel heard of the refusal.
                self.check.refuse(pid, id);
                if let Some(c) = child {
                    self.check.refuse(c, id);
                }
            }
            Verdict::Pending { held, .. } => {
                held.push_back(record);
                if held.len() > HELD_MAX {
                    held.pop_front();
                    self.refused.vanished += 1;
                }
                // Only the root speaks for its tree: it is the process whose
                // exec made the tree. When it has gone (`sshd` without -D
                // forks and exits at once), a child it forked and that has
                // not exec'd since runs the same file.
                let heir = child.filter(|c| pid == id.root && !held.iter().any(|r| exec_of(r, *c)));
                for c in [Some(id.root), heir].into_iter().flatten() {
                    match self.check.check(c, id) {
                        Check::Vanished => continue,
                        verdict => {
                            self.decide(id, verdict, c, out);
                            break;
                        }
                    }
                }
            }
        }
    }

    fn decide(&mut self, id: TreeId, check: Check, pid: u32, out: &mut Vec<Record>) {
        let Some(tree) = self.trees.get_mut(&id) else { return };
        let verdict = if check == Check::Admitted { Verdict::Admitted } else { Verdict::Refused };
        let Verdict::Pending { held, .. } = std::mem::replace(&mut tree.verdict, verdict) else { return };
        match check {
            Check::Admitted => out.extend(held),
            Check::Refused { exe } => {
                self.refused.exe += held.len() as u64;
                self.check.refuse(id.root, id);
                self.check.refuse(pid, id);
                for r in &held {
                    self.check.refuse(r.meta().pid, id);
                }
                let comm = held.front().map(|r| r.meta().comm.to_string()).unwrap_or_default();
                if self.logged.insert(exe.clone()) {
                    tracing::warn!(
                        pid,
                        comm = %comm,
                        exe = %exe,
                        "refused the records of a process tree whose executable is not one of this host's sshd \
                         binaries (root ran a binary named like sshd); if it is an sshd, admit it with \
                         --sshd-path {exe} (capture.sshd_paths)"
                    );
                }
            }
            Check::Vanished => {}
        }
    }

    /// Refuses trees that waited too long for a check; forgets the least
    /// recently seen verdicts beyond the bound. `now_ns` is CLOCK_BOOTTIME.
    pub fn tick(&mut self, now_ns: u64) {
        let mut expired = Vec::new();
        for (id, tree) in &self.trees {
            if let Verdict::Pending { since_ns, .. } = tree.verdict
                && now_ns.saturating_sub(since_ns) >= PENDING_NS
            {
                expired.push(*id);
            }
        }
        for id in expired {
            let Some(tree) = self.trees.get_mut(&id) else { continue };
            if let Verdict::Pending { held, .. } = std::mem::replace(&mut tree.verdict, Verdict::Refused) {
                self.refused.vanished += held.len() as u64;
                self.vanished_trees += 1;
                if self.vanished_trees <= 10 || self.vanished_trees.is_power_of_two() {
                    tracing::warn!(
                        root = id.root,
                        comm = %held.front().map(|r| r.meta().comm.to_string()).unwrap_or_default(),
                        records = held.len(),
                        trees = self.vanished_trees,
                        "refused a process tree whose processes all exited before their executable could be checked"
                    );
                }
            }
        }
        if self.trees.len() > TREES_MAX {
            let mut by_age: Vec<(u64, TreeId)> = self
                .trees
                .iter()
                .filter(|(_, t)| !matches!(t.verdict, Verdict::Pending { .. }))
                .map(|(id, t)| (t.seen_ns, *id))
                .collect();
            by_age.sort_unstable();
            let extra = self.trees.len() - TREES_MAX / 2;
            for (_, id) in by_age.into_iter().take(extra) {
                self.trees.remove(&id);
            }
        }
    }

    /// When [`Admission::tick`] has something to do, if anything waits.
    pub fn next_due(&self) -> Option<u64> {
        self.trees
            .values()
            .filter_map(|t| match t.verdict {
                Verdict::Pending { since_ns, .. } => Some(since_ns.saturating_add(PENDING_NS)),
                _ => None,
            })
            .min()
    }

    /// Everything still waiting is refused (at shutdown or the end of a replay).
    pub fn finish(&mut self) {
        self.tick(u64::MAX);
    }
}

fn exec_of(record: &Record, pid: u32) -> bool {
    matches!(record, Record::Exec { meta, .. } if meta.pid == pid)
}

#[cfg(test)]
mod tests;
