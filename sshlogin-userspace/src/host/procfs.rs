//! The correlator's questions about a process, answered from `/proc`: its
//! parent and start time, its TCP connection, its audit ids.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use crate::correlate::process::ProcView;

/// Reads `/proc/PID/stat`.
pub struct ProcFs;

impl ProcFs {
    /// (comm, ppid, starttime in clock ticks) of a live process.
    fn stat(pid: u32) -> Option<(String, u32, u64)> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&stat)
    }
}

/// Parses `/proc/PID/stat`; comm is in parentheses and may itself contain
/// spaces and parentheses, so the fields are counted after the last `)`.
pub fn parse_stat(stat: &str) -> Option<(String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After comm: state(0) ppid(1) ... starttime(19).
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

impl ProcView for ProcFs {
    fn parent(&self, pid: u32) -> Option<(u32, String)> {
        let (_, ppid, _) = Self::stat(pid)?;
        let (comm, _, _) = Self::stat(ppid)?;
        Some((ppid, comm))
    }

    fn start_ns(&self, pid: u32) -> Option<u64> {
        let (_, _, ticks) = Self::stat(pid)?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
        Some(ticks.saturating_mul(1_000_000_000 / hz.max(1)))
    }

    fn alive(&self, pid: u32, start_ns: u64) -> Option<bool> {
        let Some(now) = self.start_ns(pid) else { return Some(false) };
        let tick = 1_000_000_000
            / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64;
        Some(now.abs_diff(start_ns) <= 2 * tick)
    }

    fn tcp_connection(&self, pid: u32) -> Option<(SocketAddr, SocketAddr)> {
        if let Some(asked) = super::socket::tcp_connection(pid) {
            return asked;
        }
        let inodes = socket_inodes(pid);
        if inodes.is_empty() {
            return None;
        }
        // The process's own network namespace: sshd may run in another.
        ["tcp", "tcp6"].iter().find_map(|table| {
            let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
            text.lines()
                .skip(1)
                .filter_map(parse_net_line)
                .find_map(|s| (s.state == TCP_ESTABLISHED && inodes.contains(&s.inode)).then_some((s.local, s.remote)))
        })
    }

    fn local_end(&self, pid: u32, fd: u32) -> Option<SocketAddr> {
        super::socket::local_end(pid, fd)
    }

    fn is_udp(&self, pid: u32, fd: u32) -> Option<bool> {
        if let Some(datagram) = super::socket::is_datagram(pid, fd) {
            return Some(datagram);
        }
        let inode = socket_inode(&format!("/proc/{pid}/fd/{fd}"))?;
        for table in ["udp", "udp6", "tcp", "tcp6"] {
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
            if text.lines().skip(1).filter_map(parse_net_line).any(|s| s.inode == inode) {
                return Some(table.starts_with("udp"));
            }
        }
        None
    }

    fn audit_ids(&self, pid: u32) -> (Option<u32>, Option<u32>) {
        let read = |name: &str| {
            fs::read_to_string(format!("/proc/{pid}/{name}"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|&v| v != u32::MAX)
        };
        (read("loginuid"), read("sessionid"))
    }
}

const TCP_ESTABLISHED: u8 = 1;

/// The inode of a `socket:[N]` link.
fn socket_inode(link: &str) -> Option<u64> {
    let target = fs::read_link(link).ok()?;
    target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.filter_map(|e| socket_inode(e.ok()?.path().to_str()?)).collect()
}

/// One line of /proc/net/{tcp,tcp6,udp,udp6}.
#[derive(Debug, PartialEq, Eq)]
pub struct NetLine {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`;
/// addresses are hex words in host byte order, ports big-endian hex.
pub fn parse_net_line(line: &str) -> Option<NetLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(NetLine {
        local: hex_addr(f.get(1)?)?,
        remote: hex_addr(f.get(2)?)?,
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

fn hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word =
        |i: usize| -> Option<[u8; 4]> { Some(u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes()) };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let stat = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100";
        assert_eq!(parse_stat(stat), Some(("a) b (c)".to_string(), 17, 98765)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn net_lines_as_linux_prints_them() {
        // /proc/net/tcp and tcp6 on the build machine (little endian).
        let v4 = "   3: 0100007F:08AE 0100007F:A2F4 01 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_net_line(v4),
            Some(NetLine {
                local: "127.0.0.1:2222".parse().unwrap(),
                remote: "127.0.0.1:41716".parse().unwrap(),
                state: 1,
                inode: 123456
            })
        );
        let v6 = "   0: 00000000000000000000000001000000:08AE 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1";
        let l = parse_net_line(v6).unwrap();
        assert_eq!(l.local, "[::1]:2222".parse().unwrap());
        assert_eq!(l.remote, "[::1]:50000".parse().unwrap());
        let mapped =
            "   0: 0000000000000000FFFF00000100007F:0016 0000000000000000FFFF00000200A8C0:1F90 01 0:0 0:0 0 0 0 9 1";
        let l = parse_net_line(mapped).unwrap();
        assert_eq!(l.remote.ip().to_string(), "::ffff:192.168.0.2");
        assert_eq!(parse_net_line("  sl  local_address rem_address   st"), None);
        assert_eq!(parse_net_line("0: zz:zz 00:00 01 0 0 0 0 0 1"), None);
    }
}
