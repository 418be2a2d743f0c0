//! UDP and TCP on one address. Each received datagram or framed TCP message
//! is parsed here (off the SIP core's task) and queued, bounded, to the core;
//! a full queue drops the message (UDP peers retransmit). TCP connections are
//! framed by `stream::StreamFramer` (Content-Length, a deadline per message);
//! a broken or late frame closes that connection only. TCP connections are
//! capped in all and per source (an IPv6 source is its /64).
//! Sending never blocks the caller: UDP uses `try_send_to`, TCP a bounded
//! per-connection queue.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};

use super::message::{Message, ParseError};
use super::stream::{StreamFramer, StreamLimits};

const TCP_SEND_QUEUE: usize = 64;
/// Bytes asked of the socket per read.
const TCP_READ_CHUNK: usize = 8192;

/// Bounds on TCP connections (`sip.tcp_*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections held at once; more are closed at accept.
    pub max_connections: usize,
    /// Connections one source holds at once (a trunk or a proxy needs a
    /// handful; one host cannot take every slot).
    pub max_per_source: usize,
    /// A message must be whole this long after its first byte.
    pub message_deadline: Duration,
    /// A connection with no message under way closes after this long.
    pub idle: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1024,
            max_per_source: 64,
            message_deadline: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        }
    }
}

pub type ConnId = u64;

pub use crate::domain::Transport;

/// Where a message goes: an address, and for TCP the connection it came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub conn: Option<ConnId>,
}

/// A received message, parsed, or the reason it could not be.
#[derive(Debug)]
pub struct Inbound {
    pub source: Target,
    pub message: Result<Message, ParseError>,
    /// The raw bytes for a best-effort 400 when parsing failed.
    pub raw_len: usize,
}

/// The bound sockets and the table of live TCP connections.
#[derive(Clone)]
pub struct Transports {
    udp: Arc<UdpSocket>,
    tcp: Arc<DashMap<ConnId, mpsc::Sender<Bytes>>>,
    local: SocketAddr,
    next_conn: Arc<AtomicU64>,
    inbound: mpsc::Sender<Inbound>,
    max_message: usize,
    tcp_limits: TcpLimits,
}

impl Transports {
    /// Binds UDP then TCP on the same port (with port 0, the port UDP got).
    pub async fn bind(
        addr: SocketAddr,
        max_message: usize,
        tcp_limits: TcpLimits,
        inbound: mpsc::Sender<Inbound>,
    ) -> std::io::Result<(Transports, TcpListener)> {
        let mut last_err = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind(addr).await?;
            let local = udp.local_addr()?;
            match TcpListener::bind(local).await {
                Ok(listener) => {
                    let t = Transports {
                        udp: Arc::new(udp),
                        tcp: Arc::new(DashMap::new()),
                        local,
                        next_conn: Arc::new(AtomicU64::new(1)),
                        inbound,
                        max_message,
                        tcp_limits,
                    };
                    return Ok((t, listener));
                }
                // With port 0 the TCP port may be taken: try another UDP port.
                Err(e) if addr.port() == 0 => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err
            .unwrap_or_else(|| std::io::Error::other("could not bind UDP and TCP on one port")))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn tcp_connections(&self) -> usize {
        self.tcp.len()
    }

    /// Sends without waiting. A full or closed TCP queue drops the message
    /// (the transaction layer reports the timeout).
    pub fn send(&self, target: &Target, bytes: Bytes) {
        match target.transport {
            Transport::Udp => {
                if let Err(e) = self.udp.try_send_to(&bytes, target.addr) {
                    tracing::debug!(to = %target.addr, "UDP send failed: {e}");
                }
            }
            Transport::Tls => {
                tracing::debug!(to = %target.addr, "TLS is not spoken yet; message dropped")
            }
            Transport::Tcp => {
                let sender = target
                    .conn
                    .and_then(|id| self.tcp.get(&id).map(|s| s.clone()));
                match sender {
                    Some(s) => {
                        if s.try_send(bytes).is_err() {
                            tracing::debug!(to = %target.addr, "TCP queue full or closed");
                        }
                    }
                    None => self.connect_and_send(target.addr, bytes),
                }
            }
        }
    }

    /// The connection the peer used is gone: open a new one (§18.2.2).
    fn connect_and_send(&self, addr: SocketAddr, bytes: Bytes) {
        let this = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let id = this.register(stream, addr);
                    if let Some(s) = this.tcp.get(&id) {
                        let _ = s.try_send(bytes);
                    }
                }
                _ => tracing::debug!(to = %addr, "TCP connect failed"),
            }
        });
    }

    /// Runs the UDP receive loop until the socket fails.
    pub async fn run_udp(self) {
        let mut buf = vec![0u8; self.max_message + 1];
        loop {
            let (n, from) = match self.udp.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    // ICMP port unreachable surfaces here on some systems; keep going.
                    tracing::debug!("UDP receive error: {e}");
                    continue;
                }
            };
            let data = &buf[..n];
            if n > self.max_message || is_keepalive(data) {
                continue;
            }
            let inbound = Inbound {
                source: Target {
                    transport: Transport::Udp,
                    addr: from,
                    conn: None,
                },
                message: Message::parse(data),
                raw_len: n,
            };
            // Overload: drop rather than queue without bound.
            let _ = self.inbound.try_send(inbound);
        }
    }

    /// Accepts TCP connections until the listener fails.
    pub async fn run_tcp(self, listener: TcpListener) {
        let permits = Arc::new(Semaphore::new(self.tcp_limits.max_connections));
        let per_source: Arc<DashMap<IpAddr, usize>> = Arc::new(DashMap::new());
        let per_source_max = self.tcp_limits.max_per_source;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("TCP accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(slot) = SourceSlot::take(&per_source, peer.ip(), per_source_max) else {
                tracing::debug!(%peer, "TCP connection refused: too many from this source");
                drop(stream);
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "TCP connection refused: connection limit reached");
                drop(stream);
                continue;
            };
            let id = self.register_with_permit(stream, peer, Some((permit, slot)));
            tracing::trace!(conn = id, %peer, "TCP connection");
        }
    }

    fn register(&self, stream: TcpStream, peer: SocketAddr) -> ConnId {
        self.register_with_permit(stream, peer, None)
    }

    fn register_with_permit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        permit: Option<(tokio::sync::OwnedSemaphorePermit, SourceSlot)>,
    ) -> ConnId {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(TCP_SEND_QUEUE);
        self.tcp.insert(id, tx);
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let source = Target {
                transport: Transport::Tcp,
                addr: peer,
                conn: Some(id),
            };
            let limits = StreamLimits {
                max_message: this.max_message,
                message_deadline: this.tcp_limits.message_deadline,
                idle: this.tcp_limits.idle,
            };
            let mut framer = StreamFramer::new(std::time::Instant::now(), limits);
            let mut chunk = vec![0u8; TCP_READ_CHUNK];
            'conn: loop {
                while let Some(framed) = framer.poll_message() {
                    match framed {
                        Ok(msg) => {
                            let inbound = Inbound {
                                source,
                                message: Message::parse(&msg),
                                raw_len: msg.len(),
                            };
                            let _ = this.inbound.try_send(inbound);
                        }
                        Err(e) => {
                            tracing::debug!(conn = id, %peer, "closing TCP connection: {e}");
                            break 'conn;
                        }
                    }
                }
                let deadline = tokio::time::Instant::from_std(framer.poll_timeout());
                match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => framer.handle_input(std::time::Instant::now(), &chunk[..n]),
                    Err(_) => {
                        if let Some(e) = framer.handle_timeout(std::time::Instant::now()) {
                            tracing::debug!(conn = id, %peer, "closing TCP connection: {e}");
                            break;
                        }
                    }
                }
            }
            this.tcp.remove(&id);
        });
        id
    }
}

/// One connection's place in its source's count, given back on drop.
struct SourceSlot {
    counts: Arc<DashMap<IpAddr, usize>>,
    ip: IpAddr,
}

/// The source a connection counts against: an IPv4 address (IPv4-mapped
/// IPv6 included), or an IPv6 /64 (one host may hold a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

impl SourceSlot {
    fn take(counts: &Arc<DashMap<IpAddr, usize>>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let ip = source_key(ip);
        let mut n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let gone = match self.counts.get_mut(&self.ip) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if gone {
            self.counts.remove_if(&self.ip, |_, n| *n == 0);
        }
    }
}

fn is_keepalive(data: &[u8]) -> bool {
    data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// The address a response goes to over UDP (RFC 3261 §18.2.2, RFC 3581):
/// always the request's source IP (its `received`, which only we write);
/// with `rport` the port it came from, else the Via's port or 5060. Nothing
/// in the Via can aim a response at another host.
pub fn response_addr(via: &super::message::Via, source: SocketAddr) -> SocketAddr {
    let port = match via.rport() {
        Some(_) => source.port(),
        None => via.port.unwrap_or(5060),
    };
    SocketAddr::new(source.ip(), port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Via;

    #[test]
    fn sources_are_counted_by_address_or_ipv6_prefix() {
        let key = |s: &str| source_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }

    #[test]
    fn a_source_holds_at_most_its_share_and_gets_slots_back() {
        let counts = Arc::new(DashMap::new());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| SourceSlot::take(&counts, ip, 3).expect("a slot"))
            .collect();
        assert!(SourceSlot::take(&counts, ip, 3).is_none());
        assert!(SourceSlot::take(&counts, "192.0.2.8".parse().unwrap(), 3).is_some());
        drop(held);
        assert!(counts.is_empty(), "counts of gone sources are removed");
        assert!(SourceSlot::take(&counts, ip, 3).is_some());
    }

    #[test]
    fn responses_go_to_the_source_ip_whatever_the_via_says() {
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let via = Via::parse("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1;rport").unwrap();
        assert_eq!(response_addr(&via, src), src);
        let via =
            Via::parse("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1;received=192.0.2.7").unwrap();
        assert_eq!(
            response_addr(&via, src),
            "192.0.2.7:5062".parse::<std::net::SocketAddr>().unwrap()
        );
        let via = Via::parse("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1").unwrap();
        assert_eq!(
            response_addr(&via, src),
            "192.0.2.7:5060".parse::<std::net::SocketAddr>().unwrap()
        );
        // The reflection: a claimed received and rport are ignored.
        let via = Via::parse(
            "SIP/2.0/UDP 192.0.2.7:40000;branch=z9hG4bK1;received=198.51.100.3;rport=9999",
        )
        .unwrap();
        assert_eq!(response_addr(&via, src), src);
    }
}
