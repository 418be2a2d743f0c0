//! Opus on speech: a caller's question (Piper voice) at 16 kHz through the Opus encoder at
//! a narrow 16 kbit/s, 5 % of the packets lost (FEC or concealment in their
//! place), decoded, and whisper must still hear the same words.

use crate::providers_support;

use providers_support::{speech_16k, whisper, whisper_turn, words};
use switchboard::agent_runtime::stt::SpeechToText;
use switchboard::media::opus::{OpusDecoder, OpusEncoder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_through_opus_with_loss_is_still_understood() {
    let dir = tempfile::tempdir().unwrap();
    let text = "What time do you open on Saturday morning?";
    let pcm = speech_16k(dir.path(), text);
    let mut enc = OpusEncoder::new(16000, 16_000).unwrap();
    let packets: Vec<Vec<u8>> = pcm
        .chunks_exact(enc.frame_samples())
        .map(|f| {
            let mut p = Vec::new();
            enc.encode(f, &mut p).unwrap();
            p
        })
        .collect();
    let bytes: usize = packets.iter().map(Vec::len).sum();
    let kbps = bytes as f64 * 8.0 / (packets.len() as f64 * 20.0);
    let mut dec = OpusDecoder::new(16000).unwrap();
    let mut out = Vec::new();
    let mut lost = 0;
    for (i, p) in packets.iter().enumerate() {
        // Every 20th packet is lost (5 %).
        if i % 20 == 10 {
            lost += 1;
            dec.recover(packets.get(i + 1).map(Vec::as_slice), &mut out)
                .unwrap();
        } else {
            dec.decode(p, &mut out).unwrap();
        }
    }
    assert_eq!(out.len(), packets.len() * 320);
    let _turn = whisper_turn().await;
    let heard = whisper(1, true)
        .transcribe(&out, &switchboard::agent_runtime::stt::SttHints::default())
        .await
        .unwrap();
    println!(
        "opus {kbps:.1} kbit/s, {lost} of {} packets lost: heard {:?}",
        packets.len(),
        heard.text
    );
    assert!(kbps < 24.0, "{kbps:.1} kbit/s");
    let w = words(&heard.text);
    for expected in ["time", "open", "saturday"] {
        assert!(w.contains(expected), "{expected:?} missing from {w:?}");
    }
}
