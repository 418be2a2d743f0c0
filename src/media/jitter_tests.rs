//! Simulated-clock tests of the jitter buffer: arrival patterns in, playout
//! sequence out.

use super::*;

const FRAME: Duration = Duration::from_millis(20);

fn pkt(ssrc: u32, seq: u16, ts: u32) -> JitterPacket {
    JitterPacket {
        ssrc,
        seq,
        timestamp: ts,
        payload: bytes::Bytes::from(vec![seq as u8; 160]),
    }
}

/// What came out of a simulated run.
struct Run {
    played: Vec<u16>,
    lost: usize,
    empty: usize,
    max_depth: u32,
    stats: JitterStats,
}

/// Packet k (seq = start_seq + k) is sent at k·20 ms and arrives at
/// k·20 ms + `delay(k)` ms (None = lost). Pops every 20 ms for `ticks`.
fn simulate(n: usize, ticks: usize, start_seq: u16, delay: impl Fn(usize) -> Option<f64>) -> Run {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut arrivals: Vec<(Duration, usize)> = (0..n)
        .filter_map(|k| {
            delay(k).map(|d| {
                (
                    Duration::from_secs_f64((k as f64 * 20.0 + d).max(0.0) / 1000.0),
                    k,
                )
            })
        })
        .collect();
    arrivals.sort();
    let mut next = 0;
    let mut run = Run {
        played: vec![],
        lost: 0,
        empty: 0,
        max_depth: 0,
        stats: JitterStats::default(),
    };
    for tick in 0..ticks {
        // Pops happen 1 ms after each 20 ms boundary.
        let now = t0 + FRAME * tick as u32 + Duration::from_millis(1);
        while next < arrivals.len() && t0 + arrivals[next].0 <= now {
            let k = arrivals[next].1;
            let seq = start_seq.wrapping_add(k as u16);
            jb.push(
                pkt(7, seq, (k as u32).wrapping_mul(160)),
                t0 + arrivals[next].0,
            );
            next += 1;
        }
        match jb.pop(now) {
            Pop::Frame(p) => run.played.push(p.seq),
            Pop::Lost => run.lost += 1,
            Pop::Empty => run.empty += 1,
        }
        run.max_depth = run.max_depth.max(jb.depth_ms());
    }
    run.stats = jb.stats();
    run
}

fn in_order(played: &[u16]) -> bool {
    played
        .windows(2)
        .all(|w| w[1].wrapping_sub(w[0]) as i16 > 0)
}

#[test]
fn in_order_stream_plays_everything_with_minimal_delay() {
    let r = simulate(500, 520, 65000, |_| Some(5.0));
    assert_eq!(r.played.len(), 500, "every packet played (across seq wrap)");
    assert!(in_order(&r.played));
    assert_eq!(r.lost, 0);
    assert!(r.stats.target_ms <= 40, "target {}", r.stats.target_ms);
    assert!(r.max_depth <= 60, "depth {}", r.max_depth);
    assert_eq!(r.stats.lost, 0);
    assert!(r.stats.jitter_ms < 1.0);
}

#[test]
fn reordered_pairs_come_out_in_order() {
    // Every odd packet overtakes its predecessor by 15 ms.
    let r = simulate(300, 320, 0, |k| Some(if k % 2 == 0 { 25.0 } else { 10.0 }));
    assert_eq!(r.played.len(), 300);
    assert!(in_order(&r.played), "{:?}", &r.played[..10]);
    assert_eq!(r.stats.late, 0);
}

#[test]
fn five_percent_loss_is_concealed_one_for_one() {
    let lost: Vec<usize> = (0..1000).filter(|k| (k * 7919) % 100 < 5).collect();
    let r = simulate(1000, 1020, 100, |k| {
        if lost.contains(&k) {
            None
        } else {
            Some(3.0)
        }
    });
    assert_eq!(r.played.len(), 1000 - lost.len());
    // A loss before the first received packet is invisible to any receiver.
    let visible = lost.iter().filter(|&&k| k > 0).count();
    assert_eq!(r.lost, visible, "each missing packet concealed once");
    assert_eq!(r.stats.lost as usize, visible);
    assert!(in_order(&r.played));
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    assert_eq!(jb.push(pkt(1, 10, 0), t0), PushOutcome::Queued);
    assert_eq!(jb.push(pkt(1, 10, 0), t0), PushOutcome::Duplicate);
    assert_eq!(jb.push(pkt(1, 11, 160), t0 + FRAME), PushOutcome::Queued);
    let mut played = vec![];
    for i in 0..6 {
        if let Pop::Frame(p) = jb.pop(t0 + FRAME * (2 + i)) {
            played.push(p.seq);
        }
    }
    assert_eq!(played, vec![10, 11]);
    // A copy of an already played packet is a duplicate, not "late".
    assert_eq!(
        jb.push(pkt(1, 10, 0), t0 + FRAME * 9),
        PushOutcome::Duplicate
    );
    assert_eq!(jb.stats().duplicates, 2);
    assert_eq!(jb.stats().late, 0);
}

#[test]
fn jitter_bursts_raise_the_target_within_bounds_and_it_decays_again() {
    // Packets 200..=205 are held up by a 120 ms network stall and then
    // arrive together (the usual Wi-Fi/LTE pattern).
    let r = simulate(3000, 3050, 0, |k| {
        Some(if (200..=205).contains(&k) {
            120.0 - (k - 200) as f64 * 20.0
        } else {
            2.0
        })
    });
    assert!(r.max_depth <= 200 + 40, "depth bounded: {}", r.max_depth);
    assert!(r.played.len() >= 2990, "played {}", r.played.len());
    assert!(in_order(&r.played));
    // Long after the spike the target has decayed back down.
    assert!(r.stats.target_ms < 60, "target {}", r.stats.target_ms);
}

#[test]
fn sustained_jitter_keeps_late_packets_rare() {
    // Uniform 0–80 ms delay: the buffer must grow enough that < 2 % are late.
    let r = simulate(3000, 3050, 0, |k| Some(((k * 2654435761) % 80) as f64));
    let late = r.stats.late as f64 / 3000.0;
    assert!(late < 0.02, "late rate {late}");
    assert!(
        r.stats.target_ms >= 60 && r.stats.target_ms <= 200,
        "target {}",
        r.stats.target_ms
    );
    assert!(r.max_depth <= 240, "depth {}", r.max_depth);
}

#[test]
fn sender_clock_drift_keeps_depth_bounded() {
    // Sender's clock 0.5 % fast: packets arrive 0.1 ms earlier each frame,
    // 600 ms over two minutes: the buffer would grow without shrinking.
    let r = simulate(6000, 6000, 0, |k| Some(10.0 - k as f64 * 0.1));
    assert!(r.max_depth <= 240, "depth {}", r.max_depth);
    eprintln!(
        "fast sender: depth {} drops {} stats {:?}",
        r.max_depth, r.stats.dropped_for_latency, r.stats
    );
    // 30 surplus frames over the run must have been dropped to hold the delay.
    assert!(r.stats.dropped_for_latency >= 20, "{:?}", r.stats);
    // Slow sender (clock 0.1 % slow, ten times a bad crystal): occasional
    // rebuffers, and the drift is not mistaken for jitter.
    let r = simulate(3000, 3030, 0, |k| Some(k as f64 * 0.02));
    eprintln!("slow sender: played {} stats {:?}", r.played.len(), r.stats);
    assert!(r.played.len() >= 2990, "played {}", r.played.len());
    assert!(r.stats.underruns <= 5, "{:?}", r.stats);
    assert!(r.stats.target_ms <= 60, "{:?}", r.stats);
}

#[test]
fn ssrc_change_restarts_the_stream() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut played = vec![];
    for i in 0..100u32 {
        let now = t0 + FRAME * i;
        let (ssrc, seq) = if i < 50 {
            (1, 1000 + i as u16)
        } else {
            (2, 7 + i as u16)
        };
        jb.push(pkt(ssrc, seq, i * 160), now);
        if let Pop::Frame(p) = jb.pop(now + Duration::from_millis(1)) {
            played.push((p.ssrc, p.seq));
        }
    }
    let s = jb.stats();
    assert_eq!(s.ssrc_changes, 1);
    assert!(
        played.iter().filter(|p| p.0 == 2).count() >= 45,
        "new stream plays"
    );
    assert!(played.iter().filter(|p| p.0 == 1).count() >= 45);
}

#[test]
fn memory_is_bounded_when_nobody_pops() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    for i in 0..10_000u32 {
        jb.push(pkt(1, i as u16, i * 160), t0 + FRAME * i);
    }
    assert!(jb.packets.len() <= JitterConfig::default().capacity);
    assert!(jb.stats().dropped_overflow > 9000);
}

#[test]
fn sequence_jump_restarts_instead_of_concealing_forever() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    for i in 0..20u32 {
        jb.push(pkt(1, i as u16, i * 160), t0 + FRAME * i);
        jb.pop(t0 + FRAME * i + Duration::from_millis(1));
    }
    let mut frames = 0;
    let mut lost = 0;
    for i in 20..60u32 {
        jb.push(pkt(1, 30000 + i as u16, i * 160), t0 + FRAME * i);
        match jb.pop(t0 + FRAME * i + Duration::from_millis(1)) {
            Pop::Frame(_) => frames += 1,
            Pop::Lost => lost += 1,
            Pop::Empty => {}
        }
    }
    assert!(frames >= 35, "frames {frames}");
    assert!(lost <= 2, "lost {lost}");
}

#[test]
fn concealment_fades_out() {
    let mut c = Concealer::default();
    c.good(&[1000; 160]);
    let mut out = [0i16; 160];
    c.conceal(&mut out);
    assert_eq!(out[0], 500);
    c.conceal(&mut out);
    assert_eq!(out[0], 250);
    for _ in 0..3 {
        c.conceal(&mut out);
    }
    assert_eq!(out[0], 0);
}

#[test]
fn a_huge_hole_is_skipped_not_concealed_for_minutes() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    // Before playout starts, packets 0 and 30000 arrive.
    jb.push(pkt(1, 0, 0), t0);
    jb.push(pkt(1, 30000, 30000 * 160), t0);
    let mut played = vec![];
    let mut lost = 0;
    for i in 1..30u32 {
        match jb.pop(t0 + FRAME * i) {
            Pop::Frame(p) => played.push(p.seq),
            Pop::Lost => lost += 1,
            Pop::Empty => {}
        }
    }
    assert_eq!(
        played.last(),
        Some(&30000),
        "the far packet is reached at once: {played:?}"
    );
    assert!(lost <= 1, "no long concealment run: {lost}");
}
