//! bench/media: N concurrent RTP sessions over loopback on this machine.
//! Each session runs as in a call: G.711 µ-law both ways, jitter buffer,
//! 8→16 kHz resampling, the endpointer (earshot VAD) on every frame, and
//! 20 ms paced playout of an utterance every 3 s. A child process (this
//! binary with `peer`) plays the callers: it streams speech-like audio to
//! every session and checks the session's packets for lateness and loss.
//! It dates each packet with the kernel's receive timestamp
//! (`SO_TIMESTAMPNS`: on loopback, the moment our send handed it over), so
//! the lateness is ours and not the generator's own scheduling delay (also
//! reported, as `peer_late_rate_reader_clock`).
//!
//! Prints JSON and writes it to `bench/results/media.json` (or `--out`):
//! CPU % of one core per call (the sessions' process only), memory per
//! call, receive loss/late rates, send lateness as the peers saw it, and
//! how the media clock threads were scheduled.
//!
//!   cargo run --release --example media_bench -- [--n 100,500,1000] [--secs 10] [--clock-normal]
//!
//! `--clock-normal` runs the media clock threads at ordinary priority (as
//! without CAP_SYS_NICE), for comparison.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard::media::endpoint::{EndpointConfig, Endpointer};
use switchboard::media::ports::PortAllocator;
use switchboard::media::{
    clock_status, configure_clock, g711, ClockOptions, Codec, MediaEvent, MediaSession,
    MediaStats, SessionConfig,
};

const WARMUP: Duration = Duration::from_secs(3);
/// rustpbx's published figure for a relayed call, % of one core.
const REFERENCE_CPU_PER_CALL: f64 = 0.14;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("peer") {
        return peer::main(&args[2..]);
    }
    let mut ns = vec![100usize, 500, 1000];
    let mut secs = 10u64;
    let mut out = "bench/results/media.json".to_string();
    let mut realtime = true;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--clock-normal" => {
                realtime = false;
                i += 1;
                continue;
            }
            "--n" => {
                ns = args[i + 1]
                    .split(',')
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            }
            "--secs" => secs = args[i + 1].parse()?,
            "--out" => out = args[i + 1].clone(),
            other => anyhow::bail!("unknown argument {other}"),
        }
        i += 2;
    }
    configure_clock(ClockOptions {
        threads: 0,
        realtime,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut levels = Vec::new();
    for &n in &ns {
        let level = rt.block_on(run_level(n, Duration::from_secs(secs)))?;
        eprintln!("{}", serde_json::to_string(&level)?);
        levels.push(level);
    }
    let result = json!({
        "bench": "media",
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "codec": "PCMU",
        "seconds_per_level": secs,
        "reference": { "name": "rustpbx relayed call", "cpu_percent_per_call": REFERENCE_CPU_PER_CALL },
        "goal": "1000 concurrent calls with < 0.5 % late packets",
        "late_means": "a packet of ours reaching the peer's socket more than 20 ms after its slot (arrival minus media time, over the stream's best)",
        "clock": clock_status(),
        "levels": levels,
    });
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, text + "\n")?;
    Ok(())
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name in parentheses; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // CLK_TCK is 100 on Linux
}

/// The 1-minute load average: other work on the machine skews the figures.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(-1.0)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn sum_stats(all: &[MediaStats]) -> MediaStats {
    let mut t = MediaStats::default();
    for s in all {
        t.packets_in += s.packets_in;
        t.packets_out += s.packets_out;
        t.lost += s.lost;
        t.late += s.late;
        t.concealed += s.concealed;
        t.jitter_ms += s.jitter_ms;
        t.send_slots_skipped += s.send_slots_skipped;
        t.max_send_lateness_us = t.max_send_lateness_us.max(s.max_send_lateness_us);
        t.min_send_interval_us = if t.min_send_interval_us == 0 {
            s.min_send_interval_us
        } else {
            t.min_send_interval_us.min(s.min_send_interval_us)
        };
        t.events_dropped += s.events_dropped;
        t.jitter_max_depth_ms = t.jitter_max_depth_ms.max(s.jitter_max_depth_ms);
    }
    t
}

async fn run_level(n: usize, measure: Duration) -> anyhow::Result<Value> {
    let rss0 = rss_bytes();
    let load_before = load_average();
    // The callers: a child process with one socket per call.
    let exe = std::env::current_exe()?;
    let total = WARMUP + measure + Duration::from_secs(1);
    let mut child = Command::new(exe)
        .args(["peer", &n.to_string(), &total.as_millis().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut child_out = BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    );
    let mut line = String::new();
    child_out.read_line(&mut line)?;
    let peer_ports: Vec<u16> = serde_json::from_str(line.trim())?;
    anyhow::ensure!(
        peer_ports.len() == n,
        "peer bound {} sockets",
        peer_ports.len()
    );

    // Even ports from a range so RTCP gets port + 1, as in the server.
    let alloc = PortAllocator::new(40000, 59999);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // One copy for all calls: the bench's own scaffolding is not memory per call.
    let tone: std::sync::Arc<Vec<i16>> = std::sync::Arc::new(
        (0..16_000)
            .map(|i| {
                (5000.0 * (2.0 * std::f64::consts::PI * 220.0 * i as f64 / 16_000.0).sin()) as i16
            })
            .collect(),
    );
    let mut sessions = Vec::with_capacity(n);
    let mut leases = Vec::with_capacity(n);
    let mut owners = Vec::with_capacity(n);
    let mut session_ports = Vec::with_capacity(n);
    for peer_port in &peer_ports {
        let (lease, sock) = alloc.allocate(ip)?;
        session_ports.push(lease.port());
        let cfg = SessionConfig::new(SocketAddr::new(ip, *peer_port), Codec::Pcmu, 0, None);
        let (session, mut events) = MediaSession::start(sock, cfg)?;
        let playout = session.playout();
        let tone = tone.clone();
        // The call's owner: endpointing on every frame, speech every 3 s.
        owners.push(tokio::spawn(async move {
            let mut ep = Endpointer::new(EndpointConfig::default());
            let mut turns = 0u64;
            let mut next_play = Instant::now() + Duration::from_millis(500);
            let mut id = 0;
            while let Some(ev) = events.recv().await {
                if let MediaEvent::Audio(f) = ev {
                    turns += ep.push(&f.samples, f.at).len() as u64;
                    if f.at >= next_play {
                        id += 1;
                        let _ = playout.play(id, tone.to_vec(), 16_000);
                        next_play += Duration::from_secs(3);
                    }
                }
            }
            turns
        }));
        sessions.push(session);
        leases.push(lease);
    }
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    writeln!(stdin, "{}", serde_json::to_string(&session_ports)?)?;
    drop(stdin);

    tokio::time::sleep(WARMUP).await;
    let before: Vec<MediaStats> = sessions.iter().map(|s| s.stats()).collect();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(measure).await;
    let cpu1 = cpu_seconds();
    let wall = t0.elapsed().as_secs_f64();
    let clock = clock_status();
    let rss1 = rss_bytes();
    let after: Vec<MediaStats> = sessions.iter().map(|s| s.stats()).collect();

    let mut peer_line = String::new();
    let peer: Value = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        child_out.read_line(&mut peer_line)?;
        let _ = child.wait();
        Ok(serde_json::from_str(peer_line.trim())?)
    })
    .await??;
    for s in sessions {
        let _ = s.close().await;
    }
    let mut turns = 0;
    for o in owners {
        turns += o.await.unwrap_or(0);
    }
    drop(leases);

    let b = sum_stats(&before);
    let a = sum_stats(&after);
    let rx_packets = (a.packets_in - b.packets_in) as f64;
    let cpu_total = (cpu1 - cpu0) / wall * 100.0;
    let per_call = cpu_total / n as f64;
    let peer_received = peer["received"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "n": n,
        "seconds": wall,
        "load_average_1m_before": load_before,
        "load_average_1m_after": load_average(),
        "cpu_percent_of_one_core_total": cpu_total,
        "cpu_percent_of_one_core_per_call": per_call,
        "cpu_ratio_vs_reference": per_call / REFERENCE_CPU_PER_CALL,
        "rss_bytes_total": rss1,
        "memory_bytes_per_call": (rss1.saturating_sub(rss0)) as f64 / n as f64,
        "receive": {
            "packets": rx_packets,
            "lost_rate": (a.lost - b.lost) as f64 / rx_packets.max(1.0),
            "late_rate": (a.late - b.late) as f64 / rx_packets.max(1.0),
            "concealed_rate": (a.concealed - b.concealed) as f64 / rx_packets.max(1.0),
            "mean_interarrival_jitter_ms": a.jitter_ms / n as f64,
            "max_jitter_buffer_depth_ms": a.jitter_max_depth_ms,
        },
        "send": {
            "packets": a.packets_out - b.packets_out,
            "slots_skipped": a.send_slots_skipped - b.send_slots_skipped,
            "max_send_lateness_ms": a.max_send_lateness_us as f64 / 1000.0,
            "min_send_interval_ms": a.min_send_interval_us as f64 / 1000.0,
            "peer_received": peer_received,
            "peer_late_rate": peer["late"].as_f64().unwrap_or(0.0) / peer_received.max(1.0),
            "peer_late_rate_reader_clock": peer["late_reader_clock"].as_f64().unwrap_or(0.0) / peer_received.max(1.0),
            "peer_lost_rate": peer["lost"].as_f64().unwrap_or(0.0) / (peer["lost"].as_f64().unwrap_or(0.0) + peer_received).max(1.0),
            "peer_max_gap_ms": peer["max_gap_ms"],
        },
        "clock_scheduling": clock.scheduling,
        "clock_max_lateness_ms_since_start": clock.max_lateness_us as f64 / 1000.0,
        "turns_detected": turns,
        "events_dropped": a.events_dropped,
        "generator_cpu_percent_of_one_core": peer["cpu_percent"],
    }))
}

mod peer {
    //! The callers' side, in its own process so its CPU is not counted.
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[derive(Default)]
    struct Counters {
        received: AtomicU64,
        late: AtomicU64,
        late_reader_clock: AtomicU64,
        lost: AtomicU64,
        max_gap_us: AtomicU64,
    }

    pub fn main(args: &[String]) -> anyhow::Result<()> {
        let n: usize = args.first().ok_or_else(|| anyhow::anyhow!("n"))?.parse()?;
        let total =
            Duration::from_millis(args.get(1).ok_or_else(|| anyhow::anyhow!("ms"))?.parse()?);
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
                        .map(|h| {
                            (2.0 * std::f64::consts::PI * 140.0 * h as f64 * t).sin() / h as f64
                        })
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
        let counters = Arc::new(Counters::default());
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
                    let read = sock.async_io(tokio::io::Interest::READABLE, || recv_dated(fd, &mut buf));
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
                "lost": counters.lost.load(Ordering::Relaxed),
                "max_gap_ms": counters.max_gap_us.load(Ordering::Relaxed) as f64 / 1000.0,
                "cpu_percent": cpu,
            })
        );
        Ok(())
    }
}
