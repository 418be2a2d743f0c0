//! Opus on the SIP leg, against baresip offering only opus/48000/2: the
//! node answers Opus on the offer's payload type (48 kHz RTP clock), a
//! tone goes each way and is heard decoded on the other side, the call is
//! logged with codec `opus` and recorded (16 kHz stereo WAV, caller left,
//! agent right). Ports 53400–53599.

use crate::secure_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use secure_support::*;
use switchboard::media::Codec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_with_opus_and_the_call_is_recorded() {
    init_logs();
    let base = ports(53_400, 61);
    let dir = tempfile::tempdir().expect("tempdir");
    let handler = MediaHandler {
        record_dir: Some(dir.path().join("recordings")),
        ..Default::default()
    };
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let node = SecureNode::start(base, handler, &[]).await;
    node.sql("update sip_trunks set codecs = '{opus,PCMU}'")
        .await;
    let phone = Softphone {
        sip_port: ports(53_470, 2),
        rtp_port: ports(53_480, 10),
        opus: true,
        ..Default::default()
    };
    let wav = tone_wav_channels(dir.path(), 48_000, 2, 3, 7);
    let bs_dir = dir.path().join("baresip");
    let uri = format!("sip:+15555550100@127.0.0.1:{base}");
    let run = tokio::task::spawn_blocking(move || Baresip::dial(&bs_dir, &phone, &uri, &wav, 14))
        .await
        .expect("baresip");
    let rows = node.final_rows(1, Duration::from_secs(20)).await;
    assert_eq!(rows[0].status, "completed", "{rows:?}\n{}", run.log());
    assert_eq!(rows[0].codec.as_deref(), Some("opus"), "{rows:?}");
    let call = node.handler.call(0);
    let media = call.media();
    assert_eq!(media.codec, Codec::Opus);
    assert!(media.payload_type >= 96, "a dynamic payload type");
    println!(
        "Opus call: payload type {}, telephone-event {:?}",
        media.payload_type, media.telephone_event_pt
    );
    let report = node.handler.finished(0, Duration::from_secs(10)).await;
    let (frames, voiced) = (
        call.frames.load(Ordering::Relaxed),
        call.voiced.load(Ordering::Relaxed),
    );
    println!(
        "Opus call: {:?} in, {} voiced frames of {frames}",
        report.stats.packets_in, voiced
    );
    assert!(
        report.stats.packets_in >= 150,
        "{:?}\n{}",
        report.stats,
        run.log()
    );
    assert_eq!(report.stats.malformed, 0);
    assert!(voiced >= 100, "the caller's tone decoded from Opus");
    let heard = Baresip::received_wav(&run.dir)
        .unwrap_or_else(|| panic!("baresip wrote no dump:\n{}", run.log()));
    let rms = loudest_second_rms(&heard);
    assert!(rms > 1000.0, "baresip decoded our Opus tone (RMS {rms:.0})");
    let recording = report.recording.expect("a recording");
    assert_eq!((recording.sample_rate, recording.channels), (16_000, 2));
    assert!(recording.duration_ms >= 5_000, "{recording:?}");
    let mut reader = hound::WavReader::open(&recording.path).expect("recording");
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap_or(0)).collect();
    let side_rms = |side: usize| {
        let s: Vec<f64> = samples
            .iter()
            .skip(side)
            .step_by(2)
            .map(|&x| x as f64)
            .collect();
        (s.iter().map(|x| x * x).sum::<f64>() / s.len().max(1) as f64).sqrt()
    };
    assert!(side_rms(0) > 300.0, "caller side recorded: {}", side_rms(0));
    assert!(side_rms(1) > 300.0, "agent side recorded: {}", side_rms(1));
}
