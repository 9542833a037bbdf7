//! Asks another process's socket directly: `pidfd_getfd` (Linux 5.6+, root)
//! copies its descriptor into the daemon, which then asks the socket for its
//! type and both ends. Constant cost, where scanning `/proc/PID/net/tcp`
//! costs one line per socket on the host, every one of them rendered by the
//! kernel, for every login (measured: docs/performance.md, footprint).
//! Callers fall back to that scan when this fails.

use std::{
    mem::{MaybeUninit, size_of},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

/// A pidfd for `pid`.
fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a new descriptor this process owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// This process's copy of `fd` of the process behind `pidfd`.
fn copy_fd(pidfd: &OwnedFd, fd: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd as libc::c_int, 0) };
    // SAFETY: a new descriptor this process owns.
    (copy >= 0).then(|| unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

fn sock_type(fd: &OwnedFd) -> Option<libc::c_int> {
    int_opt(fd, libc::SO_TYPE)
}

type NameFn = unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// getsockname or getpeername as a SocketAddr (IPv4 and IPv6 only).
fn name(fd: &OwnedFd, call: NameFn) -> Option<SocketAddr> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `storage`.
    if unsafe { call(fd.as_raw_fd(), storage.as_mut_ptr().cast(), &mut len) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised and possibly filled by the kernel.
    let storage = unsafe { storage.assume_init() };
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const storage).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const storage).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), 0, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Descriptor numbers of `pid`, lowest first, read from /proc a few at a
/// time. Each is asked through its copy, not by reading its /proc link: a
/// new monitor still holds the listener's descriptors (a pipe per
/// unauthenticated connection), and in a burst of 300 clients those link
/// reads were a fifth of the daemon's CPU. Reading the directory in small
/// pieces matters too: /proc makes an inode for every entry listed, and the
/// connection's socket is usually among the first (accept takes the lowest
/// free number; after sshd re-executes itself it is 0).
struct Fds {
    dir: Option<OwnedFd>,
    buf: Vec<u8>,
    at: usize,
    end: usize,
}

fn fds(pid: u32) -> Fds {
    let path = std::ffi::CString::new(format!("/proc/{pid}/fd")).expect("no NUL in a path of digits");
    // SAFETY: a NUL-terminated path; the result is checked before use.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    // SAFETY: a new descriptor this process owns.
    let dir = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
    Fds { dir, buf: vec![0; 512], at: 0, end: 0 }
}

impl Iterator for Fds {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        loop {
            if self.at >= self.end {
                let dir = self.dir.as_ref()?;
                // SAFETY: the buffer is writable for its length.
                let n = unsafe {
                    libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), self.buf.as_mut_ptr(), self.buf.len())
                };
                if n <= 0 {
                    self.dir = None;
                    return None;
                }
                (self.at, self.end) = (0, n as usize);
            }
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
            let entry = &self.buf[self.at..self.end];
            let reclen = usize::from(u16::from_ne_bytes([*entry.get(16)?, *entry.get(17)?]));
            if reclen == 0 {
                self.dir = None;
                return None;
            }
            self.at += reclen;
            let name = entry.get(19..reclen.min(entry.len()))?;
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if let Some(fd) = std::str::from_utf8(name).ok().and_then(|n| n.parse().ok()) {
                return Some(fd);
            }
        }
    }
}

/// (local, remote) of `pid`'s first connected TCP socket, `Some(None)` if
/// it has none; `None` if its descriptors cannot be copied (no
/// `pidfd_getfd` before 5.6, or not permitted), which leaves the /proc scan
/// to the caller.
pub fn tcp_connection(pid: u32) -> Option<Option<(SocketAddr, SocketAddr)>> {
    let pidfd = pidfd(pid)?;
    let mut asked = false;
    // Once sshd has handed the connection to the process that serves it
    // (its own re-exec, or sshd-session), the socket is its standard input:
    // asked first, before /proc lists a single entry. The listing covers
    // the moments before that and everything else.
    for fd in std::iter::once(0).chain(fds(pid).filter(|&fd| fd != 0)) {
        // A descriptor closed since it was listed (a new monitor closes the
        // listening sockets it inherited) says nothing; the others still do.
        let Some(sock) = copy_fd(&pidfd, fd) else { continue };
        asked = true;
        if let Some(ends) = tcp_ends(&sock) {
            return Some(Some(ends));
        }
    }
    asked.then_some(None)
}

/// (local, remote) of a socket, if it is a connected TCP socket.
fn tcp_ends(sock: &OwnedFd) -> Option<(SocketAddr, SocketAddr)> {
    (sock_type(sock)? == libc::SOCK_STREAM).then_some(())?;
    let remote = name(sock, libc::getpeername)?;
    Some((name(sock, libc::getsockname)?, remote))
}

/// Whether `pid` holds a listening TCP socket; `None` if its descriptors
/// cannot be copied.
pub fn listens(pid: u32) -> Option<bool> {
    let pidfd = pidfd(pid)?;
    for fd in fds(pid) {
        let sock = copy_fd(&pidfd, fd)?;
        if sock_type(&sock) == Some(libc::SOCK_STREAM) && int_opt(&sock, libc::SO_ACCEPTCONN) == Some(1) {
            return Some(true);
        }
    }
    Some(false)
}

fn int_opt(fd: &OwnedFd, opt: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` describe a c_int the kernel writes.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) };
    (rc == 0).then_some(v)
}

/// The local end of socket `fd` of `pid`; `None` if it cannot be asked.
pub fn local_end(pid: u32, fd: u32) -> Option<SocketAddr> {
    name(&copy_fd(&pidfd(pid)?, fd)?, libc::getsockname)
}

/// Whether `fd` of `pid` is a datagram socket; `None` if it cannot be asked.
pub fn is_datagram(pid: u32, fd: u32) -> Option<bool> {
    let sock = copy_fd(&pidfd(pid)?, fd)?;
    Some(sock_type(&sock)? == libc::SOCK_DGRAM)
}

#[cfg(test)]
mod tests {
    use std::{
        net::{TcpListener, TcpStream, UdpSocket},
        os::fd::AsRawFd,
    };

    use super::*;

    /// A process may always copy its own descriptors. (Other tests of this
    /// process hold sockets too, so each descriptor is asked by number.)
    #[test]
    fn asks_sockets_by_descriptor() {
        let me = pidfd(std::process::id()).expect("pidfd_open (Linux 5.3+)");
        if copy_fd(&me, 0).is_none() {
            eprintln!("pidfd_getfd is not available here; the /proc scan is used instead");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let fd = |s: &dyn AsRawFd| s.as_raw_fd() as u32;
        let ends = |s: &dyn AsRawFd| tcp_ends(&copy_fd(&me, fd(s)).expect("copy my own descriptor"));
        assert_eq!(ends(&server), Some((server.local_addr().unwrap(), server.peer_addr().unwrap())));
        assert_eq!(ends(&client), Some((client.local_addr().unwrap(), client.peer_addr().unwrap())));
        assert_eq!(ends(&listener), None, "listening, not connected");
        assert_eq!(listens(std::process::id()), Some(true));
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(ends(&udp), None);
        let pid = std::process::id();
        assert_eq!(is_datagram(pid, fd(&udp)), Some(true));
        assert_eq!(is_datagram(pid, fd(&server)), Some(false));
        assert_eq!(is_datagram(pid, 999_999), None);
        // More than one read of the directory's entries holds.
        let files: Vec<_> = (0..64).map(|_| std::fs::File::open("/proc/self/stat").unwrap()).collect();
        let listed: Vec<u32> = fds(pid).collect();
        assert!(files.iter().all(|f| listed.contains(&fd(f))), "{listed:?}");
        assert!(listed.contains(&fd(&server)) && listed.contains(&fd(&udp)), "{listed:?}");
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "lowest first: {listed:?}");
        assert_eq!(fds(u32::MAX).count(), 0);
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(ends(&file), None, "not a socket");
    }

    /// A process serving a connection on its standard input (sshd after it
    /// re-executes itself), and one whose only socket is further down.
    #[test]
    fn finds_the_connection_at_standard_input_or_further_down() {
        use std::process::{Command, Stdio};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        if copy_fd(&pidfd(std::process::id()).expect("pidfd_open"), listener.as_raw_fd() as u32).is_none() {
            eprintln!("pidfd_getfd is not available here; the /proc scan is used instead");
            return;
        }
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let want = Some(Some((server.local_addr().unwrap(), server.peer_addr().unwrap())));
        let mut on_stdin = Command::new("sleep").arg("30").stdin(Stdio::from(OwnedFd::from(server))).spawn().unwrap();
        assert_eq!(tcp_connection(on_stdin.id()), want);
        // The client's end, inherited further down with nothing on 0 (at 3,
        // or 4 if it is 3 already: dup2 onto itself would keep it
        // close-on-exec).
        let want = Some(Some((client.local_addr().unwrap(), client.peer_addr().unwrap())));
        let raw = client.as_raw_fd();
        let target = if raw == 3 { 4 } else { 3 };
        let mut further = Command::new("sleep");
        further.arg("30").stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut further, move || {
                (libc::dup2(raw, target) == target).then_some(()).ok_or_else(std::io::Error::last_os_error)
            })
        };
        let mut further = further.spawn().unwrap();
        assert_eq!(tcp_connection(further.id()), want);
        for child in [&mut on_stdin, &mut further] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
