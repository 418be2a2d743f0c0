//! RTP port allocation from the configured range. A lease holds an even port
//! (RTCP on port + 1) until it is dropped, on every path that ends a call.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no free RTP port in {min}..={max}")]
    Exhausted { min: u16, max: u16 },
}

#[derive(Debug)]
struct Inner {
    min: u16,
    max: u16,
    next: u16,
    in_use: BTreeSet<u16>,
}

/// Hands out even RTP ports round-robin so a port just freed is not reused
/// at once (late packets of the old call would land in the new one).
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
                next: min,
                in_use: BTreeSet::new(),
            })),
        }
    }

    /// Number of ports currently leased.
    pub fn in_use(&self) -> usize {
        self.inner.lock().map(|i| i.in_use.len()).unwrap_or(0)
    }

    /// Takes a free even port and binds the RTP socket on `ip`. Ports that
    /// another process holds are skipped.
    pub fn allocate(&self, ip: IpAddr) -> Result<(PortLease, UdpSocket), PortError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (min, max) = (inner.min, inner.max);
        let slots = ((max.saturating_sub(min)) / 2 + 1) as usize;
        for _ in 0..slots {
            let port = inner.next;
            inner.next = if port.saturating_add(2) > max.saturating_sub(1) {
                min
            } else {
                port + 2
            };
            if inner.in_use.contains(&port) {
                continue;
            }
            if let Ok(socket) = UdpSocket::bind(SocketAddr::new(ip, port)) {
                let _ = socket.set_nonblocking(true);
                inner.in_use.insert(port);
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

    #[test]
    fn leases_are_even_unique_and_freed_on_drop() {
        let alloc = PortAllocator::new(41000, 41009);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (a, _sa) = alloc.allocate(ip).unwrap();
        let (b, _sb) = alloc.allocate(ip).unwrap();
        assert_eq!(a.port() % 2, 0);
        assert_ne!(a.port(), b.port());
        assert_eq!(alloc.in_use(), 2);
        drop(a);
        assert_eq!(alloc.in_use(), 1);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let alloc = PortAllocator::new(41100, 41103);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let _keep: Vec<_> = (0..2).filter_map(|_| alloc.allocate(ip).ok()).collect();
        assert!(alloc.allocate(ip).is_err());
    }
}
