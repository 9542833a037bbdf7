//! ProxyJump chains seen whole: a session's forward leaves from a local
//! address and port; when the next hop's sshd runs on a host this daemon
//! also watches (a container, a network namespace, the host itself), its
//! connection arrives from exactly that address and port. The table maps
//! one to the other for a while after the forward.

use std::{collections::HashMap, net::SocketAddr};

use uuid::Uuid;

/// Forwards remembered at once; beyond this the oldest is forgotten.
const MAX_HOPS: usize = 4096;
/// How long after a forward the next hop's connection may claim it: it
/// arrives within a round trip, or the SSH handshake's few.
const HOP_TTL_NS: u64 = 60_000_000_000;

#[derive(Default)]
pub struct Hops {
    /// Local end of the forward → (forwarding connection, when).
    by_source: HashMap<SocketAddr, (Uuid, u64)>,
}

impl Hops {
    pub fn forwarded(&mut self, from: SocketAddr, connection: Uuid, ktime_ns: u64) {
        if self.by_source.len() >= MAX_HOPS {
            self.by_source.retain(|_, (_, at)| ktime_ns.saturating_sub(*at) < HOP_TTL_NS);
            if self.by_source.len() >= MAX_HOPS
                && let Some(oldest) = self.by_source.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k)
            {
                self.by_source.remove(&oldest);
            }
        }
        self.by_source.insert(canonical(from), (connection, ktime_ns));
    }

    /// The connection whose forward a connection from `client` is, if one
    /// forwarded from there shortly before `ktime_ns`.
    pub fn from(&self, client: SocketAddr, ktime_ns: u64) -> Option<Uuid> {
        let (id, at) = self.by_source.get(&canonical(client))?;
        (ktime_ns >= *at && ktime_ns - at < HOP_TTL_NS).then_some(*id)
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_from_a_forward_source_names_it_for_a_while() {
        let mut h = Hops::default();
        let id = Uuid::from_u128(7);
        h.forwarded("10.0.0.1:40022".parse().unwrap(), id, 1_000);
        assert_eq!(h.from("[::ffff:10.0.0.1]:40022".parse().unwrap(), 2_000), Some(id));
        assert_eq!(h.from("10.0.0.1:40023".parse().unwrap(), 2_000), None);
        assert_eq!(h.from("10.0.0.1:40022".parse().unwrap(), 1_000 + HOP_TTL_NS), None, "too late");
        assert_eq!(h.from("10.0.0.1:40022".parse().unwrap(), 500), None, "before the forward");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut h = Hops::default();
        for i in 0..(MAX_HOPS as u64 + 10) {
            h.forwarded(
                SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000 + (i % 50_000) as u16)),
                Uuid::nil(),
                i,
            );
        }
        assert!(h.by_source.len() <= MAX_HOPS);
    }
}
