//! `sshlogin check`: can this host run sshlogin with this configuration?
//! One line per item, with what to do about each that fails. Exit 0 only
//! when nothing failed; warnings (a fallback will be used) do not fail.

use std::{fmt, fs, os::unix::net::UnixDatagram, path::Path, process::Command};

use crate::{
    admit::{binaries::Binaries, scan},
    config::{Config, Sink},
    export::http::Exporter,
    metrics::Metrics,
    probes::{self, SyscallProbes},
    resource::Resource,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Clone, Debug)]
pub struct Item {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do when it is not ok.
    pub fix: Option<String>,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag} {:<12} {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n                  fix: {fix}")?;
        }
        Ok(())
    }
}

fn ok(name: &'static str, detail: impl Into<String>) -> Item {
    Item { name, status: Status::Ok, detail: detail.into(), fix: None }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Item {
    Item { name, status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Item {
    Item { name, status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
}

/// Every check, in order. `network`: also try each configured endpoint.
pub async fn run(config: &Config, network: bool) -> Vec<Item> {
    let mut items = vec![kernel(), privileges()];
    let tracefs = tracefs();
    let tracefs_ok = tracefs.status != Status::Fail;
    items.push(tracefs);
    if tracefs_ok {
        items.push(tracepoints(config.capture.syscall_probes));
    }
    items.push(probes_load(config));
    items.push(sshd_binaries(&config.capture.sshd_paths));
    items.push(sshd_trees(config));
    items.push(pam_audit(&config.capture.sshd_paths));
    items.push(syslog());
    if config.otlp.is_some() || config.webhook.is_some() {
        items.push(state_dir(&config.spool.dir));
    } else if config.first_seen.is_some() {
        // Only the first-seen store lives there: without it, opens go out unmarked.
        let mut item = state_dir(&config.spool.dir);
        if item.status == Status::Fail {
            item.status = Status::Warn;
            item.fix = Some(
                "opens will carry no ssh.first_seen marks: set spool.dir (or --state-dir) to a writable directory, \
                 or first_seen.enabled = false"
                    .into(),
            );
        }
        items.push(item);
    }
    if network {
        for sink in config.otlp.iter().chain(config.webhook.iter()) {
            items.push(endpoint(sink).await);
        }
    }
    items
}

fn kernel() -> Item {
    let release = probes::kernel_release();
    match probes::kernel_version(&release) {
        Some(v) if v >= probes::MIN_KERNEL => {
            ok("kernel", format!("Linux {release} (5.8 or newer needed for the BPF ring buffer)"))
        }
        Some(_) => fail(
            "kernel",
            format!("Linux {release} is older than 5.8: it has no BPF ring buffer"),
            "run a kernel 5.8 or newer",
        ),
        None => warn("kernel", format!("cannot tell the version of {release:?}"), "make sure it is 5.8 or newer"),
    }
}

fn privileges() -> Item {
    if nix::unistd::geteuid().is_root() {
        ok("privileges", "running as root")
    } else {
        fail("privileges", "not root: loading BPF programs needs root", "run sshlogin as root (the systemd unit does)")
    }
}

fn tracefs() -> Item {
    let was_mounted =
        ["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"].iter().any(|p| Path::new(p).is_dir());
    match probes::ensure_tracefs() {
        Ok(dir) if was_mounted => ok("tracefs", format!("mounted at {}", dir.display())),
        Ok(dir) => ok("tracefs", format!("was not mounted; mounted it at {}", dir.display())),
        Err(e) => fail("tracefs", format!("{e:#}"), "mount -t tracefs nodev /sys/kernel/tracing"),
    }
}

fn tracepoints(mode: SyscallProbes) -> Item {
    let missing: Vec<String> = probes::tracepoints(mode)
        .into_iter()
        .filter(|(category, name)| probes::tracepoint_format(category, name).is_err())
        .map(|(category, name)| format!("{category}:{name}"))
        .collect();
    if missing.is_empty() {
        ok("tracepoints", format!("all {} present", probes::tracepoints(mode).len()))
    } else {
        fail(
            "tracepoints",
            format!("missing: {}", missing.join(", ")),
            "a kernel built with CONFIG_FTRACE_SYSCALLS and sched tracepoints",
        )
    }
}

fn probes_load(config: &Config) -> Item {
    match probes::Probes::load(&probes::Settings::from(config)) {
        Ok((probes, _ring)) => {
            let (backend, refusal) = (probes.backend(), probes.fentry_refusal().map(str::to_owned));
            let sessions = probes.follows_sessions();
            drop(probes);
            let mut detail = format!(
                "the ring buffers and every program loaded, passed the verifier and attached (then detached); \
                 syscall probes: {backend}"
            );
            if let Some(refusal) = &refusal {
                detail.push_str(&format!(", because the kernel refused fentry: {refusal}"));
            }
            detail.push_str(if sessions { "; session activity: followed" } else { "; session activity: off" });
            if !sessions {
                warn(
                    "ebpf",
                    detail,
                    "session activity (ssh.session.exec, ssh.session.escalation) reads task fields at offsets from \
                     /sys/kernel/btf/vmlinux: a kernel built with CONFIG_DEBUG_INFO_BTF; logins are reported as ever",
                )
            } else if refusal.is_some() {
                warn(
                    "ebpf",
                    detail,
                    "fentry needs a kernel with BTF and BPF trampolines that lockdown does not forbid; \
                     tracepoints cost every syscall on the host more (docs/performance.md)",
                )
            } else {
                ok("ebpf", detail)
            }
        }
        Err(e) => fail(
            "ebpf",
            format!("{e:#}"),
            "see the error: a kernel 5.8+ with BPF enabled, root, and BPF not restricted by lockdown or seccomp",
        ),
    }
}

/// Which OpenSSH layout these binaries make up.
pub fn sshd_layout(binaries: &[impl AsRef<str>]) -> &'static str {
    let has = |name: &str| binaries.iter().any(|p| p.as_ref().ends_with(&format!("/{name}")));
    if has("sshd-auth") {
        "OpenSSH 10 layout (sshd, sshd-session, sshd-auth)"
    } else if has("sshd-session") {
        "OpenSSH 9.8+ layout (sshd, sshd-session)"
    } else {
        "one sshd binary (OpenSSH 9.7 or older)"
    }
}

fn sshd_binaries(paths: &[String]) -> Item {
    let found: Vec<&String> = paths.iter().filter(|p| Path::new(p).is_file()).collect();
    if found.is_empty() {
        return fail(
            "sshd",
            format!("no sshd binary at any of {}", paths.join(", ")),
            "set capture.sshd_paths in the config (or --sshd-path) to where sshd, sshd-session and sshd-auth live",
        );
    }
    let layout = sshd_layout(&found);
    let version = Command::new(found[0])
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stderr).lines().next().map(|l| format!("; {}", l.trim())));
    ok(
        "sshd",
        format!(
            "{layout}: {}{}",
            found.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            version.unwrap_or_default()
        ),
    )
}

/// The sshd process trees running now, as the daemon would judge them at
/// start: the refused ones by executable, with what admits them.
fn sshd_trees(config: &Config) -> Item {
    let mut binaries = Binaries::new(config.capture.sshd_paths.clone());
    let (tops, discovered) = scan::running(&config.capture.family, &mut binaries);
    let refused: Vec<&scan::Top> = tops.iter().filter(|t| !t.admitted).collect();
    let admitted = tops.len() - refused.len();
    let mut detail = format!("{admitted} running sshd tree(s) admitted");
    if !discovered.is_empty() {
        detail.push_str(&format!("; admitted as this host's listener binaries: {}", discovered.join(", ")));
    }
    if refused.is_empty() {
        return ok("sshd-trees", detail);
    }
    let mut exes: Vec<&str> = refused.iter().map(|t| t.exe.as_str()).collect();
    exes.dedup();
    let pids: Vec<String> = refused.iter().map(|t| t.pid.to_string()).collect();
    warn(
        "sshd-trees",
        format!(
            "{detail}; refused (root, named like sshd, not one of this host's sshd binaries): {} (pid {}); \
             their records are not reported",
            exes.join(", "),
            pids.join(", ")
        ),
        format!(
            "if it is an sshd (in a chroot or container, say), admit it with {} (capture.sshd_paths)",
            exes.iter().map(|e| format!("--sshd-path {e}")).collect::<Vec<_>>().join(" ")
        ),
    )
}

/// `UsePAM` as the sshd among `paths` reads its config (`sshd -T`).
fn use_pam(paths: &[String]) -> Option<bool> {
    let sshd = paths.iter().find(|p| p.ends_with("/sshd") && Path::new(p).is_file())?;
    let out = Command::new(sshd).arg("-T").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix("usepam ")).map(|v| v.trim() == "yes")
}

/// Whether sshd sends its own audit records: the binary that runs the
/// session is linked with libaudit (`sshd` up to OpenSSH 9.7,
/// `sshd-session` from 9.8, whose `sshd` is not).
fn pam_audit(paths: &[String]) -> Item {
    let libaudit = paths.iter().filter(|p| Path::new(p).is_file()).any(|p| {
        Command::new("ldd").arg(p).output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libaudit"))
    });
    match (use_pam(paths), libaudit) {
        (Some(true), true) => ok("pam-audit", "UsePAM yes, and sshd and PAM send audit records"),
        (Some(false), _) => warn(
            "pam-audit",
            "UsePAM no: sessions will be seen from sshd's privilege drop (the setresuid fallback)",
            "UsePAM yes in sshd_config gives PAM's session records (terminal, audit session id)",
        ),
        (_, false) => warn(
            "pam-audit",
            "sshd is not linked with libaudit: failures are seen only from PAM and sshd's log lines",
            "use a distribution sshd built with --with-audit=linux",
        ),
        (None, true) => ok("pam-audit", "sshd sends audit records (sshd -T could not tell UsePAM)"),
    }
}

fn syslog() -> Item {
    let listening = UnixDatagram::unbound().and_then(|s| s.connect("/dev/log")).is_ok();
    if listening {
        ok("syslog", "something listens on /dev/log, so sshd sends its log lines (port, method, key)")
    } else {
        warn(
            "syslog",
            "nothing listens on /dev/log: sshd logs nothing, so events lack the auth method and key",
            "run a syslog daemon or journald (its /dev/log socket is enough)",
        )
    }
}

fn state_dir(dir: &Path) -> Item {
    let probe = dir.join(".sshlogin-check");
    let result = fs::create_dir_all(dir).and_then(|_| fs::write(&probe, b"ok")).and_then(|_| fs::remove_file(&probe));
    match result {
        Ok(()) => ok("state-dir", format!("{} is writable", dir.display())),
        Err(e) => fail(
            "state-dir",
            format!("cannot write to {}: {e}", dir.display()),
            "set spool.dir (or --state-dir) to a writable directory; the systemd unit provides /var/lib/sshlogin",
        ),
    }
}

/// Asks the endpoint through the exporter itself (its CA, client
/// certificate, headers and token), so what `check` reaches is what `run`
/// reaches.
async fn endpoint(sink: &Sink) -> Item {
    let name = sink.kind.name();
    let exporter = match Exporter::new(sink, Resource::new(), Metrics::new()) {
        Ok(e) => e,
        Err(e) => return fail(name, e.to_string(), format!("fix {}", e.key)),
    };
    match exporter.probe().await {
        Ok(401 | 403) => fail(
            name,
            format!("{} refused the credentials", exporter.shown_url()),
            format!("check {name}'s bearer token file and headers"),
        ),
        // What `run` would keep retrying for ever: an OTLP endpoint must
        // take an (empty) export request. A webhook may well not take a GET.
        Ok(status @ (300..=399 | 404 | 405)) if sink.kind == crate::config::SinkKind::Otlp => fail(
            name,
            format!("{} answered HTTP {status} to an export request", exporter.shown_url()),
            "check the URL: OTLP/HTTP logs go to http(s)://HOST:4318/v1/logs (redirects are not followed)",
        ),
        Ok(status) => ok(name, format!("{} answered HTTP {status}", exporter.shown_url())),
        Err(e) => fail(
            name,
            format!("{} is not reachable: {e}", exporter.shown_url()),
            format!("check {name}'s URL, the network and TLS (or run check --no-network)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        use probes::{MIN_KERNEL, kernel_version};
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-30-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("4.19.0"), Some((4, 19)));
        assert!(kernel_version("4.19.0").unwrap() < MIN_KERNEL);
        assert!(kernel_version("5.8.0").unwrap() >= MIN_KERNEL);
        assert!(kernel_version("5.7.19").unwrap() < MIN_KERNEL);
        assert_eq!(kernel_version("garbage"), None);
    }

    #[test]
    fn a_missing_sshd_names_the_setting() {
        let item = sshd_binaries(&["/nonexistent/sshd".to_string()]);
        assert_eq!(item.status, Status::Fail);
        assert!(item.fix.unwrap().contains("capture.sshd_paths"));
    }

    #[test]
    fn lines_read_well() {
        let line = fail("tracefs", "not mounted", "mount -t tracefs nodev /sys/kernel/tracing").to_string();
        assert!(line.starts_with("FAIL tracefs"));
        assert!(line.contains("fix: mount -t tracefs"));
    }
}
