//! A caller as trunks send them: SIPp places a call to the demo number and
//! replays its own captures into it with `play_pcap_audio` — 7 s of A-law
//! speech (`g711a.pcap`, PT 8, 30 ms packets) and then the RFC 4733 digit
//! `1` (`dtmf_2833_1.pcap`, PT 101, end packet sent three times). The SIP
//! server answers with a seeded database; the call handler stands where the
//! agent runtime stands and runs a real `MediaSession` on the call's RTP
//! socket. The caller's audio must arrive as 16 kHz frames whose loudness
//! follows the capture's, and the digit must be reported exactly once.

use crate::sip_support;

use std::sync::Arc;
use std::time::Duration;

use sip_support::sipp;
use switchboard::config::Config;
use switchboard::db::testing::TestDb;
use switchboard::media::{g711, Codec, MediaEvent, MediaSession, MediaStats, SessionConfig};
use switchboard::sip::call::{CallEvent, CallHandler, HangupBy, IncomingCall, NegotiatedMedia};
use switchboard::sip::{SipOptions, SipServer};
use tokio::sync::mpsc;

const DEMO: &str = "+15555550100";
const AUDIO_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";
const DIGIT_PCAP: &str = "/usr/share/sip-tester/dtmf_2833_1.pcap";
/// A 20 ms frame louder than this RMS is speech; the capture's pauses sit
/// at RMS 8 (A-law's smallest step), its speech well above 100.
const SPEECH_RMS: f64 = 50.0;

/// What the call's media session delivered, once SIP said the call ended.
#[derive(Debug)]
struct Outcome {
    media: NegotiatedMedia,
    /// RMS of every 20 ms caller frame, in arrival order.
    frame_rms: Vec<f64>,
    frame_len_ok: bool,
    digits: Vec<(char, u32)>,
    hangup: Option<HangupBy>,
    stats: MediaStats,
}

/// Stands in for the agent runtime: one media session per call, every
/// event counted, finished when SIP reports the hangup.
#[derive(Clone)]
struct MediaHandler {
    done: mpsc::UnboundedSender<Outcome>,
}

impl CallHandler for MediaHandler {
    fn on_call(&self, call: IncomingCall) {
        let done = self.done.clone();
        tokio::spawn(async move {
            let outcome = run_call(call).await;
            let _ = done.send(outcome);
        });
    }
}

async fn run_call(call: IncomingCall) -> Outcome {
    let IncomingCall {
        media,
        rtp_socket,
        rtp_port,
        mut events,
        ..
    } = call;
    let _lease = rtp_port;
    let cfg = SessionConfig::new(
        media.remote_addr,
        media.codec,
        media.payload_type,
        media.telephone_event_pt,
    );
    let (session, mut rx) = MediaSession::start(rtp_socket, cfg).expect("media session starts");
    let mut out = Outcome {
        media,
        frame_rms: Vec::new(),
        frame_len_ok: true,
        digits: Vec::new(),
        hangup: None,
        stats: MediaStats::default(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(MediaEvent::Audio(f)) => {
                    out.frame_len_ok &= f.samples.len() == 320;
                    out.frame_rms.push(rms(&f.samples));
                }
                Some(MediaEvent::Dtmf { digit, duration_ms }) => out.digits.push((digit, duration_ms)),
                Some(_) => {}
                None => break,
            },
            ev = events.recv() => match ev {
                Some(CallEvent::Hangup { by, .. }) => {
                    out.hangup = Some(by);
                    break;
                }
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    // Events already queued belong to the call too.
    while let Ok(ev) = rx.try_recv() {
        match ev {
            MediaEvent::Audio(f) => out.frame_rms.push(rms(&f.samples)),
            MediaEvent::Dtmf { digit, duration_ms } => out.digits.push((digit, duration_ms)),
            _ => {}
        }
    }
    out.stats = session.close().await.stats;
    out
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// The RTP packets of a capture: (payload type, payload). Ethernet/IPv4/UDP
/// as SIPp ships them; anything else fails the test.
fn pcap_rtp(path: &str) -> Vec<(u8, Vec<u8>)> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (Debian sip-tester)"));
    assert_eq!(&data[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    assert_eq!(data[20], 1, "Ethernet link type");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        let frame = &data[off + 16..(off + 16 + incl).min(data.len())];
        off += 16 + incl;
        let ip = &frame[14..];
        let udp = &ip[(ip[0] & 0x0f) as usize * 4..];
        let rtp = &udp[8..];
        out.push((rtp[1] & 0x7f, rtp[12..].to_vec()));
    }
    out
}

/// RMS of each 20 ms of the capture's audio, decoded from A-law.
fn capture_frame_rms() -> Vec<f64> {
    let mut pcm = Vec::new();
    for (pt, payload) in pcap_rtp(AUDIO_PCAP) {
        assert_eq!(pt, 8, "g711a.pcap is PCMA");
        g711::decode_alaw(&payload, &mut pcm);
    }
    pcm.chunks(160).map(rms).collect()
}

/// Pearson correlation of `a` against `b` shifted by `lag` frames.
fn correlation(a: &[f64], b: &[f64], lag: usize) -> f64 {
    let n = b.len().min(a.len().saturating_sub(lag));
    if n < 2 {
        return 0.0;
    }
    let (x, y) = (&a[lag..lag + n], &b[..n]);
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let cov: f64 = x.iter().zip(y).map(|(p, q)| (p - mx) * (q - my)).sum();
    let vx: f64 = x.iter().map(|p| (p - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|q| (q - my).powi(2)).sum();
    cov / (vx * vy).sqrt().max(1e-9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_pcap_audio_arrives_and_digit_one_is_detected_once() {
    // The captures are what SIPp will send; check them first so a changed
    // package fails here and not in a puzzling assertion below.
    let digit_packets = pcap_rtp(DIGIT_PCAP);
    assert!(digit_packets.iter().all(|(pt, _)| *pt == 101));
    let capture = capture_frame_rms();
    let capture_speech = capture.iter().filter(|r| **r > SPEECH_RMS).count();
    assert!(
        capture.len() >= 350 && capture_speech >= 300,
        "{capture_speech}/{}",
        capture.len()
    );

    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed demo");
    let env = vec![
        (
            "SWITCHBOARD_SIP__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("SWITCHBOARD_NODE_ID".to_string(), "media-pcap".to_string()),
        ("DATABASE_URL".to_string(), db.url.clone()),
        ("SWITCHBOARD_RECORDS__SPOOL_DIR".to_string(), String::new()),
    ];
    let config = Config::load_from(None, &env).expect("config");
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let records = switchboard::records::RecordWriter::start(db.pool.clone(), &config.records);
    let server = SipServer::start_with(
        &config,
        db.pool.clone(),
        records,
        Arc::new(MediaHandler { done: done_tx }),
        SipOptions::default(),
    )
    .await
    .expect("SIP server starts");

    let run = sipp(server.local_addr(), "uac_pcap_dtmf.xml", DEMO, &[]).await;
    run.assert_ok();
    let out = tokio::time::timeout(Duration::from_secs(15), done_rx.recv())
        .await
        .expect("the call ended within 15 s of SIPp's BYE")
        .expect("one call reached the handler");
    assert!(done_rx.try_recv().is_err(), "exactly one call");

    // The answer took the offer's codec and payload types.
    assert_eq!(
        (
            out.media.codec,
            out.media.payload_type,
            out.media.telephone_event_pt
        ),
        (Codec::Pcma, 8, Some(101))
    );
    assert_eq!(out.hangup, Some(HangupBy::Caller));

    // Every packet of both captures reached the session, none lost.
    let s = &out.stats;
    assert_eq!(
        s.packets_in as usize,
        236 + digit_packets.len(),
        "236 audio + {} event packets: {s:?}",
        digit_packets.len()
    );
    assert_eq!(
        (s.lost, s.dropped_other_pt, s.malformed),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.dtmf_digits, 1, "{s:?}");

    // Audio frames: all 16 kHz × 20 ms, at least as many as the capture
    // lasts, and the speech in them is the capture's speech.
    assert!(out.frame_len_ok, "every frame is 320 samples");
    assert!(
        out.frame_rms.len() >= capture.len(),
        "{} frames for a {}-frame capture",
        out.frame_rms.len(),
        capture.len()
    );
    let speech = out.frame_rms.iter().filter(|r| **r > SPEECH_RMS).count();
    let (lo, hi) = (capture_speech * 95 / 100, capture_speech * 105 / 100);
    assert!(
        (lo..=hi).contains(&speech),
        "{speech} speech frames arrived, the capture has {capture_speech}"
    );
    // Loudness contour, frame by frame, at the delay the jitter buffer added.
    let (lag, corr) = (0..100)
        .map(|lag| (lag, correlation(&out.frame_rms, &capture, lag)))
        .fold((0, f64::MIN), |best, c| if c.1 > best.1 { c } else { best });
    assert!(
        corr > 0.95,
        "received loudness follows the capture: r = {corr:.3} at lag {lag} frames"
    );

    // Digit 1, once, for as long as the capture's end packets say:
    // duration 2240 units of the 8 kHz clock = 280 ms.
    assert_eq!(out.digits, vec![('1', 280)], "{:?}", out.digits);
    eprintln!(
        "frames {} (speech {speech}/{capture_speech}), r = {corr:.3} at lag {lag}, jitter {:.2} ms, \
         depth max {} ms, concealed {}, late {}",
        out.frame_rms.len(),
        s.jitter_ms,
        s.jitter_max_depth_ms,
        s.concealed,
        s.late
    );
    server.shutdown();
}
