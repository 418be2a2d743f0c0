//! RTP port allocation from the configured range. A lease holds an even port
//! (RTCP on port + 1) until it is dropped, on every path that ends a call.
//! Ports are drawn at random, so a stranger cannot guess the next call's
//! port from the last one, and a port just freed waits out a quarantine
//! (late packets of the old call must not land in the new one).

use std::collections::VecDeque;
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

/// Every even port of the range is in exactly one place: `fresh`,
/// `quarantine` or leased. Taking and freeing a port cost O(1) whatever the
/// range (a scan of a 25,000-port range per call was a tenth of the node's
/// CPU at 150 calls/s).
#[derive(Debug)]
struct Inner {
    min: u16,
    max: u16,
    /// Free ports out of quarantine, in no order (drawn at random).
    fresh: Vec<u16>,
    /// Freed ports, oldest first, with when they were freed.
    quarantine: VecDeque<(u16, Instant)>,
    leased: usize,
}

impl Inner {
    /// Moves the ports whose quarantine is over back to `fresh`.
    fn release_quarantine(&mut self, now: Instant) {
        while let Some(&(port, at)) = self.quarantine.front() {
            if now.saturating_duration_since(at) < QUARANTINE {
                break;
            }
            self.quarantine.pop_front();
            self.fresh.push(port);
        }
    }

    /// A free port: a random fresh one; when every free port is
    /// quarantined, the longest-freed one (a small range must still take calls).
    fn take(&mut self, rng: &mut impl Rng) -> Option<u16> {
        if !self.fresh.is_empty() {
            let i = rng.gen_range(0..self.fresh.len());
            return Some(self.fresh.swap_remove(i));
        }
        self.quarantine.pop_front().map(|(port, _)| port)
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
            inner.leased -= 1;
            inner.quarantine.push_back((self.port, Instant::now()));
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
                // Even ports whose RTCP port (+1) is still in the range.
                fresh: (min..max).step_by(2).collect(),
                quarantine: VecDeque::new(),
                leased: 0,
            })),
        }
    }

    /// Number of ports currently leased.
    pub fn in_use(&self) -> usize {
        self.inner.lock().map(|i| i.leased).unwrap_or(0)
    }

    /// Takes a random free even port and binds the RTP socket on `ip`.
    /// Ports that another process holds are skipped.
    pub fn allocate(&self, ip: IpAddr) -> Result<(PortLease, UdpSocket), PortError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (min, max) = (inner.min, inner.max);
        let now = Instant::now();
        inner.release_quarantine(now);
        let mut rng = rand::thread_rng();
        // Bounded: a port another process holds goes to the back of the
        // quarantine (tried again later), so each attempt uses up one
        // free port of this moment.
        let attempts = inner.fresh.len() + inner.quarantine.len();
        for _ in 0..attempts {
            let Some(port) = inner.take(&mut rng) else {
                break;
            };
            match UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(socket) => {
                    let _ = socket.set_nonblocking(true);
                    inner.leased += 1;
                    return Ok((
                        PortLease {
                            port,
                            inner: self.inner.clone(),
                        },
                        socket,
                    ));
                }
                Err(_) => inner.quarantine.push_back((port, now)),
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

    #[test]
    fn a_port_another_process_holds_is_skipped_and_not_lost() {
        let alloc = PortAllocator::new(41500, 41503);
        // Someone else holds one of the two slots.
        let other = UdpSocket::bind(SocketAddr::new(IP, 41500))
            .or_else(|_| UdpSocket::bind(SocketAddr::new(IP, 41502)))
            .unwrap();
        let held = other.local_addr().unwrap().port();
        let (a, _sa) = alloc.allocate(IP).unwrap();
        assert_ne!(a.port(), held);
        assert!(alloc.allocate(IP).is_err(), "the held port cannot be bound");
        drop(other);
        // Once it is let go, the port serves again.
        let (b, _sb) = alloc.allocate(IP).unwrap();
        assert_eq!(b.port(), held);
        assert_eq!(alloc.in_use(), 2);
    }
}
