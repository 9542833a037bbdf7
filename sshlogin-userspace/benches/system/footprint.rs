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

/// What one thread of the daemon has spent so far.
#[derive(Clone, Debug, Default)]
pub struct Thread {
    pub name: String,
    /// utime and stime, in 10 ms clock ticks.
    pub user: u64,
    pub sys: u64,
    /// Run time from `schedstat`, in ns: exact, where the ticks are not.
    pub run_ns: u64,
    /// Context switches (voluntary and not): each is a wake-up.
    pub switches: u64,
}

/// Each thread of `pid`, by thread id.
pub fn threads(pid: u32) -> BTreeMap<String, Thread> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return BTreeMap::new() };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| {
            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
            let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_string();
            let f: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
            let run_ns = fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            let switches = fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            Some((
                t.file_name().to_string_lossy().into_owned(),
                Thread { name, user: f.get(11)?.parse().ok()?, sys: f.get(12)?.parse().ok()?, run_ns, switches },
            ))
        })
        .collect()
}

/// What each thread spent between two [`threads`] readings, by thread name
/// (the runtime's blocking threads share one). A thread that ended
/// meanwhile takes its share with it.
pub fn cpu_by_thread(before: &BTreeMap<String, Thread>, after: &BTreeMap<String, Thread>) -> BTreeMap<String, Thread> {
    let mut out: BTreeMap<String, Thread> = BTreeMap::new();
    for (tid, t) in after {
        let t0 = before.get(tid).cloned().unwrap_or_default();
        let e = out.entry(t.name.clone()).or_insert_with(|| Thread { name: t.name.clone(), ..Thread::default() });
        e.user += t.user.saturating_sub(t0.user);
        e.sys += t.sys.saturating_sub(t0.sys);
        e.run_ns += t.run_ns.saturating_sub(t0.run_ns);
        e.switches += t.switches.saturating_sub(t0.switches);
    }
    out
}
