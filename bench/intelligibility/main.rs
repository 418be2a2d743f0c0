//! How well a caller understands the agent's voice, in minutes instead of
//! the conversation benchmark's forty: every FAQ answer of the
//! conversation benchmark's tuning bases (`bench/conversation/kb`; the
//! held-out bases are never read) spoken by the agent's Piper voice, sent
//! over the phone line (8 kHz, G.711 µ-law there and back) and heard by the
//! caller's recognizer (whisper base, not the agent's tiny.en). Prints the
//! word error rate for each voice setting in `VOICE_SETTINGS`, written
//! `speed:noise_scale:noise_w` and separated by spaces (default: the
//! voice's own `1:0.667:0.8`), each answer said `REPEATS` times (default 2:
//! the voice varies its delivery).
//!
//! `INTELLIGIBILITY_BASES="a.json b.json"` reads the answers of other bases
//! in the conversation benchmark's form instead (`bench/retrieval_train/`:
//! answers written for 24 other businesses, never tuned on).
//!
//! Run: `cargo bench --bench intelligibility` (after scripts/setup).

#[path = "../../tests/common/caller_voice.rs"]
mod caller_voice;

use std::path::{Path, PathBuf};

use futures::StreamExt;
use switchboard::agent_runtime::tts::TextToSpeech;
use switchboard::agent_runtime::tts_piper::PiperTts;
use switchboard::config::Config;

const VOICE: &str = "en_US-joe-medium";
const TUNING_BASES: [&str; 4] = ["dental", "garage", "plumbing", "pharmacy"];

struct Setting {
    speed: f32,
    noise_scale: f64,
    noise_w: f64,
}

fn settings() -> Vec<Setting> {
    let spec = std::env::var("VOICE_SETTINGS").unwrap_or_else(|_| "1:0.667:0.8".into());
    spec.split_whitespace()
        .map(|s| {
            let v: Vec<f64> = s
                .split(':')
                .map(|x| {
                    x.parse()
                        .expect("VOICE_SETTINGS: speed:noise_scale:noise_w")
                })
                .collect();
            assert_eq!(v.len(), 3, "VOICE_SETTINGS: speed:noise_scale:noise_w");
            Setting {
                speed: v[0] as f32,
                noise_scale: v[1],
                noise_w: v[2],
            }
        })
        .collect()
}

fn answers() -> Vec<String> {
    let paths: Vec<String> = match std::env::var("INTELLIGIBILITY_BASES") {
        Ok(list) => list.split_whitespace().map(str::to_string).collect(),
        Err(_) => TUNING_BASES
            .iter()
            .map(|b| format!("bench/conversation/kb/{b}.json"))
            .collect(),
    };
    let mut out = Vec::new();
    for path in paths {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("kb")).expect("json");
        for f in v["faqs"].as_array().expect("faqs") {
            out.push(f["answer"].as_str().expect("answer").to_string());
        }
        if let Some(fallback) = v["fallback"].as_str() {
            out.push(fallback.to_string());
        }
    }
    out
}

/// The voice's folder with its inference scales replaced (the model linked).
fn voice_dir(models: &Path, s: &Setting, tmp: &Path) -> PathBuf {
    let dir = tmp.join(format!("{}-{}", s.noise_scale, s.noise_w));
    std::fs::create_dir_all(&dir).expect("dir");
    for ext in ["onnx", "onnx.data"] {
        let from = models.join(format!("{VOICE}.{ext}"));
        let to = dir.join(format!("{VOICE}.{ext}"));
        if from.exists() && !to.exists() {
            std::os::unix::fs::symlink(std::fs::canonicalize(&from).expect("model"), &to)
                .expect("link");
        }
    }
    let json = models.join(format!("{VOICE}.onnx.json"));
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("voice json")).expect("json");
    v["inference"]["noise_scale"] = s.noise_scale.into();
    v["inference"]["noise_w"] = s.noise_w.into();
    std::fs::write(dir.join(format!("{VOICE}.onnx.json")), v.to_string()).expect("write");
    dir
}

async fn over_the_line(tts: &dyn TextToSpeech, text: &str, speed: f32) -> Vec<i16> {
    let mut stream = tts
        .synthesize(text, VOICE, speed)
        .await
        .expect("synthesize");
    let (mut pcm, mut rate) = (Vec::new(), 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        rate = chunk.sample_rate;
        pcm.extend(chunk.pcm);
    }
    caller_voice::agent_over_the_phone(&pcm, rate)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let repeats: usize = std::env::var("REPEATS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let config = Config::load_from(None, &[]).expect("config").tts;
    let texts = answers();
    let tmp = tempfile::tempdir().expect("tmp");
    for s in settings() {
        let dir = voice_dir(&config.piper_dir, &s, tmp.path());
        let tts = PiperTts::new(&config.onnxruntime_path, &dir, VOICE, 2, 1).expect("voice");
        let (mut errors, mut words, mut seconds) = (0, 0, 0.0);
        for text in &texts {
            for _ in 0..repeats {
                let line = over_the_line(&tts, text, s.speed).await;
                seconds += line.len() as f64 / 16000.0;
                let heard = caller_voice::hear_16k(&line).await;
                let (e, n) = caller_voice::wer(text, &heard);
                if e > 0 {
                    println!("  {e}/{n} said {text:?}\n       heard {heard:?}");
                }
                errors += e;
                words += n;
            }
        }
        println!(
            "speed {} noise_scale {} noise_w {}: intelligibility WER {:.2} % ({errors}/{words}), {:.0} s of speech",
            s.speed,
            s.noise_scale,
            s.noise_w,
            100.0 * errors as f64 / words as f64,
            seconds
        );
    }
}
