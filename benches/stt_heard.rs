//! What the agent hears: word error rate of the agent's recognizer on
//! callers' questions spoken by a Piper voice and passed through G.711
//! μ-law at 8 kHz (the phone path), per model, with and without the
//! knowledge's own words as a hint (`retrieval::vocabulary`), beside the
//! wall time per question. Questions and knowledge: the conversation
//! benchmark's tuning bases (`bench/conversation/kb/`) and the tuning
//! splits of the paraphrase fixtures (`tests/fixtures/knowledge/`); the
//! held-out bases are never read here. Writes bench/results/stt_heard.json.
//!
//! Run: `cargo bench --bench stt_heard` (after scripts/setup).
//! `STT_HEARD_THREADS`, `STT_HEARD_MODELS` (file names in data/models,
//! comma-separated), `STT_HEARD_HINT=0|1` (one run), `STT_HEARD_BEAM` and `STT_HEARD_FALLBACK=1` (whisper's
//! temperature fallback, off as in the node's defaults) vary the recognizer.

#[path = "../tests/common/caller_voice.rs"]
mod caller_voice;

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};
use switchboard::agent_runtime::retrieval::vocabulary::recognizer_hint;
use switchboard::agent_runtime::stt::{SpeechToText, SttHints, WhisperOptions, WhisperStt};

struct Kb {
    name: String,
    hint: Option<String>,
    questions: Vec<String>,
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read kb")).expect("kb json")
}

fn texts(v: &Value, key: &str, field: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x[field].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn kb(path: &Path, question_field: &str) -> Kb {
    let v = read(path);
    let questions = texts(&v, "faqs", "question");
    let mut other = texts(&v, "faqs", "answer");
    other.extend(texts(&v, "documents", "content"));
    Kb {
        name: v["name"].as_str().unwrap_or("?").to_string(),
        hint: recognizer_hint(
            questions.iter().map(String::as_str),
            other.iter().map(String::as_str),
        ),
        questions: texts(&v, "questions", question_field),
    }
}

fn load(file: &str) -> WhisperStt {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/models")
        .join(file);
    WhisperStt::load(
        &path,
        WhisperOptions {
            // One thread: on a machine busy with other work, whisper's
            // threads spinning at barriers cost more than they bring.
            threads: std::env::var("STT_HEARD_THREADS")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(1),
            workers: 1,
            sized_audio_ctx: true,
            temperature_fallback: std::env::var("STT_HEARD_FALLBACK").is_ok_and(|v| v == "1"),
            beam_size: std::env::var("STT_HEARD_BEAM")
                .ok()
                .and_then(|b| b.parse().ok())
                .unwrap_or(1),
        },
    )
    .unwrap_or_else(|e| panic!("{file}: {e} (run scripts/setup)"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut kbs = Vec::new();
    for f in ["dental.json", "garage.json"] {
        kbs.push(kb(&root.join("bench/conversation/kb").join(f), "said"));
    }
    for f in ["vet_clinic.json", "daycare.json"] {
        kbs.push(kb(&root.join("tests/fixtures/knowledge").join(f), "q"));
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut audio = Vec::new();
    for (k, kb) in kbs.iter().enumerate() {
        for (i, q) in kb.questions.iter().enumerate() {
            audio.push((
                k,
                q.clone(),
                caller_voice::phone_16k(dir.path(), &format!("{k}-{i}"), q),
            ));
        }
    }
    let models: Vec<&str> = std::env::var("STT_HEARD_MODELS")
        .map(|m| {
            m.split(',')
                .map(|s| Box::leak(s.to_string().into_boxed_str()) as &str)
                .collect()
        })
        .unwrap_or_else(|_| vec!["ggml-tiny.en-q8_0.bin", "ggml-base.bin"]);
    let hint_runs: Vec<bool> = match std::env::var("STT_HEARD_HINT").as_deref() {
        Ok("0") => vec![false],
        Ok("1") => vec![true],
        _ => vec![false, true],
    };
    let mut results = Vec::new();
    for model in models {
        let stt = load(model);
        // The first run allocates whisper's buffers; a busy machine may time it out.
        let _ = stt.transcribe(&audio[0].2, &SttHints::language("en")).await;
        for &hinted in &hint_runs {
            let (mut errors, mut words) = (0usize, 0usize);
            let mut ms = Vec::new();
            let mut misheard = Vec::new();
            for (k, said, pcm) in &audio {
                let hints = SttHints {
                    language: Some("en".into()),
                    prompt: if hinted { kbs[*k].hint.clone() } else { None },
                };
                // Only the timing of a run that finished counts; a run that
                // outlasted whisper's time guard on a busy machine is retried.
                let mut heard = String::new();
                for _ in 0..3 {
                    let t0 = Instant::now();
                    if let Ok(t) = stt.transcribe(pcm, &hints).await {
                        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                        heard = t.text;
                        break;
                    }
                }
                let (e, n) = caller_voice::wer(said, &heard);
                errors += e;
                words += n;
                if e > 0 {
                    misheard.push(json!({"said": said, "heard": heard}));
                }
            }
            ms.sort_by(f64::total_cmp);
            let wer = errors as f64 / words.max(1) as f64;
            println!(
                "{model:<18} hint {:<5} WER {:>5.1} % ({errors}/{words})  p50 {:>4.0} ms  p95 {:>4.0} ms  misheard {}",
                hinted,
                100.0 * wer,
                ms[ms.len() / 2],
                ms[ms.len() * 95 / 100],
                misheard.len()
            );
            results.push(json!({
                "model": model, "hint": hinted, "wer": wer, "errors": errors, "words": words,
                "p50_ms": ms[ms.len() / 2], "p95_ms": ms[ms.len() * 95 / 100],
                "misheard": misheard,
            }));
        }
    }
    let report = json!({
        "benchmark": "stt_heard",
        "path": "Piper en_US-joe-medium → 8 kHz → G.711 μ-law → node resampler 16 kHz → whisper",
        "questions": audio.len(),
        "knowledge": kbs.iter().map(|k| json!({"name": k.name, "hint": k.hint})).collect::<Vec<_>>(),
        "load_average_1m": std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().and_then(|x| x.parse::<f64>().ok())),
        "results": results,
    });
    let out = root.join("bench/results/stt_heard.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap() + "\n").expect("write");
    println!("({})", out.display());
}
