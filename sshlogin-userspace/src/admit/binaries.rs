//! The host's sshd binaries, known by device and inode. A path string says
//! nothing about what was exec'd (a chroot has its own `/usr/sbin/sshd`, a
//! symlink can carry any name); the file a process runs is what
//! `/proc/PID/exe` opens, and that is compared here.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant},
};

/// A file on the host: (device, inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// The file behind `path`, symlinks followed.
pub fn file_id(path: impl AsRef<Path>) -> Option<FileId> {
    let m = fs::metadata(path).ok()?;
    Some(FileId { dev: m.dev(), ino: m.ino() })
}

/// What a process runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exe {
    pub id: FileId,
    /// As the host sees it, without the " (deleted)" of a binary replaced
    /// since it was exec'd.
    pub path: String,
    /// The file is no longer at `path` (an upgrade replaced it).
    pub replaced: bool,
}

pub fn exe_of(pid: u32) -> Option<Exe> {
    let link = format!("/proc/{pid}/exe");
    let id = file_id(&link)?;
    let path = fs::read_link(&link).ok()?;
    let path = path.to_string_lossy();
    let (path, replaced) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p.to_string(), true),
        None => (path.to_string(), false),
    };
    Some(Exe { id, path, replaced })
}

/// Stat the configured paths again at most this often when a lookup
/// misses: an upgrade replaces a binary (a new inode at the same path).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

pub struct Binaries {
    /// `capture.sshd_paths`.
    configured: Vec<String>,
    /// The binaries of the sshd listeners found running at start and the
    /// sshd-session / sshd-auth they name.
    discovered: Vec<String>,
    /// Files admitted as what a running sshd runs, whatever is at their
    /// path now (an upgrade may have replaced them): kept across refreshes.
    running: BTreeMap<FileId, String>,
    ids: BTreeMap<FileId, String>,
    refreshed: Option<Instant>,
}

impl Binaries {
    pub fn new(configured: Vec<String>) -> Binaries {
        let mut b = Binaries {
            configured,
            discovered: Vec::new(),
            running: BTreeMap::new(),
            ids: BTreeMap::new(),
            refreshed: None,
        };
        b.refresh();
        b
    }

    fn refresh(&mut self) {
        self.ids = self.running.clone();
        for path in self.configured.iter().chain(&self.discovered) {
            if let Some(id) = file_id(path) {
                self.ids.entry(id).or_insert_with(|| path.clone());
            }
        }
        self.refreshed = Some(Instant::now());
    }

    /// Whether `id` is one of the binaries, looking at the paths again if
    /// it is not (and they were not looked at in the last second).
    pub fn contains(&mut self, id: FileId) -> bool {
        if self.ids.contains_key(&id) {
            return true;
        }
        if self.refreshed.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
            self.refresh();
        }
        self.ids.contains_key(&id)
    }

    /// Whether `path` is one of the paths sshd binaries are looked for at.
    pub fn is_known_path(&self, path: &str) -> bool {
        self.configured.iter().chain(&self.discovered).any(|p| p == path)
    }

    /// Admits the file a running process runs, whatever is at its path now.
    pub fn add_running(&mut self, exe: &Exe) {
        self.running.insert(exe.id, exe.path.clone());
        self.refresh();
    }

    /// Adds a running listener's executable (the file it runs, and the one
    /// at its path) and the sshd-session and sshd-auth it would exec: those
    /// beside it and those whose paths are compiled into it.
    pub fn add_listener(&mut self, exe: &Exe) -> Vec<String> {
        self.running.insert(exe.id, exe.path.clone());
        let exe = exe.path.as_str();
        let mut added = Vec::new();
        let mut add = |p: String, added: &mut Vec<String>| {
            if !self.configured.contains(&p) && !self.discovered.contains(&p) && file_id(&p).is_some() {
                self.discovered.push(p.clone());
                added.push(p);
            }
        };
        add(exe.to_string(), &mut added);
        let dir = Path::new(exe).parent().unwrap_or(Path::new("/"));
        for name in ["sshd-session", "sshd-auth"] {
            add(dir.join(name).display().to_string(), &mut added);
        }
        for p in fs::read(exe).map(|bytes| compiled_paths(&bytes)).unwrap_or_default() {
            add(p, &mut added);
        }
        self.refresh();
        added
    }

    /// Every path whose file is admitted now, for `sshlogin check`.
    pub fn paths(&self) -> Vec<String> {
        self.ids.values().cloned().collect()
    }
}

/// Absolute paths ending in `/sshd-session` or `/sshd-auth` among the
/// NUL-terminated strings of a binary: OpenSSH compiles in where its
/// per-connection binaries live (`_PATH_SSHD_SESSION`, `_PATH_SSHD_AUTH`).
pub fn compiled_paths(bytes: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for string in bytes.split(|&b| b == 0) {
        if string.len() > 256 || string.first() != Some(&b'/') {
            continue;
        }
        if (string.ends_with(b"/sshd-session") || string.ends_with(b"/sshd-auth"))
            && string.iter().all(|b| b.is_ascii_graphic())
            && let Ok(s) = std::str::from_utf8(string)
            && !found.iter().any(|f| f == s)
        {
            found.push(s.to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_paths_are_found_among_the_strings() {
        let bytes = b"\x7fELF\0junk/usr/lib/openssh/sshd-session\0/usr/lib/openssh/sshd-auth\0\
                      relative/sshd-auth\0/usr/lib/openssh/sshd-session\0/bin/sh\0";
        assert_eq!(compiled_paths(bytes), ["/usr/lib/openssh/sshd-auth", "/usr/lib/openssh/sshd-session"]);
    }

    #[test]
    fn a_file_is_known_by_its_inode_not_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("sshd");
        fs::write(&real, b"binary").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let copy = dir.path().join("copy");
        fs::copy(&real, &copy).unwrap();
        let mut b = Binaries::new(vec![real.display().to_string()]);
        assert!(b.contains(file_id(&link).unwrap()), "a symlink leads to the same file");
        assert!(!b.contains(file_id(&copy).unwrap()), "a copy is another file");
        // An upgrade puts a new file (a new inode) at the same path.
        let new = dir.path().join("sshd.new");
        fs::write(&new, b"new binary").unwrap();
        fs::rename(&new, &real).unwrap();
        b.refreshed = None;
        assert!(b.contains(file_id(&real).unwrap()));
    }
}
