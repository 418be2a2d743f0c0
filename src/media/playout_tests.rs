//! Simulated-clock tests of the pacer: schedule, events, flush, DTMF.

use super::*;
use crate::media::dtmf::DtmfDetector;
use crate::media::g711;

fn cfg() -> PacerConfig {
    PacerConfig {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event_pt: Some(101),
        ssrc: 0x1234_5678,
        initial_seq: 65_500,
        initial_timestamp: u32::MAX - 1000,
        max_queued_ms: 60_000,
    }
}

/// Drives the pacer like the tokio driver: sleep to the deadline, wake a
/// little late (0–4 ms, deterministic pseudo-random), poll.
fn drive(
    p: &mut Pacer,
    slots: usize,
    mut wake_jitter: impl FnMut(usize) -> u64,
) -> Vec<(Instant, OutgoingPacket)> {
    let mut out = Vec::with_capacity(slots);
    for i in 0..slots {
        let now = p.next_deadline() + Duration::from_micros(wake_jitter(i));
        let pkt = p.poll(now).expect("deadline reached");
        assert!(p.poll(now).is_none(), "one packet per slot, never a burst");
        out.push((now, pkt));
    }
    out
}

#[test]
fn ten_simulated_minutes_are_30000_packets_exactly_160_apart() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    let pkts = drive(&mut p, 30_000, |i| ((i * 7919) % 4000) as u64);
    assert_eq!(pkts.len(), 30_000);
    for w in pkts.windows(2) {
        assert_eq!(w[1].1.timestamp.wrapping_sub(w[0].1.timestamp), 160);
        assert_eq!(w[1].1.seq.wrapping_sub(w[0].1.seq), 1);
        assert_eq!(w[1].1.due - w[0].1.due, Duration::from_millis(20));
    }
    // No drift: the last slot is due exactly 599.98 s after the first.
    assert_eq!(pkts[29_999].1.due - t0, Duration::from_millis(20 * 29_999));
    assert!(pkts
        .iter()
        .all(|(_, p)| p.payload == vec![g711::ULAW_SILENCE; 160] && !p.marker));
    assert_eq!(p.stats().skipped_slots, 0);
}

#[test]
fn poll_before_the_deadline_yields_nothing() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    assert!(p.poll(t0).is_some());
    assert!(p.poll(t0 + Duration::from_millis(19)).is_none());
    assert!(p.poll(t0 + Duration::from_millis(20)).is_some());
}

#[test]
fn utterance_goes_out_whole_with_marker_and_events() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    drive(&mut p, 3, |_| 0);
    // 50 ms of a ramp: 2.5 frames.
    let pcm: Vec<i16> = (0..400).map(|i| (i * 40 - 8000) as i16).collect();
    p.enqueue(7, pcm.clone()).unwrap();
    assert_eq!(p.queued_ms(), 50);
    let pkts = drive(&mut p, 5, |_| 500);
    let markers: Vec<bool> = pkts.iter().map(|(_, p)| p.marker).collect();
    assert_eq!(markers, vec![true, false, false, false, false]);
    let mut decoded = vec![];
    for (_, pkt) in &pkts[..3] {
        g711::decode_ulaw(&pkt.payload, &mut decoded);
    }
    for (a, b) in decoded[..400].iter().zip(&pcm) {
        assert!((*a as i32 - *b as i32).abs() <= 256, "{a} vs {b}");
    }
    assert!(
        decoded[400..].iter().all(|&s| s == 0),
        "rest of the last frame is silence"
    );
    assert_eq!(
        p.poll_event(),
        Some(PlayoutEvent::Started {
            id: 7,
            at: pkts[0].0
        })
    );
    assert_eq!(
        p.poll_event(),
        Some(PlayoutEvent::Finished {
            id: 7,
            at: pkts[2].0
        })
    );
    assert_eq!(p.poll_event(), None);
    assert!(!p.is_playing());
}

#[test]
fn back_to_back_utterances_have_no_gap_and_one_marker() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    p.enqueue(1, vec![1000; 240]).unwrap();
    p.enqueue(2, vec![-1000; 240]).unwrap();
    let pkts = drive(&mut p, 4, |_| 0);
    assert_eq!(pkts.iter().filter(|(_, p)| p.marker).count(), 1);
    // Second frame holds the end of 1 and the start of 2.
    let mut d = vec![];
    g711::decode_ulaw(&pkts[1].1.payload, &mut d);
    assert!(d[..80].iter().all(|&s| s > 900) && d[80..].iter().all(|&s| s < -900));
    let ev: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
    assert_eq!(ev.len(), 4);
    assert!(matches!(ev[1], PlayoutEvent::Finished { id: 1, .. }));
    assert!(matches!(ev[2], PlayoutEvent::Started { id: 2, .. }));
}

#[test]
fn flush_silences_the_very_next_slot() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    p.enqueue(1, vec![5000; 8000]).unwrap();
    p.enqueue(2, vec![5000; 8000]).unwrap();
    let pkts = drive(&mut p, 10, |_| 0);
    assert!(pkts.iter().all(|(_, p)| p.payload[0] != g711::ULAW_SILENCE));
    p.flush();
    let after = drive(&mut p, 3, |_| 0);
    assert!(after
        .iter()
        .all(|(_, p)| p.payload == vec![g711::ULAW_SILENCE; 160]));
    let ev: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
    assert_eq!(
        ev[1..],
        [
            PlayoutEvent::Flushed {
                id: 1,
                played_ms: 200
            },
            PlayoutEvent::Flushed {
                id: 2,
                played_ms: 0
            }
        ]
    );
    assert_eq!(p.queued_ms(), 0);
    // Timestamps carried on through the flush.
    assert_eq!(after[0].1.timestamp.wrapping_sub(pkts[9].1.timestamp), 160);
}

#[test]
fn pause_holds_the_utterance_and_resume_plays_on_from_the_same_sample() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    // A ramp, so every frame's audio is distinct.
    let pcm: Vec<i16> = (0..1600).map(|i| (i * 10) as i16 + 100).collect();
    p.enqueue(1, pcm.clone()).unwrap();
    let before = drive(&mut p, 3, |_| 0);
    p.pause();
    assert!(p.is_paused() && p.is_playing());
    let paused = drive(&mut p, 5, |_| 0);
    assert!(paused
        .iter()
        .all(|(_, p)| p.payload == vec![g711::ULAW_SILENCE; 160]));
    assert_eq!(p.queued_ms(), 140, "nothing consumed while paused");
    p.resume();
    let after = drive(&mut p, 7, |_| 0);
    let mut expect = Vec::new();
    g711::encode_ulaw(&pcm[480..640], &mut expect);
    assert_eq!(after[0].1.payload, expect, "resumes at sample 480");
    assert!(after[0].1.marker, "a new talk-spurt after the pause");
    let ev: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
    assert!(matches!(
        ev[..],
        [
            PlayoutEvent::Started { id: 1, .. },
            PlayoutEvent::Finished { id: 1, .. }
        ]
    ));
    assert_eq!(before.len() + after.len(), 10);

    // A pause then a flush: the pause is cleared, the audio dropped.
    p.enqueue(2, vec![5000; 800]).unwrap();
    drive(&mut p, 1, |_| 0);
    p.pause();
    p.flush();
    assert!(!p.is_paused() && !p.is_playing());
    let ev: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
    assert_eq!(
        ev[1],
        PlayoutEvent::Flushed {
            id: 2,
            played_ms: 20
        }
    );
}

#[test]
fn a_stall_skips_slots_instead_of_bursting() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    let first = p.poll(t0).unwrap();
    // The process was frozen for 405 ms (longer than the catch-up window).
    let now = t0 + Duration::from_millis(425);
    let pkt = p.poll(now).unwrap();
    assert!(p.poll(now).is_none(), "no burst after a stall");
    assert_eq!(pkt.seq, first.seq.wrapping_add(1));
    assert_eq!(
        pkt.timestamp.wrapping_sub(first.timestamp),
        21 * 160,
        "timestamp reflects real time"
    );
    assert_eq!(p.stats().skipped_slots, 20);
    // Then the schedule continues on the 20 ms grid, spacing permitting.
    assert_eq!(p.next_deadline(), t0 + Duration::from_millis(443));
    let next = p.poll(t0 + Duration::from_millis(443)).unwrap();
    assert_eq!(next.due, t0 + Duration::from_millis(440));
    assert_eq!(p.next_deadline(), t0 + Duration::from_millis(461));
    assert!(p.poll(t0 + Duration::from_millis(460)).is_none());
}

#[test]
fn a_short_stall_is_caught_up_smoothly_without_gaps() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    let first = p.poll(t0).unwrap();
    // Frozen for 100 ms: the lost time is won back at 18 ms spacing, and
    // the timestamps stay exactly 160 apart (the far end hears no gap).
    let mut now = t0 + Duration::from_millis(120);
    let mut prev = first;
    for _ in 0..60 {
        let pkt = p.poll(now).unwrap();
        assert_eq!(pkt.timestamp.wrapping_sub(prev.timestamp), 160);
        prev = pkt;
        now = p.next_deadline();
    }
    assert_eq!(p.stats().skipped_slots, 0);
    // Back on the grid.
    assert_eq!(p.next_deadline(), t0 + Duration::from_millis(20 * 61));
}

#[test]
fn a_late_wake_up_never_puts_two_packets_closer_than_18_ms() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    let mut sends = vec![];
    for i in 0..200u64 {
        // Every 10th wake-up is 12 ms late, the rest punctual.
        let late = if i % 10 == 3 { 12 } else { 0 };
        let now = p.next_deadline() + Duration::from_millis(late);
        p.poll(now).unwrap();
        sends.push(now);
    }
    for w in sends.windows(2) {
        assert!(w[1] - w[0] >= MIN_SPACING, "{:?}", w[1] - w[0]);
    }
    // And no drift: the lag behind the 20 ms grid stays bounded (it is
    // won back at 2 ms per slot).
    let worst = sends
        .iter()
        .enumerate()
        .map(|(i, s)| *s - (t0 + Duration::from_millis(20 * i as u64)))
        .max()
        .unwrap();
    assert!(worst <= Duration::from_millis(13), "lag {worst:?}");
    let punctual = sends
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            **s - (t0 + Duration::from_millis(20 * *i as u64)) < Duration::from_millis(1)
        })
        .count();
    assert!(
        punctual >= 50,
        "back on the grid between hiccups: {punctual}"
    );
    assert_eq!(p.stats().skipped_slots, 0);
}

#[test]
fn queue_is_bounded() {
    let mut p = Pacer::new(
        PacerConfig {
            max_queued_ms: 1000,
            ..cfg()
        },
        Instant::now(),
    )
    .unwrap();
    p.enqueue(1, vec![0; 6000]).unwrap();
    assert!(matches!(
        p.enqueue(2, vec![0; 4000]),
        Err(MediaError::PlayoutQueueFull { .. })
    ));
}

#[test]
fn digits_go_out_as_telephone_events_and_are_detected_once() {
    let t0 = Instant::now();
    let mut p = Pacer::new(cfg(), t0).unwrap();
    p.enqueue(1, vec![3000; 1600]).unwrap();
    p.send_digit('1', 100).unwrap();
    assert!(p.send_digit('x', 100).is_err());
    let pkts = drive(&mut p, 20, |_| 0);
    let te: Vec<_> = pkts.iter().filter(|(_, p)| p.payload_type == 101).collect();
    assert_eq!(te.len(), 4 + 3, "updates then three end packets");
    assert!(te[0].1.marker);
    assert!(te.iter().all(|(_, p)| p.timestamp == te[0].1.timestamp));
    let mut det = DtmfDetector::new(8000);
    let digits: Vec<_> = te
        .iter()
        .flat_map(|(now, p)| {
            det.push(p.timestamp, &p.payload, (*now - t0).as_millis() as u64)
                .unwrap()
        })
        .collect();
    assert_eq!(digits.len(), 1);
    assert_eq!(digits[0].digit, '1');
    assert_eq!(digits[0].duration_ms, 100);
    // The utterance still goes out whole after the digit.
    assert_eq!(
        pkts.iter()
            .filter(|(_, p)| p.payload_type == 0 && p.payload[0] != g711::ULAW_SILENCE)
            .count(),
        10
    );
}
