//! Answering-machine detection on recorded-style answers, measured: people
//! answering ("Hello?", "Hi, this is Dana speaking.") and voicemail
//! greetings with their beeps, each spoken by the Piper voice and passed
//! through the phone path (8 kHz, G.711 μ-law, the node's resampler), and
//! a silent answer. The detector gets the audio frame by frame on a
//! simulated clock, and the agent's recognizer (whisper tiny.en) hears the
//! first stretch of speech once it has lasted a second, as a call does.
//! Printed: accuracy and decision time per fixture; asserted: every fixture
//! right, each decision within 3.5 s of the answer, and each voicemail's
//! greeting reported over at its beep.

use crate::common::caller_voice;

use std::time::{Duration, Instant};

use switchboard::agent_runtime::amd::{AmdDetector, AmdEvent, AmdSettings, Verdict};
use switchboard::agent_runtime::stt::{
    resolve_model_path, SpeechToText, SttHints, WhisperOptions, WhisperStt,
};

const FRAME: usize = 320;

struct Fixture {
    name: &'static str,
    /// Silence before the first word, in ms.
    lead_ms: usize,
    text: &'static str,
    /// Beep pitch and length after the greeting, if any.
    beep: Option<(f32, usize)>,
    expect: Verdict,
}

const FIXTURES: &[Fixture] = &[
    Fixture { name: "hello", lead_ms: 400, text: "Hello?", beep: None, expect: Verdict::Human },
    Fixture { name: "yeah-hello", lead_ms: 300, text: "Yeah, hello?", beep: None, expect: Verdict::Human },
    Fixture { name: "dana", lead_ms: 500, text: "Hi, this is Dana.", beep: None, expect: Verdict::Human },
    Fixture { name: "who", lead_ms: 250, text: "Hello, who's calling?", beep: None, expect: Verdict::Human },
    Fixture {
        name: "vm-sam",
        lead_ms: 300,
        text: "Hi, you've reached Sam. I can't take your call right now, please leave a message after the tone.",
        beep: Some((1000.0, 600)),
        expect: Verdict::Machine,
    },
    Fixture {
        name: "vm-carrier",
        lead_ms: 200,
        text: "The person you are trying to reach is not available. At the tone, please record your message.",
        beep: Some((850.0, 400)),
        expect: Verdict::Machine,
    },
    Fixture {
        name: "vm-office",
        lead_ms: 400,
        text: "Thank you for calling Miller Plumbing. Our office is closed. Leave your name and number and we will call you back.",
        beep: Some((1400.0, 300)),
        expect: Verdict::Machine,
    },
    Fixture {
        name: "vm-short",
        lead_ms: 300,
        text: "Leave a message.",
        beep: Some((440.0, 800)),
        expect: Verdict::Machine,
    },
    Fixture { name: "silent", lead_ms: 5000, text: "", beep: None, expect: Verdict::Unknown },
];

fn beep(freq: f32, ms: usize) -> Vec<i16> {
    (0..ms * 16)
        .map(|i| (7000.0 * (2.0 * std::f32::consts::PI * freq * i as f32 / 16000.0).sin()) as i16)
        .collect()
}

#[tokio::test]
async fn people_machines_and_silence_are_told_apart_within_seconds() {
    let dir = tempfile::tempdir().expect("tmp");
    let stt = WhisperStt::load(
        &resolve_model_path("").expect("the agent's whisper model (scripts/setup)"),
        WhisperOptions {
            threads: 1,
            workers: 1,
            sized_audio_ctx: true,
            temperature_fallback: true,
            beam_size: 1,
        },
    )
    .expect("whisper");
    let mut right = 0;
    let mut times = Vec::new();
    for f in FIXTURES {
        let mut audio = vec![0i16; f.lead_ms * 16];
        if !f.text.is_empty() {
            audio.extend(caller_voice::phone_16k(dir.path(), f.name, f.text));
        }
        let greeting_end = audio.len();
        let beep_at = f.beep.map(|(freq, ms)| {
            audio.extend(vec![0i16; 200 * 16]);
            let at = audio.len();
            audio.extend(beep(freq, ms));
            at
        });
        audio.extend(vec![0i16; 3000 * 16]);

        let t0 = Instant::now();
        let mut amd = AmdDetector::new(AmdSettings::default(), t0);
        let mut decided = None;
        let mut over = None;
        let mut transcribed = false;
        for (k, frame) in audio.chunks(FRAME).enumerate() {
            let now = t0 + Duration::from_millis(20 * (k as u64 + 1));
            amd.push_audio(frame, now);
            // The recognizer hears the first second of speech.
            let heard_to = (k + 1) * FRAME;
            if !transcribed && !f.text.is_empty() && heard_to >= f.lead_ms * 16 + 16_000 {
                transcribed = true;
                // A run outlasting whisper's time guard on a busy machine
                // is tried again (the simulated clock does not move).
                let heard = &audio[f.lead_ms * 16..heard_to.min(greeting_end)];
                let mut text = None;
                for _ in 0..3 {
                    if let Ok(t) = stt.transcribe(heard, &SttHints::language("en")).await {
                        text = Some(t.text);
                        break;
                    }
                }
                let text = text.expect("the recognizer answers within three tries");
                amd.push_transcript(&text, now);
            }
            while let Some(e) = amd.poll_event() {
                match e {
                    AmdEvent::Decided {
                        verdict,
                        reason,
                        after,
                    } => decided = Some((verdict, reason, after)),
                    AmdEvent::GreetingOver { reason } => over = Some((reason, k * FRAME)),
                }
            }
        }
        let (verdict, reason, after) = decided.unwrap_or_else(|| panic!("{}: no decision", f.name));
        println!(
            "{:<11} {:<8} {:<15} {:>5} ms  greeting over: {:?}",
            f.name,
            verdict.as_str(),
            reason,
            after.as_millis(),
            over.map(|(r, at)| format!("{r} at {} ms", at / 16))
        );
        assert!(
            after <= Duration::from_millis(3500),
            "{}: decided after {after:?}",
            f.name
        );
        if verdict == f.expect {
            right += 1;
        }
        times.push(after.as_millis() as u64);
        if let (Some(at), Verdict::Machine) = (beep_at, verdict) {
            let (reason, reported) =
                over.unwrap_or_else(|| panic!("{}: greeting never over", f.name));
            assert_eq!(reason, "beep", "{}", f.name);
            assert!(
                reported >= at && reported <= at + 200 * 16,
                "{}: beep at {at}, reported at {reported}",
                f.name
            );
        }
    }
    times.sort_unstable();
    println!(
        "AMD: {right}/{} right, decision time p50 {} ms, max {} ms",
        FIXTURES.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert_eq!(right, FIXTURES.len(), "every fixture told apart");
}
