//! UDP and TCP on one address, TLS and WebSocket (RFC 7118) on their own
//! ports. Each received datagram or framed message is parsed here (off the
//! SIP core's task) and queued, bounded, to the core; a full queue drops
//! the message (UDP peers retransmit). Byte streams (TCP, TLS) are framed
//! by `stream::StreamFramer` (Content-Length, a deadline per message); a
//! WebSocket message is one SIP message (`websocket`). A broken or late
//! frame closes that connection only. Connections of every kind share one
//! cap, in all and per source (an IPv6 source is its /64), and one table:
//! responses and in-dialog requests go back on the connection a request
//! came on, and outbound requests reuse the connection already open to
//! their destination (§18.2.2, RFC 5923's spirit).
//! Sending never blocks the caller: UDP uses `try_send_to`, connections a
//! bounded per-connection queue.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::message::{Message, ParseError};
use super::stream::{StreamFramer, StreamLimits};
use super::tls::TlsContext;

pub(super) const CONN_SEND_QUEUE: usize = 64;
/// Bytes asked of the socket per read.
const TCP_READ_CHUNK: usize = 8192;
/// Connecting (and the TLS handshake) to a peer takes at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Where a message goes: an address, and for connections the one it came on.
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

/// The bound addresses of the optional listeners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listeners {
    pub tls: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
}

/// The bound sockets and the table of live connections.
#[derive(Clone)]
pub struct Transports {
    udp: Arc<UdpSocket>,
    pub(super) conns: Arc<DashMap<ConnId, mpsc::Sender<Bytes>>>,
    /// The connection we last opened (or were reached on) per destination,
    /// so requests to a trunk reuse it rather than open one each.
    by_peer: Arc<DashMap<(Transport, SocketAddr), ConnId>>,
    /// The certificate name to check when we connect to an address over
    /// TLS (the trunk's host name, set when a call is placed).
    tls_names: Arc<DashMap<SocketAddr, String>>,
    local: SocketAddr,
    pub(super) listeners: Listeners,
    pub(super) tls: Option<TlsContext>,
    next_conn: Arc<AtomicU64>,
    pub(super) inbound: mpsc::Sender<Inbound>,
    pub(super) max_message: usize,
    pub(super) tcp_limits: TcpLimits,
    permits: Arc<Semaphore>,
    per_source: Arc<DashMap<IpAddr, usize>>,
}

/// What a connection holds until it closes: its place in the caps.
pub(super) type ConnPermit = Option<(OwnedSemaphorePermit, SourceSlot)>;

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
                        conns: Arc::new(DashMap::new()),
                        by_peer: Arc::new(DashMap::new()),
                        tls_names: Arc::new(DashMap::new()),
                        local,
                        listeners: Listeners::default(),
                        tls: None,
                        next_conn: Arc::new(AtomicU64::new(1)),
                        inbound,
                        max_message,
                        tcp_limits,
                        permits: Arc::new(Semaphore::new(tcp_limits.max_connections)),
                        per_source: Arc::new(DashMap::new()),
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

    /// The UDP/TCP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Our address for `transport` (its listener's, else UDP/TCP's).
    pub fn local_addr_for(&self, transport: Transport) -> SocketAddr {
        let l = self.listeners;
        match transport {
            Transport::Udp | Transport::Tcp => None,
            Transport::Tls => l.tls,
            Transport::Ws => l.ws,
            Transport::Wss => l.wss,
        }
        .unwrap_or(self.local)
    }

    pub fn listeners(&self) -> Listeners {
        self.listeners
    }

    /// Open connections of every stream kind (TCP, TLS, WebSocket).
    pub fn tcp_connections(&self) -> usize {
        self.conns.len()
    }

    /// Outbound TLS to `addr` checks a certificate for `host`.
    pub fn expect_tls_name(&self, addr: SocketAddr, host: &str) {
        // Bounded by the trunks dialled; one entry per address.
        if self.tls_names.len() < 10_000 {
            self.tls_names.insert(addr, host.to_string());
        }
    }

    /// Sends without waiting. A full or closed queue drops the message
    /// (the transaction layer reports the timeout).
    pub fn send(&self, target: &Target, bytes: Bytes) {
        if target.transport == Transport::Udp {
            if let Err(e) = self.udp.try_send_to(&bytes, target.addr) {
                tracing::debug!(to = %target.addr, "UDP send failed: {e}");
            }
            return;
        }
        let conn = target
            .conn
            .filter(|id| self.conns.contains_key(id))
            .or_else(|| {
                self.by_peer
                    .get(&(target.transport, target.addr))
                    .map(|id| *id)
            });
        match conn.and_then(|id| self.conns.get(&id).map(|s| s.clone())) {
            Some(s) => {
                if s.try_send(bytes).is_err() {
                    tracing::debug!(to = %target.addr, "connection queue full or closed");
                }
            }
            None if target.transport.dialable() => {
                self.connect_and_send(target.transport, target.addr, bytes)
            }
            None => tracing::debug!(to = %target.addr, "WebSocket peer gone; message dropped"),
        }
    }

    /// No connection to the peer: open one (§18.2.2), TLS as it asks.
    fn connect_and_send(&self, transport: Transport, addr: SocketAddr, bytes: Bytes) {
        let this = self.clone();
        tokio::spawn(async move {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                if transport == Transport::Tls {
                    let tls = this.tls.as_ref().ok_or_else(|| {
                        std::io::Error::other("TLS is not configured (sip.tls_cert_file)")
                    })?;
                    let host = this
                        .tls_names
                        .get(&addr)
                        .map(|h| h.clone())
                        .unwrap_or_else(|| addr.ip().to_string());
                    let name = super::tls::server_name(&host)
                        .ok_or_else(|| std::io::Error::other("bad TLS server name"))?;
                    let stream = tls.connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(this.register_stream(
                        stream,
                        addr,
                        Transport::Tls,
                        None,
                    ))
                } else {
                    Ok(this.register_stream(tcp, addr, Transport::Tcp, None))
                }
            })
            .await;
            match connected {
                Ok(Ok(id)) => {
                    this.by_peer.insert((transport, addr), id);
                    if let Some(s) = this.conns.get(&id) {
                        let _ = s.try_send(bytes);
                    }
                }
                Ok(Err(e)) => tracing::info!(to = %addr, ?transport, "connect failed: {e}"),
                Err(_) => tracing::info!(to = %addr, ?transport, "connect timed out"),
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

    /// A connection from `peer` may open: its place in the caps, or `None`
    /// (it is closed at once).
    pub(super) fn admit(&self, peer: SocketAddr) -> Option<ConnPermit> {
        let Some(slot) =
            SourceSlot::take(&self.per_source, peer.ip(), self.tcp_limits.max_per_source)
        else {
            tracing::debug!(%peer, "connection refused: too many from this source");
            return None;
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: connection limit reached");
            return None;
        };
        Some(Some((permit, slot)))
    }

    /// Accepts one listener's connections until it fails; `tls` wraps each
    /// in TLS first (its handshake bounded by the message deadline).
    pub async fn run_stream_listener(self, listener: TcpListener, transport: Transport) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(permit) = self.admit(peer) else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            match (transport, self.tls.clone()) {
                (Transport::Tls, Some(tls)) => {
                    let this = self.clone();
                    let deadline = self.tcp_limits.message_deadline;
                    tokio::spawn(async move {
                        match tokio::time::timeout(deadline, tls.acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                this.register_stream(s, peer, Transport::Tls, permit);
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                (Transport::Tls, None) => {}
                _ => {
                    let id = self.register_stream(stream, peer, Transport::Tcp, permit);
                    tracing::trace!(conn = id, %peer, "TCP connection");
                }
            }
        }
    }

    /// Accepts TCP connections until the listener fails.
    pub async fn run_tcp(self, listener: TcpListener) {
        self.run_stream_listener(listener, Transport::Tcp).await
    }

    pub(super) fn new_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs a byte-stream connection (TCP or TLS): a writer task fed by the
    /// connection's queue, a reader that frames and parses its messages.
    fn register_stream<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        transport: Transport,
        permit: ConnPermit,
    ) -> ConnId
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let id = self.new_conn_id();
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Bytes>(CONN_SEND_QUEUE);
        self.conns.insert(id, tx);
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        });
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let source = Target {
                transport,
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
                            tracing::debug!(conn = id, %peer, "closing connection: {e}");
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
                            tracing::debug!(conn = id, %peer, "closing connection: {e}");
                            break;
                        }
                    }
                }
            }
            this.forget_conn(id, transport, peer);
        });
        id
    }

    /// A connection closed: its sender goes (ending its writer) and so
    /// does its place in the reuse table.
    pub(super) fn forget_conn(&self, id: ConnId, transport: Transport, peer: SocketAddr) {
        self.conns.remove(&id);
        self.by_peer.remove_if(&(transport, peer), |_, v| *v == id);
    }
}

/// One connection's place in its source's count, given back on drop.
pub(super) struct SourceSlot {
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
