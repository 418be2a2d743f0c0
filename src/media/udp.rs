//! Reading datagrams with the time the kernel queued them
//! (`SO_TIMESTAMPNS`), so a session's sockets can be drained once per 20 ms
//! slot by the media clock without blurring arrival times: the jitter
//! estimate and the jitter buffer see when a packet really came, not when
//! a thread got round to it. Where the kernel gives no timestamp, the time
//! of reading stands in.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

/// A stamp older than this is not believed (a wall-clock step between the
/// kernel's stamp and our reading): the time of reading stands in.
const MAX_AGE: Duration = Duration::from_secs(2);

/// Asks the kernel to stamp every datagram queued on `sock`. Best effort.
pub(crate) fn enable_timestamps(sock: &UdpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on an open socket with a pointer to a c_int
        // that lives through the call and its exact size.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "no kernel receive timestamps");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = sock;
}

/// Turns kernel stamps (wall clock) into `Instant`s, from one reading of
/// both clocks per drain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamps {
    now: Instant,
    wall: Option<Duration>,
}

impl Stamps {
    pub(crate) fn now() -> Stamps {
        Stamps {
            now: Instant::now(),
            wall: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok(),
        }
    }

    /// When a datagram stamped `kernel` (since the Unix epoch) arrived.
    pub(crate) fn arrival(&self, kernel: Option<Duration>) -> Instant {
        let age = match (self.wall, kernel) {
            (Some(wall), Some(k)) => wall.saturating_sub(k),
            _ => Duration::ZERO,
        };
        if age > MAX_AGE {
            return self.now;
        }
        self.now.checked_sub(age).unwrap_or(self.now)
    }
}

/// One datagram without blocking (`WouldBlock` when none is queued): its
/// length, source and kernel stamp.
#[cfg(target_os = "linux")]
pub(crate) fn recv_dated(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Duration>)> {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one timespec control message, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: msghdr and sockaddr_storage are plain data (zero is valid);
    // every pointer stored in `msg` refers to a local that outlives the
    // call with its true length; the CMSG_* walk is bounded by
    // msg_controllen as the kernel set it.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut addr as *mut libc::sockaddr_storage as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let from = sockaddr_to_std(&addr).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
        })?;
        let mut stamp = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                if ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec) {
                    stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, from, stamp))
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn recv_dated(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Duration>)> {
    sock.recv_from(buf).map(|(n, from)| (n, from, None))
}

#[cfg(target_os = "linux")]
fn sockaddr_to_std(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_carry_their_source_and_a_kernel_stamp_of_their_arrival() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        enable_timestamps(&b);
        let mut buf = [0u8; 64];
        assert_eq!(
            recv_dated(&b, &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // The kernel turns stamping on lazily (a deferred static key), so
        // the first datagrams may be dated when read: try a few (bounded).
        let mut ages = Vec::new();
        for _ in 0..10 {
            a.send_to(b"hello", b.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            let stamps = Stamps::now();
            let (n, from, stamp) = recv_dated(&b, &mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"hello"[..], a.local_addr().unwrap()));
            let age = stamps.now - stamps.arrival(stamp);
            ages.push(age);
            if !cfg!(target_os = "linux") || age >= Duration::from_millis(25) {
                break;
            }
        }
        // Queued ~30 ms before we read it: the stamp says so.
        if cfg!(target_os = "linux") {
            let age = *ages.last().unwrap();
            assert!(
                age >= Duration::from_millis(25) && age < Duration::from_secs(1),
                "ages {ages:?}"
            );
        }
        // Implausible or missing stamps fall back to the time of reading.
        let stamps = Stamps::now();
        assert_eq!(stamps.arrival(Some(Duration::ZERO)), stamps.now);
        assert_eq!(stamps.arrival(None), stamps.now);
    }
}
