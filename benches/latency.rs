//! Voice-to-voice latency on the offline default path (whisper, retrieval
//! answerer, espeak-ng): 20 calls from baresip, each asking one question of
//! the demo agent in the Piper voice (`data/venv`, the reference piper-tts). Prints p50/p95 of the end of the caller's
//! speech → the agent's first audio, and its parts, as JSON, and writes
//! bench/results/latency.json.
//!
//! Two measurements per call:
//! - inside: from `call_logs.latency` (speech end as our endpointer saw it
//!   → first RTP packet of the answer sent);
//! - outside: from the caller's own files (end of speech in the WAV it
//!   played → first agent audio in the WAV it recorded), which adds the
//!   network, jitter buffer and the caller's own playout.
//!
//! Run: `cargo bench --bench latency` (needs the private PostgreSQL cluster:
//! `scripts/setup`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard::config::Config;
use switchboard::db::testing::TestDb;

const QUESTIONS: [&str; 20] = [
    "What time do you open on Saturday?",
    "Where are you located?",
    "Do you take new patients?",
    "How much is a cleaning?",
    "Do you accept insurance?",
    "Is there parking?",
    "What is your cancellation policy?",
    "Are you open on Sunday?",
    "What should I do in an emergency?",
    "How can I pay?",
    "What are your opening hours?",
    "Do you do teeth whitening?",
    "How much does a filling cost?",
    "Do you treat children?",
    "Can I book an appointment online?",
    "What time do you close on Friday?",
    "Is the office wheelchair accessible?",
    "Do you offer payment plans?",
    "How early should I arrive?",
    "Do you have evening hours?",
];

const LEAD_MS: u32 = 3500;
const TAIL_MS: u32 = 6000;

fn main() {
    // RUST_LOG=switchboard=debug shows each call's turns.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    // A short greeting keeps each call short; the answer path is unchanged.
    sqlx::query("update personas set greeting = 'Bluebird Dental, hello.'")
        .execute(&db.pool)
        .await
        .expect("greeting");
    let sip_port = common::node::free_port();
    let env: Vec<(String, String)> = vec![
        (
            "SWITCHBOARD_SIP__LISTEN".into(),
            format!("127.0.0.1:{sip_port}"),
        ),
        ("SWITCHBOARD_API__LISTEN".into(), "127.0.0.1:0".into()),
        ("SWITCHBOARD_RTP__PORT_MIN".into(), "37000".into()),
        ("SWITCHBOARD_RTP__PORT_MAX".into(), "37400".into()),
        ("DATABASE_URL".into(), db.url.clone()),
    ];
    let config = Config::load_from(None, &env).expect("config");
    let turn = config.turn.clone();
    let node = switchboard::serve::start(Arc::new(config), db.pool.clone())
        .await
        .expect("node");
    let dir = tempfile::tempdir().expect("tmp");

    let mut inside: Vec<serde_json::Value> = Vec::new();
    let mut outside_ms: Vec<f64> = Vec::new();
    let mut transcripts: Vec<serde_json::Value> = Vec::new();
    for (i, q) in QUESTIONS.iter().enumerate() {
        let wav =
            common::caller_voice::speech_wav(dir.path(), &format!("q{i}"), q, LEAD_MS, TAIL_MS);
        let (played, rate) = common::read_wav(&wav);
        let speech_end_ms = last_loud_ms(&played, rate);
        let caller_port = common::node::free_port();
        let uri = format!("sip:+15555550100@127.0.0.1:{sip_port}");
        let call_dir = dir.path().join(format!("call{i}"));
        let call = tokio::task::spawn_blocking(move || {
            common::BaresipCall::dial(&call_dir, caller_port, &uri, &wav, 16)
        })
        .await
        .expect("baresip");
        let (heard, heard_rate) = common::read_wav(&call.received_wav());
        let outside = first_loud_after_ms(&heard, heard_rate, speech_end_ms)
            .map(|onset| onset - speech_end_ms);
        outside_ms.extend(outside);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let latency: Option<serde_json::Value> = sqlx::query_scalar(
            "select latency from call_logs where latency is not null order by started_at desc limit 1",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("latency")
        .flatten();
        let turns = latency
            .and_then(|l| l["turns"].as_array().cloned())
            .unwrap_or_default();
        match turns.into_iter().find(|t| t["voice_to_voice_ms"].is_u64()) {
            Some(t) => inside.push(t),
            None => eprintln!("call {i} ({q}): no answered turn recorded"),
        }
        // What the agent heard: a transcript that repeats itself or reads
        // unfinished also delays the answer (the turn waits the full silence).
        let heard_text: Vec<String> = sqlx::query_scalar(
            "select m.content from messages m join call_logs c on c.session_id = m.session_id \
             where m.role = 'user' and c.id = (select id from call_logs order by started_at desc limit 1) \
             order by m.created_at",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap_or_default();
        transcripts.push(json!({ "said": q, "heard": heard_text }));
        eprintln!(
            "call {i:2}: {q}  inside={:?} outside={:?} heard={heard_text:?}",
            inside.last().map(|t| &t["voice_to_voice_ms"]),
            outside_ms.last()
        );
    }
    node.stop(Duration::from_secs(1)).await;

    let part = |key: &str| -> Vec<f64> { inside.iter().filter_map(|t| t[key].as_f64()).collect() };
    let summary = |mut v: Vec<f64>| -> serde_json::Value {
        if v.is_empty() {
            return json!(null);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let pick = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        json!({ "p50": pick(0.5), "p95": pick(0.95), "n": v.len() })
    };
    let result = json!({
        "benchmark": "voice_to_voice_latency",
        "path": "offline default: whisper tiny.en + retrieval answerer + espeak-ng, G.711 over loopback (baresip caller, Piper-voiced questions)",
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "calls": QUESTIONS.len(),
        "answered": inside.len(),
        "turn_config": {
            "end_of_turn_silence_ms": turn.end_of_turn_silence_ms,
            "speculate_after_ms": turn.speculate_after_ms,
            "complete_turn_silence_ms": turn.complete_turn_silence_ms,
        },
        "inside_ms": {
            "voice_to_voice": summary(part("voice_to_voice_ms")),
            "endpointing_and_stt_until_answer_starts": summary(part("respond_after_ms")),
            "stt": summary(part("stt_ms")),
            "retrieval": summary(part("retrieval_ms")),
            "llm_first_token": summary(part("llm_first_token_ms")),
            "tts_first_audio": summary(part("tts_first_audio_ms")),
        },
        "outside_ms": { "voice_to_voice": summary(outside_ms) },
        "transcripts": transcripts,
        "goal_ms": { "p50": 400, "p95": 600 },
    });
    let text = serde_json::to_string_pretty(&result).unwrap_or_default();
    println!("{text}");
    let _ = std::fs::create_dir_all("bench/results");
    let _ = std::fs::write("bench/results/latency.json", format!("{text}\n"));
}

/// RMS over 10 ms windows; "loud" is well above espeak's silence and G.711 idle noise.
fn windows(samples: &[i16], rate: u32) -> impl Iterator<Item = (f64, bool)> + '_ {
    let win = (rate / 100) as usize;
    samples.chunks(win).enumerate().map(move |(i, w)| {
        let rms = (w.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / w.len().max(1) as f64)
            .sqrt();
        (i as f64 * 10.0, rms > 500.0)
    })
}

fn last_loud_ms(samples: &[i16], rate: u32) -> f64 {
    windows(samples, rate)
        .filter(|(_, loud)| *loud)
        .map(|(t, _)| t + 10.0)
        .last()
        .unwrap_or(0.0)
}

fn first_loud_after_ms(samples: &[i16], rate: u32, after_ms: f64) -> Option<f64> {
    windows(samples, rate)
        .find(|(t, loud)| *loud && *t >= after_ms)
        .map(|(t, _)| t)
}
