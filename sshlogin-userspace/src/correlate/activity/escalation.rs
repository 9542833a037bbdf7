//! Escalations: which set-user-id programs decide through PAM's records
//! (sudo, su), what their records decide, and the account asked for.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::decode::audit::{AuditMessage, types};

/// Programs that say through PAM's audit records whether someone got in:
/// their set-user-id exec is not yet an escalation. Known by the file that
/// runs (device and inode), never by the name the exec used.
const SPEAKS_PAM: &[&str] = &[
    "/usr/bin/sudo",
    "/usr/bin/sudoedit",
    "/bin/su",
    "/usr/bin/su",
    "/usr/bin/doas",
    "/usr/bin/pkexec",
    "/usr/local/bin/sudo",
    "/usr/local/bin/doas",
];
/// The host's files are looked at again this often (an upgrade replaces them).
const REFRESH: Duration = Duration::from_secs(60);
/// Privileged processes remembered for the audit records they send later.
const MAX_PRIVILEGED: usize = 4096;

/// A file as the kernel names it: device (major << 20 | minor) and inode.
pub type FileId = (u32, u64);

/// The kernel's `dev_t` of `st_dev` (user space's encoding).
fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | (minor & 0xf_ffff)
}

/// Where the PAM-speaking programs are.
pub enum PamPrograms {
    /// This host's files, looked at again every [`REFRESH`].
    Host { ids: Vec<FileId>, at: Option<Instant> },
    /// Given (tests, replays of another host's capture).
    Fixed(Vec<FileId>),
}

impl Default for PamPrograms {
    fn default() -> PamPrograms {
        PamPrograms::Host { ids: Vec::new(), at: None }
    }
}

impl PamPrograms {
    pub fn speaks_pam(&mut self, id: FileId) -> bool {
        match self {
            PamPrograms::Fixed(ids) => ids.contains(&id),
            PamPrograms::Host { ids, at } => {
                if at.is_none_or(|t| t.elapsed() >= REFRESH) {
                    use std::os::unix::fs::MetadataExt;
                    *ids = SPEAKS_PAM
                        .iter()
                        .filter_map(|p| std::fs::metadata(p).ok())
                        .map(|m| (kernel_dev(m.dev()), m.ino()))
                        .collect();
                    *at = Some(Instant::now());
                }
                ids.contains(&id)
            }
        }
    }
}

/// A privileged process of a session: what it was started as, and what
/// it has said.
#[derive(Clone, Debug, Default)]
pub struct Privileged {
    pub program: Option<String>,
    pub args: Vec<String>,
    pub succeeded: bool,
    pub failed: bool,
    pub at_ns: u64,
}

/// The privileged processes, by pid, bounded: when full the oldest go.
#[derive(Default)]
pub struct PrivilegedTable(HashMap<u32, Privileged>);

impl PrivilegedTable {
    pub fn get(&self, pid: u32) -> Privileged {
        self.0.get(&pid).cloned().unwrap_or_default()
    }

    pub fn forget(&mut self, pid: u32) {
        self.0.remove(&pid);
    }

    pub fn remember(&mut self, pid: u32, p: Privileged) {
        if self.0.len() >= MAX_PRIVILEGED && !self.0.contains_key(&pid) {
            // The older half goes (each pid's own record is its last word).
            let mut ages: Vec<u64> = self.0.values().map(|p| p.at_ns).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.0.retain(|_, p| p.at_ns > cut);
        }
        self.0.insert(pid, p);
    }
}

/// The account `sudo` was asked for (`-u NAME`, `-nu NAME`, `--user=NAME`),
/// root if none.
pub fn sudo_target(args: &[String]) -> String {
    // Short options of sudo that take a value.
    const VALUED: &str = "CDghpRrTtUu";
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" || !a.starts_with('-') || a == "-" {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some(("user", name)) => return name.to_string(),
                None if long == "user" => return it.next().cloned().unwrap_or_else(|| "root".into()),
                _ => continue,
            }
        }
        let cluster = &a[1..];
        for (i, c) in cluster.char_indices() {
            if VALUED.contains(c) {
                let rest = &cluster[i + c.len_utf8()..];
                let value = if rest.is_empty() { it.next().cloned() } else { Some(rest.to_string()) };
                if c == 'u' {
                    return value.unwrap_or_else(|| "root".into());
                }
                break;
            }
        }
    }
    "root".into()
}

/// What one audit record of a privileged session process decides: (success,
/// the account, sudo's command), or nothing. `known` is what the process
/// said before; it is updated.
pub fn decide(
    audit: &AuditMessage,
    sudo: bool,
    known: &mut Privileged,
) -> Option<(bool, Option<String>, Option<String>)> {
    let acct = || audit.acct().map(|a| a.into_owned());
    let target = || if sudo { Some(sudo_target(&known.args)) } else { acct() };
    let decision = match (audit.msg_type, audit.success()) {
        // The first failure of a process is reported (sudo sends USER_AUTH
        // for each wrong password and USER_CMD when it gives up: whichever
        // comes first, so that an interrupted sudo is reported too); later
        // ones of the same process are the same attempt.
        (types::USER_AUTH | types::USER_ACCT | types::USER_CMD, Some(false)) if !known.failed && !known.succeeded => {
            known.failed = true;
            (false, target(), audit.get("cmd").map(|c| c.into_owned()))
        }
        (types::USER_CMD, Some(true)) if sudo && !known.succeeded => {
            known.succeeded = true;
            (true, target(), audit.get("cmd").map(|c| c.into_owned()))
        }
        // su (and sudo without a USER_CMD record) opened a session for the
        // account it switches to.
        (types::USER_START, Some(true)) if !known.succeeded => {
            known.succeeded = true;
            (true, acct(), None)
        }
        _ => return None,
    };
    Some(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::audit::AuditMessage;

    fn audit(msg_type: u16, text: &str) -> AuditMessage {
        AuditMessage { msg_type, text: text.into(), truncated: false }
    }

    #[test]
    fn sudo_targets() {
        let t = |a: &[&str]| sudo_target(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(t(&["sudo", "-n", "true"]), "root");
        assert_eq!(t(&["sudo", "-u", "bob", "id"]), "bob");
        assert_eq!(t(&["sudo", "-ubob", "id"]), "bob");
        assert_eq!(t(&["sudo", "-nu", "alice", "id"]), "alice");
        assert_eq!(t(&["sudo", "-Eu", "alice", "id"]), "alice");
        assert_eq!(t(&["sudo", "-g", "adm", "-u", "bob", "id"]), "bob");
        assert_eq!(t(&["sudo", "--user=bob", "id"]), "bob");
        assert_eq!(t(&["sudo", "--user", "bob", "id"]), "bob");
        assert_eq!(t(&["sudo", "id", "-u", "bob"]), "root", "the command's own options");
        assert_eq!(t(&[]), "root");
    }

    #[test]
    fn one_failure_per_attempt_and_the_first_decides() {
        let mut k = Privileged { args: vec!["sudo".into(), "-S".into(), "id".into()], ..Privileged::default() };
        let auth = audit(types::USER_AUTH, r#"op=PAM:authentication acct="bob" exe="/usr/bin/sudo" res=failed"#);
        assert_eq!(decide(&auth, true, &mut k), Some((false, Some("root".into()), None)));
        assert_eq!(decide(&auth, true, &mut k), None, "the second USER_AUTH of the same sudo");
        let cmd = audit(types::USER_CMD, r#"cwd="/" cmd="id" exe="/usr/bin/sudo" res=failed"#);
        assert_eq!(decide(&cmd, true, &mut k), None);
        let mut su = Privileged::default();
        let auth = audit(types::USER_AUTH, r#"op=PAM:authentication acct="root" exe="/usr/bin/su" res=failed"#);
        assert_eq!(decide(&auth, false, &mut su), Some((false, Some("root".into()), None)));
    }

    #[test]
    fn sudo_succeeds_on_its_command_su_on_its_session() {
        let mut k =
            Privileged { args: vec!["sudo".into(), "-u".into(), "bob".into(), "id".into()], ..Default::default() };
        let cmd = audit(types::USER_CMD, r#"cwd="/" cmd="id" exe="/usr/bin/sudo" res=success"#);
        assert_eq!(decide(&cmd, true, &mut k), Some((true, Some("bob".into()), Some("id".into()))));
        let start = audit(types::USER_START, r#"op=PAM:session_open acct="bob" exe="/usr/bin/sudo" res=success"#);
        assert_eq!(decide(&start, true, &mut k), None, "the same decision");
        let mut su = Privileged::default();
        let start = audit(types::USER_START, r#"op=PAM:session_open acct="root" exe="/usr/bin/su" res=success"#);
        assert_eq!(decide(&start, false, &mut su), Some((true, Some("root".into()), None)));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_newest() {
        let mut t = PrivilegedTable::default();
        for pid in 0..(MAX_PRIVILEGED as u32 + 10) {
            t.remember(pid, Privileged { at_ns: u64::from(pid), succeeded: true, ..Privileged::default() });
        }
        assert!(t.0.len() <= MAX_PRIVILEGED);
        assert!(t.get(MAX_PRIVILEGED as u32 + 9).succeeded);
        assert!(!t.get(0).succeeded);
    }
}
