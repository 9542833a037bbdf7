//! The kernel's membership map (`MEMBERS`) as the daemon sees it: read to
//! confirm that a process is still the member a record said it was, written
//! to add the sshd processes that ran before the daemon and to refuse a
//! tree whose executable is not sshd.

use std::sync::Mutex;

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData};
use sshlogin_common::{Member, hint_entries, member};

use crate::decode::TreeId;

/// `bpf_map_update_elem` flags. A refusal only replaces an existing entry
/// (it must not bring back the entry of a process that has just exited);
/// an addition never replaces one (the kernel's, made at a fork, is newer).
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// What admission needs of the membership map; the kernel's in the daemon.
pub trait Membership: Send {
    /// The tree `pid` is a member of now.
    fn tree_of(&self, pid: u32) -> Option<TreeId>;
    /// Marks `pid` refused if it is still a member of `tree`: it and the
    /// children it forks from now on record nothing.
    fn refuse(&self, pid: u32, tree: TreeId);
    /// Makes `pid` a member of `tree`, unless it is a member already.
    fn add(&self, pid: u32, tree: TreeId) -> Result<()>;
    /// Forgets `pid`.
    fn remove(&self, pid: u32);
}

pub struct Members {
    map: Mutex<HashMap<MapData, u32, Member>>,
    /// `MEMBER_HINT`: the kernel's programs skip the hash lookup for a
    /// pid whose hint slot holds no member, and they count only the
    /// entries they make; a slot in which the daemon adds one is marked
    /// there first, for good.
    hint: Mutex<Array<MapData, u64>>,
}

impl Members {
    pub(super) fn new(map: HashMap<MapData, u32, Member>, hint: Array<MapData, u64>) -> Members {
        Members { map: Mutex::new(map), hint: Mutex::new(hint) }
    }

    fn get(&self, pid: u32) -> Option<Member> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&pid, 0).ok()
    }
}

fn tree(m: &Member) -> TreeId {
    TreeId { root: m.tree, ns: m.tree_ns }
}

impl Membership for Members {
    fn tree_of(&self, pid: u32) -> Option<TreeId> {
        self.get(pid).map(|m| tree(&m))
    }

    fn refuse(&self, pid: u32, id: TreeId) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(m) = map.get(&pid, 0) else { return };
        if tree(&m) != id || m.flags & member::REFUSED != 0 {
            return;
        }
        let _ = map.insert(pid, Member { flags: m.flags | member::REFUSED, ..m }, BPF_EXIST);
    }

    fn add(&self, pid: u32, id: TreeId) -> Result<()> {
        let m = Member { tree: id.root, flags: 0, tree_ns: id.ns };
        // Before the entry exists, so that no probe can miss it.
        self.hint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(hint_entries(pid).1, 1, 0)
            .with_context(|| format!("marking pid {pid}'s slot in the membership hint MEMBER_HINT"))?;
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, m, BPF_NOEXIST)
            .with_context(|| format!("adding pid {pid} to the membership map MEMBERS"))
    }

    fn remove(&self, pid: u32) {
        let _ = self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
    }
}
