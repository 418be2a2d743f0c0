//! whisper on a ~3 s spoken question (espeak-ng, resampled to 16 kHz by
//! sox): wall time with `audio_ctx` sized to the utterance versus whisper's
//! default 30 s window, same model, same threads, in one invocation. Writes
//! bench/results/stt.json.
//!
//! Run: `cargo bench --bench stt`.

use std::process::Command;
use std::time::Instant;

use serde_json::json;
use switchboard::agent_runtime::stt::{
    resolve_model_path, SpeechToText, WhisperOptions, WhisperStt,
};

const RUNS: usize = 7;
const TEXT: &str = "Hello, what time do you open on Saturday morning?";

fn speech_16k() -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("q.wav");
    let out = dir.path().join("q16.wav");
    assert!(Command::new("espeak-ng")
        .arg("-w")
        .arg(&raw)
        .arg(TEXT)
        .status()
        .expect("espeak-ng")
        .success());
    assert!(Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1", "-b", "16"])
        .arg(&out)
        .status()
        .expect("sox")
        .success());
    let mut r = hound::WavReader::open(&out).unwrap();
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

/// Runs both settings alternately, so load from other processes on the
/// shared machine hits both alike; the minimum is the best estimate of the
/// uncontended cost.
async fn run_interleaved(a: &WhisperStt, b: &WhisperStt, pcm: &[i16]) -> [(Vec<f64>, String); 2] {
    a.transcribe(pcm, &switchboard::agent_runtime::stt::SttHints::default())
        .await
        .expect("warm-up");
    b.transcribe(pcm, &switchboard::agent_runtime::stt::SttHints::default())
        .await
        .expect("warm-up");
    let mut out = [(Vec::new(), String::new()), (Vec::new(), String::new())];
    for _ in 0..RUNS {
        for (i, stt) in [a, b].into_iter().enumerate() {
            let t0 = Instant::now();
            out[i].1 = stt
                .transcribe(pcm, &switchboard::agent_runtime::stt::SttHints::default())
                .await
                .expect("transcribe")
                .text;
            out[i].0.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    for o in out.iter_mut() {
        o.0.sort_by(f64::total_cmp);
    }
    out
}

#[tokio::main]
async fn main() {
    let pcm = speech_16k();
    let path = resolve_model_path("").expect("whisper model");
    let threads = 2;
    let sized = WhisperStt::load(
        &path,
        WhisperOptions {
            threads,
            workers: 1,
            sized_audio_ctx: true,
            temperature_fallback: true,
            beam_size: 1,
        },
    )
    .unwrap();
    let full = WhisperStt::load(
        &path,
        WhisperOptions {
            threads,
            workers: 1,
            sized_audio_ctx: false,
            temperature_fallback: true,
            beam_size: 1,
        },
    )
    .unwrap();
    let [(sized_ms, sized_text), (full_ms, full_text)] = run_interleaved(&sized, &full, &pcm).await;
    let median = |v: &[f64]| v[v.len() / 2];
    let result = json!({
        "benchmark": "stt",
        "model": path.file_name().and_then(|n| n.to_str()),
        "utterance_ms": pcm.len() as u64 * 1000 / 16_000,
        "threads": threads,
        // Other builds and tests share the 2 cores; figures under load are inflated.
        "load_average_1m": std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().and_then(|x| x.parse::<f64>().ok())),
        "runs": RUNS,
        "sized_audio_ctx": { "audio_ctx": switchboard::agent_runtime::stt::audio_ctx_for(pcm.len().max(17_600)),
                              "min_ms": sized_ms[0], "median_ms": median(&sized_ms), "all_ms": sized_ms, "transcript": sized_text },
        "default_30s_window": { "min_ms": full_ms[0], "median_ms": median(&full_ms), "all_ms": full_ms, "transcript": full_text },
        "speedup_min": full_ms[0] / sized_ms[0],
        "speedup_median": median(&full_ms) / median(&sized_ms),
    });
    let text = serde_json::to_string_pretty(&result).unwrap();
    println!("{text}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results/stt.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, text + "\n").expect("write results");
}
