//! Where the daemon's memory and CPU go, from /proc: resident memory by
//! kind of mapping (smaps), CPU by thread (task stat).

use std::{collections::BTreeMap, fs};

/// Resident KiB by what is mapped.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Anonymous private memory: the allocator's heap, thread stacks.
    pub heap: u64,
    /// The BPF ring buffer (and any other BPF map) mapped by the reader.
    pub bpf_maps: u64,
    /// sshlogin's own binary: code and read-only data touched so far.
    pub binary: u64,
    /// Shared libraries (libc, the loader, libgcc).
    pub libraries: u64,
    pub other: u64,
}

impl Memory {
    pub fn parts(&self) -> [(&'static str, u64); 5] {
        [
            ("heap and stacks (anonymous)", self.heap),
            ("ring buffer (BPF map, mapped once)", self.bpf_maps),
            ("sshlogin binary (code, read-only data)", self.binary),
            ("shared libraries", self.libraries),
            ("other", self.other),
        ]
    }
}

/// `/proc/PID/smaps`, each mapping's `Rss` put under what it maps.
pub fn memory(pid: u32, binary: &str) -> Memory {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut m = Memory::default();
    let mut name = String::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // address perms offset dev inode [path]
            name = fields.nth(4).unwrap_or("").to_string();
            continue;
        }
        if first != "Rss:" {
            continue;
        }
        let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let part = if name.is_empty() || name == "[heap]" || name == "[stack]" {
            &mut m.heap
        } else if name.starts_with("anon_inode:bpf") {
            &mut m.bpf_maps
        } else if name == binary {
            &mut m.binary
        } else if name.starts_with('/') {
            &mut m.libraries
        } else {
            &mut m.other
        };
        *part += kib;
    }
    m
}

/// (name, user ticks, system ticks) of each thread, by thread id.
pub fn threads(pid: u32) -> BTreeMap<String, (String, u64, u64)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return BTreeMap::new() };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| {
            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
            let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_string();
            let f: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
            Some((
                t.file_name().to_string_lossy().into_owned(),
                (name, f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?),
            ))
        })
        .collect()
}

/// CPU ticks (user, system) spent between two [`threads`] readings, by
/// thread name (the runtime's blocking threads share one).
pub fn cpu_by_thread(
    before: &BTreeMap<String, (String, u64, u64)>,
    after: &BTreeMap<String, (String, u64, u64)>,
) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (tid, (name, user, sys)) in after {
        let (u0, s0) = before.get(tid).map_or((0, 0), |(_, u, s)| (*u, *s));
        let e = out.entry(name.clone()).or_default();
        e.0 += user.saturating_sub(u0);
        e.1 += sys.saturating_sub(s0);
    }
    out
}
