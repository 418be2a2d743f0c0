//! The callers' side of bench/media, in its own process so its CPU is not
//! counted: one real-time thread sends every caller's stream on schedule,
//! and a task per caller dates our packets with the kernel's receive time.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct Counters {
    received: AtomicU64,
    late: AtomicU64,
    late_reader_clock: AtomicU64,
    lost: AtomicU64,
    max_gap_us: AtomicU64,
    /// Lateness (kernel clock) in 1 ms buckets; the last is "100 ms or more".
    lateness_ms: [AtomicU64; 101],
}

impl Counters {
    fn new() -> Counters {
        let zero = || AtomicU64::new(0);
        Counters {
            received: zero(),
            late: zero(),
            late_reader_clock: zero(),
            lost: zero(),
            max_gap_us: zero(),
            lateness_ms: std::array::from_fn(|_| zero()),
        }
    }

    /// The lateness below which `q` of the packets fall, in ms.
    fn lateness_quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .lateness_ms
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (ms, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return ms as u64;
            }
        }
        100
    }
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let n: usize = args.first().ok_or_else(|| anyhow::anyhow!("n"))?.parse()?;
    let total = Duration::from_millis(args.get(1).ok_or_else(|| anyhow::anyhow!("ms"))?.parse()?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(n, total))
}

/// Asks the kernel to date every datagram as it is queued on `sock`.
fn enable_timestamps(sock: &std::net::UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on an open socket with a valid int option.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One datagram and its kernel receive time (CLOCK_REALTIME), without
/// blocking: `WouldBlock` when the socket is empty.
fn recv_dated(fd: i32, buf: &mut [u8]) -> std::io::Result<(usize, Option<Duration>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; every pointer set below outlives the
    // call; the cmsg walk stays inside `control` as the macros check.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut at = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                at = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, at))
    }
}

/// One second of "speech" (a buzzy 140 Hz vowel-like tone) and one of
/// silence, µ-law, in 160-byte frames.
fn payloads() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for k in 0..100 {
        let pcm: Vec<i16> = (0..160)
            .map(|i| {
                if k >= 50 {
                    return 0;
                }
                let t = (k * 160 + i) as f64 / 8000.0;
                let v: f64 = (1..8)
                    .map(|h| (2.0 * std::f64::consts::PI * 140.0 * h as f64 * t).sin() / h as f64)
                    .sum();
                (3000.0 * v) as i16
            })
            .collect();
        let mut out = Vec::new();
        g711::encode_ulaw(&pcm, &mut out);
        frames.push(out);
    }
    frames
}

/// Sends every caller's stream: caller i's packet k is due at
/// `start + i·20 ms/n + k·20 ms`. Real-time priority when allowed (a
/// phone's clock is not slowed by our load); due packets within 1 ms
/// share a wake-up.
fn send_all(
    socks: Vec<(std::net::UdpSocket, SocketAddr)>,
    frames: &[Vec<u8>],
    start: Instant,
    end: Instant,
) {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: a libc call on this thread with a valid sched_param.
    let _ = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    let n = socks.len().max(1) as u64;
    let offset = |i: usize| Duration::from_micros(i as u64 * 20_000 / n);
    let mut pkt = Vec::with_capacity(172);
    let mut k: u32 = 0;
    let mut i = 0usize;
    loop {
        let due = start + offset(i) + Duration::from_millis(20 * k as u64);
        if due >= end {
            return;
        }
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            std::thread::sleep(due - now);
        }
        let (sock, to) = &socks[i];
        pkt.clear();
        pkt.extend_from_slice(&[0x80, 0]);
        pkt.extend_from_slice(&(k as u16).to_be_bytes());
        pkt.extend_from_slice(&(k * 160).to_be_bytes());
        pkt.extend_from_slice(&(i as u32 + 1).to_be_bytes());
        pkt.extend_from_slice(&frames[k as usize % frames.len()]);
        let _ = sock.send_to(&pkt, to);
        i += 1;
        if i == socks.len() {
            i = 0;
            k += 1;
        }
    }
}

async fn run(n: usize, total: Duration) -> anyhow::Result<()> {
    let cpu0 = cpu_seconds();
    let mut socks = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
        s.set_nonblocking(true)?;
        enable_timestamps(&s)?;
        ports.push(s.local_addr()?.port());
        socks.push(s);
    }
    println!("{}", serde_json::to_string(&ports)?);
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let targets: Vec<u16> = serde_json::from_str(line.trim())?;
    let frames = Arc::new(payloads());
    let counters = Arc::new(Counters::new());
    let start = tokio::time::Instant::now();
    let end = start + total;
    let measure_from = Instant::now() + WARMUP;
    // The callers' packets come from one thread, as from phones on other
    // machines: it is not starved by this process's readers (a late
    // generator would show up as jitter and loss on our receive side).
    let mut send_socks = Vec::with_capacity(n);
    for (i, s) in socks.iter().enumerate() {
        let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), targets[i]);
        send_socks.push((s.try_clone()?, to));
    }
    let sender = {
        let frames = frames.clone();
        let end = end.into_std();
        let start = start.into_std();
        std::thread::spawn(move || send_all(send_socks, &frames, start, end))
    };
    let mut tasks = Vec::new();
    for s in socks.into_iter() {
        let sock = Arc::new(tokio::net::UdpSocket::from_std(s)?);
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            use std::os::fd::AsRawFd;
            let mut buf = [0u8; 1500];
            let fd = sock.as_raw_fd();
            // Arrival minus media time, lowest so far = the path's base
            // delay; by the kernel's clock and by this reader's clock.
            let mut base = [f64::MAX; 2];
            let mut first: Option<(Duration, Instant, u32)> = None;
            let mut last_seq: Option<u16> = None;
            let mut last_arrival: Option<Duration> = None;
            loop {
                let read =
                    sock.async_io(tokio::io::Interest::READABLE, || recv_dated(fd, &mut buf));
                let Ok(Ok((len, kernel_at))) = tokio::time::timeout_at(end, read).await else {
                    break;
                };
                let now = Instant::now();
                if len < 12 || buf[1] >= 200 {
                    continue; // RTCP
                }
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                // Unstamped (the kernel turns stamping on lazily): read time.
                let wall = kernel_at.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                });
                let (w0, t0, ts0) = *first.get_or_insert((wall, now, ts));
                let media_ms = ts.wrapping_sub(ts0) as f64 / 8.0;
                let offsets = [
                    wall.saturating_sub(w0).as_secs_f64() * 1000.0 - media_ms,
                    now.duration_since(t0).as_secs_f64() * 1000.0 - media_ms,
                ];
                for (b, o) in base.iter_mut().zip(offsets) {
                    *b = b.min(o);
                }
                if now >= measure_from {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    let late_ms = (offsets[0] - base[0]).max(0.0) as usize;
                    counters.lateness_ms[late_ms.min(100)].fetch_add(1, Ordering::Relaxed);
                    if offsets[0] - base[0] > 20.0 {
                        counters.late.fetch_add(1, Ordering::Relaxed);
                    }
                    if offsets[1] - base[1] > 20.0 {
                        counters.late_reader_clock.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(prev) = last_seq {
                        let gap = seq.wrapping_sub(prev);
                        if gap > 1 && gap < 1000 {
                            counters.lost.fetch_add(gap as u64 - 1, Ordering::Relaxed);
                        }
                    }
                    if let Some(la) = last_arrival {
                        counters.max_gap_us.fetch_max(
                            wall.saturating_sub(la).as_micros() as u64,
                            Ordering::Relaxed,
                        );
                    }
                }
                last_seq = Some(seq);
                last_arrival = Some(wall);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = sender.join();
    let cpu = (cpu_seconds() - cpu0) / total.as_secs_f64() * 100.0;
    println!(
        "{}",
        json!({
            "received": counters.received.load(Ordering::Relaxed),
            "late": counters.late.load(Ordering::Relaxed),
            "late_reader_clock": counters.late_reader_clock.load(Ordering::Relaxed),
            "lateness_ms_p50": counters.lateness_quantile(0.5),
            "lateness_ms_p99": counters.lateness_quantile(0.99),
            "lateness_ms_p999": counters.lateness_quantile(0.999),
            "lateness_ms_max": counters.lateness_quantile(1.0),
            "lost": counters.lost.load(Ordering::Relaxed),
            "max_gap_ms": counters.max_gap_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "cpu_percent": cpu,
        })
    );
    Ok(())
}
