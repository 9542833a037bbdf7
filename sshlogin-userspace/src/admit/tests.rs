//! Admission against a host whose answers the tests choose.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::*;
use crate::decode::{Comm, Meta};

/// A host: what each pid runs now (absent: gone), and the refusals sent
/// to the kernel.
#[derive(Clone, Default)]
struct Host {
    runs: Arc<Mutex<HashMap<u32, Check>>>,
    refused: Arc<Mutex<Vec<u32>>>,
}

impl Host {
    fn set(&self, pid: u32, check: Check) {
        self.runs.lock().unwrap().insert(pid, check);
    }
}

impl TreeCheck for Host {
    fn check(&mut self, pid: u32, _tree: TreeId) -> Check {
        self.runs.lock().unwrap().get(&pid).cloned().unwrap_or(Check::Vanished)
    }
    fn refuse(&mut self, pid: u32, _tree: TreeId) {
        self.refused.lock().unwrap().push(pid);
    }
}

const TREE: TreeId = TreeId { root: 10, ns: 1_000 };

fn meta(pid: u32, ktime_ns: u64) -> Meta {
    Meta { pid, tid: pid, uid: 0, gid: 0, ktime_ns, comm: Comm::new(b"sshd"), tree: TREE }
}

fn fork(pid: u32, child: u32, t: u64) -> Record {
    Record::Fork { meta: meta(pid, t), child }
}

fn exit(pid: u32, t: u64) -> Record {
    Record::Exit { meta: meta(pid, t) }
}

fn run(admission: &mut Admission, records: Vec<Record>) -> Vec<Record> {
    let mut out = Vec::new();
    for r in records {
        admission.admit(r, &mut out);
    }
    out
}

#[test]
fn a_tree_running_sshd_is_admitted_once_checked() {
    let host = Host::default();
    host.set(10, Check::Admitted);
    let mut a = Admission::new(Box::new(host.clone()));
    let got = run(&mut a, vec![fork(10, 11, 2_000), exit(11, 3_000)]);
    assert_eq!(got.len(), 2);
    // Checked once: later records pass on the verdict, even from the gone.
    host.runs.lock().unwrap().clear();
    assert_eq!(run(&mut a, vec![exit(10, 4_000)]).len(), 1);
    assert_eq!(a.refused, Refusals::default());
}

#[test]
fn a_tree_running_something_else_is_refused_counted_and_stopped_in_the_kernel() {
    let host = Host::default();
    host.set(10, Check::Refused { exe: "/tmp/x/sshd".into() });
    let mut a = Admission::new(Box::new(host.clone()));
    let got = run(&mut a, vec![fork(10, 11, 2_000), fork(11, 12, 2_500), exit(11, 3_000)]);
    assert!(got.is_empty());
    assert_eq!(a.refused.exe, 3);
    let refused = host.refused.lock().unwrap().clone();
    for pid in [10, 11, 12] {
        assert!(refused.contains(&pid), "the kernel was not told to refuse {pid}: {refused:?}");
    }
}

#[test]
fn a_root_gone_before_its_check_is_judged_by_a_process_still_in_the_tree() {
    // `sshd` without -D: the exec'd process forks and exits before user
    // space reads its executable; the child it forked is still there.
    let host = Host::default();
    host.set(11, Check::Admitted);
    let mut a = Admission::new(Box::new(host));
    let exec = Record::Exec { meta: meta(10, 1_000), how: crate::decode::Exec::NewTree };
    let got = run(&mut a, vec![exec, fork(10, 11, 2_000), exit(10, 2_100)]);
    assert_eq!(got.len(), 3, "held records are released in order once the tree is checked");
    assert!(matches!(got[0], Record::Exec { .. }));
    assert!(matches!(got[1], Record::Fork { .. }));
}

#[test]
fn only_the_root_or_a_child_it_forked_speaks_for_a_tree() {
    // The root has gone; a grandchild runs sshd (it exec'd it): that says
    // nothing about what the root ran, and the root's records stay out.
    let host = Host::default();
    host.set(12, Check::Admitted);
    let mut a = Admission::new(Box::new(host.clone()));
    let got = run(&mut a, vec![fork(10, 11, 2_000), fork(11, 12, 2_100)]);
    assert!(got.is_empty());
    // Nor does a child of the root that exec'd since.
    host.set(11, Check::Admitted);
    let mut a = Admission::new(Box::new(host));
    let exec = Record::Exec { meta: meta(11, 1_500), how: crate::decode::Exec::Stayed };
    let got = run(&mut a, vec![exec, fork(10, 11, 2_000)]);
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn a_one_off_tree_is_forgotten_a_listener_s_is_kept() {
    let host = Host::default();
    host.set(10, Check::Admitted);
    let mut a = Admission::new(Box::new(host.clone()));
    let exec = Record::Exec { meta: meta(10, 1_000), how: crate::decode::Exec::NewTree };
    assert_eq!(run(&mut a, vec![exec, exit(10, 1_100)]).len(), 2);
    assert!(a.trees.is_empty(), "sshd -t left a verdict behind");
    let exec = Record::Exec { meta: meta(10, 1_000), how: crate::decode::Exec::NewTree };
    assert_eq!(run(&mut a, vec![exec, fork(10, 11, 1_050), exit(10, 1_100)]).len(), 3);
    assert_eq!(a.trees.len(), 1, "a tree whose root forked lives on in its children");
}

#[test]
fn a_tree_nobody_could_check_is_refused_never_admitted() {
    let host = Host::default();
    let mut a = Admission::new(Box::new(host));
    let got = run(&mut a, vec![fork(10, 11, 2_000), exit(11, 2_100), exit(10, 2_200)]);
    assert!(got.is_empty(), "records wait while nothing is known");
    assert_eq!(a.next_due(), Some(2_000 + PENDING_NS));
    a.tick(2_000 + PENDING_NS);
    assert_eq!(a.refused.vanished, 3);
    assert_eq!(a.next_due(), None);
    assert!(run(&mut a, vec![exit(12, 9_000_000_000)]).is_empty(), "the verdict stands");
}

#[test]
fn a_seeded_tree_needs_no_check() {
    let mut a = Admission::new(Box::new(Host::default()));
    a.seed(TREE);
    assert_eq!(run(&mut a, vec![fork(10, 11, 2_000)]).len(), 1);
}
