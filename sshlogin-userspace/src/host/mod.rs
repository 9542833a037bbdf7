//! Everything sshlogin asks the host, in one place: `/proc` and sockets
//! (for the correlator's [`ProcView`](crate::correlate::process::ProcView)),
//! the user database (for the enricher's [`UserDb`]), the clocks (its
//! [`Clock`]), and this boot's and this machine's ids. The stages take
//! these behind their traits, so replays and tests run them without a host.

pub mod procfs;
pub mod socket;

use nix::time::{ClockId, clock_gettime};
use uuid::Uuid;

use crate::enrich::{Clock, UserDb};

/// NSS (`getpwnam_r`), so LDAP and SSSD users resolve like local ones.
pub struct Nss;

impl UserDb for Nss {
    fn uid_of(&self, name: &str) -> Option<u32> {
        nix::unistd::User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
    }
    fn name_of(&self, uid: u32) -> Option<String> {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
    }
}

/// The system's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn boot_to_unix_ns(&self) -> i128 {
        clock_ns(ClockId::CLOCK_REALTIME) - clock_ns(ClockId::CLOCK_BOOTTIME)
    }
    fn unix_now_ns(&self) -> u64 {
        u64::try_from(clock_ns(ClockId::CLOCK_REALTIME)).unwrap_or(0)
    }
}

fn clock_ns(c: ClockId) -> i128 {
    clock_gettime(c).map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())).unwrap_or(0)
}

/// CLOCK_BOOTTIME now, nanoseconds: the kernel's time in every record.
pub fn boot_now_ns() -> u64 {
    u64::try_from(clock_ns(ClockId::CLOCK_BOOTTIME)).unwrap_or(0)
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), the namespace of
/// connection and event ids; a random one if the kernel does not say.
pub fn boot_id() -> Uuid {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .unwrap_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_OID, SystemClock.unix_now_ns().to_string().as_bytes()))
}

/// `/etc/machine-id`, when there is one.
pub fn machine_id() -> Option<String> {
    std::fs::read_to_string("/etc/machine-id").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub fn host_name() -> Option<String> {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok())
}

/// Tells the service manager how the daemon stands (`READY=1`,
/// `STOPPING=1`), as sd_notify(3) does: one datagram to `$NOTIFY_SOCKET`
/// (a path, or an abstract name after `@`). Nothing without the variable.
pub fn notify(state: &str) {
    use std::os::{linux::net::SocketAddrExt, unix::ffi::OsStrExt};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = (|| {
        let bytes = target.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
            None => std::os::unix::net::SocketAddr::from_pathname(&target)?,
        };
        std::os::unix::net::UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)
    })();
    if let Err(e) = sent {
        tracing::warn!("cannot tell the service manager {state}: {e}");
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> Option<String> {
    nix::sys::utsname::uname().ok().map(|u| u.release().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn notify_sends_one_datagram_to_the_socket_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // SAFETY: the only test in this binary that touches NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        super::notify("READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
