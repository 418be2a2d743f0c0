//! VAD and endpointing accuracy on a caller's speech (the Piper voice of
//! `common::caller_voice`) and noise made with sox (generated here into a
//! temp dir). Audio takes the path a call's audio takes: 8 kHz, G.711 µ-law,
//! our 8→16 kHz resampler, 20 ms frames. Truth comes from the clean speech
//! (10 ms windows above −50 dBFS; in noise, the edge may lie anywhere back
//! to where the speech sinks below the noise); the endpointer's start and end must be
//! within 60 ms of it, with and without noise, and noise alone must never
//! start a turn.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use switchboard::media::endpoint::{EndpointConfig, EndpointEvent, Endpointer};
use switchboard::media::g711;
use switchboard::media::resample::Resampler;

const TOLERANCE_MS: f64 = 60.0;

fn sox_8k(input: &Path, output: &Path) {
    common::run(
        Command::new("sox")
            .arg(input)
            .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
            .arg(output),
    );
}

/// The test caller's voice (Piper), 8 kHz.
fn speech_8k(dir: &Path, name: &str, text: &str) -> Vec<i16> {
    let out = dir.join(format!("{name}.wav"));
    sox_8k(&common::caller_voice::piper_wav(text), &out);
    common::read_wav(&out).0
}

/// `sox -R -n noise.wav synth <secs> <kind> [sinc 300-3400] vol <v>`.
fn sox_noise(
    dir: &Path,
    name: &str,
    secs: u32,
    kind: &str,
    telephone_band: bool,
    vol: &str,
) -> Vec<i16> {
    let out = dir.join(format!("{name}.wav"));
    let mut cmd = Command::new("sox");
    // -R: repeatable noise, so the fixture is the same on every run.
    cmd.args([
        "-R",
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
    ])
    .arg(&out);
    cmd.args(["synth", &secs.to_string(), kind]);
    if telephone_band {
        cmd.args(["sinc", "300-3400"]);
    }
    cmd.args(["vol", vol]);
    common::run(&mut cmd);
    common::read_wav(&out).0
}

/// First and last sample (exclusive end) of `x` whose 10 ms window RMS is
/// above −50 dBFS, in samples.
/// −50 dBFS as an RMS sample value.
const CLEAN_FLOOR_RMS: f64 = 104.0;

fn speech_bounds(x: &[i16], floor_rms: f64) -> (usize, usize) {
    let loud: Vec<bool> = x
        .chunks(80)
        .map(|w| {
            (w.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt() > floor_rms
        })
        .collect();
    let first = loud.iter().position(|&l| l).expect("speech in fixture");
    let last = loud.iter().rposition(|&l| l).expect("speech in fixture");
    (first * 80, (last + 1) * 80)
}

struct Turn {
    start_ms: f64,
    end_ms: f64,
    audio_ms: f64,
}

/// Runs 8 kHz audio through µ-law, the resampler and the endpointer.
fn endpoint(audio: &[i16], cfg: EndpointConfig) -> (Vec<Turn>, f64) {
    let mut coded = Vec::new();
    g711::encode_ulaw(audio, &mut coded);
    let mut pcm = Vec::new();
    g711::decode_ulaw(&coded, &mut pcm);
    let mut rs = Resampler::new(8000, 16000).unwrap();
    let delay_ms = rs.delay_output_samples() as f64 / 16.0;
    let mut wide = Vec::new();
    rs.process(&pcm, &mut wide);
    let t0 = Instant::now();
    let mut ep = Endpointer::new(cfg);
    let mut turns = Vec::new();
    let mut start = None;
    let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
    for (i, f) in wide.chunks_exact(320).enumerate() {
        for ev in ep.push(f, t0 + Duration::from_millis(20 * (i as u64 + 1))) {
            match ev {
                EndpointEvent::SpeechStarted { at } => start = Some(ms(at)),
                EndpointEvent::SpeechEnded { audio, at, .. } => turns.push(Turn {
                    start_ms: start.take().unwrap_or(f64::NAN),
                    end_ms: ms(at),
                    audio_ms: audio.len() as f64 / 16.0,
                }),
                _ => {}
            }
        }
    }
    (turns, delay_ms)
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

fn mix(speech: &[i16], noise: &[i16]) -> Vec<i16> {
    speech
        .iter()
        .enumerate()
        .map(|(i, &s)| (s as i32 + noise[i % noise.len()] as i32).clamp(-32768, 32767) as i16)
        .collect()
}

fn rms_db(x: &[i16]) -> f64 {
    20.0 * ((x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt() / 32768.0)
        .log10()
}

#[test]
fn speech_with_pauses_start_and_end_within_60_ms_clean_and_in_noise() {
    let dir = tempfile::tempdir().unwrap();
    let a = speech_8k(
        dir.path(),
        "a",
        "Hello, I would like to book a table for two people tonight.",
    );
    let b = speech_8k(
        dir.path(),
        "b",
        "Actually, make that three, at eight o'clock.",
    );
    // [1 s silence][A][1.5 s silence][B][1.5 s silence]
    let mut clean = silence(1000);
    let a_off = clean.len();
    clean.extend_from_slice(&a);
    clean.extend(silence(1500));
    let b_off = clean.len();
    clean.extend_from_slice(&b);
    clean.extend(silence(1500));
    let (a0, a1) = speech_bounds(&a, CLEAN_FLOOR_RMS);
    // Truth: 10 ms windows of the clean speech above −50 dBFS. In noise,
    // speech quieter than the noise's own RMS is masked: a detector may or
    // may not hear it, so a boundary anywhere from the masked edge to the
    // clean edge (± the tolerance) is right.
    let truth_for = |noise_rms: f64| {
        let floor = CLEAN_FLOOR_RMS.max(noise_rms);
        let (a0, a1) = speech_bounds(&a, floor);
        let (b0, b1) = speech_bounds(&b, floor);
        [
            ((a_off + a0) as f64 / 8.0, (a_off + a1) as f64 / 8.0),
            ((b_off + b0) as f64 / 8.0, (b_off + b1) as f64 / 8.0),
        ]
    };

    let white = sox_noise(dir.path(), "white", 12, "whitenoise", false, "0.02");
    let phone = sox_noise(dir.path(), "phone", 12, "pinknoise", true, "0.05");
    let phone_loud = sox_noise(dir.path(), "phone-loud", 12, "pinknoise", true, "0.15");
    let speech_db = rms_db(&a[a0..a1]);
    let cases = [
        ("clean", clean.clone()),
        ("white noise", mix(&clean, &white)),
        ("telephone-band noise", mix(&clean, &phone)),
        ("loud telephone-band noise", mix(&clean, &phone_loud)),
    ];
    let mut worst: f64 = 0.0;
    for (name, audio) in cases {
        let noise_db = match name {
            "white noise" => rms_db(&white),
            "telephone-band noise" => rms_db(&phone),
            "loud telephone-band noise" => rms_db(&phone_loud),
            _ => f64::NEG_INFINITY,
        };
        let masked = truth_for(32768.0 * 10f64.powf(noise_db / 20.0));
        let clean_truth = truth_for(0.0);
        let (turns, delay) = endpoint(&audio, EndpointConfig::default());
        let desc: Vec<String> = turns
            .iter()
            .map(|t| {
                format!(
                    "{:.0}–{:.0} ms ({:.0} ms audio)",
                    t.start_ms, t.end_ms, t.audio_ms
                )
            })
            .collect();
        eprintln!(
            "{name} (speech {speech_db:.1} dBFS, noise {noise_db:.1} dBFS): truth {:?}; turns {desc:?}",
            masked.iter().zip(clean_truth).map(|((s, e), (cs, ce))| format!("{cs:.0}..{s:.0}–{e:.0}..{ce:.0}")).collect::<Vec<_>>()
        );
        assert_eq!(turns.len(), 2, "{name}: two turns expected, got {desc:?}");
        for ((t, (s, e)), (cs, ce)) in turns.iter().zip(masked).zip(clean_truth) {
            // Distance from the accepted interval [clean edge, masked edge].
            let off = |x: f64, lo: f64, hi: f64| {
                if x < lo {
                    x - lo
                } else if x > hi {
                    x - hi
                } else {
                    0.0
                }
            };
            let ds = off(t.start_ms, cs + delay, s + delay);
            let de = off(t.end_ms, e + delay, ce + delay);
            eprintln!("  {name}: start error {ds:+.0} ms, end error {de:+.0} ms");
            worst = worst.max(ds.abs()).max(de.abs());
            assert!(ds.abs() <= TOLERANCE_MS, "{name}: start off by {ds:.0} ms");
            assert!(de.abs() <= TOLERANCE_MS, "{name}: end off by {de:.0} ms");
            // The utterance carries ~200 ms before the onset.
            assert!(
                t.audio_ms >= (e - s) + 150.0,
                "{name}: utterance audio {:.0} ms too short",
                t.audio_ms
            );
        }
    }
    eprintln!("worst boundary error {worst:.0} ms");
}

#[test]
fn noise_and_silence_alone_never_start_a_turn() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("silence", silence(10_000)),
        (
            "white noise −26 dBFS",
            sox_noise(dir.path(), "white", 10, "whitenoise", false, "0.1"),
        ),
        (
            "telephone-band noise",
            sox_noise(dir.path(), "phone", 10, "pinknoise", true, "0.3"),
        ),
        (
            "brown noise",
            sox_noise(dir.path(), "brown", 10, "brownnoise", false, "0.3"),
        ),
    ];
    for (name, audio) in cases {
        let (turns, _) = endpoint(&audio, EndpointConfig::default());
        eprintln!("{name} ({:.1} dBFS): {} turns", rms_db(&audio), turns.len());
        assert!(turns.is_empty(), "{name} started {} turns", turns.len());
    }
}
