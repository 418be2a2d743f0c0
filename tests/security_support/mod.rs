//! Attack-suite helpers: a raw SIP client over UDP whose every header the
//! test writes (so it can lie in Via, Authorization or SDP), bound to any
//! loopback address (127.0.0.2 and 127.0.0.3 play strangers), a listener
//! that counts what reaches an address, and RTP packets to inject.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

/// A SIP client on one UDP socket that sends what the test wrote.
pub struct RawSip {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl RawSip {
    /// Binds `ip:0` (any 127.0.0.0/8 address works on Linux loopback).
    pub async fn bind(ip: &str, server: SocketAddr) -> RawSip {
        let sock = UdpSocket::bind((ip, 0)).await.expect("bind SIP socket");
        RawSip { sock, server }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("local addr")
    }

    pub async fn send(&self, text: &str) {
        self.sock
            .send_to(text.as_bytes(), self.server)
            .await
            .expect("send");
    }

    /// The next datagram within `limit`, as text.
    pub async fn recv(&self, limit: Duration) -> Option<String> {
        let mut buf = vec![0u8; 65536];
        let (n, _) = tokio::time::timeout(limit, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    }

    /// The first response with a final status (>= 200) within `limit`;
    /// provisional ones and requests are skipped.
    pub async fn final_response(&self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let msg = self.recv(left).await?;
            if status(&msg).is_some_and(|c| c >= 200) {
                return Some(msg);
            }
        }
    }

    /// Every datagram arriving within `limit` (bounded to 100,000).
    pub async fn drain(&self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < 100_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(m) => out.push(m),
                None => break,
            }
        }
        out
    }
}

/// Counts every datagram reaching a socket bound at `addr` until dropped.
pub struct Listener {
    pub addr: SocketAddr,
    pub count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub async fn bind(addr: &str) -> Listener {
        let sock = UdpSocket::bind(addr).await.expect("bind listener");
        let addr = sock.local_addr().expect("addr");
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while sock.recv_from(&mut buf).await.is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        Listener { addr, count, task }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn status(msg: &str) -> Option<u16> {
    msg.lines()
        .next()?
        .strip_prefix("SIP/2.0 ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
}

/// The To tag of a response.
pub fn to_tag(msg: &str) -> Option<String> {
    let to = header(msg, "To").or_else(|| header(msg, "t"))?;
    to.split(';')
        .find_map(|p| p.trim().strip_prefix("tag="))
        .map(str::to_string)
}

/// Where the SDP of a message says its RTP goes (`c=` and `m=audio`).
pub fn sdp_media(msg: &str) -> Option<SocketAddr> {
    let body = msg.split_once("\r\n\r\n")?.1;
    let ip = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?;
    let port = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?;
    format!("{}:{port}", ip.trim()).parse().ok()
}

/// A PCMU offer naming `rtp` as the caller's media address.
pub fn offer(rtp: SocketAddr) -> String {
    format!(
        "v=0\r\no=caller 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

/// One request's fields; `text()` writes it out.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub via: String,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    pub extra: Vec<String>,
    pub body: String,
}

impl Request {
    /// An INVITE to `number` at the node from `local`, with an honest Via.
    pub fn invite(number: &str, server: SocketAddr, local: SocketAddr, body: String) -> Request {
        let uri = format!("sip:{number}@{server}");
        Request {
            method: "INVITE".into(),
            via: format!("SIP/2.0/UDP {local};branch={};rport", branch()),
            from: format!("<sip:+15550001111@{local}>;tag={}", token()),
            to: format!("<{uri}>"),
            uri,
            call_id: format!("{}@sec", token()),
            cseq: 1,
            extra: vec![format!("Contact: <sip:caller@{local}>")],
            body,
        }
    }

    /// An OPTIONS to the node from `local` over `transport` ("UDP", "TCP").
    pub fn options(server: SocketAddr, local: SocketAddr, transport: &str) -> Request {
        Request {
            method: "OPTIONS".into(),
            uri: format!("sip:{server}"),
            via: format!("SIP/2.0/{transport} {local};branch={}", branch()),
            from: format!("<sip:probe@{local}>;tag={}", token()),
            to: format!("<sip:{server}>"),
            call_id: format!("{}@sec", token()),
            cseq: 1,
            extra: Vec::new(),
            body: String::new(),
        }
    }

    pub fn text(&self) -> String {
        let mut s = format!(
            "{} {} SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nMax-Forwards: 70\r\n",
            self.method, self.uri, self.via, self.from, self.to, self.call_id, self.cseq, self.method
        );
        for h in &self.extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        if !self.body.is_empty() {
            s.push_str("Content-Type: application/sdp\r\n");
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        s.push_str(&self.body);
        s
    }

    /// The ACK for a final response to this INVITE (§17.1.1.3 for non-2xx:
    /// same branch; a 2xx ACK gets its own, which the node accepts too).
    pub fn ack(&self, response: &str) -> Request {
        let mut ack = self.clone();
        ack.method = "ACK".into();
        ack.to = header(response, "To").unwrap_or(&self.to).to_string();
        ack.extra.clear();
        ack.body.clear();
        ack
    }

    /// A BYE in the dialog the 2xx `response` made.
    pub fn bye(&self, response: &str, local: SocketAddr) -> Request {
        let mut bye = self.ack(response);
        bye.method = "BYE".into();
        bye.cseq += 1;
        bye.via = format!("SIP/2.0/UDP {local};branch={};rport", branch());
        bye
    }
}

pub fn branch() -> String {
    format!("z9hG4bK{}", token())
}

pub fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// An RTP packet of 20 ms PCMU silence.
pub fn rtp(seq: u16, timestamp: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xFFu8, 160));
    p
}

/// Sends `n` RTP packets from `sock` to `to`, 20 ms apart.
pub async fn send_rtp(sock: &UdpSocket, to: SocketAddr, n: usize, ssrc: u32, first_seq: u16) {
    for i in 0..n {
        let seq = first_seq.wrapping_add(i as u16);
        let _ = sock
            .send_to(&rtp(seq, u32::from(seq) * 160, ssrc), to)
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts datagrams reaching `sock` for `limit`.
pub async fn count_for(sock: &UdpSocket, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 2048];
    let mut n = 0;
    while n < 1_000_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.recv_from(&mut buf)).await {
            Ok(Ok(_)) => n += 1,
            _ => break,
        }
    }
    n
}
