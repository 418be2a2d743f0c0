//! RTP port allocation from the configured range. A lease holds an even port
//! (RTCP on port + 1) until it is dropped, on every path that ends a call.
//! Ports are drawn at random, so a stranger cannot guess the next call's
//! port from the last one, and a port just freed waits out a quarantine
//! (late packets of the old call must not land in the new one).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

/// How long a freed port is not handed out again while others are free.
const QUARANTINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no free RTP port in {min}..={max}")]
    Exhausted { min: u16, max: u16 },
}

#[derive(Debug)]
struct Inner {
    min: u16,
    max: u16,
    in_use: BTreeSet<u16>,
    /// Freed ports and when (at most one entry per port of the range).
    freed: HashMap<u16, Instant>,
}

impl Inner {
    /// Even ports whose RTCP port (+1) is still in the range.
    fn slots(&self) -> impl Iterator<Item = u16> + '_ {
        (self.min..self.max).step_by(2)
    }

    /// Free ports, not quarantined; when every free port is quarantined,
    /// the longest-freed one (a small range must still take calls).
    fn candidates(&mut self, now: Instant) -> Vec<u16> {
        self.freed
            .retain(|_, at| now.saturating_duration_since(*at) < QUARANTINE);
        let free: Vec<u16> = self.slots().filter(|p| !self.in_use.contains(p)).collect();
        let fresh: Vec<u16> = free
            .iter()
            .copied()
            .filter(|p| !self.freed.contains_key(p))
            .collect();
        if !fresh.is_empty() {
            return fresh;
        }
        let mut quarantined = free;
        quarantined.sort_by_key(|p| self.freed.get(p).copied());
        quarantined.truncate(1);
        quarantined
    }
}

/// Hands out even RTP ports at random from the range.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    inner: Arc<Mutex<Inner>>,
}

/// A port taken from the allocator; freed when dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.in_use.remove(&self.port);
            inner.freed.insert(self.port, Instant::now());
        }
    }
}

impl PortAllocator {
    pub fn new(min: u16, max: u16) -> PortAllocator {
        let min = min + (min % 2);
        PortAllocator {
            inner: Arc::new(Mutex::new(Inner {
                min,
                max,
                in_use: BTreeSet::new(),
                freed: HashMap::new(),
            })),
        }
    }

    /// Number of ports currently leased.
    pub fn in_use(&self) -> usize {
        self.inner.lock().map(|i| i.in_use.len()).unwrap_or(0)
    }

    /// Takes a random free even port and binds the RTP socket on `ip`.
    /// Ports that another process holds are skipped.
    pub fn allocate(&self, ip: IpAddr) -> Result<(PortLease, UdpSocket), PortError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (min, max) = (inner.min, inner.max);
        let mut candidates = inner.candidates(Instant::now());
        let mut rng = rand::thread_rng();
        // Bounded: each failed bind removes its candidate.
        while !candidates.is_empty() {
            let port = candidates.swap_remove(rng.gen_range(0..candidates.len()));
            if let Ok(socket) = UdpSocket::bind(SocketAddr::new(ip, port)) {
                let _ = socket.set_nonblocking(true);
                inner.in_use.insert(port);
                inner.freed.remove(&port);
                return Ok((
                    PortLease {
                        port,
                        inner: self.inner.clone(),
                    },
                    socket,
                ));
            }
        }
        Err(PortError::Exhausted { min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn leases_are_even_unique_and_freed_on_drop() {
        let alloc = PortAllocator::new(41000, 41009);
        let (a, _sa) = alloc.allocate(IP).unwrap();
        let (b, _sb) = alloc.allocate(IP).unwrap();
        assert_eq!(a.port() % 2, 0);
        assert!(a.port() < 41009, "RTCP (+1) stays in the range");
        assert_ne!(a.port(), b.port());
        assert_eq!(alloc.in_use(), 2);
        drop(a);
        assert_eq!(alloc.in_use(), 1);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let alloc = PortAllocator::new(41100, 41103);
        let _keep: Vec<_> = (0..2).filter_map(|_| alloc.allocate(IP).ok()).collect();
        assert!(alloc.allocate(IP).is_err());
    }

    #[test]
    fn ports_are_drawn_at_random() {
        let alloc = PortAllocator::new(41200, 41399);
        let ports: Vec<u16> = (0..8)
            .map(|_| {
                let (lease, _s) = alloc.allocate(IP).unwrap();
                lease.port()
            })
            .collect();
        let steps: Vec<i32> = ports
            .windows(2)
            .map(|w| i32::from(w[1]) - i32::from(w[0]))
            .collect();
        assert!(
            !steps.iter().all(|s| *s == steps[0]),
            "a guessable sequence: {ports:?}"
        );
    }

    #[test]
    fn a_freed_port_waits_while_others_are_free() {
        let alloc = PortAllocator::new(41400, 41405);
        let (a, sa) = alloc.allocate(IP).unwrap();
        let freed = a.port();
        drop((a, sa));
        // Two other slots are free: the freed one is not drawn.
        let (b, _sb) = alloc.allocate(IP).unwrap();
        let (c, _sc) = alloc.allocate(IP).unwrap();
        assert!(b.port() != freed && c.port() != freed);
        // With every other port leased, the quarantined one serves.
        let (d, _sd) = alloc.allocate(IP).unwrap();
        assert_eq!(d.port(), freed);
    }
}
