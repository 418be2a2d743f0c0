//! Real-time playout pacing over loopback, 10 s: one RTP packet every 20 ms
//! (no two sends closer than 18 ms, timestamps exactly 160 apart, nothing
//! missing), flushes that silence the agent within one frame, and RTCP both
//! ways on port + 1 (our SR carries a report block about the peer, with the
//! LSR of the peer's SR).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard::media::{g711, Codec, MediaEvent, MediaSession, SessionConfig};
use tokio::net::UdpSocket;
use webrtc_util::marshal::{Marshal, Unmarshal};

/// Binds an even RTP port with its RTCP neighbour free, on 127.0.0.1.
async fn bind_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..200 {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rtp.local_addr().unwrap().port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)).await {
            return (rtp, rtcp);
        }
    }
    panic!("no free RTP/RTCP port pair on 127.0.0.1");
}

fn session_socket() -> std::net::UdpSocket {
    for _ in 0..200 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        if port.is_multiple_of(2)
            && port < u16::MAX
            && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return s; // the probe socket on port + 1 is dropped again here
        }
    }
    panic!("no free even port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_paced_playout_with_flushes_and_rtcp() {
    let (peer, peer_rtcp) = bind_pair().await;
    let peer_addr = peer.local_addr().unwrap();
    let sock = session_socket();
    let (session, mut events) =
        MediaSession::start(sock, SessionConfig::new(peer_addr, Codec::Pcmu, 0, None)).unwrap();
    let target = session.local_addr();
    let target_rtcp = SocketAddr::new(target.ip(), target.port() + 1);
    let playout = session.playout();

    // The peer streams silence to the session and sends one SR at 1 s.
    let peer_std = peer.into_std().unwrap();
    // A reader drains the peer socket all along (500 packets would overflow
    // the kernel's receive buffer if left until the end).
    let reader = tokio::spawn({
        let sock = UdpSocket::from_std(peer_std.try_clone().unwrap()).unwrap();
        async move {
            let mut buf = [0u8; 1500];
            let mut packets = Vec::new();
            let until = tokio::time::Instant::now() + Duration::from_millis(10_400);
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await
            {
                packets.push((
                    Instant::now(),
                    rtp::packet::Packet::unmarshal(&mut &buf[..n]).unwrap(),
                ));
            }
            packets
        }
    });
    let sender = tokio::spawn({
        let peer_send = UdpSocket::from_std(peer_std).unwrap();
        let t0 = tokio::time::Instant::now();
        async move {
            for k in 0..500u32 {
                tokio::time::sleep_until(t0 + Duration::from_millis(20 * k as u64)).await;
                let p = rtp::packet::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        payload_type: 0,
                        sequence_number: k as u16,
                        timestamp: k * 160,
                        ssrc: 0xBEEF,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::from(vec![g711::ULAW_SILENCE; 160]),
                };
                peer_send
                    .send_to(&p.marshal().unwrap(), target)
                    .await
                    .unwrap();
                if k == 50 {
                    let sr = rtcp::sender_report::SenderReport {
                        ssrc: 0xBEEF,
                        ntp_time: 0x1234_5678_9ABC_DEF0,
                        rtp_time: k * 160,
                        packet_count: k,
                        octet_count: k * 160,
                        ..Default::default()
                    };
                    peer_rtcp
                        .send_to(&sr.marshal().unwrap(), target_rtcp)
                        .await
                        .unwrap();
                }
            }
            peer_rtcp
        }
    });

    // Meanwhile the agent talks in bursts and is interrupted now and then.
    let tone: Vec<i16> = (0..16_000)
        .map(|i| (6000.0 * (2.0 * std::f64::consts::PI * 300.0 * i as f64 / 8000.0).sin()) as i16)
        .collect();
    let mut flushes = Vec::new();
    let start = Instant::now();
    let mut id = 0;
    for round in 0..5u64 {
        let round_start = start + Duration::from_millis(2000 * round);
        tokio::time::sleep_until(round_start.into()).await;
        id += 1;
        playout.play(id, tone.clone(), 8000).unwrap();
        tokio::time::sleep_until((round_start + Duration::from_millis(700 + 100 * round)).into())
            .await;
        playout.flush();
        flushes.push(Instant::now());
    }
    let peer_rtcp = sender.await.unwrap();
    tokio::time::sleep_until((start + Duration::from_millis(10_050)).into()).await;
    let stats = session.stats();
    let report = session.close().await;

    // What reached the peer (arrival times are only bounds here: the
    // session's own send clock is in `stats`).
    let arrivals = reader.await.unwrap();
    // Flush stops the audio within one frame: after each flush() returned,
    // at most a packet already in flight, nothing later than 20 ms on.
    for (r, f) in flushes.iter().enumerate() {
        let next_play = start + Duration::from_millis(2000 * (r as u64 + 1));
        let late_audio: Vec<f64> = arrivals
            .iter()
            .filter(|(at, p)| {
                *at > *f && *at < next_play && p.payload.iter().any(|&b| b != g711::ULAW_SILENCE)
            })
            .map(|(at, _)| (*at - *f).as_secs_f64() * 1000.0)
            .collect();
        eprintln!("flush {r}: audio after flush at {late_audio:?} ms");
        assert!(
            late_audio.iter().all(|&ms| ms <= 20.0),
            "flush {r}: audio {late_audio:?} ms after flush"
        );
    }
    let packets: Vec<rtp::packet::Packet> = arrivals.into_iter().map(|(_, p)| p).collect();
    let mut buf = [0u8; 1500];
    let mut rtcp_in = Vec::new();
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(50), peer_rtcp.recv_from(&mut buf)).await
    {
        rtcp_in.push(buf[..n].to_vec());
    }

    eprintln!(
        "sent {} packets; send interval min {:.2} ms max {:.2} ms; max lateness {:.2} ms; skipped {}; rtcp sent {} received {}",
        stats.packets_out,
        stats.min_send_interval_us as f64 / 1000.0,
        stats.max_send_interval_us as f64 / 1000.0,
        stats.max_send_lateness_us as f64 / 1000.0,
        stats.send_slots_skipped,
        stats.rtcp_sent,
        stats.rtcp_received
    );
    assert!(
        stats.min_send_interval_us >= 18_000,
        "two sends {} µs apart",
        stats.min_send_interval_us
    );
    assert!(
        (490..=505).contains(&stats.packets_out),
        "packets out {}",
        stats.packets_out
    );
    assert!(
        stats.send_slots_skipped <= 10,
        "skipped {} slots",
        stats.send_slots_skipped
    );
    assert_eq!(
        packets.len() as u64,
        report.stats.packets_out,
        "every packet arrived on loopback"
    );
    // Exactly 160 apart, except where the pacer skipped slots after a
    // stall of the whole process (reported in stats; rare, and a jump of
    // whole frames, never a burst).
    let mut jumps = 0u64;
    for w in packets.windows(2) {
        let dt = w[1].header.timestamp.wrapping_sub(w[0].header.timestamp);
        assert_eq!(dt % 160, 0, "timestamp step {dt}");
        jumps += (dt != 160) as u64;
        assert_eq!(
            w[1].header
                .sequence_number
                .wrapping_sub(w[0].header.sequence_number),
            1
        );
    }
    assert!(jumps <= 5, "{jumps} timestamp jumps");
    // Each flush is followed by silence from the next slot on: count the
    // audio runs and their lengths (700, 800, ... ms ± one frame).
    let audio: Vec<bool> = packets
        .iter()
        .map(|p| p.payload.iter().any(|&b| b != g711::ULAW_SILENCE))
        .collect();
    let mut runs = Vec::new();
    let mut len = 0;
    for a in audio.iter().chain(std::iter::once(&false)) {
        if *a {
            len += 1;
        } else if len > 0 {
            runs.push(len * 20);
            len = 0;
        }
    }
    eprintln!("audio runs (ms): {runs:?}");
    assert_eq!(runs.len(), 5, "{runs:?}");
    for (r, ms) in runs.iter().enumerate() {
        let want = 700 + 100 * r as i64;
        assert!(
            (*ms as i64 - want).abs() <= 40,
            "run {r}: {ms} ms of audio, flush at {want} ms"
        );
    }
    let mut flushed = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let MediaEvent::PlayoutFlushed { id, played_ms } = ev {
            flushed.push((id, played_ms));
        }
    }
    assert_eq!(
        flushed.len(),
        5,
        "control events survive an owner that reads no audio: {flushed:?}"
    );

    // RTCP: the peer's SR was read, and our SR reports on the peer's stream.
    assert_eq!(stats.rtcp_received, 1);
    assert!(!rtcp_in.is_empty(), "an RTCP report within 10 s");
    let parsed = rtcp::packet::unmarshal(&mut &rtcp_in[0][..]).unwrap();
    let sr = parsed[0]
        .as_any()
        .downcast_ref::<rtcp::sender_report::SenderReport>()
        .expect("SR");
    let block = sr
        .reports
        .iter()
        .find(|b| b.ssrc == 0xBEEF)
        .expect("report block about the peer");
    assert_eq!(block.last_sender_report, 0x5678_9ABC);
    assert_eq!(block.total_lost, 0);
    assert!(sr.packet_count > 100);
}

/// Counts, until `until`, the datagrams on the peer's two sockets whose
/// second byte is an RTCP packet type (RFC 5761 §4) on each.
async fn rtcp_on(peer: &UdpSocket, peer_rtcp: &UdpSocket, until: Instant) -> (usize, usize) {
    let (mut on_rtp, mut on_rtcp) = (0, 0);
    let mut a = [0u8; 1500];
    let mut b = [0u8; 1500];
    while Instant::now() < until {
        tokio::select! {
            r = peer.recv_from(&mut a) => {
                if let Ok((n, _)) = r {
                    on_rtp += (n > 1 && (200..=204).contains(&a[1])) as usize;
                }
            }
            r = peer_rtcp.recv_from(&mut b) => {
                if let Ok((n, _)) = r {
                    on_rtcp += (n > 1 && (200..=204).contains(&b[1])) as usize;
                }
            }
            _ = tokio::time::sleep_until(until.into()) => {}
        }
    }
    (on_rtp, on_rtcp)
}

fn sender_report() -> Vec<u8> {
    rtcp::sender_report::SenderReport {
        ssrc: 0xFEED,
        ntp_time: 0x1234_5678_9ABC_DEF0,
        ..Default::default()
    }
    .marshal()
    .unwrap()
    .to_vec()
}

/// One SR sent to a session's RTP port, by the peer's own RTP socket or by
/// a stranger on the peer's host; then the RTCP that reaches the peer's RTP
/// and RTCP ports until our first reports (2.5 s) have gone out.
async fn reports_after_an_sr_on_the_rtp_port(from_the_peer: bool) -> (usize, usize) {
    let (peer, peer_rtcp) = bind_pair().await;
    let (session, _events) = MediaSession::start(
        session_socket(),
        SessionConfig::new(peer.local_addr().unwrap(), Codec::Pcmu, 0, None),
    )
    .unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sender = if from_the_peer { &peer } else { &stranger };
    sender
        .send_to(&sender_report(), session.local_addr())
        .await
        .unwrap();
    let counts = rtcp_on(
        &peer,
        &peer_rtcp,
        Instant::now() + Duration::from_millis(4200),
    )
    .await;
    session.close().await;
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_from_another_port_of_the_peer_host_does_not_move_our_reports_onto_rtp() {
    // Another call's reports to its peer's port + 1 can land on this
    // session's RTP port from the same host. Our SR must still go to
    // port + 1, never into the RTP flow the peer plays.
    let (on_rtp, on_rtcp) = reports_after_an_sr_on_the_rtp_port(false).await;
    assert_eq!(on_rtp, 0, "reports went into the RTP flow");
    assert!(on_rtcp >= 1, "no report on port + 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_muxes_rtcp_gets_our_reports_on_the_rtp_port() {
    let (on_rtp, on_rtcp) = reports_after_an_sr_on_the_rtp_port(true).await;
    assert!(on_rtp >= 1, "no report on the RTP port");
    assert_eq!(on_rtcp, 0);
}
