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
    clock_status, configure_clock, g711, ClockOptions, Codec, MediaEvent, MediaSession, MediaStats,
    SessionConfig,
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
    // Let the clock see the last level's sessions closed (one slot).
    std::thread::sleep(Duration::from_millis(100));
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
            "peer_lateness_ms": {
                "p50": peer["lateness_ms_p50"],
                "p99": peer["lateness_ms_p99"],
                "p99.9": peer["lateness_ms_p999"],
                "max": peer["lateness_ms_max"],
            },
        },
        "clock_scheduling": clock.scheduling,
        "clock_max_lateness_ms_since_start": clock.max_lateness_us as f64 / 1000.0,
        "turns_detected": turns,
        "events_dropped": a.events_dropped,
        "generator_cpu_percent_of_one_core": peer["cpu_percent"],
    }))
}

mod peer;
